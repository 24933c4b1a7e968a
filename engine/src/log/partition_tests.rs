//! Tests of the follower side of a partition log (replicated appends and cuts), driven by a
//! small in-memory disk that carries out each op in emission order. Every scenario ends by
//! recovering the log from what the disk holds and comparing it with the live log.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::partition::{AppendError, PartitionLog};
use super::recovery::{Recovery, RecoveryStep};
use crate::batch::{self, build_batch, scan, validate_produce, RecordSpec};
use crate::config::{LogConfig, TimestampType};
use crate::engine::{IoQueue, IoTag};
use crate::io::{DirEntry, IoError, IoOp, IoResult};
use crate::Output;

const DIR: &str = "t-0";

#[derive(Default)]
struct Disk {
    files: BTreeMap<String, Vec<u8>>,
}

impl Disk {
    fn run(&mut self, op: &IoOp) -> IoResult {
        match op {
            IoOp::Append { file, position, data } => {
                let f = self.files.entry(file.clone()).or_default();
                let mut at = *position as usize;
                for piece in data {
                    if f.len() < at + piece.len() {
                        f.resize(at + piece.len(), 0);
                    }
                    f[at..at + piece.len()].copy_from_slice(piece);
                    at += piece.len();
                }
                IoResult::Done
            }
            IoOp::Sync { .. } | IoOp::CreateDir { .. } => IoResult::Done,
            IoOp::Read { file, position, len } => match self.files.get(file) {
                None => IoResult::Err(IoError::NotFound),
                Some(f) => {
                    let start = (*position as usize).min(f.len());
                    let end = (start + *len as usize).min(f.len());
                    IoResult::Read(Bytes::copy_from_slice(&f[start..end]))
                }
            },
            IoOp::Truncate { file, len } => {
                self.files
                    .entry(file.clone())
                    .or_default()
                    .resize(*len as usize, 0);
                IoResult::Done
            }
            IoOp::CreateFile { file } => {
                self.files.insert(file.clone(), Vec::new());
                IoResult::Done
            }
            IoOp::WriteState { file, data } => {
                self.files.insert(file.clone(), data.to_vec());
                IoResult::Done
            }
            IoOp::Delete { path } => {
                self.files.remove(path);
                IoResult::Done
            }
            IoOp::Rename { .. } => unreachable!("logs do not rename"),
            IoOp::List { dir } => IoResult::List(
                self.files
                    .iter()
                    .filter_map(|(k, v)| {
                        let name = k.strip_prefix(&format!("{dir}/"))?;
                        Some(DirEntry {
                            name: name.to_string(),
                            size_bytes: v.len() as u64,
                            is_dir: false,
                        })
                    })
                    .collect(),
            ),
        }
    }
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: i64::MAX,
        max_message_bytes: 1 << 20,
        index_interval_bytes: 100,
        timestamp_type: TimestampType::CreateTime,
        min_insync_replicas: 1,
    }
}

struct Rig {
    q: IoQueue,
    disk: Disk,
    log: PartitionLog,
    /// Emitted ops not yet carried out, oldest first.
    pending: Vec<(u64, IoOp)>,
}

fn recover(disk: &mut Disk, segment_bytes: u64) -> PartitionLog {
    let (mut rec, mut step) = Recovery::start(DIR, config(segment_bytes).index_interval_bytes, false, 0);
    loop {
        match step {
            RecoveryStep::Io(op) => {
                let result = disk.run(&op);
                step = rec.on_io_done(result).expect("recovery succeeds");
            }
            RecoveryStep::Done(recovered) => {
                return PartitionLog::new(1, DIR.into(), config(segment_bytes), recovered, 1 << 20)
            }
        }
    }
}

impl Rig {
    fn new(segment_bytes: u64) -> Rig {
        let mut disk = Disk::default();
        let log = recover(&mut disk, segment_bytes);
        Rig {
            q: IoQueue::default(),
            disk,
            log,
            pending: Vec::new(),
        }
    }

    fn collect(&mut self) {
        for o in self.q.emitted.drain(..) {
            if let Output::Io { token, op } = o {
                self.pending.push((token, op));
            }
        }
    }

