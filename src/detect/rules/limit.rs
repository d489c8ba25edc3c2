//! Limit rules (high-high, high, low, low-low) with hysteresis.
//!
//! Invariant: a high alarm is raised strictly above `limit` and, once raised, holds while the
//! value stays above `limit - deadband`; a low alarm mirrors that. So a value wobbling around
//! the limit by less than the deadband raises once.

use serde::Deserialize;

use super::Problem;

/// The message of a high or high-high rule that gives none.
pub const ABOVE_MESSAGE: &str = "{device} {point} = {value}{unit}, above the limit {limit}{unit}";
/// The message of a low or low-low rule that gives none.
pub const BELOW_MESSAGE: &str = "{device} {point} = {value}{unit}, below the limit {limit}{unit}";

/// `kind = "high_high"`, `"high"`, `"low"` or `"low_low"`: the kind says which side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// The limit, in engineering units.
    pub limit: f64,
    /// Hysteresis: how far back past the limit the value must go to clear.
    #[serde(default)]
    pub deadband: f64,
}

impl Limit {
    pub(super) fn check(&self, out: &mut Vec<Problem>) {
        super::finite(out, "limit", self.limit);
        super::non_negative(out, "deadband", self.deadband);
    }

    /// Whether `value` is past the limit (`above` for high limits), given whether the alarm
    /// is raised.
    pub fn holds(&self, value: f64, above: bool, raised: bool) -> bool {
        condition(value, self.limit, above, self.deadband, raised)
    }
}

/// Whether the limit condition holds for `value`, given whether the alarm is raised.
pub fn condition(value: f64, limit: f64, above: bool, deadband: f64, raised: bool) -> bool {
    let band = if raised { deadband } else { 0.0 };
    if above {
        value > limit - band
    } else {
        value < limit + band
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_holds_a_raised_alarm_inside_the_deadband() {
        assert!(!condition(90.0, 90.0, true, 2.0, false));
        assert!(condition(90.1, 90.0, true, 2.0, false));
        assert!(condition(88.5, 90.0, true, 2.0, true));
        assert!(!condition(88.0, 90.0, true, 2.0, true));
        assert!(condition(9.0, 10.0, false, 1.0, false));
        assert!(condition(10.5, 10.0, false, 1.0, true));
        assert!(!condition(11.0, 10.0, false, 1.0, true));
    }
}
