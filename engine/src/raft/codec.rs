//! The binary encoding of [`RaftMsg`]: big-endian, a one-byte message tag, then the fields
//! in declaration order. Entry bytes are length-prefixed and decoded as zero-copy slices of
//! the input.
//!
//! Invariants: decoding never panics, consumes exactly one message from the front of the
//! buffer (only on success), and never reserves more entries than the remaining bytes could
//! hold.
//!
//! Layout (`u8`/`i32`/`u32`/`u64` big-endian; `bool` is one byte, 0 or 1):
//! ```text
//! 1 PreVote       term:i32 last_end:u64 last_epoch:i32
//! 2 PreVoteResp   term:i32 granted:bool
//! 3 Vote          term:i32 last_end:u64 last_epoch:i32
//! 4 VoteResp      term:i32 granted:bool
//! 5 Append        term:i32 prev_end:u64 prev_epoch:i32 commit_end:u64 count:u32
//!                 count x (base:u64 last:u64 epoch:i32 len:u32 bytes[len])
//! 6 AppendResp    term:i32 result:u8 then
//!                   0 Ok        durable_end:u64 match_end:u64
//!                   1 Mismatch  prev_end:u64 diverging_epoch:i32 diverging_end:u64 log_end:u64
//!                   2 StaleTerm
//! 7 Heartbeat     term:i32 commit_end:u64
//! 8 HeartbeatResp term:i32 durable_end:u64 log_end:u64
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::msg::{AppendResult, Entry, RaftMsg};

const TAG_PRE_VOTE: u8 = 1;
const TAG_PRE_VOTE_RESP: u8 = 2;
const TAG_VOTE: u8 = 3;
const TAG_VOTE_RESP: u8 = 4;
const TAG_APPEND: u8 = 5;
const TAG_APPEND_RESP: u8 = 6;
const TAG_HEARTBEAT: u8 = 7;
const TAG_HEARTBEAT_RESP: u8 = 8;

const RESULT_OK: u8 = 0;
const RESULT_MISMATCH: u8 = 1;
const RESULT_STALE_TERM: u8 = 2;

/// Bytes of one encoded entry without its payload (base, last, epoch, len).
const ENTRY_HEADER_BYTES: usize = 8 + 8 + 4 + 4;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("raft message truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unknown raft message tag {0}")]
    UnknownTag(u8),
    #[error("unknown append result tag {0}")]
    UnknownResult(u8),
    #[error("invalid bool byte {0}")]
    InvalidBool(u8),
    #[error("entry count {count} cannot fit in {remaining} remaining bytes")]
    EntryCount { count: u32, remaining: usize },
    #[error("entry with last offset {last} below its base {base}")]
    EntryRange { base: u64, last: u64 },
}

/// Appends the encoding of `msg` to `out`.
pub fn encode(msg: &RaftMsg, out: &mut BytesMut) {
    match msg {
        RaftMsg::PreVote {
            term,
            last_end,
            last_epoch,
        }
        | RaftMsg::Vote {
            term,
            last_end,
            last_epoch,
        } => {
            let tag = if matches!(msg, RaftMsg::PreVote { .. }) {
                TAG_PRE_VOTE
            } else {
                TAG_VOTE
            };
            out.put_u8(tag);
            out.put_i32(*term);
            out.put_u64(*last_end);
            out.put_i32(*last_epoch);
        }
        RaftMsg::PreVoteResp { term, granted } | RaftMsg::VoteResp { term, granted } => {
            let tag = if matches!(msg, RaftMsg::PreVoteResp { .. }) {
                TAG_PRE_VOTE_RESP
            } else {
                TAG_VOTE_RESP
            };
            out.put_u8(tag);
            out.put_i32(*term);
            out.put_u8(u8::from(*granted));
        }
        RaftMsg::Append {
            term,
            prev_end,
            prev_epoch,
            commit_end,
            entries,
        } => {
            out.put_u8(TAG_APPEND);
            out.put_i32(*term);
            out.put_u64(*prev_end);
            out.put_i32(*prev_epoch);
            out.put_u64(*commit_end);
            let count = u32::try_from(entries.len()).expect("an Append carries fewer than 2^32 entries");
            out.put_u32(count);
            for e in entries {
                out.put_u64(e.base);
                out.put_u64(e.last);
                out.put_i32(e.epoch);
                let len = u32::try_from(e.bytes.len()).expect("a batch is smaller than 4 GiB");
                out.put_u32(len);
                out.put_slice(&e.bytes);
            }
        }
        RaftMsg::AppendResp { term, result } => {
            out.put_u8(TAG_APPEND_RESP);
            out.put_i32(*term);
            encode_result(result, out);
        }
        RaftMsg::Heartbeat { term, commit_end } => {
            out.put_u8(TAG_HEARTBEAT);
            out.put_i32(*term);
            out.put_u64(*commit_end);
        }
        RaftMsg::HeartbeatResp {
            term,
            durable_end,
            log_end,
        } => {
            out.put_u8(TAG_HEARTBEAT_RESP);
            out.put_i32(*term);
            out.put_u64(*durable_end);
            out.put_u64(*log_end);
        }
    }
}

