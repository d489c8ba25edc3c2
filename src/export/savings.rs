//! Savings of an energy-performance contract (IPMVP, docs/platform.md §3.3): what the reporting
//! period would have used under the baseline period's behaviour, against what it used.
//!
//! Per project, the ledger's intervals are summed per local day, once over the baseline
//! period and once over the report's span. A baseline day counts when every counted meter
//! has every interval of it measured or estimated, so a gateway's first or last day does not
//! bend the model. With a production counter the model is the least-squares line of daily
//! use on daily output ([`Fit`]), otherwise the mean daily use. Each complete day of the span
//! is predicted from its output (the routine adjustment); saving = Σ predicted − Σ actual
//! over those days. The fit is called acceptable, as ASHRAE Guideline 14 and common M&V
//! practice ask of a regression baseline, with at least 12 days, R² ≥ 0.75 and
//! CV(RMSE) ≤ 25 %; reports show the statistics either way.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use serde::Serialize;

use super::spec::{ReportSpec, Savings};
use crate::process::baseline::Fit;
use crate::process::counter::IntervalQuality;

/// Fewest complete baseline days for an acceptable model.
pub const MIN_DAYS: usize = 12;
/// Lowest R² of an acceptable regression.
pub const MIN_R2: f64 = 0.75;
/// Highest CV(RMSE) of an acceptable model, percent.
pub const MAX_CV_RMSE_PERCENT: f64 = 25.0;

/// One project's result, as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SavingsRow {
    /// The project.
    pub name: String,
    /// The meter or group.
    pub target: String,
    /// The energy kind.
    pub kind: String,
    /// Its unit.
    pub unit: String,
    /// The baseline period, local dates, inclusive.
    pub baseline_from: String,
    /// Its last day.
    pub baseline_to: String,
    /// The production counter the model regresses on, if any.
    pub production: Option<String>,
    /// Complete days of the baseline period the model was made from.
    pub baseline_days: usize,
    /// The regression (with a production counter), or `None`.
    pub fit: Option<Fit>,
    /// The mean daily use of the baseline (without a production counter), or `None`.
    pub mean_daily: Option<f64>,
    /// CV(RMSE) of the model over its baseline days, percent.
    pub cv_rmse_percent: Option<f64>,
    /// Whether the model meets the acceptance criteria above.
    pub acceptable: bool,
    /// Complete days of the span compared.
    pub days: usize,
    /// Days of the span left out for incomplete or absent data.
    pub days_excluded: usize,
    /// Output over the compared days, where the model uses it.
    pub output: Option<f64>,
    /// Adjusted baseline: what the compared days would have used; `None` without a model.
    pub baseline: Option<f64>,
    /// What they used.
    pub actual: f64,
    /// Baseline − actual; `None` without a model.
    pub saving: Option<f64>,
    /// Saving as a share of the baseline, percent.
    pub saving_percent: Option<f64>,
    /// The saving as standard coal, kgce.
    pub saving_kgce: Option<f64>,
    /// Why there is no model or why it is not acceptable; empty when all is well.
    pub note: String,
}

/// Energy, production and interval counts of one local day.
#[derive(Debug, Clone, Copy, Default)]
struct DayTotals {
    energy: f64,
    output: f64,
    /// Measured or estimated energy intervals.
    good: u32,
    /// Intervals the day has, per meter.
    slots: u32,
}

#[derive(Debug, Default)]
struct Project {
    baseline_ms: (i64, i64),
    baseline: BTreeMap<NaiveDate, DayTotals>,
    span: BTreeMap<NaiveDate, DayTotals>,
}

/// What a ledger counter is to a project.
#[derive(Debug, Clone, Copy)]
enum Role {
    Energy,
    Output,
}

/// Sums the ledger per project and local day, streaming.
#[derive(Debug)]
pub struct Tracker {
    tz: chrono_tz::Tz,
    interval_ms: i64,
    roles: HashMap<String, Vec<(usize, Role)>>,
    projects: Vec<Project>,
    /// The local day last looked up: `[start, end)` and its date (rows come in time order).
    cached: (i64, i64, NaiveDate),
}

