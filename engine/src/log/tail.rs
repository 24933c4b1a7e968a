//! The tail cache: the most recently appended batches of a partition, kept in memory so
//! consumers reading at the head of the log are served without IO.
//!
//! Invariants: batches are dense and in offset order; the cached bytes stay under
//! `max_bytes` except that the newest batch is always kept.

use std::collections::VecDeque;

use super::stored::StoredBatch;

#[derive(Debug)]
pub struct TailCache {
    max_bytes: usize,
    bytes: usize,
    batches: VecDeque<(u64, u64, StoredBatch)>,
}

impl TailCache {
    pub fn new(max_bytes: usize) -> Self {
        TailCache {
            max_bytes,
            bytes: 0,
            batches: VecDeque::new(),
        }
    }

    pub fn push(&mut self, base: u64, last: u64, batch: StoredBatch) {
        if self.max_bytes == 0 {
            return;
        }
        if let Some(&(_, prev_last, _)) = self.batches.back() {
            assert_eq!(prev_last + 1, base, "cached batches are dense");
        }
        self.bytes += batch.len();
        self.batches.push_back((base, last, batch));
        while self.bytes > self.max_bytes && self.batches.len() > 1 {
            if let Some((_, _, b)) = self.batches.pop_front() {
                self.bytes -= b.len();
            }
        }
    }

    /// Forgets every batch at or after `offset` (after a rewind).
    pub fn truncate_from(&mut self, offset: u64) {
        while let Some(&(base, _, _)) = self.batches.back() {
            if base < offset {
                break;
            }
            if let Some((_, _, b)) = self.batches.pop_back() {
                self.bytes -= b.len();
            }
        }
    }

    /// Stored batches from the one holding `offset`, stopping before `end` (the high
    /// watermark) and after `max_bytes` (but at least one batch). `None` when `offset` is
    /// older than the cache: the caller reads from disk.
    pub fn read(&self, offset: u64, end: u64, max_bytes: usize) -> Option<(Vec<StoredBatch>, usize)> {
        let (start, count, total) = self.span(offset, end, max_bytes)?;
        let out = self
            .batches
            .iter()
            .skip(start)
            .take(count)
            .map(|(_, _, b)| b.clone())
            .collect();
        Some((out, total))
    }

    /// The bytes [`TailCache::read`] would return, without collecting them.
    pub fn readable_bytes(&self, offset: u64, end: u64, max_bytes: usize) -> Option<usize> {
        self.span(offset, end, max_bytes).map(|(_, _, total)| total)
    }

    /// Which cached batches a read takes: (first index, how many, their total bytes).
    fn span(&self, offset: u64, end: u64, max_bytes: usize) -> Option<(usize, usize, usize)> {
        let &(first_base, _, _) = self.batches.front()?;
        if offset < first_base {
            return None;
        }
        let start = self.batches.partition_point(|&(_, last, _)| last < offset);
        let mut count = 0usize;
        let mut total = 0usize;
        for (base, _, b) in self.batches.iter().skip(start) {
            if *base >= end || (count > 0 && total + b.len() > max_bytes) {
                break;
            }
            total += b.len();
            count += 1;
        }
        Some((start, count, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> StoredBatch {
        StoredBatch::whole(bytes::Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn serves_from_the_batch_holding_the_offset() {
        let mut c = TailCache::new(1000);
        c.push(0, 4, b(100));
        c.push(5, 9, b(100));
        c.push(10, 10, b(100));
        let (out, n) = c.read(6, 11, 1000).unwrap();
        assert_eq!((out.len(), n), (2, 200));
        // stops before the high watermark
        assert_eq!(c.read(6, 10, 1000).unwrap().0.len(), 1);
        // at least one batch even if over the limit
        assert_eq!(c.read(0, 11, 1).unwrap().0.len(), 1);
        // at the end: nothing, but served from cache
        assert_eq!(c.read(11, 11, 1000).unwrap().0.len(), 0);
        assert_eq!(c.readable_bytes(6, 11, 1000), Some(200));
        assert_eq!(c.readable_bytes(0, 11, 1), Some(100));
    }

    #[test]
    fn evicts_oldest_and_truncates() {
        let mut c = TailCache::new(250);
        c.push(0, 0, b(100));
        c.push(1, 1, b(100));
        c.push(2, 2, b(100));
        assert!(c.read(0, 3, 1000).is_none());
        c.truncate_from(2);
        assert_eq!(c.read(1, 3, 1000).unwrap().0.len(), 1);
        let mut off = TailCache::new(0);
        off.push(0, 0, b(1));
        assert!(off.read(0, 1, 10).is_none());
    }
}
