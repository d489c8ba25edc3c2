//! Rate-of-change rules: |Δvalue / Δt| over a window, in units per second or minute.
//!
//! The rate is measured between the newest sample and the newest one at least `window` older,
//! so poll jitter and single-sample noise over short spans do not masquerade as fast change.
//! Invariants: no verdict until the window has filled once; memory is bounded by
//! [`MAX_SAMPLES`].

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;

use super::Problem;
use crate::detect::engine::ms;

/// The message of a rate rule that gives none.
pub const MESSAGE: &str = "{device} {point} changing at {value}{unit} per {per}, limit {limit}";

/// `kind = "rate"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// The largest |rate| that is fine, in units per `per`.
    pub limit: f64,
    /// The unit of time of the rate.
    #[serde(default)]
    pub per: Per,
    /// The span the rate is measured over; `per` when absent.
    #[serde(default, deserialize_with = "super::optional_duration")]
    pub window: Option<Duration>,
    /// Hysteresis, in units per `per`.
    #[serde(default)]
    pub deadband: f64,
    /// The recent samples (running state).
    #[serde(skip)]
    pub state: RateState,
}

/// `rate` units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// Units per second.
    Second,
    /// Units per minute.
    #[default]
    Minute,
}

impl Rate {
    pub(super) fn check(&self, out: &mut Vec<Problem>) {
        super::finite(out, "limit", self.limit);
        if self.limit.is_finite() && self.limit <= 0.0 {
            out.push((
                "limit",
                "a rate limit must be above 0 (it applies to rises and falls alike)".to_owned(),
            ));
        }
        if self.window.is_some_and(|w| w.is_zero()) {
            out.push(("window", "must be longer than 0".to_owned()));
        }
        super::non_negative(out, "deadband", self.deadband);
    }

    /// The rate's unit of time.
    pub fn per(&self) -> Duration {
        match self.per {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
        }
    }

    /// The span the rate is measured over.
    pub fn window(&self) -> Duration {
        self.window.unwrap_or_else(|| self.per())
    }

    /// Adds a good sample at `at`: the rate, once the window has filled, and whether it
    /// breaks the limit given whether the alarm is raised.
    pub fn step(&mut self, at: i64, value: f64, raised: bool) -> Option<(f64, bool)> {
        let (window, per) = (ms(self.window()), ms(self.per()));
        let r = self.state.update(at, value, window, per)?;
        Some((r, condition(r, self.limit, self.deadband, raised)))
    }
}

/// Samples kept per rule and point; beyond it the oldest are dropped (window shortens).
pub const MAX_SAMPLES: usize = 4096;

/// Recent samples of one point.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RateState {
    samples: VecDeque<(i64, f64)>,
}

impl RateState {
    /// Adds a sample and returns the rate in units per `per_ms`, once the window has filled.
    pub fn update(&mut self, ts: i64, value: f64, window_ms: i64, per_ms: i64) -> Option<f64> {
        if self.samples.back().is_some_and(|&(t, _)| ts <= t) {
            // Out of order or repeated: keep the series monotonic.
            return None;
        }
        self.samples.push_back((ts, value));
        if self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
        // Keep exactly one sample at or before `ts - window`: the reference.
        while self.samples.len() > 2 && self.samples[1].0 <= ts - window_ms {
            self.samples.pop_front();
        }
        let &(t0, v0) = self.samples.front()?;
        if t0 > ts - window_ms || t0 == ts {
            return None;
        }
        Some((value - v0) / (ts - t0) as f64 * per_ms as f64)
    }
}

/// Whether |rate| breaks `limit`, with hysteresis once raised.
pub fn condition(rate: f64, limit: f64, deadband: f64, raised: bool) -> bool {
    rate.abs() > limit - if raised { deadband } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_measured_across_the_window() {
        let mut r = RateState::default();
        // 1 unit per second, sampled every second, window 10 s, per minute.
        let mut last = None;
        for i in 0..=20 {
            last = r.update(i * 1000, i as f64, 10_000, 60_000);
            if i < 10 {
                assert_eq!(last, None, "window not yet filled at {i}");
            }
        }
        assert_eq!(last, Some(60.0));
        assert!(condition(-61.0, 60.0, 0.0, false));
        assert!(!condition(59.0, 60.0, 0.0, false));
        assert!(condition(59.0, 60.0, 2.0, true));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut r = RateState::default();
        for i in 0..10_000 {
            r.update(i, 0.0, 1_000_000, 1000);
        }
        assert!(r.samples.len() <= MAX_SAMPLES);
    }
}
