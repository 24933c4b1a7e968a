//! The engine's top level: lifecycle (recover, run, stop), IO token bookkeeping, and the
//! routing of completions to partition logs, read jobs, recoveries and the Kafka layer.
//!
//! Invariants: every `IoDone` names a token this engine emitted and has not seen complete
//! (asserted); outputs are produced in a deterministic order (BTreeMap iteration only).

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::LogConfig;
use crate::io::{IoError, IoOp, IoResult, Token};
use crate::kafka::KafkaState;
use crate::log::partition::{LogEvent, LogId, PartIo, PartitionLog};
use crate::log::read::{ReadJob, ReadOutcome, ReadStep};
use crate::log::recovery::{Recovery, RecoveryStep};
use crate::meta::{self, MetaImage, TopicMeta};
use crate::raft::{HardState, NodeId};
use crate::replica::{Envelope, GroupId, Replica};
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
    Cleanup,
    /// One directory of a topic deletion, keyed by the metadata write that removed the topic.
    DeleteDir(u64),
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

/// Who waits for a metadata write, and what happens once it is durable.
#[derive(Debug)]
pub(crate) enum MetaWriteThen {
    /// First start on an empty data dir: go on with recovery.
    Startup,
    /// Start these partition logs (new topic or new partitions), then tell the Kafka layer.
    CreateLogs { op: u64, partitions: Vec<(String, i32)> },
    /// Delete these partition directories, then tell the Kafka layer.
    DeleteDirs { op: u64, dirs: Vec<String> },
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
    pub(crate) meta: MetaImage,
    /// Visible partitions: (topic, partition) → log.
    pub(crate) partitions: BTreeMap<(String, i32), LogId>,
    pub(crate) logs: BTreeMap<LogId, PartitionLog>,
    next_log_id: LogId,
    recoveries: BTreeMap<LogId, (Recovery, String, i32, Option<u64>)>,
    meta_writes: BTreeMap<u64, MetaWriteThen>,
    next_meta_write: u64,
    /// Directory deletions in flight, one entry per deleted topic (a request may delete
    /// several): metadata write id → (admin op, directories left).
    deletions: BTreeMap<u64, (u64, usize)>,
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
}

