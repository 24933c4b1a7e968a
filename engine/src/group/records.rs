//! The `__consumer_offsets` record codec, byte for byte Apache Kafka's, so tools that read
//! the topic understand what we write; and Kafka's group → partition function.
//!
//! A key or value is an int16 version followed by the schema of that version (Kafka's
//! `group-coordinator/src/main/resources/common/message/*.json`). Keys: versions 0 and 1 are
//! an offset commit (group, topic, partition), version 2 a group (group); Kafka 4 writes
//! other key versions (new consumer groups, share groups): [`decode_key`] reports them as
//! [`RecordKey::Other`] so a replay can skip them. Values: OffsetCommitValue 0–4 and
//! GroupMetadataValue 0–4; version 4 of each is flexible (compact strings and arrays, tagged
//! fields). A key with a null value is a tombstone. We write what Kafka 3.x+ writes by
//! default: key versions 1 and 2, OffsetCommitValue 3 (1 when an expire timestamp is set),
//! GroupMetadataValue 3.
//!
//! Invariants: decoding never panics and never allocates more than its input justifies;
//! every decode consumes its input exactly (trailing bytes are an error).

use bytes::{BufMut, Bytes, BytesMut};

/// Why bytes are not a record we understand.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("unsupported {what} version {version}")]
    Version { what: &'static str, version: i16 },
    #[error("null {what} where the schema does not allow it")]
    Null { what: &'static str },
    #[error("negative or oversized length for {what}")]
    Length { what: &'static str },
    #[error("{what} is not valid UTF-8")]
    Utf8 { what: &'static str },
    #[error("{count} bytes after the end of the {what}")]
    Trailing { what: &'static str, count: usize },
}

/// A decoded record key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    /// Key versions 0 and 1.
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// Key version 2.
    Group { group: String },
    /// Another coordinator record type (Kafka 4: key versions 3 and up); not ours to read.
    Other { version: i16 },
}

/// OffsetCommitValue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// -1 when unknown (and always in versions 0–2, which do not carry it).
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only version 1 carries it (offset commits v2–4 with an explicit retention time).
    pub expire_timestamp_ms: Option<i64>,
}

/// GroupMetadataValue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown (always in versions 0–1).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

/// One member in a GroupMetadataValue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    /// Versions 3 and up.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Versions 1 and up; version 0 records read it as the session timeout, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A whole decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetCommitValue>,
    },
    Group {
        group: String,
        value: Option<GroupMetadataValue>,
    },
    Other {
        version: i16,
    },
}

pub const OFFSET_KEY_VERSION: i16 = 1;
pub const GROUP_KEY_VERSION: i16 = 2;
pub const GROUP_VALUE_VERSION: i16 = 3;
const VALUE_VERSION_MAX: i16 = 4;

// ---------------------------------------------------------------------------------------
// Partitioning

/// Java's `String.hashCode`: over UTF-16 code units, `h = 31 * h + unit`, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The `__consumer_offsets` partition that owns `group_id`: Kafka's
/// `Utils.abs(groupId.hashCode()) % partitions`, where `Utils.abs(Integer.MIN_VALUE)` is 0.
pub fn partition_for(group_id: &str, partitions: u32) -> i32 {
    assert!(
        partitions > 0 && partitions <= i32::MAX as u32,
        "partitions out of range"
    );
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions as i32
}

// ---------------------------------------------------------------------------------------
// Encoding

/// The key of an offset commit (version 1, as Kafka writes).
pub fn encode_offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut w = Writer::new(OFFSET_KEY_VERSION, false);
    w.string(group);
    w.string(topic);
    w.i32(partition);
    w.finish()
}

/// The key of a group's metadata (version 2).
pub fn encode_group_key(group: &str) -> Bytes {
    let mut w = Writer::new(GROUP_KEY_VERSION, false);
    w.string(group);
    w.finish()
}

/// The value version Kafka writes for `value`: 1 if it carries an expire timestamp, else 3.
pub fn offset_value_version(value: &OffsetCommitValue) -> i16 {
    if value.expire_timestamp_ms.is_some() {
        1
    } else {
        3
    }
}

/// An offset commit value as Kafka writes it by default.
pub fn encode_offset_value(value: &OffsetCommitValue) -> Bytes {
    encode_offset_value_version(value, offset_value_version(value))
}

