//! Records inside a batch: a non-allocating parser (shared by produce validation and
//! decoding), bounded decompression, and [`decode_records`].
//!
//! The parser follows Kafka's `DefaultRecord.readFrom`: a negative key or value length means
//! null, a negative header count or header key length is invalid, and a record's fields must
//! fill exactly the length it declares.

use std::io::Read;

use bytes::Bytes;

use super::view::BatchView;
use super::{BatchError, Compression};

/// The most bytes a batch's records may decompress to; more is refused as corrupt, so a
/// compression bomb cannot exhaust memory.
pub const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// The smallest encoded record: length, attributes, timestampDelta, offsetDelta, keyLength,
/// valueLength and headerCount, one byte each.
pub(crate) const RECORD_BYTES_MIN: usize = 7;

/// Zstd window limit (2^26 = 64 MiB, matching [`DECOMPRESSED_BYTES_MAX`]): a frame asking for
/// a larger window is refused instead of allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 26;

/// A record decoded from a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Decodes every record of `batch`, decompressing if needed; see [`iter_records`].
pub fn decode_records(batch: &BatchView) -> Result<Vec<DecodedRecord>, BatchError> {
    let records = iter_records(batch)?;
    let mut decoded = Vec::with_capacity(records.remaining.min(RECORDS_PREALLOCATED_MAX));
    for record in records {
        decoded.push(record?);
    }
    assert!(usize::try_from(batch.record_count()).is_ok_and(|count| count == decoded.len()));
    Ok(decoded)
}

/// The records of `batch` one at a time (decompressed up front if needed), so a caller
/// looking for one record need not hold them all. Offsets are `baseOffset + offsetDelta`;
/// timestamps are `baseTimestamp + timestampDelta`, or maxTimestamp for a LogAppendTime
/// batch. Header keys that are not UTF-8 are decoded lossily, as Java does. The iterator
/// yields an error (and then ends) at a malformed record, or after the last record if bytes
/// remain.
pub fn iter_records(batch: &BatchView) -> Result<RecordIter, BatchError> {
    let records = match batch.compression()? {
        Compression::None => Bytes::copy_from_slice(batch.records_bytes()),
        compression => Bytes::from(decompress(compression, batch.records_bytes())?),
    };
    let remaining = checked_record_count(batch.record_count(), records.len())?;
    Ok(RecordIter {
        records,
        position: 0,
        remaining,
        base_offset: batch.base_offset(),
        base_timestamp: batch.base_timestamp(),
        log_append_time: batch.is_log_append_time().then(|| batch.max_timestamp()),
        done: false,
    })
}

/// At most this many records are allocated for before they are decoded, whatever count a
/// batch header claims.
const RECORDS_PREALLOCATED_MAX: usize = 4096;

/// Iterator over the decoded records of one batch; see [`iter_records`].
#[derive(Clone, Debug)]
pub struct RecordIter {
    /// The uncompressed records region.
    records: Bytes,
    /// Where the next record starts in `records`.
    position: usize,
    /// Records still to decode (bounded by `records.len() / RECORD_BYTES_MIN`).
    remaining: usize,
    base_offset: i64,
    base_timestamp: i64,
    /// maxTimestamp, when every record's timestamp is it.
    log_append_time: Option<i64>,
    /// Set after the last record, or after an error.
    done: bool,
}

impl RecordIter {
    fn decode_next(&mut self) -> Result<DecodedRecord, BatchError> {
        let mut reader = Reader {
            bytes: &self.records,
            position: self.position,
        };
        let record = read_record(&mut reader)?;
        assert!(reader.position > self.position);
        self.position = reader.position;
        let offset = self
            .base_offset
            .checked_add(i64::from(record.offset_delta))
            .ok_or_else(|| {
                BatchError::InvalidRecord(format!(
                    "offset delta {} overflows the offset",
                    record.offset_delta
                ))
            })?;
        let timestamp_ms = self
            .log_append_time
            .unwrap_or_else(|| self.base_timestamp.wrapping_add(record.timestamp_delta));
        Ok(DecodedRecord {
            offset,
            timestamp_ms,
            key: record.key.map(|key| self.records.slice_ref(key)),
            value: record.value.map(|value| self.records.slice_ref(value)),
            headers: decode_headers(&self.records, &record)?,
        })
    }
}