/// The local midnight starting `date`.
fn midnight(tz: chrono_tz::Tz, date: NaiveDate) -> i64 {
    crate::clock::local_midnight(tz, date).unwrap_or(i64::MIN)
}

impl Tracker {
    /// A tracker of `energy.savings`, with days in zone `tz`.
    pub fn new(energy: &ReportSpec, tz: chrono_tz::Tz) -> Self {
        let mut roles: HashMap<String, Vec<(usize, Role)>> = HashMap::new();
        let mut projects = Vec::new();
        for (p, s) in energy.savings.iter().enumerate() {
            for &m in &s.meters {
                if let Some(meter) = energy.meters.get(m) {
                    roles
                        .entry(meter.name.clone())
                        .or_default()
                        .push((p, Role::Energy));
                }
            }
            if let Some(meter) = s.production.and_then(|m| energy.meters.get(m)) {
                roles
                    .entry(meter.name.clone())
                    .or_default()
                    .push((p, Role::Output));
            }
            let end = s.baseline_to.succ_opt().unwrap_or(s.baseline_to);
            projects.push(Project {
                baseline_ms: (midnight(tz, s.baseline_from), midnight(tz, end)),
                ..Project::default()
            });
        }
        Self {
            tz,
            interval_ms: i64::try_from(energy.interval.as_millis())
                .unwrap_or(900_000)
                .max(1),
            roles,
            projects,
            cached: (0, 0, NaiveDate::MIN),
        }
    }

    /// Whether no project is configured (and nothing needs adding).
    pub fn is_empty(&self) -> bool {
        self.projects.is_empty()
    }

    /// From the first baseline day to the end of the last (UTC ms): the ledger to read for
    /// [`Tracker::add_baseline`]; `None` without projects.
    pub fn baseline_span(&self) -> Option<(i64, i64)> {
        let from = self.projects.iter().map(|p| p.baseline_ms.0).min()?;
        let to = self.projects.iter().map(|p| p.baseline_ms.1).max()?;
        Some((from, to))
    }

    fn day(&mut self, at_ms: i64) -> (NaiveDate, u32) {
        let (start, end, _) = self.cached;
        if !(start <= at_ms && at_ms < end) {
            let date = chrono::DateTime::from_timestamp_millis(at_ms)
                .map_or(NaiveDate::MIN, |t| t.with_timezone(&self.tz).date_naive());
            let start = midnight(self.tz, date);
            let end = date.succ_opt().map_or(i64::MAX, |d| midnight(self.tz, d));
            self.cached = (start, end, date);
        }
        let (start, end, date) = self.cached;
        let slots = u32::try_from(end.saturating_sub(start) / self.interval_ms).unwrap_or(0);
        (date, slots)
    }

    fn book(&mut self, meter: &str, at_ms: i64, delta: f64, quality: IntervalQuality, span: bool) {
        if !self.roles.contains_key(meter) {
            return;
        }
        let (date, slots) = self.day(at_ms);
        let Some(roles) = self.roles.get(meter) else {
            return;
        };
        for &(p, role) in roles {
            let Some(project) = self.projects.get_mut(p) else {
                continue;
            };
            let days = if span {
                &mut project.span
            } else if project.baseline_ms.0 <= at_ms && at_ms < project.baseline_ms.1 {
                &mut project.baseline
            } else {
                continue;
            };
            let day = days.entry(date).or_default();
            day.slots = slots;
            match role {
                Role::Output => day.output += delta,
                Role::Energy => {
                    day.energy += delta;
                    if quality != IntervalQuality::Missing {
                        day.good += 1;
                    }
                }
            }
        }
    }

    /// Adds an interval of the report's span.
    pub fn add(&mut self, meter: &str, at_ms: i64, delta: f64, quality: IntervalQuality) {
        self.book(meter, at_ms, delta, quality, true);
    }

