//! Energy alarms: quotas, baselines and demand contracts, judged on the ledger's closed
//! intervals and on the energy booked per poll rather than on a device's samples.

use std::collections::HashMap;

use chrono::{Datelike, TimeZone, Timelike};
use serde::{Deserialize, Serialize};

use super::engine::{DeviceRules, Engine, Seen};
use super::flood::Flood;
use super::message::AlarmEvent;
use super::rules::{baseline, demand, quota};
use super::settle::Owner;
use super::spec::{EngineSpec, Rule, RuleKind, Severity, Target};
use crate::model::Name;

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
        r: &super::spec::Regression,
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
                // (time, condition, value, limit) for every observation of this alarm.
                let mut seen: Vec<(i64, bool, f64, f64)> = Vec::new();
                match &mut inst.kind {
                    RuleKind::Quota(quota::Quota {
                        quota,
                        exceeded,
                        state,
                    }) => {
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
                    RuleKind::Demand(demand::Demand {
                        meter,
                        contract_kw,
                        warn_at,
                        state,
                    }) => {
                        for (_, b) in steps.iter().filter(|(mi, _)| *mi == *meter) {
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
                    RuleKind::Baseline(baseline::Baseline { baseline, state }) => {
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
                    // Judged per poll by `Engine::evaluate`.
                    RuleKind::HighHigh(_)
                    | RuleKind::High(_)
                    | RuleKind::Low(_)
                    | RuleKind::LowLow(_)
                    | RuleKind::Rate(_)
                    | RuleKind::Stuck(_)
                    | RuleKind::CommLoss(_)
                    | RuleKind::Anomaly(_)
                    | RuleKind::Trend(_)
                    | RuleKind::Expression(_)
                    | RuleKind::ServiceHours(_)
                    | RuleKind::ServiceStarts(_) => continue,
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

impl Engine {
    /// The hour-of-week baselines' states, keyed `{target}/{alarm}`, to persist.
    pub fn baseline_states(&self) -> Vec<(String, String)> {
        self.devices
            .iter()
            .flat_map(|d| {
                d.instances.iter().filter_map(move |i| {
                    let RuleKind::Baseline(b) = &i.kind else {
                        return None;
                    };
                    Some((
                        format!("{}/{}", d.name, i.alarm),
                        serde_json::to_string(&b.state).ok()?,
                    ))
                })
            })
            .collect()
    }

    /// Puts back persisted baseline states (unknown keys and unreadable states are skipped).
    pub fn restore_baselines(&mut self, saved: &[(String, String)]) {
        for d in &mut self.devices {
            for inst in &mut d.instances {
                if let RuleKind::Baseline(b) = &mut inst.kind {
                    let key = format!("{}/{}", d.name, inst.alarm);
                    if let Some(state) = saved
                        .iter()
                        .find(|(k, _)| *k == key)
                        .and_then(|(_, body)| serde_json::from_str(body).ok())
                    {
                        *b.state = state;
                    }
                }
            }
        }
    }
}

/// The alarms of `[[quotas]]` (projected and exceeded) and of meters' demand contracts. Their
/// targets are meters or groups: one that is also a device's name shares its alarms;
/// otherwise it gets a device of its own, without points.
pub(super) fn energy_rules(spec: &EngineSpec, devices: &mut Vec<DeviceRules>) -> Vec<Rule> {
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
    let rule = |name: String, kind, severity, message: String, device| {
        Some(Rule {
            name: Name::new(&name).ok()?,
            key: "energy".into(),
            kind,
            severity,
            message,
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
    for (qi, q) in spec.quotas.iter().enumerate() {
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
                RuleKind::Quota(quota::Quota {
                    quota: qi,
                    exceeded,
                    state: Default::default(),
                }),
                q.severity,
                format!(
                    "{{device}}: {{value}} {unit} {verb} this {}, quota {{limit}} {unit}",
                    q.period.as_str()
                ),
                device,
            ));
        }
    }
    for (bi, b) in spec.baselines.iter().enumerate() {
        let Some(device) = target(&b.target) else {
            continue;
        };
        out.extend(rule(
            b.name.to_string(),
            RuleKind::Baseline(baseline::Baseline {
                baseline: bi,
                state: Box::default(),
            }),
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
    for (mi, m) in spec.meters.iter().enumerate() {
        let Some((contract_kw, warn_at)) = m.demand else {
            continue;
        };
        let Some(device) = target(&m.name) else {
            continue;
        };
        out.extend(rule(
            "demand".into(),
            RuleKind::Demand(demand::Demand {
                meter: mi,
                contract_kw,
                warn_at,
                state: Box::default(),
            }),
            Severity::High,
            demand::MESSAGE.to_owned(),
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
