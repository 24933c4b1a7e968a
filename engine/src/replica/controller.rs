//! The controller: the leader of the metadata log, once it has applied everything
//! committed before its term. It alone appends metadata records: the cluster id and its own
//! registration when the image lacks them, brokers' registrations and partition leaders'
//! publications that reach it as [`Control`] messages, and the records of CreateTopics,
//! DeleteTopics and CreatePartitions, which it answers once the records are applied.
//!
//! Every broker sends, until its image shows the effect: `Register` (where clients reach
//! it) and `Leading` (for each partition group it leads, with the term). Both are resent
//! every heartbeat interval, so a lost message or a controller change only delays them.
//!
//! Invariants: a record is appended only by a controller (leader, no-op committed, image
//! caught up); the same record is not appended twice while the first copy is in flight;
//! an admin request waits for the records it caused and is answered NOT_CONTROLLER if
//! this node stops being the controller before they are applied.

use std::collections::BTreeMap;

use super::{Control, GroupId};
use crate::cluster::image::BrokerInfo;
use crate::cluster::{MetaRecord, NodeId};
use crate::engine::Engine;
use crate::raft::Role;

/// An admin request waiting for its records.
#[derive(Debug)]
pub(crate) struct AdminWait {
    /// The image must have applied up to here (one past the records' batch).
    pub until: u64,
    /// Partitions placed on this node that must be live before the answer.
    pub partitions: Vec<(String, i32)>,
    /// The metadata term the records were appended in.
    pub term: i32,
}

#[derive(Debug, Default)]
pub(crate) struct Controller {
    /// Records appended and not applied yet, with the last offset of their batch.
    pub proposed: Proposals,
    /// Admin requests (Kafka-layer request ids) waiting for their records.
    pub waits: BTreeMap<u64, AdminWait>,
    /// Partition groups this node leads, with the term, until the image shows it.
    pub leading: BTreeMap<GroupId, i32>,
}

/// Records in flight, indexed both ways: by record (a proposal is looked up once per
/// record proposed, and a start-up proposes thousands of leader publications at once) and
/// by the last offset of their batch (to forget what the image has applied).
///
/// Proposals belong to the metadata term they were appended in. In another term they are
/// forgotten: the log that held them may have been rewound (a failed write) or cut by
/// another leader, and a proposal believed in flight that no longer is would never be
/// made again (seed 16231 of the three-node simulator: a ClusterId lost to a full disk
/// left the cluster without an id for good). Re-proposing one that did survive only
/// appends a record the image ignores.
#[derive(Debug, Default)]
pub(crate) struct Proposals {
    term: i32,
    by_record: BTreeMap<MetaRecord, u64>,
    by_last: BTreeMap<u64, Vec<MetaRecord>>,
}

impl Proposals {
    /// Forgets every proposal made in another term than `term`.
    pub fn keep_term(&mut self, term: i32) {
        if term != self.term {
            self.term = term;
            self.by_record.clear();
            self.by_last.clear();
        }
    }

    /// The last offset of the batch `r` was appended in, if it is in flight.
    pub fn last_of(&self, r: &MetaRecord) -> Option<u64> {
        self.by_record.get(r).copied()
    }

    pub fn insert(&mut self, last: u64, records: Vec<MetaRecord>) {
        for r in &records {
            self.by_record.insert(r.clone(), last);
        }
        self.by_last.entry(last).or_default().extend(records);
    }

