//! The network the cluster lives in: one namespace per node (`{prefix}-n{i}`, interface
//! `eth0` at `{subnet}.1{i}`), each joined by a veth pair (`{prefix}-n{i}` on the root side)
//! to the bridge `{prefix}-br` in the root namespace, which holds the gateway address the
//! harness talks from. Nothing routes out: the namespaces have only the connected route.
//!
//! Partitions are nftables rules inside the node namespaces (table `ip {prefix}`, chain
//! `input`), so they cut broker↔broker traffic only; the gateway is never in a rule.
//! Everything here is named after the prefix, so `cleanup` can find a crashed run's
//! leftovers and touches nothing else.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::{ClusterError, Grudge};

/// Where `ip netns add` mounts namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Interface names are at most 15 bytes (IFNAMSIZ - 1); "{prefix}-br" and "{prefix}-n9"
/// must fit.
pub const PREFIX_LEN_MAX: usize = 11;
/// How long `cleanup` waits for killed processes to leave a namespace.
const LEFTOVER_EXIT_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// An IPv4 subnet of at least 256 addresses: the gateway is `.1`, node `i` is `.1{i}`
/// (10 + i) of its first /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
}

impl Subnet {
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }
    /// The address of node `node` (1-based).
    pub fn node(&self, node: usize) -> Ipv4Addr {
        assert!((1..=9).contains(&node), "node {node} out of 1..=9");
        Ipv4Addr::from(u32::from(self.base) + 10 + node as u32)
    }
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix_len));
        u32::from(addr) & mask == u32::from(self.base)
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Subnet, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("subnet {s:?}: expected A.B.C.D/LEN"))?;
        let base: Ipv4Addr = addr.parse().map_err(|e| format!("subnet {s:?}: {e}"))?;
        let prefix_len: u8 = len.parse().map_err(|e| format!("subnet {s:?}: {e}"))?;
        if !(8..=24).contains(&prefix_len) {
            return Err(format!("subnet {s:?}: prefix length must be 8..=24"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        if u32::from(base) & !mask != 0 {
            return Err(format!(
                "subnet {s:?}: host bits set (did you mean {}/{prefix_len}?)",
                Ipv4Addr::from(u32::from(base) & mask)
            ));
        }
        Ok(Subnet { base, prefix_len })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix_len)
    }
}

/// Prefixes are `[a-z][a-z0-9]*` so that `{prefix}-n{i}` of one prefix never matches
/// another's.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= PREFIX_LEN_MAX
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "prefix {prefix:?}: must be [a-z][a-z0-9]*, at most {PREFIX_LEN_MAX} characters"
        ))
    }
}

pub fn ns_name(prefix: &str, node: usize) -> String {
    format!("{prefix}-n{node}")
}
pub fn bridge_name(prefix: &str) -> String {
    format!("{prefix}-br")
}
/// The root-namespace end of node `node`'s veth pair (the other end is `eth0` inside).
pub fn veth_name(prefix: &str, node: usize) -> String {
    format!("{prefix}-n{node}")
}