impl Iterator for RecordIter {
    type Item = Result<DecodedRecord, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            self.done = true;
            let reader = Reader {
                bytes: &self.records,
                position: self.position,
            };
            return ensure_no_trailing_bytes(&reader).err().map(Err);
        }
        let record = self.decode_next();
        self.remaining -= 1;
        self.done = record.is_err();
        Some(record)
    }
}

/// Checks the uncompressed records of a batch the way Kafka's log validator does, without
/// allocating: exactly `record_count` well-formed records, the i-th with offsetDelta i, and
/// nothing after them.
pub(crate) fn walk_uncompressed(records: &[u8], record_count: i32) -> Result<(), BatchError> {
    let count = checked_record_count(record_count, records.len())?;
    if fast_walk(records, count) {
        return Ok(());
    }
    explain_walk(records, count)
}

/// [`walk_uncompressed`]'s common case: the same checks with no error to build, so a
/// well-formed batch (every produce) costs a few nanoseconds a record. `false` for exactly
/// the regions [`explain_walk`] refuses (a property test holds the two together).
fn fast_walk(records: &[u8], count: usize) -> bool {
    let mut at = 0usize;
    for index in 0..count {
        let Ok(length) = varint_at(records, &mut at) else {
            return false;
        };
        let Ok(length) = usize::try_from(length) else {
            return false;
        };
        let Some(body) = records.get(at..at.saturating_add(length)) else {
            return false;
        };
        at += length;
        let mut p = 1; // attributes
        let fields_ok = p <= body.len()
            && varlong_at(body, &mut p).is_ok()
            && varint_at(body, &mut p).is_ok_and(|delta| usize::try_from(delta) == Ok(index))
            && fast_skip_nullable(body, &mut p)
            && fast_skip_nullable(body, &mut p);
        if !fast_headers(body, &mut p, fields_ok) || p != body.len() {
            return false;
        }
    }
    at == records.len()
}

/// The headers of a record (count, then each key and nullable value), if `so_far` holds.
#[inline(always)]
fn fast_headers(body: &[u8], p: &mut usize, so_far: bool) -> bool {
    if !so_far {
        return false;
    }
    let Ok(count) = varint_at(body, p) else {
        return false;
    };
    let Ok(count) = usize::try_from(count) else {
        return false;
    };
    for _ in 0..count {
        let key_ok = varint_at(body, p)
            .ok()
            .and_then(|length| usize::try_from(length).ok())
            .is_some_and(|length| fast_skip(body, p, length));
        if !key_ok || !fast_skip_nullable(body, p) {
            return false;
        }
    }
    true
}

/// Steps over `length` bytes, if there are that many.
#[inline(always)]
fn fast_skip(bytes: &[u8], p: &mut usize, length: usize) -> bool {
    match p.checked_add(length) {
        Some(end) if end <= bytes.len() => {
            *p = end;
            true
        }
        _ => false,
    }
}

/// Steps over a length-prefixed field whose negative length means null.
#[inline(always)]
fn fast_skip_nullable(bytes: &[u8], p: &mut usize) -> bool {
    match varint_at(bytes, p) {
        Err(_) => false,
        Ok(length) => usize::try_from(length).map_or(true, |length| fast_skip(bytes, p, length)),
    }
}

/// [`walk_uncompressed`]'s slow path: finds what is wrong and says so.
fn explain_walk(records: &[u8], count: usize) -> Result<(), BatchError> {
    let mut reader = Reader::new(records);
    for index in 0..count {
        let record = read_record(&mut reader)?;
        // index < count <= i32::MAX (checked_record_count), so the cast is lossless.
        if record.offset_delta != index as i32 {
            return Err(BatchError::InvalidRecord(format!(
                "record {index} has offset delta {}, expected {index}",
                record.offset_delta
            )));
        }
    }
    ensure_no_trailing_bytes(&reader)
}

/// `record_count` as a usize, refused when negative or when `records_bytes` could not hold
/// that many records (which also bounds every loop over the records).
fn checked_record_count(record_count: i32, records_bytes: usize) -> Result<usize, BatchError> {
    let count = usize::try_from(record_count)
        .map_err(|_| BatchError::InvalidRecord(format!("negative record count {record_count}")))?;
    if count > records_bytes / RECORD_BYTES_MIN {
        return Err(BatchError::InvalidRecord(format!(
            "record count {count} cannot fit in {records_bytes} bytes of records"
        )));
    }
    Ok(count)
}

