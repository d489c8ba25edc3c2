//! `plantwatch export`: the energy manager's report, computed from ledger intervals.
//!
//! Pure: [`Report::build`] takes the intervals of a period and its [`ReportSpec`] and
//! sums them by meter, group and energy kind, with the time-of-use split, maximum demand,
//! standard coal, energy per unit of product against benchmarks, and data completeness, plus
//! the series the HTML charts draw (consumption per local day, the load profile over the
//! time of day, the site's daily maximum demand); the renderers turn it into CSV, JSON or
//! HTML. Every report carries the coefficients it used.
//!
//! Invariants: totals are sums of interval deltas (no re-estimation here); a group's total is
//! the sum of its meters'; completeness counts every interval the period should have. The
//! [`Builder`] streams: its memory grows with meters × days and with the intervals of the
//! span (one summed site value each, e.g. 35 040 for a year of 15 minutes), never with the
//! number of ledger rows.

pub mod csv;
pub mod html;
pub mod savings;
pub mod spec;

use std::collections::BTreeMap;

use chrono::Timelike as _;
use serde::Serialize;

use crate::process::coal::EnergyKind;
use crate::process::counter::IntervalQuality;
use crate::process::ledger::LedgerInterval;
use crate::process::spec::Counts;
use crate::process::tou::Period;
use spec::ReportSpec;

/// The time span of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    /// Label, e.g. `2026-10` or `2026-10-01..2026-10-15`.
    pub label: String,
    /// Start, inclusive (UTC ms).
    pub from_ms: i64,
    /// End, exclusive (UTC ms).
    pub to_ms: i64,
    /// The local time zone of the boundaries.
    pub timezone: String,
}

/// Interval counts by quality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Completeness {
    /// Intervals the span should have.
    pub expected: u64,
    /// Fully measured.
    pub measured: u64,
    /// Partly measured or interpolated.
    pub estimated: u64,
    /// Not measured at all (including intervals absent from the ledger).
    pub missing: u64,
    /// Counter wraps, resets, replacements and jumps in the span (listed in
    /// [`Report::energy_events`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub events: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Completeness {
    /// Share of expected intervals that were measured, in percent.
    pub fn measured_percent(&self) -> f64 {
        percent(self.measured, self.expected)
    }

    /// [`Self::measured_percent`] with one decimal, never rounded to an extreme it is not:
    /// a span with an interval short never shows "100.0" (2975 of 2976 is 99.9), and one with
    /// an interval measured never "0.0".
    pub fn measured_percent_text(&self) -> String {
        let text = format!("{:.1}", self.measured_percent());
        match text.as_str() {
            "100.0" if self.measured < self.expected => "99.9".into(),
            "0.0" if self.measured > 0 => "0.1".into(),
            _ => text,
        }
    }
}

/// A counter wrap, reset, replacement or jump in a report's span: what the completeness
/// figures alone cannot tell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// The meter.
    pub meter: String,
    /// `wrap`, `reset`, `replacement` or `jump`.
    pub kind: String,
    /// When the reading that showed it was taken (UTC ms).
    pub at_ms: i64,
    /// Unit of the energy figures.
    pub unit: String,
    /// Energy booked for the step that holds it.
    pub booked: f64,
    /// Energy the counter shows but no interval holds (a lower bound).
    pub unattributed: f64,
    /// What happened, in words.
    pub description: String,
}

/// `v` with three decimals and never `-0.000`: the number format of every renderer, so that
/// the CSV and HTML of one report show the same figures.
pub(crate) fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    if s == "-0.000" { "0.000".into() } else { s }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The highest average power of one interval, and when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Demand {
    /// kW.
    pub kw: f64,
    /// Start of the interval (UTC ms).
    pub at_ms: i64,
}

/// One meter's (or production counter's) totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterRow {
    /// Its name.
    pub meter: String,
    /// Energy kind, or `production`.
    pub kind: String,
    /// Unit of the totals.
    pub unit: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Consumption (or output).
    pub total: f64,
    /// `total` by sharp, peak, flat, valley.
    #[serde(serialize_with = "tou_object")]
    pub tou: [f64; 4],
    /// Standard coal, kgce (energy only).
    pub kgce: Option<f64>,
    /// The coefficient used, kgce per unit (energy only).
    pub kgce_per_unit: Option<f64>,
    /// Maximum demand (electricity only).
    pub max_demand: Option<Demand>,
    /// Data completeness.
    pub completeness: Completeness,
    /// Electricity only: the highest average power (kW) of one interval on each local day
    /// of [`Report::days`], `None` on a day without a measured or estimated interval; empty
    /// for other kinds.
    pub daily_max_kw: Vec<Option<f64>>,
}

