//! The group coordinator of every `__consumer_offsets` partition this node leads: which
//! partitions it serves (loading, active), the groups of each, its timers, and the appends
//! it waits on. Entry points: [`GroupCoordinator::handle`] (a request), [`tick`]
//! (time passed), [`appended`] (a write finished), [`load`] / [`unload`] (leadership), and
//! [`drain_effects`] for what to do.
//!
//! Invariants: a group lives in the partition [`partition_for`] names; every outstanding
//! append is in `Io::appends` until [`appended`] or [`unload`] settles it (completions for
//! appends never issued are a bug and panic); appends of one partition are acknowledged in
//! log order; no timer is due at the end of a [`tick`].
//!
//! [`tick`]: GroupCoordinator::tick
//! [`appended`]: GroupCoordinator::appended
//! [`load`]: GroupCoordinator::load
//! [`unload`]: GroupCoordinator::unload
//! [`drain_effects`]: GroupCoordinator::drain_effects

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::{OffsetCommitResponse, OffsetDeleteResponse, ResponseKind};

use super::classic::{ClassicGroup, TopicPartition};
use super::member::Protocol;
use super::records::{self, OffsetCommitValue, Record};
use super::timers::{TimerKey, Timers};
use super::{
    code, partition_for, respond, AppendId, Effect, GroupConfig, GroupRequest, LoadSummary, OffsetsRecord,
    RequestCtx, Waiter,
};
use crate::Time;

/// The most timers one [`GroupCoordinator::tick`] fires; the rest wait for the next tick
/// (the coordinator's deadline stays in the past, so the caller ticks again at once).
const TICK_TIMERS_MAX: usize = 100_000;

/// How often a generated member id may collide with one in the group before we give up
/// on the generator (2^-122 per try for random ids: never, unless the seed is reused).
const MEMBER_ID_TRIES_MAX: usize = 16;

#[derive(Debug)]
pub struct GroupCoordinator {
    pub(crate) config: GroupConfig,
    pub(crate) shards: BTreeMap<i32, Shard>,
    pub(crate) io: Io,
}

/// One `__consumer_offsets` partition this node leads.
#[derive(Debug)]
pub(crate) enum Shard {
    /// Being replayed: its groups answer COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    Active(ActiveShard),
}

#[derive(Debug, Default)]
pub(crate) struct ActiveShard {
    pub groups: BTreeMap<String, ClassicGroup>,
    /// A retention sweep's tombstones are being written; the next sweep waits for them.
    pub sweep_in_flight: bool,
    /// The log offset of the last acknowledged append (they come in log order).
    pub last_acked_offset: Option<u64>,
}

/// Everything a handler may touch besides the groups: effects, timers, appends.
#[derive(Debug)]
pub(crate) struct Io {
    pub effects: Vec<Effect>,
    pub timers: Timers,
    pub appends: BTreeMap<AppendId, PendingAppend>,
    next_append: u64,
    pub deletes: BTreeMap<u64, PendingDelete>,
    next_delete: u64,
    seed: u64,
    member_ids_issued: u64,
}

#[derive(Debug)]
pub(crate) struct PendingAppend {
    pub partition: i32,
    pub purpose: Purpose,
}

/// What an append is for: what to do, and whom to answer, once it is acknowledged.
#[derive(Debug)]
pub(crate) enum Purpose {
    OffsetCommit {
        waiter: Waiter,
        group: String,
        response: OffsetCommitResponse,
        offsets: Vec<(TopicPartition, OffsetCommitValue)>,
    },
    OffsetDelete {
        waiter: Waiter,
        group: String,
        response: OffsetDeleteResponse,
        offsets: Vec<TopicPartition>,
    },
    /// Offset tombstones and group tombstones (groups now Dead), for DeleteGroups request
    /// `delete` or for the retention sweep.
    Tombstones {
        groups: Vec<String>,
        offsets: Vec<(String, TopicPartition)>,
        delete: Option<u64>,
        sweep: bool,
    },
    /// The leader's SyncGroup: the generation's assignment.
    GroupSync {
        group: String,
        generation: i32,
        assignment: BTreeMap<String, Bytes>,
    },
    /// A static member rejoined a Stable group under a new member id.
    StaticRejoin(StaticRejoin),
    /// The group became Empty; nothing waits on it.
    GroupEmpty,
}

#[derive(Debug)]
pub(crate) struct StaticRejoin {
    pub group: String,
    pub instance: String,
    pub old_id: String,
    pub new_id: String,
    pub old_protocols: Vec<Protocol>,
    pub old_rebalance_timeout_ms: i32,
    pub old_session_timeout_ms: i32,
    pub leader_before: Option<String>,
}

