//! The leader epoch history of a partition log: which epoch (Raft term) wrote which range
//! of offsets, as Kafka's `leader-epoch-checkpoint` records it. Raft's log matching asks
//! "what epoch is the entry at offset N", and OffsetForLeaderEpoch asks "where does epoch E
//! end"; both are answered from here without reading segments.
//!
//! Invariants: entries are `(epoch, start_offset)` with strictly increasing epochs and
//! non-decreasing start offsets; an entry's range runs to the next entry's start (or the
//! log end). Epochs below the first entry's are unknown (offsets dropped from the log).
//!
//! Stored in Kafka's text format (version 0): `0\n<count>\n<epoch> <start>\n...`, written
//! with `IoOp::WriteState` (atomic replace) whenever the history changes.

use std::fmt::Write as _;

/// File name of the history inside a partition directory (Kafka's name).
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(i32, u64)>,
}

impl EpochHistory {
    pub fn new() -> Self {
        EpochHistory::default()
    }

    /// Notes that `epoch` wrote a batch starting at `start`. A new, higher epoch opens a
    /// new entry; the current epoch changes nothing. Returns whether the history changed.
    /// A lower epoch than the latest is a caller bug (logs only grow in epoch).
    pub fn assign(&mut self, epoch: i32, start: u64) -> bool {
        match self.entries.last() {
            Some(&(last, last_start)) if epoch == last => {
                assert!(start >= last_start, "offsets only grow within an epoch");
                false
            }
            Some(&(last, last_start)) => {
                assert!(
                    epoch > last,
                    "epoch {epoch} after {last}: epochs only grow in a log"
                );
                assert!(
                    start >= last_start,
                    "epoch {epoch} starts at {start}, before {last_start}"
                );
                self.entries.push((epoch, start));
                true
            }
            None => {
                self.entries.push((epoch, start));
                true
            }
        }
    }

