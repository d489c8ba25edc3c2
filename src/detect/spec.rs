//! What the detect stage is told: its rules and their kinds, severities, the alarm policy,
//! maintenance counting and the energy alarms' settings. `config` resolves `[[rules]]`,
//! `[alarms]`, `[[maintenance]]`, `[[quotas]]` and `[[baselines]]` into these (and checks
//! them); the stage never reads the file itself.

use std::time::Duration;

use serde::Deserialize;

use super::anomaly::AnomalyParams;
use super::expr::Expr;
use super::quota::QuotaPeriod;
use super::trend::Direction;
use crate::model::Name;
use crate::process::coal::EnergyKind;

/// The rule kinds, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKindName {
    /// Above the high-high limit.
    HighHigh,
    /// Above the high limit.
    High,
    /// Below the low limit.
    Low,
    /// Below the low-low limit.
    LowLow,
    /// Changing faster than a limit.
    Rate,
    /// Not changing while the device answers.
    Stuck,
    /// The device does not answer.
    CommLoss,
    /// The statistical model's score stays high.
    Anomaly,
    /// The trend will cross a limit within a horizon.
    Trend,
    /// A condition over the device's points.
    Expression,
    /// Made by `[[maintenance]]`, not written in `[[rules]]`: running hours since service.
    ServiceHours,
    /// Made by `[[maintenance]]`, not written in `[[rules]]`: starts since service.
    ServiceStarts,
    /// Made by `[[quotas]]`: the period's projected or used energy passes the quota.
    Quota,
    /// Made by `contract_kw` on a meter: the demand block is projected above the contract.
    Demand,
    /// Made by `[[baselines]]`: an hour used more than its usual share.
    Baseline,
}

impl RuleKindName {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HighHigh => "high_high",
            Self::High => "high",
            Self::Low => "low",
            Self::LowLow => "low_low",
            Self::Rate => "rate",
            Self::Stuck => "stuck",
            Self::CommLoss => "comm_loss",
            Self::Anomaly => "anomaly",
            Self::Trend => "trend",
            Self::Expression => "expression",
            Self::ServiceHours => "service_hours",
            Self::ServiceStarts => "service_starts",
            Self::Quota => "quota",
            Self::Demand => "demand",
            Self::Baseline => "baseline",
        }
    }

    /// Whether the rule watches one point (rather than the device as a whole).
    pub fn is_point_rule(self) -> bool {
        !matches!(
            self,
            Self::CommLoss
                | Self::Expression
                | Self::ServiceHours
                | Self::ServiceStarts
                | Self::Quota
                | Self::Demand
                | Self::Baseline
        )
    }
}

/// Alarm priority, ISA-18.2 style; ordered from least to most urgent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Advisory.
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

