//! Simulated group consumers (Kafka's classic protocol, eager rebalancing) and the group's
//! part of a run ([`GroupSim`]). A member finds its coordinator (FindCoordinator, asking the
//! brokers in turn), joins (JoinGroup with KIP-394's member-id round), syncs (its leader
//! computes a range or round-robin assignment over the topic's partitions, in Kafka's
//! `ConsumerProtocol` encoding with the int16 version prefix), reads its committed offsets
//! (OffsetFetch), then heartbeats, fetches its partitions and commits its positions
//! (OffsetCommit) until told to rejoin (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION,
//! UNKNOWN_MEMBER_ID) or to find the coordinator again (NOT_COORDINATOR,
//! COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, a lost connection, a timeout).
//! During the fault phase members leave (LeaveGroup), crash (vanish, connections closed) and
//! pause past their session timeout on a schedule the seed draws; at the heal every member
//! comes back. What they see goes to a [`GroupHistory`] for [`crate::group_check`].
//!
//! A member is two processes, as a Kafka consumer is two kinds of connections: the group
//! protocol here (one connection, to the broker it asks now, one request at a time, sent
//! only from [`GroupMember::on_wake`]) and the data path, a [`Client`] in role
//! [`Role::GroupConsumer`] that reuses the simulated clients' routing and fetch checks.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gregor_engine::ConnId;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::check::Violation;
use crate::client::{Client, Ctx, Phase, Role, REQUEST_TIMEOUT_MS};
use crate::group_check::{
    check_group_history, code, stable_generation, CommitOutcome, CommitRecord, GroupCheckParams,
    GroupHistory, MemberView, ReadRecord, SyncRecord, GROUP_LIVENESS_MS,
};
use crate::history::ProcessId;
use crate::swarm::{exp_gap_ms, rng_for, GroupOptions};
use crate::wire::{self, WireError};

/// The one group of a run.
pub const GROUP_ID: &str = "sim-group";
/// Kafka's internal topic of committed offsets (the engine creates it on first use).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Process ids of group members start here (member `k`: `BASE + 2k` for its group protocol,
/// `BASE + 2k + 1` for its data path); the final offset reader is [`FINAL_READER_ID`].
pub const GROUP_PROCESS_BASE: ProcessId = 1_000_000;
const FINAL_READER_ID: ProcessId = GROUP_PROCESS_BASE + 999_998;
/// The API versions the group protocol speaks (kafka-protocol's ranges, capped at what
/// classic members use).
const GROUP_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
];
/// Pause before retrying after an error.
const BACKOFF_MS_MAX: u64 = 100;
/// A member that left or crashed comes back (as a new member) after up to this.
const RESTART_MS_MAX: u64 = 1_500;
/// Share of commits that repeat the member's last one exactly (the coordinator may
/// acknowledge those without a write).
const REPEAT_COMMIT_P: f64 = 0.2;
const PROTOCOL_TYPE: &str = "consumer";
const RANGE: &str = "range";
const ROUND_ROBIN: &str = "roundrobin";

/// Whether process `id` belongs to the group part of a run.
pub fn is_group_process(id: ProcessId) -> bool {
    id >= GROUP_PROCESS_BASE
}

/// Where a member is in the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Not running (not started yet, left, crashed); comes back at `restart_at_ms`.
    Down,
    Joining,
    /// Joined generation `generation`; the leader carries the assignments it computed.
    Syncing {
        assignments: Vec<(String, Vec<i32>)>,
    },
    /// Synced; `offsets_read` once its committed offsets were fetched.
    Stable {
        offsets_read: bool,
    },
    /// Sent LeaveGroup; goes Down once answered (or the connection is lost).
    Leaving,
    /// The final reader has read.
    Done,
}

/// A request in flight on the member's connection.
#[derive(Clone, Debug)]
enum Req {
    ApiVersions,
    FindCoordinator,
    Join,
    Sync,
    Heartbeat,
    /// Indexes into [`GroupHistory::commits`].
    Commit(Vec<usize>),
    OffsetFetch {
        sent_ms: u64,
    },
    Leave,
}

#[derive(Clone, Debug)]
struct Conn {
    node: usize,
    id: ConnId,
    next_seq: u64,
    next_correlation_id: i32,
    versions: Option<BTreeMap<i16, (i16, i16)>>,
    /// `(seq, correlation id, api, version, request)`.
    in_flight: Option<(u64, i32, ApiKey, i16, Req)>,
}

/// One simulated group member (or, with `final_reader`, the reader of committed offsets
/// after the heal).
pub struct GroupMember {
    pub id: ProcessId,
    /// The data path (a member only).
    pub consumer: Option<Client>,
    rng: ChaCha8Rng,
    opts: GroupOptions,
    state: State,
    conn: Option<Conn>,
    coordinator: Option<usize>,
    /// The broker to ask FindCoordinator next.
    find_next: usize,
    member_id: String,
    generation: i32,
    protocol: String,
    assignment: Vec<i32>,
    restart_at_ms: u64,
    paused_until_ms: Option<u64>,
    heartbeat_due_ms: u64,
    commit_due_ms: u64,
    /// When the next leave, crash or pause strikes (fault phase only).
    churn_at_ms: Option<u64>,
    commits_sent: u64,
    last_commit: BTreeMap<i32, (i64, String)>,
    /// The subscription version this member encodes (0..=3) and its protocol preference.
    subscription_version: i16,
    prefers_round_robin: bool,
    wake_scheduled_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// What a member's callbacks need besides the shared [`Ctx`].
struct GroupCtx<'a> {
    history: &'a mut GroupHistory,
}

impl GroupMember {
    fn new(id: ProcessId, consumer: Option<Client>, rng: ChaCha8Rng, opts: GroupOptions) -> GroupMember {
        let mut m = GroupMember {
            id,
            consumer,
            rng,
            opts,
            state: State::Down,
            conn: None,
            coordinator: None,
            find_next: id as usize,
            member_id: String::new(),
            generation: -1,
            protocol: String::new(),
            assignment: Vec::new(),
            restart_at_ms: 0,
            paused_until_ms: None,
            heartbeat_due_ms: 0,
            commit_due_ms: 0,
            churn_at_ms: None,
            commits_sent: 0,
            last_commit: BTreeMap::new(),
            subscription_version: 0,
            prefers_round_robin: false,
            wake_scheduled_ms: None,
            last_error: None,
        };
        m.subscription_version = m.rng.gen_range(0..=3);
        m.prefers_round_robin = m.rng.gen_bool(0.5);
        m
    }

