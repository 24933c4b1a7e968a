//! Reads from segment files: a [`ReadJob`] walks stored batches from an index position,
//! one `Read` op at a time, until it has what it was asked for.
//!
//! Invariants: a job never returns a batch at or above the high watermark it was started
//! with; every returned batch is a complete stored batch (a slice of the bytes read); each
//! step moves the read position forward, so a job ends; no read goes past the durable
//! position of a segment (bytes beyond it may still be in flight).
//!
//! Departure from DESIGN.md: fetches are served from bytes read through `Read` ops (or from
//! the tail cache), not as file slices for sendfile. The simulator then exercises exactly
//! the path production uses; sendfile can come later behind the same `ReadOutcome`.

use bytes::Bytes;

use super::partition::PartitionLog;
use super::segment::Segment;
use crate::batch::{self, BatchView, ScanStop};
use crate::io::IoOp;

/// Smallest read a job issues (most fetches want less; reading a little more is cheap).
const READ_BYTES_MIN: u64 = 64 * 1024;
/// Largest single read; bigger answers take several reads.
const READ_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// What a read job is looking for.
#[derive(Clone, Debug)]
pub enum ReadGoal {
    /// Batches from the one holding `offset`, up to `max_bytes` (at least one batch).
    Fetch { offset: u64, max_bytes: usize },
    /// The first record with timestamp >= `timestamp_ms`, starting at `offset`.
    Timestamp { offset: u64, timestamp_ms: i64 },
}

/// The result of a finished job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Batches {
        batches: Vec<Bytes>,
        size_bytes: usize,
    },
    /// `(offset, timestamp)` of the record found, or None.
    Found(Option<(u64, i64)>),
    /// Stored data failed validation or could not be read.
    Failed(String),
}

/// What the job wants next.
#[derive(Debug)]
pub enum ReadStep {
    Io(IoOp),
    Done(ReadOutcome),
}

#[derive(Debug)]
pub struct ReadJob {
    goal: ReadGoal,
    end: u64,
    segment: u64,
    file: String,
    segment_size: u64,
    position: u64,
    batches: Vec<Bytes>,
    size_bytes: usize,
}

fn index_lookup(seg: &Segment, offset: u64, off_by_one: bool) -> u64 {
    let (_, position) = if off_by_one {
        seg.index.lookup_after(offset)
    } else {
        seg.index.lookup(offset)
    };
    u64::from(position)
}

impl ReadJob {
    /// Starts a job on `log` below `end` (the high watermark). Returns the first step.
    pub fn start(
        log: &PartitionLog,
        goal: ReadGoal,
        end: u64,
        index_off_by_one: bool,
    ) -> (ReadJob, ReadStep) {
        let offset = match goal {
            ReadGoal::Fetch { offset, .. } | ReadGoal::Timestamp { offset, .. } => offset,
        };
        let mut job = ReadJob {
            goal,
            end,
            segment: 0,
            file: String::new(),
            segment_size: 0,
            position: 0,
            batches: Vec::new(),
            size_bytes: 0,
        };
        let Some(seg) = log.segment_for(offset) else {
            return (
                job,
                ReadStep::Done(ReadOutcome::Failed("no segment holds the offset".into())),
            );
        };
        let position = index_lookup(seg, offset, index_off_by_one);
        job.enter(seg, log.readable_bytes(seg.base_offset), position);
        if job.position >= job.segment_size {
            let step = job.done();
            return (job, step);
        }
        let step = job.next_read(None);
        (job, step)
    }

    fn enter(&mut self, seg: &Segment, readable_bytes: u64, position: u64) {
        self.segment = seg.base_offset;
        self.file = seg.file.clone();
        self.segment_size = readable_bytes;
        self.position = position;
    }

    fn wanted_bytes(&self) -> u64 {
        match self.goal {
            ReadGoal::Fetch { max_bytes, .. } => (max_bytes as u64).saturating_sub(self.size_bytes as u64),
            ReadGoal::Timestamp { .. } => 0,
        }
    }

    fn next_read(&self, at_least: Option<u64>) -> ReadStep {
        let remaining = self.segment_size.saturating_sub(self.position);
        let want = self
            .wanted_bytes()
            .clamp(READ_BYTES_MIN, READ_BYTES_MAX)
            .max(at_least.unwrap_or(0));
        let len = want.min(remaining).min(u64::from(u32::MAX));
        assert!(len > 0, "a read job only reads inside its segment");
        ReadStep::Io(IoOp::Read {
            file: self.file.clone(),
            position: self.position,
            len: len as u32,
        })
    }

