//! Scenario tests: the coordinator driven request by request, with a harness that plays
//! the caller (appends land in a per-partition log, acknowledged in order), checks that
//! every request is answered exactly once, and encodes every answer at its API version.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::classic::{GroupState, CONSUMER_PROTOCOL_TYPE};
use super::records;
use super::timers::TimerKey;
use super::*;
use crate::Time;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 20_000;
const DELAY_MS: u64 = 3_000;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// A ConsumerProtocolSubscription (version 1) for `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    use kafka_protocol::protocol::Encodable;
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics.iter().map(|t| s(t)).collect();
    let mut buf = BytesMut::new();
    bytes::BufMut::put_i16(&mut buf, 1);
    sub.encode(&mut buf, 1).unwrap();
    buf.freeze()
}

fn config() -> GroupConfig {
    GroupConfig {
        offsets_topic_partitions: 1,
        initial_rebalance_delay_ms: DELAY_MS,
        ..GroupConfig::default()
    }
}

/// The caller: time, waiters, the replicated log, and what the coordinator answered.
struct H {
    c: GroupCoordinator,
    now: Time,
    next_waiter: Waiter,
    versions: BTreeMap<Waiter, (ApiKey, i16)>,
    answers: BTreeMap<Waiter, ResponseKind>,
    /// Appends not yet acknowledged, in issue order.
    pending: Vec<(i32, AppendId, Vec<OffsetsRecord>)>,
    /// Acknowledged records per partition, in log order.
    log: BTreeMap<i32, Vec<OffsetsRecord>>,
    /// Every effect ever seen, for determinism checks.
    trace: Vec<String>,
}

impl H {
    fn new() -> H {
        H::with(config(), 7)
    }

    fn with(config: GroupConfig, seed: u64) -> H {
        let partitions = config.offsets_topic_partitions as i32;
        let mut h = H {
            c: GroupCoordinator::new(config, seed),
            now: Time {
                mono_ms: 1_000,
                wall_ms: 1_700_000_000_000,
            },
            next_waiter: 0,
            versions: BTreeMap::new(),
            answers: BTreeMap::new(),
            pending: Vec::new(),
            log: BTreeMap::new(),
            trace: Vec::new(),
        };
        for p in 0..partitions {
            h.c.load(h.now, p, Vec::new());
        }
        h
    }

    fn send(&mut self, version: i16, request: GroupRequest) -> Waiter {
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        let api = match &request {
            GroupRequest::JoinGroup(_) => ApiKey::JoinGroup,
            GroupRequest::SyncGroup(_) => ApiKey::SyncGroup,
            GroupRequest::Heartbeat(_) => ApiKey::Heartbeat,
            GroupRequest::LeaveGroup(_) => ApiKey::LeaveGroup,
            GroupRequest::OffsetCommit(_) => ApiKey::OffsetCommit,
            GroupRequest::OffsetFetch(_) => ApiKey::OffsetFetch,
            GroupRequest::DescribeGroups(_) => ApiKey::DescribeGroups,
            GroupRequest::ListGroups(_) => ApiKey::ListGroups,
            GroupRequest::DeleteGroups(_) => ApiKey::DeleteGroups,
            GroupRequest::OffsetDelete(_) => ApiKey::OffsetDelete,
        };
        self.versions.insert(waiter, (api, version));
        let ctx = RequestCtx {
            waiter,
            version,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
        };
        self.c.handle(self.now, ctx, request);
        self.pump();
        waiter
    }

    fn pump(&mut self) {
        for effect in self.c.drain_effects() {
            self.trace.push(format!("{effect:?}"));
            match effect {
                Effect::Respond { waiter, response } => {
                    let (api, version) = self.versions[&waiter];
                    let mut buf = BytesMut::new();
                    response
                        .encode(&mut buf, version)
                        .unwrap_or_else(|e| panic!("{api:?} v{version} does not encode: {e}"));
                    let previous = self.answers.insert(waiter, response);
                    assert!(previous.is_none(), "waiter {waiter} answered twice");
                }
                Effect::Append {
                    partition,
                    id,
                    records,
                } => self.pending.push((partition, id, records)),
            }
        }
    }

    fn ack(&mut self) {
        for (partition, id, records) in std::mem::take(&mut self.pending) {
            let log = self.log.entry(partition).or_default();
            log.extend(records);
            let offset = log.len() as u64;
            self.c.appended(self.now, id, Ok(offset));
            self.pump();
        }
    }

