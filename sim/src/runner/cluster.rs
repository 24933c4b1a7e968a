//! The cluster part of the world: the peer network between the engines (every `SendPeer`
//! goes through [`SimNet`] and arrives as `PeerMessage` when due, if both ends are up and the
//! link is open), the partition nemesis, pauses, the per-step Raft invariants, and the
//! "settled" test that starts the final read. On a single node `World::peers` is `None` and
//! all of this is inert (no RNG draws, no events), so single-node runs replay as before.
//!
//! Invariants: a node's link is up exactly while its engine runs (from `Start` on: a cluster
//! node needs its peers to catch up its metadata image before it is `Ready`); a paused node
//! takes no input, and what was due meanwhile reaches it in the original order when it
//! resumes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use gregor_engine::group::partition_for;
use gregor_engine::raft::Role;
use gregor_engine::replica::{Envelope, GroupId, ReplicaStatus};
use gregor_engine::{Input, Output};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{node_id, Event, NodeState, World, GROUP_OFFSETS_PARTITIONS, TOPIC};
use crate::disk::Disk;
use crate::group_client::{GROUP_ID, OFFSETS_TOPIC};
use crate::invariants::Broken;
use crate::net::{DropCause, NetNemesis, SendFate, SimNet};
use crate::swarm::{exp_gap_ms, rng_for, ClusterOptions, PauseFault};

/// Invariant violations of one kind kept in full per run (the rest are counted).
const INVARIANT_SHOWN_PER_KIND: u64 = 5;

/// The peer network of a cluster run and the faults that act on it.
pub(super) struct Peers {
    net: SimNet<Bytes>,
    nemesis: NetNemesis,
    pause: Option<PauseFault>,
    /// Times at which a `PeerDue` event is already queued.
    due_at: BTreeSet<u64>,
    rng_net: ChaCha8Rng,
    rng_nemesis: ChaCha8Rng,
    rng_pause: ChaCha8Rng,
}

impl Peers {
    pub(super) fn new(seed: u64, c: &ClusterOptions) -> Peers {
        let ids: Vec<i32> = (0..c.nodes).map(node_id).collect();
        let mut net = SimNet::new(&ids, c.net.clone());
        for &id in &ids {
            net.set_down(id, true); // until its engine starts
        }
        let mut rng_nemesis = rng_for(seed, "net/nemesis");
        let nemesis = NetNemesis::new(&c.net, 0, &mut rng_nemesis);
        Peers {
            net,
            nemesis,
            pause: c.pause.clone(),
            due_at: BTreeSet::new(),
            rng_net: rng_for(seed, "net/peer"),
            rng_nemesis,
            rng_pause: rng_for(seed, "fault/pause"),
        }
    }
}

impl World {
    /// The node an event makes step (held back while that node is paused).
    pub(super) fn node_of(&self, ev: &Event) -> Option<usize> {
        match ev {
            Event::Timer { node, .. }
            | Event::IoDone { node, .. }
            | Event::PeerDeliver { node, .. }
            | Event::ShutdownDeadline { node, .. }
            | Event::FatalDeadline { node, .. } => Some(*node),
            Event::ToEngine { conn, .. } | Event::ClosedToEngine { conn } => {
                self.conns.get(conn).map(|c| c.node)
            }
            _ => None,
        }
    }

    pub(super) fn schedule_cluster_start(&mut self) {
        let Some(p) = self.peers.as_mut() else { return };
        let nemesis_at = p.nemesis.next_change_at();
        let pause_at = p
            .pause
            .as_ref()
            .map(|pf| exp_gap_ms(&mut p.rng_pause, pf.interval_ms_mean));
        if let Some(at) = nemesis_at {
            self.schedule(at, Event::NetNemesis);
        }
        if let Some(at) = pause_at {
            self.schedule(at, Event::PauseStart);
        }
    }

