//! The records of the `__cluster_metadata` log. Each is one Kafka record (key: the record
//! type, value: its JSON body) inside an ordinary record batch, so the metadata log is
//! stored, replicated and recovered exactly like a partition.
//!
//! Records state facts the controller decided; applying them ([`super::image`]) never
//! fails on a well-formed record, so every broker's image converges.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::batch::{self, BatchView, RecordSpec};

/// Node (broker) ids, as Kafka numbers them.
pub type NodeId = i32;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetaRecord {
    /// The first record of a cluster's log: its id, drawn by the first controller.
    ClusterId { id: String },
    /// A broker announces where clients reach it (re-sent when it changes).
    RegisterBroker {
        node: NodeId,
        host: String,
        port: i32,
        rack: Option<String>,
    },
    /// A new topic with the replicas of each partition (leader preference first).
    CreateTopic {
        name: String,
        #[serde(with = "id_hex")]
        id: u128,
        configs: BTreeMap<String, String>,
        replicas: Vec<Vec<NodeId>>,
    },
    /// More partitions for an existing topic; `replicas[i]` is partition `first + i`.
    AddPartitions {
        #[serde(with = "id_hex")]
        topic_id: u128,
        first: i32,
        replicas: Vec<Vec<NodeId>>,
    },
    DeleteTopic {
        #[serde(with = "id_hex")]
        topic_id: u128,
    },
    /// A partition's Raft group elected `leader` in `epoch` (published by the leader).
    LeaderChange {
        #[serde(with = "id_hex")]
        topic_id: u128,
        partition: i32,
        leader: NodeId,
        epoch: i32,
    },
    /// The controller gives `broker` the producer ids `[start, end)` (Kafka's
    /// `ProducerIdsRecord`); it asked for a block from a record at or after `after`.
    ProducerIds {
        broker: NodeId,
        start: i64,
        end: i64,
        after: u64,
    },
}

/// Topic ids as 32 hex digits: serde_json cannot read a u128 inside a tagged enum.
mod id_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{id:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

impl MetaRecord {
    fn kind(&self) -> &'static str {
        match self {
            MetaRecord::ClusterId { .. } => "ClusterId",
            MetaRecord::RegisterBroker { .. } => "RegisterBroker",
            MetaRecord::CreateTopic { .. } => "CreateTopic",
            MetaRecord::AddPartitions { .. } => "AddPartitions",
            MetaRecord::DeleteTopic { .. } => "DeleteTopic",
            MetaRecord::LeaderChange { .. } => "LeaderChange",
            MetaRecord::ProducerIds { .. } => "ProducerIds",
        }
    }

    /// One record batch holding `records` in order (offsets and epoch are stamped by the
    /// log that appends it).
    pub fn to_batch(records: &[MetaRecord], timestamp_ms: i64) -> Bytes {
        assert!(!records.is_empty(), "a batch holds at least one record");
        let specs: Vec<RecordSpec> = records
            .iter()
            .map(|r| RecordSpec {
                key: Some(Bytes::from_static(r.kind().as_bytes())),
                // Serializing plain data with string keys cannot fail.
                value: Some(Bytes::from(serde_json::to_vec(r).expect("records serialize"))),
                headers: vec![],
                timestamp_ms,
            })
            .collect();
        batch::build_batch(&specs)
    }

    /// The records of one stored batch with their offsets. Control batches (the leader
    /// no-op) hold none. A record that does not parse is an error naming its offset.
    pub fn from_batch(view: &BatchView) -> Result<Vec<(u64, MetaRecord)>, String> {
        if view.is_control() {
            return Ok(Vec::new());
        }
        let records = batch::decode_records(view).map_err(|e| e.to_string())?;
        records
            .into_iter()
            .map(|r| {
                let value = r.value.unwrap_or_default();
                serde_json::from_slice(&value)
                    .map(|rec| (r.offset.max(0) as u64, rec))
                    .map_err(|e| format!("metadata record at offset {}: {e}", r.offset))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_batch() {
        let records = vec![
            MetaRecord::ClusterId { id: "c1".into() },
            MetaRecord::RegisterBroker {
                node: 2,
                host: "10.0.0.2".into(),
                port: 9092,
                rack: None,
            },
            MetaRecord::CreateTopic {
                name: "t".into(),
                id: u128::MAX - 5,
                configs: BTreeMap::from([("segment.bytes".into(), "1024".into())]),
                replicas: vec![vec![1, 2, 3], vec![2, 3, 1]],
            },
            MetaRecord::LeaderChange {
                topic_id: 9,
                partition: 1,
                leader: 3,
                epoch: 4,
            },
        ];
        let mut bytes = MetaRecord::to_batch(&records, 77).to_vec();
        batch::set_base_offset(&mut bytes, 10);
        let view = BatchView::parse(&bytes).unwrap();
        let back = MetaRecord::from_batch(&view).unwrap();
        assert_eq!(
            back.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![10, 11, 12, 13]
        );
        assert_eq!(back.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), records);
    }

    #[test]
    fn a_record_that_does_not_parse_names_its_offset() {
        let spec = RecordSpec {
            key: Some(Bytes::from_static(b"Nope")),
            value: Some(Bytes::from_static(b"{\"type\":\"Nope\"}")),
            headers: vec![],
            timestamp_ms: 0,
        };
        let bytes = batch::build_batch(&[spec]);
        let err = MetaRecord::from_batch(&BatchView::parse(&bytes).unwrap()).unwrap_err();
        assert!(err.contains("offset 0"), "{err}");
    }
}
