//! The simulated clients' side of the Kafka wire: request frames built with the
//! `kafka-protocol` crate (header + body, no size prefix), responses decoded into small
//! plain structs, and an independent reader of v2 record batches that verifies every CRC
//! itself rather than trusting the engine's own batch code (the code under test).

use std::collections::BTreeMap;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    fetch_request::{FetchPartition, FetchTopic},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse, FetchRequest,
    FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The API versions our clients can speak, per key: `(min, max)`. Produce stops before the
/// version that names topics by id only; Fetch goes there once the topic id is known.
pub const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 4),
];

/// Kafka error codes the simulator names.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

/// A response we could not make sense of: an engine bug (or ours), reported as a violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn wire_err(what: &str, e: impl std::fmt::Display) -> WireError {
    WireError(format!("{what}: {e}"))
}

/// Encodes `[request header][body]` for `body` at `version`.
pub fn encode_request<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &R,
) -> Result<Bytes, WireError> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_string(client_id.to_string()));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .map_err(|e| wire_err("request header", e))?;
    body.encode(&mut buf, version)
        .map_err(|e| wire_err("request body", e))?;
    Ok(buf.freeze())
}

/// Splits a response frame into its correlation id and a decoded body; fails on trailing bytes.
pub fn decode_response<R: Decodable>(key: ApiKey, version: i16, frame: &[u8]) -> Result<(i32, R), WireError> {
    let mut buf = Bytes::copy_from_slice(frame);
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))
        .map_err(|e| wire_err("response header", e))?;
    let body =
        R::decode(&mut buf, version).map_err(|e| wire_err(&format!("{key:?} v{version} response"), e))?;
    if buf.has_remaining() {
        return Err(WireError(format!(
            "{key:?} v{version} response has {} trailing bytes",
            buf.remaining()
        )));
    }
    Ok((header.correlation_id, body))
}

/// The correlation id at the front of any response (header v0 and v1 both start with it).
pub fn response_correlation_id(frame: &[u8]) -> Option<i32> {
    frame
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

pub fn api_versions_request() -> ApiVersionsRequest {
    let mut r = ApiVersionsRequest::default();
    r.client_software_name = StrBytes::from_static_str("gregor-sim");
    r.client_software_version = StrBytes::from_static_str("0.1.0");
    r
}

/// The version ranges a broker advertised, by API key; error code first.
pub fn parse_api_versions(r: &ApiVersionsResponse) -> (i16, BTreeMap<i16, (i16, i16)>) {
    let ranges = r
        .api_keys
        .iter()
        .map(|k| (k.api_key, (k.min_version, k.max_version)))
        .collect();
    (r.error_code, ranges)
}

/// For each API we use, the highest version both sides speak; `None` if there is none.
pub fn negotiate(broker: &BTreeMap<i16, (i16, i16)>, key: ApiKey) -> Option<(i16, i16)> {
    let &(_, ours_min, ours_max) = CLIENT_VERSIONS.iter().find(|(k, _, _)| *k == key)?;
    let &(theirs_min, theirs_max) = broker.get(&(key as i16))?;
    let lo = ours_min.max(theirs_min);
    let hi = ours_max.min(theirs_max);
    (lo <= hi).then_some((lo, hi))
}

pub fn create_topics_request(
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, String)],
) -> CreateTopicsRequest {
    let mut t = CreatableTopic::default();
    t.name = topic_name(topic);
    t.num_partitions = partitions;
    t.replication_factor = replication_factor;
    for (k, v) in configs {
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_string((*k).to_string());
        c.value = Some(StrBytes::from_string(v.clone()));
        t.configs.push(c);
    }
    let mut r = CreateTopicsRequest::default();
    r.topics.push(t);
    r.timeout_ms = 5_000;
    r
}

