//! Sparse offset and time indexes of one segment, in Kafka's on-disk formats.
//!
//! Invariants: entries are relative to the segment's base offset (so a relative offset fits
//! a u32); offset-index entries strictly increase in offset and position; time-index entries
//! strictly increase in timestamp and never decrease in offset. Decoding refuses bytes that
//! break these, so a damaged index is rebuilt instead of trusted.

use thiserror::Error;

/// Bytes per offset-index entry: relative offset u32, position u32 (big-endian).
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes per time-index entry: timestamp i64, relative offset u32 (big-endian).
pub const TIME_ENTRY_BYTES: usize = 12;

/// Why index bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid index: {message}")]
pub struct IndexError {
    pub message: String,
}

fn refuse(message: String) -> IndexError {
    IndexError { message }
}

/// Where batches start: a sparse map from offset to byte position in the segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetIndex {
    base_offset: u64,
    /// (offset - base_offset, position), both strictly increasing.
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn new(base_offset: u64) -> OffsetIndex {
        OffsetIndex {
            base_offset,
            entries: Vec::new(),
        }
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Adds an entry: the batch starting at `offset` begins at byte `position`.
    pub fn push(&mut self, offset: u64, position: u32) {
        let relative = relative_offset(self.base_offset, offset);
        if let Some(&(last_relative, last_position)) = self.entries.last() {
            assert!(
                relative > last_relative,
                "index offset {offset} does not increase"
            );
            assert!(
                position > last_position,
                "index position {position} does not increase"
            );
        }
        self.entries.push((relative, position));
    }

    /// The entry with the largest offset <= `target`, or `(base_offset, 0)` if none.
    pub fn lookup(&self, target: u64) -> (u64, u32) {
        match self.slot(target) {
            Some(slot) => self.entry(slot),
            None => (self.base_offset, 0),
        }
    }

    /// The entry after the one [`OffsetIndex::lookup`] returns (the same one if it is the
    /// last): a wrong answer for the planted `index_off_by_one` bug.
    pub fn lookup_after(&self, target: u64) -> (u64, u32) {
        let next = self.slot(target).map_or(0, |slot| slot + 1);
        match self.entries.get(next) {
            Some(_) => self.entry(next),
            None => self.lookup(target),
        }
    }

    /// Index of the entry with the largest offset <= `target`.
    fn slot(&self, target: u64) -> Option<usize> {
        let relative = target.checked_sub(self.base_offset)?;
        let relative = u32::try_from(relative).unwrap_or(u32::MAX);
        let after = self.entries.partition_point(|&(entry, _)| entry <= relative);
        after.checked_sub(1)
    }

    /// Entry `slot` as (absolute offset, position); `slot < len()`.
    fn entry(&self, slot: usize) -> (u64, u32) {
        let (relative, position) = self.entries[slot];
        (self.base_offset + u64::from(relative), position)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<(u64, u32)> {
        self.entries.len().checked_sub(1).map(|slot| self.entry(slot))
    }

    /// Drops the entries for offsets >= `offset` (the log is truncated there).
    pub fn truncate_from(&mut self, offset: u64) {
        let keep = match offset.checked_sub(self.base_offset) {
            None => 0,
            Some(relative) => {
                let relative = u32::try_from(relative).unwrap_or(u32::MAX);
                self.entries.partition_point(|&(entry, _)| entry < relative)
            }
        };
        self.entries.truncate(keep);
    }

    /// Kafka's `.index` format: per entry, relative offset u32 and position u32, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(relative, position) in &self.entries {
            bytes.extend_from_slice(&relative.to_be_bytes());
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        assert_eq!(bytes.len(), self.entries.len() * OFFSET_ENTRY_BYTES);
        bytes
    }

    /// Reads an encoded index of the segment at `base_offset` holding `segment_size_bytes`,
    /// refusing bytes that are not whole entries, entries that do not strictly increase, and
    /// positions at or past the segment's end.
    pub fn decode(
        base_offset: u64,
        bytes: &[u8],
        segment_size_bytes: u64,
    ) -> Result<OffsetIndex, IndexError> {
        let entries = bytes.chunks_exact(OFFSET_ENTRY_BYTES);
        if !entries.remainder().is_empty() {
            return Err(refuse(format!(
                "offset index of {} bytes is not whole {OFFSET_ENTRY_BYTES}-byte entries",
                bytes.len()
            )));
        }
        let mut index = OffsetIndex::new(base_offset);
        index.entries.reserve_exact(bytes.len() / OFFSET_ENTRY_BYTES);
        for (slot, entry) in entries.enumerate() {
            let relative = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let position = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
            if base_offset.checked_add(u64::from(relative)).is_none() {
                return Err(refuse(format!("entry {slot}: offset overflows")));
            }
            if u64::from(position) >= segment_size_bytes {
                return Err(refuse(format!(
                    "entry {slot}: position {position} is past the segment's {segment_size_bytes} bytes"
                )));
            }
            if let Some(&(last_relative, last_position)) = index.entries.last() {
                if relative <= last_relative || position <= last_position {
                    return Err(refuse(format!("entry {slot} does not increase")));
                }
            }
            index.entries.push((relative, position));
        }
        assert_eq!(index.entries.len() * OFFSET_ENTRY_BYTES, bytes.len());
        Ok(index)
    }
}

