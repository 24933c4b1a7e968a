//! Three engines wired together by hand: peer messages delivered at once (or dropped for a
//! node that is down), IO run by in-memory disks, time advanced in small steps. The
//! metadata quorum forms, the controller creates replicated topics, acks=all survives the
//! leader's crash, and a restarted node catches up. The simulator runs the same paths
//! under faults; these are the readable scenarios.

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::{creatable_topic, topic_name as name, Harness, MemDisk};
use gregor_engine::batch::{build_batch, decode_records, scan, RecordSpec};
use gregor_engine::config::Voter;
use gregor_engine::raft::Role;
use gregor_engine::{BrokerConfig, Input};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_CONTROLLER: i16 = 41;
const REQUEST_TIMED_OUT: i16 = 7;
const INVALID_REPLICATION_FACTOR: i16 = 38;

struct Cluster {
    nodes: Vec<Option<Harness>>,
    /// Nodes whose disk IO is held (not carried out) until released.
    held: BTreeSet<i32>,
    configs: Vec<BrokerConfig>,
    disks: Vec<Option<MemDisk>>,
    now_ms: u64,
}

fn config(id: i32, n: i32) -> BrokerConfig {
    let mut c = BrokerConfig {
        node_id: id,
        advertised_port: 9091 + id,
        rng_seed: id as u64 * 7919,
        ..BrokerConfig::default()
    };
    c.quorum_voters = (1..=n)
        .map(|v| Voter {
            id: v,
            host: "127.0.0.1".into(),
            port: 9190 + v as u16,
        })
        .collect();
    c
}

impl Cluster {
    fn new(n: i32) -> Cluster {
        let configs: Vec<BrokerConfig> = (1..=n).map(|id| config(id, n)).collect();
        let nodes = configs
            .iter()
            .map(|c| Some(Harness::start_on(c.clone(), MemDisk::default())))
            .collect();
        let mut c = Cluster {
            nodes,
            held: BTreeSet::new(),
            configs,
            disks: (0..n).map(|_| None).collect(),
            now_ms: 1,
        };
        c.pump();
        c
    }

    fn node(&mut self, id: i32) -> &mut Harness {
        self.nodes[(id - 1) as usize].as_mut().expect("node is up")
    }

