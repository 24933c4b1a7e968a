//! The engine's top level: lifecycle (recover, run, stop), IO token bookkeeping, and the
//! routing of completions to partition logs, read jobs, recoveries and the Kafka layer.
//!
//! Invariants: every `IoDone` names a token this engine emitted and has not seen complete
//! (asserted); outputs are produced in a deterministic order (BTreeMap iteration only).

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::ClusterImage;
use crate::config::LogConfig;
use crate::io::{IoError, IoOp, IoResult, Token};
use crate::kafka::KafkaState;
use crate::log::partition::{LogEvent, LogId, PartIo, PartitionLog};
use crate::log::read::{ReadJob, ReadOutcome, ReadStep};
use crate::log::recovery::{Recovery, RecoveryStep};
use crate::meta::{self, NodeMeta};
use crate::raft::{HardState, NodeId};
use crate::replica::controller::Controller;
use crate::replica::{Envelope, GroupId, Replica, METADATA_TOPIC};
use crate::{BrokerConfig, ConnId, Input, Output, Time};

/// What an outstanding IO op is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IoTag {
    Log(LogId, PartIo),
    Read(u64),
    Recovery(LogId),
    MetaRead,
    MetaWrite(u64),
    RootList,
    /// A partition directory being removed (its topic was deleted, or it is a leftover).
    DeleteDir(String),
    /// The metadata image snapshot, read at startup.
    MetaSnapshotRead,
    /// The metadata image snapshot up to the given applied end, being written.
    MetaSnapshotWrite(u64),
    /// A replica's Raft state file, written for the core of the given generation.
    HardState(GroupId, HardState, u64),
}

/// Hands out tokens, remembers what each is for, and collects the ops to emit.
#[derive(Debug, Default)]
pub(crate) struct IoQueue {
    next_token: Token,
    tags: BTreeMap<Token, IoTag>,
    pub(crate) emitted: Vec<Output>,
}

impl IoQueue {
    pub(crate) fn submit(&mut self, op: IoOp, tag: IoTag) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        self.tags.insert(token, tag);
        self.emitted.push(Output::Io { token, op });
        token
    }

    pub(crate) fn complete(&mut self, token: Token) -> IoTag {
        // A completion for a token never emitted or already completed is a driver bug.
        self.tags
            .remove(&token)
            .unwrap_or_else(|| panic!("IoDone for unknown token {token}"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Starting,
    Recovering,
    Running,
    Stopping,
    Stopped,
    Failed,
}

/// Who waits for a write of `gregor.meta`, and what happens once it is durable.
#[derive(Debug)]
pub(crate) enum MetaWriteThen {
    /// First start on an empty data dir: go on with recovery.
    Startup,
    /// The cluster id was recorded: nothing more.
    Nothing,
}

/// What a log recovery is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RecoveryFor {
    /// `__cluster_metadata-0`.
    Metadata,
    /// A partition of topic `topic_id` this node is a replica of.
    Partition {
        topic: String,
        partition: i32,
        topic_id: u128,
    },
}

/// Who waits for a read job: a Kafka request, or a Raft leader's follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFor {
    Kafka(ReadOwner),
    Raft {
        group: GroupId,
        to: NodeId,
        generation: u64,
    },
    /// Committed metadata records for the image.
    Metadata,
    /// A `__consumer_offsets` partition being loaded by the group coordinator.
    GroupLoad {
        partition: i32,
        term: i32,
    },
}

/// A Kafka request's read: which request, which slot of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadOwner {
    /// A Kafka-layer request id.
    pub request: u64,
    /// Which slot of that request.
    pub slot: usize,
}

