//! Idempotent producers through `step()`: InitProducerId, duplicate detection (also while
//! the original is in flight), sequence and epoch checks, and the producer state rebuilt
//! from the log after a restart.

mod common;

use bytes::Bytes;
use common::{create_topic, topic_name as name, Harness};
use gregor_engine::batch::{build_batch, with_producer, RecordSpec};
use gregor_engine::BrokerConfig;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNSUPPORTED_VERSION: i16 = 35;

fn create(h: &mut Harness, topic: &str, configs: &[(&str, &str)]) {
    assert_eq!(create_topic(h, topic, 1, configs), 0);
}

fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let specs: Vec<RecordSpec> = (0..n)
        .map(|i| RecordSpec {
            key: None,
            value: Some(Bytes::from(format!("p{pid}-e{epoch}-s{}", seq + i as i32))),
            headers: vec![],
            timestamp_ms: 1_700_000_000_000,
        })
        .collect();
    with_producer(&build_batch(&specs), pid, epoch, seq)
}

fn produce_req(topic: &str, acks: i16, b: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(b))])])
}

fn answer(r: ResponseKind) -> (i16, i64) {
    let ResponseKind::Produce(r) = r else { panic!() };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn produce(h: &mut Harness, topic: &str, b: Bytes) -> (i16, i64) {
    answer(h.call(ApiKey::Produce, 9, &produce_req(topic, -1, b)))
}

fn init(h: &mut Harness, version: i16, req: InitProducerIdRequest) -> (i16, i64, i16) {
    let ResponseKind::InitProducerId(r) = h.call(ApiKey::InitProducerId, version, &req) else {
        panic!()
    };
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

fn fresh() -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

fn log_end(h: &mut Harness, topic: &str) -> u64 {
    h.engine
        .replica_status()
        .into_iter()
        .find(|r| r.topic == topic)
        .map(|r| r.log_end)
        .unwrap()
}

#[test]
fn init_producer_id_gives_fresh_ids_bumps_epochs_and_refuses_transactions() {
    let mut h = Harness::new(BrokerConfig::default());
    let mut ids = Vec::new();
    for v in 0..=4 {
        let (err, id, epoch) = init(&mut h, v, fresh());
        assert_eq!((err, epoch), (0, 0), "v{v}");
        ids.push(id);
    }
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "distinct ids: {ids:?}");
    // KIP-360: the same id, the next epoch.
    let bump = fresh()
        .with_producer_id(ProducerId(ids[0]))
        .with_producer_epoch(4);
    assert_eq!(init(&mut h, 4, bump), (0, ids[0], 5));
    // An exhausted epoch moves to a new id.
    let bump = fresh()
        .with_producer_id(ProducerId(ids[0]))
        .with_producer_epoch(i16::MAX - 1);
    let (err, id, epoch) = init(&mut h, 4, bump);
    assert_eq!((err, epoch), (0, 0));
    assert!(!ids.contains(&id));
    let txn = fresh().with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))));
    assert_eq!(init(&mut h, 4, txn).0, UNSUPPORTED_VERSION);
    // Ids given out before a restart are never given out again.
    let mut h = h.crash_restart();
    let (err, after, _) = init(&mut h, 4, fresh());
    assert_eq!(err, 0);
    assert!(after > id && !ids.contains(&after), "{after} after {ids:?}, {id}");
}

