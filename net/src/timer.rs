//! The engine's one timer: the earliest pending `SetTimer` plus a safety-net tick every
//! [`TICK_INTERVAL_MS`]. Later `SetTimer`s than the pending one are absorbed by it (the engine
//! re-arms on the `Tick` it gets, and a spurious `Tick` is harmless).

/// The engine gets a `Tick` at least this often, whatever it asked for.
pub(crate) const TICK_INTERVAL_MS: u64 = 100;

#[derive(Debug, Default)]
pub(crate) struct Timer {
    earliest_ms: Option<u64>,
    last_tick_ms: u64,
}

impl Timer {
    /// Remembers `at_mono_ms` if it is earlier than what is pending.
    pub(crate) fn set(&mut self, at_mono_ms: u64) {
        self.earliest_ms = Some(self.earliest_ms.map_or(at_mono_ms, |e| e.min(at_mono_ms)));
    }

    /// When the next `Tick` is due.
    pub(crate) fn deadline_ms(&self) -> u64 {
        let safety = self.last_tick_ms.saturating_add(TICK_INTERVAL_MS);
        self.earliest_ms.map_or(safety, |e| e.min(safety))
    }

    /// True (and the timer consumed) when a `Tick` is due at `now_ms`.
    pub(crate) fn take_due(&mut self, now_ms: u64) -> bool {
        if now_ms < self.deadline_ms() {
            return false;
        }
        if self.earliest_ms.is_some_and(|e| e <= now_ms) {
            self.earliest_ms = None;
        }
        self.last_tick_ms = now_ms;
        debug_assert!(self.deadline_ms() > now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_wins_and_is_consumed() {
        let mut t = Timer::default();
        t.set(50);
        t.set(70);
        t.set(30);
        assert_eq!(t.deadline_ms(), 30);
        assert!(!t.take_due(29));
        assert!(t.take_due(30));
        assert_eq!(t.deadline_ms(), 130, "only the safety tick is left");
    }

    #[test]
    fn safety_tick_keeps_a_later_timer() {
        let mut t = Timer::default();
        t.set(1_000);
        assert!(t.take_due(100));
        assert_eq!(t.deadline_ms(), 200);
        t.take_due(950);
        assert_eq!(t.deadline_ms(), 1_000);
        assert!(t.take_due(1_000));
        assert_eq!(t.deadline_ms(), 1_100);
    }
}