    fn fail(&mut self, error: i16) {
        for (_, id, _) in std::mem::take(&mut self.pending) {
            self.c.appended(self.now, id, Err(error));
            self.pump();
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now.mono_ms += ms;
        self.now.wall_ms += ms as i64;
        self.c.tick(self.now);
        self.pump();
    }

    fn answered(&self, w: Waiter) -> bool {
        self.answers.contains_key(&w)
    }

    fn join_answer(&self, w: Waiter) -> JoinGroupResponse {
        match self.answers.get(&w) {
            Some(ResponseKind::JoinGroup(r)) => r.clone(),
            other => panic!("join {w}: {other:?}"),
        }
    }

    fn sync_answer(&self, w: Waiter) -> SyncGroupResponse {
        match self.answers.get(&w) {
            Some(ResponseKind::SyncGroup(r)) => r.clone(),
            other => panic!("sync {w}: {other:?}"),
        }
    }

    fn error_of(&self, w: Waiter) -> i16 {
        match self.answers.get(&w) {
            Some(ResponseKind::Heartbeat(r)) => r.error_code,
            Some(ResponseKind::JoinGroup(r)) => r.error_code,
            Some(ResponseKind::SyncGroup(r)) => r.error_code,
            Some(ResponseKind::LeaveGroup(r)) => r.error_code,
            Some(ResponseKind::OffsetDelete(r)) => r.error_code,
            Some(ResponseKind::ListGroups(r)) => r.error_code,
            other => panic!("no error code in {other:?}"),
        }
    }

    fn commit_errors(&self, w: Waiter) -> Vec<i16> {
        match self.answers.get(&w) {
            Some(ResponseKind::OffsetCommit(r)) => r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect(),
            other => panic!("commit {w}: {other:?}"),
        }
    }

    // ---- requests

    fn join(
        &mut self,
        version: i16,
        group: &str,
        member: &str,
        instance: Option<&str>,
        topics: &[&str],
    ) -> Waiter {
        self.join_protocols(version, group, member, instance, &[("range", topics)])
    }

    fn join_protocols(
        &mut self,
        version: i16,
        group: &str,
        member: &str,
        instance: Option<&str>,
        protocols: &[(&str, &[&str])],
    ) -> Waiter {
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(s(group));
        r.session_timeout_ms = SESSION_MS;
        r.rebalance_timeout_ms = REBALANCE_MS;
        r.member_id = s(member);
        r.group_instance_id = instance.map(s);
        r.protocol_type = s(CONSUMER_PROTOCOL_TYPE);
        r.protocols = protocols
            .iter()
            .map(|(name, topics)| {
                let mut p = JoinGroupRequestProtocol::default();
                p.name = s(name);
                p.metadata = subscription(topics);
                p
            })
            .collect();
        self.send(version, GroupRequest::JoinGroup(r))
    }

    /// A dynamic member's full entry (member-id round, then the real join): its waiter.
    fn join_dynamic(&mut self, group: &str, topics: &[&str]) -> Waiter {
        let w = self.join(5, group, "", None, topics);
        let r = self.join_answer(w);
        assert_eq!(r.error_code, code::MEMBER_ID_REQUIRED);
        let id = r.member_id.to_string();
        self.join(5, group, &id, None, topics)
    }

    fn sync(&mut self, group: &str, generation: i32, member: &str, assignments: &[(&str, &[u8])]) -> Waiter {
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(s(group));
        r.generation_id = generation;
        r.member_id = s(member);
        r.assignments = assignments
            .iter()
            .map(|(m, a)| {
                let mut x = SyncGroupRequestAssignment::default();
                x.member_id = s(m);
                x.assignment = Bytes::copy_from_slice(a);
                x
            })
            .collect();
        self.send(5, GroupRequest::SyncGroup(r))
    }

    fn heartbeat(&mut self, group: &str, generation: i32, member: &str) -> i16 {
        let mut r = HeartbeatRequest::default();
        r.group_id = GroupId(s(group));
        r.generation_id = generation;
        r.member_id = s(member);
        let w = self.send(4, GroupRequest::Heartbeat(r));
        self.error_of(w)
    }

    fn commit(
        &mut self,
        version: i16,
        group: &str,
        generation: i32,
        member: &str,
        offsets: &[(&str, i32, i64)],
    ) -> Waiter {
        let mut r = OffsetCommitRequest::default();
        r.group_id = GroupId(s(group));
        r.generation_id_or_member_epoch = generation;
        r.member_id = s(member);
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (topic, p, offset) in offsets {
            let mut part = OffsetCommitRequestPartition::default();
            part.partition_index = *p;
            part.committed_offset = *offset;
            part.committed_metadata = Some(s("meta"));
            match topics.iter_mut().find(|t| t.name.as_str() == *topic) {
                Some(t) => t.partitions.push(part),
                None => {
                    let mut t = OffsetCommitRequestTopic::default();
                    t.name = TopicName(s(topic));
                    t.partitions.push(part);
                    topics.push(t);
                }
            }
        }
        r.topics = topics;
        self.send(version, GroupRequest::OffsetCommit(r))
    }

    /// Committed offsets of `group` for `(topic, partition)`s, by OffsetFetch v7.
    fn fetch(&mut self, group: &str, partitions: &[(&str, i32)]) -> Vec<i64> {
        let mut r = OffsetFetchRequest::default();
        r.group_id = GroupId(s(group));
        r.topics = Some(
            partitions
                .iter()
                .map(|(t, p)| {
                    let mut x = OffsetFetchRequestTopic::default();
                    x.name = TopicName(s(t));
                    x.partition_indexes = vec![*p];
                    x
                })
                .collect(),
        );
        let w = self.send(7, GroupRequest::OffsetFetch(r));
        match &self.answers[&w] {
            ResponseKind::OffsetFetch(r) => {
                assert_eq!(r.error_code, code::NONE);
                r.topics
                    .iter()
                    .map(|t| t.partitions[0].committed_offset)
                    .collect()
            }
            other => panic!("{other:?}"),
        }
    }

    /// Waits out the initial rebalance delay, which each wave of joining members extends.
    fn settle(&mut self, group: &str) {
        for _ in 0..10 {
            if self.state(group) != Some(GroupState::PreparingRebalance) {
                return;
            }
            self.advance(DELAY_MS);
        }
        panic!("group {group} never left PreparingRebalance");
    }

    fn state(&self, group: &str) -> Option<GroupState> {
        self.c.group(group).map(|g| g.state)
    }

    /// A Stable group of `n` dynamic members subscribed to `topics`: (generation, ids with
    /// the leader first).
    fn stable_group(&mut self, group: &str, n: usize, topics: &[&str]) -> (i32, Vec<String>) {
        let joins: Vec<Waiter> = (0..n).map(|_| self.join_dynamic(group, topics)).collect();
        self.settle(group);
        let answers: Vec<JoinGroupResponse> = joins.iter().map(|&w| self.join_answer(w)).collect();
        let generation = answers[0].generation_id;
        let leader = answers[0].leader.to_string();
        let mut ids: Vec<String> = answers.iter().map(|a| a.member_id.to_string()).collect();
        ids.sort_by_key(|id| *id != leader);
        let assignment: Vec<(&str, &[u8])> = ids.iter().map(|id| (id.as_str(), &b"a"[..])).collect();
        let syncs: Vec<Waiter> = ids
            .iter()
            .map(|id| self.sync(group, generation, id, &assignment))
            .collect();
        self.ack();
        for w in syncs {
            assert_eq!(self.sync_answer(w).error_code, code::NONE);
        }
        assert_eq!(self.state(group), Some(GroupState::Stable));
        (generation, ids)
    }
}

// ---------------------------------------------------------------------------------------

#[test]
fn one_member_joins_syncs_and_heartbeats() {
    let mut h = H::new();
    // KIP-394: v4+ without a member id gets one and must come back with it.
    let w = h.join(5, "g", "", None, &["t"]);
    let first = h.join_answer(w);
    assert_eq!(first.error_code, code::MEMBER_ID_REQUIRED);
    let id = first.member_id.to_string();
    assert!(id.starts_with("client-"), "{id}");
    let w = h.join(5, "g", &id, None, &["t"]);
    assert!(!h.answered(w), "parked for the initial rebalance delay");
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    h.advance(DELAY_MS - 1);
    assert!(!h.answered(w));
    h.advance(1);
    let r = h.join_answer(w);
    assert_eq!((r.error_code, r.generation_id), (code::NONE, 1));
    assert_eq!(r.leader.as_str(), id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].metadata, subscription(&["t"]));
    assert_eq!(h.state("g"), Some(GroupState::CompletingRebalance));
    // The leader's SyncGroup is answered once its assignment is committed.
    let w = h.sync("g", 1, &id, &[(&id, b"assignment")]);
    assert!(!h.answered(w));
    assert_eq!(h.pending.len(), 1);
    h.ack();
    let r = h.sync_answer(w);
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(&r.assignment[..], b"assignment");
    assert_eq!(h.state("g"), Some(GroupState::Stable));
    assert_eq!(h.heartbeat("g", 1, &id), code::NONE);
    assert_eq!(h.heartbeat("g", 0, &id), code::ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat("g", 1, "nobody"), code::UNKNOWN_MEMBER_ID);
    assert_eq!(h.heartbeat("other", 1, &id), code::UNKNOWN_MEMBER_ID);
}