fn ensure_no_trailing_bytes(reader: &Reader) -> Result<(), BatchError> {
    if reader.remaining() != 0 {
        return Err(BatchError::InvalidRecord(format!(
            "{} bytes remain after the records the batch declares",
            reader.remaining()
        )));
    }
    Ok(())
}

/// One record's fields, borrowed from the records region.
#[derive(Debug)]
pub(crate) struct RawRecord<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: usize,
    /// The encoded headers, already checked by [`read_record`].
    pub headers: &'a [u8],
}

/// Reads one record (length prefix included) and checks that its fields fill its length.
pub(crate) fn read_record<'a>(reader: &mut Reader<'a>) -> Result<RawRecord<'a>, BatchError> {
    let length = reader.varint()?;
    let length = usize::try_from(length)
        .map_err(|_| BatchError::InvalidRecord(format!("negative record length {length}")))?;
    if length > reader.remaining() {
        return Err(BatchError::InvalidRecord(format!(
            "record length {length} exceeds the {} bytes left",
            reader.remaining()
        )));
    }
    let mut body = Reader::new(reader.bytes(length)?);
    let _attributes = body.byte()?;
    let timestamp_delta = body.varlong()?;
    let offset_delta = body.varint()?;
    let key = body.nullable_bytes()?;
    let value = body.nullable_bytes()?;
    let header_count = body.varint()?;
    let header_count = usize::try_from(header_count)
        .map_err(|_| BatchError::InvalidRecord(format!("negative header count {header_count}")))?;
    let headers_start = body.position;
    // Each header takes at least two bytes, so a count the body cannot hold fails early.
    for _ in 0..header_count {
        read_header(&mut body)?;
    }
    let headers = &body.bytes[headers_start..body.position];
    if body.remaining() != 0 {
        return Err(BatchError::InvalidRecord(format!(
            "record of {length} bytes has {} bytes after its last field",
            body.remaining()
        )));
    }
    Ok(RawRecord {
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count,
        headers,
    })
}

fn read_header<'a>(body: &mut Reader<'a>) -> Result<(&'a [u8], Option<&'a [u8]>), BatchError> {
    let key_length = body.varint()?;
    let key_length = usize::try_from(key_length)
        .map_err(|_| BatchError::InvalidRecord(format!("negative header key length {key_length}")))?;
    let key = body.bytes(key_length)?;
    let value = body.nullable_bytes()?;
    Ok((key, value))
}

fn decode_headers(records: &Bytes, record: &RawRecord) -> Result<Vec<(String, Option<Bytes>)>, BatchError> {
    let mut reader = Reader::new(record.headers);
    let mut headers = Vec::with_capacity(record.header_count);
    for _ in 0..record.header_count {
        let (key, value) = read_header(&mut reader)?;
        let key = String::from_utf8_lossy(key).into_owned();
        headers.push((key, value.map(|value| records.slice_ref(value))));
    }
    assert_eq!(reader.remaining(), 0, "read_record checked the headers");
    Ok(headers)
}

/// A cursor over untrusted bytes; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, BatchError> {
        let byte = *self.bytes.get(self.position).ok_or_else(|| truncated("a byte"))?;
        self.position += 1;
        Ok(byte)
    }

    #[inline]
    fn bytes(&mut self, length: usize) -> Result<&'a [u8], BatchError> {
        if length > self.remaining() {
            return Err(truncated("a length-prefixed field"));
        }
        let bytes = &self.bytes[self.position..self.position + length];
        self.position += length;
        Ok(bytes)
    }

    /// A field whose negative length means null.
    #[inline]
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        let length = self.varint()?;
        match usize::try_from(length) {
            Ok(length) => Ok(Some(self.bytes(length)?)),
            Err(_) => Ok(None),
        }
    }

    /// A zigzag varint of at most 5 bytes (bits beyond 32 are dropped, as Kafka does).
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<i32, BatchError> {
        varint_at(self.bytes, &mut self.position).map_err(|end| end.error("varint longer than 5 bytes"))
    }

    /// A zigzag varlong of at most 10 bytes.
    #[inline]
    pub(crate) fn varlong(&mut self) -> Result<i64, BatchError> {
        varlong_at(self.bytes, &mut self.position).map_err(|end| end.error("varlong longer than 10 bytes"))
    }
}

