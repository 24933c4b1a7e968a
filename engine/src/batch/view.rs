//! [`BatchView`]: typed, zero-copy access to the header of one stored batch.

use thiserror::Error;

use super::{
    array_at, at, attr, BatchError, Compression, BATCH_LENGTH_MIN, HEADER_BYTES, LOG_OVERHEAD, MAGIC_V2,
};

/// Why stored bytes do not start with a whole, intact batch.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StoredBatchError {
    /// The bytes end before the batch does: a torn write at the tail of a log, or a read
    /// that stopped short.
    #[error("record batch is incomplete: the bytes end before the batch does")]
    Incomplete,
    /// The batch can never become valid: impossible length, wrong magic, CRC mismatch.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
}

/// One whole magic-2 batch: `bytes()` is exactly `LOG_OVERHEAD + batchLength` bytes long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// The batch at the start of stored `bytes` (which may continue past it), CRC checked.
    pub fn parse(bytes: &'a [u8]) -> Result<BatchView<'a>, StoredBatchError> {
        let view = Self::parse_unchecked_crc(bytes)?;
        let (crc_stored, crc_computed) = (view.crc(), view.compute_crc());
        if crc_stored != crc_computed {
            return Err(StoredBatchError::Corrupt(format!(
                "CRC mismatch: stored {crc_stored:#010x}, computed {crc_computed:#010x}"
            )));
        }
        Ok(view)
    }

    /// Like [`BatchView::parse`] but trusting the CRC (framing and magic are still checked).
    pub fn parse_unchecked_crc(bytes: &'a [u8]) -> Result<BatchView<'a>, StoredBatchError> {
        if bytes.len() < LOG_OVERHEAD {
            return Err(StoredBatchError::Incomplete);
        }
        let batch_length = i32::from_be_bytes(array_at(bytes, at::BATCH_LENGTH));
        if batch_length < BATCH_LENGTH_MIN {
            return Err(StoredBatchError::Corrupt(format!(
                "batch length {batch_length} is smaller than a batch header ({BATCH_LENGTH_MIN})"
            )));
        }
        if let Some(&magic) = bytes.get(at::MAGIC) {
            let magic = magic as i8;
            if magic != MAGIC_V2 {
                return Err(StoredBatchError::Corrupt(format!(
                    "magic {magic}, expected {MAGIC_V2}"
                )));
            }
        }
        // batch_length >= BATCH_LENGTH_MIN > 0, and LOG_OVERHEAD + i32::MAX fits any usize
        // of 32 bits or more.
        let size_bytes = LOG_OVERHEAD + batch_length as usize;
        if bytes.len() < size_bytes {
            return Err(StoredBatchError::Incomplete);
        }
        let view = BatchView {
            bytes: &bytes[..size_bytes],
        };
        assert!(view.bytes.len() >= HEADER_BYTES);
        assert_eq!(view.magic(), MAGIC_V2);
        Ok(view)
    }

    /// The whole batch, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records region (compressed if the batch is), after the 61-byte header.
    pub fn records_bytes(&self) -> &'a [u8] {
        &self.bytes[at::RECORDS..]
    }

    /// `LOG_OVERHEAD + batchLength`: the bytes this batch takes in a log.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// CRC32C of the bytes the CRC field covers (attributes to the end).
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[at::ATTRIBUTES..])
    }

    pub fn base_offset(&self) -> i64 {
        i64::from_be_bytes(array_at(self.bytes, at::BASE_OFFSET))
    }

    /// `base_offset + last_offset_delta`, the offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }

    pub fn batch_length(&self) -> i32 {
        i32::from_be_bytes(array_at(self.bytes, at::BATCH_LENGTH))
    }

    pub fn partition_leader_epoch(&self) -> i32 {
        i32::from_be_bytes(array_at(self.bytes, at::PARTITION_LEADER_EPOCH))
    }

    pub fn magic(&self) -> i8 {
        self.bytes[at::MAGIC] as i8
    }

    /// The CRC stored in the header.
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(array_at(self.bytes, at::CRC))
    }

    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(array_at(self.bytes, at::ATTRIBUTES))
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes())
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & attr::LOG_APPEND_TIME != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes() & attr::TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes() & attr::CONTROL != 0
    }

    pub fn last_offset_delta(&self) -> i32 {
        i32::from_be_bytes(array_at(self.bytes, at::LAST_OFFSET_DELTA))
    }

    pub fn base_timestamp(&self) -> i64 {
        i64::from_be_bytes(array_at(self.bytes, at::BASE_TIMESTAMP))
    }

    pub fn max_timestamp(&self) -> i64 {
        i64::from_be_bytes(array_at(self.bytes, at::MAX_TIMESTAMP))
    }

    pub fn producer_id(&self) -> i64 {
        i64::from_be_bytes(array_at(self.bytes, at::PRODUCER_ID))
    }

    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes(array_at(self.bytes, at::PRODUCER_EPOCH))
    }

    pub fn base_sequence(&self) -> i32 {
        i32::from_be_bytes(array_at(self.bytes, at::BASE_SEQUENCE))
    }

    pub fn record_count(&self) -> i32 {
        i32::from_be_bytes(array_at(self.bytes, at::RECORD_COUNT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, RecordSpec};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let specs: Vec<RecordSpec> = (0..3)
            .map(|i| RecordSpec {
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![i as u8; 10])),
                headers: vec![("h".to_string(), Some(Bytes::from_static(b"x")))],
                timestamp_ms: 5_000 + i,
            })
            .collect();
        build_batch(&specs).to_vec()
    }

    #[test]
    fn accessors_read_the_header() {
        let batch = sample();
        let view = BatchView::parse(&batch).expect("valid");
        assert_eq!(view.size_bytes(), batch.len());
        assert_eq!(view.batch_length() as usize, batch.len() - LOG_OVERHEAD);
        assert_eq!(view.bytes(), &batch[..]);
        assert_eq!(view.records_bytes().len(), batch.len() - HEADER_BYTES);
        assert_eq!(
            (view.base_offset(), view.last_offset_delta(), view.last_offset()),
            (0, 2, 2)
        );
        assert_eq!(view.partition_leader_epoch(), -1);
        assert_eq!(view.magic(), 2);
        assert_eq!(view.crc(), view.compute_crc());
        assert_eq!(view.attributes(), 0);
        assert_eq!(view.compression(), Ok(Compression::None));
        assert!(!view.is_log_append_time() && !view.is_transactional() && !view.is_control());
        assert_eq!((view.base_timestamp(), view.max_timestamp()), (5_000, 5_002));
        assert_eq!(
            (view.producer_id(), view.producer_epoch(), view.base_sequence()),
            (-1, -1, -1)
        );
        assert_eq!(view.record_count(), 3);
    }

    #[test]
    fn parse_covers_only_the_first_batch() {
        let mut bytes = sample();
        let size = bytes.len();
        bytes.extend_from_slice(b"whatever follows");
        assert_eq!(BatchView::parse(&bytes).expect("valid").size_bytes(), size);
    }

    #[test]
    fn short_bytes_are_incomplete() {
        let batch = sample();
        for cut in 0..batch.len() {
            assert_eq!(
                BatchView::parse(&batch[..cut]),
                Err(StoredBatchError::Incomplete),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn impossible_length_and_wrong_magic_are_corrupt() {
        let mut batch = sample();
        batch[8..12].copy_from_slice(&(BATCH_LENGTH_MIN - 1).to_be_bytes());
        assert!(matches!(
            BatchView::parse(&batch),
            Err(StoredBatchError::Corrupt(_))
        ));
        assert!(matches!(
            BatchView::parse(&batch[..12]),
            Err(StoredBatchError::Corrupt(_))
        ));
        let mut batch = sample();
        batch[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            BatchView::parse(&batch),
            Err(StoredBatchError::Corrupt(_))
        ));
        for magic in [0u8, 1, 3, 0xff] {
            let mut batch = sample();
            batch[16] = magic;
            assert!(matches!(
                BatchView::parse(&batch),
                Err(StoredBatchError::Corrupt(_))
            ));
            assert!(matches!(
                BatchView::parse_unchecked_crc(&batch),
                Err(StoredBatchError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn crc_mismatch_is_corrupt_unless_unchecked() {
        let mut batch = sample();
        let last = batch.len() - 1;
        batch[last] ^= 0x01;
        assert!(matches!(
            BatchView::parse(&batch),
            Err(StoredBatchError::Corrupt(_))
        ));
        assert!(BatchView::parse_unchecked_crc(&batch).is_ok());
    }

    /// Every single-bit flip is caught: inside the CRC by the CRC, in baseOffset and the leader
    /// epoch not at all (they are legitimately rewritten), in the length by framing, in the
    /// magic by the magic check, and in the CRC field by the CRC.
    #[test]
    fn a_flip_at_every_byte_is_caught() {
        let batch = sample();
        for position in 0..batch.len() {
            for bit in 0..8 {
                let mut damaged = batch.clone();
                damaged[position] ^= 1 << bit;
                let result = BatchView::parse(&damaged);
                if position < at::BATCH_LENGTH || (at::PARTITION_LEADER_EPOCH..at::MAGIC).contains(&position)
                {
                    assert!(
                        result.is_ok(),
                        "position {position}: outside the CRC and not checked"
                    );
                    continue;
                }
                match result {
                    Ok(view) => panic!("flip at {position} bit {bit} accepted: {view:?}"),
                    Err(StoredBatchError::Incomplete) => {
                        assert!((at::BATCH_LENGTH..at::PARTITION_LEADER_EPOCH).contains(&position))
                    }
                    Err(StoredBatchError::Corrupt(_)) => {}
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BatchView::parse(&bytes);
            if let Ok(view) = BatchView::parse_unchecked_crc(&bytes) {
                prop_assert!(view.size_bytes() <= bytes.len());
                let _ = (view.last_offset(), view.compression(), view.compute_crc());
            }
        }

        #[test]
        fn random_header_with_valid_framing_never_panics(
            mut header in proptest::collection::vec(any::<u8>(), HEADER_BYTES..300),
        ) {
            let length = (header.len() - LOG_OVERHEAD) as i32;
            header[8..12].copy_from_slice(&length.to_be_bytes());
            header[16] = 2;
            let view = BatchView::parse_unchecked_crc(&header).expect("framing is valid");
            prop_assert_eq!(view.size_bytes(), header.len());
            let _ = view.last_offset();
        }
    }
}