#[test]
fn three_members_get_one_generation_and_their_assignments() {
    let mut h = H::new();
    let joins: Vec<Waiter> = (0..3).map(|_| h.join_dynamic("g", &["t"])).collect();
    h.advance(DELAY_MS);
    assert!(
        joins.iter().all(|&w| !h.answered(w)),
        "later joiners extend the initial delay"
    );
    h.advance(DELAY_MS);
    let answers: Vec<JoinGroupResponse> = joins.iter().map(|&w| h.join_answer(w)).collect();
    let leader = answers[0].leader.to_string();
    for a in &answers {
        assert_eq!((a.error_code, a.generation_id), (code::NONE, 1));
        assert_eq!(a.leader.as_str(), leader);
        let is_leader = a.member_id.as_str() == leader;
        assert_eq!(
            a.members.len(),
            if is_leader { 3 } else { 0 },
            "only the leader gets the members"
        );
    }
    let ids: Vec<String> = answers.iter().map(|a| a.member_id.to_string()).collect();
    // Followers sync first and wait for the leader.
    let followers: Vec<Waiter> = ids
        .iter()
        .filter(|id| **id != leader)
        .map(|id| h.sync("g", 1, id, &[]))
        .collect();
    assert!(followers.iter().all(|&w| !h.answered(w)));
    let assignment: Vec<(&str, Vec<u8>)> = ids
        .iter()
        .map(|id| (id.as_str(), id.as_bytes().to_vec()))
        .collect();
    let refs: Vec<(&str, &[u8])> = assignment.iter().map(|(m, a)| (*m, a.as_slice())).collect();
    let lw = h.sync("g", 1, &leader, &refs);
    assert!(
        followers.iter().all(|&w| !h.answered(w)),
        "not before the write is committed"
    );
    h.ack();
    for (w, id) in followers
        .iter()
        .chain([&lw])
        .zip(ids.iter().filter(|id| **id != leader).chain([&leader]))
    {
        let r = h.sync_answer(*w);
        assert_eq!(r.error_code, code::NONE);
        assert_eq!(
            &r.assignment[..],
            id.as_bytes(),
            "each member gets its own assignment"
        );
    }
    // The committed GroupMetadata record names the generation, the leader and all three.
    let (key, value) = h.log[&0].last().unwrap().clone();
    assert_eq!(
        records::decode_key(&key).unwrap(),
        records::RecordKey::Group { group: "g".into() }
    );
    let v = records::decode_group_value(&value.unwrap()).unwrap();
    assert_eq!(
        (v.generation, v.leader.as_deref(), v.members.len()),
        (1, Some(leader.as_str()), 3)
    );
}