    fn is_final_reader(&self) -> bool {
        self.consumer.is_none()
    }

    /// For the liveness check: synced and not told to rejoin since.
    fn view(&self) -> MemberView {
        match self.state {
            State::Stable { .. } if self.paused_until_ms.is_none() => {
                Some((self.generation, self.assignment.clone()))
            }
            _ => None,
        }
    }

    fn wake_in(&mut self, ctx: &mut Ctx, delay_ms: u64) {
        let at = ctx.now_ms + delay_ms;
        if self.wake_scheduled_ms.is_some_and(|w| w <= at && w >= ctx.now_ms) {
            return;
        }
        self.wake_scheduled_ms = Some(at);
        ctx.transport.wake_at(self.id, at);
    }

    fn backoff(&mut self, ctx: &mut Ctx) {
        let d = self.rng.gen_range(1..=BACKOFF_MS_MAX);
        self.wake_in(ctx, d);
    }

    fn note(&mut self, what: String) {
        self.last_error = Some(what);
    }

    /// Time to act: the next request, if none is in flight.
    fn on_wake(&mut self, ctx: &mut Ctx, g: &mut GroupCtx) {
        if self.wake_scheduled_ms.is_some_and(|w| w <= ctx.now_ms) {
            self.wake_scheduled_ms = None;
        }
        if let Some(until) = self.paused_until_ms {
            if ctx.now_ms < until {
                return self.wake_in(ctx, until - ctx.now_ms);
            }
            self.paused_until_ms = None;
            let assigned = self.assigned_set();
            if let Some(c) = self.consumer.as_mut() {
                c.assign(ctx, assigned);
            }
        }
        if self.churn_at_ms.is_some_and(|at| at <= ctx.now_ms) && ctx.shared.phase == Phase::Safety {
            self.churn(ctx, g);
        }
        match self.state {
            State::Done => return,
            State::Down if ctx.now_ms < self.restart_at_ms => {
                return self.wake_in(ctx, self.restart_at_ms - ctx.now_ms);
            }
            State::Down => self.start(ctx),
            _ => {}
        }
        if self.conn.as_ref().is_some_and(|c| c.in_flight.is_some()) {
            return;
        }
        if self.state == State::Leaving {
            return self.send_leave(ctx);
        }
        let Some(coordinator) = self.coordinator else {
            return self.find_coordinator(ctx);
        };
        if !self.connect(ctx, coordinator) {
            return;
        }
        match self.state.clone() {
            State::Joining => self.send_join(ctx),
            State::Syncing { assignments } => self.send_sync(ctx, assignments),
            State::Stable { offsets_read: false } => self.send_offset_fetch(ctx),
            State::Stable { offsets_read: true } => self.stable_step(ctx, g),
            State::Down | State::Leaving | State::Done => {}
        }
    }

    /// A (new) process: joins as a new member.
    fn start(&mut self, ctx: &mut Ctx) {
        self.state = if self.is_final_reader() {
            State::Stable { offsets_read: false }
        } else {
            State::Joining
        };
        self.member_id.clear();
        self.generation = -1;
        self.assignment.clear();
        self.schedule_churn(ctx);
    }

    fn schedule_churn(&mut self, ctx: &Ctx) {
        self.churn_at_ms = match self.opts.churn_interval_ms_mean {
            Some(mean) if !self.is_final_reader() && ctx.shared.phase == Phase::Safety => {
                Some(ctx.now_ms + exp_gap_ms(&mut self.rng, mean))
            }
            _ => None,
        };
    }

    /// Leave, crash or pause (the seed's schedule).
    fn churn(&mut self, ctx: &mut Ctx, g: &mut GroupCtx) {
        self.churn_at_ms = None;
        if matches!(self.state, State::Down | State::Leaving | State::Done) {
            return;
        }
        match self.rng.gen_range(0..3) {
            0 => {
                self.revoke(ctx);
                self.state = State::Leaving;
                ctx.history
                    .nemesis(ctx.now_ms, format!("group member {} leaves", self.id));
            }
            1 => {
                ctx.history
                    .nemesis(ctx.now_ms, format!("group member {} crashes", self.id));
                self.crash(ctx, g);
            }
            _ => {
                let session = self.opts.session_timeout_ms;
                let pause_ms = session + self.rng.gen_range(1..=session);
                self.paused_until_ms = Some(ctx.now_ms + pause_ms);
                if let Some(c) = self.consumer.as_mut() {
                    c.assign(ctx, None);
                }
                ctx.history.nemesis(
                    ctx.now_ms,
                    format!("group member {} pauses for {pause_ms}ms", self.id),
                );
                self.schedule_churn(ctx);
            }
        }
    }

    /// The process vanishes: connections close, what was in flight is in doubt; it comes
    /// back later as a new member.
    fn crash(&mut self, ctx: &mut Ctx, g: &mut GroupCtx) {
        if let Some(conn) = self.conn.take() {
            ctx.transport.close(conn.id);
            if let Some((_, _, _, _, req)) = conn.in_flight {
                self.settle_lost(g, &req);
            }
        }
        if let Some(c) = self.consumer.as_mut() {
            c.close_all(ctx, "group member crashed");
        }
        self.go_down(ctx);
    }

    fn go_down(&mut self, ctx: &mut Ctx) {
        self.state = State::Down;
        self.coordinator = None;
        self.assignment.clear();
        self.paused_until_ms = None;
        self.restart_at_ms = ctx.now_ms + self.rng.gen_range(1..=RESTART_MS_MAX);
        self.wake_in(ctx, self.restart_at_ms - ctx.now_ms);
    }

    fn assigned_set(&self) -> Option<BTreeSet<i32>> {
        match self.state {
            State::Stable { offsets_read: true } => Some(self.assignment.iter().copied().collect()),
            _ => None,
        }
    }

    /// Stops fetching (eager rebalancing: a member gives up everything before it rejoins).
    fn revoke(&mut self, ctx: &mut Ctx) {
        self.assignment.clear();
        if let Some(c) = self.consumer.as_mut() {
            c.assign(ctx, None);
        }
    }

    fn rejoin(&mut self, ctx: &mut Ctx) {
        self.revoke(ctx);
        self.state = State::Joining;
    }

