//! `plantwatch export`: the energy manager's report, computed from ledger intervals.
//!
//! Pure: [`Report::build`] takes the intervals of a period and the energy configuration and
//! sums them by meter, group and energy kind, with the time-of-use split, maximum demand,
//! standard coal, energy per unit of product against benchmarks, and data completeness; the
//! renderers turn it into CSV or JSON. Every report carries the coefficients it used.
//!
//! Invariants: totals are sums of interval deltas (no re-estimation here); a group's total is
//! the sum of its meters'; completeness counts every interval the period should have.

pub mod csv;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::energy::{Counts, Energy};
use crate::process::counter::IntervalQuality;
use crate::process::ledger::LedgerInterval;
use crate::process::tou::Period;

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
}

impl Completeness {
    /// Share of expected intervals that were measured, in percent.
    pub fn measured_percent(&self) -> f64 {
        percent(self.measured, self.expected)
    }
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
}

/// Sums intervals as they stream from the ledger, so a year of 200 meters never sits in
/// memory at once.
#[derive(Debug)]
pub struct Builder<'a> {
    span: Span,
    energy: &'a Energy,
    expected: u64,
    rows: Vec<MeterRow>,
    index: std::collections::HashMap<String, usize>,
}

impl<'a> Builder<'a> {
    /// An empty report of `span` for `energy`'s meters.
    pub fn new(span: Span, energy: &'a Energy) -> Self {
        let interval_ms = i64::try_from(energy.interval.as_millis())
            .unwrap_or(900_000)
            .max(1);
        let expected = u64::try_from((span.to_ms - span.from_ms).max(0) / interval_ms).unwrap_or(0);
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
            })
            .collect();
        let index = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.meter.clone(), i))
            .collect();
        Self {
            span,
            energy,
            expected,
            rows,
            index,
        }
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
        let hours = (end_ms - start_ms) as f64 / 3_600_000.0;
        if row.kind == "electricity" && hours > 0.0 && quality != IntervalQuality::Missing {
            let kw = delta / hours;
            if row.max_demand.is_none_or(|d| kw > d.kw) {
                row.max_demand = Some(Demand {
                    kw,
                    at_ms: start_ms,
                });
            }
        }
    }

    /// The report.
    pub fn finish(self) -> Report {
        let Self {
            span,
            energy,
            expected,
            mut rows,
            ..
        } = self;
        for (row, m) in rows.iter_mut().zip(&energy.meters) {
            row.completeness.missing =
                expected.saturating_sub(row.completeness.measured + row.completeness.estimated);
            if let Counts::Energy(kind) = m.counts {
                let factor = energy.coefficients.get(kind);
                row.kgce_per_unit = Some(factor);
                row.kgce = Some(row.total * factor);
            }
        }
        Report::from_meters(span, energy, rows)
    }
}

impl Report {
    /// Sums `intervals` (those starting within `span`) under `energy`'s meters.
    pub fn build(span: Span, energy: &Energy, intervals: &[LedgerInterval]) -> Self {
        let mut b = Builder::new(span, energy);
        for iv in intervals {
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

    fn from_meters(span: Span, energy: &Energy, meters: Vec<MeterRow>) -> Self {
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
                intensity.push(Intensity {
                    group: g.clone(),
                    production: p.meter.clone(),
                    unit: p.unit.clone(),
                    kgce,
                    output: p.total,
                    kgce_per_unit: (p.total > 0.0).then(|| kgce / p.total),
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