fn encode_result(result: &AppendResult, out: &mut BytesMut) {
    match result {
        AppendResult::Ok {
            durable_end,
            match_end,
        } => {
            out.put_u8(RESULT_OK);
            out.put_u64(*durable_end);
            out.put_u64(*match_end);
        }
        AppendResult::Mismatch {
            prev_end,
            diverging_epoch,
            diverging_end,
            log_end,
        } => {
            out.put_u8(RESULT_MISMATCH);
            out.put_u64(*prev_end);
            out.put_i32(*diverging_epoch);
            out.put_u64(*diverging_end);
            out.put_u64(*log_end);
        }
        AppendResult::StaleTerm => out.put_u8(RESULT_STALE_TERM),
    }
}

/// Decodes one message from the front of `buf` and advances past it. On error `buf` is
/// left unchanged (the caller should drop it: the framing is lost).
pub fn decode(buf: &mut Bytes) -> Result<RaftMsg, CodecError> {
    let mut r = Reader { buf: buf.clone() };
    let msg = decode_msg(&mut r)?;
    *buf = r.buf;
    Ok(msg)
}

fn decode_msg(r: &mut Reader) -> Result<RaftMsg, CodecError> {
    let tag = r.u8()?;
    Ok(match tag {
        TAG_PRE_VOTE | TAG_VOTE => {
            let term = r.i32()?;
            let last_end = r.u64()?;
            let last_epoch = r.i32()?;
            if tag == TAG_PRE_VOTE {
                RaftMsg::PreVote {
                    term,
                    last_end,
                    last_epoch,
                }
            } else {
                RaftMsg::Vote {
                    term,
                    last_end,
                    last_epoch,
                }
            }
        }
        TAG_PRE_VOTE_RESP | TAG_VOTE_RESP => {
            let term = r.i32()?;
            let granted = r.bool()?;
            if tag == TAG_PRE_VOTE_RESP {
                RaftMsg::PreVoteResp { term, granted }
            } else {
                RaftMsg::VoteResp { term, granted }
            }
        }
        TAG_APPEND => {
            let term = r.i32()?;
            let prev_end = r.u64()?;
            let prev_epoch = r.i32()?;
            let commit_end = r.u64()?;
            let entries = decode_entries(r)?;
            RaftMsg::Append {
                term,
                prev_end,
                prev_epoch,
                commit_end,
                entries,
            }
        }
        TAG_APPEND_RESP => {
            let term = r.i32()?;
            let result = match r.u8()? {
                RESULT_OK => AppendResult::Ok {
                    durable_end: r.u64()?,
                    match_end: r.u64()?,
                },
                RESULT_MISMATCH => AppendResult::Mismatch {
                    prev_end: r.u64()?,
                    diverging_epoch: r.i32()?,
                    diverging_end: r.u64()?,
                    log_end: r.u64()?,
                },
                RESULT_STALE_TERM => AppendResult::StaleTerm,
                other => return Err(CodecError::UnknownResult(other)),
            };
            RaftMsg::AppendResp { term, result }
        }
        TAG_HEARTBEAT => RaftMsg::Heartbeat {
            term: r.i32()?,
            commit_end: r.u64()?,
        },
        TAG_HEARTBEAT_RESP => RaftMsg::HeartbeatResp {
            term: r.i32()?,
            durable_end: r.u64()?,
            log_end: r.u64()?,
        },
        other => return Err(CodecError::UnknownTag(other)),
    })
}

fn decode_entries(r: &mut Reader) -> Result<Vec<Entry>, CodecError> {
    let count = r.u32()?;
    let remaining = r.buf.remaining();
    // Every entry takes at least its header, so a count the input cannot hold is rejected
    // before reserving anything.
    if count as usize > remaining / ENTRY_HEADER_BYTES {
        return Err(CodecError::EntryCount { count, remaining });
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let base = r.u64()?;
        let last = r.u64()?;
        let epoch = r.i32()?;
        if last < base {
            return Err(CodecError::EntryRange { base, last });
        }
        let len = r.u32()? as usize;
        let bytes = r.bytes(len)?;
        entries.push(Entry {
            base,
            last,
            epoch,
            bytes,
        });
    }
    Ok(entries)
}

