//! Idempotent producers' state on one partition replica (Kafka's `ProducerStateManager`):
//! for each producer id, the last [`BATCHES_KEPT`] batches it appended here, each with its
//! producer epoch, sequence range and offsets. The leader checks a produced batch against
//! it ([`ProducerStates::check`]); every replica updates it from every batch it appends
//! ([`ProducerStates::observe`]), so a new leader knows what it replicated.
//!
//! Invariants: it describes exactly the batches below the log end (a cut or a rewind drops
//! the batches it removed, [`ProducerStates::truncate_from`]); each producer's batches are
//! in offset order and their epochs never decrease; a producer with no batch left is
//! forgotten. Rebuilt at start from the batch headers on disk (see `recovery.rs`).

use std::collections::{BTreeMap, VecDeque};

use crate::batch::BatchView;

/// Batches remembered per producer: Kafka's, which is also the most a client keeps in flight
/// (`max.in.flight.requests.per.connection` <= 5 with idempotence).
pub const BATCHES_KEPT: usize = 5;

/// A producer not seen for this long is forgotten (Kafka's `producer.id.expiration.ms`).
/// A batch from it after that is accepted whatever its sequence, as Kafka does.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

/// How often expired producers are looked for (Kafka's
/// `producer.id.expiration.check.interval.ms`).
const EXPIRATION_CHECK_INTERVAL_MS: i64 = 10 * 60 * 1000;

/// The idempotence fields of one batch's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

impl ProducerBatch {
    /// The producer fields of a data batch written by an idempotent producer; `None` for a
    /// batch without a producer id and for control batches.
    pub fn of(view: &BatchView) -> Option<ProducerBatch> {
        if view.producer_id() < 0 || view.is_control() {
            return None;
        }
        let first_seq = view.base_sequence();
        Some(ProducerBatch {
            producer_id: view.producer_id(),
            epoch: view.producer_epoch(),
            first_seq,
            last_seq: increment_sequence(first_seq, view.last_offset_delta()),
        })
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from i32::MAX to 0.
pub fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

/// `next` follows `last` (Kafka's `ProducerAppendInfo.inSequence`).
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// One appended batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ProducerEntry {
    /// Oldest first; never empty; at most [`BATCHES_KEPT`].
    batches: VecDeque<BatchMeta>,
    /// Wall time (ms) this producer was last seen: the append time on a live replica, the
    /// batch's max timestamp when rebuilt from disk.
    last_seen_ms: i64,
}

/// What the leader does with a produced batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it (and then [`ProducerStates::observe`] it).
    Append,
    /// A retry of a batch already in the log at these offsets: append nothing, answer with
    /// the original's offsets once it is acknowledged.
    Duplicate { base_offset: u64, last_offset: u64 },
    /// An epoch older than the producer's current one (INVALID_PRODUCER_EPOCH).
    StaleEpoch { current: i16 },
    /// A sequence that does not follow the last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrder { expected_after: i32 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    /// When to look for expired producers next (wall ms).
    next_expiry_check_ms: i64,
}

impl ProducerStates {
    pub fn new() -> ProducerStates {
        ProducerStates::default()
    }

    /// Producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The producer's current epoch and last sequence, if it is tracked.
    pub fn last(&self, producer_id: i64) -> Option<(i16, i32)> {
        let b = self.producers.get(&producer_id)?.batches.back()?;
        Some((b.epoch, b.last_seq))
    }

