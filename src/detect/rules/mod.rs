//! The rule kinds: one closed enum, [`RuleKind`], with one variant per kind and one file per
//! kind. A variant's struct is what the kind's `[[rules]]` keys say (serde, each
//! `deny_unknown_fields`) and, once an engine runs it, the kind's running state (never read
//! from the file). Every dispatch over kinds is an exhaustive `match`, so a new kind that is
//! not handled somewhere does not compile.
//!
//! Adding a kind: a variant here, a file beside this one with its struct, its checks and its
//! default message, and whatever the compiler then asks for (its condition in the engine, its
//! name, its target shape).
//!
//! The service, quota, demand and baseline kinds are never written in `[[rules]]`: the engine
//! makes them from `[[maintenance]]`, `[[quotas]]`, meters' contracts and `[[baselines]]`.
//! They still parse (their structs take no keys), so that `kind = "quota"` is refused with a
//! pointer to where such alarms come from ([`RuleKind::made_elsewhere`]) rather than
//! dropped.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub mod anomaly;
pub mod baseline;
pub mod comm_loss;
pub mod demand;
pub mod expression;
pub mod limit;
pub mod quota;
pub mod rate;
pub mod service;
pub mod stuck;
pub mod trend;

use super::spec::Target;

/// What a rule detects, with that kind's parameters (and, in an engine, its running state).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleKind {
    /// Above the high-high limit.
    HighHigh(limit::Limit),
    /// Above the high limit.
    High(limit::Limit),
    /// Below the low limit.
    Low(limit::Limit),
    /// Below the low-low limit.
    LowLow(limit::Limit),
    /// Changing faster than a limit.
    Rate(rate::Rate),
    /// Not changing while the device answers.
    Stuck(stuck::Stuck),
    /// The device does not answer.
    CommLoss(comm_loss::CommLoss),
    /// The statistical model's score stays high.
    Anomaly(anomaly::Anomaly),
    /// The trend will cross a limit within a horizon.
    Trend(trend::Trend),
    /// A condition over the device's points.
    Expression(expression::Expression),
    /// Running hours since the last service (made by `[[maintenance]]`).
    ServiceHours(service::ServiceHours),
    /// Starts since the last service (made by `[[maintenance]]`).
    ServiceStarts(service::ServiceStarts),
    /// A period's projected or used energy passes its quota (made by `[[quotas]]`).
    Quota(quota::Quota),
    /// The demand block is projected above the contract (made by a meter's `contract_kw`).
    Demand(demand::Demand),
    /// An hour (or day) used more than usual (made by `[[baselines]]`).
    Baseline(baseline::Baseline),
}

/// How a kind's alarms attach to a device: one per matched point, or one per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One alarm per matched point (`point` required).
    Point,
    /// One alarm per matched device (`point` refused).
    Device,
    /// `anomaly`: one per point with `point`, one device-level model without.
    PointOrDevice,
}

