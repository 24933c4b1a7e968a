//! The follower side of replication: matching an Append against our (virtual) log,
//! skipping what we have, truncating a divergent suffix, asking the engine to append the
//! rest, and acknowledging only what is durable.
//!
//! Invariants: `matched_end` (the prefix equal to this term's leader's log) never shrinks
//! within a term and no truncation ever cuts into it or below `commit_end`; an `Ok` carries
//! at most the durable end of the actual log within the matched prefix; `commit_end` is
//! `min(leader's commit_end, matched_end)`, capped at what the actual log already holds.

use super::core::RaftCore;
use super::msg::{AppendResult, Entry, RaftMsg};
use super::vlog::Span;
use super::{NodeId, RaftAction, RaftLog};

impl RaftCore {
    /// An Append of our term from our leader (the caller checked both).
    pub(super) fn on_append(
        &mut self,
        prev_end: u64,
        prev_epoch: i32,
        commit_end: u64,
        entries: Vec<Entry>,
        log: &impl RaftLog,
        out: &mut Vec<RaftAction>,
    ) {
        let leader = self.leader.expect("an Append is processed only with a leader");
        if let Err(why) = check_append_shape(self.term, prev_end, prev_epoch, &entries) {
            tracing::warn!(me = self.me, leader, why, "malformed Append ignored");
            return;
        }
        self.leader_commit_end = self.leader_commit_end.max(commit_end);
        if !self.prev_matches(prev_end, prev_epoch, log) {
            let result = self.mismatch_hint(prev_end, prev_epoch, log);
            self.send(
                leader,
                RaftMsg::AppendResp {
                    term: self.term,
                    result,
                },
                out,
            );
            return;
        }
        if !self.apply_entries(&entries, log, out) {
            return; // must wait for pending log writes; the leader retries
        }
        let msg_end = entries.last().map_or(prev_end, Entry::end);
        self.matched_end = self.matched_end.max(msg_end);
        self.advance_follower_commit(log);
        let durable_end = self.follower_ack(log);
        self.acked_end = self.acked_end.max(durable_end);
        self.send_append_ok(leader, durable_end, out);
    }

    /// Acknowledges the matched prefix up to `durable_end` to `leader`.
    fn send_append_ok(&mut self, leader: NodeId, durable_end: u64, out: &mut Vec<RaftAction>) {
        let result = AppendResult::Ok {
            durable_end,
            match_end: self.matched_end,
        };
        self.send(
            leader,
            RaftMsg::AppendResp {
                term: self.term,
                result,
            },
            out,
        );
    }

    /// A Heartbeat of our term from our leader: learn its commit point and report ours.
    pub(super) fn on_heartbeat(&mut self, commit_end: u64, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        let leader = self.leader.expect("a Heartbeat is processed only with a leader");
        self.leader_commit_end = self.leader_commit_end.max(commit_end);
        self.advance_follower_commit(log);
        let durable_end = self.follower_ack(log);
        self.acked_end = self.acked_end.max(durable_end);
        let log_end = self.vlog(log).end();
        self.send(
            leader,
            RaftMsg::HeartbeatResp {
                term: self.term,
                durable_end,
                log_end,
            },
            out,
        );
    }

    /// Our log moved: acknowledge newly durable entries of the matched prefix.
    pub(super) fn follower_log_changed(&mut self, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        let Some(leader) = self.leader else { return };
        self.advance_follower_commit(log);
        let durable_end = self.follower_ack(log);
        if durable_end > self.acked_end {
            self.acked_end = durable_end;
            self.send_append_ok(leader, durable_end, out);
        }
    }

    /// What we may acknowledge: our durable end within the prefix matched with the leader.
    fn follower_ack(&self, log: &impl RaftLog) -> u64 {
        let v = self.vlog(log);
        let ours = if self.config.bugs.ack_before_fsync() {
            v.actual_prefix_end()
        } else {
            v.durable_end()
        };
        ours.min(self.matched_end)
    }

    /// Commits what the leader committed, within the matched prefix that our actual log
    /// already holds (so the high watermark never covers entries still being written, or a
    /// divergent suffix still being truncated).
    fn advance_follower_commit(&mut self, log: &impl RaftLog) {
        let held = self.vlog(log).actual_prefix_end();
        let commit_end = self.leader_commit_end.min(self.matched_end).min(held);
        if commit_end > self.commit_end {
            self.commit_end = commit_end;
        }
    }

