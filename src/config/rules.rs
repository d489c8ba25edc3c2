//! `[[rules]]` and `[alarms]`: what the detect stage watches for, resolved against the devices.
//!
//! A rule selects devices and points by name or glob (`motor-*`, `temp_?`), so one rule can
//! cover a fleet of identical machines; resolving expands it into one [`Target`] per matched
//! device and point, and each target becomes one alarm. Durations are written as text
//! (`"30s"`, `"6h"`, `"2d"`) because they span seconds to weeks.
//!
//! Invariants of a resolved rule: every target names a device and point that exist; limits are
//! finite; delays and windows are non-negative; an expression compiles against its device.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::describe;
use super::issue::Issues;
use super::plan::Device;
use crate::detect::anomaly::{AnomalyParams, Season};
use crate::detect::expr::Expr;
use crate::detect::spec::{DeviceSpec, EngineSpec, PointSpec};
use crate::detect::trend::Direction;
use crate::model::Name;

/// `[[rules]]` as written: one flat table, whose keys are checked per kind when resolving.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// The rule's name: the `{rule}` of the alarm topic.
    pub name: String,
    /// What it detects.
    pub kind: RuleKindName,
    /// Device name or glob; every device when absent.
    #[serde(default)]
    pub device: Option<String>,
    /// Point name or glob (point rules only).
    #[serde(default)]
    pub point: Option<String>,
    /// Priority of the alarm.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Message template with `{device}`, `{point}`, `{value}`, `{limit}`, `{unit}`, `{rule}`,
    /// `{over}` (value − limit) and `{over_percent}`.
    #[serde(default)]
    pub message: Option<String>,
    /// The threshold (limits, rate, trend).
    #[serde(default)]
    pub limit: Option<f64>,
    /// Hysteresis: how far back past the limit the value must go to clear.
    #[serde(default)]
    pub deadband: Option<f64>,
    /// How long the condition must hold before the alarm is raised.
    #[serde(default)]
    pub on_delay: Option<String>,
    /// How long the condition must be gone before the alarm clears.
    #[serde(default)]
    pub off_delay: Option<String>,
    /// `rate`: `second` or `minute`.
    #[serde(default)]
    pub per: Option<RatePer>,
    /// `rate` and `trend`: the window the rate or trend is measured over.
    #[serde(default)]
    pub window: Option<String>,
    /// `stuck` and `comm_loss`: how long before it counts.
    #[serde(default)]
    pub duration: Option<String>,
    /// `stuck`: changes smaller than this do not count as changes.
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// `anomaly`: the score in (0, 1) above which it alarms.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// `anomaly`: the model's memory in samples.
    #[serde(default)]
    pub learn_samples: Option<u32>,
    /// `anomaly`: the model's memory as a duration, turned into samples by each device's
    /// poll interval.
    #[serde(default)]
    pub learn: Option<String>,
    /// `anomaly`: samples seen before any score.
    #[serde(default)]
    pub warmup_samples: Option<u32>,
    /// `anomaly`: seasonal baseline.
    #[serde(default)]
    pub season: Option<SeasonName>,
    /// `anomaly`: smallest scale, in engineering units.
    #[serde(default)]
    pub min_sigma: Option<f64>,
    /// `anomaly` without `point`: the points (names or globs) of one device-level model;
    /// every numeric point of the device when absent.
    #[serde(default)]
    pub points: Option<Vec<String>>,
    /// `anomaly`: the device's run-state point; one model per operating regime (running or
    /// stopped), so a stop is not an anomaly.
    #[serde(default)]
    pub regime: Option<String>,
    /// `trend`: `rising` or `falling`.
    #[serde(default)]
    pub direction: Option<DirectionName>,
    /// `trend`: alarm when the crossing is predicted sooner than this.
    #[serde(default)]
    pub horizon: Option<String>,
    /// `expression`: the condition over the device's points.
    #[serde(default)]
    pub when: Option<String>,
}

