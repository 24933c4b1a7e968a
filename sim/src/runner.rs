//! The runner: one seeded run of the whole simulation. It owns the event queue (ordered by
//! simulated time, ties broken by insertion order), the nodes (an engine, its disk, its IO
//! queue, its wall clock), the client <-> node connections, the nemesis, and the phases:
//! safety (faults on) -> drain (faults healed, optional final crash) -> final read -> checks.
//! Everything random comes from RNGs derived from the seed, one per concern, so a seed
//! replays bit for bit; the trace hash proves it. One node, or a cluster of N (`--nodes`):
//! then the peer network, pauses and the per-step Raft invariants come in (`cluster.rs`).

mod cluster;

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use gregor_engine::config::Voter;
use gregor_engine::{BrokerConfig, ConnId, Engine, Input, IoOp, Output, PlantedBugs, Token};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::check::{check_history, CheckParams, Violation};
use crate::client::{Client, Ctx, Phase, Role, Shared, Transport};
use crate::clock::{SimClock, WallClock};
use crate::disk::{CrashModel, Disk, IoQueue, OpFaults};
use crate::group_check::GroupCheckParams;
use crate::group_client::{is_group_process, GroupSim};
use crate::history::{History, ProcessId};
use crate::invariants::Invariants;
use crate::swarm::{exp_gap_ms, rng_for, Planted, RunSettings, SwarmOptions};
use crate::trace::{derive_seed, describe_input, describe_output, Trace};

use self::cluster::Peers;

/// After the safety phase, the run must finish its final read within this (liveness bound).
pub const LIVENESS_MS: u64 = 30_000;
/// A graceful shutdown must reach `Stopped` within this.
const SHUTDOWN_MS_MAX: u64 = 10_000;
/// After a failed fsync the engine must emit `Fatal` within this.
const FATAL_AFTER_SYNC_ERROR_MS: u64 = 1_000;
/// Bound on processed events, against an engine that spins (e.g. a timer re-armed at `now`).
const EVENTS_MAX: u64 = 5_000_000;
/// Bound on events at one simulated instant: more means the engine spins without letting
/// time pass (e.g. re-issuing a zero-latency IO op forever).
const EVENTS_PER_INSTANT_MAX: u64 = 100_000;
/// Crash model used when a crash comes from `Fatal` in a seed without the crash fault.
const DEFAULT_CRASH_MODEL: CrashModel = CrashModel {
    lose_all_p: 0.5,
    tear_p: 0.5,
    bit_flip_p: 0.0,
};
/// The topic every client uses.
pub const TOPIC: &str = "sim";
/// `offsets.topic.num.partitions` when a seed runs group consumers.
pub const GROUP_OFFSETS_PARTITIONS: u32 = 3;

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub seed: u64,
    pub options: SwarmOptions,
    pub settings: RunSettings,
    pub trace_hash: u64,
    pub steps: u64,
    /// Records acknowledged with acks=1 or acks=all.
    pub acked: u64,
    pub crashes: u64,
    pub violations: Vec<Violation>,
    pub sim_ms: u64,
    pub history: History,
    /// Cluster runs: the peer network's counters and the statuses the invariants read.
    pub cluster_summary: Option<String>,
    /// Runs with group consumers: what they did (SyncGroup answers, commits, reads, when the
    /// group was stable after the heal).
    pub group_summary: Option<serde_json::Value>,
}

impl RunResult {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// What a failed run prints: its violations (at most `violations_max`), options,
    /// cluster summary and the command that replays it, one per line, newline-terminated.
    pub fn failure_report(&self, violations_max: usize) -> String {
        let mut out = format!(
            "seed {} FAILED with {} violation(s):\n",
            self.seed,
            self.violations.len()
        );
        for v in self.violations.iter().take(violations_max) {
            out.push_str(&format!("  {v}\n"));
        }
        out.push_str(&format!("  options: {}\n", self.options));
        if let Some(summary) = &self.cluster_summary {
            out.push_str(&format!("  {summary}\n"));
        }
        out.push_str(&format!("  replay: {}\n", self.replay_command()));
        out
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let features = if self.settings.planted.is_empty() {
            ""
        } else {
            " --features planted-bugs"
        };
        format!(
            "cargo run -p gregor-sim --release{features} -- --seed {}{}",
            self.seed,
            self.settings.to_flags()
        )
    }

    /// The one-line JSON summary the CLI ends with.
    pub fn json_line(&self) -> String {
        const SHOWN_MAX: usize = 50;
        let mut violations: Vec<String> = self
            .violations
            .iter()
            .take(SHOWN_MAX)
            .map(|v| v.to_string())
            .collect();
        if self.violations.len() > SHOWN_MAX {
            violations.push(format!("... and {} more", self.violations.len() - SHOWN_MAX));
        }
        let mut line = json!({
            "seed": self.seed,
            "ok": self.ok(),
            "trace_hash": format!("{:016x}", self.trace_hash),
            "steps": self.steps,
            "acked": self.acked,
            "crashes": self.crashes,
            "violations": violations,
            "sim_ms": self.sim_ms,
        });
        if self.settings.nodes != 1 {
            line["nodes"] = json!(self.settings.nodes);
        }
        if let Some(g) = &self.group_summary {
            line["group"] = g.clone();
        }
        line.to_string()
    }
}

