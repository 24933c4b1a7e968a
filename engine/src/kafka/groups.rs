//! The glue between the Kafka layer and the group coordinator ([`crate::group`]): group
//! requests are parked and handed to the coordinator; its appends go to the
//! `__consumer_offsets` partitions this node leads and are reported back once committed
//! (the high watermark passes them) or failed; a partition is loaded (replayed from its log
//! start to its leader no-op) once this node leads it and the no-op is committed, and
//! unloaded when leadership is lost or the partition goes.
//!
//! Invariants: an append is reported to the coordinator exactly once (committed, failed, or
//! dropped by an unload first); a load belongs to one leader term and is discarded if the
//! term or the leadership changes before it finishes; the coordinator serves a partition
//! only while this node's replica of it leads.
//!
//! Departures from Kafka: `__consumer_offsets` gets `offsets.topic.replication.factor`
//! replicas capped at the registered brokers (Kafka refuses to create it with fewer brokers
//! and answers COORDINATOR_NOT_AVAILABLE until there are enough), so a single node works
//! without configuration; the client host of a member is not known to the engine (the
//! shell does not pass peer addresses) and is reported as empty.

use std::collections::BTreeMap;

use super::{code, Ctx, PendingBody};
use crate::batch::{self, BatchView, RecordSpec};
use crate::engine::{Engine, ReadFor};
use crate::group::{AppendId, Effect, GroupRequest, OffsetsRecord, RequestCtx, Waiter};
use crate::log::partition::LogId;
use crate::log::read::{ReadGoal, ReadJob, ReadOutcome};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// Kafka's internal topic of group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct GroupGlue {
    /// Appends in flight: (log, last offset of the batch) → (partition, append).
    appends: BTreeMap<(LogId, u64), (i32, AppendId)>,
    /// Partitions being replayed.
    loads: BTreeMap<i32, Load>,
    /// OffsetCommits that named partitions the cluster does not have: those partitions,
    /// answered UNKNOWN_TOPIC_OR_PARTITION beside the coordinator's answer.
    unknown_commits: BTreeMap<Waiter, Vec<(StrBytes, i32)>>,
}

#[derive(Debug)]
struct Load {
    log: LogId,
    /// The leader term the load belongs to.
    term: i32,
    /// Replay up to here: the end of the leader's no-op (everything below is committed).
    limit: u64,
    /// The next offset to read.
    next: u64,
    records: Vec<OffsetsRecord>,
    reading: bool,
    /// The no-op is committed and the replay under way.
    started: bool,
}

impl Engine {
    /// A group request: parked, and answered when the coordinator says.
    pub(crate) fn handle_group_request(&mut self, ctx: Ctx, client_id: String, mut req: GroupRequest) {
        let version = ctx.version;
        let waiter = self.park(ctx, PendingBody::Group);
        if matches!(req, GroupRequest::ListGroups(_)) && self.offsets_elections_open() {
            // Some of this node's groups may be about to load here: a partial list would
            // look complete.
            let r = ListGroupsResponse::default()
                .with_error_code(crate::group::code::COORDINATOR_LOAD_IN_PROGRESS);
            self.finish(waiter, Some(ResponseKind::ListGroups(r)));
            return;
        }
        if let GroupRequest::OffsetCommit(r) = &mut req {
            let unknown = self.take_unknown_partitions(r);
            if !unknown.is_empty() {
                self.group_glue.unknown_commits.insert(waiter, unknown);
            }
        }
        let rctx = RequestCtx {
            waiter,
            version,
            client_id,
            client_host: String::new(),
        };
        self.groups.handle(self.now, rctx, req);
        self.drain_group_effects();
    }

