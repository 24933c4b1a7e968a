//! Replicas: each partition (and, later, the metadata log) is a Raft group over its
//! replicas. A [`Replica`] binds the group's [`RaftCore`] to its [`PartitionLog`]; the
//! engine carries out the core's actions against the log, the disk and the peers.
//!
//! Invariants: every log driven by a replica has `commit_end` set from Raft, so its high
//! watermark is Raft's commit end; the log's `leader_epoch` is the group's current term;
//! at most one hard state write per group is in flight (a newer one waits for it); at most
//! one entries read per (group, follower) is in flight.
//!
//! A failed write makes the log rewind to its durable end. Raft never lets a log shrink
//! under its core (a leader might have sent the lost entries to followers), so the replica
//! halts until the rewind is done and then restarts its core from the durable hard state,
//! exactly as after a crash: a new election, a new term, a new no-op. Completions for a
//! halted core are recognised by its `generation` and not fed to the new one.

pub mod controller;
pub mod envelope;
pub mod hard_state;
pub mod metadata;
pub mod producer_ids;

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::batch::BatchView;
use crate::engine::{Engine, IoTag, ReadFor};
use crate::io::{IoOp, IoResult};
use crate::kafka::control::leader_change_batch;
use crate::log::partition::{LogId, PartitionLog};
use crate::log::read::{ReadGoal, ReadJob, ReadOutcome};
use crate::raft::{Entry, HardState, NodeId, RaftAction, RaftConfig, RaftCore, RaftLog, Role};
use crate::Output;

pub use envelope::{Control, Envelope, GroupId};

/// How often the engine ticks every group (election timeouts, check-quorum); heartbeats
/// go out every [`RaftConfig::heartbeat_interval_ms`].
pub const TICK_MS: u64 = 25;

/// The metadata log's topic name, as in KRaft.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub(crate) struct Replica {
    pub log: LogId,
    pub raft: RaftCore,
    pub voters: Vec<NodeId>,
    /// Which core this is: bumped by every restart.
    generation: u64,
    /// The core is stopped while its log rewinds after a failed write.
    halted: bool,
    /// When a halted replica whose log has rewound restarts (a delay, so that a disk that
    /// stays full costs one attempt per election timeout, not a busy loop).
    restart_at: Option<u64>,
    /// The last hard state known durable.
    persisted: HardState,
    /// A hard state write is in flight.
    persisting: bool,
    /// The newest hard state asked for while another was being written.
    persist_next: Option<HardState>,
    /// Followers whose entries are being read from disk.
    reading: BTreeSet<NodeId>,
}

/// What one replica looks like from outside, for the simulator's invariants and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub group: GroupId,
    /// The topic (`__cluster_metadata` for the metadata log) and partition.
    pub topic: String,
    pub partition: i32,
    pub voters: Vec<NodeId>,
    pub role: Role,
    pub term: i32,
    pub leader: Option<NodeId>,
    /// The term and vote known to be on disk.
    pub durable_term: i32,
    pub durable_vote: Option<NodeId>,
    /// Raft's commit end (the high watermark) as this replica knows it.
    pub commit_end: u64,
    pub log_start: u64,
    pub log_end: u64,
    pub durable_end: u64,
    /// The log's epoch history: (epoch, first offset), ascending.
    pub epochs: Vec<(i32, u64)>,
    /// The core is halted while its log rewinds after a failed write.
    pub halted: bool,
}

impl RaftLog for PartitionLog {
    fn start(&self) -> u64 {
        self.log_start_offset
    }
    fn end(&self) -> u64 {
        self.log_end_offset()
    }
    fn durable_end(&self) -> u64 {
        PartitionLog::durable_end(self)
    }
    fn epoch_at(&self, offset: u64) -> Option<i32> {
        PartitionLog::epoch_at(self, offset)
    }
    fn last_epoch(&self) -> i32 {
        PartitionLog::last_epoch(self)
    }
    fn end_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        PartitionLog::end_for_epoch(self, epoch)
    }
    fn batch_base(&self, offset: u64) -> Option<u64> {
        PartitionLog::batch_base(self, offset)
    }
}

