//! An in-memory [`RaftLog`] for tests: whole batches, a durable prefix that lags the end
//! until `fsync_to`, and `crash` to lose what was not durable.
//!
//! Invariants: batches are contiguous from `start`; `durable_end <= end` and lies on a batch
//! boundary; a truncation is durable at once.

use bytes::{BufMut, Bytes, BytesMut};

use crate::raft::{Entry, RaftLog};

#[derive(Clone, Debug, Default)]
pub struct ModelLog {
    start: u64,
    /// The epoch of the entry before `start` (what `last_epoch` reports when empty).
    epoch_before_start: i32,
    batches: Vec<Entry>,
    durable_end: u64,
}

/// The fake batch bytes: the batch's unique id, then `pad` filler bytes.
pub fn batch_bytes(id: u64, pad: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + pad);
    b.put_u64(id);
    b.put_bytes(0xab, pad);
    b.freeze()
}

/// The unique id a test batch carries in its first 8 bytes.
pub fn batch_id(e: &Entry) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(&e.bytes[..8]);
    u64::from_be_bytes(id)
}

impl ModelLog {
    pub fn new() -> Self {
        ModelLog::default()
    }

    /// An empty log whose first offset is `start` (entries below were dropped), the entry
    /// before it having `epoch_before_start`.
    pub fn starting_at(start: u64, epoch_before_start: i32) -> Self {
        ModelLog {
            start,
            epoch_before_start,
            batches: Vec::new(),
            durable_end: start,
        }
    }

    pub fn batches(&self) -> &[Entry] {
        &self.batches
    }

    pub fn append(&mut self, e: Entry) {
        assert_eq!(e.base, self.end(), "appends go at the end");
        assert!(e.base <= e.last);
        self.batches.push(e);
    }

    /// Appends a batch of `records` offsets at `epoch` with id `id`; returns it.
    pub fn append_new(&mut self, epoch: i32, records: u64, id: u64, pad: usize) -> Entry {
        let base = self.end();
        let e = Entry {
            base,
            last: base + records - 1,
            epoch,
            bytes: batch_bytes(id, pad),
        };
        self.append(e.clone());
        e
    }

    /// Drops every batch at or after `from` (a batch boundary); durable at once.
    pub fn truncate(&mut self, from: u64) {
        assert!(from >= self.start, "cannot truncate below the start");
        assert!(
            from == self.end() || self.batch_base(from) == Some(from),
            "truncation at a batch boundary"
        );
        self.batches.retain(|b| b.base < from);
        self.durable_end = self.durable_end.min(from);
    }

    /// Makes everything below `target` (capped at the end) durable.
    pub fn fsync_to(&mut self, target: u64) {
        self.durable_end = self.durable_end.max(target.min(self.end()));
    }

    pub fn fsync(&mut self) {
        self.durable_end = self.end();
    }

    /// Loses everything not durable, as a crash does.
    pub fn crash(&mut self) {
        let keep = self.durable_end;
        self.batches.retain(|b| b.end() <= keep);
        assert_eq!(self.end(), keep, "durable ends lie on batch boundaries");
    }

    fn index_of(&self, offset: u64) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.last < offset);
        self.batches.get(i).filter(|b| b.base <= offset).map(|_| i)
    }

    pub fn batch_at(&self, offset: u64) -> Option<&Entry> {
        self.index_of(offset).map(|i| &self.batches[i])
    }

    /// Index of the first batch ending after `offset`.
    pub fn first_index_after(&self, offset: u64) -> usize {
        self.batches.partition_point(|b| b.last < offset)
    }

    /// What the engine answers to `NeedEntries`: whole batches from the one holding `from`,
    /// up to `max_bytes` (at least one); empty if `from` is outside the log.
    pub fn read(&self, from: u64, max_bytes: u64) -> Vec<Entry> {
        let Some(i) = self.index_of(from) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut total = 0u64;
        for b in &self.batches[i..] {
            let len = b.bytes.len() as u64;
            if !out.is_empty() && total + len > max_bytes {
                break;
            }
            total += len;
            out.push(b.clone());
        }
        out
    }
}

impl RaftLog for ModelLog {
    fn start(&self) -> u64 {
        self.start
    }
    fn end(&self) -> u64 {
        self.batches.last().map_or(self.start, Entry::end)
    }
    fn durable_end(&self) -> u64 {
        self.durable_end
    }
    fn epoch_at(&self, offset: u64) -> Option<i32> {
        self.batch_at(offset).map(|b| b.epoch)
    }
    fn last_epoch(&self) -> i32 {
        self.batches.last().map_or(self.epoch_before_start, |b| b.epoch)
    }
    fn end_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        let i = self.batches.partition_point(|b| b.epoch <= epoch);
        if i == 0 {
            return None;
        }
        let found = self.batches[i - 1].epoch;
        Some((found, self.batches.get(i).map_or(self.end(), |b| b.base)))
    }
    fn batch_base(&self, offset: u64) -> Option<u64> {
        self.batch_at(offset).map(|b| b.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_log_answers_like_a_partition_log() {
        let mut log = ModelLog::new();
        log.append_new(1, 3, 1, 0); // [0..3) e1
        log.append_new(1, 2, 2, 0); // [3..5) e1
        log.append_new(3, 4, 3, 0); // [5..9) e3
        assert_eq!((log.start(), log.end(), log.durable_end()), (0, 9, 0));
        assert_eq!(log.epoch_at(4), Some(1));
        assert_eq!(log.batch_base(7), Some(5));
        assert_eq!(log.end_for_epoch(2), Some((1, 5)));
        assert_eq!(log.end_for_epoch(3), Some((3, 9)));
        assert_eq!(log.end_for_epoch(0), None);
        assert_eq!(log.read(4, 1).len(), 1);
        assert_eq!(log.read(3, 1000).len(), 2);
        log.fsync_to(5);
        log.crash();
        assert_eq!(log.end(), 5);
        log.truncate(3);
        assert_eq!((log.end(), log.durable_end(), log.last_epoch()), (3, 3, 1));
    }
}