/// A DeleteGroups request waiting for its tombstones (one append per partition).
#[derive(Debug)]
pub(crate) struct PendingDelete {
    pub waiter: Waiter,
    /// (group, error) in request order.
    pub results: Vec<(String, i16)>,
    pub outstanding: usize,
}

impl Io {
    fn new(seed: u64) -> Io {
        Io {
            effects: Vec::new(),
            timers: Timers::default(),
            appends: BTreeMap::new(),
            next_append: 0,
            deletes: BTreeMap::new(),
            next_delete: 0,
            seed,
            member_ids_issued: 0,
        }
    }

    pub fn respond(&mut self, waiter: Waiter, response: ResponseKind) {
        self.effects.push(Effect::Respond { waiter, response });
    }

    pub fn append(&mut self, partition: i32, records: Vec<OffsetsRecord>, purpose: Purpose) -> AppendId {
        assert!(!records.is_empty(), "an append carries records");
        let id = AppendId(self.next_append);
        self.next_append += 1;
        self.effects.push(Effect::Append {
            partition,
            id,
            records,
        });
        self.appends.insert(id, PendingAppend { partition, purpose });
        id
    }

    pub fn new_delete(&mut self, delete: PendingDelete) -> u64 {
        let id = self.next_delete;
        self.next_delete += 1;
        self.deletes.insert(id, delete);
        id
    }

    /// A fresh member id `prefix-<uuid>` unused in `group`. The uuid comes from the seed
    /// and a counter (SplitMix64), so runs replay; the seed must differ per incarnation.
    pub fn new_member_id(&mut self, prefix: &str, group: &ClassicGroup) -> String {
        for _ in 0..MEMBER_ID_TRIES_MAX {
            self.member_ids_issued += 1;
            let n = self.member_ids_issued;
            let hi = splitmix64(self.seed ^ splitmix64(n.wrapping_mul(2)));
            let lo = splitmix64(self.seed ^ splitmix64(n.wrapping_mul(2) + 1));
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&hi.to_be_bytes());
            bytes[8..].copy_from_slice(&lo.to_be_bytes());
            let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
            let id = format!("{prefix}-{}", uuid.hyphenated());
            if !group.members.contains_key(&id) && !group.pending_members.contains(&id) {
                return id;
            }
        }
        panic!("member id generator repeats itself: the seed was reused");
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a handler works with: configuration, the effects sink and timers, and the time.
pub(crate) struct Cx<'a> {
    pub cfg: &'a GroupConfig,
    pub io: &'a mut Io,
    pub now: Time,
}

impl Cx<'_> {
    pub fn respond(&mut self, waiter: Waiter, response: ResponseKind) {
        self.io.respond(waiter, response);
    }

    /// Sets `key` to fire `delay_ms` from now, and at least 1 ms from now.
    pub fn schedule(&mut self, key: TimerKey, delay_ms: u64) {
        let at = self.now.mono_ms.saturating_add(delay_ms.max(1));
        self.io.timers.schedule(key, at);
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        self.io.timers.cancel(key);
    }

    pub fn wall_ms(&self) -> i64 {
        self.now.wall_ms
    }
}

impl GroupCoordinator {
    /// A coordinator serving no partition yet. `seed` feeds member-id generation and must
    /// differ between incarnations of the node (e.g. drawn from the engine's seeded RNG).
    pub fn new(config: GroupConfig, seed: u64) -> GroupCoordinator {
        assert!(
            config.offsets_topic_partitions > 0,
            "offsets.topic.num.partitions must be positive"
        );
        assert!(
            config.session_timeout_ms_min <= config.session_timeout_ms_max,
            "group.min.session.timeout.ms above the max"
        );
        GroupCoordinator {
            config,
            shards: BTreeMap::new(),
            io: Io::new(seed),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Sets `offsets.topic.num.partitions` (e.g. to the topic's actual partition count).
    /// Groups route by it, so a change unloads every partition (parked requests get
    /// NOT_COORDINATOR) and the caller loads its partitions again.
    pub fn set_offsets_topic_partitions(&mut self, partitions: u32) {
        assert!(partitions > 0, "offsets.topic.num.partitions must be positive");
        if partitions == self.config.offsets_topic_partitions {
            return;
        }
        let loaded: Vec<i32> = self.shards.keys().copied().collect();
        for p in loaded {
            self.unload(p);
        }
        self.config.offsets_topic_partitions = partitions;
    }

    /// The partition of `__consumer_offsets` that owns `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.config.offsets_topic_partitions)
    }

    /// Effects produced since the last call, in order.
    pub fn drain_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.io.effects)
    }