/// Raft's view of a stored batch.
fn entry_of(bytes: Bytes) -> Option<Entry> {
    let view = BatchView::parse_unchecked_crc(&bytes).ok()?;
    let (base, last) = (view.base_offset(), view.last_offset());
    if base < 0 || last < base || view.size_bytes() != bytes.len() {
        return None;
    }
    Some(Entry {
        base: base as u64,
        last: last as u64,
        epoch: view.partition_leader_epoch(),
        bytes,
    })
}

impl Engine {
    pub(crate) fn raft_config(&self) -> RaftConfig {
        let mut c = RaftConfig::default();
        c.bugs.vote_without_persist = self.config.planted.vote_without_persist();
        c.bugs.ack_before_fsync = self.config.planted.follower_ack_before_fsync();
        c.bugs.commit_on_minority = self.config.planted.commit_on_minority();
        c.bugs.skip_truncation = self.config.planted.skip_truncation();
        c
    }

    /// Starts the Raft group of a recovered log. `raft_state` is its state file, if any.
    pub(crate) fn start_replica(
        &mut self,
        group: GroupId,
        log_id: LogId,
        voters: Vec<NodeId>,
        raft_state: Option<Bytes>,
    ) -> Result<(), String> {
        let config = self.raft_config();
        let Some(log) = self.logs.get_mut(&log_id) else {
            return Err("the log of a new replica is gone".into());
        };
        let mut hard = match raft_state {
            Some(bytes) => hard_state::decode(&bytes).map_err(|e| format!("{}/{e}", log.dir))?,
            None => HardState::default(),
        };
        // Entries of a term may reach the disk before the term's state file does (a
        // follower appends before it answers); the term is never below the log's.
        if log.last_epoch() > hard.term {
            hard = HardState {
                term: log.last_epoch(),
                voted_for: None,
            };
        }
        log.commit_end = Some(log.log_start_offset);
        log.leader_epoch = hard.term;
        // Not a leader until Raft says so: a restarted replica must not take produces or
        // serve reads before it has won an election.
        log.is_leader = false;
        log.serving_from = u64::MAX;
        let me = self.config.node_id;
        let voter_set: BTreeSet<NodeId> = voters.iter().copied().collect();
        assert!(voter_set.contains(&me), "a replica is one of its group's voters");
        let raft = RaftCore::new(
            me,
            voter_set,
            BTreeSet::new(),
            hard,
            config,
            &*log,
            self.now.mono_ms,
            &mut self.rng,
        );
        self.replicas.insert(
            group,
            Replica {
                log: log_id,
                raft,
                voters,
                generation: 0,
                halted: false,
                restart_at: None,
                persisted: hard,
                persisting: false,
                persist_next: None,
                reading: BTreeSet::new(),
            },
        );
        self.group_of_log.insert(log_id, group);
        // A group of one elects itself at its first tick: do it now, not a tick later.
        self.replica_tick_one(group);
        Ok(())
    }

    /// Stops a replica's core while its log rewinds after a failed write.
    pub(crate) fn halt_replica(&mut self, log_id: LogId) {
        let Some(&group) = self.group_of_log.get(&log_id) else {
            return;
        };
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        if !r.halted {
            tracing::warn!(
                ?group,
                "a write failed: halting the replica until its log rewinds"
            );
        }
        r.halted = true;
        if let Some(log) = self.logs.get_mut(&log_id) {
            log.is_leader = false;
        }
        self.kafka_leadership_lost(log_id);
    }

