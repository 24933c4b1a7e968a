//! The leader side of replication: probing each follower for the point where its log
//! matches ours, then streaming Appends within the in-flight byte bound, moving back on
//! mismatches, and advancing `commit_end` over durable copies on a majority of voters.
//!
//! Invariants: per follower at most one `NeedEntries` is outstanding, at most one Append is
//! in flight in Probe mode, and the unacknowledged bytes stay within `inflight_bytes_max`
//! (a single larger batch goes alone); a mismatch moves `next` strictly back and never below
//! the follower's durable match; `commit_end` only moves forward, onto an entry of our term.
//!
//! Snapshots are not implemented: a follower that needs entries below our log start is
//! marked `needs_snapshot` and left alone (logged once). Heartbeats still reach it, so it
//! keeps following us, but nothing else is emitted for it: no retry loop.

use super::core::RaftCore;
use super::msg::{AppendResult, Entry, RaftMsg};
use super::progress::Mode;
use super::{quorum, NodeId, RaftAction, RaftLog};

impl RaftCore {
    /// The node-level heartbeat: a Heartbeat to every follower, and stalled replication
    /// retried.
    pub(super) fn leader_heartbeat(&mut self, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in ids {
            let msg = RaftMsg::Heartbeat {
                term: self.term,
                commit_end: self.commit_end,
            };
            self.send(to, msg, out);
            self.maybe_send(to, log, out);
        }
    }

    /// Our log grew or became more durable: commit and replicate.
    pub(super) fn leader_log_changed(&mut self, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        self.advance_leader_commit(log);
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in ids {
            self.maybe_send(to, log, out);
        }
    }

    /// An empty Append probing whether `to` has our entry just before `prev_end` (our end).
    pub(super) fn send_probe_at_end(
        &mut self,
        to: NodeId,
        prev_end: u64,
        prev_epoch: i32,
        out: &mut Vec<RaftAction>,
    ) {
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        assert_eq!(p.mode, Mode::Probe);
        p.probe_sent = true;
        let msg = RaftMsg::Append {
            term: self.term,
            prev_end,
            prev_epoch,
            commit_end: self.commit_end,
            entries: Vec::new(),
        };
        self.send(to, msg, out);
    }

    /// The epoch of our entry just before `prev_end`, as an Append starting there carries;
    /// None when it is below our log start (only a snapshot could help).
    fn prev_epoch_for(&self, prev_end: u64, log: &impl RaftLog) -> Option<i32> {
        let v = self.vlog(log);
        if prev_end == 0 {
            return Some(0);
        }
        if prev_end > v.start() {
            return v.epoch_at(prev_end - 1);
        }
        (prev_end == v.start() && v.end() == v.start()).then(|| v.last_epoch())
    }

    fn mark_needs_snapshot(&mut self, to: NodeId) {
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        if !p.needs_snapshot {
            tracing::warn!(
                me = self.me,
                to,
                next = p.next,
                "follower needs a snapshot (unsupported); not replicating to it"
            );
        }
        p.needs_snapshot = true;
        p.need_outstanding = false;
    }

    /// Asks the engine for the next entries for `to`, or probes, if the mode allows.
    pub(super) fn maybe_send(&mut self, to: NodeId, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        let Some(p) = self.progress.get(&to) else { return };
        if p.needs_snapshot || p.need_outstanding {
            return;
        }
        let v = self.vlog(log);
        let (v_start, v_end) = (v.start(), v.end());
        let next = p.next.min(v_end);
        if next < v_start {
            self.mark_needs_snapshot(to);
            return;
        }
        let Some(prev_epoch) = self.prev_epoch_for(next, log) else {
            self.mark_needs_snapshot(to);
            return;
        };
        let (inflight_max, append_max) = (self.config.inflight_bytes_max, self.config.append_bytes_max);
        let max_bytes = match p.mode {
            Mode::Probe if p.probe_sent => return,
            Mode::Probe if next == v_end => {
                self.send_probe_at_end(to, next, prev_epoch, out);
                return;
            }
            Mode::Probe => append_max.min(inflight_max),
            Mode::Replicate if next == v_end => return,
            Mode::Replicate => {
                let room = inflight_max.saturating_sub(p.inflight_bytes);
                if room == 0 {
                    return;
                }
                append_max.min(room)
            }
        };
        let p = self.progress.get_mut(&to).expect("checked above");
        p.next = next;
        p.need_outstanding = true;
        out.push(RaftAction::NeedEntries {
            to,
            from: next,
            max_bytes,
        });
    }

