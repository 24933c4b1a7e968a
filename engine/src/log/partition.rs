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
//! - While a cut (follower truncation, [`PartitionLog::truncate_from`]) is under way, the
//!   files may still hold bytes past the cut (`emitted_end > leo`, or past the cut offset
//!   once the new leader's entries are appended in memory); `durable_end` and `written_end`
//!   are clamped to the cut and stay there, nothing new is written, and the cut waits for
//!   every op in flight before it deletes and truncates files. An op in flight that
//!   completes meanwhile counts only for bytes below the cut.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::epochs::{EpochHistory, CHECKPOINT_FILE};
use super::producers::{ProducerBatch, ProducerStates};
use super::recovery::Recovered;
use super::segment::Segment;
use super::stored::StoredBatch;
use super::tail::TailCache;
use crate::batch::{self, BatchInfo};
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
    /// A read that looks for a cut's byte position.
    Locate,
    /// One delete or truncate of a cut.
    Cut,
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
    /// A rewind after a failed write finished: the log accepts writes again.
    pub repaired: bool,
}

/// Why an append was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The log is rewinding after a failed write (disk full or IO error).
    Storage,
    /// A replicated batch that does not continue this log (offset, epoch or bytes).
    Invalid(String),
}

/// A follower truncation in progress: every offset from `offset` on goes.
// The follower side (cuts, replicated appends) is driven by replication, which is being
// wired in (issue 4); until then only the tests below reach it.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Waiting for the ops in flight to finish.
    Waiting { offset: u64 },
    /// Reading the segment based at `segment` from `position` to find where `offset` starts.
    Locating {
        offset: u64,
        segment: u64,
        position: u64,
    },
    /// Deleting and truncating files; `ops` are still in flight.
    Cutting { offset: u64, ops: u32 },
}

#[cfg_attr(not(test), allow(dead_code))]
impl Cut {
    fn offset(self) -> u64 {
        match self {
            Cut::Waiting { offset } | Cut::Locating { offset, .. } | Cut::Cutting { offset, .. } => offset,
        }
    }
}

/// Bytes read per step while looking for a cut's position.
const LOCATE_READ_BYTES: u64 = 256 * 1024;

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
    cut: Option<Cut>,
    /// (base, last) of the most recent batches, newest last, for Raft's batch lookups.
    recent: VecDeque<(u64, u64)>,
    /// Idempotent producers' last batches: covers exactly `[log_start_offset, leo)`.
    pub producers: ProducerStates,
    /// Raft's commit end when a replica drives this log; without one, the durable end is
    /// the high watermark (the single-node behaviour before replication).
    pub commit_end: Option<u64>,
    /// This replica leads its Raft group (always true for a log no replica drives).
    pub is_leader: bool,
    /// The end of the current leader term's no-op: until the high watermark reaches it the
    /// leader does not know what is committed and serves no reads.
    pub serving_from: u64,
    pub tail: TailCache,
}