    /// Our log holds the leader's entry just before `prev_end`.
    fn prev_matches(&self, prev_end: u64, prev_epoch: i32, log: &impl RaftLog) -> bool {
        let v = self.vlog(log);
        if prev_end == 0 {
            return true;
        }
        if prev_end > v.end() {
            return false;
        }
        if prev_end - 1 < v.start() {
            return true; // below our start everything is committed, hence the leader's too
        }
        v.epoch_at(prev_end - 1) == Some(prev_epoch)
    }

    /// Where our log may diverge from the leader's, for a rejected Append.
    fn mismatch_hint(&self, prev_end: u64, prev_epoch: i32, log: &impl RaftLog) -> AppendResult {
        let v = self.vlog(log);
        let log_end = v.end();
        let (diverging_epoch, diverging_end) = match v.end_for_epoch(prev_epoch) {
            Some((epoch, end)) => (epoch, end.min(log_end).min(prev_end)),
            None => (0, v.start()),
        };
        AppendResult::Mismatch {
            prev_end,
            diverging_epoch,
            diverging_end,
            log_end,
        }
    }

    /// Skips the entries we already have, truncates a divergent suffix and asks for the
    /// rest to be appended. False when a truncation must wait for pending log writes.
    fn apply_entries(&mut self, entries: &[Entry], log: &impl RaftLog, out: &mut Vec<RaftAction>) -> bool {
        let v = self.vlog(log);
        let (v_start, v_end) = (v.start(), v.end());
        // Entries reaching below our start overlap what we dropped, which was committed.
        let present = |e: &Entry| e.base < v_start || (e.last < v_end && v.epoch_at(e.last) == Some(e.epoch));
        let first_new = entries.iter().position(|e| !present(e)).unwrap_or(entries.len());
        let mut new = &entries[first_new..];
        if new.first().is_some_and(|e| e.base > v_end) {
            tracing::warn!(me = self.me, "Append leaves a gap after our log; ignored");
            return false;
        }
        let conflict = new.first().filter(|e| e.base < v_end).map(|e| e.base);
        // A recovered log knows batch boundaries only for recent batches; where it does
        // not, log matching guarantees the conflict is at one (both logs hold the same
        // batch up to the matched offset).
        let boundary = conflict.map(|from| v.batch_base(from).is_none_or(|b| b == from));
        if let Some(from) = conflict {
            if self.config.bugs.skip_truncation() {
                // Planted bug: keep the divergent suffix and append only past our end.
                let keep = new.iter().position(|e| e.base >= v_end).unwrap_or(new.len());
                new = &new[keep..];
                if new.first().is_some_and(|e| e.base != v_end) {
                    new = &[];
                }
            } else {
                if !self.overlay.is_idle() {
                    tracing::debug!(me = self.me, from, "truncation waits for pending log writes");
                    return false;
                }
                // A correct leader never asks for these; a faulty one (or a planted bug)
                // must not crash the follower, nor make it drop what it knows committed.
                if from < self.commit_end || from < self.matched_end {
                    tracing::error!(
                        me = self.me,
                        from,
                        commit_end = self.commit_end,
                        matched_end = self.matched_end,
                        "a leader asked to truncate committed or matched entries; Append ignored"
                    );
                    return false;
                }
                if boundary != Some(true) {
                    tracing::error!(me = self.me, from, "divergence inside a batch; Append ignored");
                    return false;
                }
                tracing::info!(
                    me = self.me,
                    from,
                    log_end = v_end,
                    "truncating a divergent suffix"
                );
                out.push(RaftAction::Truncate { from });
                self.overlay.truncate(log, from);
            }
        }
        if !new.is_empty() {
            let spans = new.iter().map(|e| Span {
                base: e.base,
                last: e.last,
                epoch: e.epoch,
            });
            self.overlay.append(log, spans);
            out.push(RaftAction::Append {
                entries: new.to_vec(),
            });
        }
        true
    }
}

/// An Append from the network is well formed: entries contiguous from `prev_end`, each
/// `base <= last`, epochs non-decreasing from `prev_epoch` and at most the leader's term.
fn check_append_shape(
    term: i32,
    prev_end: u64,
    prev_epoch: i32,
    entries: &[Entry],
) -> Result<(), &'static str> {
    if prev_epoch > term {
        return Err("prev_epoch above the leader's term");
    }
    let (mut next, mut epoch) = (prev_end, prev_epoch);
    for e in entries {
        if e.base != next {
            return Err("entries are not contiguous from prev_end");
        }
        if e.last < e.base || e.last == u64::MAX {
            return Err("entry offsets out of range");
        }
        if e.epoch < epoch || e.epoch > term {
            return Err("entry epochs out of order or above the leader's term");
        }
        next = e.end();
        epoch = e.epoch;
    }
    Ok(())
}
