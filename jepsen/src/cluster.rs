//! A real Gregor cluster for the harness: `nodes` `gregor` processes, each alone in its own
//! network namespace on a private bridge (see `net`), which the harness can kill, restart,
//! pause, resume and partition. The harness (and its clients) stay in the root namespace
//! and reach node `i` at `{subnet}.1{i}:9092`; partitions cut only broker↔broker traffic.
//!
//! Invariants: every process we start is `gregor` itself (`ip netns exec` execs it, checked
//! through `/proc/{pid}/exe` and `/proc/{pid}/ns/net` once it is ready), so signals reach the
//! broker; every name we create starts with the prefix, so `cleanup_leftovers` can remove a
//! crashed run's namespaces, bridge, veths and processes; `stop` (or drop) leaves nothing.

mod grudge;
mod kafka;
mod net;
mod process;

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use grudge::{node_name, parse_node_name, Grudge};
pub use kafka::ClusterView;
pub use net::{Reach, Subnet};

use process::{log_tail, proc_state, signal};

/// Every node's Kafka port, on its own address.
pub const CLIENT_PORT: u16 = 9092;
/// Every node's peer (broker↔broker) port, on its own address.
pub const PEER_PORT: u16 = 9192;
/// Nodes per cluster: addresses are `.11`..`.19`.
pub const NODES_MAX: usize = 9;
/// Timeout of one readiness probe (connect, send, read).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the freshly built network may take to pass packets between every pair.
const MESH_WAIT: Duration = Duration::from_secs(10);
/// How long a paused process may take to show as stopped in `/proc`.
const STOP_SHOW_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);
/// Log lines quoted in an error.
const TAIL_LINES: usize = 30;

/// How to build the cluster; `ClusterOptions::new` fills in the defaults.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// 1..=9 nodes, ids 1..=nodes.
    pub nodes: usize,
    pub gregor_bin: PathBuf,
    /// Node `i` keeps data in `run_dir/n{i}/data`, its config in `run_dir/n{i}/gregor.toml`,
    /// and stdout+stderr in `run_dir/n{i}.log` (appended across restarts, one marker line
    /// per start).
    pub run_dir: PathBuf,
    /// Names every namespace (`{prefix}-n{i}`), the bridge (`{prefix}-br`), the veths and
    /// the nftables table: `[a-z][a-z0-9]*`, at most 11 characters. Default "gj".
    pub prefix: String,
    /// Default 10.77.0.0/24: gateway (the harness) .1, node i at .1{i}.
    pub subnet: Subnet,
    /// Extra broker keys (Kafka names) written to every node's TOML config.
    pub broker_config: Vec<(String, String)>,
    /// Environment for every node; `RUST_LOG` defaults to `info`.
    pub env: Vec<(String, String)>,
    /// Extra `gregor` arguments for every node (e.g. `--planted commit-on-minority`).
    pub extra_args: Vec<String>,
    /// How long `Cluster::start` waits for the whole cluster (default 60 s).
    pub ready_timeout: Duration,
    /// How long `start_nodes` waits for restarted nodes (default 30 s).
    pub restart_timeout: Duration,
}

impl ClusterOptions {
    pub fn new(nodes: usize, gregor_bin: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        ClusterOptions {
            nodes,
            gregor_bin: gregor_bin.into(),
            run_dir: run_dir.into(),
            prefix: "gj".to_string(),
            subnet: Subnet {
                base: std::net::Ipv4Addr::new(10, 77, 0, 0),
                prefix_len: 24,
            },
            broker_config: jepsen_broker_config(nodes),
            env: Vec::new(),
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            restart_timeout: Duration::from_secs(30),
        }
    }
}