#[derive(Clone, Debug)]
enum Event {
    Restart {
        node: usize,
        incarnation: u64,
    },
    Timer {
        node: usize,
        incarnation: u64,
        at_ms: u64,
    },
    IoDone {
        node: usize,
        incarnation: u64,
        token: Token,
    },
    /// A request frame reaches the node.
    ToEngine {
        conn: ConnId,
        seq: u64,
        frame: Bytes,
    },
    /// The client's close reaches the node.
    ClosedToEngine {
        conn: ConnId,
    },
    /// A response frame reaches the client.
    ToClient {
        conn: ConnId,
        seq: u64,
        frame: Bytes,
    },
    ConnLost {
        client: ProcessId,
        conn: ConnId,
        reason: &'static str,
    },
    ClientWake {
        client: ProcessId,
    },
    ClientTimeout {
        client: ProcessId,
        conn: ConnId,
        seq: u64,
    },
    NemesisCrash,
    ShutdownDeadline {
        node: usize,
        incarnation: u64,
    },
    /// A Sync failed; the engine must have stopped (`Fatal`) by now.
    FatalDeadline {
        node: usize,
        incarnation: u64,
    },
    DiskFullStart {
        node: usize,
    },
    DiskFullEnd {
        node: usize,
    },
    ClockJump {
        node: usize,
    },
    SafetyEnd,
    FinalDeadline,
    /// Peer messages are due (cluster).
    PeerDue,
    /// A peer message held while its receiver was paused.
    PeerDeliver {
        node: usize,
        incarnation: u64,
        from: i32,
        msg: Bytes,
    },
    /// The partition nemesis's next phase change (cluster).
    NetNemesis,
    PauseStart,
    PauseEnd {
        node: usize,
        incarnation: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Down,
    /// Started, recovering; not yet `Ready`.
    Recovering,
    Ready,
    /// `Shutdown` sent, waiting for `Stopped`.
    ShuttingDown,
}

struct Node {
    engine: Option<Engine>,
    disk: Disk,
    io: IoQueue,
    incarnation: u64,
    state: NodeState,
    wall: WallClock,
    disk_full: bool,
    timers: BTreeSet<u64>,
    /// A Sync of this incarnation was made to fail (so `Fatal` is expected).
    sync_failed: bool,
    /// Paused (cluster): events for it wait in `deferred` until the pause ends.
    paused: bool,
    deferred: Vec<Event>,
}

/// One client <-> node connection, as the network sees it.
struct NetConn {
    client: ProcessId,
    node: usize,
    incarnation: u64,
    /// The client closed it (its close travels behind its last requests).
    client_closed: bool,
    /// The node side is gone (crash or engine close): nothing more is delivered.
    dead: bool,
    /// Request frames delivered to the engine.
    delivered: u64,
    /// Next response seq to release to the client, and answers waiting for their turn.
    next_answer_seq: u64,
    answers: BTreeMap<u64, Option<Vec<Bytes>>>,
    /// Arrival time of the last frame each way (a connection is FIFO).
    to_engine_last_ms: u64,
    to_client_last_ms: u64,
}

/// Everything but the clients: the part clients reach through [`Transport`].
struct World {
    opts: SwarmOptions,
    config: BrokerConfig,
    clock: SimClock,
    queue: BTreeMap<(u64, u64), Event>,
    queue_seq: u64,
    nodes: Vec<Node>,
    conns: BTreeMap<ConnId, NetConn>,
    next_conn_id: ConnId,
    faults_on: bool,
    /// Print every step (`--verbose`).
    verbose: bool,
    trace: Trace,
    violations: Vec<Violation>,
    nemesis: Vec<(u64, String)>,
    crashes: u64,
    rng_net: ChaCha8Rng,
    rng_io: ChaCha8Rng,
    rng_crash: ChaCha8Rng,
    rng_disk_crash: ChaCha8Rng,
    rng_fsync: ChaCha8Rng,
    rng_full: ChaCha8Rng,
    rng_clock: ChaCha8Rng,
    rng_slow: ChaCha8Rng,
    rng_disconnect: ChaCha8Rng,
    /// The peer network, pauses and their RNGs; `None` on a single node.
    peers: Option<Peers>,
    /// Per-step Raft invariants over every node.
    inv: Invariants,
    /// Invariant violations per kind (only the first few of each are kept in full).
    inv_counts: BTreeMap<&'static str, u64>,
    /// `--verbose`: the status line last printed per (node, group).
    status_shown: BTreeMap<(i32, gregor_engine::replica::GroupId), String>,
}

fn concat(parts: &[Bytes]) -> Bytes {
    if parts.len() == 1 {
        return parts[0].clone();
    }
    let mut b = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        b.extend_from_slice(p);
    }
    b.freeze()
}