// The resolved rule types belong to the detect stage; config resolves the file into them.
pub use crate::detect::spec::{
    AlarmPolicy, DEVICE_ANOMALY_MESSAGE, Rule, RuleKind, RuleKindName, Severity, Target,
    default_message, learn_samples,
};

/// `rate` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RatePer {
    /// Units per second.
    Second,
    /// Units per minute.
    Minute,
}

/// `anomaly` seasons, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeasonName {
    /// The model finds the point's cycle, if it has one (the default).
    Auto,
    /// One baseline.
    None,
    /// A baseline per local hour of the day.
    HourOfDay,
    /// A baseline per local hour of the week.
    HourOfWeek,
}

/// `trend` directions, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionName {
    /// Will rise above the limit.
    Rising,
    /// Will fall below the limit.
    Falling,
}

/// `[alarms]` as written: engine-wide alarm policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarms {
    /// Raises per device per minute above which further raises are summarised.
    #[serde(default = "default_max_per_minute")]
    pub max_per_device_per_minute: u32,
}

impl Default for RawAlarms {
    fn default() -> Self {
        Self {
            max_per_device_per_minute: default_max_per_minute(),
        }
    }
}

fn default_max_per_minute() -> u32 {
    crate::detect::spec::DEFAULT_MAX_PER_MINUTE
}

/// Whether `name` matches the glob `pattern` (`*` any run, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Position of the last `*` and the name index it was tried at: classic backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Parses a human duration (`"30s"`, `"5m"`, `"6h"`, `"1h 30m"`, `"0s"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "`{s}` is negative; durations are 0 or more, e.g. \"30s\""
        ));
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "`{s}` is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"5m\", \"6h\", \"2d\""
        )
    })
}

fn duration_at(
    issues: &mut Issues,
    key: &str,
    field: &str,
    value: Option<&String>,
    default: Duration,
) -> Duration {
    match value {
        None => default,
        Some(s) => parse_duration(s).unwrap_or_else(|m| {
            issues.push(describe::join(key, field), m);
            default
        }),
    }
}

/// Keys each kind accepts beyond the common ones.
fn kind_keys(kind: RuleKindName) -> &'static [&'static str] {
    match kind {
        RuleKindName::HighHigh | RuleKindName::High | RuleKindName::Low | RuleKindName::LowLow => {
            &["limit", "deadband"]
        }
        RuleKindName::Rate => &["limit", "per", "window", "deadband"],
        RuleKindName::Stuck => &["tolerance", "duration"],
        RuleKindName::CommLoss => &["duration"],
        RuleKindName::Anomaly => &[
            "threshold",
            "learn_samples",
            "learn",
            "warmup_samples",
            "season",
            "min_sigma",
            "points",
            "regime",
        ],
        RuleKindName::Trend => &["limit", "direction", "horizon", "window", "deadband"],
        RuleKindName::Expression => &["when"],
        RuleKindName::ServiceHours
        | RuleKindName::ServiceStarts
        | RuleKindName::Quota
        | RuleKindName::Demand
        | RuleKindName::Baseline => &[],
    }
}

fn present_kind_keys(raw: &RawRule) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut add = |present: bool, k: &'static str| {
        if present {
            keys.push(k);
        }
    };
    add(raw.limit.is_some(), "limit");
    add(raw.deadband.is_some(), "deadband");
    add(raw.per.is_some(), "per");
    add(raw.window.is_some(), "window");
    add(raw.duration.is_some(), "duration");
    add(raw.tolerance.is_some(), "tolerance");
    add(raw.threshold.is_some(), "threshold");
    add(raw.learn_samples.is_some(), "learn_samples");
    add(raw.learn.is_some(), "learn");
    add(raw.warmup_samples.is_some(), "warmup_samples");
    add(raw.season.is_some(), "season");
    add(raw.min_sigma.is_some(), "min_sigma");
    add(raw.points.is_some(), "points");
    add(raw.regime.is_some(), "regime");
    add(raw.direction.is_some(), "direction");
    add(raw.horizon.is_some(), "horizon");
    add(raw.when.is_some(), "when");
    keys
}

