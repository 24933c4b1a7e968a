//! The cluster metadata image: what every broker knows of the cluster, built by applying
//! the committed records of `__cluster_metadata` in offset order. Metadata answers,
//! partition placement and leader lookups read it; only the controller writes records.
//!
//! Invariants: topic names and ids map one to one; every partition has at least one
//! replica; a partition's leader epoch only grows; `applied_end` is one past the last
//! offset applied. Applying the same records in the same order gives the same image, and a
//! snapshot of the image decodes to an equal image.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::records::{MetaRecord, NodeId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub replicas: Vec<NodeId>,
    /// The last leader published, if any.
    pub leader: Option<NodeId>,
    /// Its epoch (0 before the first election).
    pub leader_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub id: u128,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterImage {
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    /// By name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// Topic id to name.
    pub names: BTreeMap<u128, String>,
    pub applied_end: u64,
    /// The first producer id no block holds yet (ids below it were given out).
    #[serde(default)]
    pub next_producer_id: i64,
    /// Each broker's newest producer id block.
    #[serde(default)]
    pub producer_blocks: BTreeMap<NodeId, ProducerBlock>,
}

/// A block of producer ids a broker was given: `[start, end)`, by the record at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBlock {
    pub offset: u64,
    pub start: i64,
    pub end: i64,
}

/// What applying one record changed, for the layers that react (create or drop replicas,
/// answer waiting admin requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageChange {
    None,
    ClusterId,
    Broker(NodeId),
    /// Partitions `first..` of the topic appeared (a new topic has first = 0).
    Partitions {
        topic: String,
        first: i32,
    },
    TopicDeleted {
        name: String,
        id: u128,
        partitions: i32,
    },
    Leader {
        topic: String,
        partition: i32,
    },
    ProducerIds(NodeId),
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"GRS1";

impl ClusterImage {
    /// Applies the record at `offset`. Records that no longer make sense (a second cluster
    /// id, a topic that exists, a leader change for a deleted topic or an older epoch) change
    /// nothing: the controller decided them against an image that a later record superseded.
    pub fn apply(&mut self, offset: u64, record: &MetaRecord) -> ImageChange {
        assert!(offset >= self.applied_end, "records apply in offset order");
        self.applied_end = offset + 1;
        match record {
            MetaRecord::ClusterId { id } => {
                if self.cluster_id.is_some() {
                    return ImageChange::None;
                }
                self.cluster_id = Some(id.clone());
                ImageChange::ClusterId
            }
            MetaRecord::RegisterBroker {
                node,
                host,
                port,
                rack,
            } => {
                let info = BrokerInfo {
                    host: host.clone(),
                    port: *port,
                    rack: rack.clone(),
                };
                if self.brokers.get(node) == Some(&info) {
                    return ImageChange::None;
                }
                self.brokers.insert(*node, info);
                ImageChange::Broker(*node)
            }
            MetaRecord::CreateTopic {
                name,
                id,
                configs,
                replicas,
            } => {
                if self.topics.contains_key(name)
                    || self.names.contains_key(id)
                    || replicas.is_empty()
                    || replicas.iter().any(|r| r.is_empty())
                {
                    return ImageChange::None;
                }
                self.names.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicInfo {
                        id: *id,
                        configs: configs.clone(),
                        partitions: replicas.iter().map(|r| new_partition(r)).collect(),
                    },
                );
                ImageChange::Partitions {
                    topic: name.clone(),
                    first: 0,
                }
            }
            MetaRecord::AddPartitions {
                topic_id,
                first,
                replicas,
            } => {
                let Some(name) = self.names.get(topic_id) else {
                    return ImageChange::None;
                };
                let Some(t) = self.topics.get_mut(name) else {
                    return ImageChange::None;
                };
                if *first != t.partitions.len() as i32 || replicas.iter().any(|r| r.is_empty()) {
                    return ImageChange::None;
                }
                t.partitions.extend(replicas.iter().map(|r| new_partition(r)));
                ImageChange::Partitions {
                    topic: name.clone(),
                    first: *first,
                }
            }
            MetaRecord::DeleteTopic { topic_id } => {
                let Some(name) = self.names.remove(topic_id) else {
                    return ImageChange::None;
                };
                let partitions = self.topics.remove(&name).map_or(0, |t| t.partitions.len() as i32);
                ImageChange::TopicDeleted {
                    name,
                    id: *topic_id,
                    partitions,
                }
            }
            MetaRecord::LeaderChange {
                topic_id,
                partition,
                leader,
                epoch,
            } => {
                let Some(name) = self.names.get(topic_id) else {
                    return ImageChange::None;
                };
                let Some(p) = self
                    .topics
                    .get_mut(name)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?))
                else {
                    return ImageChange::None;
                };
                if *epoch <= p.leader_epoch || !p.replicas.contains(leader) {
                    return ImageChange::None;
                }
                p.leader = Some(*leader);
                p.leader_epoch = *epoch;
                ImageChange::Leader {
                    topic: name.clone(),
                    partition: *partition,
                }
            }
            MetaRecord::ProducerIds {
                broker,
                start,
                end,
                after: _,
            } => {
                // A block decided against an image a later block superseded overlaps it.
                if *start < self.next_producer_id || *end <= *start {
                    return ImageChange::None;
                }
                self.next_producer_id = *end;
                self.producer_blocks.insert(
                    *broker,
                    ProducerBlock {
                        offset,
                        start: *start,
                        end: *end,
                    },
                );
                ImageChange::ProducerIds(*broker)
            }
        }
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    /// Every partition hosted on `node`: (topic, id, partition).
    pub fn replicas_on(&self, node: NodeId) -> Vec<(String, u128, i32)> {
        let mut out = Vec::new();
        for (name, t) in &self.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.replicas.contains(&node) {
                    out.push((name.clone(), t.id, i as i32));
                }
            }
        }
        out
    }

    /// A snapshot file: `GRS1`, CRC32C (big-endian) of the JSON body, the JSON body.
    pub fn encode_snapshot(&self) -> Bytes {
        // Plain data with string keys (u128 and i32 map keys serialize as strings).
        crate::meta::seal(
            SNAPSHOT_MAGIC,
            &serde_json::to_vec(self).expect("the image serializes"),
        )
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<ClusterImage, String> {
        let body =
            crate::meta::unseal(SNAPSHOT_MAGIC, bytes).map_err(|e| format!("metadata snapshot: {e}"))?;
        serde_json::from_slice(body).map_err(|e| format!("metadata snapshot does not parse: {e}"))
    }
}

