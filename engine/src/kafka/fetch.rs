//! Fetch: long polls (`max_wait_ms`, `min_bytes`), per-partition and total byte limits (at
//! least one batch even when it is larger), stored bytes served as they are, from the tail
//! cache or from disk. Fetch sessions are not kept: every answer is session-less (id 0),
//! which clients treat as "send full fetch requests".

use bytes::BytesMut;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind, TopicName};

use super::{code, str_bytes, to_uuid, Ctx, PendingBody};
use crate::engine::{Engine, ReadOwner};
use crate::log::partition::LogId;
use crate::log::read::{ReadGoal, ReadJob, ReadOutcome};
use crate::log::stored::StoredBatch;

/// Longest long poll we honour, whatever the client asks.
const MAX_WAIT_MS_MAX: u64 = 5 * 60 * 1000;

#[derive(Debug)]
struct FetchPart {
    topic: usize,
    partition: i32,
    log: Option<LogId>,
    offset: u64,
    max_bytes: usize,
    error: i16,
    high_watermark: i64,
    log_start: i64,
    batches: Vec<StoredBatch>,
    size_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct PendingFetch {
    /// (name, id) of each topic, in request order.
    topics: Vec<(String, u128)>,
    parts: Vec<FetchPart>,
    min_bytes: usize,
    max_bytes: usize,
    expired: bool,
    gathering: bool,
    reading: usize,
}

impl Engine {
    pub(crate) fn handle_fetch(&mut self, ctx: Ctx, req: FetchRequest) {
        let by_id = ctx.version >= 13;
        let mut topics = Vec::new();
        let mut parts = Vec::new();
        for t in req.topics {
            let (name, id) = if by_id {
                let id = t.topic_id.as_u128();
                (self.topic_by_id(id).map(str::to_string), id)
            } else {
                let name = t.topic.0.as_str().to_string();
                let id = self.topic_id(&name).unwrap_or(0);
                (Some(name), id)
            };
            let ti = topics.len();
            topics.push((name.clone().unwrap_or_default(), id));
            for p in t.partitions {
                let mut part = FetchPart {
                    topic: ti,
                    partition: p.partition,
                    log: None,
                    offset: p.fetch_offset.max(0) as u64,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    error: code::NONE,
                    high_watermark: -1,
                    log_start: -1,
                    batches: Vec::new(),
                    size_bytes: 0,
                };
                part.error = match &name {
                    None => code::UNKNOWN_TOPIC_ID,
                    Some(n) => self.check_fetch_partition(
                        n,
                        p.partition,
                        p.fetch_offset,
                        p.current_leader_epoch,
                        &mut part,
                    ),
                };
                parts.push(part);
            }
        }
        let wait_ms = (req.max_wait_ms.max(0) as u64).min(MAX_WAIT_MS_MAX);
        let pending = PendingFetch {
            topics,
            parts,
            min_bytes: req.min_bytes.max(0) as usize,
            // Fetch v0-2 has no total limit (Kafka reads it as i32::MAX); the broker's
            // fetch.max.bytes caps every version.
            max_bytes: if ctx.version < 3 { i32::MAX } else { req.max_bytes }
                .clamp(0, self.config.fetch_max_bytes) as usize,
            expired: wait_ms == 0,
            gathering: false,
            reading: 0,
        };
        let id = self.park(ctx, PendingBody::Fetch(pending));
        if wait_ms > 0 {
            self.kafka.deadlines.insert((self.now.mono_ms + wait_ms, id));
        }
        self.fetch_evaluate(id);
    }