/// Why a varint or varlong could not be read.
enum VarintEnd {
    /// The bytes ran out first.
    Truncated,
    /// Every byte allowed had its continuation bit set.
    TooLong,
}

impl VarintEnd {
    fn error(self, too_long: &str) -> BatchError {
        match self {
            VarintEnd::Truncated => truncated("a byte"),
            VarintEnd::TooLong => BatchError::InvalidRecord(too_long.to_string()),
        }
    }
}

/// The zigzag varint at `*p` (at most 5 bytes, bits beyond 32 dropped), `*p` moved past
/// every byte read; a one-byte fast path. Shared by [`Reader`] and the fast record walk.
#[inline(always)]
fn varint_at(bytes: &[u8], p: &mut usize) -> Result<i32, VarintEnd> {
    let first = *bytes.get(*p).ok_or(VarintEnd::Truncated)?;
    if first < 0x80 {
        *p += 1;
        return Ok(i32::from(first >> 1) ^ -i32::from(first & 1));
    }
    // Truncating to 32 bits is the point: Kafka's readers drop the bits beyond them too.
    let raw = unsigned_varint_at(bytes, p, 5)? as u32;
    Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
}

/// The zigzag varlong at `*p` (at most 10 bytes), `*p` moved past every byte read.
#[inline(always)]
fn varlong_at(bytes: &[u8], p: &mut usize) -> Result<i64, VarintEnd> {
    let raw = unsigned_varint_at(bytes, p, 10)?;
    Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
}

/// The unsigned base-128 value at `*p` (low groups first, at most `max_bytes` bytes, which is
/// at most 10 so that every group fits 64 bits), `*p` moved past every byte read.
#[inline(always)]
fn unsigned_varint_at(bytes: &[u8], p: &mut usize, max_bytes: u32) -> Result<u64, VarintEnd> {
    debug_assert!(max_bytes <= 10);
    let mut raw: u64 = 0;
    for index in 0..max_bytes {
        let byte = *bytes.get(*p).ok_or(VarintEnd::Truncated)?;
        *p += 1;
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(raw);
        }
    }
    Err(VarintEnd::TooLong)
}

fn truncated(what: &str) -> BatchError {
    BatchError::InvalidRecord(format!("record ends in the middle of {what}"))
}

/// Decompresses a batch's records region, refusing more than [`DECOMPRESSED_BYTES_MAX`].
fn decompress(compression: Compression, input: &[u8]) -> Result<Vec<u8>, BatchError> {
    let failed = |error: std::io::Error| BatchError::Corrupt(format!("{compression:?} records: {error}"));
    let output = match compression {
        Compression::None => input.to_vec(),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input)).map_err(failed)?,
        Compression::Snappy => snappy_decompress(input)?,
        Compression::Lz4 => {
            let mut decoder = lz4::Decoder::new(input).map_err(failed)?;
            let output = read_bounded(&mut decoder).map_err(failed)?;
            if output.len() > DECOMPRESSED_BYTES_MAX {
                return Err(too_big(compression));
            }
            // The decoder reports a truncated frame only here.
            decoder.finish().1.map_err(failed)?;
            output
        }
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(failed)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(failed)?;
            read_bounded(decoder).map_err(failed)?
        }
    };
    if output.len() > DECOMPRESSED_BYTES_MAX {
        return Err(too_big(compression));
    }
    Ok(output)
}

/// Reads to the end, but at most one byte more than [`DECOMPRESSED_BYTES_MAX`].
fn read_bounded(reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut output = Vec::new();
    reader
        .take(DECOMPRESSED_BYTES_MAX as u64 + 1)
        .read_to_end(&mut output)?;
    Ok(output)
}

fn too_big(compression: Compression) -> BatchError {
    BatchError::Corrupt(format!(
        "{compression:?} records decompress to more than {DECOMPRESSED_BYTES_MAX} bytes"
    ))
}

/// The framing snappy-java (and so Kafka) writes: this magic, a version and a compatible
/// version (4 bytes each), then blocks of `[u32 length][raw snappy]`.
pub(crate) const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
pub(crate) const XERIAL_HEADER_BYTES: usize = 16;

