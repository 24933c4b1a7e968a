//! A partition's log: offset assignment, segment roll, group commit, and the rewind after a
//! failed write. It emits IO through an [`IoQueue`] and learns of completions through
//! [`PartitionLog::on_io_done`].
//!
//! Invariants:
//! - `durable_end <= emitted_end <= leo`: offsets below `durable_end` are fsynced and are
//!   all a client may read (the high watermark); `emitted_end` is where written (emitted)
//!   appends stop; batches in `[emitted_end, leo)` wait in `deferred` for a roll to finish.
//! - Only the active (last) segment can hold bytes that are not yet durable: a new segment
//!   file is created only once every earlier offset is durable. Recovery relies on this.
//! - At most one sync round is in flight; it covers `emitted_end` as of its emission.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::epochs::{EpochHistory, CHECKPOINT_FILE};
use super::recovery::Recovered;
use super::segment::Segment;
use super::stored::StoredBatch;
use super::tail::TailCache;
use crate::batch::BatchInfo;
use crate::config::{LogConfig, TimestampType};
use crate::engine::{IoQueue, IoTag};
use crate::io::{IoOp, IoResult};

/// Identifies one partition log for the life of the engine (never reused, so a late IO
/// completion for a deleted partition cannot reach a new one).
pub type LogId = u64;

/// What an outstanding IO op of a partition was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartIo {
    Append {
        start: u64,
        end: u64,
        segment: u64,
        position: u64,
    },
    Sync {
        covers_end: u64,
        covers_position: u64,
    },
    CreateSegment {
        base: u64,
    },
    WriteIndex,
    /// The leader epoch checkpoint was replaced (nothing waits on it: recovery corrects it).
    WriteEpochs,
    Repair,
}

/// What a completion changed, for the layers that wait on the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogEvent {
    /// `durable_end` (or, with the planted bug, `written_end`) moved forward.
    pub advanced: bool,
    /// Writes from this offset on failed and will never become durable.
    pub failed_from: Option<u64>,
    /// An fsync failed: the node must stop.
    pub fatal: Option<&'static str>,
}

/// Why an append was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The log is rewinding after a failed write (disk full or IO error).
    Storage,
}

#[derive(Clone, Copy, Debug)]
struct Broken {
    offset: u64,
    segment: u64,
    position: u64,
}

struct Deferred {
    base: u64,
    last: u64,
    max_ts: i64,
    bytes: StoredBatch,
}

pub struct PartitionLog {
    pub id: LogId,
    pub dir: String,
    pub config: LogConfig,
    pub leader_epoch: i32,
    pub log_start_offset: u64,
    segments: BTreeMap<u64, Segment>,
    leo: u64,
    emitted_end: u64,
    written_end: u64,
    durable_end: u64,
    /// Byte position of `durable_end` in the active segment: readers never read past it.
    durable_position: u64,
    inflight: u32,
    sync_in_flight: bool,
    /// Base offset of the segment being created, while a roll is under way.
    roll_at: Option<u64>,
    roll_creating: bool,
    deferred: VecDeque<Deferred>,
    broken: Option<Broken>,
    repairing: bool,
    /// Which epoch wrote which offsets: covers `[log_start_offset, leo)`.
    epochs: EpochHistory,
    pub tail: TailCache,
}

impl PartitionLog {
    /// A log over recovered segments (at least one; the last is the active one), all of
    /// whose bytes are durable.
    pub fn new(
        id: LogId,
        dir: String,
        config: LogConfig,
        recovered: Recovered,
        tail_cache_bytes: usize,
    ) -> Self {
        let Recovered { segments, epochs } = recovered;
        assert!(!segments.is_empty(), "a log has an active segment");
        let leo = segments.last().map_or(0, |s| s.next_offset);
        let durable_position = segments.last().map_or(0, |s| s.size_bytes);
        let log_start_offset = segments.first().map_or(0, |s| s.base_offset);
        let segments: BTreeMap<u64, Segment> = segments.into_iter().map(|s| (s.base_offset, s)).collect();
        PartitionLog {
            id,
            dir,
            config,
            leader_epoch: 0,
            log_start_offset,
            segments,
            leo,
            emitted_end: leo,
            written_end: leo,
            durable_end: leo,
            durable_position,
            inflight: 0,
            sync_in_flight: false,
            roll_at: None,
            roll_creating: false,
            deferred: VecDeque::new(),
            broken: None,
            repairing: false,
            epochs,
            tail: TailCache::new(tail_cache_bytes),
        }
    }

