//! The metadata log on every node: `__cluster_metadata-0` is recovered like a partition and
//! driven by the Raft group [`GroupId::METADATA`] over the quorum's voters; its committed
//! records are applied to the [`ClusterImage`] in offset order; and the partitions on this
//! node follow the image (the replicas it places here are recovered and started, the ones
//! it no longer places here are stopped and their directories deleted).
//!
//! Invariants:
//! - a record is applied only once it is committed *and* durable on this node, so after a
//!   crash the local log holds everything the image had applied;
//! - until the image has applied the metadata log found at startup (`meta_gate`), no
//!   partition directory is created, started or deleted: an image behind the disk could
//!   take a live partition for a deleted one (a topic deleted and re-created under the
//!   same name);
//! - a live partition log always belongs to the topic id the image names for it; a
//!   partition directory is deleted only when it is live or recovering for a topic id the
//!   image no longer places here, or when it is a leftover found after the gate.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{GroupId, METADATA_TOPIC};
use crate::batch::BatchView;
use crate::cluster::{ImageChange, MetaRecord, NodeId};
use crate::config::LogConfig;
use crate::engine::{Engine, MetaWriteThen, ReadFor, RecoveryFor};
use crate::log::partition::{LogId, PartitionLog};
use crate::log::read::{ReadGoal, ReadJob, ReadOutcome};
use crate::log::recovery::Recovered;
use crate::meta;
use crate::Output;

/// Most bytes of metadata records read from disk at once.
const META_READ_BYTES: usize = 1024 * 1024;

/// The image snapshot: the [`crate::cluster::ClusterImage`] as of its `applied_end`,
/// written every `metadata_snapshot_records` applied offsets so that a restart replays
/// only the records after it. It is derived data: the log still holds every record (the
/// log's front is never cut yet), so a damaged snapshot is ignored and the log replayed.
pub(crate) fn snapshot_file() -> String {
    format!("{}/image.snapshot", meta::partition_dir(METADATA_TOPIC, 0))
}

/// The partitions the image places on a node: (topic, partition) → (topic id, replicas).
pub(crate) type Placement = BTreeMap<(String, i32), (u128, Vec<NodeId>)>;

impl Engine {
    /// `__cluster_metadata-0` is recovered: start its replica and apply what is committed.
    pub(crate) fn metadata_recovered(&mut self, id: LogId, mut recovered: Recovered) {
        let dir = meta::partition_dir(METADATA_TOPIC, 0);
        let config = LogConfig::resolve(&self.config, &BTreeMap::new());
        let raft_state = recovered.raft_state.take();
        let log = PartitionLog::new(id, dir, config, recovered, self.tail_cache_bytes);
        self.meta_gate = Some(log.log_end_offset());
        tracing::info!(
            end = log.log_end_offset(),
            voters = ?self.config.voter_ids(),
            "metadata log recovered"
        );
        self.logs.insert(id, log);
        self.meta_log = Some(id);
        let voters = self.config.voter_ids();
        if let Err(e) = self.start_replica(GroupId::METADATA, id, voters, raft_state) {
            self.fail(e);
            return;
        }
        self.meta_apply();
    }

    /// Applies committed, durable metadata records the image has not seen: from the tail
    /// cache when it holds them, else through a disk read (one at a time).
    pub(crate) fn meta_apply(&mut self) {
        loop {
            let Some(log_id) = self.meta_log else { return };
            if self.meta_reading {
                return;
            }
            let Some(log) = self.logs.get(&log_id) else { return };
            let limit = log.commit_end.unwrap_or(0).min(log.durable_end());
            let from = self.image.applied_end.max(log.log_start_offset);
            if from >= limit {
                self.meta_caught_up();
                return;
            }
            if let Some((batches, _)) = log.tail.read(from, limit, META_READ_BYTES) {
                if !batches.is_empty() {
                    let bytes: Vec<Bytes> = batches.into_iter().map(|b| b.into_contiguous()).collect();
                    if !self.apply_meta_batches(bytes, limit) {
                        return;
                    }
                    continue;
                }
            }
            self.meta_reading = true;
            let goal = ReadGoal::Fetch {
                offset: from,
                max_bytes: META_READ_BYTES,
            };
            let off_by_one = self.config.planted.index_off_by_one();
            self.start_read_for(
                log_id,
                |log| ReadJob::start(log, goal, limit, off_by_one),
                ReadFor::Metadata,
            );
            return;
        }
    }

