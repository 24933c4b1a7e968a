//! Engine scenarios driven by hand: requests in, IO carried out by an in-memory disk,
//! answers decoded and checked. No sockets, no clocks.

mod common;

use bytes::Bytes;
use common::{create_topic as create, topic_name as name, Harness};
use gregor_engine::batch::{build_batch, decode_records, scan, RecordSpec};
use gregor_engine::BrokerConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn records(prefix: &str, n: usize, ts: i64) -> Vec<RecordSpec> {
    (0..n)
        .map(|i| RecordSpec {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("{prefix}-{i}"))),
            headers: vec![("h".to_string(), Some(Bytes::from_static(b"v")))],
            timestamp_ms: ts + i as i64,
        })
        .collect()
}

fn produce_req(topic: &str, partition: i32, acks: i16, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])])
}

fn produce(h: &mut Harness, topic: &str, partition: i32, batch: Bytes) -> (i16, i64) {
    let r = h.call(ApiKey::Produce, 9, &produce_req(topic, partition, -1, batch));
    let ResponseKind::Produce(r) = r else { panic!() };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_req(topic: &str, partition: i32, offset: i64, max_bytes: i32, wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)])])
}

/// Fetches and decodes: (error, high watermark, values with offsets).
fn fetch(
    h: &mut Harness,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: i32,
) -> (i16, i64, Vec<(i64, String)>) {
    let r = h.call(
        ApiKey::Fetch,
        11,
        &fetch_req(topic, partition, offset, max_bytes, 0),
    );
    let ResponseKind::Fetch(r) = r else { panic!() };
    let p = &r.responses[0].partitions[0];
    let bytes = p.records.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (_, b) in scan(&bytes) {
        if b.is_control() {
            continue; // the Raft leader no-op, skipped as clients do
        }
        for rec in decode_records(&b).unwrap() {
            out.push((
                rec.offset,
                String::from_utf8(rec.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    (p.error_code, p.high_watermark, out)
}

fn list_offset(h: &mut Harness, topic: &str, partition: i32, ts: i64) -> (i16, i64, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(ts)])]);
    let ResponseKind::ListOffsets(r) = h.call(ApiKey::ListOffsets, 7, &req) else {
        panic!()
    };
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

/// Every partition is a Raft group; its leader's no-op (a control batch) takes offset 0, and
/// a restart elects a new term whose no-op takes the next offset.
#[test]
fn produce_fetch_restart() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "t", 2, &[]), 0);
    assert_eq!(create(&mut h, "t", 2, &[]), 36, "TOPIC_ALREADY_EXISTS");
    assert_eq!(
        produce(&mut h, "t", 0, build_batch(&records("a", 3, 1000))),
        (0, 1)
    );
    assert_eq!(
        produce(&mut h, "t", 0, build_batch(&records("b", 2, 2000))),
        (0, 4)
    );
    assert_eq!(
        produce(&mut h, "t", 1, build_batch(&records("c", 1, 3000))),
        (0, 1)
    );
    let (err, hw, vals) = fetch(&mut h, "t", 0, 0, 1 << 20);
    assert_eq!((err, hw), (0, 6));
    assert_eq!(vals.iter().map(|v| v.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(vals[3].1, "b-0");
    assert_eq!(
        fetch(&mut h, "t", 0, 5, 1 << 20).2,
        vec![(4, "b-0".into()), (5, "b-1".into())]
    );
    assert_eq!(fetch(&mut h, "t", 0, 7, 1 << 20).0, 1, "OFFSET_OUT_OF_RANGE");
    assert_eq!(list_offset(&mut h, "t", 0, -1), (0, 6, -1));
    assert_eq!(list_offset(&mut h, "t", 0, -2), (0, 0, -1));
    assert_eq!(list_offset(&mut h, "t", 0, 1001), (0, 2, 1001));
    assert_eq!(list_offset(&mut h, "t", 0, 1500), (0, 4, 2000));
    assert_eq!(list_offset(&mut h, "t", 0, 9999).1, -1);
    assert_eq!(list_offset(&mut h, "t", 0, -3), (0, 5, 2001));

    let mut h = h.crash_restart();
    let (err, hw, vals) = fetch(&mut h, "t", 0, 0, 1 << 20);
    assert_eq!((err, hw, vals.len()), (0, 7, 5), "the new term's no-op is at 6");
    assert_eq!(
        produce(&mut h, "t", 0, build_batch(&records("d", 1, 4000))),
        (0, 7)
    );
    assert_eq!(fetch(&mut h, "t", 1, 0, 1 << 20).2, vec![(1, "c-0".into())]);
}

#[test]
fn unsynced_writes_are_not_acknowledged_and_vanish_on_crash() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "t", 1, &[]), 0);
    assert_eq!(
        produce(&mut h, "t", 0, build_batch(&records("a", 2, 1000))),
        (0, 1)
    );
    let seq = h.send(
        1,
        ApiKey::Produce,
        9,
        &produce_req("t", 0, 1, build_batch(&records("b", 2, 1000))),
    );
    // Carry out only the append, not the fsync.
    let (token, op) = h.pending_io.pop_front().unwrap();
    assert!(matches!(op, gregor_engine::IoOp::Append { .. }));
    let r = h.disk.run(&op);
    h.input(gregor_engine::Input::IoDone { token, result: r });
    assert!(!h.responses.contains_key(&(1, seq)), "no answer before fsync");
    let mut h = h.crash_restart();
    let (_, hw, vals) = fetch(&mut h, "t", 0, 0, 1 << 20);
    assert_eq!((hw, vals.len()), (4, 2), "no-op, a-0, a-1, the new term's no-op");
}

