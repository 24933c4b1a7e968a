//! A deterministic simulated cluster of [`RaftCore`]s: model logs whose durable end lags
//! until a simulated fsync, hard states durable only once a simulated persist completes, a
//! network with delay, loss, duplication, reordering and partitions, and crashes that lose
//! everything not durable. One seeded `ChaCha8Rng` drives everything; no threads, no clock.
//!
//! After every event the invariants are checked (see [`Cluster::check`]); the first broken
//! one ends the run with a [`Violation`] naming the seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::BytesMut;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::model_log::{batch_id, ModelLog};
use crate::raft::{
    codec, quorum, Entry, HardState, NodeId, RaftAction, RaftBugs, RaftConfig, RaftCore, RaftLog, RaftMsg,
    Role,
};

pub type Violation = String;

/// Node-level tick period of the simulated engine.
const TICK_MS: u64 = 10;

/// What can go wrong, and how slow things are. Each seed draws its own (swarm testing).
#[derive(Clone, Debug)]
pub struct Faults {
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    pub loss: f64,
    pub dup: f64,
    pub partitions: bool,
    pub crashes: bool,
    /// Time between single-node crashes, drawn from this range.
    pub crash_every_ms: (u64, u64),
    /// Power outages: every node crashes at once, then they come back one by one.
    pub outages: bool,
    /// Crash a node, now and then, while one of its hard-state persists is in flight.
    pub crash_while_persisting: bool,
    /// The engine applies follower `Append`/`Truncate` at once and calls `on_log_settled`
    /// (as the real engine does); otherwise after a delay, calling `on_log_changed`.
    pub sync_log: bool,
    /// With `sync_log`: the probability that the engine refuses a follower `Append`.
    pub refuse_append: f64,
    pub persist_delay_max_ms: u64,
    pub write_delay_max_ms: u64,
    pub fsync_delay_max_ms: u64,
    /// Clients propose at every node that believes it leads, this often (None: only by hand).
    pub propose_every_ms: Option<(u64, u64)>,
}

impl Faults {
    /// A calm network and fast disks, no automatic proposals: for scripted scenarios.
    pub fn calm() -> Self {
        Faults {
            delay_min_ms: 1,
            delay_max_ms: 3,
            loss: 0.0,
            dup: 0.0,
            partitions: false,
            crashes: false,
            crash_every_ms: (300, 2_000),
            outages: false,
            crash_while_persisting: false,
            sync_log: false,
            refuse_append: 0.0,
            persist_delay_max_ms: 2,
            write_delay_max_ms: 1,
            fsync_delay_max_ms: 3,
            propose_every_ms: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub voters: usize,
    pub learners: usize,
    pub raft: RaftConfig,
    pub faults: Faults,
    /// Faults stop (everything healed and restarted) at this time; then liveness is required.
    pub heal_at_ms: u64,
    /// After healing, a new proposal must commit within this much simulated time.
    pub liveness_bound_ms: u64,
}

impl SimConfig {
    /// A calm cluster of `voters` voters and `learners` learners.
    pub fn calm(seed: u64, voters: usize, learners: usize) -> Self {
        SimConfig {
            seed,
            voters,
            learners,
            raft: RaftConfig::default(),
            faults: Faults::calm(),
            heal_at_ms: u64::MAX,
            liveness_bound_ms: 10_000,
        }
    }

    /// The swarm: every seed picks its own cluster size, knobs and faults.
    pub fn choose(seed: u64, bugs: RaftBugs) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0f1);
        let voters = if rng.gen_bool(0.5) { 3 } else { 5 };
        let learners = usize::from(rng.gen_bool(0.25));
        let mut raft = RaftConfig {
            bugs,
            ..RaftConfig::default()
        };
        if rng.gen_bool(0.5) {
            // Fast timeouts: elections contend with message delays.
            raft.election_timeout_min_ms = 150;
            raft.election_timeout_max_ms = 300;
            raft.heartbeat_interval_ms = 50;
        }
        if rng.gen_bool(0.5) {
            raft.inflight_bytes_max = rng.gen_range(64..=512);
            raft.append_bytes_max = rng.gen_range(16..=256);
        }
        let delay_min_ms = rng.gen_range(1..=5);
        let sync_log = rng.gen_bool(0.5);
        let faults = Faults {
            delay_min_ms,
            delay_max_ms: delay_min_ms + rng.gen_range(0..=40),
            loss: if rng.gen_bool(0.5) {
                rng.gen_range(0.0..0.1)
            } else {
                0.0
            },
            dup: if rng.gen_bool(0.5) {
                rng.gen_range(0.0..0.05)
            } else {
                0.0
            },
            partitions: rng.gen_bool(0.6),
            crashes: rng.gen_bool(0.6),
            crash_every_ms: if rng.gen_bool(0.5) {
                (300, 2_000)
            } else {
                (100, 800)
            },
            outages: rng.gen_bool(0.3),
            crash_while_persisting: rng.gen_bool(0.3),
            sync_log,
            refuse_append: if sync_log && rng.gen_bool(0.3) {
                rng.gen_range(0.0..0.05)
            } else {
                0.0
            },
            persist_delay_max_ms: rng.gen_range(0..=50),
            write_delay_max_ms: rng.gen_range(0..=5),
            fsync_delay_max_ms: rng.gen_range(1..=100),
            propose_every_ms: Some((10, rng.gen_range(20..=100))),
        };
        SimConfig {
            seed,
            voters,
            learners,
            raft,
            faults,
            heal_at_ms: 5_000,
            liveness_bound_ms: 5_000,
        }
    }