/// What a resolved rule detects, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// A limit: `above` for high and high-high, below for low and low-low.
    Limit {
        /// Which limit.
        level: RuleKindName,
        /// The limit.
        limit: f64,
        /// True for high limits.
        above: bool,
    },
    /// |rate of change| above `limit` per `per`, measured over `window`.
    Rate {
        /// Units per `per`.
        limit: f64,
        /// One second or one minute.
        per: Duration,
        /// Measured between samples at least this far apart.
        window: Duration,
    },
    /// No change beyond `tolerance` for `duration` while the device answers.
    Stuck {
        /// Smallest change that counts.
        tolerance: f64,
        /// How long.
        duration: Duration,
    },
    /// The device has not answered for `duration`.
    CommLoss {
        /// How long.
        duration: Duration,
    },
    /// The anomaly score stays at or above `threshold`.
    Anomaly {
        /// Score in (0, 1).
        threshold: f64,
        /// The model's settings.
        params: AnomalyParams,
        /// `learn`: the memory as a duration; replaces `params.learn_samples` by this many
        /// polls of each target's device (see [`learn_samples`]).
        learn: Option<Duration>,
    },
    /// The trend crosses `limit` within `horizon`.
    Trend {
        /// The limit.
        limit: f64,
        /// Which way.
        direction: Direction,
        /// How soon counts.
        horizon: Duration,
        /// Trend window.
        window: Duration,
    },
    /// A condition over the device's points.
    Expression,
    /// Running hours since the last service reached `every`.
    ServiceHours {
        /// The interval in running hours.
        every: f64,
    },
    /// Starts since the last service reached `every`.
    ServiceStarts {
        /// The interval in starts.
        every: u64,
    },
    /// A quota: `exceeded` alarms on the energy used, otherwise on the projection.
    Quota {
        /// Index into `Plan::energy.quotas`.
        quota: usize,
        /// Used rather than projected.
        exceeded: bool,
    },
    /// The running demand block is projected above `contract_kw × warn_at`.
    Demand {
        /// Index into `Plan::energy.meters`.
        meter: usize,
        /// Contracted demand, kW.
        contract_kw: f64,
        /// Share of the contract that warns.
        warn_at: f64,
    },
    /// An hour's energy above its hour-of-week baseline by more than the threshold.
    Baseline {
        /// Index into `Plan::energy.baselines`.
        baseline: usize,
    },
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
    /// What it detects.
    pub kind: RuleKind,
    /// The kind as written.
    pub kind_name: RuleKindName,
    /// Priority.
    pub severity: Severity,
    /// Message template.
    pub message: String,
    /// Hysteresis, engineering units.
    pub deadband: f64,
    /// Raise delay.
    pub on_delay: Duration,
    /// Clear delay.
    pub off_delay: Duration,
    /// What it watches.
    pub targets: Vec<Target>,
}

/// The message of a device-level `anomaly` rule when `message` is not given.
pub const DEVICE_ANOMALY_MESSAGE: &str = "{device}: its points no longer move together as usual ({kind}, score {score}); explained by {explains}";

/// The message template a kind uses when `message` is not given.
pub fn default_message(kind: RuleKindName) -> &'static str {
    match kind {
        RuleKindName::HighHigh | RuleKindName::High => {
            "{device} {point} = {value}{unit}, above the limit {limit}{unit}"
        }
        RuleKindName::Low | RuleKindName::LowLow => {
            "{device} {point} = {value}{unit}, below the limit {limit}{unit}"
        }
        RuleKindName::Rate => "{device} {point} changing at {value}{unit} per {per}, limit {limit}",
        RuleKindName::Stuck => "{device} {point} stuck at {value}{unit}",
        RuleKindName::CommLoss => "{device} not answering",
        RuleKindName::Anomaly => {
            "{device} {point} = {value}{unit} looks abnormal: {kind} (score {score}, expected about {limit}{unit})"
        }
        RuleKindName::Trend => {
            "{device} {point} = {value}{unit} predicted to reach {limit}{unit} in {eta}"
        }
        RuleKindName::Expression => "{device}: {when}",
        RuleKindName::ServiceHours => {
            "{device} is due for service: {value} running hours since the last (every {limit})"
        }
        RuleKindName::ServiceStarts => {
            "{device} is due for service: {value} starts since the last (every {limit})"
        }
        RuleKindName::Quota => "{device}: {value} used or projected this {per}, quota {limit}",
        RuleKindName::Demand => {
            "{device}: demand projected at {value} kW this block, contract {limit} kW"
        }
        RuleKindName::Baseline => "{device}: {value} this hour, usually {limit}",
    }
}

/// The samples an `anomaly` model's memory of `learn` holds at one sample per `poll`
/// (rounded to the nearest, saturating).
pub fn learn_samples(learn: Duration, poll: Duration) -> u32 {
    if poll.is_zero() {
        return u32::MAX;
    }
    let samples = (learn.as_secs_f64() / poll.as_secs_f64()).round();
    if samples >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        samples as u32
    }
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
    /// Severity.
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
    /// Severity.
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
