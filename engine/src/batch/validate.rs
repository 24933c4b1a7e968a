//! What a leader checks on the records of one partition of a Produce request, in the order
//! Kafka's `ProduceRequest.validateRecords`, `UnifiedLog.analyzeAndValidateRecords` and
//! `LogValidator` check them. Compressed records are not decompressed.

use super::records::walk_uncompressed;
use super::view::BatchView;
use super::{array_at, at, BatchError, Compression, BATCH_LENGTH_MIN, LOG_OVERHEAD, MAGIC_V2};

/// The facts about an accepted produced batch that the append path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub record_count: i32,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    /// `LOG_OVERHEAD + batchLength`, the bytes the batch takes in the log.
    pub size_bytes: usize,
    pub compression: Compression,
}

/// Checks that `records` (one partition's records of a Produce request) is exactly one valid
/// magic-2 batch of at most `max_message_bytes` (log overhead included) that a client may
/// write. See [`BatchError::error_code`] for the Kafka error each refusal maps to.
pub fn validate_produce(records: &[u8], max_message_bytes: i32) -> Result<BatchInfo, BatchError> {
    let batch = frame_one_batch(records)?;
    if batch.base_offset() != 0 {
        return Err(BatchError::InvalidRecord(format!(
            "the base offset of a produced batch must be 0, not {}",
            batch.base_offset()
        )));
    }
    let size_bytes = batch.size_bytes();
    if i64::try_from(size_bytes).map_or(true, |size| size > i64::from(max_message_bytes)) {
        return Err(BatchError::TooLarge {
            size_bytes,
            max_bytes: max_message_bytes,
        });
    }
    let (crc_stored, crc_computed) = (batch.crc(), batch.compute_crc());
    if crc_stored != crc_computed {
        return Err(BatchError::Corrupt(format!(
            "CRC mismatch: stored {crc_stored:#010x}, computed {crc_computed:#010x}"
        )));
    }
    if batch.is_control() {
        return Err(BatchError::InvalidRecord(
            "clients may not write control batches".to_string(),
        ));
    }
    check_count(&batch)?;
    let compression = batch.compression()?;
    if compression == Compression::None {
        walk_uncompressed(batch.records_bytes(), batch.record_count())?;
    }
    let info = BatchInfo {
        record_count: batch.record_count(),
        last_offset_delta: batch.last_offset_delta(),
        max_timestamp: batch.max_timestamp(),
        size_bytes,
        compression,
    };
    assert!(info.record_count >= 1 && info.size_bytes == records.len());
    Ok(info)
}

/// The one magic-2 batch `records` must consist of, framing checked (CRC not yet).
fn frame_one_batch(records: &[u8]) -> Result<BatchView<'_>, BatchError> {
    let Some(&magic) = records.get(at::MAGIC) else {
        return Err(BatchError::Corrupt(format!(
            "{} bytes cannot hold a record batch",
            records.len()
        )));
    };
    match magic as i8 {
        MAGIC_V2 => {}
        magic @ (0 | 1) => return Err(BatchError::UnsupportedMagic(magic)),
        magic => return Err(BatchError::Corrupt(format!("unknown record batch magic {magic}"))),
    }
    let batch_length = i32::from_be_bytes(array_at(records, at::BATCH_LENGTH));
    if batch_length < BATCH_LENGTH_MIN {
        return Err(BatchError::Corrupt(format!(
            "batch length {batch_length} is smaller than a batch header ({BATCH_LENGTH_MIN})"
        )));
    }
    // batch_length >= BATCH_LENGTH_MIN > 0, and LOG_OVERHEAD + i32::MAX fits in usize.
    let size_bytes = LOG_OVERHEAD + batch_length as usize;
    if size_bytes > records.len() {
        return Err(BatchError::Corrupt(format!(
            "batch of {size_bytes} bytes but only {} bytes of records",
            records.len()
        )));
    }
    if size_bytes < records.len() {
        return Err(BatchError::InvalidRecord(format!(
            "a produce request must hold exactly one record batch per partition: \
             the batch is {size_bytes} bytes of {}",
            records.len()
        )));
    }
    BatchView::parse_unchecked_crc(records)
        .map_err(|error| BatchError::Corrupt(format!("framing checked yet refused: {error}")))
}

