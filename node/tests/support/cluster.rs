//! `gregor` processes on 127.0.0.1 forming one cluster: free ports picked up front (so every
//! node can be told every other's peer address), a data directory and a log file per node
//! in the cluster's own temp dir, and every child killed when the [`Cluster`] is dropped,
//! also when a test panics (the tails of the nodes' logs are printed then, once).
//!
//! A node is ready once it prints `gregor listening on …` (the engine finished recovery).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::kafka::{code, Conn, Metadata};

/// How long a node may take to print its listening line.
pub const READY_WAIT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
pub const STOP_WAIT: Duration = Duration::from_secs(20);
/// Connect, read and write timeout of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(50);
/// Lines of each node's log shown when a test fails.
const TAIL_LINES: usize = 40;

/// Held while a test runs its cluster; see [`serial`]. Closing the file releases the lock.
pub struct Serial {
    _lock: File,
}

/// One test at a time runs a cluster: three processes per test is all two cores can take.
/// An exclusive `flock` on a file in the temp dir, so it holds across test threads and
/// across the processes nextest runs tests in (each `open` has its own lock).
pub fn serial() -> Serial {
    let path = std::env::temp_dir().join("gregor-node-cluster-tests.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Serial { _lock: file }
}

/// `n` distinct free ports on 127.0.0.1 (bound together, then released for the nodes).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub fn gregor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gregor"));
    c.env_remove("RUST_LOG");
    c
}

pub struct Node {
    pub id: i32,
    pub kafka_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Lines the running process printed on stdout.
    stdout: Option<mpsc::Receiver<String>>,
}

pub struct Cluster {
    nodes: Vec<Node>,
    /// The `--peers` value every node gets.
    pub peers_flag: String,
    /// Holds every data directory and log; removed on drop.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts nodes 1..=n together and waits until every one is ready.
    pub fn start(n: usize) -> Cluster {
        let mut cluster = Cluster::new(n);
        let ids = cluster.ids();
        for &id in &ids {
            cluster.spawn(id);
        }
        for &id in &ids {
            cluster.wait_ready(id);
        }
        cluster
    }

