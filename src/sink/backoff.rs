//! Waits between reconnects and retries: doubling from a minimum to a cap, each one drawn at
//! random from the upper half of its step.
//!
//! Without the randomness every gateway that lost the same broker or platform retries on the
//! same schedule, and the recovered server takes the whole fleet at once on every step.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: SmallRng,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self::with_rng(min, max, SmallRng::from_os_rng())
    }

    fn with_rng(min: Duration, max: Duration, rng: SmallRng) -> Self {
        Self {
            min,
            max: max.max(min),
            step: min,
            rng,
        }
    }

    /// The next wait: between half the current step and the step, which then doubles.
    pub(crate) fn next(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.max);
        let nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(nanos / 2..=nanos))
    }

    /// Back to the first step, after a success.
    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(min_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        Backoff::with_rng(
            Duration::from_millis(min_ms),
            Duration::from_millis(max_ms),
            SmallRng::seed_from_u64(seed),
        )
    }

    #[test]
    fn each_wait_is_in_the_upper_half_of_a_step_that_doubles_to_its_cap() {
        for seed in 0..50 {
            let mut b = seeded(100, 700, seed);
            for step in [100, 200, 400, 700, 700] {
                let wait = b.next().as_millis();
                assert!(
                    (step / 2..=step).contains(&wait),
                    "seed {seed}: {wait} ms for step {step}"
                );
            }
            b.reset();
            assert!(b.next() <= Duration::from_millis(100), "seed {seed}: reset");
        }
    }

    #[test]
    fn gateways_on_the_same_schedule_do_not_retry_together() {
        // Ten gateways (ten seeds) at their fourth retry: the waits spread over the step.
        let waits: Vec<Duration> = (0..10)
            .map(|seed| {
                let mut b = seeded(1000, 60_000, seed);
                for _ in 0..3 {
                    b.next();
                }
                b.next()
            })
            .collect();
        let (lo, hi) = (waits.iter().min(), waits.iter().max());
        let spread = hi.zip(lo).map(|(h, l)| *h - *l);
        assert!(
            spread >= Some(Duration::from_millis(1000)),
            "waits {waits:?} spread only {spread:?} over an 8 s step"
        );
    }

    #[test]
    fn a_cap_below_the_minimum_is_the_minimum() {
        let mut b = seeded(500, 100, 1);
        for _ in 0..3 {
            assert!(b.next() <= Duration::from_millis(500));
        }
    }
}