/// The broker keys a Jepsen run wants: replicated topics (and group offsets) that need a
/// majority of acks, topics created explicitly by the harness.
pub fn jepsen_broker_config(nodes: usize) -> Vec<(String, String)> {
    let rf = nodes.min(3);
    let min_isr = if rf >= 3 { 2 } else { 1 };
    [
        ("default.replication.factor", rf.to_string()),
        ("min.insync.replicas", min_isr.to_string()),
        ("offsets.topic.replication.factor", rf.to_string()),
        ("auto.create.topics.enable", "false".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The options (or the machine) do not allow this cluster.
    Options(String),
    /// An external command (`ip`, `nft`) failed.
    Command {
        cmd: String,
        detail: String,
    },
    Io(String),
    NoSuchNode {
        node: usize,
        nodes: usize,
    },
    /// A node runs but did not become ready in time (it is left running).
    NotReady {
        node: usize,
        waited_ms: u128,
        last: String,
        log_tail: String,
    },
    /// A node's process exited while we waited for it.
    Exited {
        node: usize,
        status: String,
        log_tail: String,
    },
    /// Something we rely on did not hold (e.g. the pid is not gregor's).
    Invariant(String),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Options(m) => write!(f, "cluster options: {m}"),
            ClusterError::Command { cmd, detail } => write!(f, "`{cmd}` failed: {detail}"),
            ClusterError::Io(m) => write!(f, "{m}"),
            ClusterError::NoSuchNode { node, nodes } => {
                write!(f, "no node {node}: the cluster has nodes 1..={nodes}")
            }
            ClusterError::NotReady { node, waited_ms, last, log_tail } => write!(
                f,
                "n{node} not ready after {waited_ms} ms (last probe: {last})\n--- n{node}.log (tail) ---\n{log_tail}"
            ),
            ClusterError::Exited { node, status, log_tail } => write!(
                f,
                "n{node} exited ({status}) before it was ready\n--- n{node}.log (tail) ---\n{log_tail}"
            ),
            ClusterError::Invariant(m) => write!(f, "invariant broken: {m}"),
        }
    }
}

impl std::error::Error for ClusterError {}

fn io_err(what: impl fmt::Display, e: std::io::Error) -> ClusterError {
    ClusterError::Io(format!("{what}: {e}"))
}

/// One node's process.
#[derive(Debug, Default)]
struct NodeProc {
    child: Option<Child>,
    paused: bool,
    starts: u32,
    /// How the last process ended, if it did.
    last_exit: Option<String>,
}

impl NodeProc {
    /// Reaps the child if it has exited; true while it runs (stopped counts as running).
    fn alive(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.last_exit = Some(status.to_string());
                self.child = None;
                self.paused = false;
                false
            }
            // try_wait fails only for a child that is not ours; treat it as running.
            Err(_) => true,
        }
    }
}

/// A running cluster; see the module doc. Shareable across threads (`Arc<Cluster>`):
/// every operation takes `&self`.
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    peers_flag: String,
    procs: Vec<Mutex<NodeProc>>,
    grudge: Mutex<Grudge>,
    torn_down: AtomicBool,
}

/// Removes what a previous run with `prefix` left: kills every process inside the
/// `{prefix}-n*` namespaces (only those), deletes them, the bridge and the veths.
pub fn cleanup_leftovers(prefix: &str) -> Result<(), ClusterError> {
    net::cleanup(prefix)
}

/// Whether this machine lets us build the cluster's network: root, `ip netns add` works,
/// `nft` runs. The reason when not.
pub fn netns_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: network namespaces need CAP_SYS_ADMIN/CAP_NET_ADMIN".into());
    }
    net::run("ip", &["-V"], None).map_err(|e| format!("iproute2 missing: {e}"))?;
    net::run("nft", &["--version"], None).map_err(|e| format!("nftables missing: {e}"))?;
    // Unique per call: tests call this from several threads at once.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let probe = format!(
        "gjprobe{}x{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    );
    net::run("ip", &["netns", "add", &probe], None)
        .map_err(|e| format!("cannot create a network namespace: {e}"))?;
    let nft = net::run("ip", &["netns", "exec", &probe, "nft", "list", "ruleset"], None);
    let del = net::run("ip", &["netns", "del", &probe], None);
    nft.map_err(|e| format!("nft does not work inside a namespace: {e}"))?;
    del.map_err(|e| format!("cannot delete a network namespace: {e}"))?;
    Ok(())
}

