//! What the engine can be asked about its rules between polls: the anomaly episodes (for
//! `replay --episodes`), a point's latest score, the alarms raised on a point.

use super::anomaly;
use super::engine::{Engine, Instance};
use super::message::PointShare;
use super::spec::RuleKind;
use crate::model::Name;

/// An `anomaly` rule's episode after the last batch of its device (for `replay --episodes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeState {
    /// The rule instance on its device: stable for the engine's life, an argument of
    /// [`Engine::anomaly_rule`].
    pub instance: usize,
    /// The episode of the model of the current regime.
    pub episode: self::anomaly::Episode,
    /// The rule's latest onset score.
    pub score: Option<f64>,
}

/// What an `anomaly` rule instance watches, for an episode's line in `replay --episodes`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyRule<'a> {
    /// The alarm name.
    pub alarm: &'a str,
    /// The watched point of a point model; `None` for a device-level model.
    pub point: Option<&'a str>,
    /// A device-level model's points with their shares of the current (or last) episode's
    /// deviation, largest first; empty for a point model.
    pub shares: Vec<PointShare>,
}

impl Engine {
    /// The episode of every `anomaly` rule of `device` (point and device-level models).
    pub fn anomaly_episodes(&self, device: usize) -> impl Iterator<Item = EpisodeState> + '_ {
        self.devices
            .get(device)
            .into_iter()
            .flat_map(|d| d.instances.iter().enumerate())
            .filter_map(|(instance, inst)| {
                let RuleKind::Anomaly(a) = &inst.kind else {
                    return None;
                };
                let episode = a.episode();
                Some(EpisodeState {
                    instance,
                    episode: episode.unwrap_or_default(),
                    score: inst.seen.score,
                })
            })
    }

    /// The alarm, point and (device-level models) point shares of rule instance `instance`
    /// of `device`, as listed by [`Engine::anomaly_episodes`].
    pub fn anomaly_rule(&self, device: usize, instance: usize) -> Option<AnomalyRule<'_>> {
        let d = self.devices.get(device)?;
        let inst = d.instances.get(instance)?;
        Some(AnomalyRule {
            alarm: &inst.alarm,
            point: inst
                .point
                .and_then(|p| d.point_names.get(p))
                .map(Name::as_str),
            shares: point_shares(inst, &d.point_names),
        })
    }

    /// The latest anomaly score of `device`/`point` from the last batch that held it.
    pub fn score(&self, device: usize, point: usize) -> Option<f64> {
        self.devices
            .get(device)?
            .scores
            .get(point)
            .copied()
            .flatten()
    }

    /// Names of the alarms raised on `device` that concern `point`: its point rules, and the
    /// device-wide ones.
    pub fn raised_for(&self, device: usize, point: usize) -> impl Iterator<Item = &str> {
        self.devices
            .get(device)
            .into_iter()
            .flat_map(|d| d.instances.iter())
            .filter(move |i| i.state.is_raised() && i.point.is_none_or(|p| p == point))
            .map(|i| i.alarm.as_str())
    }
}

/// Each point's share of the deviation of a device-level anomaly, largest first.
pub(super) fn point_shares(inst: &Instance, names: &[Name]) -> Vec<PointShare> {
    let RuleKind::Anomaly(a) = &inst.kind else {
        return Vec::new();
    };
    a.shares(&inst.points, names)
}

/// The kind of the episode an `anomaly` rule's alarm follows, and whether it is settled.
pub(super) fn episode_kind(inst: &Instance) -> Option<(anomaly::AnomalyKind, bool)> {
    let RuleKind::Anomaly(a) = &inst.kind else {
        return None;
    };
    a.episode_kind()
}