    pub(crate) fn metadata_read_done(&mut self, outcome: ReadOutcome) {
        self.meta_reading = false;
        let Some(limit) = self
            .meta_log
            .and_then(|id| self.logs.get(&id))
            .map(|log| log.commit_end.unwrap_or(0).min(log.durable_end()))
        else {
            return;
        };
        match outcome {
            ReadOutcome::Batches { batches, .. } => {
                if !batches.is_empty() && self.apply_meta_batches(batches, limit) {
                    self.meta_apply();
                }
            }
            // Retried at the next tick.
            ReadOutcome::Failed(why) => tracing::warn!(%why, "reading the metadata log failed"),
            ReadOutcome::Found(_) => {}
        }
    }

    /// Applies the records of `batches` below `limit`. False when the node failed.
    fn apply_meta_batches(&mut self, batches: Vec<Bytes>, limit: u64) -> bool {
        let mut changes = Vec::new();
        let mut progressed = false;
        for bytes in batches {
            let view = match BatchView::parse_unchecked_crc(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    self.fail(format!("{METADATA_TOPIC}-0: a stored batch does not parse: {e}"));
                    return false;
                }
            };
            let (base, last) = (view.base_offset().max(0) as u64, view.last_offset().max(0) as u64);
            if last >= limit {
                break;
            }
            if last < self.image.applied_end {
                continue;
            }
            let records = match MetaRecord::from_batch(&view) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(format!("{METADATA_TOPIC}-0 at offset {base}: {e}"));
                    return false;
                }
            };
            for (offset, record) in records {
                if offset >= self.image.applied_end {
                    changes.push(self.image.apply(offset, &record));
                }
            }
            self.image.applied_end = self.image.applied_end.max(last + 1);
            progressed = true;
        }
        for change in changes {
            match change {
                ImageChange::ClusterId => self.learn_cluster_id(),
                ImageChange::Partitions { topic, first } => {
                    self.placement_changed = true;
                    tracing::info!(%topic, first, "metadata: partitions added")
                }
                ImageChange::TopicDeleted { name, .. } => {
                    self.placement_changed = true;
                    tracing::info!(topic = %name, "metadata: topic deleted")
                }
                ImageChange::Broker(node) => tracing::info!(node, "metadata: broker registered"),
                ImageChange::Leader { .. } | ImageChange::ProducerIds(_) | ImageChange::None => {}
            }
        }
        if matches!(
            self.lifecycle,
            crate::engine::Lifecycle::Failed | crate::engine::Lifecycle::Stopped
        ) {
            return false;
        }
        progressed
    }

    pub(crate) fn on_meta_snapshot_read(&mut self, result: crate::io::IoResult) {
        use crate::io::{IoError, IoResult};
        match result {
            IoResult::Read(bytes) => match crate::cluster::ClusterImage::decode_snapshot(&bytes) {
                Ok(image) => {
                    tracing::info!(
                        applied_end = image.applied_end,
                        topics = image.topics.len(),
                        "metadata image loaded from its snapshot"
                    );
                    self.meta_snapshot_end = image.applied_end;
                    self.image = image;
                    self.placement_changed = true;
                    self.learn_cluster_id();
                }
                Err(e) => tracing::warn!(
                    file = %snapshot_file(),
                    error = %e,
                    "ignoring a damaged metadata snapshot; replaying the whole log"
                ),
            },
            IoResult::Err(IoError::NotFound) => {}
            other => tracing::warn!(file = %snapshot_file(), "reading the metadata snapshot: {other:?}"),
        }
    }

    /// Writes a new image snapshot once enough offsets were applied since the last one.
    fn maybe_snapshot(&mut self) {
        let every = self.config.metadata_snapshot_records.max(1);
        if self.meta_snapshot_writing || self.image.applied_end < self.meta_snapshot_end + every {
            return;
        }
        self.meta_snapshot_writing = true;
        let end = self.image.applied_end;
        let op = crate::io::IoOp::WriteState {
            file: snapshot_file(),
            data: self.image.encode_snapshot(),
        };
        self.q.submit(op, crate::engine::IoTag::MetaSnapshotWrite(end));
    }

    pub(crate) fn on_meta_snapshot_written(&mut self, end: u64, result: crate::io::IoResult) {
        self.meta_snapshot_writing = false;
        match result {
            crate::io::IoResult::Err(e) => {
                tracing::warn!(error = %e, "writing the metadata snapshot failed; the log keeps every record")
            }
            _ => {
                tracing::debug!(end, "metadata snapshot written");
                self.meta_snapshot_end = end;
            }
        }
    }

    /// The image named the cluster: record it, or refuse a data dir of another cluster.
    fn learn_cluster_id(&mut self) {
        let Some(id) = self.image.cluster_id.clone() else {
            return;
        };
        match &self.node_meta.cluster_id {
            Some(ours) if *ours != id => self.fail(format!(
                "data directory belongs to cluster {ours} but the metadata quorum's cluster is {id}"
            )),
            Some(_) => {}
            None => {
                tracing::info!(cluster_id = %id, "joined the cluster");
                self.node_meta.cluster_id = Some(id.clone());
                self.write_meta(MetaWriteThen::Nothing);
                self.kafka.responses.push(Output::ClusterId { id });
            }
        }
    }

    /// Everything committed and durable is applied: open the gate once the startup log is
    /// applied, then let the partitions follow the image.
    fn meta_caught_up(&mut self) {
        self.maybe_snapshot();
        if let Some(gate) = self.meta_gate {
            let end = self
                .meta_log
                .and_then(|id| self.logs.get(&id))
                .map_or(0, |l| l.log_end_offset());
            if self.image.applied_end < gate.min(end) {
                return;
            }
            self.meta_gate = None;
            tracing::info!(
                applied_end = self.image.applied_end,
                topics = self.image.topics.len(),
                "metadata image caught up with the log found at startup"
            );
            self.list_root();
        }
        if self.placement_changed {
            self.reconcile_partitions();
        }
        self.controller_progress();
        self.maybe_ready();
    }

    /// The partitions the image places on this node.
    pub(crate) fn wanted_partitions(&self) -> Placement {
        let me = self.config.node_id;
        let mut out = Placement::new();
        for (name, t) in &self.image.topics {
            for (p, info) in t.partitions.iter().enumerate() {
                if info.replicas.contains(&me) {
                    out.insert((name.clone(), p as i32), (t.id, info.replicas.clone()));
                }
            }
        }
        out
    }

    /// [`Self::wanted_partitions`] for one partition.
    pub(crate) fn wanted_partition(&self, topic: &str, partition: i32) -> Option<(u128, Vec<NodeId>)> {
        let t = self.image.topics.get(topic)?;
        let info = t.partitions.get(usize::try_from(partition).ok()?)?;
        info.replicas
            .contains(&self.config.node_id)
            .then(|| (t.id, info.replicas.clone()))
    }

    /// Makes this node's partitions follow the image: stops (and deletes) logs it no
    /// longer places here, recovers the ones it places here that are not live yet.
    pub(crate) fn reconcile_partitions(&mut self) {
        use crate::engine::Lifecycle;
        if self.meta_gate.is_some()
            || self.meta_log.is_none()
            || !matches!(self.lifecycle, Lifecycle::Recovering | Lifecycle::Running)
        {
            return;
        }
        self.placement_changed = false;
        let wanted = self.wanted_partitions();
        let live: Vec<((String, i32), LogId)> =
            self.partitions.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for ((topic, p), log_id) in live {
            let live_id = self.group_of_log.get(&log_id).map(|g| g.topic_id);
            let wanted_id = wanted.get(&(topic.clone(), p)).map(|w| w.0);
            if live_id.is_none() || live_id != wanted_id {
                tracing::info!(%topic, partition = p, "removing a partition the image no longer places here");
                self.remove_partition(&topic, p, log_id);
                self.delete_dir(meta::partition_dir(&topic, p));
            }
        }
        // Once, not per partition: a start-up places thousands of partitions at once.
        let recovering = self.recovering_dirs();
        for ((topic, p), (topic_id, _)) in wanted {
            if self.partitions.contains_key(&(topic.clone(), p)) {
                continue;
            }
            let dir = meta::partition_dir(&topic, p);
            if recovering.contains(&dir) || self.dir_deletes.contains(&dir) {
                continue;
            }
            self.start_recovery_for(RecoveryFor::Partition {
                topic,
                partition: p,
                topic_id,
            });
        }
    }

    /// Forgets a live partition: its replica, its log, the requests waiting on it.
    fn remove_partition(&mut self, topic: &str, partition: i32, log_id: LogId) {
        self.partitions.remove(&(topic.to_string(), partition));
        if let Some(group) = self.group_of_log.get(&log_id).copied() {
            self.controller.leading.remove(&group);
        }
        self.stop_replica(log_id);
        self.logs.remove(&log_id);
        self.kafka_log_removed(log_id);
    }

    /// The error for a partition this node has no live log of: the image knows it (another
    /// broker leads it, or it is still starting here) or not.
    pub(crate) fn missing_partition_code(&self, topic: &str, partition: i32) -> i16 {
        use crate::kafka::code;
        if self.image.partition(topic, partition).is_some() {
            code::NOT_LEADER_OR_FOLLOWER
        } else {
            code::UNKNOWN_TOPIC_OR_PARTITION
        }
    }
}