/// An offset commit value in `version` (0–4); fields the version lacks are left out.
pub fn encode_offset_value_version(value: &OffsetCommitValue, version: i16) -> Bytes {
    assert!(
        (0..=VALUE_VERSION_MAX).contains(&version),
        "offset value version {version}"
    );
    let mut w = Writer::new(version, version >= 4);
    w.i64(value.offset);
    if version >= 3 {
        w.i32(value.leader_epoch);
    }
    w.string(&value.metadata);
    w.i64(value.commit_timestamp_ms);
    if version == 1 {
        w.i64(value.expire_timestamp_ms.unwrap_or(-1));
    }
    w.tags();
    w.finish()
}

/// A group metadata value as Kafka writes it by default (version 3).
pub fn encode_group_value(value: &GroupMetadataValue) -> Bytes {
    encode_group_value_version(value, GROUP_VALUE_VERSION)
}

/// A group metadata value in `version` (0–4).
pub fn encode_group_value_version(value: &GroupMetadataValue, version: i16) -> Bytes {
    assert!(
        (0..=VALUE_VERSION_MAX).contains(&version),
        "group value version {version}"
    );
    let mut w = Writer::new(version, version >= 4);
    w.string(&value.protocol_type);
    w.i32(value.generation);
    w.nullable_string(value.protocol.as_deref());
    w.nullable_string(value.leader.as_deref());
    if version >= 2 {
        w.i64(value.current_state_timestamp_ms);
    }
    w.array_len(value.members.len());
    for m in &value.members {
        w.string(&m.member_id);
        if version >= 3 {
            w.nullable_string(m.group_instance_id.as_deref());
        }
        w.string(&m.client_id);
        w.string(&m.client_host);
        if version >= 1 {
            w.i32(m.rebalance_timeout_ms);
        }
        w.i32(m.session_timeout_ms);
        w.bytes(&m.subscription);
        w.bytes(&m.assignment);
        w.tags();
    }
    w.tags();
    w.finish()
}

/// Encodes int16-prefixed Kafka schemas; `flexible` selects compact forms and tag buffers.
struct Writer {
    buf: BytesMut,
    flexible: bool,
}

impl Writer {
    fn new(version: i16, flexible: bool) -> Writer {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i16(version);
        Writer { buf, flexible }
    }

    fn finish(self) -> Bytes {
        self.buf.freeze()
    }

    fn i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }

    fn i64(&mut self, v: i64) {
        self.buf.put_i64(v);
    }

    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    /// A length as the schema writes it: int16/int32, or compact (length + 1).
    fn len(&mut self, len: usize, wide: bool) {
        if self.flexible {
            let len = u32::try_from(len).expect("length fits the compact form");
            self.uvarint(len + 1);
        } else if wide {
            self.buf
                .put_i32(i32::try_from(len).expect("length fits an int32"));
        } else {
            self.buf
                .put_i16(i16::try_from(len).expect("string fits an int16 length"));
        }
    }

    fn string(&mut self, s: &str) {
        self.len(s.len(), false);
        self.buf.put_slice(s.as_bytes());
    }

    fn nullable_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None if self.flexible => self.uvarint(0),
            None => self.buf.put_i16(-1),
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len(), true);
        self.buf.put_slice(b);
    }

    fn array_len(&mut self, n: usize) {
        self.len(n, true);
    }

    /// An empty tag buffer, in flexible versions only.
    fn tags(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Decodes a record key.
pub fn decode_key(bytes: &[u8]) -> Result<RecordKey, RecordError> {
    let mut r = Reader::new(bytes, false);
    let version = r.i16("key version")?;
    let key = match version {
        0 | 1 => RecordKey::Offset {
            group: r.string("group")?,
            topic: r.string("topic")?,
            partition: r.i32("partition")?,
        },
        2 => RecordKey::Group {
            group: r.string("group")?,
        },
        v if v > 2 => return Ok(RecordKey::Other { version: v }),
        v => {
            return Err(RecordError::Version {
                what: "key",
                version: v,
            })
        }
    };
    r.end("key")?;
    Ok(key)
}

/// Decodes an OffsetCommitValue of any version 0–4.
pub fn decode_offset_value(bytes: &[u8]) -> Result<OffsetCommitValue, RecordError> {
    let mut r = Reader::new(bytes, false);
    let version = r.value_version("offset commit value")?;
    r.flexible = version >= 4;
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 { r.i32("leader epoch")? } else { -1 };
    let metadata = r.string("metadata")?;
    let commit_timestamp_ms = r.i64("commit timestamp")?;
    let expire_timestamp_ms = if version == 1 {
        Some(r.i64("expire timestamp")?).filter(|&t| t != -1)
    } else {
        None
    };
    r.tags()?;
    r.end("offset commit value")?;
    Ok(OffsetCommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
        expire_timestamp_ms,
    })
}