    /// Checks the invariants on node `n`'s replicas after a step, and the peer messages the
    /// step sent.
    pub(super) fn check_invariants(&mut self, n: usize, statuses: &[ReplicaStatus], out: &[Output]) {
        let id = node_id(n);
        if self.verbose {
            self.print_status_changes(id, statuses);
        }
        let mut broken = self.inv.observe(id, statuses);
        for o in out {
            let Output::SendPeer { to, msg } = o else { continue };
            match Envelope::decode(msg.clone()) {
                Ok(env) => broken.extend(self.inv.check_sent(id, *to, &env, statuses)),
                Err(e) => broken.push(Broken {
                    kind: "engine-contract",
                    detail: format!("node {id} sent node {to} an undecodable peer message: {e}"),
                }),
            }
        }
        for b in broken {
            let count = self.inv_counts.entry(b.kind).or_insert(0);
            *count += 1;
            if *count <= INVARIANT_SHOWN_PER_KIND {
                if self.verbose {
                    eprintln!("{:>7}ms VIOLATION {}: {}", self.now(), b.kind, b.detail);
                }
                self.violation(b.kind, b.detail);
            }
        }
    }

    /// `--verbose`: one line per replica whose status changed in this step.
    fn print_status_changes(&mut self, id: i32, statuses: &[ReplicaStatus]) {
        for s in statuses {
            let line = format!(
                "{}-{} {:?} t{} leader {:?} commit {} log {} durable {} hard ({}, {:?}){} epochs {:?}",
                s.topic,
                s.partition,
                s.role,
                s.term,
                s.leader,
                s.commit_end,
                s.log_end,
                s.durable_end,
                s.durable_term,
                s.durable_vote,
                if s.halted { " halted" } else { "" },
                s.epochs
            );
            if self.status_shown.get(&(id, s.group)) != Some(&line) {
                eprintln!("{:>7}ms n{id} status {line}", self.now());
                self.status_shown.insert((id, s.group), line);
            }
        }
    }