fn finite(issues: &mut Issues, key: &str, field: &str, v: Option<f64>) -> Option<f64> {
    match v {
        Some(x) if !x.is_finite() => {
            issues.push(
                describe::join(key, field),
                format!("{x} is not a finite number"),
            );
            None
        }
        other => other,
    }
}

/// Resolves every `[[rules]]` entry against the resolved `devices`.
pub fn resolve_rules(
    raw: Vec<(String, RawRule)>,
    devices: &[Device],
    issues: &mut Issues,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (key, r) in raw {
        if let Some(first) = seen.get(&r.name) {
            issues.push(
                format!("{key}.name"),
                format!(
                    "rule `{}` is already defined at {first}; rule names must be unique",
                    r.name
                ),
            );
            continue;
        }
        seen.insert(r.name.clone(), key.clone());
        if let Some(rule) = resolve_rule(&key, &r, devices, issues) {
            rules.push(rule);
        }
    }
    check_limit_order(&rules, devices, issues);
    rules
}

fn resolve_rule(key: &str, r: &RawRule, devices: &[Device], issues: &mut Issues) -> Option<Rule> {
    let before = issues.0.len();
    let name = match Name::new(&r.name) {
        Ok(n) => Some(n),
        Err(e) => {
            issues.push(format!("{key}.name"), e.to_string());
            None
        }
    };
    let allowed = kind_keys(r.kind);
    for k in present_kind_keys(r) {
        if !allowed.contains(&k) {
            issues.push(
                format!("{key}.{k}"),
                format!(
                    "`{k}` does not apply to kind = \"{}\"; it takes {}",
                    r.kind.as_str(),
                    describe::list(allowed)
                ),
            );
        }
    }
    let device_pattern = r.device.clone().unwrap_or_else(|| "*".into());
    let matched: Vec<usize> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| glob_match(&device_pattern, d.name.as_str()))
        .map(|(i, _)| i)
        .collect();
    if matched.is_empty() {
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        let hint = describe::closest(&device_pattern, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_else(|| format!("; devices: {}", describe::list(&names)));
        issues.push(
            format!("{key}.device"),
            format!("no device matches `{device_pattern}`{hint}"),
        );
    }
    let mut targets = Vec::new();
    let device_model = r.kind == RuleKindName::Anomaly && r.point.is_none();
    if r.point.is_some() && r.points.is_some() {
        issues.push(
            format!("{key}.points"),
            "give `point` (one model per point) or `points` (one model over the device's \
             points), not both",
        );
    }
    if device_model {
        for &d in &matched {
            let regime = regime_point(key, r, &devices[d], issues);
            if let Some(points) = device_points(key, r, &devices[d], regime, issues) {
                targets.push(Target {
                    device: d,
                    point: None,
                    alarm: r.name.clone(),
                    expr: None,
                    points,
                    regime,
                });
            }
        }
    } else if r.kind.is_point_rule() {
        match &r.point {
            None => issues.push(
                format!("{key}.point"),
                format!(
                    "kind = \"{}\" watches a point: add `point = \"name\"` (globs like \"temp_*\" allowed)",
                    r.kind.as_str()
                ),
            ),
            Some(p) => {
                let glob = is_glob(p);
                for &d in &matched {
                    let regime = regime_point(key, r, &devices[d], issues);
                    for (pi, point) in devices[d].points.iter().enumerate() {
                        if glob_match(p, point.name.as_str()) && Some(pi) != regime {
                            targets.push(Target {
                                device: d,
                                point: Some(pi),
                                alarm: if glob {
                                    format!("{}.{}", r.name, point.name)
                                } else {
                                    r.name.clone()
                                },
                                expr: None,
                                points: Vec::new(),
                                regime,
                            });
                        }
                    }
                }
                if !matched.is_empty() && targets.is_empty() {
                    let names: Vec<&str> = matched
                        .iter()
                        .flat_map(|&d| devices[d].points.iter().map(|p| p.name.as_str()))
                        .collect();
                    let hint = describe::closest(p, &names)
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default();
                    issues.push(
                        format!("{key}.point"),
                        format!("no point matches `{p}` on the devices `{device_pattern}` selects{hint}"),
                    );
                }
            }
        }
    } else {
        if r.point.is_some() {
            issues.push(
                format!("{key}.point"),
                format!(
                    "kind = \"{}\" watches a whole device; remove `point`",
                    r.kind.as_str()
                ),
            );
        }
        for &d in &matched {
            targets.push(Target {
                device: d,
                point: None,
                alarm: r.name.clone(),
                expr: None,
                points: Vec::new(),
                regime: None,
            });
        }
    }
    let limit = finite(issues, key, "limit", r.limit);
    let deadband = finite(issues, key, "deadband", r.deadband).unwrap_or(0.0);
    if deadband < 0.0 {
        issues.push(format!("{key}.deadband"), "must be 0 or more");
    }
    let on_delay = duration_at(issues, key, "on_delay", r.on_delay.as_ref(), Duration::ZERO);
    let off_delay = duration_at(
        issues,
        key,
        "off_delay",
        r.off_delay.as_ref(),
        Duration::ZERO,
    );
    let need_limit = |issues: &mut Issues| {
        if limit.is_none() && r.limit.is_none() {
            issues.push(
                format!("{key}.limit"),
                format!(
                    "kind = \"{}\" needs `limit` (engineering units)",
                    r.kind.as_str()
                ),
            );
        }
        limit.unwrap_or(0.0)
    };
    if let Some(source) = made_elsewhere(r.kind) {
        issues.push(
            format!("{key}.kind"),
            format!(
                "kind = \"{}\" is not written in [[rules]]: {source}",
                r.kind.as_str()
            ),
        );
        return None;
    }
    let kind = match r.kind {
        RuleKindName::HighHigh | RuleKindName::High | RuleKindName::Low | RuleKindName::LowLow => {
            RuleKind::Limit {
                level: r.kind,
                limit: need_limit(issues),
                above: matches!(r.kind, RuleKindName::HighHigh | RuleKindName::High),
            }
        }
        RuleKindName::Rate => {
            let l = need_limit(issues);
            if l <= 0.0 && limit.is_some() {
                issues.push(
                    format!("{key}.limit"),
                    "a rate limit must be above 0 (it applies to rises and falls alike)",
                );
            }
            let per = match r.per.unwrap_or(RatePer::Minute) {
                RatePer::Second => Duration::from_secs(1),
                RatePer::Minute => Duration::from_secs(60),
            };
            let window = duration_at(issues, key, "window", r.window.as_ref(), per);
            if window.is_zero() {
                issues.push(format!("{key}.window"), "must be longer than 0");
            }
            RuleKind::Rate {
                limit: l,
                per,
                window,
            }
        }
        RuleKindName::Stuck => {
            let tolerance = finite(issues, key, "tolerance", r.tolerance).unwrap_or(0.0);
            if tolerance < 0.0 {
                issues.push(format!("{key}.tolerance"), "must be 0 or more");
            }
            let duration = match &r.duration {
                None => {
                    issues.push(
                        format!("{key}.duration"),
                        "kind = \"stuck\" needs `duration`, e.g. \"10m\"",
                    );
                    Duration::ZERO
                }
                Some(_) => {
                    duration_at(issues, key, "duration", r.duration.as_ref(), Duration::ZERO)
                }
            };
            RuleKind::Stuck {
                tolerance,
                duration,
            }
        }
        RuleKindName::CommLoss => RuleKind::CommLoss {
            duration: duration_at(
                issues,
                key,
                "duration",
                r.duration.as_ref(),
                Duration::from_secs(60),
            ),
        },
        RuleKindName::Anomaly => {
            let threshold = finite(issues, key, "threshold", r.threshold)
                .unwrap_or(crate::detect::anomaly::DEFAULT_THRESHOLD);
            if !(threshold > 0.0 && threshold < 1.0) {
                issues.push(
                    format!("{key}.threshold"),
                    format!("{threshold} is outside (0, 1); e.g. 0.9"),
                );
            }
            let mut params = AnomalyParams::default();
            if let Some(n) = r.learn_samples {
                if n < 10 {
                    issues.push(format!("{key}.learn_samples"), "must be at least 10");
                }
                params.learn_samples = n;
            }
            if let Some(n) = r.warmup_samples {
                params.warmup_samples = n;
            }
            if let Some(s) = finite(issues, key, "min_sigma", r.min_sigma) {
                if s < 0.0 {
                    issues.push(format!("{key}.min_sigma"), "must be 0 or more");
                }
                params.min_sigma = s;
            }
            let learn = r.learn.as_ref().map(|text| {
                let d = duration_at(issues, key, "learn", Some(text), Duration::ZERO);
                if r.learn_samples.is_some() {
                    issues.push(
                        format!("{key}.learn"),
                        "give `learn` (a duration) or `learn_samples`, not both",
                    );
                }
                for t in &targets {
                    let device = &devices[t.device];
                    if learn_samples(d, device.poll_interval) < 10 {
                        issues.push(
                            format!("{key}.learn"),
                            format!(
                                "`{text}` is fewer than 10 polls of device `{}` (every {}); \
                                 the model needs at least 10 samples of memory",
                                device.name,
                                humantime::format_duration(device.poll_interval)
                            ),
                        );
                        break;
                    }
                }
                d
            });
            params.threshold = threshold;
            params.season = match r.season.unwrap_or(SeasonName::Auto) {
                SeasonName::Auto => Season::Auto,
                SeasonName::None => Season::None,
                SeasonName::HourOfDay => Season::HourOfDay,
                SeasonName::HourOfWeek => Season::HourOfWeek,
            };
            RuleKind::Anomaly {
                threshold,
                params,
                learn,
            }
        }
        RuleKindName::Trend => {
            let l = need_limit(issues);
            let direction = match r.direction {
                Some(DirectionName::Rising) => Direction::Rising,
                Some(DirectionName::Falling) => Direction::Falling,
                None => {
                    issues.push(
                        format!("{key}.direction"),
                        "kind = \"trend\" needs `direction`: \"rising\" or \"falling\"",
                    );
                    Direction::Rising
                }
            };
            let horizon = match &r.horizon {
                None => {
                    issues.push(
                        format!("{key}.horizon"),
                        "kind = \"trend\" needs `horizon`, e.g. \"6h\"",
                    );
                    Duration::ZERO
                }
                Some(_) => duration_at(issues, key, "horizon", r.horizon.as_ref(), Duration::ZERO),
            };
            let window = duration_at(
                issues,
                key,
                "window",
                r.window.as_ref(),
                Duration::from_secs(6 * 3600),
            );
            if window < Duration::from_secs(60) {
                issues.push(
                    format!("{key}.window"),
                    "a trend window shorter than 1 minute cannot be robust; use e.g. \"6h\"",
                );
            }
            RuleKind::Trend {
                limit: l,
                direction,
                horizon,
                window,
            }
        }
        RuleKindName::Expression => {
            match &r.when {
                None => issues.push(
                    format!("{key}.when"),
                    "kind = \"expression\" needs `when`, e.g. \"run_state == 1 && current_l1 < 0.5\"",
                ),
                Some(src) => {
                    for t in &mut targets {
                        let device = &devices[t.device];
                        let compiled = Expr::compile(src, |n| {
                            device.points.iter().position(|p| p.name.as_str() == n)
                        });
                        match compiled {
                            Ok(e) => t.expr = Some(e),
                            Err(e) => {
                                let names: Vec<&str> =
                                    device.points.iter().map(|p| p.name.as_str()).collect();
                                let hint = backticked(&e.message)
                                    .and_then(|w| describe::closest(w, &names))
                                    .map(|c| format!("; did you mean `{c}`?"))
                                    .unwrap_or_default();
                                issues.push(
                                    format!("{key}.when"),
                                    format!("on device `{}`: {e}{hint}", device.name),
                                );
                                break;
                            }
                        }
                    }
                }
            }
            RuleKind::Expression
        }
        // Refused above with their issue (`made_elsewhere`): these never come from [[rules]].
        RuleKindName::ServiceHours
        | RuleKindName::ServiceStarts
        | RuleKindName::Quota
        | RuleKindName::Demand
        | RuleKindName::Baseline => return None,
    };
    if issues.0.len() != before {
        return None;
    }
    Some(Rule {
        name: name?,
        key: key.to_owned(),
        kind,
        kind_name: r.kind,
        severity: r.severity.unwrap_or_default(),
        message: r.message.clone().unwrap_or_else(|| {
            if device_model {
                DEVICE_ANOMALY_MESSAGE.to_owned()
            } else {
                default_message(r.kind).to_owned()
            }
        }),
        deadband,
        on_delay,
        off_delay,
        targets,
    })
}

