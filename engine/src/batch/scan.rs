//! Walking consecutive stored batches: the valid prefix of a segment (recovery) or of a
//! read (fetch). The walk stops at the first batch that is incomplete or corrupt.

use super::view::{BatchView, StoredBatchError};
use super::HEADER_BYTES;

/// Why a scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanStop {
    /// Every byte belonged to a valid batch.
    End,
    /// The bytes after the valid prefix are the start of a batch that does not end in them.
    Incomplete,
    /// The bytes after the valid prefix are not a valid batch.
    Corrupt(String),
}

/// An iterator over `(position, batch)` for the consecutive batches at the start of some
/// bytes. Once it returns `None`, [`BatchScan::stop`] says why and
/// [`BatchScan::valid_end`] is the end of the valid prefix.
#[derive(Clone, Debug)]
pub struct BatchScan<'a> {
    bytes: &'a [u8],
    /// End of the last batch yielded; everything before it is valid batches.
    position: usize,
    check_crc: bool,
    stop: Option<ScanStop>,
}

/// Scans the batches at the start of `bytes`, checking each CRC.
pub fn scan(bytes: &[u8]) -> BatchScan<'_> {
    BatchScan {
        bytes,
        position: 0,
        check_crc: true,
        stop: None,
    }
}

/// Like [`scan`] but trusting CRCs (framing and magic are still checked). Only for the
/// planted `skip_recovery_crc` bug and for bytes that were checked when written.
pub fn scan_unchecked_crc(bytes: &[u8]) -> BatchScan<'_> {
    BatchScan {
        bytes,
        position: 0,
        check_crc: false,
        stop: None,
    }
}

impl<'a> BatchScan<'a> {
    /// The end of the valid prefix seen so far (after the scan: of the whole valid prefix).
    pub fn valid_end(&self) -> usize {
        self.position
    }

    /// Why the scan stopped, or `None` while it has not.
    pub fn stop(&self) -> Option<&ScanStop> {
        self.stop.as_ref()
    }

    /// Runs the scan to its end: the end of the valid prefix and why it stopped there.
    pub fn finish(mut self) -> (usize, ScanStop) {
        // Each batch takes at least HEADER_BYTES, so this many steps always reach the stop.
        let steps_max = self.bytes.len() / HEADER_BYTES + 1;
        for step in 0..=steps_max {
            if self.next().is_none() {
                break;
            }
            assert!(step < steps_max, "scan did not end within {steps_max} steps");
        }
        // `next` returns None only after setting `stop`, and the loop ran until it did.
        let stop = self.stop.take().expect("a finished scan has a stop reason");
        (self.position, stop)
    }
}

impl<'a> Iterator for BatchScan<'a> {
    type Item = (usize, BatchView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.stop.is_some() {
            return None;
        }
        let rest = &self.bytes[self.position..];
        if rest.is_empty() {
            self.stop = Some(ScanStop::End);
            return None;
        }
        let parsed = if self.check_crc {
            BatchView::parse(rest)
        } else {
            BatchView::parse_unchecked_crc(rest)
        };
        match parsed {
            Ok(view) => {
                let position = self.position;
                assert!(view.size_bytes() >= HEADER_BYTES && view.size_bytes() <= rest.len());
                self.position += view.size_bytes();
                Some((position, view))
            }
            Err(StoredBatchError::Incomplete) => {
                self.stop = Some(ScanStop::Incomplete);
                None
            }
            Err(StoredBatchError::Corrupt(reason)) => {
                self.stop = Some(ScanStop::Corrupt(reason));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, set_base_offset, RecordSpec};
    use bytes::Bytes;
    use proptest::prelude::*;

    /// `sizes[i]` records in batch `i`, offsets consecutive across batches.
    fn stream(sizes: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        let mut offset = 0i64;
        for (i, &count) in sizes.iter().enumerate() {
            let specs: Vec<RecordSpec> = (0..count)
                .map(|j| RecordSpec {
                    key: None,
                    value: Some(Bytes::from(vec![b'a' + (j % 26) as u8; i % 7])),
                    headers: vec![],
                    timestamp_ms: j as i64,
                })
                .collect();
            let mut batch = build_batch(&specs).to_vec();
            set_base_offset(&mut batch, offset);
            offset += count as i64;
            bytes.extend_from_slice(&batch);
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    #[test]
    fn scans_every_batch_of_a_clean_stream() {
        let (bytes, ends) = stream(&[1, 3, 2]);
        let batches: Vec<(usize, i64)> = scan(&bytes).map(|(at, view)| (at, view.base_offset())).collect();
        assert_eq!(batches, vec![(0, 0), (ends[0], 1), (ends[1], 4)]);
        assert_eq!(scan(&bytes).finish(), (bytes.len(), ScanStop::End));
        assert_eq!(scan(&[]).finish(), (0, ScanStop::End));
    }

    #[test]
    fn stops_at_a_corrupt_batch() {
        let (mut bytes, ends) = stream(&[1, 1, 1]);
        bytes[ends[1] - 1] ^= 0xff;
        let mut walk = scan(&bytes);
        assert_eq!(walk.by_ref().count(), 1);
        assert!(matches!(walk.stop(), Some(ScanStop::Corrupt(_))));
        assert_eq!(walk.valid_end(), ends[0]);
        assert_eq!(walk.next(), None, "a stopped scan stays stopped");
        assert_eq!(scan_unchecked_crc(&bytes).finish(), (bytes.len(), ScanStop::End));
    }

    #[test]
    fn trailing_zeros_are_corrupt() {
        let (mut bytes, ends) = stream(&[2]);
        bytes.extend_from_slice(&[0u8; 100]);
        let (end, stop) = scan(&bytes).finish();
        assert_eq!(end, ends[0]);
        assert!(matches!(stop, ScanStop::Corrupt(_)));
    }

    proptest! {
        #[test]
        fn a_cut_stream_scans_to_the_batches_before_the_cut(
            sizes in proptest::collection::vec(1usize..5, 1..5),
        ) {
            let (bytes, ends) = stream(&sizes);
            for cut in 0..=bytes.len() {
                let complete = ends.iter().filter(|&&end| end <= cut).count();
                let walk: Vec<usize> = scan(&bytes[..cut]).map(|(at, _)| at).collect();
                prop_assert_eq!(walk.len(), complete);
                let (end, stop) = scan(&bytes[..cut]).finish();
                let expected_end = if complete == 0 { 0 } else { ends[complete - 1] };
                prop_assert_eq!(end, expected_end);
                let expected_stop = if end == cut { ScanStop::End } else { ScanStop::Incomplete };
                prop_assert_eq!(stop, expected_stop);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let (end, _) = scan(&bytes).finish();
            prop_assert!(end <= bytes.len());
            let (end, _) = scan_unchecked_crc(&bytes).finish();
            prop_assert!(end <= bytes.len());
        }

        #[test]
        fn damaged_streams_never_panic(
            sizes in proptest::collection::vec(1usize..4, 1..4),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let (mut bytes, _) = stream(&sizes);
            for (index, mask) in flips {
                let at = index.index(bytes.len());
                bytes[at] ^= mask;
            }
            let (end, _) = scan_unchecked_crc(&bytes).finish();
            prop_assert!(end <= bytes.len());
            for (_, view) in scan(&bytes) {
                let _ = crate::batch::decode_records(&view);
            }
        }
    }
}
