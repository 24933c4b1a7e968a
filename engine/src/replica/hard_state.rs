//! The durable Raft state of one replica (current term and vote), in `raft.state` beside its
//! log: `GRV1`, CRC32C (big-endian) of the body, then the body: term `i32` and voted-for
//! `i32` (-1 for none), big-endian. Written with `IoOp::WriteState` (temp file, fsync,
//! rename, fsync directory), so a crash leaves the old state or the new, never a mix.

use bytes::{BufMut, Bytes, BytesMut};

use crate::raft::HardState;

/// File name inside the replica's directory.
pub const FILE: &str = "raft.state";
const MAGIC: &[u8; 4] = b"GRV1";
const BYTES: usize = 4 + 4 + 4 + 4;

pub fn encode(hs: &HardState) -> Bytes {
    let mut body = BytesMut::with_capacity(8);
    body.put_i32(hs.term);
    body.put_i32(hs.voted_for.unwrap_or(-1));
    let mut out = BytesMut::with_capacity(BYTES);
    out.put_slice(MAGIC);
    out.put_u32(crc32c::crc32c(&body));
    out.put_slice(&body);
    out.freeze()
}

pub fn decode(bytes: &[u8]) -> Result<HardState, String> {
    if bytes.len() != BYTES || &bytes[..4] != MAGIC {
        return Err(format!("{FILE} has the wrong size or magic"));
    }
    let crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if crc32c::crc32c(&bytes[8..]) != crc {
        return Err(format!("{FILE} fails its checksum"));
    }
    let term = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let vote = i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if term < 0 || vote < -1 {
        return Err(format!("{FILE} holds term {term} and vote {vote}"));
    }
    Ok(HardState {
        term,
        voted_for: (vote >= 0).then_some(vote),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        for hs in [
            HardState::default(),
            HardState {
                term: 7,
                voted_for: Some(3),
            },
        ] {
            assert_eq!(decode(&encode(&hs)), Ok(hs));
        }
        let good = encode(&HardState {
            term: 2,
            voted_for: None,
        });
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at byte {i} must be caught");
        }
        assert!(decode(&good[..10]).is_err());
    }
}