/// A group's totals for one energy kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    /// The group.
    pub group: String,
    /// Energy kind, or `production`.
    pub kind: String,
    /// Unit.
    pub unit: String,
    /// Sum over its meters.
    pub total: f64,
    /// By period.
    #[serde(serialize_with = "tou_object")]
    pub tou: [f64; 4],
    /// Standard coal, kgce.
    pub kgce: Option<f64>,
}

/// Energy per unit of product for a group, against benchmark values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intensity {
    /// The group whose energy is counted.
    pub group: String,
    /// The production counter.
    pub production: String,
    /// Its unit.
    pub unit: String,
    /// The group's kgce.
    pub kgce: f64,
    /// The output.
    pub output: f64,
    /// kgce per unit of product; `None` without output.
    pub kgce_per_unit: Option<f64>,
    /// The standard the benchmark values come from, as configured.
    pub standard: Option<String>,
    /// Benchmark: the quota standard's advanced value (先进值), kgce per unit.
    pub advanced: Option<f64>,
    /// Benchmark: the access value for new plants (准入值), kgce per unit.
    pub access: Option<f64>,
    /// Benchmark: the limit for existing plants (限定值), kgce per unit.
    pub limit: Option<f64>,
    /// [`verdict`] of `kgce_per_unit` against the three values.
    pub verdict: Option<String>,
}

/// Grades energy per unit of product against an energy-consumption quota standard (GB 能耗限额),
/// whose values run advanced (先进值) ≤ access (准入值) ≤ limit (限定值); lower is better.
///
/// Returns the best grade `value` meets (is at most): `"advanced"`, `"access"` or `"limit"`,
/// and `"above limit"` when a limit is given and `value` exceeds it. `None` when `value` is not
/// finite, when no benchmark value is given, or when `value` misses every value given and
/// there is no limit (it is then neither graded nor known to break the limit).
pub fn verdict(
    value: f64,
    advanced: Option<f64>,
    access: Option<f64>,
    limit: Option<f64>,
) -> Option<&'static str> {
    if !value.is_finite() {
        return None;
    }
    let grades = [(advanced, "advanced"), (access, "access"), (limit, "limit")];
    for (bound, name) in grades {
        if bound.is_some_and(|b| value <= b) {
            return Some(name);
        }
    }
    limit.map(|_| "above limit")
}

/// One local day of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// The local date, `YYYY-MM-DD`.
    pub date: String,
    /// Its local midnight (UTC ms); the day ends at the next day's, or at the span's end.
    pub from_ms: i64,
    /// Consumption by energy kind (every kind in [`Report::kinds`]), in the kind's unit.
    pub energy: BTreeMap<String, f64>,
    /// All energy of the day as standard coal, kgce.
    pub kgce: f64,
    /// The site's maximum demand that day: the highest sum, over the electricity meters, of
    /// their average power in one interval (intervals starting at the same instant add up).
    pub max_demand: Option<Demand>,
}

/// The average electric load over the time of day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadProfile {
    /// Width of a slot, seconds (the ledger interval).
    pub slot_s: u64,
    /// Per slot from local midnight: the site's electric power (kW, summed over the electricity
    /// meters) averaged over the days that have data in that slot; `None` where none has.
    pub kw: Vec<Option<f64>>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The period.
    pub span: Span,
    /// The time-of-use calendar's name.
    pub tariff: String,
    /// Source of the coefficients.
    pub coefficients_source: String,
    /// `equivalent` (calorific) or `equal_value`.
    pub electricity_basis: String,
    /// Per meter, in configuration order.
    pub meters: Vec<MeterRow>,
    /// Per group and kind, sorted.
    pub groups: Vec<GroupRow>,
    /// Per energy kind: (kind, unit, total, kgce).
    pub kinds: Vec<GroupRow>,
    /// Total standard coal of all energy, kgce.
    pub total_kgce: f64,
    /// The same in tonnes (tce).
    pub total_tce: f64,
    /// Energy per unit of product, where production is configured for a group.
    pub intensity: Vec<Intensity>,
    /// Completeness over all energy meters.
    pub completeness: Completeness,
    /// Counter wraps, resets, replacements and jumps of the span, in time order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub energy_events: Vec<EventRow>,
    /// The site's maximum demand over the span (see [`Day::max_demand`]).
    pub max_demand: Option<Demand>,
    /// Per local day of the span, in order.
    pub days: Vec<Day>,
    /// The average daily load curve of the electricity meters.
    pub load_profile: LoadProfile,
    /// Energy-performance-contract savings, per configured project.
    pub savings: Vec<savings::SavingsRow>,
}

