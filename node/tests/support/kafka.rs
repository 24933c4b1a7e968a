//! A minimal blocking Kafka client for the cluster tests: Metadata v4, CreateTopics v2,
//! Produce v3 and Fetch v4, hand-encoded (non-flexible versions only) over a std
//! `TcpStream`. gregor-node has no Kafka client crate among its dev-dependencies; record
//! batches are built and read with `gregor_engine::batch`, which is a normal dependency.
//!
//! Every call returns an `io::Error` for a connection that fails, times out or answers
//! something that does not parse; callers treat those as "try another node".

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Kafka error codes the tests look at.
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const NETWORK_EXCEPTION: i16 = 13;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const NOT_CONTROLLER: i16 = 41;

    /// Errors a producer or consumer retries after refreshing metadata.
    pub fn is_retriable(code: i16) -> bool {
        matches!(
            code,
            UNKNOWN_TOPIC_OR_PARTITION
                | LEADER_NOT_AVAILABLE
                | NOT_LEADER_OR_FOLLOWER
                | REQUEST_TIMED_OUT
                | NETWORK_EXCEPTION
                | NOT_ENOUGH_REPLICAS
                | NOT_ENOUGH_REPLICAS_AFTER_APPEND
                | NOT_CONTROLLER
        )
    }
}

const API_PRODUCE: i16 = 0;
const API_FETCH: i16 = 1;
const API_METADATA: i16 = 3;
const API_CREATE_TOPICS: i16 = 19;

/// Largest response frame accepted; anything bigger is a broken stream.
const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// One connection to one broker.
pub struct Conn {
    stream: TcpStream,
    correlation_id: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMeta {
    pub error_code: i16,
    pub index: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub error_code: i16,
    pub name: String,
    pub partitions: Vec<PartitionMeta>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub brokers: Vec<Broker>,
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub topics: Vec<TopicMeta>,
}

impl Metadata {
    /// The sorted ids of the brokers listed.
    pub fn broker_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.brokers.iter().map(|b| b.node_id).collect();
        ids.sort_unstable();
        ids
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// One partition's answer to a Fetch.
#[derive(Debug)]
pub struct FetchedPartition {
    pub error_code: i16,
    pub high_watermark: i64,
    pub records: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<Conn> {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            correlation_id: 0,
        })
    }

    /// Sends one request (header v1) and reads its answer (header v0); returns the body.
    fn call(&mut self, api_key: i16, api_version: i16, body: &Writer) -> io::Result<Reader> {
        self.correlation_id += 1;
        let mut header = Writer::default();
        header.i16(api_key);
        header.i16(api_version);
        header.i32(self.correlation_id);
        header.string(Some("gregor-cluster-test"));
        let size = header.0.len() + body.0.len();
        let mut frame = Vec::with_capacity(4 + size);
        frame.extend_from_slice(&u32::try_from(size).expect("small request").to_be_bytes());
        frame.extend_from_slice(&header.0);
        frame.extend_from_slice(&body.0);
        self.stream.write_all(&frame)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = u32::from_be_bytes(size) as usize;
        if !(4..=RESPONSE_BYTES_MAX).contains(&size) {
            return Err(invalid(format!("response frame of {size} bytes")));
        }
        let mut buf = vec![0u8; size];
        self.stream.read_exact(&mut buf)?;
        let mut r = Reader { buf, pos: 0 };
        let correlation_id = r.i32()?;
        if correlation_id != self.correlation_id {
            return Err(invalid(format!(
                "correlation id {correlation_id}, expected {}",
                self.correlation_id
            )));
        }
        Ok(r)
    }