    /// The engine's answer to our `NeedEntries` for `to`: send what fits.
    pub(super) fn leader_send_entries(
        &mut self,
        to: NodeId,
        entries: Vec<Entry>,
        log: &impl RaftLog,
        out: &mut Vec<RaftAction>,
    ) {
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        if !p.need_outstanding || p.needs_snapshot {
            tracing::debug!(me = self.me, to, "unrequested entries ignored");
            return;
        }
        p.need_outstanding = false;
        let next = p.next;
        let mut entries: Vec<Entry> = entries.into_iter().skip_while(|e| e.last < next).collect();
        if entries.first().is_none_or(|e| e.base != next) {
            // The log moved meanwhile (or the answer is misaligned): retried on the next
            // heartbeat or log change, never in a loop.
            tracing::debug!(
                me = self.me,
                to,
                next,
                "entries do not start at next; retrying later"
            );
            return;
        }
        if !entries
            .windows(2)
            .all(|w| w[1].base == w[0].end() && w[1].epoch >= w[0].epoch)
            || entries.iter().any(|e| e.epoch > self.term || e.last < e.base)
        {
            tracing::error!(me = self.me, to, "engine returned malformed entries; ignored");
            return;
        }
        let Some(prev_epoch) = self.prev_epoch_for(next, log) else {
            self.mark_needs_snapshot(to);
            return;
        };
        let p = self.progress.get_mut(&to).expect("checked above");
        let (inflight_max, append_max) = (self.config.inflight_bytes_max, self.config.append_bytes_max);
        // Whole batches: the first one even if larger than an Append should carry, the
        // following ones within `append_bytes_max`; all within the in-flight room, except
        // that a batch larger than the whole bound goes alone when nothing else is in flight.
        let room = inflight_max.saturating_sub(p.inflight_bytes);
        let (mut take, mut total) = (0usize, 0u64);
        for e in &entries {
            let len = e.bytes.len() as u64;
            let fits = total + len <= room && (take == 0 || total + len <= append_max);
            let alone = take == 0 && p.inflight.is_empty();
            if !(fits || alone) {
                break;
            }
            total += len;
            take += 1;
        }
        if take == 0 {
            return; // waits for acknowledgements to free room
        }
        entries.truncate(take);
        let end = entries[take - 1].end();
        p.push_inflight(end, total, self.now_ms);
        assert!(
            p.inflight_bytes <= inflight_max || p.inflight.len() == 1,
            "in-flight bytes within the bound, except one oversized batch alone"
        );
        let mode = p.mode;
        match mode {
            Mode::Probe => p.probe_sent = true,
            Mode::Replicate => p.next = end,
        }
        let msg = RaftMsg::Append {
            term: self.term,
            prev_end: next,
            prev_epoch,
            commit_end: self.commit_end,
            entries,
        };
        self.send(to, msg, out);
        if mode == Mode::Replicate {
            self.maybe_send(to, log, out);
        }
    }

    pub(super) fn on_append_resp(
        &mut self,
        from: NodeId,
        result: AppendResult,
        log: &impl RaftLog,
        out: &mut Vec<RaftAction>,
    ) {
        let v_end = self.vlog(log).end();
        let now_ms = self.now_ms;
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.last_heard_ms = now_ms;
        match result {
            AppendResult::StaleTerm => {} // its term was higher: we already stepped down
            AppendResult::Ok {
                durable_end,
                match_end,
            } => {
                let match_end = match_end.min(v_end);
                p.durable_end = p.durable_end.max(durable_end.min(match_end));
                p.match_end = p.match_end.max(match_end).max(p.durable_end);
                match p.mode {
                    Mode::Probe => p.replicate_from(p.match_end),
                    Mode::Replicate => {
                        p.release_through(p.match_end);
                        p.next = p.next.max(p.match_end);
                    }
                }
                self.advance_leader_commit(log);
                self.maybe_send(from, log, out);
            }
            AppendResult::Mismatch {
                prev_end,
                diverging_epoch,
                diverging_end,
                log_end,
            } => {
                self.on_mismatch(
                    from,
                    prev_end,
                    diverging_epoch,
                    diverging_end.min(log_end),
                    log,
                    out,
                );
            }
        }
    }

