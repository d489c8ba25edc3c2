//! The engine: every rule's state for every device, built from its spec, and the per-poll
//! evaluation that turns a batch into alarm changes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{Datelike, TimeZone, Timelike};
use serde::{Deserialize, Serialize};

use super::alarm::{AlarmState, Phase, Transition};
use super::anomaly::device::DeviceModel;
use super::anomaly::regime::Regimes;
use super::anomaly::{self, AnomalyModel, Season};
use super::command::status_of;
use super::energy::{BaselineState, energy_rules};
use super::flood::{Flood, flood_allows, flood_summary};
use super::maintenance::Counters;
use super::message::{AlarmEvent, AlarmStatus, PointShare, event, raise_message};
use super::rate::RateState;
use super::spec::{AlarmPolicy, Rule, RuleKind, RuleKindName, Target};
use super::spec::{EngineSpec, Maintenance};
use super::stuck::StuckState;
use super::trend::{TrendModel, TrendParams};
use super::{expr, health, limit, quota, rate, snapshot};
use crate::model::{BadReason, Name, Quality, SampleBatch, Value};

/// Buckets of a trend window: fine enough to follow a shift, coarse enough to be cheap.
const TREND_BUCKETS: u16 = 60;

/// Rule-kind-specific running state.
#[derive(Debug, Clone)]
pub(super) enum Detector {
    Limit,
    Rate(RateState),
    Stuck(StuckState),
    CommLoss,
    Anomaly(Box<Regimes<AnomalyModel>>),
    DeviceAnomaly(Box<DeviceAnomaly>),
    Trend(Box<TrendModel>),
    Expression(Box<self::expr::Expr>),
    Service,
    Quota(quota::QuotaState),
    Baseline(Box<BaselineState>),
    Demand(Box<crate::process::demand::DemandState>),
}

/// A device-level `anomaly` rule's state: its model per regime and what explains its episode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DeviceAnomaly {
    pub(super) models: Regimes<DeviceModel>,
    /// Scratch: this poll's values of the watched points.
    pub(super) x: Vec<f64>,
    /// Each point's part of the deviation, summed over the current (or last) episode.
    pub(super) parts: Vec<f64>,
}

/// What the detector saw at the last step, for the message and payload.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seen {
    pub(super) value: Option<f64>,
    pub(super) limit: Option<f64>,
    pub(super) score: Option<f64>,
    pub(super) eta_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub(super) struct Instance {
    pub(super) rule: Arc<Rule>,
    pub(super) alarm: String,
    pub(super) point: Option<usize>,
    /// A device-level anomaly's points.
    pub(super) points: Vec<usize>,
    /// The run-state point that selects an anomaly model's regime.
    pub(super) regime: Option<usize>,
    pub(super) detector: Detector,
    pub(super) state: AlarmState,
    pub(super) seen: Seen,
    /// The message as raised: acks, shelves and the clear repeat it, so an alarm's text
    /// stays the one the team was woken by.
    pub(super) message: String,
    /// Hash of the rule's parameters and fresh model (0 for rules that learn nothing): a
    /// saved model is restored only where it is unchanged (see [`snapshot`]).
    pub(super) fingerprint: u64,
}

#[derive(Debug, Clone)]
pub(super) struct DeviceRules {
    pub(super) name: Name,
    pub(super) point_names: Vec<Name>,
    pub(super) units: Vec<String>,
    pub(super) index: HashMap<Name, usize>,
    pub(super) values: Vec<Option<f64>>,
    pub(super) scores: Vec<Option<f64>>,
    /// Which sample of the current batch holds each point.
    pub(super) sample_of: Vec<Option<usize>>,
    pub(super) instances: Vec<Instance>,
    pub(super) flood: Flood,
    /// Running hours and starts, where `[[maintenance]]` asks for them.
    pub(super) maintenance: Option<(Maintenance, Counters)>,
    /// Share of recent polls answered (for the health index).
    pub(super) answered_avg: f64,
    /// Whether a poll of it has been seen: no health before there is something to judge.
    pub(super) polled: bool,
}

