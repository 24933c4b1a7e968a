//! ApiVersions, Metadata (with auto topic creation) and DescribeCluster.

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
use crate::replica::METADATA_TOPIC;

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
    /// Brokers clients may reach: every registered one, and this one even before its
    /// registration is applied.
    fn broker_entries(&self) -> Vec<(i32, String, i32)> {
        let me = self.config.node_id;
        let mut out: Vec<(i32, String, i32)> = self
            .image
            .brokers
            .iter()
            .filter(|(&id, _)| id != me)
            .map(|(&id, b)| (id, b.host.clone(), b.port))
            .collect();
        out.push((
            me,
            self.config.advertised_host.clone(),
            self.config.advertised_port,
        ));
        out.sort();
        out
    }

    fn controller_id(&self) -> i32 {
        self.metadata_leader().unwrap_or(-1)
    }

    fn known_cluster_id(&self) -> String {
        self.image
            .cluster_id
            .clone()
            .or_else(|| self.node_meta.cluster_id.clone())
            .unwrap_or_default()
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
                let names: Vec<String> = self.image.topics.keys().cloned().collect();
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
        let brokers = self
            .broker_entries()
            .into_iter()
            .map(|(id, host, port)| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(str_bytes(&host))
                    .with_port(port)
            })
            .collect();
        ResponseKind::Metadata(
            MetadataResponse::default()
                .with_brokers(brokers)
                .with_cluster_id(Some(str_bytes(&self.known_cluster_id())))
                .with_controller_id(BrokerId(self.controller_id()))
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
        if self.image.topics.contains_key(name) {
            return self.topic_metadata(name);
        }
        if validate_topic_name(name).is_err() {
            return error(code::INVALID_TOPIC_EXCEPTION);
        }
        if !(allow_auto && self.config.auto_create_topics_enable) || name == METADATA_TOPIC {
            return error(code::UNKNOWN_TOPIC_OR_PARTITION);
        }
        // Nobody waits for the creation: the client retries Metadata until it is ready.
        self.auto_create_topic(name);
        error(code::LEADER_NOT_AVAILABLE)
    }

    /// A partition's leader for clients: this node only while its replica leads; another
    /// broker as the image last published it, if that broker is registered.
    pub(crate) fn partition_leader(
        &self,
        topic: &str,
        partition: i32,
        published: Option<(i32, i32)>,
    ) -> Option<(i32, i32)> {
        let me = self.config.node_id;
        let local = self
            .partitions
            .get(&(topic.to_string(), partition))
            .and_then(|id| self.logs.get(id));
        if let Some(l) = local.filter(|l| l.is_leader) {
            // Named only once its replica won the election: a client told earlier would
            // send to a non-leader (and acks=0 records would be lost).
            return Some((me, l.leader_epoch));
        }
        // A follower here knows the current term's leader before the image does.
        if let Some((leader, term)) = local
            .and_then(|l| self.replica_of(l.id))
            .and_then(|r| r.raft.leader().map(|x| (x, r.raft.term())))
        {
            if leader != me && self.image.brokers.contains_key(&leader) {
                return Some((leader, term));
            }
        }
        let (leader, epoch) = published?;
        if leader == me || local.is_some_and(|l| l.leader_epoch > epoch) {
            // Published earlier but not leading now, or a later term began here.
            return None;
        }
        self.image
            .brokers
            .contains_key(&leader)
            .then_some((leader, epoch))
    }

    /// This node's Raft core of a partition it leads.
    fn local_leader_raft(&self, topic: &str, partition: i32) -> Option<&crate::raft::RaftCore> {
        let id = self.partitions.get(&(topic.to_string(), partition))?;
        let r = self.replica_of(*id)?;
        (r.raft.role() == crate::raft::Role::Leader).then_some(&r.raft)
    }

    fn topic_metadata(&self, name: &str) -> MetadataResponseTopic {
        let Some(t) = self.image.topics.get(name) else {
            return MetadataResponseTopic::default()
                .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                .with_name(Some(TopicName(str_bytes(name))));
        };
        let mut all_ready = true;
        let partitions = t
            .partitions
            .iter()
            .enumerate()
            .map(|(p, info)| {
                let p = p as i32;
                let published = info.leader.map(|l| (l, info.leader_epoch));
                let (error_code, leader, epoch) = match self.partition_leader(name, p, published) {
                    Some((l, e)) => (code::NONE, BrokerId(l), e),
                    None => {
                        all_ready = false;
                        (code::LEADER_NOT_AVAILABLE, BrokerId(-1), -1)
                    }
                };
                let replicas: Vec<BrokerId> = info.replicas.iter().map(|&r| BrokerId(r)).collect();
                // The leader knows which replicas it hears from; elsewhere, all of them.
                let now = self.now.mono_ms;
                let isr: Vec<BrokerId> = match self.local_leader_raft(name, p) {
                    Some(raft) => replicas
                        .iter()
                        .copied()
                        .filter(|r| raft.is_live(r.0, now))
                        .collect(),
                    None => replicas.clone(),
                };
                MetadataResponsePartition::default()
                    .with_error_code(error_code)
                    .with_partition_index(p)
                    .with_leader_id(leader)
                    .with_leader_epoch(epoch)
                    .with_isr_nodes(isr)
                    .with_replica_nodes(replicas)
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
            .with_is_internal(name == super::groups::OFFSETS_TOPIC)
            .with_partitions(partitions)
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
    }

    pub(crate) fn handle_describe_cluster(&self) -> ResponseKind {
        let brokers = self
            .broker_entries()
            .into_iter()
            .map(|(id, host, port)| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(id))
                    .with_host(str_bytes(&host))
                    .with_port(port)
            })
            .collect();
        ResponseKind::DescribeCluster(
            DescribeClusterResponse::default()
                .with_cluster_id(str_bytes(&self.known_cluster_id()))
                .with_controller_id(BrokerId(self.controller_id()))
                .with_brokers(brokers)
                .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
        )
    }
}
