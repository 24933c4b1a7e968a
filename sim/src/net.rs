//! The simulated peer network between engines: every message in flight, when it is due, and
//! the faults that delay, lose, duplicate, reorder or cut it. Invariants: deliveries leave in
//! (due time, send sequence) order; with reordering and duplication off every directed link
//! is FIFO; a message is delivered only if both ends are up and its link is open when it is
//! sent and again when it is due; sent + duplicated = delivered + dropped + in flight. All
//! randomness comes from the RNG the caller passes in: same seed, same calls, same deliveries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::Rng;

/// A node of the simulated cluster (the Kafka broker id).
pub type NodeId = i32;

/// Bound on messages in flight. Beyond it a send is dropped (cause `overflow`), as a
/// congested network would; an engine with flow control stays far below it.
pub const IN_FLIGHT_MAX: usize = 1 << 20;
/// Bound on the number of nodes (the nemesis's topologies enumerate node pairs).
pub const NODES_MAX: usize = 64;
/// Shortest on or off phase of the partition nemesis.
pub const PHASE_MS_MIN: u64 = 50;
/// A nemesis phase with mean `m` lasts uniformly `PHASE_MS_MIN..=PHASE_MEAN_FACTOR_MAX * m`,
/// so no partition outlives twice its mean.
pub const PHASE_MEAN_FACTOR_MAX: u64 = 2;

// ---------------------------------------------------------------------------------------
// Per-seed fault choice
// ---------------------------------------------------------------------------------------

/// Duplication: a message is delivered twice; the copy takes its own latency plus up to
/// `delay_ms_max`, never arrives before the original, and ignores link FIFO order (it is a
/// stale retransmission).
#[derive(Clone, Debug, PartialEq)]
pub struct DuplicateFault {
    pub p: f64,
    pub delay_ms_max: u64,
}

/// Reordering: a message gets `1..=delay_ms_max` extra delay and leaves the link's FIFO
/// order, so messages sent after it may overtake it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReorderFault {
    pub p: f64,
    pub delay_ms_max: u64,
}

/// A topology the partition nemesis can impose (Jepsen's partition nemeses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionKind {
    /// Two groups (a minority of 1..=n/2 nodes and the rest) that cannot talk.
    Halves,
    /// Two groups that cannot talk, and one node that talks to both (n >= 3).
    Bridge,
    /// Nodes on a ring each talk to their two neighbours only (n >= 4; a majority each).
    Ring,
    /// One node cannot send to the others but hears them, or the reverse.
    OneWay,
    /// A random node cut off from everyone, both ways.
    Isolate,
    /// The leader (from the runner's hint; a random node if none) cut off both ways.
    IsolateLeader,
}

impl PartitionKind {
    pub const ALL: [PartitionKind; 6] = [
        PartitionKind::Halves,
        PartitionKind::Bridge,
        PartitionKind::Ring,
        PartitionKind::OneWay,
        PartitionKind::Isolate,
        PartitionKind::IsolateLeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PartitionKind::Halves => "halves",
            PartitionKind::Bridge => "bridge",
            PartitionKind::Ring => "ring",
            PartitionKind::OneWay => "one-way",
            PartitionKind::Isolate => "isolate",
            PartitionKind::IsolateLeader => "isolate-leader",
        }
    }

    /// The fewest nodes for which this topology cuts anything.
    pub fn nodes_min(self) -> usize {
        match self {
            PartitionKind::Bridge => 3,
            PartitionKind::Ring => 4,
            _ => 2,
        }
    }
}

/// Partitions that come and go: off for ~`off_ms_mean`, then one of `kinds` for
/// ~`on_ms_mean`, then healed, and so on (see [`NetNemesis`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionFault {
    pub on_ms_mean: u64,
    pub off_ms_mean: u64,
    /// Non-empty, sorted, without repeats.
    pub kinds: Vec<PartitionKind>,
}

/// What a seed chose for the peer network. Latency is always on; each fault is `None` when
/// off.
#[derive(Clone, Debug, PartialEq)]
pub struct NetFaults {
    /// One-way latency is `latency_ms_base + uniform(0..=latency_ms_jitter)`.
    pub latency_ms_base: u64,
    pub latency_ms_jitter: u64,
    /// Probability that a message is lost.
    pub loss_p: Option<f64>,
    pub duplicate: Option<DuplicateFault>,
    pub reorder: Option<ReorderFault>,
    pub partitions: Option<PartitionFault>,
}

impl Default for NetFaults {
    /// 1 ms latency, no faults.
    fn default() -> Self {
        NetFaults::healthy(1, 0)
    }
}

impl NetFaults {
    /// Latency only, every fault off.
    pub fn healthy(latency_ms_base: u64, latency_ms_jitter: u64) -> NetFaults {
        NetFaults {
            latency_ms_base,
            latency_ms_jitter,
            loss_p: None,
            duplicate: None,
            reorder: None,
            partitions: None,
        }
    }

    /// These faults with every fault turned off and the latency kept (the liveness phase).
    pub fn healed(&self) -> NetFaults {
        NetFaults::healthy(self.latency_ms_base, self.latency_ms_jitter)
    }

    /// The network a seed chooses. Every knob is drawn whether its fault is on or not, so
    /// turning one off (or adding one at the end) does not shift the others' draws.
    pub fn choose<R: Rng + ?Sized>(rng: &mut R) -> NetFaults {
        let latency_ms_base = [1u64, 2, 5][rng.gen_range(0..3)];
        let latency_ms_jitter = [0u64, 2, 10][rng.gen_range(0..3)];

        let loss_on = rng.gen_bool(0.4);
        let loss_p = [0.001, 0.01, 0.05][rng.gen_range(0..3)];

        let duplicate_on = rng.gen_bool(0.3);
        let duplicate = DuplicateFault {
            p: [0.001, 0.01, 0.05][rng.gen_range(0..3)],
            delay_ms_max: [10u64, 100, 1_000][rng.gen_range(0..3)],
        };

        let reorder_on = rng.gen_bool(0.4);
        let reorder = ReorderFault {
            p: [0.01, 0.05, 0.2][rng.gen_range(0..3)],
            delay_ms_max: [5u64, 50, 500][rng.gen_range(0..3)],
        };

        let partitions_on = rng.gen_bool(0.6);
        let on_ms_mean = [1_000u64, 2_000, 5_000][rng.gen_range(0..3)];
        let off_ms_mean = [1_000u64, 2_000, 5_000][rng.gen_range(0..3)];
        let mut kinds: Vec<PartitionKind> = PartitionKind::ALL
            .into_iter()
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        let fallback = PartitionKind::ALL[rng.gen_range(0..PartitionKind::ALL.len())];
        if kinds.is_empty() {
            kinds.push(fallback);
        }

        let faults = NetFaults {
            latency_ms_base,
            latency_ms_jitter,
            loss_p: loss_on.then_some(loss_p),
            duplicate: duplicate_on.then_some(duplicate),
            reorder: reorder_on.then_some(reorder),
            partitions: partitions_on.then_some(PartitionFault {
                on_ms_mean,
                off_ms_mean,
                kinds,
            }),
        };
        assert!(faults.check().is_ok(), "chose invalid faults: {faults:?}");
        faults
    }