impl World {
    fn new(opts: SwarmOptions, config: BrokerConfig, verbose: bool) -> World {
        let seed = opts.seed;
        let node_count = opts.nodes();
        let peers = opts.cluster.as_ref().map(|c| Peers::new(seed, c));
        let nodes = (0..node_count)
            .map(|_| Node {
                engine: None,
                disk: Disk::new(),
                io: IoQueue::default(),
                incarnation: 0,
                state: NodeState::Down,
                wall: WallClock::default(),
                disk_full: false,
                timers: BTreeSet::new(),
                sync_failed: false,
                paused: false,
                deferred: Vec::new(),
            })
            .collect();
        World {
            opts,
            config,
            clock: SimClock::default(),
            queue: BTreeMap::new(),
            queue_seq: 0,
            nodes,
            conns: BTreeMap::new(),
            next_conn_id: 1,
            faults_on: true,
            verbose,
            trace: Trace::default(),
            violations: Vec::new(),
            nemesis: Vec::new(),
            crashes: 0,
            rng_net: rng_for(seed, "net"),
            rng_io: rng_for(seed, "io-latency"),
            rng_crash: rng_for(seed, "fault/crash"),
            rng_disk_crash: rng_for(seed, "fault/crash-disk"),
            rng_fsync: rng_for(seed, "fault/fsync"),
            rng_full: rng_for(seed, "fault/disk-full"),
            rng_clock: rng_for(seed, "fault/clock"),
            rng_slow: rng_for(seed, "fault/slow-io"),
            rng_disconnect: rng_for(seed, "fault/client-disconnect"),
            peers,
            inv: Invariants::default(),
            inv_counts: BTreeMap::new(),
            status_shown: BTreeMap::new(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn schedule(&mut self, at_ms: u64, ev: Event) {
        let at = at_ms.max(self.now());
        self.queue_seq += 1;
        self.queue.insert((at, self.queue_seq), ev);
    }

    fn violation(&mut self, kind: &'static str, detail: String) {
        self.violations.push(Violation {
            kind,
            at_ms: self.now(),
            detail,
        });
    }

    fn log(&mut self, what: String) {
        if self.verbose {
            eprintln!("{:>7}ms nemesis: {what}", self.now());
        }
        self.nemesis.push((self.now(), what));
    }

    fn net_latency(&mut self) -> u64 {
        let (lo, hi) = self.opts.net_latency_ms;
        self.rng_net.gen_range(lo..=hi)
    }

    /// Feeds one input to node `n` and carries out its outputs.
    fn step(&mut self, n: usize, input: Input) {
        let n_id = node_id(n);
        let now = self.nodes[n].wall.time(self.now());
        let Some(engine) = self.nodes[n].engine.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        engine.step(now, input.clone(), &mut out);
        let statuses = engine.replica_status();
        self.trace.step(n, now, &input, &out);
        if self.verbose {
            eprintln!("{:>7}ms n{n_id} <- {}", now.mono_ms, describe_input(&input));
            for o in &out {
                eprintln!("{:>7}ms n{n_id} -> {}", now.mono_ms, describe_output(o));
            }
        }
        self.check_invariants(n, &statuses, &out);
        for o in out {
            if self.nodes[n].engine.is_none() {
                break; // Fatal or Stopped ended this incarnation; the rest is moot.
            }
            self.output(n, o);
        }
    }

    fn output(&mut self, n: usize, o: Output) {
        let n_id = node_id(n);
        #[allow(unreachable_patterns)]
        match o {
            Output::ClientResponse { conn, seq, frame } => self.engine_answer(conn, seq, frame),
            Output::CloseConnection { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    if !c.dead {
                        c.dead = true;
                        let (client, closed) = (c.client, c.client_closed);
                        if !closed {
                            let at = self.now() + self.net_latency();
                            self.schedule(
                                at,
                                Event::ConnLost {
                                    client,
                                    conn,
                                    reason: "broker closed the connection",
                                },
                            );
                        }
                    }
                }
            }
            Output::Io { token, op } => self.submit_io(n, token, op),
            Output::SetTimer { at_mono_ms } => {
                let at = at_mono_ms.max(self.now());
                if self.nodes[n].timers.insert(at) {
                    let incarnation = self.nodes[n].incarnation;
                    self.schedule(
                        at,
                        Event::Timer {
                            node: n,
                            incarnation,
                            at_ms: at,
                        },
                    );
                }
            }
            Output::ClusterId { .. } => {}
            Output::SendPeer { to, msg } => self.send_peer(n, to, msg),
            Output::Ready => {
                if self.nodes[n].state == NodeState::Recovering {
                    self.nodes[n].state = NodeState::Ready;
                    self.log(format!("node {n_id} ready"));
                } else {
                    let s = self.nodes[n].state;
                    self.violation(
                        "engine-contract",
                        format!("node {n_id} emitted Ready while {s:?}"),
                    );
                }
            }
            Output::Stopped => {
                if self.nodes[n].state != NodeState::ShuttingDown {
                    self.violation(
                        "engine-contract",
                        format!("node {n_id} emitted Stopped without Shutdown"),
                    );
                }
                self.crash(n, "power loss after graceful stop".to_string());
            }
            Output::Fatal { reason } => {
                if !self.nodes[n].sync_failed {
                    self.violation("fatal-without-cause", format!("node {n_id}: {reason}"));
                }
                self.crash(n, format!("fatal: {reason}"));
            }
            other => self.violation("sim-bug", format!("unhandled engine output {other:?}")),
        }
    }

    fn engine_answer(&mut self, conn: ConnId, seq: u64, frame: Option<Vec<Bytes>>) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            self.violation("engine-contract", format!("answer on unknown connection {conn}"));
            return;
        };
        if seq >= c.delivered || seq < c.next_answer_seq || c.answers.contains_key(&seq) {
            let detail = format!(
                "answer to request {seq} on conn {conn}: delivered {}, answered below {}",
                c.delivered, c.next_answer_seq
            );
            self.violation("engine-contract", detail);
            return;
        }
        c.answers.insert(seq, frame);
        let mut releases = Vec::new();
        while let Some(answer) = c.answers.remove(&c.next_answer_seq) {
            if let Some(parts) = answer {
                releases.push((c.next_answer_seq, concat(&parts)));
            }
            c.next_answer_seq += 1;
        }
        if c.dead || c.client_closed {
            return;
        }
        for (seq, frame) in releases {
            let latency = self.net_latency();
            let c = self.conns.get_mut(&conn).expect("looked up above");
            let at = (now + latency).max(c.to_client_last_ms);
            c.to_client_last_ms = at;
            self.schedule(at, Event::ToClient { conn, seq, frame });
        }
    }

    fn submit_io(&mut self, n: usize, token: Token, op: IoOp) {
        let n_id = node_id(n);
        let (lo, hi) = self.opts.io_latency_ms;
        let mut latency = self.rng_io.gen_range(lo..=hi);
        if let Some(slow) = self.opts.faults.slow_io.clone() {
            if self.faults_on && self.rng_slow.gen_bool(slow.p) {
                latency += self.rng_slow.gen_range(0..=slow.extra_ms_max);
            }
        }
        let now = self.now();
        let incarnation = self.nodes[n].incarnation;
        match self.nodes[n].io.submit(token, op, now, latency) {
            Some(at) => self.schedule(
                at,
                Event::IoDone {
                    node: n,
                    incarnation,
                    token,
                },
            ),
            None => self.violation(
                "engine-contract",
                format!("node {n_id} reused IO token {token} while in flight"),
            ),
        }
    }

