//! Simulated time. One monotonic clock (`mono_ms`) drives every event of a run; each node
//! has its own wall clock (`wall_ms` = epoch + mono + that node's skew), which the clock-skew
//! fault jumps forward or backward. Invariant: `mono_ms` never decreases; `wall_ms` may.

use gregor_engine::Time;

/// Wall-clock time at `mono_ms == 0`: 2024-01-01T00:00:00Z, so record timestamps look real.
pub const WALL_EPOCH_MS: i64 = 1_704_067_200_000;

/// The simulation's monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    mono_ms: u64,
}

impl SimClock {
    pub fn now_ms(&self) -> u64 {
        self.mono_ms
    }

    /// Moves time forward to `to_ms` (events are processed in time order).
    pub fn advance_to(&mut self, to_ms: u64) {
        assert!(
            to_ms >= self.mono_ms,
            "time went backwards: {} -> {to_ms}",
            self.mono_ms
        );
        self.mono_ms = to_ms;
    }
}

/// One node's wall clock: an offset from the true time that skew faults change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    pub skew_ms: i64,
}

impl WallClock {
    /// What the node is told the time is.
    pub fn time(&self, mono_ms: u64) -> Time {
        Time {
            mono_ms,
            wall_ms: true_wall_ms(mono_ms) + self.skew_ms,
        }
    }

    /// Jumps the wall clock by `delta_ms` (may be negative), never before the Unix epoch.
    pub fn jump(&mut self, mono_ms: u64, delta_ms: i64) {
        let wall = true_wall_ms(mono_ms) + self.skew_ms + delta_ms;
        let floor_delta = if wall < 0 { -wall } else { 0 };
        self.skew_ms += delta_ms + floor_delta;
    }
}

/// The wall time an unskewed observer (the clients) sees.
pub fn true_wall_ms(mono_ms: u64) -> i64 {
    WALL_EPOCH_MS + mono_ms as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_moves_wall_but_not_mono() {
        let mut c = WallClock::default();
        let t0 = c.time(1000);
        c.jump(1000, -5000);
        let t1 = c.time(1000);
        assert_eq!(t0.mono_ms, t1.mono_ms);
        assert_eq!(t1.wall_ms, t0.wall_ms - 5000);
        c.jump(1000, i64::MIN / 2);
        assert!(c.time(1000).wall_ms >= 0);
    }
}