impl Cluster {
    /// Builds the network (after removing leftovers of the same prefix), starts every node
    /// and waits until each answers Metadata with a controller and all brokers registered.
    /// On error everything built so far is torn down.
    pub fn start(opts: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let opts = check_options(opts)?;
        cleanup_leftovers(&opts.prefix)?;
        net::check_subnet_free(&opts.prefix, opts.subnet)?;
        let peers_flag = (1..=opts.nodes)
            .map(|n| format!("{n}@{}:{PEER_PORT}", opts.subnet.node(n)))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = Cluster {
            procs: (0..opts.nodes).map(|_| Mutex::new(NodeProc::default())).collect(),
            opts,
            peers_flag,
            grudge: Mutex::new(Grudge::new()),
            torn_down: AtomicBool::new(false),
        };
        // From here on, dropping `cluster` (on any error) tears the network down.
        net::create(&cluster.opts.prefix, cluster.opts.subnet, cluster.opts.nodes)?;
        cluster.check_mesh()?;
        cluster.write_configs()?;
        let all: Vec<usize> = cluster.node_ids().collect();
        for &node in &all {
            cluster.spawn(node)?;
        }
        cluster.wait_ready(&all, cluster.opts.ready_timeout, cluster.opts.nodes)?;
        Ok(cluster)
    }

    pub fn nodes(&self) -> usize {
        self.opts.nodes
    }

