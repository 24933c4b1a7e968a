//! One segment of a partition log: a `.log` file of stored batches named by its base
//! offset, with its sparse offset index and time index kept in memory.
//!
//! Invariants: `size_bytes` is the file length the engine has written (or is writing);
//! every index entry points at the start of a batch below `size_bytes`; `next_offset` is
//! one past the last offset stored in the segment (== `base_offset` when empty).

use super::index::{OffsetIndex, TimeIndex};

/// File name stem of a segment: the base offset as 20 zero-padded digits, like Kafka.
pub fn file_stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

/// Parses `NNNNNNNNNNNNNNNNNNNN.<ext>` into its base offset.
pub fn parse_file_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    /// `<dir>/<stem>.log`
    pub file: String,
    pub size_bytes: u64,
    pub next_offset: u64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Bytes appended since the last offset index entry.
    pub bytes_since_index: u64,
    /// Largest batch max timestamp in the segment, and the base offset of that batch.
    pub max_timestamp_ms: i64,
    pub max_timestamp_offset: u64,
    /// Wall time of the first append (for `segment.ms`), or None while empty.
    pub first_append_wall_ms: Option<i64>,
}

impl Segment {
    pub fn new(dir: &str, base_offset: u64) -> Segment {
        Segment {
            base_offset,
            file: format!("{dir}/{}.log", file_stem(base_offset)),
            size_bytes: 0,
            next_offset: base_offset,
            index: OffsetIndex::new(base_offset),
            time_index: TimeIndex::new(base_offset),
            bytes_since_index: 0,
            max_timestamp_ms: -1,
            max_timestamp_offset: base_offset,
            first_append_wall_ms: None,
        }
    }

    pub fn index_file(&self) -> String {
        self.file.replace(".log", ".index")
    }

    pub fn time_index_file(&self) -> String {
        self.file.replace(".log", ".timeindex")
    }

    /// Records a batch of `size_bytes` at the current end: offsets `base..=last`, its max
    /// timestamp, and index entries every `index_interval_bytes`.
    pub fn note_batch(
        &mut self,
        base: u64,
        last: u64,
        max_ts: i64,
        size_bytes: u64,
        index_interval_bytes: u32,
    ) {
        assert_eq!(base, self.next_offset, "batches are appended densely");
        assert!(last >= base);
        let position = self.size_bytes;
        if self.size_bytes > 0 && self.bytes_since_index >= u64::from(index_interval_bytes) {
            // position < 2^32: segment.bytes is bounded by i32 in Kafka and the roll check.
            self.index.push(base, position as u32);
            self.bytes_since_index = 0;
            if max_ts.max(self.max_timestamp_ms) > self.time_index.max().map_or(-1, |(ts, _)| ts) {
                self.time_index.push(max_ts.max(self.max_timestamp_ms), base);
            }
        }
        if max_ts > self.max_timestamp_ms {
            self.max_timestamp_ms = max_ts;
            self.max_timestamp_offset = base;
        }
        self.bytes_since_index += size_bytes;
        self.size_bytes += size_bytes;
        self.next_offset = last + 1;
    }

    /// Final time index entry written when the segment is closed, as Kafka does on roll.
    pub fn seal_time_index(&mut self) {
        if self.max_timestamp_ms > self.time_index.max().map_or(-1, |(ts, _)| ts) {
            self.time_index
                .push(self.max_timestamp_ms, self.max_timestamp_offset);
        }
    }

    /// Cuts the segment back to `offset`, which starts at byte `position` (after a failed
    /// write). The max timestamp falls back to what the time index still knows.
    pub fn truncate_to(&mut self, offset: u64, position: u64) {
        assert!(offset >= self.base_offset && position <= self.size_bytes);
        self.index.truncate_from(offset);
        self.time_index.truncate_from(offset);
        self.size_bytes = position;
        self.next_offset = offset;
        self.bytes_since_index = 0;
        let (ts, off) = self.time_index.max().unwrap_or((-1, self.base_offset));
        self.max_timestamp_ms = ts;
        self.max_timestamp_offset = off;
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_stem(42), "00000000000000000042");
        assert_eq!(parse_file_name("00000000000000000042.log", "log"), Some(42));
        assert_eq!(parse_file_name("00000000000000000042.index", "log"), None);
        assert_eq!(parse_file_name("42.log", "log"), None);
        let s = Segment::new("t-0", 7);
        assert_eq!(s.file, "t-0/00000000000000000007.log");
        assert_eq!(s.index_file(), "t-0/00000000000000000007.index");
    }

    #[test]
    fn index_entries_every_interval() {
        let mut s = Segment::new("t-0", 0);
        for i in 0..10u64 {
            s.note_batch(i, i, 100 + i as i64, 100, 250);
        }
        assert_eq!(s.size_bytes, 1000);
        assert_eq!(s.next_offset, 10);
        // entries at batches whose preceding bytes since the last entry reached 250
        assert_eq!(s.index.lookup(9), (9, 900));
        assert_eq!(s.index.lookup(2), (0, 0));
        assert!(s.index.len() >= 2);
    }
}