/// The broker's `fetch.max.bytes` caps what a request may ask for, from the tail cache and
/// from disk alike, and still gives at least one batch.
#[test]
fn broker_fetch_max_bytes_caps_every_response() {
    for tail_cache_bytes in [4 << 20, 0] {
        let config = BrokerConfig {
            fetch_max_bytes: 2048,
            tail_cache_bytes,
            ..BrokerConfig::default()
        };
        let mut h = Harness::new(config);
        assert_eq!(create(&mut h, "t", 1, &[]), 0);
        // 20 batches of ~1,000 bytes each (one 900-byte record).
        for i in 0..20 {
            let batch = build_batch(&[RecordSpec {
                key: None,
                value: Some(Bytes::from(format!("{i:03}").repeat(300))),
                headers: vec![],
                timestamp_ms: 1000,
            }]);
            assert_eq!(produce(&mut h, "t", 0, batch).0, 0);
        }
        let (err, _, vals) = fetch(&mut h, "t", 0, 1, 1 << 30);
        assert_eq!(err, 0);
        assert_eq!(vals.len(), 2, "2,048 bytes hold two ~1,000-byte batches");
        assert_eq!((vals[0].0, vals[1].0), (1, 2));
        // After a restart (reads from the segment file) the cap holds too.
        let mut restarted = h.crash_restart();
        let (_, _, vals) = fetch(&mut restarted, "t", 0, 5, 1 << 30);
        assert_eq!(vals.iter().map(|v| v.0).collect::<Vec<_>>(), [5, 6]);
    }
}