impl Engine {
    pub fn new(config: BrokerConfig) -> Engine {
        let rng = ChaCha8Rng::seed_from_u64(config.rng_seed);
        let tail_cache_bytes = config.tail_cache_bytes;
        Engine {
            config,
            rng,
            now: Time::default(),
            q: IoQueue::default(),
            lifecycle: Lifecycle::Starting,
            meta: MetaImage::default(),
            partitions: BTreeMap::new(),
            logs: BTreeMap::new(),
            next_log_id: 1,
            recoveries: BTreeMap::new(),
            meta_writes: BTreeMap::new(),
            next_meta_write: 1,
            deletions: BTreeMap::new(),
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
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The cluster id (valid once the engine is ready).
    pub fn cluster_id(&self) -> &str {
        &self.meta.cluster_id
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
            && self.deletions.is_empty()
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
        let next = match (self.kafka.next_deadline(), self.replica_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
            IoResult::Read(bytes) => match MetaImage::decode(&bytes) {
                Ok(image) if image.node_id != self.config.node_id => self.fail(format!(
                    "data directory belongs to node {} but this is node {}",
                    image.node_id, self.config.node_id
                )),
                Ok(image) => {
                    self.meta = image;
                    self.q.submit(IoOp::List { dir: String::new() }, IoTag::RootList);
                }
                Err(e) => self.fail(format!("{}: {e}", meta::META_FILE)),
            },
            IoResult::Err(IoError::NotFound) => {
                let id = self.random_u128();
                self.meta = MetaImage {
                    cluster_id: crate::kafka::uuid_string(id),
                    node_id: self.config.node_id,
                    topics: BTreeMap::new(),
                };
                tracing::info!(cluster_id = %self.meta.cluster_id, "new data directory");
                self.write_meta(MetaWriteThen::Startup);
            }
            other => self.fail(format!("reading {}: {other:?}", meta::META_FILE)),
        }
    }

    /// Persists the metadata image; `then` runs once it is durable.
    pub(crate) fn write_meta(&mut self, then: MetaWriteThen) {
        let id = self.next_meta_write;
        self.next_meta_write += 1;
        self.meta_writes.insert(id, then);
        let op = IoOp::WriteState {
            file: meta::META_FILE.to_string(),
            data: self.meta.encode(),
        };
        self.q.submit(op, IoTag::MetaWrite(id));
    }

    fn on_meta_written(&mut self, id: u64, result: IoResult) {
        let then = self.meta_writes.remove(&id).expect("a pending metadata write");
        if let IoResult::Err(e) = result {
            // The image in memory may now be ahead of the disk: stop rather than diverge.
            self.fail(format!("writing {}: {e}", meta::META_FILE));
            return;
        }
        match then {
            MetaWriteThen::Startup => {
                self.q.submit(IoOp::List { dir: String::new() }, IoTag::RootList);
            }
            MetaWriteThen::CreateLogs { op, partitions } => {
                for (topic, p) in partitions {
                    self.start_recovery(topic, p, Some(op));
                }
                self.admin_progress(op);
            }
            MetaWriteThen::DeleteDirs { op, dirs } => {
                if dirs.is_empty() {
                    self.admin_progress(op);
                    return;
                }
                self.deletions.insert(id, (op, dirs.len()));
                for dir in dirs {
                    self.q.submit(IoOp::Delete { path: dir }, IoTag::DeleteDir(id));
                }
            }
        }
    }

    fn on_root_listed(&mut self, result: IoResult) {
        let entries = match result {
            IoResult::List(entries) => entries,
            other => return self.fail(format!("listing the data directory: {other:?}")),
        };
        let mut known: BTreeSet<String> = BTreeSet::new();
        for (topic, t) in &self.meta.topics {
            for p in 0..t.partitions {
                known.insert(meta::partition_dir(topic, p));
            }
        }
        for e in entries.iter().filter(|e| e.is_dir && !known.contains(&e.name)) {
            if looks_like_partition_dir(&e.name) {
                tracing::info!(dir = %e.name, "removing the directory of a deleted topic");
                self.q
                    .submit(IoOp::Delete { path: e.name.clone() }, IoTag::Cleanup);
            }
        }
        let all: Vec<(String, i32)> = self
            .meta
            .topics
            .iter()
            .flat_map(|(t, m)| (0..m.partitions).map(move |p| (t.clone(), p)))
            .collect();
        for (topic, p) in all {
            self.start_recovery(topic, p, None);
        }
        self.maybe_ready();
    }

    fn maybe_ready(&mut self) {
        if self.lifecycle == Lifecycle::Recovering && self.recoveries.is_empty() {
            self.lifecycle = Lifecycle::Running;
            tracing::info!(partitions = self.logs.len(), "recovery complete");
            self.kafka.responses.push(Output::ClusterId {
                id: self.meta.cluster_id.clone(),
            });
            self.kafka.responses.push(Output::Ready);
        }
    }

    /// Starts recovering (or creating) a partition's log. `op` is the admin op waiting.
    pub(crate) fn start_recovery(&mut self, topic: String, partition: i32, op: Option<u64>) {
        let id = self.next_log_id;
        self.next_log_id += 1;
        let dir = meta::partition_dir(&topic, partition);
        let config = self.log_config(&topic);
        let skip_crc = self.config.planted.skip_recovery_crc();
        let (rec, step) = Recovery::start(&dir, config.index_interval_bytes, skip_crc, self.now.wall_ms);
        self.recoveries.insert(id, (rec, topic, partition, op));
        self.recovery_step(id, step);
    }

    pub(crate) fn log_config(&self, topic: &str) -> LogConfig {
        let empty = BTreeMap::new();
        let overrides = self.meta.topics.get(topic).map_or(&empty, |t| &t.configs);
        LogConfig::resolve(&self.config, overrides)
    }

    fn recovery_step(&mut self, id: LogId, step: RecoveryStep) {
        match step {
            RecoveryStep::Io(op) => {
                self.q.submit(op, IoTag::Recovery(id));
            }
            RecoveryStep::Done(recovered) => {
                let Some((_, topic, partition, op)) = self.recoveries.remove(&id) else {
                    return;
                };
                let still_wanted = self
                    .meta
                    .topics
                    .get(&topic)
                    .is_some_and(|t| partition < t.partitions);
                if still_wanted {
                    let dir = meta::partition_dir(&topic, partition);
                    let config = self.log_config(&topic);
                    let mut recovered = recovered;
                    let raft_state = recovered.raft_state.take();
                    let log = PartitionLog::new(id, dir, config, recovered, self.tail_cache_bytes);
                    tracing::debug!(%topic, partition, leo = log.log_end_offset(), "partition ready");
                    self.logs.insert(id, log);
                    self.partitions.insert((topic.clone(), partition), id);
                    let group = GroupId {
                        topic_id: self.topic_id(&topic).unwrap_or(0),
                        partition,
                    };
                    // Until the metadata log assigns replicas, a partition's only replica is
                    // this node.
                    let voters = vec![self.config.node_id];
                    if let Err(e) = self.start_replica(group, id, voters, raft_state) {
                        self.fail(e);
                        return;
                    }
                }
                if let Some(op) = op {
                    self.admin_progress(op);
                }
                self.maybe_ready();
            }
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
            IoTag::DeleteDir(id) => {
                if let IoResult::Err(e) = &result {
                    tracing::warn!(error = %e, "removing a deleted topic's data failed");
                }
                let (op, left) = self.deletions.get_mut(&id).expect("a pending deletion");
                let op = *op;
                *left -= 1;
                if *left == 0 {
                    self.deletions.remove(&id);
                    self.admin_progress(op);
                }
            }
            IoTag::HardState(group, hs, generation) => {
                self.on_hard_state_written(group, hs, generation, result)
            }
            IoTag::Cleanup => {
                if let IoResult::Err(e) = result {
                    tracing::warn!(error = %e, "removing a deleted topic's data failed");
                }
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

    /// Adds a topic to the image (caller validated it) and persists it; its logs start once
    /// the image is durable, then admin op `op` hears about each.
    pub(crate) fn create_topic(
        &mut self,
        name: &str,
        id: u128,
        partitions: i32,
        configs: BTreeMap<String, String>,
        op: u64,
    ) {
        assert!(partitions >= 1);
        assert!(!self.meta.topics.contains_key(name));
        self.meta.topics.insert(
            name.to_string(),
            TopicMeta {
                id,
                partitions,
                configs,
            },
        );
        let parts = (0..partitions).map(|p| (name.to_string(), p)).collect();
        self.write_meta(MetaWriteThen::CreateLogs {
            op,
            partitions: parts,
        });
    }

    /// Grows a topic to `total` partitions.
    pub(crate) fn add_partitions(&mut self, name: &str, total: i32, op: u64) {
        let Some(t) = self.meta.topics.get_mut(name) else {
            return;
        };
        assert!(total > t.partitions);
        let old = t.partitions;
        t.partitions = total;
        let parts = (old..total).map(|p| (name.to_string(), p)).collect();
        self.write_meta(MetaWriteThen::CreateLogs {
            op,
            partitions: parts,
        });
    }

    /// Removes a topic: invisible at once, its data removed once the image is durable.
    pub(crate) fn delete_topic(&mut self, name: &str, op: u64) {
        let Some(t) = self.meta.topics.remove(name) else {
            return;
        };
        let mut dirs = Vec::new();
        for p in 0..t.partitions {
            if let Some(id) = self.partitions.remove(&(name.to_string(), p)) {
                self.stop_replica(id);
                self.logs.remove(&id);
                self.kafka_log_removed(id);
            }
            dirs.push(meta::partition_dir(name, p));
        }
        self.write_meta(MetaWriteThen::DeleteDirs { op, dirs });
    }

    pub(crate) fn topic_id(&self, name: &str) -> Option<u128> {
        self.meta.topics.get(name).map(|t| t.id)
    }

    pub(crate) fn topic_by_id(&self, id: u128) -> Option<&str> {
        self.meta
            .topics
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(n, _)| n.as_str())
    }

    pub(crate) fn on_connection_closed(&mut self, conn: ConnId) {
        self.kafka.forget_connection(conn);
    }
}

fn looks_like_partition_dir(name: &str) -> bool {
    name.rsplit_once('-')
        .is_some_and(|(t, p)| !t.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}