/// The error code CreateTopics gave our topic, and its id (nil before v7).
pub fn create_topics_result(r: &CreateTopicsResponse, topic: &str) -> Result<(i16, TopicId), WireError> {
    r.topics
        .iter()
        .find(|t| t.name.0.as_str() == topic)
        .map(|t| (t.error_code, t.topic_id))
        .ok_or_else(|| WireError(format!("CreateTopics response does not name topic {topic}")))
}

pub fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = topic_name(topic);
    t.partition_data.push(p);
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 5_000;
    r.topic_data.push(t);
    r
}

/// `(error_code, base_offset)` of our one partition.
pub fn produce_result(r: &ProduceResponse, topic: &str, partition: i32) -> Result<(i16, i64), WireError> {
    r.responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .map(|p| (p.error_code, p.base_offset))
        .ok_or_else(|| WireError(format!("Produce response lacks {topic}-{partition}")))
}

/// The first Fetch version that names topics by id (and no longer by name).
pub const FETCH_TOPIC_ID_VERSION: i16 = 13;

/// A topic's id (nil if unknown).
pub type TopicId = uuid::Uuid;

/// A Fetch of one partition; from [`FETCH_TOPIC_ID_VERSION`] on the topic goes by `topic_id`.
pub fn fetch_request(
    topic: &str,
    topic_id: TopicId,
    version: i16,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    max_bytes: i32,
) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = max_bytes;
    p.current_leader_epoch = -1;
    p.last_fetched_epoch = -1;
    p.log_start_offset = -1;
    let mut t = FetchTopic::default();
    if version >= FETCH_TOPIC_ID_VERSION {
        t.topic_id = topic_id;
    } else {
        t.topic = topic_name(topic);
    }
    t.partitions.push(p);
    let mut r = FetchRequest::default();
    r.replica_id = kafka_protocol::messages::BrokerId(-1);
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = 1;
    r.max_bytes = max_bytes.saturating_mul(2);
    r.isolation_level = 0;
    r.session_id = 0;
    r.session_epoch = -1;
    r.topics.push(t);
    r
}

/// One partition of a Fetch response.
#[derive(Clone, Debug)]
pub struct FetchResult {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
}

/// Our partition of a Fetch answer, found by topic name or (v13+) topic id.
pub fn fetch_result(
    r: &FetchResponse,
    topic: &str,
    topic_id: TopicId,
    partition: i32,
) -> Result<FetchResult, WireError> {
    if r.error_code != code::NONE {
        return Ok(FetchResult {
            error_code: r.error_code,
            high_watermark: -1,
            log_start_offset: -1,
            records: Bytes::new(),
        });
    }
    let p = r
        .responses
        .iter()
        .filter(|t| t.topic.0.as_str() == topic || (!topic_id.is_nil() && t.topic_id == topic_id))
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| WireError(format!("Fetch response lacks {topic}-{partition}")))?;
    let records = p
        .records
        .clone()
        .ok_or_else(|| WireError(format!("Fetch response for {topic}-{partition} has null records")))?;
    Ok(FetchResult {
        error_code: p.error_code,
        high_watermark: p.high_watermark,
        log_start_offset: p.log_start_offset,
        records,
    })
}

pub fn metadata_request(topic: &str) -> MetadataRequest {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(topic_name(topic));
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![t]);
    // `allow_auto_topic_creation` exists from v4 only; the sim's broker has auto-creation off.
    r
}

/// What Metadata said about our topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub error_code: i16,
    /// Nil before v10.
    pub topic_id: TopicId,
    /// `(partition, error_code, leader_id, leader_epoch)`, sorted by partition.
    pub partitions: Vec<(i32, i16, i32, i32)>,
    /// Node ids of the brokers listed.
    pub brokers: Vec<i32>,
    /// The controller's node id (-1: none known).
    pub controller_id: i32,
}

