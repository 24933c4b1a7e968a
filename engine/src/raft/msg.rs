//! Raft messages between the replicas of one group: plain data, encoded by `codec.rs`.
//!
//! Every message carries the sender's term, except that `PreVote` carries the term the
//! sender would campaign at and `PreVoteResp` echoes the term of the pre-vote it answers.

use bytes::Bytes;

/// One record batch as the core sees it: offsets `[base, last]`, one epoch, and the raw
/// Kafka batch (forwarded, never parsed; only its length counts for flow control).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub base: u64,
    pub last: u64,
    pub epoch: i32,
    pub bytes: Bytes,
}

impl Entry {
    /// One past the last offset of the batch.
    pub fn end(&self) -> u64 {
        self.last + 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftMsg {
    /// "Would you vote for me at `term`?" Never changes the receiver's term.
    PreVote {
        term: i32,
        last_end: u64,
        last_epoch: i32,
    },
    /// `term` echoes the pre-vote's term.
    PreVoteResp {
        term: i32,
        granted: bool,
    },
    Vote {
        term: i32,
        last_end: u64,
        last_epoch: i32,
    },
    VoteResp {
        term: i32,
        granted: bool,
    },
    /// Entries follow `prev_end` (the base of the first entry); `prev_epoch` is the leader's
    /// epoch at `prev_end - 1` (0 when `prev_end` is 0).
    Append {
        term: i32,
        prev_end: u64,
        prev_epoch: i32,
        commit_end: u64,
        entries: Vec<Entry>,
    },
    AppendResp {
        term: i32,
        result: AppendResult,
    },
    Heartbeat {
        term: i32,
        commit_end: u64,
    },
    /// `durable_end` is the follower's durable end within its prefix matched with this
    /// leader (what an `AppendResult::Ok` would carry); `log_end` its log end.
    HeartbeatResp {
        term: i32,
        durable_end: u64,
        log_end: u64,
    },
}

impl RaftMsg {
    pub fn term(&self) -> i32 {
        match self {
            RaftMsg::PreVote { term, .. }
            | RaftMsg::PreVoteResp { term, .. }
            | RaftMsg::Vote { term, .. }
            | RaftMsg::VoteResp { term, .. }
            | RaftMsg::Append { term, .. }
            | RaftMsg::AppendResp { term, .. }
            | RaftMsg::Heartbeat { term, .. }
            | RaftMsg::HeartbeatResp { term, .. } => *term,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The Append matched. `durable_end`: the follower's durable end within the prefix
    /// matched with this leader (what counts for commit). `match_end`: the end of that
    /// matched prefix, including entries written or still being written (flow control).
    Ok { durable_end: u64, match_end: u64 },
    /// The follower's log does not contain the leader's entry at `prev_end - 1`.
    /// `diverging_epoch`/`diverging_end`: the follower's `end_for_epoch(prev_epoch)` with the
    /// end capped to min(its end, prev_end) (epoch 0 and its log start when it has none);
    /// `log_end`: its log end. `prev_end` echoes the rejected Append's.
    Mismatch {
        prev_end: u64,
        diverging_epoch: i32,
        diverging_end: u64,
        log_end: u64,
    },
    /// The Append's term is older than the follower's (in the response's `term`).
    StaleTerm,
}
