//! What the detect stage is told: its rules (their kinds are [`rules`](super::rules)), severities, the alarm policy,
//! maintenance counting and the energy alarms' settings. `config` resolves `[[rules]]`,
//! `[alarms]`, `[[maintenance]]`, `[[quotas]]` and `[[baselines]]` into these (and checks
//! them); the stage never reads the file itself.

use std::time::Duration;

use serde::Deserialize;

use super::expr::Expr;
use super::quota::QuotaPeriod;
pub use super::rules::RuleKind;
use crate::model::Name;
use crate::process::coal::EnergyKind;

/// Alarm priority, ISA-18.2 style; ordered from least to most urgent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Advisory: worth a look, no one is woken.
    Low,
    /// Needs attention this shift.
    #[default]
    Medium,
    /// Needs attention now.
    High,
    /// Stop what you are doing.
    Critical,
}

impl Severity {
    /// As written in config and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Low, Self::Medium, Self::High, Self::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[alarms]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmPolicy {
    /// Raises per device per minute before the flood summary takes over; 0 disables it.
    pub max_per_device_per_minute: u32,
}

/// Raises per device per minute when `[alarms]` does not say.
pub const DEFAULT_MAX_PER_MINUTE: u32 = 10;

impl Default for AlarmPolicy {
    fn default() -> Self {
        Self {
            max_per_device_per_minute: DEFAULT_MAX_PER_MINUTE,
        }
    }
}

/// One alarm a rule produces: a device, and a point for point rules.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index into `Plan::devices`.
    pub device: usize,
    /// Index into that device's points, for point rules.
    pub point: Option<usize>,
    /// The alarm's name below the device: the rule name, or `rule.point` when the rule's point
    /// selector is a glob (so two matched points never share a topic).
    pub alarm: String,
    /// The compiled condition (`expression` only).
    pub expr: Option<Expr>,
    /// A device-level `anomaly`: the points its one model watches (empty for the others).
    pub points: Vec<usize>,
    /// `anomaly`: the run-state point that selects the model of the operating regime.
    pub regime: Option<usize>,
}

/// A resolved `[[rules]]` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name.
    pub name: Name,
    /// Where it was written (`rules[3]`), for messages.
    pub key: String,
    /// What it detects, with the kind's parameters.
    pub kind: RuleKind,
    /// How urgent its alarm is, carried in every alarm message.
    pub severity: Severity,
    /// Message template.
    pub message: String,
    /// Raise delay.
    pub on_delay: Duration,
    /// Clear delay.
    pub off_delay: Duration,
    /// What it watches.
    pub targets: Vec<Target>,
}

/// Maintenance counting for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Maintenance {
    /// Index into `Plan::devices`.
    pub device: usize,
    /// Index of the run point in that device.
    pub run_point: usize,
    /// Running above this value.
    pub run_above: f64,
    /// Service interval in running hours.
    pub service_hours: Option<f64>,
    /// Service interval in starts.
    pub service_starts: Option<u64>,
    /// Severity of the service alarms.
    pub severity: Severity,
}

/// A resolved quota.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// Its name.
    pub name: Name,
    /// The meter or group.
    pub target: String,
    /// The energy that counts.
    pub kind: EnergyKind,
    /// Its period.
    pub period: QuotaPeriod,
    /// The quota.
    pub limit: f64,
    /// Earliest projection, as a share of the period.
    pub min_elapsed: f64,
    /// How urgent the overuse alarm is.
    pub severity: Severity,
    /// Indices of the meters that count towards it.
    pub meters: Vec<usize>,
}

/// A resolved hour-of-week baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Its name.
    pub name: Name,
    /// The meter or group.
    pub target: String,
    /// Energy unit, for messages.
    pub unit: String,
    /// Weeks kept.
    pub weeks: usize,
    /// Weeks needed.
    pub min_weeks: usize,
    /// Threshold above the baseline, percent.
    pub over_percent: f64,
    /// How urgent the overuse alarm is.
    pub severity: Severity,
    /// Indices of the meters that count.
    pub meters: Vec<usize>,
    /// With `method = "regression"`: how days are judged instead of hours.
    pub regression: Option<Regression>,
}

/// A regression baseline's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    /// Index (into `Energy::meters`) of the production counter.
    pub production: usize,
    /// Its name, for messages.
    pub production_name: String,
    /// Days of history kept.
    pub days: usize,
    /// Days needed before it judges.
    pub min_days: usize,
}

/// What the engine is built from: the devices with their points, every rule, and the settings
/// of the alarms that `[[rules]]` does not write (service, quota, baseline and demand).
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// The devices, in the order rule targets index them.
    pub devices: Vec<DeviceSpec>,
    /// The resolved `[[rules]]`.
    pub rules: Vec<Rule>,
    /// Running hours and starts to count, and the service alarms they raise.
    pub maintenance: Vec<Maintenance>,
    /// Energy quotas, indexed by [`RuleKind::Quota`].
    pub quotas: Vec<Quota>,
    /// Energy baselines, indexed by [`RuleKind::Baseline`].
    pub baselines: Vec<Baseline>,
    /// How demand is averaged for the demand-contract alarms.
    pub demand: crate::process::demand::DemandParams,
    /// The energy meters, indexed by quotas, baselines and [`RuleKind::Demand`]; their names
    /// match ledger intervals, and their contracts make demand alarms.
    pub meters: Vec<crate::process::spec::Meter>,
    /// Flood control.
    pub policy: AlarmPolicy,
    /// The zone of the local hours and days that seasons, quotas and baselines follow.
    pub timezone: chrono_tz::Tz,
}

/// A device as the engine sees it.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Its name, as batches carry it.
    pub name: Name,
    /// Its points, in the order rule targets index them.
    pub points: Vec<PointSpec>,
    /// How often it is polled: an `anomaly` rule's `learn` duration becomes that many polls.
    pub poll_interval: Duration,
}

/// A point as the engine sees it.
#[derive(Debug, Clone)]
pub struct PointSpec {
    /// Its name, as samples carry it.
    pub name: Name,
    /// Engineering unit, for messages.
    pub unit: String,
}