/// Bounds-checked big-endian reads over a `Bytes`.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), CodecError> {
        let have = self.buf.remaining();
        if have < n {
            return Err(CodecError::Truncated { needed: n - have });
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(CodecError::InvalidBool(other)),
        }
    }
    fn i32(&mut self) -> Result<i32, CodecError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }
    fn bytes(&mut self, len: usize) -> Result<Bytes, CodecError> {
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            0u64..1000,
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(base, span, epoch, bytes)| Entry {
                base,
                last: base.saturating_add(span),
                epoch,
                bytes: Bytes::from(bytes),
            })
    }

    fn arb_result() -> impl Strategy<Value = AppendResult> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(durable_end, match_end)| AppendResult::Ok {
                durable_end,
                match_end
            }),
            (any::<u64>(), any::<i32>(), any::<u64>(), any::<u64>()).prop_map(|(p, e, d, l)| {
                AppendResult::Mismatch {
                    prev_end: p,
                    diverging_epoch: e,
                    diverging_end: d,
                    log_end: l,
                }
            }),
            Just(AppendResult::StaleTerm),
        ]
    }

    fn arb_msg() -> impl Strategy<Value = RaftMsg> {
        prop_oneof![
            (any::<i32>(), any::<u64>(), any::<i32>()).prop_map(|(term, last_end, last_epoch)| {
                RaftMsg::PreVote {
                    term,
                    last_end,
                    last_epoch,
                }
            }),
            (any::<i32>(), any::<bool>()).prop_map(|(term, granted)| RaftMsg::PreVoteResp { term, granted }),
            (any::<i32>(), any::<u64>(), any::<i32>()).prop_map(|(term, last_end, last_epoch)| {
                RaftMsg::Vote {
                    term,
                    last_end,
                    last_epoch,
                }
            }),
            (any::<i32>(), any::<bool>()).prop_map(|(term, granted)| RaftMsg::VoteResp { term, granted }),
            (
                any::<i32>(),
                any::<u64>(),
                any::<i32>(),
                any::<u64>(),
                proptest::collection::vec(arb_entry(), 0..5)
            )
                .prop_map(
                    |(term, prev_end, prev_epoch, commit_end, entries)| RaftMsg::Append {
                        term,
                        prev_end,
                        prev_epoch,
                        commit_end,
                        entries
                    }
                ),
            (any::<i32>(), arb_result()).prop_map(|(term, result)| RaftMsg::AppendResp { term, result }),
            (any::<i32>(), any::<u64>())
                .prop_map(|(term, commit_end)| RaftMsg::Heartbeat { term, commit_end }),
            (any::<i32>(), any::<u64>(), any::<u64>()).prop_map(|(term, durable_end, log_end)| {
                RaftMsg::HeartbeatResp {
                    term,
                    durable_end,
                    log_end,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(msgs in proptest::collection::vec(arb_msg(), 1..4)) {
            // Several messages back to back decode one at a time, in order.
            let mut out = BytesMut::new();
            for m in &msgs {
                encode(m, &mut out);
            }
            let mut buf = out.freeze();
            for m in &msgs {
                prop_assert_eq!(&decode(&mut buf).unwrap(), m);
            }
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = Bytes::from(bytes);
            while let Ok(_msg) = decode(&mut buf) {}
        }

        #[test]
        fn truncated_encodings_are_errors(msg in arb_msg(), cut in any::<prop::sample::Index>()) {
            let mut out = BytesMut::new();
            encode(&msg, &mut out);
            let full = out.freeze();
            let cut = cut.index(full.len());
            let mut buf = full.slice(..cut);
            let before = buf.clone();
            prop_assert!(decode(&mut buf).is_err());
            prop_assert_eq!(buf, before, "a failed decode leaves the buffer unchanged");
        }
    }

    #[test]
    fn entry_bytes_are_slices_of_the_input() {
        let msg = RaftMsg::Append {
            term: 3,
            prev_end: 10,
            prev_epoch: 2,
            commit_end: 9,
            entries: vec![Entry {
                base: 10,
                last: 12,
                epoch: 3,
                bytes: Bytes::from_static(b"batch"),
            }],
        };
        let mut out = BytesMut::new();
        encode(&msg, &mut out);
        let input = out.freeze();
        let mut buf = input.clone();
        let RaftMsg::Append { entries, .. } = decode(&mut buf).unwrap() else {
            panic!("not an append")
        };
        let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
        assert!(
            range.contains(&(entries[0].bytes.as_ptr() as usize)),
            "zero-copy slice"
        );
    }

    #[test]
    fn huge_entry_count_is_rejected_before_allocating() {
        let mut out = BytesMut::new();
        out.put_u8(TAG_APPEND);
        out.put_i32(1);
        out.put_u64(0);
        out.put_i32(0);
        out.put_u64(0);
        out.put_u32(u32::MAX);
        let mut buf = out.freeze();
        assert!(matches!(
            decode(&mut buf),
            Err(CodecError::EntryCount { count: u32::MAX, .. })
        ));
    }

    #[test]
    fn bad_tags_and_bools_are_errors() {
        assert_eq!(
            decode(&mut Bytes::from_static(&[0])),
            Err(CodecError::UnknownTag(0))
        );
        assert_eq!(
            decode(&mut Bytes::from_static(&[2, 0, 0, 0, 1, 7])),
            Err(CodecError::InvalidBool(7))
        );
        assert_eq!(
            decode(&mut Bytes::from_static(&[6, 0, 0, 0, 1, 9])),
            Err(CodecError::UnknownResult(9))
        );
        assert_eq!(
            decode(&mut Bytes::new()),
            Err(CodecError::Truncated { needed: 1 })
        );
    }
}