    /// Carries out every op, including those the completions emit.
    fn settle(&mut self) {
        self.collect();
        while !self.pending.is_empty() {
            self.step_one();
        }
    }

    fn step_one(&mut self) {
        self.collect();
        if self.pending.is_empty() {
            return;
        }
        let (token, op) = self.pending.remove(0);
        let result = self.disk.run(&op);
        let IoTag::Log(_, io) = self.q.complete(token) else {
            unreachable!("only log ops here")
        };
        let ev = self.log.on_io_done(&mut self.q, io, &result, 0);
        assert!(ev.fatal.is_none(), "{ev:?}");
        self.collect();
    }

    fn lead(&mut self, epoch: i32, records: usize) -> (u64, u64) {
        self.log.leader_epoch = epoch;
        let b = batch_of(records);
        let info = validate_produce(&b, 1 << 20).expect("valid");
        let r = self.log.append(&mut self.q, &b, info, 0).expect("append");
        self.collect();
        r
    }

    fn follow(&mut self, base: u64, epoch: i32, records: usize) -> Result<(u64, u64), AppendError> {
        let r = self
            .log
            .append_replicated(&mut self.q, stamped(base, epoch, records), 0);
        self.collect();
        r
    }

    fn cut(&mut self, offset: u64) {
        self.log.truncate_from(&mut self.q, offset);
        self.collect();
    }

    /// (base, last, epoch) of every batch in the files, in order.
    fn on_disk(&self) -> Vec<(u64, u64, i32)> {
        let mut out = Vec::new();
        for (name, bytes) in &self.disk.files {
            if !name.ends_with(".log") {
                continue;
            }
            for (_, v) in scan(bytes) {
                out.push((
                    v.base_offset() as u64,
                    v.last_offset() as u64,
                    v.partition_leader_epoch(),
                ));
            }
        }
        out
    }

    /// Recovering from the disk gives the same log as the live one.
    fn check_recovers(&mut self, segment_bytes: u64) {
        assert!(!self.log.is_cutting());
        let again = recover(&mut self.disk, segment_bytes);
        assert_eq!(again.log_end_offset(), self.log.log_end_offset());
        assert_eq!(again.epochs(), self.log.epochs());
        assert_eq!(
            again.segments().keys().collect::<Vec<_>>(),
            self.log.segments().keys().collect::<Vec<_>>()
        );
    }
}

fn batch_of(records: usize) -> Bytes {
    let specs: Vec<RecordSpec> = (0..records)
        .map(|i| RecordSpec {
            key: None,
            value: Some(Bytes::from(vec![b'v'; 40 + i])),
            headers: vec![],
            timestamp_ms: 1_000 + i as i64,
        })
        .collect();
    build_batch(&specs)
}

fn stamped(base: u64, epoch: i32, records: usize) -> Bytes {
    let mut b = batch_of(records).to_vec();
    batch::set_base_offset(&mut b, base as i64);
    batch::set_partition_leader_epoch(&mut b, epoch);
    Bytes::from(b)
}

#[test]
fn replicated_batches_keep_their_offsets_and_epochs() {
    let mut r = Rig::new(1 << 20);
    assert_eq!(r.follow(0, 1, 3), Ok((0, 2)));
    assert_eq!(r.follow(3, 1, 2), Ok((3, 4)));
    assert_eq!(r.follow(5, 4, 1), Ok((5, 5)));
    r.settle();
    assert_eq!(r.log.durable_end(), 6);
    assert_eq!(r.on_disk(), vec![(0, 2, 1), (3, 4, 1), (5, 5, 4)]);
    assert_eq!(r.log.epochs().entries(), &[(1, 0), (4, 5)]);
    assert_eq!(r.log.epoch_at(4), Some(1));
    assert_eq!(r.log.epoch_at(6), None);
    assert_eq!(r.log.end_for_epoch(3), Some((1, 5)));
    r.check_recovers(1 << 20);
}

