//! Stuck-value rules: no change beyond a tolerance for a duration, while the device answers.
//!
//! Invariant: the reference moves to the new value whenever it differs by more than the
//! tolerance, so a slowly creeping value is not stuck, and the stuck time is measured from
//! the last real change.

use std::time::Duration;

use serde::Deserialize;

use super::Problem;

/// The message of a stuck rule that gives none.
pub const MESSAGE: &str = "{device} {point} stuck at {value}{unit}";

/// `kind = "stuck"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stuck {
    /// Changes smaller than this do not count as changes.
    #[serde(default)]
    pub tolerance: f64,
    /// How long the value must not change.
    #[serde(deserialize_with = "super::duration")]
    pub duration: Duration,
    /// The last real change (running state).
    #[serde(skip)]
    pub state: StuckState,
}

impl Stuck {
    pub(super) fn check(&self, out: &mut Vec<Problem>) {
        super::non_negative(out, "tolerance", self.tolerance);
    }

    /// Adds a good sample at `at`; whether the value has now been flat for `duration`.
    pub fn holds(&mut self, at: i64, value: f64) -> bool {
        let flat = self.state.update(at, value, self.tolerance);
        flat >= crate::detect::engine::ms(self.duration)
    }
}

/// The last real change of one point.
#[derive(Debug, Clone, Default)]
pub struct StuckState {
    reference: Option<(f64, i64)>,
}

impl StuckState {
    /// Adds a good sample; returns how long (ms) the value has not changed beyond `tolerance`.
    pub fn update(&mut self, ts: i64, value: f64, tolerance: f64) -> i64 {
        match self.reference {
            Some((v, since)) if (value - v).abs() <= tolerance => ts - since,
            _ => {
                self.reference = Some((value, ts));
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_time_counts_from_the_last_real_change() {
        let mut s = StuckState::default();
        assert_eq!(s.update(0, 5.0, 0.1), 0);
        assert_eq!(s.update(1000, 5.05, 0.1), 1000);
        assert_eq!(s.update(2000, 5.3, 0.1), 0);
        assert_eq!(s.update(5000, 5.3, 0.1), 3000);
    }
}