/// Runs a command to completion; a non-zero exit is an error quoting its stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ClusterError::Command {
            cmd: shown.clone(),
            detail: e.to_string(),
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| ClusterError::Command {
                cmd: shown.clone(),
                detail: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| ClusterError::Command {
        cmd: shown.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let detail = format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        return Err(ClusterError::Command { cmd: shown, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, ClusterError> {
    run("ip", args, None)
}

/// Fails when an interface other than ours already has an address in `subnet` (a second
/// bridge on the same subnet would make the routes ambiguous).
pub fn check_subnet_free(prefix: &str, subnet: Subnet) -> Result<(), ClusterError> {
    let ours = bridge_name(prefix);
    for line in ip(&["-4", "-o", "addr", "show"])?.lines() {
        // "5: gj-br    inet 10.77.0.1/24 brd ... scope global gj-br"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dev), Some(addr)) = (fields.get(1), fields.get(3)) else {
            continue;
        };
        let Some(Ok(addr)) = addr.split('/').next().map(Ipv4Addr::from_str) else {
            continue;
        };
        if *dev != ours && subnet.contains(addr) {
            return Err(ClusterError::Options(format!(
                "subnet {subnet} is in use by interface {dev} ({addr}); pick another subnet"
            )));
        }
    }
    Ok(())
}

/// Creates the bridge with the gateway address, and every node's namespace and veth.
pub fn create(prefix: &str, subnet: Subnet, nodes: usize) -> Result<(), ClusterError> {
    assert!((1..=9).contains(&nodes));
    let br = bridge_name(prefix);
    let gw = format!("{}/{}", subnet.gateway(), subnet.prefix_len);
    ip(&[
        "link",
        "add",
        &br,
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ])?;
    ip(&["addr", "add", &gw, "dev", &br])?;
    ip(&["link", "set", &br, "up"])?;
    for node in 1..=nodes {
        let ns = ns_name(prefix, node);
        let veth = veth_name(prefix, node);
        let addr = format!("{}/{}", subnet.node(node), subnet.prefix_len);
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &br, "up"])?;
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Namespaces of ours that exist now: `{prefix}-n{digits}`.
pub fn our_namespaces(prefix: &str) -> Result<Vec<String>, ClusterError> {
    let mut found = BTreeSet::new();
    for line in ip(&["netns", "list"])?.lines() {
        // "gj-n1 (id: 3)" or "gj-n1"
        let name = line.split_whitespace().next().unwrap_or("");
        let ours = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("-n"))
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
        if ours {
            found.insert(name.to_string());
        }
    }
    Ok(found.into_iter().collect())
}

/// Pids of the processes in namespace `ns` (`ip netns pids`).
pub fn ns_pids(ns: &str) -> Result<Vec<i32>, ClusterError> {
    Ok(ip(&["netns", "pids", ns])?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Kills every process inside our namespaces (SIGCONT, then SIGKILL), deletes the
/// namespaces, the bridge and any veth left in the root namespace. Touches nothing that
/// is not named after `prefix`, and no process outside those namespaces.
pub fn cleanup(prefix: &str) -> Result<(), ClusterError> {
    check_prefix(prefix).map_err(ClusterError::Options)?;
    let namespaces = our_namespaces(prefix)?;
    for ns in &namespaces {
        kill_all_in(ns)?;
        ip(&["netns", "del", ns])?;
    }
    let links = ip(&["-o", "link", "show"])?;
    for line in links.lines() {
        // "7: gj-n1@if2: <BROADCAST,...>" — the name is the second field, before '@' or ':'.
        let Some(field) = line.split_whitespace().nth(1) else {
            continue;
        };
        let name = field.trim_end_matches(':').split('@').next().unwrap_or("");
        let ours = name == bridge_name(prefix)
            || name
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix("-n"))
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
        if ours {
            // A veth goes away with its namespace; "Cannot find device" is success.
            if let Err(e) = ip(&["link", "del", name]) {
                if !e.to_string().contains("Cannot find device") {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

fn kill_all_in(ns: &str) -> Result<(), ClusterError> {
    let deadline = Instant::now() + LEFTOVER_EXIT_WAIT;
    loop {
        let pids = ns_pids(ns)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Command {
                cmd: format!("ip netns pids {ns}"),
                detail: format!("processes {pids:?} still inside after SIGKILL"),
            });
        }
        let own = std::process::id() as i32;
        for pid in pids {
            assert_ne!(pid, own, "the harness itself is inside namespace {ns}");
            // SAFETY: plain syscalls on a pid that `ip netns pids` found inside our
            // namespace; a pid that exited meanwhile gives ESRCH, which we ignore.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The nftables script that makes node `node`'s namespace drop packets from `from`
/// (replacing whatever partition it had), or only removes the table when `from` is empty.
pub fn nft_script(prefix: &str, subnet: Subnet, from: &BTreeSet<usize>) -> String {
    // "add + delete" makes the delete succeed whether or not the table exists.
    let mut s = format!("table ip {prefix} {{}}\ndelete table ip {prefix}\n");
    if !from.is_empty() {
        let addrs: Vec<String> = from.iter().map(|&n| subnet.node(n).to_string()).collect();
        assert!(!addrs.contains(&subnet.gateway().to_string()));
        s.push_str(&format!(
            "table ip {prefix} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip saddr {{ {} }} counter drop\n  }}\n}}\n",
            addrs.join(", ")
        ));
    }
    s
}

/// Applies `grudge` in every node namespace (1..=nodes); nodes absent from it drop nothing.
pub fn apply_grudge(prefix: &str, subnet: Subnet, nodes: usize, grudge: &Grudge) -> Result<(), ClusterError> {
    for node in 1..=nodes {
        let script = nft_script(prefix, subnet, &grudge.drops_of(node));
        run(
            "ip",
            &["netns", "exec", &ns_name(prefix, node), "nft", "-f", "-"],
            Some(&script),
        )?;
    }
    Ok(())
}

/// Packets node `node`'s partition rule has dropped so far (0 without a rule).
pub fn dropped_packets(prefix: &str, node: usize) -> Result<u64, ClusterError> {
    let ns = ns_name(prefix, node);
    let out = match run(
        "ip",
        &["netns", "exec", &ns, "nft", "list", "table", "ip", prefix],
        None,
    ) {
        Ok(out) => out,
        Err(e) if e.to_string().contains("No such file or directory") => return Ok(0),
        Err(e) => return Err(e),
    };
    // "ip saddr { 10.77.0.12, 10.77.0.13 } counter packets 5 bytes 300 drop"
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return Ok(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
        }
    }
    Ok(0)
}

/// Runs `f` on a fresh thread that has joined namespace `ns` (sockets it opens live there).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, ClusterError> {
    let path = format!("{NETNS_DIR}/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(&path).map_err(|e| ClusterError::Io(format!("{path}: {e}")))?;
                // SAFETY: setns only reads the descriptor, which `file` keeps open; it changes
                // this scoped thread's network namespace only, and the thread ends after `f`.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(ClusterError::Io(format!("setns {path}: {e}")));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(ClusterError::Io(format!("probe thread in {ns} panicked"))))
    })
}

/// What a TCP connect attempt saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Something listens there.
    Connected,
    /// The host answered with a reset: packets get through both ways, nothing listens.
    Refused,
    /// No answer within the timeout: packets are dropped (or the host is gone).
    TimedOut,
    /// Anything else (unreachable, ...).
    Failed(String),
}

/// One TCP connect to `to` with `timeout`, from the current thread's namespace.
pub fn connect(to: SocketAddr, timeout: Duration) -> Reach {
    match TcpStream::connect_timeout(&to, timeout) {
        Ok(_) => Reach::Connected,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Reach::Refused,
        Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => Reach::TimedOut,
        Err(e) => Reach::Failed(e.to_string()),
    }
}

/// The inode of a network namespace (`/run/netns/{ns}` or `/proc/{pid}/ns/net`).
pub fn netns_inode(path: &str) -> Result<u64, ClusterError> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| ClusterError::Io(format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parses_and_places_nodes() {
        let s: Subnet = "10.77.0.0/24".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(s.node(1), Ipv4Addr::new(10, 77, 0, 11));
        assert_eq!(s.node(9), Ipv4Addr::new(10, 77, 0, 19));
        assert!(s.contains(Ipv4Addr::new(10, 77, 0, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 77, 1, 1)));
        assert_eq!(s.to_string(), "10.77.0.0/24");
        assert!("10.77.0.5/24"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("10.77.0.0/24"));
        assert!("10.77.0.0/28".parse::<Subnet>().is_err());
        assert!("10.77.0.0".parse::<Subnet>().is_err());
    }

    #[test]
    fn prefixes_cannot_shadow_each_other() {
        assert!(check_prefix("gj").is_ok());
        assert!(check_prefix("gjt3").is_ok());
        for bad in ["", "g-j", "Gj", "1gj", "abcdefghijkl"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert!(bridge_name("abcdefghijk").len() <= 15);
    }

    #[test]
    fn nft_script_replaces_the_table_and_never_names_the_gateway() {
        let s: Subnet = "10.77.0.0/24".parse().unwrap();
        let heal = nft_script("gj", s, &BTreeSet::new());
        assert_eq!(heal, "table ip gj {}\ndelete table ip gj\n");
        let cut = nft_script("gj", s, &BTreeSet::from([2, 3]));
        assert!(cut.starts_with(&heal));
        assert!(cut.contains("ip saddr { 10.77.0.12, 10.77.0.13 } counter drop"));
        assert!(!cut.contains("10.77.0.1 ") && !cut.contains("10.77.0.1,"));
    }
}