    /// `from` lacks our entry before `prev_end`; its log may match ours up to `hint_end`
    /// within its epoch `diverging_epoch`. Moves `next` strictly back and probes there.
    fn on_mismatch(
        &mut self,
        from: NodeId,
        prev_end: u64,
        diverging_epoch: i32,
        hint_end: u64,
        log: &impl RaftLog,
        out: &mut Vec<RaftAction>,
    ) {
        let v = self.vlog(log);
        let (v_start, v_end) = (v.start(), v.end());
        let ours = v.end_for_epoch(diverging_epoch);
        let Some(p) = self.progress.get(&from) else { return };
        let stale = prev_end == 0
            || prev_end <= p.durable_end
            || match p.mode {
                Mode::Probe => prev_end != p.next,
                Mode::Replicate => prev_end < p.match_end,
            };
        if stale {
            return; // an answer to an Append older than what we know
        }
        let hint_end = hint_end.min(prev_end);
        let mut next = match ours {
            Some((_, end)) => end.min(hint_end),
            None => v_start.min(hint_end),
        };
        if next >= prev_end {
            next = prev_end - 1;
        }
        next = next.max(p.durable_end);
        if next < v_start {
            self.mark_needs_snapshot(from);
            return;
        }
        if next < v_end {
            next = self.vlog(log).batch_base(next).unwrap_or(next);
        }
        assert!(next < prev_end, "a mismatch moves next strictly back");
        tracing::debug!(me = self.me, to = from, prev_end, next, "mismatch; probing back");
        let p = self.progress.get_mut(&from).expect("checked above");
        p.probe_at(next);
        self.maybe_send(from, log, out);
    }

    pub(super) fn on_heartbeat_resp(
        &mut self,
        from: NodeId,
        durable_end: u64,
        log_end: u64,
        log: &impl RaftLog,
        out: &mut Vec<RaftAction>,
    ) {
        let v = self.overlay.view(log); // a field borrow, disjoint from `progress`
        let v_end = v.end();
        let now_ms = self.now_ms;
        let retry_ms = 2 * self.config.heartbeat_interval_ms;
        let snapped = |x: u64| {
            if x < v_end {
                v.batch_base(x).unwrap_or(x)
            } else {
                v_end
            }
        };
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.last_heard_ms = now_ms;
        // A follower acknowledging less than it did has restarted: it must match again
        // before it can acknowledge (or learn the commit point).
        let forgot = durable_end < p.durable_end;
        p.durable_end = p.durable_end.max(durable_end.min(v_end));
        p.match_end = p.match_end.max(p.durable_end);
        match p.mode {
            Mode::Probe => {
                if p.probe_sent {
                    // The probe or its answer may be lost: probe again (at most once per
                    // heartbeat; duplicates are recognised as stale).
                    let next = p.next;
                    p.probe_at(next);
                }
            }
            Mode::Replicate => {
                // Its durable end acknowledges what it covers (the Ok may have been lost).
                p.release_through(p.match_end);
                // An Append unacknowledged long after it should have arrived, or nothing in
                // flight while the follower lacks what we sent: Appends or their answers
                // were lost, or the follower restarted (and must match again before it can
                // acknowledge). Probe from its end.
                let stalled = forgot
                    || match p.inflight.front() {
                        Some(f) => now_ms >= f.sent_ms + retry_ms,
                        None => log_end < p.next,
                    };
                if stalled && !p.need_outstanding {
                    let next = snapped(log_end.min(p.next).max(p.durable_end));
                    p.probe_at(next);
                }
            }
        }
        self.advance_leader_commit(log);
        self.maybe_send(from, log, out);
    }

    /// Commits up to the largest end that a majority of voters holds durably, if our entry
    /// just before it is of our term.
    pub(super) fn advance_leader_commit(&mut self, log: &impl RaftLog) {
        assert!(self.is_voter(self.me), "only voters lead");
        let v = self.vlog(log);
        let own_durable_end = v.durable_end();
        let candidate = if self.config.bugs.commit_on_minority() {
            own_durable_end
        } else {
            self.nth_durable_end(quorum(&self.voters), own_durable_end)
        };
        if candidate > self.commit_end && v.epoch_at(candidate - 1) == Some(self.term) {
            tracing::trace!(me = self.me, commit_end = candidate, "commit advanced");
            self.commit_end = candidate;
        }
    }
}