    /// Forgets the records of batches that end below `applied`.
    pub fn forget_below(&mut self, applied: u64) {
        let kept = self.by_last.split_off(&applied);
        for r in std::mem::replace(&mut self.by_last, kept).into_values().flatten() {
            // A record proposed again in a later batch stays under that batch's offset.
            if self.by_record.get(&r).is_some_and(|&last| last < applied) {
                self.by_record.remove(&r);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &MetaRecord> {
        self.by_record.keys()
    }
}

impl Engine {
    /// The metadata log's leader as this node knows it.
    pub(crate) fn metadata_leader(&self) -> Option<NodeId> {
        self.replicas.get(&GroupId::METADATA)?.raft.leader()
    }

    /// Whether this node may append metadata records now.
    pub(crate) fn is_controller(&self) -> bool {
        let Some(r) = self.replicas.get(&GroupId::METADATA) else {
            return false;
        };
        let Some(log) = self.meta_log.and_then(|id| self.logs.get(&id)) else {
            return false;
        };
        r.raft.role() == Role::Leader
            && log.is_leader
            && log.is_serving()
            && self.meta_gate.is_none()
            && self.image.applied_end >= log.commit_end.unwrap_or(0)
    }

    pub(crate) fn metadata_term(&self) -> i32 {
        self.replicas
            .get(&GroupId::METADATA)
            .map_or(-1, |r| r.raft.term())
    }

    /// Appends `records` (those not already in flight) as one batch. The image must apply
    /// up to the returned end for all of them to be in effect; `None` if this node cannot
    /// append (not the controller, or the log refused).
    pub(crate) fn propose(&mut self, records: Vec<MetaRecord>) -> Option<u64> {
        if !self.is_controller() {
            return None;
        }
        let term = self.metadata_term();
        self.controller.proposed.keep_term(term);
        let mut until = self.image.applied_end;
        let mut fresh = Vec::new();
        for r in records {
            match self.controller.proposed.last_of(&r) {
                Some(last) => until = until.max(last + 1),
                None => fresh.push(r),
            }
        }
        if fresh.is_empty() {
            return Some(until);
        }
        let log_id = self.meta_log?;
        let wall = self.now.wall_ms;
        let batch = MetaRecord::to_batch(&fresh, wall);
        let log = self.logs.get_mut(&log_id)?;
        match log.append_own(&mut self.q, &batch, wall) {
            Ok((_, last)) => {
                tracing::debug!(?fresh, last, "metadata records appended");
                self.controller.proposed.insert(last, fresh);
                self.replica_log_changed(log_id);
                Some(until.max(last + 1))
            }
            Err(err) => {
                tracing::warn!(?err, "the metadata log refused an append");
                None
            }
        }
    }

    /// Parks admin request `op` until the image has applied `until` and `partitions` are live.
    pub(crate) fn controller_wait(&mut self, op: u64, until: u64, partitions: Vec<(String, i32)>) {
        let term = self.metadata_term();
        self.controller.waits.insert(
            op,
            AdminWait {
                until,
                partitions,
                term,
            },
        );
        self.controller_progress();
    }

    /// After the image, the partitions or the metadata leadership changed: forget applied
    /// proposals, bootstrap an empty image, answer the admin requests that can be answered.
    pub(crate) fn controller_progress(&mut self) {
        self.producer_ids_progress();
        let applied = self.image.applied_end;
        let term = self.metadata_term();
        self.controller.proposed.keep_term(term);
        self.controller.proposed.forget_below(applied);
        if self.is_controller() {
            let mut boot = Vec::new();
            let id_pending = self
                .controller
                .proposed
                .iter()
                .any(|r| matches!(r, MetaRecord::ClusterId { .. }));
            if self.image.cluster_id.is_none() && !id_pending {
                let id = crate::kafka::uuid_string(self.random_u128());
                boot.push(MetaRecord::ClusterId { id });
            }
            if let Some(r) = self.registration_if_stale() {
                boot.push(r);
            }
            if !boot.is_empty() {
                self.propose(boot);
            }
        }
        let term = self.metadata_term();
        // Still the leader of the term the waits were made in (its image may lag a moment).
        let controller = self
            .replicas
            .get(&GroupId::METADATA)
            .is_some_and(|r| r.raft.role() == Role::Leader);
        let mut done = Vec::new();
        let mut lost = Vec::new();
        for (&op, w) in &self.controller.waits {
            if self.image.applied_end >= w.until {
                let live = w.partitions.iter().all(|(t, p)| {
                    self.partitions.contains_key(&(t.clone(), *p)) || self.image.partition(t, *p).is_none()
                });
                if live {
                    done.push(op);
                }
            } else if !controller || term != w.term {
                lost.push(op);
            }
        }
        for op in done {
            self.controller.waits.remove(&op);
            self.admin_progress(op);
        }
        for op in lost {
            self.controller.waits.remove(&op);
            self.admin_fail(op, crate::kafka::code::NOT_CONTROLLER);
        }
    }

    /// This node's registration, if the image lacks it or has it wrong.
    fn registration_if_stale(&self) -> Option<MetaRecord> {
        let me = self.config.node_id;
        let info = BrokerInfo {
            host: self.config.advertised_host.clone(),
            port: self.config.advertised_port,
            rack: None,
        };
        (self.image.brokers.get(&me) != Some(&info)).then_some(MetaRecord::RegisterBroker {
            node: me,
            host: info.host,
            port: info.port,
            rack: None,
        })
    }

    /// A partition group elected this node in `term`: publish it.
    pub(crate) fn note_leading(&mut self, group: GroupId, term: i32) {
        if group != GroupId::METADATA {
            self.controller.leading.insert(group, term);
            // This group alone: a start-up elects thousands, one after another.
            self.announce_groups(vec![(group, term)]);
        }
    }

    /// Sends (or, on the controller, appends) what the image does not show yet: this
    /// node's registration and the partitions it leads. Called every heartbeat interval.
    pub(crate) fn announce(&mut self) {
        let leading: Vec<(GroupId, i32)> = self.controller.leading.iter().map(|(g, t)| (*g, *t)).collect();
        self.announce_groups(leading);
        self.send_producer_ids_ask();
    }

    /// [`Self::announce`] for `leading` (entries of `controller.leading`) only.
    fn announce_groups(&mut self, leading: Vec<(GroupId, i32)>) {
        let me = self.config.node_id;
        let mut records = Vec::new();
        let mut controls = Vec::new();
        for (group, term) in leading {
            let still = self
                .replicas
                .get(&group)
                .is_some_and(|r| r.raft.role() == Role::Leader && r.raft.term() == term);
            if !still {
                self.controller.leading.remove(&group);
                continue;
            }
            let shown_epoch = self
                .topic_by_id(group.topic_id)
                .and_then(|name| self.image.partition(name, group.partition))
                .map(|p| p.leader_epoch);
            match shown_epoch {
                None => continue, // the topic is not in this node's image yet
                Some(e) if e >= term => {
                    // Shown (or superseded by a later term).
                    self.controller.leading.remove(&group);
                    continue;
                }
                Some(_) => {}
            }
            records.push(MetaRecord::LeaderChange {
                topic_id: group.topic_id,
                partition: group.partition,
                leader: me,
                epoch: term,
            });
            controls.push(Control::Leading {
                topic_id: format!("{:032x}", group.topic_id),
                partition: group.partition,
                epoch: term,
            });
        }
        let registration = self.registration_if_stale();
        if self.is_controller() {
            records.extend(registration);
            if !records.is_empty() {
                self.propose(records);
            }
            return;
        }
        let Some(leader) = self.metadata_leader().filter(|&l| l != me) else {
            return;
        };
        if registration.is_some() {
            controls.push(Control::Register {
                host: self.config.advertised_host.clone(),
                port: self.config.advertised_port,
                rack: None,
            });
        }
        if !controls.is_empty() {
            self.outbox.entry(leader).or_default().control.extend(controls);
        }
    }

    /// A broker's control message, on the controller.
    pub(crate) fn on_control(&mut self, from: NodeId, control: Control) {
        if !self.is_controller() {
            return; // the sender retries with whoever it learns is the leader
        }
        match control {
            Control::Register { host, port, rack } => {
                let info = BrokerInfo { host, port, rack };
                if self.image.brokers.get(&from) != Some(&info) {
                    self.propose(vec![MetaRecord::RegisterBroker {
                        node: from,
                        host: info.host,
                        port: info.port,
                        rack: info.rack,
                    }]);
                }
            }
            Control::Leading {
                topic_id,
                partition,
                epoch,
            } => {
                let Ok(topic_id) = u128::from_str_radix(&topic_id, 16) else {
                    tracing::warn!(from, %topic_id, "a Leading message with a malformed topic id");
                    return;
                };
                let newer = self
                    .topic_by_id(topic_id)
                    .and_then(|name| self.image.partition(name, partition))
                    .is_some_and(|p| p.replicas.contains(&from) && epoch > p.leader_epoch);
                if newer {
                    self.propose(vec![MetaRecord::LeaderChange {
                        topic_id,
                        partition,
                        leader: from,
                        epoch,
                    }]);
                }
            }
            Control::AutoCreate { topic } => self.auto_create_topic(&topic),
            Control::AllocateProducerIds { after } => self.grant_producer_ids(from, after),
        }
    }
}
