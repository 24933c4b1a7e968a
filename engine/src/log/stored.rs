//! A batch as the log holds it between produce and disk: its rewritten header, and the rest
//! of its bytes still shared with the request frame that carried them.
//!
//! The log must set baseOffset and partitionLeaderEpoch (and, for LogAppendTime topics,
//! maxTimestamp and the CRC), all in the first [`HEADER_BYTES`]. Copying a whole batch to
//! change 61 bytes cost about a tenth of the broker's CPU with 1 KiB records, so a large
//! batch is kept as a private copy of its header plus a slice of the frame for the rest.
//! A small batch is copied whole instead: a slice pins the shell's whole read buffer for as
//! long as the tail cache keeps the batch, and for a small batch that buffer would be many
//! times the batch's size.
//!
//! Invariant: `head` followed by `body` is exactly one batch, and `head` holds at least its
//! header.

use bytes::{Bytes, BytesMut};

use crate::batch::{self, HEADER_BYTES};

/// Batches of at least this many bytes are not copied (see the module docs). The shell reads
/// requests in 64 KiB buffers, so a slice of at least 16 KiB pins at most 4x its size.
pub const SHARE_MIN_BYTES: usize = 16 * 1024;

/// One batch, in one or two pieces. Clones share the bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredBatch {
    head: Bytes,
    body: Bytes,
}

impl StoredBatch {
    /// A batch that is already in one piece (read from disk, or built by the engine).
    pub fn whole(bytes: Bytes) -> Self {
        StoredBatch {
            head: bytes,
            body: Bytes::new(),
        }
    }

    /// Takes a validated produce batch and sets what the log owns in its header:
    /// `base_offset`, `leader_epoch`, and with `log_append_time` the LogAppendTime stamp.
    pub fn stamp(records: &Bytes, base_offset: i64, leader_epoch: i32, log_append_time: Option<i64>) -> Self {
        assert!(records.len() >= HEADER_BYTES, "a validated batch holds a header");
        let split = if records.len() >= SHARE_MIN_BYTES {
            HEADER_BYTES
        } else {
            records.len()
        };
        let mut head = BytesMut::from(&records[..split]);
        let body = records.slice(split..);
        batch::set_base_offset(&mut head, base_offset);
        batch::set_partition_leader_epoch(&mut head, leader_epoch);
        if let Some(wall_ms) = log_append_time {
            batch::set_log_append_time_split(&mut head, &body, wall_ms);
        }
        StoredBatch {
            head: head.freeze(),
            body,
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces to write, in order (one or two; none empty unless the batch is).
    pub fn parts(&self) -> Vec<Bytes> {
        if self.body.is_empty() {
            vec![self.head.clone()]
        } else {
            vec![self.head.clone(), self.body.clone()]
        }
    }

    /// Appends the batch's bytes to `out`.
    pub fn copy_to(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.body);
    }

    /// The batch in one piece: free when it already is, a copy when it is not.
    pub fn into_contiguous(self) -> Bytes {
        if self.body.is_empty() {
            return self.head;
        }
        let mut out = BytesMut::with_capacity(self.len());
        self.copy_to(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, BatchView, RecordSpec};

    fn batch_of(value_bytes: usize) -> Bytes {
        let spec = RecordSpec {
            key: None,
            value: Some(Bytes::from(vec![7u8; value_bytes])),
            headers: vec![],
            timestamp_ms: 5,
        };
        build_batch(&[spec])
    }

    #[test]
    fn small_batches_are_copied_whole_and_large_ones_share_their_body() {
        let small = batch_of(100);
        let s = StoredBatch::stamp(&small, 42, 3, None);
        assert_eq!(s.parts().len(), 1);
        let large = batch_of(SHARE_MIN_BYTES);
        let l = StoredBatch::stamp(&large, 42, 3, None);
        let parts = l.parts();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), HEADER_BYTES);
        assert_eq!(
            parts[1].as_ptr(),
            large[HEADER_BYTES..].as_ptr(),
            "the body is not copied"
        );
        assert_eq!(l.len(), large.len());
    }

    #[test]
    fn stamping_matches_rewriting_a_whole_copy() {
        for size in [10, SHARE_MIN_BYTES, 3 * SHARE_MIN_BYTES] {
            let records = batch_of(size);
            for append_time in [None, Some(123_456)] {
                let stored = StoredBatch::stamp(&records, 1_000, 9, append_time).into_contiguous();
                let mut expect = records.to_vec();
                batch::set_base_offset(&mut expect, 1_000);
                batch::set_partition_leader_epoch(&mut expect, 9);
                if let Some(t) = append_time {
                    batch::set_log_append_time(&mut expect, t);
                }
                assert_eq!(stored, expect, "size {size}, append time {append_time:?}");
                let view = BatchView::parse(&stored).expect("a whole batch with a valid CRC");
                assert_eq!(view.base_offset(), 1_000);
            }
        }
    }

    #[test]
    fn the_source_frame_is_never_modified() {
        let records = batch_of(SHARE_MIN_BYTES);
        let before = records.to_vec();
        let _ = StoredBatch::stamp(&records, 77, 1, Some(5));
        assert_eq!(records.to_vec(), before);
    }
}
