//! Energy baselines (docs/platform.md §3.2–3.3): the same hour of the week over the last weeks,
//! and a linear regression on production, with the fit statistics M&V asks for.
//!
//! Pure. Invariants: an hour-of-week slot keeps at most `weeks` values, newest last; a median
//! needs `min_weeks` of them; a regression needs two distinct x values.

use serde::{Deserialize, Serialize};

/// Hours in a week: the slots of an hour-of-week baseline.
pub const WEEK_HOURS: usize = 168;

/// Recent hourly consumption per hour of the week.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourOfWeek {
    /// `slots[h]` holds the latest weeks' values of hour-of-week `h`, oldest first.
    slots: Vec<Vec<f64>>,
}

impl HourOfWeek {
    /// Records `kwh` used in hour-of-week `slot` (0 = Monday 00:00 local), keeping `weeks`.
    pub fn push(&mut self, slot: usize, kwh: f64, weeks: usize) {
        if self.slots.len() != WEEK_HOURS {
            self.slots = vec![Vec::new(); WEEK_HOURS];
        }
        let Some(values) = self.slots.get_mut(slot) else {
            return;
        };
        if kwh.is_finite() {
            values.push(kwh);
        }
        while values.len() > weeks.max(1) {
            values.remove(0);
        }
    }

    /// The median of `slot` over the weeks kept, once there are at least `min_weeks`.
    pub fn median(&self, slot: usize, min_weeks: usize) -> Option<f64> {
        let values = self.slots.get(slot)?;
        if values.len() < min_weeks.max(1) {
            return None;
        }
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }
}

/// A least-squares line `y = slope · x + intercept` with its fit statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// Energy per unit of the driver (e.g. kWh per tonne).
    pub slope: f64,
    /// Energy at zero output (the base load).
    pub intercept: f64,
    /// Points fitted.
    pub n: usize,
    /// Coefficient of determination.
    pub r2: f64,
    /// Coefficient of variation of the RMSE, in percent (ASHRAE Guideline 14).
    pub cv_rmse_percent: f64,
}

impl Fit {
    /// Ordinary least squares over `(x, y)` points; `None` with fewer than two distinct `x`.
    pub fn ols(points: &[(f64, f64)]) -> Option<Fit> {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let n = pts.len();
        if n < 2 {
            return None;
        }
        let nf = n as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / nf;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / nf;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = sxy / sxx;
        let intercept = my - slope * mx;
        let sse: f64 = pts
            .iter()
            .map(|p| (p.1 - (slope * p.0 + intercept)).powi(2))
            .sum();
        let sst: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
        let r2 = if sst > 0.0 { 1.0 - sse / sst } else { 1.0 };
        // n − 2 degrees of freedom for two fitted parameters (ASHRAE Guideline 14).
        let rmse = if n > 2 {
            (sse / (nf - 2.0)).sqrt()
        } else {
            0.0
        };
        let cv_rmse_percent = if my != 0.0 { 100.0 * rmse / my } else { 0.0 };
        Some(Fit {
            slope,
            intercept,
            n,
            r2,
            cv_rmse_percent,
        })
    }

    /// The baseline's prediction at driver value `x`.
    pub fn predict(&self, x: f64) -> f64 {
        self.slope * x + self.intercept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_of_week_medians_need_enough_weeks_and_forget_old_ones() {
        let mut h = HourOfWeek::default();
        h.push(10, 100.0, 3);
        assert_eq!(h.median(10, 2), None);
        h.push(10, 300.0, 3);
        assert_eq!(h.median(10, 2), Some(200.0));
        h.push(10, 110.0, 3);
        assert_eq!(h.median(10, 2), Some(110.0));
        h.push(10, 120.0, 3);
        assert_eq!(
            h.median(10, 2),
            Some(120.0),
            "the 100 is forgotten: 300, 110, 120"
        );
        assert_eq!(h.median(11, 1), None);
    }

    #[test]
    fn a_regression_recovers_a_line_and_reports_its_fit() {
        // kWh = 50 per tonne + 200 base load, exactly.
        let pts: Vec<(f64, f64)> = (1..=10)
            .map(|t| (f64::from(t), 50.0 * f64::from(t) + 200.0))
            .collect();
        let f = Fit::ols(&pts).unwrap();
        assert!((f.slope - 50.0).abs() < 1e-9 && (f.intercept - 200.0).abs() < 1e-9);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert!(f.cv_rmse_percent.abs() < 1e-9);
        assert!((f.predict(4.0) - 400.0).abs() < 1e-9);
        assert_eq!(
            Fit::ols(&[(1.0, 2.0), (1.0, 3.0)]),
            None,
            "one x value: no slope"
        );
    }
}