/// The index of `regime`'s run-state point on `device`, if the rule names one.
fn regime_point(key: &str, r: &RawRule, device: &Device, issues: &mut Issues) -> Option<usize> {
    let name = r.regime.as_ref()?;
    let found = device.points.iter().position(|p| p.name.as_str() == name);
    if found.is_none() {
        let names: Vec<&str> = device.points.iter().map(|p| p.name.as_str()).collect();
        let hint = describe::closest(name, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        issues.push(
            format!("{key}.regime"),
            format!(
                "device `{}` has no point `{name}` to take its run state from{hint}",
                device.name
            ),
        );
    }
    found
}

/// The points of a device-level `anomaly` model on `device`: those `points` names (globs
/// allowed), else every numeric point; never the regime point. At least two.
fn device_points(
    key: &str,
    r: &RawRule,
    device: &Device,
    regime: Option<usize>,
    issues: &mut Issues,
) -> Option<Vec<usize>> {
    use crate::decode::DataType;
    let mut chosen = Vec::new();
    match &r.points {
        Some(patterns) => {
            for pattern in patterns {
                let before = chosen.len();
                for (pi, p) in device.points.iter().enumerate() {
                    if glob_match(pattern, p.name.as_str()) && !chosen.contains(&pi) {
                        chosen.push(pi);
                    }
                }
                if chosen.len() == before
                    && !device
                        .points
                        .iter()
                        .any(|p| glob_match(pattern, p.name.as_str()))
                {
                    let names: Vec<&str> = device.points.iter().map(|p| p.name.as_str()).collect();
                    let hint = describe::closest(pattern, &names)
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default();
                    issues.push(
                        format!("{key}.points"),
                        format!(
                            "no point matches `{pattern}` on device `{}`{hint}",
                            device.name
                        ),
                    );
                    return None;
                }
            }
            chosen.sort_unstable();
        }
        None => {
            chosen = device
                .points
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    !matches!(
                        p.codec.data_type,
                        DataType::Bool | DataType::Bit | DataType::String
                    )
                })
                .map(|(pi, _)| pi)
                .collect();
        }
    }
    chosen.retain(|pi| Some(*pi) != regime);
    if chosen.len() < 2 {
        issues.push(
            format!("{key}.points"),
            format!(
                "a device-level anomaly model needs at least 2 numeric points, device `{}` \
                 gives {}; for one point write `point = \"name\"`",
                device.name,
                chosen.len()
            ),
        );
        return None;
    }
    Some(chosen)
}

