//! Committed offsets: OffsetCommit (member and generation checks, simple commits by groups
//! without members), OffsetFetch (single group v1–7, many groups v8+), OffsetDelete, and
//! the retention sweep (`offsets.retention.minutes`) that writes tombstones for expired
//! offsets and for Empty groups left without any.
//!
//! Invariant: a group's `offsets` change only when an append is acknowledged, exactly as
//! replaying that append would change them, so they always equal the committed log's.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, ResponseKind, TopicName,
};

use super::classic::{ClassicGroup, GroupState, TopicPartition};
use super::coordinator::{Cx, Purpose};
use super::records::{encode_group_key, encode_offset_key, encode_offset_value, OffsetCommitValue};
use super::respond::{self, sb};
use super::timers::TimerKey;
use super::{code, GroupCoordinator, OffsetsRecord, RequestCtx, Waiter};
use crate::Time;

/// The most tombstones one retention sweep writes for a partition; the rest wait for the
/// next sweep.
const SWEEP_RECORDS_MAX: usize = 10_000;

/// `retention_time_ms` when the client leaves retention to the broker.
const DEFAULT_RETENTION_TIME_MS: i64 = -1;

/// The topics of a fetch: `None` for "all the group has".
type FetchTopics = Option<Vec<(String, Vec<i32>)>>;

/// One topic's fetched offsets: (topic, per partition the offset, if committed).
type FetchedTopic<'a> = (String, Vec<(i32, Option<&'a OffsetCommitValue>)>);

/// A group's fetched offsets: (error, per topic).
type Fetched<'a> = (i16, Vec<FetchedTopic<'a>>);

impl GroupCoordinator {
    pub(super) fn offset_commit(&mut self, now: Time, ctx: &RequestCtx, req: OffsetCommitRequest) {
        let group_id = req.group_id.as_str();
        let early = self.named_route_error(group_id);
        if let Some(error) = early {
            let r = respond::commit_all(&req, error);
            return self.io.respond(ctx.waiter, ResponseKind::OffsetCommit(r));
        }
        let partition = self.partition_for(group_id);
        let (mut cx, shard) = self.split(now, partition).expect("routed to an active shard");
        if !shard.groups.contains_key(group_id) {
            if req.generation_id_or_member_epoch >= 0 {
                // A member of a group this coordinator does not know.
                let error = if ctx.version >= 9 {
                    code::GROUP_ID_NOT_FOUND
                } else {
                    code::ILLEGAL_GENERATION
                };
                let r = respond::commit_all(&req, error);
                return cx.respond(ctx.waiter, ResponseKind::OffsetCommit(r));
            }
            // A simple consumer (or an admin) committing for a group without members.
            let group = ClassicGroup::new(group_id, partition, now.wall_ms);
            shard.groups.insert(group_id.to_string(), group);
        }
        let g = shard.groups.get_mut(group_id).expect("inserted above");
        cx.commit(g, ctx.waiter, req);
    }