/// The broker state machine. See the crate docs for the contract.
pub struct Engine {
    pub(crate) config: BrokerConfig,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: Time,
    pub(crate) q: IoQueue,
    pub(crate) lifecycle: Lifecycle,
    /// This data directory's identity (`gregor.meta`).
    pub(crate) node_meta: NodeMeta,
    /// The cluster as the committed metadata log describes it.
    pub(crate) image: ClusterImage,
    /// The `__cluster_metadata` log, once recovered.
    pub(crate) meta_log: Option<LogId>,
    /// A read of committed metadata records is in flight.
    pub(crate) meta_reading: bool,
    /// Until the image has applied what the metadata log held at startup (`Some(end)`),
    /// partition directories are left alone: an image behind the disk could take a live
    /// partition for a deleted one.
    pub(crate) meta_gate: Option<u64>,
    /// The applied end of the newest image snapshot on disk (0: none).
    pub(crate) meta_snapshot_end: u64,
    /// A snapshot write is in flight.
    pub(crate) meta_snapshot_writing: bool,
    /// The image's placement of partitions changed since partitions last followed it
    /// (most applied records are leader changes, which move nothing).
    pub(crate) placement_changed: bool,
    pub(crate) controller: Controller,
    /// This node's block of producer ids.
    pub(crate) producer_ids: crate::replica::producer_ids::ProducerIdAlloc,
    /// Visible partitions: (topic, partition) → log.
    pub(crate) partitions: BTreeMap<(String, i32), LogId>,
    pub(crate) logs: BTreeMap<LogId, PartitionLog>,
    next_log_id: LogId,
    pub(crate) recoveries: BTreeMap<LogId, (Recovery, RecoveryFor)>,
    meta_writes: BTreeMap<u64, MetaWriteThen>,
    next_meta_write: u64,
    /// Partition directories being deleted.
    pub(crate) dir_deletes: BTreeSet<String>,
    reads: BTreeMap<u64, (ReadJob, LogId, ReadFor)>,
    next_read: u64,
    pub(crate) kafka: KafkaState,
    timer_at: Option<u64>,
    pub(crate) tail_cache_bytes: usize,
    /// Raft groups of this node, and which log each drives.
    pub(crate) replicas: BTreeMap<GroupId, Replica>,
    pub(crate) group_of_log: BTreeMap<LogId, GroupId>,
    /// Peer messages of this step, one envelope per destination.
    pub(crate) outbox: BTreeMap<NodeId, Envelope>,
    pub(crate) next_heartbeat_ms: u64,
    pub(crate) next_raft_tick_ms: u64,
    /// The group coordinator of the `__consumer_offsets` partitions this node leads.
    pub(crate) groups: crate::group::GroupCoordinator,
    pub(crate) group_glue: crate::kafka::groups::GroupGlue,
}

