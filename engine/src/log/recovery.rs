//! Recovery of one partition log at start: list its directory, load the indexes of closed
//! segments (rebuilding any that are missing or damaged by scanning their segment), scan
//! the active segment batch by batch and cut it at the first torn or corrupt batch.
//! Idempotent producers' state is rebuilt from the batch headers on the way: the segments
//! that are scanned anyway feed it, and closed segments whose indexes load are read once
//! more for their headers ([`Phase::ProducerScan`]) unless every batch in them is older
//! than the producer expiration (their time index says so). That read is the cost of a
//! start: up to the whole log of the last day. Kafka bounds it with producer snapshots
//! (`<offset>.snapshot` files written at each roll); Gregor does not write them yet.
//!
//! Invariant relied on (see `partition.rs`): only the last segment can hold bytes that were
//! never fsynced, so only its tail can be torn. A batch that was fsynced whole is never cut:
//! the scan stops only at a batch that is incomplete or fails its CRC.

use bytes::Bytes;

use super::epochs::{EpochHistory, CHECKPOINT_FILE};
use super::index::{OffsetIndex, TimeIndex};
use super::producers::{ProducerBatch, ProducerStates, PRODUCER_ID_EXPIRATION_MS};
use super::segment::{parse_file_name, Segment};
use crate::batch::{self, BatchView, StoredBatchError};
use crate::io::{DirEntry, IoError, IoOp, IoResult};

/// Bytes read per step while scanning a segment.
const SCAN_CHUNK_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
enum Phase {
    List,
    ReadCheckpoint,
    ReadRaftState,
    CreateDir,
    CreateFirstSegment,
    ReadIndex,
    ReadTimeIndex {
        index: Option<OffsetIndex>,
    },
    Scan {
        position: u64,
    },
    /// Reading a closed segment (indexes loaded) for its producer fields only.
    ProducerScan {
        position: u64,
    },
    Truncate,
    Done,
}

/// What recovery wants next.
#[derive(Debug)]
pub enum RecoveryStep {
    Io(IoOp),
    /// The recovered log, all durable.
    Done(Recovered),
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// Oldest first, at least one.
    pub segments: Vec<Segment>,
    /// The checkpoint, corrected by every batch the scan read and cut at the log end.
    pub epochs: EpochHistory,
    /// The bytes of the replica's Raft state file, if it has one (decoded by its owner).
    pub raft_state: Option<Bytes>,
    /// Idempotent producers' state as the recovered batches leave it.
    pub producers: ProducerStates,
}

/// The Raft state file beside a log (written and decoded by `crate::replica`).
pub const RAFT_STATE_FILE: &str = "raft.state";

#[derive(Debug)]
pub struct Recovery {
    dir: String,
    index_interval_bytes: u32,
    skip_crc: bool,
    wall_ms: i64,
    /// `(base offset, file size)` of every `.log` file, by base offset.
    files: Vec<(u64, u64)>,
    listing: Vec<DirEntry>,
    current: usize,
    segment: Option<Segment>,
    done: Vec<Segment>,
    epochs: EpochHistory,
    raft_state: Option<Bytes>,
    producers: ProducerStates,
    phase: Phase,
}

impl Recovery {
    pub fn start(
        dir: &str,
        index_interval_bytes: u32,
        skip_crc: bool,
        wall_ms: i64,
    ) -> (Recovery, RecoveryStep) {
        let r = Recovery {
            dir: dir.to_string(),
            index_interval_bytes,
            skip_crc,
            wall_ms,
            files: Vec::new(),
            listing: Vec::new(),
            current: 0,
            segment: None,
            done: Vec::new(),
            epochs: EpochHistory::new(),
            raft_state: None,
            producers: ProducerStates::new(),
            phase: Phase::List,
        };
        (r, RecoveryStep::Io(IoOp::List { dir: dir.to_string() }))
    }

