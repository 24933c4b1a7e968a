//! Reconnect delays: exponential from `min` to `max`, each drawn uniformly from the upper half
//! of its step ("equal jitter"), so nodes that lost a peer together do not redial in lockstep
//! yet never retry faster than half the step. The jitter comes from a seeded generator, so a
//! simulation replays the same delays.

use std::time::Duration;

/// The delay before each reconnect attempt of one link.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The step the next delay is drawn from; within `[min, max]`.
    step: Duration,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff that starts at `min`. Requires `0 < min <= max`.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        assert!(
            !min.is_zero() && min <= max,
            "backoff bounds are validated by PeerConfig"
        );
        Backoff {
            min,
            max,
            step: min,
            rng: SplitMix64(seed),
        }
    }

    /// The next delay, in `[step / 2, step]`; the step then doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        let half = step / 2;
        let spread_ns = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter_ns = if spread_ns == 0 {
            0
        } else {
            self.rng.next() % (spread_ns + 1)
        };
        self.step = (step * 2).min(self.max);
        let delay = half + Duration::from_nanos(jitter_ns);
        assert!(delay <= step && delay >= half);
        delay
    }

    /// Starts over from `min`, after a connection that stayed up.
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

/// Steele, Lea and Flood's SplitMix64: tiny, seedable, good enough for jitter.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_max_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(50), Duration::from_millis(400));
        let mut b = Backoff::new(min, max, 7);
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let steps = [50, 100, 200, 400, 400, 400, 400, 400].map(Duration::from_millis);
        for (d, s) in delays.iter().zip(steps) {
            assert!(*d >= s / 2 && *d <= s, "{d:?} outside [{:?}, {s:?}]", s / 2);
        }
        assert!(
            delays[4..].windows(2).any(|w| w[0] != w[1]),
            "jittered: {delays:?}"
        );
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn same_seed_same_delays() {
        let d = |seed| {
            let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(1), seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(d(3), d(3));
        assert_ne!(d(3), d(4));
    }
}
