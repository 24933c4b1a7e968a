//! Response builders, shaped for the request's API version so that `kafka-protocol`
//! encodes them (it refuses non-default values in fields a version lacks) and old clients
//! read what Kafka would send them.

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    ResponseKind, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A JoinGroup answer. Before v7 the protocol name is not nullable: Kafka sends "".
#[allow(clippy::too_many_arguments)]
pub(crate) fn join(
    version: i16,
    error: i16,
    generation: i32,
    protocol_type: Option<&str>,
    protocol_name: Option<&str>,
    leader: &str,
    member_id: &str,
    members: Vec<JoinGroupResponseMember>,
    skip_assignment: bool,
) -> ResponseKind {
    let mut r = JoinGroupResponse::default();
    r.error_code = error;
    r.generation_id = generation;
    r.protocol_type = protocol_type.map(sb);
    r.protocol_name = match protocol_name {
        Some(name) => Some(sb(name)),
        None if version < 7 => Some(StrBytes::new()),
        None => None,
    };
    r.leader = sb(leader);
    r.member_id = sb(member_id);
    r.members = members;
    r.skip_assignment = skip_assignment && version >= 9;
    ResponseKind::JoinGroup(r)
}

/// A JoinGroup error (Kafka: generation -1, no protocol, no leader).
pub(crate) fn join_error(version: i16, member_id: &str, error: i16) -> ResponseKind {
    join(version, error, -1, None, None, "", member_id, Vec::new(), false)
}

pub(crate) fn join_member(id: &str, instance: Option<&str>, metadata: Bytes) -> JoinGroupResponseMember {
    let mut m = JoinGroupResponseMember::default();
    m.member_id = sb(id);
    m.group_instance_id = instance.map(sb);
    m.metadata = metadata;
    m
}

pub(crate) fn sync(
    error: i16,
    protocol_type: Option<&str>,
    protocol_name: Option<&str>,
    assignment: Bytes,
) -> ResponseKind {
    let mut r = SyncGroupResponse::default();
    r.error_code = error;
    r.protocol_type = protocol_type.map(sb);
    r.protocol_name = protocol_name.map(sb);
    r.assignment = assignment;
    ResponseKind::SyncGroup(r)
}

pub(crate) fn sync_error(error: i16) -> ResponseKind {
    sync(error, None, None, Bytes::new())
}

pub(crate) fn heartbeat(error: i16) -> ResponseKind {
    let mut r = HeartbeatResponse::default();
    r.error_code = error;
    ResponseKind::Heartbeat(r)
}

/// A LeaveGroup answer: v3+ lists members; before v3 the one member's error is the
/// top-level error.
pub(crate) fn leave(version: i16, error: i16, members: Vec<MemberResponse>) -> ResponseKind {
    let mut r = LeaveGroupResponse::default();
    if version >= 3 {
        r.error_code = error;
        r.members = members;
    } else {
        r.error_code = if error != 0 {
            error
        } else {
            members.first().map_or(0, |m| m.error_code)
        };
    }
    ResponseKind::LeaveGroup(r)
}

pub(crate) fn leave_member(member_id: &str, instance: Option<&str>, error: i16) -> MemberResponse {
    let mut m = MemberResponse::default();
    m.member_id = sb(member_id);
    m.group_instance_id = instance.map(sb);
    m.error_code = error;
    m
}

/// An OffsetCommit answer giving every partition of `req` the same `error`.
pub(crate) fn commit_all(req: &OffsetCommitRequest, error: i16) -> OffsetCommitResponse {
    let mut r = OffsetCommitResponse::default();
    r.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut topic = OffsetCommitResponseTopic::default();
            topic.name = t.name.clone();
            topic.partitions = t
                .partitions
                .iter()
                .map(|p| commit_partition(p.partition_index, error))
                .collect();
            topic
        })
        .collect();
    r
}

pub(crate) fn commit_partition(partition: i32, error: i16) -> OffsetCommitResponsePartition {
    let mut p = OffsetCommitResponsePartition::default();
    p.partition_index = partition;
    p.error_code = error;
    p
}

/// Replaces every partition error `from` of `r` with `to`.
pub(crate) fn commit_replace_errors(r: &mut OffsetCommitResponse, from: i16, to: i16) {
    for t in &mut r.topics {
        for p in &mut t.partitions {
            if p.error_code == from {
                p.error_code = to;
            }
        }
    }
}