    /// An offset commit's append finished: apply it (as its replay would) and answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit_written(
        &mut self,
        now: Time,
        partition: i32,
        waiter: Waiter,
        group_id: &str,
        mut response: OffsetCommitResponse,
        offsets: Vec<(TopicPartition, OffsetCommitValue)>,
        error: i16,
    ) {
        if error == code::NONE {
            if let Some((_, shard)) = self.split(now, partition) {
                let g = shard
                    .groups
                    .entry(group_id.to_string())
                    .or_insert_with(|| ClassicGroup::new(group_id, partition, now.wall_ms));
                g.offsets.extend(offsets);
            }
        } else {
            respond::commit_replace_errors(&mut response, code::NONE, error);
        }
        self.io.respond(waiter, ResponseKind::OffsetCommit(response));
    }

    pub(super) fn offset_fetch(&mut self, ctx: &RequestCtx, req: OffsetFetchRequest) {
        let mut r = OffsetFetchResponse::default();
        if ctx.version >= 8 {
            r.groups = req
                .groups
                .iter()
                .map(|rg| {
                    let topics: FetchTopics = rg.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                            .collect()
                    });
                    let (error, fetched) = self.fetch_group(rg.group_id.as_str(), &topics);
                    let mut group = OffsetFetchResponseGroup::default();
                    group.group_id = rg.group_id.clone();
                    group.error_code = error;
                    group.topics = fetched
                        .into_iter()
                        .map(|(name, ps)| topics_v8(name, ps))
                        .collect();
                    group
                })
                .collect();
        } else {
            let topics: FetchTopics = req.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let (error, fetched) = self.fetch_group(req.group_id.as_str(), &topics);
            // v1 has no top-level error: each partition carries it.
            let partition_error = if ctx.version < 2 { error } else { code::NONE };
            r.topics = fetched
                .into_iter()
                .map(|(name, ps)| topic_v1(name, ps, partition_error))
                .collect();
            if ctx.version < 2 && error != code::NONE {
                r.topics = topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, ps)| topic_v1(name, ps.into_iter().map(|p| (p, None)).collect(), error))
                    .collect();
            }
            if ctx.version >= 2 {
                r.error_code = error;
            }
        }
        self.io.respond(ctx.waiter, ResponseKind::OffsetFetch(r));
    }

    /// One group's committed offsets: all of them, or those of `topics` (-1 where none).
    fn fetch_group(&self, group_id: &str, topics: &FetchTopics) -> Fetched<'_> {
        if group_id.is_empty() {
            return (code::INVALID_GROUP_ID, Vec::new());
        }
        if let Err(e) = self.route(group_id) {
            return (e, Vec::new());
        }
        let group = self
            .shard_groups(self.partition_for(group_id))
            .and_then(|groups| groups.get(group_id))
            .filter(|g| !g.is(GroupState::Dead));
        let out = match (topics, group) {
            (None, None) => Vec::new(),
            (None, Some(g)) => {
                let mut out: Vec<FetchedTopic<'_>> = Vec::new();
                for ((topic, p), v) in &g.offsets {
                    match out.last_mut() {
                        Some((t, ps)) if t == topic => ps.push((*p, Some(v))),
                        _ => out.push((topic.clone(), vec![(*p, Some(v))])),
                    }
                }
                out
            }
            (Some(topics), g) => topics
                .iter()
                .map(|(topic, ps)| {
                    let found = ps
                        .iter()
                        .map(|&p| (p, g.and_then(|g| g.offsets.get(&(topic.clone(), p)))))
                        .collect();
                    (topic.clone(), found)
                })
                .collect(),
        };
        (code::NONE, out)
    }

    fn shard_groups(&self, partition: i32) -> Option<&std::collections::BTreeMap<String, ClassicGroup>> {
        match self.shards.get(&partition)? {
            super::coordinator::Shard::Active(s) => Some(&s.groups),
            super::coordinator::Shard::Loading => None,
        }
    }

    pub(super) fn offset_delete(&mut self, now: Time, ctx: &RequestCtx, req: OffsetDeleteRequest) {
        let group_id = req.group_id.as_str();
        let early = self.named_route_error(group_id);
        let error_response = |error: i16| {
            let mut r = OffsetDeleteResponse::default();
            r.error_code = error;
            ResponseKind::OffsetDelete(r)
        };
        if let Some(error) = early {
            return self.io.respond(ctx.waiter, error_response(error));
        }
        let Some((mut cx, g)) = self.group_mut(now, group_id) else {
            return self
                .io
                .respond(ctx.waiter, error_response(code::GROUP_ID_NOT_FOUND));
        };
        let error = match g.state {
            GroupState::Dead => Some(code::GROUP_ID_NOT_FOUND),
            GroupState::Stable | GroupState::PreparingRebalance | GroupState::CompletingRebalance
                if !g.uses_consumer_protocol() =>
            {
                Some(code::NON_EMPTY_GROUP)
            }
            _ => None,
        };
        if let Some(error) = error {
            return cx.respond(ctx.waiter, error_response(error));
        }
        let mut response = OffsetDeleteResponse::default();
        let mut gone: Vec<TopicPartition> = Vec::new();
        for t in &req.topics {
            let topic = t.name.to_string();
            let subscribed = g.is_subscribed_to(&topic);
            let mut rt = OffsetDeleteResponseTopic::default();
            rt.name = t.name.clone();
            for p in &t.partitions {
                let mut rp = OffsetDeleteResponsePartition::default();
                rp.partition_index = p.partition_index;
                if subscribed {
                    rp.error_code = code::GROUP_SUBSCRIBED_TO_TOPIC;
                } else if g.offsets.contains_key(&(topic.clone(), p.partition_index)) {
                    gone.push((topic.clone(), p.partition_index));
                }
                rt.partitions.push(rp);
            }
            response.topics.push(rt);
        }
        if gone.is_empty() {
            return cx.respond(ctx.waiter, ResponseKind::OffsetDelete(response));
        }
        let records = gone
            .iter()
            .map(|(t, p)| (encode_offset_key(&g.id, t, *p), None))
            .collect();
        let purpose = Purpose::OffsetDelete {
            waiter: ctx.waiter,
            group: g.id.clone(),
            response,
            offsets: gone,
        };
        cx.io.append(g.partition, records, purpose);
    }

    pub(super) fn offset_delete_written(
        &mut self,
        partition: i32,
        waiter: Waiter,
        group_id: &str,
        response: OffsetDeleteResponse,
        offsets: Vec<TopicPartition>,
        error: i16,
    ) {
        let response = if error == code::NONE {
            if let Some(super::coordinator::Shard::Active(shard)) = self.shards.get_mut(&partition) {
                if let Some(g) = shard.groups.get_mut(group_id) {
                    for tp in &offsets {
                        g.offsets.remove(tp);
                    }
                }
            }
            response
        } else {
            let mut r = OffsetDeleteResponse::default();
            r.error_code = error;
            r
        };
        self.io.respond(waiter, ResponseKind::OffsetDelete(response));
    }

    /// The retention sweep of `partition`: tombstones for expired offsets, and for Empty
    /// groups whose offsets have all expired (they turn Dead until the write lands).
    pub(super) fn sweep(&mut self, now: Time, partition: i32) {
        let Some((mut cx, shard)) = self.split(now, partition) else {
            return;
        };
        let interval_ms = cx.cfg.offsets_retention_check_interval_ms;
        cx.schedule(TimerKey::Sweep { partition }, interval_ms);
        if shard.sweep_in_flight {
            return;
        }
        let retention_ms = i64::try_from(cx.cfg.offsets_retention_ms).unwrap_or(i64::MAX);
        let mut records: Vec<OffsetsRecord> = Vec::new();
        let mut groups = Vec::new();
        let mut offsets = Vec::new();
        for g in shard.groups.values_mut() {
            if records.len() >= SWEEP_RECORDS_MAX {
                break;
            }
            let (expired, all_expired) = expired_offsets(g, now.wall_ms, retention_ms);
            for tp in expired {
                records.push((encode_offset_key(&g.id, &tp.0, tp.1), None));
                offsets.push((g.id.clone(), tp));
            }
            if all_expired && g.is(GroupState::Empty) {
                records.push((encode_group_key(&g.id), None));
                g.mark_deleting();
                groups.push(g.id.clone());
            }
        }
        if records.is_empty() {
            return;
        }
        tracing::info!(
            partition,
            groups = groups.len(),
            offsets = offsets.len(),
            "offsets expired"
        );
        shard.sweep_in_flight = true;
        let purpose = Purpose::Tombstones {
            groups,
            offsets,
            delete: None,
            sweep: true,
        };
        cx.io.append(partition, records, purpose);
    }

    /// Tombstones were written (or not): apply them as their replay would, or bring the
    /// groups that were to be deleted back to Empty.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tombstones_written(
        &mut self,
        now: Time,
        partition: i32,
        groups: Vec<String>,
        offsets: Vec<(String, TopicPartition)>,
        delete: Option<u64>,
        sweep: bool,
        error: i16,
    ) {
        if let Some((_, shard)) = self.split(now, partition) {
            if sweep {
                shard.sweep_in_flight = false;
            }
            if error == code::NONE {
                for (group_id, tp) in &offsets {
                    if let Some(g) = shard.groups.get_mut(group_id) {
                        g.offsets.remove(tp);
                    }
                }
                for group_id in &groups {
                    let Some(g) = shard.groups.get_mut(group_id) else {
                        continue;
                    };
                    if !g.is(GroupState::Dead) {
                        continue;
                    }
                    if g.offsets.is_empty() {
                        shard.groups.remove(group_id);
                    } else {
                        // Offsets committed while the deletion was in flight outlive it,
                        // as they do in a replay: the group goes on as a simple group.
                        let kept = std::mem::take(&mut g.offsets);
                        *g = ClassicGroup::new(group_id, partition, now.wall_ms);
                        g.offsets = kept;
                    }
                }
            } else {
                for group_id in &groups {
                    if let Some(g) = shard.groups.get_mut(group_id) {
                        if g.is(GroupState::Dead) {
                            g.unmark_deleting();
                        }
                    }
                }
            }
        }
        if let Some(req) = delete {
            self.delete_groups_done(req, &groups, error);
        }
    }
}