fn new_partition(replicas: &[NodeId]) -> PartitionInfo {
    PartitionInfo {
        replicas: replicas.to_vec(),
        leader: None,
        leader_epoch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, id: u128, parts: usize) -> MetaRecord {
        MetaRecord::CreateTopic {
            name: name.into(),
            id,
            configs: BTreeMap::new(),
            replicas: (0..parts)
                .map(|p| vec![1 + p as i32 % 3, 1 + (p as i32 + 1) % 3])
                .collect(),
        }
    }

    #[test]
    fn applying_builds_topics_brokers_and_leaders() {
        let mut img = ClusterImage::default();
        assert_eq!(
            img.apply(0, &MetaRecord::ClusterId { id: "c".into() }),
            ImageChange::ClusterId
        );
        assert_eq!(
            img.apply(1, &MetaRecord::ClusterId { id: "other".into() }),
            ImageChange::None
        );
        let reg = MetaRecord::RegisterBroker {
            node: 1,
            host: "h".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(img.apply(2, &reg), ImageChange::Broker(1));
        assert_eq!(img.apply(3, &reg), ImageChange::None, "unchanged registration");
        assert!(matches!(
            img.apply(4, &create("t", 7, 2)),
            ImageChange::Partitions { first: 0, .. }
        ));
        assert_eq!(img.apply(5, &create("t", 8, 1)), ImageChange::None, "name taken");
        assert_eq!(img.apply(6, &create("u", 7, 1)), ImageChange::None, "id taken");
        let lead = |leader, epoch| MetaRecord::LeaderChange {
            topic_id: 7,
            partition: 1,
            leader,
            epoch,
        };
        assert!(matches!(
            img.apply(7, &lead(2, 3)),
            ImageChange::Leader { partition: 1, .. }
        ));
        assert_eq!(img.apply(8, &lead(3, 2)), ImageChange::None, "an older epoch");
        assert_eq!(
            img.apply(9, &lead(1, 5)),
            ImageChange::None,
            "not a replica of partition 1"
        );
        let p = img.partition("t", 1).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.replicas.clone()),
            (Some(2), 3, vec![2, 3])
        );
        let add = MetaRecord::AddPartitions {
            topic_id: 7,
            first: 2,
            replicas: vec![vec![3]],
        };
        assert!(matches!(
            img.apply(10, &add),
            ImageChange::Partitions { first: 2, .. }
        ));
        assert_eq!(img.apply(11, &add), ImageChange::None, "first no longer matches");
        assert_eq!(img.replicas_on(3).len(), 2);
        assert_eq!(
            img.apply(12, &MetaRecord::DeleteTopic { topic_id: 7 }),
            ImageChange::TopicDeleted {
                name: "t".into(),
                id: 7,
                partitions: 3
            }
        );
        assert!(img.topics.is_empty() && img.names.is_empty());
        assert_eq!(img.applied_end, 13);
    }

    #[test]
    fn snapshots_round_trip_and_detect_damage() {
        let mut img = ClusterImage::default();
        img.apply(0, &MetaRecord::ClusterId { id: "c".into() });
        img.apply(1, &create("t", u128::MAX, 3));
        let snap = img.encode_snapshot();
        assert_eq!(ClusterImage::decode_snapshot(&snap), Ok(img));
        let mut bad = snap.to_vec();
        let n = bad.len() - 3;
        bad[n] ^= 0x10;
        assert!(ClusterImage::decode_snapshot(&bad).is_err());
        assert!(ClusterImage::decode_snapshot(b"GRS").is_err());
    }
}