    /// Carries out what the coordinator asked for (answers and appends) until it asks for
    /// nothing more.
    pub(crate) fn drain_group_effects(&mut self) {
        loop {
            let effects = self.groups.drain_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Respond { waiter, mut response } => {
                        if let Some(unknown) = self.group_glue.unknown_commits.remove(&waiter) {
                            if let ResponseKind::OffsetCommit(r) = &mut response {
                                add_unknown_partitions(r, unknown);
                            }
                        }
                        self.finish(waiter, Some(response))
                    }
                    Effect::Append {
                        partition,
                        id,
                        records,
                    } => self.group_append(partition, id, records),
                }
            }
        }
    }

    /// Removes from `req` the partitions the cluster does not have (Kafka answers them
    /// UNKNOWN_TOPIC_OR_PARTITION and commits the others) and returns them.
    fn take_unknown_partitions(&self, req: &mut OffsetCommitRequest) -> Vec<(StrBytes, i32)> {
        let mut unknown = Vec::new();
        for t in &mut req.topics {
            let count = self
                .image
                .topics
                .get(t.name.as_str())
                .map_or(0, |info| info.partitions.len());
            t.partitions.retain(|p| {
                let known = usize::try_from(p.partition_index).is_ok_and(|i| i < count);
                if !known {
                    unknown.push((t.name.0.clone(), p.partition_index));
                }
                known
            });
        }
        req.topics.retain(|t| !t.partitions.is_empty());
        unknown
    }

    /// A `__consumer_offsets` replica here knows no leader for its current term yet (a
    /// start, a failover): which groups this node coordinates is still open.
    fn offsets_elections_open(&self) -> bool {
        let Some(t) = self.image.topics.get(OFFSETS_TOPIC) else {
            return false;
        };
        (0..t.partitions.len()).any(|p| {
            let Some(log) = i32::try_from(p).ok().and_then(|p| self.offsets_log(p)) else {
                return false;
            };
            self.replica_of(log).is_some_and(|r| r.raft.leader().is_none())
        })
    }

    fn offsets_log(&self, partition: i32) -> Option<LogId> {
        self.partitions
            .get(&(OFFSETS_TOPIC.to_string(), partition))
            .copied()
    }

    /// The `__consumer_offsets` partition `log` holds, if it is one.
    fn offsets_partition_of(&self, log: LogId) -> Option<i32> {
        let group = self.group_of_log.get(&log)?;
        (self.topic_by_id(group.topic_id)? == OFFSETS_TOPIC).then_some(group.partition)
    }

    fn group_append(&mut self, partition: i32, id: AppendId, records: Vec<OffsetsRecord>) {
        let now = self.now;
        let wall = now.wall_ms;
        let Some(log_id) = self.offsets_log(partition) else {
            self.groups.appended(now, id, Err(code::NOT_LEADER_OR_FOLLOWER));
            return;
        };
        let specs: Vec<RecordSpec> = records
            .into_iter()
            .map(|(key, value)| RecordSpec {
                key: Some(key),
                value,
                headers: Vec::new(),
                timestamp_ms: wall,
            })
            .collect();
        if specs.is_empty() {
            // Nothing to write: committed as it stands.
            let end = self.logs.get(&log_id).map_or(0, |l| l.high_watermark());
            self.groups.appended(now, id, Ok(end.saturating_sub(1)));
            return;
        }
        let batch = batch::build_batch(&specs);
        let Some(log) = self.logs.get_mut(&log_id) else {
            self.groups.appended(now, id, Err(code::NOT_LEADER_OR_FOLLOWER));
            return;
        };
        if !log.is_leader {
            self.groups.appended(now, id, Err(code::NOT_LEADER_OR_FOLLOWER));
            return;
        }
        match log.append_own(&mut self.q, &batch, wall) {
            Ok((_, last)) => {
                self.group_glue.appends.insert((log_id, last), (partition, id));
                self.replica_log_changed(log_id);
            }
            Err(err) => {
                tracing::warn!(partition, ?err, "__consumer_offsets refused an append");
                self.groups.appended(now, id, Err(code::KAFKA_STORAGE_ERROR));
            }
        }
    }

    /// `log`'s high watermark may have moved: report committed appends, and start loading
    /// a `__consumer_offsets` partition whose leader no-op just committed.
    pub(crate) fn groups_log_advanced(&mut self, log_id: LogId) {
        let Some(log) = self.logs.get(&log_id) else { return };
        let hw = log.high_watermark();
        let done: Vec<((LogId, u64), (i32, AppendId))> = self
            .group_glue
            .appends
            .range((log_id, 0)..(log_id, hw))
            .map(|(k, v)| (*k, *v))
            .collect();
        for (key, (_, id)) in done {
            self.group_glue.appends.remove(&key);
            self.groups.appended(self.now, id, Ok(key.1));
        }
        self.maybe_load_offsets(log_id);
        self.drain_group_effects();
    }

    fn maybe_load_offsets(&mut self, log_id: LogId) {
        let Some(partition) = self.offsets_partition_of(log_id) else {
            return;
        };
        let Some(log) = self.logs.get(&log_id) else { return };
        if !log.is_leader || log.serving_from == u64::MAX {
            return;
        }
        // From the election on, the group's requests answer COORDINATOR_LOAD_IN_PROGRESS
        // (FindCoordinator names this node as soon as it leads); the replay starts once
        // the no-op is committed, so it reads only committed records.
        let committed = log.high_watermark() >= log.serving_from;
        let term = log.leader_epoch;
        if let Some(load) = self
            .group_glue
            .loads
            .get_mut(&partition)
            .filter(|l| l.term == term)
        {
            if committed && !load.started {
                load.started = true;
                self.group_load_step(partition);
            }
            return;
        }
        if self.groups.is_active(partition) {
            return;
        }
        // The topic's partition count decides where groups live, whatever the config
        // says now (the key only matters when the topic is created).
        if let Some(t) = self.image.topics.get(OFFSETS_TOPIC) {
            if let Ok(n) = u32::try_from(t.partitions.len()) {
                if n > 0 && n != self.groups.config().offsets_topic_partitions {
                    self.groups.set_offsets_topic_partitions(n);
                }
            }
        }
        tracing::info!(
            partition,
            term,
            end = log.serving_from,
            "loading __consumer_offsets partition"
        );
        self.groups.begin_load(partition);
        self.group_glue.loads.insert(
            partition,
            Load {
                log: log_id,
                term,
                limit: log.serving_from,
                next: log.log_start_offset,
                records: Vec::new(),
                reading: false,
                started: committed,
            },
        );
        self.group_load_step(partition);
    }

    /// Reads the next stretch of a partition being loaded, or finishes the load.
    fn group_load_step(&mut self, partition: i32) {
        let Some(load) = self.group_glue.loads.get_mut(&partition) else {
            return;
        };
        if load.reading || !load.started {
            return;
        }
        if load.next >= load.limit {
            let Some(load) = self.group_glue.loads.remove(&partition) else {
                return;
            };
            let summary = self.groups.load(self.now, partition, load.records);
            tracing::info!(partition, ?summary, "loaded __consumer_offsets partition");
            self.drain_group_effects();
            return;
        }
        load.reading = true;
        let (log, term, offset, limit) = (load.log, load.term, load.next, load.limit);
        let goal = ReadGoal::Fetch {
            offset,
            max_bytes: LOAD_READ_BYTES,
        };
        self.start_read_for(
            log,
            |l| ReadJob::start(l, goal, limit, false),
            ReadFor::GroupLoad { partition, term },
        );
    }

    pub(crate) fn group_load_read_done(&mut self, partition: i32, term: i32, outcome: ReadOutcome) {
        let Some(load) = self
            .group_glue
            .loads
            .get_mut(&partition)
            .filter(|l| l.term == term)
        else {
            return; // leadership moved on; a new load (if any) reads for itself
        };
        load.reading = false;
        match outcome {
            ReadOutcome::Batches { batches, .. } if !batches.is_empty() => {
                for bytes in batches {
                    let view = match BatchView::parse_unchecked_crc(&bytes) {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!(partition, error = %e, "a stored __consumer_offsets batch does not parse; retrying the load");
                            return;
                        }
                    };
                    let last = u64::try_from(view.last_offset()).unwrap_or(0);
                    if last < load.next || view.is_control() {
                        load.next = load.next.max(last + 1);
                        continue;
                    }
                    match batch::iter_records(&view) {
                        Ok(records) => {
                            for record in records.flatten() {
                                let offset = u64::try_from(record.offset).unwrap_or(0);
                                if offset < load.next || offset >= load.limit {
                                    continue;
                                }
                                if let Some(key) = record.key {
                                    load.records.push((key, record.value));
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(partition, error = %e, "skipping an undecodable __consumer_offsets batch")
                        }
                    }
                    load.next = last + 1;
                }
                self.group_load_step(partition);
            }
            ReadOutcome::Batches { .. } => {
                tracing::warn!(
                    partition,
                    next = load.next,
                    "reading __consumer_offsets returned nothing; retrying at the next tick"
                )
            }
            ReadOutcome::Failed(why) => {
                tracing::warn!(partition, %why, "reading __consumer_offsets failed; retrying at the next tick")
            }
            ReadOutcome::Found(_) => {}
        }
    }

    /// `log` will not commit what this node appended to it (leadership lost, the log
    /// failed from `from`, or the partition is gone): fail those appends, and unload the
    /// partition's groups unless only a write failed.
    pub(crate) fn groups_log_lost(&mut self, log_id: LogId, from: u64, error: i16, unload: bool) {
        let failed: Vec<((LogId, u64), (i32, AppendId))> = self
            .group_glue
            .appends
            .range((log_id, from)..=(log_id, u64::MAX))
            .map(|(k, v)| (*k, *v))
            .collect();
        for (key, (_, id)) in failed {
            self.group_glue.appends.remove(&key);
            self.groups.appended(self.now, id, Err(error));
        }
        if unload {
            let partition = self.offsets_partition_of(log_id).or_else(|| {
                self.group_glue
                    .loads
                    .iter()
                    .find(|(_, l)| l.log == log_id)
                    .map(|(p, _)| *p)
            });
            if let Some(partition) = partition {
                self.group_glue.loads.remove(&partition);
                self.groups.unload(partition);
            }
        }
        self.drain_group_effects();
    }

    /// Time passed: the coordinator's timers, and loads whose read failed.
    pub(crate) fn groups_tick(&mut self) {
        if self
            .groups
            .next_deadline()
            .is_some_and(|at| at <= self.now.mono_ms)
        {
            self.groups.tick(self.now);
        }
        let stalled: Vec<i32> = self
            .group_glue
            .loads
            .iter()
            .filter(|(_, l)| l.started && !l.reading)
            .map(|(p, _)| *p)
            .collect();
        for p in stalled {
            self.group_load_step(p);
        }
        self.drain_group_effects();
    }

    /// When the group layer next needs a tick.
    pub(crate) fn groups_deadline(&self) -> Option<u64> {
        let stalled = self.group_glue.loads.values().any(|l| l.started && !l.reading);
        let retry = stalled.then(|| self.now.mono_ms + 100);
        match (self.groups.next_deadline(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// FindCoordinator for a group: the leader of its `__consumer_offsets` partition, as
    /// `(node, host, port)`; the error when there is none yet (the topic is created on
    /// first use).
    pub(crate) fn group_coordinator_of(&mut self, group: &str) -> Result<(i32, String, i32), i16> {
        let Some(topic) = self.image.topics.get(OFFSETS_TOPIC) else {
            self.auto_create_topic(OFFSETS_TOPIC);
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        };
        let n = u32::try_from(topic.partitions.len()).unwrap_or(0);
        if n == 0 {
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        }
        let partition = crate::group::partition_for(group, n);
        let published = topic
            .partitions
            .get(usize::try_from(partition).unwrap_or(0))
            .and_then(|p| p.leader.map(|l| (l, p.leader_epoch)));
        let Some((leader, _)) = self.partition_leader(OFFSETS_TOPIC, partition, published) else {
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        };
        if leader == self.config.node_id {
            return Ok((
                leader,
                self.config.advertised_host.clone(),
                self.config.advertised_port,
            ));
        }
        match self.image.brokers.get(&leader) {
            Some(b) => Ok((leader, b.host.clone(), b.port)),
            None => Err(code::COORDINATOR_NOT_AVAILABLE),
        }
    }
}

/// Adds UNKNOWN_TOPIC_OR_PARTITION answers for `unknown` partitions to an OffsetCommit answer.
fn add_unknown_partitions(r: &mut OffsetCommitResponse, unknown: Vec<(StrBytes, i32)>) {
    for (name, partition) in unknown {
        let answer = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
        match r.topics.iter_mut().find(|t| t.name.0 == name) {
            Some(t) => t.partitions.push(answer),
            None => r.topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(name))
                    .with_partitions(vec![answer]),
            ),
        }
    }
}
