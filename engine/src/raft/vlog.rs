//! The follower's view of its log with its own outstanding `Truncate`/`Append` actions
//! applied: the "virtual log" every Raft decision is made on, while the engine may still be
//! writing.
//!
//! Invariants: at most one truncation is outstanding and it precedes every pending append
//! (the core only asks for a truncation when nothing is pending); the virtual log is
//! `actual[..from]` followed by the pending spans; once the truncation is applied,
//! `actual[..actual.end()]` is a prefix of the virtual log. An entry is known applied when
//! the actual log holds its last offset with its epoch (log matching makes that exact).

use std::collections::VecDeque;

use super::RaftLog;

/// The offsets and epoch of one batch, without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub base: u64,
    pub last: u64,
    pub epoch: i32,
}

impl Span {
    pub fn end(&self) -> u64 {
        self.last + 1
    }
}

/// Log actions emitted but not yet seen applied.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    /// The virtual log is the actual log below `from`, then `spans`.
    from: u64,
    /// A `Truncate { from }` has not been seen applied yet: the actual log may still hold a
    /// divergent suffix at and after `from`.
    trunc_pending: bool,
    /// Entries asked to be appended, contiguous from `from`.
    spans: VecDeque<Span>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Overlay {
    pending: Option<Pending>,
}

impl Overlay {
    /// Nothing is pending: the virtual log is the actual log.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }

    /// Records an emitted `Truncate { from }`. Only when idle, so the truncation precedes
    /// every pending append.
    pub fn truncate(&mut self, log: &impl RaftLog, from: u64) {
        assert!(
            self.is_idle(),
            "one outstanding truncation at a time, before any pending append"
        );
        assert!(from < log.end(), "a truncation must drop something");
        self.pending = Some(Pending {
            from,
            trunc_pending: true,
            spans: VecDeque::new(),
        });
    }

    /// Records an emitted `Append` of `spans` (contiguous, starting at the virtual end).
    pub fn append(&mut self, log: &impl RaftLog, spans: impl IntoIterator<Item = Span>) {
        let end = self.view(log).end();
        let pending = self.pending.get_or_insert_with(|| Pending {
            from: log.end(),
            trunc_pending: false,
            spans: VecDeque::new(),
        });
        let mut next = end;
        for s in spans {
            assert_eq!(s.base, next, "pending appends are contiguous");
            assert!(s.base <= s.last);
            next = s.end();
            pending.spans.push_back(s);
        }
    }

    /// Folds in what the engine has applied since the last call.
    pub fn sync(&mut self, log: &impl RaftLog) {
        let Some(p) = self.pending.as_mut() else { return };
        if p.trunc_pending {
            let front_applied = p.spans.front().is_some_and(|s| applied(log, s));
            if log.end() <= p.from || front_applied {
                p.trunc_pending = false;
            }
        }
        if p.trunc_pending {
            return;
        }
        while let Some(s) = p.spans.front() {
            if !applied(log, s) {
                break;
            }
            p.from = s.end();
            p.spans.pop_front();
        }
        if p.spans.is_empty() {
            self.pending = None;
        }
    }

    pub fn view<'a, L: RaftLog>(&'a self, log: &'a L) -> VirtualLog<'a, L> {
        VirtualLog {
            log,
            pending: self.pending.as_ref(),
        }
    }
}

/// The actual log holds `s` (its last offset, with its epoch, in a batch starting at its base).
fn applied(log: &impl RaftLog, s: &Span) -> bool {
    log.epoch_at(s.last) == Some(s.epoch) && log.batch_base(s.last) == Some(s.base)
}

/// The actual log with the pending actions applied.
pub(crate) struct VirtualLog<'a, L: RaftLog> {
    log: &'a L,
    pending: Option<&'a Pending>,
}

impl<L: RaftLog> VirtualLog<'_, L> {
    /// The end of the actual log's prefix that is also a prefix of the virtual log (so its
    /// durable part may be acknowledged).
    pub fn actual_prefix_end(&self) -> u64 {
        match self.pending {
            Some(p) if p.trunc_pending => p.from.min(self.log.end()),
            _ => self.log.end(),
        }
    }

    fn span_at(&self, offset: u64) -> Option<&Span> {
        let p = self.pending?;
        if offset < p.from {
            return None;
        }
        let i = p.spans.partition_point(|s| s.last < offset);
        p.spans.get(i).filter(|s| s.base <= offset)
    }

    /// The epoch of the virtual entry just before `from` (the actual log's), if any.
    fn prefix_last_epoch(&self, from: u64) -> Option<i32> {
        if from == 0 {
            return None;
        }
        self.log.epoch_at(from - 1)
    }
}

impl<L: RaftLog> RaftLog for VirtualLog<'_, L> {
    fn start(&self) -> u64 {
        self.log.start()
    }

    fn end(&self) -> u64 {
        match self.pending {
            None => self.log.end(),
            Some(p) => p.spans.back().map_or(p.from, Span::end),
        }
    }

    /// The actual durable end, within the prefix shared with the virtual log.
    fn durable_end(&self) -> u64 {
        self.log.durable_end().min(self.actual_prefix_end())
    }

    fn epoch_at(&self, offset: u64) -> Option<i32> {
        match self.pending {
            Some(p) if offset >= p.from => self.span_at(offset).map(|s| s.epoch),
            _ => self.log.epoch_at(offset),
        }
    }

    fn last_epoch(&self) -> i32 {
        match self.pending {
            None => self.log.last_epoch(),
            Some(p) => match p.spans.back() {
                Some(s) => s.epoch,
                None => self
                    .prefix_last_epoch(p.from)
                    .unwrap_or_else(|| self.log.last_epoch()),
            },
        }
    }

    fn end_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        let Some(p) = self.pending else {
            return self.log.end_for_epoch(epoch);
        };
        // Epochs never decrease along a log, so a pending span with epoch <= `epoch` beats
        // anything in the prefix.
        if let Some(i) = p.spans.iter().rposition(|s| s.epoch <= epoch) {
            let found = p.spans[i].epoch;
            let end = p
                .spans
                .iter()
                .skip(i + 1)
                .find(|s| s.epoch > found)
                .map_or(self.end(), |s| s.base);
            return Some((found, end));
        }
        // The answer lies in the prefix `actual[..from]`; the actual log past `from` may be
        // a divergent suffix, so it must not be consulted.
        match self.prefix_last_epoch(p.from) {
            None => None,
            Some(last) if last <= epoch => Some((last, p.from)),
            Some(_) => self.log.end_for_epoch(epoch).map(|(e, end)| (e, end.min(p.from))),
        }
    }

    fn batch_base(&self, offset: u64) -> Option<u64> {
        match self.pending {
            Some(p) if offset >= p.from => self.span_at(offset).map(|s| s.base),
            _ => self.log.batch_base(offset),
        }
    }
}
