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
    crate::meta::seal(MAGIC, &body)
}

pub fn decode(bytes: &[u8]) -> Result<HardState, String> {
    if bytes.len() != BYTES {
        return Err(format!("{FILE} is {} bytes, not {BYTES}", bytes.len()));
    }
    let body = crate::meta::unseal(MAGIC, bytes).map_err(|e| format!("{FILE}: {e}"))?;
    let term = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let vote = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
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
