//! Energy quotas per shift, day or month, with an early warning when the projected
//! end-of-period total crosses the quota (docs/design.md §6).
//!
//! Consumption arrives as closed ledger intervals; an interval counts in the period that
//! holds its start (intervals are aligned to the local clock, so they do not straddle local
//! midnight). The projection is the run rate: used so far ÷ time elapsed × period length.
//! Invariants: `used` only grows within a period and restarts at zero in the next; no
//! projection before `min_elapsed` of the period has passed, because the run rate of the
//! first minutes says little.

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;

/// The length of a quota period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaPeriod {
    /// Between consecutive shift starts (minutes after local midnight, sorted).
    Shift(Vec<u32>),
    /// A local calendar day.
    Day,
    /// A local calendar month.
    Month,
}

impl QuotaPeriod {
    /// `day`, `month` or `shift`, for messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Shift(_) => "shift",
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

fn midnight(tz: Tz, d: NaiveDate) -> Option<i64> {
    crate::clock::local_midnight(tz, d)
}

/// The local period `[start, end)` that holds `ts`.
pub fn bounds(period: &QuotaPeriod, tz: Tz, ts: i64) -> Option<(i64, i64)> {
    let local = chrono::DateTime::from_timestamp_millis(ts)?.with_timezone(&tz);
    let day = local.date_naive();
    match period {
        QuotaPeriod::Day => Some((midnight(tz, day)?, midnight(tz, day.succ_opt()?)?)),
        QuotaPeriod::Month => {
            let first = day.with_day(1)?;
            let next = first.checked_add_months(chrono::Months::new(1))?;
            Some((midnight(tz, first)?, midnight(tz, next)?))
        }
        QuotaPeriod::Shift(starts) => {
            // Shift starts of yesterday, today and tomorrow, as instants; pick the pair around ts.
            let mut instants = Vec::with_capacity(starts.len() * 3);
            for d in [day.pred_opt()?, day, day.succ_opt()?] {
                let m = midnight(tz, d)?;
                instants.extend(starts.iter().map(|s| m + i64::from(*s) * 60_000));
            }
            instants.sort_unstable();
            let i = instants.iter().rposition(|&s| s <= ts)?;
            Some((instants[i], *instants.get(i + 1)?))
        }
    }
}

/// One quota's running total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaState {
    period: Option<(i64, i64)>,
    used: f64,
}

impl QuotaState {
    /// Books `delta` consumed in the interval starting at `start_ms`.
    pub fn add(&mut self, period: &QuotaPeriod, tz: Tz, start_ms: i64, delta: f64) {
        let Some(b) = bounds(period, tz, start_ms) else {
            return;
        };
        if self.period != Some(b) {
            if self.period.is_some_and(|(s, _)| b.0 < s) {
                // Late data of a period already left: it cannot change the present one.
                return;
            }
            self.period = Some(b);
            self.used = 0.0;
        }
        if delta.is_finite() {
            self.used += delta;
        }
    }

    /// Used so far in the current period.
    pub fn used(&self) -> f64 {
        self.used
    }

    /// The run-rate projection of the period's total at `now`; `None` before `min_elapsed`
    /// (a share of the period) has passed or outside the period.
    pub fn projected(&self, now: i64, min_elapsed: f64) -> Option<f64> {
        let (start, end) = self.period?;
        let (elapsed, length) = ((now - start) as f64, (end - start) as f64);
        if !(elapsed > 0.0 && elapsed <= length) || elapsed < min_elapsed * length {
            return None;
        }
        Some(self.used * length / elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TZ: Tz = chrono_tz::Asia::Shanghai;
    /// 2026-10-01 00:00 +08:00.
    const OCT1: i64 = 1_790_784_000_000;
    const H: i64 = 3_600_000;

    #[test]
    fn periods_follow_the_local_calendar_and_shifts_wrap_midnight() {
        assert_eq!(
            bounds(&QuotaPeriod::Day, TZ, OCT1 + 5 * H),
            Some((OCT1, OCT1 + 24 * H))
        );
        let m = bounds(&QuotaPeriod::Month, TZ, OCT1 + 40 * 24 * H).unwrap();
        assert_eq!(
            m.0,
            OCT1 + 31 * 24 * H,
            "November starts after 31 days of October"
        );
        assert_eq!(m.1 - m.0, 30 * 24 * H);
        let shifts = QuotaPeriod::Shift(vec![0, 8 * 60, 16 * 60]);
        assert_eq!(
            bounds(&shifts, TZ, OCT1 + 9 * H),
            Some((OCT1 + 8 * H, OCT1 + 16 * H))
        );
        let night = QuotaPeriod::Shift(vec![7 * 60, 19 * 60]);
        assert_eq!(
            bounds(&night, TZ, OCT1 + 2 * H),
            Some((OCT1 - 5 * H, OCT1 + 7 * H))
        );
    }

    #[test]
    fn the_run_rate_projects_the_period_total_and_restarts_next_period() {
        let mut q = QuotaState::default();
        // 100 kWh per hour from midnight: after 6 h, 600 used, 2400 projected.
        for h in 0..6 {
            q.add(&QuotaPeriod::Day, TZ, OCT1 + h * H, 100.0);
        }
        assert!((q.used() - 600.0).abs() < 1e-9);
        assert_eq!(q.projected(OCT1 + 6 * H, 0.1), Some(2400.0));
        assert_eq!(q.projected(OCT1 + H, 0.1), None, "too early to project");
        q.add(&QuotaPeriod::Day, TZ, OCT1 + 24 * H, 5.0);
        assert!((q.used() - 5.0).abs() < 1e-9);
    }
}