    /// Connects to broker `node` (closing a connection elsewhere); true once a request can go.
    fn connect(&mut self, ctx: &mut Ctx, node: usize) -> bool {
        if let Some(c) = &self.conn {
            if c.node == node {
                return c.versions.is_some();
            }
            ctx.transport.close(c.id);
            self.conn = None;
        }
        let Some(id) = ctx.transport.connect(self.id, node) else {
            if self.coordinator == Some(node) {
                self.coordinator = None;
            }
            self.find_next = node + 1;
            self.backoff(ctx);
            return false;
        };
        self.conn = Some(Conn {
            node,
            id,
            next_seq: 0,
            next_correlation_id: 1,
            versions: None,
            in_flight: None,
        });
        let body = wire::api_versions_request();
        self.send(ctx, ApiKey::ApiVersions, 3, Req::ApiVersions, &body);
        false
    }

    /// A version of `api` both sides speak, drawn uniformly.
    fn pick_version(&mut self, ctx: &mut Ctx, api: ApiKey) -> Option<i16> {
        let broker = self.conn.as_ref()?.versions.as_ref()?;
        let &(_, lo, hi) = GROUP_VERSIONS.iter().find(|(k, _, _)| *k == api)?;
        let (lo, hi) = match broker.get(&(api as i16)) {
            Some(&(blo, bhi)) => (lo.max(blo), hi.min(bhi)),
            None => (1, 0),
        };
        if lo > hi {
            ctx.violations.push(Violation {
                kind: "protocol",
                at_ms: ctx.now_ms,
                detail: format!("broker offers no {api:?} version a group member speaks"),
            });
            return None;
        }
        Some(self.rng.gen_range(lo..=hi))
    }

    fn send<R: Encodable>(&mut self, ctx: &mut Ctx, api: ApiKey, version: i16, req: Req, body: &R) {
        let Some(conn) = self.conn.as_mut() else { return };
        let correlation_id = conn.next_correlation_id;
        let client_id = format!("sim-group-{}", self.id);
        let frame = match wire::encode_request(api, version, correlation_id, &client_id, body) {
            Ok(f) => f,
            Err(e) => {
                ctx.violations.push(Violation {
                    kind: "sim-bug",
                    at_ms: ctx.now_ms,
                    detail: format!("cannot encode {api:?} v{version}: {e}"),
                });
                return;
            }
        };
        conn.next_correlation_id = conn.next_correlation_id.wrapping_add(1);
        let seq = conn.next_seq;
        conn.next_seq += 1;
        let timeout_ms = match req {
            // A JoinGroup waits for the rebalance (Kafka: rebalance timeout + request timeout).
            Req::Join => self.opts.rebalance_timeout_ms + REQUEST_TIMEOUT_MS,
            _ => REQUEST_TIMEOUT_MS,
        };
        conn.in_flight = Some((seq, correlation_id, api, version, req));
        let id = conn.id;
        ctx.transport
            .send(self.id, id, seq, frame, ctx.now_ms + timeout_ms);
    }

    fn find_coordinator(&mut self, ctx: &mut Ctx) {
        // Ask the broker already connected, else the next one in turn.
        let node = match &self.conn {
            Some(c) => c.node,
            None => {
                let n = self.find_next % ctx.transport.nodes().max(1);
                self.find_next = n + 1;
                n
            }
        };
        if !self.connect(ctx, node) {
            return;
        }
        let Some(version) = self.pick_version(ctx, ApiKey::FindCoordinator) else {
            return self.backoff(ctx);
        };
        let mut r = FindCoordinatorRequest::default();
        if version >= 4 {
            r.coordinator_keys = vec![StrBytes::from_static_str(GROUP_ID)];
        } else {
            r.key = StrBytes::from_static_str(GROUP_ID);
        }
        self.send(ctx, ApiKey::FindCoordinator, version, Req::FindCoordinator, &r);
    }

    fn subscription(&self) -> Bytes {
        let mut s = ConsumerProtocolSubscription::default();
        s.topics = vec![StrBytes::from_static_str(crate::runner::TOPIC)];
        let v = self.subscription_version;
        if v >= 1 {
            s.owned_partitions = self.owned();
        }
        if v >= 2 {
            s.generation_id = self.generation;
        }
        encode_versioned(&s, v)
    }

    fn owned(&self) -> Vec<OwnedTopic> {
        if self.assignment.is_empty() {
            return Vec::new();
        }
        let mut t = OwnedTopic::default();
        t.topic = TopicName(StrBytes::from_static_str(crate::runner::TOPIC));
        t.partitions = self.assignment.clone();
        vec![t]
    }

    fn send_join(&mut self, ctx: &mut Ctx) {
        let Some(version) = self.pick_version(ctx, ApiKey::JoinGroup) else {
            return self.backoff(ctx);
        };
        let metadata = self.subscription();
        let mut names = [RANGE, ROUND_ROBIN];
        if self.prefers_round_robin {
            names.reverse();
        }
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(StrBytes::from_static_str(GROUP_ID));
        r.session_timeout_ms = self.opts.session_timeout_ms as i32;
        if version >= 1 {
            r.rebalance_timeout_ms = self.opts.rebalance_timeout_ms as i32;
        }
        r.member_id = StrBytes::from_string(self.member_id.clone());
        r.protocol_type = StrBytes::from_static_str(PROTOCOL_TYPE);
        r.protocols = names
            .iter()
            .map(|n| {
                let mut p = JoinGroupRequestProtocol::default();
                p.name = StrBytes::from_static_str(n);
                p.metadata = metadata.clone();
                p
            })
            .collect();
        self.send(ctx, ApiKey::JoinGroup, version, Req::Join, &r);
    }

    fn send_sync(&mut self, ctx: &mut Ctx, assignments: Vec<(String, Vec<i32>)>) {
        let Some(version) = self.pick_version(ctx, ApiKey::SyncGroup) else {
            return self.backoff(ctx);
        };
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(StrBytes::from_static_str(GROUP_ID));
        r.generation_id = self.generation;
        r.member_id = StrBytes::from_string(self.member_id.clone());
        if version >= 5 {
            r.protocol_type = Some(StrBytes::from_static_str(PROTOCOL_TYPE));
            r.protocol_name = Some(StrBytes::from_string(self.protocol.clone()));
        }
        let assignment_version = self.rng.gen_range(0..=3);
        r.assignments = assignments
            .into_iter()
            .map(|(member, partitions)| {
                let mut t = AssignedTopic::default();
                t.topic = TopicName(StrBytes::from_static_str(crate::runner::TOPIC));
                t.partitions = partitions;
                let mut a = ConsumerProtocolAssignment::default();
                a.assigned_partitions = vec![t];
                let mut s = SyncGroupRequestAssignment::default();
                s.member_id = StrBytes::from_string(member);
                s.assignment = encode_versioned(&a, assignment_version);
                s
            })
            .collect();
        self.send(ctx, ApiKey::SyncGroup, version, Req::Sync, &r);
    }