#[test]
fn small_segments_roll_and_reads_use_the_index() {
    let config = BrokerConfig {
        tail_cache_bytes: 0,
        ..BrokerConfig::default()
    };
    let mut h = Harness::new(config);
    assert_eq!(
        create(
            &mut h,
            "s",
            1,
            &[("segment.bytes", "2000"), ("index.interval.bytes", "100")]
        ),
        0
    );
    let mut expected = Vec::new();
    for i in 0..60 {
        let recs = records(&format!("r{i}"), 2, 10_000 + i * 10);
        let (err, base) = produce(&mut h, "s", 0, build_batch(&recs));
        assert_eq!((err, base), (0, 1 + i * 2), "the no-op holds offset 0");
        expected.push((1 + i * 2, format!("r{i}-0")));
        expected.push((2 + i * 2, format!("r{i}-1")));
    }
    let logs = h
        .disk
        .volatile
        .keys()
        .filter(|k| k.starts_with("s-0/") && k.ends_with(".log"))
        .count();
    assert!(logs >= 3, "segments rolled: {logs}");
    // `expected[i]` holds offset i + 1.
    for start in [1i64, 2, 37, 64, 120] {
        let (err, _, vals) = fetch(&mut h, "s", 0, start, 1 << 20);
        assert_eq!(err, 0);
        let first = vals
            .iter()
            .position(|v| v.0 == start)
            .expect("the asked offset is returned");
        assert!(first <= 1);
        let at = start as usize - 1;
        assert_eq!(vals[first..], expected[at..at + vals.len() - first]);
    }
    let (_, _, vals) = fetch(&mut h, "s", 0, 0, 1 << 20);
    assert_eq!(
        vals[0], expected[0],
        "a fetch from the no-op starts with the first record"
    );
    // a tiny max_bytes still returns one whole batch
    let (_, _, vals) = fetch(&mut h, "s", 0, 51, 1);
    assert_eq!(vals, expected[50..52]);
    assert_eq!(list_offset(&mut h, "s", 0, 10_305), (0, 63, 10_310));
    assert_eq!(list_offset(&mut h, "s", 0, 10_301), (0, 62, 10_301));
    let mut h = h.crash_restart();
    let (_, hw, vals) = fetch(&mut h, "s", 0, 100, 1 << 20);
    assert_eq!(hw, 122, "120 records, two no-ops");
    assert_eq!(vals[0], expected[98]);
}

#[test]
fn invalid_batches_are_refused_with_kafka_codes() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "t", 1, &[("max.message.bytes", "200")]), 0);
    let good = build_batch(&records("a", 1, 1));
    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(
        produce(&mut h, "t", 0, Bytes::from(bad_crc)).0,
        2,
        "CORRUPT_MESSAGE"
    );
    let mut magic1 = good.to_vec();
    magic1[16] = 1;
    assert_eq!(
        produce(&mut h, "t", 0, Bytes::from(magic1)).0,
        43,
        "UNSUPPORTED_FOR_MESSAGE_FORMAT"
    );
    let big = build_batch(&records(&"x".repeat(300), 1, 1));
    assert_eq!(produce(&mut h, "t", 0, big).0, 10, "MESSAGE_TOO_LARGE");
    assert_eq!(
        produce(&mut h, "nope", 0, good.clone()).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        produce(&mut h, "t", 0, good),
        (0, 1),
        "nothing but the leader no-op was appended before"
    );
}

#[test]
fn long_poll_waits_for_data_or_timeout() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "t", 1, &[]), 0);
    // Offset 0 holds the leader no-op: wait past it.
    let seq = h.send(2, ApiKey::Fetch, 11, &fetch_req("t", 0, 1, 1 << 20, 500));
    h.settle();
    assert!(h.take(2, seq, ApiKey::Fetch, 11).is_none(), "waits");
    assert_eq!(produce(&mut h, "t", 0, build_batch(&records("a", 1, 1))), (0, 1));
    let Some(ResponseKind::Fetch(r)) = h.take(2, seq, ApiKey::Fetch, 11) else {
        panic!("answered on new data")
    };
    assert!(!r.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    let seq = h.send(2, ApiKey::Fetch, 11, &fetch_req("t", 0, 2, 1 << 20, 500));
    h.advance(499);
    assert!(h.take(2, seq, ApiKey::Fetch, 11).is_none());
    h.advance(2);
    let Some(ResponseKind::Fetch(r)) = h.take(2, seq, ApiKey::Fetch, 11) else {
        panic!("answered at the deadline")
    };
    assert!(r.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
}

#[test]
fn metadata_auto_creates_and_delete_removes_data() {
    let mut h = Harness::new(BrokerConfig {
        num_partitions: 3,
        ..BrokerConfig::default()
    });
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("auto")))
        ]))
        .with_allow_auto_topic_creation(true);
    let ResponseKind::Metadata(r) = h.call(ApiKey::Metadata, 9, &req) else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 5, "LEADER_NOT_AVAILABLE while creating");
    let ResponseKind::Metadata(r) = h.call(ApiKey::Metadata, 9, &req) else {
        panic!()
    };
    assert_eq!((r.topics[0].error_code, r.topics[0].partitions.len()), (0, 3));
    assert!(h.disk.volatile.keys().any(|k| k.starts_with("auto-2/")));
    let del = DeleteTopicsRequest::default().with_topic_names(vec![name("auto")]);
    let ResponseKind::DeleteTopics(r) = h.call(ApiKey::DeleteTopics, 4, &del) else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0);
    assert!(
        !h.disk.volatile.keys().any(|k| k.starts_with("auto-")),
        "data removed"
    );
    let ResponseKind::DeleteTopics(r) = h.call(ApiKey::DeleteTopics, 4, &del) else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 3);
    let h = h.crash_restart();
    assert!(h.engine.high_watermark("auto", 0).is_none());
}