/// Local hour-of-day / hour-of-week for seasonal baselines, cached per hour.
#[derive(Debug, Clone)]
pub(super) struct LocalHours {
    pub(super) tz: chrono_tz::Tz,
    /// UTC ms range of the cached local hour, and its (hour of day, hour of week).
    pub(super) cached: Option<(i64, i64, u16, u16)>,
}

impl LocalHours {
    fn buckets(&mut self, ts: i64) -> (u16, u16) {
        if let Some((from, to, h, w)) = self.cached {
            if (from..to).contains(&ts) {
                return (h, w);
            }
        }
        let Some(utc) = chrono::Utc.timestamp_millis_opt(ts).single() else {
            return (0, 0);
        };
        let local = utc.with_timezone(&self.tz);
        let hour = local.hour() as u16;
        let week = local.weekday().num_days_from_monday() as u16 * 24 + hour;
        let into_hour = i64::from(local.minute()) * 60_000
            + i64::from(local.second()) * 1000
            + i64::from(local.timestamp_subsec_millis());
        let from = ts - into_hour;
        self.cached = Some((from, from + 3_600_000, hour, week));
        (hour, week)
    }
}

/// Every rule's state, for every device (and every meter or group with a quota or a demand
/// contract, as a device without points).
#[derive(Debug, Clone)]
pub struct Engine {
    pub(super) quotas: Vec<super::spec::Quota>,
    pub(super) baselines: Vec<super::spec::Baseline>,
    /// How demand is averaged.
    pub(super) demand: crate::process::demand::DemandParams,
    /// Names of `Plan::energy.meters`, by index.
    pub(super) meter_names: Vec<String>,
    pub(super) policy: AlarmPolicy,
    pub(super) devices: Vec<DeviceRules>,
    pub(super) by_name: HashMap<Name, usize>,
    pub(super) hours: LocalHours,
}

