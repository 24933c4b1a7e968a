//! Simulated Kafka clients: an admin that creates the topic, producers (acks 0, 1 and all;
//! unique key/value per record), consumers (Fetch from their position or from a random
//! offset, ListOffsets) and the final reader that reads every partition to its high
//! watermark once faults are healed. A client holds at most one connection per broker,
//! speaks ApiVersions first on each, then picks a random version both sides support per
//! request. It runs one operation at a time. Clients record every operation in the
//! [`History`] and check what they can see at once (CRCs, offsets, high watermarks) as
//! [`Violation`]s. They talk to the world only through [`Transport`], so the runner decides
//! latency, loss and crashes.
//!
//! In a cluster (more than one broker) a client routes as a Kafka client does: it learns the
//! controller and each partition's leader from Metadata (asking the brokers in turn), sends
//! CreateTopics to the controller and partition requests to the leader, and after
//! `NOT_LEADER_OR_FOLLOWER`, `NOT_CONTROLLER`, any other partition error, a lost connection
//! or a timeout forgets that route and asks Metadata again. What one broker may legitimately
//! lag on (metadata, a deposed leader's high watermark) is checked per connection there.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use gregor_engine::batch::{build_batch, build_batch_compressed, Compression, RecordSpec};
use gregor_engine::ConnId;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, CreateTopicsResponse, FetchResponse, ListOffsetsResponse, MetadataResponse,
    ProduceResponse,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::check::Violation;
use crate::clock::true_wall_ms;
use crate::history::{value_prefix, History, OkValue, OpId, OpKind, Outcome, ProcessId, ReadRef, RecordId};
use crate::swarm::SwarmOptions;
use crate::wire::{self, code, WireError};

/// How long a client waits for an answer before it gives up on the connection.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Pause before reconnecting or retrying after an error.
const BACKOFF_MS_MAX: u64 = 100;
/// Cluster: while some partition's leader is unknown, Metadata is asked again this often
/// (operations go on meanwhile on the partitions whose leaders are known).
const METADATA_REFRESH_MS: u64 = 200;
/// Final reader (cluster): how many ListOffsets answers below an acknowledged acks=all
/// write it puts down to a deposed leader and asks again, before it takes one as final.
const FINAL_STALE_ANSWERS_MAX: u32 = 20;

/// What a client can ask of the world.
pub trait Transport {
    /// Opens a connection to broker `node` (an index below [`Transport::nodes`]); `None` if it
    /// is not accepting (down, recovering).
    fn connect(&mut self, client: ProcessId, node: usize) -> Option<ConnId>;
    /// Sends request frame `seq` on `conn`; a timeout fires at `timeout_at_ms` if still open.
    fn send(&mut self, client: ProcessId, conn: ConnId, seq: u64, frame: Bytes, timeout_at_ms: u64);
    /// Closes `conn` from the client side.
    fn close(&mut self, conn: ConnId);
    /// Calls [`Client::on_wake`] at `at_ms`.
    fn wake_at(&mut self, client: ProcessId, at_ms: u64);
    /// Draws whether to drop the connection right after a send (fault injection).
    fn disconnect_after_send(&mut self) -> bool;
    /// How many brokers there are (node indexes `0..nodes()`; broker id = index + 1).
    fn nodes(&self) -> usize;
}

/// The run's phase, as the clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Faults on; producers and consumers work.
    Safety,
    /// Faults healed; no new operations, in-flight ones finish.
    Drain,
    /// The final reader reads everything.
    Final,
    Done,
}

/// State shared by every client of a run.
#[derive(Clone, Debug)]
pub struct Shared {
    pub topic: String,
    pub topic_ready: bool,
    /// Per partition: the broker has shown it exists (CreateTopics answered 0, or a request
    /// on it succeeded). From then on "unknown topic or partition" means it lost what it
    /// had. (`TOPIC_ALREADY_EXISTS` alone does not confirm: creation may be under way.)
    pub partition_confirmed: Vec<bool>,
    /// The topic's id once CreateTopics (v7) or Metadata (v10+) named it; never changes.
    pub topic_id: Option<wire::TopicId>,
    pub phase: Phase,
    /// Per partition: end offset (last + 1) of every acks=all produce acknowledged so far.
    /// Every high watermark read after that acknowledgement must be at least this.
    pub acked_all_end: Vec<i64>,
    pub final_done: bool,
    /// Highest leader epoch Metadata reported per partition (must never go down).
    pub leader_epoch_max: Vec<i32>,
    /// Node ids of the brokers (what Metadata must list as leaders).
    pub broker_ids: Vec<i32>,
    /// Replicas of the topic (1 on a single node).
    pub replication_factor: i16,
}

impl Shared {
    /// More than one broker: clients route, and checks that need one broker's view are
    /// made per connection.
    pub fn cluster(&self) -> bool {
        self.broker_ids.len() > 1
    }
}

/// What a client's callbacks need.
pub struct Ctx<'a> {
    pub now_ms: u64,
    pub history: &'a mut History,
    pub violations: &'a mut Vec<Violation>,
    pub shared: &'a mut Shared,
    pub opts: &'a SwarmOptions,
    pub transport: &'a mut dyn Transport,
}

impl Ctx<'_> {
    fn violation(&mut self, kind: &'static str, detail: String) {
        self.violations.push(Violation {
            kind,
            at_ms: self.now_ms,
            detail,
        });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Producer,
    Consumer,
    /// The data path of a group member ([`crate::group_client`]): fetches only the
    /// partitions its group assigned it ([`Client::assign`]), in order from the position the
    /// member set (its committed offset), and never seeks.
    GroupConsumer,
    FinalReader,
}

#[derive(Clone, Debug)]
enum Request {
    ApiVersions {
        version: i16,
    },
    CreateTopics,
    Produce {
        partition: i32,
        acks: i16,
        records: usize,
    },
    Fetch {
        partition: i32,
        offset: i64,
        acked_end: i64,
    },
    ListOffsets {
        partition: i32,
        timestamp: i64,
        acked_end: i64,
    },
    Metadata,
}

#[derive(Clone, Debug)]
struct Pending {
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    op: Option<OpId>,
    request: Request,
}

#[derive(Clone, Debug)]
struct Conn {
    id: ConnId,
    next_seq: u64,
    next_correlation_id: i32,
    /// Broker version ranges, once ApiVersions answered.
    versions: Option<BTreeMap<i16, (i16, i16)>>,
    in_flight: BTreeMap<u64, Pending>,
    /// Highest high watermark seen per partition on this connection.
    hw_max: BTreeMap<i32, i64>,
    /// Cluster: what this broker (this incarnation) has shown, for the checks that hold
    /// per broker only: the end of acks=all writes it acknowledged, per partition; the
    /// highest leader epoch its Metadata named; whether it showed the topic and which
    /// partitions.
    acked_all_end: BTreeMap<i32, i64>,
    epoch_max: BTreeMap<i32, i32>,
    topic_shown: bool,
    partitions_shown: BTreeSet<i32>,
}

impl Conn {
    fn new(id: ConnId) -> Conn {
        Conn {
            id,
            next_seq: 0,
            next_correlation_id: 1,
            versions: None,
            in_flight: BTreeMap::new(),
            hw_max: BTreeMap::new(),
            acked_all_end: BTreeMap::new(),
            epoch_max: BTreeMap::new(),
            topic_shown: false,
            partitions_shown: BTreeSet::new(),
        }
    }
}

/// Where requests go in a cluster, as Metadata last said.
#[derive(Clone, Debug, Default)]
struct Route {
    /// Per partition: the leader's node index (`None`: ask Metadata).
    leaders: Vec<Option<usize>>,
    /// Per partition: the highest leader epoch Metadata named (older answers are ignored,
    /// as KIP-320 clients do).
    epochs: Vec<i32>,
    controller: Option<usize>,
    /// The broker to ask Metadata next (each request asks the next one).
    metadata_next: usize,
    /// While some leader is unknown, when to ask Metadata again.
    metadata_due_ms: u64,
}

/// Whether a broker connection can carry a request yet.
enum ConnState {
    Ready,
    /// ApiVersions is on its way.
    Opening,
    /// The broker does not accept connections now.
    Refused,
}

/// One simulated client process.
pub struct Client {
    pub id: ProcessId,
    pub role: Role,
    rng: ChaCha8Rng,
    /// Open connections by broker (node index); only node 0 on a single node.
    conns: BTreeMap<usize, Conn>,
    route: Route,
    /// Final reader (cluster): ListOffsets answers refused as below an acknowledged write.
    final_stale_answers: u32,
    wake_scheduled_ms: Option<u64>,
    /// Records sent so far (makes values unique).
    sent_count: u64,
    /// Consumer / final reader: next offset to fetch per partition.
    positions: Vec<i64>,
    /// Highest high watermark seen per partition (for random seeks).
    known_hw: Vec<i64>,
    /// Final reader: the high watermark to read up to, per partition.
    targets: Vec<Option<i64>>,
    pub done: bool,
    /// The last error this client saw, and how many times in a row (for liveness reports).
    pub last_error: Option<(String, u32)>,
    /// Group consumer: the partitions it may fetch (`None`: none, it waits).
    assignment: Option<BTreeSet<i32>>,
}