    fn check_fetch_partition(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        epoch: i32,
        part: &mut FetchPart,
    ) -> i16 {
        let Some(&log_id) = self.partitions.get(&(topic.to_string(), partition)) else {
            return self.missing_partition_code(topic, partition);
        };
        let Some(log) = self.logs.get(&log_id) else {
            return code::UNKNOWN_TOPIC_OR_PARTITION;
        };
        part.log = Some(log_id);
        part.high_watermark = log.high_watermark() as i64;
        part.log_start = log.log_start_offset as i64;
        if !log.is_serving() {
            return code::NOT_LEADER_OR_FOLLOWER;
        }
        if epoch >= 0 && epoch > log.leader_epoch {
            return code::UNKNOWN_LEADER_EPOCH;
        }
        if epoch >= 0 && epoch < log.leader_epoch {
            return code::FENCED_LEADER_EPOCH;
        }
        if offset < log.log_start_offset as i64 || offset > log.log_end_offset() as i64 {
            return code::OFFSET_OUT_OF_RANGE;
        }
        code::NONE
    }

    fn pending_fetch(&mut self, id: u64) -> Option<&mut PendingFetch> {
        match self.kafka.requests.get_mut(&id).map(|p| &mut p.body) {
            Some(PendingBody::Fetch(f)) => Some(f),
            _ => None,
        }
    }

    /// Answers now if enough data is there (or on error, or when the wait is over),
    /// otherwise keeps waiting for data on the fetched logs.
    fn fetch_evaluate(&mut self, id: u64) {
        let Some(f) = self.kafka.requests.get(&id).and_then(|p| match &p.body {
            PendingBody::Fetch(f) => Some(f),
            _ => None,
        }) else {
            return;
        };
        if f.gathering {
            return;
        }
        let mut available = 0usize;
        let mut error = false;
        for part in &f.parts {
            if part.error != code::NONE {
                error = true;
                continue;
            }
            let Some(log) = part.log.and_then(|l| self.logs.get(&l)) else {
                error = true;
                continue;
            };
            if !log.is_serving() {
                error = true; // lost the lead while the fetch waited
                continue;
            }
            let hw = log.high_watermark();
            if part.offset < hw {
                available += log
                    .tail
                    .readable_bytes(part.offset, hw, part.max_bytes)
                    .unwrap_or(part.max_bytes.max(1));
            }
        }
        let ready = error || f.expired || available >= f.min_bytes.max(1);
        let logs: Vec<LogId> = f.parts.iter().filter_map(|p| p.log).collect();
        if !ready {
            for log in logs {
                self.kafka.fetch_waits.insert((log, id));
            }
            return;
        }
        for log in logs {
            self.kafka.fetch_waits.remove(&(log, id));
        }
        self.fetch_gather(id);
    }

    /// Collects each partition's batches: from the tail cache, or by reading the segment.
    fn fetch_gather(&mut self, id: u64) {
        let planted_index = self.config.planted.index_off_by_one();
        let mut reads: Vec<(LogId, usize, u64, u64, usize)> = Vec::new();
        {
            let logs = &self.logs;
            let Some(PendingBody::Fetch(f)) = self.kafka.requests.get_mut(&id).map(|p| &mut p.body) else {
                return;
            };
            f.gathering = true;
            // The response's byte budget is handed out in partition order, as Kafka fills a
            // response; a partition read from disk is charged its whole limit up front (its
            // read runs in parallel with the others), so later partitions are not read at all
            // once the budget is spent, rather than read and thrown away.
            let mut budget = f.max_bytes;
            let mut first = true;
            for (slot, part) in f.parts.iter_mut().enumerate() {
                if part.error != code::NONE {
                    continue;
                }
                let Some(log) = part.log.and_then(|l| logs.get(&l)) else {
                    part.error = code::UNKNOWN_TOPIC_OR_PARTITION;
                    continue;
                };
                if !log.is_serving() {
                    // Deposed (or halted) while the fetch waited: its high watermark may
                    // be behind what it served before; the client must find the leader.
                    part.error = code::NOT_LEADER_OR_FOLLOWER;
                    continue;
                }
                let hw = log.high_watermark();
                part.high_watermark = hw as i64;
                part.log_start = log.log_start_offset as i64;
                if part.offset >= hw {
                    continue;
                }
                if budget == 0 && !first {
                    continue;
                }
                // The first partition with data gets at least one batch, whatever the limits.
                let limit = part.max_bytes.min(budget).max(1);
                first = false;
                match log.tail.read(part.offset, hw, limit) {
                    Some((batches, n)) => {
                        part.batches = batches;
                        part.size_bytes = n;
                        budget = budget.saturating_sub(n);
                    }
                    None => {
                        reads.push((log.id, slot, part.offset, hw, limit));
                        budget = budget.saturating_sub(limit);
                    }
                }
            }
            f.reading = reads.len();
        }
        for (log_id, slot, offset, hw, limit) in reads {
            let owner = ReadOwner { request: id, slot };
            let goal = ReadGoal::Fetch {
                offset,
                max_bytes: limit,
            };
            self.start_read(log_id, |log| ReadJob::start(log, goal, hw, planted_index), owner);
        }
        if self.pending_fetch(id).is_some_and(|f| f.reading == 0) {
            self.fetch_complete(id);
        }
    }