pub fn metadata_result(r: &MetadataResponse, topic: &str) -> Result<TopicMetadata, WireError> {
    let t = r
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| WireError(format!("Metadata response does not name topic {topic}")))?;
    let mut partitions: Vec<(i32, i16, i32, i32)> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code, p.leader_id.0, p.leader_epoch))
        .collect();
    partitions.sort();
    Ok(TopicMetadata {
        error_code: t.error_code,
        topic_id: t.topic_id,
        partitions,
        brokers: r.brokers.iter().map(|b| b.node_id.0).collect(),
        controller_id: r.controller_id.0,
    })
}

/// Kafka's special ListOffsets timestamps.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;

pub fn list_offsets_request(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    p.current_leader_epoch = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(topic);
    t.partitions.push(p);
    let mut r = ListOffsetsRequest::default();
    r.replica_id = kafka_protocol::messages::BrokerId(-1);
    r.isolation_level = 0;
    r.timeout_ms = 5_000;
    r.topics.push(t);
    r
}

/// `(error_code, offset)` of our one partition.
pub fn list_offsets_result(
    r: &ListOffsetsResponse,
    topic: &str,
    partition: i32,
) -> Result<(i16, i64), WireError> {
    r.topics
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .map(|p| (p.error_code, p.offset))
        .ok_or_else(|| WireError(format!("ListOffsets response lacks {topic}-{partition}")))
}

// ---------------------------------------------------------------------------------------
// Record batches (magic 2), read independently of the engine.

/// Bytes of a v2 batch header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Where the CRC-covered part (attributes to end) starts.
const CRC_START: usize = 21;
/// Compression codec bits of the attributes.
const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_CONTROL: i16 = 0x20;

/// One record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// One batch as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub is_control: bool,
    pub records: Vec<ReadRecord>,
}

/// Record batches parsed from a Fetch response's `records`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedRecords {
    pub batches: Vec<ReadBatch>,
    /// Bytes of an incomplete batch at the end (a size-limited fetch may cut one; clients
    /// ignore it).
    pub partial_tail_bytes: usize,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Parses every batch in `data`, verifying length, magic, CRC32C, record count and each
/// record's framing. A batch that is whole but wrong is an error; a cut-off last batch is not.
pub fn parse_batches(data: &Bytes) -> Result<ParsedRecords, WireError> {
    let mut out = ParsedRecords::default();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 12 {
            out.partial_tail_bytes = rest.len();
            break;
        }
        let batch_len = be_i32(rest, 8);
        let base_offset = be_i64(rest, 0);
        if batch_len < (BATCH_HEADER_BYTES - 12) as i32 {
            return Err(WireError(format!(
                "batch at offset {base_offset} has length {batch_len}"
            )));
        }
        let total = 12 + batch_len as usize;
        if rest.len() < total {
            out.partial_tail_bytes = rest.len();
            break;
        }
        out.batches.push(parse_batch(&data.slice(pos..pos + total))?);
        pos += total;
    }
    Ok(out)
}

fn parse_batch(b: &Bytes) -> Result<ReadBatch, WireError> {
    let base_offset = be_i64(b, 0);
    let magic = b[16] as i8;
    if magic != 2 {
        return Err(WireError(format!(
            "batch at offset {base_offset} has magic {magic}"
        )));
    }
    let crc_stored = be_i32(b, 17) as u32;
    let crc_computed = crc32c::crc32c(&b[CRC_START..]);
    if crc_stored != crc_computed {
        return Err(WireError(format!(
            "batch at offset {base_offset} fails its CRC (stored {crc_stored:#010x}, computed {crc_computed:#010x})"
        )));
    }
    let attributes = be_i16(b, 21);
    let last_offset_delta = be_i32(b, 23);
    let base_timestamp = be_i64(b, 27);
    let record_count = be_i32(b, 57);
    if record_count < 0 || last_offset_delta < 0 {
        return Err(WireError(format!(
            "batch at offset {base_offset}: record count {record_count}, last offset delta {last_offset_delta}"
        )));
    }
    let records = if attributes & ATTR_COMPRESSION_MASK != 0 {
        // Decompression is the engine's code; the CRC above was checked independently.
        decode_compressed(b, base_offset)?
    } else {
        let mut records = Vec::with_capacity(record_count as usize);
        let mut cursor = RecordCursor {
            b,
            pos: BATCH_HEADER_BYTES,
            base_offset,
        };
        for _ in 0..record_count {
            records.push(cursor.record(base_offset, base_timestamp)?);
        }
        if cursor.pos != b.len() {
            return Err(WireError(format!(
                "batch at offset {base_offset}: {} bytes after its {record_count} records",
                b.len() - cursor.pos
            )));
        }
        records
    };
    if records.len() != record_count as usize {
        return Err(WireError(format!(
            "batch at offset {base_offset}: {} records, header says {record_count}",
            records.len()
        )));
    }
    let last_offset = base_offset + i64::from(last_offset_delta);
    if let Some(r) = records.iter().find(|r| r.offset > last_offset) {
        return Err(WireError(format!(
            "batch at offset {base_offset}: record offset {} past last offset",
            r.offset
        )));
    }
    Ok(ReadBatch {
        base_offset,
        last_offset,
        is_control: attributes & ATTR_CONTROL != 0,
        records,
    })
}