    fn send_offset_fetch(&mut self, ctx: &mut Ctx) {
        let Some(version) = self.pick_version(ctx, ApiKey::OffsetFetch) else {
            return self.backoff(ctx);
        };
        let partitions: Vec<i32> = (0..ctx.opts.partitions).collect();
        let topic = TopicName(StrBytes::from_static_str(crate::runner::TOPIC));
        let mut r = OffsetFetchRequest::default();
        if version >= 8 {
            let mut t = OffsetFetchRequestTopics::default();
            t.name = topic;
            t.partition_indexes = partitions;
            let mut g = OffsetFetchRequestGroup::default();
            g.group_id = GroupId(StrBytes::from_static_str(GROUP_ID));
            g.topics = Some(vec![t]);
            r.groups = vec![g];
        } else {
            let mut t = OffsetFetchRequestTopic::default();
            t.name = topic;
            t.partition_indexes = partitions;
            r.group_id = GroupId(StrBytes::from_static_str(GROUP_ID));
            r.topics = Some(vec![t]);
        }
        let req = Req::OffsetFetch { sent_ms: ctx.now_ms };
        self.send(ctx, ApiKey::OffsetFetch, version, req, &r);
    }

    /// Synced and positioned: heartbeat when due, commit now and then, else sleep.
    fn stable_step(&mut self, ctx: &mut Ctx, g: &mut GroupCtx) {
        let now = ctx.now_ms;
        if now >= self.heartbeat_due_ms {
            return self.send_heartbeat(ctx);
        }
        let committing = ctx.shared.phase == Phase::Safety && !self.assignment.is_empty();
        if committing && now >= self.commit_due_ms {
            return self.send_commit(ctx, g);
        }
        let mut next = self.heartbeat_due_ms;
        if committing {
            next = next.min(self.commit_due_ms);
        }
        if let Some(at) = self.churn_at_ms {
            next = next.min(at);
        }
        self.wake_in(ctx, next.saturating_sub(now).max(1));
    }

    fn send_heartbeat(&mut self, ctx: &mut Ctx) {
        let Some(version) = self.pick_version(ctx, ApiKey::Heartbeat) else {
            return self.backoff(ctx);
        };
        let mut r = HeartbeatRequest::default();
        r.group_id = GroupId(StrBytes::from_static_str(GROUP_ID));
        r.generation_id = self.generation;
        r.member_id = StrBytes::from_string(self.member_id.clone());
        self.send(ctx, ApiKey::Heartbeat, version, Req::Heartbeat, &r);
    }

    fn send_commit(&mut self, ctx: &mut Ctx, g: &mut GroupCtx) {
        let Some(version) = self.pick_version(ctx, ApiKey::OffsetCommit) else {
            return self.backoff(ctx);
        };
        self.commits_sent += 1;
        let repeat = self.rng.gen_bool(REPEAT_COMMIT_P);
        let mut indexes = Vec::new();
        let mut partitions = Vec::new();
        for &p in &self.assignment.clone() {
            let fresh = (
                self.consumer.as_ref().map_or(0, |c| c.position(p)),
                format!("m{}.{}", self.id - GROUP_PROCESS_BASE, self.commits_sent),
            );
            let (offset, metadata) = match self.last_commit.get(&p) {
                Some(last) if repeat => last.clone(),
                _ => fresh,
            };
            self.last_commit.insert(p, (offset, metadata.clone()));
            indexes.push(g.history.commit_sent(CommitRecord {
                process: self.id,
                generation: self.generation,
                partition: p,
                offset,
                metadata: metadata.clone(),
                sent_ms: ctx.now_ms,
                outcome: CommitOutcome::Pending,
            }));
            let mut cp = OffsetCommitRequestPartition::default();
            cp.partition_index = p;
            cp.committed_offset = offset;
            cp.committed_metadata = Some(StrBytes::from_string(metadata));
            partitions.push(cp);
        }
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(StrBytes::from_static_str(crate::runner::TOPIC));
        t.partitions = partitions;
        let mut r = OffsetCommitRequest::default();
        r.group_id = GroupId(StrBytes::from_static_str(GROUP_ID));
        r.generation_id_or_member_epoch = self.generation;
        r.member_id = StrBytes::from_string(self.member_id.clone());
        r.topics = vec![t];
        self.commit_due_ms = ctx.now_ms + self.rng.gen_range(1..=self.opts.commit_interval_ms_max);
        self.send(ctx, ApiKey::OffsetCommit, version, Req::Commit(indexes), &r);
    }

    fn send_leave(&mut self, ctx: &mut Ctx) {
        let Some(coordinator) = self.coordinator.filter(|_| !self.member_id.is_empty()) else {
            // Nothing to leave (not joined yet, or the coordinator is unknown): just go.
            return self.go_down(ctx);
        };
        if !self.connect(ctx, coordinator) {
            return;
        }
        let Some(version) = self.pick_version(ctx, ApiKey::LeaveGroup) else {
            return self.go_down(ctx);
        };
        let mut r = LeaveGroupRequest::default();
        r.group_id = GroupId(StrBytes::from_static_str(GROUP_ID));
        if version >= 3 {
            let mut m = MemberIdentity::default();
            m.member_id = StrBytes::from_string(self.member_id.clone());
            r.members = vec![m];
        } else {
            r.member_id = StrBytes::from_string(self.member_id.clone());
        }
        self.send(ctx, ApiKey::LeaveGroup, version, Req::Leave, &r);
    }

    /// The request in flight on a lost connection has an unknown outcome.
    fn settle_lost(&mut self, g: &mut GroupCtx, req: &Req) {
        if let Req::Commit(indexes) = req {
            for &i in indexes {
                g.history.settle(i, CommitOutcome::InDoubt);
            }
        }
    }