    fn io_done(&mut self, n: usize, token: Token) {
        let n_id = node_id(n);
        let Some(op) = self.nodes[n].io.complete(token) else {
            return;
        };
        let mut faults = OpFaults::default();
        if matches!(op, IoOp::Append { .. }) && self.nodes[n].disk_full {
            faults.no_space = true;
        }
        if let (IoOp::Sync { file }, Some(p)) = (&op, self.opts.faults.fsync_error_p) {
            if self.faults_on && self.rng_fsync.gen_bool(p) {
                faults.fail_sync = true;
                self.nodes[n].sync_failed = true;
                let incarnation = self.nodes[n].incarnation;
                let at = self.now() + FATAL_AFTER_SYNC_ERROR_MS;
                self.schedule(at, Event::FatalDeadline { node: n, incarnation });
                let file = file.clone();
                self.log(format!("node {n_id}: fsync of {file} fails"));
                self.trace.event("fsync-error", &[n as u64, token]);
            }
        }
        let result = self.nodes[n].disk.apply(&op, faults);
        for m in self.nodes[n].disk.take_misuses() {
            self.violation("disk-misuse", format!("node {n_id}: {}", m.0));
        }
        self.step(n, Input::IoDone { token, result });
    }

    /// Power loss on node `n`: the engine is gone, its disk keeps what the crash model lets
    /// survive, its connections die; it restarts after a seeded delay.
    fn crash(&mut self, n: usize, why: String) {
        let n_id = node_id(n);
        self.crashes += 1;
        let mut model = self
            .opts
            .faults
            .crash
            .as_ref()
            .map(|c| c.model)
            .unwrap_or(DEFAULT_CRASH_MODEL);
        if self
            .opts
            .cluster
            .as_ref()
            .is_some_and(|c| !c.corrupt_nodes.contains(&n))
        {
            model.bit_flip_p = 0.0; // outside the corruption budget
        }
        let done_unheard = self.apply_in_flight_at_crash(n);
        self.peer_link_down(n);
        self.inv.on_crash(node_id(n));
        let node = &mut self.nodes[n];
        node.engine = None;
        node.incarnation += 1;
        node.state = NodeState::Down;
        node.io.reset();
        node.timers.clear();
        node.sync_failed = false;
        node.paused = false;
        node.deferred.clear();
        let unsynced = node.disk.unsynced_bytes();
        let report = node.disk.crash(&mut self.rng_disk_crash, &model);
        let incarnation = node.incarnation;
        self.trace.event(
            "crash",
            &[
                n as u64,
                report.bytes_lost,
                report.bytes_kept,
                report.flips.len() as u64,
            ],
        );
        self.log(format!(
            "node {n_id} crashes ({why}): {done_unheard} IO ops done unreported, {unsynced} unsynced bytes, \
             {} lost, {} kept, {} torn files, flips {:?}",
            report.bytes_lost, report.bytes_kept, report.torn_files, report.flips
        ));
        let mut lost = Vec::new();
        for (&id, c) in self.conns.iter_mut().filter(|(_, c)| c.node == n && !c.dead) {
            c.dead = true;
            if !c.client_closed {
                lost.push((c.client, id));
            }
        }
        for (client, conn) in lost {
            let at = self.now() + self.net_latency();
            self.schedule(
                at,
                Event::ConnLost {
                    client,
                    conn,
                    reason: "broker crashed",
                },
            );
        }
        let restart_ms_max = self
            .opts
            .faults
            .crash
            .as_ref()
            .map_or(10, |c| c.restart_ms_max.max(1));
        let at = self.now() + self.rng_crash.gen_range(1..=restart_ms_max);
        self.schedule(at, Event::Restart { node: n, incarnation });
    }

    /// At a crash, the device may have carried out some in-flight ops whose completions
    /// the engine never saw: per order key, a random prefix of them. Returns how many.
    fn apply_in_flight_at_crash(&mut self, n: usize) -> u64 {
        let n_id = node_id(n);
        let groups = self.nodes[n].io.in_flight_by_key();
        let mut applied = 0u64;
        for ops in groups {
            let done = self.rng_disk_crash.gen_range(0..=ops.len());
            for op in &ops[..done] {
                let no_space = self.nodes[n].disk_full && matches!(op, IoOp::Append { .. });
                let _ = self.nodes[n].disk.apply(
                    op,
                    OpFaults {
                        no_space,
                        fail_sync: false,
                    },
                );
                applied += 1;
            }
        }
        for m in self.nodes[n].disk.take_misuses() {
            self.violation("disk-misuse", format!("node {n_id}: {}", m.0));
        }
        applied
    }

    fn start_node(&mut self, n: usize) {
        let n_id = node_id(n);
        let node = &mut self.nodes[n];
        let mut config = self.config.clone();
        config.node_id = node_id(n);
        config.rng_seed = derive_seed(self.opts.seed, &format!("engine/{n}/{}", node.incarnation));
        node.engine = Some(Engine::new(config));
        node.state = NodeState::Recovering;
        // Peers reach it from its start: a cluster node needs them to get ready.
        self.peer_link_up(n);
        self.log(format!(
            "node {n_id} starts (incarnation {})",
            self.nodes[n].incarnation
        ));
        self.step(n, Input::Start);
    }

