//! The node's identity file, `gregor.meta`: which node this data directory belongs to and,
//! once known, the cluster. Topics live in the replicated `__cluster_metadata` log, not
//! here. Replaced atomically on change.
//!
//! File format: `GRM2` magic, CRC32C (big-endian u32) of the JSON body, then the JSON body.
//! A `GRM1` file (an earlier Gregor that kept topics in this file) is refused with an error
//! that says so.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The identity file, relative to the data directory.
pub const META_FILE: &str = "gregor.meta";
const MAGIC: &[u8; 4] = b"GRM2";
const OLD_MAGIC: &[u8; 4] = b"GRM1";

/// Who this data directory belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub node_id: i32,
    /// The cluster, once the metadata log told us (a new node learns it from the quorum).
    pub cluster_id: Option<String>,
    /// The metadata quorum's voter ids this data directory was created with: Raft is only
    /// safe while every node agrees on them, so a different set is refused at startup.
    #[serde(default)]
    pub voters: Vec<i32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    #[error("the file is too short or has the wrong magic")]
    BadMagic,
    #[error("the file fails its checksum")]
    BadChecksum,
    #[error("the file does not parse: {0}")]
    Parse(String),
    #[error("the data directory was written by an earlier Gregor that kept topics in this file; start with an empty data directory")]
    OldFormat,
}

/// A small state file: 4 bytes of `magic`, CRC32C (big-endian) of `body`, then `body`.
pub(crate) fn seal(magic: &[u8; 4], body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + body.len());
    out.put_slice(magic);
    out.put_u32(crc32c::crc32c(body));
    out.put_slice(body);
    out.freeze()
}

/// The body of a file made by [`seal`], once its magic and checksum are right.
pub(crate) fn unseal<'a>(magic: &[u8; 4], bytes: &'a [u8]) -> Result<&'a [u8], MetaError> {
    if bytes.len() < 8 || &bytes[..4] != magic {
        return Err(MetaError::BadMagic);
    }
    let crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let body = &bytes[8..];
    if crc32c::crc32c(body) != crc {
        return Err(MetaError::BadChecksum);
    }
    Ok(body)
}

impl NodeMeta {
    pub fn encode(&self) -> Bytes {
        // Serializing an int and an optional string cannot fail.
        seal(MAGIC, &serde_json::to_vec(self).expect("node meta serializes"))
    }

    pub fn decode(bytes: &[u8]) -> Result<NodeMeta, MetaError> {
        if bytes.starts_with(OLD_MAGIC) {
            return Err(MetaError::OldFormat);
        }
        serde_json::from_slice(unseal(MAGIC, bytes)?).map_err(|e| MetaError::Parse(e.to_string()))
    }
}

/// The directory of one partition, as Kafka names it: `<topic>-<partition>`.
pub fn partition_dir(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Kafka's topic name rule: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters, the limit is 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name contains '{c}'; only ASCII alphanumerics, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let m = NodeMeta {
            node_id: 1,
            cluster_id: Some("abc".into()),
            voters: vec![1, 2, 3],
        };
        let bytes = m.encode();
        assert_eq!(NodeMeta::decode(&bytes), Ok(m));
        let mut bad = bytes.to_vec();
        let last = bad.len() - 2;
        bad[last] ^= 1;
        assert_eq!(NodeMeta::decode(&bad), Err(MetaError::BadChecksum));
        assert_eq!(NodeMeta::decode(b"xx"), Err(MetaError::BadMagic));
        assert_eq!(NodeMeta::decode(b"GRM1\0\0\0\0{}"), Err(MetaError::OldFormat));
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("a.b_c-1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