/// Above this many intervals in the span (a year at 15-second intervals), the site series
/// (daily site maximum demand and the load profile) are left out rather than holding one
/// value per interval: at 12 bytes each that is already 25 MiB.
const MAX_SITE_INTERVALS: u64 = 1 << 21;

/// Sums intervals as they stream from the ledger, so a year of 200 meters never sits in
/// memory at once.
#[derive(Debug)]
pub struct Builder<'a> {
    span: Span,
    energy: &'a ReportSpec,
    expected: u64,
    rows: Vec<MeterRow>,
    index: std::collections::HashMap<String, usize>,
    /// The ledger interval, ms (at least 1).
    interval_ms: i64,
    /// The zone local days and times of day are counted in.
    tz: chrono_tz::Tz,
    /// Where each local day starts (the first at the span's start), then the span's end.
    day_starts: Vec<i64>,
    /// The day the previous interval fell on: the ledger streams in time order, so this
    /// saves the search for almost every row.
    last_day: usize,
    /// The distinct energy kinds of the meters, sorted by name as [`Report::kinds`] is.
    kinds: Vec<EnergyKind>,
    /// Per row: its energy kind's slot in `kinds`; `None` for production.
    kind_slot: Vec<Option<usize>>,
    /// Per row: whether it meters electricity (and so has a demand).
    electric: Vec<bool>,
    /// Consumption per day and kind: `daily_energy[day * kinds.len() + slot]`.
    daily_energy: Vec<f64>,
    /// Per row: the day's highest kW so far (NaN: none yet); empty for non-electric rows.
    daily_max: Vec<Vec<f64>>,
    /// Per interval of the span: the electricity meters' kW summed, and how many were added
    /// (0: no data). Empty when the span has more than [`MAX_SITE_INTERVALS`].
    site_kw: Vec<f64>,
    site_n: Vec<u32>,
    /// Daily sums of the savings projects.
    savings: savings::Tracker,
    /// Counter events of the span.
    events: Vec<EventRow>,
}

/// `[from, …local midnights…, to]`: the boundaries of the local days of the span.
fn day_starts(tz: chrono_tz::Tz, from_ms: i64, to_ms: i64) -> Vec<i64> {
    if to_ms <= from_ms {
        return Vec::new();
    }
    let mut starts = vec![from_ms];
    let Some(mut date) =
        chrono::DateTime::from_timestamp_millis(from_ms).map(|t| t.with_timezone(&tz).date_naive())
    else {
        return vec![from_ms, to_ms];
    };
    // Bounded by the span's length in days (a local day is at least 22 hours long).
    let bound = (to_ms - from_ms) / 79_200_000 + 2;
    for _ in 0..bound {
        let Some(next) = date.succ_opt() else { break };
        date = next;
        match crate::clock::local_midnight(tz, date) {
            Some(s) if s >= to_ms => break,
            Some(s) if s > from_ms => starts.push(s),
            _ => {}
        }
    }
    starts.push(to_ms);
    starts
}

