//! The harness's Kafka clients: librdkafka through the `rdkafka` crate, never Gregor's own
//! code. One [`Producer`] and one [`Consumer`] per worker process, an admin client that
//! creates the workload's topics, and the leader lookups the leader-targeted nemeses use.
//!
//! Keys map one-to-one onto topic-partitions as in Jepsen's queue workload: key `k` is
//! partition `k % 2` of topic `jq{k / 2}` (two partitions per topic).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::topic_partition_list::{Offset as RdOffset, TopicPartitionList};

use crate::history::{Key, Offset, OpError, Rebalance as RebalanceEvent, Value};

/// The topic holding key `k`.
pub fn topic_of(key: Key) -> String {
    format!("jq{}", key / 2)
}

/// The partition of its topic holding key `k`.
pub fn partition_of(key: Key) -> i32 {
    (key % 2) as i32
}

/// The key a topic-partition holds, if it is one of the workload's.
pub fn key_of(topic: &str, partition: i32) -> Option<Key> {
    let t: u64 = topic.strip_prefix("jq")?.parse().ok()?;
    (0..2).contains(&partition).then(|| t * 2 + partition as u64)
}

/// Producer settings a run varies.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    pub idempotence: bool,
    /// librdkafka `retries` (0 = no retries; idempotence needs > 0).
    pub retries: u32,
}

/// How an operation that did not succeed ended.
#[derive(Clone, Debug)]
pub struct Failure {
    /// `true`: it definitely did not take effect (`fail`); `false`: unknown (`info`).
    pub definite: bool,
    pub error: OpError,
}

fn op_error(kind: &str, msg: impl ToString) -> OpError {
    OpError {
        kind: kind.to_string(),
        msg: msg.to_string(),
    }
}

/// Jepsen's mapping (JEPSEN.md §4): errors that prove the send did not happen are `fail`;
/// everything else, NOT_LEADER_OR_FOLLOWER included (KAFKA-13574), is `info`.
fn classify_send_error(e: &KafkaError) -> Failure {
    let code = e.rdkafka_error_code();
    let definite = matches!(
        code,
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::QueueFull
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::InvalidRequiredAcks
                | RDKafkaErrorCode::InvalidReplicationFactor
        )
    );
    let kind = code.map(|c| format!("{c:?}")).unwrap_or_else(|| "client".into());
    Failure {
        definite,
        error: op_error(&kind, e),
    }
}

/// Delivery reports go back to the send that is waiting for them.
struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Sender<Result<(i32, i64), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let r = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        let _ = reply.send(r);
    }
}

/// One worker's producer: sends one record at a time and waits for its acknowledgement.
pub struct Producer {
    inner: Option<BaseProducer<DeliveryContext>>,
}