    /// Adds one line per invariant kind that broke more often than was kept in full.
    pub(super) fn count_suppressed(&mut self) {
        let more: Vec<(&'static str, u64)> = self
            .inv_counts
            .iter()
            .filter(|(_, &c)| c > INVARIANT_SHOWN_PER_KIND)
            .map(|(&k, &c)| (k, c - INVARIANT_SHOWN_PER_KIND))
            .collect();
        for (kind, n) in more {
            self.violation(kind, format!("... and {n} more like the above"));
        }
    }

    /// Node `n`'s engine sent `msg` to broker `to`.
    pub(super) fn send_peer(&mut self, n: usize, to: i32, msg: Bytes) {
        let now = self.now();
        let from = node_id(n);
        let Some(p) = self.peers.as_mut() else {
            self.violation(
                "engine-contract",
                format!("node {from} sent node {to} a peer message in a one-node run"),
            );
            return;
        };
        let fate = p.net.send(&mut p.rng_net, now, from, to, msg);
        let due: Vec<u64> = match fate {
            SendFate::Scheduled {
                due_ms, copy_due_ms, ..
            } => std::iter::once(due_ms).chain(copy_due_ms).collect(),
            SendFate::Dropped(DropCause::UnknownNode) => {
                let detail = format!("node {from} sent a peer message to unknown node {to}");
                self.violation("engine-contract", detail);
                return;
            }
            SendFate::Dropped(_) => return,
        };
        let fresh: Vec<u64> = due.into_iter().filter(|&at| p.due_at.insert(at)).collect();
        for at in fresh {
            self.schedule(at, Event::PeerDue);
        }
    }

    /// Delivers every peer message now due (to a paused node: when it resumes).
    pub(super) fn peer_due(&mut self) {
        let now = self.now();
        if let Some(p) = self.peers.as_mut() {
            p.due_at.remove(&now);
        }
        while let Some(d) = self.peers.as_mut().and_then(|p| p.net.pop_due(now)) {
            let Some(n) = usize::try_from(d.to - 1).ok().filter(|&n| n < self.nodes.len()) else {
                continue;
            };
            if self.nodes[n].paused {
                let incarnation = self.nodes[n].incarnation;
                self.nodes[n].deferred.push(Event::PeerDeliver {
                    node: n,
                    incarnation,
                    from: d.from,
                    msg: d.msg,
                });
                continue;
            }
            self.step(
                n,
                Input::PeerMessage {
                    from: d.from,
                    msg: d.msg,
                },
            );
        }
    }

    /// Node `n`'s engine started: peers reach it from now on.
    pub(super) fn peer_link_up(&mut self, n: usize) {
        if let Some(p) = self.peers.as_mut() {
            p.net.set_down(node_id(n), false);
        }
    }

    /// Node `n` went down: what is in flight to or from it is gone.
    pub(super) fn peer_link_down(&mut self, n: usize) {
        if let Some(p) = self.peers.as_mut() {
            p.net.drop_node_traffic(node_id(n));
            p.net.set_down(node_id(n), true);
        }
    }

    pub(super) fn net_nemesis(&mut self) {
        if !self.faults_on {
            return;
        }
        let leader = self.leader_hint();
        let now = self.now();
        let Some(p) = self.peers.as_mut() else { return };
        let line = p.nemesis.step(now, &mut p.net, &mut p.rng_nemesis, leader);
        let next = p.nemesis.next_change_at();
        if let Some(line) = line {
            self.trace.note("net-nemesis", &line);
            self.log(line);
        }
        if let Some(at) = next {
            self.schedule(at, Event::NetNemesis);
        }
    }

    /// The broker leading the topic's partition 0 (or, if the seed says so, the group
    /// coordinator's `__consumer_offsets` partition), else the metadata leader (the target of
    /// `isolate-leader`).
    fn leader_hint(&self) -> Option<i32> {
        let target = match &self.opts.groups {
            Some(g) if g.target_coordinator => {
                (OFFSETS_TOPIC, partition_for(GROUP_ID, GROUP_OFFSETS_PARTITIONS))
            }
            _ => (TOPIC, 0),
        };
        let mut metadata_leader = None;
        for (n, node) in self.nodes.iter().enumerate() {
            let Some(engine) = &node.engine else { continue };
            for s in engine.replica_status().iter().filter(|s| s.role == Role::Leader) {
                if s.topic == target.0 && s.partition == target.1 {
                    return Some(node_id(n));
                }
                if s.group == GroupId::METADATA {
                    metadata_leader = Some(node_id(n));
                }
            }
        }
        metadata_leader
    }

    pub(super) fn pause_start(&mut self) {
        if !self.faults_on {
            return;
        }
        let count = self.nodes.len();
        let Some(p) = self.peers.as_mut() else { return };
        let Some(pf) = p.pause.clone() else { return };
        let n = p.rng_pause.gen_range(0..count);
        let duration_ms = p.rng_pause.gen_range(1..=pf.duration_ms_max);
        let gap_ms = exp_gap_ms(&mut p.rng_pause, pf.interval_ms_mean);
        let now = self.now();
        self.schedule(now + gap_ms, Event::PauseStart);
        let node = &self.nodes[n];
        let pausable = node.engine.is_some()
            && !node.paused
            && !node.sync_failed
            && node.state != NodeState::ShuttingDown;
        if !pausable {
            return;
        }
        self.nodes[n].paused = true;
        let incarnation = self.nodes[n].incarnation;
        self.log(format!("node {}: paused for {duration_ms}ms", node_id(n)));
        self.trace.event("pause", &[n as u64, duration_ms]);
        self.schedule(now + duration_ms, Event::PauseEnd { node: n, incarnation });
    }

    pub(super) fn pause_end(&mut self, n: usize, incarnation: u64) {
        if self.nodes[n].incarnation == incarnation && self.nodes[n].paused {
            self.resume(n);
        }
    }

    /// Ends node `n`'s pause: what waited is handed over now, in its original order.
    fn resume(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.paused = false;
        let deferred = std::mem::take(&mut node.deferred);
        self.log(format!(
            "node {}: resumes ({} events waited)",
            node_id(n),
            deferred.len()
        ));
        self.trace.event("resume", &[n as u64, deferred.len() as u64]);
        let now = self.now();
        // What waited goes first: events for this node already queued for this instant
        // (e.g. the next request on a connection) move behind it, keeping their order.
        let later: Vec<(u64, u64)> = self
            .queue
            .range((now, 0)..(now + 1, 0))
            .filter(|(_, ev)| self.node_of(ev) == Some(n))
            .map(|(k, _)| *k)
            .collect();
        let later: Vec<Event> = later.into_iter().filter_map(|k| self.queue.remove(&k)).collect();
        for ev in deferred.into_iter().chain(later) {
            self.schedule(now, ev);
        }
    }

    /// The safety phase is over: partitions end, the network is healthy, pauses end.
    pub(super) fn heal_cluster(&mut self) {
        let now = self.now();
        let Some(p) = self.peers.as_mut() else { return };
        let line = p.nemesis.heal_all(now, &mut p.net);
        let healed = p.net.faults().healed();
        p.net.set_faults(healed);
        if let Some(line) = line {
            self.trace.note("net-nemesis", &line);
            self.log(line);
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].paused {
                self.resume(n);
            }
        }
    }

