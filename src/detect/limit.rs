//! Limit rules (high-high, high, low, low-low) with hysteresis.
//!
//! Invariant: a high alarm is raised strictly above `limit` and, once raised, holds while the
//! value stays above `limit - deadband`; a low alarm mirrors that. So a value wobbling around
//! the limit by less than the deadband raises once.

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
