//! Record batches (magic 2): a zero-copy view over one stored batch, the checks a leader
//! makes on a produced batch, the few header edits it then makes, and record decoding.
//!
//! Invariants: a [`BatchView`] covers exactly one whole batch (`LOG_OVERHEAD + batchLength`
//! bytes, at least [`HEADER_BYTES`]) whose magic is 2. Parsing, validation and scanning never
//! copy record bytes; only [`decode_records`] does. No input bytes make anything here panic.

mod builder;
mod records;
mod scan;
mod validate;
mod view;

use thiserror::Error;

pub use builder::{build_batch, build_batch_compressed, build_control_batch, with_producer, RecordSpec};
pub use records::{decode_records, iter_records, DecodedRecord, RecordIter, DECOMPRESSED_BYTES_MAX};
pub use scan::{scan, scan_unchecked_crc, BatchScan, ScanStop};
pub use validate::{validate_produce, BatchInfo};
pub use view::{BatchView, StoredBatchError};

/// Bytes before a batch's `batchLength` counts: baseOffset (8) and batchLength (4).
pub const LOG_OVERHEAD: usize = 12;
/// Bytes of the batch header, up to the first record.
pub const HEADER_BYTES: usize = 61;
/// The smallest legal `batchLength`: a header without records.
pub const BATCH_LENGTH_MIN: i32 = (HEADER_BYTES - LOG_OVERHEAD) as i32;
/// The only record format this broker stores.
pub const MAGIC_V2: i8 = 2;

/// Byte positions of the header fields (big-endian).
pub(crate) mod at {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    /// The CRC covers everything from here to the end of the batch.
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORD_COUNT: usize = 57;
    pub const RECORDS: usize = 61;
}

/// Bits of the attributes field.
pub(crate) mod attr {
    pub const COMPRESSION_MASK: i16 = 0x07;
    pub const LOG_APPEND_TIME: i16 = 0x08;
    pub const TRANSACTIONAL: i16 = 0x10;
    pub const CONTROL: i16 = 0x20;
}

/// Compression codec of a batch's records (attributes bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec named by a batch's attributes; codecs 5-7 are not defined by Kafka.
    pub fn from_attributes(attributes: i16) -> Result<Compression, BatchError> {
        match attributes & attr::COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(BatchError::UnsupportedCompression(codec)),
        }
    }

    /// The codec's id in the attributes field.
    pub fn codec_id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Why a produced batch (or a batch's records) was refused; [`BatchError::error_code`] gives
/// the Kafka error code a Produce response carries.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The bytes are not a well-formed batch (bad length, bad CRC, undecompressable).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// Magic 0 or 1: an old message format this broker does not store.
    #[error("record batch magic {0} is not supported (only magic 2)")]
    UnsupportedMagic(i8),
    /// The batch, including its 12-byte log overhead, exceeds `max.message.bytes`.
    #[error("record batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}")]
    TooLarge { size_bytes: usize, max_bytes: i32 },
    /// A well-formed batch whose content breaks a rule (count, offsets, control, structure).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Compression codec 5-7.
    #[error("compression codec {0} is not supported")]
    UnsupportedCompression(i16),
}

impl BatchError {
    /// Kafka's error code for this error.
    pub fn error_code(&self) -> i16 {
        match self {
            BatchError::Corrupt(_) => 2,                 // CORRUPT_MESSAGE
            BatchError::UnsupportedMagic(_) => 43,       // UNSUPPORTED_FOR_MESSAGE_FORMAT
            BatchError::TooLarge { .. } => 10,           // MESSAGE_TOO_LARGE
            BatchError::InvalidRecord(_) => 87,          // INVALID_RECORD
            BatchError::UnsupportedCompression(_) => 76, // UNSUPPORTED_COMPRESSION_TYPE
        }
    }
}

/// How many bytes the stored batch at the start of `rest` takes, as far as its first
/// [`LOG_OVERHEAD`] bytes tell: `LOG_OVERHEAD + batchLength` once the length field is there
/// (a negative length counts as 0), else just the framing. For a reader that has part of a
/// batch and must know how much to read before it can judge it.
pub fn bytes_needed(rest: &[u8]) -> u64 {
    match rest.get(at::BATCH_LENGTH..LOG_OVERHEAD) {
        Some(&[a, b, c, d]) => LOG_OVERHEAD as u64 + i32::from_be_bytes([a, b, c, d]).max(0) as u64,
        _ => LOG_OVERHEAD as u64,
    }
}

/// Sets baseOffset of the batch in `batch`. The field is outside the CRC.
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "buffer of {} bytes holds no batch header",
        batch.len()
    );
    write_at(batch, at::BASE_OFFSET, &offset.to_be_bytes());
}

/// Sets partitionLeaderEpoch of the batch in `batch`. The field is outside the CRC.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "buffer of {} bytes holds no batch header",
        batch.len()
    );
    write_at(batch, at::PARTITION_LEADER_EPOCH, &epoch.to_be_bytes());
}

/// Stamps the batch in `batch` with LogAppendTime as Kafka does: sets the timestamp-type
/// attribute, sets maxTimestamp to `wall_ms` (records then read as `wall_ms`; baseTimestamp
/// and the deltas stay as the producer wrote them) and recomputes the CRC. `batch` must hold
/// exactly one batch.
pub fn set_log_append_time(batch: &mut [u8], wall_ms: i64) {
    set_log_append_time_split(batch, &[], wall_ms);
}