    /// Its log rewound: the halted replica restarts after an election timeout.
    pub(crate) fn restart_replica_later(&mut self, log_id: LogId) {
        let at = self.now.mono_ms + self.raft_config().election_timeout_min_ms;
        let Some(&group) = self.group_of_log.get(&log_id) else {
            return;
        };
        if let Some(r) = self.replicas.get_mut(&group) {
            if r.halted {
                r.restart_at = Some(at);
            }
        }
    }

    /// Restarts a halted replica's core from its durable hard state.
    fn restart_replica(&mut self, group: GroupId) {
        let config = self.raft_config();
        let now = self.now.mono_ms;
        let me = self.config.node_id;
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        let Some(log) = self.logs.get_mut(&r.log) else {
            return;
        };
        if !r.halted || log.is_rewinding() {
            return;
        }
        let mut hard = r.persisted;
        if log.last_epoch() > hard.term {
            hard = HardState {
                term: log.last_epoch(),
                voted_for: None,
            };
        }
        log.commit_end = Some(log.commit_end.unwrap_or(0).min(log.log_end_offset()));
        log.leader_epoch = hard.term;
        let voters: BTreeSet<NodeId> = r.voters.iter().copied().collect();
        r.raft = RaftCore::new(
            me,
            voters,
            BTreeSet::new(),
            hard,
            config,
            &*log,
            now,
            &mut self.rng,
        );
        r.generation += 1;
        r.halted = false;
        r.restart_at = None;
        r.persisting = false;
        r.persist_next = None;
        r.reading.clear();
        tracing::info!(?group, term = hard.term, "the log rewound: replica restarted");
        self.replica_tick_one(group);
    }

    /// Forgets a replica whose log is being removed.
    pub(crate) fn stop_replica(&mut self, log_id: LogId) {
        if let Some(group) = self.group_of_log.remove(&log_id) {
            self.replicas.remove(&group);
        }
    }