impl Client {
    pub fn new(id: ProcessId, role: Role, rng: ChaCha8Rng, partitions: i32) -> Client {
        let n = partitions.max(0) as usize;
        Client {
            id,
            role,
            rng,
            conns: BTreeMap::new(),
            route: Route {
                leaders: vec![None; n],
                epochs: vec![-1; n],
                controller: None,
                metadata_next: id as usize,
                metadata_due_ms: 0,
            },
            final_stale_answers: 0,
            wake_scheduled_ms: None,
            sent_count: 0,
            positions: vec![0; n],
            known_hw: vec![0; n],
            targets: vec![None; n],
            done: false,
            last_error: None,
            assignment: None,
        }
    }

    /// Group consumer: fetch these partitions from now on (`None` or empty: stop), and wake
    /// up to do so.
    pub fn assign(&mut self, ctx: &mut Ctx, partitions: Option<BTreeSet<i32>>) {
        self.assignment = partitions.filter(|a| !a.is_empty());
        if self.assignment.is_some() {
            self.wake_in(ctx, 0);
        }
    }

    /// The next offset this client would fetch on `partition`.
    pub fn position(&self, partition: i32) -> i64 {
        self.positions.get(partition as usize).copied().unwrap_or(0)
    }

    /// Group consumer: fetch `partition` from `offset` on (its committed offset).
    pub fn seek(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.positions.get_mut(partition as usize) {
            *p = offset.max(0);
        }
    }

    /// The process is gone (a crashed group member): every connection closes and what was in
    /// flight has an unknown outcome.
    pub fn close_all(&mut self, ctx: &mut Ctx, reason: &str) {
        let nodes: Vec<usize> = self.conns.keys().copied().collect();
        for node in nodes {
            if let Some(conn) = self.conns.get(&node) {
                ctx.transport.close(conn.id);
            }
            self.fail_in_flight(ctx, node, reason);
            self.conns.remove(&node);
            self.forget_node(node);
        }
        self.assignment = None;
    }

    /// Whether this client may work on `partition` (a group consumer: only if assigned).
    fn may_use(&self, partition: usize) -> bool {
        self.assignment
            .as_ref()
            .is_none_or(|a| a.contains(&(partition as i32)))
    }

    /// Requests in flight on all connections.
    pub fn in_flight(&self) -> usize {
        self.conns.values().map(|c| c.in_flight.len()).sum()
    }

    /// Whether this client still has work before the run can end.
    pub fn busy(&self) -> bool {
        self.in_flight() > 0
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

    /// Time to act: connect, or issue the next operation if none is in flight.
    pub fn on_wake(&mut self, ctx: &mut Ctx) {
        if self.wake_scheduled_ms.is_some_and(|w| w <= ctx.now_ms) {
            self.wake_scheduled_ms = None;
        }
        if self.done || !self.active_in(ctx.shared.phase) {
            return;
        }
        if ctx.shared.cluster() {
            return self.on_wake_cluster(ctx);
        }
        let Some(conn) = self.conns.get(&0) else {
            if let ConnState::Refused = self.open_conn(ctx, 0) {
                self.backoff(ctx);
            }
            return;
        };
        if conn.versions.is_none() || !conn.in_flight.is_empty() {
            return;
        }
        match self.role {
            Role::Admin => self.create_topic(ctx),
            Role::Producer if ctx.shared.topic_ready => self.produce(ctx),
            Role::Consumer | Role::GroupConsumer if ctx.shared.topic_ready => self.consume(ctx),
            Role::FinalReader => self.final_read_step(ctx),
            Role::Producer | Role::Consumer | Role::GroupConsumer => self.backoff(ctx),
        }
    }

    /// Connects to broker `node` if needed; says whether a request can go there now.
    fn open_conn(&mut self, ctx: &mut Ctx, node: usize) -> ConnState {
        if let Some(c) = self.conns.get(&node) {
            return match c.versions {
                Some(_) => ConnState::Ready,
                None => ConnState::Opening,
            };
        }
        let Some(id) = ctx.transport.connect(self.id, node) else {
            return ConnState::Refused;
        };
        self.conns.insert(node, Conn::new(id));
        self.send(
            ctx,
            node,
            ApiKey::ApiVersions,
            3,
            None,
            Request::ApiVersions { version: 3 },
            Body::ApiVersions,
        );
        ConnState::Opening
    }

    /// Cluster: the next step toward this client's next operation. The admin needs the
    /// controller, the final reader the leader of the partition it reads next; producers and
    /// consumers work on the partitions whose leaders they know (with a connection open to
    /// each, as a Kafka client keeps) and ask Metadata again now and then while some leader is
    /// unknown. What nothing is known of is asked of Metadata first.
    fn on_wake_cluster(&mut self, ctx: &mut Ctx) {
        if self.busy() {
            return;
        }
        let needed: Option<Vec<usize>> = match self.role {
            Role::Admin if ctx.shared.topic_ready => {
                self.done = true;
                return;
            }
            Role::Admin => self.route.controller.map(|c| vec![c]),
            Role::Producer | Role::Consumer | Role::GroupConsumer if !ctx.shared.topic_ready => {
                return self.backoff(ctx)
            }
            Role::Producer | Role::Consumer | Role::GroupConsumer => {
                let usable = (0..self.route.leaders.len()).filter(|&p| self.may_use(p));
                let leaders: Vec<Option<usize>> = usable.map(|p| self.route.leaders[p]).collect();
                let known: Vec<usize> = leaders.iter().flatten().copied().collect();
                let some_unknown = known.len() < leaders.len();
                let refresh = some_unknown && ctx.now_ms >= self.route.metadata_due_ms;
                (!known.is_empty() && !refresh).then_some(known)
            }
            Role::FinalReader => match self.final_partition() {
                Some(p) => self.route.leaders[p].map(|l| vec![l]),
                None => Some(vec![]),
            },
        };
        let Some(mut needed) = needed else {
            return self.ask_metadata(ctx);
        };
        needed.sort_unstable();
        needed.dedup();
        for node in needed {
            match self.open_conn(ctx, node) {
                ConnState::Ready => {}
                ConnState::Opening => return,
                ConnState::Refused => {
                    self.forget_node(node);
                    return self.backoff(ctx);
                }
            }
        }
        match self.role {
            Role::Admin => self.create_topic(ctx),
            Role::Producer => self.produce(ctx),
            Role::Consumer | Role::GroupConsumer => self.consume(ctx),
            Role::FinalReader => self.final_read_step(ctx),
        }
    }

    /// Cluster: asks the next broker in turn for the topic's metadata.
    fn ask_metadata(&mut self, ctx: &mut Ctx) {
        let count = ctx.transport.nodes().max(1);
        let node = self.route.metadata_next % count;
        match self.open_conn(ctx, node) {
            ConnState::Ready => {}
            ConnState::Opening => return,
            ConnState::Refused => {
                self.route.metadata_next = node + 1;
                return self.backoff(ctx);
            }
        }
        self.route.metadata_next = node + 1;
        self.route.metadata_due_ms = ctx.now_ms + METADATA_REFRESH_MS;
        let Some(version) = self.pick_version(node, ApiKey::Metadata, ctx.shared.topic_id.is_some()) else {
            ctx.violation(
                "protocol",
                "broker offers no Metadata version we speak".to_string(),
            );
            self.done = true;
            return;
        };
        let body = self.body_for(ctx, &Request::Metadata, version);
        self.send(
            ctx,
            node,
            ApiKey::Metadata,
            version,
            None,
            Request::Metadata,
            body,
        );
    }

    /// Cluster: routes through broker `node` are in doubt (connection lost, timeout).
    fn forget_node(&mut self, node: usize) {
        for l in self.route.leaders.iter_mut().filter(|l| **l == Some(node)) {
            *l = None;
        }
        if self.route.controller == Some(node) {
            self.route.controller = None;
        }
    }

    /// Cluster: a partition request failed with `code`; ask Metadata before the next one
    /// (a wrong leader, an election, or a broker that has not caught up).
    fn forget_leader(&mut self, ctx: &Ctx, partition: i32, code: i16) {
        if ctx.shared.cluster() && code != code::OFFSET_OUT_OF_RANGE {
            if let Some(l) = self.route.leaders.get_mut(partition as usize) {
                *l = None;
            }
        }
    }

    /// The broker a request on `partition` goes to: its leader in a cluster (known: the
    /// client asked Metadata first), node 0 otherwise.
    fn node_for(&self, ctx: &Ctx, partition: i32) -> usize {
        if !ctx.shared.cluster() {
            return 0;
        }
        self.route
            .leaders
            .get(partition as usize)
            .copied()
            .flatten()
            .unwrap_or(0)
    }

    fn active_in(&self, phase: Phase) -> bool {
        match self.role {
            Role::Admin => phase <= Phase::Final,
            Role::Producer | Role::Consumer => phase == Phase::Safety,
            Role::GroupConsumer => phase == Phase::Safety && self.assignment.is_some(),
            Role::FinalReader => phase == Phase::Final,
        }
    }

    /// Picks a version of `api` both sides speak on broker `node`, uniformly (exercises
    /// every codec).
    fn pick_version(&mut self, node: usize, api: ApiKey, topic_id_known: bool) -> Option<i16> {
        let versions = self.conns.get(&node)?.versions.as_ref()?;
        let (lo, mut hi) = wire::negotiate(versions, api)?;
        if api == ApiKey::Fetch && !topic_id_known {
            hi = hi.min(wire::FETCH_TOPIC_ID_VERSION - 1);
        }
        (lo <= hi).then(|| self.rng.gen_range(lo..=hi))
    }

    /// Frames `body` as request `api`/`version` and sends it to broker `node`; false if
    /// there is no connection or the body cannot be encoded (then nothing was sent).
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        ctx: &mut Ctx,
        node: usize,
        api: ApiKey,
        version: i16,
        op: Option<OpId>,
        request: Request,
        body: Body,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(&node) else {
            return false;
        };
        let correlation_id = conn.next_correlation_id;
        let client_id = format!("sim-{:?}-{}", self.role, self.id).to_lowercase();
        let encoded = match &body {
            Body::ApiVersions => wire::encode_request(
                api,
                version,
                correlation_id,
                &client_id,
                &wire::api_versions_request(),
            ),
            Body::CreateTopics(r) => wire::encode_request(api, version, correlation_id, &client_id, r),
            Body::Produce(r) => wire::encode_request(api, version, correlation_id, &client_id, r),
            Body::Fetch(r) => wire::encode_request(api, version, correlation_id, &client_id, r),
            Body::ListOffsets(r) => wire::encode_request(api, version, correlation_id, &client_id, r),
            Body::Metadata(r) => wire::encode_request(api, version, correlation_id, &client_id, r),
        };
        let frame = match encoded {
            Ok(f) => f,
            Err(e) => {
                ctx.violation("sim-bug", format!("cannot encode {api:?} v{version}: {e}"));
                return false;
            }
        };
        let expects_answer = !matches!(request, Request::Produce { acks: 0, .. });
        let timeout_ms = REQUEST_TIMEOUT_MS
            + if matches!(request, Request::Fetch { .. }) {
                1_000
            } else {
                0
            };
        conn.next_correlation_id = conn.next_correlation_id.wrapping_add(1);
        let seq = conn.next_seq;
        conn.next_seq += 1;
        let conn_id = conn.id;
        if expects_answer {
            conn.in_flight.insert(
                seq,
                Pending {
                    correlation_id,
                    api,
                    version,
                    op,
                    request,
                },
            );
        }
        ctx.transport
            .send(self.id, conn_id, seq, frame, ctx.now_ms + timeout_ms);
        if ctx.transport.disconnect_after_send() {
            self.drop_conn(ctx, node, "client dropped the connection after sending");
        }
        true
    }