    pub(crate) fn fetch_read_done(&mut self, owner: ReadOwner, outcome: ReadOutcome) {
        let Some(f) = self.pending_fetch(owner.request) else {
            return;
        };
        let part = &mut f.parts[owner.slot];
        match outcome {
            ReadOutcome::Batches { batches, size_bytes } => {
                part.batches = batches.into_iter().map(StoredBatch::whole).collect();
                part.size_bytes = size_bytes;
            }
            ReadOutcome::Found(_) => unreachable!("fetch reads look for batches"),
            ReadOutcome::Failed(why) => {
                tracing::warn!(partition = part.partition, %why, "fetch read failed");
                part.error = code::KAFKA_STORAGE_ERROR;
            }
        }
        assert!(f.reading > 0);
        f.reading -= 1;
        if f.reading == 0 {
            self.fetch_complete(owner.request);
        }
    }

    fn fetch_complete(&mut self, id: u64) {
        let Some(f) = self.pending_fetch(id) else { return };
        let mut used = 0usize;
        let mut responses: Vec<FetchableTopicResponse> = f
            .topics
            .iter()
            .map(|(name, tid)| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(name)))
                    .with_topic_id(to_uuid(*tid))
            })
            .collect();
        for part in f.parts.iter_mut() {
            let mut kept = 0usize;
            let mut size = 0usize;
            for b in &part.batches {
                if used > 0 && used + b.len() > f.max_bytes {
                    break;
                }
                used += b.len();
                size += b.len();
                kept += 1;
            }
            part.batches.truncate(kept);
            let records = if part.batches.len() == 1 {
                part.batches.pop().unwrap_or_default().into_contiguous()
            } else {
                let mut records = BytesMut::with_capacity(size);
                for b in part.batches.drain(..) {
                    b.copy_to(&mut records);
                }
                records.freeze()
            };
            let pd = PartitionData::default()
                .with_partition_index(part.partition)
                .with_error_code(part.error)
                .with_high_watermark(part.high_watermark)
                .with_last_stable_offset(part.high_watermark)
                .with_log_start_offset(part.log_start)
                .with_records(Some(records));
            responses[part.topic].partitions.push(pd);
        }
        let response = FetchResponse::default()
            .with_session_id(0)
            .with_responses(responses);
        self.finish(id, Some(ResponseKind::Fetch(response)));
    }

    /// New data (or a deletion) on `log`: re-check the fetches waiting on it.
    pub(crate) fn fetch_log_advanced(&mut self, log: LogId) {
        let waiting: Vec<u64> = self
            .kafka
            .fetch_waits
            .range((log, 0)..(log + 1, 0))
            .map(|&(_, id)| id)
            .collect();
        for id in waiting {
            self.fetch_evaluate(id);
        }
    }

    /// The long poll of fetch `id` is over: answer with what there is.
    pub(crate) fn fetch_deadline(&mut self, id: u64) {
        if let Some(f) = self.pending_fetch(id) {
            f.expired = true;
            self.fetch_evaluate(id);
        }
    }
}