fn decode_compressed(b: &Bytes, base_offset: i64) -> Result<Vec<ReadRecord>, WireError> {
    use gregor_engine::batch::{decode_records, BatchView};
    let view = BatchView::parse(b).map_err(|e| WireError(format!("batch at offset {base_offset}: {e}")))?;
    let records =
        decode_records(&view).map_err(|e| WireError(format!("batch at offset {base_offset}: {e}")))?;
    Ok(records
        .into_iter()
        .map(|r| ReadRecord {
            offset: r.offset,
            key: r.key,
            value: r.value,
        })
        .collect())
}

struct RecordCursor<'a> {
    b: &'a Bytes,
    pos: usize,
    base_offset: i64,
}

impl RecordCursor<'_> {
    fn bad(&self, what: &str) -> WireError {
        WireError(format!(
            "batch at offset {}: bad record ({what}) at byte {}",
            self.base_offset, self.pos
        ))
    }

    fn varlong(&mut self) -> Result<i64, WireError> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or_else(|| self.bad("varint past end"))?;
            self.pos += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(self.bad("varint too long"))
    }

    fn bytes(&mut self) -> Result<Option<Bytes>, WireError> {
        let len = self.varlong()?;
        if len < 0 {
            return Ok(None);
        }
        let end = self
            .pos
            .checked_add(len as usize)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.bad("length"))?;
        let out = self.b.slice(self.pos..end);
        self.pos = end;
        Ok(Some(out))
    }

    fn record(&mut self, base_offset: i64, _base_timestamp: i64) -> Result<ReadRecord, WireError> {
        let len = self.varlong()?;
        let start = self.pos;
        if len < 0 || start + len as usize > self.b.len() {
            return Err(self.bad("record length"));
        }
        self.pos += 1; // attributes
        let _timestamp_delta = self.varlong()?;
        let offset_delta = self.varlong()?;
        let key = self.bytes()?;
        let value = self.bytes()?;
        let headers = self.varlong()?;
        for _ in 0..headers.max(0) {
            self.bytes()?.ok_or_else(|| self.bad("null header key"))?;
            self.bytes()?;
        }
        if self.pos != start + len as usize {
            return Err(self.bad("record length disagrees with its fields"));
        }
        Ok(ReadRecord {
            offset: base_offset + offset_delta,
            key,
            value,
        })
    }
}