/// Where the alarms of a kind that `[[rules]]` cannot declare come from, so that such a rule is
/// refused with a pointer instead of dropped.
fn made_elsewhere(kind: RuleKindName) -> Option<&'static str> {
    match kind {
        RuleKindName::ServiceHours | RuleKindName::ServiceStarts => {
            Some("service alarms come from [[maintenance]] (service_hours, service_starts)")
        }
        RuleKindName::Quota => Some("quota alarms come from [[quotas]]"),
        RuleKindName::Demand => Some("demand alarms come from `contract_kw` on a [[meters]] entry"),
        RuleKindName::Baseline => Some("baseline alarms come from [[baselines]]"),
        RuleKindName::HighHigh
        | RuleKindName::High
        | RuleKindName::Low
        | RuleKindName::LowLow
        | RuleKindName::Rate
        | RuleKindName::Stuck
        | RuleKindName::CommLoss
        | RuleKindName::Anomaly
        | RuleKindName::Trend
        | RuleKindName::Expression => None,
    }
}

fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// A limit rule on one point: its level, limit and where it was written.
type LimitAt<'a> = (RuleKindName, f64, &'a str);

/// Limits on one point must nest: low_low ≤ low < high ≤ high_high.
fn check_limit_order(rules: &[Rule], devices: &[Device], issues: &mut Issues) {
    // (device, point) → (level, limit, key) of every limit rule on it.
    let mut by_point: HashMap<(usize, usize), Vec<LimitAt<'_>>> = HashMap::new();
    for rule in rules {
        if let RuleKind::Limit { level, limit, .. } = rule.kind {
            for t in &rule.targets {
                if let Some(p) = t.point {
                    by_point
                        .entry((t.device, p))
                        .or_default()
                        .push((level, limit, &rule.key));
                }
            }
        }
    }
    let rank = |l: RuleKindName| match l {
        RuleKindName::LowLow => 0,
        RuleKindName::Low => 1,
        RuleKindName::High => 2,
        _ => 3,
    };
    let mut reported = std::collections::HashSet::new();
    let mut points: Vec<_> = by_point.into_iter().collect();
    points.sort_by_key(|(k, _)| *k);
    for ((d, p), limits) in points {
        for a in &limits {
            for b in &limits {
                let inverted = rank(a.0) < rank(b.0)
                    && (a.1 > b.1 || (rank(a.0) <= 1 && rank(b.0) >= 2 && a.1 >= b.1));
                if inverted && reported.insert((a.2, b.2)) {
                    issues.push(
                        format!("{}.limit", b.2),
                        format!(
                            "inverted limits on {}/{}: {} limit {} is not above the {} limit {} at {}",
                            devices[d].name,
                            devices[d].points[p].name,
                            b.0.as_str(),
                            b.1,
                            a.0.as_str(),
                            a.1,
                            a.2
                        ),
                    );
                }
            }
        }
    }
}

