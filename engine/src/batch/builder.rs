//! Building batches the way a Kafka producer does, for tests and the simulator: baseOffset 0,
//! no leader epoch, no producer id, CreateTime timestamps, CRC set.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

use super::records::{XERIAL_HEADER_BYTES, XERIAL_MAGIC};
use super::{at, BatchError, Compression, HEADER_BYTES, LOG_OVERHEAD, MAGIC_V2};

/// One record to build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSpec {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

/// snappy-java's block size, which Kafka producers use.
const SNAPPY_BLOCK_BYTES: usize = 32 * 1024;
/// Kafka's default zstd level.
const ZSTD_LEVEL: i32 = 3;

/// An uncompressed magic-2 batch of `records` (at least one): baseOffset 0, leader epoch -1,
/// producerId/epoch/baseSequence -1, baseTimestamp the first record's, maxTimestamp the
/// largest, CRC set.
pub fn build_batch(records: &[RecordSpec]) -> Bytes {
    assemble(records, Compression::None, &encode_records(records))
}

/// A control batch (attributes bit 5) of one record with `key` and `value`, as a broker
/// writes for transaction markers and Raft's leader change. Otherwise like [`build_batch`].
pub fn build_control_batch(key: Bytes, value: Bytes, timestamp_ms: i64) -> Bytes {
    let spec = RecordSpec {
        key: Some(key),
        value: Some(value),
        headers: vec![],
        timestamp_ms,
    };
    let mut batch = BytesMut::from(&build_batch(std::slice::from_ref(&spec))[..]);
    let attributes =
        i16::from_be_bytes([batch[at::ATTRIBUTES], batch[at::ATTRIBUTES + 1]]) | super::attr::CONTROL;
    batch[at::ATTRIBUTES..at::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&batch[at::ATTRIBUTES..]);
    batch[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// `batch` as an idempotent producer sends it: producer id, epoch and base sequence set,
/// CRC recomputed.
pub fn with_producer(batch: &[u8], producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
    assert!(batch.len() >= HEADER_BYTES, "a whole batch");
    let mut b = BytesMut::from(batch);
    b[at::PRODUCER_ID..at::PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    b[at::PRODUCER_EPOCH..at::PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    b[at::BASE_SEQUENCE..at::BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[at::ATTRIBUTES..]);
    b[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Like [`build_batch`], with the records compressed as a Kafka producer would (snappy in
/// snappy-java's framing, lz4 as independent-block frames).
pub fn build_batch_compressed(records: &[RecordSpec], compression: Compression) -> Result<Bytes, BatchError> {
    let encoded = encode_records(records);
    let failed =
        |error: std::io::Error| BatchError::Corrupt(format!("compressing with {compression:?}: {error}"));
    let region = match compression {
        Compression::None => encoded,
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&encoded).map_err(failed)?;
            encoder.finish().map_err(failed)?
        }
        Compression::Snappy => snappy_xerial(&encoded)?,
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::new())
                .map_err(failed)?;
            encoder.write_all(&encoded).map_err(failed)?;
            let (region, result) = encoder.finish();
            result.map_err(failed)?;
            region
        }
        Compression::Zstd => zstd::stream::encode_all(&encoded[..], ZSTD_LEVEL).map_err(failed)?,
    };
    Ok(assemble(records, compression, &region))
}

/// The header for `records` followed by `region` (their encoding, compressed or not).
fn assemble(records: &[RecordSpec], compression: Compression, region: &[u8]) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let count = i32::try_from(records.len()).expect("fewer than 2^31 records");
    let size_bytes = HEADER_BYTES + region.len();
    let batch_length = i32::try_from(size_bytes - LOG_OVERHEAD).expect("a batch is under 2 GiB");
    let base_timestamp = records[0].timestamp_ms;
    let max_timestamp = records
        .iter()
        .map(|record| record.timestamp_ms)
        .max()
        .unwrap_or(base_timestamp);
    let mut batch = BytesMut::with_capacity(size_bytes);
    batch.put_i64(0); // baseOffset
    batch.put_i32(batch_length);
    batch.put_i32(-1); // partitionLeaderEpoch
    batch.put_i8(MAGIC_V2);
    batch.put_u32(0); // CRC, set below
    batch.put_i16(compression.codec_id()); // attributes: CreateTime, not transactional
    batch.put_i32(count - 1); // lastOffsetDelta
    batch.put_i64(base_timestamp);
    batch.put_i64(max_timestamp);
    batch.put_i64(-1); // producerId
    batch.put_i16(-1); // producerEpoch
    batch.put_i32(-1); // baseSequence
    batch.put_i32(count);
    assert_eq!(batch.len(), HEADER_BYTES);
    batch.put_slice(region);
    let crc = crc32c::crc32c(&batch[at::ATTRIBUTES..]);
    batch[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(batch.len(), size_bytes);
    batch.freeze()
}

/// The records region of an uncompressed batch: each record with its length prefix.
fn encode_records(records: &[RecordSpec]) -> Vec<u8> {
    let base_timestamp = records.first().map_or(0, |record| record.timestamp_ms);
    let mut region = Vec::new();
    let mut body = Vec::new();
    for (index, record) in records.iter().enumerate() {
        body.clear();
        body.push(0); // attributes
        put_varlong(&mut body, record.timestamp_ms.wrapping_sub(base_timestamp));
        put_varint(&mut body, i32::try_from(index).expect("fewer than 2^31 records"));
        put_nullable(&mut body, record.key.as_deref());
        put_nullable(&mut body, record.value.as_deref());
        put_varint(&mut body, length_i32(record.headers.len()));
        for (key, value) in &record.headers {
            put_varint(&mut body, length_i32(key.len()));
            body.extend_from_slice(key.as_bytes());
            put_nullable(&mut body, value.as_deref());
        }
        put_varint(&mut region, length_i32(body.len()));
        region.extend_from_slice(&body);
    }
    region
}

/// snappy-java's framing: magic, version 1, compatible version 1, then `[u32 length][block]`.
fn snappy_xerial(input: &[u8]) -> Result<Vec<u8>, BatchError> {
    let mut output = Vec::with_capacity(XERIAL_HEADER_BYTES + input.len());
    output.extend_from_slice(XERIAL_MAGIC);
    output.extend_from_slice(&1i32.to_be_bytes());
    output.extend_from_slice(&1i32.to_be_bytes());
    assert_eq!(output.len(), XERIAL_HEADER_BYTES);
    for chunk in input.chunks(SNAPPY_BLOCK_BYTES) {
        let block = snap::raw::Encoder::new()
            .compress_vec(chunk)
            .map_err(|error| BatchError::Corrupt(format!("compressing with Snappy: {error}")))?;
        let length = u32::try_from(block.len()).expect("a compressed 32 KiB block is under 4 GiB");
        output.extend_from_slice(&length.to_be_bytes());
        output.extend_from_slice(&block);
    }
    Ok(output)
}

fn length_i32(length: usize) -> i32 {
    i32::try_from(length).expect("a record field is under 2 GiB")
}

fn put_nullable(buffer: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(bytes) => {
            put_varint(buffer, length_i32(bytes.len()));
            buffer.extend_from_slice(bytes);
        }
        None => put_varint(buffer, -1),
    }
}

pub(crate) fn put_varint(buffer: &mut Vec<u8>, value: i32) {
    let mut raw = ((value << 1) ^ (value >> 31)) as u32;
    while raw >= 0x80 {
        buffer.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    buffer.push(raw as u8);
}

pub(crate) fn put_varlong(buffer: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        buffer.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    buffer.push(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::records::Reader;
    use proptest::prelude::*;

    #[test]
    fn varints_match_kafkas_encoding() {
        let cases: [(i32, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (64, &[0x80, 0x01]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, encoded) in cases {
            let mut buffer = Vec::new();
            put_varint(&mut buffer, value);
            assert_eq!(buffer, encoded, "{value}");
        }
    }

    #[test]
    fn overlong_varints_are_refused() {
        assert!(Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00])
            .varint()
            .is_err());
        assert!(Reader::new(&[0x80; 11]).varlong().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err(), "truncated");
        // Kafka drops bits past 32 in the fifth byte rather than refusing them.
        assert_eq!(
            Reader::new(&[0xfe, 0xff, 0xff, 0xff, 0x7f]).varint(),
            Ok(i32::MAX)
        );
    }

    proptest! {
        #[test]
        fn varints_round_trip(value in any::<i32>(), long in any::<i64>()) {
            let mut buffer = Vec::new();
            put_varint(&mut buffer, value);
            put_varlong(&mut buffer, long);
            let mut reader = Reader::new(&buffer);
            prop_assert_eq!(reader.varint(), Ok(value));
            prop_assert_eq!(reader.varlong(), Ok(long));
            prop_assert_eq!(reader.remaining(), 0);
        }
    }
}