    /// The connection died or timed out: find the coordinator again; a sync restarts from
    /// the join (Kafka's clients do the same).
    fn on_conn_lost(&mut self, ctx: &mut Ctx, g: &mut GroupCtx, conn: ConnId, close: bool) {
        let Some(c) = self.conn.take_if(|c| c.id == conn) else {
            return;
        };
        if close {
            ctx.transport.close(c.id);
        }
        if let Some((_, _, _, _, req)) = &c.in_flight {
            self.settle_lost(g, req);
        }
        if self.coordinator == Some(c.node) {
            self.coordinator = None;
        }
        self.find_next = c.node + 1;
        match self.state {
            State::Syncing { .. } => self.state = State::Joining,
            State::Leaving => return self.go_down(ctx),
            _ => {}
        }
        self.note(format!("connection to broker {} lost", c.node + 1));
        self.backoff(ctx);
    }

    fn on_timeout(&mut self, ctx: &mut Ctx, g: &mut GroupCtx, conn: ConnId, seq: u64) {
        let timed_out = self
            .conn
            .as_ref()
            .is_some_and(|c| c.id == conn && c.in_flight.as_ref().is_some_and(|f| f.0 == seq));
        if timed_out {
            self.on_conn_lost(ctx, g, conn, true);
        }
    }

    fn on_response(&mut self, ctx: &mut Ctx, g: &mut GroupCtx, conn: ConnId, seq: u64, frame: Bytes) {
        let Some(c) = self.conn.as_mut().filter(|c| c.id == conn) else {
            return;
        };
        let node = c.node;
        let Some((want_seq, correlation_id, api, version, req)) = c.in_flight.take() else {
            return;
        };
        if want_seq != seq || wire::response_correlation_id(&frame) != Some(correlation_id) {
            ctx.violations.push(Violation {
                kind: "protocol",
                at_ms: ctx.now_ms,
                detail: format!("{api:?} answer {seq} on conn {conn} does not match request {want_seq}"),
            });
        }
        if let Err(e) = self.handle(ctx, g, node, api, version, &req, &frame) {
            ctx.violations.push(Violation {
                kind: "protocol",
                at_ms: ctx.now_ms,
                detail: format!("group {api:?} v{version}: {e}"),
            });
            self.settle_lost(g, &req);
            self.on_conn_lost(ctx, g, conn, true);
            return;
        }
        self.wake_in(ctx, 0);
    }

    #[allow(clippy::too_many_arguments)]
    fn handle(
        &mut self,
        ctx: &mut Ctx,
        g: &mut GroupCtx,
        node: usize,
        api: ApiKey,
        version: i16,
        req: &Req,
        frame: &Bytes,
    ) -> Result<(), WireError> {
        match req {
            Req::ApiVersions => {
                let (_, r) = wire::decode_response::<ApiVersionsResponse>(api, version, frame)?;
                let (error, ranges) = wire::parse_api_versions(&r);
                if error != code::NONE {
                    return Err(WireError(format!("ApiVersions error {error}")));
                }
                if let Some(c) = self.conn.as_mut() {
                    c.versions = Some(ranges);
                }
            }
            Req::FindCoordinator => {
                let (_, r) = wire::decode_response::<FindCoordinatorResponse>(api, version, frame)?;
                self.on_find_coordinator(ctx, version, &r)?;
            }
            Req::Join => {
                let (_, r) = wire::decode_response::<JoinGroupResponse>(api, version, frame)?;
                self.on_join(ctx, &r)?;
            }
            Req::Sync => {
                let (_, r) = wire::decode_response::<SyncGroupResponse>(api, version, frame)?;
                self.on_sync(ctx, g, &r)?;
            }
            Req::Heartbeat => {
                let (_, r) = wire::decode_response::<HeartbeatResponse>(api, version, frame)?;
                if r.error_code == code::NONE {
                    self.heartbeat_due_ms = ctx.now_ms + self.opts.session_timeout_ms / 3;
                } else {
                    self.on_group_error(ctx, r.error_code, "Heartbeat");
                }
            }
            Req::Commit(indexes) => {
                let (_, r) = wire::decode_response::<OffsetCommitResponse>(api, version, frame)?;
                self.on_commit(ctx, g, node, indexes, &r)?;
            }
            Req::OffsetFetch { sent_ms } => {
                let (_, r) = wire::decode_response::<OffsetFetchResponse>(api, version, frame)?;
                self.on_offset_fetch(ctx, g, node, *sent_ms, version, &r)?;
            }
            Req::Leave => {
                let _ = wire::decode_response::<LeaveGroupResponse>(api, version, frame)?;
                self.go_down(ctx);
            }
        }
        Ok(())
    }

    fn on_find_coordinator(
        &mut self,
        ctx: &mut Ctx,
        version: i16,
        r: &FindCoordinatorResponse,
    ) -> Result<(), WireError> {
        let (error, node_id) = if version >= 4 {
            let c = r
                .coordinators
                .iter()
                .find(|c| c.key.as_str() == GROUP_ID)
                .ok_or_else(|| WireError("FindCoordinator answer lacks our group".into()))?;
            (c.error_code, c.node_id.0)
        } else {
            (r.error_code, r.node_id.0)
        };
        if error != code::NONE {
            self.note(format!("FindCoordinator: error {error}"));
            // Ask the next broker after a pause.
            if let Some(c) = self.conn.take() {
                ctx.transport.close(c.id);
                self.find_next = c.node + 1;
            }
            self.backoff(ctx);
            return Ok(());
        }
        let index = usize::try_from(node_id - 1)
            .ok()
            .filter(|&n| n < ctx.transport.nodes())
            .ok_or_else(|| WireError(format!("FindCoordinator names unknown broker {node_id}")))?;
        self.coordinator = Some(index);
        Ok(())
    }