/// Offsets of `g` past retention (not those of topics it consumes), and whether that is
/// all of them (Kafka's `OffsetExpirationCondition`).
fn expired_offsets(g: &ClassicGroup, now_wall_ms: i64, retention_ms: i64) -> (Vec<TopicPartition>, bool) {
    let base_of_empty = g.state_since_wall_ms;
    let base: Box<dyn Fn(&OffsetCommitValue) -> i64> = match (&g.protocol_type, g.state) {
        // A simple group: from each commit.
        (None, _) => Box::new(|o| o.commit_timestamp_ms),
        // An empty group: from when it became empty.
        (Some(_), GroupState::Empty) => Box::new(move |o| base_of_empty.unwrap_or(o.commit_timestamp_ms)),
        // A stable consumer group: offsets of topics it no longer consumes.
        (Some(_), GroupState::Stable) if g.uses_consumer_protocol() && g.subscribed_topics.is_some() => {
            Box::new(|o| o.commit_timestamp_ms)
        }
        _ => return (Vec::new(), false),
    };
    let mut expired = Vec::new();
    let mut all = true;
    for (tp, o) in &g.offsets {
        let is_expired = !g.is_subscribed_to(&tp.0)
            && match o.expire_timestamp_ms {
                Some(at) => now_wall_ms >= at,
                None => now_wall_ms.saturating_sub(base(o)) >= retention_ms,
            };
        if is_expired {
            expired.push(tp.clone());
        } else {
            all = false;
        }
    }
    (expired, all)
}

