//! CreateTopics, DeleteTopics and CreatePartitions. Each answers once the metadata change
//! is durable and every new partition's log exists on disk (or every deleted topic's data
//! is gone), with Kafka's error codes for every invalid input.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, ResponseKind, TopicName,
};

use super::configs::topic_config_entries;
use super::{code, str_bytes, to_uuid, Ctx, PendingBody};
use crate::config::validate_topic_config;
use crate::engine::Engine;
use crate::meta::validate_topic_name;

#[derive(Debug)]
pub(crate) struct PendingAdmin {
    response: ResponseKind,
    outstanding: usize,
}

type TopicError = (i16, String);

/// Most partitions one topic may have: a request for more is refused with
/// INVALID_PARTITIONS rather than creating millions of directories.
pub(crate) const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

fn check_partition_count(n: i32) -> Result<i32, TopicError> {
    if n > PARTITIONS_PER_TOPIC_MAX {
        return Err((
            code::INVALID_PARTITIONS,
            format!("{n} partitions is more than this broker allows per topic ({PARTITIONS_PER_TOPIC_MAX})"),
        ));
    }
    Ok(n)
}

impl Engine {
    fn admin_wait_or_respond(&mut self, ctx: Ctx, response: ResponseKind, outstanding: usize) -> Option<u64> {
        if outstanding == 0 {
            self.respond(&ctx, response);
            return None;
        }
        Some(self.park(
            ctx,
            PendingBody::Admin(PendingAdmin {
                response,
                outstanding,
            }),
        ))
    }

    /// One step of an admin op finished (metadata durable, a log created, a dir deleted).
    pub(crate) fn admin_progress(&mut self, op: u64) {
        let Some(PendingBody::Admin(a)) = self.kafka.requests.get_mut(&op).map(|p| &mut p.body) else {
            return;
        };
        assert!(a.outstanding > 0);
        a.outstanding -= 1;
        if a.outstanding == 0 {
            let response = std::mem::replace(
                &mut a.response,
                ResponseKind::CreateTopics(CreateTopicsResponse::default()),
            );
            self.finish(op, Some(response));
        }
    }