    /// Sends `request` to broker `node` as an operation recorded in the history as `kind`.
    fn send_op(
        &mut self,
        ctx: &mut Ctx,
        node: usize,
        api: ApiKey,
        version: i16,
        kind: OpKind,
        request: Request,
    ) {
        let body = self.body_for(ctx, &request, version);
        let op = ctx.history.invoke(self.id, ctx.now_ms, kind);
        ctx.history.ops[op].final_read = self.role == Role::FinalReader;
        if !self.send(ctx, node, api, version, Some(op), request, body) {
            ctx.history.complete(
                op,
                ctx.now_ms,
                Outcome::Info {
                    reason: "not sent".into(),
                },
            );
        }
    }

    fn body_for(&mut self, ctx: &Ctx, request: &Request, version: i16) -> Body {
        let topic = ctx.shared.topic.as_str();
        match request {
            Request::ApiVersions { .. } => Body::ApiVersions,
            Request::CreateTopics => Body::CreateTopics(wire::create_topics_request(
                topic,
                ctx.opts.partitions,
                ctx.shared.replication_factor,
                &[
                    ("segment.bytes", ctx.opts.segment_bytes.to_string()),
                    ("index.interval.bytes", ctx.opts.index_interval_bytes.to_string()),
                ],
            )),
            Request::Produce { .. } => unreachable!("produce bodies carry records; see Client::produce"),
            Request::Fetch {
                partition, offset, ..
            } => {
                let max_wait_ms = [0, 0, 10, 100][self.rng.gen_range(0..4)];
                let max_bytes = [1, 200, 1_000, 65_536][self.rng.gen_range(0..4)];
                let topic_id = ctx.shared.topic_id.unwrap_or_default();
                Body::Fetch(wire::fetch_request(
                    topic,
                    topic_id,
                    version,
                    *partition,
                    *offset,
                    max_wait_ms,
                    max_bytes,
                ))
            }
            Request::ListOffsets {
                partition, timestamp, ..
            } => Body::ListOffsets(wire::list_offsets_request(topic, *partition, *timestamp)),
            Request::Metadata => Body::Metadata(wire::metadata_request(topic)),
        }
    }

    fn create_topic(&mut self, ctx: &mut Ctx) {
        if ctx.shared.topic_ready {
            self.done = true;
            return;
        }
        let node = match ctx.shared.cluster() {
            true => self.route.controller.unwrap_or(0),
            false => 0,
        };
        let Some(version) = self.pick_version(node, ApiKey::CreateTopics, ctx.shared.topic_id.is_some())
        else {
            ctx.violation(
                "protocol",
                "broker offers no CreateTopics version we speak".to_string(),
            );
            self.done = true;
            return;
        };
        self.send_op(
            ctx,
            node,
            ApiKey::CreateTopics,
            version,
            OpKind::CreateTopic,
            Request::CreateTopics,
        );
    }

    fn produce(&mut self, ctx: &mut Ctx) {
        let topic_id_known = ctx.shared.topic_id.is_some();
        // One node picks the version first: its runs keep their random draws.
        let (partition, node, version) = if ctx.shared.cluster() {
            let partition = self.pick_partition(ctx);
            let node = self.node_for(ctx, partition);
            (
                partition,
                node,
                self.pick_version(node, ApiKey::Produce, topic_id_known),
            )
        } else {
            let version = self.pick_version(0, ApiKey::Produce, topic_id_known);
            (self.rng.gen_range(0..ctx.opts.partitions), 0, version)
        };
        let Some(version) = version else {
            ctx.violation(
                "protocol",
                "broker offers no Produce version we speak".to_string(),
            );
            self.done = true;
            return;
        };
        let acks = self.pick_acks(ctx.opts.acks_weights);
        let n = self.rng.gen_range(1..=ctx.opts.records_per_batch_max);
        let kind = OpKind::Produce {
            partition,
            acks,
            records: vec![],
        };
        let op = ctx.history.invoke(self.id, ctx.now_ms, kind);
        let batch = self.build_produce_batch(ctx, op, partition, n);
        let body = Body::Produce(wire::produce_request(&ctx.shared.topic, partition, acks, batch));
        let request = Request::Produce {
            partition,
            acks,
            records: n,
        };
        if !self.send(ctx, node, ApiKey::Produce, version, Some(op), request, body) {
            ctx.history.complete(
                op,
                ctx.now_ms,
                Outcome::Info {
                    reason: "not sent".into(),
                },
            );
        } else if acks == 0 {
            // Kafka sends no answer to acks=0: the outcome stays unknown.
            ctx.history.complete(
                op,
                ctx.now_ms,
                Outcome::Info {
                    reason: "acks=0".into(),
                },
            );
            let think = self.rng.gen_range(0..=ctx.opts.think_ms_max);
            self.wake_in(ctx, think);
        }
    }

    /// acks 0, 1 or -1, drawn with the seed's weights.
    fn pick_acks(&mut self, weights: [u32; 3]) -> i16 {
        let pick = self.rng.gen_range(0..weights.iter().sum::<u32>().max(1));
        if pick < weights[0] {
            0
        } else if pick < weights[0] + weights[1] {
            1
        } else {
            -1
        }
    }

    /// Registers `n` fresh records for produce `op` and builds their batch (sometimes
    /// compressed, with the engine's builder).
    fn build_produce_batch(&mut self, ctx: &mut Ctx, op: OpId, partition: i32, n: usize) -> Bytes {
        let mut specs = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let (key, value) = self.next_record(ctx.history.next_record_id(), ctx.opts.value_bytes_max);
            ids.push(
                ctx.history
                    .add_sent(op, partition, i as u32, key.clone(), value.clone()),
            );
            let headers = match self.rng.gen_bool(0.1) {
                true => vec![("h".to_string(), Some(Bytes::from_static(b"x")))],
                false => vec![],
            };
            let timestamp_ms = true_wall_ms(ctx.now_ms);
            specs.push(RecordSpec {
                key,
                value: Some(value),
                headers,
                timestamp_ms,
            });
        }
        ctx.history.set_produce_records(op, ids);
        if !self.rng.gen_bool(ctx.opts.compression_p) {
            return build_batch(&specs);
        }
        let codecs = [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        let codec = codecs[self.rng.gen_range(0..codecs.len())];
        build_batch_compressed(&specs, codec).unwrap_or_else(|e| {
            ctx.violation("sim-bug", format!("cannot build a {codec:?} batch: {e}"));
            build_batch(&specs)
        })
    }

