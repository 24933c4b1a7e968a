//! The request paths through `Engine::step`, as a driver runs them: a frame in, every IO op
//! it causes completed at once, the encoded response out. The frame is encoded once; each
//! iteration costs the engine's decode, validation, append bookkeeping, group commit and
//! response encoding, plus a few pushes and pops of this driver.
//!
//! Produce: acks=1, one full 16 KiB batch of 100 B records per request. Appends are
//! acknowledged without keeping their bytes, so memory stays flat however long criterion
//! runs. Fetch: ~1 MiB produced first (kept, and all in the 4 MiB tail cache), then reads
//! at the end of the log, each answered from the tail cache without IO.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use common::Harness;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gregor_engine::{BrokerConfig, Input, IoOp, IoResult, Output, Token};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;
use support::ThreadCpuTime;

/// Batches produced before the fetch benchmarks: 64 × 16 KiB = 1 MiB.
const FETCH_LOG_BATCHES: usize = 64;
/// `max_bytes` and `partition_max_bytes` of every fetch.
const FETCH_BYTES_MAX: i32 = 1024 * 1024;
/// How many batches before the end "near the end" starts.
const FETCH_TAIL_BATCHES: u64 = 4;
/// No request of these benchmarks causes more IO ops than this (append, sync, a roll's
/// index writes and segment creation).
const IO_OPS_PER_REQUEST_MAX: usize = 64;

/// Keeps glibc from returning large freed buffers to the kernel between iterations.
///
/// A 1 MiB fetch allocates about 2 MiB of fresh buffers (the records, then the encoded
/// frame). With glibc's adaptive defaults a run settles, by chance of heap layout, either
/// on reusing them (~70 µs per fetch here) or on trimming and page-faulting them back in on
/// every fetch (1.5-2.7 ms, 85% system time): a 20× swing that would swamp any
/// before/after comparison. Fixed thresholds pin the first mode, so the benchmark measures
/// the engine's copies rather than the allocator's luck.
fn pin_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc refuses more than 32 MiB (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit).
        const MMAP_THRESHOLD_BYTES: libc::c_int = 32 * 1024 * 1024;
        const TRIM_THRESHOLD_BYTES: libc::c_int = 512 * 1024 * 1024;
        // SAFETY: mallopt only changes malloc tunables; it returns 1 on success.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                + libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        };
        assert_eq!(ok, 2, "glibc accepts the malloc thresholds");
    }
}

/// Drives one engine by hand on a connection of its own.
struct Driver {
    harness: Harness,
    out: Vec<Output>,
    pending: VecDeque<(Token, IoOp)>,
    conn: u64,
    seq: u64,
    /// When false, appends complete without their bytes being stored.
    keep_appends: bool,
}

impl Driver {
    /// A ready engine with the default config and topic [`support::TOPIC`] of one partition.
    fn new() -> Driver {
        pin_allocator();
        let mut harness = Harness::new(BrokerConfig::default());
        let response = harness.call(
            ApiKey::CreateTopics,
            support::CREATE_TOPICS_VERSION,
            &support::create_topics_request(support::TOPIC, 1),
        );
        let ResponseKind::CreateTopics(response) = response else {
            panic!("a CreateTopics answer, not {response:?}")
        };
        assert_eq!(response.topics[0].error_code, 0, "topic created");
        Driver {
            harness,
            out: Vec::with_capacity(IO_OPS_PER_REQUEST_MAX),
            pending: VecDeque::with_capacity(IO_OPS_PER_REQUEST_MAX),
            conn: 2,
            seq: 0,
            keep_appends: true,
        }
    }

    fn step(&mut self, input: Input) {
        self.harness.engine.step(self.harness.now, input, &mut self.out);
    }

    /// Feeds one request frame, completes every IO op it causes, and returns the answer.
    fn request(&mut self, frame: Bytes) -> Vec<Bytes> {
        let seq = self.seq;
        self.seq += 1;
        self.step(Input::ClientRequest {
            conn: self.conn,
            seq,
            frame,
        });
        let mut response = None;
        let mut ops = 0;
        loop {
            for output in self.out.drain(..) {
                match output {
                    Output::Io { token, op } => self.pending.push_back((token, op)),
                    Output::ClientResponse {
                        conn,
                        seq: answered,
                        frame,
                    } if conn == self.conn && answered == seq => response = frame,
                    Output::SetTimer { .. } => {}
                    other => panic!("unexpected output {other:?}"),
                }
            }
            let Some((token, op)) = self.pending.pop_front() else {
                break;
            };
            ops += 1;
            assert!(ops <= IO_OPS_PER_REQUEST_MAX, "IO never settles");
            let result = match &op {
                IoOp::Append { .. } | IoOp::Sync { .. } if !self.keep_appends => IoResult::Done,
                _ => self.harness.disk.run(&op),
            };
            self.step(Input::IoDone { token, result });
        }
        response.expect("every request of these benchmarks is answered")
    }
}