    fn handle(&mut self, ev: Event) {
        if let Some(n) = self.node_of(&ev).filter(|&n| self.nodes[n].paused) {
            self.nodes[n].deferred.push(ev);
            return;
        }
        match ev {
            Event::Restart { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].state == NodeState::Down {
                    self.start_node(node);
                }
            }
            Event::Timer {
                node,
                incarnation,
                at_ms,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.nodes[node].timers.remove(&at_ms);
                    self.step(node, Input::Tick);
                }
            }
            Event::IoDone {
                node,
                incarnation,
                token,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.io_done(node, token);
                }
            }
            Event::ToEngine { conn, seq, frame } => self.deliver_request(conn, seq, frame),
            Event::ClosedToEngine { conn } => {
                let Some(c) = self.conns.get(&conn) else { return };
                let (n, inc, dead) = (c.node, c.incarnation, c.dead);
                if !dead && self.nodes[n].incarnation == inc {
                    self.step(n, Input::ConnectionClosed { conn });
                }
            }
            Event::NemesisCrash => self.nemesis_crash(),
            Event::ShutdownDeadline { node, incarnation } => {
                let n = &self.nodes[node];
                if n.incarnation == incarnation && n.state == NodeState::ShuttingDown {
                    self.violation(
                        "liveness",
                        format!(
                            "node {id}: no Stopped {SHUTDOWN_MS_MAX}ms after Shutdown",
                            id = node_id(node)
                        ),
                    );
                    self.crash(node, "shutdown hung".to_string());
                }
            }
            Event::FatalDeadline { node, incarnation } => {
                let n = &self.nodes[node];
                if n.incarnation == incarnation && n.engine.is_some() {
                    let detail = format!(
                        "node {id} still runs {FATAL_AFTER_SYNC_ERROR_MS}ms after a failed fsync",
                        id = node_id(node)
                    );
                    self.violation("fsync-error-ignored", detail);
                    self.crash(node, "fsync error ignored".to_string());
                }
            }
            Event::DiskFullStart { node } => self.disk_full_start(node),
            Event::DiskFullEnd { node } => {
                if self.nodes[node].disk_full {
                    self.nodes[node].disk_full = false;
                    self.log(format!("node {id}: disk has space again", id = node_id(node)));
                }
            }
            Event::ClockJump { node } => self.clock_jump(node),
            Event::PeerDue => self.peer_due(),
            Event::PeerDeliver {
                node,
                incarnation,
                from,
                msg,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.step(node, Input::PeerMessage { from, msg });
                }
            }
            Event::NetNemesis => self.net_nemesis(),
            Event::PauseStart => self.pause_start(),
            Event::PauseEnd { node, incarnation } => self.pause_end(node, incarnation),
            Event::ToClient { .. }
            | Event::ConnLost { .. }
            | Event::ClientWake { .. }
            | Event::ClientTimeout { .. }
            | Event::SafetyEnd
            | Event::FinalDeadline => unreachable!("handled by Sim::dispatch"),
        }
    }

    fn deliver_request(&mut self, conn: ConnId, seq: u64, frame: Bytes) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let n = c.node;
        if c.dead || self.nodes[n].incarnation != c.incarnation || self.nodes[n].engine.is_none() {
            return;
        }
        if seq != c.delivered {
            let detail = format!("conn {conn}: frame {seq} delivered as number {}", c.delivered);
            self.violation("sim-bug", detail);
            return;
        }
        c.delivered += 1;
        self.step(n, Input::ClientRequest { conn, seq, frame });
    }

    fn nemesis_crash(&mut self) {
        let Some(cf) = self.opts.faults.crash.clone() else {
            return;
        };
        if !self.faults_on {
            return;
        }
        let n = pick_node(self.nodes.len(), &mut self.rng_crash);
        let n_id = node_id(n);
        match self.nodes[n].state {
            NodeState::Down | NodeState::ShuttingDown => {}
            NodeState::Ready if self.rng_crash.gen_bool(cf.graceful_p) && !self.nodes[n].paused => {
                self.nodes[n].state = NodeState::ShuttingDown;
                self.log(format!("node {n_id}: graceful shutdown"));
                self.trace.event("shutdown", &[n as u64]);
                let incarnation = self.nodes[n].incarnation;
                self.schedule(
                    self.now() + SHUTDOWN_MS_MAX,
                    Event::ShutdownDeadline { node: n, incarnation },
                );
                self.step(n, Input::Shutdown);
            }
            NodeState::Ready | NodeState::Recovering => self.crash(n, "nemesis".to_string()),
        }
        let gap = exp_gap_ms(&mut self.rng_crash, cf.interval_ms_mean);
        self.schedule(self.now() + gap, Event::NemesisCrash);
    }

    fn disk_full_start(&mut self, node: usize) {
        let Some(f) = self.opts.faults.disk_full.clone() else {
            return;
        };
        if !self.faults_on {
            return;
        }
        let duration = self.rng_full.gen_range(1..=f.duration_ms_max);
        self.nodes[node].disk_full = true;
        self.log(format!(
            "node {id}: disk full for {duration}ms",
            id = node_id(node)
        ));
        self.trace.event("disk-full", &[node as u64, duration]);
        self.schedule(self.now() + duration, Event::DiskFullEnd { node });
        let gap = exp_gap_ms(&mut self.rng_full, f.interval_ms_mean);
        self.schedule(self.now() + duration + gap, Event::DiskFullStart { node });
    }

    fn clock_jump(&mut self, node: usize) {
        let Some(c) = self.opts.faults.clock_skew.clone() else {
            return;
        };
        if !self.faults_on {
            return;
        }
        let delta = self.rng_clock.gen_range(-c.jump_ms_max..=c.jump_ms_max);
        let now = self.now();
        self.nodes[node].wall.jump(now, delta);
        self.log(format!(
            "node {id}: wall clock jumps {delta:+}ms",
            id = node_id(node)
        ));
        self.trace.event("clock-jump", &[node as u64, delta as u64]);
        let gap = exp_gap_ms(&mut self.rng_clock, c.interval_ms_mean);
        self.schedule(now + gap, Event::ClockJump { node });
    }

    /// Turns every fault off (the safety phase is over).
    fn heal(&mut self) {
        self.faults_on = false;
        for n in 0..self.nodes.len() {
            self.nodes[n].disk_full = false;
        }
        self.log("heal: faults off".to_string());
        self.trace.event("heal", &[]);
        self.heal_cluster();
    }
}

