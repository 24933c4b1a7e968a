//! Consumer groups: Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) and committed offsets (OffsetCommit, OffsetFetch, OffsetDelete), with
//! DescribeGroups, ListGroups and DeleteGroups, for the groups whose `__consumer_offsets`
//! partitions this node leads. Pure: time comes in as [`Time`], effects leave as [`Effect`]s.
//!
//! Invariants: every request gets exactly one [`Effect::Respond`] (at once, or later: parked
//! joins and syncs, and every write, are answered once their append is acknowledged);
//! committed offsets in memory are exactly those of the acknowledged log, so replaying the
//! partition ([`GroupCoordinator::load`]) rebuilds them; member state is live and ahead of
//! the log during a rebalance, as in Kafka.
//!
//! Where this departs from Kafka (3.x Scala / 4.x `ClassicGroup`, the reference):
//! - no transactional offsets (`TxnOffsetCommit`), no new consumer protocol (KIP-848);
//!   `require_stable` is accepted and has nothing to wait for;
//! - a replaced parked JoinGroup/SyncGroup (the client sent another) and a parked request of
//!   a member that is removed are answered (REBALANCE_IN_PROGRESS / UNKNOWN_MEMBER_ID) instead
//!   of being dropped, so the driver never holds a request forever;
//! - a group being deleted (DeleteGroups or retention) is `Dead` until its tombstones are
//!   acknowledged, and goes back to `Empty` if the write fails (Kafka drops it at once);
//! - timers fire at least 1 ms after they are set (Kafka: on the next timer poll), so one
//!   [`GroupCoordinator::tick`] always terminates;
//! - ties in the protocol vote go to the protocol that sorts first (Kafka: hash order);
//!   members are kept in member-id order (Kafka: insertion order), which decides who becomes
//!   leader when the leader leaves and the member order in the leader's JoinGroup response;
//! - no JoinGroup for a new group writes an empty group record (Kafka 4.x does; 3.x does not);
//! - time is [`Time`]: timers run on `mono_ms`, commit timestamps, state timestamps and
//!   retention on `wall_ms` (Kafka uses one wall clock for both);
//! - ListGroups leaves out groups being deleted; DescribeGroups v6 answers an unknown group
//!   with GROUP_ID_NOT_FOUND (v0–5: state Dead, as Kafka); `authorized_operations` is never
//!   computed (no ACLs yet);
//! - a failed append maps as Kafka 4 maps it (too large → UNKNOWN_SERVER_ERROR; Kafka 3.x
//!   answered OffsetCommit with INVALID_COMMIT_OFFSET_SIZE);
//! - [`GroupCoordinator::load`] skips records it cannot decode and counts them (Kafka fails
//!   the load), and skips groups that hash to another partition;
//! - until compaction exists, a member's commit that changes nothing (same offset, epoch and
//!   metadata; nothing of the partition in flight) is acknowledged without a write, so
//!   `__consumer_offsets` grows with consumption progress and rebalances, not with time.

mod admin;
mod classic;
pub mod code;
mod coordinator;
mod member;
mod offsets;
mod rebalance;
pub mod records;
mod respond;
mod timers;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, RequestKind,
    ResponseKind, SyncGroupRequest,
};

pub use classic::GroupState;
pub use coordinator::GroupCoordinator;
pub use records::partition_for;

/// A request the coordinator will answer, numbered by the caller; opaque here.
pub type Waiter = u64;

/// One append of records to a `__consumer_offsets` partition, numbered by the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppendId(pub u64);

/// The coordinator's configuration, with Kafka's names and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: u64,
    /// `group.max.size`.
    pub group_size_max: usize,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: u64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_partitions: u32,
    /// `offset.metadata.max.bytes` (Kafka compares the metadata's length in UTF-16 units;
    /// we compare bytes, which is never more lenient).
    pub offset_metadata_bytes_max: usize,
    /// How long a new member's parked JoinGroup may wait for the rebalance (Kafka's
    /// `group.new.member.join.timeout.ms`, not configurable there: 5 minutes).
    pub new_member_join_timeout_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            group_size_max: usize::MAX,
            offsets_retention_ms: 10_080 * 60_000,
            offsets_retention_check_interval_ms: 600_000,
            offsets_topic_partitions: 50,
            offset_metadata_bytes_max: 4_096,
            new_member_join_timeout_ms: 300_000,
        }
    }
}

/// Who asked, and in which API version: enough to answer later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestCtx {
    pub waiter: Waiter,
    pub version: i16,
    pub client_id: String,
    pub client_host: String,
}

/// The requests the group coordinator serves.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupRequest {
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    OffsetDelete(OffsetDeleteRequest),
}

impl GroupRequest {
    /// The group request inside `kind`, or `kind` back if it is not one.
    #[allow(clippy::result_large_err)] // hands the caller's value back unchanged
    pub fn from_kind(kind: RequestKind) -> Result<GroupRequest, RequestKind> {
        Ok(match kind {
            RequestKind::JoinGroup(r) => GroupRequest::JoinGroup(r),
            RequestKind::SyncGroup(r) => GroupRequest::SyncGroup(r),
            RequestKind::Heartbeat(r) => GroupRequest::Heartbeat(r),
            RequestKind::LeaveGroup(r) => GroupRequest::LeaveGroup(r),
            RequestKind::OffsetCommit(r) => GroupRequest::OffsetCommit(r),
            RequestKind::OffsetFetch(r) => GroupRequest::OffsetFetch(r),
            RequestKind::DescribeGroups(r) => GroupRequest::DescribeGroups(r),
            RequestKind::ListGroups(r) => GroupRequest::ListGroups(r),
            RequestKind::DeleteGroups(r) => GroupRequest::DeleteGroups(r),
            RequestKind::OffsetDelete(r) => GroupRequest::OffsetDelete(r),
            other => return Err(other),
        })
    }
}

/// A `__consumer_offsets` record: key and value as Kafka encodes them (see [`records`]);
/// `None` is a tombstone.
pub type OffsetsRecord = (Bytes, Option<Bytes>);

/// What the coordinator asks its caller to do.
// Effects are drained at once; boxing every response would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Answer request `waiter` with `response` (already shaped for its API version).
    Respond { waiter: Waiter, response: ResponseKind },
    /// Append `records` (in order, as one batch) to `__consumer_offsets` partition
    /// `partition`, then report with [`GroupCoordinator::appended`] once they are committed
    /// (or failed).
    Append {
        partition: i32,
        id: AppendId,
        records: Vec<OffsetsRecord>,
    },
}

/// What [`GroupCoordinator::load`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Records replayed (including tombstones and skipped ones).
    pub records: u64,
    /// Records that were not group or offset records (other coordinators' types) or could
    /// not be decoded; they are skipped, as Kafka skips unknown record types.
    pub skipped: u64,
    /// Groups and committed offsets after the replay.
    pub groups: usize,
    pub offsets: usize,
}