/// Decodes a response frame (outside the measured loops, to check what they measure).
fn decode_response(frame: &[Bytes], api: ApiKey, version: i16) -> ResponseKind {
    let mut bytes = BytesMut::new();
    for part in frame {
        bytes.extend_from_slice(part);
    }
    let mut bytes = bytes.freeze();
    let header =
        ResponseHeader::decode(&mut bytes, api.response_header_version(version)).expect("a response header");
    assert_eq!(header.correlation_id, support::CORRELATION_ID);
    ResponseKind::decode(api, &mut bytes, version).expect("a response body")
}

/// Produces one batch; returns its base offset.
fn produce_checked(driver: &mut Driver, frame: Bytes) -> i64 {
    let response = driver.request(frame);
    let ResponseKind::Produce(response) =
        decode_response(&response, ApiKey::Produce, support::PRODUCE_VERSION)
    else {
        panic!("a Produce answer")
    };
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0, "produce accepted");
    partition.base_offset
}

fn produce(c: &mut Criterion<ThreadCpuTime>) {
    let (batch, records) = support::full_batch(support::PRODUCE_BATCH_BYTES_MAX, support::RECORD_VALUE_BYTES);
    let frame = support::frame(
        ApiKey::Produce,
        support::PRODUCE_VERSION,
        &support::produce_request(support::TOPIC, 1, batch),
    );
    let mut driver = Driver::new();
    driver.keep_appends = false;
    assert_eq!(produce_checked(&mut driver, frame.clone()), 0);
    assert_eq!(produce_checked(&mut driver, frame.clone()), records as i64);

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(records as u64));
    group.bench_function(format!("produce_acks1/16KiB_batch_{records}x100B"), |b| {
        b.iter(|| driver.request(frame.clone()))
    });
    group.finish();
}

/// Decodes a fetch answer: (error, high watermark, record bytes).
fn fetch_checked(driver: &mut Driver, frame: Bytes) -> (i16, i64, usize) {
    let response = driver.request(frame);
    let ResponseKind::Fetch(response) = decode_response(&response, ApiKey::Fetch, support::FETCH_VERSION)
    else {
        panic!("a Fetch answer")
    };
    let partition = &response.responses[0].partitions[0];
    let records_bytes = partition.records.as_ref().map_or(0, Bytes::len);
    (partition.error_code, partition.high_watermark, records_bytes)
}

fn fetch(c: &mut Criterion<ThreadCpuTime>) {
    let (batch, records) = support::full_batch(support::PRODUCE_BATCH_BYTES_MAX, support::RECORD_VALUE_BYTES);
    let produce_frame = support::frame(
        ApiKey::Produce,
        support::PRODUCE_VERSION,
        &support::produce_request(support::TOPIC, 1, batch.clone()),
    );
    let mut driver = Driver::new();
    for _ in 0..FETCH_LOG_BATCHES {
        produce_checked(&mut driver, produce_frame.clone());
    }
    let log_end = (FETCH_LOG_BATCHES * records) as u64;
    let tail_from = log_end - FETCH_TAIL_BATCHES * records as u64;
    let cases = [
        (
            format!("fetch_tail/last_{FETCH_TAIL_BATCHES}_batches"),
            tail_from + 1,
            FETCH_TAIL_BATCHES as usize * batch.len(),
        ),
        (
            format!("fetch_tail/all_{FETCH_LOG_BATCHES}_batches"),
            0,
            FETCH_LOG_BATCHES * batch.len(),
        ),
    ];

    let mut group = c.benchmark_group("engine");
    for (name, offset, expected_bytes) in cases {
        let frame = support::frame(
            ApiKey::Fetch,
            support::FETCH_VERSION,
            &support::fetch_request(support::TOPIC, offset as i64, FETCH_BYTES_MAX),
        );
        let (error, high_watermark, records_bytes) = fetch_checked(&mut driver, frame.clone());
        assert_eq!((error, high_watermark), (0, log_end as i64));
        assert_eq!(
            records_bytes, expected_bytes,
            "{name}: whole batches, all in budget"
        );
        group.throughput(Throughput::Bytes(records_bytes as u64));
        group.bench_function(name, |b| b.iter(|| driver.request(frame.clone())));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = produce, fetch
}
criterion_main!(benches);
