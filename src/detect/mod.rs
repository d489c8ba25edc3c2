//! The detect stage: alarm rules and anomaly models over sample batches.
//!
//! [`Engine::evaluate`] is a deterministic function of (state, batch): time is the samples'
//! own timestamps, never the clock, so `plantwatch replay` over recorded CSV and the live
//! daemon run the same code and produce the same events. One engine owns every rule's state;
//! the daemon's core task holds it.
//!
//! Flood control (ISA-18.2): while a device does not answer, its other rules are not evaluated
//! (their alarms hold where they were, and only `comm_loss` speaks); and above
//! `[alarms] max_per_device_per_minute` raises per device, further raises are not announced
//! but summarised by one `alarm-flood` alarm on the device until a minute passes without one.

pub mod alarm;
pub mod anomaly;
pub mod expr;
pub mod health;
pub mod limit;
pub mod maintenance;
pub mod quota;
pub mod rate;
pub mod snapshot;
pub mod stuck;
pub mod trend;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{Datelike, TimeZone, Timelike};
use serde::{Deserialize, Serialize};

use self::alarm::{AlarmState, Phase, Transition};
use self::anomaly::device::DeviceModel;
use self::anomaly::regime::Regimes;
use self::anomaly::{AnomalyModel, Season};
use self::maintenance::Counters;
use self::rate::RateState;
use self::stuck::StuckState;
use self::trend::{TrendModel, TrendParams};
use crate::config::maintenance::Maintenance;
use crate::config::plan::Plan;
use crate::config::rules::{AlarmPolicy, Rule, RuleKind, RuleKindName, Severity, Target};
use crate::model::{BadReason, Name, Quality, SampleBatch, Value};

/// The alarm name of the flood summary alarm.
pub const FLOOD_ALARM: &str = "alarm-flood";

/// Buckets of a trend window: fine enough to follow a shift, coarse enough to be cheap.
const TREND_BUCKETS: u16 = 60;

/// An alarm's published state (docs/design.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmStatus {
    /// Raised, not acknowledged.
    Active,
    /// Raised and acknowledged.
    Acked,
    /// Raised, hidden by an operator for a while.
    Shelved,
    /// Back to normal.
    Cleared,
}

impl AlarmStatus {
    /// As in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Acked => "acked",
            Self::Shelved => "shelved",
            Self::Cleared => "cleared",
        }
    }
}

/// One change of one alarm: what the alarm topic, the alarms table and notifiers receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// Unique id of this occurrence: `{device}/{alarm}/{raised}`.
    pub id: String,
    /// The device.
    pub device: String,
    /// The alarm's name below the device (the topic's `{rule}` segment).
    pub alarm: String,
    /// The rule that produced it.
    pub rule: String,
    /// The point it watches, for point rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<String>,
    /// The state after this change.
    pub state: AlarmStatus,
    /// Priority.
    pub severity: Severity,
    /// When it was raised (ms).
    pub raised: i64,
    /// When this change happened (ms).
    pub ts: i64,
    /// The value that triggered it (or cleared it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The limit it was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// For people.
    pub message: String,
    /// Until when it is shelved (ms), while shelved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelved_until: Option<i64>,
    /// A device-level anomaly: each point's share of the deviation, largest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<PointShare>,
    /// An `anomaly` rule: its episode's kind as known at this change (`level_shift`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly_kind: Option<String>,
}

/// One point's share of a device-level anomaly's deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointShare {
    /// The point.
    pub point: String,
    /// Its share in [0, 1]; the shares of one anomaly sum to 1.
    pub share: f64,
}

/// Why an operator command on an alarm was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No raised alarm has that id or name.
    #[error("no raised alarm `{0}`; `plantwatch alarms list` shows the raised ones")]
    Unknown(String),
    /// The alarm is already acknowledged.
    #[error("alarm `{0}` is already acknowledged")]
    AlreadyAcked(String),
    /// The device counts no running hours or starts.
    #[error("device `{0}` has no [[maintenance]] counters")]
    NoCounters(String),
    /// A shelve duration of zero or beyond the allowed maximum.
    #[error("shelve duration {0} ms is out of range: give 1s to 30d")]
    Duration(i64),
}

/// The longest shelve an operator may ask for.
pub const MAX_SHELVE_MS: i64 = 30 * 24 * 3_600_000;