    /// Adds an interval that may lie in a project's baseline period (others are ignored).
    pub fn add_baseline(&mut self, meter: &str, at_ms: i64, delta: f64, quality: IntervalQuality) {
        self.book(meter, at_ms, delta, quality, false);
    }

    /// The results, in the order of `energy.savings`, for a span of `span_days` local days.
    pub fn finish(self, energy: &ReportSpec, span_days: usize) -> Vec<SavingsRow> {
        self.projects
            .into_iter()
            .zip(&energy.savings)
            .map(|(p, s)| result(s, energy, &p, span_days))
            .collect()
    }
}

fn result(s: &Savings, energy: &ReportSpec, p: &Project, span_days: usize) -> SavingsRow {
    let meters = u32::try_from(s.meters.len()).unwrap_or(u32::MAX);
    let complete = |d: &&DayTotals| d.slots > 0 && d.good >= d.slots.saturating_mul(meters);
    let base: Vec<&DayTotals> = p.baseline.values().filter(complete).collect();
    let compared: Vec<&DayTotals> = p.span.values().filter(complete).collect();
    let actual: f64 = compared.iter().map(|d| d.energy).sum();
    let production = s
        .production
        .and_then(|i| energy.meters.get(i))
        .map(|m| m.name.clone());
    let mut note = Vec::new();
    let (fit, mean_daily, cv_rmse_percent, baseline) = if production.is_some() {
        let points: Vec<(f64, f64)> = base.iter().map(|d| (d.output, d.energy)).collect();
        match Fit::ols(&points) {
            Some(fit) => {
                let predicted = compared.iter().map(|d| fit.predict(d.output)).sum();
                (Some(fit), None, Some(fit.cv_rmse_percent), Some(predicted))
            }
            None => {
                note.push(format!(
                    "no regression: the baseline period has {} complete days and needs two \
                     with different output",
                    base.len()
                ));
                (None, None, None, None)
            }
        }
    } else if base.is_empty() {
        note.push("no baseline: the baseline period has no complete day".to_owned());
        (None, None, None, None)
    } else {
        let n = base.len() as f64;
        let mean = base.iter().map(|d| d.energy).sum::<f64>() / n;
        let var = base.iter().map(|d| (d.energy - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let cv = (mean != 0.0).then(|| 100.0 * var.sqrt() / mean);
        (None, Some(mean), cv, Some(mean * compared.len() as f64))
    };
    if base.len() < MIN_DAYS {
        note.push(format!(
            "{} complete baseline days; at least {MIN_DAYS} are needed",
            base.len()
        ));
    }
    if let Some(f) = fit.filter(|f| f.r2 < MIN_R2) {
        note.push(format!("R² {:.2} is below {MIN_R2}", f.r2));
    }
    if let Some(cv) = cv_rmse_percent.filter(|cv| *cv > MAX_CV_RMSE_PERCENT) {
        note.push(format!(
            "CV(RMSE) {cv:.1} % is above {MAX_CV_RMSE_PERCENT} %"
        ));
    }
    if compared.is_empty() {
        note.push("no complete day in the report's span".to_owned());
    }
    let saving = baseline.map(|b| b - actual);
    SavingsRow {
        name: s.name.clone(),
        target: s.target.clone(),
        kind: s.kind.as_str().to_owned(),
        unit: s.kind.unit().to_owned(),
        baseline_from: s.baseline_from.to_string(),
        baseline_to: s.baseline_to.to_string(),
        production,
        baseline_days: base.len(),
        fit,
        mean_daily,
        cv_rmse_percent,
        acceptable: baseline.is_some() && note.is_empty(),
        days: compared.len(),
        days_excluded: span_days.max(p.span.len()) - compared.len(),
        output: s
            .production
            .map(|_| compared.iter().map(|d| d.output).sum()),
        baseline,
        actual,
        saving,
        saving_percent: baseline
            .zip(saving)
            .and_then(|(b, sv)| (b != 0.0).then(|| 100.0 * sv / b)),
        saving_kgce: saving.map(|sv| sv * energy.coefficients.get(s.kind)),
        note: note.join("; "),
    }
}