    pub fn describe(&self) -> String {
        let f = &self.faults;
        format!(
            "seed={} voters={} learners={} election_timeout={}..{}ms heartbeat={}ms inflight_max={} append_max={} \
             delay={}..{}ms loss={:.3} dup={:.3} partitions={} crashes={} every {:?}ms outages={} crash_while_persisting={} sync_log={} refuse_append={:.3} persist<={}ms \
             write<={}ms fsync<={}ms bugs={:?}",
            self.seed,
            self.voters,
            self.learners,
            self.raft.election_timeout_min_ms,
            self.raft.election_timeout_max_ms,
            self.raft.heartbeat_interval_ms,
            self.raft.inflight_bytes_max,
            self.raft.append_bytes_max,
            f.delay_min_ms,
            f.delay_max_ms,
            f.loss,
            f.dup,
            f.partitions,
            f.crashes,
            f.crash_every_ms,
            f.outages,
            f.crash_while_persisting,
            f.sync_log,
            f.refuse_append,
            f.persist_delay_max_ms,
            f.write_delay_max_ms,
            f.fsync_delay_max_ms,
            self.raft.bugs
        )
    }
}

/// A follower log action waiting for the simulated disk.
#[derive(Clone, Debug)]
enum LogOp {
    Append(Vec<Entry>),
    Truncate(u64),
}

#[derive(Clone, Debug)]
enum Ev {
    Deliver {
        from: NodeId,
        to: NodeId,
        from_inc: u64,
        to_inc: u64,
        msg: RaftMsg,
    },
    Tick {
        node: usize,
        inc: u64,
    },
    Heartbeat {
        node: usize,
        inc: u64,
    },
    PersistDone {
        node: usize,
        inc: u64,
        hard: HardState,
    },
    LogOp {
        node: usize,
        inc: u64,
        op_id: u64,
    },
    Fsync {
        node: usize,
        inc: u64,
    },
    Entries {
        node: usize,
        inc: u64,
        to: NodeId,
        from: u64,
        max_bytes: u64,
        term: i32,
    },
    Propose,
    Crash,
    CrashNode {
        node: usize,
        inc: u64,
    },
    Outage,
    Restart {
        node: usize,
    },
    PartitionStart,
    PartitionEnd,
    Heal,
}

/// One simulated broker: its core (None while down) and what survives a crash.
pub struct SimNode {
    pub id: NodeId,
    pub core: Option<RaftCore>,
    pub log: ModelLog,
    pub durable_hard: HardState,
    /// Bumped by every crash; events of an older incarnation are dropped.
    inc: u64,
    persist_at_ms: u64,
    ops: VecDeque<(u64, LogOp)>,
    ops_at_ms: u64,
    /// The target of the fsync in progress (clamped by truncations).
    fsync_target: Option<u64>,
    commit_high: u64,
    checked_to: u64,
    last_commit_advanced: u64,
    need_out: BTreeMap<(NodeId, i32), u32>,
    /// Every action emitted in this node's lives, when recording.
    pub actions: Vec<(u64, RaftAction)>,
}

/// Where each batch ever created came from, to check log matching.
#[derive(Clone, Copy, Debug)]
struct BatchInfo {
    base: u64,
    last: u64,
    epoch: i32,
    /// The batch before it in its creator's log.
    prev: Option<u64>,
    created_ms: u64,
}

/// Counters for the run summary.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub seed: u64,
    pub events: u64,
    pub messages: u64,
    pub elections: u64,
    pub truncations: u64,
    pub crashes: u64,
    pub committed_batches: u64,
    pub refused_appends: u64,
    /// The most bytes any leader had in flight to one follower.
    pub max_inflight_bytes: u64,
    /// Simulated time from healing to the first commit of a batch proposed after it.
    pub heal_to_commit_ms: Option<u64>,
    pub trace_hash: u64,
}

pub struct Cluster {
    pub cfg: SimConfig,
    pub now_ms: u64,
    rng: ChaCha8Rng,
    pub nodes: Vec<SimNode>,
    events: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    blocked: BTreeSet<(NodeId, NodeId)>,
    healed_at_ms: Option<u64>,
    next_batch_id: u64,
    next_op_id: u64,
    batches: BTreeMap<u64, BatchInfo>,
    by_position: BTreeMap<(u64, i32), u64>,
    /// The committed log: batch base -> id, contiguous from 0 up to `committed_end`.
    committed: BTreeMap<u64, u64>,
    pub committed_end: u64,
    leaders: BTreeMap<i32, NodeId>,
    pub record_actions: bool,
    /// Actions emitted and not yet carried out, in order, with their node.
    pending: VecDeque<(usize, RaftAction)>,
    processing: bool,
    /// Print every event and action to stderr (set by `RAFT_TRACE=1` in `run_seed`).
    pub verbose: bool,
    /// Also check the rules directly (no message before its hard state is durable; the
    /// committed end durable on a majority), not only their outcomes (election safety,
    /// committed prefixes agree, log matching, liveness).
    pub direct_checks: bool,
    pub stats: RunStats,
}

