//! The inter-broker wire format: frames, the messages batched inside them, and the handshake.
//! Pure codec, no IO. Every decoder bounds what it accepts and returns an error, never
//! panics, on any input.
//!
//! All integers are big-endian.
//!
//! ```text
//! frame     = length:u32  crc:u32  payload[length]        crc = crc32c(payload)
//! data      = message*                                      payload of a data frame
//! message   = len:u32  bytes[len]
//! keepalive = a frame with an empty payload                 8 zero bytes on the wire
//! hello     = "GRGP"  version:u16  sender:i32  receiver:i32  cluster_len:u16  cluster[cluster_len]
//! ```
//!
//! A connection opens with one hello frame from the dialer and one hello frame back from the
//! acceptor; after that the dialer sends data frames and keepalives, the acceptor keepalives.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::NodeId;

/// `length` and `crc` in front of every frame payload.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The `len` in front of every message inside a data frame.
pub const MESSAGE_HEADER_BYTES: usize = 4;

/// First bytes of a hello payload.
pub const MAGIC: [u8; 4] = *b"GRGP";

/// The protocol version this build speaks (and the only one it accepts).
pub const PROTOCOL_VERSION: u16 = 1;

/// A cluster id longer than this is refused (Kafka's are 22 characters).
pub const CLUSTER_ID_BYTES_MAX: usize = 255;

/// Bytes of a hello payload before the cluster id.
const HELLO_FIXED_BYTES: usize = 4 + 2 + 4 + 4 + 2;

/// The largest hello payload; a first frame announcing more is refused before it is read.
pub const HELLO_BYTES_MAX: usize = HELLO_FIXED_BYTES + CLUSTER_ID_BYTES_MAX;

/// The keepalive frame: empty payload, and crc32c of nothing is 0.
pub const KEEPALIVE: [u8; FRAME_HEADER_BYTES] = [0; FRAME_HEADER_BYTES];

/// Bytes that cannot be what they claim to be. Each one closes its connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {length_bytes} bytes exceeds the limit of {limit_bytes}")]
    FrameTooLarge { length_bytes: u64, limit_bytes: usize },
    #[error("frame checksum mismatch (header says {expected:#010x}, payload has {actual:#010x})")]
    Checksum { expected: u32, actual: u32 },
    #[error("message header at payload byte {at} claims {len_bytes} bytes, only {left_bytes} left")]
    MessageTruncated {
        at: usize,
        len_bytes: u64,
        left_bytes: usize,
    },
    #[error("handshake does not start with the magic GRGP (got {got:02x?})")]
    BadMagic { got: Vec<u8> },
    #[error("handshake speaks protocol version {version}, this node speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion { version: u16 },
    #[error("handshake is malformed: {reason}")]
    MalformedHello { reason: &'static str },
}

/// The encoded size of one message inside a data frame; what a queued message costs.
pub fn message_cost_bytes(message: &Bytes) -> usize {
    MESSAGE_HEADER_BYTES + message.len()
}

/// Appends one data frame carrying `messages`, in order, to `out`. The caller keeps the
/// frame within the receiver's limit (see [`FrameDecoder`]) and each message under 4 GiB.
pub fn encode_data_frame<'a>(messages: impl IntoIterator<Item = &'a Bytes>, out: &mut BytesMut) {
    let start = out.len();
    out.put_u64(0); // header, filled in below once the payload is known
    for message in messages {
        let len = u32::try_from(message.len()).expect("caller bounds messages by the frame limit");
        out.put_u32(len);
        out.put_slice(message);
    }
    seal_frame(out, start);
}

/// Appends one hello frame to `out`.
pub fn encode_hello_frame(hello: &Hello, out: &mut BytesMut) {
    assert!(
        hello.cluster_id.len() <= CLUSTER_ID_BYTES_MAX,
        "cluster id is validated on entry"
    );
    let start = out.len();
    out.put_u64(0);
    out.put_slice(&MAGIC);
    out.put_u16(hello.version);
    out.put_i32(hello.sender);
    out.put_i32(hello.receiver);
    // Bounded by CLUSTER_ID_BYTES_MAX, asserted above.
    out.put_u16(hello.cluster_id.len() as u16);
    out.put_slice(hello.cluster_id.as_bytes());
    seal_frame(out, start);
}

/// Writes length and crc of the frame whose header starts at `start` and whose payload runs
/// to the end of `out`.
fn seal_frame(out: &mut BytesMut, start: usize) {
    let payload_start = start + FRAME_HEADER_BYTES;
    let length = u32::try_from(out.len() - payload_start).expect("frames stay under 4 GiB");
    let crc = crc32c::crc32c(&out[payload_start..]);
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    out[start + 4..payload_start].copy_from_slice(&crc.to_be_bytes());
}

/// Cuts frames off the front of a connection's read buffer and checks their crc.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    payload_bytes_max: usize,
}