/// A problem with one of a rule's own keys: the key, and what is wrong for the person editing
/// the file. `config` reports it under the rule (`rules[3].window`).
pub type Problem = (&'static str, String);

impl RuleKind {
    /// The kind as written (`kind = "high_high"`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::HighHigh(_) => "high_high",
            Self::High(_) => "high",
            Self::Low(_) => "low",
            Self::LowLow(_) => "low_low",
            Self::Rate(_) => "rate",
            Self::Stuck(_) => "stuck",
            Self::CommLoss(_) => "comm_loss",
            Self::Anomaly(_) => "anomaly",
            Self::Trend(_) => "trend",
            Self::Expression(_) => "expression",
            Self::ServiceHours(_) => "service_hours",
            Self::ServiceStarts(_) => "service_starts",
            Self::Quota(_) => "quota",
            Self::Demand(_) => "demand",
            Self::Baseline(_) => "baseline",
        }
    }

    /// Where the alarms of a kind that `[[rules]]` cannot declare come from; `None` for the
    /// kinds `[[rules]]` writes.
    pub fn made_elsewhere(&self) -> Option<&'static str> {
        match self {
            Self::ServiceHours(_) | Self::ServiceStarts(_) => Some(service::MADE_BY),
            Self::Quota(_) => Some(quota::MADE_BY),
            Self::Demand(_) => Some(demand::MADE_BY),
            Self::Baseline(_) => Some(baseline::MADE_BY),
            Self::HighHigh(_)
            | Self::High(_)
            | Self::Low(_)
            | Self::LowLow(_)
            | Self::Rate(_)
            | Self::Stuck(_)
            | Self::CommLoss(_)
            | Self::Anomaly(_)
            | Self::Trend(_)
            | Self::Expression(_) => None,
        }
    }

    /// How the kind's alarms attach to devices and points.
    pub fn shape(&self) -> Shape {
        match self {
            Self::HighHigh(_)
            | Self::High(_)
            | Self::Low(_)
            | Self::LowLow(_)
            | Self::Rate(_)
            | Self::Stuck(_)
            | Self::Trend(_) => Shape::Point,
            Self::Anomaly(_) => Shape::PointOrDevice,
            Self::CommLoss(_)
            | Self::Expression(_)
            | Self::ServiceHours(_)
            | Self::ServiceStarts(_)
            | Self::Quota(_)
            | Self::Demand(_)
            | Self::Baseline(_) => Shape::Device,
        }
    }

    /// What is wrong with the kind's own keys as written, by key (none when they are fine).
    /// Checks that need the devices (an expression's points, `learn` against the poll
    /// interval) are config's.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        match self {
            Self::HighHigh(l) | Self::High(l) | Self::Low(l) | Self::LowLow(l) => {
                l.check(&mut out);
            }
            Self::Rate(r) => r.check(&mut out),
            Self::Stuck(s) => s.check(&mut out),
            Self::CommLoss(_) => {}
            Self::Anomaly(a) => a.check(&mut out),
            Self::Trend(t) => t.check(&mut out),
            Self::Expression(_)
            | Self::ServiceHours(_)
            | Self::ServiceStarts(_)
            | Self::Quota(_)
            | Self::Demand(_)
            | Self::Baseline(_) => {}
        }
        out
    }

    /// The message template the kind uses when the rule gives none.
    pub fn default_message(&self) -> &'static str {
        match self {
            Self::HighHigh(_) | Self::High(_) => limit::ABOVE_MESSAGE,
            Self::Low(_) | Self::LowLow(_) => limit::BELOW_MESSAGE,
            Self::Rate(_) => rate::MESSAGE,
            Self::Stuck(_) => stuck::MESSAGE,
            Self::CommLoss(_) => comm_loss::MESSAGE,
            Self::Anomaly(_) => anomaly::MESSAGE,
            Self::Trend(_) => trend::MESSAGE,
            Self::Expression(_) => expression::MESSAGE,
            Self::ServiceHours(_) => service::HOURS_MESSAGE,
            Self::ServiceStarts(_) => service::STARTS_MESSAGE,
            Self::Quota(_) => quota::MESSAGE,
            Self::Demand(_) => demand::MESSAGE,
            Self::Baseline(_) => baseline::MESSAGE,
        }
    }

    /// Whether the kind keeps learned state worth saving across restarts (see
    /// [`snapshot`](super::snapshot)).
    pub fn learns(&self) -> bool {
        match self {
            Self::Rate(_) | Self::Anomaly(_) | Self::Trend(_) => true,
            Self::HighHigh(_)
            | Self::High(_)
            | Self::Low(_)
            | Self::LowLow(_)
            | Self::Stuck(_)
            | Self::CommLoss(_)
            | Self::Expression(_)
            | Self::ServiceHours(_)
            | Self::ServiceStarts(_)
            | Self::Quota(_)
            | Self::Demand(_)
            | Self::Baseline(_) => false,
        }
    }

    /// How long the condition must hold before a raise, beyond the rule's `on_delay`: a
    /// comm-loss `duration`.
    pub fn hold(&self) -> Duration {
        match self {
            Self::CommLoss(c) => c.duration,
            Self::HighHigh(_)
            | Self::High(_)
            | Self::Low(_)
            | Self::LowLow(_)
            | Self::Rate(_)
            | Self::Stuck(_)
            | Self::Anomaly(_)
            | Self::Trend(_)
            | Self::Expression(_)
            | Self::ServiceHours(_)
            | Self::ServiceStarts(_)
            | Self::Quota(_)
            | Self::Demand(_)
            | Self::Baseline(_) => Duration::ZERO,
        }
    }

    /// A copy of this kind, ready to run on `target` of a device polled every `poll`: its
    /// state fresh and built for that target. `None` for a target it cannot run on (an
    /// expression that did not compile there).
    pub fn start(&self, target: &Target, poll: Option<Duration>) -> Option<Self> {
        let mut kind = self.clone();
        match &mut kind {
            Self::Anomaly(a) => a.start(target, poll),
            Self::Trend(t) => t.start(),
            Self::Expression(e) => e.start(target)?,
            Self::HighHigh(_)
            | Self::High(_)
            | Self::Low(_)
            | Self::LowLow(_)
            | Self::Rate(_)
            | Self::Stuck(_)
            | Self::CommLoss(_)
            | Self::ServiceHours(_)
            | Self::ServiceStarts(_)
            | Self::Quota(_)
            | Self::Demand(_)
            | Self::Baseline(_) => {}
        }
        Some(kind)
    }
}

/// Records a problem at `key` unless `value` is finite.
pub(super) fn finite(out: &mut Vec<Problem>, key: &'static str, value: f64) {
    if !value.is_finite() {
        out.push((key, format!("{value} is not a finite number")));
    }
}

/// Records a problem at `key` unless `value` is finite and 0 or more.
pub(super) fn non_negative(out: &mut Vec<Problem>, key: &'static str, value: f64) {
    finite(out, key, value);
    if value < 0.0 {
        out.push((key, "must be 0 or more".to_owned()));
    }
}

/// Reads a written duration (`"30s"`, `"6h"`) for serde; see [`crate::model::parse_duration`].
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    crate::model::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// [`duration`] for an optional key.
pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}
