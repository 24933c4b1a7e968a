//! Simulated Kafka clients: an admin that creates the topic, producers (acks 0, 1 and all;
//! unique key/value per record), consumers (Fetch from their position or from a random
//! offset, ListOffsets) and the final reader that reads every partition to its high
//! watermark once faults are healed. Each client owns at most one connection, speaks
//! ApiVersions first on it, then picks a random version both sides support per request.
//! Clients record every operation in the [`History`] and check what they can see at once
//! (CRCs, offsets, high watermarks) as [`Violation`]s. They talk to the world only through
//! [`Transport`], so the runner decides latency, loss and crashes.

use std::collections::BTreeMap;

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

/// What a client can ask of the world.
pub trait Transport {
    /// Opens a connection to the broker; `None` if it is not accepting (down, recovering).
    fn connect(&mut self, client: ProcessId) -> Option<ConnId>;
    /// Sends request frame `seq` on `conn`; a timeout fires at `timeout_at_ms` if still open.
    fn send(&mut self, client: ProcessId, conn: ConnId, seq: u64, frame: Bytes, timeout_at_ms: u64);
    /// Closes `conn` from the client side.
    fn close(&mut self, conn: ConnId);
    /// Calls [`Client::on_wake`] at `at_ms`.
    fn wake_at(&mut self, client: ProcessId, at_ms: u64);
    /// Draws whether to drop the connection right after a send (fault injection).
    fn disconnect_after_send(&mut self) -> bool;
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
}

/// One simulated client process.
pub struct Client {
    pub id: ProcessId,
    pub role: Role,
    rng: ChaCha8Rng,
    conn: Option<Conn>,
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
}

impl Client {
    pub fn new(id: ProcessId, role: Role, rng: ChaCha8Rng, partitions: i32) -> Client {
        let n = partitions.max(0) as usize;
        Client {
            id,
            role,
            rng,
            conn: None,
            wake_scheduled_ms: None,
            sent_count: 0,
            positions: vec![0; n],
            known_hw: vec![0; n],
            targets: vec![None; n],
            done: false,
            last_error: None,
        }
    }