impl<'a> Builder<'a> {
    /// An empty report of `span` for `energy`'s meters. Local days and times of day are those
    /// of `span.timezone` (UTC if that is no IANA zone name).
    pub fn new(span: Span, energy: &'a ReportSpec) -> Self {
        let interval_ms = i64::try_from(energy.interval.as_millis())
            .unwrap_or(900_000)
            .max(1);
        let expected = u64::try_from((span.to_ms - span.from_ms).max(0) / interval_ms).unwrap_or(0);
        let tz: chrono_tz::Tz = span.timezone.parse().unwrap_or(chrono_tz::UTC);
        let day_starts = day_starts(tz, span.from_ms, span.to_ms);
        let days = day_starts.len().saturating_sub(1);
        let rows: Vec<MeterRow> = energy
            .meters
            .iter()
            .map(|m| MeterRow {
                meter: m.name.clone(),
                kind: m.counts.kind_str().to_owned(),
                unit: m.counts.unit().to_owned(),
                groups: m.groups.clone(),
                total: 0.0,
                tou: [0.0; 4],
                kgce: None,
                kgce_per_unit: None,
                max_demand: None,
                completeness: Completeness {
                    expected,
                    ..Completeness::default()
                },
                daily_max_kw: Vec::new(),
            })
            .collect();
        let index = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.meter.clone(), i))
            .collect();
        let mut kinds: Vec<EnergyKind> = energy
            .meters
            .iter()
            .filter_map(|m| match m.counts {
                Counts::Energy(k) => Some(k),
                Counts::Product(_) => None,
            })
            .collect();
        kinds.sort_by_key(|k| k.as_str());
        kinds.dedup();
        let kind_slot = energy
            .meters
            .iter()
            .map(|m| match m.counts {
                Counts::Energy(k) => kinds.iter().position(|x| *x == k),
                Counts::Product(_) => None,
            })
            .collect();
        let electric: Vec<bool> = energy
            .meters
            .iter()
            .map(|m| m.counts == Counts::Energy(EnergyKind::Electricity))
            .collect();
        let daily_max = electric
            .iter()
            .map(|&e| if e { vec![f64::NAN; days] } else { Vec::new() })
            .collect();
        let site = if electric.contains(&true) && expected <= MAX_SITE_INTERVALS {
            usize::try_from(expected).unwrap_or(0)
        } else {
            0
        };
        Self {
            span,
            energy,
            expected,
            rows,
            index,
            interval_ms,
            tz,
            day_starts,
            last_day: 0,
            daily_energy: vec![0.0; days * kinds.len()],
            kinds,
            kind_slot,
            electric,
            daily_max,
            site_kw: vec![0.0; site],
            site_n: vec![0; site],
            savings: savings::Tracker::new(energy, tz),
            events: Vec::new(),
        }
    }

    /// Adds one counter event; events of unknown meters or outside the span are ignored.
    pub fn add_event(&mut self, e: &crate::process::ledger::LedgerEvent) {
        let at = e.event.at_ms;
        if at < self.span.from_ms || at >= self.span.to_ms {
            return;
        }
        let Some(&i) = self.index.get(&e.meter) else {
            return;
        };
        self.rows[i].completeness.events += 1;
        self.events.push(EventRow {
            meter: e.meter.clone(),
            kind: e.event.kind.as_str().to_owned(),
            at_ms: at,
            unit: e.unit.clone(),
            booked: e.event.booked,
            unattributed: e.event.unattributed,
            description: e.describe(),
        });
    }

    /// The ledger to read before the span for the savings baselines (UTC ms, `[from, to)`),
    /// through [`Builder::add_baseline`]; `None` when no savings project is configured.
    pub fn baseline_span(&self) -> Option<(i64, i64)> {
        self.savings.baseline_span()
    }

    /// Adds an interval of a savings baseline period; those of other times are ignored.
    pub fn add_baseline(
        &mut self,
        meter: &str,
        start_ms: i64,
        delta: f64,
        quality: IntervalQuality,
    ) {
        self.savings.add_baseline(meter, start_ms, delta, quality);
    }

    /// How many ledger rows the span should hold (every interval of every meter): the
    /// denominator of a progress display.
    pub fn expected_rows(&self) -> u64 {
        self.expected.saturating_mul(self.rows.len() as u64)
    }

    /// The local day `start_ms` (within the span) falls on.
    fn day_of(&mut self, start_ms: i64) -> usize {
        let d = self.last_day;
        let within = |d: usize| {
            self.day_starts
                .get(d..d + 2)
                .is_some_and(|w| w[0] <= start_ms && start_ms < w[1])
        };
        if !within(d) {
            self.last_day = self
                .day_starts
                .partition_point(|&s| s <= start_ms)
                .saturating_sub(1);
        }
        self.last_day
    }

    /// Adds one interval; intervals of unknown meters or outside the span are ignored.
    pub fn add(
        &mut self,
        meter: &str,
        (start_ms, end_ms): (i64, i64),
        delta: f64,
        quality: IntervalQuality,
        tou: [f64; 4],
    ) {
        if start_ms < self.span.from_ms || start_ms >= self.span.to_ms {
            return;
        }
        let Some(&i) = self.index.get(meter) else {
            return;
        };
        let day = self.day_of(start_ms);
        if !self.savings.is_empty() {
            self.savings.add(meter, start_ms, delta, quality);
        }
        let row = &mut self.rows[i];
        row.total += delta;
        for (t, v) in row.tou.iter_mut().zip(tou) {
            *t += v;
        }
        match quality {
            IntervalQuality::Good => row.completeness.measured += 1,
            IntervalQuality::Estimated => row.completeness.estimated += 1,
            IntervalQuality::Missing => {}
        }
        if let Some(slot) = self.kind_slot[i] {
            if let Some(v) = self.daily_energy.get_mut(day * self.kinds.len() + slot) {
                *v += delta;
            }
        }
        let hours = (end_ms - start_ms) as f64 / 3_600_000.0;
        if self.electric[i] && hours > 0.0 && quality != IntervalQuality::Missing {
            let kw = delta / hours;
            if row.max_demand.is_none_or(|d| kw > d.kw) {
                row.max_demand = Some(Demand {
                    kw,
                    at_ms: start_ms,
                });
            }
            if let Some(m) = self.daily_max[i].get_mut(day) {
                if m.is_nan() || kw > *m {
                    *m = kw;
                }
            }
            // Meters' intervals share the grid, so the same start means the same interval.
            let at = usize::try_from((start_ms - self.span.from_ms) / self.interval_ms);
            if let Ok(at) = at {
                if let (Some(sum), Some(n)) = (self.site_kw.get_mut(at), self.site_n.get_mut(at)) {
                    *sum += kw;
                    *n += 1;
                }
            }
        }
    }

    /// The report.
    pub fn finish(mut self) -> Report {
        let days = self.days();
        let max_demand =
            days.iter()
                .filter_map(|d| d.max_demand)
                .fold(None, |best: Option<Demand>, d| {
                    if best.is_none_or(|b| d.kw > b.kw) {
                        Some(d)
                    } else {
                        best
                    }
                });
        let load_profile = self.load_profile();
        let Self {
            span,
            energy,
            expected,
            mut rows,
            daily_max,
            savings,
            mut events,
            ..
        } = self;
        let savings = savings.finish(energy, days.len());
        for ((row, m), daily) in rows.iter_mut().zip(&energy.meters).zip(daily_max) {
            row.completeness.missing =
                expected.saturating_sub(row.completeness.measured + row.completeness.estimated);
            if let Counts::Energy(kind) = m.counts {
                let factor = energy.coefficients.get(kind);
                row.kgce_per_unit = Some(factor);
                row.kgce = Some(row.total * factor);
            }
            row.daily_max_kw = daily
                .into_iter()
                .map(|v| (!v.is_nan()).then_some(v))
                .collect();
        }
        let mut report = Report::from_meters(span, energy, rows);
        events.sort_by(|a, b| (a.at_ms, &a.meter).cmp(&(b.at_ms, &b.meter)));
        report.energy_events = events;
        report.max_demand = max_demand;
        report.days = days;
        report.load_profile = load_profile;
        report.savings = savings;
        report
    }

    /// The per-day series, from the streamed sums.
    fn days(&mut self) -> Vec<Day> {
        let n = self.day_starts.len().saturating_sub(1);
        let nk = self.kinds.len();
        let mut out: Vec<Day> = (0..n)
            .map(|d| {
                let from_ms = self.day_starts[d];
                let date = chrono::DateTime::from_timestamp_millis(from_ms)
                    .map(|t| t.with_timezone(&self.tz).format("%Y-%m-%d").to_string())
                    .unwrap_or_default();
                let mut energy = BTreeMap::new();
                let mut kgce = 0.0;
                for (slot, kind) in self.kinds.iter().enumerate() {
                    let v = self.daily_energy.get(d * nk + slot).copied().unwrap_or(0.0);
                    kgce += v * self.energy.coefficients.get(*kind);
                    energy.insert(kind.as_str().to_owned(), v);
                }
                Day {
                    date,
                    from_ms,
                    energy,
                    kgce,
                    max_demand: None,
                }
            })
            .collect();
        for at in 0..self.site_kw.len() {
            if self.site_n[at] == 0 {
                continue;
            }
            let start = self.span.from_ms + at as i64 * self.interval_ms;
            let kw = self.site_kw[at];
            let day = self.day_of(start);
            if let Some(d) = out.get_mut(day) {
                if d.max_demand.is_none_or(|m| kw > m.kw) {
                    d.max_demand = Some(Demand { kw, at_ms: start });
                }
            }
        }
        out
    }

    /// The site's kW averaged per time-of-day slot over the intervals that have data.
    fn load_profile(&self) -> LoadProfile {
        let slots = usize::try_from((86_400_000 / self.interval_ms).max(1)).unwrap_or(1);
        let mut sum = vec![0.0; slots];
        let mut count = vec![0_u32; slots];
        for at in 0..self.site_kw.len() {
            if self.site_n[at] == 0 {
                continue;
            }
            let start = self.span.from_ms + at as i64 * self.interval_ms;
            // Time of day from the zone rather than from the day's start, so that a
            // daylight-saving day (23 or 25 hours) still puts 08:00 in the 08:00 slot.
            let Some(local) =
                chrono::DateTime::from_timestamp_millis(start).map(|t| t.with_timezone(&self.tz))
            else {
                continue;
            };
            let ms_of_day = i64::from(local.num_seconds_from_midnight()) * 1000;
            let slot = usize::try_from(ms_of_day / self.interval_ms)
                .unwrap_or(0)
                .min(slots - 1);
            sum[slot] += self.site_kw[at];
            count[slot] += 1;
        }
        LoadProfile {
            slot_s: u64::try_from(self.interval_ms / 1000).unwrap_or(0),
            kw: sum
                .into_iter()
                .zip(count)
                .map(|(s, n)| (n > 0).then(|| s / f64::from(n)))
                .collect(),
        }
    }
}