impl Cluster {
    pub fn new(cfg: SimConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let n = cfg.voters + cfg.learners;
        let nodes = (0..n)
            .map(|i| SimNode::new(i as NodeId + 1, ModelLog::new()))
            .collect();
        let mut c = Cluster {
            cfg,
            now_ms: 0,
            rng,
            nodes,
            events: BTreeMap::new(),
            seq: 0,
            blocked: BTreeSet::new(),
            healed_at_ms: None,
            next_batch_id: 1,
            next_op_id: 1,
            batches: BTreeMap::new(),
            by_position: BTreeMap::new(),
            committed: BTreeMap::new(),
            committed_end: 0,
            leaders: BTreeMap::new(),
            record_actions: false,
            pending: VecDeque::new(),
            processing: false,
            verbose: false,
            direct_checks: true,
            stats: RunStats::default(),
        };
        c.schedule_background();
        c
    }

    /// Replaces node `id`'s (still down) log and hard state before it starts.
    pub fn preload(&mut self, id: NodeId, log: ModelLog, hard: HardState) {
        let n = &mut self.nodes[(id - 1) as usize];
        assert!(n.core.is_none(), "preload before start");
        let mut prev = None;
        for b in log.batches() {
            let bid = batch_id(b);
            self.next_batch_id = self.next_batch_id.max(bid + 1);
            let info = BatchInfo {
                base: b.base,
                last: b.last,
                epoch: b.epoch,
                prev,
                created_ms: 0,
            };
            self.batches.entry(bid).or_insert(info);
            self.by_position.entry((b.base, b.epoch)).or_insert(bid);
            prev = Some(bid);
        }
        n.log = log;
        n.durable_hard = hard;
    }

