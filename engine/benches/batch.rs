//! `batch::validate_produce`, the check every produced batch passes before it is appended:
//! framing, CRC-32C over the whole batch, and (uncompressed only) a walk over every record.
//! Throughput is in batch bytes.

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gregor_engine::batch::{build_batch, build_batch_compressed, validate_produce, Compression};
use support::ThreadCpuTime;

/// Above the ~1 MiB broker default, so the 1000 × 1 KiB batch (about 1.05 MB) passes.
const MAX_MESSAGE_BYTES: i32 = 8 * 1024 * 1024;

fn validate(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("validate_produce");
    let cases = [
        ("none/100x100B", build_batch(&support::records(100, 100))),
        ("none/1000x1KiB", build_batch(&support::records(1000, 1024))),
        (
            "zstd/1000x1KiB",
            build_batch_compressed(&support::records(1000, 1024), Compression::Zstd)
                .expect("zstd compresses"),
        ),
    ];
    for (name, batch) in cases {
        let info = validate_produce(&batch, MAX_MESSAGE_BYTES).expect("a valid batch");
        assert_eq!(info.size_bytes, batch.len());
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &batch, |b, batch| {
            b.iter(|| validate_produce(black_box(batch), MAX_MESSAGE_BYTES))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = validate
}
criterion_main!(benches);