/// A `(key, value)` for [`encode_batch_for_test`].
#[cfg(test)]
pub type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Encodes a v2 batch (the sim's own encoder, used only to test [`parse_batches`]
/// independently of the engine's).
#[cfg(test)]
pub fn encode_batch_for_test(base_offset: i64, records: &[TestRecord]) -> Bytes {
    fn varlong(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    fn field(out: &mut Vec<u8>, f: Option<&[u8]>) {
        match f {
            None => varlong(out, -1),
            Some(b) => {
                varlong(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }
    let mut body = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut r = vec![0u8];
        varlong(&mut r, 0);
        varlong(&mut r, i as i64);
        field(&mut r, *k);
        field(&mut r, *v);
        varlong(&mut r, 0);
        varlong(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_corruption_is_caught() {
        let a = encode_batch_for_test(5, &[(Some(b"k1"), Some(b"v1")), (None, Some(b"v2"))]);
        let b = encode_batch_for_test(7, &[(Some(b"k3"), None)]);
        let mut all = BytesMut::new();
        all.extend_from_slice(&a);
        all.extend_from_slice(&b);
        all.extend_from_slice(&b[..20]);
        let parsed = parse_batches(&all.freeze()).unwrap();
        assert_eq!(parsed.partial_tail_bytes, 20);
        assert_eq!(parsed.batches.len(), 2);
        assert_eq!(parsed.batches[0].base_offset, 5);
        assert_eq!(parsed.batches[0].last_offset, 6);
        assert_eq!(parsed.batches[0].records[1].offset, 6);
        assert_eq!(parsed.batches[0].records[1].key, None);
        assert_eq!(parsed.batches[0].records[1].value.as_deref(), Some(&b"v2"[..]));
        assert_eq!(parsed.batches[1].records[0].value, None);
        for i in 16..a.len() {
            let mut bad = a.to_vec();
            bad[i] ^= 0x10;
            assert!(
                parse_batches(&Bytes::from(bad)).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn request_frames_decode_as_the_engine_would() {
        let body = produce_request("t", 2, -1, Bytes::from_static(b"xyz"));
        let frame = encode_request(ApiKey::Produce, 9, 77, "c1", &body).unwrap();
        let mut buf = frame.clone();
        let header = kafka_protocol::protocol::decode_request_header_from_buffer(&mut buf).unwrap();
        assert_eq!(header.correlation_id, 77);
        assert_eq!(header.request_api_version, 9);
        let back = ProduceRequest::decode(&mut buf, 9).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn negotiation_takes_the_common_maximum() {
        let mut broker = BTreeMap::new();
        broker.insert(ApiKey::Fetch as i16, (0, 14));
        broker.insert(ApiKey::Produce as i16, (0, 2));
        assert_eq!(negotiate(&broker, ApiKey::Fetch), Some((4, 14)));
        assert_eq!(negotiate(&broker, ApiKey::Produce), None);
        assert_eq!(negotiate(&broker, ApiKey::ListOffsets), None);
    }
}

#[cfg(test)]
mod engine_cross_check {
    use super::*;
    use gregor_engine::batch::{build_batch, decode_records, BatchView, RecordSpec};

    /// Our reader and the engine's builder/decoder agree on every field we check.
    #[test]
    fn our_reader_agrees_with_the_engine_batch_code() {
        let specs: Vec<RecordSpec> = (0..5)
            .map(|i| RecordSpec {
                key: (i % 2 == 0).then(|| Bytes::from(format!("key{i}"))),
                value: (i != 3).then(|| Bytes::from(vec![b'a' + i as u8; i * 40])),
                headers: if i == 1 {
                    vec![("h".to_string(), None)]
                } else {
                    vec![]
                },
                timestamp_ms: 1_700_000_000_000 + i as i64,
            })
            .collect();
        let batch = build_batch(&specs);
        let ours = parse_batches(&batch).unwrap();
        assert_eq!(ours.batches.len(), 1);
        let view = BatchView::parse(&batch).unwrap();
        let theirs = decode_records(&view).unwrap();
        assert_eq!(ours.batches[0].records.len(), theirs.len());
        for (a, b) in ours.batches[0].records.iter().zip(&theirs) {
            assert_eq!((a.offset, &a.key, &a.value), (b.offset, &b.key, &b.value));
        }
        for (a, s) in ours.batches[0].records.iter().zip(&specs) {
            assert_eq!((&a.key, &a.value), (&s.key, &s.value));
        }
    }
}