impl Producer {
    pub fn new(bootstrap: &str, s: &ProducerSettings) -> Result<Producer, KafkaError> {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", if s.idempotence { "true" } else { "false" })
            .set("retries", s.retries.to_string())
            .set("request.timeout.ms", "3000")
            .set("message.timeout.ms", "10000")
            .set("retry.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set("linger.ms", "0")
            .set("socket.timeout.ms", "3000")
            .create_with_context(DeliveryContext)?;
        Ok(Producer { inner: Some(inner) })
    }

    /// Sends `value` to `key` (acks=all) and waits up to `cap` for the acknowledgement:
    /// the offset, or how it failed.
    pub fn send(&self, key: Key, value: Value, cap: Duration) -> Result<Offset, Failure> {
        let producer = self.inner.as_ref().expect("producer present until drop");
        let (tx, rx): (Sender<_>, Receiver<_>) = mpsc::channel();
        let topic = topic_of(key);
        let payload = value.to_string();
        let record = BaseRecord::<(), String, _>::with_opaque_to(&topic, Box::new(tx))
            .partition(partition_of(key))
            .payload(&payload);
        if let Err((e, _)) = producer.send(record) {
            // Refused before it left the client: it cannot have taken effect.
            return Err(Failure {
                definite: true,
                error: op_error("enqueue", e),
            });
        }
        let deadline = Instant::now() + cap;
        loop {
            producer.poll(Duration::from_millis(20));
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(Ok((_, offset))) if offset >= 0 => return Ok(offset),
                Ok(Ok((_, offset))) => {
                    return Err(Failure {
                        definite: false,
                        error: op_error("no-offset", format!("acknowledged at offset {offset}")),
                    })
                }
                Ok(Err(e)) => return Err(classify_send_error(&e)),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Failure {
                        definite: false,
                        error: op_error("client", "delivery report dropped"),
                    })
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(Failure {
                        definite: false,
                        error: op_error("timeout", format!("no acknowledgement in {cap:?}")),
                    })
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

impl Drop for Producer {
    /// librdkafka's destroy can block on a paused broker; a worker never waits for it.
    fn drop(&mut self) {
        if let Some(p) = self.inner.take() {
            std::thread::spawn(move || drop(p));
        }
    }
}

/// Rebalance callbacks, turned into the history's rebalance events.
#[derive(Default)]
pub struct RebalanceLog {
    events: Mutex<Vec<RebalanceEvent>>,
}

impl RebalanceLog {
    fn push(&self, kind: &str, tpl: &TopicPartitionList) {
        let mut keys: Vec<Key> = tpl
            .elements()
            .iter()
            .filter_map(|e| key_of(e.topic(), e.partition()))
            .collect();
        keys.sort_unstable();
        self.events.lock().unwrap().push(RebalanceEvent {
            kind: kind.into(),
            keys,
        });
    }

    /// The events since the last call.
    pub fn drain(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

pub struct GroupContext {
    pub log: Arc<RebalanceLog>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.log.push("assigned", tpl),
            Rebalance::Revoke(tpl) => self.log.push("revoked", tpl),
            Rebalance::Error(_) => {}
        }
    }
}

/// How a consumer is attached to its partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    None,
    Assign,
    Subscribe,
}

/// One worker's consumer. Under `assign` it keeps its own positions, so that re-assigning a
/// kept key continues where it was instead of jumping to a committed offset.
pub struct Consumer {
    inner: Option<BaseConsumer<GroupContext>>,
    pub log: Arc<RebalanceLog>,
    attach: Attach,
    /// Next offset to read per assigned key (assign mode).
    positions: BTreeMap<Key, Offset>,
}

/// What one poll returned.
pub struct Polled {
    pub records: Vec<(Key, Value, Offset)>,
    pub error: Option<OpError>,
}

impl Consumer {
    pub fn new(bootstrap: &str, group: &str) -> Result<Consumer, KafkaError> {
        let log = Arc::new(RebalanceLog::default());
        let inner = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "300")
            .set("socket.timeout.ms", "3000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("fetch.wait.max.ms", "100")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .create_with_context(GroupContext { log: log.clone() })?;
        Ok(Consumer {
            inner: Some(inner),
            log,
            attach: Attach::None,
            positions: BTreeMap::new(),
        })
    }

    fn c(&self) -> &BaseConsumer<GroupContext> {
        self.inner.as_ref().expect("consumer present until drop")
    }

    pub fn attach(&self) -> Attach {
        self.attach
    }

    /// Replaces the assignment with `keys`. Kept keys continue from their position; new
    /// ones start at the beginning when `seek_to_beginning`, else at the group's committed
    /// offset (or the earliest).
    pub fn assign(&mut self, keys: &[Key], seek_to_beginning: bool) -> Result<(), OpError> {
        if self.attach == Attach::Subscribe {
            self.c().unsubscribe();
        }
        let mut tpl = TopicPartitionList::new();
        let mut positions = BTreeMap::new();
        for &k in keys {
            let offset = match (seek_to_beginning, self.positions.get(&k)) {
                (true, _) => RdOffset::Beginning,
                (false, Some(&p)) => {
                    positions.insert(k, p);
                    RdOffset::Offset(p)
                }
                (false, None) => RdOffset::Stored,
            };
            tpl.add_partition_offset(&topic_of(k), partition_of(k), offset)
                .map_err(|e| op_error("assign", e))?;
        }
        self.c().assign(&tpl).map_err(|e| op_error("assign", e))?;
        self.attach = Attach::Assign;
        self.positions = positions;
        Ok(())
    }

    /// Subscribes to the topics holding `keys`; the group decides the partitions.
    pub fn subscribe(&mut self, keys: &[Key]) -> Result<(), OpError> {
        if self.attach == Attach::Assign {
            let _ = self.c().unassign();
        }
        let mut topics: Vec<String> = keys.iter().map(|&k| topic_of(k)).collect();
        topics.sort();
        topics.dedup();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.c().subscribe(&names).map_err(|e| op_error("subscribe", e))?;
        self.attach = Attach::Subscribe;
        self.positions.clear();
        Ok(())
    }

    /// One poll: waits up to `wait` for the first record, then takes what is ready (at most
    /// `max` records).
    pub fn poll(&mut self, wait: Duration, max: usize) -> Polled {
        let mut records = Vec::new();
        let mut error = None;
        let mut timeout = wait;
        while records.len() < max {
            match self.c().poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    let Some(key) = key_of(m.topic(), m.partition()) else {
                        continue;
                    };
                    let value = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(|s| s.parse::<Value>().ok());
                    match value {
                        Some(v) => {
                            records.push((key, v, m.offset()));
                            if self.attach == Attach::Assign {
                                self.positions.insert(key, m.offset() + 1);
                            }
                        }
                        None => {
                            error = Some(op_error(
                                "bad-payload",
                                format!("key {key} offset {}: not a value", m.offset()),
                            ));
                        }
                    }
                }
                Some(Err(e)) => {
                    error = Some(op_error("poll", e));
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        Polled { records, error }
    }

    /// Commits the consumed positions (subscribe mode, after a poll that read something).
    pub fn commit(&self, read: &[(Key, Value, Offset)]) -> Result<(), OpError> {
        let mut next: BTreeMap<Key, Offset> = BTreeMap::new();
        for &(k, _, o) in read {
            let e = next.entry(k).or_insert(o + 1);
            *e = (*e).max(o + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (k, o) in next {
            tpl.add_partition_offset(&topic_of(k), partition_of(k), RdOffset::Offset(o))
                .map_err(|e| op_error("commit", e))?;
        }
        self.c()
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| op_error("commit", e))
    }

    /// After a failed or unknown poll: back to the first offset it read per key, so the next
    /// poll reads those records again (JEPSEN.md §1, the rewind the poll-skip check assumes).
    pub fn rewind(&mut self, read: &[(Key, Value, Offset)]) {
        let mut first: BTreeMap<Key, Offset> = BTreeMap::new();
        for &(k, _, o) in read {
            first.entry(k).or_insert(o);
        }
        for (k, o) in first {
            let _ = self.c().seek(
                &topic_of(k),
                partition_of(k),
                RdOffset::Offset(o),
                Duration::from_secs(2),
            );
            if self.attach == Attach::Assign {
                self.positions.insert(k, o);
            }
        }
    }
}

impl Drop for Consumer {
    /// Closing a group member can block on an unreachable coordinator; never wait for it.
    fn drop(&mut self) {
        if let Some(c) = self.inner.take() {
            std::thread::spawn(move || drop(c));
        }
    }
}

/// Creates the topics holding `keys` (two partitions each, replication `rf`) and waits until
/// every one exists, retrying until `deadline`.
pub fn create_topics(bootstrap: &str, topics: &[String], rf: i32, deadline: Instant) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "3000")
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    let mut pending: Vec<String> = topics.to_vec();
    let mut last_error = String::new();
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            return Err(format!(
                "could not create topics {}: {last_error}",
                pending.join(", ")
            ));
        }
        let new: Vec<NewTopic<'_>> = pending
            .iter()
            .map(|t| NewTopic::new(t, 2, TopicReplication::Fixed(rf)))
            .collect();
        match futures_executor::block_on(admin.create_topics(&new, &opts)) {
            Ok(results) => {
                let mut still = Vec::new();
                for r in results {
                    match r {
                        Ok(_) => {}
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((t, code)) => {
                            last_error = format!("{t}: {code:?}");
                            still.push(t);
                        }
                    }
                }
                pending = still;
            }
            Err(e) => last_error = e.to_string(),
        }
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// A metadata-only client for the leader-targeted nemeses.
pub struct LeaderLookup {
    client: BaseConsumer,
    bootstrap: Vec<SocketAddr>,
}

impl LeaderLookup {
    pub fn new(bootstrap: &str) -> Result<LeaderLookup, String> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("socket.timeout.ms", "2000")
            .set("reconnect.backoff.max.ms", "500")
            .create()
            .map_err(|e| format!("metadata client: {e}"))?;
        let bootstrap = bootstrap.split(',').filter_map(|a| a.parse().ok()).collect();
        Ok(LeaderLookup { client, bootstrap })
    }

    /// The broker id leading `key`'s partition, as metadata reports it now.
    pub fn partition_leader(&self, key: Key) -> Option<i32> {
        let topic = topic_of(key);
        let md = self
            .client
            .fetch_metadata(Some(&topic), Duration::from_secs(2))
            .ok()?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition_of(key))?;
        (p.leader() >= 0).then_some(p.leader())
    }