pub(super) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Engine {
    /// Builds the engine for `spec`'s devices and rules; every alarm starts normal.
    pub fn from_spec(spec: &EngineSpec) -> Self {
        let mut devices: Vec<DeviceRules> = spec
            .devices
            .iter()
            .map(|d| DeviceRules {
                name: d.name.clone(),
                point_names: d.points.iter().map(|p| p.name.clone()).collect(),
                units: d.points.iter().map(|p| p.unit.clone()).collect(),
                index: d
                    .points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.name.clone(), i))
                    .collect(),
                values: vec![None; d.points.len()],
                scores: vec![None; d.points.len()],
                sample_of: vec![None; d.points.len()],
                instances: Vec::new(),
                flood: Flood::default(),
                maintenance: None,
                answered_avg: 1.0,
                polled: false,
            })
            .collect();
        let service_rules = spec.maintenance.iter().flat_map(|m| {
            if let Some(d) = devices.get_mut(m.device) {
                d.maintenance = Some((m.clone(), Counters::default()));
            }
            let rule = |name: &str, kind, kind_name| Rule {
                name: Name::new(name).unwrap_or_else(|_| spec.devices[m.device].name.clone()),
                key: "maintenance".into(),
                kind,
                kind_name,
                severity: m.severity,
                message: super::spec::default_message(kind_name).to_owned(),
                deadband: 0.0,
                on_delay: std::time::Duration::ZERO,
                off_delay: std::time::Duration::ZERO,
                targets: vec![Target {
                    device: m.device,
                    point: None,
                    alarm: name.to_owned(),
                    expr: None,
                    points: Vec::new(),
                    regime: None,
                }],
            };
            let hours = m.service_hours.map(|every| {
                rule(
                    "service-hours",
                    RuleKind::ServiceHours { every },
                    RuleKindName::ServiceHours,
                )
            });
            let starts = m.service_starts.map(|every| {
                rule(
                    "service-starts",
                    RuleKind::ServiceStarts { every },
                    RuleKindName::ServiceStarts,
                )
            });
            hours.into_iter().chain(starts)
        });
        let mut service_rules: Vec<Rule> = service_rules.collect();
        service_rules.extend(energy_rules(spec, &mut devices));
        for rule in spec.rules.iter().chain(&service_rules) {
            let rule = Arc::new(rule.clone());
            for t in &rule.targets {
                let detector = match &rule.kind {
                    RuleKind::Limit { .. } => Detector::Limit,
                    RuleKind::Rate { .. } => Detector::Rate(RateState::default()),
                    RuleKind::Stuck { .. } => Detector::Stuck(StuckState::default()),
                    RuleKind::CommLoss { .. } => Detector::CommLoss,
                    RuleKind::Anomaly { params, learn, .. } if !t.points.is_empty() => {
                        let params = device_params(spec, t.device, params, *learn);
                        Detector::DeviceAnomaly(Box::new(DeviceAnomaly {
                            models: Regimes::new(
                                DeviceModel::new(t.points.len(), params.learn_samples),
                                t.regime.is_some(),
                            ),
                            x: vec![0.0; t.points.len()],
                            parts: vec![0.0; t.points.len()],
                        }))
                    }
                    RuleKind::Anomaly { params, learn, .. } => {
                        Detector::Anomaly(Box::new(Regimes::new(
                            AnomalyModel::new(device_params(spec, t.device, params, *learn)),
                            t.regime.is_some(),
                        )))
                    }
                    RuleKind::Trend { window, .. } => {
                        Detector::Trend(Box::new(TrendModel::new(TrendParams {
                            window_ms: ms(*window),
                            buckets: TREND_BUCKETS,
                        })))
                    }
                    RuleKind::Expression => match &t.expr {
                        Some(e) => Detector::Expression(Box::new(e.clone())),
                        None => continue,
                    },
                    RuleKind::ServiceHours { .. } | RuleKind::ServiceStarts { .. } => {
                        Detector::Service
                    }
                    RuleKind::Quota { .. } => Detector::Quota(quota::QuotaState::default()),
                    RuleKind::Baseline { .. } => Detector::Baseline(Box::default()),
                    RuleKind::Demand { .. } => {
                        Detector::Demand(Box::new(crate::process::demand::DemandState::new()))
                    }
                };
                let fingerprint = snapshot::fingerprint(&rule.kind, &watched(spec, t), &detector);
                if let Some(d) = devices.get_mut(t.device) {
                    d.instances.push(Instance {
                        rule: rule.clone(),
                        alarm: t.alarm.clone(),
                        point: t.point,
                        points: t.points.clone(),
                        regime: t.regime,
                        detector,
                        state: AlarmState::default(),
                        seen: Seen::default(),
                        message: String::new(),
                        fingerprint,
                    });
                }
            }
        }
        let by_name = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        Self {
            quotas: spec.quotas.clone(),
            baselines: spec.baselines.clone(),
            demand: spec.demand,
            meter_names: spec.meters.iter().map(|m| m.name.clone()).collect(),
            policy: spec.policy.clone(),
            devices,
            by_name,
            hours: LocalHours {
                tz: spec.timezone,
                cached: None,
            },
        }
    }

    /// The index of device `name`.
    pub fn device_index(&self, name: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.name.as_str() == name)
    }

    /// The index of `point` on device `device`.
    pub fn point_index(&self, device: usize, point: &str) -> Option<usize> {
        let d = self.devices.get(device)?;
        d.point_names.iter().position(|p| p.as_str() == point)
    }

    /// Evaluates every rule of `batch`'s device and appends the resulting changes to `events`.
    pub fn evaluate(&mut self, batch: &SampleBatch, events: &mut Vec<AlarmEvent>) {
        let Some(&di) = self.by_name.get(&batch.device) else {
            return;
        };
        let hours = &mut self.hours;
        let policy = &self.policy;
        let Some(dev) = self.devices.get_mut(di) else {
            return;
        };
        let now = batch.time();
        dev.sample_of.iter_mut().for_each(|s| *s = None);
        dev.scores.iter_mut().for_each(|s| *s = None);
        let mut answered = false;
        for (si, s) in batch.samples.iter().enumerate() {
            let pi = match dev.point_names.get(si) {
                Some(n) if *n == s.point => Some(si),
                _ => dev.index.get(&s.point).copied(),
            };
            let Some(pi) = pi else { continue };
            dev.sample_of[pi] = Some(si);
            answered |= !matches!(
                s.quality,
                Quality::Bad(BadReason::Timeout | BadReason::CommLost)
            );
            dev.values[pi] = match (s.quality, s.value.as_ref()) {
                (Quality::Good, Some(v)) => value_f64(v),
                _ => None,
            };
        }
        dev.polled = true;
        dev.answered_avg += health::COMM_ALPHA * (f64::from(u8::from(answered)) - dev.answered_avg);
        if let Some((m, counters)) = dev.maintenance.as_mut()
            && dev.sample_of.get(m.run_point).is_some_and(Option::is_some)
            && let Some(v) = dev.values.get(m.run_point).copied().flatten()
        {
            counters.update(now, v, m.run_above);
        }
        let season_buckets = hours.buckets(now);
        let mut owner = Owner {
            name: &dev.name,
            points: &dev.point_names,
            units: &dev.units,
            flood: &mut dev.flood,
            policy,
        };
        for inst in &mut dev.instances {
            let rule = inst.rule.clone();
            let raised = inst.state.is_raised();
            // One time per poll (its last response), as the telemetry message carries it, so
            // replaying recorded telemetry reproduces the live events exactly.
            let at = now;
            let condition = match (&mut inst.detector, &rule.kind) {
                (Detector::CommLoss, RuleKind::CommLoss { .. }) => Some(!answered),
                // The device is silent: hold every other alarm where it is.
                _ if !answered => None,
                (Detector::Expression(expr), _) => {
                    inst.seen = Seen::default();
                    expr.eval(&dev.values)
                }
                (Detector::Service, kind) => dev.maintenance.as_ref().and_then(|(_, c)| {
                    let (since, every) = match kind {
                        RuleKind::ServiceHours { every } => (c.hours_since_service(), *every),
                        RuleKind::ServiceStarts { every } => {
                            (c.starts_since_service() as f64, *every as f64)
                        }
                        _ => return None,
                    };
                    inst.seen = Seen {
                        value: Some((since * 10.0).round() / 10.0),
                        limit: Some(every),
                        ..Seen::default()
                    };
                    Some(since >= every)
                }),
                (Detector::DeviceAnomaly(model), RuleKind::Anomaly { params, .. }) => {
                    let Some(running) = run_state(inst.regime, &dev.values) else {
                        continue;
                    };
                    device_condition(
                        model,
                        params.threshold,
                        at,
                        &inst.points,
                        &dev.values,
                        &dev.sample_of,
                        running,
                        &mut inst.seen,
                    )
                }
                (detector, kind) => {
                    let Some(running) = run_state(inst.regime, &dev.values) else {
                        continue;
                    };
                    let Some(pi) = inst.point else { continue };
                    if dev.sample_of[pi].is_none() {
                        continue;
                    }
                    let Some(v) = dev.values[pi] else { continue };
                    point_condition(
                        detector,
                        kind,
                        &rule,
                        raised,
                        at,
                        v,
                        season_buckets,
                        running,
                        &mut inst.seen,
                        &mut dev.scores[pi],
                    )
                }
            };
            let Some(condition) = condition else { continue };
            owner.observe(inst, Some(condition), at, events);
        }
        flood_summary(dev, policy, now, events);
    }
}

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
                let episode = match &inst.detector {
                    Detector::Anomaly(models) => models.current().map(AnomalyModel::episode),
                    Detector::DeviceAnomaly(state) => {
                        state.models.current().map(DeviceModel::episode)
                    }
                    _ => return None,
                };
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

    /// What time alone decides at `now`, for devices that send nothing: a comm-loss alarm
    /// whose duration ran out (raised at its exact time, so replay, which learns of it at the
    /// next poll, raises the same alarm), and shelves that expired.
    pub fn tick(&mut self, now: i64, events: &mut Vec<AlarmEvent>) {
        let policy = &self.policy;
        for dev in &mut self.devices {
            let mut owner = Owner {
                name: &dev.name,
                points: &dev.point_names,
                units: &dev.units,
                flood: &mut dev.flood,
                policy,
            };
            for inst in &mut dev.instances {
                if matches!(inst.rule.kind, RuleKind::CommLoss { .. }) {
                    owner.observe(inst, None, now, events);
                }
            }
        }
        for di in 0..self.devices.len() {
            for ii in 0..self.devices[di].instances.len() {
                let state = &mut self.devices[di].instances[ii].state;
                if state.is_raised() && state.shelved_until.is_some_and(|u| now >= u) {
                    state.shelved_until = None;
                    let status = status_of(state, now);
                    events.extend(self.emit((di, ii), status, now));
                }
            }
        }
    }

    /// Puts back the raised alarms of a previous run (the alarms table, or the engine being
    /// replaced on reload), so they are neither raised again nor forgotten. Events of alarms
    /// the current rules no longer produce are ignored.
    pub fn restore(&mut self, raised: &[AlarmEvent]) {
        for e in raised.iter().filter(|e| e.state != AlarmStatus::Cleared) {
            let Some(&di) = Name::new(&e.device).ok().and_then(|n| self.by_name.get(&n)) else {
                continue;
            };
            let Some(d) = self.devices.get_mut(di) else {
                continue;
            };
            if let Some(inst) = d.instances.iter_mut().find(|i| i.alarm == e.alarm) {
                inst.state.phase = Phase::Active;
                inst.state.raised_ms = e.raised;
                inst.state.acked = e.state == AlarmStatus::Acked;
                inst.state.shelved_until = e.shelved_until;
                inst.seen.value = e.value;
                inst.seen.limit = e.limit;
                inst.message.clone_from(&e.message);
            }
        }
    }
}