impl FrameDecoder {
    /// Accepts payloads of at most `payload_bytes_max` bytes.
    pub fn new(payload_bytes_max: usize) -> FrameDecoder {
        FrameDecoder { payload_bytes_max }
    }

    /// Takes the next complete frame's payload off `buf`, or returns `None` (after reserving
    /// room for the rest of the frame) while it is incomplete. The payload shares `buf`'s
    /// allocation. A length over the limit fails before any of the payload is buffered.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let expected = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let length = match usize::try_from(length) {
            Ok(length) if length <= self.payload_bytes_max => length,
            _ => {
                return Err(WireError::FrameTooLarge {
                    length_bytes: u64::from(length),
                    limit_bytes: self.payload_bytes_max,
                })
            }
        };
        let total = FRAME_HEADER_BYTES + length;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(FRAME_HEADER_BYTES);
        let actual = crc32c::crc32c(&frame);
        if actual != expected {
            return Err(WireError::Checksum { expected, actual });
        }
        Ok(Some(frame.freeze()))
    }
}

/// Splits a data frame's payload into its messages, all or nothing: a frame whose last
/// message is cut short yields an error and no messages. An empty payload (keepalive) yields
/// no messages.
pub fn decode_messages(mut payload: Bytes) -> Result<Vec<Bytes>, WireError> {
    let total = payload.len();
    let mut messages = Vec::new();
    while !payload.is_empty() {
        let at = total - payload.len();
        let Some(header) = payload.first_chunk::<MESSAGE_HEADER_BYTES>() else {
            return Err(WireError::MessageTruncated {
                at,
                len_bytes: 0,
                left_bytes: payload.len(),
            });
        };
        let len = u32::from_be_bytes(*header);
        let left_bytes = payload.len() - MESSAGE_HEADER_BYTES;
        match usize::try_from(len) {
            Ok(len) if len <= left_bytes => {
                payload.advance(MESSAGE_HEADER_BYTES);
                messages.push(payload.split_to(len));
            }
            _ => {
                return Err(WireError::MessageTruncated {
                    at,
                    len_bytes: u64::from(len),
                    left_bytes,
                })
            }
        }
    }
    Ok(messages)
}

/// The first frame on a connection, in each direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    /// The node that wrote this hello.
    pub sender: NodeId,
    /// The node the sender believes it is talking to.
    pub receiver: NodeId,
    /// The sender's cluster id; empty while it does not know it yet.
    pub cluster_id: String,
}