    pub fn node_ids(&self) -> impl Iterator<Item = usize> {
        1..=self.opts.nodes
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// Node `node`'s Kafka address, e.g. 10.77.0.11:9092.
    pub fn client_addr(&self, node: usize) -> SocketAddr {
        assert!((1..=self.opts.nodes).contains(&node), "no node {node}");
        SocketAddr::V4(SocketAddrV4::new(self.opts.subnet.node(node), CLIENT_PORT))
    }

    /// Node `node`'s broker↔broker address, e.g. 10.77.0.11:9192.
    pub fn peer_addr(&self, node: usize) -> SocketAddr {
        assert!((1..=self.opts.nodes).contains(&node), "no node {node}");
        SocketAddr::V4(SocketAddrV4::new(self.opts.subnet.node(node), PEER_PORT))
    }

    /// Every node's Kafka address, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.node_ids()
            .map(|n| self.client_addr(n).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The network namespace node `node` runs in.
    pub fn namespace(&self, node: usize) -> String {
        net::ns_name(&self.opts.prefix, node)
    }

    pub fn log_path(&self, node: usize) -> PathBuf {
        self.opts.run_dir.join(format!("n{node}.log"))
    }

    pub fn data_dir(&self, node: usize) -> PathBuf {
        self.opts.run_dir.join(format!("n{node}")).join("data")
    }

    /// The last `lines` lines of node `node`'s log.
    pub fn log_tail(&self, node: usize, lines: usize) -> String {
        log_tail(&self.log_path(node), lines)
    }

    fn proc(&self, node: usize) -> Result<MutexGuard<'_, NodeProc>, ClusterError> {
        let nodes = self.opts.nodes;
        let slot = node
            .checked_sub(1)
            .and_then(|i| self.procs.get(i))
            .ok_or(ClusterError::NoSuchNode { node, nodes })?;
        // A poisoned lock only means another thread panicked mid-operation; the process
        // handle inside is still the truth about the child.
        Ok(slot.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn check_node(&self, node: usize) -> Result<(), ClusterError> {
        if (1..=self.opts.nodes).contains(&node) {
            Ok(())
        } else {
            Err(ClusterError::NoSuchNode {
                node,
                nodes: self.opts.nodes,
            })
        }
    }

    /// Is node `node`'s process running (paused counts as running)?
    pub fn is_alive(&self, node: usize) -> bool {
        self.proc(node).map(|mut p| p.alive()).unwrap_or(false)
    }

    pub fn is_paused(&self, node: usize) -> bool {
        self.proc(node)
            .map(|mut p| p.alive() && p.paused)
            .unwrap_or(false)
    }

    /// The pid of node `node`'s gregor, while it runs.
    pub fn pid(&self, node: usize) -> Option<u32> {
        let mut p = self.proc(node).ok()?;
        if p.alive() {
            p.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    /// How node `node`'s last process ended (None while it runs or before the first exit).
    pub fn last_exit(&self, node: usize) -> Option<String> {
        self.proc(node).ok().and_then(|mut p| {
            p.alive();
            p.last_exit.clone()
        })
    }

    /// SIGKILL node `node` (also when paused) and reap it; no-op when it is not running.
    pub fn kill(&self, node: usize) -> Result<(), ClusterError> {
        let mut p = self.proc(node)?;
        if p.alive() {
            let child = p.child.as_mut().expect("alive() means a child");
            signal(child.id(), libc::SIGKILL)?;
            let status = child.wait().map_err(|e| io_err(format!("wait for n{node}"), e))?;
            p.last_exit = Some(status.to_string());
        }
        p.child = None;
        p.paused = false;
        Ok(())
    }

    /// Starts node `node` again on its data dir (no-op when running) and waits until it is
    /// ready, up to `restart_timeout`. See `start_nodes`.
    pub fn start_node(&self, node: usize) -> Result<(), ClusterError> {
        self.start_nodes(&[node])
    }

    /// Starts every node of `nodes` that is not running, all at once (a node joins only
    /// once a majority runs, so restarting a killed majority one by one would deadlock),
    /// then waits up to `restart_timeout` until each knows a controller. A node that is not
    /// ready in time is left running (e.g. it is cut off by a partition) and reported.
    pub fn start_nodes(&self, nodes: &[usize]) -> Result<(), ClusterError> {
        let mut started = Vec::new();
        for &node in nodes {
            let alive = self.proc(node)?.alive();
            if !alive {
                self.spawn(node)?;
                started.push(node);
            }
        }
        self.wait_ready(&started, self.opts.restart_timeout, 0)
    }

    /// SIGSTOP node `node`; no-op when it is not running or already paused.
    pub fn pause(&self, node: usize) -> Result<(), ClusterError> {
        let mut p = self.proc(node)?;
        if !p.alive() || p.paused {
            return Ok(());
        }
        let pid = p.child.as_ref().expect("alive() means a child").id();
        signal(pid, libc::SIGSTOP)?;
        p.paused = true;
        drop(p);
        // SIGSTOP is delivered asynchronously; wait until /proc shows it so that callers
        // (and the history) can rely on "pause done" meaning stopped.
        let deadline = Instant::now() + STOP_SHOW_WAIT;
        while proc_state(pid) != Some('T') {
            if Instant::now() >= deadline {
                return Err(ClusterError::Invariant(format!(
                    "n{node} (pid {pid}) not stopped {STOP_SHOW_WAIT:?} after SIGSTOP"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// SIGCONT node `node`; harmless when it is running or not paused.
    pub fn resume(&self, node: usize) -> Result<(), ClusterError> {
        let mut p = self.proc(node)?;
        if p.alive() {
            signal(
                p.child.as_ref().expect("alive() means a child").id(),
                libc::SIGCONT,
            )?;
        }
        p.paused = false;
        Ok(())
    }

    /// Replaces the current partition with `grudge` (an empty grudge heals).
    pub fn partition(&self, grudge: &Grudge) -> Result<(), ClusterError> {
        grudge.check(self.opts.nodes).map_err(ClusterError::Options)?;
        let mut current = self.grudge.lock().unwrap_or_else(|p| p.into_inner());
        // Record first: if applying fails half-way, `heal` still knows to clean up.
        *current = grudge.clone();
        net::apply_grudge(&self.opts.prefix, self.opts.subnet, self.opts.nodes, grudge)
    }

    /// Removes every partition rule (in every node namespace, whatever we think is there).
    pub fn heal(&self) -> Result<(), ClusterError> {
        self.partition(&Grudge::new())
    }

    /// The partition in force.
    pub fn grudge(&self) -> Grudge {
        self.grudge.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Packets node `node`'s partition rule has dropped (0 when it has none).
    pub fn dropped_packets(&self, node: usize) -> Result<u64, ClusterError> {
        self.check_node(node)?;
        net::dropped_packets(&self.opts.prefix, node)
    }

    /// One TCP connect to `to`, from node `from`'s namespace, or from the harness's
    /// (the root namespace) when `from` is None.
    pub fn probe(
        &self,
        from: Option<usize>,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<Reach, ClusterError> {
        match from {
            None => Ok(net::connect(to, timeout)),
            Some(node) => {
                self.check_node(node)?;
                net::in_netns(&self.namespace(node), || net::connect(to, timeout))
            }
        }
    }

    /// Metadata v1 from node `node`, from the harness.
    pub fn metadata(&self, node: usize) -> Result<ClusterView, String> {
        kafka::metadata(self.client_addr(node), PROBE_TIMEOUT)
    }

    /// SIGCONT and SIGKILL every node, then delete the namespaces, veths and bridge.
    /// Safe to call again; drop calls it if it was not called.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let mut first_error = None;
        for node in self.node_ids() {
            if let Err(e) = self.resume(node).and_then(|()| self.kill(node)) {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = cleanup_leftovers(&self.opts.prefix) {
            first_error.get_or_insert(e);
        }
        self.torn_down.store(true, Ordering::SeqCst);
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.torn_down.load(Ordering::SeqCst) {
            if let Err(e) = self.stop() {
                eprintln!("gregor-jepsen: tearing down cluster {}: {e}", self.opts.prefix);
            }
        }
    }
}

fn check_options(opts: &ClusterOptions) -> Result<ClusterOptions, ClusterError> {
    let mut opts = opts.clone();
    if !(1..=NODES_MAX).contains(&opts.nodes) {
        return Err(ClusterError::Options(format!(
            "nodes = {}, must be 1..={NODES_MAX}",
            opts.nodes
        )));
    }
    net::check_prefix(&opts.prefix).map_err(ClusterError::Options)?;
    opts.gregor_bin = opts.gregor_bin.canonicalize().map_err(|e| {
        ClusterError::Options(format!(
            "gregor binary {}: {e} (build it with `cargo build --release --bin gregor`)",
            opts.gregor_bin.display()
        ))
    })?;
    for (key, _) in &opts.broker_config {
        if key.is_empty() || key.contains(['"', '\\', '\n']) {
            return Err(ClusterError::Options(format!("bad broker config key {key:?}")));
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::process::{proc_state, toml_value};
    use super::*;

    #[test]
    fn options_default_to_the_jepsen_layout() {
        let o = ClusterOptions::new(3, "/bin/true", "/tmp/x");
        assert_eq!(o.prefix, "gj");
        assert_eq!(o.subnet.to_string(), "10.77.0.0/24");
        assert!(o
            .broker_config
            .contains(&("min.insync.replicas".into(), "2".into())));
        assert!(o
            .broker_config
            .contains(&("auto.create.topics.enable".into(), "false".into())));
    }

    #[test]
    fn bad_options_are_named() {
        let mut o = ClusterOptions::new(10, "/bin/true", "/tmp/x");
        assert!(check_options(&o).unwrap_err().to_string().contains("1..=9"));
        o.nodes = 3;
        o.prefix = "g-j".into();
        assert!(check_options(&o).unwrap_err().to_string().contains("prefix"));
        o.prefix = "gj".into();
        o.gregor_bin = "/nonexistent/gregor".into();
        assert!(check_options(&o).unwrap_err().to_string().contains("cargo build"));
    }

    #[test]
    fn toml_values_keep_their_types() {
        assert_eq!(toml_value("3"), "3");
        assert_eq!(toml_value("false"), "false");
        assert_eq!(toml_value("delete"), "\"delete\"");
        assert_eq!(toml_value("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn proc_state_reads_our_own_process() {
        // The main thread of a test binary is running or waiting for the test threads.
        assert!(matches!(proc_state(std::process::id()), Some('R' | 'S')));
        assert_eq!(proc_state(u32::MAX), None);
    }
}