    /// Runs IO and delivers peer messages until nothing moves.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut mail = Vec::new();
            for (i, n) in self.nodes.iter_mut().enumerate() {
                if let Some(h) = n {
                    if !self.held.contains(&(i as i32 + 1)) {
                        h.settle();
                    }
                    for (to, msg) in h.sent.drain(..) {
                        mail.push((i as i32 + 1, to, msg));
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for (from, to, msg) in mail {
                if let Some(Some(h)) = self.nodes.get_mut((to - 1) as usize) {
                    h.input(Input::PeerMessage { from, msg });
                }
            }
        }
        panic!("peer messages never settle");
    }

    /// Advances every node's clock by `ms`, in 5 ms ticks.
    fn advance(&mut self, ms: u64) {
        for _ in 0..ms.div_ceil(5) {
            self.now_ms += 5;
            for h in self.nodes.iter_mut().flatten() {
                h.now.mono_ms = self.now_ms;
                h.now.wall_ms = 1_700_000_000_000 + self.now_ms as i64;
                h.input(Input::Tick);
            }
            self.pump();
        }
    }

    /// Advances until `done` holds, at most `limit_ms`.
    fn until(&mut self, limit_ms: u64, what: &str, mut done: impl FnMut(&mut Cluster) -> bool) {
        let start = self.now_ms;
        while !done(self) {
            assert!(self.now_ms - start < limit_ms, "{what}: not within {limit_ms} ms");
            self.advance(5);
        }
    }

    fn crash(&mut self, id: i32) {
        let i = (id - 1) as usize;
        let mut h = self.nodes[i].take().expect("node is up");
        h.disk.crash();
        self.disks[i] = Some(h.disk);
    }

    fn restart(&mut self, id: i32) {
        let i = (id - 1) as usize;
        let disk = self.disks[i].take().expect("node is down");
        let mut h = Harness::start_on(self.configs[i].clone(), disk);
        h.now.mono_ms = self.now_ms;
        self.nodes[i] = Some(h);
        self.pump();
    }

    fn up(&self) -> Vec<i32> {
        (1..=self.nodes.len() as i32)
            .filter(|&id| self.nodes[(id - 1) as usize].is_some())
            .collect()
    }

    fn metadata(&mut self, id: i32, topic: Option<&str>) -> MetadataResponse {
        let req = MetadataRequest::default()
            .with_topics(topic.map(|t| vec![MetadataRequestTopic::default().with_name(Some(name(t)))]))
            .with_allow_auto_topic_creation(false);
        let ResponseKind::Metadata(m) = self.node(id).call(ApiKey::Metadata, 12, &req) else {
            panic!()
        };
        m
    }

    fn controller(&mut self) -> Option<i32> {
        let id = *self.up().first()?;
        let c = self.metadata(id, None).controller_id.0;
        (c > 0).then_some(c)
    }

    fn leader(&mut self, topic: &str, partition: i32) -> Option<i32> {
        let ids = self.up();
        ids.into_iter().find(|&id| {
            self.node(id)
                .engine
                .replica_status()
                .iter()
                .any(|s| s.topic == topic && s.partition == partition && s.role == Role::Leader)
        })
    }
}

fn create(c: &mut Cluster, via: i32, topic: &str, partitions: i32, rf: i16) -> i16 {
    create_with(c, via, topic, partitions, rf, &[])
}

fn create_with(
    c: &mut Cluster,
    via: i32,
    topic: &str,
    partitions: i32,
    rf: i16,
    configs: &[(&str, &str)],
) -> i16 {
    let t = creatable_topic(topic, partitions, rf, configs);
    let req = CreateTopicsRequest::default()
        .with_topics(vec![t])
        .with_timeout_ms(5000);
    let h = c.node(via);
    let seq = h.send(1, ApiKey::CreateTopics, 5, &req);
    let mut waited = 0;
    loop {
        if let Some(ResponseKind::CreateTopics(r)) = c.node(via).take(1, seq, ApiKey::CreateTopics, 5) {
            return r.topics[0].error_code;
        }
        waited += 5;
        assert!(waited < 5000, "CreateTopics not answered");
        c.advance(5);
    }
}

fn batch(prefix: &str, n: usize) -> Bytes {
    let specs: Vec<RecordSpec> = (0..n)
        .map(|i| RecordSpec {
            key: None,
            value: Some(Bytes::from(format!("{prefix}-{i}"))),
            headers: vec![],
            timestamp_ms: 1,
        })
        .collect();
    build_batch(&specs)
}

/// Produces with acks=all through node `via`, advancing time until answered.
fn produce(c: &mut Cluster, via: i32, topic: &str, b: Bytes) -> (i16, i64) {
    produce_acks(c, via, topic, b, -1)
}

fn produce_acks(c: &mut Cluster, via: i32, topic: &str, b: Bytes, acks: i16) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(3000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(b))])]);
    let seq = c.node(via).send(2, ApiKey::Produce, 9, &req);
    let mut waited = 0;
    loop {
        c.pump();
        if let Some(ResponseKind::Produce(r)) = c.node(via).take(2, seq, ApiKey::Produce, 9) {
            let p = &r.responses[0].partition_responses[0];
            return (p.error_code, p.base_offset);
        }
        waited += 5;
        assert!(waited < 5000, "Produce not answered");
        c.advance(5);
    }
}

fn fetch_values(c: &mut Cluster, via: i32, topic: &str) -> (i16, Vec<String>) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let ResponseKind::Fetch(r) = c.node(via).call(ApiKey::Fetch, 11, &req) else {
        panic!()
    };
    let p = &r.responses[0].partitions[0];
    let bytes = p.records.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (_, b) in scan(&bytes) {
        if !b.is_control() {
            for rec in decode_records(&b).unwrap() {
                out.push(String::from_utf8(rec.value.unwrap().to_vec()).unwrap());
            }
        }
    }
    (p.error_code, out)
}

