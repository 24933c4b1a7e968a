//! Produce: validate each partition's batch, append it on the partition's Raft leader, and
//! answer once every appended batch is acknowledged: acks=1 when the leader has it fsynced,
//! acks=all when the high watermark (Raft's commit end) passes it; acks=0 gets no answer.
//!
//! A batch of an idempotent producer is first checked against the partition's producer
//! state (`log/producers.rs`), which covers every appended batch, acknowledged or not. A
//! retry of one of the producer's last five batches appends nothing and is answered with
//! the original's base offset once the original is acknowledged (it waits exactly as the
//! original's own answer does).

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use super::{code, str_bytes, Ctx, PendingBody};
use crate::batch::{validate_produce, BatchView};
use crate::config::TimestampType;
use crate::engine::Engine;
use crate::log::partition::LogId;
use crate::log::producers::{ProducerBatch, Verdict};
use crate::Output;

#[derive(Debug)]
pub(crate) struct PendingProduce {
    response: ProduceResponse,
    /// For each slot: (topic index, partition index) in `response`.
    slots: Vec<(usize, usize)>,
    outstanding: usize,
}

impl Engine {
    pub(crate) fn handle_produce(&mut self, ctx: Ctx, req: ProduceRequest) {
        let acks = req.acks;
        let acks_valid = matches!(acks, -1..=1);
        let mut response = ProduceResponse::default();
        let mut waits: Vec<(LogId, u64, usize, bool)> = Vec::new();
        let mut slots = Vec::new();
        let mut any_error = false;
        for (ti, topic) in req.topic_data.into_iter().enumerate() {
            let name = topic.name.0.as_str().to_string();
            let mut tr = TopicProduceResponse::default().with_name(topic.name.clone());
            for (pi, part) in topic.partition_data.into_iter().enumerate() {
                let mut pr = PartitionProduceResponse::default()
                    .with_index(part.index)
                    .with_base_offset(-1);
                let outcome = if acks_valid {
                    self.produce_one(&name, part.index, part.records, acks == -1)
                } else {
                    Err((code::INVALID_REQUIRED_ACKS, None))
                };
                match outcome {
                    Ok((log, base, last, append_time, log_start)) => {
                        pr = pr
                            .with_base_offset(base as i64)
                            .with_log_append_time_ms(append_time)
                            .with_log_start_offset(log_start);
                        if acks != 0 {
                            waits.push((log, last, slots.len(), acks == -1));
                        }
                    }
                    Err((error, message)) => {
                        any_error = true;
                        pr = pr
                            .with_error_code(error)
                            .with_error_message(message.map(|m| str_bytes(&m)));
                    }
                }
                slots.push((ti, pi));
                tr.partition_responses.push(pr);
            }
            response.responses.push(tr);
        }
        if acks == 0 {
            // Kafka closes the connection so a fire-and-forget producer notices the error.
            let out = if any_error {
                Output::CloseConnection { conn: ctx.conn }
            } else {
                Output::ClientResponse {
                    conn: ctx.conn,
                    seq: ctx.seq,
                    frame: None,
                }
            };
            self.kafka.responses.push(out);
            return;
        }
        if waits.is_empty() {
            self.respond(&ctx, ResponseKind::Produce(response));
            return;
        }
        let outstanding = waits.len();
        let id = self.park(
            ctx,
            PendingBody::Produce(PendingProduce {
                response,
                slots,
                outstanding,
            }),
        );
        // acks=all waits for other replicas: it must not outlive the client's timeout
        // (a leader that keeps its quorum's contact but cannot commit, e.g. a stuck disk).
        if acks == -1 && req.timeout_ms > 0 {
            let at = self.now.mono_ms + req.timeout_ms as u64;
            self.kafka.deadlines.insert((at, id));
        }
        let logs: Vec<LogId> = waits.iter().map(|w| w.0).collect();
        for (log, last, slot, all) in waits {
            if all {
                self.kafka.produce_waits.insert((log, last, id, slot));
            } else {
                self.kafka.produce_waits_leader.insert((log, last, id, slot));
            }
        }
        for log in logs {
            self.produce_log_advanced(log);
        }
    }