    /// Whether the knobs are usable: probabilities in [0, 1], non-zero delays and means,
    /// partition kinds non-empty, sorted and unique.
    pub fn check(&self) -> Result<(), String> {
        let p_ok = |p: f64| (0.0..=1.0).contains(&p);
        if let Some(p) = self.loss_p {
            if !p_ok(p) {
                return Err(format!("loss_p {p} not in [0, 1]"));
            }
        }
        if let Some(d) = &self.duplicate {
            if !p_ok(d.p) {
                return Err(format!("duplicate p {} not in [0, 1]", d.p));
            }
        }
        if let Some(r) = &self.reorder {
            if !p_ok(r.p) || r.delay_ms_max == 0 {
                return Err(format!("reorder p {} / delay {} invalid", r.p, r.delay_ms_max));
            }
        }
        if let Some(pf) = &self.partitions {
            if pf.on_ms_mean == 0 || pf.off_ms_mean == 0 {
                return Err("partition phase means must be > 0".to_string());
            }
            if pf.kinds.is_empty() || pf.kinds.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("partition kinds {:?} not sorted and unique", pf.kinds));
            }
        }
        Ok(())
    }

    /// One line for the run's options, e.g.
    /// `latency=2+0..=10ms loss(p=0.01) partitions(on~2000ms off~1000ms kinds=halves,ring)`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "latency={}+0..={}ms",
            self.latency_ms_base, self.latency_ms_jitter
        )];
        if let Some(p) = self.loss_p {
            parts.push(format!("loss(p={p})"));
        }
        if let Some(d) = &self.duplicate {
            parts.push(format!("duplicate(p={} delay<={}ms)", d.p, d.delay_ms_max));
        }
        if let Some(r) = &self.reorder {
            parts.push(format!("reorder(p={} extra<={}ms)", r.p, r.delay_ms_max));
        }
        if let Some(pf) = &self.partitions {
            let kinds: Vec<&str> = pf.kinds.iter().map(|k| k.name()).collect();
            parts.push(format!(
                "partitions(on~{}ms off~{}ms kinds={})",
                pf.on_ms_mean,
                pf.off_ms_mean,
                kinds.join(",")
            ));
        }
        parts.join(" ")
    }
}

impl fmt::Display for NetFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

// ---------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------

/// Why a message (or a copy of one) was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropCause {
    /// Random loss (`loss_p`).
    Loss,
    /// The link was cut when the message was sent or when it was due.
    Partition,
    /// The sender or receiver was down when the message was sent or when it was due.
    Down,
    /// Discarded in flight by [`SimNet::drop_node_traffic`] (a crash).
    Crash,
    /// [`IN_FLIGHT_MAX`] messages were already in flight.
    Overflow,
    /// The sender or receiver is not a node of this network.
    UnknownNode,
}

/// What became of one `send`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFate {
    /// Due at `due_ms`; a duplicate copy, if any, at `copy_due_ms`.
    Scheduled {
        due_ms: u64,
        copy_due_ms: Option<u64>,
        reordered: bool,
    },
    Dropped(DropCause),
}

/// A message coming out of the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<M> {
    pub from: NodeId,
    pub to: NodeId,
    pub sent_ms: u64,
    pub due_ms: u64,
    pub msg: M,
}

/// Counters for the run summary. Invariant:
/// `sent + duplicated == delivered + dropped() + in flight`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    /// Extra copies scheduled by the duplication fault.
    pub duplicated: u64,
    /// Messages taken out of their link's FIFO order by the reordering fault.
    pub reordered: u64,
    pub dropped_loss: u64,
    pub dropped_partition: u64,
    pub dropped_down: u64,
    pub dropped_crash: u64,
    pub dropped_overflow: u64,
    pub dropped_unknown: u64,
}

impl NetStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_loss
            + self.dropped_partition
            + self.dropped_down
            + self.dropped_crash
            + self.dropped_overflow
            + self.dropped_unknown
    }

    fn count_drop(&mut self, cause: DropCause) {
        let c = match cause {
            DropCause::Loss => &mut self.dropped_loss,
            DropCause::Partition => &mut self.dropped_partition,
            DropCause::Down => &mut self.dropped_down,
            DropCause::Crash => &mut self.dropped_crash,
            DropCause::Overflow => &mut self.dropped_overflow,
            DropCause::UnknownNode => &mut self.dropped_unknown,
        };
        *c += 1;
    }
}

impl fmt::Display for NetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} delivered={} duplicated={} reordered={} dropped={} \
             (loss={} partition={} down={} crash={} overflow={} unknown={})",
            self.sent,
            self.delivered,
            self.duplicated,
            self.reordered,
            self.dropped(),
            self.dropped_loss,
            self.dropped_partition,
            self.dropped_down,
            self.dropped_crash,
            self.dropped_overflow,
            self.dropped_unknown
        )
    }
}

/// The links currently cut. A directed link `from -> to` (`from != to`) is cut if either
/// end is isolated, if both ends are in different groups of the symmetric partition, or if
/// it is in `one_way`. A node sending to itself is never cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cuts {
    /// Symmetric partition: node -> its group. Nodes in no group reach everyone.
    group_of: BTreeMap<NodeId, usize>,
    /// Directed links `(from, to)` that drop everything.
    one_way: BTreeSet<(NodeId, NodeId)>,
    isolated: BTreeSet<NodeId>,
}

impl Cuts {
    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        if from == to {
            return false;
        }
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return true;
        }
        if let (Some(a), Some(b)) = (self.group_of.get(&from), self.group_of.get(&to)) {
            if a != b {
                return true;
            }
        }
        self.one_way.contains(&(from, to))
    }

    fn is_empty(&self) -> bool {
        self.group_of.is_empty() && self.one_way.is_empty() && self.isolated.is_empty()
    }
}

#[derive(Clone, Debug)]
struct InFlight<M> {
    from: NodeId,
    to: NodeId,
    sent_ms: u64,
    msg: M,
}

/// The simulated network between a fixed set of nodes, generic over the message type.
/// Messages are keyed by (due time, sequence number); the sequence number is the order of
/// scheduling, so equal due times leave in send order.
#[derive(Clone, Debug)]
pub struct SimNet<M> {
    faults: NetFaults,
    nodes: BTreeSet<NodeId>,
    in_flight: BTreeMap<(u64, u64), InFlight<M>>,
    seq_next: u64,
    /// Per directed link, the due time of its last FIFO message (later ones never precede it).
    link_due_ms_last: BTreeMap<(NodeId, NodeId), u64>,
    cuts: Cuts,
    down: BTreeSet<NodeId>,
    /// The latest `now_ms` seen; time never goes backwards.
    now_ms_last: u64,
    in_flight_max: usize,
    stats: NetStats,
}

impl<M: Clone> SimNet<M> {
    /// A network between `nodes` (distinct, at most [`NODES_MAX`]) with `faults`.
    pub fn new(nodes: &[NodeId], faults: NetFaults) -> SimNet<M> {
        let set: BTreeSet<NodeId> = nodes.iter().copied().collect();
        assert_eq!(set.len(), nodes.len(), "duplicate node ids in {nodes:?}");
        assert!(nodes.len() <= NODES_MAX, "{} nodes > {NODES_MAX}", nodes.len());
        let mut net = SimNet {
            faults: NetFaults::default(),
            nodes: set,
            in_flight: BTreeMap::new(),
            seq_next: 0,
            link_due_ms_last: BTreeMap::new(),
            cuts: Cuts::default(),
            down: BTreeSet::new(),
            now_ms_last: 0,
            in_flight_max: IN_FLIGHT_MAX,
            stats: NetStats::default(),
        };
        net.set_faults(faults);
        net
    }