    /// Errors a Heartbeat, SyncGroup, OffsetCommit or OffsetFetch may carry.
    fn on_group_error(&mut self, ctx: &mut Ctx, error: i16, what: &str) {
        self.note(format!("{what}: error {error}"));
        match error {
            code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION => self.rejoin(ctx),
            code::UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                self.generation = -1;
                self.rejoin(ctx);
            }
            e if code::coordinator_moved(e) => {
                self.coordinator = None;
                if matches!(self.state, State::Syncing { .. }) {
                    self.state = State::Joining;
                }
                self.backoff(ctx);
            }
            _ => self.backoff(ctx),
        }
    }

    fn on_join(&mut self, ctx: &mut Ctx, r: &JoinGroupResponse) -> Result<(), WireError> {
        if self.state != State::Joining {
            return Ok(()); // churned meanwhile
        }
        match r.error_code {
            code::NONE => {}
            code::MEMBER_ID_REQUIRED => {
                self.member_id = r.member_id.to_string();
                return Ok(());
            }
            e if code::coordinator_moved(e) => {
                self.coordinator = None;
                self.note(format!("JoinGroup: error {e}"));
                self.backoff(ctx);
                return Ok(());
            }
            code::UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                self.note("JoinGroup: unknown member".into());
                self.backoff(ctx);
                return Ok(());
            }
            e => {
                self.note(format!("JoinGroup: error {e}"));
                self.backoff(ctx);
                return Ok(());
            }
        }
        self.member_id = r.member_id.to_string();
        self.generation = r.generation_id;
        self.protocol = r
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let assignments = if r.leader.as_str() == self.member_id {
            self.assign_as_leader(ctx, r)?
        } else {
            Vec::new()
        };
        self.state = State::Syncing { assignments };
        Ok(())
    }

    /// The leader's assignment over the members' subscriptions, with the protocol the
    /// coordinator chose.
    fn assign_as_leader(
        &mut self,
        ctx: &mut Ctx,
        r: &JoinGroupResponse,
    ) -> Result<Vec<(String, Vec<i32>)>, WireError> {
        let mut members: Vec<String> = Vec::new();
        for m in &r.members {
            let s: ConsumerProtocolSubscription = decode_versioned(&m.metadata)
                .map_err(|e| WireError(format!("member {}'s subscription: {e}", m.member_id.as_str())))?;
            if !s.topics.iter().any(|t| t.as_str() == crate::runner::TOPIC) {
                return Err(WireError(format!(
                    "member {} does not subscribe to the topic",
                    m.member_id.as_str()
                )));
            }
            members.push(m.member_id.to_string());
        }
        members.sort();
        if !members.contains(&self.member_id) {
            return Err(WireError(
                "the leader is not among the members it was given".into(),
            ));
        }
        let partitions = ctx.opts.partitions;
        let round_robin = match self.protocol.as_str() {
            RANGE => false,
            ROUND_ROBIN => true,
            other => return Err(WireError(format!("coordinator chose protocol {other:?}"))),
        };
        Ok(assign(&members, partitions, round_robin))
    }

    fn on_sync(&mut self, ctx: &mut Ctx, g: &mut GroupCtx, r: &SyncGroupResponse) -> Result<(), WireError> {
        if !matches!(self.state, State::Syncing { .. }) {
            return Ok(());
        }
        if r.error_code != code::NONE {
            self.on_group_error(ctx, r.error_code, "SyncGroup");
            if matches!(self.state, State::Syncing { .. }) {
                self.state = State::Joining;
            }
            return Ok(());
        }
        let mut partitions: Vec<i32> = if r.assignment.is_empty() {
            Vec::new()
        } else {
            let a: ConsumerProtocolAssignment =
                decode_versioned(&r.assignment).map_err(|e| WireError(format!("assignment: {e}")))?;
            let mut ps = Vec::new();
            for t in &a.assigned_partitions {
                if t.topic.0.as_str() != crate::runner::TOPIC {
                    return Err(WireError(format!(
                        "assigned unknown topic {}",
                        t.topic.0.as_str()
                    )));
                }
                ps.extend(t.partitions.iter().copied());
            }
            ps
        };
        partitions.sort_unstable();
        g.history.syncs.push(SyncRecord {
            at_ms: ctx.now_ms,
            process: self.id,
            member_id: self.member_id.clone(),
            generation: self.generation,
            partitions: partitions.clone(),
        });
        self.assignment = partitions;
        self.state = State::Stable { offsets_read: false };
        self.heartbeat_due_ms = ctx.now_ms + self.opts.session_timeout_ms / 3;
        self.commit_due_ms = ctx.now_ms + self.rng.gen_range(1..=self.opts.commit_interval_ms_max);
        Ok(())
    }

    fn on_commit(
        &mut self,
        ctx: &mut Ctx,
        g: &mut GroupCtx,
        node: usize,
        indexes: &[usize],
        r: &OffsetCommitResponse,
    ) -> Result<(), WireError> {
        let mut first_error = code::NONE;
        for &i in indexes {
            let p = g.history.commits[i].partition;
            let error = r
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == crate::runner::TOPIC)
                .flat_map(|t| t.partitions.iter())
                .find(|x| x.partition_index == p)
                .map(|x| x.error_code)
                .ok_or_else(|| WireError(format!("OffsetCommit answer lacks partition {p}")))?;
            let outcome = match error {
                code::NONE => CommitOutcome::Acked {
                    at_ms: ctx.now_ms,
                    node,
                },
                e if code::rejects_commit_outright(e) => CommitOutcome::Rejected { code: e },
                _ => CommitOutcome::InDoubt,
            };
            g.history.settle(i, outcome);
            if first_error == code::NONE {
                first_error = error;
            }
        }
        if first_error != code::NONE {
            self.on_group_error(ctx, first_error, "OffsetCommit");
        }
        Ok(())
    }

    fn on_offset_fetch(
        &mut self,
        ctx: &mut Ctx,
        g: &mut GroupCtx,
        node: usize,
        sent_ms: u64,
        version: i16,
        r: &OffsetFetchResponse,
    ) -> Result<(), WireError> {
        if self.state != (State::Stable { offsets_read: false }) {
            return Ok(());
        }
        let (error, found) = offset_fetch_result(r, version)?;
        if let Some(e) = error.or_else(|| found.iter().map(|f| f.1).find(|&e| e != code::NONE)) {
            self.on_group_error(ctx, e, "OffsetFetch");
            return Ok(());
        }
        for (p, _, value) in &found {
            if !(0..ctx.opts.partitions).contains(p) {
                return Err(WireError(format!("OffsetFetch answers partition {p}")));
            }
            g.history.reads.push(ReadRecord {
                process: self.id,
                node,
                sent_ms,
                answered_ms: ctx.now_ms,
                partition: *p,
                value: value.clone(),
                final_read: self.is_final_reader(),
            });
        }
        if self.is_final_reader() {
            self.state = State::Done;
            return Ok(());
        }
        self.state = State::Stable { offsets_read: true };
        if let Some(c) = self.consumer.as_mut() {
            for (p, _, value) in &found {
                if self.assignment.contains(p) {
                    c.seek(*p, value.as_ref().map_or(0, |v| v.0));
                }
            }
            if self.paused_until_ms.is_none() {
                let assigned = self.assignment.iter().copied().collect();
                c.assign(ctx, Some(assigned));
            }
        }
        Ok(())
    }
}