fn formed(n: i32) -> Cluster {
    let mut c = Cluster::new(n);
    c.until(5_000, "every node ready", |c| {
        c.nodes.iter().flatten().all(|h| h.ready && h.fatal.is_none())
    });
    c.until(3_000, "every broker registered everywhere", |c| {
        (1..=n).all(|id| c.metadata(id, None).brokers.len() == n as usize)
    });
    c
}

#[test]
fn three_nodes_agree_on_cluster_brokers_and_controller() {
    let mut c = formed(3);
    let ids: BTreeSet<String> = (1..=3)
        .map(|id| c.metadata(id, None).cluster_id.unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one cluster id: {ids:?}");
    assert!(!ids.iter().next().unwrap().is_empty());
    let controllers: BTreeSet<i32> = (1..=3).map(|id| c.metadata(id, None).controller_id.0).collect();
    assert_eq!(controllers.len(), 1, "one controller: {controllers:?}");
    let ports: Vec<i32> = c.metadata(2, None).brokers.iter().map(|b| b.port).collect();
    assert_eq!(ports, vec![9092, 9093, 9094]);
}

#[test]
fn only_the_controller_creates_topics_and_replicas_spread() {
    let mut c = formed(3);
    let ctl = c.controller().expect("a controller");
    let other = (1..=3).find(|&id| id != ctl).unwrap();
    assert_eq!(create(&mut c, other, "t", 3, 3), NOT_CONTROLLER);
    assert_eq!(create(&mut c, ctl, "big", 1, 4), INVALID_REPLICATION_FACTOR);
    assert_eq!(create(&mut c, ctl, "t", 3, 3), 0);
    assert_eq!(create(&mut c, ctl, "r2", 6, 2), 0);
    c.until(3_000, "every partition has a published leader everywhere", |c| {
        (1..=3).all(|id| {
            let m = c.metadata(id, Some("t"));
            m.topics[0].error_code == 0 && m.topics[0].partitions.iter().all(|p| p.leader_id.0 > 0)
        })
    });
    let m = c.metadata(1, Some("r2"));
    let mut per_broker = [0usize; 4];
    for p in &m.topics[0].partitions {
        assert_eq!(p.replica_nodes.len(), 2);
        for r in &p.replica_nodes {
            per_broker[r.0 as usize] += 1;
        }
    }
    assert_eq!(&per_broker[1..], &[4, 4, 4], "replicas spread evenly");
}

#[test]
fn acks_all_survives_the_leader_crash_and_the_old_leader_catches_up() {
    let mut c = formed(3);
    let ctl = c.controller().unwrap();
    assert_eq!(create(&mut c, ctl, "t", 1, 3), 0);
    c.until(3_000, "a leader", |c| c.leader("t", 0).is_some());
    let leader = c.leader("t", 0).unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let (e, _) = produce(&mut c, follower, "t", batch("x", 1));
    assert_eq!(e, NOT_LEADER_OR_FOLLOWER, "a follower refuses produce");
    for i in 0..5 {
        let (e, _) = produce(&mut c, leader, "t", batch(&format!("a{i}"), 3));
        assert_eq!(e, 0);
    }
    let follower2 = (1..=3).find(|&id| id != leader && id != follower).unwrap();
    c.crash(follower2);
    c.advance(600);
    let isr: Vec<i32> = c.metadata(leader, Some("t")).topics[0].partitions[0]
        .isr_nodes
        .iter()
        .map(|b| b.0)
        .collect();
    assert!(
        !isr.contains(&follower2) && isr.contains(&leader),
        "ISR drops a dead replica: {isr:?}"
    );
    c.restart(follower2);
    c.until(3_000, "the replica is back in the ISR", |c| {
        c.metadata(leader, Some("t")).topics[0].partitions[0]
            .isr_nodes
            .len()
            == 3
    });
    // Every replica holds the committed records durably before the crash.
    c.crash(leader);
    c.until(3_000, "a new leader", |c| c.leader("t", 0).is_some());
    let new_leader = c.leader("t", 0).unwrap();
    assert_ne!(new_leader, leader);
    c.until(2_000, "the new leader serves", |c| {
        fetch_values(c, new_leader, "t").0 == 0
    });
    let (e, _) = produce(&mut c, new_leader, "t", batch("b", 2));
    assert_eq!(e, 0);
    let (e, values) = fetch_values(&mut c, new_leader, "t");
    assert_eq!(e, 0);
    let expected: Vec<String> = (0..5)
        .flat_map(|i| (0..3).map(move |j| format!("a{i}-{j}")))
        .chain((0..2).map(|j| format!("b-{j}")))
        .collect();
    assert_eq!(values, expected, "no acknowledged record lost, none doubled");
    c.restart(leader);
    c.until(5_000, "the old leader is ready", |c| c.node(leader).ready);
    let (e, _) = produce_acks(&mut c, leader, "t", batch("stale", 1), 1);
    assert_eq!(
        e, NOT_LEADER_OR_FOLLOWER,
        "a restarted replica is not a leader until elected"
    );
    c.until(5_000, "the old leader catches up", |c| {
        let ends: Vec<Option<(u64, u64)>> = c
            .up()
            .into_iter()
            .map(|id| {
                let s = c.node(id).engine.replica_status();
                s.iter()
                    .find(|s| s.topic == "t")
                    .map(|s| (s.log_end, s.commit_end))
            })
            .collect();
        ends.len() == 3 && ends.iter().all(|e| e.is_some() && *e == ends[0])
    });
}

#[test]
fn a_minority_cannot_commit_and_metadata_survives_a_full_restart() {
    let mut c = formed(3);
    let ctl = c.controller().unwrap();
    assert_eq!(create(&mut c, ctl, "keep", 2, 3), 0);
    c.until(3_000, "leaders", |c| {
        c.leader("keep", 0).is_some() && c.leader("keep", 1).is_some()
    });
    for id in 1..=3 {
        c.crash(id);
    }
    c.restart(1);
    c.advance(1_500);
    assert!(!c.node(1).ready, "one node alone cannot learn what is committed");
    assert!(c.node(1).fatal.is_none());
    c.restart(2);
    c.restart(3);
    c.until(5_000, "ready again", |c| {
        c.nodes.iter().flatten().all(|h| h.ready)
    });
    c.until(3_000, "leaders elected again", |c| {
        c.metadata(3, Some("keep")).topics[0].error_code == 0
    });
    let m = c.metadata(3, Some("keep"));
    assert_eq!(m.topics[0].partitions.len(), 2);
}

/// min.insync.replicas above a majority: acks=all waits until that many replicas hold the
/// batch durably, not merely until it is committed.
#[test]
fn min_insync_above_a_majority_waits_for_that_many_durable_copies() {
    let mut c = formed(3);
    let ctl = c.controller().unwrap();
    assert_eq!(
        create_with(&mut c, ctl, "strict", 1, 3, &[("min.insync.replicas", "3")]),
        0
    );
    c.until(3_000, "a leader", |c| c.leader("strict", 0).is_some());
    let leader = c.leader("strict", 0).unwrap();
    c.until(2_000, "the leader serves", |c| {
        fetch_values(c, leader, "strict").0 == 0
    });
    let (e, _) = produce(&mut c, leader, "strict", batch("all", 1));
    assert_eq!(e, 0, "three durable copies");
    let slow = (1..=3).find(|&id| id != leader).unwrap();
    c.held.insert(slow);
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(3000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("strict"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch("two", 1)))])]);
    let seq = c.node(leader).send(3, ApiKey::Produce, 9, &req);
    c.advance(30);
    let hw_moved = c
        .node(leader)
        .engine
        .replica_status()
        .iter()
        .any(|s| s.topic == "strict" && s.commit_end == s.log_end);
    assert!(hw_moved, "a majority committed the batch");
    assert!(
        c.node(leader).take(3, seq, ApiKey::Produce, 9).is_none(),
        "acks=all waits for the third durable copy"
    );
    c.held.remove(&slow);
    c.advance(60);
    let Some(ResponseKind::Produce(r)) = c.node(leader).take(3, seq, ApiKey::Produce, 9) else {
        panic!("answered once the third copy is durable")
    };
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    // A copy that never becomes durable: the produce times out instead of hanging.
    c.held.insert(slow);
    let seq = c
        .node(leader)
        .send(3, ApiKey::Produce, 9, &req.clone().with_timeout_ms(200));
    c.advance(300);
    let Some(ResponseKind::Produce(r)) = c.node(leader).take(3, seq, ApiKey::Produce, 9) else {
        panic!("answered at the request's timeout")
    };
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        REQUEST_TIMED_OUT
    );
    c.held.remove(&slow);
}

