//! Read-ahead for consumers catching up: after a read of a log file's recycled part (before
//! its cached tail, read with `O_DIRECT`, see ops.rs), the range that comes next is read into
//! memory of our own in the background, so the consumer's next fetch does not wait for the
//! device.
//!
//! Why not the kernel's read-ahead: that fills the page cache, and on a machine whose memory
//! is lazily backed taking fresh page cache pages costs more than the read saves
//! (`POSIX_FADV_WILLNEED` plus buffered reads measured 508k -> 368k rec/s consuming 1 KiB
//! records from the start, and twice the broker CPU).
//!
//! Where the next read starts: a fetch returns whole batches, so the consumer's next fetch
//! starts at the batch the last read cut short. The prefetch starts there: after the last
//! whole batch of the bytes just read (the engine's `scan_unchecked_crc`: framing and
//! magic, no CRCs). That is only a guess of where the engine will read next. A miss costs
//! the memory until the slot is replaced or evicted, never a wrong answer.
//!
//! Invariants:
//! * A read takes from a slot only bytes the slot holds from the read's position on (all it
//!   asked for, or the first part when the slot ends inside the range; the rest is read from
//!   the device), read from the file after the last change to it ([`ReadAhead::invalidate`]
//!   runs before any op that changes what a path names or what its bytes are: truncate,
//!   delete, rename, create, replace), so the bytes are the file's bytes.
//! * How much is prefetched: the larger of what the read just asked and the prefetch it
//!   took from, so a fetch whose byte budget ran out part way through this file (and asked
//!   less) does not shorten the prefetch for the next fetch, which may ask for more.
//! * A prefetch that an invalidation of its file overtook never fills its slot (the slot is
//!   marked stale, and a stale slot is dropped when its prefetch finishes).
//! * No reader waits for a prefetch that has not started: a read that finds its slot still
//!   queued takes it over (reads the range itself) and the queued job finds nothing to do.
//!   A read waits only for a prefetch already running, which waits for nothing but the
//!   device. So the reader threads cannot all block on jobs queued behind them.
//! * Slots hold at most [`BYTES_MAX`] bytes in all; the oldest ready slots are evicted first.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use gregor_engine::batch::scan_unchecked_crc;

/// Bytes all slots may hold (queued and running prefetches count their length).
pub(crate) const BYTES_MAX: u64 = 256 << 20;

/// A prefetch for the prefetch threads to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Prefetch {
    pub file: String,
    pub start: u64,
    pub len: u64,
}

#[derive(Debug)]
enum State {
    Queued,
    Running,
    Ready(Bytes),
}

#[derive(Debug)]
struct Slot {
    start: u64,
    len: u64,
    state: State,
    /// Its file changed while the prefetch was running: what it read is not the file's.
    stale: bool,
    /// Order of creation, for eviction.
    serial: u64,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    serial: u64,
    /// Sum of the slots' `len`.
    bytes: u64,
    /// Reads answered wholly from a prefetch.
    hits: u64,
    /// Reads whose first part came from a prefetch (the slot ended inside the range).
    partial_hits: u64,
}

/// What [`ReadAhead::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The bytes from the read's position on: all it asked for, or the first part.
    pub bytes: Bytes,
    /// How long the prefetch was: how much the consumer of this file read last time.
    pub prefetched: u64,
}

impl Inner {
    fn remove(&mut self, file: &str) -> Option<Slot> {
        let slot = self.slots.remove(file)?;
        self.bytes -= slot.len;
        Some(slot)
    }
}

/// The slots, one per file at most, and where prefetch jobs go.
#[derive(Default)]
pub(crate) struct ReadAhead {
    inner: Mutex<Inner>,
    changed: Condvar,
    jobs: Mutex<Option<Sender<Prefetch>>>,
}

impl ReadAhead {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the state whole before anything in it can panic.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where prefetch jobs are sent; without it nothing is prefetched.
    pub(crate) fn set_jobs(&self, jobs: Sender<Prefetch>) {
        *self.jobs.lock().unwrap_or_else(|p| p.into_inner()) = Some(jobs);
    }

