//! The Kafka wire layer: decodes request frames, runs each API against the engine, and
//! encodes responses. This is the only module that sees `kafka-protocol` types.
//!
//! Invariants: every request gets exactly one `ClientResponse` (possibly with no frame, for
//! acks=0) or a `CloseConnection`; a request that waits (produce for durability, fetch for
//! data, reads from disk) lives in `KafkaState::requests` until it is answered or its
//! connection closes.

mod admin;
mod configs;
pub mod control;
mod coordinator;
mod decode;
mod fetch;
pub(crate) mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::engine::{Engine, Lifecycle, ReadOwner};
use crate::log::partition::LogId;
use crate::log::read::ReadOutcome;
use crate::{ConnId, Output};

pub use decode::{decode_request, DecodeError};

/// Kafka error codes used by this layer.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REQUEST: i16 = 42;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const INVALID_RECORD: i16 = 87;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

/// The APIs this broker serves and the versions it advertises: exactly those implemented
/// and tested with real clients (see the README's compatibility table).
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
];

/// The version range we serve for `key`, if we serve it.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// A request that is waiting for IO, durability or data.
#[derive(Debug)]
pub(crate) struct Pending {
    pub conn: ConnId,
    pub seq: u64,
    pub correlation_id: i32,
    pub api: ApiKey,
    pub version: i16,
    pub body: PendingBody,
}

#[derive(Debug)]
pub(crate) enum PendingBody {
    Produce(produce::PendingProduce),
    Fetch(fetch::PendingFetch),
    ListOffsets(list_offsets::PendingListOffsets),
    Admin(admin::PendingAdmin),
    /// A group request; the group coordinator answers it.
    Group,
    /// InitProducerId waiting for a block of producer ids.
    InitProducerId,
}

/// The Kafka layer's state inside the engine.
#[derive(Debug, Default)]
pub(crate) struct KafkaState {
    /// Outputs produced during the current step (responses, closes, lifecycle events).
    pub responses: Vec<Output>,
    next_request: u64,
    requests: BTreeMap<u64, Pending>,
    /// Produces waiting for durability: (log, last offset, request, slot).
    produce_waits: BTreeSet<(LogId, u64, u64, usize)>,
    /// acks=1 produces: (log, last offset, request, slot), answered once the leader's
    /// durable end passes the batch. `produce_waits` holds acks=all, answered on the high
    /// watermark.
    produce_waits_leader: BTreeSet<(LogId, u64, u64, usize)>,
    /// Fetches waiting for data: (log, request).
    fetch_waits: BTreeSet<(LogId, u64)>,
    /// Fetch and produce deadlines: (mono ms, request).
    deadlines: BTreeSet<(u64, u64)>,
    /// InitProducerId requests waiting for a block of producer ids.
    producer_id_waits: init_producer_id::ProducerIdWaits,
}

