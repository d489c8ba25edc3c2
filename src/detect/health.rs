//! The device health index: 100 minus what each part deducts, so a technician sees why it
//! dropped.
//!
//! Parts, in points deducted (index = 100 − sum, never below 0):
//! - `comm`: up to 40, in proportion to the share of recent polls the device did not answer
//!   (an exponentially weighted average over about the last 20 polls);
//! - `alarms`: raised alarms by severity (critical 40, high 25, medium 10, low 5), up to 40;
//! - `anomaly`: up to 20, as the highest anomaly score of its points rises from 0.5 to 1;
//! - `trend`: up to 20, as the soonest predicted limit crossing comes from twice a trend
//!   rule's horizon down to now.
//!
//! Pure: a function of the parts' inputs.

use serde::Serialize;

use super::engine::{Engine, ms};
use super::inspect::{episode_kind, point_shares};
use super::message::PointShare;
use super::spec::{RuleKind, Severity};

/// Weight of the newest poll in the answered-share average (about 20 polls of memory).
pub const COMM_ALPHA: f64 = 0.1;

/// What each part deducts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Parts {
    /// Deducted for polls that went unanswered.
    pub comm: f64,
    /// Raised alarms.
    pub alarms: f64,
    /// Anomaly scores.
    pub anomaly: f64,
    /// Trend predictions.
    pub trend: f64,
}

impl Parts {
    /// The index in [0, 100], rounded.
    pub fn index(&self) -> u8 {
        let v = (100.0 - self.comm - self.alarms - self.anomaly - self.trend).clamp(0.0, 100.0);
        v.round() as u8
    }
}

/// Deduction for a share `answered` in [0, 1] of polls answered.
pub fn comm(answered: f64) -> f64 {
    40.0 * (1.0 - answered.clamp(0.0, 1.0))
}

/// Deduction for raised alarms of these severities.
pub fn alarms(raised: impl Iterator<Item = Severity>) -> f64 {
    raised
        .map(|s| match s {
            Severity::Critical => 40.0,
            Severity::High => 25.0,
            Severity::Medium => 10.0,
            Severity::Low => 5.0,
        })
        // A fold from +0.0: an empty `sum` of f64 is -0.0, which would print as "-0".
        .fold(0.0_f64, |a, b| a + b)
        .min(40.0)
}

/// Deduction for the highest anomaly score.
pub fn anomaly(max_score: Option<f64>) -> f64 {
    max_score.map_or(0.0, |s| 20.0 * ((s - 0.5) / 0.5).clamp(0.0, 1.0))
}

/// Deduction for a predicted crossing in `eta_ms`, against a rule's `horizon_ms`.
pub fn trend(eta_ms: i64, horizon_ms: i64) -> f64 {
    if horizon_ms <= 0 {
        return 0.0;
    }
    20.0 * (1.0 - eta_ms as f64 / (2.0 * horizon_ms as f64)).clamp(0.0, 1.0)
}

/// One device's health, as published on `{prefix}/health/{device}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceHealth {
    /// The device.
    pub device: String,
    /// What each part deducts.
    pub parts: Parts,
    /// Running hours in total, where counted.
    pub running_hours: Option<f64>,
    /// Starts in total, where counted.
    pub starts: Option<u64>,
    /// While a device-level anomaly alarm is raised: each point's share of its deviation,
    /// largest first.
    pub shares: Vec<PointShare>,
    /// While an `anomaly` rule's alarm is raised: its alarm name and the episode's kind
    /// (`level_shift`, `drift`, …), so the health message says what kind of fault lowers it.
    /// The device-level rule's alarm comes first, as it explains the most points.
    pub anomaly_kind: Option<(String, &'static str)>,
}

impl Engine {
    /// The health now (see the [module](self)) of every device polled at least once.
    pub fn health(&self) -> Vec<DeviceHealth> {
        self.devices
            .iter()
            .filter(|d| d.polled)
            .map(|d| {
                let raised = d
                    .instances
                    .iter()
                    .filter(|i| i.state.is_raised() && !i.state.suppressed)
                    .map(|i| i.rule.severity);
                let max_score = d
                    .instances
                    .iter()
                    .filter_map(|i| i.seen.score)
                    .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
                let trend = d
                    .instances
                    .iter()
                    .filter_map(|i| {
                        let RuleKind::Trend(t) = &i.kind else {
                            return None;
                        };
                        Some(trend(i.seen.eta_ms?, ms(t.horizon)))
                    })
                    .fold(0.0, f64::max);
                DeviceHealth {
                    device: d.name.to_string(),
                    parts: Parts {
                        comm: comm(d.answered_avg),
                        alarms: alarms(raised),
                        anomaly: anomaly(max_score),
                        trend,
                    },
                    running_hours: d.maintenance.as_ref().map(|(_, c)| c.running_hours()),
                    starts: d.maintenance.as_ref().map(|(_, c)| c.starts),
                    shares: d
                        .instances
                        .iter()
                        .find(|i| {
                            i.state.is_raised()
                                && matches!(&i.kind, RuleKind::Anomaly(a) if a.is_device())
                        })
                        .map(|i| point_shares(i, &d.point_names))
                        .unwrap_or_default(),
                    anomaly_kind: d
                        .instances
                        .iter()
                        .filter(|i| i.state.is_raised())
                        .filter_map(|i| {
                            let device_level =
                                matches!(&i.kind, RuleKind::Anomaly(a) if a.is_device());
                            Some((!device_level, i, episode_kind(i)?))
                        })
                        .min_by_key(|(point_level, ..)| *point_level)
                        // Health is published again and again: it follows the kind as
                        // the episode's first samples settle it.
                        .map(|(_, i, (kind, _))| (i.alarm.to_string(), kind.as_str())),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(
        clippy::float_cmp,
        reason = "every expected deduction is exact in binary"
    )]
    fn each_part_deducts_within_its_cap() {
        assert_eq!(comm(1.0), 0.0);
        assert_eq!(comm(0.5), 20.0);
        assert_eq!(alarms([Severity::High, Severity::Medium].into_iter()), 35.0);
        assert_eq!(
            alarms([Severity::Critical, Severity::High].into_iter()),
            40.0
        );
        assert_eq!(anomaly(Some(0.4)), 0.0);
        assert_eq!(anomaly(Some(0.75)), 10.0);
        assert_eq!(trend(12 * 3_600_000, 6 * 3_600_000), 0.0);
        assert_eq!(trend(6 * 3_600_000, 6 * 3_600_000), 10.0);
        assert_eq!(trend(0, 6 * 3_600_000), 20.0);
        let p = Parts {
            comm: 40.0,
            alarms: 40.0,
            anomaly: 20.0,
            trend: 20.0,
        };
        assert_eq!(p.index(), 0);
        assert_eq!(Parts::default().index(), 100);
    }
}