/// A baseline's state: the history, and the hour or day being summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineState {
    history: crate::process::baseline::HourOfWeek,
    /// (local hour start ms, hour-of-week slot, energy so far).
    current: Option<(i64, usize, f64)>,
    /// Regression: (output, energy) of the latest days, oldest first.
    #[serde(default)]
    days: Vec<(f64, f64)>,
    /// Regression: the local day being summed: (start ms, end ms, energy, output).
    #[serde(default)]
    day: Option<(i64, i64, f64, f64)>,
}

impl BaselineState {
    /// Books a regression baseline's interval (energy, or output when `output`); returns the
    /// judgement of a day that the interval's later day closed: (its end, actual, expected).
    fn add_day(
        &mut self,
        r: &crate::config::energy::Regression,
        (day_start, day_end): (i64, i64),
        delta: f64,
        output: bool,
    ) -> Option<(i64, f64, Option<f64>)> {
        let book = |day: &mut (i64, i64, f64, f64)| {
            if output {
                day.3 += delta;
            } else {
                day.2 += delta;
            }
        };
        match &mut self.day {
            // Late data of a day already judged: too late to count.
            Some(day) if day_start < day.0 => None,
            Some(day) if day_start == day.0 => {
                book(day);
                None
            }
            previous => {
                let closed = previous.take();
                let mut day = (day_start, day_end, 0.0, 0.0);
                book(&mut day);
                self.day = Some(day);
                let (_, end, kwh, made) = closed?;
                let fit = (self.days.len() >= r.min_days)
                    .then(|| crate::process::baseline::Fit::ols(&self.days))
                    .flatten();
                self.days.push((made, kwh));
                let excess = self.days.len().saturating_sub(r.days);
                self.days.drain(..excess);
                Some((end, kwh, fit.map(|f| f.predict(made))))
            }
        }
    }
}

