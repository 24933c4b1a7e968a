//! `kafka::decode_request`: header check and body decode of the frames a producer sends
//! most. The frame is a cheap `Bytes` clone per iteration (a reference count, no copy).

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gregor_engine::kafka::decode_request;
use kafka_protocol::messages::ApiKey;
use support::ThreadCpuTime;

fn decode(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("decode_request");
    let (batch, _) = support::full_batch(support::PRODUCE_BATCH_BYTES_MAX, support::RECORD_VALUE_BYTES);
    let cases = [
        (
            "produce_v9/16KiB",
            support::frame(
                ApiKey::Produce,
                support::PRODUCE_VERSION,
                &support::produce_request(support::TOPIC, 1, batch),
            ),
        ),
        (
            "metadata_v12/1_topic",
            support::frame(
                ApiKey::Metadata,
                support::METADATA_VERSION,
                &support::metadata_request(support::TOPIC),
            ),
        ),
    ];
    for (name, frame) in cases {
        let request = decode_request(frame.clone()).expect("a supported request");
        assert_eq!(request.correlation_id, support::CORRELATION_ID);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(name, |b| b.iter(|| decode_request(black_box(frame.clone()))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = decode
}
criterion_main!(benches);