    /// Nodes 1..=n with ports and directories chosen, none running.
    pub fn new(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let id = i32::try_from(i + 1).unwrap();
                Node {
                    id,
                    kafka_addr: format!("127.0.0.1:{}", ports[i]),
                    peer_addr: format!("127.0.0.1:{}", ports[n + i]),
                    data_dir: dir.path().join(format!("n{id}")),
                    log_path: dir.path().join(format!("n{id}.log")),
                    child: None,
                    stdout: None,
                }
            })
            .collect();
        let peers_flag = nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            nodes,
            peers_flag,
            _dir: dir,
        }
    }

    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn is_running(&self, id: i32) -> bool {
        self.node(id).child.is_some()
    }

    /// Kafka addresses by node id, running or not.
    pub fn kafka_addrs(&self) -> BTreeMap<i32, String> {
        self.nodes.iter().map(|n| (n.id, n.kafka_addr.clone())).collect()
    }

    /// The command that runs node `id` on `data_dir` (its own, or another for a test).
    pub fn command(&self, id: i32, data_dir: &Path) -> Command {
        let node = self.node(id);
        let mut c = gregor();
        c.args(["--node-id", &id.to_string()])
            .args(["--listen", &node.kafka_addr])
            .args(["--peer-listen", &node.peer_addr])
            .args(["--peers", &self.peers_flag])
            .arg("--data-dir")
            .arg(data_dir);
        c
    }

    /// Starts node `id` on its own data dir without waiting; stderr goes to its log file.
    pub fn spawn(&mut self, id: i32) {
        assert!(!self.is_running(id), "node {id} is already running");
        let node = self.node(id);
        let log = open_append(&node.log_path);
        let mut child = self
            .command(id, &node.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let node = self.node_mut(id);
        node.child = Some(child);
        node.stdout = Some(rx);
    }

    /// Waits for node `id`'s listening line; panics (with its log) if it exits or is slow.
    pub fn wait_ready(&mut self, id: i32) {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let node = self.node_mut(id);
            let rx = node.stdout.as_ref().expect("node was spawned");
            match rx.recv_timeout(POLL) {
                Ok(line) if line.starts_with("gregor listening on ") => return,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Its stdout closed: it is exiting; try_wait below will see it.
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
            }
            let child = node.child.as_mut().expect("node was spawned");
            if let Some(status) = child.try_wait().unwrap() {
                node.child = None;
                panic!("node {id} exited with {status} before it was ready (node logs below)");
            }
            if Instant::now() > deadline {
                panic!("node {id} not ready within {READY_WAIT:?} (node logs below)");
            }
        }
    }

    /// Starts node `id` again on its data dir and waits until it is ready.
    pub fn restart(&mut self, id: i32) {
        self.spawn(id);
        self.wait_ready(id);
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: i32) {
        let mut child = self.node_mut(id).child.take().expect("node is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERMs every running node at once and waits for each to exit; returns how each
    /// exited, by node id.
    pub fn stop_all(&mut self) -> BTreeMap<i32, ExitStatus> {
        let mut stopping = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.take() {
                signal(&child, libc::SIGTERM);
                stopping.push((node.id, child));
            }
        }
        let deadline = Instant::now() + STOP_WAIT;
        let mut stopped = BTreeMap::new();
        while let Some((id, mut child)) = stopping.pop() {
            match child.try_wait().unwrap() {
                Some(status) => {
                    stopped.insert(id, status);
                }
                None if Instant::now() > deadline => {
                    for (_, mut c) in stopping.into_iter().chain([(id, child)]) {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    panic!("node {id} did not stop within {STOP_WAIT:?} of SIGTERM (node logs below)");
                }
                None => {
                    stopping.push((id, child));
                    std::thread::sleep(POLL);
                }
            }
        }
        stopped
    }

    /// Metadata from node `id` (`topics` None: all).
    pub fn metadata(&self, id: i32, topics: Option<&[&str]>) -> Result<Metadata, String> {
        let addr = &self.node(id).kafka_addr;
        Conn::connect(addr, REQUEST_TIMEOUT)
            .and_then(|mut c| c.metadata(topics))
            .map_err(|e| format!("metadata from node {id} ({addr}): {e}"))
    }

    /// Polls `check` until it returns `Ok` or `timeout` passes; then panics with its last
    /// error and the nodes' log tails.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            match check() {
                Ok(value) => return value,
                Err(e) if Instant::now() > deadline => {
                    panic!("{what}: not within {timeout:?}; last: {e} (node logs below)")
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// Waits until every running node lists every node as a broker and names a controller:
    /// a node is ready before the controller has registered the others, and a topic with
    /// replication factor 3 created earlier is refused (INVALID_REPLICATION_FACTOR).
    pub fn wait_formed(&self, timeout: Duration) {
        let all = self.ids();
        self.wait_for("every node lists every broker", timeout, || {
            for id in all.iter().copied().filter(|&id| self.is_running(id)) {
                let m = self.metadata(id, Some(&[]))?;
                if m.broker_ids() != all || !all.contains(&m.controller_id) {
                    return Err(format!(
                        "node {id} lists brokers {:?}, controller {}",
                        m.broker_ids(),
                        m.controller_id
                    ));
                }
            }
            Ok(())
        })
    }

    /// Creates a topic through the controller (as an admin client would: ask a node which one
    /// it is, send it CreateTopics, retry elsewhere on NOT_CONTROLLER or a dead node).
    pub fn create_topic(&self, name: &str, partitions: i32, replication_factor: i16) {
        let mut attempts = 0;
        self.wait_for(&format!("create topic {name}"), Duration::from_secs(30), || {
            attempts += 1;
            let running: Vec<i32> = self.ids().into_iter().filter(|&id| self.is_running(id)).collect();
            let controller = running
                .iter()
                .find_map(|&id| self.metadata(id, Some(&[])).ok())
                .map(|m| m.controller_id)
                .filter(|c| running.contains(c));
            let target = controller.unwrap_or(running[attempts % running.len()]);
            let (error_code, message) = Conn::connect(&self.node(target).kafka_addr, REQUEST_TIMEOUT)
                .and_then(|mut c| c.create_topic(name, partitions, replication_factor, 10_000))
                .map_err(|e| format!("CreateTopics to node {target}: {e}"))?;
            match error_code {
                code::NONE => Ok(()),
                // Our earlier attempt created it and its answer was lost.
                code::TOPIC_ALREADY_EXISTS if attempts > 1 => Ok(()),
                c if code::is_retriable(c) => Err(format!("node {target} answered error {c}: {message:?}")),
                c => panic!("CreateTopics {name} to node {target}: error {c}: {message:?}"),
            }
        })
    }

    /// Node `id`'s whole log so far.
    pub fn log(&self, id: i32) -> String {
        std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default()
    }

    /// The last lines of every node's log.
    pub fn tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(TAIL_LINES);
            out.push_str(&format!(
                "--- node {} ({}, {}) log, last {} lines ---\n",
                node.id,
                node.kafka_addr,
                if node.child.is_some() {
                    "running"
                } else {
                    "stopped"
                },
                lines.len() - from
            ));
            for line in &lines[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let tails = std::thread::panicking().then(|| self.tails());
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(tails) = tails {
            eprintln!("{tails}");
        }
    }
}

pub fn signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill only sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

fn open_append(path: &Path) -> File {
    OpenOptions::new().create(true).append(true).open(path).unwrap()
}