/// Rule-kind-specific running state.
#[derive(Debug, Clone)]
enum Detector {
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
struct DeviceAnomaly {
    models: Regimes<DeviceModel>,
    /// Scratch: this poll's values of the watched points.
    x: Vec<f64>,
    /// Each point's part of the deviation, summed over the current (or last) episode.
    parts: Vec<f64>,
}

/// What the detector saw at the last step, for the message and payload.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    value: Option<f64>,
    limit: Option<f64>,
    score: Option<f64>,
    eta_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct Instance {
    rule: Arc<Rule>,
    alarm: String,
    point: Option<usize>,
    /// A device-level anomaly's points.
    points: Vec<usize>,
    /// The run-state point that selects an anomaly model's regime.
    regime: Option<usize>,
    detector: Detector,
    state: AlarmState,
    seen: Seen,
    /// The message as raised: acks, shelves and the clear repeat it, so an alarm's text
    /// stays the one the team was woken by.
    message: String,
    /// Hash of the rule's parameters and fresh model (0 for rules that learn nothing): a
    /// saved model is restored only where it is unchanged (see [`snapshot`]).
    fingerprint: u64,
}

#[derive(Debug, Clone, Default)]
struct Flood {
    raises: VecDeque<i64>,
    suppressed_last: Option<i64>,
    suppressed_count: u64,
    summary: AlarmState,
}

#[derive(Debug, Clone)]
struct DeviceRules {
    name: Name,
    point_names: Vec<Name>,
    units: Vec<String>,
    index: HashMap<Name, usize>,
    values: Vec<Option<f64>>,
    scores: Vec<Option<f64>>,
    /// Which sample of the current batch holds each point.
    sample_of: Vec<Option<usize>>,
    instances: Vec<Instance>,
    flood: Flood,
    /// Running hours and starts, where `[[maintenance]]` asks for them.
    maintenance: Option<(Maintenance, Counters)>,
    /// Share of recent polls answered (for the health index).
    answered_avg: f64,
    /// Whether a poll of it has been seen: no health before there is something to judge.
    polled: bool,
}

/// Local hour-of-day / hour-of-week for seasonal baselines, cached per hour.
#[derive(Debug, Clone)]
struct LocalHours {
    tz: chrono_tz::Tz,
    /// UTC ms range of the cached local hour, and its (hour of day, hour of week).
    cached: Option<(i64, i64, u16, u16)>,
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
    quotas: Vec<crate::config::energy::Quota>,
    baselines: Vec<crate::config::energy::Baseline>,
    /// How demand is averaged.
    demand: crate::process::demand::DemandParams,
    /// Names of `Plan::energy.meters`, by index.
    meter_names: Vec<String>,
    policy: AlarmPolicy,
    devices: Vec<DeviceRules>,
    by_name: HashMap<Name, usize>,
    hours: LocalHours,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Engine {
    /// Builds the engine for `plan`'s devices and rules; every alarm starts normal.
    pub fn new(plan: &Plan) -> Self {
        let mut devices: Vec<DeviceRules> = plan
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
        let service_rules = plan.maintenance.iter().flat_map(|m| {
            if let Some(d) = devices.get_mut(m.device) {
                d.maintenance = Some((m.clone(), Counters::default()));
            }
            let rule = |name: &str, kind, kind_name| Rule {
                name: Name::new(name).unwrap_or_else(|_| plan.devices[m.device].name.clone()),
                key: "maintenance".into(),
                kind,
                kind_name,
                severity: m.severity,
                message: crate::config::rules::default_message(kind_name).to_owned(),
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
        service_rules.extend(energy_rules(plan, &mut devices));
        for rule in plan.rules.iter().chain(&service_rules) {
            let rule = Arc::new(rule.clone());
            for t in &rule.targets {
                let detector = match &rule.kind {
                    RuleKind::Limit { .. } => Detector::Limit,
                    RuleKind::Rate { .. } => Detector::Rate(RateState::default()),
                    RuleKind::Stuck { .. } => Detector::Stuck(StuckState::default()),
                    RuleKind::CommLoss { .. } => Detector::CommLoss,
                    RuleKind::Anomaly { params, learn, .. } if !t.points.is_empty() => {
                        let params = device_params(plan, t.device, params, *learn);
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
                            AnomalyModel::new(device_params(plan, t.device, params, *learn)),
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
                let fingerprint = snapshot::fingerprint(&rule.kind, &watched(plan, t), &detector);
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
            quotas: plan.energy.quotas.clone(),
            baselines: plan.energy.baselines.clone(),
            demand: plan.energy.demand,
            meter_names: plan.energy.meters.iter().map(|m| m.name.clone()).collect(),
            policy: plan.alarm_policy.clone(),
            devices,
            by_name,
            hours: LocalHours {
                tz: plan.gateway.timezone,
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

    /// Every raised alarm as its current event (for `alarms list` and command replies).
    pub fn raised(&self) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        for d in &self.devices {
            for inst in d.instances.iter().filter(|i| i.state.is_raised()) {
                out.push(event(
                    &d.name,
                    &d.point_names,
                    &d.units,
                    inst,
                    status_of(&inst.state, inst.state.raised_ms),
                    inst.state.raised_ms,
                ));
            }
        }
        out
    }

    fn find_mut(&mut self, target: &str) -> Option<(usize, usize)> {
        for (di, d) in self.devices.iter().enumerate() {
            for (ii, inst) in d.instances.iter().enumerate() {
                if !inst.state.is_raised() {
                    continue;
                }
                let short = format!("{}/{}", d.name, inst.alarm);
                let id = format!("{short}/{}", inst.state.raised_ms);
                if target == id || target == short {
                    return Some((di, ii));
                }
            }
        }
        None
    }

    fn emit(&self, (di, ii): (usize, usize), state: AlarmStatus, now: i64) -> Option<AlarmEvent> {
        let d = self.devices.get(di)?;
        let inst = d.instances.get(ii)?;
        Some(event(&d.name, &d.point_names, &d.units, inst, state, now))
    }

    /// Acknowledges the raised alarm `target` (its id, or `device/alarm`) at `now`.
    ///
    /// # Errors
    /// [`CommandError`] when no such alarm is raised or it is already acknowledged.
    pub fn ack(&mut self, target: &str, now: i64) -> Result<AlarmEvent, CommandError> {
        let at = self
            .find_mut(target)
            .ok_or_else(|| CommandError::Unknown(target.to_owned()))?;
        let inst = &mut self.devices[at.0].instances[at.1];
        if inst.state.acked {
            return Err(CommandError::AlreadyAcked(target.to_owned()));
        }
        inst.state.acked = true;
        let status = status_of(&inst.state, now);
        self.emit(at, status, now)
            .ok_or_else(|| CommandError::Unknown(target.to_owned()))
    }

    /// Shelves the raised alarm `target` for `duration_ms` from `now`; 0 unshelves it.
    ///
    /// # Errors
    /// [`CommandError`] when no such alarm is raised or the duration is out of range.
    pub fn shelve(
        &mut self,
        target: &str,
        duration_ms: i64,
        now: i64,
    ) -> Result<AlarmEvent, CommandError> {
        if !(0..=MAX_SHELVE_MS).contains(&duration_ms) {
            return Err(CommandError::Duration(duration_ms));
        }
        let at = self
            .find_mut(target)
            .ok_or_else(|| CommandError::Unknown(target.to_owned()))?;
        let inst = &mut self.devices[at.0].instances[at.1];
        inst.state.shelved_until = (duration_ms > 0).then_some(now + duration_ms);
        let status = status_of(&inst.state, now);
        self.emit(at, status, now)
            .ok_or_else(|| CommandError::Unknown(target.to_owned()))
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
    /// Energy alarms: quotas from closed ledger intervals (with the meter index of each), and
    /// demand warnings from the energy booked per poll (`steps`: meter index and booking).
    pub fn energy(
        &mut self,
        intervals: &[crate::process::ledger::LedgerInterval],
        steps: &[(usize, crate::process::counter::Booked)],
        events: &mut Vec<AlarmEvent>,
    ) {
        let tz = self.hours.tz;
        let policy = &self.policy;
        let quotas = &self.quotas;
        let meter_names = &self.meter_names;
        let baselines = &self.baselines;
        let demand = self.demand;
        let mut scratch = Vec::new();
        for dev in &mut self.devices {
            let mut owner = Owner {
                name: &dev.name,
                points: &dev.point_names,
                units: &dev.units,
                flood: &mut dev.flood,
                policy,
            };
            for inst in &mut dev.instances {
                let rule = inst.rule.clone();
                // (time, condition, value, limit) for every observation of this alarm.
                let mut seen: Vec<(i64, bool, f64, f64)> = Vec::new();
                match (&mut inst.detector, &rule.kind) {
                    (Detector::Quota(state), RuleKind::Quota { quota, exceeded }) => {
                        let Some(q) = quotas.get(*quota) else {
                            continue;
                        };
                        let counts = |iv: &&crate::process::ledger::LedgerInterval| {
                            q.meters
                                .iter()
                                .any(|&i| meter_names.get(i).is_some_and(|n| *n == iv.meter))
                        };
                        for iv in intervals.iter().filter(counts) {
                            state.add(&q.period, tz, iv.start_ms, iv.delta);
                            let value = if *exceeded {
                                Some(state.used())
                            } else {
                                state.projected(iv.end_ms, q.min_elapsed)
                            };
                            seen.push((
                                iv.end_ms,
                                value.is_some_and(|v| v >= q.limit),
                                value.unwrap_or(state.used()),
                                q.limit,
                            ));
                        }
                    }
                    (
                        Detector::Demand(state),
                        RuleKind::Demand {
                            meter,
                            contract_kw,
                            warn_at,
                        },
                    ) => {
                        for (_, b) in steps.iter().filter(|(mi, _)| mi == meter) {
                            scratch.clear();
                            state.add(&demand, tz, b.from_ms, b.to_ms, b.delta, &mut scratch);
                            let projected = state.projection(&demand).map_or(0.0, |p| p.kw);
                            seen.push((
                                b.to_ms,
                                state.projected_exceeds(&demand, *contract_kw, *warn_at),
                                projected,
                                *contract_kw,
                            ));
                        }
                    }
                    (Detector::Baseline(state), RuleKind::Baseline { baseline }) => {
                        let Some(b) = baselines.get(*baseline) else {
                            continue;
                        };
                        let counts = |iv: &&crate::process::ledger::LedgerInterval| {
                            b.meters
                                .iter()
                                .any(|&i| meter_names.get(i).is_some_and(|n| *n == iv.meter))
                        };
                        if let Some(r) = &b.regression {
                            let production = meter_names.get(r.production);
                            for iv in intervals {
                                let output = production.is_some_and(|p| *p == iv.meter);
                                if !(output || counts(&iv)) {
                                    continue;
                                }
                                let Some(day) = local_day(tz, iv.start_ms) else {
                                    continue;
                                };
                                if let Some((end, kwh, expected)) =
                                    state.add_day(r, day, iv.delta, output)
                                {
                                    let over = expected.is_some_and(|x| {
                                        x > 0.0 && kwh > x * (1.0 + b.over_percent / 100.0)
                                    });
                                    seen.push((end, over, kwh, expected.unwrap_or(0.0)));
                                }
                            }
                        } else {
                            for iv in intervals.iter().filter(counts) {
                                let Some((hour, slot)) = local_hour(tz, iv.start_ms) else {
                                    continue;
                                };
                                match state.current {
                                    // Late data of an hour already judged: too late to count.
                                    Some((h, ..)) if hour < h => continue,
                                    Some((h, _, ref mut kwh)) if hour == h => *kwh += iv.delta,
                                    previous => {
                                        if let Some((h, s, kwh)) = previous {
                                            let usual = state.history.median(s, b.min_weeks);
                                            let over = usual.is_some_and(|u| {
                                                u > 0.0 && kwh > u * (1.0 + b.over_percent / 100.0)
                                            });
                                            seen.push((
                                                h + 3_600_000,
                                                over,
                                                kwh,
                                                usual.unwrap_or(0.0),
                                            ));
                                            state.history.push(s, kwh, b.weeks);
                                        }
                                        state.current = Some((hour, slot, iv.delta));
                                    }
                                }
                            }
                        }
                    }
                    _ => continue,
                }
                for (at, condition, value, limit) in seen {
                    inst.seen = Seen {
                        value: Some((value * 1000.0).round() / 1000.0),
                        limit: Some(limit),
                        ..Seen::default()
                    };
                    owner.observe(inst, Some(condition), at, events);
                }
            }
        }
    }
}

/// One device's health, as published on `{prefix}/health/{device}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceHealth {
    /// The device.
    pub device: String,
    /// What each part deducts.
    pub parts: health::Parts,
    /// Running hours in total, where counted.
    pub running_hours: Option<f64>,
    /// Starts in total, where counted.
    pub starts: Option<u64>,
    /// While a device-level anomaly alarm is raised: each point's share of its deviation,
    /// largest first.
    pub shares: Vec<PointShare>,
}

impl Engine {
    /// The health now (see [`health`]) of every device polled at least once.
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
                    .filter_map(|i| match (&i.rule.kind, i.seen.eta_ms) {
                        (RuleKind::Trend { horizon, .. }, Some(eta)) => {
                            Some(health::trend(eta, ms(*horizon)))
                        }
                        _ => None,
                    })
                    .fold(0.0, f64::max);
                DeviceHealth {
                    device: d.name.to_string(),
                    parts: health::Parts {
                        comm: health::comm(d.answered_avg),
                        alarms: health::alarms(raised),
                        anomaly: health::anomaly(max_score),
                        trend,
                    },
                    running_hours: d.maintenance.as_ref().map(|(_, c)| c.running_hours()),
                    starts: d.maintenance.as_ref().map(|(_, c)| c.starts),
                    shares: d
                        .instances
                        .iter()
                        .find(|i| {
                            i.state.is_raised() && matches!(i.detector, Detector::DeviceAnomaly(_))
                        })
                        .map(|i| point_shares(i, &d.point_names))
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The maintenance counters of every device that has them, to persist.
    pub fn counters(&self) -> Vec<(String, Counters)> {
        self.devices
            .iter()
            .filter_map(|d| Some((d.name.to_string(), d.maintenance.as_ref()?.1.clone())))
            .collect()
    }

    /// The hour-of-week baselines' states, keyed `{target}/{alarm}`, to persist.
    pub fn baseline_states(&self) -> Vec<(String, String)> {
        self.devices
            .iter()
            .flat_map(|d| {
                d.instances.iter().filter_map(move |i| match &i.detector {
                    Detector::Baseline(b) => Some((
                        format!("{}/{}", d.name, i.alarm),
                        serde_json::to_string(b).ok()?,
                    )),
                    _ => None,
                })
            })
            .collect()
    }

    /// Puts back persisted baseline states (unknown keys and unreadable states are skipped).
    pub fn restore_baselines(&mut self, saved: &[(String, String)]) {
        for d in &mut self.devices {
            for inst in &mut d.instances {
                if let Detector::Baseline(b) = &mut inst.detector {
                    let key = format!("{}/{}", d.name, inst.alarm);
                    if let Some(state) = saved
                        .iter()
                        .find(|(k, _)| *k == key)
                        .and_then(|(_, body)| serde_json::from_str(body).ok())
                    {
                        **b = state;
                    }
                }
            }
        }
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

    /// Records a service of `device`: its service intervals count again from now, and its
    /// service alarms clear at its next poll.
    ///
    /// # Errors
    /// [`CommandError::Unknown`] when the device has no `[[maintenance]]`.
    pub fn serviced(&mut self, device: &str) -> Result<(f64, u64), CommandError> {
        let (_, c) = self
            .devices
            .iter_mut()
            .find(|d| d.name.as_str() == device)
            .and_then(|d| d.maintenance.as_mut())
            .ok_or_else(|| CommandError::NoCounters(device.to_owned()))?;
        c.serviced();
        Ok((c.running_hours(), c.starts))
    }
}

fn status_of(state: &AlarmState, now: i64) -> AlarmStatus {
    if state.is_shelved(now) {
        AlarmStatus::Shelved
    } else if state.acked {
        AlarmStatus::Acked
    } else {
        AlarmStatus::Active
    }
}

/// The alarms of `[[quotas]]` (projected and exceeded) and of meters' demand contracts. Their
/// targets are meters or groups: one that is also a device's name shares its alarms;
/// otherwise it gets a device of its own, without points.
fn energy_rules(plan: &Plan, devices: &mut Vec<DeviceRules>) -> Vec<Rule> {
    let mut target = |name: &str| -> Option<usize> {
        if let Some(i) = devices.iter().position(|d| d.name.as_str() == name) {
            return Some(i);
        }
        devices.push(DeviceRules {
            name: Name::new(name).ok()?,
            point_names: Vec::new(),
            units: Vec::new(),
            index: HashMap::new(),
            values: Vec::new(),
            scores: Vec::new(),
            sample_of: Vec::new(),
            instances: Vec::new(),
            flood: Flood::default(),
            maintenance: None,
            answered_avg: 1.0,
            polled: false,
        });
        Some(devices.len() - 1)
    };
    let rule = |name: String, kind, kind_name, severity, message: String, device| {
        Some(Rule {
            name: Name::new(&name).ok()?,
            key: "energy".into(),
            kind,
            kind_name,
            severity,
            message,
            deadband: 0.0,
            on_delay: std::time::Duration::ZERO,
            off_delay: std::time::Duration::ZERO,
            targets: vec![Target {
                device,
                point: None,
                alarm: name,
                expr: None,
                points: Vec::new(),
                regime: None,
            }],
        })
    };
    let mut out = Vec::new();
    for (qi, q) in plan.energy.quotas.iter().enumerate() {
        let Some(device) = target(&q.target) else {
            continue;
        };
        let unit = q.kind.unit();
        for exceeded in [false, true] {
            let (name, verb) = if exceeded {
                (format!("{}-exceeded", q.name), "used")
            } else {
                (q.name.to_string(), "projected")
            };
            out.extend(rule(
                name,
                RuleKind::Quota {
                    quota: qi,
                    exceeded,
                },
                RuleKindName::Quota,
                q.severity,
                format!(
                    "{{device}}: {{value}} {unit} {verb} this {}, quota {{limit}} {unit}",
                    q.period.as_str()
                ),
                device,
            ));
        }
    }
    for (bi, b) in plan.energy.baselines.iter().enumerate() {
        let Some(device) = target(&b.target) else {
            continue;
        };
        out.extend(rule(
            b.name.to_string(),
            RuleKind::Baseline { baseline: bi },
            RuleKindName::Baseline,
            b.severity,
            match &b.regression {
                None => format!(
                    "{{device}}: {{value}} {unit} this hour, {{over}} {unit} ({{over_percent}}%) above the usual {{limit}} {unit} (same hour, last {} weeks)",
                    b.weeks,
                    unit = b.unit
                ),
                Some(r) => format!(
                    "{{device}}: {{value}} {unit} this day, {{over}} {unit} ({{over_percent}}%) above the {{limit}} {unit} expected for its {} output (regression over the last {} days)",
                    r.production_name,
                    r.days,
                    unit = b.unit
                ),
            },
            device,
        ));
    }
    for (mi, m) in plan.energy.meters.iter().enumerate() {
        let Some((contract_kw, warn_at)) = m.demand else {
            continue;
        };
        let Some(device) = target(&m.name) else {
            continue;
        };
        out.extend(rule(
            "demand".into(),
            RuleKind::Demand {
                meter: mi,
                contract_kw,
                warn_at,
            },
            RuleKindName::Demand,
            Severity::High,
            crate::config::rules::default_message(RuleKindName::Demand).to_owned(),
            device,
        ));
    }
    out
}

/// The local hour holding `ts`: its start (UTC ms) and its hour of the week (Monday 0).
fn local_hour(tz: chrono_tz::Tz, ts: i64) -> Option<(i64, usize)> {
    let local = chrono::Utc
        .timestamp_millis_opt(ts)
        .single()?
        .with_timezone(&tz);
    let into = i64::from(local.minute()) * 60_000
        + i64::from(local.second()) * 1000
        + i64::from(local.timestamp_subsec_millis());
    let slot = local.weekday().num_days_from_monday() as usize * 24 + local.hour() as usize;
    Some((ts - into, slot))
}

/// The local day `ts` falls on, as `[start, end)` UTC ms.
fn local_day(tz: chrono_tz::Tz, ts: i64) -> Option<(i64, i64)> {
    let date = chrono::Utc
        .timestamp_millis_opt(ts)
        .single()?
        .with_timezone(&tz)
        .date_naive();
    let start = |d| crate::clock::local_midnight(tz, d);
    Some((start(date)?, start(date.succ_opt()?)?))
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
struct Owner<'a> {
    name: &'a Name,
    points: &'a [Name],
    units: &'a [String],
    flood: &'a mut Flood,
    policy: &'a AlarmPolicy,
}

impl Owner<'_> {
    /// Applies an observation of `inst` at `at`: time passes first (a delay that ran out
    /// before `at` fires at its own time), then the condition seen at `at`, if any.
    fn observe(
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
    plan: &Plan,
    device: usize,
    params: &self::anomaly::AnomalyParams,
    learn: Option<std::time::Duration>,
) -> self::anomaly::AnomalyParams {
    let mut params = *params;
    if let (Some(learn), Some(d)) = (learn, plan.devices.get(device)) {
        params.learn_samples = crate::config::rules::learn_samples(learn, d.poll_interval);
    }
    params
}

/// What a rule target watches, by point name (not index, which a profile edit can shift),
/// for its model's fingerprint: a rule pointed at another point is another model.
fn watched(plan: &Plan, t: &Target) -> String {
    let points = plan.devices.get(t.device).map(|d| &d.points);
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
fn point_shares(inst: &Instance, names: &[Name]) -> Vec<PointShare> {
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

/// Records a raise at `at`; false when it exceeds the device's rate and must be summarised.
fn flood_allows(flood: &mut Flood, policy: &AlarmPolicy, at: i64) -> bool {
    let max = policy.max_per_device_per_minute;
    if max == 0 {
        return true;
    }
    while flood.raises.front().is_some_and(|&t| t <= at - 60_000) {
        flood.raises.pop_front();
    }
    if flood.raises.len() < max as usize {
        flood.raises.push_back(at);
        return true;
    }
    flood.suppressed_last = Some(at);
    flood.suppressed_count += 1;
    false
}

/// Raises the device's flood summary while raises are being suppressed; clears it a minute
/// after the last one, announcing the suppressed alarms that are still raised.
fn flood_summary(
    dev: &mut DeviceRules,
    policy: &AlarmPolicy,
    now: i64,
    events: &mut Vec<AlarmEvent>,
) {
    let flooding = dev.flood.suppressed_last.is_some_and(|t| now - t < 60_000);
    let transition = dev.flood.summary.step(flooding, now, 0, 0);
    let summary = |state: &AlarmState, status, count: u64| AlarmEvent {
        id: format!("{}/{FLOOD_ALARM}/{}", dev.name, state.raised_ms),
        device: dev.name.to_string(),
        alarm: FLOOD_ALARM.to_owned(),
        rule: FLOOD_ALARM.to_owned(),
        point: None,
        state: status,
        severity: Severity::High,
        raised: state.raised_ms,
        ts: now,
        value: Some(count as f64),
        limit: Some(f64::from(policy.max_per_device_per_minute)),
        message: format!(
            "{}: alarm flood, {count} alarms not announced (more than {} per minute)",
            dev.name, policy.max_per_device_per_minute
        ),
        shelved_until: None,
        shares: Vec::new(),
        anomaly_kind: None,
    };
    match transition {
        Some(Transition::Raised) => {
            events.push(summary(
                &dev.flood.summary,
                AlarmStatus::Active,
                dev.flood.suppressed_count,
            ));
        }
        Some(Transition::Cleared) => {
            events.push(summary(
                &dev.flood.summary,
                AlarmStatus::Cleared,
                dev.flood.suppressed_count,
            ));
            dev.flood.suppressed_count = 0;
            for inst in &mut dev.instances {
                if inst.state.suppressed && inst.state.is_raised() {
                    inst.state.suppressed = false;
                    events.push(event(
                        &dev.name,
                        &dev.point_names,
                        &dev.units,
                        inst,
                        AlarmStatus::Active,
                        now,
                    ));
                }
            }
        }
        None => {}
    }
}

fn event(
    device: &Name,
    points: &[Name],
    units: &[String],
    inst: &Instance,
    state: AlarmStatus,
    ts: i64,
) -> AlarmEvent {
    let point = inst.point.and_then(|p| points.get(p));
    AlarmEvent {
        id: format!("{device}/{}/{}", inst.alarm, inst.state.raised_ms),
        device: device.to_string(),
        alarm: inst.alarm.clone(),
        rule: inst.rule.name.to_string(),
        point: point.map(ToString::to_string),
        state,
        severity: inst.rule.severity,
        raised: inst.state.raised_ms,
        ts,
        value: inst.seen.value,
        limit: inst.seen.limit,
        message: if inst.message.is_empty() {
            raise_message(device, points, units, inst)
        } else {
            inst.message.clone()
        },
        shelved_until: inst
            .state
            .shelved_until
            .filter(|_| state == AlarmStatus::Shelved),
        shares: point_shares(inst, points),
        anomaly_kind: episode_kind(inst).map(|k| k.as_str().to_owned()),
    }
}

/// The kind of the episode an `anomaly` rule's alarm follows: the latest started of its
/// regimes' (a regime switch ends it, and the new regime's model may hold an older one).
fn episode_kind(inst: &Instance) -> Option<anomaly::AnomalyKind> {
    let episodes: Vec<anomaly::Episode> = match &inst.detector {
        Detector::Anomaly(m) => m.models().iter().map(AnomalyModel::episode).collect(),
        Detector::DeviceAnomaly(s) => s.models.models().iter().map(DeviceModel::episode).collect(),
        _ => return None,
    };
    let latest = episodes.into_iter().max_by_key(|e| e.since_ms)?;
    (latest.kind != anomaly::AnomalyKind::None).then_some(latest.kind)
}

fn raise_message(device: &Name, points: &[Name], units: &[String], inst: &Instance) -> String {
    let point = inst.point.and_then(|p| points.get(p));
    let unit = inst
        .point
        .and_then(|p| units.get(p))
        .map_or("", String::as_str);
    render(
        &inst.rule,
        device.as_str(),
        point.map_or("", Name::as_str),
        unit,
        &inst.seen,
        &explains(&point_shares(inst, points)),
        episode_kind(inst).map_or("?", |k| k.as_str()),
    )
}

/// The points that explain a device-level anomaly, for people: `flow 81%, pressure 12%`
/// (those with at least 5%, at most three).
fn explains(shares: &[PointShare]) -> String {
    let named: Vec<String> = shares
        .iter()
        .filter(|s| s.share >= 0.05)
        .take(3)
        .map(|s| format!("{} {:.0}%", s.point, 100.0 * s.share))
        .collect();
    if named.is_empty() {
        "?".into()
    } else {
        named.join(", ")
    }
}

/// A number for people: at most 3 decimals, no trailing zeros.
pub fn fmt_num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// A duration for people: `2h 5m`, `40s`.
pub fn fmt_eta(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

fn render(
    rule: &Rule,
    device: &str,
    point: &str,
    unit: &str,
    seen: &Seen,
    explains: &str,
    kind: &str,
) -> String {
    let mut out = String::with_capacity(rule.message.len() + 32);
    let mut rest = rule.message.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let key = &after[..close];
        let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "?".into());
        let _infallible = match key {
            "device" => write!(out, "{device}"),
            "point" => write!(out, "{point}"),
            "rule" => write!(out, "{}", rule.name),
            "value" => write!(out, "{}", opt(seen.value)),
            "limit" => write!(out, "{}", opt(seen.limit)),
            "score" => write!(out, "{}", opt(seen.score)),
            "explains" => write!(out, "{explains}"),
            "kind" => write!(out, "{}", kind.replace('_', " ")),
            "over" => write!(
                out,
                "{}",
                opt(seen.value.zip(seen.limit).map(|(v, l)| v - l))
            ),
            "over_percent" => write!(
                out,
                "{}",
                match seen.value.zip(seen.limit) {
                    Some((v, l)) if l > 0.0 => format!("{:.1}", 100.0 * (v / l - 1.0)),
                    _ => "?".into(),
                }
            ),
            "unit" if unit.is_empty() => Ok(()),
            "unit" => write!(out, " {unit}"),
            "eta" => write!(
                out,
                "{}",
                seen.eta_ms.map(fmt_eta).unwrap_or_else(|| "?".into())
            ),
            "per" => write!(
                out,
                "{}",
                match rule.kind {
                    RuleKind::Rate { per, .. } if per.as_secs() == 1 => "second",
                    _ => "minute",
                }
            ),
            "when" => write!(
                out,
                "{}",
                rule.targets
                    .first()
                    .and_then(|t| t.expr.as_ref())
                    .map_or("", |e| e.source())
            ),
            other => write!(out, "{{{other}}}"),
        };
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}