    /// Kafka's rules for a client's batch (`UnifiedLog.analyzeAndValidateProducerState`,
    /// `ProducerAppendInfo.checkProducerEpoch` / `checkSequence`), against every batch
    /// appended here, acknowledged or not.
    pub fn check(&self, b: &ProducerBatch) -> Verdict {
        let Some(entry) = self.producers.get(&b.producer_id) else {
            // Unknown (never seen, or expired): accepted with any sequence, as Kafka does.
            return Verdict::Append;
        };
        let Some(last) = entry.batches.back() else {
            unreachable!("a tracked producer has a batch")
        };
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|m| m.epoch == b.epoch && m.first_seq == b.first_seq && m.last_seq == b.last_seq)
        {
            return Verdict::Duplicate {
                base_offset: dup.base_offset,
                last_offset: dup.last_offset,
            };
        }
        if b.epoch < last.epoch {
            return Verdict::StaleEpoch { current: last.epoch };
        }
        if b.epoch > last.epoch {
            // A new epoch starts its sequences at 0.
            if b.first_seq == 0 {
                return Verdict::Append;
            }
            return Verdict::OutOfOrder { expected_after: -1 };
        }
        if in_sequence(last.last_seq, b.first_seq) {
            Verdict::Append
        } else {
            Verdict::OutOfOrder {
                expected_after: last.last_seq,
            }
        }
    }

    /// Records a batch appended at `base..=last` (every replica, every append, in offset
    /// order). A batch with an epoch older than the producer's is not remembered (only a
    /// producer that expired here and came back could write one), nor one that does not
    /// follow the producer's last (only damaged files read at recovery could hold one).
    pub fn observe(&mut self, b: &ProducerBatch, base: u64, last: u64, seen_ms: i64) {
        assert!(b.producer_id >= 0);
        if last < base {
            return;
        }
        let entry = self.producers.entry(b.producer_id).or_default();
        if let Some(prev) = entry.batches.back() {
            if prev.last_offset >= base {
                tracing::warn!(
                    producer_id = b.producer_id,
                    base,
                    "producer batch out of offset order"
                );
                return;
            }
            if b.epoch < prev.epoch {
                tracing::debug!(
                    producer_id = b.producer_id,
                    epoch = b.epoch,
                    "batch of an older epoch"
                );
                return;
            }
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            epoch: b.epoch,
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            base_offset: base,
            last_offset: last,
        });
        entry.last_seen_ms = entry.last_seen_ms.max(seen_ms);
        assert!(entry.batches.len() <= BATCHES_KEPT);
    }

    /// Forgets every batch at or after `offset` (a cut of a divergent suffix, or the rewind
    /// after a failed write); a producer left without batches is forgotten entirely, so it
    /// is treated like an expired one (any sequence accepted).
    pub fn truncate_from(&mut self, offset: u64) {
        self.producers.retain(|_, e| {
            while e.batches.back().is_some_and(|m| m.base_offset >= offset) {
                e.batches.pop_back();
            }
            !e.batches.is_empty()
        });
        debug_assert!(self
            .producers
            .values()
            .all(|e| e.batches.back().is_some_and(|m| m.last_offset < offset)));
    }

    /// Drops producers not seen for [`PRODUCER_ID_EXPIRATION_MS`], at most once per check
    /// interval (the scan visits every producer).
    pub fn expire(&mut self, now_ms: i64) {
        if now_ms < self.next_expiry_check_ms {
            return;
        }
        self.next_expiry_check_ms = now_ms.saturating_add(EXPIRATION_CHECK_INTERVAL_MS);
        let before = now_ms.saturating_sub(PRODUCER_ID_EXPIRATION_MS);
        self.producers.retain(|_, e| e.last_seen_ms > before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(id: i64, epoch: i16, first: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: id,
            epoch,
            first_seq: first,
            last_seq: increment_sequence(first, count - 1),
        }
    }

    /// Observes `count`-record batches from `first` at consecutive offsets from `base`.
    fn fill(s: &mut ProducerStates, id: i64, epoch: i16, first: i32, count: i32, base: u64, n: usize) {
        let mut seq = first;
        let mut at = base;
        for _ in 0..n {
            let b = pb(id, epoch, seq, count);
            assert_eq!(s.check(&b), Verdict::Append);
            s.observe(&b, at, at + count as u64 - 1, 1000);
            seq = increment_sequence(seq, count);
            at += count as u64;
        }
    }

    #[test]
    fn unknown_producers_are_accepted_with_any_sequence() {
        let s = ProducerStates::new();
        assert_eq!(s.check(&pb(7, 0, 0, 3)), Verdict::Append);
        assert_eq!(s.check(&pb(7, 3, 42, 3)), Verdict::Append);
    }

    #[test]
    fn duplicates_of_the_last_five_batches_are_found_with_their_offsets() {
        let mut s = ProducerStates::new();
        fill(&mut s, 7, 0, 0, 2, 10, 6); // seqs 0..12 at offsets 10..22
        assert_eq!(s.len(), 1);
        // The first batch (seq 0-1) fell out of the five kept.
        assert_eq!(
            s.check(&pb(7, 0, 0, 2)),
            Verdict::OutOfOrder { expected_after: 11 }
        );
        for i in 1..6 {
            assert_eq!(
                s.check(&pb(7, 0, 2 * i, 2)),
                Verdict::Duplicate {
                    base_offset: 10 + 2 * i as u64,
                    last_offset: 11 + 2 * i as u64
                }
            );
        }
        assert_eq!(s.check(&pb(7, 0, 12, 5)), Verdict::Append);
        // Same first sequence, different length: not a duplicate, and out of order.
        assert_eq!(
            s.check(&pb(7, 0, 10, 3)),
            Verdict::OutOfOrder { expected_after: 11 }
        );
    }

    #[test]
    fn gaps_and_reorders_are_out_of_order() {
        let mut s = ProducerStates::new();
        fill(&mut s, 1, 0, 0, 1, 0, 3);
        assert_eq!(
            s.check(&pb(1, 0, 4, 1)),
            Verdict::OutOfOrder { expected_after: 2 }
        );
        assert_eq!(s.check(&pb(1, 0, 3, 1)), Verdict::Append);
        // A new epoch must start at 0.
        assert_eq!(
            s.check(&pb(1, 1, 5, 1)),
            Verdict::OutOfOrder { expected_after: -1 }
        );
        assert_eq!(s.check(&pb(1, 1, 0, 1)), Verdict::Append);
    }

    #[test]
    fn older_epochs_are_fenced() {
        let mut s = ProducerStates::new();
        fill(&mut s, 1, 0, 0, 1, 0, 2);
        fill(&mut s, 1, 3, 0, 1, 2, 1);
        assert_eq!(s.last(1), Some((3, 0)));
        assert_eq!(s.check(&pb(1, 2, 1, 1)), Verdict::StaleEpoch { current: 3 });
        // A retry of an old-epoch batch still in the last five is a duplicate (Kafka matches
        // duplicates before it checks the epoch).
        assert_eq!(
            s.check(&pb(1, 0, 1, 1)),
            Verdict::Duplicate {
                base_offset: 1,
                last_offset: 1
            }
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::new();
        let b = pb(1, 0, i32::MAX - 1, 2);
        assert_eq!(b.last_seq, i32::MAX);
        s.observe(&b, 0, 1, 0);
        assert_eq!(s.check(&pb(1, 0, 0, 1)), Verdict::Append);
        assert_eq!(increment_sequence(i32::MAX, 2), 1);
    }

    #[test]
    fn truncation_forgets_cut_batches_and_empty_producers() {
        let mut s = ProducerStates::new();
        fill(&mut s, 1, 0, 0, 1, 0, 4); // offsets 0..=3
        fill(&mut s, 2, 0, 0, 2, 4, 2); // offsets 4..=7
        fill(&mut s, 1, 1, 0, 1, 8, 1); // offset 8, epoch 1
        s.truncate_from(6);
        // Producer 1 is back at epoch 0, seq 3; its cut epoch-1 batch is not a duplicate.
        assert_eq!(s.last(1), Some((0, 3)));
        assert_eq!(s.check(&pb(1, 1, 0, 1)), Verdict::Append);
        assert_eq!(s.last(2), Some((0, 1)));
        // The cut batch of producer 2 (seq 2-3) is new again, not a duplicate.
        assert_eq!(s.check(&pb(2, 0, 2, 2)), Verdict::Append);
        s.truncate_from(4);
        assert_eq!(s.last(2), None);
        assert_eq!(s.len(), 1);
        s.truncate_from(0);
        assert!(s.is_empty());
    }

    #[test]
    fn producers_expire_after_a_day_unseen() {
        let mut s = ProducerStates::new();
        let day = PRODUCER_ID_EXPIRATION_MS;
        s.observe(&pb(1, 0, 0, 1), 0, 0, 1_000);
        s.observe(&pb(2, 0, 0, 1), 1, 1, 1_000 + day / 2);
        s.expire(1_000 + day);
        assert_eq!(s.last(1), None);
        assert_eq!(s.last(2), Some((0, 0)));
        // Checked at most once per interval: a minute later producer 2 is due but stays.
        s.expire(1_000 + day + day / 2 - 60_000 + 1);
        s.expire(1_000 + day + day / 2 + 60_000);
        assert_eq!(s.last(2), Some((0, 0)));
        s.expire(1_000 + 2 * day);
        assert!(s.is_empty());
    }

    #[test]
    fn rebuilding_from_headers_gives_the_same_state() {
        // Observing the same batches in the same order gives equal states: recovery's
        // rebuild (a scan of the headers) and the live replica agree.
        let batches: Vec<(ProducerBatch, u64, u64)> = (0..20)
            .map(|i| {
                (
                    pb(i % 3, 0, (i / 3) as i32 * 2, 2),
                    2 * i as u64,
                    2 * i as u64 + 1,
                )
            })
            .collect();
        let mut live = ProducerStates::new();
        let mut rebuilt = ProducerStates::new();
        for (b, base, last) in &batches {
            live.observe(b, *base, *last, 5);
        }
        for (b, base, last) in &batches {
            rebuilt.observe(b, *base, *last, 5);
        }
        assert_eq!(live, rebuilt);
        assert_eq!(live.last(0), Some((0, 13)));
    }
}