    fn next_record(&mut self, id: RecordId, value_bytes_max: usize) -> (Option<Bytes>, Bytes) {
        self.sent_count += 1;
        let n = self.sent_count;
        let key = if self.rng.gen_bool(0.1) {
            None
        } else {
            Some(Bytes::from(format!("k{}.{n}", self.id)))
        };
        let pad_len = self.rng.gen_range(0..=value_bytes_max);
        let mut value = format!("{}p{}.{n}.", value_prefix(id), self.id).into_bytes();
        value.extend((0..pad_len).map(|_| self.rng.gen_range(b'a'..=b'z')));
        (key, Bytes::from(value))
    }

    /// The end of acks=all writes acknowledged so far on `partition`, which every high
    /// watermark read later must reach: everywhere on one node; in a cluster, on the broker
    /// (connection) that acknowledged them, since a deposed leader may still answer with an
    /// older high watermark until it learns of its successor (Kafka allows that read).
    fn acked_end(&self, ctx: &Ctx, node: usize, partition: i32) -> i64 {
        if !ctx.shared.cluster() {
            return ctx.shared.acked_all_end[partition as usize];
        }
        self.conns
            .get(&node)
            .and_then(|c| c.acked_all_end.get(&partition).copied())
            .unwrap_or(0)
    }

    /// A partition for the next operation: any (one node), or one whose leader is known (a
    /// cluster; the caller made sure there is one).
    fn pick_partition(&mut self, ctx: &Ctx) -> i32 {
        if let Some(a) = self.assignment.as_ref().filter(|_| !ctx.shared.cluster()) {
            let mine: Vec<i32> = a.iter().copied().collect();
            return mine[self.rng.gen_range(0..mine.len())];
        }
        if !ctx.shared.cluster() {
            return self.rng.gen_range(0..ctx.opts.partitions);
        }
        let known: Vec<i32> = (0..ctx.opts.partitions)
            .filter(|&p| self.may_use(p as usize))
            .filter(|&p| self.route.leaders.get(p as usize).is_some_and(|l| l.is_some()))
            .collect();
        match known.len() {
            0 => 0,
            n => known[self.rng.gen_range(0..n)],
        }
    }

    fn consume(&mut self, ctx: &mut Ctx) {
        let partition = self.pick_partition(ctx);
        let p = partition as usize;
        let node = self.node_for(ctx, partition);
        let acked_end = self.acked_end(ctx, node, partition);
        // Metadata now and then; often while the topic id (needed for Fetch v13+) is unknown.
        let metadata_p = if ctx.shared.topic_id.is_none() { 0.3 } else { 0.03 };
        if self.rng.gen_bool(metadata_p) {
            if let Some(version) = self.pick_version(node, ApiKey::Metadata, ctx.shared.topic_id.is_some()) {
                let body = self.body_for(ctx, &Request::Metadata, version);
                self.send(
                    ctx,
                    node,
                    ApiKey::Metadata,
                    version,
                    None,
                    Request::Metadata,
                    body,
                );
                return;
            }
        }
        if self.rng.gen_bool(0.1) {
            let Some(version) = self.pick_version(node, ApiKey::ListOffsets, ctx.shared.topic_id.is_some())
            else {
                return self.backoff(ctx);
            };
            let timestamp = if self.rng.gen_bool(0.7) {
                wire::LATEST_TIMESTAMP
            } else {
                wire::EARLIEST_TIMESTAMP
            };
            let request = Request::ListOffsets {
                partition,
                timestamp,
                acked_end,
            };
            self.send_op(
                ctx,
                node,
                ApiKey::ListOffsets,
                version,
                OpKind::ListOffsets { partition, timestamp },
                request,
            );
            return;
        }
        let Some(version) = self.pick_version(node, ApiKey::Fetch, ctx.shared.topic_id.is_some()) else {
            ctx.violation("protocol", "broker offers no Fetch version we speak".to_string());
            self.done = true;
            return;
        };
        if self.role != Role::GroupConsumer && self.rng.gen_bool(0.25) {
            // Seek anywhere up to the high watermark, often into the middle of a segment.
            self.positions[p] = self.rng.gen_range(0..=self.known_hw[p].max(0));
        }
        let offset = self.positions[p];
        let request = Request::Fetch {
            partition,
            offset,
            acked_end,
        };
        self.send_op(
            ctx,
            node,
            ApiKey::Fetch,
            version,
            OpKind::Fetch { partition, offset },
            request,
        );
    }

    /// Final reader: the first partition not yet read to its target.
    fn final_partition(&self) -> Option<usize> {
        (0..self.targets.len()).find(|&p| self.targets[p].is_none_or(|t| self.positions[p] < t))
    }

    fn final_read_step(&mut self, ctx: &mut Ctx) {
        let Some(p) = self.final_partition() else {
            self.done = true;
            ctx.shared.final_done = true;
            return;
        };
        let partition = p as i32;
        let node = self.node_for(ctx, partition);
        // ListOffsets sets the target: it must cover every acknowledged acks=all write.
        let acked_end = match self.targets[p] {
            None => ctx.shared.acked_all_end[p],
            Some(_) => self.acked_end(ctx, node, partition),
        };
        let (api, request, kind) = if self.targets[p].is_none() {
            let timestamp = wire::LATEST_TIMESTAMP;
            (
                ApiKey::ListOffsets,
                Request::ListOffsets {
                    partition,
                    timestamp,
                    acked_end,
                },
                OpKind::ListOffsets { partition, timestamp },
            )
        } else {
            let offset = self.positions[p];
            (
                ApiKey::Fetch,
                Request::Fetch {
                    partition,
                    offset,
                    acked_end,
                },
                OpKind::Fetch { partition, offset },
            )
        };
        let Some(version) = self.pick_version(node, api, ctx.shared.topic_id.is_some()) else {
            ctx.violation("protocol", format!("broker offers no {api:?} version we speak"));
            self.done = true;
            return;
        };
        self.send_op(ctx, node, api, version, kind, request);
    }

    /// The connection died (broker crash, close, timeout): every request in flight has an
    /// unknown outcome.
    pub fn on_conn_lost(&mut self, ctx: &mut Ctx, conn: ConnId, reason: &str) {
        if let Some(node) = self.node_of_conn(conn) {
            self.fail_in_flight(ctx, node, reason);
            self.conns.remove(&node);
            self.forget_node(node);
            self.backoff(ctx);
        }
    }

    /// Tests: forgets what is in flight without completing it.
    #[cfg(test)]
    fn fail_in_flight_for_test(&mut self) {
        for c in self.conns.values_mut() {
            c.in_flight.clear();
        }
    }

    fn node_of_conn(&self, conn: ConnId) -> Option<usize> {
        self.conns.iter().find(|(_, c)| c.id == conn).map(|(&n, _)| n)
    }

    fn fail_in_flight(&mut self, ctx: &mut Ctx, node: usize, reason: &str) {
        let Some(conn) = self.conns.get_mut(&node) else {
            return;
        };
        for (_, p) in std::mem::take(&mut conn.in_flight) {
            if let Some(op) = p.op {
                if ctx.history.is_pending(op) {
                    ctx.history.complete(
                        op,
                        ctx.now_ms,
                        Outcome::Info {
                            reason: reason.to_string(),
                        },
                    );
                }
            }
        }
    }

    fn drop_conn(&mut self, ctx: &mut Ctx, node: usize, reason: &str) {
        if let Some(conn) = self.conns.get(&node) {
            ctx.transport.close(conn.id);
        }
        self.fail_in_flight(ctx, node, reason);
        self.conns.remove(&node);
        self.forget_node(node);
        self.backoff(ctx);
    }

    /// A request timed out: give up on the connection.
    pub fn on_timeout(&mut self, ctx: &mut Ctx, conn: ConnId, seq: u64) {
        let timed_out = self
            .node_of_conn(conn)
            .filter(|n| self.conns[n].in_flight.contains_key(&seq));
        if let Some(node) = timed_out {
            self.drop_conn(ctx, node, "request timed out");
        }
    }

