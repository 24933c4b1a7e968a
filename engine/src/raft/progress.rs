//! What a leader knows about one follower: where to send next, what it has matched and made
//! durable, and the Appends in flight to it.
//!
//! Invariants: `durable_end <= match_end` after every update from the follower; in
//! Replicate mode `inflight` holds the unacknowledged Appends in send order with strictly
//! increasing ends, and `inflight_bytes` is their total; in Probe mode at most one Append
//! (the probe) is in flight.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Looking for the point where the follower's log matches: one Append at a time.
    Probe,
    /// Matched: stream Appends without waiting, up to the in-flight byte bound.
    Replicate,
}

/// One Append sent and not yet acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Inflight {
    /// One past the last offset the Append carried.
    pub end: u64,
    pub bytes: u64,
    pub sent_ms: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The next offset to send (a batch boundary of the leader's log).
    pub next: u64,
    /// The follower's log matches ours below this (written or being written there).
    pub match_end: u64,
    /// The follower has our entries below this durably (what counts toward commit).
    pub durable_end: u64,
    pub mode: Mode,
    /// Probe mode: the probe Append is out and unanswered.
    pub probe_sent: bool,
    /// A `NeedEntries` for this follower awaits `send_entries` (at most one).
    pub need_outstanding: bool,
    pub inflight: VecDeque<Inflight>,
    pub inflight_bytes: u64,
    /// The last time any message of the current term came from this follower.
    pub last_heard_ms: u64,
    /// The follower needs entries below our log start: only a snapshot could help.
    pub needs_snapshot: bool,
}

impl Progress {
    pub fn new(next: u64, now_ms: u64) -> Self {
        Progress {
            next,
            match_end: 0,
            durable_end: 0,
            mode: Mode::Probe,
            probe_sent: false,
            need_outstanding: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            last_heard_ms: now_ms,
            needs_snapshot: false,
        }
    }

    pub fn push_inflight(&mut self, end: u64, bytes: u64, sent_ms: u64) {
        if let Some(back) = self.inflight.back() {
            assert!(back.end < end, "in-flight Appends have increasing ends");
        }
        self.inflight.push_back(Inflight { end, bytes, sent_ms });
        self.inflight_bytes += bytes;
    }

    /// Forgets the Appends the follower has received all of.
    pub fn release_through(&mut self, end: u64) {
        while let Some(f) = self.inflight.front() {
            if f.end > end {
                break;
            }
            self.inflight_bytes -= f.bytes;
            self.inflight.pop_front();
        }
        assert_eq!(self.inflight.is_empty(), self.inflight_bytes == 0);
    }

    /// Starts probing at `next`: whatever was in flight is presumed lost.
    pub fn probe_at(&mut self, next: u64) {
        self.mode = Mode::Probe;
        self.next = next;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.match_end = self.match_end.min(next).max(self.durable_end);
    }

    /// The probe matched at `match_end`: stream from there.
    pub fn replicate_from(&mut self, match_end: u64) {
        self.mode = Mode::Replicate;
        self.probe_sent = false;
        self.next = match_end;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_frees_only_fully_received_appends() {
        let mut p = Progress::new(0, 0);
        p.mode = Mode::Replicate;
        p.push_inflight(10, 100, 0);
        p.push_inflight(20, 50, 0);
        p.release_through(15);
        assert_eq!(p.inflight_bytes, 50);
        p.release_through(20);
        assert_eq!(p.inflight_bytes, 0);
        assert!(p.inflight.is_empty());
    }

    #[test]
    fn probing_never_forgets_durable_matches() {
        let mut p = Progress::new(30, 0);
        p.durable_end = 12;
        p.match_end = 25;
        p.probe_at(8);
        assert_eq!((p.next, p.match_end, p.mode), (8, 12, Mode::Probe));
    }
}