    /// Replaces the latency and random faults (e.g. with [`NetFaults::healed`] when the
    /// safety phase ends). Messages already in flight keep their due times; cuts stay.
    pub fn set_faults(&mut self, faults: NetFaults) {
        if let Err(e) = faults.check() {
            panic!("invalid network faults: {e}");
        }
        self.faults = faults;
    }

    pub fn faults(&self) -> &NetFaults {
        &self.faults
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().copied()
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Messages (and copies) in flight, including some that will be dropped when due.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `msg` at `now_ms` and decides its fate: dropped now, or due at some time
    /// (and maybe a duplicate copy later). Never delivers before `now_ms + latency_ms_base`.
    pub fn send<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        now_ms: u64,
        from: NodeId,
        to: NodeId,
        msg: M,
    ) -> SendFate {
        self.observe(now_ms);
        self.stats.sent += 1;
        let fate = match self.admit(rng, from, to) {
            Err(cause) => {
                self.stats.count_drop(cause);
                SendFate::Dropped(cause)
            }
            Ok(()) => self.schedule(rng, now_ms, from, to, msg),
        };
        self.assert_conserved();
        fate
    }

    /// Whether a message sent now from `from` to `to` may enter the network.
    fn admit<R: Rng + ?Sized>(&self, rng: &mut R, from: NodeId, to: NodeId) -> Result<(), DropCause> {
        if !self.nodes.contains(&from) || !self.nodes.contains(&to) {
            return Err(DropCause::UnknownNode);
        }
        if self.down.contains(&from) || self.down.contains(&to) {
            return Err(DropCause::Down);
        }
        if self.cuts.is_cut(from, to) {
            return Err(DropCause::Partition);
        }
        if let Some(p) = self.faults.loss_p {
            if rng.gen_bool(p) {
                return Err(DropCause::Loss);
            }
        }
        if self.in_flight.len() >= self.in_flight_max {
            return Err(DropCause::Overflow);
        }
        Ok(())
    }