impl Transport for World {
    fn connect(&mut self, client: ProcessId, n: usize) -> Option<ConnId> {
        if self
            .nodes
            .get(n)
            .is_none_or(|node| node.state != NodeState::Ready)
        {
            return None;
        }
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let incarnation = self.nodes[n].incarnation;
        self.conns.insert(
            id,
            NetConn {
                client,
                node: n,
                incarnation,
                client_closed: false,
                dead: false,
                delivered: 0,
                next_answer_seq: 0,
                answers: BTreeMap::new(),
                to_engine_last_ms: 0,
                to_client_last_ms: 0,
            },
        );
        Some(id)
    }

    fn send(&mut self, client: ProcessId, conn: ConnId, seq: u64, frame: Bytes, timeout_at_ms: u64) {
        let latency = self.net_latency();
        let now = self.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.client_closed {
            return;
        }
        let at = (now + latency).max(c.to_engine_last_ms);
        c.to_engine_last_ms = at;
        self.schedule(at, Event::ToEngine { conn, seq, frame });
        self.schedule(timeout_at_ms, Event::ClientTimeout { client, conn, seq });
    }

    fn close(&mut self, conn: ConnId) {
        let latency = self.net_latency();
        let now = self.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.client_closed {
            return;
        }
        c.client_closed = true;
        let at = (now + latency).max(c.to_engine_last_ms);
        self.schedule(at, Event::ClosedToEngine { conn });
    }

    fn wake_at(&mut self, client: ProcessId, at_ms: u64) {
        self.schedule(at_ms, Event::ClientWake { client });
    }

    fn disconnect_after_send(&mut self) -> bool {
        match self.opts.faults.client_disconnect_p {
            Some(p) if self.faults_on => self.rng_disconnect.gen_bool(p),
            _ => false,
        }
    }

    fn nodes(&self) -> usize {
        self.nodes.len()
    }
}

/// A node a fault strikes: the only one, or one drawn from `rng` in a cluster (so a single
/// node draws nothing and its runs stay as they were).
fn pick_node(count: usize, rng: &mut ChaCha8Rng) -> usize {
    match count {
        1 => 0,
        n => rng.gen_range(0..n),
    }
}

/// The broker id of node index `n` (ids start at 1, as `node.id`s usually do).
fn node_id(n: usize) -> i32 {
    n as i32 + 1
}

/// One run: the world plus the clients and what they recorded.
pub struct Sim {
    world: World,
    clients: Vec<Client>,
    history: History,
    shared: Shared,
    client_violations: Vec<Violation>,
    settings: RunSettings,
    safety_end_ms: u64,
    /// Group consumers, if the seed runs them.
    groups: Option<GroupSim>,
}

fn planted_bugs(planted: &[Planted]) -> PlantedBugs {
    #[allow(unused_mut)]
    let mut bugs = PlantedBugs::default();
    #[cfg(feature = "planted-bugs")]
    for p in planted {
        match p {
            Planted::AckBeforeFsync => bugs.ack_before_fsync = true,
            Planted::SkipRecoveryCrc => bugs.skip_recovery_crc = true,
            Planted::IndexOffByOne => bugs.index_off_by_one = true,
            Planted::VoteWithoutPersist => bugs.vote_without_persist = true,
            Planted::FollowerAckBeforeFsync => bugs.follower_ack_before_fsync = true,
            Planted::CommitOnMinority => bugs.commit_on_minority = true,
            Planted::SkipTruncation => bugs.skip_truncation = true,
        }
    }
    #[cfg(not(feature = "planted-bugs"))]
    let _ = planted;
    bugs
}

impl Sim {
    pub fn new(seed: u64, settings: &RunSettings) -> Sim {
        let opts = SwarmOptions::choose(seed, settings);
        let mut config = BrokerConfig {
            node_id: 1,
            // Topics exist only through the admin's CreateTopics, so a lost topic shows.
            auto_create_topics_enable: false,
            num_partitions: opts.partitions,
            log_segment_bytes: opts.segment_bytes,
            log_index_interval_bytes: opts.index_interval_bytes,
            planted: planted_bugs(&settings.planted),
            ..BrokerConfig::default()
        };
        let broker_ids: Vec<i32> = (0..opts.nodes()).map(node_id).collect();
        let replication_factor = opts.cluster.as_ref().map_or(1, |c| c.replication_factor);
        if opts.cluster.is_some() {
            // Every node votes on the metadata log; the address is the shell's business.
            config.quorum_voters = broker_ids
                .iter()
                .map(|&id| Voter {
                    id,
                    host: format!("node{id}.sim"),
                    port: 9093,
                })
                .collect();
            config.default_replication_factor = replication_factor;
        }
        if let Some(g) = &opts.groups {
            config.group.offsets_topic_partitions = GROUP_OFFSETS_PARTITIONS;
            config.group.initial_rebalance_delay_ms = g.initial_rebalance_delay_ms;
            config.group.session_timeout_ms_min = 100;
            // Clock jumps of a day must not expire committed offsets (invariant 2 does not
            // model retention).
            config.group.offsets_retention_ms = u64::MAX / 4;
        }
        let groups = opts
            .groups
            .as_ref()
            .map(|g| GroupSim::new(seed, g, opts.partitions));
        let world = World::new(opts.clone(), config, settings.verbose);
        let partitions = opts.partitions;
        let roles = std::iter::once(Role::Admin)
            .chain(std::iter::repeat_n(Role::Producer, opts.producers))
            .chain(std::iter::repeat_n(Role::Consumer, opts.consumers));
        let clients = roles
            .enumerate()
            .map(|(id, role)| {
                let rng = rng_for(seed, &format!("client/{id}"));
                Client::new(id as ProcessId, role, rng, partitions)
            })
            .collect();
        let n = partitions as usize;
        let shared = Shared {
            topic: TOPIC.to_string(),
            topic_ready: false,
            partition_confirmed: vec![false; n],
            topic_id: None,
            phase: Phase::Safety,
            acked_all_end: vec![0; n],
            final_done: false,
            leader_epoch_max: vec![-1; n],
            broker_ids,
            replication_factor,
        };
        Sim {
            world,
            clients,
            history: History::default(),
            shared,
            client_violations: Vec::new(),
            settings: settings.clone(),
            safety_end_ms: opts.safety_ms,
            groups,
        }
    }