    /// The leader epoch history (Kafka's leader-epoch-checkpoint).
    pub fn epochs(&self) -> &EpochHistory {
        &self.epochs
    }

    /// Epoch of the batch holding `offset`, if the log holds it.
    pub fn epoch_at(&self, offset: u64) -> Option<i32> {
        if offset < self.log_start_offset || offset >= self.leo {
            return None;
        }
        self.epochs.epoch_at(offset)
    }

    /// The epoch of the last batch (0 for a log that never held one).
    pub fn last_epoch(&self) -> i32 {
        self.epochs.latest().unwrap_or(0)
    }

    /// Kafka's OffsetForLeaderEpoch on this log.
    pub fn end_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        self.epochs.end_for_epoch(epoch, self.leo)
    }

    /// One past the last offset known durable on this replica.
    pub fn durable_end(&self) -> u64 {
        self.durable_end
    }

    /// Records that `epoch` writes from `base` on, persisting the history when it changed.
    /// Emitted before the batch's own append on the same directory, so the checkpoint is
    /// durable before any batch of the new epoch is.
    fn note_epoch(&mut self, q: &mut IoQueue, epoch: i32, base: u64) {
        if self.epochs.assign(epoch, base) {
            self.write_epochs(q);
        }
    }

    fn write_epochs(&mut self, q: &mut IoQueue) {
        self.inflight += 1;
        let op = IoOp::WriteState {
            file: format!("{}/{CHECKPOINT_FILE}", self.dir),
            data: Bytes::from(self.epochs.encode()),
        };
        q.submit(op, IoTag::Log(self.id, PartIo::WriteEpochs));
    }

    /// The log end offset: the next offset to be assigned.
    pub fn log_end_offset(&self) -> u64 {
        self.leo
    }

    /// The high watermark: every offset below it is fsynced and readable.
    pub fn high_watermark(&self) -> u64 {
        self.durable_end
    }

    /// The end a produce may be acknowledged against: durable, unless a planted bug says
    /// written is enough.
    pub fn ack_end(&self, ack_before_fsync: bool) -> u64 {
        if ack_before_fsync {
            self.written_end
        } else {
            self.durable_end
        }
    }

    pub fn segments(&self) -> &BTreeMap<u64, Segment> {
        &self.segments
    }

    /// True when nothing is in flight and every emitted byte is durable.
    pub fn is_quiet(&self) -> bool {
        self.inflight == 0 && self.deferred.is_empty() && self.durable_end == self.leo
    }

    fn active(&self) -> &Segment {
        // Invariant: at least one segment (asserted in `new`, never removed below one).
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Appends one validated batch, leaving `records` untouched (see [`StoredBatch`]).
    /// Returns its first and last offsets. The batch becomes readable once durable.
    pub(crate) fn append(
        &mut self,
        q: &mut IoQueue,
        records: &Bytes,
        info: BatchInfo,
        wall_ms: i64,
    ) -> Result<(u64, u64), AppendError> {
        if self.broken.is_some() {
            return Err(AppendError::Storage);
        }
        assert!(info.record_count >= 1 && info.last_offset_delta >= 0);
        let base = self.leo;
        let last = base + info.last_offset_delta as u64;
        let log_append_time = (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(wall_ms);
        let bytes = StoredBatch::stamp(records, base as i64, self.leader_epoch, log_append_time);
        let max_ts = log_append_time.unwrap_or(info.max_timestamp);
        self.note_epoch(q, self.leader_epoch, base);
        self.leo = last + 1;
        self.tail.push(base, last, bytes.clone());
        self.deferred.push_back(Deferred {
            base,
            last,
            max_ts,
            bytes,
        });
        self.flush_deferred(q, wall_ms);
        self.maybe_sync(q);
        Ok((base, last))
    }

    fn needs_roll(&self, size_bytes: u64, last: u64, wall_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let too_big = active.size_bytes + size_bytes > self.config.segment_bytes;
        let too_old = active
            .first_append_wall_ms
            .is_some_and(|t| wall_ms.saturating_sub(t) >= self.config.segment_ms);
        let offsets_overflow = last - active.base_offset > u64::from(u32::MAX) / 2;
        let positions_overflow = active.size_bytes + size_bytes > u64::from(u32::MAX) / 2;
        too_big || too_old || offsets_overflow || positions_overflow
    }

    /// Writes deferred batches in order until one needs a roll that has not finished.
    fn flush_deferred(&mut self, q: &mut IoQueue, wall_ms: i64) {
        while self.roll_at.is_none() {
            let Some(front) = self.deferred.front() else {
                return;
            };
            if self.needs_roll(front.bytes.len() as u64, front.last, wall_ms) {
                self.roll_at = Some(front.base);
                self.try_finish_roll(q);
                return;
            }
            let Some(d) = self.deferred.pop_front() else {
                return;
            };
            self.write(q, d, wall_ms);
        }
    }

    fn write(&mut self, q: &mut IoQueue, d: Deferred, wall_ms: i64) {
        assert_eq!(d.base, self.emitted_end, "writes are emitted densely");
        let interval = self.config.index_interval_bytes;
        let size = d.bytes.len() as u64;
        let seg = self.active_mut();
        let position = seg.size_bytes;
        seg.first_append_wall_ms.get_or_insert(wall_ms);
        seg.note_batch(d.base, d.last, d.max_ts, size, interval);
        let (file, segment) = (seg.file.clone(), seg.base_offset);
        self.emitted_end = d.last + 1;
        self.inflight += 1;
        let tag = PartIo::Append {
            start: d.base,
            end: d.last + 1,
            segment,
            position,
        };
        q.submit(
            IoOp::Append {
                file,
                position,
                data: d.bytes.parts(),
            },
            IoTag::Log(self.id, tag),
        );
    }

    /// Starts a sync round if none is in flight and emitted bytes are not yet durable.
    fn maybe_sync(&mut self, q: &mut IoQueue) {
        if self.sync_in_flight || self.repairing || self.emitted_end <= self.durable_end {
            return;
        }
        self.sync_in_flight = true;
        self.inflight += 1;
        let active = self.active();
        let (file, covers_position) = (active.file.clone(), active.size_bytes);
        let tag = PartIo::Sync {
            covers_end: self.emitted_end,
            covers_position,
        };
        q.submit(IoOp::Sync { file }, IoTag::Log(self.id, tag));
    }

    /// A roll proceeds once every offset before the new segment is durable.
    fn try_finish_roll(&mut self, q: &mut IoQueue) {
        let Some(roll_at) = self.roll_at else { return };
        if self.roll_creating || self.durable_end < roll_at || self.broken.is_some() {
            return;
        }
        assert_eq!(self.emitted_end, roll_at);
        let old = self.active_mut();
        old.seal_time_index();
        let (index_file, index) = (old.index_file(), Bytes::from(old.index.encode()));
        let (time_file, time_index) = (old.time_index_file(), Bytes::from(old.time_index.encode()));
        self.inflight += 3;
        q.submit(
            IoOp::WriteState {
                file: index_file,
                data: index,
            },
            IoTag::Log(self.id, PartIo::WriteIndex),
        );
        q.submit(
            IoOp::WriteState {
                file: time_file,
                data: time_index,
            },
            IoTag::Log(self.id, PartIo::WriteIndex),
        );
        let new = Segment::new(&self.dir, roll_at);
        self.roll_creating = true;
        q.submit(
            IoOp::CreateFile {
                file: new.file.clone(),
            },
            IoTag::Log(self.id, PartIo::CreateSegment { base: roll_at }),
        );
        self.segments.insert(roll_at, new);
        self.durable_position = 0;
        tracing::info!(dir = %self.dir, base_offset = roll_at, "segment rolled");
    }

    /// Handles the completion of one of this log's IO ops.
    pub(crate) fn on_io_done(
        &mut self,
        q: &mut IoQueue,
        io: PartIo,
        result: &IoResult,
        wall_ms: i64,
    ) -> LogEvent {
        assert!(self.inflight > 0, "a completion for an op we emitted");
        self.inflight -= 1;
        let failed = matches!(result, IoResult::Err(_));
        let mut ev = LogEvent::default();
        match io {
            PartIo::Append {
                start,
                end,
                segment,
                position,
            } => {
                if failed {
                    tracing::warn!(dir = %self.dir, offset = start, ?result, "append failed; rewinding");
                    self.mark_broken(
                        Broken {
                            offset: start,
                            segment,
                            position,
                        },
                        &mut ev,
                    );
                } else if self.broken.is_none_or(|b| end <= b.offset) {
                    assert_eq!(start, self.written_end, "appends on one file complete in order");
                    self.written_end = end;
                    ev.advanced = true;
                }
            }
            PartIo::Sync {
                covers_end,
                covers_position,
            } => {
                self.sync_in_flight = false;
                if failed {
                    ev.fatal = Some("fsync failed");
                    return ev;
                }
                let (cap, position) = match self.broken {
                    Some(b) if b.offset < covers_end => (b.offset, b.position),
                    _ => (covers_end, covers_position),
                };
                if cap > self.durable_end {
                    self.durable_end = cap;
                    self.durable_position = position;
                    ev.advanced = true;
                }
            }
            PartIo::CreateSegment { base } => {
                self.roll_creating = false;
                if failed {
                    self.mark_broken(
                        Broken {
                            offset: base,
                            segment: base,
                            position: 0,
                        },
                        &mut ev,
                    );
                } else {
                    assert_eq!(self.roll_at, Some(base));
                    self.roll_at = None;
                }
            }
            PartIo::WriteIndex => {
                // A lost index is rebuilt at recovery; nothing waits on it.
            }
            PartIo::WriteEpochs => {
                if failed {
                    // Recovery re-reads only the last segment: a history lost for older
                    // segments would leave Raft unable to match their offsets.
                    ev.fatal = Some("writing the leader epoch checkpoint failed");
                    return ev;
                }
            }
            PartIo::Repair => {
                if failed {
                    ev.fatal = Some("truncate during rewind failed");
                    return ev;
                }
                self.repairing = false;
                self.broken = None;
            }
        }
        if self.broken.is_some() {
            self.try_repair(q);
        } else {
            self.try_finish_roll(q);
            self.flush_deferred(q, wall_ms);
            self.maybe_sync(q);
        }
        ev
    }

    fn mark_broken(&mut self, b: Broken, ev: &mut LogEvent) {
        let earliest = match self.broken {
            Some(prev) if prev.offset <= b.offset => prev,
            _ => b,
        };
        self.broken = Some(earliest);
        ev.failed_from = Some(earliest.offset);
    }

    /// Once nothing is in flight: make everything before the failure durable, then cut the
    /// log back to it and accept writes again.
    fn try_repair(&mut self, q: &mut IoQueue) {
        let Some(b) = self.broken else { return };
        if self.inflight > 0 || self.repairing {
            return;
        }
        if self.durable_end < b.offset {
            self.sync_in_flight = true;
            self.inflight += 1;
            let file = self
                .segments
                .get(&b.segment)
                .map_or_else(|| self.active().file.clone(), |s| s.file.clone());
            let tag = PartIo::Sync {
                covers_end: b.offset,
                covers_position: b.position,
            };
            q.submit(IoOp::Sync { file }, IoTag::Log(self.id, tag));
            return;
        }
        assert_eq!(self.durable_end, b.offset);
        self.deferred.clear();
        self.tail.truncate_from(b.offset);
        self.leo = b.offset;
        self.emitted_end = b.offset;
        self.written_end = self.written_end.min(b.offset);
        self.roll_at = None;
        let op = if b.position == 0 && b.segment > self.first_base() {
            // The failed write was the first of a new segment: drop the segment entirely.
            let seg = self.segments.remove(&b.segment);
            IoOp::Delete {
                path: seg.map_or_else(|| Segment::new(&self.dir, b.segment).file, |s| s.file),
            }
        } else {
            let Some(seg) = self.segments.get_mut(&b.segment) else {
                unreachable!("a failed append names a segment of this log")
            };
            seg.truncate_to(b.offset, b.position);
            IoOp::Truncate {
                file: seg.file.clone(),
                len: b.position,
            }
        };
        self.durable_position = self.active().size_bytes;
        self.repairing = true;
        self.inflight += 1;
        q.submit(op, IoTag::Log(self.id, PartIo::Repair));
    }

    fn first_base(&self) -> u64 {
        self.segments.keys().next().copied().unwrap_or(0)
    }

    /// Bytes of the segment based at `base` that are durable and so safe to read: all of a
    /// closed segment, up to the high watermark's position in the active one.
    pub fn readable_bytes(&self, base: u64) -> u64 {
        let active = self.active();
        match self.segments.get(&base) {
            Some(seg) if seg.base_offset == active.base_offset => self.durable_position.min(seg.size_bytes),
            Some(seg) => seg.size_bytes,
            None => 0,
        }
    }

    /// The segment holding `offset` (the last one with base <= offset).
    pub fn segment_for(&self, offset: u64) -> Option<&Segment> {
        self.segments.range(..=offset).next_back().map(|(_, s)| s)
    }

    /// The segment after the one based at `base`.
    pub fn segment_after(&self, base: u64) -> Option<&Segment> {
        self.segments.range(base + 1..).next().map(|(_, s)| s)
    }
}