#[test]
fn old_clients_join_without_the_member_id_round_and_pending_ids_expire() {
    let mut h = H::new();
    // v3: no MEMBER_ID_REQUIRED, the join parks at once.
    let w = h.join(3, "g", "", None, &["t"]);
    assert!(!h.answered(w));
    h.advance(DELAY_MS);
    assert_eq!(h.join_answer(w).error_code, code::NONE);
    // A v5 member that never comes back with its id is forgotten after its session.
    let w = h.join(5, "g2", "", None, &["t"]);
    let id = h.join_answer(w).member_id.to_string();
    assert!(h.c.group("g2").unwrap().pending_members.contains(&id));
    h.advance(SESSION_MS as u64);
    assert!(h.c.group("g2").unwrap().pending_members.is_empty());
    let w = h.join(5, "g2", &id, None, &["t"]);
    assert_eq!(h.join_answer(w).error_code, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_new_member_rebalances_a_stable_group() {
    let mut h = H::new();
    let (generation, ids) = h.stable_group("g", 1, &["t"]);
    let old = &ids[0];
    let newcomer = h.join_dynamic("g", &["t"]);
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(h.heartbeat("g", generation, old), code::REBALANCE_IN_PROGRESS);
    assert!(!h.answered(newcomer));
    // The old member rejoins: everyone is in, the next generation starts at once.
    let rejoin = h.join(5, "g", old, None, &["t"]);
    let (a, b) = (h.join_answer(rejoin), h.join_answer(newcomer));
    assert_eq!(
        (a.generation_id, b.generation_id),
        (generation + 1, generation + 1)
    );
    assert_eq!(
        a.leader.as_str(),
        old.as_str(),
        "the leader rejoined and stays leader"
    );
    assert_eq!(a.members.len(), 2);
}

#[test]
fn a_follower_rejoining_with_the_same_metadata_does_not_rebalance() {
    let mut h = H::new();
    let (generation, ids) = h.stable_group("g", 2, &["t"]);
    let w = h.join(5, "g", &ids[1], None, &["t"]);
    let r = h.join_answer(w);
    assert_eq!((r.error_code, r.generation_id), (code::NONE, generation));
    assert_eq!(h.state("g"), Some(GroupState::Stable));
    // New metadata (a cooperative client's subscription change) does rebalance.
    let w = h.join(5, "g", &ids[1], None, &["t", "u"]);
    assert!(!h.answered(w));
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
}

#[test]
fn rebalance_timeout_removes_members_that_do_not_rejoin() {
    let mut h = H::new();
    let (generation, ids) = h.stable_group("g", 2, &["t"]);
    let (leader, follower) = (ids[0].clone(), ids[1].clone());
    let newcomer = h.join_dynamic("g", &["t"]);
    let rejoin = h.join(5, "g", &leader, None, &["t"]);
    // The follower keeps heartbeating (so its session holds) but never rejoins.
    for _ in 0..3 {
        h.advance(REBALANCE_MS as u64 / 4);
        assert_eq!(
            h.heartbeat("g", generation, &follower),
            code::REBALANCE_IN_PROGRESS
        );
    }
    assert!(!h.answered(rejoin));
    h.advance(REBALANCE_MS as u64 / 4);
    let r = h.join_answer(rejoin);
    assert_eq!(r.generation_id, generation + 1);
    assert_eq!(r.members.len(), 2);
    assert!(h.answered(newcomer));
    assert!(!h.c.group("g").unwrap().members.contains_key(&follower));
    assert_eq!(
        h.heartbeat("g", generation + 1, &follower),
        code::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn session_expiry_removes_a_silent_member() {
    let mut h = H::new();
    let (generation, ids) = h.stable_group("g", 2, &["t"]);
    for _ in 0..4 {
        h.advance(SESSION_MS as u64 / 4 - 1);
        assert_eq!(h.heartbeat("g", generation, &ids[0]), code::NONE);
    }
    h.advance(10);
    assert!(!h.c.group("g").unwrap().members.contains_key(&ids[1]), "expired");
    assert_eq!(h.heartbeat("g", generation, &ids[0]), code::REBALANCE_IN_PROGRESS);
    let w = h.join(5, "g", &ids[0], None, &["t"]);
    let r = h.join_answer(w);
    assert_eq!((r.generation_id, r.members.len()), (generation + 1, 1));
}

#[test]
fn members_that_do_not_sync_in_time_are_removed() {
    let mut h = H::new();
    let joins: Vec<Waiter> = (0..2).map(|_| h.join_dynamic("g", &["t"])).collect();
    h.settle("g");
    let ids: Vec<String> = joins
        .iter()
        .map(|&w| h.join_answer(w).member_id.to_string())
        .collect();
    let leader = h.join_answer(joins[0]).leader.to_string();
    let late = ids.iter().find(|id| **id != leader).unwrap().clone();
    let lw = h.sync("g", 1, &leader, &[]);
    h.ack();
    assert_eq!(h.sync_answer(lw).error_code, code::NONE);
    // Both heartbeat (so no session expires), but `late` never sends SyncGroup.
    for _ in 0..4 {
        h.advance(REBALANCE_MS as u64 / 4 - 1);
        assert_eq!(h.heartbeat("g", 1, &leader), code::NONE);
        assert_eq!(h.heartbeat("g", 1, &late), code::NONE);
    }
    assert!(h.c.group("g").unwrap().members.contains_key(&late));
    h.advance(4);
    let late = &late;
    assert!(!h.c.group("g").unwrap().members.contains_key(late));
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
}

#[test]
fn leave_group_batches_by_member_and_instance_id() {
    let mut h = H::new();
    let (generation, ids) = h.stable_group("g", 2, &["t"]);
    // v0: one member, its error at the top level.
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s("g"));
    r.member_id = s("nobody");
    let w = h.send(0, GroupRequest::LeaveGroup(r));
    assert_eq!(h.error_of(w), code::UNKNOWN_MEMBER_ID);
    // v3+: a batch, each member answered.
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s("g"));
    r.members = [(ids[1].as_str(), None), ("", Some("no-such-instance"))]
        .iter()
        .map(|(m, i)| {
            let mut x = MemberIdentity::default();
            x.member_id = s(m);
            x.group_instance_id = i.map(s);
            x
        })
        .collect();
    let w = h.send(5, GroupRequest::LeaveGroup(r));
    match &h.answers[&w] {
        ResponseKind::LeaveGroup(r) => {
            assert_eq!(r.error_code, code::NONE);
            let errors: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
            assert_eq!(errors, vec![code::NONE, code::UNKNOWN_MEMBER_ID]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.heartbeat("g", generation, &ids[0]), code::REBALANCE_IN_PROGRESS);
    // The last member leaving empties the group, which is written.
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s("g"));
    r.member_id = s(&ids[0]);
    let w = h.send(2, GroupRequest::LeaveGroup(r));
    assert_eq!(h.error_of(w), code::NONE);
    assert_eq!(h.state("g"), Some(GroupState::Empty));
    h.ack();
    let (_, value) = h.log[&0].last().unwrap().clone();
    let v = records::decode_group_value(&value.unwrap()).unwrap();
    assert!(v.members.is_empty());
    assert_eq!(v.generation, generation + 1);
}

#[test]
fn static_member_rejoins_without_rebalance_and_fences_its_old_id() {
    let mut h = H::new();
    let w = h.join(5, "g", "", Some("instance-1"), &["t"]);
    assert!(!h.answered(w), "static members skip the member-id round");
    let other = h.join_dynamic("g", &["t"]);
    h.settle("g");
    let (a, b) = (h.join_answer(w), h.join_answer(other));
    let old_id = a.member_id.to_string();
    assert!(old_id.starts_with("instance-1-"), "{old_id}");
    let leader = a.leader.to_string();
    // Whoever leads assigns "one" to the static member and nothing to the other.
    let s1 = h.sync("g", 1, &old_id, &[(&old_id, b"one")]);
    let s2 = h.sync("g", 1, b.member_id.as_str(), &[(&old_id, b"one")]);
    h.ack();
    assert!(leader == old_id || leader == b.member_id.as_str());
    assert_eq!(&h.sync_answer(s1).assignment[..], b"one");
    assert_eq!(&h.sync_answer(s2).assignment[..], b"");
    assert_eq!(h.state("g"), Some(GroupState::Stable));
    // The instance restarts: a new member id, same protocols, no rebalance.
    let w = h.join(5, "g", "", Some("instance-1"), &["t"]);
    assert!(!h.answered(w), "answered once the new id is committed");
    h.ack();
    let r = h.join_answer(w);
    let new_id = r.member_id.to_string();
    assert_eq!((r.error_code, r.generation_id), (code::NONE, 1));
    assert_ne!(new_id, old_id);
    assert_eq!(h.state("g"), Some(GroupState::Stable));
    assert_eq!(h.heartbeat("g", 1, &new_id), code::NONE);
    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(s("g"));
    hb.generation_id = 1;
    hb.member_id = s(&old_id);
    hb.group_instance_id = Some(s("instance-1"));
    let w = h.send(4, GroupRequest::Heartbeat(hb));
    assert_eq!(h.error_of(w), code::FENCED_INSTANCE_ID);
    // Its assignment survives the new id.
    let w = h.sync("g", 1, &new_id, &[]);
    assert_eq!(&h.sync_answer(w).assignment[..], b"one");
}

#[test]
fn static_rejoin_that_fails_to_persist_restores_the_old_id() {
    let mut h = H::new();
    let w = h.join(5, "g", "", Some("i"), &["t"]);
    h.advance(DELAY_MS);
    let old_id = h.join_answer(w).member_id.to_string();
    h.sync("g", 1, &old_id, &[]);
    h.ack();
    let w = h.join(5, "g", "", Some("i"), &["t"]);
    h.fail(code::NOT_LEADER_OR_FOLLOWER);
    let r = h.join_answer(w);
    assert_eq!(r.error_code, code::NOT_COORDINATOR);
    assert_eq!(r.member_id.as_str(), "");
    assert!(h.c.group("g").unwrap().members.contains_key(&old_id));
    assert_eq!(h.heartbeat("g", 1, &old_id), code::NONE);
}

#[test]
fn static_leader_rejoin_with_v9_skips_assignment() {
    let mut h = H::new();
    let w = h.join(9, "g", "", Some("i"), &["t"]);
    h.advance(DELAY_MS);
    let old_id = h.join_answer(w).member_id.to_string();
    h.sync("g", 1, &old_id, &[]);
    h.ack();
    let w = h.join(9, "g", "", Some("i"), &["t"]);
    h.ack();
    let r = h.join_answer(w);
    assert!(
        r.skip_assignment,
        "the leader learns it leads but keeps its assignment"
    );
    assert_eq!(r.leader, r.member_id);
    assert_eq!(r.members.len(), 1);
}

#[test]
fn offset_commits_are_fenced_by_generation_and_member() {
    let mut h = H::new();
    let (generation, ids) = h.stable_group("g", 1, &["t"]);
    let w = h.commit(8, "g", generation + 1, &ids[0], &[("t", 0, 5)]);
    assert_eq!(h.commit_errors(w), vec![code::ILLEGAL_GENERATION]);
    let w = h.commit(8, "g", generation, "stranger", &[("t", 0, 5)]);
    assert_eq!(h.commit_errors(w), vec![code::UNKNOWN_MEMBER_ID]);
    let w = h.commit(8, "g", -1, "", &[("t", 0, 5)]);
    assert_eq!(
        h.commit_errors(w),
        vec![code::UNKNOWN_MEMBER_ID],
        "no simple commits to a live group"
    );
    let w = h.commit(8, "nope", 3, "m", &[("t", 0, 5)]);
    assert_eq!(h.commit_errors(w), vec![code::ILLEGAL_GENERATION]);
    let w = h.commit(9, "nope", 3, "m", &[("t", 0, 5)]);
    assert_eq!(h.commit_errors(w), vec![code::GROUP_ID_NOT_FOUND]);
    // Between JoinGroup and SyncGroup the generation is known but not settled.
    h.join_dynamic("g", &["t"]);
    let w = h.join(5, "g", &ids[0], None, &["t"]);
    let next = h.join_answer(w).generation_id;
    let w = h.commit(8, "g", next, &ids[0], &[("t", 0, 5)]);
    assert_eq!(h.commit_errors(w), vec![code::REBALANCE_IN_PROGRESS]);
    // A member's commit in the current generation lands.
    let lw = h.sync("g", next, &ids[0], &[]);
    h.ack();
    assert_eq!(h.sync_answer(lw).error_code, code::NONE);
    let w = h.commit(8, "g", next, &ids[0], &[("t", 0, 5)]);
    h.ack();
    assert_eq!(h.commit_errors(w), vec![code::NONE]);
    assert_eq!(h.fetch("g", &[("t", 0)]), vec![5]);
}

#[test]
fn simple_commits_create_a_group_without_members() {
    let mut h = H::new();
    let w = h.commit(8, "simple", -1, "", &[("t", 0, 10), ("t", 1, 11), ("u", 0, 12)]);
    h.ack();
    assert_eq!(h.commit_errors(w), vec![code::NONE; 3]);
    assert_eq!(
        h.fetch("simple", &[("t", 1), ("u", 0), ("t", 9)]),
        vec![11, 12, -1]
    );
    let g = h.c.group("simple").unwrap();
    assert_eq!((g.state, g.protocol_type.as_deref()), (GroupState::Empty, None));
    // Metadata longer than offset.metadata.max.bytes is refused per partition.
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s("simple"));
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("t"));
    let mut p = OffsetCommitRequestPartition::default();
    p.committed_metadata = Some(s(&"x".repeat(4097)));
    t.partitions.push(p);
    r.topics.push(t);
    let w = h.send(8, GroupRequest::OffsetCommit(r));
    assert_eq!(h.commit_errors(w), vec![code::OFFSET_METADATA_TOO_LARGE]);
    assert!(h.pending.is_empty());
}

#[test]
fn a_commit_is_answered_and_visible_only_once_committed() {
    let mut h = H::new();
    let w = h.commit(8, "g", -1, "", &[("t", 0, 42)]);
    assert!(!h.answered(w));
    assert_eq!(
        h.fetch("g", &[("t", 0)]),
        vec![-1],
        "uncommitted offsets are not served"
    );
    h.ack();
    assert_eq!(h.commit_errors(w), vec![code::NONE]);
    assert_eq!(h.fetch("g", &[("t", 0)]), vec![42]);
    // A failed write: the mapped error, and the old offset stays.
    let w = h.commit(8, "g", -1, "", &[("t", 0, 43)]);
    h.fail(code::NOT_LEADER_OR_FOLLOWER);
    assert_eq!(h.commit_errors(w), vec![code::NOT_COORDINATOR]);
    let w = h.commit(8, "g", -1, "", &[("t", 0, 44)]);
    h.fail(code::NOT_ENOUGH_REPLICAS);
    assert_eq!(h.commit_errors(w), vec![code::COORDINATOR_NOT_AVAILABLE]);
    assert_eq!(h.fetch("g", &[("t", 0)]), vec![42]);
}

#[test]
fn unload_answers_parked_requests_and_loading_answers_load_in_progress() {
    let mut h = H::new();
    let join = h.join_dynamic("g", &["t"]);
    let commit = h.commit(8, "simple", -1, "", &[("t", 0, 1)]);
    assert!(!h.answered(join) && !h.answered(commit));
    h.c.unload(0);
    h.pump();
    assert_eq!(h.join_answer(join).error_code, code::NOT_COORDINATOR);
    assert_eq!(h.commit_errors(commit), vec![code::NOT_COORDINATOR]);
    assert_eq!(h.c.timers_len(), 0, "no timer outlives its partition");
    // A late acknowledgement of an abandoned append is ignored.
    h.ack();
    let w = h.join(5, "g", "", None, &["t"]);
    assert_eq!(h.join_answer(w).error_code, code::NOT_COORDINATOR);
    h.c.begin_load(0);
    assert_eq!(h.heartbeat("g", 1, "m"), code::COORDINATOR_LOAD_IN_PROGRESS);
    let w = h.commit(8, "g", -1, "", &[("t", 0, 1)]);
    assert_eq!(h.commit_errors(w), vec![code::COORDINATOR_LOAD_IN_PROGRESS]);
    let mut r = ListGroupsRequest::default();
    r.states_filter = Vec::new();
    let w = h.send(4, GroupRequest::ListGroups(r));
    assert_eq!(h.error_of(w), code::COORDINATOR_LOAD_IN_PROGRESS);
}

#[test]
fn load_rebuilds_groups_and_offsets_from_the_log() {
    let mut h = H::new();
    let (generation, ids) = h.stable_group("g", 2, &["t"]);
    let w = h.commit(8, "g", generation, &ids[0], &[("t", 0, 100), ("t", 1, 200)]);
    h.ack();
    assert_eq!(h.commit_errors(w), vec![code::NONE, code::NONE]);
    h.commit(8, "simple", -1, "", &[("u", 0, 7), ("u", 1, 8)]);
    h.ack();
    let mut r = OffsetDeleteRequest::default();
    r.group_id = GroupId(s("simple"));
    let mut t = OffsetDeleteRequestTopic::default();
    t.name = TopicName(s("u"));
    let mut p = OffsetDeleteRequestPartition::default();
    p.partition_index = 1;
    t.partitions.push(p);
    r.topics.push(t);
    h.send(0, GroupRequest::OffsetDelete(r));
    h.ack();
    // A record of a type that is not ours (a Kafka 4 consumer-group record) is skipped.
    let mut log = h.log[&0].clone();
    log.push((
        Bytes::from_static(&[0, 3, 0, 1, b'x']),
        Some(Bytes::from_static(&[0, 0])),
    ));

    let mut h2 = H::with(config(), 8);
    h2.c.unload(0);
    let summary = h2.c.load(h2.now, 0, log);
    assert_eq!(summary.skipped, 1);
    assert_eq!((summary.groups, summary.offsets), (2, 3));
    let (g1, g2) = (h.c.group("g").unwrap(), h2.c.group("g").unwrap());
    assert_eq!(g2.state, GroupState::Stable);
    assert_eq!(
        (g2.generation, &g2.leader, &g2.protocol_name),
        (g1.generation, &g1.leader, &g1.protocol_name)
    );
    assert_eq!(g2.assignment(), g1.assignment());
    assert_eq!(g2.offsets, g1.offsets);
    assert_eq!(g2.subscribed_topics, g1.subscribed_topics);
    assert_eq!(
        h2.c.group("simple").unwrap().offsets,
        h.c.group("simple").unwrap().offsets
    );
    assert_eq!(h2.fetch("simple", &[("u", 0), ("u", 1)]), vec![7, -1]);
    assert_eq!(h2.fetch("g", &[("t", 1)]), vec![200]);
    // Members carry on in their generation, with a fresh session.
    let key = TimerKey::Heartbeat {
        group: "g".into(),
        member: ids[0].clone(),
    };
    assert_eq!(
        h2.c.timer_deadline(&key),
        Some(h2.now.mono_ms + SESSION_MS as u64)
    );
    h2.advance(SESSION_MS as u64 - 1);
    assert_eq!(h2.heartbeat("g", generation, &ids[1]), code::NONE);
    h2.advance(1);
    assert_eq!(
        h2.state("g"),
        Some(GroupState::PreparingRebalance),
        "ids[0] never heartbeat"
    );
}

#[test]
fn retention_expires_offsets_of_empty_groups() {
    let cfg = GroupConfig {
        offsets_retention_ms: 60_000,
        offsets_retention_check_interval_ms: 10_000,
        ..config()
    };
    let mut h = H::with(cfg, 1);
    h.commit(8, "simple", -1, "", &[("t", 0, 1)]);
    h.ack();
    let (generation, ids) = h.stable_group("live", 1, &["t"]);
    h.commit(8, "live", generation, &ids[0], &[("t", 0, 5), ("gone", 0, 6)]);
    h.ack();
    for _ in 0..11 {
        h.advance(5_000);
        assert_eq!(h.heartbeat("live", generation, &ids[0]), code::NONE);
    }
    assert!(h.pending.is_empty(), "nothing expired yet");
    h.advance(5_000);
    assert_eq!(h.heartbeat("live", generation, &ids[0]), code::NONE);
    // The simple group's offset and the group itself; the live group's offset of a topic it
    // no longer consumes, but not that of its subscribed topic.
    assert_eq!(h.pending.len(), 1);
    let keys: Vec<records::RecordKey> = h.pending[0]
        .2
        .iter()
        .map(|(k, v)| {
            assert!(v.is_none(), "tombstones only");
            records::decode_key(k).unwrap()
        })
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(h.state("simple"), Some(GroupState::Dead));
    h.ack();
    assert_eq!(h.state("simple"), None);
    assert_eq!(h.fetch("simple", &[("t", 0)]), vec![-1]);
    assert_eq!(h.fetch("live", &[("t", 0), ("gone", 0)]), vec![5, -1]);
}

#[test]
fn an_empty_group_expires_from_when_it_became_empty() {
    let cfg = GroupConfig {
        offsets_retention_ms: 60_000,
        offsets_retention_check_interval_ms: 10_000,
        ..config()
    };
    let mut h = H::with(cfg, 1);
    let (generation, ids) = h.stable_group("g", 1, &["t"]);
    h.commit(8, "g", generation, &ids[0], &[("t", 0, 5)]);
    h.ack();
    // Keep the member 50 s, then leave: retention counts from the leave.
    for _ in 0..10 {
        h.advance(5_000);
        assert_eq!(h.heartbeat("g", generation, &ids[0]), code::NONE);
    }
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s("g"));
    r.member_id = s(&ids[0]);
    h.send(1, GroupRequest::LeaveGroup(r));
    h.ack();
    h.advance(50_000);
    assert!(h.pending.is_empty(), "50 s empty < 60 s retention");
    h.advance(10_000);
    assert_eq!(h.state("g"), Some(GroupState::Dead));
    // The tombstone write fails: the group is back, and the next sweep retries.
    h.fail(code::NOT_ENOUGH_REPLICAS);
    assert_eq!(h.state("g"), Some(GroupState::Empty));
    assert_eq!(h.fetch("g", &[("t", 0)]), vec![5]);
    h.advance(10_000);
    h.ack();
    assert_eq!(h.state("g"), None);
}