    pub fn options(&self) -> &SwarmOptions {
        &self.world.opts
    }

    fn schedule_start(&mut self) {
        let w = &mut self.world;
        for n in 0..w.nodes.len() {
            w.schedule(
                0,
                Event::Restart {
                    node: n,
                    incarnation: 0,
                },
            );
        }
        for c in 0..self.clients.len() {
            let at = w.rng_net.gen_range(0..10);
            w.schedule(
                at,
                Event::ClientWake {
                    client: c as ProcessId,
                },
            );
        }
        let f = w.opts.faults.clone();
        if let Some(c) = &f.crash {
            let at = exp_gap_ms(&mut w.rng_crash, c.interval_ms_mean);
            w.schedule(at, Event::NemesisCrash);
        }
        for n in 0..w.nodes.len() {
            if let Some(d) = &f.disk_full {
                let at = exp_gap_ms(&mut w.rng_full, d.interval_ms_mean);
                w.schedule(at, Event::DiskFullStart { node: n });
            }
            if let Some(c) = &f.clock_skew {
                let at = exp_gap_ms(&mut w.rng_clock, c.interval_ms_mean);
                w.schedule(at, Event::ClockJump { node: n });
            }
        }
        w.schedule(self.safety_end_ms, Event::SafetyEnd);
        w.schedule(self.safety_end_ms + LIVENESS_MS, Event::FinalDeadline);
        w.schedule_cluster_start();
        self.with_group(|g, ctx| g.start(ctx));
    }

    /// Runs `f` on the group part of the run, if there is one.
    fn with_group(&mut self, f: impl FnOnce(&mut GroupSim, &mut Ctx)) {
        let Sim {
            world,
            history,
            shared,
            client_violations,
            groups,
            ..
        } = self;
        let Some(g) = groups.as_mut() else { return };
        let opts = world.opts.clone();
        let mut ctx = Ctx {
            now_ms: world.clock.now_ms(),
            history,
            violations: client_violations,
            shared,
            opts: &opts,
            transport: world,
        };
        f(g, &mut ctx);
    }

    fn with_client(&mut self, id: ProcessId, f: impl FnOnce(&mut Client, &mut Ctx)) {
        let Sim {
            world,
            clients,
            history,
            shared,
            client_violations,
            ..
        } = self;
        let opts = world.opts.clone();
        let mut ctx = Ctx {
            now_ms: world.clock.now_ms(),
            history,
            violations: client_violations,
            shared,
            opts: &opts,
            transport: world,
        };
        if let Some(c) = clients.get_mut(id as usize) {
            f(c, &mut ctx);
        }
    }