    /// Every live replica's status, by group.
    fn statuses_by_group(&self) -> BTreeMap<GroupId, Vec<(i32, ReplicaStatus)>> {
        let mut groups: BTreeMap<GroupId, Vec<(i32, ReplicaStatus)>> = BTreeMap::new();
        for (n, node) in self.nodes.iter().enumerate() {
            let Some(engine) = &node.engine else { continue };
            for s in engine.replica_status() {
                groups.entry(s.group).or_default().push((node_id(n), s));
            }
        }
        groups
    }

    /// Whether the cluster has settled after healing: every group has all its replicas up,
    /// one leader, and every replica follows it in its term. Always true on one node.
    pub(super) fn settled(&self) -> bool {
        if self.peers.is_none() {
            return true;
        }
        if self.nodes.iter().any(|n| n.paused || n.engine.is_none()) {
            return false;
        }
        let groups = self.statuses_by_group();
        !groups.is_empty()
            && groups.values().all(|replicas| {
                let leaders: Vec<&(i32, ReplicaStatus)> =
                    replicas.iter().filter(|(_, s)| s.role == Role::Leader).collect();
                let [(leader, ls)] = leaders.as_slice() else {
                    return false;
                };
                replicas.len() == ls.voters.len()
                    && replicas
                        .iter()
                        .all(|(_, s)| !s.halted && s.term == ls.term && s.leader == Some(*leader))
            })
    }

    /// One line per group (cluster runs), for a report of a stuck run.
    pub(super) fn describe_groups(&self) -> String {
        if self.peers.is_none() {
            return String::new();
        }
        let mut out = String::new();
        for (group, replicas) in self.statuses_by_group() {
            let name = replicas
                .first()
                .map(|(_, s)| format!("{}-{}", s.topic, s.partition))
                .unwrap_or_else(|| format!("{group:?}"));
            let each: Vec<String> = replicas
                .iter()
                .map(|(id, s)| {
                    format!(
                        "n{id} {:?} t{} leader {:?} commit {} log {} durable {}{}",
                        s.role,
                        s.term,
                        s.leader,
                        s.commit_end,
                        s.log_end,
                        s.durable_end,
                        if s.halted { " halted" } else { "" }
                    )
                })
                .collect();
            out.push_str(&format!("; {name}: [{}]", each.join(", ")));
        }
        out
    }

    /// End of a cluster run: below the smaller of their committed and durable ends, any two
    /// replicas of a group hold the same batches (offsets, epoch, CRC) in their segment
    /// files, read from each node's simulated disk.
    pub(super) fn check_committed_bytes(&mut self) {
        if self.peers.is_none() {
            return;
        }
        let mut broken = Vec::new();
        for replicas in self.statuses_by_group().values() {
            let stored: Vec<(i32, u64, Vec<StoredBatch>)> = replicas
                .iter()
                .map(|(id, s)| {
                    // Only what is on the disk: a follower's commit end may cover appends
                    // still in flight.
                    let end = s.commit_end.min(s.durable_end);
                    let dir = format!("{}-{}", s.topic, s.partition);
                    let disk = &self.nodes[(id - 1) as usize].disk;
                    (*id, end, stored_batches(disk, &dir, end))
                })
                .collect();
            for (i, (a, a_end, a_batches)) in stored.iter().enumerate() {
                for (b, b_end, b_batches) in &stored[i + 1..] {
                    let m = (*a_end).min(*b_end);
                    let below =
                        |v: &[StoredBatch]| v.iter().copied().filter(|x| x.last < m).collect::<Vec<_>>();
                    let (x, y) = (below(a_batches), below(b_batches));
                    if let Some(k) = (0..x.len().max(y.len())).find(|&k| x.get(k) != y.get(k)) {
                        let name = replicas
                            .first()
                            .map(|(_, s)| format!("{}-{}", s.topic, s.partition));
                        broken.push(format!(
                            "{}: below committed and durable end {m}, node {a} stores {:?} where node {b} stores {:?}",
                            name.unwrap_or_default(),
                            x.get(k),
                            y.get(k)
                        ));
                    }
                }
            }
        }
        for detail in broken {
            self.violation("committed-bytes-differ", detail);
        }
    }

    /// The run summary line of a cluster run.
    pub(super) fn cluster_summary(&self) -> Option<String> {
        let p = self.peers.as_ref()?;
        Some(format!(
            "peer network: {}; invariants read {} replica statuses",
            p.net.stats(),
            self.inv.observed
        ))
    }
}