/// `(top-level error, [(partition, error, committed (offset, metadata))])` of our group and
/// topic.
type Fetched = (Option<i16>, Vec<(i32, i16, Option<(i64, String)>)>);

fn offset_fetch_result(r: &OffsetFetchResponse, version: i16) -> Result<Fetched, WireError> {
    let value = |offset: i64, metadata: &Option<StrBytes>| {
        (offset >= 0).then(|| {
            (
                offset,
                metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
            )
        })
    };
    if version >= 8 {
        let g = r
            .groups
            .iter()
            .find(|g| g.group_id.as_str() == GROUP_ID)
            .ok_or_else(|| WireError("OffsetFetch answer lacks our group".into()))?;
        let error = (g.error_code != code::NONE).then_some(g.error_code);
        let found = g
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == crate::runner::TOPIC)
            .flat_map(|t| t.partitions.iter())
            .map(|p| {
                (
                    p.partition_index,
                    p.error_code,
                    value(p.committed_offset, &p.metadata),
                )
            })
            .collect();
        return Ok((error, found));
    }
    let error = (version >= 2 && r.error_code != code::NONE).then_some(r.error_code);
    let found = r
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == crate::runner::TOPIC)
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                p.error_code,
                value(p.committed_offset, &p.metadata),
            )
        })
        .collect();
    Ok((error, found))
}

/// Kafka's range (contiguous runs, the first members one more) or round-robin assignment of
/// one topic's partitions over `members` (sorted by member id).
pub fn assign(members: &[String], partitions: i32, round_robin: bool) -> Vec<(String, Vec<i32>)> {
    let n = members.len().max(1);
    let mut out: Vec<(String, Vec<i32>)> = members.iter().map(|m| (m.clone(), Vec::new())).collect();
    if out.is_empty() {
        return out;
    }
    let per = partitions as usize / n;
    let extra = partitions as usize % n;
    for p in 0..partitions {
        let i = if round_robin {
            p as usize % n
        } else {
            // Members below `extra` take `per + 1` partitions each.
            let q = p as usize;
            let big = extra * (per + 1);
            if q < big {
                q / (per + 1)
            } else {
                extra + (q - big) / per.max(1)
            }
        };
        out[i].1.push(p);
    }
    out
}

/// `[int16 version][body]`, as Kafka's `ConsumerProtocol` serializes.
fn encode_versioned<T: Encodable>(body: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Our own structs at a version they support: encoding cannot fail.
    body.encode(&mut buf, version)
        .expect("consumer protocol bodies encode at versions 0-3");
    buf.freeze()
}

fn decode_versioned<T: Decodable>(bytes: &Bytes) -> Result<T, String> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err("shorter than its version".into());
    }
    let version = buf.get_i16();
    // Kafka reads a newer version with the newest layout it knows.
    T::decode(&mut buf, version.clamp(0, 3)).map_err(|e| e.to_string())
}

/// The group part of a run: its members, what they saw, and when the group became stable
/// after the heal.
pub struct GroupSim {
    members: Vec<GroupMember>,
    final_reader: Option<GroupMember>,
    pub history: GroupHistory,
    opts: GroupOptions,
    seed: u64,
    heal_ms: Option<u64>,
    /// When (and in which generation) the live members first formed a stable generation
    /// after the heal.
    pub stable: Option<(u64, i32)>,
    liveness_reported: bool,
}

impl GroupSim {
    pub fn new(seed: u64, opts: &GroupOptions, partitions: i32) -> GroupSim {
        let members = (0..opts.members)
            .map(|k| {
                let id = GROUP_PROCESS_BASE + 2 * k as ProcessId;
                let consumer = Client::new(
                    id + 1,
                    Role::GroupConsumer,
                    rng_for(seed, &format!("group/{k}/consumer")),
                    partitions,
                );
                GroupMember::new(
                    id,
                    Some(consumer),
                    rng_for(seed, &format!("group/{k}")),
                    opts.clone(),
                )
            })
            .collect();
        GroupSim {
            members,
            final_reader: None,
            history: GroupHistory::default(),
            opts: opts.clone(),
            seed,
            heal_ms: None,
            stable: None,
            liveness_reported: false,
        }
    }

    /// Members start at random times in the first half second.
    pub fn start(&mut self, ctx: &mut Ctx) {
        for m in &mut self.members {
            let at = m.rng.gen_range(0..500);
            m.restart_at_ms = at;
            ctx.transport.wake_at(m.id, at);
        }
    }

    /// Runs `f` on process `id`: a member's protocol part, or its data path.
    fn with(
        &mut self,
        ctx: &mut Ctx,
        id: ProcessId,
        on_member: impl FnOnce(&mut GroupMember, &mut Ctx, &mut GroupCtx),
        on_consumer: impl FnOnce(&mut Client, &mut Ctx),
    ) {
        let consumer_part = id != FINAL_READER_ID && (id - GROUP_PROCESS_BASE) % 2 == 1;
        let GroupSim {
            members,
            final_reader,
            history,
            ..
        } = self;
        let m = if id == FINAL_READER_ID {
            final_reader.as_mut()
        } else {
            members.get_mut(((id - GROUP_PROCESS_BASE) / 2) as usize)
        };
        let Some(m) = m else { return };
        if consumer_part {
            if let Some(c) = m.consumer.as_mut() {
                on_consumer(c, ctx);
            }
        } else {
            on_member(m, ctx, &mut GroupCtx { history });
        }
    }

    pub fn on_wake(&mut self, ctx: &mut Ctx, id: ProcessId) {
        self.with(ctx, id, |m, ctx, g| m.on_wake(ctx, g), |c, ctx| c.on_wake(ctx));
    }

    pub fn on_response(&mut self, ctx: &mut Ctx, id: ProcessId, conn: ConnId, seq: u64, frame: Bytes) {
        let f = frame.clone();
        self.with(
            ctx,
            id,
            |m, ctx, g| m.on_response(ctx, g, conn, seq, frame),
            |c, ctx| c.on_response(ctx, conn, seq, f),
        );
    }

