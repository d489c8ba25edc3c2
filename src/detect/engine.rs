//! The engine: every rule's state for every device, built from its spec, and the per-poll
//! evaluation that turns a batch into alarm changes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{Datelike, TimeZone, Timelike};

use super::alarm::AlarmState;
use super::energy::energy_rules;
use super::flood::{Flood, flood_summary};
use super::maintenance::Counters;
use super::message::AlarmEvent;
use super::rules::service::{ServiceHours, ServiceStarts};
use super::settle::Owner;
use super::spec::{AlarmPolicy, Rule, RuleKind, Target};
use super::spec::{EngineSpec, Maintenance};
use super::timers::{Timers, device_due};
use super::{health, snapshot};
use crate::model::{BadReason, Name, Quality, SampleBatch, Value};

/// What a rule instance saw at its last step, for the message and payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    pub(crate) value: Option<f64>,
    pub(crate) limit: Option<f64>,
    pub(crate) score: Option<f64>,
    pub(crate) eta_ms: Option<i64>,
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
    /// The rule's kind as this instance runs it: its parameters and its state.
    pub(super) kind: RuleKind,
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
    /// When time alone next changes something, per device.
    pub(super) timers: Timers,
}

/// `d` in whole milliseconds, saturating.
pub(crate) fn ms(d: std::time::Duration) -> i64 {
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
            let rule = |name: &str, kind: RuleKind| Rule {
                name: Name::new(name).unwrap_or_else(|_| spec.devices[m.device].name.clone()),
                key: "maintenance".into(),
                message: kind.default_message().to_owned(),
                kind,
                severity: m.severity,
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
                    RuleKind::ServiceHours(ServiceHours { every }),
                )
            });
            let starts = m.service_starts.map(|every| {
                rule(
                    "service-starts",
                    RuleKind::ServiceStarts(ServiceStarts { every }),
                )
            });
            hours.into_iter().chain(starts)
        });
        let mut service_rules: Vec<Rule> = service_rules.collect();
        service_rules.extend(energy_rules(spec, &mut devices));
        for rule in spec.rules.iter().chain(&service_rules) {
            let rule = Arc::new(rule.clone());
            for t in &rule.targets {
                let poll = spec.devices.get(t.device).map(|d| d.poll_interval);
                let Some(kind) = rule.kind.start(t, poll) else {
                    continue;
                };
                let fingerprint = snapshot::fingerprint(&kind, &watched(spec, t));
                if let Some(d) = devices.get_mut(t.device) {
                    d.instances.push(Instance {
                        rule: rule.clone(),
                        alarm: t.alarm.clone(),
                        point: t.point,
                        points: t.points.clone(),
                        regime: t.regime,
                        kind,
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
            timers: Timers::new(devices.len()),
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
        let timers = &mut self.timers;
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
        let (values, sample_of, scores) = (&dev.values, &dev.sample_of, &mut dev.scores);
        let maintenance = dev.maintenance.as_ref().map(|(_, c)| c);
        for inst in &mut dev.instances {
            let raised = inst.state.is_raised();
            // One time per poll (its last response), as the telemetry message carries it, so
            // replaying recorded telemetry reproduces the live events exactly.
            let at = now;
            // A point rule's point and its good value in this poll; none while the device is
            // silent, which holds every alarm but comm loss where it is.
            let point = inst
                .point
                .filter(|_| answered)
                .and_then(|pi| Some((pi, sample_of[pi].and(values[pi])?)));
            let seen = &mut inst.seen;
            let condition = match &mut inst.kind {
                RuleKind::CommLoss(_) => Some(!answered),
                RuleKind::HighHigh(l) | RuleKind::High(l) => point.map(|(_, v)| {
                    (seen.value, seen.limit) = (Some(v), Some(l.limit));
                    l.holds(v, true, raised)
                }),
                RuleKind::Low(l) | RuleKind::LowLow(l) => point.map(|(_, v)| {
                    (seen.value, seen.limit) = (Some(v), Some(l.limit));
                    l.holds(v, false, raised)
                }),
                RuleKind::Rate(r) => point.and_then(|(_, v)| {
                    seen.value = Some(v);
                    let (rate, holds) = r.step(at, v, raised)?;
                    (seen.value, seen.limit) = (Some(rate), Some(r.limit));
                    Some(holds)
                }),
                RuleKind::Stuck(s) => point.map(|(_, v)| {
                    seen.value = Some(v);
                    s.holds(at, v)
                }),
                RuleKind::Trend(t) => point.and_then(|(_, v)| {
                    seen.value = Some(v);
                    t.holds(at, v, seen)
                }),
                RuleKind::Anomaly(a) if a.is_device() => answered
                    .then(|| run_state(inst.regime, values))
                    .flatten()
                    .and_then(|running| {
                        a.device(at, &inst.points, values, sample_of, running, seen)
                    }),
                RuleKind::Anomaly(a) => {
                    run_state(inst.regime, values)
                        .zip(point)
                        .and_then(|(running, (pi, v))| {
                            seen.value = Some(v);
                            a.point(at, v, season_buckets, running, seen, &mut scores[pi])
                        })
                }
                RuleKind::Expression(e) => answered
                    .then(|| {
                        *seen = Seen::default();
                        e.holds(values)
                    })
                    .flatten(),
                RuleKind::ServiceHours(s) => maintenance.filter(|_| answered).map(|c| {
                    let since = c.hours_since_service();
                    *seen = service_seen(since, s.every);
                    since >= s.every
                }),
                RuleKind::ServiceStarts(s) => maintenance.filter(|_| answered).map(|c| {
                    let (since, every) = (c.starts_since_service() as f64, s.every as f64);
                    *seen = service_seen(since, every);
                    since >= every
                }),
                // Judged on the ledger's intervals by `Engine::energy`, not on a poll.
                RuleKind::Quota(_) | RuleKind::Demand(_) | RuleKind::Baseline(_) => None,
            };
            let Some(condition) = condition else { continue };
            owner.observe(inst, Some(condition), at, events);
        }
        flood_summary(dev, policy, now, events);
        timers.set(di, device_due(dev));
    }
}

/// What a service alarm shows: the count since the last service (to a tenth) and the interval.
fn service_seen(since: f64, every: f64) -> Seen {
    Seen {
        value: Some((since * 10.0).round() / 10.0),
        limit: Some(every),
        ..Seen::default()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::FLOOD_ALARM;
    use crate::detect::message::AlarmStatus;
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