impl Engine {
    /// The maintenance counters of every device that has them, to persist.
    pub fn counters(&self) -> Vec<(String, Counters)> {
        self.devices
            .iter()
            .filter_map(|d| Some((d.name.to_string(), d.maintenance.as_ref()?.1.clone())))
            .collect()
    }

    /// Puts back persisted counters (devices without `[[maintenance]]` now are ignored).
    pub fn restore_counters(&mut self, saved: &[(String, Counters)]) {
        for (device, c) in saved {
            if let Some(d) = self.devices.iter_mut().find(|d| d.name.as_str() == device)
                && let Some((_, counters)) = d.maintenance.as_mut()
            {
                *counters = c.clone();
            }
        }
    }
}

/// A rule's (on-delay, off-delay) in ms; a comm-loss duration is its on-delay.
fn delays(rule: &Rule) -> (i64, i64) {
    let extra = match rule.kind {
        RuleKind::CommLoss { duration } => ms(duration),
        _ => 0,
    };
    (ms(rule.on_delay) + extra, ms(rule.off_delay))
}

/// What settling an alarm needs of its device, borrowed apart from the device's instances.
pub(super) struct Owner<'a> {
    pub(super) name: &'a Name,
    pub(super) points: &'a [Name],
    pub(super) units: &'a [String],
    pub(super) flood: &'a mut Flood,
    pub(super) policy: &'a AlarmPolicy,
}