    /// Metadata v4 for `topics` (`None`: every topic), never creating one.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> io::Result<Metadata> {
        let mut w = Writer::default();
        match topics {
            None => w.i32(-1),
            Some(names) => {
                w.array_len(names.len());
                for name in names {
                    w.string(Some(name));
                }
            }
        }
        w.i8(0); // allow_auto_topic_creation
        let mut r = self.call(API_METADATA, 4, &w)?;
        r.i32()?; // throttle_time_ms
        let mut brokers = Vec::new();
        for _ in 0..r.array_len()? {
            let node_id = r.i32()?;
            let host = r.string()?.unwrap_or_default();
            let port = r.i32()?;
            r.string()?; // rack
            brokers.push(Broker { node_id, host, port });
        }
        let cluster_id = r.string()?;
        let controller_id = r.i32()?;
        let mut topics = Vec::new();
        for _ in 0..r.array_len()? {
            let error_code = r.i16()?;
            let name = r.string()?.unwrap_or_default();
            r.i8()?; // is_internal
            let mut partitions = Vec::new();
            for _ in 0..r.array_len()? {
                partitions.push(PartitionMeta {
                    error_code: r.i16()?,
                    index: r.i32()?,
                    leader: r.i32()?,
                    replicas: r.i32_array()?,
                    isr: r.i32_array()?,
                });
            }
            partitions.sort_by_key(|p| p.index);
            topics.push(TopicMeta {
                error_code,
                name,
                partitions,
            });
        }
        Ok(Metadata {
            brokers,
            cluster_id,
            controller_id,
            topics,
        })
    }

    /// CreateTopics v2 for one topic; returns its error code and message.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        timeout_ms: i32,
    ) -> io::Result<(i16, Option<String>)> {
        let mut w = Writer::default();
        w.array_len(1);
        w.string(Some(name));
        w.i32(partitions);
        w.i16(replication_factor);
        w.array_len(0); // assignments
        w.array_len(0); // configs
        w.i32(timeout_ms);
        w.i8(0); // validate_only
        let mut r = self.call(API_CREATE_TOPICS, 2, &w)?;
        r.i32()?; // throttle_time_ms
        if r.array_len()? != 1 {
            return Err(invalid("CreateTopics answered for other than one topic".into()));
        }
        let answered = r.string()?.unwrap_or_default();
        if answered != name {
            return Err(invalid(format!("CreateTopics answered for '{answered}'")));
        }
        let error_code = r.i16()?;
        let message = r.string()?;
        Ok((error_code, message))
    }

    /// Produce v3 of one batch to one partition; returns the error code and base offset.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i16,
        timeout_ms: i32,
        batch: &[u8],
    ) -> io::Result<(i16, i64)> {
        let mut w = Writer::default();
        w.string(None); // transactional_id
        w.i16(acks);
        w.i32(timeout_ms);
        w.array_len(1);
        w.string(Some(topic));
        w.array_len(1);
        w.i32(partition);
        w.bytes(batch);
        let mut r = self.call(API_PRODUCE, 3, &w)?;
        if r.array_len()? != 1
            || r.string()?.as_deref() != Some(topic)
            || r.array_len()? != 1
            || r.i32()? != partition
        {
            return Err(invalid("Produce answered for another partition".into()));
        }
        let error_code = r.i16()?;
        let base_offset = r.i64()?;
        Ok((error_code, base_offset))
    }

    /// Fetch v4 of one partition from `offset` (read_uncommitted, no waiting).
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> io::Result<FetchedPartition> {
        let mut w = Writer::default();
        w.i32(-1); // replica_id: a consumer
        w.i32(0); // max_wait_ms
        w.i32(1); // min_bytes
        w.i32(max_bytes);
        w.i8(0); // isolation_level
        w.array_len(1);
        w.string(Some(topic));
        w.array_len(1);
        w.i32(partition);
        w.i64(offset);
        w.i32(max_bytes);
        let mut r = self.call(API_FETCH, 4, &w)?;
        r.i32()?; // throttle_time_ms
        if r.array_len()? != 1
            || r.string()?.as_deref() != Some(topic)
            || r.array_len()? != 1
            || r.i32()? != partition
        {
            return Err(invalid("Fetch answered for another partition".into()));
        }
        let error_code = r.i16()?;
        let high_watermark = r.i64()?;
        r.i64()?; // last_stable_offset
        let aborted = r.i32()?;
        for _ in 0..aborted.max(0) {
            r.i64()?;
            r.i64()?;
        }
        let records = r.bytes()?.unwrap_or_default();
        Ok(FetchedPartition {
            error_code,
            high_watermark,
            records,
        })
    }
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Big-endian request encoding.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn i8(&mut self, v: i8) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn array_len(&mut self, n: usize) {
        self.i32(i32::try_from(n).expect("small array"));
    }
    fn string(&mut self, s: Option<&str>) {
        match s {
            None => self.i16(-1),
            Some(s) => {
                self.i16(i16::try_from(s.len()).expect("short string"));
                self.0.extend_from_slice(s.as_bytes());
            }
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.array_len(b.len());
        self.0.extend_from_slice(b);
    }
}

/// Big-endian response decoding; running out of bytes is an `InvalidData` error.
struct Reader {
    buf: Vec<u8>,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.buf.len() - self.pos < n {
            return Err(invalid(format!(
                "response ends at byte {} of {}; {n} more wanted",
                self.pos,
                self.buf.len()
            )));
        }
        self.pos += n;
        Ok(&self.buf[self.pos - n..self.pos])
    }
    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }
    fn i8(&mut self) -> io::Result<i8> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> io::Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// An array's length; a null array counts as empty.
    fn array_len(&mut self) -> io::Result<usize> {
        Ok(usize::try_from(self.i32()?).unwrap_or(0))
    }
    fn string(&mut self) -> io::Result<Option<String>> {
        let Ok(n) = usize::try_from(self.i16()?) else {
            return Ok(None);
        };
        Ok(Some(String::from_utf8_lossy(self.take(n)?).into_owned()))
    }
    fn bytes(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Ok(n) = usize::try_from(self.i32()?) else {
            return Ok(None);
        };
        Ok(Some(self.take(n)?.to_vec()))
    }
    fn i32_array(&mut self) -> io::Result<Vec<i32>> {
        (0..self.array_len()?).map(|_| self.i32()).collect()
    }
}