impl Engine {
    pub fn new(config: BrokerConfig) -> Engine {
        let mut rng = ChaCha8Rng::seed_from_u64(config.rng_seed);
        let mut group_config = config.group.clone();
        // (The node refuses such a config; a hand-built one gets the larger bound.)
        group_config.session_timeout_ms_max = group_config
            .session_timeout_ms_max
            .max(group_config.session_timeout_ms_min);
        let groups = crate::group::GroupCoordinator::new(group_config, rng.gen::<u64>());
        let tail_cache_bytes = config.tail_cache_bytes;
        Engine {
            config,
            rng,
            now: Time::default(),
            q: IoQueue::default(),
            lifecycle: Lifecycle::Starting,
            node_meta: NodeMeta::default(),
            image: ClusterImage::default(),
            meta_log: None,
            meta_reading: false,
            meta_gate: None,
            meta_snapshot_end: 0,
            meta_snapshot_writing: false,
            placement_changed: true,
            controller: Controller::default(),
            producer_ids: Default::default(),
            partitions: BTreeMap::new(),
            logs: BTreeMap::new(),
            next_log_id: 1,
            recoveries: BTreeMap::new(),
            meta_writes: BTreeMap::new(),
            next_meta_write: 1,
            dir_deletes: BTreeSet::new(),
            reads: BTreeMap::new(),
            next_read: 1,
            kafka: KafkaState::default(),
            timer_at: None,
            tail_cache_bytes,
            replicas: BTreeMap::new(),
            group_of_log: BTreeMap::new(),
            outbox: BTreeMap::new(),
            next_heartbeat_ms: 0,
            next_raft_tick_ms: 0,
            groups,
            group_glue: Default::default(),
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The cluster id (known once the engine is ready).
    pub fn cluster_id(&self) -> &str {
        self.node_meta.cluster_id.as_deref().unwrap_or("")
    }

    /// High watermark of a partition, for tests and the simulator's checks.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<u64> {
        let id = self.partitions.get(&(topic.to_string(), partition))?;
        self.logs.get(id).map(|l| l.high_watermark())
    }

    /// Feeds one input; appends the outputs it causes to `out`.
    pub fn step(&mut self, now: Time, input: Input, out: &mut Vec<Output>) {
        assert!(now.mono_ms >= self.now.mono_ms, "monotonic time never goes back");
        self.now = now;
        if matches!(self.lifecycle, Lifecycle::Failed | Lifecycle::Stopped) {
            return;
        }
        match input {
            Input::Start => self.start(),
            Input::ClientRequest { conn, seq, frame } => self.on_client_request(conn, seq, frame),
            Input::ConnectionClosed { conn } => self.on_connection_closed(conn),
            Input::Tick => {
                self.on_tick();
                if self.replica_deadline().is_some_and(|at| at <= now.mono_ms) {
                    self.replica_tick();
                }
            }
            Input::IoDone { token, result } => self.on_io_done(token, result),
            Input::PeerMessage { from, msg } => self.on_peer_message(from, msg),
            Input::Shutdown => {
                if self.lifecycle == Lifecycle::Running {
                    self.lifecycle = Lifecycle::Stopping;
                    tracing::info!("stopping: finishing in-flight writes");
                } else {
                    self.lifecycle = Lifecycle::Stopped;
                    self.kafka.responses.push(Output::Stopped);
                }
            }
        }
        self.after_step();
        out.append(&mut self.kafka.responses);
        out.append(&mut self.q.emitted);
        self.flush_outbox(out);
        self.update_timer(out);
    }

    fn after_step(&mut self) {
        if self.lifecycle == Lifecycle::Stopping
            && self.logs.values().all(|l| l.is_quiet())
            && self.meta_writes.is_empty()
            && self.recoveries.is_empty()
            && self.dir_deletes.is_empty()
        {
            self.lifecycle = Lifecycle::Stopped;
            tracing::info!("stopped: every acknowledged write is durable");
            self.kafka.responses.push(Output::Stopped);
        }
    }

    pub(crate) fn fail(&mut self, reason: String) {
        tracing::error!(%reason, "storage failure; stopping the node");
        self.lifecycle = Lifecycle::Failed;
        self.kafka.responses.push(Output::Fatal { reason });
    }

    fn update_timer(&mut self, out: &mut Vec<Output>) {
        let next = [
            self.kafka.next_deadline(),
            self.replica_deadline(),
            self.groups_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        if next.is_some() && next != self.timer_at {
            out.push(Output::SetTimer {
                at_mono_ms: next.unwrap_or(0),
            });
        }
        self.timer_at = next;
    }

    fn start(&mut self) {
        assert_eq!(self.lifecycle, Lifecycle::Starting, "Start comes once");
        self.lifecycle = Lifecycle::Recovering;
        let op = IoOp::Read {
            file: meta::META_FILE.to_string(),
            position: 0,
            len: u32::MAX,
        };
        self.q.submit(op, IoTag::MetaRead);
    }

    /// A fresh random id: 16 bytes from the engine's RNG.
    pub(crate) fn random_u128(&mut self) -> u128 {
        self.rng.gen::<u128>()
    }

    fn on_meta_read(&mut self, result: IoResult) {
        match result {
            IoResult::Read(bytes) => match NodeMeta::decode(&bytes) {
                Ok(m) if m.node_id != self.config.node_id => self.fail(format!(
                    "data directory belongs to node {} but this is node {}",
                    m.node_id, self.config.node_id
                )),
                Ok(m) => {
                    let mut voters = self.config.voter_ids();
                    voters.sort_unstable();
                    if !m.voters.is_empty() && m.voters != voters {
                        self.fail(format!(
                            "data directory was created for metadata quorum voters {:?} but controller.quorum.voters (--peers) names {voters:?}; changing the quorum is not supported",
                            m.voters
                        ));
                        return;
                    }
                    self.node_meta = m;
                    self.start_metadata_recovery();
                }
                Err(e) => self.fail(format!("{}: {e}", meta::META_FILE)),
            },
            IoResult::Err(IoError::NotFound) => {
                let mut voters = self.config.voter_ids();
                voters.sort_unstable();
                self.node_meta = NodeMeta {
                    node_id: self.config.node_id,
                    cluster_id: None,
                    voters,
                };
                tracing::info!(node_id = self.config.node_id, "new data directory");
                self.write_meta(MetaWriteThen::Startup);
            }
            other => self.fail(format!("reading {}: {other:?}", meta::META_FILE)),
        }
    }

    /// Persists `gregor.meta`; `then` runs once it is durable.
    pub(crate) fn write_meta(&mut self, then: MetaWriteThen) {
        let id = self.next_meta_write;
        self.next_meta_write += 1;
        self.meta_writes.insert(id, then);
        let op = IoOp::WriteState {
            file: meta::META_FILE.to_string(),
            data: self.node_meta.encode(),
        };
        self.q.submit(op, IoTag::MetaWrite(id));
    }

    fn on_meta_written(&mut self, id: u64, result: IoResult) {
        let then = self.meta_writes.remove(&id).expect("a pending metadata write");
        if let IoResult::Err(e) = result {
            self.fail(format!("writing {}: {e}", meta::META_FILE));
            return;
        }
        match then {
            MetaWriteThen::Startup => self.start_metadata_recovery(),
            MetaWriteThen::Nothing => {}
        }
    }

    fn start_metadata_recovery(&mut self) {
        if let Some(id) = &self.node_meta.cluster_id {
            self.kafka.responses.push(Output::ClusterId { id: id.clone() });
        }
        if !self.config.voter_ids().contains(&self.config.node_id) {
            let voters = self.config.voter_ids();
            self.fail(format!(
                "node {} is not one of the metadata quorum's voters {voters:?} (controller.quorum.voters / --peers)",
                self.config.node_id
            ));
            return;
        }
        // The image snapshot first: replaying the log then starts where it ends.
        let op = IoOp::Read {
            file: crate::replica::metadata::snapshot_file(),
            position: 0,
            len: u32::MAX,
        };
        self.q.submit(op, IoTag::MetaSnapshotRead);
    }

    /// Lists the data directory once the image is trustworthy, to remove leftovers.
    pub(crate) fn list_root(&mut self) {
        self.q.submit(IoOp::List { dir: String::new() }, IoTag::RootList);
    }

    fn on_root_listed(&mut self, result: IoResult) {
        let entries = match result {
            IoResult::List(entries) => entries,
            other => {
                tracing::warn!("listing the data directory: {other:?}");
                return;
            }
        };
        let wanted: BTreeSet<String> = self
            .wanted_partitions()
            .keys()
            .map(|(t, p)| meta::partition_dir(t, *p))
            .collect();
        let metadata_dir = meta::partition_dir(METADATA_TOPIC, 0);
        let leftovers: Vec<String> = entries
            .iter()
            .filter(|e| e.is_dir && e.name != metadata_dir && !wanted.contains(&e.name))
            .filter(|e| looks_like_partition_dir(&e.name))
            .map(|e| e.name.clone())
            .collect();
        for dir in leftovers {
            let busy = self.logs.values().any(|l| l.dir == dir) || self.recovering_dir(&dir);
            if !busy {
                tracing::info!(%dir, "removing the directory of a partition this node no longer hosts");
                self.delete_dir(dir);
            }
        }
    }

    /// Removes a partition directory (once; a later recovery of the same name waits).
    pub(crate) fn delete_dir(&mut self, dir: String) {
        if self.dir_deletes.insert(dir.clone()) {
            self.q
                .submit(IoOp::Delete { path: dir.clone() }, IoTag::DeleteDir(dir));
        }
    }

    pub(crate) fn recovering_dir(&self, dir: &str) -> bool {
        self.recovering_dirs().contains(dir)
    }

    /// The directories of the logs being recovered.
    pub(crate) fn recovering_dirs(&self) -> BTreeSet<String> {
        self.recoveries
            .values()
            .map(|(_, f)| match f {
                RecoveryFor::Metadata => meta::partition_dir(METADATA_TOPIC, 0),
                RecoveryFor::Partition { topic, partition, .. } => meta::partition_dir(topic, *partition),
            })
            .collect()
    }

    /// Ready once the image has caught up with the metadata log found at startup, knows
    /// the cluster, and every partition it places here is recovered.
    pub(crate) fn maybe_ready(&mut self) {
        if self.lifecycle == Lifecycle::Recovering
            && self.meta_log.is_some()
            && self.meta_gate.is_none()
            && self.image.cluster_id.is_some()
            && self.recoveries.is_empty()
        {
            self.lifecycle = Lifecycle::Running;
            tracing::info!(partitions = self.partitions.len(), "recovery complete");
            self.kafka.responses.push(Output::Ready);
        }
    }

    /// Starts recovering (or creating) a log.
    pub(crate) fn start_recovery_for(&mut self, what: RecoveryFor) {
        let id = self.next_log_id;
        self.next_log_id += 1;
        let (dir, config) = match &what {
            RecoveryFor::Metadata => (
                meta::partition_dir(METADATA_TOPIC, 0),
                LogConfig::resolve(&self.config, &BTreeMap::new()),
            ),
            RecoveryFor::Partition { topic, partition, .. } => {
                (meta::partition_dir(topic, *partition), self.log_config(topic))
            }
        };
        let skip_crc = self.config.planted.skip_recovery_crc();
        let (rec, step) = Recovery::start(&dir, config.index_interval_bytes, skip_crc, self.now.wall_ms);
        self.recoveries.insert(id, (rec, what));
        self.recovery_step(id, step);
    }

    pub(crate) fn log_config(&self, topic: &str) -> LogConfig {
        let empty = BTreeMap::new();
        let overrides = self.image.topics.get(topic).map_or(&empty, |t| &t.configs);
        LogConfig::resolve(&self.config, overrides)
    }

    fn recovery_step(&mut self, id: LogId, step: RecoveryStep) {
        match step {
            RecoveryStep::Io(op) => {
                self.q.submit(op, IoTag::Recovery(id));
            }
            RecoveryStep::Done(recovered) => {
                let Some((_, what)) = self.recoveries.remove(&id) else {
                    return;
                };
                match what {
                    RecoveryFor::Metadata => self.metadata_recovered(id, recovered),
                    RecoveryFor::Partition {
                        topic,
                        partition,
                        topic_id,
                    } => self.partition_recovered(id, recovered, topic, partition, topic_id),
                }
                self.controller_progress();
                self.maybe_ready();
            }
        }
    }

    fn partition_recovered(
        &mut self,
        id: LogId,
        mut recovered: crate::log::recovery::Recovered,
        topic: String,
        partition: i32,
        topic_id: u128,
    ) {
        let dir = meta::partition_dir(&topic, partition);
        let wanted = self.wanted_partition(&topic, partition);
        let Some((wanted_id, voters)) = wanted.filter(|(wid, _)| *wid == topic_id) else {
            // Deleted (or re-created under a new id) while it was recovering.
            self.delete_dir(dir);
            return;
        };
        debug_assert_eq!(wanted_id, topic_id);
        let config = self.log_config(&topic);
        let raft_state = recovered.raft_state.take();
        let log = PartitionLog::new(id, dir, config, recovered, self.tail_cache_bytes);
        tracing::debug!(%topic, partition, leo = log.log_end_offset(), "partition ready");
        self.logs.insert(id, log);
        self.partitions.insert((topic, partition), id);
        let group = GroupId { topic_id, partition };
        if let Err(e) = self.start_replica(group, id, voters, raft_state) {
            self.fail(e);
        }
    }

    fn on_io_done(&mut self, token: Token, result: IoResult) {
        match self.q.complete(token) {
            IoTag::Log(id, io) => {
                let wall_ms = self.now.wall_ms;
                let Some(log) = self.logs.get_mut(&id) else { return };
                let ev = log.on_io_done(&mut self.q, io, &result, wall_ms);
                self.on_log_event(id, ev);
            }
            IoTag::Read(read_id) => self.on_read_done(read_id, result),
            IoTag::Recovery(id) => {
                let Some((rec, ..)) = self.recoveries.get_mut(&id) else {
                    return;
                };
                match rec.on_io_done(result) {
                    Ok(step) => self.recovery_step(id, step),
                    Err(reason) => self.fail(reason),
                }
            }
            IoTag::MetaRead => self.on_meta_read(result),
            IoTag::MetaWrite(id) => self.on_meta_written(id, result),
            IoTag::RootList => self.on_root_listed(result),
            IoTag::MetaSnapshotRead => {
                self.on_meta_snapshot_read(result);
                if self.lifecycle == Lifecycle::Recovering {
                    self.start_recovery_for(RecoveryFor::Metadata);
                }
            }
            IoTag::MetaSnapshotWrite(end) => self.on_meta_snapshot_written(end, result),
            IoTag::DeleteDir(dir) => {
                if let IoResult::Err(e) = &result {
                    if *e != IoError::NotFound {
                        tracing::warn!(%dir, error = %e, "removing a partition directory failed");
                    }
                }
                self.dir_deletes.remove(&dir);
                self.reconcile_partitions();
                self.controller_progress();
            }
            IoTag::HardState(group, hs, generation) => {
                self.on_hard_state_written(group, hs, generation, result)
            }
        }
    }

    fn on_log_event(&mut self, id: LogId, ev: LogEvent) {
        if let Some(reason) = ev.fatal {
            let dir = self.logs.get(&id).map(|l| l.dir.clone()).unwrap_or_default();
            self.fail(format!("{reason} in {dir}"));
            return;
        }
        if let Some(from) = ev.failed_from {
            // The produces the failed write carried get KAFKA_STORAGE_ERROR; the others
            // waiting on this log hear NOT_LEADER_OR_FOLLOWER as its replica halts.
            self.kafka_log_failed(id, from);
            self.halt_replica(id);
        }
        if ev.repaired {
            self.restart_replica_later(id);
        }
        if ev.advanced {
            self.replica_log_changed(id);
            self.kafka_log_advanced(id);
            if Some(id) == self.meta_log {
                self.meta_apply();
            }
        }
    }

    /// Starts a read job for `owner`; its outcome reaches the Kafka layer.
    pub(crate) fn start_read(
        &mut self,
        log_id: LogId,
        job_start: impl FnOnce(&PartitionLog) -> (ReadJob, ReadStep),
        owner: ReadOwner,
    ) {
        self.start_read_for(log_id, job_start, ReadFor::Kafka(owner));
    }

    pub(crate) fn start_read_for(
        &mut self,
        log_id: LogId,
        job_start: impl FnOnce(&PartitionLog) -> (ReadJob, ReadStep),
        owner: ReadFor,
    ) {
        let Some(log) = self.logs.get(&log_id) else {
            self.read_done(owner, ReadOutcome::Failed("partition is gone".into()));
            return;
        };
        let (job, step) = job_start(log);
        let id = self.next_read;
        self.next_read += 1;
        self.reads.insert(id, (job, log_id, owner));
        self.read_step(id, step);
    }

    fn read_done(&mut self, owner: ReadFor, outcome: ReadOutcome) {
        match owner {
            ReadFor::Kafka(owner) => self.kafka_read_done(owner, outcome),
            ReadFor::Raft {
                group,
                to,
                generation,
            } => self.replica_read_done(group, to, generation, outcome),
            ReadFor::Metadata => self.metadata_read_done(outcome),
            ReadFor::GroupLoad { partition, term } => self.group_load_read_done(partition, term, outcome),
        }
    }

    fn read_step(&mut self, id: u64, step: ReadStep) {
        match step {
            ReadStep::Io(op) => {
                self.q.submit(op, IoTag::Read(id));
            }
            ReadStep::Done(outcome) => {
                if let Some((_, _, owner)) = self.reads.remove(&id) {
                    self.read_done(owner, outcome);
                }
            }
        }
    }

    fn on_read_done(&mut self, id: u64, result: IoResult) {
        let Some((job, log_id, _)) = self.reads.get_mut(&id) else {
            return;
        };
        let step = match (result, self.logs.get(log_id)) {
            (IoResult::Read(bytes), Some(log)) => job.on_read(log, bytes),
            (IoResult::Read(_), None) => ReadStep::Done(ReadOutcome::Failed("partition is gone".into())),
            (other, _) => ReadStep::Done(ReadOutcome::Failed(format!("read failed: {other:?}"))),
        };
        self.read_step(id, step);
    }

    pub(crate) fn topic_id(&self, name: &str) -> Option<u128> {
        self.image.topics.get(name).map(|t| t.id)
    }

    pub(crate) fn topic_by_id(&self, id: u128) -> Option<&str> {
        self.image.names.get(&id).map(String::as_str)
    }

    pub(crate) fn on_connection_closed(&mut self, conn: ConnId) {
        self.kafka.forget_connection(conn);
    }
}

fn looks_like_partition_dir(name: &str) -> bool {
    name.rsplit_once('-')
        .is_some_and(|(t, p)| !t.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}