    /// Stops sending prefetch jobs (the executor is going away).
    pub(crate) fn clear_jobs(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// What a slot of `file` holds of the `len` bytes at `position`: all of them, or the
    /// first part when the slot ends inside the range (the caller reads the rest), waiting
    /// for a running prefetch of that file to finish. `None` if no slot holds `position`.
    /// The slot is used up either way.
    pub(crate) fn take(&self, file: &str, position: u64, len: u64) -> Option<Taken> {
        let mut inner = self.lock();
        loop {
            let slot = inner.slots.get_mut(file)?;
            match &slot.state {
                State::Running => {
                    inner = self.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
                }
                State::Queued => {
                    // Take it over: the queued job will find no slot to fill.
                    inner.remove(file);
                    return None;
                }
                State::Ready(bytes) => {
                    let (start, prefetched, bytes) = (slot.start, slot.len, bytes.clone());
                    inner.remove(file);
                    let end = start + bytes.len() as u64;
                    if position < start || position >= end || len == 0 {
                        return None;
                    }
                    let until = end.min(position + len);
                    if until == position + len {
                        inner.hits += 1;
                    } else {
                        inner.partial_hits += 1;
                    }
                    let from = (position - start) as usize;
                    let bytes = bytes.slice(from..(until - start) as usize);
                    return Some(Taken { bytes, prefetched });
                }
            }
        }
    }

    /// Queues a prefetch of `len` bytes of `file` at `start`, replacing the file's slot,
    /// unless that would pass [`BYTES_MAX`] even after evicting ready slots.
    pub(crate) fn schedule(&self, file: &str, start: u64, len: u64) {
        if len == 0 || len > BYTES_MAX {
            return;
        }
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(jobs) = jobs else { return };
        {
            let mut inner = self.lock();
            if matches!(
                inner.slots.get(file),
                Some(Slot {
                    state: State::Running,
                    ..
                })
            ) {
                return; // one prefetch per file at a time
            }
            inner.remove(file);
            while inner.bytes + len > BYTES_MAX {
                let oldest = inner
                    .slots
                    .iter()
                    .filter(|(_, s)| matches!(s.state, State::Ready(_)))
                    .min_by_key(|(_, s)| s.serial)
                    .map(|(f, _)| f.clone());
                match oldest {
                    Some(f) => {
                        inner.remove(&f);
                    }
                    None => return,
                }
            }
            inner.serial += 1;
            let slot = Slot {
                start,
                len,
                state: State::Queued,
                stale: false,
                serial: inner.serial,
            };
            inner.bytes += len;
            inner.slots.insert(file.to_string(), slot);
        }
        let job = Prefetch {
            file: file.to_string(),
            start,
            len,
        };
        if jobs.send(job).is_err() {
            self.lock().remove(file);
        }
    }

    /// A prefetch thread is about to run `job`: true if its slot is still queued for it (it
    /// is now running), false if a read took it over or an invalidation removed it.
    pub(crate) fn start(&self, job: &Prefetch) -> bool {
        let mut inner = self.lock();
        match inner.slots.get_mut(&job.file) {
            Some(slot) if slot.start == job.start && matches!(slot.state, State::Queued) => {
                slot.state = State::Running;
                true
            }
            _ => false,
        }
    }

    /// The running `job` read `bytes` (`None`: it failed): fill its slot, unless the file
    /// changed since it was queued.
    pub(crate) fn finish(&self, job: &Prefetch, bytes: Option<Bytes>) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get_mut(&job.file) {
            if slot.start == job.start && matches!(slot.state, State::Running) {
                match bytes {
                    Some(bytes) if !slot.stale => slot.state = State::Ready(bytes),
                    _ => {
                        inner.remove(&job.file);
                    }
                }
            }
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// `rel` (and everything under it) is about to change or has changed: drop its slots,
    /// and make its prefetches already running discard what they read.
    pub(crate) fn invalidate(&self, rel: &str) {
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .slots
            .keys()
            .filter(|path| *path == rel || path.strip_prefix(rel).is_some_and(|rest| rest.starts_with('/')))
            .cloned()
            .collect();
        for path in gone {
            match inner.slots.get_mut(&path) {
                // Its prefetch thread drops the slot when it finishes.
                Some(slot) if matches!(slot.state, State::Running) => slot.stale = true,
                _ => {
                    inner.remove(&path);
                }
            }
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// Reads answered wholly from a prefetch so far.
    pub(crate) fn hits(&self) -> u64 {
        self.lock().hits
    }

    /// Reads whose first part came from a prefetch so far.
    pub(crate) fn partial_hits(&self) -> u64 {
        self.lock().partial_hits
    }
}

/// Where the bytes of `data`, read at `position`, stop holding whole record batches (the
/// engine's framing walk, without CRCs: this only guesses where the next read starts), or
/// `None` if not even the first batch is whole.
pub(crate) fn after_whole_batches(position: u64, data: &[u8]) -> Option<u64> {
    let (end, _) = scan_unchecked_crc(data).finish();
    (end > 0).then(|| position + end as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    use gregor_engine::batch::{build_batch, RecordSpec};
    use gregor_engine::{IoOp, IoResult};

    use crate::disk::handles::HandleCache;
    use crate::disk::ops;

    /// A stored batch of one record whose value is `len` bytes of `fill`.
    fn batch(len: usize, fill: u8) -> Vec<u8> {
        let spec = RecordSpec {
            key: None,
            value: Some(Bytes::from(vec![fill; len])),
            headers: vec![],
            timestamp_ms: 0,
        };
        build_batch(&[spec]).to_vec()
    }

    /// A read-ahead whose prefetch jobs the test runs by hand from the receiver.
    fn with_jobs() -> (ReadAhead, mpsc::Receiver<Prefetch>) {
        let (tx, rx) = mpsc::channel();
        let r = ReadAhead::default();
        r.set_jobs(tx);
        (r, rx)
    }

    fn ready(r: &ReadAhead, rx: &mpsc::Receiver<Prefetch>, bytes: Bytes) {
        let job = rx.try_recv().unwrap();
        assert!(r.start(&job));
        r.finish(&job, Some(bytes));
    }

    #[test]
    fn whole_batches_end_where_the_last_complete_one_does() {
        let (first, second) = (batch(10, 1), batch(20, 2));
        let (a, b) = (first.len() as u64, second.len() as u64);
        let mut data = first;
        data.extend(second);
        assert_eq!(after_whole_batches(100, &data), Some(100 + a + b));
        assert_eq!(
            after_whole_batches(100, &data[..(a + b) as usize - 1]),
            Some(100 + a)
        );
        assert_eq!(after_whole_batches(0, &data[..a as usize - 1]), None);
        assert_eq!(
            after_whole_batches(0, &[0u8; 40]),
            None,
            "zero length is not a batch"
        );
        let mut bad = batch(5, 0);
        bad[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(after_whole_batches(0, &bad), None);
    }

    #[test]
    fn a_ready_slot_answers_a_read_inside_it_once() {
        let (r, rx) = with_jobs();
        r.schedule("a", 100, 50);
        ready(&r, &rx, Bytes::from((0..50u8).collect::<Vec<_>>()));
        assert_eq!(
            r.take("a", 110, 10).unwrap(),
            Taken {
                bytes: Bytes::from((10..20u8).collect::<Vec<_>>()),
                prefetched: 50
            }
        );
        assert_eq!(r.take("a", 110, 10), None, "used up");
        assert_eq!((r.hits(), r.partial_hits()), (1, 0));
        // A read that goes past the slot's end gets the part the slot holds.
        r.schedule("a", 100, 50);
        ready(&r, &rx, Bytes::from((0..50u8).collect::<Vec<_>>()));
        assert_eq!(
            r.take("a", 140, 20).unwrap().bytes,
            Bytes::from((40..50u8).collect::<Vec<_>>())
        );
        assert_eq!((r.hits(), r.partial_hits()), (1, 1));
        // One that starts before the slot, or at its end, gets nothing from it.
        r.schedule("a", 100, 50);
        ready(&r, &rx, Bytes::from(vec![0u8; 50]));
        assert_eq!(r.take("a", 99, 2), None);
        r.schedule("a", 100, 50);
        ready(&r, &rx, Bytes::from(vec![0u8; 50]));
        assert_eq!(r.take("a", 150, 2), None);
        assert_eq!(r.lock().bytes, 0);
        // Without a place to send jobs, nothing is scheduled.
        r.clear_jobs();
        r.schedule("b", 0, 10);
        assert!(r.lock().slots.is_empty());
    }

    #[test]
    fn a_queued_slot_is_taken_over_and_an_invalidated_one_never_fills() {
        let (r, rx) = with_jobs();
        r.schedule("d/a", 0, 10);
        let job = rx.try_recv().unwrap();
        assert_eq!(r.take("d/a", 0, 10), None);
        assert!(!r.start(&job), "the read took it over");
        // Running when the directory is deleted: what it read is dropped.
        r.schedule("d/a", 0, 10);
        let job = rx.try_recv().unwrap();
        assert!(r.start(&job));
        r.invalidate("d");
        r.finish(&job, Some(Bytes::from(vec![1u8; 10])));
        assert_eq!(r.take("d/a", 0, 10), None);
        // Another path's change leaves a running prefetch alone.
        r.schedule("d/a", 0, 10);
        let job = rx.try_recv().unwrap();
        assert!(r.start(&job));
        r.invalidate("e");
        r.invalidate("d/ab");
        r.finish(&job, Some(Bytes::from(vec![3u8; 10])));
        assert_eq!(
            r.take("d/a", 0, 10).map(|t| t.bytes),
            Some(Bytes::from(vec![3u8; 10]))
        );
        // Ready ones go at once; other paths stay.
        r.schedule("d/a", 0, 10);
        ready(&r, &rx, Bytes::from(vec![1u8; 10]));
        r.schedule("dx", 0, 10);
        ready(&r, &rx, Bytes::from(vec![2u8; 10]));
        r.invalidate("d");
        assert_eq!(r.take("d/a", 0, 10), None);
        assert_eq!(
            r.take("dx", 0, 10).map(|t| t.bytes),
            Some(Bytes::from(vec![2u8; 10]))
        );
        assert_eq!(r.lock().bytes, 0);
    }

    #[test]
    fn a_read_waits_for_a_running_prefetch() {
        let (r, rx) = with_jobs();
        let r = std::sync::Arc::new(r);
        r.schedule("a", 0, 4);
        let job = rx.try_recv().unwrap();
        assert!(r.start(&job));
        let reader = {
            let r = r.clone();
            std::thread::spawn(move || r.take("a", 0, 4).map(|t| t.bytes))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.finish(&job, Some(Bytes::from_static(b"abcd")));
        assert_eq!(reader.join().unwrap(), Some(Bytes::from_static(b"abcd")));
    }

    #[test]
    fn slots_stay_within_the_byte_budget() {
        let (r, rx) = with_jobs();
        let chunk = BYTES_MAX / 4;
        for i in 0..6u64 {
            r.schedule(&format!("f{i}"), 0, chunk);
            ready(&r, &rx, Bytes::from(vec![0u8; 16]));
            assert!(r.lock().bytes <= BYTES_MAX);
        }
        // The oldest ready slots made room for the newest.
        assert!(r.lock().slots.contains_key("f5"));
        assert!(!r.lock().slots.contains_key("f0"));
        // A queued slot is never evicted: with the budget full of them, nothing is added.
        let (r, _rx) = with_jobs();
        for i in 0..4u64 {
            r.schedule(&format!("q{i}"), 0, chunk);
        }
        r.schedule("late", 0, chunk);
        assert!(!r.lock().slots.contains_key("late"));
    }

    /// A 24 MiB log file of stored batches of about 100 KB each, on a real disk (`O_DIRECT`
    /// does not work everywhere: tmpfs), with read-ahead on.
    fn catch_up_file() -> (tempfile::TempDir, Vec<u8>, HandleCache, mpsc::Receiver<Prefetch>) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        let mut data = Vec::new();
        let mut i = 0u8;
        while data.len() < 24 << 20 {
            data.extend(batch(100_000 + usize::from(i) * 37, i));
            i = i.wrapping_add(1);
        }
        std::fs::write(dir.path().join("p/0.log"), &data).unwrap();
        let handles = HandleCache::new(dir.path().to_path_buf());
        let (tx, rx) = mpsc::channel();
        handles.readahead.set_jobs(tx);
        (dir, data, handles, rx)
    }

    fn read(handles: &HandleCache, position: u64, len: u32) -> Bytes {
        let op = IoOp::Read {
            file: "p/0.log".into(),
            position,
            len,
        };
        match ops::execute(handles, op) {
            IoResult::Read(bytes) => bytes,
            other => panic!("{other:?}"),
        }
    }

    /// Reads as the engine does for a consumer catching up, asking `lens` bytes in turn: each
    /// read starts where the previous one's whole batches ended, and every answer must be
    /// the file's bytes. Stops before the cached tail (the last 8 MiB, where reads are
    /// plain). Returns how many reads it made and where the next one would start.
    fn catch_up(
        handles: &HandleCache,
        rx: &mpsc::Receiver<Prefetch>,
        data: &[u8],
        lens: &[u32],
    ) -> (u64, u64) {
        let (mut position, mut reads) = (0u64, 0u64);
        let longest = u64::from(*lens.iter().max().unwrap());
        for &len in lens.iter().cycle() {
            if position + longest >= data.len() as u64 - (8 << 20) {
                break;
            }
            let bytes = read(handles, position, len);
            let at = position as usize;
            assert_eq!(bytes.len(), len as usize);
            assert_eq!(&bytes[..], &data[at..at + bytes.len()], "at {position}");
            reads += 1;
            while let Ok(job) = rx.try_recv() {
                ops::prefetch(handles, &job);
            }
            position = after_whole_batches(position, &bytes).unwrap();
        }
        (reads, position)
    }

    fn direct_works(handles: &HandleCache) -> bool {
        ops::read_direct(&handles.path("p/0.log"), 0, 4096)
            .unwrap()
            .is_some()
    }

    /// Most catch-up reads come from prefetches, and a truncate and rewrite is never answered
    /// with what was prefetched before it.
    #[test]
    fn catch_up_reads_come_from_prefetches_and_always_hold_the_files_bytes() {
        let (_dir, data, handles, rx) = catch_up_file();
        let (reads, position) = catch_up(&handles, &rx, &data, &[1 << 20]);
        let direct = direct_works(&handles);
        if direct {
            assert_eq!(handles.readahead.hits(), reads - 1, "all but the first read");
            assert_eq!(handles.readahead.partial_hits(), 0);
        }
        // The slot for the next read is filled; then the file is cut there and rewritten.
        if direct {
            let inner = handles.readahead.lock();
            let slot = &inner.slots["p/0.log"];
            assert!(slot.start == position && matches!(slot.state, State::Ready(_)));
        }
        let op = IoOp::Truncate {
            file: "p/0.log".into(),
            len: position,
        };
        assert_eq!(ops::execute(&handles, op), IoResult::Done);
        let new = vec![0xEEu8; (16 << 20) as usize];
        let op = IoOp::Append {
            file: "p/0.log".into(),
            position,
            data: vec![Bytes::from(new.clone())],
        };
        assert_eq!(ops::execute(&handles, op), IoResult::Done);
        let bytes = read(&handles, position, 4096);
        assert_eq!(
            &bytes[..],
            &new[..4096],
            "the rewritten bytes, not the prefetched ones"
        );
    }

    /// A fetch whose byte budget runs out part way through a partition asks less of that
    /// partition than the next fetch will: the read after a short one gets the prefetched
    /// part plus the rest from the device, and from then on prefetches are as long as the
    /// longest read, so every read is answered from one.
    #[test]
    fn reads_that_ask_more_than_the_last_one_still_come_from_prefetches() {
        let (_dir, data, handles, rx) = catch_up_file();
        let (reads, _) = catch_up(&handles, &rx, &data, &[640 << 10, 1 << 20]);
        if direct_works(&handles) {
            assert_eq!(handles.readahead.partial_hits(), 1, "the second read");
            assert_eq!(handles.readahead.hits(), reads - 2, "every read after the second");
        }
    }
}