    /// Starts every node (call once, after any `preload`).
    pub fn start(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            self.boot(i);
        }
        self.check()
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        (1..=self.cfg.voters as NodeId).collect()
    }

    fn learners(&self) -> BTreeSet<NodeId> {
        (self.cfg.voters as NodeId + 1..=(self.cfg.voters + self.cfg.learners) as NodeId).collect()
    }

    fn schedule_background(&mut self) {
        if let Some((lo, hi)) = self.cfg.faults.propose_every_ms {
            let at = self.rng.gen_range(lo..=hi);
            self.at(at, Ev::Propose);
        }
        if self.cfg.faults.crashes {
            let (lo, hi) = self.cfg.faults.crash_every_ms;
            let at = self.rng.gen_range(lo..hi);
            self.at(at, Ev::Crash);
        }
        if self.cfg.faults.outages {
            let at = self.rng.gen_range(500..4_000);
            self.at(at, Ev::Outage);
        }
        if self.cfg.faults.partitions {
            let at = self.rng.gen_range(200..3_000);
            self.at(at, Ev::PartitionStart);
        }
        if self.cfg.heal_at_ms != u64::MAX {
            self.at(self.cfg.heal_at_ms, Ev::Heal);
        }
    }

    fn at(&mut self, at_ms: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert((at_ms.max(self.now_ms), self.seq), ev);
    }

    fn after(&mut self, delay_ms: u64, ev: Ev) {
        self.at(self.now_ms + delay_ms, ev);
    }

    fn hash(&mut self, words: &[u64]) {
        for w in words {
            self.stats.trace_hash = (self.stats.trace_hash ^ w)
                .wrapping_mul(0x100_0000_01b3)
                .rotate_left(5);
        }
    }

    // ---- running ----------------------------------------------------------------------

    /// Runs events up to `until_ms` (or until liveness is proven after healing).
    pub fn run_until(&mut self, until_ms: u64) -> Result<(), Violation> {
        while let Some((&(t, seq), _)) = self.events.first_key_value() {
            if t > until_ms || self.stats.heal_to_commit_ms.is_some() {
                break;
            }
            let ev = self.events.remove(&(t, seq)).expect("just seen");
            self.now_ms = t;
            self.stats.events += 1;
            self.handle(ev)?;
            self.check()?;
            if let Some(healed) = self.healed_at_ms {
                if self.stats.heal_to_commit_ms.is_none() && self.now_ms > healed + self.cfg.liveness_bound_ms
                {
                    return Err(self.violation(format!(
                        "liveness: nothing proposed after healing at {healed} ms committed within {} ms",
                        self.cfg.liveness_bound_ms
                    )));
                }
            }
        }
        if self.stats.heal_to_commit_ms.is_none() {
            self.now_ms = self.now_ms.max(until_ms);
        }
        Ok(())
    }

    pub fn run_for(&mut self, ms: u64) -> Result<(), Violation> {
        self.run_until(self.now_ms + ms)
    }

    /// Runs until `pred` holds (checked after every event), at most `max_ms` more.
    pub fn run_until_pred(
        &mut self,
        max_ms: u64,
        mut pred: impl FnMut(&Cluster) -> bool,
    ) -> Result<bool, Violation> {
        let deadline = self.now_ms + max_ms;
        while !pred(self) {
            let Some((&(t, seq), _)) = self.events.first_key_value() else {
                return Ok(false);
            };
            if t > deadline {
                return Ok(false);
            }
            let ev = self.events.remove(&(t, seq)).expect("just seen");
            self.now_ms = t;
            self.handle(ev)?;
            self.check()?;
        }
        Ok(true)
    }

    fn violation(&self, what: String) -> Violation {
        format!("{what} (at {} ms; {})", self.now_ms, self.cfg.describe())
    }

    fn handle(&mut self, ev: Ev) -> Result<(), Violation> {
        if self.verbose {
            match &ev {
                Ev::Tick { .. } | Ev::Heartbeat { .. } => {}
                other => eprintln!("{:>6} ev {other:?}", self.now_ms),
            }
        }
        match ev {
            Ev::Deliver {
                from,
                to,
                from_inc,
                to_inc,
                msg,
            } => {
                let (fi, ti) = ((from - 1) as usize, (to - 1) as usize);
                if self.nodes[fi].inc != from_inc
                    || self.nodes[ti].inc != to_inc
                    || self.nodes[ti].core.is_none()
                {
                    return Ok(()); // a crash closed the connection
                }
                self.hash(&[1, self.now_ms, from as u64, to as u64, msg.term() as u64]);
                let now = self.now_ms;
                self.with_core(ti, |core, log, rng, out| core.step(now, from, msg, log, rng, out))
            }
            Ev::Tick { node, inc } => {
                if self.nodes[node].inc != inc || self.nodes[node].core.is_none() {
                    return Ok(());
                }
                self.after(TICK_MS, Ev::Tick { node, inc });
                let now = self.now_ms;
                self.with_core(node, |core, log, rng, out| core.tick(now, log, rng, out))
            }
            Ev::Heartbeat { node, inc } => {
                if self.nodes[node].inc != inc || self.nodes[node].core.is_none() {
                    return Ok(());
                }
                self.after(self.cfg.raft.heartbeat_interval_ms, Ev::Heartbeat { node, inc });
                let now = self.now_ms;
                self.with_core(node, |core, log, _, out| core.heartbeat(now, log, out))
            }
            Ev::PersistDone { node, inc, hard } => {
                if self.nodes[node].inc != inc {
                    return Ok(());
                }
                self.persist_done(node, hard)
            }
            Ev::LogOp { node, inc, op_id } => {
                if self.nodes[node].inc != inc {
                    return Ok(());
                }
                while self.nodes[node].ops.front().is_some_and(|(id, _)| *id <= op_id) {
                    self.apply_front_op(node)?;
                }
                Ok(())
            }
            Ev::Fsync { node, inc } => {
                if self.nodes[node].inc != inc {
                    return Ok(());
                }
                self.fsync_done(node)
            }
            Ev::Entries {
                node,
                inc,
                to,
                from,
                max_bytes,
                term,
            } => {
                if self.nodes[node].inc != inc {
                    return Ok(());
                }
                if let Some(n) = self.nodes[node].need_out.get_mut(&(to, term)) {
                    *n -= 1;
                }
                let entries = self.nodes[node].log.read(from, max_bytes);
                self.with_core(node, |core, log, _, out| core.send_entries(to, entries, log, out))
            }
            Ev::Propose => {
                if let Some((lo, hi)) = self.cfg.faults.propose_every_ms {
                    let d = self.rng.gen_range(lo..=hi);
                    self.after(d, Ev::Propose);
                }
                for i in 0..self.nodes.len() {
                    if self.nodes[i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.role() == Role::Leader)
                    {
                        self.propose_at(i)?;
                    }
                }
                Ok(())
            }
            Ev::Crash => {
                if self.healed_at_ms.is_some() {
                    return Ok(());
                }
                let (lo, hi) = self.cfg.faults.crash_every_ms;
                let next = self.rng.gen_range(lo..hi);
                self.after(next, Ev::Crash);
                let up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].core.is_some())
                    .collect();
                let leader = up.iter().copied().find(|&i| {
                    self.nodes[i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.role() == Role::Leader)
                });
                let victim = match leader {
                    Some(l) if self.rng.gen_bool(0.4) => Some(l),
                    _ if up.is_empty() => None,
                    _ => Some(up[self.rng.gen_range(0..up.len())]),
                };
                if let Some(v) = victim {
                    self.crash(v);
                    let down_ms = self.rng.gen_range(100..1_500);
                    self.after(down_ms, Ev::Restart { node: v });
                }
                Ok(())
            }
            Ev::CrashNode { node, inc } => {
                if self.healed_at_ms.is_some()
                    || self.nodes[node].inc != inc
                    || self.nodes[node].core.is_none()
                {
                    return Ok(());
                }
                self.crash(node);
                let down_ms = self.rng.gen_range(5..200);
                self.after(down_ms, Ev::Restart { node });
                Ok(())
            }
            Ev::Outage => {
                if self.healed_at_ms.is_some() {
                    return Ok(());
                }
                let next = self.rng.gen_range(1_000..4_000);
                self.after(next, Ev::Outage);
                for i in 0..self.nodes.len() {
                    if self.nodes[i].core.is_some() {
                        self.crash(i);
                        let down_ms = self.rng.gen_range(50..1_000);
                        self.after(down_ms, Ev::Restart { node: i });
                    }
                }
                Ok(())
            }
            Ev::Restart { node } => {
                if self.nodes[node].core.is_none() {
                    self.boot(node);
                }
                Ok(())
            }
            Ev::PartitionStart => {
                if self.healed_at_ms.is_some() {
                    return Ok(());
                }
                self.start_random_partition();
                let d = self.rng.gen_range(200..3_000);
                self.after(d, Ev::PartitionEnd);
                Ok(())
            }
            Ev::PartitionEnd => {
                self.blocked.clear();
                if self.healed_at_ms.is_none() {
                    let d = self.rng.gen_range(200..3_000);
                    self.after(d, Ev::PartitionStart);
                }
                Ok(())
            }
            Ev::Heal => {
                self.heal();
                Ok(())
            }
        }
    }

    /// Calls into node `i`'s core and carries out what it asks.
    fn with_core(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut RaftCore, &ModelLog, &mut ChaCha8Rng, &mut Vec<RaftAction>),
    ) -> Result<(), Violation> {
        let mut out = Vec::new();
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        f(core, &node.log, &mut self.rng, &mut out);
        // Actions are carried out in the order they were emitted, as the engine does: those
        // caused while carrying out others queue behind them.
        self.pending.extend(out.into_iter().map(|a| (i, a)));
        if self.processing {
            return Ok(());
        }
        self.processing = true;
        let mut result = Ok(());
        while let Some((i, a)) = self.pending.pop_front() {
            result = self.process(i, a);
            if result.is_err() {
                self.pending.clear();
            }
        }
        self.processing = false;
        result
    }

    // ---- the simulated engine ----------------------------------------------------------

    fn process(&mut self, i: usize, a: RaftAction) -> Result<(), Violation> {
        if self.verbose {
            let c = self.nodes[i].core.as_ref();
            let st = c.map(|c| (c.role(), c.term(), c.commit_end()));
            let log = &self.nodes[i].log;
            eprintln!(
                "{:>6}   n{} {st:?} log_end={} durable={} -> {a:?}",
                self.now_ms,
                i + 1,
                log.end(),
                log.durable_end()
            );
        }
        if self.record_actions {
            self.nodes[i].actions.push((self.now_ms, a.clone()));
        }
        match a {
            RaftAction::Send { to, msg } => {
                if self.direct_checks {
                    self.check_send(i, to, &msg)?;
                }
                self.net_send(i, to, msg)?;
            }
            RaftAction::Persist(hard) => {
                let d = self.rng.gen_range(0..=self.cfg.faults.persist_delay_max_ms);
                let n = &mut self.nodes[i];
                n.persist_at_ms = n.persist_at_ms.max(self.now_ms + d);
                let (at, inc) = (n.persist_at_ms, n.inc);
                self.at(at, Ev::PersistDone { node: i, inc, hard });
                if self.cfg.faults.crash_while_persisting
                    && self.healed_at_ms.is_none()
                    && self.rng.gen_bool(0.2)
                {
                    let within = self.rng.gen_range(self.now_ms..=at);
                    self.at(within, Ev::CrashNode { node: i, inc });
                }
            }
            RaftAction::NeedEntries { to, from, max_bytes } => {
                let term = self.core(i).term();
                let n = self.nodes[i].need_out.entry((to, term)).or_insert(0);
                *n += 1;
                if *n > 1 {
                    return Err(self.violation(format!("node {} has two NeedEntries out for {to}", i + 1)));
                }
                let d = self.rng.gen_range(0..=2);
                let inc = self.nodes[i].inc;
                self.after(
                    d,
                    Ev::Entries {
                        node: i,
                        inc,
                        to,
                        from,
                        max_bytes,
                        term,
                    },
                );
            }
            RaftAction::Append { entries } => self.queue_op(i, LogOp::Append(entries))?,
            RaftAction::Truncate { from } => {
                self.stats.truncations += 1;
                self.queue_op(i, LogOp::Truncate(from))?;
            }
            RaftAction::BecameLeader { term } => {
                self.stats.elections += 1;
                let core = self.core(i);
                if core.role() != Role::Leader || core.term() != term {
                    return Err(self.violation(format!("node {} BecameLeader {term} but is not", i + 1)));
                }
                self.hash(&[2, self.now_ms, i as u64, term as u64]);
                // The engine applies earlier log actions first, then appends the no-op.
                while !self.nodes[i].ops.is_empty() {
                    self.apply_front_op(i)?;
                }
                self.leader_append(i, term, 1)?;
            }
            RaftAction::RoleChanged { role, term, .. } => {
                self.hash(&[3, self.now_ms, i as u64, role as u64, term as u64]);
            }
            RaftAction::CommitAdvanced { commit_end } => {
                let n = &self.nodes[i];
                let current = n.core.as_ref().map_or(0, RaftCore::commit_end);
                if commit_end <= n.last_commit_advanced || commit_end > current {
                    return Err(
                        self.violation(format!("node {} CommitAdvanced {commit_end} out of order", i + 1))
                    );
                }
                self.nodes[i].last_commit_advanced = commit_end;
            }
        }
        Ok(())
    }

    fn core(&self, i: usize) -> &RaftCore {
        self.nodes[i].core.as_ref().expect("the node is up")
    }

    fn net_send(&mut self, i: usize, to: NodeId, msg: RaftMsg) -> Result<(), Violation> {
        self.stats.messages += 1;
        // Every message crosses the real codec.
        let mut buf = BytesMut::new();
        codec::encode(&msg, &mut buf);
        let mut bytes = buf.freeze();
        let decoded = codec::decode(&mut bytes).map_err(|e| self.violation(format!("codec: {e}")))?;
        if decoded != msg || !bytes.is_empty() {
            return Err(self.violation(format!("codec roundtrip changed {msg:?}")));
        }
        let from = i as NodeId + 1;
        let ti = (to - 1) as usize;
        if ti >= self.nodes.len()
            || self.blocked.contains(&(from, to))
            || self.rng.gen_bool(self.cfg.faults.loss)
        {
            return Ok(());
        }
        let copies = if self.rng.gen_bool(self.cfg.faults.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let f = &self.cfg.faults;
            let d = self.rng.gen_range(f.delay_min_ms..=f.delay_max_ms);
            let (from_inc, to_inc) = (self.nodes[i].inc, self.nodes[ti].inc);
            self.after(
                d,
                Ev::Deliver {
                    from,
                    to,
                    from_inc,
                    to_inc,
                    msg: decoded.clone(),
                },
            );
        }
        Ok(())
    }

    fn queue_op(&mut self, i: usize, op: LogOp) -> Result<(), Violation> {
        if self.cfg.faults.sync_log {
            let refused = matches!(op, LogOp::Append(_)) && self.rng.gen_bool(self.cfg.faults.refuse_append);
            if refused {
                self.stats.refused_appends += 1;
            } else {
                self.apply_op(i, op)?;
            }
            self.schedule_fsync(i);
            let now = self.now_ms;
            return self.with_core(i, |core, log, _, out| core.on_log_settled(now, log, out));
        }
        let id = self.next_op_id;
        self.next_op_id += 1;
        let d = self.rng.gen_range(0..=self.cfg.faults.write_delay_max_ms);
        let n = &mut self.nodes[i];
        n.ops.push_back((id, op));
        n.ops_at_ms = n.ops_at_ms.max(self.now_ms + d);
        let (at, inc) = (n.ops_at_ms, n.inc);
        self.at(
            at,
            Ev::LogOp {
                node: i,
                inc,
                op_id: id,
            },
        );
        Ok(())
    }

    fn apply_front_op(&mut self, i: usize) -> Result<(), Violation> {
        let Some((_, op)) = self.nodes[i].ops.pop_front() else {
            return Ok(());
        };
        self.apply_op(i, op)?;
        self.log_changed(i)
    }

    /// Carries out a follower log action on the model log, checking it.
    fn apply_op(&mut self, i: usize, op: LogOp) -> Result<(), Violation> {
        match op {
            LogOp::Append(entries) => {
                for e in entries {
                    self.check_append(i, &e)?;
                    self.nodes[i].log.append(e);
                }
            }
            LogOp::Truncate(from) => {
                let log = &self.nodes[i].log;
                if from >= log.end() || log.batch_base(from) != Some(from) {
                    return Err(
                        self.violation(format!("node {} Truncate {from} not at a batch boundary", i + 1))
                    );
                }
                let ours = batch_id(log.batch_at(from).expect("checked"));
                if self.committed.get(&from) == Some(&ours) {
                    return Err(self.violation(format!("node {} truncated committed offset {from}", i + 1)));
                }
                let n = &mut self.nodes[i];
                n.log.truncate(from);
                n.checked_to = n.checked_to.min(from);
                n.fsync_target = n.fsync_target.map(|t| t.min(from));
            }
        }
        Ok(())
    }

    /// The engine's local append as leader: a batch of `records` offsets at `epoch`.
    fn leader_append(&mut self, i: usize, epoch: i32, records: u64) -> Result<(), Violation> {
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let pad = self.rng.gen_range(0..=40);
        let log = &self.nodes[i].log;
        let base = log.end();
        let prev = log.batches().last().map(batch_id);
        if let Some(other) = self.by_position.get(&(base, epoch)) {
            return Err(self.violation(format!(
                "node {} created a second batch at offset {base} epoch {epoch} (first: {other})",
                i + 1
            )));
        }
        let info = BatchInfo {
            base,
            last: base + records - 1,
            epoch,
            prev,
            created_ms: self.now_ms,
        };
        self.batches.insert(id, info);
        self.by_position.insert((base, epoch), id);
        self.nodes[i].log.append_new(epoch, records, id, pad);
        self.hash(&[4, self.now_ms, i as u64, id]);
        self.log_changed(i)
    }

    /// A client proposal at node `i` (which believes it leads).
    pub fn propose_at(&mut self, i: usize) -> Result<(), Violation> {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Ok(());
        };
        if core.role() != Role::Leader || !self.nodes[i].ops.is_empty() {
            return Ok(());
        }
        let term = core.term();
        let records = self.rng.gen_range(1..=5);
        self.leader_append(i, term, records)
    }

    fn log_changed(&mut self, i: usize) -> Result<(), Violation> {
        self.schedule_fsync(i);
        let now = self.now_ms;
        self.with_core(i, |core, log, _, out| core.on_log_changed(now, log, out))
    }

    /// Starts a (group-commit) fsync if none is running and something is not durable.
    fn schedule_fsync(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.fsync_target.is_none() && n.log.durable_end() < n.log.end() {
            n.fsync_target = Some(n.log.end());
            let d = self.rng.gen_range(1..=self.cfg.faults.fsync_delay_max_ms.max(1));
            let inc = self.nodes[i].inc;
            self.after(d, Ev::Fsync { node: i, inc });
        }
    }

    fn fsync_done(&mut self, i: usize) -> Result<(), Violation> {
        let n = &mut self.nodes[i];
        if let Some(target) = n.fsync_target.take() {
            n.log.fsync_to(target);
        }
        self.log_changed(i)
    }

    fn persist_done(&mut self, i: usize, hard: HardState) -> Result<(), Violation> {
        let old = self.nodes[i].durable_hard;
        if hard.term < old.term {
            return Err(self.violation(format!(
                "node {} durable term went back {old:?} -> {hard:?}",
                i + 1
            )));
        }
        if hard.term == old.term && old.voted_for.is_some() && hard.voted_for != old.voted_for {
            return Err(self.violation(format!(
                "node {} changed its durable vote {old:?} -> {hard:?}",
                i + 1
            )));
        }
        self.nodes[i].durable_hard = hard;
        self.with_core(i, |core, _, _, out| core.on_persisted(hard, out))
    }

    // ---- faults -----------------------------------------------------------------------

    fn boot(&mut self, i: usize) {
        let (voters, learners) = (self.voters(), self.learners());
        let config = self.cfg.raft;
        let now = self.now_ms;
        let n = &mut self.nodes[i];
        assert!(n.core.is_none());
        n.core = Some(RaftCore::new(
            n.id,
            voters,
            learners,
            n.durable_hard,
            config,
            &n.log,
            now,
            &mut self.rng,
        ));
        n.commit_high = 0;
        n.checked_to = 0;
        n.last_commit_advanced = n.core.as_ref().map_or(0, RaftCore::commit_end);
        n.persist_at_ms = now;
        n.ops_at_ms = now;
        let inc = n.inc;
        let t = self.rng.gen_range(0..TICK_MS);
        self.after(t, Ev::Tick { node: i, inc });
        let h = self.rng.gen_range(0..self.cfg.raft.heartbeat_interval_ms);
        self.after(h, Ev::Heartbeat { node: i, inc });
    }

    /// Node `id` loses its process: unsynced log suffix, unpersisted hard state, queues.
    pub fn crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        self.hash(&[5, self.now_ms, i as u64]);
        let n = &mut self.nodes[i];
        n.core = None;
        n.inc += 1;
        n.log.crash();
        n.ops.clear();
        n.fsync_target = None;
        n.need_out.clear();
    }

    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].core.is_none() {
            self.boot(i);
        }
    }

    fn start_random_partition(&mut self) {
        let ids: Vec<NodeId> = (1..=self.nodes.len() as NodeId).collect();
        self.blocked.clear();
        match self.rng.gen_range(0..3) {
            0 => {
                // Two sides, both non-empty.
                let mut side: Vec<bool> = ids.iter().map(|_| self.rng.gen_bool(0.5)).collect();
                side[0] = true;
                let k = self.rng.gen_range(1..side.len());
                side[k] = false;
                for (a, sa) in ids.iter().zip(&side) {
                    for (b, sb) in ids.iter().zip(&side) {
                        if sa != sb {
                            self.blocked.insert((*a, *b));
                        }
                    }
                }
            }
            1 => {
                // Isolate the leader if there is one, else anyone.
                let leader = (0..self.nodes.len()).find(|&i| {
                    self.nodes[i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.role() == Role::Leader)
                });
                let v = leader.unwrap_or_else(|| self.rng.gen_range(0..self.nodes.len())) as NodeId + 1;
                self.isolate(v);
            }
            _ => {
                // One-way: a no longer reaches b.
                let a = ids[self.rng.gen_range(0..ids.len())];
                let b = ids[self.rng.gen_range(0..ids.len())];
                if a != b {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    /// Cuts node `id` off from everyone, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        for other in 1..=self.nodes.len() as NodeId {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    /// Ends every partition and fault; restarts crashed nodes; liveness is now required.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.cfg.faults.loss = 0.0;
        self.cfg.faults.dup = 0.0;
        self.healed_at_ms = Some(self.now_ms);
        for i in 0..self.nodes.len() {
            self.restart(i);
        }
    }

    /// Drops every message from `from` to `to` (one way).
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub fn unblock_all(&mut self) {
        self.blocked.clear();
    }

    // ---- invariants -------------------------------------------------------------------

    /// A message may leave only once the hard state it depends on is durable.
    fn check_send(&self, i: usize, to: NodeId, msg: &RaftMsg) -> Result<(), Violation> {
        let durable = self.nodes[i].durable_hard;
        let me = i as NodeId + 1;
        let ok = match msg {
            RaftMsg::PreVote { .. } | RaftMsg::PreVoteResp { .. } => true,
            RaftMsg::Vote { term, .. } => durable.term == *term && durable.voted_for == Some(me),
            RaftMsg::VoteResp { term, granted: true } => {
                durable.term == *term && durable.voted_for == Some(to)
            }
            other => other.term() <= durable.term,
        };
        if !ok {
            return Err(self.violation(format!(
                "node {me} sent {msg:?} to {to} before persisting (durable {durable:?})"
            )));
        }
        Ok(())
    }

    /// Log matching, inductively: a batch lands only after the batch its creator had before it.
    fn check_append(&self, i: usize, e: &Entry) -> Result<(), Violation> {
        let log = &self.nodes[i].log;
        if e.base != log.end() {
            return Err(self.violation(format!(
                "node {} Append at {} but log end is {}",
                i + 1,
                e.base,
                log.end()
            )));
        }
        let id = batch_id(e);
        let Some(info) = self.batches.get(&id) else {
            return Err(self.violation(format!("node {} got unknown batch {id}", i + 1)));
        };
        let prev = log.batches().last().map(batch_id);
        if (info.base, info.last, info.epoch) != (e.base, e.last, e.epoch)
            || (info.prev != prev && e.base > log.start())
        {
            return Err(self.violation(format!(
                "log matching: node {} appends batch {id} {:?} after {prev:?}, created after {:?}",
                i + 1,
                (e.base, e.last, e.epoch),
                info.prev
            )));
        }
        Ok(())
    }

    /// All invariants that hold between events.
    pub fn check(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            let (role, term, commit_end) = (core.role(), core.term(), core.commit_end());
            let id = i as NodeId + 1;
            if role == Role::Leader {
                let first = *self.leaders.entry(term).or_insert(id);
                if first != id {
                    return Err(
                        self.violation(format!("election safety: {first} and {id} both led term {term}"))
                    );
                }
                for other in 1..=self.nodes.len() as NodeId {
                    let inflight = core.inflight_bytes(other).unwrap_or(0);
                    self.stats.max_inflight_bytes = self.stats.max_inflight_bytes.max(inflight);
                    if inflight > self.cfg.raft.inflight_bytes_max {
                        return Err(
                            self.violation(format!("leader {id}: {inflight} bytes in flight to {other}"))
                        );
                    }
                }
            }
            if commit_end < self.nodes[i].commit_high {
                return Err(self.violation(format!("node {id} commit_end went back to {commit_end}")));
            }
            self.nodes[i].commit_high = commit_end;
            self.check_committed(i, commit_end)?;
        }
        if self.direct_checks {
            self.check_durable_majority()?;
        }
        Ok(())
    }

    /// Node `i`'s batches below its commit_end agree with every other node's.
    fn check_committed(&mut self, i: usize, commit_end: u64) -> Result<(), Violation> {
        let limit = commit_end.min(self.nodes[i].log.end());
        loop {
            let n = &self.nodes[i];
            let k = n.log.first_index_after(n.checked_to);
            let Some(b) = n.log.batches().get(k) else {
                return Ok(());
            };
            if b.last >= limit {
                return Ok(());
            }
            let (base, end, id) = (b.base, b.end(), batch_id(b));
            if self.committed.is_empty() && base == n.log.start() {
                // Entries below a log's start were committed and dropped before the run.
                self.committed_end = self.committed_end.max(base);
            }
            if base < self.committed_end {
                if self.committed.get(&base) != Some(&id) {
                    return Err(self.violation(format!(
                        "committed prefixes disagree at offset {base}: node {} has batch {id}, committed is {:?}",
                        i + 1,
                        self.committed.get(&base)
                    )));
                }
            } else if base == self.committed_end {
                self.committed.insert(base, id);
                self.committed_end = end;
                self.stats.committed_batches += 1;
                let created = self.batches.get(&id).map_or(0, |b| b.created_ms);
                if let Some(healed) = self.healed_at_ms {
                    if created >= healed && self.stats.heal_to_commit_ms.is_none() {
                        self.stats.heal_to_commit_ms = Some(self.now_ms - healed);
                    }
                }
            } else {
                return Err(self.violation(format!("node {} commits {base} past the committed end", i + 1)));
            }
            self.nodes[i].checked_to = end;
        }
    }

    /// Everything committed anywhere is durable on a majority of voters.
    fn check_durable_majority(&self) -> Result<(), Violation> {
        let Some((&base, &id)) = self.committed.last_key_value() else {
            return Ok(());
        };
        let end = self.committed_end;
        let holders = self.nodes[..self.cfg.voters]
            .iter()
            .filter(|n| n.log.durable_end() >= end && n.log.batch_at(base).map(batch_id) == Some(id))
            .count();
        if holders < quorum(&self.voters()) {
            return Err(self.violation(format!(
                "committed end {end} is durable on only {holders} of {} voters",
                self.cfg.voters
            )));
        }
        Ok(())
    }

    // ---- queries for scenarios --------------------------------------------------------

    /// The node that leads with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| {
                n.core
                    .as_ref()
                    .filter(|c| c.role() == Role::Leader)
                    .map(|c| (c.term(), n.id))
            })
            .max()
            .map(|(_, id)| id)
    }

    pub fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_core(&self, id: NodeId) -> &RaftCore {
        self.core((id - 1) as usize)
    }

    /// Proposes `count` batches at node `id` (if it leads).
    pub fn propose(&mut self, id: NodeId, count: usize) -> Result<(), Violation> {
        for _ in 0..count {
            self.propose_at((id - 1) as usize)?;
        }
        Ok(())
    }
}

