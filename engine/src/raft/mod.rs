//! Raft consensus for one group (a partition's replicas, or the cluster metadata log), as a
//! pure state machine: [`RaftCore`] takes inputs (ticks, peer messages, completions) and
//! pushes [`RaftAction`]s for the engine to carry out. It performs no IO and never mutates
//! the log itself; it reads the log through [`RaftLog`] and asks for changes.
//!
//! Model: the Raft log index is the Kafka offset and the Raft term is Kafka's
//! `partitionLeaderEpoch`. Every "end" is exclusive (one past the last offset). The log
//! holds record batches, each one epoch, appended or truncated only at batch boundaries.
//!
//! Invariants the core keeps (and asserts): at most one vote per term; no message that
//! depends on a term or vote leaves before that hard state is persisted; `commit_end` never
//! decreases and only counts durable copies on a majority of voters with an entry of the
//! current term at `commit_end - 1`; a follower never truncates below its `commit_end`.

mod codec;
mod core;
mod election;
mod follower;
mod msg;
mod progress;
mod replication;
mod vlog;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

pub use self::codec::{decode, encode, CodecError};
pub use self::core::RaftCore;
pub use self::msg::{AppendResult, Entry, RaftMsg};

/// A broker id (Kafka's `node.id`).
pub type NodeId = i32;

/// The log as the core sees it; the real `PartitionLog` implements it.
///
/// Contract: entries are whole batches with non-decreasing epochs; `durable_end` describes
/// the current content (after a truncation it is at most the truncation point until new
/// entries are fsynced), and `durable_end() <= end()`.
pub trait RaftLog {
    /// Offset of the first entry kept (entries below were dropped/snapshotted).
    fn start(&self) -> u64;
    /// One past the last entry (log end offset).
    fn end(&self) -> u64;
    /// One past the last entry known durable (fsynced) on this replica. <= end().
    fn durable_end(&self) -> u64;
    /// Epoch of the entry at `offset` if start <= offset < end; None otherwise.
    fn epoch_at(&self, offset: u64) -> Option<i32>;
    /// Epoch of the last entry (for votes); the epoch of the entry before start() when the
    /// log is empty but start>0; 0 for an empty log.
    fn last_epoch(&self) -> i32;
    /// Kafka's OffsetForLeaderEpoch: the largest epoch E <= `epoch` that has entries in this
    /// log, with the end offset of E (the base of the first entry of a later epoch, or
    /// end()). None if no such epoch.
    fn end_for_epoch(&self, epoch: i32) -> Option<(i32, u64)>;
    /// The base offset of the batch containing `offset` (start <= offset < end), else None.
    fn batch_base(&self, offset: u64) -> Option<u64>;
}

/// Timing and flow-control knobs of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// Election timeouts are drawn uniformly from `[min, max)`.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How often the engine calls [`RaftCore::heartbeat`] (used to pace retries).
    pub heartbeat_interval_ms: u64,
    /// Bytes of entries sent to one follower and not yet acknowledged, at most (a single
    /// batch larger than this is still sent alone).
    pub inflight_bytes_max: u64,
    /// Bytes of entries in one Append message, at most (at least one batch is sent).
    pub append_bytes_max: u64,
    /// Test-only planted bugs; effective only in tests or with the `planted-bugs` feature.
    pub bugs: RaftBugs,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            heartbeat_interval_ms: 100,
            inflight_bytes_max: 4 << 20,
            append_bytes_max: 1 << 20,
            bugs: RaftBugs::default(),
        }
    }
}

impl RaftConfig {
    /// Panics on a configuration the core cannot run with (a programming error, not input).
    pub fn validate(&self) {
        assert!(
            self.election_timeout_min_ms > 0,
            "election timeout must be positive"
        );
        assert!(
            self.election_timeout_max_ms > self.election_timeout_min_ms,
            "election timeout range [min, max) must not be empty"
        );
        assert!(
            self.heartbeat_interval_ms > 0 && self.heartbeat_interval_ms < self.election_timeout_min_ms,
            "heartbeats must be more frequent than the minimum election timeout"
        );
        assert!(self.inflight_bytes_max > 0 && self.append_bytes_max > 0);
    }
}

/// Known-bad behaviours the simulator must catch (see `crate::planted`). The switches only
/// take effect in this crate's own tests or when built with the `planted-bugs` feature, so
/// no release build can carry them; the integrator maps [`crate::PlantedBugs`] onto them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftBugs {
    /// Release votes and term changes before the hard state is persisted.
    pub vote_without_persist: bool,
    /// A follower acknowledges its written end instead of its durable end.
    pub ack_before_fsync: bool,
    /// The leader commits what it alone has made durable.
    pub commit_on_minority: bool,
    /// A follower appends over a divergent suffix without truncating it.
    pub skip_truncation: bool,
}

impl RaftBugs {
    fn on(flag: bool) -> bool {
        cfg!(any(test, feature = "planted-bugs")) && flag
    }
    pub(crate) fn vote_without_persist(&self) -> bool {
        Self::on(self.vote_without_persist)
    }
    pub(crate) fn ack_before_fsync(&self) -> bool {
        Self::on(self.ack_before_fsync)
    }
    pub(crate) fn commit_on_minority(&self) -> bool {
        Self::on(self.commit_on_minority)
    }
    pub(crate) fn skip_truncation(&self) -> bool {
        Self::on(self.skip_truncation)
    }
}

/// What must be durable before messages that depend on it leave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: i32,
    pub voted_for: Option<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Everything the core asks the engine to do, in the order it must be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftAction {
    /// Deliver `msg` to peer `to` (best effort; Raft tolerates loss, delay, duplication).
    Send {
        to: NodeId,
        msg: RaftMsg,
    },
    /// Write this hard state durably, then call [`RaftCore::on_persisted`] with it.
    Persist(HardState),
    /// Read entries for follower `to` starting at the batch containing `from`, whole batches
    /// up to about `max_bytes` (at least one), and call [`RaftCore::send_entries`].
    NeedEntries {
        to: NodeId,
        from: u64,
        max_bytes: u64,
    },
    /// Follower: append these after the current end (after earlier actions are applied);
    /// call [`RaftCore::on_log_changed`] when written and again when durable.
    Append {
        entries: Vec<Entry>,
    },
    /// Follower: drop every entry `>= from` (a batch boundary, never below `commit_end`);
    /// durable before any later ack; call [`RaftCore::on_log_changed`] when done.
    Truncate {
        from: u64,
    },
    /// Append the leader no-op control batch at `term` (one offset), then call
    /// [`RaftCore::on_log_changed`].
    BecameLeader {
        term: i32,
    },
    RoleChanged {
        role: Role,
        term: i32,
        leader: Option<NodeId>,
    },
    CommitAdvanced {
        commit_end: u64,
    },
}

/// The smallest number of voters that is a majority of `voters`.
pub(crate) fn quorum(voters: &BTreeSet<NodeId>) -> usize {
    voters.len() / 2 + 1
}