impl Report {
    /// Sums `intervals` (those starting within `span`) under `energy`'s meters.
    pub fn build(span: Span, energy: &ReportSpec, intervals: &[LedgerInterval]) -> Self {
        let mut b = Builder::new(span, energy);
        for iv in intervals {
            b.add_baseline(&iv.meter, iv.start_ms, iv.delta, iv.quality);
            b.add(
                &iv.meter,
                (iv.start_ms, iv.end_ms),
                iv.delta,
                iv.quality,
                iv.tou,
            );
        }
        b.finish()
    }

    fn from_meters(span: Span, energy: &ReportSpec, meters: Vec<MeterRow>) -> Self {
        let mut groups: BTreeMap<(String, String), GroupRow> = BTreeMap::new();
        let mut kinds: BTreeMap<String, GroupRow> = BTreeMap::new();
        let mut completeness = Completeness::default();
        for row in &meters {
            if row.kind != "production" {
                let k = kinds
                    .entry(row.kind.clone())
                    .or_insert_with(|| empty(&row.kind, row));
                add(k, row);
                completeness.expected += row.completeness.expected;
                completeness.measured += row.completeness.measured;
                completeness.estimated += row.completeness.estimated;
                completeness.missing += row.completeness.missing;
                completeness.events += row.completeness.events;
            }
            for g in &row.groups {
                let e = groups
                    .entry((g.clone(), row.kind.clone()))
                    .or_insert_with(|| empty(g, row));
                add(e, row);
            }
        }
        let total_kgce: f64 = kinds.values().filter_map(|k| k.kgce).sum();
        let mut intensity = Vec::new();
        for p in meters.iter().filter(|r| r.kind == "production") {
            for g in &p.groups {
                let kgce: f64 = groups
                    .iter()
                    .filter(|((name, kind), _)| name == g && kind != "production")
                    .filter_map(|(_, r)| r.kgce)
                    .sum();
                let kgce_per_unit = (p.total > 0.0).then(|| kgce / p.total);
                // A benchmark for this very group wins over one for all the counter's groups.
                let bench = energy
                    .benchmarks
                    .iter()
                    .filter(|b| b.production == p.meter)
                    .filter(|b| b.group.as_ref().is_none_or(|bg| bg == g))
                    .max_by_key(|b| b.group.is_some());
                let (advanced, access, limit) =
                    bench.map_or((None, None, None), |b| (b.advanced, b.access, b.limit));
                intensity.push(Intensity {
                    group: g.clone(),
                    production: p.meter.clone(),
                    unit: p.unit.clone(),
                    kgce,
                    output: p.total,
                    kgce_per_unit,
                    standard: bench.map(|b| b.standard.clone()),
                    advanced,
                    access,
                    limit,
                    verdict: kgce_per_unit
                        .and_then(|v| verdict(v, advanced, access, limit))
                        .map(str::to_owned),
                });
            }
        }
        Self {
            span,
            tariff: energy.tariff.clone(),
            coefficients_source: energy.coefficients.source().to_owned(),
            electricity_basis: energy.coefficients.electricity_basis().as_str().to_owned(),
            meters,
            groups: groups.into_values().collect(),
            kinds: kinds.into_values().collect(),
            total_kgce,
            total_tce: total_kgce / 1000.0,
            intensity,
            completeness,
            energy_events: Vec::new(),
            max_demand: None,
            days: Vec::new(),
            load_profile: LoadProfile {
                slot_s: 0,
                kw: Vec::new(),
            },
            savings: Vec::new(),
        }
    }