#[test]
fn list_groups_filters_by_state_and_type() {
    let mut h = H::new();
    h.stable_group("stable", 1, &["t"]);
    h.commit(8, "simple", -1, "", &[("t", 0, 1)]);
    h.ack();
    let list = |h: &mut H, version: i16, states: &[&str], types: &[&str]| -> Vec<(String, String)> {
        let mut r = ListGroupsRequest::default();
        r.states_filter = states.iter().map(|x| s(x)).collect();
        r.types_filter = types.iter().map(|x| s(x)).collect();
        let w = h.send(version, GroupRequest::ListGroups(r));
        match &h.answers[&w] {
            ResponseKind::ListGroups(r) => r
                .groups
                .iter()
                .map(|g| (g.group_id.to_string(), g.group_state.to_string()))
                .collect(),
            other => panic!("{other:?}"),
        }
    };
    let all = list(&mut h, 4, &[], &[]);
    assert_eq!(
        all,
        vec![
            ("simple".into(), "Empty".into()),
            ("stable".into(), "Stable".into())
        ]
    );
    assert_eq!(
        list(&mut h, 4, &["STABLE"], &[]),
        vec![("stable".into(), "Stable".into())]
    );
    assert_eq!(list(&mut h, 4, &["empty", "dead"], &[]).len(), 1);
    assert_eq!(list(&mut h, 5, &[], &["consumer"]), vec![]);
    assert_eq!(list(&mut h, 5, &[], &["Classic"]).len(), 2);
    assert_eq!(
        list(&mut h, 3, &[], &[]),
        vec![("simple".into(), "".into()), ("stable".into(), "".into())]
    );
}

