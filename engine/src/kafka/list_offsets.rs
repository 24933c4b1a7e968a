//! ListOffsets (earliest, latest, by timestamp, max timestamp) and OffsetForLeaderEpoch.
//!
//! Timestamp lookups read from disk: the time index gives a start point, then the batches
//! are scanned for the first one whose max timestamp reaches the target, and its records
//! decoded to find the exact offset.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    ResponseKind,
};

use super::{code, Ctx, PendingBody};
use crate::engine::{Engine, ReadOwner};
use crate::log::partition::{LogId, PartitionLog};
use crate::log::read::{ReadGoal, ReadJob, ReadOutcome};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

#[derive(Debug)]
pub(crate) struct PendingListOffsets {
    response: ListOffsetsResponse,
    slots: Vec<(usize, usize)>,
    outstanding: usize,
}

/// Where a timestamp search starts: the first segment whose max timestamp reaches the
/// target, and the offset its time index points to. None: no record is that recent.
fn timestamp_start(log: &PartitionLog, target_ms: i64, end: u64) -> Option<u64> {
    log.segments()
        .values()
        .filter(|s| s.base_offset < end && !s.is_empty())
        .find(|s| s.max_timestamp_ms >= target_ms)
        .map(|s| s.time_index.lookup_start(target_ms))
}

impl Engine {
    pub(crate) fn handle_list_offsets(&mut self, ctx: Ctx, req: ListOffsetsRequest) {
        let mut response = ListOffsetsResponse::default();
        let mut slots = Vec::new();
        let mut reads: Vec<(LogId, usize, ReadGoal, u64)> = Vec::new();
        for (ti, t) in req.topics.into_iter().enumerate() {
            let name = t.name.0.as_str().to_string();
            let mut tr = ListOffsetsTopicResponse::default().with_name(t.name);
            for (pi, p) in t.partitions.into_iter().enumerate() {
                let mut pr = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1);
                let log = self
                    .partitions
                    .get(&(name.clone(), p.partition_index))
                    .and_then(|id| self.logs.get(id));
                match log {
                    None => pr.error_code = self.missing_partition_code(&name, p.partition_index),
                    Some(log) if !log.is_serving() => pr.error_code = code::NOT_LEADER_OR_FOLLOWER,
                    Some(log) if p.current_leader_epoch > log.leader_epoch => {
                        pr.error_code = code::UNKNOWN_LEADER_EPOCH
                    }
                    Some(log) if p.current_leader_epoch >= 0 && p.current_leader_epoch < log.leader_epoch => {
                        pr.error_code = code::FENCED_LEADER_EPOCH
                    }
                    Some(log) => {
                        if ctx.version >= 4 {
                            pr.leader_epoch = log.leader_epoch;
                        }
                        let hw = log.high_watermark();
                        match p.timestamp {
                            LATEST => pr.offset = hw as i64,
                            EARLIEST | EARLIEST_LOCAL => pr.offset = log.log_start_offset as i64,
                            MAX_TIMESTAMP => {
                                let best = log
                                    .segments()
                                    .values()
                                    .filter(|s| s.base_offset < hw && !s.is_empty())
                                    .max_by_key(|s| (s.max_timestamp_ms, std::cmp::Reverse(s.base_offset)));
                                if let Some(s) = best {
                                    let goal = ReadGoal::Timestamp {
                                        offset: s.time_index.lookup_start(s.max_timestamp_ms),
                                        timestamp_ms: s.max_timestamp_ms,
                                    };
                                    reads.push((log.id, slots.len(), goal, hw));
                                }
                            }
                            ts if ts >= 0 => {
                                if let Some(start) = timestamp_start(log, ts, hw) {
                                    let goal = ReadGoal::Timestamp {
                                        offset: start,
                                        timestamp_ms: ts,
                                    };
                                    reads.push((log.id, slots.len(), goal, hw));
                                }
                            }
                            _ => pr.error_code = code::INVALID_REQUEST,
                        }
                    }
                }
                slots.push((ti, pi));
                tr.partitions.push(pr);
            }
            response.topics.push(tr);
        }
        if reads.is_empty() {
            self.respond(&ctx, ResponseKind::ListOffsets(response));
            return;
        }
        let outstanding = reads.len();
        let id = self.park(
            ctx,
            PendingBody::ListOffsets(PendingListOffsets {
                response,
                slots,
                outstanding,
            }),
        );
        let planted_index = self.config.planted.index_off_by_one();
        for (log_id, slot, goal, hw) in reads {
            let owner = ReadOwner { request: id, slot };
            self.start_read(log_id, |log| ReadJob::start(log, goal, hw, planted_index), owner);
        }
    }

    pub(crate) fn list_offsets_read_done(&mut self, owner: ReadOwner, outcome: ReadOutcome) {
        let Some(PendingBody::ListOffsets(p)) =
            self.kafka.requests.get_mut(&owner.request).map(|p| &mut p.body)
        else {
            return;
        };
        let (ti, pi) = p.slots[owner.slot];
        let pr = &mut p.response.topics[ti].partitions[pi];
        match outcome {
            ReadOutcome::Found(Some((offset, ts))) => {
                pr.offset = offset as i64;
                pr.timestamp = ts;
            }
            ReadOutcome::Found(None) => {}
            ReadOutcome::Batches { .. } => unreachable!("timestamp reads find records"),
            ReadOutcome::Failed(why) => {
                tracing::warn!(%why, "timestamp lookup failed");
                pr.error_code = code::KAFKA_STORAGE_ERROR;
            }
        }
        assert!(p.outstanding > 0);
        p.outstanding -= 1;
        if p.outstanding == 0 {
            let response = std::mem::take(&mut p.response);
            self.finish(owner.request, Some(ResponseKind::ListOffsets(response)));
        }
    }

    /// Answers from each leader's epoch history (Kafka's leader-epoch-checkpoint): the
    /// largest epoch at or below the one asked, and the offset where it ends.
    pub(crate) fn handle_offset_for_leader_epoch(&self, req: OffsetForLeaderEpochRequest) -> ResponseKind {
        let mut response = OffsetForLeaderEpochResponse::default();
        for t in req.topics {
            let name = t.topic.0.as_str().to_string();
            let mut tr = OffsetForLeaderTopicResult::default().with_topic(t.topic);
            for p in t.partitions {
                let mut r = EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                match self
                    .partitions
                    .get(&(name.clone(), p.partition))
                    .and_then(|id| self.logs.get(id))
                {
                    None => r.error_code = self.missing_partition_code(&name, p.partition),
                    Some(log) if !log.is_serving() => r.error_code = code::NOT_LEADER_OR_FOLLOWER,
                    Some(log) if p.current_leader_epoch > log.leader_epoch => {
                        r.error_code = code::UNKNOWN_LEADER_EPOCH
                    }
                    Some(log) if p.current_leader_epoch >= 0 && p.current_leader_epoch < log.leader_epoch => {
                        r.error_code = code::FENCED_LEADER_EPOCH
                    }
                    // Kafka's answer from the epoch history: the largest epoch <= the one
                    // asked and where it ends, so a client can see that its log diverged.
                    Some(log) => {
                        if let Some((epoch, end)) = log.end_for_epoch(p.leader_epoch) {
                            r.leader_epoch = epoch;
                            r.end_offset = end as i64;
                        }
                    }
                }
                tr.partitions.push(r);
            }
            response.topics.push(tr);
        }
        ResponseKind::OffsetForLeaderEpoch(response)
    }
}