    /// Feeds the completion of the last op. An IO error other than a missing directory or
    /// index is returned to the caller, which stops the node: a log we cannot read is not
    /// one we may serve.
    pub fn on_io_done(&mut self, result: IoResult) -> Result<RecoveryStep, String> {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, result) {
            (Phase::List, IoResult::Err(IoError::NotFound)) => {
                self.phase = Phase::CreateDir;
                Ok(RecoveryStep::Io(IoOp::CreateDir {
                    dir: self.dir.clone(),
                }))
            }
            (Phase::List, IoResult::List(entries)) => {
                self.listing = entries;
                if self.has_file(CHECKPOINT_FILE).is_some() {
                    self.phase = Phase::ReadCheckpoint;
                    return Ok(self.read_state_file(CHECKPOINT_FILE));
                }
                Ok(self.after_checkpoint())
            }
            (Phase::ReadCheckpoint, IoResult::Read(bytes)) => {
                self.epochs = EpochHistory::decode(&bytes)
                    .map_err(|e| format!("{}/{CHECKPOINT_FILE} is damaged: {e}", self.dir))?;
                Ok(self.after_checkpoint())
            }
            (Phase::ReadRaftState, IoResult::Read(bytes)) => {
                self.raft_state = Some(bytes);
                Ok(self.listed())
            }
            (Phase::CreateDir, IoResult::Done) => Ok(self.create_first_segment()),
            (Phase::CreateFirstSegment, IoResult::Done) => Ok(RecoveryStep::Done(Recovered {
                segments: vec![Segment::new(&self.dir, 0)],
                epochs: std::mem::take(&mut self.epochs),
                raft_state: self.raft_state.take(),
                producers: ProducerStates::new(),
            })),
            (Phase::ReadIndex, r) => {
                let index = match r {
                    IoResult::Read(bytes) => self.decode_index(&bytes),
                    IoResult::Err(IoError::NotFound) => None,
                    IoResult::Err(e) => return Err(format!("reading index in {}: {e}", self.dir)),
                    other => return Err(format!("unexpected completion {other:?}")),
                };
                self.phase = Phase::ReadTimeIndex { index };
                let seg = self.segment_ref();
                Ok(RecoveryStep::Io(IoOp::Read {
                    file: seg.time_index_file(),
                    position: 0,
                    len: u32::MAX,
                }))
            }
            (Phase::ReadTimeIndex { index }, r) => {
                let time_index = match r {
                    IoResult::Read(bytes) => self.decode_time_index(&bytes),
                    IoResult::Err(IoError::NotFound) => None,
                    IoResult::Err(e) => return Err(format!("reading time index in {}: {e}", self.dir)),
                    other => return Err(format!("unexpected completion {other:?}")),
                };
                match (index, time_index) {
                    (Some(index), Some(time_index)) => {
                        let seg = self.segment.as_mut().expect("a segment is being recovered");
                        seg.index = index;
                        if let Some((ts, off)) = time_index.max() {
                            seg.max_timestamp_ms = ts;
                            seg.max_timestamp_offset = off;
                        }
                        seg.time_index = time_index;
                        Ok(self.producer_scan(0, None))
                    }
                    _ => {
                        tracing::info!(dir = %self.dir, file = %self.segment_ref().file, "rebuilding index");
                        Ok(self.scan_from(0))
                    }
                }
            }
            (Phase::Scan { position, .. }, IoResult::Read(bytes)) => Ok(self.scanned(position, bytes)),
            (Phase::ProducerScan { position }, IoResult::Read(bytes)) => {
                Ok(self.producer_scanned(position, &bytes))
            }
            (Phase::ProducerScan { position }, IoResult::Err(e)) => {
                // Only producer state is lost (its producers count as unknown, accepted at any
                // sequence); the segment itself was recovered from its indexes.
                tracing::warn!(file = %self.segment_ref().file, position, error = %e, "reading producer state from a segment failed");
                Ok(self.finish_segment())
            }
            (Phase::Truncate, IoResult::Done) => Ok(self.finish_segment()),
            (phase, IoResult::Err(e)) => Err(format!("recovering {} ({phase:?}): {e}", self.dir)),
            (phase, other) => Err(format!(
                "recovering {}: unexpected {other:?} in {phase:?}",
                self.dir
            )),
        }
    }

    fn read_state_file(&self, name: &str) -> RecoveryStep {
        RecoveryStep::Io(IoOp::Read {
            file: format!("{}/{name}", self.dir),
            position: 0,
            len: u32::MAX,
        })
    }

    fn after_checkpoint(&mut self) -> RecoveryStep {
        if self.has_file(RAFT_STATE_FILE).is_some() {
            self.phase = Phase::ReadRaftState;
            return self.read_state_file(RAFT_STATE_FILE);
        }
        self.listed()
    }

    fn segment_ref(&self) -> &Segment {
        self.segment.as_ref().expect("a segment is being recovered")
    }

    fn create_first_segment(&mut self) -> RecoveryStep {
        self.phase = Phase::CreateFirstSegment;
        RecoveryStep::Io(IoOp::CreateFile {
            file: Segment::new(&self.dir, 0).file,
        })
    }

    fn listed(&mut self) -> RecoveryStep {
        let mut files: Vec<(u64, u64)> = self
            .listing
            .iter()
            .filter(|e| !e.is_dir)
            .filter_map(|e| parse_file_name(&e.name, "log").map(|b| (b, e.size_bytes)))
            .collect();
        files.sort_unstable();
        self.files = files;
        if self.files.is_empty() {
            self.epochs = EpochHistory::new();
            return self.create_first_segment();
        }
        self.current = 0;
        self.begin_segment()
    }

    fn is_last(&self) -> bool {
        self.current + 1 == self.files.len()
    }

    fn has_file(&self, name: &str) -> Option<u64> {
        let short = name.rsplit('/').next().unwrap_or(name);
        self.listing
            .iter()
            .find(|e| e.name == short)
            .map(|e| e.size_bytes)
    }

    fn begin_segment(&mut self) -> RecoveryStep {
        let (base, size) = self.files[self.current];
        let mut seg = Segment::new(&self.dir, base);
        seg.size_bytes = size;
        let index_file = seg.index_file();
        self.segment = Some(seg);
        if self.is_last() || self.has_file(&index_file).is_none() {
            return self.scan_from(0);
        }
        self.phase = Phase::ReadIndex;
        RecoveryStep::Io(IoOp::Read {
            file: index_file,
            position: 0,
            len: u32::MAX,
        })
    }

    fn next_base(&self) -> Option<u64> {
        self.files.get(self.current + 1).map(|&(b, _)| b)
    }

    fn decode_index(&self, bytes: &[u8]) -> Option<OffsetIndex> {
        let seg = self.segment_ref();
        OffsetIndex::decode(seg.base_offset, bytes, seg.size_bytes).ok()
    }

    fn decode_time_index(&self, bytes: &[u8]) -> Option<TimeIndex> {
        let seg = self.segment_ref();
        let last = self.next_base()?.checked_sub(1)?;
        TimeIndex::decode(seg.base_offset, bytes, last).ok()
    }

    /// Restarts the segment's bookkeeping and scans it from the start.
    fn scan_from(&mut self, position: u64) -> RecoveryStep {
        let seg = self.segment.as_mut().expect("a segment is being recovered");
        if position == 0 {
            *seg = Segment::new(&self.dir, seg.base_offset);
        }
        self.read_chunk(position, None)
    }

    fn read_chunk(&mut self, position: u64, at_least: Option<u64>) -> RecoveryStep {
        let file_size = self.files[self.current].1;
        let seg = self.segment_ref();
        if position >= file_size {
            self.phase = Phase::Scan { position };
            return self.end_scan(position);
        }
        let read = chunk_read(seg, position, at_least, file_size);
        self.phase = Phase::Scan { position };
        RecoveryStep::Io(read)
    }

    fn parse<'a>(&self, bytes: &'a [u8]) -> Result<BatchView<'a>, StoredBatchError> {
        if self.skip_crc {
            BatchView::parse_unchecked_crc(bytes)
        } else {
            BatchView::parse(bytes)
        }
    }

    fn scanned(&mut self, position: u64, bytes: Bytes) -> RecoveryStep {
        let interval = self.index_interval_bytes;
        let file_size = self.files[self.current].1;
        let mut at = 0usize;
        let mut noted: Vec<(u64, u64, i64, u64, i32, Option<ProducerBatch>)> = Vec::new();
        let stop = loop {
            if at == bytes.len() {
                break None;
            }
            match self.parse(&bytes[at..]) {
                Ok(view) => {
                    let base = view.base_offset().max(0) as u64;
                    let last = view.last_offset().max(0) as u64;
                    let epoch = view.partition_leader_epoch();
                    // Control batches (the Raft no-op) take no part in timestamp lookups.
                    let ts = if view.is_control() {
                        -1
                    } else {
                        view.max_timestamp()
                    };
                    let producer = ProducerBatch::of(&view);
                    noted.push((base, last, ts, view.size_bytes() as u64, epoch, producer));
                    at += view.size_bytes();
                }
                Err(e) => break Some(e),
            }
        };
        let seg = self.segment.as_mut().expect("a segment is being recovered");
        let mut dense = true;
        for (base, last, ts, size, epoch, producer) in noted.iter().copied() {
            if base != seg.next_offset {
                dense = false;
                break;
            }
            seg.note_batch(base, last, ts, size, interval);
            if let Some(p) = producer {
                self.producers.observe(&p, base, last, ts);
            }
            if epoch >= 0 {
                self.epochs.observe(epoch, base);
            }
        }
        let valid_end = seg.size_bytes;
        if !dense {
            tracing::warn!(file = %seg.file, position = valid_end, "offsets out of sequence; cutting here");
            return self.end_scan_at(valid_end);
        }
        let chunk_end = position + bytes.len() as u64;
        match stop {
            None => self.read_chunk(chunk_end, None),
            Some(StoredBatchError::Incomplete) if chunk_end < file_size => {
                let rest = &bytes[at..];
                let need = batch::bytes_needed(rest);
                if valid_end + need > file_size {
                    return self.end_scan_at(valid_end);
                }
                self.read_chunk(valid_end, Some(need))
            }
            Some(_) => self.end_scan_at(valid_end),
        }
    }

    fn end_scan_at(&mut self, valid_end: u64) -> RecoveryStep {
        self.phase = Phase::Scan { position: valid_end };
        self.end_scan(valid_end)
    }

    /// The scan reached `valid_end`: cut the file there if bytes follow it.
    fn end_scan(&mut self, valid_end: u64) -> RecoveryStep {
        let file_size = self.files[self.current].1;
        let next_base = self.next_base();
        let seg = self.segment.as_mut().expect("a segment is being recovered");
        assert_eq!(seg.size_bytes, valid_end, "the scan noted every valid batch");
        if !seg.is_empty() {
            seg.first_append_wall_ms = Some(self.wall_ms);
        }
        if let Some(next) = next_base {
            if seg.next_offset < next && !seg.is_empty() {
                tracing::warn!(file = %seg.file, "closed segment ends early; its tail is unreadable");
            }
            seg.next_offset = next.max(seg.next_offset);
            seg.seal_time_index();
        }
        if valid_end < file_size {
            tracing::warn!(file = %seg.file, valid_end, file_size, "truncating torn or corrupt tail");
            let file = seg.file.clone();
            self.phase = Phase::Truncate;
            return RecoveryStep::Io(IoOp::Truncate { file, len: valid_end });
        }
        self.finish_segment()
    }

    fn finish_segment(&mut self) -> RecoveryStep {
        let mut seg = self.segment.take().expect("a segment is being recovered");
        if let Some(next) = self.next_base() {
            seg.next_offset = seg.next_offset.max(next);
        }
        self.done.push(seg);
        self.current += 1;
        if self.current < self.files.len() {
            return self.begin_segment();
        }
        self.phase = Phase::Done;
        let segments = std::mem::take(&mut self.done);
        let end = segments.last().map_or(0, |s| s.next_offset);
        let mut epochs = std::mem::take(&mut self.epochs);
        epochs.truncate_from(end);
        let mut producers = std::mem::take(&mut self.producers);
        producers.truncate_from(end);
        producers.expire(self.wall_ms);
        RecoveryStep::Done(Recovered {
            segments,
            epochs,
            raft_state: self.raft_state.take(),
            producers,
        })
    }

    /// Reads the closed segment being recovered (its indexes loaded) from `position` for
    /// its producer fields; skipped when its newest batch is older than the expiration.
    fn producer_scan(&mut self, position: u64, at_least: Option<u64>) -> RecoveryStep {
        let file_size = self.files[self.current].1;
        let seg = self.segment_ref();
        let expired = seg.max_timestamp_ms < self.wall_ms.saturating_sub(PRODUCER_ID_EXPIRATION_MS);
        if expired || position >= file_size {
            return self.finish_segment();
        }
        let read = chunk_read(seg, position, at_least, file_size);
        self.phase = Phase::ProducerScan { position };
        RecoveryStep::Io(read)
    }

    /// Feeds the producer fields of the whole batches in a chunk; stops at the first batch
    /// that does not parse (the index and the offsets are what recovery trusts here).
    fn producer_scanned(&mut self, position: u64, bytes: &[u8]) -> RecoveryStep {
        let mut at = 0usize;
        loop {
            match BatchView::parse_unchecked_crc(&bytes[at..]) {
                Ok(view) => {
                    // A batch whose CRC fails (damage recovery does not look for in closed
                    // segments) says nothing trustworthy about its producer.
                    let intact = self.skip_crc || view.crc() == view.compute_crc();
                    if let Some(p) = ProducerBatch::of(&view).filter(|_| intact) {
                        let (base, last) =
                            (view.base_offset().max(0) as u64, view.last_offset().max(0) as u64);
                        self.producers.observe(&p, base, last, view.max_timestamp());
                    }
                    at += view.size_bytes();
                }
                Err(StoredBatchError::Incomplete) if !bytes.is_empty() => {
                    let rest = &bytes[at..];
                    let need = batch::bytes_needed(rest);
                    let next = position + at as u64;
                    if next + need > self.files[self.current].1 {
                        return self.finish_segment();
                    }
                    return self.producer_scan(next, Some(need));
                }
                Err(_) => return self.finish_segment(),
            }
            if at == bytes.len() {
                return self.producer_scan(position + at as u64, None);
            }
        }
    }
}

/// The read of the next scan chunk of `seg` at `position` (below `file_size`): at least
/// `at_least` bytes when a batch is known to need them, else `SCAN_CHUNK_BYTES`, never
/// past the file's end.
fn chunk_read(seg: &Segment, position: u64, at_least: Option<u64>, file_size: u64) -> IoOp {
    let len = SCAN_CHUNK_BYTES
        .max(at_least.unwrap_or(0))
        .min(file_size - position)
        .min(u64::from(u32::MAX));
    IoOp::Read {
        file: seg.file.clone(),
        position,
        len: len as u32,
    }
}
