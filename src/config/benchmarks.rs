//! `[[benchmarks]]` and `[[savings]]`: what `plantwatch export` compares the period with.
//!
//! Benchmarks are the values of an energy-consumption quota standard (GB 能耗限额) for energy
//! per unit of product, entered by the user because no source lets us ship them
//! (docs/platform.md §3.1). Savings are energy-performance-contract baselines (IPMVP Option B/C,
//! docs/platform.md §3.3): a baseline period whose daily use, regressed on production where a
//! production counter is named, predicts what the reporting period would have used.

use chrono::NaiveDate;
use serde::Deserialize;

use super::describe;
use super::energy::{Counts, Meter};
use super::issue::Issues;
pub use crate::export::spec::{Benchmark, Savings};
use crate::process::coal::EnergyKind;

/// `[[benchmarks]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBenchmark {
    /// The `[[production]]` counter whose output divides the energy.
    pub production: String,
    /// The group whose energy counts; default every group of the production counter.
    #[serde(default)]
    pub group: Option<String>,
    /// The standard the values come from, printed beside them.
    #[serde(default)]
    pub standard: Option<String>,
    /// Advanced value (先进值), kgce per unit of product.
    #[serde(default)]
    pub advanced: Option<f64>,
    /// Access value for new plants (准入值), kgce per unit.
    #[serde(default)]
    pub access: Option<f64>,
    /// Limit for existing plants (限定值), kgce per unit.
    #[serde(default)]
    pub limit: Option<f64>,
}

/// `[[savings]]` as written: an energy-performance-contract baseline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSavings {
    /// The project's name, printed in reports.
    pub name: String,
    /// A meter's name or a group's.
    pub target: String,
    /// Which energy counts; default the meter's kind, or electricity.
    #[serde(default)]
    pub kind: Option<EnergyKind>,
    /// The production counter daily use is regressed on; without one the baseline is the
    /// baseline period's mean daily use.
    #[serde(default)]
    pub production: Option<String>,
    /// First local day of the baseline period, `YYYY-MM-DD`.
    pub baseline_from: String,
    /// Last local day of the baseline period (inclusive).
    pub baseline_to: String,
}

/// The index of production counter `name`, or an issue at `key` with the closest name.
pub(super) fn production_index(
    key: &str,
    name: &str,
    meters: &[Meter],
    issues: &mut Issues,
) -> Option<usize> {
    let found = meters
        .iter()
        .position(|m| m.name == name && matches!(m.counts, Counts::Product(_)));
    if found.is_none() {
        let names: Vec<&str> = meters
            .iter()
            .filter(|m| matches!(m.counts, Counts::Product(_)))
            .map(|m| m.name.as_str())
            .collect();
        let hint = describe::closest(name, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        issues.push(
            key,
            format!("no [[production]] counter is named `{name}`{hint}"),
        );
    }
    found
}

/// Resolves `[[benchmarks]]` against the resolved counters.
pub fn resolve_benchmarks(
    raw: Vec<(String, RawBenchmark)>,
    meters: &[Meter],
    issues: &mut Issues,
) -> Vec<Benchmark> {
    let mut out: Vec<Benchmark> = Vec::new();
    for (key, b) in raw {
        let before = issues.0.len();
        let production =
            production_index(&format!("{key}.production"), &b.production, meters, issues);
        if let (Some(p), Some(g)) = (production, &b.group) {
            if !meters[p].groups.contains(g) {
                issues.push(
                    format!("{key}.group"),
                    format!(
                        "`{g}` is not a group of `{}`: its groups are {:?}",
                        b.production, meters[p].groups
                    ),
                );
            }
        }
        let values = [
            ("advanced", b.advanced),
            ("access", b.access),
            ("limit", b.limit),
        ];
        for (name, v) in values {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                issues.push(format!("{key}.{name}"), "must be above 0 (kgce per unit)");
            }
        }
        let given: Vec<(&str, f64)> = values
            .iter()
            .filter_map(|(n, v)| v.map(|v| (*n, v)))
            .collect();
        if given.is_empty() {
            issues.push(
                key.clone(),
                "give at least one of `advanced`, `access` and `limit` (kgce per unit)",
            );
        }
        // Lower is better: advanced ≤ access ≤ limit, as the quota standards define them.
        for pair in given.windows(2) {
            if pair[0].1 > pair[1].1 {
                issues.push(
                    format!("{key}.{}", pair[0].0),
                    format!(
                        "{} is above {} = {}: a quota standard's values run advanced ≤ access ≤ limit",
                        pair[0].1, pair[1].0, pair[1].1
                    ),
                );
            }
        }
        let duplicate = out
            .iter()
            .any(|o| o.production == b.production && o.group == b.group);
        if duplicate {
            issues.push(
                key.clone(),
                format!("`{}` already has benchmarks for this group", b.production),
            );
        }
        if issues.0.len() == before {
            out.push(Benchmark {
                production: b.production,
                group: b.group,
                standard: b.standard.unwrap_or_default(),
                advanced: b.advanced,
                access: b.access,
                limit: b.limit,
            });
        }
    }
    out
}

fn date(key: &str, text: &str, issues: &mut Issues) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| issues.push(key, format!("`{text}` is not a date YYYY-MM-DD: {e}")))
        .ok()
}

/// Resolves `[[savings]]` against the resolved meters and their groups.
pub fn resolve_savings(
    raw: Vec<(String, RawSavings)>,
    meters: &[Meter],
    issues: &mut Issues,
) -> Vec<Savings> {
    let mut out: Vec<Savings> = Vec::new();
    for (key, s) in raw {
        let before = issues.0.len();
        if s.name.trim().is_empty() {
            issues.push(format!("{key}.name"), "give the project a name");
        }
        if out.iter().any(|o| o.name == s.name) {
            issues.push(
                format!("{key}.name"),
                format!("`{}` is already a savings project", s.name),
            );
        }
        let kind = super::energy::target_kind(s.kind, &s.target, meters);
        let counted = super::energy::counted_meters(&key, &s.target, kind, meters, issues);
        let production = s
            .production
            .as_deref()
            .and_then(|p| production_index(&format!("{key}.production"), p, meters, issues));
        let from = date(&format!("{key}.baseline_from"), &s.baseline_from, issues);
        let to = date(&format!("{key}.baseline_to"), &s.baseline_to, issues);
        if let (Some(f), Some(t)) = (from, to) {
            if t < f {
                issues.push(
                    format!("{key}.baseline_to"),
                    format!("{t} is before baseline_from {f}"),
                );
            }
        }
        if let (true, Some(baseline_from), Some(baseline_to)) = (issues.0.len() == before, from, to)
        {
            out.push(Savings {
                name: s.name,
                target: s.target,
                kind,
                meters: counted,
                production,
                baseline_from,
                baseline_to,
            });
        }
    }
    out
}
