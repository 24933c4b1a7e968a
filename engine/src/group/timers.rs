//! Keyed timers, as Kafka's coordinator timer: scheduling a key replaces its deadline,
//! cancelling removes it, and the handler of a fired key re-checks the state it acts on
//! (a stale timer is harmless).
//!
//! Invariant: `by_key` and `by_time` hold the same (key, deadline) pairs.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    /// A member's (or a KIP-394 pending member's) session deadline.
    Heartbeat { group: String, member: String },
    /// The end of a group's join phase (initial delay or rebalance timeout).
    Join { group: String },
    /// The deadline for every member of a new generation to send SyncGroup.
    Sync { group: String },
    /// The next offsets-retention sweep of a partition.
    Sweep { partition: i32 },
}

impl TimerKey {
    pub fn group(&self) -> Option<&str> {
        match self {
            TimerKey::Heartbeat { group, .. } | TimerKey::Join { group } | TimerKey::Sync { group } => {
                Some(group)
            }
            TimerKey::Sweep { .. } => None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    by_key: BTreeMap<TimerKey, u64>,
    by_time: BTreeSet<(u64, TimerKey)>,
}

impl Timers {
    pub fn schedule(&mut self, key: TimerKey, at_ms: u64) {
        if let Some(old) = self.by_key.insert(key.clone(), at_ms) {
            let removed = self.by_time.remove(&(old, key.clone()));
            assert!(removed, "timer indexes disagree");
        }
        self.by_time.insert((at_ms, key));
        debug_assert_eq!(self.by_key.len(), self.by_time.len());
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        if let Some(at) = self.by_key.remove(key) {
            let removed = self.by_time.remove(&(at, key.clone()));
            assert!(removed, "timer indexes disagree");
        }
    }

    /// Cancels every timer for which `pred` holds.
    pub fn cancel_where(&mut self, pred: impl Fn(&TimerKey) -> bool) {
        let gone: Vec<TimerKey> = self.by_key.keys().filter(|k| pred(k)).cloned().collect();
        for key in gone {
            self.cancel(&key);
        }
    }

    #[cfg(test)]
    pub fn deadline(&self, key: &TimerKey) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now_ms`, if any.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<TimerKey> {
        let (at, _) = self.by_time.first()?;
        if *at > now_ms {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(g: &str) -> TimerKey {
        TimerKey::Join { group: g.into() }
    }

    #[test]
    fn rescheduling_replaces_and_due_timers_pop_in_order() {
        let mut t = Timers::default();
        t.schedule(join("a"), 10);
        t.schedule(join("b"), 5);
        t.schedule(join("a"), 3);
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_deadline(), Some(3));
        assert_eq!(t.pop_due(2), None);
        assert_eq!(t.pop_due(5), Some(join("a")));
        assert_eq!(t.pop_due(5), Some(join("b")));
        assert_eq!(t.pop_due(100), None);
        t.schedule(join("c"), 1);
        t.cancel_where(|k| k.group() == Some("c"));
        assert_eq!(t.next_deadline(), None);
    }
}
