//! CreateTopics, DeleteTopics and CreatePartitions, served by the controller (the
//! metadata log's leader; other brokers answer NOT_CONTROLLER). Requests are validated
//! against the image, replicas placed with [`crate::cluster::assign`], and the records
//! appended to `__cluster_metadata`; the answer goes out once the image has applied them
//! and the new partitions placed on this node are live, with Kafka's error codes for
//! every invalid input.

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
use rand::Rng;

use super::{code, str_bytes, to_uuid, Ctx, PendingBody};
use crate::cluster::assign::{assign, AssignError};
use crate::cluster::{MetaRecord, NodeId};
use crate::config::validate_topic_config;
use crate::engine::Engine;
use crate::meta::validate_topic_name;
use crate::replica::{Control, METADATA_TOPIC};

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
    /// Parks an admin request until the controller reports its records applied.
    fn admin_park(&mut self, ctx: Ctx, response: ResponseKind) -> u64 {
        self.park(
            ctx,
            PendingBody::Admin(PendingAdmin {
                response,
                outstanding: 1,
            }),
        )
    }

    /// The records of admin op `op` are applied: answer it.
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

    /// Admin op `op` cannot complete here: every topic it changed gets `error`.
    pub(crate) fn admin_fail(&mut self, op: u64, error: i16) {
        let Some(PendingBody::Admin(a)) = self.kafka.requests.get_mut(&op).map(|p| &mut p.body) else {
            return;
        };
        let mut response = std::mem::replace(
            &mut a.response,
            ResponseKind::CreateTopics(CreateTopicsResponse::default()),
        );
        let message = Some(str_bytes("this broker stopped being the controller; retry"));
        match &mut response {
            ResponseKind::CreateTopics(r) => {
                // TOPIC_ALREADY_EXISTS for a creation that was in flight and is now lost.
                let image = &self.image;
                let failed = |t: &CreatableTopicResult| {
                    t.error_code == code::NONE
                        || t.error_code == code::TOPIC_ALREADY_EXISTS
                            && !image.topics.contains_key(t.name.0.as_str())
                };
                for t in r.topics.iter_mut().filter(|t| failed(t)) {
                    t.error_code = error;
                    t.error_message = message.clone();
                }
            }
            ResponseKind::DeleteTopics(r) => {
                for t in r.responses.iter_mut().filter(|t| t.error_code == code::NONE) {
                    t.error_code = error;
                    t.error_message = message.clone();
                }
            }
            ResponseKind::CreatePartitions(r) => {
                for t in r.results.iter_mut().filter(|t| t.error_code == code::NONE) {
                    t.error_code = error;
                    t.error_message = message.clone();
                }
            }
            _ => {}
        }
        self.finish(op, Some(response));
    }

    fn not_controller() -> TopicError {
        (
            code::NOT_CONTROLLER,
            "this broker is not the controller".to_string(),
        )
    }

    /// Brokers new replicas may be placed on: every registered one.
    fn brokers(&self) -> Vec<NodeId> {
        self.image.brokers.keys().copied().collect()
    }

    /// Whether a topic of this name exists or is being created.
    fn topic_taken(&self, name: &str) -> bool {
        self.image.topics.contains_key(name)
            || self
                .controller
                .proposed
                .iter()
                .any(|r| matches!(r, MetaRecord::CreateTopic { name: n, .. } if n == name))
    }

    fn placement(&mut self, first: i32, count: i32, rf: i32) -> Result<Vec<Vec<NodeId>>, TopicError> {
        let brokers = self.brokers();
        let start = if brokers.is_empty() {
            0
        } else {
            self.rng.gen_range(0..brokers.len())
        };
        assign(&brokers, first, count, rf, start).map_err(|e| match e {
            AssignError::TooFewBrokers { rf, brokers } => (
                code::INVALID_REPLICATION_FACTOR,
                format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {brokers} broker(s) are registered."),
            ),
            AssignError::BadFactor(rf) => (
                code::INVALID_REPLICATION_FACTOR,
                format!("Replication factor must be larger than 0 (was {rf})."),
            ),
        })
    }

    /// Checks explicit replica assignments: each names distinct registered brokers, all
    /// the same number of them.
    fn check_assignments(&self, lists: &[Vec<NodeId>]) -> Result<(), TopicError> {
        let bad = |m: String| Err((code::INVALID_REPLICA_ASSIGNMENT, m));
        let rf = lists.first().map_or(0, Vec::len);
        for (i, l) in lists.iter().enumerate() {
            if l.is_empty() {
                return bad(format!("partition {i} has no replicas"));
            }
            if l.len() != rf {
                return bad("All partitions should have the same number of replicas".into());
            }
            let mut seen = BTreeSet::new();
            for b in l {
                if !seen.insert(*b) {
                    return bad(format!("broker {b} is listed twice for one partition"));
                }
                if !self.image.brokers.contains_key(b) {
                    return bad(format!("broker {b} is not registered"));
                }
            }
        }
        Ok(())
    }

    /// Checks one CreatableTopic: (partitions, replication factor, configs, replicas).
    #[allow(clippy::type_complexity)]
    fn check_new_topic(
        &mut self,
        t: &CreatableTopic,
    ) -> Result<(i32, i16, BTreeMap<String, String>, Vec<Vec<NodeId>>), TopicError> {
        let name = t.name.0.as_str();
        validate_topic_name(name).map_err(|m| (code::INVALID_TOPIC_EXCEPTION, m))?;
        if name == METADATA_TOPIC {
            return Err((
                code::INVALID_TOPIC_EXCEPTION,
                format!("'{name}' is reserved for the cluster's metadata log"),
            ));
        }
        if self.topic_taken(name) {
            return Err((
                code::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
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
        if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err((
                    code::INVALID_REQUEST,
                    "both numPartitions or replicationFactor and replicasAssignments were set".into(),
                ));
            }
            let mut by_index = BTreeMap::new();
            for a in &t.assignments {
                let list: Vec<NodeId> = a.broker_ids.iter().map(|b| b.0).collect();
                if by_index.insert(a.partition_index, list).is_some() {
                    return Err((
                        code::INVALID_REPLICA_ASSIGNMENT,
                        format!("partition {} is assigned twice", a.partition_index),
                    ));
                }
            }
            let n = by_index.len() as i32;
            check_partition_count(n)?;
            if by_index.keys().copied().ne(0..n) {
                return Err((
                    code::INVALID_REPLICA_ASSIGNMENT,
                    "partitions must be numbered from 0 without gaps".into(),
                ));
            }
            let lists: Vec<Vec<NodeId>> = by_index.into_values().collect();
            self.check_assignments(&lists)?;
            let rf = lists[0].len() as i16;
            return Ok((n, rf, configs, lists));
        }
        let partitions = match t.num_partitions {
            -1 => self.config.num_partitions,
            n if n >= 1 => check_partition_count(n)?,
            n => {
                return Err((
                    code::INVALID_PARTITIONS,
                    format!("Number of partitions was set to an invalid non-positive value ({n})."),
                ))
            }
        };
        let rf = match t.replication_factor {
            -1 => self.config.default_replication_factor,
            n => n,
        };
        let replicas = self.placement(0, partitions, i32::from(rf))?;
        Ok((partitions, rf, configs, replicas))
    }

    /// The partitions of `replicas` (numbered from `first`) placed on this node.
    fn local_partitions(&self, topic: &str, first: i32, replicas: &[Vec<NodeId>]) -> Vec<(String, i32)> {
        let me = self.config.node_id;
        replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.contains(&me))
            .map(|(i, _)| (topic.to_string(), first + i as i32))
            .collect()
    }

    /// Appends `records` and parks the request until they are applied; answers at once
    /// when there is nothing to append.
    fn admin_commit(
        &mut self,
        ctx: Ctx,
        response: ResponseKind,
        records: Vec<MetaRecord>,
        local: Vec<(String, i32)>,
    ) {
        self.admin_commit_after(ctx, response, records, local, 0);
    }

    /// [`Self::admin_commit`], answered no earlier than when the image has applied `after`
    /// (records proposed before this request that its answer depends on).
    fn admin_commit_after(
        &mut self,
        ctx: Ctx,
        response: ResponseKind,
        records: Vec<MetaRecord>,
        local: Vec<(String, i32)>,
        after: u64,
    ) {
        if records.is_empty() && after <= self.image.applied_end {
            self.respond(&ctx, response);
            return;
        }
        let until = if records.is_empty() {
            Some(after)
        } else {
            self.propose(records).map(|u| u.max(after))
        };
        let op = self.admin_park(ctx, response);
        match until {
            Some(until) => self.controller_wait(op, until, local),
            None => self.admin_fail(op, code::NOT_CONTROLLER),
        }
    }

    pub(crate) fn handle_create_topics(&mut self, ctx: Ctx, req: CreateTopicsRequest) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in &req.topics {
            *counts.entry(t.name.0.as_str().to_string()).or_default() += 1;
        }
        let controller = self.is_controller();
        let mut results = Vec::new();
        let mut records = Vec::new();
        let mut local = Vec::new();
        let mut wait_for = 0;
        for t in &req.topics {
            let name = t.name.0.as_str().to_string();
            let mut r = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let checked = if !controller {
                Err(Self::not_controller())
            } else if counts[&name] > 1 {
                Err((
                    code::INVALID_REQUEST,
                    format!("Create topics request from client contains a duplicate topic '{name}'"),
                ))
            } else {
                self.check_new_topic(t)
            };
            match checked {
                Ok((partitions, rf, configs, replicas)) => {
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
                        let id = self.new_topic_id();
                        r.topic_id = to_uuid(id);
                        local.extend(self.local_partitions(&name, 0, &replicas));
                        tracing::info!(topic = %name, partitions, rf, "creating topic");
                        records.push(MetaRecord::CreateTopic {
                            name,
                            id,
                            configs,
                            replicas,
                        });
                    }
                }
                Err((error, message)) => {
                    if error == code::TOPIC_ALREADY_EXISTS {
                        wait_for = wait_for.max(self.creation_in_flight_end(&name));
                    }
                    r.error_code = error;
                    r.error_message = Some(str_bytes(&message));
                }
            }
            results.push(r);
        }
        let response = ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results));
        self.admin_commit_after(ctx, response, records, local, wait_for);
    }

    /// The end of the batch creating `name`, if that creation is proposed and not applied
    /// yet (0 otherwise). TOPIC_ALREADY_EXISTS for it is answered only once it is applied: if
    /// it is lost instead (the controller's log rewound or its leadership moved), the
    /// request gets NOT_CONTROLLER and the client retries, rather than believing in a topic
    /// that will never exist (five-node simulator seed 1213).
    fn creation_in_flight_end(&self, name: &str) -> u64 {
        if self.image.topics.contains_key(name) {
            return 0;
        }
        self.controller
            .proposed
            .iter()
            .filter(|r| matches!(r, MetaRecord::CreateTopic { name: n, .. } if n == name))
            .filter_map(|r| self.controller.proposed.last_of(r))
            .map(|last| last + 1)
            .max()
            .unwrap_or(0)
    }

    /// A topic id no topic has had (0 is the metadata log's group).
    fn new_topic_id(&mut self) -> u128 {
        loop {
            let id = self.random_u128();
            if id != 0 && !self.image.names.contains_key(&id) {
                return id;
            }
        }
    }

    /// Creates `name` with the broker defaults, for a Metadata request that named it:
    /// on the controller directly, elsewhere by asking the controller. Nobody waits.
    pub(crate) fn auto_create_topic(&mut self, name: &str) {
        if validate_topic_name(name).is_err() || name == METADATA_TOPIC || self.topic_taken(name) {
            return;
        }
        if !self.is_controller() {
            let me = self.config.node_id;
            if let Some(leader) = self.metadata_leader().filter(|&l| l != me) {
                self.outbox
                    .entry(leader)
                    .or_default()
                    .control
                    .push(Control::AutoCreate {
                        topic: name.to_string(),
                    });
            }
            return;
        }
        let (partitions, rf, configs) = if name == super::groups::OFFSETS_TOPIC {
            // Internal: its own partition count and replication factor (capped at the
            // brokers there are, so that one node needs no configuration), compacted.
            let brokers = i32::try_from(self.brokers().len()).unwrap_or(i32::MAX).max(1);
            let partitions = i32::try_from(self.config.group.offsets_topic_partitions).unwrap_or(i32::MAX);
            let rf = i32::from(self.config.offsets_topic_replication_factor).min(brokers);
            let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
            (partitions, rf, configs)
        } else {
            let rf = i32::from(self.config.default_replication_factor);
            (self.config.num_partitions, rf, BTreeMap::new())
        };
        match self.placement(0, partitions, rf) {
            Ok(replicas) => {
                tracing::info!(topic = name, partitions, rf, "auto-creating topic");
                let id = self.new_topic_id();
                self.propose(vec![MetaRecord::CreateTopic {
                    name: name.to_string(),
                    id,
                    configs,
                    replicas,
                }]);
            }
            Err((_, why)) => tracing::warn!(topic = name, %why, "cannot auto-create topic"),
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
        let controller = self.is_controller();
        let mut results = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        let mut records = Vec::new();
        for (name, id) in wanted {
            let mut r = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(str_bytes(&n))))
                .with_topic_id(to_uuid(id));
            let resolved = match (&name, id) {
                _ if !controller => Err(code::NOT_CONTROLLER),
                (Some(n), _) => self
                    .image
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
                    tracing::info!(topic = %n, "deleting topic");
                    deletes.push(n);
                    records.push(MetaRecord::DeleteTopic { topic_id: tid });
                }
                Ok(_) => r.error_code = code::INVALID_REQUEST,
                Err(error) => {
                    r.error_code = error;
                    r.error_message = Some(str_bytes(if error == code::NOT_CONTROLLER {
                        "this broker is not the controller"
                    } else {
                        "This server does not host this topic-partition."
                    }));
                }
            }
            results.push(r);
        }
        let response = ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(results));
        self.admin_commit(ctx, response, records, Vec::new());
    }

    pub(crate) fn handle_create_partitions(&mut self, ctx: Ctx, req: CreatePartitionsRequest) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in &req.topics {
            *counts.entry(t.name.0.as_str().to_string()).or_default() += 1;
        }
        let controller = self.is_controller();
        let mut results = Vec::new();
        let mut records = Vec::new();
        let mut local = Vec::new();
        for t in &req.topics {
            let name = t.name.0.as_str().to_string();
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let current = self.image.topics.get(&name).map(|m| {
                (
                    m.id,
                    m.partitions.len() as i32,
                    m.partitions[0].replicas.len() as i32,
                )
            });
            let checked: Result<(u128, i32, Vec<Vec<NodeId>>), TopicError> = match current {
                _ if !controller => Err(Self::not_controller()),
                _ if counts[&name] > 1 => Err((
                    code::INVALID_REQUEST,
                    format!("Duplicate topic '{name}' in the request"),
                )),
                None => Err((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("The topic '{name}' does not exist."),
                )),
                Some((_, n, _)) if t.count < n => Err((
                    code::INVALID_PARTITIONS,
                    format!(
                        "Topic currently has {n} partitions, which is higher than the requested {}.",
                        t.count
                    ),
                )),
                Some((_, n, _)) if t.count == n => Err((
                    code::INVALID_PARTITIONS,
                    format!("Topic already has {n} partitions."),
                )),
                Some((id, n, rf)) => match &t.assignments {
                    _ if let Err(e) = check_partition_count(t.count - n) => Err(e),
                    Some(a) if a.len() as i32 != t.count - n => Err((
                        code::INVALID_REPLICA_ASSIGNMENT,
                        format!(
                            "Increasing the number of partitions by {} but {} assignments provided.",
                            t.count - n,
                            a.len()
                        ),
                    )),
                    Some(a) => {
                        let lists: Vec<Vec<NodeId>> = a
                            .iter()
                            .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                            .collect();
                        self.check_assignments(&lists).map(|()| (id, n, lists))
                    }
                    None => self.placement(n, t.count - n, rf).map(|l| (id, n, l)),
                },
            };
            match checked {
                Ok((topic_id, first, replicas)) => {
                    if !req.validate_only {
                        tracing::info!(topic = %name, partitions = t.count, "adding partitions");
                        local.extend(self.local_partitions(&name, first, &replicas));
                        records.push(MetaRecord::AddPartitions {
                            topic_id,
                            first,
                            replicas,
                        });
                    }
                }
                Err((error, message)) => {
                    r.error_code = error;
                    r.error_message = Some(str_bytes(&message));
                }
            }
            results.push(r);
        }
        let response =
            ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results));
        self.admin_commit(ctx, response, records, local);
    }
}
