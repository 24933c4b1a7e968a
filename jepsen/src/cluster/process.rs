//! Node processes: writing each node's config, spawning `ip netns exec {ns} gregor …` with
//! its output appended to its log, waiting until it has joined the cluster, and checking the
//! pid we hold is gregor itself in the right namespace (so signals hit the broker).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{io_err, net, node_name, Cluster, ClusterError, Reach};
use super::{MESH_WAIT, POLL, PROBE_TIMEOUT, TAIL_LINES};

pub(super) fn signal(pid: u32, sig: libc::c_int) -> Result<(), ClusterError> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| ClusterError::Invariant(format!("pid {pid}")))?;
    // SAFETY: kill(2) on a pid we spawned and have not reaped (the caller holds the node's
    // lock and checked it is alive), so the pid cannot have been reused.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        return Err(io_err(
            format!("kill({pid}, {sig})"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The state letter of `/proc/{pid}/stat` (R, S, D, T, Z, ...).
pub(super) fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

pub(super) fn toml_value(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

impl Cluster {
    pub(super) fn config_path(&self, node: usize) -> PathBuf {
        self.opts.run_dir.join(format!("n{node}")).join("gregor.toml")
    }

    pub(super) fn write_configs(&self) -> Result<(), ClusterError> {
        let text: String = self
            .opts
            .broker_config
            .iter()
            .map(|(k, v)| format!("\"{k}\" = {}\n", toml_value(v)))
            .collect();
        for node in self.node_ids() {
            let dir = self.data_dir(node);
            std::fs::create_dir_all(&dir).map_err(|e| io_err(dir.display(), e))?;
            let path = self.config_path(node);
            std::fs::write(&path, &text).map_err(|e| io_err(path.display(), e))?;
        }
        Ok(())
    }

    /// Every node (and the harness) reaches every other node's address: a connect to a port
    /// nothing listens on yet must be refused, not time out (which would mean a firewall,
    /// e.g. br_netfilter passing bridged frames through the host's rules).
    pub(super) fn check_mesh(&self) -> Result<(), ClusterError> {
        for from in std::iter::once(None).chain(self.node_ids().map(Some)) {
            for to in self.node_ids().filter(|&t| Some(t) != from) {
                let addr = self.peer_addr(to);
                let deadline = Instant::now() + MESH_WAIT;
                loop {
                    let reach = self.probe(from, addr, PROBE_TIMEOUT)?;
                    if reach == Reach::Refused || reach == Reach::Connected {
                        break;
                    }
                    if Instant::now() >= deadline {
                        let from = from.map_or("the root namespace".to_string(), node_name);
                        return Err(ClusterError::Invariant(format!(
                            "{from} cannot reach {addr} ({reach:?}) on the fresh bridge; \
                             is a host firewall filtering bridged traffic (br_netfilter)?"
                        )));
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
        Ok(())
    }

    /// Starts node `node`'s process without waiting; stdout and stderr append to its log.
    pub(super) fn spawn(&self, node: usize) -> Result<(), ClusterError> {
        let mut p = self.proc(node)?;
        assert!(!p.alive(), "n{node} is already running");
        let client = self.client_addr(node).to_string();
        let data_dir = self.data_dir(node);
        std::fs::create_dir_all(&data_dir).map_err(|e| io_err(data_dir.display(), e))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(node)])
            .arg(&self.opts.gregor_bin)
            .args(["--node-id", &node.to_string()])
            .args(["--listen", &client, "--advertised-listener", &client])
            .args(["--peer-listen", &self.peer_addr(node).to_string()])
            .args(["--peers", &self.peers_flag])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(self.config_path(node))
            .args(&self.opts.extra_args);
        cmd.env("RUST_LOG", "info")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        let log_path = self.log_path(node);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io_err(log_path.display(), e))?;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        writeln!(
            log,
            "\n===== gregor-jepsen: start #{} of n{node} at unix_ms {unix_ms}: {cmd:?}",
            p.starts + 1
        )
        .map_err(|e| io_err(log_path.display(), e))?;
        let log_err: File = log.try_clone().map_err(|e| io_err(log_path.display(), e))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C at the harness's terminal is the harness's
            // to handle; the nodes die by our hand only.
            .process_group(0)
            .spawn()
            .map_err(|e| io_err(format!("spawn n{node} ({cmd:?})"), e))?;
        p.child = Some(child);
        p.paused = false;
        p.starts += 1;
        Ok(())
    }

    /// Waits until every node of `nodes` answers Metadata naming a controller and at least
    /// `brokers_min` brokers, then checks its pid is gregor in the right namespace.
    pub(super) fn wait_ready(
        &self,
        nodes: &[usize],
        timeout: Duration,
        brokers_min: usize,
    ) -> Result<(), ClusterError> {
        let started = Instant::now();
        for &node in nodes {
            let mut last;
            loop {
                let pid = {
                    let mut p = self.proc(node)?;
                    if !p.alive() {
                        return Err(ClusterError::Exited {
                            node,
                            status: p.last_exit.clone().unwrap_or_default(),
                            log_tail: self.log_tail(node, TAIL_LINES),
                        });
                    }
                    p.child.as_ref().map(Child::id)
                };
                match self.metadata(node) {
                    Ok(v) if v.controller_id >= 0 && v.brokers.len() >= brokers_min => {
                        self.check_pid(node, pid.unwrap_or(0))?;
                        break;
                    }
                    Ok(v) => last = format!("{v:?}"),
                    Err(e) => last = e,
                }
                if started.elapsed() >= timeout {
                    return Err(ClusterError::NotReady {
                        node,
                        waited_ms: started.elapsed().as_millis(),
                        last,
                        log_tail: self.log_tail(node, TAIL_LINES),
                    });
                }
                std::thread::sleep(POLL);
            }
        }
        Ok(())
    }

    /// The pid we hold is gregor itself (so SIGSTOP/SIGKILL hit the broker, not a wrapper)
    /// and lives in node `node`'s namespace.
    pub(super) fn check_pid(&self, node: usize, pid: u32) -> Result<(), ClusterError> {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| io_err(format!("/proc/{pid}/exe"), e))?;
        // A binary rebuilt while the node runs shows as "<path> (deleted)".
        if !exe
            .to_string_lossy()
            .starts_with(&*self.opts.gregor_bin.to_string_lossy())
        {
            return Err(ClusterError::Invariant(format!(
                "n{node}'s pid {pid} runs {}, not {}",
                exe.display(),
                self.opts.gregor_bin.display()
            )));
        }
        let ns = net::netns_inode(&format!("{}/{}", net::NETNS_DIR, self.namespace(node)))?;
        let got = net::netns_inode(&format!("/proc/{pid}/ns/net"))?;
        if ns != got {
            return Err(ClusterError::Invariant(format!(
                "n{node}'s pid {pid} is not in namespace {}",
                self.namespace(node)
            )));
        }
        Ok(())
    }
}