#[test]
fn delete_groups_refuses_live_and_unknown_groups_and_waits_for_its_tombstones() {
    let mut h = H::new();
    h.stable_group("live", 1, &["t"]);
    h.commit(8, "idle", -1, "", &[("t", 0, 1), ("t", 1, 2)]);
    h.ack();
    let delete = |h: &mut H, names: &[&str]| {
        let mut r = DeleteGroupsRequest::default();
        r.groups_names = names.iter().map(|n| GroupId(s(n))).collect();
        h.send(2, GroupRequest::DeleteGroups(r))
    };
    let errors = |h: &H, w: Waiter| match &h.answers[&w] {
        ResponseKind::DeleteGroups(r) => r.results.iter().map(|x| x.error_code).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let w = delete(&mut h, &["live", "missing", ""]);
    assert_eq!(
        errors(&h, w),
        vec![
            code::NON_EMPTY_GROUP,
            code::GROUP_ID_NOT_FOUND,
            code::INVALID_GROUP_ID
        ]
    );
    // A failed write leaves the group as it was.
    let w = delete(&mut h, &["idle"]);
    assert!(!h.answered(w));
    assert_eq!(h.state("idle"), Some(GroupState::Dead));
    h.fail(code::REQUEST_TIMED_OUT);
    assert_eq!(errors(&h, w), vec![code::COORDINATOR_NOT_AVAILABLE]);
    assert_eq!(h.state("idle"), Some(GroupState::Empty));
    let w = delete(&mut h, &["idle", "idle"]);
    assert_eq!(h.pending[0].2.len(), 3, "two offset tombstones and the group's");
    h.ack();
    assert_eq!(errors(&h, w), vec![code::NONE, code::GROUP_ID_NOT_FOUND]);
    assert_eq!(h.state("idle"), None);
    assert_eq!(h.fetch("idle", &[("t", 0)]), vec![-1]);
}

#[test]
fn delete_groups_across_partitions_answers_once_all_are_written() {
    let cfg = GroupConfig {
        offsets_topic_partitions: 4,
        ..config()
    };
    let mut h = H::with(cfg, 3);
    let names = ["a", "b", "c", "d", "e"];
    for n in names {
        h.commit(8, n, -1, "", &[("t", 0, 1)]);
    }
    h.ack();
    let mut r = DeleteGroupsRequest::default();
    r.groups_names = names.iter().map(|n| GroupId(s(n))).collect();
    let w = h.send(2, GroupRequest::DeleteGroups(r));
    let partitions: std::collections::BTreeSet<i32> = h.pending.iter().map(|p| p.0).collect();
    assert!(partitions.len() > 1, "the groups span partitions");
    let first = h.pending.remove(0);
    h.c.appended(h.now, first.1, Ok(1_000));
    h.pump();
    assert!(!h.answered(w));
    h.ack();
    assert!(h.answered(w));
    assert!(names.iter().all(|n| h.state(n).is_none()));
}

#[test]
fn offset_delete_refuses_subscribed_topics() {
    let mut h = H::new();
    let (generation, ids) = h.stable_group("g", 1, &["t"]);
    h.commit(8, "g", generation, &ids[0], &[("t", 0, 1), ("old", 0, 2)]);
    h.ack();
    let offset_delete = |h: &mut H, group: &str, topic: &str| {
        let mut r = OffsetDeleteRequest::default();
        r.group_id = GroupId(s(group));
        let mut t = OffsetDeleteRequestTopic::default();
        t.name = TopicName(s(topic));
        t.partitions.push(OffsetDeleteRequestPartition::default());
        r.topics.push(t);
        h.send(0, GroupRequest::OffsetDelete(r))
    };
    let partition_error = |h: &H, w: Waiter| match &h.answers[&w] {
        ResponseKind::OffsetDelete(r) => (r.error_code, r.topics[0].partitions[0].error_code),
        other => panic!("{other:?}"),
    };
    let w = offset_delete(&mut h, "g", "t");
    assert_eq!(
        partition_error(&h, w),
        (code::NONE, code::GROUP_SUBSCRIBED_TO_TOPIC)
    );
    let w = offset_delete(&mut h, "g", "old");
    assert!(!h.answered(w));
    h.ack();
    assert_eq!(partition_error(&h, w), (code::NONE, code::NONE));
    assert_eq!(h.fetch("g", &[("t", 0), ("old", 0)]), vec![1, -1]);
    let w = offset_delete(&mut h, "missing", "t");
    assert_eq!(h.error_of(w), code::GROUP_ID_NOT_FOUND);
}

#[test]
fn offset_delete_refuses_live_groups_of_other_protocols() {
    let mut h = H::new();
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(s("connect"));
    r.session_timeout_ms = SESSION_MS;
    r.rebalance_timeout_ms = REBALANCE_MS;
    r.protocol_type = s("connect");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("sessioned");
    r.protocols.push(p);
    h.send(3, GroupRequest::JoinGroup(r));
    let mut r = OffsetDeleteRequest::default();
    r.group_id = GroupId(s("connect"));
    let w = h.send(0, GroupRequest::OffsetDelete(r));
    assert_eq!(h.error_of(w), code::NON_EMPTY_GROUP);
}

#[test]
fn describe_groups_shows_metadata_once_stable() {
    let mut h = H::new();
    h.stable_group("g", 2, &["t"]);
    let describe = |h: &mut H, version: i16, names: &[&str]| {
        let mut r = DescribeGroupsRequest::default();
        r.groups = names.iter().map(|n| GroupId(s(n))).collect();
        let w = h.send(version, GroupRequest::DescribeGroups(r));
        match &h.answers[&w] {
            ResponseKind::DescribeGroups(r) => r.groups.clone(),
            other => panic!("{other:?}"),
        }
    };
    let d = describe(&mut h, 5, &["g", "missing"]);
    assert_eq!(
        (d[0].error_code, d[0].group_state.as_str()),
        (code::NONE, "Stable")
    );
    assert_eq!(d[0].protocol_data.as_str(), "range");
    assert_eq!(d[0].members.len(), 2);
    assert_eq!(d[0].members[0].member_metadata, subscription(&["t"]));
    assert_eq!(&d[0].members[0].member_assignment[..], b"a");
    assert_eq!((d[1].error_code, d[1].group_state.as_str()), (code::NONE, "Dead"));
    let d = describe(&mut h, 6, &["missing"]);
    assert_eq!(d[0].error_code, code::GROUP_ID_NOT_FOUND);
    // During a rebalance: no protocol, no metadata.
    h.join_dynamic("g", &["t"]);
    let d = describe(&mut h, 0, &["g"]);
    assert_eq!(d[0].group_state.as_str(), "PreparingRebalance");
    assert_eq!(d[0].protocol_data.as_str(), "");
    assert!(d[0].members.iter().all(|m| m.member_metadata.is_empty()));
}

#[test]
fn offset_fetch_many_groups_and_all_partitions() {
    let mut h = H::new();
    h.commit(8, "a", -1, "", &[("t", 0, 1), ("t", 1, 2), ("u", 0, 3)]);
    h.ack();
    let mut r = OffsetFetchRequest::default();
    let mut ga = OffsetFetchRequestGroup::default();
    ga.group_id = GroupId(s("a"));
    ga.topics = None;
    let mut gb = OffsetFetchRequestGroup::default();
    gb.group_id = GroupId(s("b"));
    let mut t = OffsetFetchRequestTopics::default();
    t.name = TopicName(s("t"));
    t.partition_indexes = vec![0];
    gb.topics = Some(vec![t]);
    r.groups = vec![ga, gb];
    let w = h.send(8, GroupRequest::OffsetFetch(r));
    let ResponseKind::OffsetFetch(r) = &h.answers[&w] else {
        panic!()
    };
    let a: Vec<(String, i32, i64)> = r.groups[0]
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index, p.committed_offset))
        })
        .collect();
    assert_eq!(
        a,
        vec![("t".into(), 0, 1), ("t".into(), 1, 2), ("u".into(), 0, 3)]
    );
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, -1);
    // v1: no top-level error; v2+ all-partitions (null topics).
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(s("a"));
    r.topics = None;
    let w = h.send(2, GroupRequest::OffsetFetch(r));
    let ResponseKind::OffsetFetch(r) = &h.answers[&w] else {
        panic!()
    };
    assert_eq!(r.topics.len(), 2);
}

