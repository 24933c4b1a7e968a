//! Kafka framing: a 4-byte big-endian size, then that many bytes of request or response.
//! Owns the size limits: a request frame smaller than [`FRAME_SIZE_MIN`] or larger than
//! `socket.request.max.bytes` is a protocol violation that closes its connection only.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the size prefix in front of every frame.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// The smallest request frame: api key (2), api version (2), correlation id (4).
pub const FRAME_SIZE_MIN: usize = 8;

/// A request frame whose size prefix is out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("request frame of {size_bytes} bytes is below the minimum of {FRAME_SIZE_MIN}")]
    TooSmall { size_bytes: i32 },
    #[error("request frame of {size_bytes} bytes exceeds socket.request.max.bytes ({size_max_bytes})")]
    TooLarge { size_bytes: i32, size_max_bytes: usize },
}

/// Cuts request frames out of a connection's read buffer.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    size_max_bytes: usize,
}

impl FrameDecoder {
    pub fn new(size_max_bytes: usize) -> FrameDecoder {
        FrameDecoder { size_max_bytes }
    }

    /// Takes the next complete frame (without its prefix) off the front of `buf`. When the
    /// frame is still incomplete, reserves room for the rest of it and returns `None`. The
    /// frame shares `buf`'s allocation, so no bytes are copied.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(prefix) = buf.first_chunk::<SIZE_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let size_bytes = i32::from_be_bytes(*prefix);
        let size = match usize::try_from(size_bytes) {
            Ok(size) if size >= FRAME_SIZE_MIN => size,
            _ => return Err(FrameError::TooSmall { size_bytes }),
        };
        if size > self.size_max_bytes {
            return Err(FrameError::TooLarge {
                size_bytes,
                size_max_bytes: self.size_max_bytes,
            });
        }
        let total = SIZE_PREFIX_BYTES + size;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(SIZE_PREFIX_BYTES);
        debug_assert_eq!(frame.len(), size);
        Ok(Some(frame.freeze()))
    }
}

/// The size prefix of a response made of `parts`, or `None` if it exceeds Kafka's i32 size.
pub fn response_prefix(parts: &[Bytes]) -> Option<[u8; SIZE_PREFIX_BYTES]> {
    let size: usize = parts.iter().map(Bytes::len).sum();
    i32::try_from(size).ok().map(i32::to_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frames_split_anywhere_reassemble() {
        let d = FrameDecoder::new(1024);
        let mut wire = framed(b"0123456789");
        wire.extend(framed(b"abcdefgh"));
        for cut in 0..wire.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in [&wire[..cut], &wire[cut..]] {
                buf.extend_from_slice(piece);
                while let Some(f) = d.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(
                got,
                vec![Bytes::from_static(b"0123456789"), Bytes::from_static(b"abcdefgh")]
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn byte_by_byte_frame() {
        let d = FrameDecoder::new(1024);
        let wire = framed(b"0123456789");
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let f = d.decode(&mut buf).unwrap();
            assert_eq!(f.is_some(), i == wire.len() - 1);
        }
    }

    #[test]
    fn sizes_out_of_bounds_are_errors() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&framed(b"1234567")[..]);
        assert_eq!(d.decode(&mut buf), Err(FrameError::TooSmall { size_bytes: 7 }));
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert_eq!(d.decode(&mut buf), Err(FrameError::TooSmall { size_bytes: -1 }));
        let mut buf = BytesMut::from(&101i32.to_be_bytes()[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge {
                size_bytes: 101,
                size_max_bytes: 100
            })
        );
        let mut buf = BytesMut::from(&framed(&[7u8; 100])[..]);
        assert_eq!(d.decode(&mut buf).unwrap().map(|f| f.len()), Some(100));
    }

    #[test]
    fn response_prefix_sums_parts() {
        let parts = [
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"de"),
        ];
        assert_eq!(response_prefix(&parts), Some(5i32.to_be_bytes()));
        assert_eq!(response_prefix(&[]), Some([0; 4]));
    }
}