    /// Appends one partition's records: `(log, base, last, log append time, log start)`.
    #[allow(clippy::type_complexity)]
    fn produce_one(
        &mut self,
        topic: &str,
        partition: i32,
        records: Option<bytes::Bytes>,
        acks_all: bool,
    ) -> Result<(LogId, u64, u64, i64, i64), (i16, Option<String>)> {
        if topic == super::groups::OFFSETS_TOPIC {
            return Err((
                code::INVALID_TOPIC_EXCEPTION,
                Some(format!("producing to the internal topic {topic} is not allowed")),
            ));
        }
        let Some(&log_id) = self.partitions.get(&(topic.to_string(), partition)) else {
            return Err((self.missing_partition_code(topic, partition), None));
        };
        let wall_ms = self.now.wall_ms;
        // A log no replica drives is its own only replica.
        let live = self.live_replicas(log_id).unwrap_or(1);
        let replicas = self.replica_of(log_id).map_or(1, |r| r.voters.len());
        let Some(log) = self.logs.get_mut(&log_id) else {
            return Err((code::UNKNOWN_TOPIC_OR_PARTITION, None));
        };
        if !log.is_leader {
            return Err((code::NOT_LEADER_OR_FOLLOWER, None));
        }
        // acks=all needs a majority (Raft's commit rule) and at least min.insync.replicas
        // replicas reachable, as Kafka counts its in-sync replicas.
        let needed = (replicas / 2 + 1).max(usize::try_from(log.config.min_insync_replicas).unwrap_or(1));
        if acks_all && live < needed {
            return Err((
                code::NOT_ENOUGH_REPLICAS,
                Some(format!(
                    "{live} of the {needed} replicas an acks=all produce needs are reachable (replication factor {replicas}, min.insync.replicas {})",
                    log.config.min_insync_replicas
                )),
            ));
        }
        let records = records.unwrap_or_default();
        let info = validate_produce(&records, log.config.max_message_bytes)
            .map_err(|e| (e.error_code(), Some(e.to_string())))?;
        let append_time = if log.config.timestamp_type == TimestampType::LogAppendTime {
            wall_ms
        } else {
            -1
        };
        let log_start = log.log_start_offset as i64;
        if let Some(original) = check_producer(&log.producers, &records)? {
            // A retry: the original's offsets, acknowledged when the original is. (Kafka
            // answers a duplicate with the original's base offset and log start only.)
            return Ok((log_id, original.0, original.1, -1, log_start));
        }
        let (base, last) = log.append(&mut self.q, &records, info, wall_ms).map_err(|_| {
            (
                code::KAFKA_STORAGE_ERROR,
                Some("the log is recovering from a failed write".into()),
            )
        })?;
        Ok((log_id, base, last, append_time, log_start))
    }

    /// Answers the produces whose batches on `log` are now acknowledged.
    pub(crate) fn produce_log_advanced(&mut self, log: LogId) {
        let Some(l) = self.logs.get(&log) else { return };
        let planted = self.config.planted.ack_before_fsync();
        let leader_end = l.ack_end(planted);
        let all_end = if planted {
            leader_end
        } else {
            l.high_watermark().min(self.insync_end(log))
        };
        let mut done: Vec<(LogId, u64, u64, usize)> = self
            .kafka
            .produce_waits
            .range((log, 0, 0, 0)..(log, all_end, 0, 0))
            .copied()
            .collect();
        for w in &done {
            self.kafka.produce_waits.remove(w);
        }
        let leader: Vec<(LogId, u64, u64, usize)> = self
            .kafka
            .produce_waits_leader
            .range((log, 0, 0, 0)..(log, leader_end, 0, 0))
            .copied()
            .collect();
        for w in &leader {
            self.kafka.produce_waits_leader.remove(w);
        }
        done.extend(leader);
        for w in done {
            self.produce_slot_done(w.2, w.3, None);
        }
    }