    /// The answer to request `seq` on `conn` arrived.
    pub fn on_response(&mut self, ctx: &mut Ctx, conn_id: ConnId, seq: u64, frame: Bytes) {
        let Some(node) = self.node_of_conn(conn_id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&node) else {
            return;
        };
        let Some(pending) = conn.in_flight.remove(&seq) else {
            ctx.violation(
                "protocol",
                format!("answer to request {seq} on conn {conn_id}, which expects none"),
            );
            return;
        };
        if wire::response_correlation_id(&frame) != Some(pending.correlation_id) {
            ctx.violation(
                "protocol",
                format!(
                    "{:?} answer carries correlation id {:?}, request had {}",
                    pending.api,
                    wire::response_correlation_id(&frame),
                    pending.correlation_id
                ),
            );
        }
        let result = self.handle_response(ctx, node, &pending, &frame);
        if let Err(e) = result {
            ctx.violation("protocol", format!("{:?} v{}: {e}", pending.api, pending.version));
            if let Some(op) = pending.op {
                if ctx.history.is_pending(op) {
                    ctx.history.complete(
                        op,
                        ctx.now_ms,
                        Outcome::Info {
                            reason: format!("undecodable answer: {e}"),
                        },
                    );
                }
            }
            self.drop_conn(ctx, node, "undecodable answer");
            return;
        }
        match pending.op.map(|op| &ctx.history.ops[op].outcome) {
            Some(Outcome::Fail { code }) => {
                let what = match &pending.request {
                    Request::Fetch {
                        partition, offset, ..
                    } => format!("Fetch {partition}@{offset}: error {code}"),
                    other => format!("{other:?}: error {code}"),
                };
                self.note_error(what);
            }
            Some(Outcome::Ok(_)) => self.last_error = None,
            _ => {}
        }
        let think = self.rng.gen_range(0..=ctx.opts.think_ms_max);
        self.wake_in(ctx, think);
    }

    fn note_error(&mut self, what: String) {
        match &mut self.last_error {
            Some((w, n)) if *w == what => *n += 1,
            _ => self.last_error = Some((what, 1)),
        }
    }

    /// Decodes an answer and hands it to the handler of its request.
    fn handle_response(
        &mut self,
        ctx: &mut Ctx,
        node: usize,
        pending: &Pending,
        frame: &Bytes,
    ) -> Result<(), WireError> {
        let (api, version) = (pending.api, pending.version);
        // Every request but ApiVersions and Metadata is recorded as an op.
        let op = pending.op.unwrap_or(usize::MAX);
        match pending.request {
            Request::ApiVersions { version } => return self.on_api_versions(ctx, node, version, frame),
            Request::CreateTopics => {
                let (_, r) = wire::decode_response::<CreateTopicsResponse>(api, version, frame)?;
                let (code, topic_id) = wire::create_topics_result(&r, &ctx.shared.topic)?;
                if code == code::NONE {
                    learn_topic_id(ctx, topic_id, "CreateTopics");
                }
                self.on_create_topics(ctx, node, op, code);
            }
            Request::Produce {
                partition,
                acks,
                records,
            } => {
                let (_, r) = wire::decode_response::<ProduceResponse>(api, version, frame)?;
                let (code, base_offset) = wire::produce_result(&r, &ctx.shared.topic, partition)?;
                if code == code::NONE && base_offset < 0 {
                    return Err(WireError(format!("acked produce with base offset {base_offset}")));
                }
                let produced = Produced {
                    partition,
                    acks,
                    records,
                    code,
                    base_offset,
                };
                self.on_produce(ctx, node, op, produced);
            }
            Request::Fetch {
                partition,
                offset,
                acked_end,
            } => {
                let (_, r) = wire::decode_response::<FetchResponse>(api, version, frame)?;
                let topic_id = ctx.shared.topic_id.unwrap_or_default();
                let f = wire::fetch_result(&r, &ctx.shared.topic, topic_id, partition)?;
                self.on_fetch(ctx, node, op, partition, offset, acked_end, f);
            }
            Request::Metadata => {
                let (_, r) = wire::decode_response::<MetadataResponse>(api, version, frame)?;
                let m = wire::metadata_result(&r, &ctx.shared.topic)?;
                if ctx.shared.cluster() {
                    self.on_metadata_cluster(ctx, node, version, m);
                } else {
                    self.on_metadata(ctx, version, m);
                }
            }
            Request::ListOffsets {
                partition,
                timestamp,
                acked_end,
            } => {
                let (_, r) = wire::decode_response::<ListOffsetsResponse>(api, version, frame)?;
                let (code, offset) = wire::list_offsets_result(&r, &ctx.shared.topic, partition)?;
                let answer = Listed {
                    partition,
                    timestamp,
                    acked_end,
                    code,
                    offset,
                };
                self.on_list_offsets(ctx, node, op, answer);
            }
        }
        Ok(())
    }

    fn on_create_topics(&mut self, ctx: &mut Ctx, node: usize, op: OpId, code: i16) {
        if code != code::NONE && code != code::TOPIC_ALREADY_EXISTS {
            ctx.history.complete(op, ctx.now_ms, Outcome::Fail { code });
            // NOT_CONTROLLER, or a controller that could not commit in time: look again.
            self.route.controller = None;
            self.backoff(ctx);
            return;
        }
        ctx.history.complete(op, ctx.now_ms, Outcome::Ok(OkValue::Unit));
        ctx.shared.topic_ready = true;
        if code == code::NONE {
            ctx.shared.partition_confirmed.iter_mut().for_each(|c| *c = true);
            if let Some(c) = self.conns.get_mut(&node) {
                c.topic_shown = true;
                c.partitions_shown.extend(0..ctx.opts.partitions);
            }
        }
        self.done = true;
    }

    /// Broker `node` has shown `partition` of the topic (a request on it succeeded).
    fn shown(&mut self, ctx: &mut Ctx, node: usize, partition: i32) {
        ctx.shared.partition_confirmed[partition as usize] = true;
        if let Some(c) = self.conns.get_mut(&node) {
            c.topic_shown = true;
            c.partitions_shown.insert(partition);
        }
    }

    fn on_produce(&mut self, ctx: &mut Ctx, node: usize, op: OpId, a: Produced) {
        let Produced {
            partition,
            acks,
            records,
            code,
            base_offset,
        } = a;
        if code != code::NONE {
            let what = format!("Produce to partition {partition}");
            self.check_topic_known(ctx, node, code, Some(partition), &what);
            ctx.history.complete(op, ctx.now_ms, Outcome::Fail { code });
            self.forget_leader(ctx, partition, code);
            return;
        }
        ctx.history
            .complete(op, ctx.now_ms, Outcome::Ok(OkValue::Produced { base_offset }));
        self.shown(ctx, node, partition);
        if acks == -1 {
            let acked = base_offset + records as i64;
            let end = &mut ctx.shared.acked_all_end[partition as usize];
            *end = (*end).max(acked);
            if let Some(c) = self.conns.get_mut(&node) {
                let end = c.acked_all_end.entry(partition).or_insert(0);
                *end = (*end).max(acked);
            }
        }
    }

    /// Latest must cover every acks=all write acknowledged before the request; earliest is
    /// 0 (nothing is deleted yet).
    fn on_list_offsets(&mut self, ctx: &mut Ctx, node: usize, op: OpId, a: Listed) {
        let Listed {
            partition,
            timestamp,
            acked_end,
            code,
            offset,
        } = a;
        if code != code::NONE {
            let what = format!("ListOffsets on partition {partition}");
            self.check_topic_known(ctx, node, code, Some(partition), &what);
            ctx.history.complete(op, ctx.now_ms, Outcome::Fail { code });
            self.forget_leader(ctx, partition, code);
            return;
        }
        self.shown(ctx, node, partition);
        let p = partition as usize;
        let stale = timestamp == wire::LATEST_TIMESTAMP
            && offset < acked_end
            && ctx.shared.cluster()
            && self.role == Role::FinalReader
            && self.final_stale_answers < FINAL_STALE_ANSWERS_MAX;
        if stale {
            // A deposed leader that has not yet heard of its successor; ask Metadata again.
            self.final_stale_answers += 1;
            let reason = format!("latest {offset} below acked end {acked_end}: a deposed leader?");
            ctx.history.complete(op, ctx.now_ms, Outcome::Info { reason });
            self.note_error(format!("ListOffsets on partition {partition}: stale answer"));
            self.route.leaders[p] = None;
            return;
        }
        ctx.history
            .complete(op, ctx.now_ms, Outcome::Ok(OkValue::Offset(offset)));
        if timestamp != wire::LATEST_TIMESTAMP {
            if offset != 0 {
                let detail = format!("partition {partition}: earliest offset {offset}, expected 0");
                ctx.violation("log-start", detail);
            }
            return;
        }
        if offset < acked_end {
            let detail =
                format!("partition {partition}: ListOffsets latest {offset} < acked end {acked_end}");
            ctx.violation("hw-regress", detail);
        }
        self.known_hw[p] = self.known_hw[p].max(offset);
        if self.role == Role::FinalReader {
            self.targets[p] = Some(offset);
        }
    }

