//! ApiVersions, Metadata (with auto topic creation) and DescribeCluster.

use std::collections::BTreeMap;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, DescribeClusterResponse, MetadataRequest, MetadataResponse, ResponseKind,
    TopicName,
};

use super::{code, str_bytes, to_uuid, Ctx, SUPPORTED_APIS};
use crate::engine::Engine;
use crate::meta::validate_topic_name;

/// "Authorized operations not requested", as Kafka encodes it.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub(crate) fn api_versions_response(error_code: i16) -> ResponseKind {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(error_code)
            .with_api_keys(api_keys),
    )
}

impl Engine {
    fn broker_entry(&self) -> MetadataResponseBroker {
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(self.config.node_id))
            .with_host(str_bytes(&self.config.advertised_host))
            .with_port(self.config.advertised_port)
    }

    pub(crate) fn handle_metadata(&mut self, ctx: &Ctx, req: MetadataRequest) -> ResponseKind {
        // v0 has no null: an empty list means every topic. From v1, null means every topic.
        let wanted: Option<Vec<(Option<String>, u128)>> = match req.topics {
            None => None,
            Some(ts) if ts.is_empty() && ctx.version == 0 => None,
            Some(ts) => Some(
                ts.into_iter()
                    .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id.as_u128()))
                    .collect(),
            ),
        };
        let allow_auto = ctx.version < 4 || req.allow_auto_topic_creation;
        let mut topics = Vec::new();
        match wanted {
            None => {
                let names: Vec<String> = self.meta.topics.keys().cloned().collect();
                for name in names {
                    topics.push(self.topic_metadata(&name));
                }
            }
            Some(list) => {
                for (name, id) in list {
                    let name = match name {
                        Some(n) => n,
                        None => match self.topic_by_id(id) {
                            Some(n) => n.to_string(),
                            None => {
                                topics.push(
                                    MetadataResponseTopic::default()
                                        .with_error_code(code::UNKNOWN_TOPIC_ID)
                                        .with_topic_id(to_uuid(id))
                                        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                                );
                                continue;
                            }
                        },
                    };
                    topics.push(self.metadata_for_named(&name, allow_auto));
                }
            }
        }
        ResponseKind::Metadata(
            MetadataResponse::default()
                .with_brokers(vec![self.broker_entry()])
                .with_cluster_id(Some(str_bytes(&self.meta.cluster_id)))
                .with_controller_id(BrokerId(self.config.node_id))
                .with_topics(topics)
                .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
        )
    }

    fn metadata_for_named(&mut self, name: &str, allow_auto: bool) -> MetadataResponseTopic {
        let error = |code: i16| {
            MetadataResponseTopic::default()
                .with_error_code(code)
                .with_name(Some(TopicName(str_bytes(name))))
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        };
        if self.meta.topics.contains_key(name) {
            return self.topic_metadata(name);
        }
        if validate_topic_name(name).is_err() {
            return error(code::INVALID_TOPIC_EXCEPTION);
        }
        if !(allow_auto && self.config.auto_create_topics_enable) {
            return error(code::UNKNOWN_TOPIC_OR_PARTITION);
        }
        tracing::info!(
            topic = name,
            partitions = self.config.num_partitions,
            "auto-creating topic"
        );
        let partitions = self.config.num_partitions;
        // Nobody waits for the creation: the client retries Metadata until it is ready.
        let id = self.random_u128();
        self.create_topic(name, id, partitions, BTreeMap::new(), 0);
        error(code::LEADER_NOT_AVAILABLE)
    }

    fn topic_metadata(&self, name: &str) -> MetadataResponseTopic {
        let Some(t) = self.meta.topics.get(name) else {
            return MetadataResponseTopic::default()
                .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                .with_name(Some(TopicName(str_bytes(name))));
        };
        let me = BrokerId(self.config.node_id);
        let mut all_ready = true;
        let partitions = (0..t.partitions)
            .map(|p| {
                let log = self
                    .partitions
                    .get(&(name.to_string(), p))
                    .and_then(|id| self.logs.get(id));
                let (error_code, leader, epoch) = match log {
                    // Named leader only once its replica won the election: a client told
                    // earlier would send to a non-leader (and acks=0 records would be lost).
                    Some(l) if l.is_leader => (code::NONE, me, l.leader_epoch),
                    _ => {
                        all_ready = false;
                        (code::LEADER_NOT_AVAILABLE, BrokerId(-1), -1)
                    }
                };
                MetadataResponsePartition::default()
                    .with_error_code(error_code)
                    .with_partition_index(p)
                    .with_leader_id(leader)
                    .with_leader_epoch(epoch)
                    .with_replica_nodes(vec![me])
                    .with_isr_nodes(vec![me])
            })
            .collect();
        MetadataResponseTopic::default()
            .with_error_code(if all_ready {
                code::NONE
            } else {
                code::LEADER_NOT_AVAILABLE
            })
            .with_name(Some(TopicName(str_bytes(name))))
            .with_topic_id(to_uuid(t.id))
            .with_is_internal(false)
            .with_partitions(partitions)
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
    }

    pub(crate) fn handle_describe_cluster(&self) -> ResponseKind {
        let broker = DescribeClusterBroker::default()
            .with_broker_id(BrokerId(self.config.node_id))
            .with_host(str_bytes(&self.config.advertised_host))
            .with_port(self.config.advertised_port);
        ResponseKind::DescribeCluster(
            DescribeClusterResponse::default()
                .with_cluster_id(str_bytes(&self.meta.cluster_id))
                .with_controller_id(BrokerId(self.config.node_id))
                .with_brokers(vec![broker])
                .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
        )
    }
}