    fn schedule<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        now_ms: u64,
        from: NodeId,
        to: NodeId,
        msg: M,
    ) -> SendFate {
        let arrival_ms = now_ms + self.latency_ms(rng);
        let reorder_extra_ms = match &self.faults.reorder {
            Some(r) if rng.gen_bool(r.p) => Some(rng.gen_range(1..=r.delay_ms_max)),
            _ => None,
        };
        let due_ms = match reorder_extra_ms {
            Some(extra_ms) => {
                self.stats.reordered += 1;
                arrival_ms + extra_ms
            }
            None => {
                let last = self.link_due_ms_last.entry((from, to)).or_insert(0);
                let due_ms = arrival_ms.max(*last);
                *last = due_ms;
                due_ms
            }
        };
        let copy_due_ms = match &self.faults.duplicate {
            Some(d) if rng.gen_bool(d.p) => {
                let extra_ms = rng.gen_range(0..=d.delay_ms_max);
                Some((now_ms + self.latency_ms(rng) + extra_ms).max(due_ms))
            }
            _ => None,
        };
        // The copy needs room beside the original.
        let copy_due_ms = copy_due_ms.filter(|_| self.in_flight.len() + 2 <= self.in_flight_max);
        let copy = copy_due_ms.map(|_| msg.clone());
        self.enqueue(due_ms, from, to, now_ms, msg);
        if let (Some(at_ms), Some(msg)) = (copy_due_ms, copy) {
            self.stats.duplicated += 1;
            self.enqueue(at_ms, from, to, now_ms, msg);
        }
        assert!(due_ms >= now_ms + self.faults.latency_ms_base);
        SendFate::Scheduled {
            due_ms,
            copy_due_ms,
            reordered: reorder_extra_ms.is_some(),
        }
    }

    fn latency_ms<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        self.faults.latency_ms_base + rng.gen_range(0..=self.faults.latency_ms_jitter)
    }

    fn enqueue(&mut self, due_ms: u64, from: NodeId, to: NodeId, sent_ms: u64, msg: M) {
        let seq = self.seq_next;
        self.seq_next += 1;
        let old = self.in_flight.insert(
            (due_ms, seq),
            InFlight {
                from,
                to,
                sent_ms,
                msg,
            },
        );
        assert!(old.is_none(), "sequence number {seq} reused");
    }

    /// When the next message in flight is due (it may still be dropped then).
    pub fn next_delivery_at(&self) -> Option<u64> {
        self.in_flight.first_key_value().map(|(&(due_ms, _), _)| due_ms)
    }

    /// The next message due at or before `now_ms` whose ends are up and whose link is open;
    /// due messages that fail this are dropped on the way.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Delivery<M>> {
        self.observe(now_ms);
        while self.next_delivery_at().is_some_and(|due_ms| due_ms <= now_ms) {
            let Some(((due_ms, _), m)) = self.in_flight.pop_first() else {
                break; // unreachable: the loop condition saw an entry
            };
            let cause = if self.down.contains(&m.from) || self.down.contains(&m.to) {
                Some(DropCause::Down)
            } else if self.cuts.is_cut(m.from, m.to) {
                Some(DropCause::Partition)
            } else {
                None
            };
            if let Some(cause) = cause {
                self.stats.count_drop(cause);
                continue;
            }
            self.stats.delivered += 1;
            self.assert_conserved();
            return Some(Delivery {
                from: m.from,
                to: m.to,
                sent_ms: m.sent_ms,
                due_ms,
                msg: m.msg,
            });
        }
        self.assert_conserved();
        None
    }

    /// Every message due at or before `now_ms`, in (due time, sequence) order.
    pub fn deliver_due(&mut self, now_ms: u64) -> Vec<Delivery<M>> {
        let mut out = Vec::new();
        while let Some(d) = self.pop_due(now_ms) {
            out.push(d);
        }
        out
    }

    /// Discards every message in flight to or from `node` (a crashed process loses its
    /// sockets). Returns how many were discarded.
    pub fn drop_node_traffic(&mut self, node: NodeId) -> u64 {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, m| m.from != node && m.to != node);
        let dropped = (before - self.in_flight.len()) as u64;
        self.stats.dropped_crash += dropped;
        self.assert_conserved();
        dropped
    }

    /// Marks `node` down or up. While down, messages to or from it are dropped when sent
    /// and when due. A crash is `drop_node_traffic(n)` then `set_down(n, true)`.
    pub fn set_down(&mut self, node: NodeId, down: bool) {
        assert!(self.nodes.contains(&node), "unknown node {node}");
        if down {
            self.down.insert(node);
        } else {
            self.down.remove(&node);
        }
    }

    pub fn is_down(&self, node: NodeId) -> bool {
        self.down.contains(&node)
    }

    /// Replaces the symmetric partition: nodes in different `groups` cannot talk; nodes in
    /// no group still talk to everyone (a bridge). Groups must be disjoint sets of nodes.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let mut group_of = BTreeMap::new();
        for (g, group) in groups.iter().enumerate() {
            for &n in group {
                assert!(self.nodes.contains(&n), "unknown node {n} in partition");
                let prev = group_of.insert(n, g);
                assert!(prev.is_none(), "node {n} in two partition groups");
            }
        }
        self.cuts.group_of = group_of;
    }

    /// Cuts the directed link `from -> to` only (`to -> from` still delivers).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        assert!(self.nodes.contains(&from) && self.nodes.contains(&to));
        assert_ne!(from, to, "a node cannot be cut from itself");
        self.cuts.one_way.insert((from, to));
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&mut self, node: NodeId) {
        assert!(self.nodes.contains(&node), "unknown node {node}");
        self.cuts.isolated.insert(node);
    }

    /// Removes every partition, one-way cut and isolation. Down nodes stay down.
    pub fn heal(&mut self) {
        self.cuts = Cuts::default();
    }

    /// Whether a message sent now from `from` to `to` could cross (ignoring random loss).
    pub fn link_open(&self, from: NodeId, to: NodeId) -> bool {
        self.nodes.contains(&from)
            && self.nodes.contains(&to)
            && !self.down.contains(&from)
            && !self.down.contains(&to)
            && !self.cuts.is_cut(from, to)
    }

    /// Whether any cut is in place.
    pub fn is_partitioned(&self) -> bool {
        !self.cuts.is_empty()
    }

    fn observe(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.now_ms_last,
            "network time went backwards: {} -> {now_ms}",
            self.now_ms_last
        );
        self.now_ms_last = now_ms;
    }

    fn assert_conserved(&self) {
        let s = &self.stats;
        assert_eq!(
            s.sent + s.duplicated,
            s.delivered + s.dropped() + self.in_flight.len() as u64,
            "network lost track of a message: {s}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The partition nemesis
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// No partition until `until_ms`.
    Off { until_ms: u64 },
    /// The partition `what` holds from `since_ms` until `until_ms`.
    On {
        since_ms: u64,
        until_ms: u64,
        what: String,
    },
    /// Partitions are off for good (no partition fault, or `heal_all`).
    Stopped,
}

/// Makes partitions come and go. Off and on phases alternate, each lasting uniformly
/// `PHASE_MS_MIN..=2 × mean`, so no partition lasts forever. While running, the nemesis
/// owns the network's cuts: ending a phase heals all of them.
#[derive(Clone, Debug)]
pub struct NetNemesis {
    fault: Option<PartitionFault>,
    phase: Phase,
}

impl NetNemesis {
    /// Starts in an off phase (or stopped if the partition fault is off).
    pub fn new<R: Rng + ?Sized>(faults: &NetFaults, now_ms: u64, rng: &mut R) -> NetNemesis {
        let fault = faults.partitions.clone();
        let phase = match &fault {
            Some(pf) => Phase::Off {
                until_ms: now_ms + phase_ms(rng, pf.off_ms_mean),
            },
            None => Phase::Stopped,
        };
        NetNemesis { fault, phase }
    }

    /// When the next phase change is due (`None` once stopped); the runner wakes the
    /// nemesis then.
    pub fn next_change_at(&self) -> Option<u64> {
        match &self.phase {
            Phase::Off { until_ms } | Phase::On { until_ms, .. } => Some(*until_ms),
            Phase::Stopped => None,
        }
    }

    /// Whether a partition is in place now.
    pub fn is_on(&self) -> bool {
        matches!(self.phase, Phase::On { .. })
    }

    /// Starts or ends a partition if its phase is over. Returns a line for the trace when
    /// something changed. `leader_hint` is the node the runner believes leads (the target
    /// of `isolate-leader`, and sometimes of `one-way`).
    pub fn step<M: Clone, R: Rng + ?Sized>(
        &mut self,
        now_ms: u64,
        net: &mut SimNet<M>,
        rng: &mut R,
        leader_hint: Option<NodeId>,
    ) -> Option<String> {
        let fault = self.fault.clone()?;
        match self.phase.clone() {
            Phase::Stopped => None,
            Phase::Off { until_ms } if now_ms < until_ms => None,
            Phase::On { until_ms, .. } if now_ms < until_ms => None,
            Phase::Off { .. } => {
                let nodes: Vec<NodeId> = net.nodes().collect();
                let kinds: Vec<PartitionKind> = fault
                    .kinds
                    .iter()
                    .copied()
                    .filter(|k| nodes.len() >= k.nodes_min())
                    .collect();
                if kinds.is_empty() {
                    // Too few nodes for any chosen topology: stay off another phase.
                    self.phase = Phase::Off {
                        until_ms: now_ms + phase_ms(rng, fault.off_ms_mean),
                    };
                    return None;
                }
                let kind = kinds[rng.gen_range(0..kinds.len())];
                let what = impose(kind, &nodes, net, rng, leader_hint);
                let on_ms = phase_ms(rng, fault.on_ms_mean);
                assert!(net.is_partitioned(), "{what} cut nothing");
                let line = format!("partition start: {what} for {on_ms}ms");
                self.phase = Phase::On {
                    since_ms: now_ms,
                    until_ms: now_ms + on_ms,
                    what,
                };
                Some(line)
            }
            Phase::On { since_ms, what, .. } => {
                let line = format!("partition end: {what} after {}ms", now_ms - since_ms);
                net.heal();
                self.phase = Phase::Off {
                    until_ms: now_ms + phase_ms(rng, fault.off_ms_mean),
                };
                Some(line)
            }
        }
    }

    /// Stops the nemesis for good and heals the network (the safety phase is over).
    /// Returns a line for the trace if a partition was in place.
    pub fn heal_all<M: Clone>(&mut self, now_ms: u64, net: &mut SimNet<M>) -> Option<String> {
        let was = std::mem::replace(&mut self.phase, Phase::Stopped);
        net.heal();
        match was {
            Phase::On { since_ms, what, .. } => Some(format!(
                "partition end: {what} after {}ms (healed for good)",
                now_ms.saturating_sub(since_ms)
            )),
            _ => None,
        }
    }
}

/// A phase length with mean about `mean_ms`: uniform in `PHASE_MS_MIN..=2 × mean_ms`.
fn phase_ms<R: Rng + ?Sized>(rng: &mut R, mean_ms: u64) -> u64 {
    let hi = (PHASE_MEAN_FACTOR_MAX * mean_ms).max(PHASE_MS_MIN);
    rng.gen_range(PHASE_MS_MIN..=hi)
}

/// Fisher-Yates with `gen_range`, so the order depends only on the RNG stream.
fn shuffled<R: Rng + ?Sized>(rng: &mut R, nodes: &[NodeId]) -> Vec<NodeId> {
    let mut v = nodes.to_vec();
    for i in (1..v.len()).rev() {
        let j = rng.gen_range(0..=i);
        v.swap(i, j);
    }
    v
}

fn sorted(nodes: &[NodeId]) -> Vec<NodeId> {
    let mut v = nodes.to_vec();
    v.sort_unstable();
    v
}

fn list(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("[{}]", names.join(" "))
}

/// Cuts `net` into the topology `kind` and describes it. Needs `nodes.len() >= kind.nodes_min()`.
fn impose<M: Clone, R: Rng + ?Sized>(
    kind: PartitionKind,
    nodes: &[NodeId],
    net: &mut SimNet<M>,
    rng: &mut R,
    leader_hint: Option<NodeId>,
) -> String {
    assert!(nodes.len() >= kind.nodes_min());
    let n = nodes.len();
    let random_node = |rng: &mut R| nodes[rng.gen_range(0..n)];
    let leader = leader_hint.filter(|l| nodes.contains(l));
    match kind {
        PartitionKind::Halves => {
            let s = shuffled(rng, nodes);
            let k = rng.gen_range(1..=n / 2);
            let (a, b) = (sorted(&s[..k]), sorted(&s[k..]));
            net.partition(&[a.clone(), b.clone()]);
            format!("halves {} | {}", list(&a), list(&b))
        }
        PartitionKind::Bridge => {
            let s = shuffled(rng, nodes);
            let bridge = s[0];
            let split = 1 + (n - 1) / 2;
            let (a, b) = (sorted(&s[1..split]), sorted(&s[split..]));
            net.partition(&[a.clone(), b.clone()]);
            format!("bridge {} <- {bridge} -> {}", list(&a), list(&b))
        }
        PartitionKind::Ring => impose_ring(nodes, net, rng),
        PartitionKind::OneWay => impose_one_way(nodes, net, rng, leader),
        PartitionKind::Isolate => {
            let target = random_node(rng);
            net.isolate(target);
            format!("isolate {target}")
        }
        PartitionKind::IsolateLeader => match leader {
            Some(l) => {
                net.isolate(l);
                format!("isolate {l} (leader)")
            }
            None => {
                let target = random_node(rng);
                net.isolate(target);
                format!("isolate {target} (no leader known)")
            }
        },
    }
}

/// Nodes on a shuffled ring keep only the links to their two neighbours (both ways).
fn impose_ring<M: Clone, R: Rng + ?Sized>(nodes: &[NodeId], net: &mut SimNet<M>, rng: &mut R) -> String {
    let n = nodes.len();
    let ring = shuffled(rng, nodes);
    for i in 0..n {
        for j in 0..n {
            let gap = i.abs_diff(j);
            if gap > 1 && gap < n - 1 {
                net.cut_one_way(ring[i], ring[j]);
            }
        }
    }
    let names: Vec<String> = ring.iter().map(|x| x.to_string()).collect();
    format!("ring {}", names.join("-"))
}

/// One node (the leader half the time, if known) goes mute or deaf towards all others.
fn impose_one_way<M: Clone, R: Rng + ?Sized>(
    nodes: &[NodeId],
    net: &mut SimNet<M>,
    rng: &mut R,
    leader: Option<NodeId>,
) -> String {
    let target = match leader {
        Some(l) if rng.gen_bool(0.5) => l,
        _ => nodes[rng.gen_range(0..nodes.len())],
    };
    let mute = rng.gen_bool(0.5);
    for &other in nodes.iter().filter(|&&o| o != target) {
        if mute {
            net.cut_one_way(target, other);
        } else {
            net.cut_one_way(other, target);
        }
    }
    let tag = if Some(target) == leader { " (leader)" } else { "" };
    if mute {
        format!("one-way {target}{tag} -/-> others")
    } else {
        format!("one-way others -/-> {target}{tag}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    type Net = SimNet<u64>;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    const FIVE: [NodeId; 5] = [1, 2, 3, 4, 5];

    fn partitions(kinds: &[PartitionKind]) -> PartitionFault {
        PartitionFault {
            on_ms_mean: 1_000,
            off_ms_mean: 1_000,
            kinds: kinds.to_vec(),
        }
    }

    fn everything_on() -> NetFaults {
        NetFaults {
            latency_ms_base: 2,
            latency_ms_jitter: 10,
            loss_p: Some(0.05),
            duplicate: Some(DuplicateFault {
                p: 0.05,
                delay_ms_max: 100,
            }),
            reorder: Some(ReorderFault {
                p: 0.1,
                delay_ms_max: 50,
            }),
            partitions: Some(partitions(&PartitionKind::ALL)),
        }
    }

    /// Sends message ids `0..count` over random links of `FIVE`, one every `gap_ms`, then
    /// drains the network. Returns the deliveries and each send's fate.
    fn run_traffic(net: &mut Net, seed: u64, count: u64, gap_ms: u64) -> (Vec<Delivery<u64>>, Vec<SendFate>) {
        let mut r = rng(seed);
        let mut traffic = rng(seed ^ 0xabcd);
        let mut out = Vec::new();
        let mut fates = Vec::new();
        for id in 0..count {
            let now = id * gap_ms;
            out.extend(net.deliver_due(now));
            let from = FIVE[traffic.gen_range(0..5)];
            let to = FIVE[traffic.gen_range(0..5)];
            fates.push(net.send(&mut r, now, from, to, id));
        }
        out.extend(drain(net));
        assert_eq!(net.in_flight(), 0);
        (out, fates)
    }

    /// Delivers everything in flight, advancing time only as far as the last due message.
    fn drain(net: &mut Net) -> Vec<Delivery<u64>> {
        let mut out = Vec::new();
        while let Some(at) = net.next_delivery_at() {
            out.extend(net.deliver_due(at));
        }
        out
    }

    /// Per directed link, the ids in delivery order.
    fn per_link(ds: &[Delivery<u64>]) -> BTreeMap<(NodeId, NodeId), Vec<u64>> {
        let mut m: BTreeMap<(NodeId, NodeId), Vec<u64>> = BTreeMap::new();
        for d in ds {
            m.entry((d.from, d.to)).or_default().push(d.msg);
        }
        m
    }

    fn overtaken(ids: &[u64]) -> bool {
        ids.windows(2).any(|w| w[0] > w[1])
    }

    /// A whole faulty run: traffic, crashes, the nemesis; returns everything observable.
    fn simulate(seed: u64) -> (Vec<Delivery<u64>>, NetStats, Vec<String>) {
        let mut r = rng(seed);
        let mut net = Net::new(&FIVE, everything_on());
        let mut nemesis = NetNemesis::new(net.faults(), 0, &mut r);
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut id = 0;
        for now in (0..20_000).step_by(5) {
            let leader = Some(FIVE[(now / 3_000) as usize % 5]);
            events.extend(nemesis.step(now, &mut net, &mut r, leader));
            for _ in 0..r.gen_range(0..4) {
                let (from, to) = (FIVE[r.gen_range(0..5)], FIVE[r.gen_range(0..5)]);
                net.send(&mut r, now, from, to, id);
                id += 1;
            }
            if r.gen_bool(0.002) {
                let n = FIVE[r.gen_range(0..5)];
                net.drop_node_traffic(n);
                net.set_down(n, true);
            } else if r.gen_bool(0.01) {
                net.set_down(FIVE[r.gen_range(0..5)], false);
            }
            out.extend(net.deliver_due(now));
        }
        (out, net.stats().clone(), events)
    }

    #[test]
    fn same_seed_same_deliveries() {
        let a = simulate(7);
        let b = simulate(7);
        assert_eq!(a, b);
        assert!(a.0.len() > 1_000, "too little traffic got through: {}", a.1);
        assert!(a.2.len() >= 4, "the nemesis should have acted: {:?}", a.2);
        assert!(
            a.1.duplicated > 0 && a.1.reordered > 0 && a.1.dropped_loss > 0,
            "{}",
            a.1
        );
        assert_ne!(simulate(8).0, a.0, "different seeds should differ");
    }

    #[test]
    fn healthy_network_delivers_everything_once_in_link_order() {
        let mut net = Net::new(&FIVE, NetFaults::healthy(3, 0));
        let (ds, _) = run_traffic(&mut net, 1, 2_000, 1);
        assert_eq!(ds.len(), 2_000);
        let ids: BTreeSet<u64> = ds.iter().map(|d| d.msg).collect();
        assert_eq!(ids.len(), 2_000, "every message exactly once");
        assert!(ds.iter().all(|d| d.due_ms == d.sent_ms + 3));
        assert!(per_link(&ds).values().all(|ids| !overtaken(ids)));
        assert_eq!(net.stats().dropped(), 0);
        assert_eq!(net.stats().delivered, 2_000);

        // Jitter delays but never reorders a link; latency stays within base..=base+jitter.
        let mut net = Net::new(&FIVE, NetFaults::healthy(1, 10));
        let (ds, _) = run_traffic(&mut net, 2, 2_000, 1);
        assert_eq!(ds.len(), 2_000);
        assert!(ds.iter().all(|d| (1..=11).contains(&(d.due_ms - d.sent_ms))));
        assert!(per_link(&ds).values().all(|ids| !overtaken(ids)));
        assert!(ds.iter().any(|d| d.due_ms - d.sent_ms > 5), "jitter should show");
    }

    #[test]
    fn deliveries_leave_in_due_then_send_order() {
        let mut net = Net::new(&FIVE, NetFaults::healthy(1, 10));
        let (ds, _) = run_traffic(&mut net, 3, 500, 0);
        assert!(ds.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
        // Ties at one due time come out in send order.
        assert!(ds
            .windows(2)
            .filter(|w| w[0].due_ms == w[1].due_ms)
            .all(|w| w[0].msg < w[1].msg));
        // Nothing comes out before it is due, and `next_delivery_at` says when.
        let mut net = Net::new(&FIVE, NetFaults::healthy(5, 0));
        net.send(&mut rng(0), 10, 1, 2, 42);
        assert_eq!(net.next_delivery_at(), Some(15));
        assert!(net.pop_due(14).is_none());
        assert_eq!(net.pop_due(15).map(|d| d.msg), Some(42));
        assert_eq!(net.next_delivery_at(), None);
    }

    #[test]
    fn loss_rate_within_tolerance() {
        let mut faults = NetFaults::healthy(1, 0);
        faults.loss_p = Some(0.1);
        let mut net = Net::new(&FIVE, faults);
        let (ds, fates) = run_traffic(&mut net, 4, 10_000, 1);
        let lost = net.stats().dropped_loss;
        assert!((800..=1_200).contains(&lost), "lost {lost} of 10000 at p=0.1");
        assert_eq!(ds.len() as u64, 10_000 - lost);
        let lost_ids: BTreeSet<u64> = (0..10_000u64)
            .filter(|&i| fates[i as usize] == SendFate::Dropped(DropCause::Loss))
            .collect();
        assert_eq!(lost_ids.len() as u64, lost);
        assert!(ds.iter().all(|d| !lost_ids.contains(&d.msg)));
    }

    #[test]
    fn duplicates_arrive_twice() {
        let mut faults = NetFaults::healthy(1, 2);
        faults.duplicate = Some(DuplicateFault {
            p: 0.1,
            delay_ms_max: 50,
        });
        let mut net = Net::new(&FIVE, faults);
        let (ds, fates) = run_traffic(&mut net, 5, 10_000, 1);
        let dup = net.stats().duplicated;
        assert!((800..=1_200).contains(&dup), "duplicated {dup} of 10000 at p=0.1");
        assert_eq!(ds.len() as u64, 10_000 + dup);
        let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for d in &ds {
            seen.entry(d.msg).or_default().push(d.due_ms);
        }
        for (id, fate) in fates.iter().enumerate() {
            let SendFate::Scheduled {
                due_ms, copy_due_ms, ..
            } = *fate
            else {
                panic!("nothing should be dropped: {fate:?}");
            };
            let got = &seen[&(id as u64)];
            match copy_due_ms {
                Some(copy) => {
                    assert_eq!(got, &vec![due_ms, copy], "message {id} twice, original first");
                    assert!(copy >= due_ms);
                }
                None => assert_eq!(got, &vec![due_ms], "message {id} once"),
            }
        }
    }

    #[test]
    fn reordering_only_when_on() {
        let mut faults = NetFaults::healthy(1, 10);
        let mut net = Net::new(&FIVE, faults.clone());
        let (ds, _) = run_traffic(&mut net, 6, 5_000, 1);
        assert!(per_link(&ds).values().all(|ids| !overtaken(ids)));
        assert_eq!(net.stats().reordered, 0);

        faults.reorder = Some(ReorderFault {
            p: 0.2,
            delay_ms_max: 50,
        });
        let mut net = Net::new(&FIVE, faults);
        let (ds, fates) = run_traffic(&mut net, 6, 5_000, 1);
        assert_eq!(ds.len(), 5_000, "reordering loses nothing");
        assert!(per_link(&ds).values().any(|ids| overtaken(ids)));
        let reordered = fates
            .iter()
            .filter(|f| matches!(f, SendFate::Scheduled { reordered: true, .. }))
            .count() as u64;
        assert_eq!(reordered, net.stats().reordered);
        assert!(
            (800..=1_200).contains(&reordered),
            "reordered {reordered} at p=0.2"
        );
    }

    /// Sends one message over every directed link between distinct nodes and returns the
    /// links that delivered.
    fn probe(net: &mut Net, now_ms: u64) -> BTreeSet<(NodeId, NodeId)> {
        let nodes: Vec<NodeId> = net.nodes().collect();
        let mut r = rng(0);
        for &a in &nodes {
            for &b in &nodes {
                if a != b {
                    net.send(&mut r, now_ms, a, b, 0);
                }
            }
        }
        drain(net).iter().map(|d| (d.from, d.to)).collect()
    }

    fn all_links(nodes: &[NodeId]) -> BTreeSet<(NodeId, NodeId)> {
        let mut s = BTreeSet::new();
        for &a in nodes {
            for &b in nodes {
                if a != b {
                    s.insert((a, b));
                }
            }
        }
        s
    }

    #[test]
    fn symmetric_partition_drops_cross_group_traffic_only() {
        let mut net = Net::new(&FIVE, NetFaults::default());
        net.partition(&[vec![1, 2], vec![3, 4]]);
        let got = probe(&mut net, 0);
        let expected: BTreeSet<_> = all_links(&FIVE)
            .into_iter()
            .filter(|&(a, b)| {
                let side = |n: NodeId| [1, 2].contains(&n) as i32 - [3, 4].contains(&n) as i32;
                side(a) * side(b) >= 0 // same group, or one end (5) in no group
            })
            .collect();
        assert_eq!(got, expected);
        assert!(
            got.contains(&(1, 5)) && got.contains(&(5, 3)),
            "5 bridges both groups"
        );
        assert_eq!(net.stats().dropped_partition, 8);
        assert!(got.iter().all(|&(a, b)| net.link_open(a, b)));
        // A node still reaches itself.
        net.send(&mut rng(0), 10, 1, 1, 9);
        assert_eq!(drain(&mut net).len(), 1);
    }

    #[test]
    fn one_way_partition_drops_one_direction() {
        let mut net = Net::new(&FIVE, NetFaults::default());
        net.cut_one_way(1, 2);
        let got = probe(&mut net, 0);
        let mut expected = all_links(&FIVE);
        expected.remove(&(1, 2));
        assert_eq!(got, expected);
        assert!(!net.link_open(1, 2) && net.link_open(2, 1));
    }

    #[test]
    fn isolate_cuts_node_both_ways() {
        let mut net = Net::new(&FIVE, NetFaults::default());
        net.isolate(3);
        let got = probe(&mut net, 0);
        assert_eq!(got.len(), 12, "the other four still talk: {got:?}");
        assert!(got.iter().all(|&(a, b)| a != 3 && b != 3));
        assert_eq!(net.stats().dropped_partition, 8);
    }

    #[test]
    fn heal_restores_delivery_and_cuts_catch_messages_in_flight() {
        let mut net = Net::new(&FIVE, NetFaults::healthy(10, 0));
        net.partition(&[vec![1], vec![2, 3, 4, 5]]);
        net.cut_one_way(4, 5);
        net.isolate(2);
        assert!(net.is_partitioned());
        net.heal();
        assert!(!net.is_partitioned());
        assert_eq!(probe(&mut net, 0), all_links(&FIVE));

        // Sent while open, due while cut: dropped. Sent while cut: dropped at once.
        let mut r = rng(0);
        net.send(&mut r, 100, 1, 2, 1);
        net.isolate(2);
        assert_eq!(
            net.send(&mut r, 101, 2, 1, 2),
            SendFate::Dropped(DropCause::Partition)
        );
        assert!(net.deliver_due(110).is_empty());
        assert_eq!(net.in_flight(), 0);
        net.heal();
        net.send(&mut r, 111, 1, 2, 3);
        let got: Vec<u64> = drain(&mut net).iter().map(|d| d.msg).collect();
        assert_eq!(got, vec![3]);
        assert_eq!(net.stats().dropped_partition, 2);
    }

    #[test]
    fn nothing_reaches_or_leaves_a_down_node() {
        let mut net = Net::new(&FIVE, NetFaults::healthy(10, 0));
        let mut r = rng(0);
        net.send(&mut r, 0, 1, 2, 1); // to 2, in flight when 2 goes down
        net.send(&mut r, 0, 2, 3, 2); // from 2, in flight
        net.send(&mut r, 0, 3, 4, 3); // unrelated
        assert_eq!(net.drop_node_traffic(2), 2);
        net.set_down(2, true);
        assert!(net.is_down(2));
        assert_eq!(net.send(&mut r, 1, 1, 2, 4), SendFate::Dropped(DropCause::Down));
        assert_eq!(net.send(&mut r, 1, 2, 1, 5), SendFate::Dropped(DropCause::Down));
        let got: Vec<u64> = drain(&mut net).iter().map(|d| d.msg).collect();
        assert_eq!(got, vec![3]);
        assert_eq!(net.stats().dropped_crash, 2);
        assert_eq!(net.stats().dropped_down, 2);

        // Down without purging: what is in flight to it is dropped when due.
        net.set_down(2, false);
        net.send(&mut r, 100, 1, 2, 6);
        net.set_down(2, true);
        assert!(drain(&mut net).is_empty());
        assert_eq!(net.stats().dropped_down, 3);

        // Back up: traffic flows again, none of the old messages reappear.
        net.set_down(2, false);
        assert_eq!(probe(&mut net, 200), all_links(&FIVE));
    }

    #[test]
    fn unknown_nodes_and_overflow_are_dropped_not_panics() {
        let mut net = Net::new(&FIVE, NetFaults::default());
        let mut r = rng(0);
        assert_eq!(
            net.send(&mut r, 0, 1, 99, 0),
            SendFate::Dropped(DropCause::UnknownNode)
        );
        assert_eq!(
            net.send(&mut r, 0, -1, 1, 0),
            SendFate::Dropped(DropCause::UnknownNode)
        );
        assert!(!net.link_open(1, 99));

        let faults = NetFaults {
            duplicate: Some(DuplicateFault {
                p: 1.0,
                delay_ms_max: 0,
            }),
            ..NetFaults::default()
        };
        let mut net = Net::new(&FIVE, faults);
        net.in_flight_max = 3;
        let fates: Vec<SendFate> = (0..3).map(|i| net.send(&mut r, 0, 1, 2, i)).collect();
        assert!(matches!(
            fates[0],
            SendFate::Scheduled {
                copy_due_ms: Some(_),
                ..
            }
        ));
        assert!(
            matches!(
                fates[1],
                SendFate::Scheduled {
                    copy_due_ms: None,
                    ..
                }
            ),
            "no room for a copy: {:?}",
            fates[1]
        );
        assert_eq!(fates[2], SendFate::Dropped(DropCause::Overflow));
        assert_eq!(net.in_flight(), 3);
        assert_eq!(net.stats().dropped_overflow, 1);
    }

    #[test]
    #[should_panic(expected = "network time went backwards")]
    fn time_never_goes_backwards() {
        let mut net = Net::new(&FIVE, NetFaults::default());
        net.send(&mut rng(0), 10, 1, 2, 0);
        net.deliver_due(9);
    }

    #[test]
    #[should_panic(expected = "invalid network faults")]
    fn invalid_faults_are_refused() {
        let f = NetFaults {
            loss_p: Some(1.5),
            ..NetFaults::default()
        };
        let _ = Net::new(&FIVE, f);
    }

    /// Runs the nemesis alone for `ms`, stepping every 10 ms; checks that every phase ends
    /// in time and heals everything. Returns its events.
    fn run_nemesis(seed: u64, nodes: &[NodeId], fault: PartitionFault, ms: u64) -> (Vec<String>, Net) {
        let faults = NetFaults {
            partitions: Some(fault.clone()),
            ..NetFaults::default()
        };
        let mut net = Net::new(nodes, faults);
        let mut r = rng(seed);
        let mut nemesis = NetNemesis::new(net.faults(), 0, &mut r);
        let mut events = Vec::new();
        let mut changed_ms = 0;
        for now in (0..ms).step_by(10) {
            let leader = Some(nodes[(now / 700) as usize % nodes.len()]);
            let was_on = nemesis.is_on();
            if let Some(e) = nemesis.step(now, &mut net, &mut r, leader) {
                let mean = if was_on {
                    fault.on_ms_mean
                } else {
                    fault.off_ms_mean
                };
                assert!(now - changed_ms <= PHASE_MEAN_FACTOR_MAX * mean + 10, "{e}");
                changed_ms = now;
                assert_eq!(nemesis.is_on(), net.is_partitioned(), "{e}");
                if !nemesis.is_on() {
                    assert!(e.starts_with("partition end: "), "{e}");
                    assert_eq!(probe(&mut net, now), all_links(nodes), "traffic flows after {e}");
                }
                events.push(e);
            }
            if let Some(at) = nemesis.next_change_at() {
                assert!(at > now);
            }
        }
        (events, net)
    }

    #[test]
    fn nemesis_partitions_come_and_go() {
        let (events, mut net) = run_nemesis(11, &FIVE, partitions(&PartitionKind::ALL), 120_000);
        let starts = events
            .iter()
            .filter(|e| e.starts_with("partition start: "))
            .count();
        let ends = events.iter().filter(|e| e.starts_with("partition end: ")).count();
        assert!(
            starts >= 30,
            "about 60 phases in 120 s with 1 s means: {events:?}"
        );
        assert!(ends + 1 >= starts && ends <= starts);
        for kind in PartitionKind::ALL {
            let chosen = |e: &String| {
                let Some(what) = e.strip_prefix("partition start: ") else {
                    return false;
                };
                match kind {
                    PartitionKind::Isolate => what.starts_with("isolate ") && !what.contains('('),
                    PartitionKind::IsolateLeader => {
                        what.starts_with("isolate ") && what.contains(" (leader)")
                    }
                    _ => what.starts_with(&format!("{} ", kind.name())),
                }
            };
            assert!(events.iter().any(chosen), "{} never chosen", kind.name());
        }

        // heal_all in the middle of a partition ends it for good.
        let mut r = rng(12);
        let mut nemesis = NetNemesis::new(net.faults(), 200_000, &mut r);
        let mut now = 200_000;
        while !nemesis.is_on() {
            now += 10;
            nemesis.step(now, &mut net, &mut r, None);
        }
        assert!(net.is_partitioned());
        let line = nemesis.heal_all(now + 5, &mut net);
        assert!(line.is_some_and(|l| l.ends_with("after 5ms (healed for good)")));
        assert!(!net.is_partitioned());
        assert_eq!(nemesis.next_change_at(), None);
        for t in 0..1_000 {
            assert_eq!(nemesis.step(now + 10 + t * 100, &mut net, &mut r, None), None);
        }
        assert_eq!(probe(&mut net, now + 200_000), all_links(&FIVE));
        assert_eq!(nemesis.heal_all(now + 200_000, &mut net), None);
    }

    #[test]
    fn nemesis_events_are_stable_for_a_seed() {
        let fault = partitions(&PartitionKind::ALL);
        let a = run_nemesis(21, &FIVE, fault.clone(), 30_000).0;
        assert_eq!(a, run_nemesis(21, &FIVE, fault.clone(), 30_000).0);
        assert_ne!(a, run_nemesis(22, &FIVE, fault, 30_000).0);
        assert!(a[0].starts_with("partition start: "), "{a:?}");
    }

    #[test]
    fn nemesis_isolates_the_leader_it_is_told() {
        let mut net = Net::new(&FIVE, NetFaults::default());
        let fault = NetFaults {
            partitions: Some(partitions(&[PartitionKind::IsolateLeader])),
            ..NetFaults::default()
        };
        let mut r = rng(3);
        let mut nemesis = NetNemesis::new(&fault, 0, &mut r);
        let at = nemesis.next_change_at().unwrap_or(0);
        let e = nemesis.step(at, &mut net, &mut r, Some(4));
        assert_eq!(
            e.as_deref().and_then(|e| e.split(" for ").next()),
            Some("partition start: isolate 4 (leader)")
        );
        let got = probe(&mut net, at);
        assert!(got.iter().all(|&(a, b)| a != 4 && b != 4));
        assert_eq!(got.len(), 12);
    }

    #[test]
    fn ring_gives_every_node_a_majority() {
        let (events, _) = run_nemesis(5, &FIVE, partitions(&[PartitionKind::Ring]), 3_000);
        assert!(events[0].starts_with("partition start: ring "), "{events:?}");
        let mut net = Net::new(&FIVE, NetFaults::default());
        let mut r = rng(5);
        let mut nemesis = NetNemesis::new(
            &NetFaults {
                partitions: Some(partitions(&[PartitionKind::Ring])),
                ..NetFaults::default()
            },
            0,
            &mut r,
        );
        let at = nemesis.next_change_at().unwrap_or(0);
        assert!(nemesis.step(at, &mut net, &mut r, None).is_some());
        let got = probe(&mut net, at);
        for n in FIVE {
            let out = got.iter().filter(|l| l.0 == n).count();
            let inc = got.iter().filter(|l| l.1 == n).count();
            assert_eq!(
                (out, inc),
                (2, 2),
                "node {n} talks to its two neighbours: {got:?}"
            );
        }
    }

    #[test]
    fn nemesis_skips_topologies_too_big_for_the_cluster() {
        let (events, _) = run_nemesis(1, &[1], partitions(&PartitionKind::ALL), 30_000);
        assert!(events.is_empty(), "one node cannot be partitioned: {events:?}");
        let (events, _) = run_nemesis(1, &[1, 2, 3], partitions(&[PartitionKind::Ring]), 30_000);
        assert!(events.is_empty(), "a ring of 3 cuts nothing: {events:?}");
        let (events, _) = run_nemesis(
            1,
            &[1, 2],
            partitions(&[PartitionKind::Halves, PartitionKind::Ring]),
            30_000,
        );
        assert!(!events.is_empty() && events.iter().all(|e| !e.contains("ring")));
    }

    #[test]
    fn choose_is_a_function_of_the_rng_and_varies() {
        assert_eq!(NetFaults::choose(&mut rng(1)), NetFaults::choose(&mut rng(1)));
        let all: Vec<NetFaults> = (0..100).map(|s| NetFaults::choose(&mut rng(s))).collect();
        let distinct: BTreeSet<String> = all.iter().map(|f| f.describe()).collect();
        assert!(distinct.len() > 50);
        for f in &all {
            assert!(f.check().is_ok());
            assert!(f.latency_ms_base >= 1, "no zero-latency ping-pong");
            let healed = f.healed();
            assert_eq!(healed, NetFaults::healthy(f.latency_ms_base, f.latency_ms_jitter));
        }
        let on = |pred: &dyn Fn(&NetFaults) -> bool| all.iter().filter(|f| pred(f)).count();
        for (name, n) in [
            ("loss", on(&|f| f.loss_p.is_some())),
            ("duplicate", on(&|f| f.duplicate.is_some())),
            ("reorder", on(&|f| f.reorder.is_some())),
            ("partitions", on(&|f| f.partitions.is_some())),
        ] {
            assert!((10..=90).contains(&n), "{name} on in {n} of 100 seeds");
        }
    }

    #[test]
    fn describe_names_every_fault() {
        assert_eq!(NetFaults::default().describe(), "latency=1+0..=0ms");
        let d = everything_on().to_string();
        assert_eq!(
            d,
            "latency=2+0..=10ms loss(p=0.05) duplicate(p=0.05 delay<=100ms) \
             reorder(p=0.1 extra<=50ms) partitions(on~1000ms off~1000ms \
             kinds=halves,bridge,ring,one-way,isolate,isolate-leader)"
        );
        let s = NetStats {
            sent: 3,
            delivered: 1,
            dropped_loss: 2,
            ..NetStats::default()
        };
        assert!(s
            .to_string()
            .starts_with("sent=3 delivered=1 duplicated=0 reordered=0 dropped=2 (loss=2"));
    }
}