    pub fn on_conn_lost(&mut self, ctx: &mut Ctx, id: ProcessId, conn: ConnId, reason: &str) {
        self.with(
            ctx,
            id,
            |m, ctx, g| m.on_conn_lost(ctx, g, conn, false),
            |c, ctx| c.on_conn_lost(ctx, conn, reason),
        );
    }

    pub fn on_timeout(&mut self, ctx: &mut Ctx, id: ProcessId, conn: ConnId, seq: u64) {
        self.with(
            ctx,
            id,
            |m, ctx, g| m.on_timeout(ctx, g, conn, seq),
            |c, ctx| c.on_timeout(ctx, conn, seq),
        );
    }

    /// Faults are over: every member comes back (paused ones resume, departed ones restart)
    /// and churns no more.
    pub fn heal(&mut self, ctx: &mut Ctx) {
        self.heal_ms = Some(ctx.now_ms);
        for m in &mut self.members {
            m.churn_at_ms = None;
            if m.paused_until_ms.is_some() {
                m.paused_until_ms = Some(ctx.now_ms);
            }
            if m.state == State::Down {
                m.restart_at_ms = ctx.now_ms;
            }
            m.wake_scheduled_ms = None;
            m.wake_in(ctx, 0);
        }
    }

    /// Whether [`GroupSim::observe`] has anything left to do in `phase`.
    pub fn observing(&self, phase: Phase) -> bool {
        let waiting = self.stable.is_none() && !self.liveness_reported;
        self.heal_ms.is_some() && (waiting || (self.final_reader.is_none() && phase >= Phase::Final))
    }

    /// After each event: notes when the group becomes stable after the heal, then starts the
    /// final read of committed offsets once the cluster has settled (the final phase).
    pub fn observe(&mut self, ctx: &mut Ctx) {
        let Some(heal_ms) = self.heal_ms else { return };
        if self.stable.is_none() {
            let views: Vec<MemberView> = self.members.iter().map(|m| m.view()).collect();
            if let Some(generation) = stable_generation(&views, ctx.opts.partitions) {
                self.stable = Some((ctx.now_ms, generation));
                ctx.history.nemesis(
                    ctx.now_ms,
                    format!(
                        "group stable in generation {generation}, {}ms after the heal",
                        ctx.now_ms - heal_ms
                    ),
                );
            } else if ctx.now_ms > heal_ms + GROUP_LIVENESS_MS && !self.liveness_reported {
                self.liveness_reported = true;
                ctx.violations.push(Violation {
                    kind: "group-liveness",
                    at_ms: ctx.now_ms,
                    detail: format!(
                        "no stable generation {GROUP_LIVENESS_MS}ms after the heal: {}",
                        self.describe()
                    ),
                });
            }
        }
        let ready = self.stable.is_some() || self.liveness_reported;
        if ready && ctx.shared.phase >= Phase::Final && self.final_reader.is_none() {
            let mut r = GroupMember::new(
                FINAL_READER_ID,
                None,
                rng_for(self.seed, "group/final"),
                self.opts.clone(),
            );
            r.wake_in(ctx, 0);
            self.final_reader = Some(r);
        }
    }

    /// The group's part of the run is over (its final read is done, or liveness failed).
    pub fn done(&self) -> bool {
        self.liveness_reported || self.final_reader.as_ref().is_some_and(|r| r.state == State::Done)
    }

    /// The member states, for a report of a stuck run.
    pub fn describe(&self) -> String {
        let each: Vec<String> = self
            .members
            .iter()
            .chain(self.final_reader.iter())
            .map(|m| {
                format!(
                    "{}: {:?} gen {} member {:?} coordinator {:?} assigned {:?}{} last error {:?}",
                    m.id,
                    m.state,
                    m.generation,
                    m.member_id,
                    m.coordinator.map(|c| c + 1),
                    m.assignment,
                    if m.paused_until_ms.is_some() {
                        " paused"
                    } else {
                        ""
                    },
                    m.last_error
                )
            })
            .collect();
        each.join("; ")
    }

    /// What the group did, for the run's JSON line.
    pub fn summary(&self) -> serde_json::Value {
        let h = &self.history;
        let acked = h
            .commits
            .iter()
            .filter(|c| matches!(c.outcome, CommitOutcome::Acked { .. }))
            .count();
        let generations: BTreeSet<i32> = h.syncs.iter().map(|s| s.generation).collect();
        serde_json::json!({
            "syncs": h.syncs.len(),
            "generations": generations.len(),
            "commits": h.commits.len(),
            "acked": acked,
            "reads": h.reads.len(),
            "stable_after_heal_ms": self.stable.zip(self.heal_ms).map(|((at, _), heal)| at - heal),
        })
    }

    /// Invariants 1 and 2 over the run.
    pub fn check(&self, params: &GroupCheckParams) -> Vec<Violation> {
        check_group_history(&self.history, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    fn parts(a: &[(String, Vec<i32>)]) -> Vec<Vec<i32>> {
        a.iter().map(|(_, p)| p.clone()).collect()
    }

    #[test]
    fn range_and_round_robin_cover_every_partition_once() {
        assert_eq!(parts(&assign(&ids(2), 3, false)), vec![vec![0, 1], vec![2]]);
        assert_eq!(parts(&assign(&ids(2), 3, true)), vec![vec![0, 2], vec![1]]);
        assert_eq!(parts(&assign(&ids(3), 1, false)), vec![vec![0], vec![], vec![]]);
        assert_eq!(
            parts(&assign(&ids(3), 7, false)),
            vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]
        );
        for n in 1..=4 {
            for p in 1..=7 {
                for rr in [false, true] {
                    let mut all: Vec<i32> = assign(&ids(n), p, rr).into_iter().flat_map(|(_, x)| x).collect();
                    all.sort_unstable();
                    assert_eq!(all, (0..p).collect::<Vec<_>>());
                }
            }
        }
    }

    #[test]
    fn consumer_protocol_bytes_round_trip_with_their_version() {
        let mut s = ConsumerProtocolSubscription::default();
        s.topics = vec![StrBytes::from_static_str("sim")];
        for v in 0..=3 {
            let b = encode_versioned(&s, v);
            assert_eq!(i16::from_be_bytes([b[0], b[1]]), v);
            let back: ConsumerProtocolSubscription = decode_versioned(&b).expect("decodes");
            assert_eq!(back.topics, s.topics);
        }
    }
}
