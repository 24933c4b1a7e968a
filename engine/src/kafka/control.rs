//! Control records the broker writes itself. Raft's leader no-op is KRaft's
//! `LEADER_CHANGE` control record (type 2): clients skip control batches, and the offset it
//! takes counts like a transaction marker's (DESIGN.md, "Offsets and internal entries").

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::leader_change_message::{LeaderChangeMessage, Voter};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::Encodable;

use crate::batch::build_control_batch;

/// Control record type of a Raft leader change (KRaft).
pub const LEADER_CHANGE: i16 = 2;

/// The leader no-op: a control batch of one `LEADER_CHANGE` record naming `leader` and the
/// group's `voters` (the value is Kafka's LeaderChangeMessage, version 0).
pub fn leader_change_batch(leader: i32, voters: &[i32], timestamp_ms: i64) -> Bytes {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0); // control record key version
    key.put_i16(LEADER_CHANGE);
    let to_voters = |ids: &[i32]| {
        ids.iter()
            .map(|&id| Voter::default().with_voter_id(id))
            .collect::<Vec<_>>()
    };
    let msg = LeaderChangeMessage::default()
        .with_version(0)
        .with_leader_id(BrokerId(leader))
        .with_voters(to_voters(voters))
        .with_granting_voters(to_voters(voters));
    let mut value = BytesMut::new();
    // Encoding a well-formed message into a growable buffer cannot fail.
    msg.encode(&mut value, 0).expect("LeaderChangeMessage encodes");
    build_control_batch(key.freeze(), value.freeze(), timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{decode_records, BatchView};
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn the_no_op_is_a_valid_control_batch_kafka_can_read() {
        let b = leader_change_batch(2, &[1, 2, 3], 1_000);
        let view = BatchView::parse(&b).expect("CRC and framing hold");
        assert!(view.is_control());
        assert_eq!(view.last_offset_delta(), 0, "one record: it takes one offset");
        let recs = decode_records(&view).unwrap();
        let key = recs[0].key.clone().unwrap();
        assert_eq!(&key[..], &[0, 0, 0, 2]);
        let mut value = recs[0].value.clone().unwrap();
        let msg = LeaderChangeMessage::decode(&mut value, 0).unwrap();
        assert_eq!(msg.leader_id, BrokerId(2));
        assert_eq!(
            msg.voters.iter().map(|v| v.voter_id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}