    /// Checks one CreatableTopic: its partition count, replication factor and configs.
    fn check_new_topic(
        &self,
        t: &CreatableTopic,
    ) -> Result<(i32, i16, BTreeMap<String, String>), TopicError> {
        let name = t.name.0.as_str();
        validate_topic_name(name).map_err(|m| (code::INVALID_TOPIC_EXCEPTION, m))?;
        if self.meta.topics.contains_key(name) {
            return Err((
                code::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
            ));
        }
        let me = self.config.node_id;
        let partitions = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err((
                    code::INVALID_REQUEST,
                    "both numPartitions or replicationFactor and replicasAssignments were set".into(),
                ));
            }
            let mut seen = BTreeSet::new();
            for a in &t.assignments {
                if a.broker_ids.len() != 1 || a.broker_ids[0].0 != me || !seen.insert(a.partition_index) {
                    return Err((
                        code::INVALID_REPLICA_ASSIGNMENT,
                        format!("assignments must name broker {me} once per partition"),
                    ));
                }
            }
            let n = t.assignments.len() as i32;
            if seen.iter().copied().ne(0..n) {
                return Err((
                    code::INVALID_REPLICA_ASSIGNMENT,
                    "partitions must be numbered from 0 without gaps".into(),
                ));
            }
            n
        } else {
            match t.num_partitions {
                -1 => self.config.num_partitions,
                n if n >= 1 => check_partition_count(n)?,
                n => {
                    return Err((
                        code::INVALID_PARTITIONS,
                        format!("Number of partitions was set to an invalid non-positive value ({n})."),
                    ))
                }
            }
        };
        let rf = match t.replication_factor {
            -1 => self.config.default_replication_factor,
            n => n,
        };
        if !t.assignments.is_empty() {
            // replication factor comes from the assignment: one replica each
        } else if rf < 1 {
            return Err((
                code::INVALID_REPLICATION_FACTOR,
                format!("Replication factor must be larger than 0 (was {rf})."),
            ));
        } else if rf > 1 {
            return Err((
                code::INVALID_REPLICATION_FACTOR,
                format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered."),
            ));
        }
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            let key = c.name.as_str();
            let Some(value) = c.value.as_ref().map(|v| v.as_str()) else {
                return Err((
                    code::INVALID_CONFIG,
                    format!("Null value not supported for topic config '{key}'"),
                ));
            };
            validate_topic_config(key, value).map_err(|e| (code::INVALID_CONFIG, e.to_string()))?;
            configs.insert(key.to_string(), value.to_string());
        }
        Ok((partitions, 1, configs))
    }

    pub(crate) fn handle_create_topics(&mut self, ctx: Ctx, req: CreateTopicsRequest) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in &req.topics {
            *counts.entry(t.name.0.as_str().to_string()).or_default() += 1;
        }
        let mut results = Vec::new();
        let mut to_create = Vec::new();
        for t in &req.topics {
            let name = t.name.0.as_str().to_string();
            let mut r = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let checked = if counts[&name] > 1 {
                Err((
                    code::INVALID_REQUEST,
                    format!("Create topics request from client contains a duplicate topic '{name}'"),
                ))
            } else {
                self.check_new_topic(t)
            };
            match checked {
                Ok((partitions, rf, configs)) => {
                    r.num_partitions = partitions;
                    r.replication_factor = rf;
                    r.configs = Some(
                        topic_config_entries(&self.config, &configs)
                            .into_iter()
                            .map(|e| {
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(e.name))
                                    .with_value(Some(str_bytes(&e.value)))
                                    .with_config_source(e.source)
                            })
                            .collect(),
                    );
                    if !req.validate_only {
                        let id = self.random_u128();
                        r.topic_id = to_uuid(id);
                        to_create.push((name, id, partitions, configs));
                    }
                }
                Err((error, message)) => {
                    r.error_code = error;
                    r.error_message = Some(str_bytes(&message));
                }
            }
            results.push(r);
        }
        let outstanding: usize = to_create.iter().map(|(_, _, p, _)| 1 + *p as usize).sum();
        let response = ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results));
        let op = self.admin_wait_or_respond(ctx, response, outstanding);
        for (name, id, partitions, configs) in to_create {
            self.create_topic(&name, id, partitions, configs, op.unwrap_or(0));
        }
    }

    pub(crate) fn handle_delete_topics(&mut self, ctx: Ctx, req: DeleteTopicsRequest) {
        // v0-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
        let mut wanted: Vec<(Option<String>, u128)> = req
            .topic_names
            .iter()
            .map(|n| (Some(n.0.as_str().to_string()), 0))
            .collect();
        wanted.extend(req.topics.iter().map(|t| {
            (
                t.name.as_ref().map(|n| n.0.as_str().to_string()),
                t.topic_id.as_u128(),
            )
        }));
        let mut results = Vec::new();
        let mut deletes = Vec::new();
        for (name, id) in wanted {
            let mut r = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(str_bytes(&n))))
                .with_topic_id(to_uuid(id));
            let resolved = match (&name, id) {
                (Some(n), _) => self
                    .meta
                    .topics
                    .get(n)
                    .map(|t| (n.clone(), t.id))
                    .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
                (None, id) => self
                    .topic_by_id(id)
                    .map(|n| (n.to_string(), id))
                    .ok_or(code::UNKNOWN_TOPIC_ID),
            };
            match resolved {
                Ok((n, tid)) if !deletes.contains(&n) => {
                    r.name = Some(TopicName(str_bytes(&n)));
                    r.topic_id = to_uuid(tid);
                    deletes.push(n);
                }
                Ok(_) => r.error_code = code::INVALID_REQUEST,
                Err(error) => {
                    r.error_code = error;
                    r.error_message = Some(str_bytes("This server does not host this topic-partition."));
                }
            }
            results.push(r);
        }
        let response = ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(results));
        let op = self.admin_wait_or_respond(ctx, response, deletes.len());
        for name in deletes {
            tracing::info!(topic = %name, "deleting topic");
            self.delete_topic(&name, op.unwrap_or(0));
        }
    }

    pub(crate) fn handle_create_partitions(&mut self, ctx: Ctx, req: CreatePartitionsRequest) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in &req.topics {
            *counts.entry(t.name.0.as_str().to_string()).or_default() += 1;
        }
        let me = self.config.node_id;
        let mut results = Vec::new();
        let mut grows = Vec::new();
        for t in &req.topics {
            let name = t.name.0.as_str().to_string();
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let current = self.meta.topics.get(&name).map(|m| m.partitions);
            let checked: Result<(), TopicError> = match current {
                _ if counts[&name] > 1 => Err((
                    code::INVALID_REQUEST,
                    format!("Duplicate topic '{name}' in the request"),
                )),
                None => Err((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("The topic '{name}' does not exist."),
                )),
                Some(n) if t.count < n => Err((
                    code::INVALID_PARTITIONS,
                    format!(
                        "Topic currently has {n} partitions, which is higher than the requested {}.",
                        t.count
                    ),
                )),
                Some(n) if t.count == n => Err((
                    code::INVALID_PARTITIONS,
                    format!("Topic already has {n} partitions."),
                )),
                Some(n) => match &t.assignments {
                    Some(a) if a.len() as i32 != t.count - n => Err((
                        code::INVALID_REPLICA_ASSIGNMENT,
                        format!(
                            "Increasing the number of partitions by {} but {} assignments provided.",
                            t.count - n,
                            a.len()
                        ),
                    )),
                    Some(a)
                        if a.iter()
                            .any(|x| x.broker_ids.len() != 1 || x.broker_ids[0].0 != me) =>
                    {
                        Err((
                            code::INVALID_REPLICA_ASSIGNMENT,
                            format!("assignments must name broker {me} once per partition"),
                        ))
                    }
                    _ => Ok(()),
                },
            };
            match checked {
                Ok(()) => {
                    if !req.validate_only {
                        let n = current.unwrap_or(0);
                        grows.push((name, t.count, (t.count - n) as usize));
                    }
                }
                Err((error, message)) => {
                    r.error_code = error;
                    r.error_message = Some(str_bytes(&message));
                }
            }
            results.push(r);
        }
        let outstanding = grows.iter().map(|g| 1 + g.2).sum();
        let response =
            ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results));
        let op = self.admin_wait_or_respond(ctx, response, outstanding);
        for (name, total, _) in grows {
            tracing::info!(topic = %name, partitions = total, "adding partitions");
            self.add_partitions(&name, total, op.unwrap_or(0));
        }
    }
}