#[test]
fn a_data_dir_is_refused_with_another_voter_set() {
    let mut c = formed(3);
    c.crash(2);
    let disk = c.disks[1].take().unwrap();
    let wider = config(2, 5);
    let h = Harness::start_on(wider, disk);
    let fatal = h.fatal.expect("refused");
    assert!(
        fatal.contains("voters [1, 2, 3]") && fatal.contains("[1, 2, 3, 4, 5]"),
        "{fatal}"
    );
}

/// InitProducerId through node `via`, advancing time until answered.
fn init_producer_id(c: &mut Cluster, via: i32) -> (i16, i64) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let seq = c.node(via).send(3, ApiKey::InitProducerId, 4, &req);
    let mut waited = 0;
    loop {
        c.pump();
        if let Some(ResponseKind::InitProducerId(r)) = c.node(via).take(3, seq, ApiKey::InitProducerId, 4) {
            return (r.error_code, r.producer_id.0);
        }
        waited += 5;
        assert!(waited < 6000, "InitProducerId not answered");
        c.advance(5);
    }
}

fn idempotent(pid: i64, seq: i32, value: &str) -> Bytes {
    gregor_engine::batch::with_producer(&batch(value, 1), pid, 0, seq)
}

#[test]
fn producer_ids_are_unique_across_nodes_and_retries_dedup_across_failover() {
    let mut c = formed(3);
    let ctl = c.controller().unwrap();
    let mut ids = BTreeSet::new();
    for round in 0..2 {
        for via in 1..=3 {
            let (e, id) = init_producer_id(&mut c, via);
            assert_eq!(e, 0);
            assert!(
                ids.insert(id),
                "round {round}: id {id} from node {via} given out twice"
            );
        }
    }
    assert_eq!(create(&mut c, ctl, "t", 1, 3), 0);
    c.until(3_000, "a leader", |c| c.leader("t", 0).is_some());
    let leader = c.leader("t", 0).unwrap();
    let pid = *ids.iter().next().unwrap();
    let mut offsets = Vec::new();
    for seq in 0..4 {
        let (e, base) = produce(&mut c, leader, "t", idempotent(pid, seq, &format!("v{seq}")));
        assert_eq!(e, 0);
        offsets.push(base);
    }
    // The new leader learned the producer's batches by replicating them.
    c.crash(leader);
    c.until(3_000, "a new leader", |c| c.leader("t", 0).is_some());
    let new_leader = c.leader("t", 0).unwrap();
    c.until(2_000, "the new leader serves", |c| {
        fetch_values(c, new_leader, "t").0 == 0
    });
    for seq in 0..4 {
        let (e, base) = produce(&mut c, new_leader, "t", idempotent(pid, seq, &format!("v{seq}")));
        assert_eq!((e, base), (0, offsets[seq as usize]), "retry of seq {seq}");
    }
    let (e, _) = produce(&mut c, new_leader, "t", idempotent(pid, 4, "v4"));
    assert_eq!(e, 0);
    let (_, values) = fetch_values(&mut c, new_leader, "t");
    assert_eq!(values, vec!["v0-0", "v1-0", "v2-0", "v3-0", "v4-0"]);
    // The crashed node restarts and gives out only ids never given before.
    c.restart(leader);
    c.until(5_000, "the old leader is ready", |c| c.node(leader).ready);
    let (e, id) = init_producer_id(&mut c, leader);
    assert_eq!(e, 0);
    assert!(ids.insert(id), "id {id} given out twice");
}