impl super::plan::Plan {
    /// The detect engine's spec: the devices and points the rules index, the rules, and the
    /// settings of the service, quota, baseline and demand alarms.
    pub fn engine_spec(&self) -> EngineSpec {
        EngineSpec {
            devices: self
                .devices
                .iter()
                .map(|d| DeviceSpec {
                    name: d.name.clone(),
                    points: d
                        .points
                        .iter()
                        .map(|p| PointSpec {
                            name: p.name.clone(),
                            unit: p.unit.clone(),
                        })
                        .collect(),
                    poll_interval: d.poll_interval,
                })
                .collect(),
            rules: self.rules.clone(),
            maintenance: self.maintenance.clone(),
            quotas: self.energy.quotas.clone(),
            baselines: self.energy.baselines.clone(),
            demand: self.energy.demand,
            meters: self.energy.meters.clone(),
            policy: self.alarm_policy.clone(),
            timezone: self.gateway.timezone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("motor-*", "motor-1"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("temp_?", "temp_1"));
        assert!(!glob_match("temp_?", "temp_12"));
        assert!(glob_match("*_temp*", "bearing_temp_de"));
        assert!(!glob_match("motor-*", "pump-1"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn durations_are_human_and_never_negative() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-5s").is_err_and(|m| m.contains("negative")));
        assert!(parse_duration("5 parsecs").is_err_and(|m| m.contains("e.g.")));
    }
}
