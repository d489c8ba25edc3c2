//! What a report is computed against: the meters and counters, the tariff's name, the
//! standard-coal coefficients, the ledger interval, and the benchmarks and savings baselines
//! to compare with. `export` owns these types; `config` assembles them from the file.

use std::time::Duration;

use chrono::NaiveDate;

use crate::process::coal::{Coefficients, EnergyKind};
use crate::process::spec::Meter;

/// Everything a report needs besides the ledger's intervals.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    /// Energy meters and production counters, in file order, as the ledger names them.
    pub meters: Vec<Meter>,
    /// The time-of-use tariff's name, printed in reports.
    pub tariff: String,
    /// Standard-coal coefficients.
    pub coefficients: Coefficients,
    /// Ledger interval.
    pub interval: Duration,
    /// Benchmark values for energy per unit of product.
    pub benchmarks: Vec<Benchmark>,
    /// Energy-performance-contract baselines.
    pub savings: Vec<Savings>,
}

/// A resolved benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Benchmark {
    /// The production counter.
    pub production: String,
    /// The group, or `None` for every group of the counter.
    pub group: Option<String>,
    /// Where the values come from.
    pub standard: String,
    /// Advanced value, kgce per unit.
    pub advanced: Option<f64>,
    /// Access value, kgce per unit.
    pub access: Option<f64>,
    /// Limit value, kgce per unit.
    pub limit: Option<f64>,
}

/// A resolved savings baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Savings {
    /// The project's name.
    pub name: String,
    /// The meter or group.
    pub target: String,
    /// The energy that counts.
    pub kind: EnergyKind,
    /// Indices (into [`ReportSpec::meters`]) of the meters that count.
    pub meters: Vec<usize>,
    /// Index of the production counter, if the baseline is a regression on it.
    pub production: Option<usize>,
    /// First day of the baseline period.
    pub baseline_from: NaiveDate,
    /// Last day of the baseline period (inclusive).
    pub baseline_to: NaiveDate,
}