/// A record batch as the end check compares it (the CRC covers everything but the offset,
/// length and epoch fields, which are compared themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StoredBatch {
    base: u64,
    last: u64,
    epoch: i32,
    crc: u32,
}

/// Bytes of a v2 batch header, and where its fields sit.
const BATCH_HEADER_BYTES: usize = 61;

/// The batches of `dir`'s segment files that end below `end`, in offset order, parsed from
/// the bytes on `disk` (what reads see). Parsing stops at anything that is not a whole
/// batch header (a torn tail, an unfinished cut).
fn stored_batches(disk: &Disk, dir: &str, end: u64) -> Vec<StoredBatch> {
    let prefix = format!("{dir}/");
    let mut segments: Vec<String> = disk
        .file_sizes()
        .into_iter()
        .map(|(name, _, _)| name)
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".log") && !n[prefix.len()..].contains('/'))
        .collect();
    segments.sort();
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut out = Vec::new();
    for seg in segments {
        let Some(bytes) = disk.contents(&seg) else {
            continue;
        };
        let mut at = 0usize;
        while at + BATCH_HEADER_BYTES <= bytes.len() {
            let h = &bytes[at..];
            let mut base = [0u8; 8];
            base.copy_from_slice(&h[..8]);
            let base = u64::from_be_bytes(base);
            let size = 12 + be32(h, 8) as usize;
            let last = base + u64::from(be32(h, 23));
            if size < BATCH_HEADER_BYTES || at + size > bytes.len() || last >= end {
                break;
            }
            out.push(StoredBatch {
                base,
                last,
                epoch: be32(h, 12) as i32,
                crc: be32(h, 17),
            });
            at += size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use gregor_engine::BrokerConfig;

    use super::*;
    use crate::net::NetFaults;
    use crate::swarm::{RunSettings, SwarmOptions};

    /// A world of three nodes, no engines, a 2 ms network without faults.
    fn world() -> World {
        let mut opts = SwarmOptions::choose(
            7,
            &RunSettings {
                nodes: 3,
                ..RunSettings::default()
            },
        );
        if let Some(c) = opts.cluster.as_mut() {
            c.net = NetFaults::healthy(2, 0);
        }
        World::new(opts, BrokerConfig::default(), false)
    }

    fn queued(w: &World) -> Vec<(u64, String)> {
        w.queue
            .iter()
            .map(|(&(at, _), ev)| (at, format!("{ev:?}")))
            .collect()
    }

    #[test]
    fn peer_messages_cross_the_network_only_between_ready_nodes() {
        let mut w = world();
        w.peer_link_up(0);
        w.peer_link_up(1);
        w.send_peer(0, 2, Bytes::from_static(b"a"));
        w.send_peer(0, 3, Bytes::from_static(b"b")); // node 3 is down: dropped
        w.send_peer(1, 1, Bytes::from_static(b"c"));
        let q = queued(&w);
        assert_eq!(q.len(), 1, "one PeerDue for the two messages due at 2 ms: {q:?}");
        assert_eq!(q[0], (2, "PeerDue".to_string()));
        // Node 2 (index 1) is paused: its message waits with it; node 1's is delivered.
        w.nodes[1].paused = true;
        w.clock.advance_to(2);
        w.queue.clear();
        w.peer_due();
        let held: Vec<String> = w.nodes[1].deferred.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(held.len(), 1, "{held:?}");
        assert!(
            held[0].starts_with("PeerDeliver { node: 1, incarnation: 0, from: 1,"),
            "{held:?}"
        );
        let stats = w
            .peers
            .as_ref()
            .map(|p| p.net.stats().clone())
            .unwrap_or_default();
        assert_eq!((stats.sent, stats.delivered, stats.dropped_down), (3, 2, 1));
        // A crash drops what is in flight to or from the node.
        w.send_peer(0, 2, Bytes::from_static(b"d"));
        w.peer_link_down(1);
        assert_eq!(w.peers.as_ref().map(|p| p.net.in_flight()), Some(0));
    }

    #[test]
    fn a_paused_node_takes_nothing_until_it_resumes_then_all_in_order() {
        let mut w = world();
        w.nodes[0].paused = true;
        w.handle(Event::Timer {
            node: 0,
            incarnation: 0,
            at_ms: 5,
        });
        w.handle(Event::IoDone {
            node: 0,
            incarnation: 0,
            token: 9,
        });
        w.handle(Event::Timer {
            node: 1,
            incarnation: 0,
            at_ms: 6,
        });
        assert_eq!(w.nodes[0].deferred.len(), 2);
        assert!(w.nodes[1].deferred.is_empty(), "other nodes go on");
        w.clock.advance_to(40);
        w.resume(0);
        assert!(!w.nodes[0].paused && w.nodes[0].deferred.is_empty());
        let q = queued(&w);
        assert_eq!(q.len(), 2);
        assert!(q[0].0 == 40 && q[0].1.starts_with("Timer"), "{q:?}");
        assert!(q[1].0 == 40 && q[1].1.starts_with("IoDone"), "{q:?}");
    }

    #[test]
    fn a_crash_ends_a_pause_and_forgets_what_waited() {
        let mut w = world();
        w.nodes[2].paused = true;
        w.handle(Event::Timer {
            node: 2,
            incarnation: 0,
            at_ms: 5,
        });
        w.crash(2, "test".to_string());
        assert!(!w.nodes[2].paused && w.nodes[2].deferred.is_empty());
        assert_eq!(w.nodes[2].incarnation, 1);
        // The pause's end for the old incarnation changes nothing.
        w.pause_end(2, 0);
        assert!(!w.nodes[2].paused);
    }

    #[test]
    fn heal_ends_pauses_and_network_faults() {
        let mut w = world();
        w.nodes[1].paused = true;
        if let Some(p) = w.peers.as_mut() {
            p.net.isolate(2);
        }
        w.heal();
        assert!(!w.nodes[1].paused);
        assert_eq!(w.peers.as_ref().map(|p| p.net.is_partitioned()), Some(false));
        assert!(w.nemesis.iter().any(|(_, l)| l.starts_with("node 2: resumes")));
    }

    #[test]
    fn stored_batches_are_read_from_the_segments_below_the_end() {
        use gregor_engine::IoOp;

        use crate::disk::OpFaults;
        use crate::wire::encode_batch_for_test;

        let mut disk = Disk::new();
        let batch = |base: i64, n: usize| {
            let records: Vec<crate::wire::TestRecord> = (0..n).map(|_| (None, Some(&b"v"[..]))).collect();
            encode_batch_for_test(base, &records)
        };
        let ops = [
            IoOp::CreateDir { dir: "t-0".into() },
            IoOp::CreateFile {
                file: "t-0/00000000000000000000.log".into(),
            },
            IoOp::CreateFile {
                file: "t-0/00000000000000000003.log".into(),
            },
            IoOp::CreateFile {
                file: "t-0/00000000000000000000.index".into(),
            },
        ];
        for op in &ops {
            disk.apply(op, OpFaults::default());
        }
        let append = |disk: &mut Disk, file: &str, position: u64, data: Bytes| {
            let op = IoOp::Append {
                file: file.into(),
                position,
                data: vec![data],
            };
            disk.apply(&op, OpFaults::default());
        };
        let (a, b, c) = (batch(0, 2), batch(2, 1), batch(3, 4));
        append(&mut disk, "t-0/00000000000000000000.log", 0, a.clone());
        append(
            &mut disk,
            "t-0/00000000000000000000.log",
            a.len() as u64,
            b.clone(),
        );
        append(&mut disk, "t-0/00000000000000000003.log", 0, c.clone());
        let bases = |end| -> Vec<(u64, u64)> {
            stored_batches(&disk, "t-0", end)
                .iter()
                .map(|s| (s.base, s.last))
                .collect()
        };
        assert_eq!(bases(100), vec![(0, 1), (2, 2), (3, 6)]);
        assert_eq!(
            bases(6),
            vec![(0, 1), (2, 2)],
            "a batch reaching the end is left out"
        );
        assert_eq!(bases(0), vec![]);
        assert_eq!(stored_batches(&disk, "t-1", 100), vec![]);
    }

    #[test]
    fn a_one_node_world_has_no_network_and_is_always_settled() {
        let opts = SwarmOptions::choose(7, &RunSettings::default());
        let mut w = World::new(opts, BrokerConfig::default(), false);
        assert!(w.peers.is_none() && w.settled());
        w.send_peer(0, 2, Bytes::from_static(b"x"));
        assert_eq!(w.violations.len(), 1);
        assert_eq!(w.violations[0].kind, "engine-contract");
        assert_eq!(w.describe_groups(), "");
    }
}