/// Decodes a GroupMetadataValue of any version 0–4.
pub fn decode_group_value(bytes: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let mut r = Reader::new(bytes, false);
    let version = r.value_version("group metadata value")?;
    r.flexible = version >= 4;
    let protocol_type = r.string("protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_string("protocol")?;
    let leader = r.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        r.i64("state timestamp")?
    } else {
        -1
    };
    // Every member takes at least one byte, so the count is bounded by what is left.
    let count = r.array_len("members")?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        members.push(decode_member(&mut r, version)?);
    }
    r.tags()?;
    r.end("group metadata value")?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

fn decode_member(r: &mut Reader<'_>, version: i16) -> Result<MemberMetadata, RecordError> {
    let member_id = r.string("member id")?;
    let group_instance_id = if version >= 3 {
        r.nullable_string("group instance id")?
    } else {
        None
    };
    let client_id = r.string("client id")?;
    let client_host = r.string("client host")?;
    let rebalance_timeout = if version >= 1 {
        Some(r.i32("rebalance timeout")?)
    } else {
        None
    };
    let session_timeout_ms = r.i32("session timeout")?;
    let subscription = r.bytes("subscription")?;
    let assignment = r.bytes("assignment")?;
    r.tags()?;
    Ok(MemberMetadata {
        member_id,
        group_instance_id,
        client_id,
        client_host,
        rebalance_timeout_ms: rebalance_timeout.unwrap_or(session_timeout_ms),
        session_timeout_ms,
        subscription,
        assignment,
    })
}

/// Decodes a whole record (key, and value or tombstone).
pub fn decode_record(key: &[u8], value: Option<&[u8]>) -> Result<Record, RecordError> {
    Ok(match decode_key(key)? {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => Record::Offset {
            group,
            topic,
            partition,
            value: value.map(decode_offset_value).transpose()?,
        },
        RecordKey::Group { group } => Record::Group {
            group,
            value: value.map(decode_group_value).transpose()?,
        },
        RecordKey::Other { version } => Record::Other { version },
    })
}