impl Hello {
    /// A hello of this build's protocol version.
    pub fn new(sender: NodeId, receiver: NodeId, cluster_id: &str) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            sender,
            receiver,
            cluster_id: cluster_id.to_string(),
        }
    }

    /// Parses a hello payload: magic, then version, then (for version 1) the rest, exactly.
    pub fn decode(payload: &[u8]) -> Result<Hello, WireError> {
        let mut buf = payload;
        if buf.len() < MAGIC.len() || buf[..MAGIC.len()] != MAGIC {
            let got = buf[..buf.len().min(MAGIC.len())].to_vec();
            return Err(WireError::BadMagic { got });
        }
        buf.advance(MAGIC.len());
        let malformed = |reason| WireError::MalformedHello { reason };
        if buf.len() < 2 {
            return Err(malformed("no version"));
        }
        let version = buf.get_u16();
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion { version });
        }
        if buf.len() < HELLO_FIXED_BYTES - MAGIC.len() - 2 {
            return Err(malformed("shorter than its fixed fields"));
        }
        let sender = buf.get_i32();
        let receiver = buf.get_i32();
        let cluster_len = usize::from(buf.get_u16());
        if cluster_len > CLUSTER_ID_BYTES_MAX {
            return Err(malformed("cluster id longer than 255 bytes"));
        }
        if buf.len() != cluster_len {
            return Err(malformed("cluster id length does not match the frame"));
        }
        let cluster_id = std::str::from_utf8(buf).map_err(|_| malformed("cluster id is not UTF-8"))?;
        Ok(Hello {
            version,
            sender,
            receiver,
            cluster_id: cluster_id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_of(messages: &[&[u8]]) -> BytesMut {
        let owned: Vec<Bytes> = messages.iter().map(|m| Bytes::copy_from_slice(m)).collect();
        let mut out = BytesMut::new();
        encode_data_frame(&owned, &mut out);
        out
    }

    #[test]
    fn data_frame_has_the_documented_bytes() {
        let frame = frame_of(&[b"ab", b""]);
        let payload = [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0];
        let mut expected = (payload.len() as u32).to_be_bytes().to_vec();
        expected.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        expected.extend_from_slice(&payload);
        assert_eq!(&frame[..], &expected[..]);
    }

    #[test]
    fn keepalive_is_an_empty_frame() {
        let mut out = BytesMut::new();
        encode_data_frame(std::iter::empty(), &mut out);
        assert_eq!(&out[..], &KEEPALIVE[..]);
        let payload = FrameDecoder::new(16).decode(&mut out).unwrap().unwrap();
        assert!(decode_messages(payload).unwrap().is_empty());
    }

    #[test]
    fn hello_has_the_documented_bytes_and_roundtrips() {
        let hello = Hello::new(1, -2, "c1");
        let mut out = BytesMut::new();
        encode_hello_frame(&hello, &mut out);
        let payload = b"GRGP\x00\x01\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x02c1";
        assert_eq!(&out[..4], &(payload.len() as u32).to_be_bytes());
        assert_eq!(&out[4..8], &crc32c::crc32c(payload).to_be_bytes());
        assert_eq!(&out[8..], payload);
        let decoded = FrameDecoder::new(HELLO_BYTES_MAX)
            .decode(&mut out)
            .unwrap()
            .unwrap();
        assert_eq!(Hello::decode(&decoded).unwrap(), hello);
    }

    #[test]
    fn bad_hellos_are_refused() {
        assert!(matches!(
            Hello::decode(b"KAFK\x00\x01"),
            Err(WireError::BadMagic { .. })
        ));
        assert!(matches!(Hello::decode(b"GR"), Err(WireError::BadMagic { .. })));
        assert_eq!(
            Hello::decode(b"GRGP\x00\x02anything"),
            Err(WireError::UnsupportedVersion { version: 2 })
        );
        let short = b"GRGP\x00\x01\x00\x00\x00\x01";
        assert!(matches!(
            Hello::decode(short),
            Err(WireError::MalformedHello { .. })
        ));
        let long_cluster = b"GRGP\x00\x01\x00\x00\x00\x01\x00\x00\x00\x02\x00\x05ab";
        assert!(matches!(
            Hello::decode(long_cluster),
            Err(WireError::MalformedHello { .. })
        ));
        let not_utf8 = b"GRGP\x00\x01\x00\x00\x00\x01\x00\x00\x00\x02\x00\x01\xff";
        assert!(matches!(
            Hello::decode(not_utf8),
            Err(WireError::MalformedHello { .. })
        ));
    }

    #[test]
    fn corrupt_frame_is_refused() {
        let mut frame = frame_of(&[b"hello"]);
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(matches!(
            FrameDecoder::new(1024).decode(&mut frame),
            Err(WireError::Checksum { .. })
        ));
    }

    #[test]
    fn oversize_frame_is_refused_from_its_header() {
        let frame = frame_of(&[b"0123456789"]);
        let mut header_only = BytesMut::from(&frame[..FRAME_HEADER_BYTES]);
        assert_eq!(
            FrameDecoder::new(13).decode(&mut header_only),
            Err(WireError::FrameTooLarge {
                length_bytes: 14,
                limit_bytes: 13
            })
        );
        let mut whole = frame.clone();
        assert!(FrameDecoder::new(14).decode(&mut whole).unwrap().is_some());
    }

    #[test]
    fn truncated_message_inside_a_valid_frame_is_refused() {
        let payload = Bytes::from_static(&[0, 0, 0, 1, 7, 0, 0, 0, 9, 1]);
        assert!(matches!(
            decode_messages(payload),
            Err(WireError::MessageTruncated {
                at: 5,
                len_bytes: 9,
                left_bytes: 1
            })
        ));
        assert!(decode_messages(Bytes::from_static(&[0, 0])).is_err());
    }

    proptest! {
        #[test]
        fn frames_roundtrip_split_anywhere(
            batches in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6), 1..6),
            cut in 0usize..1000,
        ) {
            let mut wire = BytesMut::new();
            for batch in &batches {
                let owned: Vec<Bytes> = batch.iter().map(|m| Bytes::copy_from_slice(m)).collect();
                encode_data_frame(&owned, &mut wire);
            }
            let cut = cut % (wire.len() + 1);
            let decoder = FrameDecoder::new(1 << 20);
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(payload) = decoder.decode(&mut buf).unwrap() {
                got.push(decode_messages(payload).unwrap());
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(payload) = decoder.decode(&mut buf).unwrap() {
                got.push(decode_messages(payload).unwrap());
            }
            prop_assert!(buf.is_empty());
            let want: Vec<Vec<Bytes>> = batches
                .iter()
                .map(|b| b.iter().map(|m| Bytes::copy_from_slice(m)).collect())
                .collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), max in 0usize..200) {
            let decoder = FrameDecoder::new(max);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(payload)) = decoder.decode(&mut buf) {
                prop_assert!(payload.len() <= max);
                let _ = decode_messages(payload.clone());
                let _ = Hello::decode(&payload);
            }
            let _ = decode_messages(Bytes::from(bytes.clone()));
            let _ = Hello::decode(&bytes);
        }

        #[test]
        fn random_bytes_with_a_valid_crc_never_panic(payload in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::new();
            buf.put_u32(payload.len() as u32);
            buf.put_u32(crc32c::crc32c(&payload));
            buf.put_slice(&payload);
            let got = FrameDecoder::new(300).decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(&got[..], &payload[..]);
            let _ = decode_messages(got.clone());
            let _ = Hello::decode(&got);
        }
    }
}