    /// Fails the produces waiting on `log` for offsets at or after `from`.
    pub(crate) fn produce_log_failed(&mut self, log: LogId, from: u64, error: i16) {
        let mut failed = Vec::new();
        for waits in [
            &mut self.kafka.produce_waits,
            &mut self.kafka.produce_waits_leader,
        ] {
            let these: Vec<(LogId, u64, u64, usize)> = waits
                .range((log, from, 0, 0)..(log + 1, 0, 0, 0))
                .copied()
                .collect();
            for w in &these {
                waits.remove(w);
            }
            failed.extend(these);
        }
        for w in failed {
            self.produce_slot_done(w.2, w.3, Some(error));
        }
    }

    /// Produce `id` reached its timeout: its unanswered partitions get REQUEST_TIMED_OUT
    /// (the batches stay in the log and may still commit, as in Kafka).
    pub(crate) fn produce_deadline(&mut self, id: u64) {
        let mut expired = Vec::new();
        for waits in [
            &mut self.kafka.produce_waits,
            &mut self.kafka.produce_waits_leader,
        ] {
            let these: Vec<(LogId, u64, u64, usize)> = waits.iter().filter(|w| w.2 == id).copied().collect();
            for w in &these {
                waits.remove(w);
            }
            expired.extend(these);
        }
        for w in expired {
            self.produce_slot_done(id, w.3, Some(code::REQUEST_TIMED_OUT));
        }
    }

    fn produce_slot_done(&mut self, id: u64, slot: usize, error: Option<i16>) {
        let Some(p) = self.kafka.requests.get_mut(&id) else {
            return;
        };
        let PendingBody::Produce(pp) = &mut p.body else {
            return;
        };
        if let Some(error) = error {
            let (ti, pi) = pp.slots[slot];
            let pr = &mut pp.response.responses[ti].partition_responses[pi];
            pr.error_code = error;
            pr.base_offset = -1;
        }
        assert!(pp.outstanding > 0);
        pp.outstanding -= 1;
        if pp.outstanding == 0 {
            let response = std::mem::take(&mut pp.response);
            self.finish(id, Some(ResponseKind::Produce(response)));
        }
    }
}

/// Kafka's idempotence checks on a validated batch: `Ok(None)` to append it,
/// `Ok(Some((base, last)))` for a duplicate of the batch at those offsets.
#[allow(clippy::type_complexity)]
fn check_producer(
    producers: &crate::log::producers::ProducerStates,
    records: &bytes::Bytes,
) -> Result<Option<(u64, u64)>, (i16, Option<String>)> {
    let Ok(view) = BatchView::parse_unchecked_crc(records) else {
        unreachable!("validate_produce accepted exactly one whole batch")
    };
    let Some(batch) = ProducerBatch::of(&view) else {
        return Ok(None);
    };
    if batch.epoch < 0 || batch.first_seq < 0 {
        return Err((
            code::INVALID_RECORD,
            Some(format!(
                "a batch of producer {} needs an epoch and a sequence (got {} and {})",
                batch.producer_id, batch.epoch, batch.first_seq
            )),
        ));
    }
    match producers.check(&batch) {
        Verdict::Append => Ok(None),
        Verdict::Duplicate {
            base_offset,
            last_offset,
        } => {
            tracing::debug!(
                producer_id = batch.producer_id,
                seq = batch.first_seq,
                base_offset,
                "duplicate batch"
            );
            Ok(Some((base_offset, last_offset)))
        }
        Verdict::StaleEpoch { current } => Err((
            code::INVALID_PRODUCER_EPOCH,
            Some(format!(
                "producer {} epoch {} is older than its current epoch {current}",
                batch.producer_id, batch.epoch
            )),
        )),
        Verdict::OutOfOrder { expected_after } => Err((
            code::OUT_OF_ORDER_SEQUENCE_NUMBER,
            Some(if expected_after < 0 {
                format!(
                    "producer {} starts epoch {} at sequence {}, not 0",
                    batch.producer_id, batch.epoch, batch.first_seq
                )
            } else {
                format!(
                    "producer {} epoch {}: sequence {} does not follow {expected_after}",
                    batch.producer_id, batch.epoch, batch.first_seq
                )
            }),
        )),
    }
}