#[test]
fn initial_delay_extends_while_members_keep_joining() {
    let mut h = H::new();
    let a = h.join_dynamic("g", &["t"]);
    h.advance(DELAY_MS - 1);
    let b = h.join_dynamic("g", &["t"]);
    h.advance(1);
    assert!(!h.answered(a), "a member joined during the delay: it extends");
    h.advance(DELAY_MS - 1);
    assert!(!h.answered(a));
    h.advance(1);
    assert!(h.answered(a) && h.answered(b));
    assert_eq!(h.join_answer(b).generation_id, 1);
}

#[test]
fn group_max_size_refuses_extra_members() {
    let cfg = GroupConfig {
        group_size_max: 1,
        ..config()
    };
    let mut h = H::with(cfg, 1);
    h.join_dynamic("g", &["t"]);
    // The size check comes before the member-id round, as in Kafka.
    let w = h.join(5, "g", "", None, &["t"]);
    assert_eq!(h.join_answer(w).error_code, code::GROUP_MAX_SIZE_REACHED);
    let w = h.join(3, "g", "", None, &["t"]);
    assert_eq!(h.join_answer(w).error_code, code::GROUP_MAX_SIZE_REACHED);
    assert_eq!(h.c.group("g").unwrap().members.len(), 1);
}

#[test]
fn join_validation_errors() {
    let mut h = H::new();
    let w = h.join(5, "", "", None, &["t"]);
    assert_eq!(h.join_answer(w).error_code, code::INVALID_GROUP_ID);
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(s("g"));
    r.session_timeout_ms = 10;
    r.protocol_type = s("consumer");
    let w = h.send(5, GroupRequest::JoinGroup(r));
    assert_eq!(h.join_answer(w).error_code, code::INVALID_SESSION_TIMEOUT);
    h.stable_group("g", 1, &["t"]);
    let w = h.join_protocols(5, "g", "", None, &[("roundrobin", &["t"])]);
    assert_eq!(h.join_answer(w).error_code, code::INCONSISTENT_GROUP_PROTOCOL);
    let w = h.join(5, "g", "made-up", None, &["t"]);
    assert_eq!(h.join_answer(w).error_code, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_repeated_parked_join_answers_the_first() {
    let mut h = H::new();
    let w = h.join(5, "g", "", None, &["t"]);
    let id = h.join_answer(w).member_id.to_string();
    let first = h.join(5, "g", &id, None, &["t"]);
    let second = h.join(5, "g", &id, None, &["t"]);
    assert_eq!(h.join_answer(first).error_code, code::REBALANCE_IN_PROGRESS);
    h.advance(DELAY_MS);
    assert_eq!(h.join_answer(second).error_code, code::NONE);
}

#[test]
fn protocol_selection_takes_the_common_protocol() {
    let mut h = H::new();
    let both: &[(&str, &[&str])] = &[("cooperative-sticky", &["t"]), ("range", &["t"])];
    let a = h.join_protocols(3, "g", "", None, both);
    let b = h.join_protocols(3, "g", "", None, both);
    let c = h.join_protocols(3, "g", "", None, &[("range", &["t"])]);
    h.settle("g");
    for w in [a, b, c] {
        assert_eq!(h.join_answer(w).protocol_name.as_deref(), Some("range"));
    }
}

#[test]
fn same_inputs_give_the_same_effects() {
    fn run(seed: u64) -> Vec<String> {
        let mut h = H::with(config(), seed);
        let (generation, ids) = h.stable_group("g", 3, &["t"]);
        h.commit(8, "g", generation, &ids[0], &[("t", 0, 1)]);
        h.ack();
        h.advance(SESSION_MS as u64 + 1);
        h.join(5, "g", "", Some("static"), &["t"]);
        h.advance(REBALANCE_MS as u64);
        h.ack();
        h.trace
    }
    let (a, b) = (run(42), run(42));
    assert!(a.len() > 10, "{}", a.len());
    assert_eq!(a, b);
    assert_ne!(run(43), a, "member ids come from the seed");
}

#[test]
fn changing_the_partition_count_unloads_everything() {
    let mut h = H::new();
    let w = h.join_dynamic("g", &["t"]);
    h.c.set_offsets_topic_partitions(1);
    h.pump();
    assert!(!h.answered(w), "same count: nothing happens");
    h.c.set_offsets_topic_partitions(3);
    h.pump();
    assert_eq!(h.join_answer(w).error_code, code::NOT_COORDINATOR);
    assert!(!h.c.is_active(0));
    assert_eq!(h.c.partition_for("my-group"), 1_906_497_762 % 3);
}

#[test]
fn appends_written_as_one_batch_may_share_an_offset() {
    let mut h = H::new();
    let a = h.commit(8, "g", -1, "", &[("t", 0, 1)]);
    let b = h.commit(8, "g", -1, "", &[("t", 0, 2)]);
    for (_, id, _) in std::mem::take(&mut h.pending) {
        h.c.appended(h.now, id, Ok(5));
    }
    h.pump();
    assert_eq!((h.commit_errors(a), h.commit_errors(b)), (vec![0], vec![0]));
    assert_eq!(h.fetch("g", &[("t", 0)]), vec![2], "the later write wins");
}

#[test]
#[should_panic(expected = "never issued")]
fn completing_an_unknown_append_is_a_bug() {
    let mut h = H::new();
    h.c.appended(h.now, AppendId(99), Ok(1));
}

#[test]
fn request_kinds_convert() {
    let r = GroupRequest::from_kind(RequestKind::Heartbeat(HeartbeatRequest::default()));
    assert!(matches!(r, Ok(GroupRequest::Heartbeat(_))));
    assert!(GroupRequest::from_kind(RequestKind::ApiVersions(ApiVersionsRequest::default())).is_err());
}

#[test]
fn a_members_commit_that_changes_nothing_is_not_written() {
    let mut h = H::new();
    let (generation, members) = h.stable_group("g", 1, &["t"]);
    let m = members[0].clone();
    let w = h.commit(8, "g", generation, &m, &[("t", 0, 5), ("t", 1, 7)]);
    h.ack();
    assert_eq!(h.commit_errors(w), vec![code::NONE, code::NONE]);
    let written = h.log.values().map(Vec::len).sum::<usize>();
    // The same offsets again (an idle auto-committing consumer): answered, nothing written.
    let w = h.commit(8, "g", generation, &m, &[("t", 0, 5), ("t", 1, 7)]);
    assert!(h.pending.is_empty(), "{:?}", h.pending);
    assert_eq!(h.commit_errors(w), vec![code::NONE, code::NONE]);
    // One partition moved: only it is written.
    let w = h.commit(8, "g", generation, &m, &[("t", 0, 5), ("t", 1, 9)]);
    assert_eq!(h.pending.len(), 1);
    assert_eq!(h.pending[0].2.len(), 1, "only the partition that moved");
    // While that write is in flight, committing the old value again must be written (it
    // is not what will be committed once the write in flight lands).
    let w2 = h.commit(8, "g", generation, &m, &[("t", 1, 7)]);
    assert_eq!(h.pending.len(), 2);
    h.ack();
    assert_eq!(h.commit_errors(w), vec![code::NONE, code::NONE]);
    assert_eq!(h.commit_errors(w2), vec![code::NONE]);
    assert_eq!(h.fetch("g", &[("t", 0), ("t", 1)]), vec![5, 7]);
    assert_eq!(h.log.values().map(Vec::len).sum::<usize>(), written + 2);
}