/// Where timestamps are reached: a sparse map from the largest timestamp so far to the
/// offset that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeIndex {
    base_offset: u64,
    /// (timestamp_ms, offset - base_offset): timestamps strictly increase, offsets never
    /// decrease.
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn new(base_offset: u64) -> TimeIndex {
        TimeIndex {
            base_offset,
            entries: Vec::new(),
        }
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Records that the segment's largest timestamp up to `offset` is `timestamp_ms`, if that
    /// is larger than the last entry's; returns whether an entry was added.
    pub fn push(&mut self, timestamp_ms: i64, offset: u64) -> bool {
        let relative = relative_offset(self.base_offset, offset);
        if let Some(&(last_timestamp_ms, last_relative)) = self.entries.last() {
            if timestamp_ms <= last_timestamp_ms {
                return false;
            }
            assert!(
                relative >= last_relative,
                "time index offset {offset} goes backwards"
            );
        }
        self.entries.push((timestamp_ms, relative));
        true
    }

    /// Where a forward scan for the first batch with maxTimestamp >= `target_ts` may start:
    /// the offset of the last entry whose timestamp < `target_ts` (no offset at or before it
    /// reaches `target_ts`), or the base offset if there is none.
    pub fn lookup_start(&self, target_ts: i64) -> u64 {
        let below = self
            .entries
            .partition_point(|&(timestamp_ms, _)| timestamp_ms < target_ts);
        match below.checked_sub(1) {
            Some(slot) => self.entry(slot).1,
            None => self.base_offset,
        }
    }

    /// The last entry: the largest timestamp indexed and its offset.
    pub fn max(&self) -> Option<(i64, u64)> {
        self.entries.len().checked_sub(1).map(|slot| self.entry(slot))
    }

    /// Entry `slot` as (timestamp, absolute offset); `slot < len()`.
    fn entry(&self, slot: usize) -> (i64, u64) {
        let (timestamp_ms, relative) = self.entries[slot];
        (timestamp_ms, self.base_offset + u64::from(relative))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the entries for offsets >= `offset` (the log is truncated there).
    pub fn truncate_from(&mut self, offset: u64) {
        let keep = match offset.checked_sub(self.base_offset) {
            None => 0,
            Some(relative) => {
                let relative = u32::try_from(relative).unwrap_or(u32::MAX);
                self.entries.partition_point(|&(_, entry)| entry < relative)
            }
        };
        self.entries.truncate(keep);
    }

    /// Kafka's `.timeindex` format: per entry, timestamp i64 and relative offset u32,
    /// big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(timestamp_ms, relative) in &self.entries {
            bytes.extend_from_slice(&timestamp_ms.to_be_bytes());
            bytes.extend_from_slice(&relative.to_be_bytes());
        }
        assert_eq!(bytes.len(), self.entries.len() * TIME_ENTRY_BYTES);
        bytes
    }

    /// Reads an encoded time index of the segment holding offsets `base_offset..=
    /// last_offset_of_segment`, refusing bytes that are not whole entries, timestamps that do
    /// not strictly increase, offsets that decrease or lie outside the segment.
    pub fn decode(
        base_offset: u64,
        bytes: &[u8],
        last_offset_of_segment: u64,
    ) -> Result<TimeIndex, IndexError> {
        let entries = bytes.chunks_exact(TIME_ENTRY_BYTES);
        if !entries.remainder().is_empty() {
            return Err(refuse(format!(
                "time index of {} bytes is not whole {TIME_ENTRY_BYTES}-byte entries",
                bytes.len()
            )));
        }
        let mut index = TimeIndex::new(base_offset);
        index.entries.reserve_exact(bytes.len() / TIME_ENTRY_BYTES);
        for (slot, entry) in entries.enumerate() {
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&entry[..8]);
            let timestamp_ms = i64::from_be_bytes(timestamp);
            let relative = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
            let in_segment = base_offset
                .checked_add(u64::from(relative))
                .is_some_and(|offset| offset <= last_offset_of_segment);
            if !in_segment {
                return Err(refuse(format!(
                    "entry {slot}: offset {base_offset} + {relative} is past the segment's last \
                     offset {last_offset_of_segment}"
                )));
            }
            if let Some(&(last_timestamp_ms, last_relative)) = index.entries.last() {
                if timestamp_ms <= last_timestamp_ms || relative < last_relative {
                    return Err(refuse(format!("entry {slot} does not increase")));
                }
            }
            index.entries.push((timestamp_ms, relative));
        }
        assert_eq!(index.entries.len() * TIME_ENTRY_BYTES, bytes.len());
        Ok(index)
    }
}