    /// The periods' names, in the order of every `tou` array.
    pub fn periods() -> [&'static str; 4] {
        Period::ALL.map(Period::as_str)
    }
}

/// `{"sharp":…,"peak":…,"flat":…,"valley":…}` rather than a bare array in JSON.
fn tou_object<S: serde::Serializer>(tou: &[f64; 4], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(4))?;
    for (p, v) in Period::ALL.iter().zip(tou) {
        map.serialize_entry(p.as_str(), v)?;
    }
    map.end()
}

fn empty(name: &str, like: &MeterRow) -> GroupRow {
    GroupRow {
        group: name.to_owned(),
        kind: like.kind.clone(),
        unit: like.unit.clone(),
        total: 0.0,
        tou: [0.0; 4],
        kgce: like.kgce.map(|_| 0.0),
    }
}

fn add(into: &mut GroupRow, row: &MeterRow) {
    into.total += row.total;
    for (t, v) in into.tou.iter_mut().zip(row.tou) {
        *t += v;
    }
    if let (Some(a), Some(b)) = (into.kgce.as_mut(), row.kgce) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::energy::Meter;
    use crate::process::counter::MeterParams;

    fn meter(name: &str, counts: Counts) -> Meter {
        Meter {
            name: name.into(),
            device: 0,
            point: 0,
            counts,
            params: MeterParams::default(),
            groups: vec!["site".into()],
            demand: None,
        }
    }

    fn energy() -> ReportSpec {
        ReportSpec {
            meters: vec![
                meter("a", Counts::Energy(EnergyKind::Electricity)),
                meter("b", Counts::Energy(EnergyKind::Electricity)),
                meter("gas", Counts::Energy(EnergyKind::NaturalGas)),
                meter("out", Counts::Product("t".into())),
            ],
            ..crate::config::energy::Energy::default().report_spec()
        }
    }

    /// 2026-10-01 00:00 in Asia/Shanghai.
    const OCT1: i64 = 1_790_784_000_000;
    const Q: i64 = 900_000;
    const DAY: i64 = 86_400_000;

    fn span(days: i64, tz: &str) -> Span {
        Span {
            label: "t".into(),
            from_ms: OCT1,
            to_ms: OCT1 + days * DAY,
            timezone: tz.into(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_measured_share_is_never_shown_as_an_extreme_it_is_not() {
        let c = |measured, expected| Completeness {
            expected,
            measured,
            ..Completeness::default()
        };
        assert_eq!(c(35_039, 35_040).measured_percent_text(), "99.9");
        assert_eq!(c(35_040, 35_040).measured_percent_text(), "100.0");
        assert_eq!(c(1, 35_040).measured_percent_text(), "0.1");
        assert_eq!(c(0, 35_040).measured_percent_text(), "0.0");
        assert_eq!(c(2, 3).measured_percent_text(), "66.7");
    }

    #[test]
    fn verdict_names_the_best_grade_met_and_needs_a_limit_to_say_above() {
        let all = (Some(10.0), Some(12.0), Some(15.0));
        let v = |x| verdict(x, all.0, all.1, all.2);
        assert_eq!(v(9.0), Some("advanced"));
        assert_eq!(v(10.0), Some("advanced"));
        assert_eq!(v(11.0), Some("access"));
        assert_eq!(v(15.0), Some("limit"));
        assert_eq!(v(15.1), Some("above limit"));
        assert_eq!(verdict(20.0, None, None, Some(15.0)), Some("above limit"));
        assert_eq!(verdict(14.0, None, None, Some(15.0)), Some("limit"));
        assert_eq!(verdict(11.0, Some(10.0), None, None), None);
        assert_eq!(verdict(9.0, Some(10.0), None, None), Some("advanced"));
        assert_eq!(verdict(9.0, None, None, None), None);
        assert_eq!(verdict(f64::NAN, all.0, all.1, all.2), None);
    }

    #[test]
    fn site_demand_sums_meters_per_interval_start_and_days_are_local() {
        let e = energy();
        let mut b = Builder::new(span(2, "Asia/Shanghai"), &e);
        let good = IntervalQuality::Good;
        // Day 1, 08:45: a 10 kWh + b 5 kWh = 60 kW site; 09:00: a alone 20 kWh = 80 kW.
        b.add("a", (OCT1 + 35 * Q, OCT1 + 36 * Q), 10.0, good, [0.0; 4]);
        b.add("b", (OCT1 + 35 * Q, OCT1 + 36 * Q), 5.0, good, [0.0; 4]);
        b.add("a", (OCT1 + 36 * Q, OCT1 + 37 * Q), 20.0, good, [0.0; 4]);
        // Day 2, 08:45: b 30 kWh = 120 kW, and a missing interval that must not count.
        b.add(
            "b",
            (OCT1 + DAY + 35 * Q, OCT1 + DAY + 36 * Q),
            30.0,
            good,
            [0.0; 4],
        );
        b.add(
            "a",
            (OCT1 + DAY + 35 * Q, OCT1 + DAY + 36 * Q),
            0.0,
            IntervalQuality::Missing,
            [0.0; 4],
        );
        b.add("gas", (OCT1 + DAY - Q, OCT1 + DAY), 4.0, good, [0.0; 4]);
        let r = b.finish();
        assert_eq!(r.days.len(), 2);
        assert_eq!(r.days[0].date, "2026-10-01");
        assert_eq!(r.days[1].date, "2026-10-02");
        assert_eq!(r.days[1].from_ms, OCT1 + DAY);
        assert!(close(r.days[0].energy["electricity"], 35.0));
        assert!(
            close(r.days[0].energy["natural_gas"], 4.0),
            "23:45 is day 1"
        );
        assert!(close(r.days[1].energy["electricity"], 30.0));
        assert!(close(r.days[0].kgce, 35.0 * 0.1229 + 4.0 * 1.2143));
        let d1 = r.days[0].max_demand.unwrap();
        assert!(close(d1.kw, 80.0) && d1.at_ms == OCT1 + 36 * Q, "{d1:?}");
        let d2 = r.days[1].max_demand.unwrap();
        assert!(close(d2.kw, 120.0) && d2.at_ms == OCT1 + DAY + 35 * Q);
        assert_eq!(r.max_demand, Some(d2));
        assert_eq!(r.meters[0].daily_max_kw, vec![Some(80.0), None]);
        assert_eq!(r.meters[1].daily_max_kw, vec![Some(20.0), Some(120.0)]);
        assert!(r.meters[2].daily_max_kw.is_empty());
        // Load profile: 08:45 is (60 + 120) / 2 days, 09:00 is 80 on its one day.
        assert_eq!(r.load_profile.slot_s, 900);
        assert_eq!(r.load_profile.kw.len(), 96);
        assert!(close(r.load_profile.kw[35].unwrap(), 90.0));
        assert!(close(r.load_profile.kw[36].unwrap(), 80.0));
        assert_eq!(r.load_profile.kw.iter().flatten().count(), 2);
    }

    #[test]
    fn a_daylight_saving_day_is_one_local_day_and_keeps_the_time_of_day() {
        // Europe/Berlin: 2026-10-25 has 25 hours (03:00 CEST → 02:00 CET).
        let from = 1_792_792_800_000; // 2026-10-24 00:00 +02:00
        let e = energy();
        let s = Span {
            label: "dst".into(),
            from_ms: from,
            to_ms: from + 49 * 3_600_000, // to 2026-10-26 00:00 +01:00
            timezone: "Europe/Berlin".into(),
        };
        let mut b = Builder::new(s, &e);
        // 2026-10-25 12:00 +01:00 = from + 24 h + 13 h.
        let noon = from + 37 * 3_600_000;
        b.add("a", (noon, noon + Q), 25.0, IntervalQuality::Good, [0.0; 4]);
        let r = b.finish();
        let dates: Vec<&str> = r.days.iter().map(|d| d.date.as_str()).collect();
        assert_eq!(dates, ["2026-10-24", "2026-10-25"]);
        assert!(close(r.days[1].energy["electricity"], 25.0));
        assert!(
            close(r.load_profile.kw[48].unwrap(), 100.0),
            "12:00 is slot 48"
        );
    }

    #[test]
    fn a_span_too_fine_for_site_series_leaves_them_out_but_keeps_the_totals() {
        let mut e = energy();
        e.interval = std::time::Duration::from_secs(1);
        let mut b = Builder::new(span(30, "Asia/Shanghai"), &e);
        assert!(b.site_kw.is_empty(), "30 days of seconds is over the cap");
        b.add(
            "a",
            (OCT1, OCT1 + 1000),
            1.0,
            IntervalQuality::Good,
            [0.0; 4],
        );
        let r = b.finish();
        assert!(close(r.meters[0].total, 1.0));
        assert_eq!(r.max_demand, None);
        assert!(r.load_profile.kw.iter().all(Option::is_none));
        assert!(close(r.meters[0].daily_max_kw[0].unwrap(), 3600.0));
    }
}