    /// Ticks every group; sends heartbeats when one is due.
    pub(crate) fn replica_tick(&mut self) {
        let now = self.now.mono_ms;
        let heartbeat = now >= self.next_heartbeat_ms;
        if heartbeat {
            self.next_heartbeat_ms = now + self.raft_config().heartbeat_interval_ms;
        }
        let due: Vec<GroupId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.halted && r.restart_at.is_some_and(|at| at <= now))
            .map(|(&g, _)| g)
            .collect();
        for group in due {
            self.restart_replica(group);
        }
        let groups: Vec<GroupId> = self.replicas.keys().copied().collect();
        for group in groups {
            self.replica_tick_one(group);
            if heartbeat {
                self.with_raft(group, |raft, log, _, now, out| raft.heartbeat(now, log, out));
            }
        }
        if heartbeat {
            self.announce();
            self.meta_apply();
        }
        self.next_raft_tick_ms = now + TICK_MS;
    }

    fn replica_tick_one(&mut self, group: GroupId) {
        self.with_raft(group, |raft, log, rng, now, out| raft.tick(now, log, rng, out));
    }

    /// The earliest time the groups need a tick, if any group exists.
    pub(crate) fn replica_deadline(&self) -> Option<u64> {
        (!self.replicas.is_empty()).then_some(self.next_raft_tick_ms)
    }

    /// Calls into one group's core with its log, then carries out what it asked for.
    fn with_raft(
        &mut self,
        group: GroupId,
        f: impl FnOnce(&mut RaftCore, &PartitionLog, &mut rand_chacha::ChaCha8Rng, u64, &mut Vec<RaftAction>),
    ) {
        let now = self.now.mono_ms;
        let mut actions = Vec::new();
        {
            let Some(r) = self.replicas.get_mut(&group) else {
                return;
            };
            if r.halted {
                return;
            }
            let Some(log) = self.logs.get(&r.log) else { return };
            f(&mut r.raft, log, &mut self.rng, now, &mut actions);
        }
        self.run_actions(group, actions);
    }

    /// A log driven by a replica changed (written, durable, cut): tell its core.
    pub(crate) fn replica_log_changed(&mut self, log_id: LogId) {
        if let Some(&group) = self.group_of_log.get(&log_id) {
            self.with_raft(group, |raft, log, _, now, out| raft.on_log_changed(now, log, out));
        }
    }

    /// A peer's message: every Raft item goes to its group (unknown groups are ignored:
    /// the sender learns of the topic's deletion, or we of its creation, soon enough).
    pub(crate) fn on_peer_message(&mut self, from: NodeId, msg: Bytes) {
        let env = match Envelope::decode(msg) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(from, error = %e, "dropping a malformed peer message");
                return;
            }
        };
        for (group, msg) in env.raft {
            let acked = matches!(
                msg,
                crate::raft::RaftMsg::AppendResp { .. } | crate::raft::RaftMsg::HeartbeatResp { .. }
            );
            self.with_raft(group, |raft, log, rng, now, out| {
                raft.step(now, from, msg, log, rng, out)
            });
            // A follower's durable end moved: acks=all produces waiting for more copies than
            // a majority (min.insync.replicas) may be answerable now.
            if acked {
                if let Some(log_id) = self.replicas.get(&group).map(|r| r.log) {
                    if self.insync_end(log_id) != u64::MAX {
                        self.kafka_log_advanced(log_id);
                    }
                }
            }
        }
        for control in env.control {
            self.on_control(from, control);
        }
    }

    /// Carries out a core's actions in order. Actions that complete at once (a tail-cache
    /// read) feed the core again, and what that causes is carried out in turn.
    fn run_actions(&mut self, group: GroupId, actions: Vec<RaftAction>) {
        let mut queue: std::collections::VecDeque<RaftAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            let mut more = Vec::new();
            self.run_action(group, action, &mut more);
            queue.extend(more);
        }
    }

    fn run_action(&mut self, group: GroupId, action: RaftAction, more: &mut Vec<RaftAction>) {
        let now = self.now.mono_ms;
        let wall = self.now.wall_ms;
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        if r.halted {
            return;
        }
        let log_id = r.log;
        let generation = r.generation;
        match action {
            RaftAction::Send { to, msg } => {
                self.outbox.entry(to).or_default().raft.push((group, msg));
            }
            RaftAction::Persist(hs) => {
                if r.persisting {
                    r.persist_next = Some(hs);
                } else {
                    r.persisting = true;
                    self.write_hard_state(group, log_id, hs, generation);
                }
            }
            RaftAction::NeedEntries { to, from, max_bytes } => {
                if r.reading.contains(&to) {
                    return;
                }
                let Some(log) = self.logs.get(&log_id) else { return };
                let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
                if let Some((batches, _)) = log.tail.read(from, log.log_end_offset(), max) {
                    let entries: Vec<Entry> = batches
                        .into_iter()
                        .filter_map(|b| entry_of(b.into_contiguous()))
                        .collect();
                    r.raft.send_entries(to, entries, log, more);
                    return;
                }
                r.reading.insert(to);
                let end = log.log_end_offset();
                let goal = ReadGoal::Fetch {
                    offset: from,
                    max_bytes: max,
                };
                let off_by_one = self.config.planted.index_off_by_one();
                let owner = ReadFor::Raft {
                    group,
                    to,
                    generation,
                };
                self.start_read_for(log_id, |log| ReadJob::start(log, goal, end, off_by_one), owner);
            }
            RaftAction::Append { entries } => {
                for e in entries {
                    let Some(log) = self.logs.get_mut(&log_id) else {
                        return;
                    };
                    if let Err(err) = log.append_replicated(&mut self.q, e.bytes, wall) {
                        tracing::warn!(dir = %log.dir, base = e.base, ?err, "a replicated batch was refused");
                        break;
                    }
                }
                // Settled, not merely changed: what the log refused will never appear.
                if let (Some(r), Some(log)) = (self.replicas.get_mut(&group), self.logs.get(&log_id)) {
                    r.raft.on_log_settled(now, log, more);
                }
            }
            RaftAction::Truncate { from } => {
                let Some(log) = self.logs.get_mut(&log_id) else {
                    return;
                };
                log.truncate_from(&mut self.q, from);
                self.kafka_log_failed(log_id, from);
                // Changed, not settled: an Append of the same step may still follow.
                if let (Some(r), Some(log)) = (self.replicas.get_mut(&group), self.logs.get(&log_id)) {
                    r.raft.on_log_changed(now, log, more);
                }
            }
            RaftAction::BecameLeader { term } => {
                let me = self.config.node_id;
                let batch = leader_change_batch(me, &r.voters, wall);
                let Some(log) = self.logs.get_mut(&log_id) else {
                    return;
                };
                log.leader_epoch = term;
                match log.append_own(&mut self.q, &batch, wall) {
                    Ok((_, last)) => log.serving_from = last + 1,
                    Err(err) => {
                        // The log is rewinding after a failed write: serve nothing this term
                        // (the next election writes a new no-op).
                        log.serving_from = u64::MAX;
                        tracing::warn!(dir = %log.dir, term, ?err, "the leader no-op was refused");
                    }
                }
                tracing::info!(dir = %log.dir, term, "became leader");
                if let (Some(r), Some(log)) = (self.replicas.get_mut(&group), self.logs.get(&log_id)) {
                    r.raft.on_log_changed(now, log, more);
                }
                self.note_leading(group, term);
                // A `__consumer_offsets` leader: its groups answer LOAD_IN_PROGRESS from now.
                self.groups_log_advanced(log_id);
            }
            RaftAction::RoleChanged { role, term, leader } => {
                let Some(log) = self.logs.get_mut(&log_id) else {
                    return;
                };
                log.leader_epoch = term;
                log.is_leader = role == Role::Leader;
                tracing::debug!(dir = %log.dir, ?role, term, ?leader, "raft role");
                if role != Role::Leader {
                    self.kafka_leadership_lost(log_id);
                } else {
                    // (BecameLeader may have come first, while the log was not a leader yet.)
                    self.groups_log_advanced(log_id);
                }
                if group == GroupId::METADATA {
                    self.controller_progress();
                }
            }
            RaftAction::CommitAdvanced { commit_end } => {
                let Some(log) = self.logs.get_mut(&log_id) else {
                    return;
                };
                // A restarted core may learn a lower commit end first; the log's never
                // goes back (what was committed stays committed).
                log.commit_end = Some(log.commit_end.unwrap_or(0).max(commit_end));
                self.kafka_log_advanced(log_id);
                if group == GroupId::METADATA {
                    self.meta_apply();
                }
            }
        }
    }

    fn write_hard_state(&mut self, group: GroupId, log_id: LogId, hs: HardState, generation: u64) {
        let Some(log) = self.logs.get(&log_id) else { return };
        let op = IoOp::WriteState {
            file: format!("{}/{}", log.dir, hard_state::FILE),
            data: hard_state::encode(&hs),
        };
        self.q.submit(op, IoTag::HardState(group, hs, generation));
    }

    pub(crate) fn on_hard_state_written(
        &mut self,
        group: GroupId,
        hs: HardState,
        generation: u64,
        result: IoResult,
    ) {
        if let IoResult::Err(e) = result {
            // A vote or term we cannot make durable must not be acted on: stop the node.
            self.fail(format!("writing {}: {e}", hard_state::FILE));
            return;
        }
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        if hs.term > r.persisted.term || hs.term == r.persisted.term && hs.voted_for.is_some() {
            r.persisted = hs;
        }
        if generation != r.generation || r.halted {
            return; // written for a core that was since restarted (or is halted)
        }
        r.persisting = false;
        let next = r.persist_next.take();
        let mut actions = Vec::new();
        r.raft.on_persisted(hs, &mut actions);
        let log_id = r.log;
        if let Some(next) = next {
            if let Some(r) = self.replicas.get_mut(&group) {
                r.persisting = true;
            }
            self.write_hard_state(group, log_id, next, generation);
        }
        self.run_actions(group, actions);
    }

    /// Entries read from disk for a follower.
    pub(crate) fn replica_read_done(
        &mut self,
        group: GroupId,
        to: NodeId,
        generation: u64,
        outcome: ReadOutcome,
    ) {
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        if generation != r.generation || r.halted {
            return;
        }
        r.reading.remove(&to);
        let entries: Vec<Entry> = match outcome {
            ReadOutcome::Batches { batches, .. } => batches.into_iter().filter_map(entry_of).collect(),
            ReadOutcome::Failed(why) => {
                tracing::warn!(?group, to, %why, "reading entries for a follower failed");
                Vec::new()
            }
            ReadOutcome::Found(_) => Vec::new(),
        };
        let mut actions = Vec::new();
        if let Some(log) = self.logs.get(&r.log) {
            r.raft.send_entries(to, entries, log, &mut actions);
        }
        self.run_actions(group, actions);
    }

    /// Emits what was queued for each peer in this step, one message per peer.
    pub(crate) fn flush_outbox(&mut self, out: &mut Vec<Output>) {
        for (to, env) in std::mem::take(&mut self.outbox) {
            if !env.is_empty() {
                out.push(Output::SendPeer {
                    to,
                    msg: env.encode(),
                });
            }
        }
    }

    /// Every replica on this node, in group order.
    pub fn replica_status(&self) -> Vec<ReplicaStatus> {
        let names: std::collections::BTreeMap<crate::log::partition::LogId, &(String, i32)> =
            self.partitions.iter().map(|(k, id)| (*id, k)).collect();
        self.replicas
            .iter()
            .filter_map(|(&group, r)| {
                let log = self.logs.get(&r.log)?;
                let (topic, partition) = match names.get(&r.log) {
                    Some((t, p)) => (t.clone(), *p),
                    None => (METADATA_TOPIC.to_string(), group.partition),
                };
                Some(ReplicaStatus {
                    group,
                    topic,
                    partition,
                    voters: r.voters.clone(),
                    role: r.raft.role(),
                    term: r.raft.term(),
                    leader: r.raft.leader(),
                    durable_term: r.persisted.term,
                    durable_vote: r.persisted.voted_for,
                    commit_end: log.commit_end.unwrap_or(0),
                    log_start: log.log_start_offset,
                    log_end: log.log_end_offset(),
                    durable_end: log.durable_end(),
                    epochs: log.epochs().entries().to_vec(),
                    halted: r.halted,
                })
            })
            .collect()
    }

    /// The replica of a log, if one drives it.
    pub(crate) fn replica_of(&self, log_id: LogId) -> Option<&Replica> {
        self.replicas.get(self.group_of_log.get(&log_id)?)
    }

    /// Where `min.insync.replicas` holds for acks=all: the end below which that many
    /// replicas have the log durably. Unbounded when a majority (Raft's commit rule, the
    /// high watermark) already implies it.
    pub(crate) fn insync_end(&self, log_id: LogId) -> u64 {
        let (Some(r), Some(log)) = (self.replica_of(log_id), self.logs.get(&log_id)) else {
            return u64::MAX;
        };
        let copies = usize::try_from(log.config.min_insync_replicas).unwrap_or(1);
        if copies <= r.voters.len() / 2 + 1 {
            return u64::MAX;
        }
        r.raft.durable_copies_end(copies, log.durable_end())
    }

    /// Replicas (this one included) heard from within an election timeout, for a leader.
    pub(crate) fn live_replicas(&self, log_id: LogId) -> Option<usize> {
        let r = self.replica_of(log_id)?;
        (r.raft.role() == Role::Leader).then(|| r.raft.live_replicas(self.now.mono_ms))
    }
}