/// Reads int16-prefixed Kafka schemas from a slice; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    flexible: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], flexible: bool) -> Reader<'a> {
        Reader { buf, flexible }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn value_version(&mut self, what: &'static str) -> Result<i16, RecordError> {
        let version = self.i16(what)?;
        if !(0..=VALUE_VERSION_MAX).contains(&version) {
            return Err(RecordError::Version { what, version });
        }
        Ok(version)
    }

    /// An unsigned varint of at most 5 bytes (a u32).
    fn uvarint(&mut self, what: &'static str) -> Result<u32, RecordError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.take(1, what)?[0];
            if i == 4 && b > 0x0f {
                return Err(RecordError::Length { what });
            }
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Length { what })
    }

    /// A length, `None` for null; in flexible versions the compact form (length + 1).
    fn len(&mut self, wide: bool, what: &'static str) -> Result<Option<usize>, RecordError> {
        let len: i64 = if self.flexible {
            i64::from(self.uvarint(what)?) - 1
        } else if wide {
            i64::from(self.i32(what)?)
        } else {
            i64::from(self.i16(what)?)
        };
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::Length { what }),
            n if n as u64 > self.buf.len() as u64 => Err(RecordError::Truncated { what }),
            n => Ok(Some(n as usize)),
        }
    }

    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, RecordError> {
        let Some(len) = self.len(false, what)? else {
            return Ok(None);
        };
        let raw = self.take(len, what)?;
        let s = std::str::from_utf8(raw).map_err(|_| RecordError::Utf8 { what })?;
        Ok(Some(s.to_string()))
    }

    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        self.nullable_string(what)?.ok_or(RecordError::Null { what })
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, RecordError> {
        let len = self.len(true, what)?.ok_or(RecordError::Null { what })?;
        Ok(Bytes::copy_from_slice(self.take(len, what)?))
    }

    fn array_len(&mut self, what: &'static str) -> Result<usize, RecordError> {
        self.len(true, what)?.ok_or(RecordError::Null { what })
    }

    /// Skips a tag buffer (flexible versions only): we know no tagged fields of these schemas.
    fn tags(&mut self) -> Result<(), RecordError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint("tagged fields")?;
        if count as usize > self.buf.len() {
            return Err(RecordError::Truncated {
                what: "tagged fields",
            });
        }
        for _ in 0..count {
            let _tag = self.uvarint("tag")?;
            let size = self.uvarint("tag size")? as usize;
            self.take(size, "tagged field")?;
        }
        Ok(())
    }

    fn end(&self, what: &'static str) -> Result<(), RecordError> {
        match self.buf.len() {
            0 => Ok(()),
            count => Err(RecordError::Trailing { what, count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_value(expire: Option<i64>) -> OffsetCommitValue {
        OffsetCommitValue {
            offset: 0x0102,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_timestamp_ms: 0x0a0b,
            expire_timestamp_ms: expire,
        }
    }

    fn member() -> MemberMetadata {
        MemberMetadata {
            member_id: "m".into(),
            group_instance_id: Some("i".into()),
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 0x0100,
            session_timeout_ms: 0x0200,
            subscription: Bytes::from_static(&[0xaa]),
            assignment: Bytes::from_static(&[0xbb, 0xcc]),
        }
    }

    fn group_value() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m".into()),
            current_state_timestamp_ms: 0x0c,
            members: vec![member()],
        }
    }

    // Byte vectors written out by hand from the JSON schemas: int16 lengths for strings,
    // int32 for bytes and arrays, big-endian numbers, the int16 version first.

    #[test]
    fn offset_key_bytes() {
        let key = encode_offset_key("g", "t", 5);
        assert_eq!(
            &key[..],
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 5],
            "version 1, group, topic, partition"
        );
        let decoded = decode_key(&key).unwrap();
        assert_eq!(
            decoded,
            RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 5
            }
        );
        // Version 0 (Kafka before 2.x, and "LegacyOffsetCommitKey") has the same layout.
        let v0 = [0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 5];
        assert_eq!(decode_key(&v0).unwrap(), decoded);
    }

    #[test]
    fn group_key_bytes() {
        let key = encode_group_key("grp");
        assert_eq!(&key[..], &[0, 2, 0, 3, b'g', b'r', b'p']);
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::Group { group: "grp".into() }
        );
        assert_eq!(
            decode_key(&[0, 3, 1, 2, 3]).unwrap(),
            RecordKey::Other { version: 3 }
        );
    }

    #[test]
    fn offset_value_v3_bytes() {
        let v = encode_offset_value(&offset_value(None));
        #[rustfmt::skip]
        let expected = [
            0, 3,                           // version
            0, 0, 0, 0, 0, 0, 0x01, 0x02,   // offset
            0, 0, 0, 7,                     // leader epoch
            0, 1, b'm',                     // metadata
            0, 0, 0, 0, 0, 0, 0x0a, 0x0b,   // commit timestamp
        ];
        assert_eq!(&v[..], &expected);
        assert_eq!(decode_offset_value(&v).unwrap(), offset_value(None));
    }

    #[test]
    fn offset_value_v1_bytes_when_expiring() {
        let v = encode_offset_value(&offset_value(Some(0x0d)));
        #[rustfmt::skip]
        let expected = [
            0, 1,                           // version
            0, 0, 0, 0, 0, 0, 0x01, 0x02,   // offset
            0, 1, b'm',                     // metadata
            0, 0, 0, 0, 0, 0, 0x0a, 0x0b,   // commit timestamp
            0, 0, 0, 0, 0, 0, 0, 0x0d,      // expire timestamp
        ];
        assert_eq!(&v[..], &expected);
        let back = decode_offset_value(&v).unwrap();
        assert_eq!(back.expire_timestamp_ms, Some(0x0d));
        assert_eq!(back.leader_epoch, -1, "version 1 has no leader epoch");
    }

    #[test]
    fn offset_value_v0_v2_v4_bytes() {
        // v0 and v2: offset, metadata, commit timestamp.
        for version in [0, 2] {
            let v = encode_offset_value_version(&offset_value(None), version);
            let mut expected = vec![0, version as u8, 0, 0, 0, 0, 0, 0, 1, 2, 0, 1, b'm'];
            expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
            assert_eq!(&v[..], &expected[..]);
        }
        // v4 (flexible): compact string (length + 1 as a varint) and an empty tag buffer.
        let v = encode_offset_value_version(&offset_value(None), 4);
        #[rustfmt::skip]
        let expected = [
            0, 4,
            0, 0, 0, 0, 0, 0, 0x01, 0x02,
            0, 0, 0, 7,
            2, b'm',
            0, 0, 0, 0, 0, 0, 0x0a, 0x0b,
            0,                              // no tagged fields
        ];
        assert_eq!(&v[..], &expected);
        assert_eq!(decode_offset_value(&v).unwrap(), offset_value(None));
    }

    #[test]
    fn offset_value_v4_skips_unknown_tags() {
        #[rustfmt::skip]
        let bytes = [
            0, 4,
            0, 0, 0, 0, 0, 0, 0, 9,
            0xff, 0xff, 0xff, 0xff,
            1,                              // empty compact string
            0, 0, 0, 0, 0, 0, 0, 1,
            1, 5, 2, 0xde, 0xad,            // one tagged field: tag 5, two bytes
        ];
        let v = decode_offset_value(&bytes).unwrap();
        assert_eq!((v.offset, v.leader_epoch, v.metadata.as_str()), (9, -1, ""));
    }

    #[test]
    fn group_value_v3_bytes() {
        let v = encode_group_value(&group_value());
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0, 3][..],
            &[0, 8], b"consumer",           // protocol type
            &[0, 0, 0, 3],                  // generation
            &[0, 5], b"range",              // protocol
            &[0, 1], b"m",                  // leader
            &[0, 0, 0, 0, 0, 0, 0, 0x0c],   // current state timestamp
            &[0, 0, 0, 1],                  // one member
            &[0, 1], b"m",                  //   member id
            &[0, 1], b"i",                  //   group instance id
            &[0, 1], b"c",                  //   client id
            &[0, 1], b"h",                  //   client host
            &[0, 0, 1, 0],                  //   rebalance timeout
            &[0, 0, 2, 0],                  //   session timeout
            &[0, 0, 0, 1, 0xaa],            //   subscription
            &[0, 0, 0, 2, 0xbb, 0xcc],      //   assignment
        ].concat();
        assert_eq!(&v[..], &expected[..]);
        assert_eq!(decode_group_value(&v).unwrap(), group_value());
    }

    #[test]
    fn group_value_v0_reads_rebalance_timeout_as_session_timeout() {
        #[rustfmt::skip]
        let bytes: Vec<u8> = [
            &[0, 0][..],
            &[0, 8], b"consumer",
            &[0, 0, 0, 1],
            &[0xff, 0xff],                  // null protocol
            &[0xff, 0xff],                  // null leader
            &[0, 0, 0, 1],
            &[0, 1], b"m",
            &[0, 1], b"c",
            &[0, 1], b"h",
            &[0, 0, 0x27, 0x10],            // session timeout 10000
            &[0, 0, 0, 0],
            &[0, 0, 0, 0],
        ].concat();
        let v = decode_group_value(&bytes).unwrap();
        assert_eq!(v.protocol, None);
        assert_eq!(v.current_state_timestamp_ms, -1);
        assert_eq!(v.members[0].rebalance_timeout_ms, 10_000);
        assert_eq!(v.members[0].group_instance_id, None);
        assert_eq!(encode_group_value_version(&v, 0), Bytes::from(bytes));
    }

    #[test]
    fn group_value_v4_bytes() {
        let mut g = group_value();
        g.members[0].group_instance_id = None;
        let v = encode_group_value_version(&g, 4);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0, 4][..],
            &[9], b"consumer",
            &[0, 0, 0, 3],
            &[6], b"range",
            &[2], b"m",
            &[0, 0, 0, 0, 0, 0, 0, 0x0c],
            &[2],                           // compact array of one
            &[2], b"m",
            &[0],                           // null instance id
            &[2], b"c",
            &[2], b"h",
            &[0, 0, 1, 0],
            &[0, 0, 2, 0],
            &[2, 0xaa],
            &[3, 0xbb, 0xcc],
            &[0],                           // member's tags
            &[0],                           // value's tags
        ].concat();
        assert_eq!(&v[..], &expected[..]);
        assert_eq!(decode_group_value(&v).unwrap(), g);
    }

    #[test]
    fn every_version_round_trips() {
        for version in 0..=4 {
            let mut o = offset_value(if version == 1 { Some(99) } else { None });
            if version < 3 {
                o.leader_epoch = -1;
            }
            let bytes = encode_offset_value_version(&o, version);
            assert_eq!(decode_offset_value(&bytes).unwrap(), o, "offset v{version}");

            let mut g = group_value();
            if version < 3 {
                g.members[0].group_instance_id = None;
            }
            if version < 2 {
                g.current_state_timestamp_ms = -1;
            }
            if version < 1 {
                g.members[0].rebalance_timeout_ms = g.members[0].session_timeout_ms;
            }
            let bytes = encode_group_value_version(&g, version);
            assert_eq!(decode_group_value(&bytes).unwrap(), g, "group v{version}");
        }
    }

    #[test]
    fn tombstones_decode_as_none() {
        let key = encode_offset_key("g", "t", 0);
        match decode_record(&key, None).unwrap() {
            Record::Offset { value, .. } => assert!(value.is_none()),
            other => panic!("{other:?}"),
        }
        let key = encode_group_key("g");
        assert_eq!(
            decode_record(&key, None).unwrap(),
            Record::Group {
                group: "g".into(),
                value: None
            }
        );
    }

    #[test]
    fn refuses_truncated_and_garbage_input() {
        let key = encode_offset_key("group", "topic", 1);
        let offset = encode_offset_value(&offset_value(None));
        let expiring = encode_offset_value(&offset_value(Some(1)));
        let group = encode_group_value(&group_value());
        let flexible = encode_group_value_version(&group_value(), 4);
        // Every strict prefix is refused, never a panic.
        for n in 0..key.len() {
            assert!(decode_key(&key[..n]).is_err(), "key prefix {n}");
        }
        for bytes in [&offset, &expiring] {
            for n in 0..bytes.len() {
                assert!(decode_offset_value(&bytes[..n]).is_err(), "offset prefix {n}");
            }
        }
        for bytes in [&group, &flexible] {
            for n in 0..bytes.len() {
                assert!(decode_group_value(&bytes[..n]).is_err(), "group prefix {n}");
            }
        }
        // Trailing bytes, unknown versions, nulls and huge lengths.
        let mut long = offset.to_vec();
        long.push(0);
        assert!(matches!(
            decode_offset_value(&long),
            Err(RecordError::Trailing { .. })
        ));
        assert!(matches!(
            decode_offset_value(&[0, 5]),
            Err(RecordError::Version { .. })
        ));
        assert!(matches!(
            decode_group_value(&[0xff, 0xff]),
            Err(RecordError::Version { .. })
        ));
        assert!(matches!(
            decode_key(&[0xff, 0xff]),
            Err(RecordError::Version { .. })
        ));
        assert!(matches!(
            decode_key(&[0, 2, 0xff, 0xff]),
            Err(RecordError::Null { .. })
        ));
        assert!(matches!(
            decode_key(&[0, 2, 0x7f, 0xff, b'a']),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            decode_key(&[0, 2, 0, 1, 0xff]),
            Err(RecordError::Utf8 { .. })
        ));
        // A member count of 2^31 - 1 with nothing behind it must not allocate.
        let mut huge = vec![0, 3, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_group_value(&huge),
            Err(RecordError::Truncated { .. })
        ));
        // An over-long varint.
        let bad_varint = [
            0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
        ];
        assert!(matches!(
            decode_offset_value(&bad_varint),
            Err(RecordError::Length { .. })
        ));
    }

    #[test]
    fn java_hash_codes() {
        // Known values of Java's String.hashCode, by hand: "" = 0; "a" = 97;
        // "ab" = 97 * 31 + 98 = 3105; "hello" = 99162322.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 3105);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // A non-ASCII BMP character is one UTF-16 unit: "é" = U+00E9 = 233.
        assert_eq!(java_string_hash("é"), 233);
        // U+1F600 is the surrogate pair D83D DE00: 0xD83D * 31 + 0xDE00 = 1772899.
        assert_eq!(java_string_hash("\u{1F600}"), 1_772_899);
        // The classic puzzler: this string's hashCode is Integer.MIN_VALUE.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Overflow wraps: "hello world" hashes to 1794106052 in Java.
        assert_eq!(java_string_hash("hello world"), 1_794_106_052);
    }

    #[test]
    fn partitions_as_kafka_computes_them() {
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(partition_for("ab", 50), 3105 % 50);
        // Utils.abs(Integer.MIN_VALUE) is 0, not Math.abs's MIN_VALUE.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // A negative hash: Java's "my-group".hashCode() is -1906497762 (wrapped), so the
        // partition is 1906497762 % 50 = 12.
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("consumer-group", 50), 38);
        assert!((0..7).contains(&partition_for("any group", 7)));
    }
}
