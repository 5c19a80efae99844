//! The one backoff schedule: delays that start at `initial` and grow by `multiplier` per
//! failure, capped at `max`, optionally jittered. Step retries (with the step's own
//! `retry` settings), hook deliveries and the runner's commit retries all draw their
//! delays from it.

use std::time::Duration;

/// How a delay is spread, so that many clients retrying at once do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    None,
    /// Uniform in `[0, delay]` (a step's `retry.jitter`).
    Full,
    /// Uniform in `[delay / 2, delay]`: spread, but never much sooner than planned.
    Half,
}

/// A capped exponential schedule; `delay(1)` is the delay after the first failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
}

impl Backoff {
    /// A schedule doubling from `initial` up to `max`.
    pub fn doubling(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            multiplier: 2.0,
            max,
        }
    }

    /// [`Self::delay`] spread by `jitter`; `unit` is a uniform draw from `[0, 1)`.
    pub fn jittered(&self, failures: u32, jitter: Jitter, unit: f64) -> Duration {
        let delay = self.delay(failures);
        let unit = unit.clamp(0.0, 1.0);
        match jitter {
            Jitter::None => delay,
            Jitter::Full => delay.mul_f64(unit),
            Jitter::Half => delay / 2 + delay.mul_f64(unit / 2.0),
        }
    }

    /// The delay after `failures` consecutive failures (`0` and `1` both give `initial`).
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let ms = self.initial.as_secs_f64() * 1000.0 * self.multiplier.powi(exponent);
        let max_ms = self.max.as_secs_f64() * 1000.0;
        Duration::from_millis(ms.min(max_ms) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_geometrically_up_to_the_cap() {
        let b = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u64> = (1..=6).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(0), b.delay(1));
    }

    #[test]
    fn jitter_spreads_the_delay_within_its_band() {
        let b = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.jittered(2, Jitter::None, 0.3), Duration::from_millis(200));
        assert_eq!(b.jittered(2, Jitter::Full, 0.5), Duration::from_millis(100));
        assert_eq!(b.jittered(2, Jitter::Half, 0.0), Duration::from_millis(100));
        assert_eq!(b.jittered(2, Jitter::Half, 1.0), Duration::from_millis(200));
    }

    #[test]
    fn a_huge_failure_count_stays_at_the_cap() {
        let b = Backoff::doubling(Duration::from_millis(50), Duration::from_secs(5));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5));
    }
}