impl Cx<'_> {
    fn commit(&mut self, g: &mut ClassicGroup, waiter: Waiter, req: OffsetCommitRequest) {
        if let Err(e) = validate_commit(g, &req) {
            let r = respond::commit_all(&req, e);
            return self.respond(waiter, ResponseKind::OffsetCommit(r));
        }
        // A commit keeps a member's session alive, as a heartbeat does.
        let member_id = req.member_id.as_str();
        if g.is(GroupState::Stable) || g.is(GroupState::PreparingRebalance) {
            self.reschedule_heartbeat(g, member_id);
        }
        let expire_timestamp_ms = (req.retention_time_ms != DEFAULT_RETENTION_TIME_MS)
            .then(|| self.now.wall_ms.saturating_add(req.retention_time_ms));
        let mut response = respond::commit_all(&req, code::NONE);
        let mut records = Vec::new();
        let mut offsets = Vec::new();
        // The growth rule of `__consumer_offsets` until compaction exists: a member's
        // commit that changes nothing (auto-commit of an idle consumer) is not written. Only
        // when nothing of the partition is in flight (a write still to be acknowledged could
        // change what is committed) and the group has members (an empty group's offsets
        // expire from their commit time, which a skipped write would not move).
        let may_skip = !g.members.is_empty() && !self.io.appends.values().any(|a| a.partition == g.partition);
        for (t, rt) in req.topics.iter().zip(response.topics.iter_mut()) {
            for (p, rp) in t.partitions.iter().zip(rt.partitions.iter_mut()) {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                if metadata.len() > self.cfg.offset_metadata_bytes_max {
                    rp.error_code = code::OFFSET_METADATA_TOO_LARGE;
                    continue;
                }
                let unchanged = g
                    .offsets
                    .get(&(t.name.to_string(), p.partition_index))
                    .is_some_and(|v| {
                        v.offset == p.committed_offset
                            && v.leader_epoch == p.committed_leader_epoch
                            && v.metadata == metadata
                            && v.expire_timestamp_ms.is_none()
                            && expire_timestamp_ms.is_none()
                    });
                if may_skip && unchanged {
                    continue;
                }
                let value = OffsetCommitValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: metadata.to_string(),
                    commit_timestamp_ms: self.now.wall_ms,
                    expire_timestamp_ms,
                };
                let key = encode_offset_key(&g.id, t.name.as_str(), p.partition_index);
                records.push((key, Some(encode_offset_value(&value))));
                offsets.push(((t.name.to_string(), p.partition_index), value));
            }
        }
        if records.is_empty() {
            return self.respond(waiter, ResponseKind::OffsetCommit(response));
        }
        let purpose = Purpose::OffsetCommit {
            waiter,
            group: g.id.clone(),
            response,
            offsets,
        };
        self.io.append(g.partition, records, purpose);
    }
}