/// Snappy as Kafka reads it: xerial-framed if the magic is there, raw snappy otherwise.
fn snappy_decompress(input: &[u8]) -> Result<Vec<u8>, BatchError> {
    let mut output = Vec::new();
    if input.len() >= XERIAL_HEADER_BYTES && input.starts_with(XERIAL_MAGIC) {
        let mut reader = Reader::new(&input[XERIAL_HEADER_BYTES..]);
        // Each block takes at least its 4-byte length, which bounds this loop.
        while reader.remaining() > 0 {
            let length_field = reader.bytes(4).map_err(snappy_truncated)?;
            // A u32 always fits the usize of the 32- and 64-bit targets we build for.
            let length = u32::from_be_bytes(super::array_at(length_field, 0)) as usize;
            let block = reader.bytes(length).map_err(snappy_truncated)?;
            snappy_block(block, &mut output)?;
        }
    } else {
        snappy_block(input, &mut output)?;
    }
    Ok(output)
}

fn snappy_truncated(_: BatchError) -> BatchError {
    BatchError::Corrupt("Snappy records: truncated block".to_string())
}

/// Appends one raw snappy block to `output`, checking the size it declares before allocating.
fn snappy_block(block: &[u8], output: &mut Vec<u8>) -> Result<(), BatchError> {
    let failed = |error: snap::Error| BatchError::Corrupt(format!("Snappy records: {error}"));
    let length = snap::raw::decompress_len(block).map_err(failed)?;
    let start = output.len();
    if length > DECOMPRESSED_BYTES_MAX - start {
        return Err(too_big(Compression::Snappy));
    }
    output.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut output[start..])
        .map_err(failed)?;
    output.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{
        at, build_batch, build_batch_compressed, validate_produce, RecordSpec, HEADER_BYTES, LOG_OVERHEAD,
    };
    use proptest::prelude::*;

    const COMPRESSIONS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// `value` written with `put` reads back with `read`, every byte consumed, and one byte
    /// short is `Truncated`.
    fn read_back<T: PartialEq + std::fmt::Debug + Copy>(
        value: T,
        put: fn(&mut Vec<u8>, T),
        read: fn(&[u8], &mut usize) -> Result<T, VarintEnd>,
    ) {
        let mut bytes = Vec::new();
        put(&mut bytes, value);
        let mut p = 0;
        assert_eq!(read(&bytes, &mut p).ok(), Some(value));
        assert_eq!(p, bytes.len(), "{value:?}: every byte consumed");
        let mut p = 0;
        let short = read(&bytes[..bytes.len() - 1], &mut p);
        assert!(matches!(short, Err(VarintEnd::Truncated)), "{value:?} cut short");
    }

    #[test]
    fn varints_and_varlongs_read_back_at_every_width() {
        use crate::batch::builder::{put_varint, put_varlong};
        for value in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            -8192,
            1 << 20,
            i32::MAX,
            i32::MIN,
        ] {
            read_back(value, put_varint, varint_at);
        }
        for value in [0, 1, -1, 1 << 40, -(1 << 40), i64::MAX, i64::MIN] {
            read_back(value, put_varlong, varlong_at);
        }
        // Six continuation bytes are too long for a varint, eleven for a varlong.
        let mut p = 0;
        assert!(matches!(varint_at(&[0x80; 6], &mut p), Err(VarintEnd::TooLong)));
        assert_eq!(p, 5);
        let mut p = 0;
        assert!(matches!(varlong_at(&[0x80; 11], &mut p), Err(VarintEnd::TooLong)));
        assert_eq!(p, 10);
        // A five-byte varint keeps the low 32 bits of what it encodes.
        let mut p = 0;
        let five = varint_at(&[0xfe, 0xff, 0xff, 0xff, 0x7f], &mut p);
        assert_eq!(five.ok(), Some(i32::MAX));
    }

    fn specs() -> Vec<RecordSpec> {
        vec![
            RecordSpec {
                key: Some(Bytes::from_static(b"key")),
                value: Some(Bytes::from_static(b"value")),
                headers: vec![
                    ("a".to_string(), Some(Bytes::from_static(b"1"))),
                    ("b".to_string(), None),
                    ("".to_string(), Some(Bytes::new())),
                ],
                timestamp_ms: 1_000,
            },
            RecordSpec {
                key: None,
                value: Some(Bytes::new()),
                headers: vec![],
                timestamp_ms: 999,
            },
            RecordSpec {
                key: Some(Bytes::new()),
                value: None,
                headers: vec![],
                timestamp_ms: i64::MIN,
            },
        ]
    }

    fn expected(specs: &[RecordSpec], base_offset: i64) -> Vec<DecodedRecord> {
        specs
            .iter()
            .enumerate()
            .map(|(i, spec)| DecodedRecord {
                offset: base_offset + i as i64,
                timestamp_ms: spec.timestamp_ms,
                key: spec.key.clone(),
                value: spec.value.clone(),
                headers: spec.headers.clone(),
            })
            .collect()
    }

    /// A batch with `region` as its records, framing, count and CRC made consistent.
    fn raw_batch(compression: Compression, record_count: i32, region: &[u8]) -> Vec<u8> {
        reframe(
            &build_batch(&[RecordSpec::default()]),
            compression,
            record_count,
            region,
        )
    }

    /// `template`'s header with `region` as its records, framing, count and CRC made consistent.
    fn reframe(template: &[u8], compression: Compression, record_count: i32, region: &[u8]) -> Vec<u8> {
        let mut batch = template[..HEADER_BYTES].to_vec();
        batch.extend_from_slice(region);
        let batch_length = (batch.len() - LOG_OVERHEAD) as i32;
        batch[at::BATCH_LENGTH..at::BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
        batch[at::ATTRIBUTES..at::ATTRIBUTES + 2].copy_from_slice(&compression.codec_id().to_be_bytes());
        batch[at::LAST_OFFSET_DELTA..at::LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&record_count.wrapping_sub(1).to_be_bytes());
        batch[at::RECORD_COUNT..at::RECORD_COUNT + 4].copy_from_slice(&record_count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[at::ATTRIBUTES..]);
        batch[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    fn decode(batch: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
        decode_records(&BatchView::parse(batch).expect("framing and CRC are valid"))
    }

    #[test]
    fn every_compression_round_trips() {
        for compression in COMPRESSIONS {
            let batch = build_batch_compressed(&specs(), compression).expect("compresses");
            let view = BatchView::parse(&batch).expect("valid");
            assert_eq!(view.compression(), Ok(compression));
            assert_eq!((view.base_timestamp(), view.max_timestamp()), (1_000, 1_000));
            assert_eq!(
                decode_records(&view),
                Ok(expected(&specs(), 0)),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn the_iterator_yields_records_then_the_trailing_bytes_error() {
        let plain = build_batch(&specs());
        let mut region = plain[HEADER_BYTES..].to_vec();
        region.push(0);
        let batch = reframe(&plain, Compression::None, 3, &region);
        let view = BatchView::parse(&batch).expect("valid framing");
        let mut records = iter_records(&view).expect("uncompressed");
        for expected in expected(&specs(), 0) {
            assert_eq!(records.next(), Some(Ok(expected)));
        }
        assert!(matches!(records.next(), Some(Err(BatchError::InvalidRecord(_)))));
        assert_eq!(records.next(), None);
        assert!(decode_records(&view).is_err());
        let view = BatchView::parse(&plain).expect("valid");
        assert_eq!(iter_records(&view).expect("uncompressed").count(), 3);
    }

    #[test]
    fn raw_snappy_without_framing_decodes() {
        let plain = build_batch(&specs());
        let region = snap::raw::Encoder::new()
            .compress_vec(&plain[HEADER_BYTES..])
            .expect("compresses");
        assert_eq!(
            decode(&reframe(&plain, Compression::Snappy, 3, &region)),
            Ok(expected(&specs(), 0))
        );
    }

    #[test]
    fn truncated_compressed_records_are_refused() {
        for compression in COMPRESSIONS {
            let batch = build_batch_compressed(&specs(), compression).expect("compresses");
            let region = &batch[HEADER_BYTES..];
            for cut in 0..region.len() {
                let result = decode(&raw_batch(compression, 3, &region[..cut]));
                assert!(
                    result.is_err(),
                    "{compression:?} cut at {cut} of {}",
                    region.len()
                );
            }
        }
    }

    /// A region that decompresses to one byte more than the bound.
    fn bomb(compression: Compression) -> Vec<u8> {
        let zeros = vec![0u8; DECOMPRESSED_BYTES_MAX + 1];
        match compression {
            Compression::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&zeros).expect("compresses");
                encoder.finish().expect("compresses")
            }
            Compression::Lz4 => {
                let mut encoder = lz4::EncoderBuilder::new().build(Vec::new()).expect("encoder");
                encoder.write_all(&zeros).expect("compresses");
                let (region, result) = encoder.finish();
                result.expect("compresses");
                region
            }
            Compression::Zstd => zstd::stream::encode_all(&zeros[..], 1).expect("compresses"),
            Compression::Snappy | Compression::None => unreachable!("built by hand"),
        }
    }

    use std::io::Write;

    #[test]
    fn decompression_bombs_are_refused() {
        for compression in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let error = decode(&raw_batch(compression, 1, &bomb(compression))).expect_err("a bomb");
            assert!(
                error.to_string().contains("more than"),
                "{compression:?}: {error}"
            );
            assert_eq!(error.error_code(), 2);
        }
    }

    #[test]
    fn snappy_declaring_a_huge_length_is_refused_before_allocating() {
        // Raw snappy whose preamble declares 2^32 - 1 bytes.
        let region = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let error = decode(&raw_batch(Compression::Snappy, 1, &region)).expect_err("too big");
        assert!(error.to_string().contains("more than"), "{error}");
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 6]);
        framed.extend_from_slice(&region);
        let error = decode(&raw_batch(Compression::Snappy, 1, &framed)).expect_err("too big");
        assert!(error.to_string().contains("more than"), "{error}");
    }

    #[test]
    fn a_record_count_the_records_cannot_hold_is_refused() {
        let plain = build_batch(&specs());
        let error =
            decode(&raw_batch(Compression::None, i32::MAX, &plain[HEADER_BYTES..])).expect_err("count");
        assert_eq!(error.error_code(), 87);
        let error = decode(&raw_batch(Compression::None, -1, &plain[HEADER_BYTES..])).expect_err("count");
        assert_eq!(error.error_code(), 87);
    }

    #[test]
    fn non_utf8_header_keys_decode_lossily() {
        let spec = RecordSpec {
            headers: vec![("\u{e9}".to_string(), None)],
            ..RecordSpec::default()
        };
        let mut batch = build_batch(&[spec]).to_vec();
        // "é" is c3 a9; make it the invalid c3 c3.
        let at_key = batch.iter().rposition(|&byte| byte == 0xa9).expect("the key");
        batch[at_key] = 0xc3;
        let batch = raw_batch(Compression::None, 1, &batch[HEADER_BYTES..]);
        let records = decode(&batch).expect("decodes");
        assert_eq!(records[0].headers[0].0, "\u{fffd}\u{fffd}");
    }

    mod kafka_protocol_interop {
        use super::*;
        use kafka_protocol::indexmap::IndexMap;
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{
            Compression as KpCompression, Record, RecordBatchDecoder, RecordBatchEncoder,
            RecordEncodeOptions, TimestampType,
        };

        fn kp(compression: Compression) -> KpCompression {
            match compression {
                Compression::None => KpCompression::None,
                Compression::Gzip => KpCompression::Gzip,
                Compression::Snappy => KpCompression::Snappy,
                Compression::Lz4 => KpCompression::Lz4,
                Compression::Zstd => KpCompression::Zstd,
            }
        }

        fn record(spec: &RecordSpec, offset: i64) -> Record {
            let mut headers = IndexMap::new();
            for (key, value) in &spec.headers {
                headers.insert(StrBytes::from_string(key.clone()), value.clone());
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: 7,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset,
                sequence: offset as i32,
                timestamp: spec.timestamp_ms,
                key: spec.key.clone(),
                value: spec.value.clone(),
                headers,
            }
        }

        /// The specs without the extreme timestamp, which overflows kafka-protocol's decoder.
        fn tame_specs() -> Vec<RecordSpec> {
            specs().into_iter().take(2).collect()
        }

        #[test]
        fn batches_kafka_protocol_encodes_validate_and_decode() {
            let specs = tame_specs();
            for compression in COMPRESSIONS {
                let records: Vec<Record> = specs
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| record(spec, i as i64))
                    .collect();
                let mut encoded = bytes::BytesMut::new();
                let options = RecordEncodeOptions {
                    version: 2,
                    compression: kp(compression),
                };
                RecordBatchEncoder::encode(&mut encoded, &records, &options).expect("encodes");
                let info = validate_produce(&encoded, 1 << 20).expect("kafka-protocol's batch is valid");
                assert_eq!((info.record_count, info.compression), (2, compression));
                assert_eq!(decode(&encoded), Ok(expected(&specs, 0)), "{compression:?}");
            }
        }

        #[test]
        fn batches_we_build_decode_in_kafka_protocol() {
            let specs = tame_specs();
            for compression in COMPRESSIONS {
                let batch = build_batch_compressed(&specs, compression).expect("compresses");
                let mut bytes = batch.clone();
                let set = RecordBatchDecoder::decode(&mut bytes).expect("kafka-protocol decodes it");
                assert_eq!(set.records.len(), 2);
                for (record, spec) in set.records.iter().zip(&specs) {
                    assert_eq!((&record.key, &record.value), (&spec.key, &spec.value));
                    assert_eq!(record.timestamp, spec.timestamp_ms);
                    assert_eq!(record.headers.len(), spec.headers.len());
                }
            }
        }
    }

    fn arb_spec() -> impl Strategy<Value = RecordSpec> {
        let bytes =
            || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from));
        (
            bytes(),
            bytes(),
            proptest::collection::vec(("[a-z\u{e9}]{0,6}", bytes()), 0..3),
            any::<i64>(),
        )
            .prop_map(|(key, value, headers, timestamp_ms)| RecordSpec {
                key,
                value,
                headers,
                timestamp_ms,
            })
    }

    proptest! {
        #[test]
        fn random_records_round_trip(
            specs in proptest::collection::vec(arb_spec(), 1..8),
            codec in 0usize..5,
            base_offset in 0i64..1 << 50,
        ) {
            let compression = COMPRESSIONS[codec];
            let mut batch = build_batch_compressed(&specs, compression).expect("compresses").to_vec();
            prop_assert!(validate_produce(&batch, i32::MAX).is_ok());
            crate::batch::set_base_offset(&mut batch, base_offset);
            prop_assert_eq!(decode(&batch), Ok(expected(&specs, base_offset)));
        }

        #[test]
        fn random_compressed_regions_never_panic(
            codec in 0usize..5,
            prefix in 0usize..5,
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            record_count in -2i32..10,
        ) {
            // Start some regions with each codec's magic so the decoders get past it.
            let magics: [&[u8]; 5] = [&[], &[0x1f, 0x8b, 0x08, 0x00], XERIAL_MAGIC, &[0x04, 0x22, 0x4d, 0x18], &[0x28, 0xb5, 0x2f, 0xfd]];
            let mut region = magics[prefix].to_vec();
            region.extend_from_slice(&tail);
            let batch = raw_batch(COMPRESSIONS[codec], record_count, &region);
            let _ = decode(&batch);
            let _ = validate_produce(&batch, i32::MAX);
        }

        #[test]
        fn random_record_regions_never_panic(
            region in proptest::collection::vec(any::<u8>(), 0..200),
            record_count in -2i32..30,
        ) {
            let batch = raw_batch(Compression::None, record_count, &region);
            let walked = walk_uncompressed(&region, record_count);
            let decoded = decode(&batch);
            prop_assert_eq!(walked.is_ok(), decoded.is_ok() && decoded.iter().flatten().enumerate().all(|(i, r)| r.offset == i as i64));
            if let Ok(count) = checked_record_count(record_count, region.len()) {
                prop_assert_eq!(fast_walk(&region, count), explain_walk(&region, count).is_ok());
            }
        }

        /// Well-formed records with one byte changed or the region cut short: the fast
        /// walk and the explaining walk agree on every one (random bytes rarely get far).
        #[test]
        fn fast_and_explaining_walks_agree_on_damaged_records(
            specs in proptest::collection::vec(arb_spec(), 1..6),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<proptest::sample::Index>(),
            how in 0usize..3,
        ) {
            let batch = build_batch_compressed(&specs, Compression::None).expect("builds");
            let mut region = batch[HEADER_BYTES..].to_vec();
            match how {
                0 => {
                    let i = at.index(region.len());
                    region[i] = byte;
                }
                1 => region.truncate(cut.index(region.len() + 1)),
                _ => region.push(byte),
            }
            let count = specs.len();
            prop_assert_eq!(fast_walk(&region, count), explain_walk(&region, count).is_ok());
            if how == 0 && region == batch[HEADER_BYTES..] {
                prop_assert!(fast_walk(&region, count));
            }
        }
    }
}