    /// Once the broker has shown a partition, it must never call it unknown again
    /// (`partition` None: the topic as a whole, shown once any partition was). In a cluster,
    /// per broker (connection): another broker's image may not have the topic yet.
    fn check_topic_known(&self, ctx: &mut Ctx, node: usize, code: i16, partition: Option<i32>, what: &str) {
        let confirmed = if ctx.shared.cluster() {
            self.conns.get(&node).is_some_and(|c| match partition {
                Some(p) => c.partitions_shown.contains(&p),
                None => c.topic_shown,
            })
        } else {
            match partition {
                Some(p) => ctx
                    .shared
                    .partition_confirmed
                    .get(p as usize)
                    .copied()
                    .unwrap_or(false),
                None => ctx.shared.partition_confirmed.iter().any(|&c| c),
            }
        };
        let unknown = code == code::UNKNOWN_TOPIC_OR_PARTITION || code == code::UNKNOWN_TOPIC_ID;
        if unknown && confirmed {
            let whom = if ctx.shared.cluster() {
                format!(" (broker {})", node + 1)
            } else {
                String::new()
            };
            ctx.violation(
                "topic-lost",
                format!("{what}: error {code} for a topic the broker{whom} had shown"),
            );
        }
    }

    /// The topic, once created, must stay, with every partition led by a known broker
    /// under a leader epoch that never goes down.
    fn on_metadata(&mut self, ctx: &mut Ctx, version: i16, m: wire::TopicMetadata) {
        if m.error_code != code::NONE {
            self.check_topic_known(ctx, 0, m.error_code, None, "Metadata");
            return;
        }
        learn_topic_id(ctx, m.topic_id, "Metadata");
        self.check_partition_list(ctx, &m);
        for &(p, error, leader, epoch) in &m.partitions {
            if error != code::NONE || !ctx.shared.broker_ids.contains(&leader) || !m.brokers.contains(&leader)
            {
                ctx.violation(
                    "metadata",
                    format!(
                        "partition {p}: error {error}, leader {leader}, brokers {:?}",
                        m.brokers
                    ),
                );
            }
            // Metadata carries leader epochs from v7 on.
            if let Some(&max) = ctx
                .shared
                .leader_epoch_max
                .get(p as usize)
                .filter(|_| version >= 7)
            {
                if epoch < max {
                    ctx.violation(
                        "epoch-regress",
                        format!("partition {p}: leader epoch went from {max} to {epoch}"),
                    );
                }
                ctx.shared.leader_epoch_max[p as usize] = max.max(epoch);
            }
        }
    }

    fn check_partition_list(&self, ctx: &mut Ctx, m: &wire::TopicMetadata) {
        let indexes: Vec<i32> = m.partitions.iter().map(|p| p.0).collect();
        if indexes != (0..ctx.opts.partitions).collect::<Vec<_>>() {
            ctx.violation(
                "metadata",
                format!(
                    "topic has partitions {indexes:?}, created with {}",
                    ctx.opts.partitions
                ),
            );
        }
    }

    /// Cluster Metadata: learn the controller and the leaders. One broker's answers must be
    /// consistent over time (topic shown stays shown, leader epochs never go down); brokers
    /// may lag one another, so newer leader epochs win across brokers.
    fn on_metadata_cluster(&mut self, ctx: &mut Ctx, node: usize, version: i16, m: wire::TopicMetadata) {
        let count = ctx.transport.nodes();
        let index_of = |id: i32| usize::try_from(id - 1).ok().filter(|&n| n < count);
        self.route.controller = index_of(m.controller_id);
        let listed = m.error_code == code::NONE || m.error_code == code::LEADER_NOT_AVAILABLE;
        if !listed {
            self.check_topic_known(ctx, node, m.error_code, None, "Metadata");
            return;
        }
        learn_topic_id(ctx, m.topic_id, "Metadata");
        self.check_partition_list(ctx, &m);
        if let Some(c) = self.conns.get_mut(&node) {
            c.topic_shown = true;
        }
        for &(p, error, leader, epoch) in &m.partitions {
            let Some(slot) = usize::try_from(p).ok().filter(|&i| i < self.route.leaders.len()) else {
                continue;
            };
            if error == code::NONE
                && (!ctx.shared.broker_ids.contains(&leader) || !m.brokers.contains(&leader))
            {
                let detail = format!(
                    "broker {}: partition {p} led by {leader}, brokers {:?}",
                    node + 1,
                    m.brokers
                );
                ctx.violation("metadata", detail);
            }
            if version >= 7 && error == code::NONE {
                self.check_epoch_on_conn(ctx, node, p, epoch);
            }
            let newer = version < 7 || epoch >= self.route.epochs[slot];
            match index_of(leader) {
                Some(l) if error == code::NONE && newer => {
                    self.route.leaders[slot] = Some(l);
                    self.route.epochs[slot] = self.route.epochs[slot].max(epoch);
                }
                Some(_) if error == code::NONE => {} // older than what another broker said
                _ => self.route.leaders[slot] = None,
            }
        }
    }

    fn check_epoch_on_conn(&mut self, ctx: &mut Ctx, node: usize, p: i32, epoch: i32) {
        let Some(c) = self.conns.get_mut(&node) else {
            return;
        };
        let max = c.epoch_max.entry(p).or_insert(epoch);
        if epoch < *max {
            let detail = format!(
                "broker {}: partition {p}: leader epoch went from {} to {epoch}",
                node + 1,
                *max
            );
            ctx.violation("epoch-regress", detail);
        }
        *max = (*max).max(epoch);
    }