impl Owner<'_> {
    /// Applies an observation of `inst` at `at`: time passes first (a delay that ran out
    /// before `at` fires at its own time), then the condition seen at `at`, if any.
    pub(super) fn observe(
        &mut self,
        inst: &mut Instance,
        condition: Option<bool>,
        at: i64,
        events: &mut Vec<AlarmEvent>,
    ) {
        let (on_delay, off_delay) = delays(&inst.rule);
        if let Some((transition, t)) = inst.state.advance(at, on_delay, off_delay) {
            self.settle(inst, Some(transition), t, events);
        }
        if let Some(condition) = condition {
            let transition = inst.state.step(condition, at, on_delay, off_delay);
            self.settle(inst, transition, at, events);
        }
    }

    /// Publishes what a step of `inst` at `at` changed: a raise (subject to flood control), a
    /// clear, or the end of a shelve.
    fn settle(
        &mut self,
        inst: &mut Instance,
        transition: Option<Transition>,
        at: i64,
        events: &mut Vec<AlarmEvent>,
    ) {
        let (name, points, units) = (self.name, self.points, self.units);
        let shelf_expired = inst
            .state
            .shelved_until
            .is_some_and(|until| at >= until && inst.state.is_raised());
        match transition {
            Some(Transition::Raised) => {
                inst.state.shelved_until = None;
                inst.message = raise_message(name, points, units, inst);
                if flood_allows(self.flood, self.policy, at) {
                    events.push(event(name, points, units, inst, AlarmStatus::Active, at));
                } else {
                    inst.state.suppressed = true;
                }
            }
            Some(Transition::Cleared) if !inst.state.suppressed => {
                events.push(event(name, points, units, inst, AlarmStatus::Cleared, at));
            }
            Some(Transition::Cleared) => inst.state.suppressed = false,
            None if shelf_expired => {
                inst.state.shelved_until = None;
                let status = if inst.state.acked {
                    AlarmStatus::Acked
                } else {
                    AlarmStatus::Active
                };
                events.push(event(name, points, units, inst, status, at));
            }
            None => {}
        }
    }
}