/// Found by ci/bench.sh: a request deleting two topics crashed the broker (the second topic's
/// directory deletions overwrote the first's count).
#[test]
fn one_request_deletes_several_topics() {
    let mut h = Harness::new(BrokerConfig::default());
    for t in ["x", "y"] {
        assert_eq!(create(&mut h, t, 2, &[]), 0);
        assert_eq!(produce(&mut h, t, 1, build_batch(&records(t, 2, 5))), (0, 1));
    }
    let del = DeleteTopicsRequest::default().with_topic_names(vec![name("x"), name("nope"), name("y")]);
    let ResponseKind::DeleteTopics(r) = h.call(ApiKey::DeleteTopics, 4, &del) else {
        panic!()
    };
    let codes: Vec<i16> = r.responses.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![0, 3, 0], "x deleted, nope unknown, y deleted");
    assert!(h.fatal.is_none());
    assert!(!h
        .disk
        .volatile
        .keys()
        .any(|k| k.starts_with("x-") || k.starts_with("y-")));
    let h = h.crash_restart();
    assert!(h.engine.high_watermark("x", 0).is_none());
    assert!(h.engine.high_watermark("y", 1).is_none());
}

#[test]
fn full_disk_fails_produces_then_the_log_rewinds_and_continues_densely() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "t", 1, &[]), 0);
    assert_eq!(produce(&mut h, "t", 0, build_batch(&records("a", 2, 1))), (0, 1));
    h.disk.full = true;
    assert_eq!(
        produce(&mut h, "t", 0, build_batch(&records("b", 2, 1))).0,
        56,
        "KAFKA_STORAGE_ERROR"
    );
    h.disk.full = false;
    // The partition's replica restarts an election timeout after its log rewound: a new
    // term, whose no-op takes offset 3.
    assert_eq!(
        produce(&mut h, "t", 0, build_batch(&records("c", 1, 1))).0,
        6,
        "NOT_LEADER_OR_FOLLOWER"
    );
    h.advance(1_000);
    assert_eq!(produce(&mut h, "t", 0, build_batch(&records("c", 1, 1))), (0, 4));
    let (_, hw, vals) = fetch(&mut h, "t", 0, 0, 1 << 20);
    assert_eq!(hw, 5);
    assert_eq!(
        vals.iter().map(|v| v.1.as_str()).collect::<Vec<_>>(),
        vec!["a-0", "a-1", "c-0"]
    );
    let mut h = h.crash_restart();
    assert_eq!(fetch(&mut h, "t", 0, 0, 1 << 20).2.len(), 3);
}

#[test]
fn shutdown_waits_for_durability() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "t", 1, &[]), 0);
    let seq = h.send(
        1,
        ApiKey::Produce,
        9,
        &produce_req("t", 0, 1, build_batch(&records("a", 1, 1))),
    );
    h.input(gregor_engine::Input::Shutdown);
    assert!(!h.stopped, "not before the fsync");
    h.settle();
    assert!(h.stopped);
    assert!(h.take(1, seq, ApiKey::Produce, 9).is_some());
}