    /// Forgets every entry starting at or after `offset` (the log was cut back to
    /// `offset`). Returns whether the history changed.
    pub fn truncate_from(&mut self, offset: u64) -> bool {
        let keep = self.entries.partition_point(|&(_, start)| start < offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Makes the history agree with a batch read back from the log at recovery: `base` has
    /// `epoch`. The log's bytes win over the checkpoint: when they disagree, entries from
    /// `base` on are dropped (later batches of the scan re-add what follows), as are earlier
    /// entries with a higher epoch. Batches are observed in offset order; the caller cuts
    /// the history at the recovered log end. Returns whether the history changed.
    pub fn observe(&mut self, epoch: i32, base: u64) -> bool {
        if self.epoch_at(base) == Some(epoch) {
            return false;
        }
        self.truncate_from(base);
        while self.entries.last().is_some_and(|&(e, _)| e > epoch) {
            self.entries.pop();
        }
        if self.latest() != Some(epoch) {
            self.entries.push((epoch, base));
        }
        true
    }

    /// The epoch of the entry at `offset` (the caller checks that the log holds it).
    pub fn epoch_at(&self, offset: u64) -> Option<i32> {
        let i = self.entries.partition_point(|&(_, start)| start <= offset);
        i.checked_sub(1).map(|i| self.entries[i].0)
    }

    /// The latest epoch, if any batch was ever written.
    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Kafka's OffsetForLeaderEpoch: the largest epoch <= `epoch` in the history and the
    /// offset where it ends (the next epoch's start, or `log_end` for the latest).
    pub fn end_for_epoch(&self, epoch: i32, log_end: u64) -> Option<(i32, u64)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = *self.entries.get(i.checked_sub(1)?)?;
        let end = self.entries.get(i).map_or(log_end, |&(_, start)| start);
        Some((found, end))
    }

    pub fn entries(&self) -> &[(i32, u64)] {
        &self.entries
    }

    /// Kafka's checkpoint text.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            // Writing to a String cannot fail.
            let _ = writeln!(s, "{epoch} {start}");
        }
        s.into_bytes()
    }

    /// Parses a checkpoint, checking the invariants; a clear error for anything else.
    pub fn decode(bytes: &[u8]) -> Result<EpochHistory, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some("0") {
            return Err("unknown version (expected 0)".into());
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("missing or bad entry count")?;
        let mut history = EpochHistory::new();
        for n in 0..count {
            let line = lines
                .next()
                .ok_or(format!("{count} entries announced, {n} found"))?;
            let mut parts = line.split_whitespace();
            let epoch: i32 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or(format!("bad epoch in {line:?}"))?;
            let start: u64 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or(format!("bad offset in {line:?}"))?;
            if parts.next().is_some() || epoch < 0 {
                return Err(format!("bad entry {line:?}"));
            }
            if let Some(&(prev, prev_start)) = history.entries.last() {
                if epoch <= prev || start < prev_start {
                    return Err(format!(
                        "entry {line:?} does not follow epoch {prev} at {prev_start}"
                    ));
                }
            }
            history.entries.push((epoch, start));
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return Err("bytes after the announced entries".into());
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EpochHistory {
        let mut h = EpochHistory::new();
        assert!(h.assign(1, 0));
        assert!(!h.assign(1, 5));
        assert!(h.assign(3, 10));
        assert!(h.assign(4, 25));
        h
    }

    #[test]
    fn epoch_at_and_end_for_epoch_follow_the_ranges() {
        let h = sample();
        assert_eq!(h.epoch_at(0), Some(1));
        assert_eq!(h.epoch_at(9), Some(1));
        assert_eq!(h.epoch_at(10), Some(3));
        assert_eq!(h.epoch_at(100), Some(4));
        assert_eq!(h.end_for_epoch(1, 40), Some((1, 10)));
        assert_eq!(
            h.end_for_epoch(2, 40),
            Some((1, 10)),
            "epoch 2 never wrote: answer epoch 1"
        );
        assert_eq!(h.end_for_epoch(3, 40), Some((3, 25)));
        assert_eq!(
            h.end_for_epoch(9, 40),
            Some((4, 40)),
            "the latest epoch ends at the log end"
        );
        assert_eq!(h.end_for_epoch(0, 40), None);
        assert_eq!(EpochHistory::new().epoch_at(0), None);
    }

    #[test]
    fn truncation_drops_entries_starting_at_or_after_the_cut() {
        let mut h = sample();
        assert!(!h.truncate_from(30));
        assert!(h.truncate_from(25));
        assert_eq!(h.latest(), Some(3));
        assert!(
            !h.truncate_from(11),
            "epoch 3 starts at 10, before the cut: it stays"
        );
        assert_eq!(h.entries(), &[(1, 0), (3, 10)]);
        assert!(h.truncate_from(10));
        assert_eq!(h.entries(), &[(1, 0)]);
    }

    #[test]
    fn observing_the_log_overrides_a_checkpoint_that_disagrees() {
        let mut h = sample();
        assert!(!h.observe(3, 12), "agrees: nothing changes");
        assert!(
            h.observe(3, 30),
            "entries after the batch are dropped: (4, 25) said 30 was epoch 4"
        );
        assert_eq!(h.entries(), &[(1, 0), (3, 10)]);
        let mut h = sample();
        assert!(h.observe(2, 12), "epoch 2 at 12 contradicts (3, 10)");
        assert_eq!(h.entries(), &[(1, 0), (2, 12)]);
        let mut h = EpochHistory::new();
        assert!(h.observe(7, 40));
        assert_eq!(h.entries(), &[(7, 40)]);
    }

    #[test]
    #[should_panic(expected = "epochs only grow")]
    fn a_lower_epoch_is_a_bug() {
        let mut h = sample();
        h.assign(2, 30);
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let h = sample();
        let bytes = h.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "0\n3\n1 0\n3 10\n4 25\n"
        );
        assert_eq!(EpochHistory::decode(&bytes), Ok(h));
        assert_eq!(EpochHistory::decode(b"0\n0\n"), Ok(EpochHistory::new()));
        for bad in [
            &b"1\n0\n"[..],
            b"0\n2\n1 0\n",
            b"0\n2\n3 0\n1 5\n",
            b"0\n1\n1 x\n",
            b"0\n1\n1 0 9\n",
            b"0\n1\n1 0\n2 5\n",
            b"\xff",
            b"",
        ] {
            assert!(EpochHistory::decode(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