    /// When [`GroupCoordinator::tick`] next has work (monotonic ms).
    pub fn next_deadline(&self) -> Option<u64> {
        self.io.timers.next_deadline()
    }

    /// Whether `partition` is served (loaded).
    pub fn is_active(&self, partition: i32) -> bool {
        matches!(self.shards.get(&partition), Some(Shard::Active(_)))
    }

    /// This node became leader of `partition` and is about to replay it: its groups answer
    /// COORDINATOR_LOAD_IN_PROGRESS until [`GroupCoordinator::load`].
    pub fn begin_load(&mut self, partition: i32) {
        if self.is_active(partition) {
            self.unload(partition);
        }
        self.shards.insert(partition, Shard::Loading);
    }

    /// Replays `partition` (its committed records, in log order: last write wins,
    /// tombstones delete) and starts serving its groups. Members get a full session from
    /// `now`. Records of other types, undecodable ones and groups that belong to another
    /// partition are skipped (and counted).
    pub fn load(
        &mut self,
        now: Time,
        partition: i32,
        records: impl IntoIterator<Item = OffsetsRecord>,
    ) -> LoadSummary {
        if self.is_active(partition) {
            self.unload(partition);
        }
        let mut summary = LoadSummary::default();
        let mut metadata = BTreeMap::new();
        let mut offsets: BTreeMap<String, BTreeMap<TopicPartition, OffsetCommitValue>> = BTreeMap::new();
        for (key, value) in records {
            summary.records += 1;
            let record = match records::decode_record(&key, value.as_deref()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "skipping an undecodable __consumer_offsets record");
                    summary.skipped += 1;
                    continue;
                }
            };
            match record {
                Record::Group { group, value } => match value {
                    Some(v) => {
                        metadata.insert(group, v);
                    }
                    None => {
                        metadata.remove(&group);
                    }
                },
                Record::Offset {
                    group,
                    topic,
                    partition: p,
                    value,
                } => match value {
                    Some(v) => {
                        offsets.entry(group).or_default().insert((topic, p), v);
                    }
                    None => {
                        if let Some(o) = offsets.get_mut(&group) {
                            o.remove(&(topic, p));
                        }
                    }
                },
                Record::Other { .. } => summary.skipped += 1,
            }
        }
        let shard = self.build_shard(now, partition, metadata, offsets, &mut summary);
        summary.groups = shard.groups.len();
        summary.offsets = shard.groups.values().map(|g| g.offsets.len()).sum();
        self.shards.insert(partition, Shard::Active(shard));
        let interval_ms = self.config.offsets_retention_check_interval_ms;
        let mut cx = Cx {
            cfg: &self.config,
            io: &mut self.io,
            now,
        };
        cx.schedule(TimerKey::Sweep { partition }, interval_ms);
        tracing::info!(partition, ?summary, "loaded __consumer_offsets partition");
        self.check();
        summary
    }

    fn build_shard(
        &mut self,
        now: Time,
        partition: i32,
        metadata: BTreeMap<String, records::GroupMetadataValue>,
        mut offsets: BTreeMap<String, BTreeMap<TopicPartition, OffsetCommitValue>>,
        summary: &mut LoadSummary,
    ) -> ActiveShard {
        offsets.retain(|_, o| !o.is_empty());
        let mut shard = ActiveShard::default();
        let mut ids: Vec<String> = metadata.keys().chain(offsets.keys()).cloned().collect();
        ids.sort();
        ids.dedup();
        let mut metadata = metadata;
        for id in ids {
            if self.partition_for(&id) != partition {
                tracing::warn!(partition, group = %id, "skipping a group of another partition");
                summary.skipped += 1;
                continue;
            }
            let mut group = match metadata.remove(&id) {
                Some(v) => ClassicGroup::from_record(&id, partition, v),
                None => ClassicGroup::new(&id, partition, now.wall_ms),
            };
            group.offsets = offsets.remove(&id).unwrap_or_default();
            for m in group.members.values() {
                let key = TimerKey::Heartbeat {
                    group: id.clone(),
                    member: m.id.clone(),
                };
                let at = now.mono_ms.saturating_add(m.session_timeout_ms().max(1));
                self.io.timers.schedule(key, at);
            }
            shard.groups.insert(id, group);
        }
        shard
    }

    /// This node no longer leads `partition`: its groups are dropped, and every request
    /// parked on them (joins, syncs, writes) is answered NOT_COORDINATOR.
    pub fn unload(&mut self, partition: i32) {
        let Some(shard) = self.shards.remove(&partition) else {
            return;
        };
        let ids: Vec<AppendId> = self
            .io
            .appends
            .iter()
            .filter(|(_, a)| a.partition == partition)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let pending = self.io.appends.remove(&id).expect("listed above");
            self.abandon_append(pending.purpose);
        }
        if let Shard::Active(shard) = shard {
            for group in shard.groups.values() {
                for m in group.members.values() {
                    if let Some(p) = m.awaiting_join {
                        let r = respond::join_error(p.version, &m.id, code::NOT_COORDINATOR);
                        self.io.respond(p.waiter, r);
                    }
                    if let Some(p) = m.awaiting_sync {
                        self.io
                            .respond(p.waiter, respond::sync_error(code::NOT_COORDINATOR));
                    }
                }
            }
        }
        let n = self.config.offsets_topic_partitions;
        self.io.timers.cancel_where(|k| match k {
            TimerKey::Sweep { partition: p } => *p == partition,
            k => k.group().is_some_and(|g| partition_for(g, n) == partition),
        });
        tracing::info!(partition, "unloaded __consumer_offsets partition");
    }

    /// Answers the request waiting on an append whose partition was unloaded.
    fn abandon_append(&mut self, purpose: Purpose) {
        match purpose {
            Purpose::OffsetCommit {
                waiter, mut response, ..
            } => {
                respond::commit_replace_errors(&mut response, code::NONE, code::NOT_COORDINATOR);
                self.io.respond(waiter, ResponseKind::OffsetCommit(response));
            }
            Purpose::OffsetDelete { waiter, .. } => {
                let mut r = OffsetDeleteResponse::default();
                r.error_code = code::NOT_COORDINATOR;
                self.io.respond(waiter, ResponseKind::OffsetDelete(r));
            }
            Purpose::Tombstones {
                groups,
                delete: Some(req),
                ..
            } => self.delete_groups_done(req, &groups, code::NOT_COORDINATOR),
            // Their requests are parked in members, answered with the groups.
            Purpose::Tombstones { .. }
            | Purpose::GroupSync { .. }
            | Purpose::StaticRejoin(_)
            | Purpose::GroupEmpty => {}
        }
    }

    /// Serves one request; its answer comes now or later as an [`Effect::Respond`] for
    /// `ctx.waiter`.
    pub fn handle(&mut self, now: Time, ctx: RequestCtx, request: GroupRequest) {
        match request {
            GroupRequest::JoinGroup(r) => self.join_group(now, &ctx, r),
            GroupRequest::SyncGroup(r) => self.sync_group(now, &ctx, r),
            GroupRequest::Heartbeat(r) => self.heartbeat(now, &ctx, r),
            GroupRequest::LeaveGroup(r) => self.leave_group(now, &ctx, r),
            GroupRequest::OffsetCommit(r) => self.offset_commit(now, &ctx, r),
            GroupRequest::OffsetFetch(r) => self.offset_fetch(&ctx, r),
            GroupRequest::DescribeGroups(r) => self.describe_groups(&ctx, r),
            GroupRequest::ListGroups(r) => self.list_groups(&ctx, r),
            GroupRequest::DeleteGroups(r) => self.delete_groups(now, &ctx, r),
            GroupRequest::OffsetDelete(r) => self.offset_delete(now, &ctx, r),
        }
        self.check();
    }

    /// Fires every timer due at `now`: session expiry, join and sync deadlines (rebalance
    /// timeout, initial delay), KIP-394 pending members, retention sweeps.
    pub fn tick(&mut self, now: Time) {
        for _ in 0..TICK_TIMERS_MAX {
            let Some(key) = self.io.timers.pop_due(now.mono_ms) else {
                break;
            };
            match key {
                TimerKey::Heartbeat { group, member } => self.on_heartbeat_timer(now, &group, &member),
                TimerKey::Join { group } => self.on_join_timer(now, &group),
                TimerKey::Sync { group } => self.on_sync_timer(now, &group),
                TimerKey::Sweep { partition } => self.sweep(now, partition),
            }
        }
        self.check();
    }

    /// Append `id` finished: `Ok(offset)` once committed (replicated), or `Err(code)` with
    /// the partition's produce error. Appends of one partition must be reported in log order.
    pub fn appended(&mut self, now: Time, id: AppendId, result: Result<u64, i16>) {
        let Some(pending) = self.io.appends.remove(&id) else {
            // Settled by an unload already; an id never issued is the caller's bug.
            assert!(
                id.0 < self.io.next_append,
                "completion of append {id:?}, never issued"
            );
            return;
        };
        let Some(Shard::Active(shard)) = self.shards.get_mut(&pending.partition) else {
            unreachable!("an unloaded partition has no pending appends");
        };
        match result {
            Ok(offset) => {
                if let Some(last) = shard.last_acked_offset {
                    // Equal offsets: appends the caller wrote as one batch.
                    assert!(offset >= last, "appends acknowledged out of log order");
                }
                shard.last_acked_offset = Some(offset);
                self.append_done(now, pending.partition, pending.purpose, code::NONE);
            }
            Err(e) => {
                assert_ne!(e, code::NONE, "a failed append carries an error");
                let error = code::append_error_to_client(e);
                tracing::debug!(partition = pending.partition, e, error, "append failed");
                self.append_done(now, pending.partition, pending.purpose, error);
            }
        }
        self.check();
    }

    fn append_done(&mut self, now: Time, partition: i32, purpose: Purpose, error: i16) {
        match purpose {
            Purpose::OffsetCommit {
                waiter,
                group,
                response,
                offsets,
            } => self.commit_written(now, partition, waiter, &group, response, offsets, error),
            Purpose::OffsetDelete {
                waiter,
                group,
                response,
                offsets,
            } => self.offset_delete_written(partition, waiter, &group, response, offsets, error),
            Purpose::Tombstones {
                groups,
                offsets,
                delete,
                sweep,
            } => self.tombstones_written(now, partition, groups, offsets, delete, sweep, error),
            Purpose::GroupSync {
                group,
                generation,
                assignment,
            } => self.group_sync_written(now, partition, &group, generation, assignment, error),
            Purpose::StaticRejoin(s) => self.static_rejoin_written(now, partition, s, error),
            Purpose::GroupEmpty => {
                if error != code::NONE {
                    // As Kafka: the next rebalance writes the group again.
                    tracing::warn!(partition, error, "writing an empty group failed");
                }
            }
        }
    }

    /// Where `group_id` is served: its partition, or the error to answer.
    pub(crate) fn route(&self, group_id: &str) -> Result<i32, i16> {
        let partition = self.partition_for(group_id);
        match self.shards.get(&partition) {
            None => Err(code::NOT_COORDINATOR),
            Some(Shard::Loading) => Err(code::COORDINATOR_LOAD_IN_PROGRESS),
            Some(Shard::Active(_)) => Ok(partition),
        }
    }

    /// The error a request naming `group_id` gets before its group is looked at: an empty
    /// id (INVALID_GROUP_ID), or a partition this node does not serve (yet).
    pub(crate) fn named_route_error(&self, group_id: &str) -> Option<i16> {
        if group_id.is_empty() {
            return Some(code::INVALID_GROUP_ID);
        }
        self.route(group_id).err()
    }

    /// The handler context and the shard serving `partition`, if active.
    pub(crate) fn split(&mut self, now: Time, partition: i32) -> Option<(Cx<'_>, &mut ActiveShard)> {
        let GroupCoordinator { config, shards, io } = self;
        match shards.get_mut(&partition) {
            Some(Shard::Active(shard)) => Some((Cx { cfg: config, io, now }, shard)),
            _ => None,
        }
    }

    /// The handler context and `group_id`'s group, if it is served and exists.
    pub(crate) fn group_mut(&mut self, now: Time, group_id: &str) -> Option<(Cx<'_>, &mut ClassicGroup)> {
        let partition = self.partition_for(group_id);
        let (cx, shard) = self.split(now, partition)?;
        let group = shard.groups.get_mut(group_id)?;
        Some((cx, group))
    }

    /// Checks every group's invariants: O(members), so only in debug builds.
    fn check(&self) {
        if cfg!(debug_assertions) {
            for (&p, shard) in &self.shards {
                if let Shard::Active(shard) = shard {
                    for (id, g) in &shard.groups {
                        assert_eq!(&g.id, id);
                        assert_eq!(g.partition, p);
                        g.check();
                    }
                }
            }
        }
    }

    /// The group, for tests and the engine's introspection.
    #[cfg(test)]
    pub(crate) fn group(&self, group_id: &str) -> Option<&ClassicGroup> {
        match self.shards.get(&self.partition_for(group_id))? {
            Shard::Active(s) => s.groups.get(group_id),
            Shard::Loading => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn timers_len(&self) -> usize {
        self.io.timers.len()
    }

    #[cfg(test)]
    pub(crate) fn timer_deadline(&self, key: &TimerKey) -> Option<u64> {
        self.io.timers.deadline(key)
    }
}