    fn client_of(&self, conn: ConnId) -> Option<ProcessId> {
        self.world.conns.get(&conn).map(|c| c.client)
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::ToClient { conn, seq, frame } => match self.client_of(conn) {
                Some(id) if is_group_process(id) => {
                    self.with_group(|g, ctx| g.on_response(ctx, id, conn, seq, frame));
                }
                Some(client) => self.with_client(client, |c, ctx| c.on_response(ctx, conn, seq, frame)),
                None => {}
            },
            Event::ConnLost { client, conn, reason } if is_group_process(client) => {
                self.with_group(|g, ctx| g.on_conn_lost(ctx, client, conn, reason));
            }
            Event::ConnLost { client, conn, reason } => {
                self.with_client(client, |c, ctx| c.on_conn_lost(ctx, conn, reason));
            }
            Event::ClientWake { client } if is_group_process(client) => {
                self.with_group(|g, ctx| g.on_wake(ctx, client));
            }
            Event::ClientWake { client } => self.with_client(client, |c, ctx| c.on_wake(ctx)),
            Event::ClientTimeout { client, conn, seq } if is_group_process(client) => {
                self.with_group(|g, ctx| g.on_timeout(ctx, client, conn, seq));
            }
            Event::ClientTimeout { client, conn, seq } => {
                self.with_client(client, |c, ctx| c.on_timeout(ctx, conn, seq));
            }
            Event::SafetyEnd => self.end_safety(),
            Event::FinalDeadline => {
                let stuck = self.describe_stuck();
                self.world.violation(
                    "liveness",
                    format!("no final read {LIVENESS_MS}ms after healing: {stuck}"),
                );
                self.shared.phase = Phase::Done;
            }
            other => self.world.handle(other),
        }
    }

    fn end_safety(&mut self) {
        if self.shared.phase != Phase::Safety {
            return;
        }
        self.shared.phase = Phase::Drain;
        self.world.heal();
        self.with_group(|g, ctx| g.heal(ctx));
        if self.world.opts.final_crash {
            let n = pick_node(self.world.nodes.len(), &mut self.world.rng_crash);
            if self.world.nodes[n].state != NodeState::Down {
                self.world.crash(n, "final crash".to_string());
            }
        }
    }

    fn describe_stuck(&self) -> String {
        let states: Vec<String> = self
            .world
            .nodes
            .iter()
            .map(|n| format!("{:?}", n.state))
            .collect();
        let errors: Vec<String> = self
            .clients
            .iter()
            .filter(|c| c.role == Role::FinalReader || c.busy() || (c.role == Role::Admin && !c.done))
            .filter_map(|c| {
                c.last_error
                    .as_ref()
                    .map(|(e, n)| format!("{:?} {}: {e} (x{n})", c.role, c.id))
            })
            .collect();
        let group = self
            .groups
            .as_ref()
            .map_or(String::new(), |g| format!(", group members [{}]", g.describe()));
        format!(
            "phase {:?}, topic ready {}, nodes {:?}, busy clients {}, last errors {:?}{group}{}",
            self.shared.phase,
            self.shared.topic_ready,
            states,
            self.clients.iter().filter(|c| c.busy()).count(),
            errors,
            self.world.describe_groups()
        )
    }

    /// Drain -> Final once the node serves and no client waits; Final -> Done once read.
    fn advance_phase(&mut self) {
        match self.shared.phase {
            Phase::Drain => {
                let ready =
                    self.world.nodes.iter().all(|n| n.state == NodeState::Ready) && self.world.settled();
                let idle = self.clients.iter().all(|c| !c.busy() || c.role == Role::Admin);
                if ready && idle && self.shared.topic_ready {
                    self.shared.phase = Phase::Final;
                    let id = self.clients.len() as ProcessId;
                    let rng = rng_for(self.world.opts.seed, "client/final");
                    self.clients.push(Client::new(
                        id,
                        Role::FinalReader,
                        rng,
                        self.world.opts.partitions,
                    ));
                    let now = self.world.now();
                    self.world.schedule(now, Event::ClientWake { client: id });
                }
            }
            Phase::Final if self.shared.final_done && self.groups.as_ref().is_none_or(|g| g.done()) => {
                self.shared.phase = Phase::Done
            }
            _ => {}
        }
    }

    /// Runs to the end and checks the history.
    pub fn run(mut self) -> RunResult {
        self.schedule_start();
        let mut events: u64 = 0;
        let mut events_now: u64 = 0;
        while let Some(((at, _), ev)) = self.world.queue.pop_first() {
            events_now = if at == self.world.now() { events_now + 1 } else { 1 };
            self.world.clock.advance_to(at);
            events += 1;
            if events > EVENTS_MAX {
                self.world
                    .violation("runaway", format!("more than {EVENTS_MAX} events"));
                break;
            }
            if events_now > EVENTS_PER_INSTANT_MAX {
                let detail = format!("{EVENTS_PER_INSTANT_MAX} events without time passing");
                self.world.violation("livelock", detail);
                break;
            }
            self.dispatch(ev);
            if self
                .groups
                .as_ref()
                .is_some_and(|g| g.observing(self.shared.phase))
            {
                self.with_group(|g, ctx| g.observe(ctx));
            }
            if self.shared.phase == Phase::Safety
                && self
                    .settings
                    .steps_max
                    .is_some_and(|m| self.world.trace.steps >= m)
            {
                self.end_safety();
            }
            self.advance_phase();
            if self.shared.phase == Phase::Done {
                break;
            }
        }
        self.finish()
    }

    fn finish(mut self) -> RunResult {
        let end_ms = self.world.now();
        // Group members note their churn in the history; the world's faults join them.
        let mut nemesis = std::mem::take(&mut self.world.nemesis);
        nemesis.append(&mut self.history.nemesis);
        nemesis.sort_by_key(|(t, _)| *t);
        self.history.nemesis = nemesis;
        let params = CheckParams {
            partitions: self.world.opts.partitions,
            acks1_durable: self.world.nodes.len() == 1,
            end_ms,
        };
        self.world.count_suppressed();
        if self.shared.final_done {
            self.world.check_committed_bytes();
        }
        let mut violations = std::mem::take(&mut self.world.violations);
        violations.append(&mut self.client_violations);
        if self.shared.final_done {
            violations.extend(check_history(&self.history, &params));
            violations.extend(crate::jepsen_history::check_jepsen(&self.history, &params).1);
        }
        if let Some(g) = &self.groups {
            violations.extend(g.check(&GroupCheckParams {
                partitions: params.partitions,
                cluster: self.world.nodes.len() > 1,
                end_ms,
            }));
        }
        let acked = self
            .history
            .acked_produces()
            .map(|(op, ..)| match &self.history.ops[op].kind {
                crate::history::OpKind::Produce { records, .. } => records.len() as u64,
                _ => 0,
            })
            .sum();
        RunResult {
            seed: self.world.opts.seed,
            options: self.world.opts.clone(),
            settings: self.settings,
            trace_hash: self.world.trace.hash(),
            steps: self.world.trace.steps,
            acked,
            crashes: self.world.crashes,
            violations,
            sim_ms: end_ms,
            history: self.history,
            cluster_summary: self.world.cluster_summary(),
            group_summary: self.groups.as_ref().map(|g| g.summary()),
        }
    }
}

/// Runs one seed. A panic (engine assertion) becomes a failed run when panics unwind (tests,
/// debug builds); release builds abort, and the CLI's supervisor reports the seed instead.
pub fn run_seed(seed: u64, settings: &RunSettings) -> RunResult {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(seed, settings).run()));
    run.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".to_string());
        RunResult::panicked(seed, settings, message)
    })
}

impl RunResult {
    /// The result of a run that panicked.
    pub fn panicked(seed: u64, settings: &RunSettings, message: String) -> RunResult {
        RunResult {
            seed,
            options: SwarmOptions::choose(seed, settings),
            settings: settings.clone(),
            trace_hash: 0,
            steps: 0,
            acked: 0,
            crashes: 0,
            violations: vec![Violation {
                kind: "panic",
                at_ms: 0,
                detail: message,
            }],
            sim_ms: 0,
            history: History::default(),
            cluster_summary: None,
            group_summary: None,
        }
    }
}
