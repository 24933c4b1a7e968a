//! Recovery cuts a segment at the first torn or corrupt batch and keeps every whole batch
//! before it: checked for a tail cut at every byte position and a bit flipped in every byte.

mod common;

use bytes::Bytes;
use common::{Harness, MemDisk};
use gregor_engine::batch::{build_batch, scan, RecordSpec};
use gregor_engine::BrokerConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const SEGMENT: &str = "t-0/00000000000000000000.log";

/// A data dir holding topic `t`: the Raft leader's no-op (one offset) then `n` batches of
/// 2 records. Returns the disk and, for each batch in the segment, (end position, end offset).
fn populated(n: usize) -> (MemDisk, Vec<(usize, u64)>) {
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
    }
    let bounds: Vec<(usize, u64)> = scan(&h.disk.durable[SEGMENT])
        .map(|(at, v)| (at + v.size_bytes(), v.last_offset() as u64 + 1))
        .collect();
    assert_eq!(bounds.len(), n + 1, "the no-op and {n} batches");
    (h.disk, bounds)
}

/// After recovery the log keeps `kept` bytes of `original` and a new term's no-op follows.
fn check_kept(h: &Harness, original: &[u8], kept: usize, what: &str) {
    let now = &h.disk.durable[SEGMENT];
    assert_eq!(
        &now[..kept],
        &original[..kept],
        "{what}: the whole batches are kept"
    );
    let rest: Vec<_> = scan(&now[kept..]).collect();
    assert_eq!(rest.len(), 1, "{what}: then only the new term's no-op");
    assert!(rest[0].1.is_control());
    assert_eq!(rest[0].0 + rest[0].1.size_bytes(), now.len() - kept);
}

#[test]
fn torn_tail_cut_at_every_byte_keeps_exactly_the_whole_batches() {
    let (disk, bounds) = populated(4);
    let original = disk.durable[SEGMENT].clone();
    let total = bounds.last().unwrap().0;
    for cut in 0..=total {
        let mut d = disk.clone();
        d.durable.get_mut(SEGMENT).unwrap().truncate(cut);
        d.crash();
        let h = Harness::with_disk(BrokerConfig::default(), d);
        let (kept, end) = bounds
            .iter()
            .rev()
            .find(|&&(e, _)| e <= cut)
            .copied()
            .unwrap_or((0, 0));
        assert_eq!(h.engine.high_watermark("t", 0), Some(end + 1), "cut at {cut}");
        check_kept(&h, &original, kept, &format!("cut at {cut}"));
    }
}

#[test]
fn a_flipped_bit_in_the_tail_cuts_at_that_batch() {
    let (disk, bounds) = populated(3);
    let original = disk.durable[SEGMENT].clone();
    let total = bounds.last().unwrap().0;
    let batch_starts: Vec<usize> = std::iter::once(0).chain(bounds.iter().map(|b| b.0)).collect();
    for pos in 0..total {
        // Bytes 12..16 of a batch hold its partition leader epoch, which (as in Kafka) is
        // outside the CRC: a flip there keeps the batch, with another epoch.
        let start = *batch_starts.iter().rev().find(|&&s| s <= pos).unwrap();
        if (12..16).contains(&(pos - start)) {
            continue;
        }
        let mut d = disk.clone();
        d.durable.get_mut(SEGMENT).unwrap()[pos] ^= 0x10;
        d.crash();
        let h = Harness::with_disk(BrokerConfig::default(), d);
        let batch = bounds.iter().position(|&(e, _)| pos < e).unwrap();
        let (kept, end) = if batch == 0 { (0, 0) } else { bounds[batch - 1] };
        let hw = h.engine.high_watermark("t", 0).unwrap();
        // Bytes 0..8 of a batch hold its base offset, outside the CRC: a flip there breaks
        // the offset sequence, which recovery also treats as the end of the valid log.
        assert_eq!(
            hw,
            end + 1,
            "flip at byte {pos}: batches before it and a new no-op"
        );
        check_kept(&h, &original, kept, &format!("flip at byte {pos}"));
    }
}

/// A damaged Raft state file or epoch checkpoint stops the node with a message naming the
/// file, instead of running with a term or epoch history it cannot trust.
#[test]
fn damaged_raft_state_or_checkpoint_is_a_clear_fatal_error() {
    for (file, damage) in [
        ("t-0/raft.state", 9usize),
        ("t-0/leader-epoch-checkpoint", 0usize),
    ] {
        let (mut disk, _) = populated(1);
        let bytes = disk
            .durable
            .get_mut(file)
            .unwrap_or_else(|| panic!("{file} exists"));
        bytes[damage] ^= 0x5a;
        disk.crash();
        let h = Harness::start_on(BrokerConfig::default(), disk);
        assert!(!h.ready, "{file}: the node must not serve");
        let reason = h.fatal.clone().unwrap_or_default();
        assert!(
            reason.contains(file),
            "{file}: the error names the file: {reason}"
        );
    }
}
