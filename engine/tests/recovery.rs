//! Recovery cuts a segment at the first torn or corrupt batch and keeps every whole batch
//! before it: checked for a tail cut at every byte position and a bit flipped in every byte.

mod common;

use bytes::Bytes;
use common::{Harness, MemDisk};
use gregor_engine::batch::{build_batch, RecordSpec};
use gregor_engine::BrokerConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const SEGMENT: &str = "t-0/00000000000000000000.log";

/// A data dir holding topic `t` with `n` batches of 2 records; returns the disk and the
/// end position of each batch in the segment.
fn populated(n: usize) -> (MemDisk, Vec<usize>) {
    let mut h = Harness::new(BrokerConfig::default());
    let t = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_num_partitions(1)
        .with_replication_factor(1);
    h.call(
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default().with_topics(vec![t]),
    );
    let mut ends = Vec::new();
    for i in 0..n {
        let recs: Vec<RecordSpec> = (0..2)
            .map(|j| RecordSpec {
                key: None,
                value: Some(Bytes::from(format!("v{i}-{j}"))),
                headers: vec![],
                timestamp_ms: 1000 + i as i64,
            })
            .collect();
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(build_batch(&recs)))])]);
        h.call(ApiKey::Produce, 9, &req);
        ends.push(h.disk.durable[SEGMENT].len());
    }
    (h.disk, ends)
}

#[test]
fn torn_tail_cut_at_every_byte_keeps_exactly_the_whole_batches() {
    let (disk, ends) = populated(4);
    let total = *ends.last().unwrap();
    for cut in 0..=total {
        let mut d = disk.clone();
        d.durable.get_mut(SEGMENT).unwrap().truncate(cut);
        d.crash();
        let h = Harness::with_disk(BrokerConfig::default(), d);
        let whole = ends.iter().filter(|&&e| e <= cut).count() as u64;
        assert_eq!(h.engine.high_watermark("t", 0), Some(whole * 2), "cut at {cut}");
        let kept = ends.iter().rev().find(|&&e| e <= cut).copied().unwrap_or(0);
        assert_eq!(
            h.disk.durable[SEGMENT].len(),
            kept,
            "file truncated to the last whole batch (cut {cut})"
        );
    }
}

#[test]
fn a_flipped_bit_in_the_tail_cuts_at_that_batch() {
    let (disk, ends) = populated(3);
    let total = *ends.last().unwrap();
    let batch_starts: Vec<usize> = std::iter::once(0).chain(ends.iter().copied()).collect();
    for pos in 0..total {
        // Bytes 12..16 of a batch hold its partition leader epoch, which (as in Kafka) is
        // outside the CRC and which a single node never changes: a flip there goes unseen.
        let start = *batch_starts.iter().rev().find(|&&s| s <= pos).unwrap();
        if (12..16).contains(&(pos - start)) {
            continue;
        }
        let mut d = disk.clone();
        d.durable.get_mut(SEGMENT).unwrap()[pos] ^= 0x10;
        d.crash();
        let h = Harness::with_disk(BrokerConfig::default(), d);
        let batch = ends.iter().position(|&e| pos < e).unwrap() as u64;
        let hw = h.engine.high_watermark("t", 0).unwrap();
        // Bytes 0..8 of a batch hold its base offset, outside the CRC: a flip there breaks
        // the offset sequence, which recovery also treats as the end of the valid log.
        assert_eq!(hw, batch * 2, "flip at byte {pos}");
    }
}