    /// The controller (metadata-quorum leader) as some broker reports it: a raw Metadata v1
    /// request, since librdkafka does not expose the controller id. The first broker that
    /// answers with a controller wins.
    pub fn controller(&self) -> Option<i32> {
        self.bootstrap
            .iter()
            .find_map(|a| raw_controller_id(*a, Duration::from_secs(1)).filter(|&id| id >= 0))
    }
}

/// Metadata v1 with an empty topic list; returns the response's controller id.
fn raw_controller_id(addr: SocketAddr, timeout: Duration) -> Option<i32> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let client_id = b"gregor-jepsen";
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes()); // api key: Metadata
    body.extend_from_slice(&1i16.to_be_bytes()); // version 1
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    body.extend_from_slice(&0i32.to_be_bytes()); // topics: [] (none)
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = i32::from_be_bytes(len);
    if !(8..=1 << 20).contains(&len) {
        return None;
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).ok()?;
    let mut r = Cursor { buf: &buf, at: 4 }; // skip the correlation id
    let brokers = r.i32()?;
    for _ in 0..brokers.max(0) {
        r.i32()?; // node id
        r.string()?; // host
        r.i32()?; // port
        r.string()?; // rack (nullable)
    }
    r.i32()
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.at..self.at + n)?;
        self.at += n;
        Some(s)
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<()> {
        let n = i16::from_be_bytes(self.take(2)?.try_into().ok()?);
        if n > 0 {
            self.take(n as usize)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_one_to_one_onto_topic_partitions() {
        for k in 0..100u64 {
            assert_eq!(key_of(&topic_of(k), partition_of(k)), Some(k));
        }
        assert_eq!(topic_of(7), "jq3");
        assert_eq!(partition_of(7), 1);
        assert_eq!(key_of("jq3", 2), None);
        assert_eq!(key_of("__consumer_offsets", 0), None);
        assert_eq!(key_of("jqx", 0), None);
    }

    #[test]
    fn definite_and_unknown_send_errors() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(classify_send_error(&e).definite);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::NotLeaderForPartition);
        assert!(!classify_send_error(&e).definite, "KAFKA-13574: not definite");
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(!classify_send_error(&e).definite);
    }
}