/// Kafka's `LogValidator.validateBatch` count checks.
fn check_count(batch: &BatchView) -> Result<(), BatchError> {
    let (count, last_offset_delta) = (batch.record_count(), batch.last_offset_delta());
    if last_offset_delta < 0 {
        return Err(BatchError::InvalidRecord(format!(
            "last offset delta {last_offset_delta} is negative"
        )));
    }
    if count < 1 {
        return Err(BatchError::InvalidRecord(format!(
            "record count {count} is not positive"
        )));
    }
    if i64::from(count) != i64::from(last_offset_delta) + 1 {
        return Err(BatchError::InvalidRecord(format!(
            "record count {count} does not match last offset delta {last_offset_delta}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{
        attr, build_batch, build_batch_compressed, set_base_offset, RecordSpec, HEADER_BYTES,
    };
    use bytes::Bytes;
    use proptest::prelude::*;

    const MAX: i32 = 1 << 20;

    fn specs(count: usize) -> Vec<RecordSpec> {
        (0..count)
            .map(|i| RecordSpec {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value {i}"))),
                headers: vec![("trace".to_string(), Some(Bytes::from_static(b"t")))],
                timestamp_ms: 1_700_000_000_000 + i as i64,
            })
            .collect()
    }

    fn valid(count: usize) -> Vec<u8> {
        build_batch(&specs(count)).to_vec()
    }

    /// Rewrites the attributes (and the CRC, so only the attribute check can fire).
    fn with_attributes(mut batch: Vec<u8>, attributes: i16) -> Vec<u8> {
        batch[at::ATTRIBUTES..at::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        recrc(batch)
    }

    fn recrc(mut batch: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&batch[at::ATTRIBUTES..]);
        batch[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    fn put_i32(mut batch: Vec<u8>, offset: usize, value: i32) -> Vec<u8> {
        batch[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
        batch
    }

    fn code(result: Result<BatchInfo, BatchError>) -> i16 {
        result.expect_err("must be refused").error_code()
    }

    #[test]
    fn accepts_a_valid_batch() {
        let batch = valid(3);
        let info = validate_produce(&batch, MAX).expect("valid");
        assert_eq!(
            info,
            BatchInfo {
                record_count: 3,
                last_offset_delta: 2,
                max_timestamp: 1_700_000_000_002,
                size_bytes: batch.len(),
                compression: Compression::None,
            }
        );
    }

    #[test]
    fn accepts_compressed_batches_without_decompressing() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = build_batch_compressed(&specs(4), compression).expect("compresses");
            let info = validate_produce(&batch, MAX).expect("valid");
            assert_eq!((info.record_count, info.compression), (4, compression));
        }
        // Garbage in the compressed region passes: Kafka only finds it when decompressing.
        let batch = with_attributes(valid(1), Compression::Gzip.codec_id());
        assert!(validate_produce(&batch, MAX).is_ok());
    }

    #[test]
    fn too_short_to_hold_a_magic_is_corrupt() {
        assert_eq!(code(validate_produce(&[], MAX)), 2);
        assert_eq!(code(validate_produce(&valid(1)[..at::MAGIC], MAX)), 2);
    }

    #[test]
    fn magic_0_and_1_are_unsupported() {
        for magic in [0u8, 1] {
            let mut batch = valid(1);
            batch[at::MAGIC] = magic;
            assert_eq!(
                validate_produce(&batch, MAX),
                Err(BatchError::UnsupportedMagic(magic as i8))
            );
            assert_eq!(code(validate_produce(&batch[..at::MAGIC + 1], MAX)), 43);
        }
    }

    #[test]
    fn unknown_magic_is_corrupt() {
        for magic in [3u8, 0x80, 0xff] {
            let mut batch = valid(1);
            batch[at::MAGIC] = magic;
            assert_eq!(code(validate_produce(&batch, MAX)), 2);
        }
    }

    #[test]
    fn impossible_batch_length_is_corrupt() {
        for length in [i32::MIN, -1, 0, BATCH_LENGTH_MIN - 1] {
            assert_eq!(
                code(validate_produce(
                    &put_i32(valid(1), at::BATCH_LENGTH, length),
                    MAX
                )),
                2
            );
        }
    }

    #[test]
    fn bytes_shorter_than_the_batch_are_corrupt() {
        let batch = valid(2);
        for cut in at::MAGIC + 1..batch.len() {
            assert_eq!(code(validate_produce(&batch[..cut], MAX)), 2, "cut at {cut}");
        }
    }

    #[test]
    fn more_than_one_batch_is_invalid() {
        let mut two = valid(1);
        two.extend_from_slice(&valid(1));
        let error = validate_produce(&two, MAX).expect_err("two batches");
        assert_eq!(error.error_code(), 87);
        assert!(error.to_string().contains("exactly one record batch"));
        let mut trailing = valid(1);
        trailing.push(0);
        assert_eq!(code(validate_produce(&trailing, MAX)), 87);
    }

    #[test]
    fn a_nonzero_base_offset_is_invalid() {
        let mut batch = valid(1);
        set_base_offset(&mut batch, 5);
        assert_eq!(code(validate_produce(&batch, MAX)), 87);
    }

    #[test]
    fn larger_than_max_message_bytes_is_too_large() {
        let batch = valid(2);
        let size = batch.len() as i32;
        assert!(validate_produce(&batch, size).is_ok(), "the limit is inclusive");
        assert_eq!(
            validate_produce(&batch, size - 1),
            Err(BatchError::TooLarge {
                size_bytes: batch.len(),
                max_bytes: size - 1
            })
        );
        assert_eq!(code(validate_produce(&batch, -1)), 10);
    }

    #[test]
    fn crc_mismatch_is_corrupt() {
        let mut batch = valid(2);
        batch[HEADER_BYTES + 3] ^= 0x40;
        assert_eq!(code(validate_produce(&batch, MAX)), 2);
        let mut batch = valid(2);
        batch[at::CRC] ^= 0x01;
        assert_eq!(code(validate_produce(&batch, MAX)), 2);
    }

    #[test]
    fn control_batches_from_clients_are_invalid() {
        let batch = with_attributes(valid(1), attr::CONTROL);
        assert_eq!(code(validate_produce(&batch, MAX)), 87);
    }

    #[test]
    fn record_count_below_one_is_invalid() {
        let batch = recrc(put_i32(
            put_i32(valid(1), at::RECORD_COUNT, 0),
            at::LAST_OFFSET_DELTA,
            -1,
        ));
        assert_eq!(code(validate_produce(&batch, MAX)), 87);
        let batch = recrc(put_i32(valid(1), at::RECORD_COUNT, -3));
        assert_eq!(code(validate_produce(&batch, MAX)), 87);
    }

    #[test]
    fn record_count_not_matching_last_offset_delta_is_invalid() {
        let batch = recrc(put_i32(valid(3), at::LAST_OFFSET_DELTA, 3));
        assert_eq!(code(validate_produce(&batch, MAX)), 87);
        let batch = recrc(put_i32(valid(3), at::LAST_OFFSET_DELTA, i32::MAX));
        assert_eq!(code(validate_produce(&batch, MAX)), 87);
    }

    #[test]
    fn unknown_compression_codec_is_unsupported() {
        for codec in 5..8 {
            let batch = with_attributes(valid(1), codec);
            assert_eq!(
                validate_produce(&batch, MAX),
                Err(BatchError::UnsupportedCompression(codec))
            );
        }
    }

    #[test]
    fn declared_count_larger_than_the_records_is_invalid() {
        let batch = recrc(put_i32(
            put_i32(valid(2), at::RECORD_COUNT, 3),
            at::LAST_OFFSET_DELTA,
            2,
        ));
        assert_eq!(code(validate_produce(&batch, MAX)), 87);
    }

    #[test]
    fn declared_count_smaller_than_the_records_is_invalid() {
        let batch = recrc(put_i32(
            put_i32(valid(3), at::RECORD_COUNT, 2),
            at::LAST_OFFSET_DELTA,
            1,
        ));
        let error = validate_produce(&batch, MAX).expect_err("a record too many");
        assert_eq!(error.error_code(), 87);
        assert!(error.to_string().contains("remain after"));
    }

    #[test]
    fn an_offset_delta_out_of_order_is_invalid() {
        // Record 0 of a one-record batch: [length][attributes][timestampDelta][offsetDelta]...
        let mut batch = valid(1);
        let offset_delta_at = HEADER_BYTES + 3;
        assert_eq!(batch[offset_delta_at], 0, "zigzag(0)");
        batch[offset_delta_at] = 2; // zigzag(1)
        let error = validate_produce(&recrc(batch), MAX).expect_err("offset delta 1 at index 0");
        assert_eq!(error.error_code(), 87);
        assert!(error.to_string().contains("offset delta"));
    }

    #[test]
    fn a_record_length_past_the_batch_is_invalid() {
        let mut batch = valid(1);
        batch[HEADER_BYTES] = 0x7e; // zigzag(63): more than the record's bytes
        assert_eq!(code(validate_produce(&recrc(batch), MAX)), 87);
        let mut batch = valid(1);
        batch[HEADER_BYTES] = 0x01; // zigzag(-1)
        assert_eq!(code(validate_produce(&recrc(batch), MAX)), 87);
    }

    #[test]
    fn a_record_whose_fields_do_not_fill_its_length_is_invalid() {
        // One record, then one stray byte inside the record: grow the record's length by one.
        let mut batch = valid(1);
        let length = batch[HEADER_BYTES];
        batch[HEADER_BYTES] = length + 2; // zigzag(n + 1)
        batch.push(0);
        let batch_length = (batch.len() - LOG_OVERHEAD) as i32;
        let batch = put_i32(batch, at::BATCH_LENGTH, batch_length);
        let error = validate_produce(&recrc(batch), MAX).expect_err("a stray byte");
        assert_eq!(error.error_code(), 87);
        assert!(error.to_string().contains("after its last field"));
    }

    #[test]
    fn a_negative_header_count_is_invalid() {
        let spec = RecordSpec {
            key: None,
            value: None,
            headers: vec![],
            timestamp_ms: 0,
        };
        let mut batch = build_batch(&[spec]).to_vec();
        // [length 6][attributes][timestampDelta][offsetDelta][key -1][value -1][headerCount]
        let header_count_at = HEADER_BYTES + 6;
        assert_eq!(batch.len(), header_count_at + 1);
        batch[header_count_at] = 0x01; // zigzag(-1)
        assert_eq!(code(validate_produce(&recrc(batch), MAX)), 87);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in any::<i32>()) {
            let _ = validate_produce(&bytes, max);
        }

        /// Random damage after the CRC is recomputed, so the record walk sees it.
        #[test]
        fn damaged_records_never_panic(
            count in 1usize..5,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut batch = valid(count);
            let records = batch.len() - HEADER_BYTES;
            for (index, mask) in flips {
                batch[HEADER_BYTES + index.index(records)] ^= mask;
            }
            let batch = recrc(batch);
            if let Ok(info) = validate_produce(&batch, MAX) {
                prop_assert_eq!(info.record_count as usize, count);
            }
            let view = BatchView::parse(&batch).expect("framing untouched, CRC recomputed");
            let _ = crate::batch::decode_records(&view);
        }

        #[test]
        fn built_batches_are_valid(count in 1usize..20) {
            let batch = valid(count);
            let info = validate_produce(&batch, MAX).expect("valid");
            prop_assert_eq!(info.record_count as usize, count);
            prop_assert_eq!(info.size_bytes, batch.len());
        }
    }
}