fn group(s: &'static str) -> GroupId {
    GroupId(StrBytes::from_static_str(s))
}

/// Every advertised version of every API gets an answer (an encoding that fails for some
/// version would close the connection instead).
#[test]
fn every_advertised_version_is_answered() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "t", 1, &[]), 0);
    assert_eq!(
        produce(&mut h, "t", 0, build_batch(&records("a", 2, 1000))),
        (0, 1)
    );
    let topic_id = {
        let ResponseKind::Metadata(m) = h.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        ) else {
            panic!()
        };
        m.topics[0].topic_id
    };
    for &(api, min, max) in gregor_engine::kafka::SUPPORTED_APIS {
        for v in min..=max {
            let seq = match api {
                ApiKey::Produce => h.send(
                    1,
                    api,
                    v,
                    &produce_req("t", 0, 1, build_batch(&records("v", 1, 5))),
                ),
                ApiKey::Fetch => {
                    let mut r = fetch_req("t", 0, 0, 1 << 20, 0);
                    if v >= 13 {
                        r.topics[0].topic_id = topic_id;
                    }
                    h.send(1, api, v, &r)
                }
                ApiKey::ListOffsets => {
                    let req = ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![ListOffsetsTopic::default()
                            .with_name(name("t"))
                            .with_partitions(vec![ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1)])]);
                    h.send(1, api, v, &req)
                }
                ApiKey::Metadata => h.send(1, api, v, &MetadataRequest::default().with_topics(None)),
                ApiKey::OffsetForLeaderEpoch => {
                    let req = OffsetForLeaderEpochRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![OffsetForLeaderTopic::default()
                            .with_topic(name("t"))
                            .with_partitions(vec![OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_leader_epoch(0)
                                .with_current_leader_epoch(0)])]);
                    h.send(1, api, v, &req)
                }
                ApiKey::ApiVersions => h.send(1, api, v, &ApiVersionsRequest::default()),
                ApiKey::CreateTopics => {
                    let t = CreatableTopic::default()
                        .with_name(name(&format!("c{v}")))
                        .with_num_partitions(1)
                        .with_replication_factor(1);
                    h.send(1, api, v, &CreateTopicsRequest::default().with_topics(vec![t]))
                }
                ApiKey::DeleteTopics => {
                    let req = if v >= 6 {
                        DeleteTopicsRequest::default()
                            .with_topics(vec![DeleteTopicState::default().with_name(Some(name("gone")))])
                    } else {
                        DeleteTopicsRequest::default().with_topic_names(vec![name("gone")])
                    };
                    h.send(1, api, v, &req)
                }
                ApiKey::DescribeConfigs => {
                    let req = DescribeConfigsRequest::default().with_resources(vec![
                        DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("t")),
                        DescribeConfigsResource::default()
                            .with_resource_type(4)
                            .with_resource_name(StrBytes::from_static_str("1")),
                    ]);
                    h.send(1, api, v, &req)
                }
                ApiKey::CreatePartitions => {
                    let t = create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(name("t"))
                        .with_count(1);
                    h.send(
                        1,
                        api,
                        v,
                        &CreatePartitionsRequest::default().with_topics(vec![t]),
                    )
                }
                ApiKey::DescribeCluster => h.send(1, api, v, &DescribeClusterRequest::default()),
                ApiKey::FindCoordinator => {
                    let req = if v >= 4 {
                        FindCoordinatorRequest::default()
                            .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
                    } else {
                        FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
                    };
                    h.send(1, api, v, &req)
                }
                ApiKey::JoinGroup => {
                    // A session timeout below the broker's minimum: answered at once.
                    let req = JoinGroupRequest::default()
                        .with_group_id(group("g"))
                        .with_session_timeout_ms(1)
                        .with_protocol_type(StrBytes::from_static_str("consumer"));
                    h.send(1, api, v, &req)
                }
                ApiKey::SyncGroup => {
                    h.send(1, api, v, &SyncGroupRequest::default().with_group_id(group("g")))
                }
                ApiKey::Heartbeat => {
                    h.send(1, api, v, &HeartbeatRequest::default().with_group_id(group("g")))
                }
                ApiKey::LeaveGroup => {
                    h.send(1, api, v, &LeaveGroupRequest::default().with_group_id(group("g")))
                }
                ApiKey::OffsetCommit => {
                    use kafka_protocol::messages::offset_commit_request::{
                        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
                    };
                    let req = OffsetCommitRequest::default()
                        .with_group_id(group("g"))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![OffsetCommitRequestTopic::default()
                            .with_name(name("t"))
                            .with_partitions(vec![OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1)])]);
                    h.send(1, api, v, &req)
                }
                ApiKey::OffsetFetch => {
                    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
                    let req = if v >= 8 {
                        OffsetFetchRequest::default()
                            .with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(group("g"))])
                    } else {
                        OffsetFetchRequest::default().with_group_id(group("g"))
                    };
                    h.send(1, api, v, &req)
                }
                ApiKey::DescribeGroups => h.send(
                    1,
                    api,
                    v,
                    &DescribeGroupsRequest::default().with_groups(vec![group("g")]),
                ),
                ApiKey::ListGroups => h.send(1, api, v, &ListGroupsRequest::default()),
                ApiKey::DeleteGroups => h.send(
                    1,
                    api,
                    v,
                    &DeleteGroupsRequest::default().with_groups_names(vec![group("g")]),
                ),
                ApiKey::OffsetDelete => h.send(
                    1,
                    api,
                    v,
                    &OffsetDeleteRequest::default().with_group_id(group("g")),
                ),
                ApiKey::InitProducerId => h.send(
                    1,
                    api,
                    v,
                    &InitProducerIdRequest::default()
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                ),
                other => panic!("no request built for {other:?}"),
            };
            h.settle();
            assert!(h.closed.is_empty(), "{api:?} v{v} closed the connection");
            assert!(h.take(1, seq, api, v).is_some(), "{api:?} v{v} answered");
        }
    }
}

