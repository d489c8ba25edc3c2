//! What an alarm says: the event published for each change of an alarm, and its text for
//! people, rendered from the rule's message template.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::engine::{Instance, Seen};
use super::inspect::{episode_kind, point_shares};
use super::rules::rate::Per;
use super::spec::{Rule, RuleKind, Severity};
use crate::model::Name;

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
    /// The rule's severity, which the platform maps to its alarm level.
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
    /// `anomaly_kind` is provisional: the episode has just begun and its kind may still
    /// change (a raise on one huge sample says `spike`; the next samples may make it a
    /// `level_shift`). Absent once the kind is settled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anomaly_kind_provisional: bool,
}

/// One point's share of a device-level anomaly's deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointShare {
    /// The point.
    pub point: String,
    /// Its share in [0, 1]; the shares of one anomaly sum to 1.
    pub share: f64,
}

pub(super) fn event(
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
        anomaly_kind: episode_kind(inst).map(|(k, _)| k.as_str().to_owned()),
        anomaly_kind_provisional: episode_kind(inst).is_some_and(|(_, settled)| !settled),
    }
}

pub(super) fn raise_message(
    device: &Name,
    points: &[Name],
    units: &[String],
    inst: &Instance,
) -> String {
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
        &episode_kind(inst).map_or_else(
            || "?".to_owned(),
            |(k, settled)| {
                if settled {
                    k.as_str().to_owned()
                } else {
                    format!("{} (provisional)", k.as_str())
                }
            },
        ),
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
                if matches!(&rule.kind, RuleKind::Rate(r) if r.per == Per::Second) {
                    "second"
                } else {
                    "minute"
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::detect::rules::limit::Limit;
    use crate::detect::rules::rate::{Rate, RateState};

    fn rule(kind: RuleKind, message: &str) -> Rule {
        Rule {
            name: Name::new("motor-hot").unwrap(),
            key: "rules[0]".into(),
            kind,
            severity: Severity::High,
            message: message.into(),
            on_delay: Duration::ZERO,
            off_delay: Duration::ZERO,
            targets: Vec::new(),
        }
    }

    fn high(limit: f64) -> RuleKind {
        RuleKind::High(Limit {
            limit,
            deadband: 0.0,
        })
    }

    #[test]
    fn a_template_names_the_device_point_value_limit_and_excess() {
        let r = rule(
            high(80.0),
            "{device} {point} = {value}{unit}, {over}{unit} ({over_percent}%) above {limit}{unit} [{rule}]",
        );
        let seen = Seen {
            value: Some(92.25),
            limit: Some(80.0),
            ..Seen::default()
        };
        assert_eq!(
            render(&r, "pump-1", "motor_temp", "°C", &seen, "?", "?"),
            "pump-1 motor_temp = 92.25 °C, 12.25 °C (15.3%) above 80 °C [motor-hot]"
        );
    }

    #[test]
    fn what_was_not_seen_reads_as_a_question_mark_and_unknown_keys_stay_as_written() {
        let r = rule(
            high(80.0),
            "{value}/{limit}/{score}/{eta} {unit}{nope} {open",
        );
        assert_eq!(
            render(&r, "d", "p", "", &Seen::default(), "?", "?"),
            "?/?/?/? {nope} {open"
        );
    }

    #[test]
    fn an_episode_kind_reads_as_words() {
        let r = rule(high(80.0), "looks abnormal: {kind}");
        assert_eq!(
            render(&r, "d", "p", "", &Seen::default(), "", "level_shift"),
            "looks abnormal: level shift"
        );
    }

    #[test]
    fn a_rate_per_second_says_second_and_any_other_rate_says_minute() {
        let rate = |per| {
            RuleKind::Rate(Rate {
                limit: 1.0,
                per,
                window: Some(Duration::from_secs(60)),
                deadband: 0.0,
                state: RateState::default(),
            })
        };
        let seen = Seen::default();
        let per_second = rule(rate(Per::Second), "per {per}");
        let per_minute = rule(rate(Per::Minute), "per {per}");
        assert_eq!(render(&per_second, "", "", "", &seen, "", ""), "per second");
        assert_eq!(render(&per_minute, "", "", "", &seen, "", ""), "per minute");
    }

    #[test]
    fn numbers_keep_at_most_three_decimals_and_no_negative_zero() {
        assert_eq!(fmt_num(1.234_56), "1.235");
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(-0.000_1), "0");
        assert_eq!(fmt_num(-12.5), "-12.5");
    }

    #[test]
    fn durations_show_the_two_largest_units() {
        assert_eq!(fmt_eta(40_000), "40s");
        assert_eq!(fmt_eta(125_000), "2m 5s");
        assert_eq!(fmt_eta(7_530_000), "2h 5m");
        assert_eq!(
            fmt_eta(-5_000),
            "0s",
            "a crossing already past reads as now"
        );
    }

    #[test]
    fn an_explanation_names_at_most_three_points_of_five_percent_or_more() {
        let share = |point: &str, share| PointShare {
            point: point.into(),
            share,
        };
        let shares = [
            share("flow", 0.6),
            share("pressure", 0.2),
            share("temp", 0.1),
            share("speed", 0.07),
            share("level", 0.03),
        ];
        assert_eq!(explains(&shares), "flow 60%, pressure 20%, temp 10%");
        assert_eq!(explains(&shares[4..]), "?", "nothing worth naming");
        assert_eq!(explains(&[]), "?");
    }
}