#[test]
fn replicated_batches_that_do_not_continue_the_log_are_refused() {
    let mut r = Rig::new(1 << 20);
    r.follow(0, 2, 3).unwrap();
    assert!(matches!(r.follow(5, 2, 1), Err(AppendError::Invalid(_))), "a gap");
    assert!(
        matches!(r.follow(2, 2, 1), Err(AppendError::Invalid(_))),
        "an overlap"
    );
    assert!(
        matches!(r.follow(3, 1, 1), Err(AppendError::Invalid(_))),
        "a lower epoch"
    );
    let mut corrupt = stamped(3, 2, 1).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let refused = r.log.append_replicated(&mut r.q, Bytes::from(corrupt), 0);
    assert!(matches!(refused, Err(AppendError::Invalid(_))), "a bad CRC");
    assert_eq!(r.log.log_end_offset(), 3);
}

#[test]
fn a_cut_inside_the_active_segment_finds_the_batch_by_reading() {
    let mut r = Rig::new(1 << 20);
    r.lead(1, 2);
    r.lead(1, 3);
    r.lead(2, 1);
    r.lead(2, 4);
    r.settle();
    assert_eq!(r.log.epochs().entries(), &[(1, 0), (2, 5)]);
    r.cut(6);
    assert!(
        r.pending.iter().any(|(_, op)| matches!(op, IoOp::Read { .. })),
        "6 starts mid-segment: its position is found by reading"
    );
    r.settle();
    assert_eq!(r.log.log_end_offset(), 6);
    assert_eq!(r.on_disk(), vec![(0, 1, 1), (2, 4, 1), (5, 5, 2)]);
    assert_eq!(r.follow(6, 3, 2), Ok((6, 7)));
    r.settle();
    assert_eq!(r.on_disk(), vec![(0, 1, 1), (2, 4, 1), (5, 5, 2), (6, 7, 3)]);
    assert_eq!(r.log.epochs().entries(), &[(1, 0), (2, 5), (3, 6)]);
    assert_eq!(r.log.durable_end(), 8);
    r.check_recovers(1 << 20);
    r.cut(2);
    r.settle();
    assert_eq!(r.on_disk(), vec![(0, 1, 1)]);
    assert_eq!(r.log.epochs().entries(), &[(1, 0)]);
    r.check_recovers(1 << 20);
    r.cut(0);
    r.settle();
    assert_eq!(r.on_disk(), vec![]);
    assert_eq!((r.log.log_end_offset(), r.log.durable_end()), (0, 0));
    r.check_recovers(1 << 20);
}

#[test]
fn a_cut_across_segments_deletes_the_later_ones() {
    // Small segments: every batch or two rolls.
    let seg = 400;
    let mut r = Rig::new(seg);
    let mut bases = Vec::new();
    for i in 0..8 {
        bases.push(r.lead(1 + i / 3, 2).0);
        r.settle();
    }
    let segments: Vec<u64> = r.log.segments().keys().copied().collect();
    assert!(segments.len() >= 4, "{segments:?}");
    // A cut exactly at a segment base drops that segment and the later ones.
    let at_base = segments[2];
    r.cut(at_base);
    r.settle();
    assert_eq!(
        r.log.segments().keys().copied().collect::<Vec<_>>(),
        segments[..2].to_vec()
    );
    assert!(r.on_disk().iter().all(|&(_, last, _)| last < at_base));
    assert!(
        !r.disk.files.keys().any(|f| f.contains(&format!("{at_base:020}"))),
        "index files go too"
    );
    r.check_recovers(seg);
    // A cut inside the first segment, at its second batch.
    let inside = bases[1];
    assert!(
        inside > segments[0] && inside < segments[1],
        "{bases:?} {segments:?}"
    );
    r.cut(inside);
    r.settle();
    assert_eq!(r.log.segments().len(), 1);
    assert_eq!(r.on_disk().last().map(|b| b.1 + 1), Some(inside));
    assert_eq!(r.follow(inside, 9, 1), Ok((inside, inside)));
    r.settle();
    r.check_recovers(seg);
}