#[test]
fn one_produce_request_many_partitions_with_per_partition_errors() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "t", 2, &[]), 0);
    let good = build_batch(&records("a", 2, 1));
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let part = |i: i32, b: Bytes| {
        PartitionProduceData::default()
            .with_index(i)
            .with_records(Some(b))
    };
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("t"))
                .with_partition_data(vec![
                    part(0, good.clone()),
                    part(1, Bytes::from(bad)),
                    part(7, good.clone()),
                ]),
            TopicProduceData::default()
                .with_name(name("missing"))
                .with_partition_data(vec![part(0, good)]),
        ]);
    let ResponseKind::Produce(r) = h.call(ApiKey::Produce, 9, &req) else {
        panic!()
    };
    let codes: Vec<(i16, i64)> = r
        .responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(|p| (p.error_code, p.base_offset))
        })
        .collect();
    assert_eq!(codes, vec![(0, 1), (2, -1), (3, -1), (3, -1)]);
    assert_eq!(fetch(&mut h, "t", 0, 0, 1 << 20).2.len(), 2);
    assert_eq!(
        fetch(&mut h, "t", 1, 0, 1 << 20).1,
        1,
        "nothing but the no-op in the partition that failed"
    );
}

/// Raw records bytes of one fetch from offset 0.
fn fetch_raw(h: &mut Harness, topic: &str) -> Bytes {
    let r = h.call(ApiKey::Fetch, 11, &fetch_req(topic, 0, 0, 1 << 22, 0));
    let ResponseKind::Fetch(r) = r else { panic!() };
    r.responses[0].partitions[0].records.clone().unwrap_or_default()
}