/// [`set_log_append_time`] for a batch held in two pieces: `head` (at least the header) is
/// rewritten, `tail` is the rest of the batch, read only to recompute the CRC.
pub fn set_log_append_time_split(head: &mut [u8], tail: &[u8], wall_ms: i64) {
    assert!(
        head.len() >= HEADER_BYTES,
        "buffer of {} bytes holds no batch header",
        head.len()
    );
    let batch_length = i32::from_be_bytes(array_at(head, at::BATCH_LENGTH));
    assert!(
        usize::try_from(batch_length).is_ok_and(|length| LOG_OVERHEAD + length == head.len() + tail.len()),
        "buffer of {} bytes does not hold exactly one batch (batchLength {batch_length})",
        head.len() + tail.len()
    );
    let attributes = i16::from_be_bytes(array_at(head, at::ATTRIBUTES)) | attr::LOG_APPEND_TIME;
    write_at(head, at::ATTRIBUTES, &attributes.to_be_bytes());
    write_at(head, at::MAX_TIMESTAMP, &wall_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[at::ATTRIBUTES..]), tail);
    write_at(head, at::CRC, &crc.to_be_bytes());
}

/// The `N` bytes at `offset`. Callers guarantee `offset + N <= bytes.len()` (every caller
/// reads a header field of a buffer of at least [`HEADER_BYTES`]).
pub(crate) fn array_at<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

fn write_at(bytes: &mut [u8], offset: usize, field: &[u8]) {
    bytes[offset..offset + field.len()].copy_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn bytes_needed_reads_the_length_field_once_it_is_there() {
        let batch = build_batch(&[RecordSpec {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: 0,
        }]);
        assert_eq!(bytes_needed(&batch), batch.len() as u64);
        assert_eq!(bytes_needed(&batch[..LOG_OVERHEAD]), batch.len() as u64);
        assert_eq!(bytes_needed(&batch[..LOG_OVERHEAD - 1]), LOG_OVERHEAD as u64);
        assert_eq!(bytes_needed(&[]), LOG_OVERHEAD as u64);
        let mut negative = batch[..LOG_OVERHEAD].to_vec();
        negative[at::BATCH_LENGTH..LOG_OVERHEAD].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(bytes_needed(&negative), LOG_OVERHEAD as u64);
    }

    fn sample() -> Vec<u8> {
        let specs = [
            RecordSpec {
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v1")),
                headers: vec![],
                timestamp_ms: 1_000,
            },
            RecordSpec {
                key: None,
                value: None,
                headers: vec![],
                timestamp_ms: 990,
            },
        ];
        build_batch(&specs).to_vec()
    }

    #[test]
    fn error_codes_are_kafkas() {
        assert_eq!(BatchError::Corrupt(String::new()).error_code(), 2);
        assert_eq!(BatchError::UnsupportedMagic(1).error_code(), 43);
        assert_eq!(
            BatchError::TooLarge {
                size_bytes: 2,
                max_bytes: 1
            }
            .error_code(),
            10
        );
        assert_eq!(BatchError::InvalidRecord(String::new()).error_code(), 87);
        assert_eq!(BatchError::UnsupportedCompression(5).error_code(), 76);
    }

    #[test]
    fn compression_ids_round_trip() {
        for codec in 0..8i16 {
            match Compression::from_attributes(codec | attr::CONTROL) {
                Ok(compression) => assert_eq!(compression.codec_id(), codec),
                Err(error) => {
                    assert!(codec > 4);
                    assert_eq!(error, BatchError::UnsupportedCompression(codec));
                }
            }
        }
    }

    #[test]
    fn header_edits_keep_the_batch_valid() {
        let mut batch = sample();
        set_base_offset(&mut batch, 1_234_567);
        set_partition_leader_epoch(&mut batch, 42);
        let view = BatchView::parse(&batch).expect("edits outside the CRC keep it valid");
        assert_eq!(view.base_offset(), 1_234_567);
        assert_eq!(view.last_offset(), 1_234_568);
        assert_eq!(view.partition_leader_epoch(), 42);
        let records = decode_records(&view).expect("decodes");
        assert_eq!(records[0].offset, 1_234_567);
        assert_eq!(records[1].offset, 1_234_568);
    }

    #[test]
    fn log_append_time_rewrites_timestamps_and_crc() {
        let mut batch = sample();
        let before = BatchView::parse(&batch).expect("valid").crc();
        set_log_append_time(&mut batch, 77_000);
        let view = BatchView::parse(&batch).expect("CRC recomputed");
        assert_ne!(view.crc(), before);
        assert!(view.is_log_append_time());
        assert_eq!(view.max_timestamp(), 77_000);
        assert_eq!(view.base_timestamp(), 1_000);
        assert_eq!(view.compression(), Ok(Compression::None));
        let records = decode_records(&view).expect("decodes");
        assert!(records.iter().all(|record| record.timestamp_ms == 77_000));
        assert!(validate_produce(&batch, 1 << 20).is_ok());
    }

    #[test]
    #[should_panic(expected = "holds no batch header")]
    fn header_edit_on_a_short_buffer_asserts() {
        set_base_offset(&mut [0u8; HEADER_BYTES - 1], 0);
    }

    #[test]
    #[should_panic(expected = "exactly one batch")]
    fn log_append_time_on_a_longer_buffer_asserts() {
        let mut batch = sample();
        batch.push(0);
        set_log_append_time(&mut batch, 1);
    }
}
