//! What the benchmarks share: the criterion settings, deterministic record payloads, and
//! request frames encoded the way a client sends them (header + body, no size prefix).
//! Everything is built once, outside the measured loops.
#![allow(dead_code)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput};
use gregor_engine::batch::{build_batch, RecordSpec};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// The topic every engine benchmark writes to.
pub const TOPIC: &str = "bench";
/// What a producer sends per request in the produce benchmarks (`batch.size` 16 KiB).
pub const PRODUCE_BATCH_BYTES_MAX: usize = 16 * 1024;
/// Payload of one record in the produce and fetch benchmarks.
pub const RECORD_VALUE_BYTES: usize = 100;
/// Versions the Java client of Kafka 3.x uses, and the engine's scenario tests too.
pub const PRODUCE_VERSION: i16 = 9;
pub const FETCH_VERSION: i16 = 11;
pub const METADATA_VERSION: i16 = 12;
pub const CREATE_TOPICS_VERSION: i16 = 5;
pub const CORRELATION_ID: i32 = 42;

/// Short runs, so `cargo bench -p gregor-engine` takes a few minutes; command-line flags
/// (`--warm-up-time`, `--measurement-time`) still override these. Times are this thread's
/// CPU time, so other work on a shared machine inflates them far less than wall time.
pub fn config() -> Criterion<ThreadCpuTime> {
    Criterion::default()
        .with_measurement(ThreadCpuTime)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

/// CPU time of the calling thread (user + system, page faults included), in nanoseconds.
/// Criterion reads it once per sample of many iterations, so the syscall is amortised.
pub struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is readable");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start_ns: u64) -> u64 {
        thread_cpu_ns() - start_ns
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNsFormatter
    }
}

/// Criterion's wall-time formatting (ns … s, B/s … GiB/s, elem/s … Gelem/s) for CPU ns.
struct CpuNsFormatter;

impl ValueFormatter for CpuNsFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            ns if ns < 1e3 => (1.0, "ns"),
            ns if ns < 1e6 => (1e-3, "µs"),
            ns if ns < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|value| *value *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (amount, units): (f64, [(f64, &'static str); 4]) = match *throughput {
            Throughput::Bytes(bytes) => (
                bytes as f64,
                [
                    (1.0, "  B/s"),
                    (1024.0, "KiB/s"),
                    (1048576.0, "MiB/s"),
                    (1073741824.0, "GiB/s"),
                ],
            ),
            Throughput::BytesDecimal(bytes) => (
                bytes as f64,
                [(1.0, "  B/s"), (1e3, "KB/s"), (1e6, "MB/s"), (1e9, "GB/s")],
            ),
            Throughput::Elements(elements) => (
                elements as f64,
                [
                    (1.0, " elem/s"),
                    (1e3, "Kelem/s"),
                    (1e6, "Melem/s"),
                    (1e9, "Gelem/s"),
                ],
            ),
        };
        let typical_per_second = amount * 1e9 / typical_ns;
        let (denominator, unit) = units
            .iter()
            .rev()
            .find(|(denominator, _)| typical_per_second >= *denominator)
            .copied()
            .unwrap_or(units[0]);
        values
            .iter_mut()
            .for_each(|value| *value = amount * 1e9 / *value / denominator);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// `size_bytes` of lowercase text from a fixed LCG: compressible roughly like log lines,
/// not like a run of zeros, and the same on every run.
pub fn payload(size_bytes: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut out = Vec::with_capacity(size_bytes);
    for _ in 0..size_bytes {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // 16 letters and a space: the top bits pick one.
        out.push(b"abcdefghijklmnop "[((state >> 59) as usize) % 17]);
    }
    Bytes::from(out)
}

/// `count` records with no key and no headers, a `value_bytes` value each, 1 ms apart.
pub fn records(count: usize, value_bytes: usize) -> Vec<RecordSpec> {
    (0..count)
        .map(|i| RecordSpec {
            key: None,
            value: Some(payload(value_bytes, i as u64)),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

/// The largest uncompressed batch of `value_bytes` records that fits in `batch_bytes_max`,
/// as a producer with that `batch.size` fills it; with its record count.
pub fn full_batch(batch_bytes_max: usize, value_bytes: usize) -> (Bytes, usize) {
    let one = build_batch(&records(1, value_bytes)).len();
    let two = build_batch(&records(2, value_bytes)).len();
    let per_record = two - one;
    assert!(per_record > 0 && one <= batch_bytes_max);
    let mut count = 1 + (batch_bytes_max - one) / per_record;
    // Record sizes grow by a byte where the offset delta needs a second varint byte.
    loop {
        let batch = build_batch(&records(count, value_bytes));
        if batch.len() <= batch_bytes_max {
            return (batch, count);
        }
        count -= 1;
        assert!(count >= 1);
    }
}

/// A request frame: header, then body.
pub fn frame<T: Encodable>(api: ApiKey, version: i16, body: &T) -> Bytes {
    let mut out = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    header
        .encode(&mut out, api.request_header_version(version))
        .expect("a request header encodes");
    body.encode(&mut out, version).expect("a request body encodes");
    out.freeze()
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One topic of `partitions` partitions, with the broker's default configs.
pub fn create_topics_request(name: &str, partitions: i32) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)])
        .with_timeout_ms(1000)
}

/// One batch to partition 0 of `topic`.
pub fn produce_request(topic: &str, acks: i16, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])])
}

/// A fetch of partition 0 of `topic` that answers at once (no long poll).
pub fn fetch_request(topic: &str, offset: i64, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)])])
}

/// Metadata for one named topic, as a producer asks before its first send.
pub fn metadata_request(topic: &str) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]))
        .with_allow_auto_topic_creation(false)
}