    fn on_api_versions(
        &mut self,
        ctx: &mut Ctx,
        node: usize,
        version: i16,
        frame: &Bytes,
    ) -> Result<(), WireError> {
        // KIP-511: a broker that does not know our version answers in v0 with error 35.
        let decoded = wire::decode_response::<ApiVersionsResponse>(ApiKey::ApiVersions, version, frame)
            .or_else(|_| wire::decode_response::<ApiVersionsResponse>(ApiKey::ApiVersions, 0, frame));
        let (_, r) = decoded?;
        let (error, ranges) = wire::parse_api_versions(&r);
        let listed_anyway = error == code::UNSUPPORTED_VERSION && !ranges.is_empty();
        if error != code::NONE && !listed_anyway {
            return Err(WireError(format!("ApiVersions error {error}")));
        }
        if !self.conns.contains_key(&node) {
            return Ok(());
        }
        if error == code::UNSUPPORTED_VERSION && version > 0 {
            // Ask again in the newest version the broker listed.
            let v = wire::negotiate(&ranges, ApiKey::ApiVersions)
                .map(|(_, hi)| hi)
                .unwrap_or(0);
            if v < version {
                self.send(
                    ctx,
                    node,
                    ApiKey::ApiVersions,
                    v,
                    None,
                    Request::ApiVersions { version: v },
                    Body::ApiVersions,
                );
                return Ok(());
            }
        }
        if let Some(conn) = self.conns.get_mut(&node) {
            conn.versions = Some(ranges);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_fetch(
        &mut self,
        ctx: &mut Ctx,
        node: usize,
        op: OpId,
        partition: i32,
        offset: i64,
        acked_end: i64,
        f: wire::FetchResult,
    ) {
        let p = partition as usize;
        if f.error_code != code::NONE {
            ctx.history
                .complete(op, ctx.now_ms, Outcome::Fail { code: f.error_code });
            self.on_fetch_error(ctx, node, partition, offset, acked_end, f.error_code);
            self.forget_leader(ctx, partition, f.error_code);
            return;
        }
        self.shown(ctx, node, partition);
        let hw = f.high_watermark;
        self.check_hw(ctx, node, partition, hw, acked_end);
        let parsed = match wire::parse_batches(&f.records) {
            Ok(parsed) => parsed,
            Err(e) => {
                ctx.violation(
                    "corrupt-batch",
                    format!("partition {partition} fetch at {offset}: {e}"),
                );
                let reason = format!("corrupt batch: {e}");
                ctx.history.complete(op, ctx.now_ms, Outcome::Info { reason });
                return;
            }
        };
        let records = self.check_fetched(ctx, partition, offset, hw, &parsed);
        if let Some(last) = parsed.batches.last() {
            self.positions[p] = self.positions[p].max(last.last_offset + 1);
        }
        self.known_hw[p] = self.known_hw[p].max(hw);
        let fetched = OkValue::Fetched {
            high_watermark: hw,
            records,
        };
        ctx.history.complete(op, ctx.now_ms, Outcome::Ok(fetched));
    }

    fn on_fetch_error(
        &mut self,
        ctx: &mut Ctx,
        node: usize,
        partition: i32,
        offset: i64,
        acked_end: i64,
        code: i16,
    ) {
        self.check_topic_known(
            ctx,
            node,
            code,
            Some(partition),
            &format!("Fetch on partition {partition}"),
        );
        if code == code::KAFKA_STORAGE_ERROR {
            // The sim never fails reads nor corrupts fsynced bytes: the broker stored or
            // kept something it cannot read back.
            let detail = format!("partition {partition} fetch at {offset}: storage error on read");
            ctx.violation("read-error", detail);
        }
        if code == code::OFFSET_OUT_OF_RANGE {
            if offset <= acked_end {
                let detail = format!(
                    "partition {partition}: fetch at {offset} out of range, but acked end is {acked_end}"
                );
                ctx.violation("hw-regress", detail);
            }
            self.positions[partition as usize] = 0;
        }
    }

    fn check_hw(&mut self, ctx: &mut Ctx, node: usize, partition: i32, hw: i64, acked_end: i64) {
        if hw < acked_end {
            ctx.violation(
                "hw-regress",
                format!("partition {partition}: high watermark {hw} < acked end {acked_end}"),
            );
        }
        if let Some(conn) = self.conns.get_mut(&node) {
            let max = conn.hw_max.entry(partition).or_insert(hw);
            if hw < *max {
                let detail = format!(
                    "partition {partition}: high watermark went from {} to {hw} on one connection",
                    *max
                );
                ctx.violation("hw-regress", detail);
            }
            *max = (*max).max(hw);
        }
    }

    /// Checks a fetch's batches against what was asked and maps records to sent ones.
    fn check_fetched(
        &mut self,
        ctx: &mut Ctx,
        partition: i32,
        offset: i64,
        hw: i64,
        parsed: &wire::ParsedRecords,
    ) -> Vec<(i64, ReadRef)> {
        let tag = format!("partition {partition} fetch at {offset} (hw {hw})");
        check_first_batch(ctx, &tag, offset, hw, parsed);
        let mut out = Vec::new();
        let mut expected_base: Option<i64> = None;
        for b in &parsed.batches {
            if let Some(e) = expected_base.filter(|&e| e != b.base_offset) {
                ctx.violation(
                    "gap",
                    format!(
                        "{tag}: batch at {} follows one ending at {}",
                        b.base_offset,
                        e - 1
                    ),
                );
            }
            expected_base = Some(b.last_offset + 1);
            if b.last_offset >= hw {
                let (base, last) = (b.base_offset, b.last_offset);
                ctx.violation(
                    "read-past-hw",
                    format!("{tag}: batch {base}..={last} reaches past the high watermark"),
                );
            }
            if b.is_control {
                out.extend((b.base_offset..=b.last_offset).map(|o| (o, ReadRef::Control)));
                continue;
            }
            for (i, r) in b.records.iter().enumerate() {
                if r.offset != b.base_offset + i as i64 {
                    let detail = format!(
                        "{tag}: record {i} of batch {} has offset {}",
                        b.base_offset, r.offset
                    );
                    ctx.violation("gap", detail);
                }
                out.push((r.offset, ctx.history.identify(&r.key, &r.value)));
            }
            if b.records.last().map(|r| r.offset) != Some(b.last_offset) {
                let (base, last) = (b.base_offset, b.last_offset);
                ctx.violation(
                    "gap",
                    format!("{tag}: batch {base}..={last} ends before its last offset"),
                );
            }
        }
        out
    }
}

/// Records the topic id the broker named (nil: the version has none); it must never change,
/// across restarts included.
fn learn_topic_id(ctx: &mut Ctx, id: wire::TopicId, source: &str) {
    if id.is_nil() {
        return;
    }
    match ctx.shared.topic_id {
        None => ctx.shared.topic_id = Some(id),
        Some(known) if known != id => {
            ctx.violation(
                "topic-id-changed",
                format!("{source} names topic id {id}, it was {known}"),
            );
        }
        Some(_) => {}
    }
}

/// A fetch below the high watermark returns data, starting with the batch that holds the
/// asked offset (Kafka returns the whole batch; the client skips what precedes it).
fn check_first_batch(ctx: &mut Ctx, tag: &str, offset: i64, hw: i64, parsed: &wire::ParsedRecords) {
    if offset >= hw {
        return;
    }
    match parsed.batches.first() {
        None if parsed.partial_tail_bytes == 0 => {
            ctx.violation(
                "fetch-empty",
                format!("{tag}: no records though the offset is below the high watermark"),
            );
        }
        Some(first) if first.base_offset > offset || first.last_offset < offset => {
            let (base, last) = (first.base_offset, first.last_offset);
            ctx.violation(
                "fetch-skip",
                format!("{tag}: first batch spans {base}..={last}, not the asked offset"),
            );
        }
        _ => {}
    }
}

/// A Produce answer for our partition.
struct Produced {
    partition: i32,
    acks: i16,
    records: usize,
    code: i16,
    base_offset: i64,
}

/// A ListOffsets answer for our partition, with what the request expected.
struct Listed {
    partition: i32,
    timestamp: i64,
    acked_end: i64,
    code: i16,
    offset: i64,
}

/// A request body ready to encode.
enum Body {
    ApiVersions,
    CreateTopics(kafka_protocol::messages::CreateTopicsRequest),
    Produce(kafka_protocol::messages::ProduceRequest),
    Fetch(kafka_protocol::messages::FetchRequest),
    ListOffsets(kafka_protocol::messages::ListOffsetsRequest),
    Metadata(kafka_protocol::messages::MetadataRequest),
}

#[cfg(test)]
mod tests {
    //! Routing in a cluster, driven by hand: a fake transport records connections and
    //! frames, and each broker answer is encoded here.

    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    use kafka_protocol::messages::{BrokerId, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable, StrBytes};

    use crate::swarm::{rng_for, RunSettings};

    /// Records what clients do; brokers in `up` accept connections.
    struct Fake {
        up: Vec<bool>,
        next_conn: ConnId,
        /// conn -> broker index.
        conns: BTreeMap<ConnId, usize>,
        /// (conn, seq, frame) of every request.
        sent: Vec<(ConnId, u64, Bytes)>,
        closed: Vec<ConnId>,
    }

    impl Transport for Fake {
        fn connect(&mut self, _client: ProcessId, node: usize) -> Option<ConnId> {
            if !self.up[node] {
                return None;
            }
            self.next_conn += 1;
            self.conns.insert(self.next_conn, node);
            Some(self.next_conn)
        }
        fn send(&mut self, _client: ProcessId, conn: ConnId, seq: u64, frame: Bytes, _timeout_at_ms: u64) {
            self.sent.push((conn, seq, frame));
        }
        fn close(&mut self, conn: ConnId) {
            self.closed.push(conn);
        }
        fn wake_at(&mut self, _client: ProcessId, _at_ms: u64) {}
        fn disconnect_after_send(&mut self) -> bool {
            false
        }
        fn nodes(&self) -> usize {
            self.up.len()
        }
    }

    struct World {
        now_ms: u64,
        fake: Fake,
        history: History,
        violations: Vec<Violation>,
        shared: Shared,
        opts: SwarmOptions,
    }

    impl World {
        fn new(partitions: i32) -> World {
            let mut opts = SwarmOptions::choose(
                1,
                &RunSettings {
                    nodes: 3,
                    ..RunSettings::default()
                },
            );
            opts.partitions = partitions;
            let n = partitions as usize;
            World {
                now_ms: 0,
                fake: Fake {
                    up: vec![true; 3],
                    next_conn: 0,
                    conns: BTreeMap::new(),
                    sent: Vec::new(),
                    closed: Vec::new(),
                },
                history: History::default(),
                violations: Vec::new(),
                shared: Shared {
                    topic: "sim".to_string(),
                    topic_ready: true,
                    partition_confirmed: vec![false; n],
                    topic_id: None,
                    phase: Phase::Safety,
                    acked_all_end: vec![0; n],
                    final_done: false,
                    leader_epoch_max: vec![-1; n],
                    broker_ids: vec![1, 2, 3],
                    replication_factor: 3,
                },
                opts,
            }
        }

        fn with(&mut self, f: impl FnOnce(&mut Ctx)) {
            let mut ctx = Ctx {
                now_ms: self.now_ms,
                history: &mut self.history,
                violations: &mut self.violations,
                shared: &mut self.shared,
                opts: &self.opts,
                transport: &mut self.fake,
            };
            f(&mut ctx);
        }

        /// The last request: (broker index, api key, its frame).
        fn last(&self) -> (usize, ApiKey, ConnId, u64, Bytes) {
            let (conn, seq, frame) = self.fake.sent.last().cloned().expect("a request was sent");
            let mut buf = frame.clone();
            let h = decode_request_header_from_buffer(&mut buf).expect("a request header");
            let api = ApiKey::try_from(h.request_api_key).expect("a known api key");
            (self.fake.conns[&conn], api, conn, seq, frame)
        }

        /// Answers the last request with `body` and wakes the client.
        fn answer<R: Encodable>(&mut self, c: &mut Client, body: &R) {
            let (_, _, conn, seq, frame) = self.last();
            let reply = respond(&frame, body);
            self.with(|ctx| c.on_response(ctx, conn, seq, reply));
            self.with(|ctx| c.on_wake(ctx));
        }
    }

    fn respond<R: Encodable>(frame: &Bytes, body: &R) -> Bytes {
        let mut buf = frame.clone();
        let h = decode_request_header_from_buffer(&mut buf).expect("a request header");
        let key = ApiKey::try_from(h.request_api_key).expect("a known api key");
        let mut out = BytesMut::new();
        let header = ResponseHeader::default().with_correlation_id(h.correlation_id);
        header
            .encode(&mut out, key.response_header_version(h.request_api_version))
            .expect("header encodes");
        body.encode(&mut out, h.request_api_version)
            .expect("body encodes");
        out.freeze()
    }

    /// One version per API, so every pick is known.
    fn versions() -> ApiVersionsResponse {
        let keys = [
            (ApiKey::Produce, 9),
            (ApiKey::Fetch, 12),
            (ApiKey::ListOffsets, 7),
            (ApiKey::Metadata, 12),
            (ApiKey::ApiVersions, 3),
            (ApiKey::CreateTopics, 7),
        ];
        ApiVersionsResponse::default().with_api_keys(
            keys.iter()
                .map(|&(k, v)| {
                    ApiVersion::default()
                        .with_api_key(k as i16)
                        .with_min_version(v)
                        .with_max_version(v)
                })
                .collect(),
        )
    }

    /// Metadata naming `controller` and, per partition, `(leader id, epoch)`.
    fn metadata(controller: i32, leaders: &[(i32, i32)]) -> MetadataResponse {
        let brokers = (1..=3)
            .map(|id| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_static_str("h"))
                    .with_port(9092)
            })
            .collect();
        let partitions = leaders
            .iter()
            .enumerate()
            .map(|(p, &(leader, epoch))| {
                MetadataResponsePartition::default()
                    .with_error_code(if leader < 0 { code::LEADER_NOT_AVAILABLE } else { 0 })
                    .with_partition_index(p as i32)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch)
            })
            .collect();
        let unknown = leaders.is_empty(); // no such topic yet
        let topic = MetadataResponseTopic::default()
            .with_error_code(if unknown {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                0
            })
            .with_name(Some(TopicName(StrBytes::from_static_str("sim"))))
            .with_partitions(partitions);
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_controller_id(BrokerId(controller))
            .with_topics(vec![topic])
    }

    fn produced(error_code: i16) -> ProduceResponse {
        let p = PartitionProduceResponse::default()
            .with_index(0)
            .with_error_code(error_code)
            .with_base_offset(if error_code == 0 { 0 } else { -1 });
        let t = TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("sim")))
            .with_partition_responses(vec![p]);
        ProduceResponse::default().with_responses(vec![t])
    }

    fn client(role: Role, partitions: i32) -> Client {
        Client::new(0, role, rng_for(1, "client/test"), partitions)
    }

    #[test]
    fn a_producer_finds_the_leader_and_asks_again_after_not_leader() {
        let mut w = World::new(1);
        let mut c = client(Role::Producer, 1);
        w.with(|ctx| c.on_wake(ctx));
        assert_eq!(w.last().0, 0, "Metadata goes to broker 1 first");
        assert_eq!(w.last().1, ApiKey::ApiVersions);
        w.answer(&mut c, &versions());
        assert_eq!((w.last().0, w.last().1), (0, ApiKey::Metadata));
        w.answer(&mut c, &metadata(2, &[(3, 4)]));
        assert_eq!(c.route.leaders, vec![Some(2)]);
        assert_eq!(c.route.controller, Some(1));
        assert_eq!(
            (w.last().0, w.last().1),
            (2, ApiKey::ApiVersions),
            "connects to the leader"
        );
        w.answer(&mut c, &versions());
        assert_eq!((w.last().0, w.last().1), (2, ApiKey::Produce));
        w.answer(&mut c, &produced(code::NOT_LEADER_OR_FOLLOWER));
        assert_eq!(c.route.leaders, vec![None]);
        assert_eq!(
            (w.last().0, w.last().1),
            (1, ApiKey::ApiVersions),
            "asks the next broker for Metadata"
        );
        w.answer(&mut c, &versions());
        assert_eq!((w.last().0, w.last().1), (1, ApiKey::Metadata));
        // An older epoch from a lagging broker does not win; a newer one does.
        w.answer(&mut c, &metadata(2, &[(3, 3)]));
        assert_eq!(c.route.leaders, vec![None]);
        assert_eq!((w.last().0, w.last().1), (2, ApiKey::Metadata));
        w.answer(&mut c, &metadata(2, &[(2, 5)]));
        assert_eq!(c.route.leaders, vec![Some(1)]);
        assert_eq!(
            (w.last().0, w.last().1),
            (1, ApiKey::Produce),
            "the connection is reused"
        );
        w.answer(&mut c, &produced(0));
        assert_eq!(w.violations, vec![]);
        let ops: Vec<&Outcome> = w.history.ops.iter().map(|o| &o.outcome).collect();
        assert!(
            matches!(ops[..], [Outcome::Fail { code: 6 }, Outcome::Ok(_), ..]),
            "{ops:?}"
        );
    }

    #[test]
    fn the_admin_finds_the_controller_and_looks_again_after_not_controller() {
        let mut w = World::new(2);
        w.shared.topic_ready = false;
        let mut c = client(Role::Admin, 2);
        w.with(|ctx| c.on_wake(ctx));
        w.answer(&mut c, &versions());
        assert_eq!((w.last().0, w.last().1), (0, ApiKey::Metadata));
        w.answer(&mut c, &metadata(3, &[]));
        assert_eq!((w.last().0, w.last().1), (2, ApiKey::ApiVersions));
        w.answer(&mut c, &versions());
        assert_eq!((w.last().0, w.last().1), (2, ApiKey::CreateTopics));
        let refused = CreateTopicsResponse::default().with_topics(vec![CreatableTopicResult::default()
            .with_name(TopicName(StrBytes::from_static_str("sim")))
            .with_error_code(code::NOT_CONTROLLER)]);
        w.answer(&mut c, &refused);
        assert_eq!(c.route.controller, None);
        assert!(!w.shared.topic_ready);
        assert_eq!((w.last().0, w.last().1), (1, ApiKey::ApiVersions));
        w.answer(&mut c, &versions());
        w.answer(&mut c, &metadata(2, &[]));
        assert_eq!((w.last().0, w.last().1), (1, ApiKey::CreateTopics));
        let created = CreateTopicsResponse::default().with_topics(vec![CreatableTopicResult::default()
            .with_name(TopicName(StrBytes::from_static_str("sim")))
            .with_error_code(0)]);
        w.answer(&mut c, &created);
        assert!(w.shared.topic_ready && c.done);
        assert_eq!(w.violations, vec![]);
    }

    #[test]
    fn a_lost_connection_forgets_its_routes_and_work_goes_on_where_leaders_are_known() {
        let mut w = World::new(2);
        let mut c = client(Role::Producer, 2);
        w.with(|ctx| c.on_wake(ctx));
        w.answer(&mut c, &versions());
        assert_eq!((w.last().0, w.last().1), (0, ApiKey::Metadata));
        w.answer(&mut c, &metadata(1, &[(2, 1), (3, 1)]));
        // Connects to both leaders before the first operation.
        assert_eq!((w.last().0, w.last().1), (1, ApiKey::ApiVersions));
        w.answer(&mut c, &versions());
        assert_eq!((w.last().0, w.last().1), (2, ApiKey::ApiVersions));
        w.answer(&mut c, &versions());
        assert!([1, 2].contains(&w.last().0), "an operation goes to a leader");
        assert_eq!(c.route.leaders, vec![Some(1), Some(2)]);
        c.fail_in_flight_for_test();
        let conn_to_3 = c.conns[&2].id;
        w.with(|ctx| c.on_conn_lost(ctx, conn_to_3, "broker crashed"));
        assert_eq!(c.route.leaders, vec![Some(1), None]);
        assert!(!c.conns.contains_key(&2));
        // Partition 0's leader is still known: work goes on there until a refresh is due.
        w.now_ms = 10;
        let sent = w.fake.sent.len();
        w.with(|ctx| c.on_wake(ctx));
        assert_eq!(w.fake.sent.len(), sent + 1);
        assert_eq!(w.last().0, 1);
        c.fail_in_flight_for_test();
        // Then Metadata from the next broker in turn (broker 2, index 1: connected).
        w.now_ms = 300;
        w.with(|ctx| c.on_wake(ctx));
        assert_eq!((w.last().0, w.last().1), (1, ApiKey::Metadata));
        w.answer(&mut c, &metadata(1, &[(2, 1), (-1, -1)]));
        assert_eq!(c.route.leaders, vec![Some(1), None], "no leader yet");
        assert_eq!(w.last().0, 1, "work goes on on partition 0");
        c.fail_in_flight_for_test();
        // Broker 3 is next; then broker 1, which is down: skipped after a backoff.
        w.now_ms = 600;
        w.with(|ctx| c.on_wake(ctx));
        assert_eq!((w.last().0, w.last().1), (2, ApiKey::ApiVersions));
        w.answer(&mut c, &versions());
        assert_eq!((w.last().0, w.last().1), (2, ApiKey::Metadata));
        w.answer(&mut c, &metadata(1, &[(2, 1), (-1, -1)]));
        c.fail_in_flight_for_test();
        let conn_to_1 = c.conns[&0].id;
        w.with(|ctx| c.on_conn_lost(ctx, conn_to_1, "broker crashed"));
        w.fake.up[0] = false;
        w.now_ms = 900;
        let sent = w.fake.sent.len();
        w.with(|ctx| c.on_wake(ctx));
        assert_eq!(w.fake.sent.len(), sent, "broker 1 refuses the connection");
        assert_eq!(c.route.metadata_next % 3, 1);
        assert_eq!(w.violations, vec![]);
    }
}