#[test]
fn large_batches_are_stored_without_copying_and_read_back_identically() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "create", 1, &[]), 0);
    assert_eq!(
        create(
            &mut h,
            "append",
            1,
            &[("message.timestamp.type", "LogAppendTime")]
        ),
        0
    );
    let big = |prefix: &str| {
        let mut specs = records(prefix, 40, 1_000);
        for s in &mut specs {
            s.value = Some(Bytes::from(format!("{prefix}-{}", "x".repeat(1_000))));
        }
        build_batch(&specs)
    };
    for topic in ["create", "append"] {
        let (first, second) = (big("a"), big("b"));
        assert!(
            first.len() >= 16 * 1024,
            "large enough to be stored in two pieces"
        );
        let sent = first.clone();
        assert_eq!(produce(&mut h, topic, 0, first), (0, 1));
        assert_eq!(
            produce(&mut h, topic, 0, build_batch(&records("s", 2, 5))),
            (0, 41)
        );
        assert_eq!(produce(&mut h, topic, 0, second), (0, 43));
        assert_eq!(sent, big("a"), "the request's bytes are left as they came");
    }
    let from_tail: Vec<Bytes> = ["create", "append"].map(|t| fetch_raw(&mut h, t)).into();
    let produced_at = h.now.wall_ms;
    let mut h = h.crash_restart();
    for (topic, tail) in ["create", "append"].into_iter().zip(from_tail) {
        let from_disk = fetch_raw(&mut h, topic);
        assert!(
            from_disk.starts_with(&tail),
            "{topic}: the tail cache and the disk hold the same bytes (the disk has the new term's no-op too)"
        );
        let batches: Vec<_> = scan(&from_disk).collect();
        assert_eq!(batches.len(), 5, "{topic}: five batches with valid CRCs");
        let bases: Vec<i64> = batches.iter().map(|(_, v)| v.base_offset()).collect();
        assert_eq!(bases, vec![0, 1, 41, 43, 83]);
        let control: Vec<bool> = batches.iter().map(|(_, v)| v.is_control()).collect();
        assert_eq!(control, vec![true, false, false, false, true]);
        let recs = decode_records(&batches[3].1).unwrap();
        assert_eq!(recs[0].offset, 43);
        assert!(String::from_utf8(recs[0].value.clone().unwrap().to_vec())
            .unwrap()
            .starts_with("b-"));
        let expect_ts = if topic == "append" { produced_at } else { 1_000 };
        assert_eq!(recs[0].timestamp_ms, expect_ts, "{topic}");
    }
}

/// `min.insync.replicas` is a quorum rule: with fewer replicas reachable, acks=all produces
/// are refused with NOT_ENOUGH_REPLICAS (as Kafka does when its ISR is too small); acks=1
/// produces are not affected.
#[test]
fn min_insync_replicas_above_the_replica_count_refuses_acks_all() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(create(&mut h, "strict", 1, &[("min.insync.replicas", "2")]), 0);
    assert_eq!(
        create(&mut h, "bad", 1, &[("min.insync.replicas", "0")]),
        40,
        "INVALID_CONFIG"
    );
    let r = h.call(
        ApiKey::Produce,
        9,
        &produce_req("strict", 0, -1, build_batch(&records("a", 1, 1))),
    );
    let ResponseKind::Produce(r) = r else { panic!() };
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 19, "NOT_ENOUGH_REPLICAS");
    assert!(p
        .error_message
        .as_ref()
        .is_some_and(|m| m.contains("min.insync.replicas 2")));
    let r = h.call(
        ApiKey::Produce,
        9,
        &produce_req("strict", 0, 1, build_batch(&records("b", 1, 1))),
    );
    let ResponseKind::Produce(r) = r else { panic!() };
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 0,
        "acks=1 is not affected"
    );
    assert_eq!(
        fetch(&mut h, "strict", 0, 0, 1 << 20).2,
        vec![(1, "b-0".into())],
        "nothing of the refused batch"
    );
}