#[test]
fn a_cut_waits_for_writes_in_flight_and_drops_what_they_wrote_past_it() {
    let mut r = Rig::new(1 << 20);
    r.lead(1, 2);
    r.settle();
    r.lead(1, 2); // 2..=3, in flight
    r.lead(1, 2); // 4..=5, in flight
    r.collect();
    assert!(!r.pending.is_empty());
    r.step_one(); // some of it reaches the disk
    r.cut(2);
    assert!(r.log.is_cutting(), "writes past the cut are still in flight");
    assert_eq!(r.log.log_end_offset(), 2, "the log end moves at once");
    assert!(r.log.durable_end() <= 2);
    // A new leader's batch arrives while the cut is under way: it waits its turn.
    assert_eq!(r.follow(2, 2, 3), Ok((2, 4)));
    r.settle();
    assert!(!r.log.is_cutting());
    assert_eq!(r.on_disk(), vec![(0, 1, 1), (2, 4, 2)]);
    assert_eq!(r.log.durable_end(), 5);
    assert_eq!(r.log.epochs().entries(), &[(1, 0), (2, 2)]);
    r.check_recovers(1 << 20);
}

#[test]
fn a_sync_of_bytes_a_cut_removes_makes_nothing_durable() {
    // Seed 7486 of the three-node simulator: a follower's fsync of a divergent suffix
    // completed after the suffix was truncated and the new leader's batches appended in its
    // place; the log counted those batches durable and the follower acknowledged them.
    let mut r = Rig::new(1 << 20);
    r.lead(1, 2);
    r.settle();
    r.lead(1, 3); // 2..=4: the append and its sync in flight
    r.collect();
    assert!(
        r.pending.iter().any(|(_, op)| matches!(op, IoOp::Sync { .. })),
        "{:?}",
        r.pending
    );
    r.cut(2);
    assert_eq!(
        r.follow(2, 2, 4),
        Ok((2, 5)),
        "the new leader's entries wait for the cut"
    );
    while !r.pending.is_empty() {
        r.step_one();
        if r.log.is_cutting() {
            assert!(
                r.log.durable_end() <= 2,
                "durable end {} counts bytes the cut removes",
                r.log.durable_end()
            );
        }
    }
    r.settle();
    assert_eq!(r.on_disk(), vec![(0, 1, 1), (2, 5, 2)]);
    assert_eq!(r.log.durable_end(), 6);
    r.check_recovers(1 << 20);
}

#[test]
fn a_fetch_does_not_read_a_batch_its_header_says_will_not_fit() {
    use super::read::{ReadGoal, ReadJob, ReadOutcome, ReadStep};
    let mut r = Rig::new(1 << 20);
    // Three batches of about 50 KB each, then a fetch whose limit cuts the third.
    for _ in 0..3 {
        r.lead(1, 300);
        r.settle();
    }
    let sizes: Vec<usize> = scan(&r.disk.files[&format!("{DIR}/{:020}.log", 0)])
        .map(|(_, v)| v.size_bytes())
        .collect();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    let max_bytes = sizes[0] + sizes[1] + sizes[2] / 2;
    assert!(max_bytes > 64 * 1024, "one read covers the limit: {max_bytes}");
    let goal = ReadGoal::Fetch { offset: 0, max_bytes };
    let (mut job, mut step) = ReadJob::start(&r.log, goal, r.log.log_end_offset(), false);
    let mut reads = Vec::new();
    let outcome = loop {
        match step {
            ReadStep::Io(op) => {
                let IoOp::Read { position, len, .. } = &op else {
                    unreachable!("a read job only reads")
                };
                reads.push((*position, *len));
                let IoResult::Read(bytes) = r.disk.run(&op) else {
                    unreachable!("the file is there")
                };
                step = job.on_read(&r.log, bytes);
            }
            ReadStep::Done(outcome) => break outcome,
        }
    };
    let ReadOutcome::Batches { batches, size_bytes } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((batches.len(), size_bytes), (2, sizes[0] + sizes[1]));
    assert_eq!(
        reads,
        vec![(0, max_bytes as u32)],
        "the cut-off third batch is not read"
    );
}