impl SimNode {
    fn new(id: NodeId, log: ModelLog) -> Self {
        SimNode {
            id,
            core: None,
            log,
            durable_hard: HardState::default(),
            inc: 0,
            persist_at_ms: 0,
            ops: VecDeque::new(),
            ops_at_ms: 0,
            fsync_target: None,
            commit_high: 0,
            checked_to: 0,
            last_commit_advanced: 0,
            need_out: BTreeMap::new(),
            actions: Vec::new(),
        }
    }
}

/// Runs one seed of the swarm to the end: faults for `heal_at_ms`, then liveness.
pub fn run_seed(seed: u64, bugs: RaftBugs) -> Result<RunStats, Violation> {
    run_seed_checking(seed, bugs, true)
}

/// [`run_seed`], optionally with only the outcome checks (see [`Cluster::direct_checks`]).
pub fn run_seed_checking(seed: u64, bugs: RaftBugs, direct_checks: bool) -> Result<RunStats, Violation> {
    let cfg = SimConfig::choose(seed, bugs);
    let describe = cfg.describe();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = Cluster::new(cfg);
        c.stats.seed = seed;
        c.verbose = std::env::var("RAFT_TRACE").is_ok_and(|v| v == "1");
        c.direct_checks = direct_checks;
        c.start()?;
        let end = c.cfg.heal_at_ms + c.cfg.liveness_bound_ms + 1;
        c.run_until(end)?;
        if c.stats.heal_to_commit_ms.is_none() {
            return Err(c.violation("liveness: the run ended without a commit after healing".into()));
        }
        Ok(c.stats)
    }));
    match result {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panic: {what} ({describe})"))
        }
    }
}