    /// Requests in flight on the current connection.
    pub fn in_flight(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.in_flight.len())
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
        let Some(conn) = &self.conn else {
            match ctx.transport.connect(self.id) {
                Some(id) => {
                    self.conn = Some(Conn {
                        id,
                        next_seq: 0,
                        next_correlation_id: 1,
                        versions: None,
                        in_flight: BTreeMap::new(),
                        hw_max: BTreeMap::new(),
                    });
                    self.send(
                        ctx,
                        ApiKey::ApiVersions,
                        3,
                        None,
                        Request::ApiVersions { version: 3 },
                        Body::ApiVersions,
                    );
                }
                None => self.backoff(ctx),
            }
            return;
        };
        if conn.versions.is_none() || !conn.in_flight.is_empty() {
            return;
        }
        match self.role {
            Role::Admin => self.create_topic(ctx),
            Role::Producer if ctx.shared.topic_ready => self.produce(ctx),
            Role::Consumer if ctx.shared.topic_ready => self.consume(ctx),
            Role::FinalReader => self.final_read_step(ctx),
            Role::Producer | Role::Consumer => self.backoff(ctx),
        }
    }

    fn active_in(&self, phase: Phase) -> bool {
        match self.role {
            Role::Admin => phase <= Phase::Final,
            Role::Producer | Role::Consumer => phase == Phase::Safety,
            Role::FinalReader => phase == Phase::Final,
        }
    }

    /// Picks a version of `api` both sides speak, uniformly (exercises every codec).
    fn pick_version(&mut self, api: ApiKey, topic_id_known: bool) -> Option<i16> {
        let versions = self.conn.as_ref()?.versions.as_ref()?;
        let (lo, mut hi) = wire::negotiate(versions, api)?;
        if api == ApiKey::Fetch && !topic_id_known {
            hi = hi.min(wire::FETCH_TOPIC_ID_VERSION - 1);
        }
        (lo <= hi).then(|| self.rng.gen_range(lo..=hi))
    }

    /// Frames `body` as request `api`/`version` and sends it; false if there is no
    /// connection or the body cannot be encoded (then nothing was sent).
    fn send(
        &mut self,
        ctx: &mut Ctx,
        api: ApiKey,
        version: i16,
        op: Option<OpId>,
        request: Request,
        body: Body,
    ) -> bool {
        let Some(conn) = self.conn.as_mut() else {
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
            self.drop_conn(ctx, "client dropped the connection after sending");
        }
        true
    }

    /// Sends `request` as an operation recorded in the history as `kind`.
    fn send_op(&mut self, ctx: &mut Ctx, api: ApiKey, version: i16, kind: OpKind, request: Request) {
        let body = self.body_for(ctx, &request, version);
        let op = ctx.history.invoke(self.id, ctx.now_ms, kind);
        ctx.history.ops[op].final_read = self.role == Role::FinalReader;
        if !self.send(ctx, api, version, Some(op), request, body) {
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
        let Some(version) = self.pick_version(ApiKey::CreateTopics, ctx.shared.topic_id.is_some()) else {
            ctx.violation(
                "protocol",
                "broker offers no CreateTopics version we speak".to_string(),
            );
            self.done = true;
            return;
        };
        self.send_op(
            ctx,
            ApiKey::CreateTopics,
            version,
            OpKind::CreateTopic,
            Request::CreateTopics,
        );
    }

    fn produce(&mut self, ctx: &mut Ctx) {
        let Some(version) = self.pick_version(ApiKey::Produce, ctx.shared.topic_id.is_some()) else {
            ctx.violation(
                "protocol",
                "broker offers no Produce version we speak".to_string(),
            );
            self.done = true;
            return;
        };
        let partition = self.rng.gen_range(0..ctx.opts.partitions);
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
        if !self.send(ctx, ApiKey::Produce, version, Some(op), request, body) {
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

    fn consume(&mut self, ctx: &mut Ctx) {
        let partition = self.rng.gen_range(0..ctx.opts.partitions);
        let p = partition as usize;
        let acked_end = ctx.shared.acked_all_end[p];
        // Metadata now and then; often while the topic id (needed for Fetch v13+) is unknown.
        let metadata_p = if ctx.shared.topic_id.is_none() { 0.3 } else { 0.03 };
        if self.rng.gen_bool(metadata_p) {
            if let Some(version) = self.pick_version(ApiKey::Metadata, ctx.shared.topic_id.is_some()) {
                let body = self.body_for(ctx, &Request::Metadata, version);
                self.send(ctx, ApiKey::Metadata, version, None, Request::Metadata, body);
                return;
            }
        }
        if self.rng.gen_bool(0.1) {
            let Some(version) = self.pick_version(ApiKey::ListOffsets, ctx.shared.topic_id.is_some()) else {
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
                ApiKey::ListOffsets,
                version,
                OpKind::ListOffsets { partition, timestamp },
                request,
            );
            return;
        }
        let Some(version) = self.pick_version(ApiKey::Fetch, ctx.shared.topic_id.is_some()) else {
            ctx.violation("protocol", "broker offers no Fetch version we speak".to_string());
            self.done = true;
            return;
        };
        if self.rng.gen_bool(0.25) {
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
            ApiKey::Fetch,
            version,
            OpKind::Fetch { partition, offset },
            request,
        );
    }

    fn final_read_step(&mut self, ctx: &mut Ctx) {
        let Some(p) =
            (0..self.targets.len()).find(|&p| self.targets[p].is_none_or(|t| self.positions[p] < t))
        else {
            self.done = true;
            ctx.shared.final_done = true;
            return;
        };
        let partition = p as i32;
        let acked_end = ctx.shared.acked_all_end[p];
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
        let Some(version) = self.pick_version(api, ctx.shared.topic_id.is_some()) else {
            ctx.violation("protocol", format!("broker offers no {api:?} version we speak"));
            self.done = true;
            return;
        };
        self.send_op(ctx, api, version, kind, request);
    }

    /// The connection died (broker crash, close, timeout): every request in flight has an
    /// unknown outcome.
    pub fn on_conn_lost(&mut self, ctx: &mut Ctx, conn: ConnId, reason: &str) {
        if self.conn.as_ref().is_some_and(|c| c.id == conn) {
            self.fail_in_flight(ctx, reason);
            self.conn = None;
            self.backoff(ctx);
        }
    }

    fn fail_in_flight(&mut self, ctx: &mut Ctx, reason: &str) {
        let Some(conn) = self.conn.as_mut() else { return };
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

    fn drop_conn(&mut self, ctx: &mut Ctx, reason: &str) {
        if let Some(conn) = &self.conn {
            ctx.transport.close(conn.id);
        }
        self.fail_in_flight(ctx, reason);
        self.conn = None;
        self.backoff(ctx);
    }

    /// A request timed out: give up on the connection.
    pub fn on_timeout(&mut self, ctx: &mut Ctx, conn: ConnId, seq: u64) {
        let timed_out = self
            .conn
            .as_ref()
            .is_some_and(|c| c.id == conn && c.in_flight.contains_key(&seq));
        if timed_out {
            self.drop_conn(ctx, "request timed out");
        }
    }

    /// The answer to request `seq` on `conn` arrived.
    pub fn on_response(&mut self, ctx: &mut Ctx, conn_id: ConnId, seq: u64, frame: Bytes) {
        let Some(conn) = self.conn.as_mut().filter(|c| c.id == conn_id) else {
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
        let result = self.handle_response(ctx, &pending, &frame);
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
            self.drop_conn(ctx, "undecodable answer");
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
    fn handle_response(&mut self, ctx: &mut Ctx, pending: &Pending, frame: &Bytes) -> Result<(), WireError> {
        let (api, version) = (pending.api, pending.version);
        // Every request but ApiVersions and Metadata is recorded as an op.
        let op = pending.op.unwrap_or(usize::MAX);
        match pending.request {
            Request::ApiVersions { version } => return self.on_api_versions(ctx, version, frame),
            Request::CreateTopics => {
                let (_, r) = wire::decode_response::<CreateTopicsResponse>(api, version, frame)?;
                let (code, topic_id) = wire::create_topics_result(&r, &ctx.shared.topic)?;
                if code == code::NONE {
                    learn_topic_id(ctx, topic_id, "CreateTopics");
                }
                self.on_create_topics(ctx, op, code);
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
                self.on_produce(ctx, op, partition, acks, records, code, base_offset);
            }
            Request::Fetch {
                partition,
                offset,
                acked_end,
            } => {
                let (_, r) = wire::decode_response::<FetchResponse>(api, version, frame)?;
                let topic_id = ctx.shared.topic_id.unwrap_or_default();
                let f = wire::fetch_result(&r, &ctx.shared.topic, topic_id, partition)?;
                self.on_fetch(ctx, op, partition, offset, acked_end, f);
            }
            Request::Metadata => {
                let (_, r) = wire::decode_response::<MetadataResponse>(api, version, frame)?;
                self.on_metadata(ctx, version, wire::metadata_result(&r, &ctx.shared.topic)?);
            }
            Request::ListOffsets {
                partition,
                timestamp,
                acked_end,
            } => {
                let (_, r) = wire::decode_response::<ListOffsetsResponse>(api, version, frame)?;
                let (code, offset) = wire::list_offsets_result(&r, &ctx.shared.topic, partition)?;
                self.on_list_offsets(ctx, op, partition, timestamp, acked_end, code, offset);
            }
        }
        Ok(())
    }

    fn on_create_topics(&mut self, ctx: &mut Ctx, op: OpId, code: i16) {
        if code != code::NONE && code != code::TOPIC_ALREADY_EXISTS {
            ctx.history.complete(op, ctx.now_ms, Outcome::Fail { code });
            self.backoff(ctx);
            return;
        }
        ctx.history.complete(op, ctx.now_ms, Outcome::Ok(OkValue::Unit));
        ctx.shared.topic_ready = true;
        if code == code::NONE {
            ctx.shared.partition_confirmed.iter_mut().for_each(|c| *c = true);
        }
        self.done = true;
    }

    #[allow(clippy::too_many_arguments)]
    fn on_produce(
        &mut self,
        ctx: &mut Ctx,
        op: OpId,
        partition: i32,
        acks: i16,
        records: usize,
        code: i16,
        base_offset: i64,
    ) {
        if code != code::NONE {
            let what = format!("Produce to partition {partition}");
            self.check_topic_known(ctx, code, Some(partition), &what);
            ctx.history.complete(op, ctx.now_ms, Outcome::Fail { code });
            return;
        }
        ctx.history
            .complete(op, ctx.now_ms, Outcome::Ok(OkValue::Produced { base_offset }));
        ctx.shared.partition_confirmed[partition as usize] = true;
        if acks == -1 {
            let end = &mut ctx.shared.acked_all_end[partition as usize];
            *end = (*end).max(base_offset + records as i64);
        }
    }

    /// Latest must cover every acks=all write acknowledged before the request; earliest is
    /// 0 (nothing is deleted yet).
    #[allow(clippy::too_many_arguments)]
    fn on_list_offsets(
        &mut self,
        ctx: &mut Ctx,
        op: OpId,
        partition: i32,
        timestamp: i64,
        acked_end: i64,
        code: i16,
        offset: i64,
    ) {
        if code != code::NONE {
            let what = format!("ListOffsets on partition {partition}");
            self.check_topic_known(ctx, code, Some(partition), &what);
            ctx.history.complete(op, ctx.now_ms, Outcome::Fail { code });
            return;
        }
        ctx.shared.partition_confirmed[partition as usize] = true;
        ctx.history
            .complete(op, ctx.now_ms, Outcome::Ok(OkValue::Offset(offset)));
        let p = partition as usize;
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
    /// (`partition` None: the topic as a whole, shown once any partition was).
    fn check_topic_known(&self, ctx: &mut Ctx, code: i16, partition: Option<i32>, what: &str) {
        let confirmed = match partition {
            Some(p) => ctx
                .shared
                .partition_confirmed
                .get(p as usize)
                .copied()
                .unwrap_or(false),
            None => ctx.shared.partition_confirmed.iter().any(|&c| c),
        };
        let unknown = code == code::UNKNOWN_TOPIC_OR_PARTITION || code == code::UNKNOWN_TOPIC_ID;
        if unknown && confirmed {
            ctx.violation(
                "topic-lost",
                format!("{what}: error {code} for a topic the broker had shown"),
            );
        }
    }

    /// The topic, once created, must stay, with every partition led by a known broker
    /// under a leader epoch that never goes down.
    fn on_metadata(&mut self, ctx: &mut Ctx, version: i16, m: wire::TopicMetadata) {
        if m.error_code != code::NONE {
            self.check_topic_known(ctx, m.error_code, None, "Metadata");
            return;
        }
        learn_topic_id(ctx, m.topic_id, "Metadata");
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

    fn on_api_versions(&mut self, ctx: &mut Ctx, version: i16, frame: &Bytes) -> Result<(), WireError> {
        // KIP-511: a broker that does not know our version answers in v0 with error 35.
        let decoded = wire::decode_response::<ApiVersionsResponse>(ApiKey::ApiVersions, version, frame)
            .or_else(|_| wire::decode_response::<ApiVersionsResponse>(ApiKey::ApiVersions, 0, frame));
        let (_, r) = decoded?;
        let (error, ranges) = wire::parse_api_versions(&r);
        let listed_anyway = error == code::UNSUPPORTED_VERSION && !ranges.is_empty();
        if error != code::NONE && !listed_anyway {
            return Err(WireError(format!("ApiVersions error {error}")));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if error == code::UNSUPPORTED_VERSION && version > 0 {
            // Ask again in the newest version the broker listed.
            let v = wire::negotiate(&ranges, ApiKey::ApiVersions)
                .map(|(_, hi)| hi)
                .unwrap_or(0);
            if v < version {
                self.send(
                    ctx,
                    ApiKey::ApiVersions,
                    v,
                    None,
                    Request::ApiVersions { version: v },
                    Body::ApiVersions,
                );
                return Ok(());
            }
        }
        conn.versions = Some(ranges);
        Ok(())
    }

    fn on_fetch(
        &mut self,
        ctx: &mut Ctx,
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
            self.on_fetch_error(ctx, partition, offset, acked_end, f.error_code);
            return;
        }
        ctx.shared.partition_confirmed[p] = true;
        let hw = f.high_watermark;
        self.check_hw(ctx, partition, hw, acked_end);
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

    fn on_fetch_error(&mut self, ctx: &mut Ctx, partition: i32, offset: i64, acked_end: i64, code: i16) {
        self.check_topic_known(
            ctx,
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

    fn check_hw(&mut self, ctx: &mut Ctx, partition: i32, hw: i64, acked_end: i64) {
        if hw < acked_end {
            ctx.violation(
                "hw-regress",
                format!("partition {partition}: high watermark {hw} < acked end {acked_end}"),
            );
        }
        if let Some(conn) = self.conn.as_mut() {
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

/// A request body ready to encode.
enum Body {
    ApiVersions,
    CreateTopics(kafka_protocol::messages::CreateTopicsRequest),
    Produce(kafka_protocol::messages::ProduceRequest),
    Fetch(kafka_protocol::messages::FetchRequest),
    ListOffsets(kafka_protocol::messages::ListOffsetsRequest),
    Metadata(kafka_protocol::messages::MetadataRequest),
}