/// Batches remembered in `recent`.
const RECENT_BATCHES_MAX: usize = 1024;

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
        let Recovered {
            segments,
            epochs,
            producers,
            ..
        } = recovered;
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
            cut: None,
            recent: VecDeque::new(),
            producers,
            commit_end: None,
            is_leader: true,
            serving_from: 0,
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

    /// The base offset of the batch holding `offset`, if it is one of the recent batches.
    pub fn batch_base(&self, offset: u64) -> Option<u64> {
        if offset >= self.leo {
            return None;
        }
        let i = self.recent.partition_point(|&(_, last)| last < offset);
        self.recent
            .get(i)
            .filter(|&&(base, _)| base <= offset)
            .map(|&(base, _)| base)
    }

    fn remember(&mut self, base: u64, last: u64) {
        if self.recent.len() == RECENT_BATCHES_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((base, last));
    }

    fn forget_from(&mut self, offset: u64) {
        while self.recent.back().is_some_and(|&(base, _)| base >= offset) {
            self.recent.pop_back();
        }
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

    /// The high watermark: every offset below it is committed (fsynced on a quorum of
    /// replicas, or on this one when no replica drives the log) and readable.
    pub fn high_watermark(&self) -> u64 {
        self.commit_end.unwrap_or(self.durable_end).min(self.leo)
    }

    /// A failed write is being undone: nothing new is accepted until it is.
    pub fn is_rewinding(&self) -> bool {
        self.broken.is_some()
    }

    /// Leads its group and knows what is committed: reads may be answered here.
    pub fn is_serving(&self) -> bool {
        self.is_leader && self.high_watermark() >= self.serving_from
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
        let producer = batch::BatchView::parse_unchecked_crc(records)
            .ok()
            .and_then(|view| ProducerBatch::of(&view));
        let bytes = StoredBatch::stamp(records, base as i64, self.leader_epoch, log_append_time);
        let max_ts = log_append_time.unwrap_or(info.max_timestamp);
        self.observe_producer(producer, base, last, wall_ms);
        self.enqueue(
            q,
            self.leader_epoch,
            Deferred {
                base,
                last,
                max_ts,
                bytes,
            },
            wall_ms,
        );
        Ok((base, last))
    }

    /// Every replica's producer state follows every append (see `producers.rs`).
    fn observe_producer(&mut self, producer: Option<ProducerBatch>, base: u64, last: u64, wall_ms: i64) {
        assert_eq!(base, self.leo, "producer state is observed at the log end");
        if let Some(p) = producer {
            self.producers.observe(&p, base, last, wall_ms);
        }
        self.producers.expire(wall_ms);
    }

    /// Takes a batch at the log end: epoch history, tail cache, then the write queue.
    fn enqueue(&mut self, q: &mut IoQueue, epoch: i32, d: Deferred, wall_ms: i64) {
        assert_eq!(d.base, self.leo, "batches are appended at the log end");
        self.note_epoch(q, epoch, d.base);
        self.remember(d.base, d.last);
        self.leo = d.last + 1;
        self.tail.push(d.base, d.last, d.bytes.clone());
        self.deferred.push_back(d);
        self.flush_deferred(q, wall_ms);
        self.maybe_sync(q);
    }

    /// Appends a batch the broker built itself (the Raft leader no-op, later transaction
    /// markers) at the current leader epoch. Returns its first and last offsets.
    pub(crate) fn append_own(
        &mut self,
        q: &mut IoQueue,
        batch: &Bytes,
        wall_ms: i64,
    ) -> Result<(u64, u64), AppendError> {
        let view = batch::BatchView::parse(batch).map_err(|e| AppendError::Invalid(e.to_string()))?;
        let info = BatchInfo {
            record_count: view.record_count(),
            last_offset_delta: view.last_offset_delta(),
            // Control batches do not take part in timestamp lookups (see `read.rs`).
            max_timestamp: if view.is_control() {
                -1
            } else {
                view.max_timestamp()
            },
            size_bytes: view.size_bytes(),
            compression: view
                .compression()
                .map_err(|e| AppendError::Invalid(e.to_string()))?,
        };
        if info.record_count < 1 || info.last_offset_delta < 0 || info.size_bytes != batch.len() {
            return Err(AppendError::Invalid(
                "a batch of our own must hold records".into(),
            ));
        }
        self.append(q, batch, info, wall_ms)
    }

    /// Appends a batch a leader already stamped (the follower side of replication): it must
    /// start at the log end, carry an epoch no lower than the log's last, and pass its CRC.
    /// Returns its first and last offsets.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn append_replicated(
        &mut self,
        q: &mut IoQueue,
        batch: Bytes,
        wall_ms: i64,
    ) -> Result<(u64, u64), AppendError> {
        if self.broken.is_some() {
            return Err(AppendError::Storage);
        }
        let view = batch::BatchView::parse(&batch).map_err(|e| AppendError::Invalid(e.to_string()))?;
        if view.size_bytes() != batch.len() {
            return Err(AppendError::Invalid(format!(
                "{} bytes hold a batch of {} and more",
                batch.len(),
                view.size_bytes()
            )));
        }
        let (base, last, epoch) = (
            view.base_offset(),
            view.last_offset(),
            view.partition_leader_epoch(),
        );
        if base < 0 || base as u64 != self.leo || last < base {
            return Err(AppendError::Invalid(format!(
                "batch {base}..={last} does not continue the log at {}",
                self.leo
            )));
        }
        if epoch < self.last_epoch() {
            return Err(AppendError::Invalid(format!(
                "batch epoch {epoch} is below the log's {}",
                self.last_epoch()
            )));
        }
        let max_ts = if view.is_control() {
            -1
        } else {
            view.max_timestamp()
        };
        let (base, last) = (base as u64, last as u64);
        self.observe_producer(ProducerBatch::of(&view), base, last, wall_ms);
        let bytes = StoredBatch::whole(batch);
        self.enqueue(
            q,
            epoch,
            Deferred {
                base,
                last,
                max_ts,
                bytes,
            },
            wall_ms,
        );
        Ok((base, last))
    }

    /// Drops every offset from `offset` on (a follower's divergent suffix; Raft never asks
    /// to cut below its commit point). The log end moves at once; the files are cut once the
    /// ops in flight finish, and nothing new is written until then. `offset` must be a batch
    /// boundary. The cut is durable before [`PartitionLog::is_cutting`] turns false.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn truncate_from(&mut self, q: &mut IoQueue, offset: u64) {
        if offset >= self.leo {
            return;
        }
        assert!(
            offset >= self.log_start_offset,
            "cut at {offset} below the log start {}",
            self.log_start_offset
        );
        tracing::info!(dir = %self.dir, offset, leo = self.leo, "truncating a divergent suffix");
        self.deferred.retain(|d| d.base < offset);
        if let Some(d) = self.deferred.back() {
            assert_eq!(d.last + 1, offset, "cuts fall on batch boundaries");
        }
        self.tail.truncate_from(offset);
        self.epochs.truncate_from(offset);
        self.producers.truncate_from(offset);
        self.forget_from(offset);
        self.leo = offset;
        self.written_end = self.written_end.min(offset);
        self.durable_end = self.durable_end.min(offset);
        if self.roll_at.is_some_and(|r| r >= offset) && !self.roll_creating {
            self.roll_at = None;
        }
        let offset = self.cut.map_or(offset, |c| c.offset().min(offset));
        self.cut = Some(Cut::Waiting { offset });
        self.try_cut(q);
    }

    /// The end of what the files hold that the log keeps: `leo`, or a pending cut's
    /// offset. Bytes past it that an op in flight wrote or synced belong to the removed
    /// suffix, whatever the log has appended in its place since.
    fn kept_end(&self) -> u64 {
        self.cut.map_or(self.leo, |c| c.offset().min(self.leo))
    }

    /// True while a cut's file operations are still to do.
    pub fn is_cutting(&self) -> bool {
        self.cut.is_some()
    }

    fn try_cut(&mut self, q: &mut IoQueue) {
        let Some(Cut::Waiting { offset }) = self.cut else {
            return;
        };
        if self.emitted_end <= offset {
            // Nothing at or past the cut ever reached a file.
            self.finish_cut(q);
            return;
        }
        if self.inflight > 0 || self.broken.is_some() || self.repairing {
            return;
        }
        let Some(seg) = self.segment_for(offset) else {
            unreachable!("the log holds {offset}: some segment starts at or before it")
        };
        if seg.base_offset == offset {
            self.cut_at(q, offset, 0);
            return;
        }
        let (segment, position) = (seg.base_offset, u64::from(seg.index.lookup(offset).1));
        self.locate(q, offset, segment, position);
    }

    fn locate(&mut self, q: &mut IoQueue, offset: u64, segment: u64, position: u64) {
        let seg = &self.segments[&segment];
        let len = LOCATE_READ_BYTES.min(seg.size_bytes.saturating_sub(position));
        self.cut = Some(Cut::Locating {
            offset,
            segment,
            position,
        });
        self.inflight += 1;
        let op = IoOp::Read {
            file: seg.file.clone(),
            position,
            len: len.max(batch::LOG_OVERHEAD as u64) as u32,
        };
        q.submit(op, IoTag::Log(self.id, PartIo::Locate));
    }

    /// Scans a located chunk; returns a fatal reason if the cut cannot be placed.
    fn on_located(&mut self, q: &mut IoQueue, bytes: &Bytes) -> Option<&'static str> {
        let Some(Cut::Locating {
            offset,
            segment,
            position,
        }) = self.cut
        else {
            unreachable!("a locate read completes only while locating")
        };
        let mut scan = batch::scan_unchecked_crc(bytes);
        for (at, view) in scan.by_ref() {
            let (base, last) = (view.base_offset().max(0) as u64, view.last_offset().max(0) as u64);
            if base == offset {
                self.cut_at(q, offset, position + at as u64);
                return None;
            }
            if last >= offset {
                tracing::error!(dir = %self.dir, offset, base, last, "cut inside a batch");
                return Some("a cut fell inside a batch");
            }
        }
        let next = position + scan.valid_end() as u64;
        if scan.valid_end() == 0 || next >= self.segments[&segment].size_bytes {
            tracing::error!(dir = %self.dir, offset, position, "cut offset not found in its segment");
            return Some("a cut offset was not found in its segment");
        }
        self.locate(q, offset, segment, next);
        None
    }

    /// Deletes the segments after the cut and truncates the one holding it at `position`
    /// (its byte position there), or deletes that one too when the cut is its base and an
    /// earlier segment remains to be the active one.
    fn cut_at(&mut self, q: &mut IoQueue, offset: u64, position: u64) {
        let holder = match self.segment_for(offset) {
            Some(seg) => seg.base_offset,
            None => unreachable!("the log holds {offset}: some segment starts at or before it"),
        };
        let drop_holder = holder == offset && holder != self.first_base();
        let doomed: Vec<u64> = self
            .segments
            .range(holder..)
            .map(|(&b, _)| b)
            .filter(|&b| b > holder || drop_holder)
            .collect();
        let mut ops = 0;
        for base in doomed.iter().rev() {
            let Some(seg) = self.segments.remove(base) else {
                continue;
            };
            for path in [seg.file.clone(), seg.index_file(), seg.time_index_file()] {
                q.submit(IoOp::Delete { path }, IoTag::Log(self.id, PartIo::Cut));
                ops += 1;
            }
        }
        if !drop_holder {
            let Some(seg) = self.segments.get_mut(&holder) else {
                unreachable!("the holding segment stays")
            };
            seg.truncate_to(offset, position);
            q.submit(
                IoOp::Truncate {
                    file: seg.file.clone(),
                    len: position,
                },
                IoTag::Log(self.id, PartIo::Cut),
            );
            ops += 1;
        }
        assert!(ops > 0, "a physical cut removes something");
        self.inflight += ops;
        self.cut = Some(Cut::Cutting { offset, ops });
    }

    /// The cut is done: after a physical cut the files end at `offset` and everything before
    /// it is durable (the truncate fsynced its file; earlier segments were durable before
    /// they were rolled). Persists the shortened epoch history.
    fn finish_cut(&mut self, q: &mut IoQueue) {
        let Some(cut) = self.cut.take() else { return };
        if let Cut::Cutting { offset, .. } = cut {
            self.emitted_end = offset;
            self.written_end = offset;
            self.durable_end = offset;
            self.durable_position = self.active().size_bytes;
        }
        self.write_epochs(q);
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
        while self.roll_at.is_none() && self.cut.is_none() {
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
        if self.sync_in_flight || self.repairing || self.cut.is_some() || self.emitted_end <= self.durable_end
        {
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
                } else if self.broken.is_none_or(|b| end <= b.offset) && end <= self.kept_end() {
                    // (An append past `kept_end` belongs to a suffix a cut is removing, even
                    // when the new leader's entries already reach that far.)
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
                if cap > self.kept_end() {
                    // A cut removed part of what this sync covered (the entries appended in
                    // its place are not in the files yet); the cut itself makes everything
                    // below it durable.
                } else if cap > self.durable_end {
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
            PartIo::Locate => {
                let reason = match result {
                    IoResult::Read(bytes) => self.on_located(q, bytes),
                    _ => Some("reading a segment to place a cut failed"),
                };
                if reason.is_some() {
                    ev.fatal = reason;
                    return ev;
                }
            }
            PartIo::Cut => {
                if failed {
                    ev.fatal = Some("cutting a divergent suffix failed");
                    return ev;
                }
                let Some(Cut::Cutting { offset, ops }) = self.cut else {
                    unreachable!("a cut op completes only while cutting")
                };
                if ops > 1 {
                    self.cut = Some(Cut::Cutting { offset, ops: ops - 1 });
                } else {
                    self.finish_cut(q);
                    ev.advanced = true;
                }
            }
            PartIo::Repair => {
                if failed {
                    ev.fatal = Some("truncate during rewind failed");
                    return ev;
                }
                self.repairing = false;
                self.broken = None;
                ev.repaired = true;
            }
        }
        if self.broken.is_some() {
            self.try_repair(q);
        } else {
            self.try_cut(q);
            if self.cut.is_none() {
                self.try_finish_roll(q);
                self.flush_deferred(q, wall_ms);
                self.maybe_sync(q);
            }
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
        if self.durable_end < b.offset.min(self.leo) {
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
        assert!(self.durable_end >= b.offset.min(self.leo));
        self.deferred.clear();
        self.tail.truncate_from(b.offset);
        self.epochs.truncate_from(b.offset);
        self.producers.truncate_from(b.offset);
        self.forget_from(b.offset);
        self.leo = self.leo.min(b.offset);
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