impl KafkaState {
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.iter().next().map(|&(at, _)| at)
    }

    fn new_request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Drops every waiting request of a closed connection.
    pub fn forget_connection(&mut self, conn: ConnId) {
        let gone: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, p)| p.conn == conn)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.requests.remove(&id);
        }
        let requests = &self.requests;
        self.produce_waits
            .retain(|&(_, _, r, _)| requests.contains_key(&r));
        self.produce_waits_leader
            .retain(|&(_, _, r, _)| requests.contains_key(&r));
        self.fetch_waits.retain(|&(_, r)| requests.contains_key(&r));
        self.deadlines.retain(|&(_, r)| requests.contains_key(&r));
        self.producer_id_waits.retain(|r| requests.contains_key(&r));
    }
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Kafka's textual form of a UUID (base64url without padding), as used for cluster ids.
pub fn uuid_string(id: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.to_be_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = match chunk.len() {
            3 => 4,
            2 => 3,
            _ => 2,
        };
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub(crate) fn to_uuid(id: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(id)
}

fn body_size(body: &ResponseKind, version: i16) -> usize {
    match body {
        ResponseKind::Fetch(r) => r.compute_size(version).unwrap_or(0),
        _ => 0,
    }
}

/// Encodes a response frame: header then body.
pub(crate) fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Option<Vec<Bytes>> {
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // Sized up front: a fetch answer can be megabytes, and regrowing copies it again.
    let size = header.compute_size(header_version).unwrap_or(0) + body_size(body, version);
    let mut buf = BytesMut::with_capacity(size);
    if let Err(e) = header.encode(&mut buf, header_version) {
        tracing::error!(error = %e, "encoding a response header");
        return None;
    }
    if let Err(e) = body.encode(&mut buf, version) {
        tracing::error!(?api, version, error = %e, "encoding a response");
        return None;
    }
    Some(vec![buf.freeze()])
}

impl Engine {
    /// Entry point for one request frame.
    pub(crate) fn on_client_request(&mut self, conn: ConnId, seq: u64, frame: Bytes) {
        if self.lifecycle != Lifecycle::Running {
            // Not serving (recovering or stopping): the client reconnects elsewhere or later.
            self.kafka.responses.push(Output::CloseConnection { conn });
            return;
        }
        match decode_request(frame) {
            Ok(req) => self.dispatch(conn, seq, req),
            Err(DecodeError::UnsupportedApiVersions { correlation_id }) => {
                let body = metadata::api_versions_response(code::UNSUPPORTED_VERSION);
                let frame = encode_response(ApiKey::ApiVersions, 0, correlation_id, &body);
                self.respond_frame(conn, seq, frame);
            }
            Err(e) => {
                tracing::debug!(conn, error = %e, "closing connection on a bad request");
                self.kafka.responses.push(Output::CloseConnection { conn });
            }
        }
    }

    fn dispatch(&mut self, conn: ConnId, seq: u64, req: decode::Request) {
        let decode::Request {
            api,
            version,
            correlation_id,
            client_id,
            body,
        } = req;
        let ctx = Ctx {
            conn,
            seq,
            correlation_id,
            api,
            version,
        };
        use kafka_protocol::messages::RequestKind as R;
        match body {
            R::ApiVersions(_) => {
                let body = metadata::api_versions_response(code::NONE);
                self.respond(&ctx, body);
            }
            R::Metadata(r) => {
                let body = self.handle_metadata(&ctx, r);
                self.respond(&ctx, body);
            }
            R::DescribeCluster(_) => {
                let body = self.handle_describe_cluster();
                self.respond(&ctx, body);
            }
            R::Produce(r) => self.handle_produce(ctx, r),
            R::Fetch(r) => self.handle_fetch(ctx, r),
            R::ListOffsets(r) => self.handle_list_offsets(ctx, r),
            R::OffsetForLeaderEpoch(r) => {
                let body = self.handle_offset_for_leader_epoch(r);
                self.respond(&ctx, body);
            }
            R::CreateTopics(r) => self.handle_create_topics(ctx, r),
            R::DeleteTopics(r) => self.handle_delete_topics(ctx, r),
            R::CreatePartitions(r) => self.handle_create_partitions(ctx, r),
            R::FindCoordinator(r) => {
                let body = self.handle_find_coordinator(&ctx, r);
                self.respond(&ctx, body);
            }
            R::DescribeConfigs(r) => {
                let body = self.handle_describe_configs(r);
                self.respond(&ctx, body);
            }
            R::InitProducerId(r) => self.handle_init_producer_id(ctx, r),
            other => match crate::group::GroupRequest::from_kind(other) {
                Ok(req) => self.handle_group_request(ctx, client_id, req),
                // decode_request only lets through the APIs in SUPPORTED_APIS.
                Err(_) => unreachable!("decode_request filters unsupported APIs"),
            },
        }
    }

    pub(crate) fn respond(&mut self, ctx: &Ctx, body: ResponseKind) {
        let frame = encode_response(ctx.api, ctx.version, ctx.correlation_id, &body);
        match frame {
            Some(frame) => self.respond_frame(ctx.conn, ctx.seq, Some(frame)),
            None => self
                .kafka
                .responses
                .push(Output::CloseConnection { conn: ctx.conn }),
        }
    }

    fn respond_frame(&mut self, conn: ConnId, seq: u64, frame: Option<Vec<Bytes>>) {
        match frame {
            Some(frame) => self.kafka.responses.push(Output::ClientResponse {
                conn,
                seq,
                frame: Some(frame),
            }),
            None => self.kafka.responses.push(Output::CloseConnection { conn }),
        }
    }

    /// Parks a request until IO or time completes it.
    pub(crate) fn park(&mut self, ctx: Ctx, body: PendingBody) -> u64 {
        let id = self.kafka.new_request_id();
        let Ctx {
            conn,
            seq,
            correlation_id,
            api,
            version,
        } = ctx;
        self.kafka.requests.insert(
            id,
            Pending {
                conn,
                seq,
                correlation_id,
                api,
                version,
                body,
            },
        );
        id
    }

    /// Removes a parked request and answers it with `body`.
    pub(crate) fn finish(&mut self, id: u64, body: Option<ResponseKind>) {
        let Some(p) = self.kafka.requests.remove(&id) else {
            return;
        };
        self.kafka.deadlines.retain(|&(_, r)| r != id);
        let ctx = Ctx {
            conn: p.conn,
            seq: p.seq,
            correlation_id: p.correlation_id,
            api: p.api,
            version: p.version,
        };
        match body {
            Some(body) => self.respond(&ctx, body),
            None => self.kafka.responses.push(Output::ClientResponse {
                conn: p.conn,
                seq: p.seq,
                frame: None,
            }),
        }
    }

    /// A log's durable (or ack) end moved: answer produces and wake fetches.
    pub(crate) fn kafka_log_advanced(&mut self, log: LogId) {
        self.produce_log_advanced(log);
        self.fetch_log_advanced(log);
        self.groups_log_advanced(log);
    }

    /// Writes from `from` on failed on `log`.
    pub(crate) fn kafka_log_failed(&mut self, log: LogId, from: u64) {
        self.produce_log_failed(log, from, code::KAFKA_STORAGE_ERROR);
        self.groups_log_lost(log, from, code::KAFKA_STORAGE_ERROR, false);
    }

    /// This node no longer leads `log`'s group: produces waiting on it will not be
    /// acknowledged here (the new leader may keep or drop their batches).
    pub(crate) fn kafka_leadership_lost(&mut self, log: LogId) {
        self.produce_log_failed(log, 0, code::NOT_LEADER_OR_FOLLOWER);
        self.groups_log_lost(log, 0, code::NOT_LEADER_OR_FOLLOWER, true);
        // Parked fetches answer NOT_LEADER_OR_FOLLOWER now rather than a high watermark
        // this node no longer vouches for.
        self.fetch_log_advanced(log);
    }

    /// `log` was deleted.
    pub(crate) fn kafka_log_removed(&mut self, log: LogId) {
        self.produce_log_failed(log, 0, code::UNKNOWN_TOPIC_OR_PARTITION);
        self.groups_log_lost(log, 0, code::NOT_LEADER_OR_FOLLOWER, true);
        self.fetch_log_advanced(log);
    }

    pub(crate) fn kafka_read_done(&mut self, owner: ReadOwner, outcome: ReadOutcome) {
        let Some(p) = self.kafka.requests.get(&owner.request) else {
            return;
        };
        match p.body {
            PendingBody::Fetch(_) => self.fetch_read_done(owner, outcome),
            PendingBody::ListOffsets(_) => self.list_offsets_read_done(owner, outcome),
            _ => {}
        }
    }

    pub(crate) fn on_tick(&mut self) {
        let now = self.now.mono_ms;
        let due: Vec<u64> = self
            .kafka
            .deadlines
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .map(|&(_, r)| r)
            .collect();
        for id in due {
            self.kafka.deadlines.retain(|&(_, r)| r != id);
            match self.kafka.requests.get(&id).map(|p| &p.body) {
                Some(PendingBody::Produce(_)) => self.produce_deadline(id),
                Some(PendingBody::InitProducerId) => self.init_producer_id_deadline(id),
                Some(PendingBody::Group) | None => {}
                Some(_) => self.fetch_deadline(id),
            }
        }
        self.groups_tick();
    }
}

/// The identity of one request, enough to answer it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub conn: ConnId,
    pub seq: u64,
    pub correlation_id: i32,
    pub api: ApiKey,
    pub version: i16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_strings_are_22_chars_of_base64url() {
        let s = uuid_string(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(s.len(), 22);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(uuid_string(0), "AAAAAAAAAAAAAAAAAAAAAA");
    }
}