/// Found by the client suite: Metadata named this broker the leader of a new partition
/// before its replica had won its election, and an acks=0 producer told so lost its records
/// (the produce met NOT_LEADER_OR_FOLLOWER, answered for acks=0 by closing the connection).
/// At every IO step of a topic's creation, a leader named by Metadata accepts a produce.
#[test]
fn metadata_names_a_leader_only_once_it_accepts_produces() {
    let mut h = Harness::new(BrokerConfig::default());
    let t = CreatableTopic::default()
        .with_name(name("fresh"))
        .with_num_partitions(1)
        .with_replication_factor(-1);
    let create = CreateTopicsRequest::default()
        .with_topics(vec![t])
        .with_timeout_ms(1000);
    h.send(7, ApiKey::CreateTopics, 5, &create);
    let meta = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(name("fresh"))),
    ]));
    let mut named = 0;
    let mut steps = 0;
    while let Some((token, op)) = h.pending_io.pop_front() {
        steps += 1;
        let result = h.disk.run(&op);
        h.input(gregor_engine::Input::IoDone { token, result });
        let seq = h.send(8, ApiKey::Metadata, 9, &meta);
        let Some(ResponseKind::Metadata(m)) = h.take(8, seq, ApiKey::Metadata, 9) else {
            continue;
        };
        let Some(p) = m.topics.first().and_then(|t| t.partitions.first()) else {
            continue;
        };
        if p.error_code == 0 && p.leader_id.0 >= 0 && named == 0 {
            named = steps;
            let seq = h.send(
                9,
                ApiKey::Produce,
                9,
                &produce_req("fresh", 0, 0, build_batch(&records("z", 1, 1))),
            );
            assert!(
                !h.closed.contains(&9),
                "step {steps}: acks=0 produce refused by a named leader (seq {seq})"
            );
        }
        assert!(steps < 10_000, "IO never settles");
    }
    assert!(named > 0, "the leader was named once elected");
    assert_eq!(
        fetch(&mut h, "fresh", 0, 0, 1 << 20).2,
        vec![(1, "z-0".into())],
        "the acks=0 record is there"
    );
}

/// Topics live in the replicated metadata log; a restart rebuilds the image from its
/// snapshot plus the records after it, and a damaged snapshot only costs a full replay.
#[test]
fn metadata_image_snapshots_bound_the_replay_and_damage_costs_only_time() {
    let config = BrokerConfig {
        metadata_snapshot_records: 4,
        ..BrokerConfig::default()
    };
    let mut h = Harness::new(config);
    for i in 0..6 {
        assert_eq!(create(&mut h, &format!("t{i}"), 1 + i % 2, &[]), 0);
    }
    h.advance(100);
    let snap = "__cluster_metadata-0/image.snapshot";
    assert!(h.disk.durable.contains_key(snap), "a snapshot was written");
    assert!(
        !h.disk.durable.contains_key("gregor.meta") || {
            let m = &h.disk.durable["gregor.meta"];
            m.starts_with(b"GRM2")
        }
    );
    let (e, _) = produce(&mut h, "t3", 1, build_batch(&records("v", 2, 1)));
    assert_eq!(e, 0);
    let mut h = h.crash_restart();
    let topics = |h: &mut Harness| {
        let req = MetadataRequest::default().with_topics(None);
        let ResponseKind::Metadata(m) = h.call(ApiKey::Metadata, 12, &req) else {
            panic!()
        };
        m.topics
            .iter()
            .map(|t| (t.name.clone().unwrap().0.to_string(), t.partitions.len()))
            .collect::<Vec<_>>()
    };
    let expected: Vec<(String, usize)> = (0..6).map(|i| (format!("t{i}"), 1 + i % 2)).collect();
    assert_eq!(topics(&mut h), expected);
    let (e, _, values) = fetch(&mut h, "t3", 1, 0, 1 << 20);
    assert_eq!((e, values.len()), (0, 2));
    // Damage the snapshot: the node replays the whole log instead.
    let len = h.disk.durable[snap].len();
    h.disk.durable.get_mut(snap).unwrap()[len - 2] ^= 0x55;
    let mut h = h.crash_restart();
    assert_eq!(topics(&mut h), expected);
}