/// Kafka's `validateOffsetCommit` for classic groups.
fn validate_commit(g: &ClassicGroup, req: &OffsetCommitRequest) -> Result<(), i16> {
    let generation = req.generation_id_or_member_epoch;
    let member_id = req.member_id.as_str();
    let instance = req.group_instance_id.as_deref();
    if g.is(GroupState::Dead) {
        return Err(code::COORDINATOR_NOT_AVAILABLE);
    }
    if generation < 0 && g.is(GroupState::Empty) {
        // An admin or a consumer that assigns itself: fine while nobody is a member.
        return Ok(());
    }
    if generation >= 0 || !member_id.is_empty() || instance.is_some() {
        g.validate_member(member_id, instance)?;
        if generation != g.generation {
            return Err(code::ILLEGAL_GENERATION);
        }
    } else if !g.is(GroupState::Empty) {
        return Err(code::UNKNOWN_MEMBER_ID);
    }
    if g.is(GroupState::CompletingRebalance) {
        // It has the new generation but not its assignment yet.
        return Err(code::REBALANCE_IN_PROGRESS);
    }
    Ok(())
}

fn topic_v1(
    name: String,
    ps: Vec<(i32, Option<&OffsetCommitValue>)>,
    error: i16,
) -> OffsetFetchResponseTopic {
    let mut t = OffsetFetchResponseTopic::default();
    t.name = TopicName(sb(&name));
    t.partitions = ps
        .into_iter()
        .map(|(p, o)| {
            let mut rp = OffsetFetchResponsePartition::default();
            rp.partition_index = p;
            rp.committed_offset = o.map_or(-1, |o| o.offset);
            rp.committed_leader_epoch = o.map_or(-1, |o| o.leader_epoch);
            rp.metadata = Some(sb(o.map_or("", |o| o.metadata.as_str())));
            rp.error_code = error;
            rp
        })
        .collect();
    t
}

fn topics_v8(name: String, ps: Vec<(i32, Option<&OffsetCommitValue>)>) -> OffsetFetchResponseTopics {
    let mut t = OffsetFetchResponseTopics::default();
    t.name = TopicName(sb(&name));
    t.partitions = ps
        .into_iter()
        .map(|(p, o)| {
            let mut rp = OffsetFetchResponsePartitions::default();
            rp.partition_index = p;
            rp.committed_offset = o.map_or(-1, |o| o.offset);
            rp.committed_leader_epoch = o.map_or(-1, |o| o.leader_epoch);
            rp.metadata = Some(sb(o.map_or("", |o| o.metadata.as_str())));
            rp
        })
        .collect();
    t
}
