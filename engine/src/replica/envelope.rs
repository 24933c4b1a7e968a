//! One peer message: everything a node sends another in one step, so that the Raft traffic
//! of every group (heartbeats included) costs one message per node pair.
//!
//! Format (big-endian): version `u8` (1), then items until the end, each a tag `u8`:
//! - `1` Raft: topic id `u128`, partition `i32`, then one Raft message (`raft::encode`);
//! - `2` Control: length `u32`, then a JSON [`Control`] (rare, small messages).
//!
//! Decoding never panics and never trusts a length beyond the bytes present.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::raft::{self, RaftMsg};

const VERSION: u8 = 1;
const TAG_RAFT: u8 = 1;
const TAG_CONTROL: u8 = 2;

/// A Raft group: a partition by topic id, or the metadata log ([`GroupId::METADATA`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId {
    pub topic_id: u128,
    pub partition: i32,
}

impl GroupId {
    /// `__cluster_metadata` (topic id 0 is never drawn for a topic).
    pub const METADATA: GroupId = GroupId {
        topic_id: 0,
        partition: 0,
    };
}

/// Broker-to-controller messages (retried until the image shows their effect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Where clients reach the sender.
    Register {
        host: String,
        port: i32,
        rack: Option<String>,
    },
    /// The sender leads this partition in `epoch` (topic id as 32 hex digits).
    Leading {
        topic_id: String,
        partition: i32,
        epoch: i32,
    },
    /// A client's Metadata asked the sender for an unknown topic and auto-creation is on:
    /// the controller creates it with the defaults (nothing if it exists by then).
    AutoCreate { topic: String },
    /// The sender needs a block of producer ids, from a metadata record at or after
    /// `after` (one past what its image had applied and its log held when it asked: a
    /// block it may have used before a restart is never taken again).
    AllocateProducerIds { after: u64 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    pub raft: Vec<(GroupId, RaftMsg)>,
    pub control: Vec<Control>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("peer message is empty")]
    Empty,
    #[error("peer message version {0} is not supported")]
    Version(u8),
    #[error("peer message truncated")]
    Truncated,
    #[error("unknown peer item tag {0}")]
    Tag(u8),
    #[error("raft message: {0}")]
    Raft(#[from] raft::CodecError),
    #[error("control message: {0}")]
    Control(String),
}

impl Envelope {
    pub fn is_empty(&self) -> bool {
        self.raft.is_empty() && self.control.is_empty()
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(VERSION);
        for (g, msg) in &self.raft {
            out.put_u8(TAG_RAFT);
            out.put_u128(g.topic_id);
            out.put_i32(g.partition);
            raft::encode(msg, &mut out);
        }
        for c in &self.control {
            // A small enum of strings and integers always serializes.
            let json = serde_json::to_vec(c).expect("control messages serialize");
            out.put_u8(TAG_CONTROL);
            out.put_u32(json.len() as u32);
            out.put_slice(&json);
        }
        out.freeze()
    }

    pub fn decode(mut buf: Bytes) -> Result<Envelope, EnvelopeError> {
        if buf.is_empty() {
            return Err(EnvelopeError::Empty);
        }
        let version = buf.get_u8();
        if version != VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let mut env = Envelope::default();
        while buf.has_remaining() {
            match buf.get_u8() {
                TAG_RAFT => {
                    if buf.remaining() < 20 {
                        return Err(EnvelopeError::Truncated);
                    }
                    let group = GroupId {
                        topic_id: buf.get_u128(),
                        partition: buf.get_i32(),
                    };
                    let msg = raft::decode(&mut buf)?;
                    env.raft.push((group, msg));
                }
                TAG_CONTROL => {
                    if buf.remaining() < 4 {
                        return Err(EnvelopeError::Truncated);
                    }
                    let len = buf.get_u32() as usize;
                    if buf.remaining() < len {
                        return Err(EnvelopeError::Truncated);
                    }
                    let json = buf.split_to(len);
                    let c =
                        serde_json::from_slice(&json).map_err(|e| EnvelopeError::Control(e.to_string()))?;
                    env.control.push(c);
                }
                tag => return Err(EnvelopeError::Tag(tag)),
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{AppendResult, Entry};
    use proptest::prelude::*;

    fn sample() -> Envelope {
        let g = GroupId {
            topic_id: u128::MAX - 1,
            partition: 3,
        };
        Envelope {
            raft: vec![
                (
                    GroupId::METADATA,
                    RaftMsg::Heartbeat {
                        term: 4,
                        commit_end: 99,
                    },
                ),
                (
                    g,
                    RaftMsg::Append {
                        term: 4,
                        prev_end: 10,
                        prev_epoch: 3,
                        commit_end: 8,
                        entries: vec![Entry {
                            base: 10,
                            last: 12,
                            epoch: 4,
                            bytes: Bytes::from_static(b"batch"),
                        }],
                    },
                ),
                (
                    g,
                    RaftMsg::AppendResp {
                        term: 4,
                        result: AppendResult::Ok {
                            durable_end: 13,
                            match_end: 13,
                        },
                    },
                ),
            ],
            control: vec![
                Control::Register {
                    host: "h".into(),
                    port: 9092,
                    rack: None,
                },
                Control::Leading {
                    topic_id: "00ff".into(),
                    partition: 3,
                    epoch: 4,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let env = sample();
        assert_eq!(Envelope::decode(env.encode()), Ok(env));
        assert_eq!(
            Envelope::decode(Envelope::default().encode()),
            Ok(Envelope::default())
        );
    }

    #[test]
    fn damage_is_an_error() {
        let env = sample();
        let bytes = env.encode();
        for cut in 0..bytes.len() {
            // A cut between items reads as fewer items; a cut inside one is an error.
            match Envelope::decode(bytes.slice(..cut)) {
                Err(_) => {}
                Ok(got) => {
                    assert!(env.raft.starts_with(&got.raft), "cut at {cut}: {got:?}");
                    assert!(got.control.is_empty() || env.raft.len() == got.raft.len());
                    assert!(env.control.starts_with(&got.control));
                    assert_eq!(
                        got.encode(),
                        bytes.slice(..cut),
                        "cut at {cut} fell between items"
                    );
                }
            }
        }
        let mut v = bytes.to_vec();
        v[0] = 9;
        assert_eq!(Envelope::decode(Bytes::from(v)), Err(EnvelopeError::Version(9)));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(Bytes::from(bytes));
        }
    }
}