/// `offset - base_offset` as an index stores it; the offset must lie in the segment.
fn relative_offset(base_offset: u64, offset: u64) -> u32 {
    assert!(
        offset >= base_offset,
        "offset {offset} is below the segment base {base_offset}"
    );
    let relative = offset - base_offset;
    assert!(
        relative <= u64::from(u32::MAX),
        "offset {offset} is too far past the base {base_offset}"
    );
    relative as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: u64 = 1_000;

    fn offset_index(entries: &[(u64, u32)]) -> OffsetIndex {
        let mut index = OffsetIndex::new(BASE);
        for &(offset, position) in entries {
            index.push(offset, position);
        }
        index
    }

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let index = offset_index(&[(1_010, 100), (1_020, 200), (1_030, 300)]);
        assert_eq!(index.lookup(0), (BASE, 0), "below the base");
        assert_eq!(index.lookup(BASE), (BASE, 0));
        assert_eq!(index.lookup(1_009), (BASE, 0));
        assert_eq!(index.lookup(1_010), (1_010, 100));
        assert_eq!(index.lookup(1_029), (1_020, 200));
        assert_eq!(index.lookup(u64::MAX), (1_030, 300));
        assert_eq!(OffsetIndex::new(BASE).lookup(5_000), (BASE, 0));
        assert_eq!(
            (index.len(), index.is_empty(), index.last()),
            (3, false, Some((1_030, 300)))
        );
        assert_eq!(OffsetIndex::new(BASE).last(), None);
    }

    #[test]
    fn lookup_after_is_one_entry_late() {
        let index = offset_index(&[(1_010, 100), (1_020, 200)]);
        assert_eq!(index.lookup_after(1_005), (1_010, 100));
        assert_eq!(index.lookup_after(1_015), (1_020, 200));
        assert_eq!(index.lookup_after(1_025), (1_020, 200), "no entry after the last");
        assert_eq!(OffsetIndex::new(BASE).lookup_after(1_025), (BASE, 0));
    }

    #[test]
    fn truncation_drops_entries_at_and_after_the_offset() {
        let mut index = offset_index(&[(1_010, 100), (1_020, 200), (1_030, 300)]);
        index.truncate_from(1_021);
        assert_eq!(index.last(), Some((1_020, 200)));
        index.truncate_from(1_020);
        assert_eq!(index.last(), Some((1_010, 100)));
        index.truncate_from(0);
        assert!(index.is_empty());
        let mut times = TimeIndex::new(BASE);
        assert!(times.push(5, 1_010) && times.push(6, 1_020));
        times.truncate_from(1_020);
        assert_eq!(times.max(), Some((5, 1_010)));
    }

    #[test]
    #[should_panic(expected = "does not increase")]
    fn offset_push_refuses_a_repeated_offset() {
        offset_index(&[(1_010, 100), (1_010, 200)]);
    }

    #[test]
    #[should_panic(expected = "does not increase")]
    fn offset_push_refuses_a_repeated_position() {
        offset_index(&[(1_010, 100), (1_011, 100)]);
    }

    #[test]
    #[should_panic(expected = "below the segment base")]
    fn offset_push_refuses_an_offset_below_the_base() {
        offset_index(&[(BASE - 1, 100)]);
    }

    #[test]
    #[should_panic(expected = "too far past the base")]
    fn offset_push_refuses_an_offset_beyond_u32() {
        offset_index(&[(BASE + (1 << 32), 100)]);
    }

    #[test]
    fn offset_index_bytes_are_kafkas() {
        let index = offset_index(&[(1_001, 0x0102_0304)]);
        assert_eq!(index.encode(), vec![0, 0, 0, 1, 1, 2, 3, 4]);
        assert_eq!(OffsetIndex::decode(BASE, &index.encode(), 1 << 30), Ok(index));
        assert_eq!(OffsetIndex::decode(BASE, &[], 0), Ok(OffsetIndex::new(BASE)));
    }

    #[test]
    fn damaged_offset_indexes_are_refused() {
        let index = offset_index(&[(1_010, 100), (1_020, 200), (1_030, 300)]);
        let bytes = index.encode();
        for cut in 1..bytes.len() {
            if cut / OFFSET_ENTRY_BYTES * OFFSET_ENTRY_BYTES != cut {
                assert!(
                    OffsetIndex::decode(BASE, &bytes[..cut], 1_000).is_err(),
                    "cut at {cut}"
                );
            }
        }
        let mut shuffled = bytes[8..16].to_vec();
        shuffled.extend_from_slice(&bytes[..8]);
        assert!(OffsetIndex::decode(BASE, &shuffled, 1_000).is_err());
        let mut repeated = bytes[..8].to_vec();
        repeated.extend_from_slice(&bytes[..8]);
        assert!(OffsetIndex::decode(BASE, &repeated, 1_000).is_err());
        assert!(
            OffsetIndex::decode(BASE, &bytes, 300).is_err(),
            "position 300 is past 300 bytes"
        );
        assert!(OffsetIndex::decode(BASE, &bytes, 301).is_ok());
        assert!(
            OffsetIndex::decode(u64::MAX - 5, &bytes, 1_000).is_err(),
            "offset overflows"
        );
        assert!(
            OffsetIndex::decode(BASE, &[0u8; 16], 1_000).is_err(),
            "zero padding repeats"
        );
    }

    #[test]
    fn time_push_keeps_only_new_maxima() {
        let mut index = TimeIndex::new(BASE);
        assert!(index.is_empty() && index.max().is_none());
        assert!(index.push(100, BASE));
        assert!(!index.push(100, 1_005), "equal timestamp");
        assert!(!index.push(50, 1_006), "smaller timestamp");
        assert!(index.push(200, 1_006));
        assert!(index.push(300, 1_006), "same offset, larger timestamp");
        assert_eq!((index.len(), index.max()), (3, Some((300, 1_006))));
    }

    #[test]
    #[should_panic(expected = "goes backwards")]
    fn time_push_refuses_an_offset_going_backwards() {
        let mut index = TimeIndex::new(BASE);
        index.push(100, 1_010);
        index.push(200, 1_005);
    }

    #[test]
    fn time_lookup_start_is_the_last_entry_below_the_target() {
        let mut index = TimeIndex::new(BASE);
        index.push(100, 1_010);
        index.push(200, 1_020);
        assert_eq!(index.lookup_start(i64::MIN), BASE);
        assert_eq!(index.lookup_start(100), BASE);
        assert_eq!(index.lookup_start(101), 1_010);
        assert_eq!(index.lookup_start(200), 1_010);
        assert_eq!(index.lookup_start(i64::MAX), 1_020);
    }

    #[test]
    fn time_index_bytes_are_kafkas() {
        let mut index = TimeIndex::new(BASE);
        index.push(0x0102, 1_003);
        assert_eq!(index.encode(), vec![0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3]);
        assert_eq!(TimeIndex::decode(BASE, &index.encode(), 1_003), Ok(index));
    }

    #[test]
    fn damaged_time_indexes_are_refused() {
        let mut index = TimeIndex::new(BASE);
        index.push(100, 1_010);
        index.push(200, 1_020);
        let bytes = index.encode();
        for cut in 1..bytes.len() {
            if cut / TIME_ENTRY_BYTES * TIME_ENTRY_BYTES != cut {
                assert!(
                    TimeIndex::decode(BASE, &bytes[..cut], 2_000).is_err(),
                    "cut at {cut}"
                );
            }
        }
        let mut shuffled = bytes[12..].to_vec();
        shuffled.extend_from_slice(&bytes[..12]);
        assert!(TimeIndex::decode(BASE, &shuffled, 2_000).is_err());
        assert!(
            TimeIndex::decode(BASE, &bytes, 1_019).is_err(),
            "offset past the segment"
        );
        assert!(TimeIndex::decode(BASE, &bytes, 1_020).is_ok());
        // Equal timestamps, or an offset going backwards, are refused.
        let mut flat = bytes.clone();
        flat[12..20].copy_from_slice(&100i64.to_be_bytes());
        assert!(TimeIndex::decode(BASE, &flat, 2_000).is_err());
        let mut backwards = bytes.clone();
        backwards[20..24].copy_from_slice(&5u32.to_be_bytes());
        assert!(TimeIndex::decode(BASE, &backwards, 2_000).is_err());
    }

    /// Strictly increasing (relative offset, position) pairs.
    fn increasing_offsets() -> impl Strategy<Value = Vec<(u64, u32)>> {
        proptest::collection::vec((1u64..1_000, 1u32..10_000), 0..60).prop_map(|steps| {
            let (mut offset, mut position) = (BASE, 0u32);
            steps
                .into_iter()
                .map(|(offset_step, position_step)| {
                    offset += offset_step;
                    position += position_step;
                    (offset, position)
                })
                .collect()
        })
    }

    /// Strictly increasing timestamps with non-decreasing offsets.
    fn increasing_times() -> impl Strategy<Value = Vec<(i64, u64)>> {
        (
            any::<i32>(),
            proptest::collection::vec((1i64..1_000, 0u64..100), 0..60),
        )
            .prop_map(|(start, steps)| {
                let (mut timestamp_ms, mut offset) = (i64::from(start), BASE);
                steps
                    .into_iter()
                    .map(|(time_step, offset_step)| {
                        timestamp_ms += time_step;
                        offset += offset_step;
                        (timestamp_ms, offset)
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn offset_lookup_matches_a_linear_search(
            entries in increasing_offsets(),
            targets in proptest::collection::vec(0u64..80_000, 1..40),
        ) {
            let index = offset_index(&entries);
            for target in targets {
                let expected =
                    entries.iter().rev().find(|&&(offset, _)| offset <= target).copied().unwrap_or((BASE, 0));
                prop_assert_eq!(index.lookup(target), expected);
            }
        }

        #[test]
        fn offset_index_round_trips(entries in increasing_offsets()) {
            let index = offset_index(&entries);
            let segment_size_bytes = entries.last().map_or(0, |&(_, position)| u64::from(position) + 1);
            prop_assert_eq!(OffsetIndex::decode(BASE, &index.encode(), segment_size_bytes), Ok(index));
        }

        #[test]
        fn time_lookup_matches_a_linear_search(
            entries in increasing_times(),
            targets in proptest::collection::vec(any::<i32>(), 1..40),
        ) {
            let mut index = TimeIndex::new(BASE);
            for &(timestamp_ms, offset) in &entries {
                prop_assert!(index.push(timestamp_ms, offset));
            }
            for target in targets.into_iter().map(i64::from) {
                let expected =
                    entries.iter().rev().find(|&&(timestamp_ms, _)| timestamp_ms < target).map_or(BASE, |e| e.1);
                prop_assert_eq!(index.lookup_start(target), expected);
            }
            let last_offset = entries.last().map_or(BASE, |e| e.1);
            prop_assert_eq!(TimeIndex::decode(BASE, &index.encode(), last_offset), Ok(index));
        }

        #[test]
        fn random_index_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            base_offset in any::<u64>(),
            limit in any::<u64>(),
        ) {
            if let Ok(index) = OffsetIndex::decode(base_offset, &bytes, limit) {
                prop_assert_eq!(index.encode(), bytes.clone());
                let _ = (index.lookup(limit), index.lookup_after(limit), index.last());
            }
            if let Ok(index) = TimeIndex::decode(base_offset, &bytes, limit) {
                prop_assert_eq!(index.encode(), bytes.clone());
                let _ = (index.lookup_start(limit as i64), index.max());
            }
        }

        #[test]
        fn shuffled_indexes_are_refused(entries in increasing_offsets(), swap in any::<(prop::sample::Index, prop::sample::Index)>()) {
            prop_assume!(entries.len() >= 2);
            let index = offset_index(&entries);
            let mut bytes = index.encode();
            let (a, b) = (swap.0.index(entries.len()), swap.1.index(entries.len()));
            prop_assume!(a != b);
            for i in 0..OFFSET_ENTRY_BYTES {
                bytes.swap(a * OFFSET_ENTRY_BYTES + i, b * OFFSET_ENTRY_BYTES + i);
            }
            prop_assert!(OffsetIndex::decode(BASE, &bytes, u64::MAX).is_err());
        }
    }
}