    fn done(&mut self) -> ReadStep {
        match self.goal {
            ReadGoal::Fetch { .. } => ReadStep::Done(ReadOutcome::Batches {
                batches: std::mem::take(&mut self.batches),
                size_bytes: self.size_bytes,
            }),
            ReadGoal::Timestamp { .. } => ReadStep::Done(ReadOutcome::Found(None)),
        }
    }

    /// Feeds the bytes of the last `Read`; returns the next step.
    pub fn on_read(&mut self, log: &PartitionLog, bytes: Bytes) -> ReadStep {
        if bytes.is_empty() {
            // Nothing where durable bytes should be: the segment changed under us.
            return ReadStep::Done(ReadOutcome::Failed(format!(
                "{} ends before {}",
                self.file, self.position
            )));
        }
        let mut scan = batch::scan(&bytes);
        for (pos, view) in scan.by_ref() {
            if view.base_offset() < 0 || view.base_offset() as u64 >= self.end {
                return self.done();
            }
            if let Some(step) = self.take(&bytes, pos, &view) {
                return step;
            }
        }
        let consumed = scan.valid_end() as u64;
        match scan.stop() {
            Some(ScanStop::Corrupt(why)) => {
                return ReadStep::Done(ReadOutcome::Failed(format!(
                    "corrupt batch in {} at {}: {why}",
                    self.file,
                    self.position + consumed
                )));
            }
            Some(ScanStop::Incomplete) if self.position + consumed < self.segment_size => {
                let rest = &bytes[consumed as usize..];
                let need = batch::bytes_needed(rest);
                self.position += consumed;
                if self.batch_would_overflow(need) {
                    // Its header says it does not fit the fetch: no need to read the rest.
                    return self.done();
                }
                if self.position + need > self.segment_size {
                    return ReadStep::Done(ReadOutcome::Failed(format!(
                        "batch in {} at {} runs past the segment end",
                        self.file, self.position
                    )));
                }
                return self.next_read(Some(need));
            }
            _ => {}
        }
        self.position += consumed;
        if self.position < self.segment_size {
            return self.next_read(None);
        }
        match log.segment_after(self.segment) {
            Some(next) if log.readable_bytes(next.base_offset) > 0 => {
                self.enter(next, log.readable_bytes(next.base_offset), 0);
                self.next_read(None)
            }
            _ => self.done(),
        }
    }

    /// Whether a batch of `size` bytes would take a fetch that already has batches past
    /// its byte limit: the fetch ends before such a batch (at least one batch is always
    /// taken, however large). Asked both of a whole batch and of a cut-off batch's header.
    fn batch_would_overflow(&self, size: u64) -> bool {
        match self.goal {
            ReadGoal::Fetch { max_bytes, .. } => {
                !self.batches.is_empty() && self.size_bytes as u64 + size > max_bytes as u64
            }
            ReadGoal::Timestamp { .. } => false,
        }
    }

    /// Considers one stored batch; returns a step when the job is finished.
    fn take(&mut self, bytes: &Bytes, pos: usize, view: &BatchView) -> Option<ReadStep> {
        let last = view.last_offset().max(0) as u64;
        match self.goal {
            ReadGoal::Fetch { offset, max_bytes } => {
                if last < offset {
                    return None;
                }
                let size = view.size_bytes();
                if self.batch_would_overflow(size as u64) {
                    return Some(self.done());
                }
                self.batches.push(bytes.slice(pos..pos + size));
                self.size_bytes += size;
                (self.size_bytes >= max_bytes).then(|| self.done())
            }
            ReadGoal::Timestamp { offset, timestamp_ms } => {
                // Control batches (the Raft no-op, transaction markers) hold no records a
                // timestamp lookup may return.
                if last < offset || view.is_control() || view.max_timestamp() < timestamp_ms {
                    return None;
                }
                let records = match batch::iter_records(view) {
                    Ok(records) => records,
                    Err(e) => return Some(ReadStep::Done(ReadOutcome::Failed(e.to_string()))),
                };
                for r in records {
                    match r {
                        Ok(r) if r.offset >= offset as i64 && r.timestamp_ms >= timestamp_ms => {
                            return Some(ReadStep::Done(ReadOutcome::Found(Some((
                                r.offset as u64,
                                r.timestamp_ms,
                            )))));
                        }
                        Ok(_) => {}
                        Err(e) => return Some(ReadStep::Done(ReadOutcome::Failed(e.to_string()))),
                    }
                }
                None
            }
        }
    }
}