#[test]
fn retries_are_answered_with_the_original_offset_and_not_stored_twice() {
    let mut h = Harness::new(BrokerConfig::default());
    create(&mut h, "t", &[]);
    let (_, pid, _) = init(&mut h, 4, fresh());
    assert_eq!(produce(&mut h, "t", batch(pid, 0, 0, 3)), (0, 1));
    assert_eq!(produce(&mut h, "t", batch(pid, 0, 3, 2)), (0, 4));
    let end = log_end(&mut h, "t");
    assert_eq!(
        produce(&mut h, "t", batch(pid, 0, 0, 3)),
        (0, 1),
        "retry of the first"
    );
    assert_eq!(
        produce(&mut h, "t", batch(pid, 0, 3, 2)),
        (0, 4),
        "retry of the second"
    );
    assert_eq!(log_end(&mut h, "t"), end, "nothing appended");
    // A gap, and a reorder, are refused.
    assert_eq!(
        produce(&mut h, "t", batch(pid, 0, 6, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        produce(&mut h, "t", batch(pid, 0, 2, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(produce(&mut h, "t", batch(pid, 0, 5, 1)), (0, 6));
    // A new epoch starts at 0; then the old epoch is fenced.
    assert_eq!(
        produce(&mut h, "t", batch(pid, 1, 3, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(produce(&mut h, "t", batch(pid, 1, 0, 1)), (0, 7));
    assert_eq!(
        produce(&mut h, "t", batch(pid, 0, 6, 1)).0,
        INVALID_PRODUCER_EPOCH
    );
    // Producers are independent; batches without a producer id are unchanged.
    assert_eq!(produce(&mut h, "t", batch(pid + 1, 0, 0, 1)), (0, 8));
    let plain = build_batch(&[RecordSpec {
        key: None,
        value: Some(Bytes::from_static(b"x")),
        headers: vec![],
        timestamp_ms: 1,
    }]);
    assert_eq!(produce(&mut h, "t", plain.clone()), (0, 9));
    assert_eq!(produce(&mut h, "t", plain), (0, 10));
}

#[test]
fn a_duplicate_of_a_batch_in_flight_waits_for_the_original() {
    let mut h = Harness::new(BrokerConfig::default());
    create(&mut h, "t", &[]);
    let (_, pid, _) = init(&mut h, 4, fresh());
    // Pipelined without IO in between: the second and third are checked against the
    // first, appended but not yet durable.
    let first = h.send(1, ApiKey::Produce, 9, &produce_req("t", -1, batch(pid, 0, 0, 2)));
    let dup = h.send(2, ApiKey::Produce, 9, &produce_req("t", -1, batch(pid, 0, 0, 2)));
    let next = h.send(3, ApiKey::Produce, 9, &produce_req("t", -1, batch(pid, 0, 2, 1)));
    assert!(h.responses.is_empty(), "nothing is answered before the fsync");
    // Carry out only the append of the first batch, not its fsync: still no answer.
    let (token, op) = h.pending_io.pop_front().unwrap();
    assert!(matches!(op, gregor_engine::IoOp::Append { .. }), "{op:?}");
    let result = h.disk.run(&op);
    h.input(gregor_engine::Input::IoDone { token, result });
    assert!(
        h.take(2, dup, ApiKey::Produce, 9).is_none(),
        "the duplicate waits"
    );
    h.settle();
    assert_eq!(answer(h.take(1, first, ApiKey::Produce, 9).unwrap()), (0, 1));
    assert_eq!(answer(h.take(2, dup, ApiKey::Produce, 9).unwrap()), (0, 1));
    assert_eq!(answer(h.take(3, next, ApiKey::Produce, 9).unwrap()), (0, 3));
    assert_eq!(log_end(&mut h, "t"), 4);
}

#[test]
fn a_duplicate_of_a_batch_lost_in_a_crash_is_appended_again() {
    let mut h = Harness::new(BrokerConfig::default());
    create(&mut h, "t", &[]);
    let (_, pid, _) = init(&mut h, 4, fresh());
    assert_eq!(produce(&mut h, "t", batch(pid, 0, 0, 1)), (0, 1));
    let _ = h.send(1, ApiKey::Produce, 9, &produce_req("t", -1, batch(pid, 0, 1, 1)));
    // The crash loses the unsynced append: the retry is new to the restarted broker.
    let mut h = h.crash_restart();
    assert_eq!(produce(&mut h, "t", batch(pid, 0, 0, 1)), (0, 1), "still known");
    assert_eq!(
        produce(&mut h, "t", batch(pid, 0, 1, 1)),
        (0, 3),
        "after the new no-op"
    );
}

#[test]
fn producer_state_is_rebuilt_from_the_log_after_a_restart() {
    let mut h = Harness::new(BrokerConfig::default());
    // Small segments: most batches end up in closed segments whose indexes load at start.
    create(&mut h, "t", &[("segment.bytes", "300")]);
    let (_, a, _) = init(&mut h, 4, fresh());
    let (_, b, _) = init(&mut h, 4, fresh());
    let mut offsets = Vec::new();
    for seq in 0..12 {
        let (err, base) = produce(&mut h, "t", batch(a, 0, seq, 1));
        assert_eq!(err, 0);
        offsets.push(base);
        if seq % 4 == 0 {
            assert_eq!(produce(&mut h, "t", batch(b, 2, seq / 4, 1)).0, 0);
        }
    }
    let segments = h
        .disk
        .durable
        .keys()
        .filter(|f| f.contains("t-0/") && f.ends_with(".log"))
        .count();
    assert!(segments > 3, "{segments} segments");
    for round in 0..2 {
        h = h.crash_restart();
        let end = log_end(&mut h, "t");
        for seq in 7..12 {
            assert_eq!(
                produce(&mut h, "t", batch(a, 0, seq, 1)),
                (0, offsets[seq as usize]),
                "round {round}: retry of seq {seq}"
            );
        }
        assert_eq!(log_end(&mut h, "t"), end);
        assert_eq!(
            produce(&mut h, "t", batch(a, 0, 3, 1)).0,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(produce(&mut h, "t", batch(b, 1, 3, 1)).0, INVALID_PRODUCER_EPOCH);
        assert_eq!(
            produce(&mut h, "t", batch(b, 2, 2, 1)).0,
            0,
            "b's last batch is a duplicate"
        );
    }
}