/// An anomaly rule's model settings on `device`: `learn` (a duration), where given, becomes
/// that many of the device's polls.
fn device_params(
    spec: &EngineSpec,
    device: usize,
    params: &self::anomaly::AnomalyParams,
    learn: Option<std::time::Duration>,
) -> self::anomaly::AnomalyParams {
    let mut params = *params;
    if let (Some(learn), Some(d)) = (learn, spec.devices.get(device)) {
        params.learn_samples = super::spec::learn_samples(learn, d.poll_interval);
    }
    params
}

/// What a rule target watches, by point name (not index, which a profile edit can shift),
/// for its model's fingerprint: a rule pointed at another point is another model.
fn watched(spec: &EngineSpec, t: &Target) -> String {
    let points = spec.devices.get(t.device).map(|d| &d.points);
    let name = |i: usize| {
        points
            .and_then(|p| p.get(i))
            .map_or("?", |p| p.name.as_str())
    };
    let mut out = String::new();
    if let Some(p) = t.point {
        let _infallible = write!(out, "point={};", name(p));
    }
    for &p in &t.points {
        let _infallible = write!(out, "points={};", name(p));
    }
    if let Some(r) = t.regime {
        let _infallible = write!(out, "regime={};", name(r));
    }
    out
}

fn value_f64(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// The run state a rule's regime point gives: `Some(None)` for a rule without one,
/// `Some(Some(running))` (0 is stopped, anything else running), `None` while it is unknown.
fn run_state(regime: Option<usize>, values: &[Option<f64>]) -> Option<Option<bool>> {
    match regime {
        None => Some(None),
        Some(r) => values.get(r).copied().flatten().map(|v| Some(v != 0.0)),
    }
}

/// One poll of a device-level `anomaly` rule: scores the poll if it holds a good value of
/// every watched point, and returns whether the model's episode is active.
#[allow(clippy::too_many_arguments)]
fn device_condition(
    state: &mut DeviceAnomaly,
    threshold: f64,
    at: i64,
    points: &[usize],
    values: &[Option<f64>],
    sample_of: &[Option<usize>],
    running: Option<bool>,
    seen: &mut Seen,
) -> Option<bool> {
    for (x, &p) in state.x.iter_mut().zip(points) {
        // Only this poll's values: a point missing from it would repeat an old value.
        sample_of.get(p).copied().flatten()?;
        *x = values.get(p).copied().flatten()?;
    }
    let Some(model) = state.models.select(running) else {
        // A regime switch is settling: whatever was raised in the regime left has ended.
        return Some(false);
    };
    let was_active = model.episode().active;
    let score = model.update(at, &state.x, threshold)?;
    if score.episode.active {
        if !was_active {
            state.parts.iter_mut().for_each(|p| *p = 0.0);
        }
        for (sum, c) in state.parts.iter_mut().zip(&score.contributions) {
            *sum += c;
        }
    }
    *seen = Seen {
        score: Some(score.score),
        ..Seen::default()
    };
    Some(score.episode.active)
}

/// Each point's share of the deviation of a device-level anomaly, largest first.
pub(super) fn point_shares(inst: &Instance, names: &[Name]) -> Vec<PointShare> {
    let Detector::DeviceAnomaly(state) = &inst.detector else {
        return Vec::new();
    };
    let mut out: Vec<PointShare> = inst
        .points
        .iter()
        .zip(anomaly::device::shares(&state.parts))
        .filter_map(|(&p, share)| {
            Some(PointShare {
                point: names.get(p)?.to_string(),
                share,
            })
        })
        .collect();
    out.sort_by(|a, b| b.share.total_cmp(&a.share));
    out
}

/// The kind of the episode an `anomaly` rule's alarm follows, and whether it is settled
/// (see [`anomaly::Episode::settled`]): the latest started of its regimes' (a regime switch
/// ends it, and the new regime's model may hold an older one).
pub(super) fn episode_kind(inst: &Instance) -> Option<(anomaly::AnomalyKind, bool)> {
    let episodes: Vec<anomaly::Episode> = match &inst.detector {
        Detector::Anomaly(m) => m.models().iter().map(AnomalyModel::episode).collect(),
        Detector::DeviceAnomaly(s) => s.models.models().iter().map(DeviceModel::episode).collect(),
        _ => return None,
    };
    let latest = episodes.into_iter().max_by_key(|e| e.since_ms)?;
    (latest.kind != anomaly::AnomalyKind::None).then_some((latest.kind, latest.settled))
}

#[allow(clippy::too_many_arguments)]
fn point_condition(
    detector: &mut Detector,
    kind: &RuleKind,
    rule: &Rule,
    raised: bool,
    at: i64,
    v: f64,
    (hour_of_day, hour_of_week): (u16, u16),
    running: Option<bool>,
    seen: &mut Seen,
    score_out: &mut Option<f64>,
) -> Option<bool> {
    seen.value = Some(v);
    match (detector, kind) {
        (Detector::Limit, RuleKind::Limit { limit, above, .. }) => {
            seen.limit = Some(*limit);
            Some(limit::condition(v, *limit, *above, rule.deadband, raised))
        }
        (Detector::Rate(state), RuleKind::Rate { limit, per, window }) => {
            let r = state.update(at, v, ms(*window), ms(*per))?;
            seen.value = Some(r);
            seen.limit = Some(*limit);
            Some(rate::condition(r, *limit, rule.deadband, raised))
        }
        (
            Detector::Stuck(state),
            RuleKind::Stuck {
                tolerance,
                duration,
            },
        ) => {
            let flat = state.update(at, v, *tolerance);
            Some(flat >= ms(*duration))
        }
        (Detector::Anomaly(models), RuleKind::Anomaly { params, .. }) => {
            let bucket = match params.season {
                Season::None | Season::Auto => 0,
                Season::HourOfDay => hour_of_day,
                Season::HourOfWeek => hour_of_week,
            };
            let Some(model) = models.select(running) else {
                // A regime switch is settling: whatever was raised in the regime left ended.
                return Some(false);
            };
            let score = model.update(at, bucket, v)?;
            *score_out = Some(score_out.map_or(score.score, |s: f64| s.max(score.score)));
            seen.score = Some(score.score);
            seen.limit = Some(score.expected);
            // The alarm follows the model's episode: one raise at its onset, one clear at
            // its end, however long the anomaly lasts.
            Some(score.episode.active)
        }
        (
            Detector::Trend(model),
            RuleKind::Trend {
                limit,
                direction,
                horizon,
                ..
            },
        ) => {
            model.update(at, v);
            seen.limit = Some(*limit);
            let eta = model.time_to(at, *limit, *direction);
            seen.eta_ms = eta;
            if let Some(f) = model.fitted(at) {
                seen.value = Some(f);
            }
            Some(eta.is_some_and(|e| e <= ms(*horizon)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::FLOOD_ALARM;
    use crate::model::{PointSample, Timestamp};

    const CONFIG: &str = r#"
[gateway]
site = "plant1"
id = "gw1"
timezone = "UTC"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "motor-1"
link = "bus"
profile = "generic-plc"

[[rules]]
name = "motor-hot"
kind = "high"
point = "motor_temp"
limit = 80.0
deadband = 2.0

[[rules]]
name = "bearing-hot"
kind = "high"
point = "bearing_temp"
limit = 70.0

[alarms]
max_per_device_per_minute = 1
"#;

    const T0: i64 = 1_760_000_000_000;

    fn engine() -> Engine {
        let plan = crate::config::load_str(
            "t",
            CONFIG,
            &crate::config::EnvOverrides::Off,
            std::path::Path::new("."),
            None,
        )
        .unwrap();
        Engine::from_spec(&plan.engine_spec())
    }

    fn poll(t: i64, motor: f64, bearing: f64, quality: Quality) -> SampleBatch {
        let sample = |point: &str, v: f64| PointSample {
            point: Name::new(point).unwrap(),
            ts: Timestamp(t),
            value: (quality == Quality::Good).then_some(Value::F64(v)),
            quality,
        };
        SampleBatch {
            device: Name::new("motor-1").unwrap(),
            tick: Timestamp(t),
            samples: vec![sample("motor_temp", motor), sample("bearing_temp", bearing)],
        }
    }

    fn step(engine: &mut Engine, batch: &SampleBatch) -> Vec<(String, AlarmStatus)> {
        let mut events = Vec::new();
        engine.evaluate(batch, &mut events);
        events.into_iter().map(|e| (e.alarm, e.state)).collect()
    }

    #[test]
    fn a_limit_raises_once_with_its_text_and_clears_past_its_deadband() {
        let mut engine = engine();
        let mut events = Vec::new();
        engine.evaluate(&poll(T0, 85.5, 20.0, Quality::Good), &mut events);
        assert_eq!(events.len(), 1, "{events:?}");
        let raised = &events[0];
        assert_eq!(raised.id, format!("motor-1/motor-hot/{T0}"));
        assert_eq!(raised.state, AlarmStatus::Active);
        assert_eq!(raised.point.as_deref(), Some("motor_temp"));
        assert_eq!((raised.value, raised.limit), (Some(85.5), Some(80.0)));
        assert_eq!(
            raised.message,
            "motor-1 motor_temp = 85.5 °C, above the limit 80 °C"
        );
        // Still above, then inside the deadband: nothing new.
        assert!(step(&mut engine, &poll(T0 + 1000, 90.0, 20.0, Quality::Good)).is_empty());
        assert!(step(&mut engine, &poll(T0 + 2000, 79.0, 20.0, Quality::Good)).is_empty());
        let mut events = Vec::new();
        engine.evaluate(&poll(T0 + 3000, 77.0, 20.0, Quality::Good), &mut events);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].state, AlarmStatus::Cleared);
        assert_eq!(events[0].raised, T0, "the clear names the raise it ends");
        assert_eq!(
            events[0].message, raised.message,
            "the text stays the raise's"
        );
        assert!(engine.raised().is_empty());
    }

    #[test]
    fn a_silent_device_holds_its_alarms_where_they_are() {
        let mut engine = engine();
        step(&mut engine, &poll(T0, 85.0, 20.0, Quality::Good));
        let silent = Quality::Bad(BadReason::Timeout);
        for i in 1..=5 {
            assert!(step(&mut engine, &poll(T0 + i * 1000, 0.0, 0.0, silent)).is_empty());
        }
        let raised: Vec<String> = engine.raised().into_iter().map(|e| e.alarm).collect();
        assert_eq!(raised, ["motor-hot"]);
    }

    #[test]
    fn raises_beyond_the_budget_are_summarised_then_announced_when_the_flood_ends() {
        let mut engine = engine();
        assert_eq!(
            step(&mut engine, &poll(T0, 85.0, 75.0, Quality::Good)),
            [
                ("motor-hot".to_owned(), AlarmStatus::Active),
                (FLOOD_ALARM.to_owned(), AlarmStatus::Active),
            ]
        );
        // Within the minute the flood holds; the suppressed alarm is raised but unannounced.
        assert!(step(&mut engine, &poll(T0 + 30_000, 85.0, 75.0, Quality::Good)).is_empty());
        let raised: Vec<String> = engine.raised().into_iter().map(|e| e.alarm).collect();
        assert_eq!(raised, ["motor-hot", "bearing-hot"]);
        // A minute after the last suppressed raise the summary clears and announces it.
        assert_eq!(
            step(&mut engine, &poll(T0 + 60_000, 85.0, 75.0, Quality::Good)),
            [
                (FLOOD_ALARM.to_owned(), AlarmStatus::Cleared),
                ("bearing-hot".to_owned(), AlarmStatus::Active),
            ]
        );
    }
}
