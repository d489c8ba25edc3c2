//! `[[rules]]` and `[alarms]`: what the detect stage watches for, resolved against the devices.
//!
//! A rule selects devices and points by name or glob (`motor-*`, `temp_?`), so one rule can
//! cover a fleet of identical machines; resolving expands it into one [`Target`] per matched
//! device and point, and each target becomes one alarm. Durations are written as text
//! (`"30s"`, `"6h"`, `"2d"`) because they span seconds to weeks.
//!
//! A rule is written as the keys every kind takes ([`RuleCommon`]) plus its `kind` with that
//! kind's own keys: [`RuleKind`], the detect stage's closed enum. Which keys a kind takes is
//! read from that enum's serde impl, so the checks here and the reference never drift from
//! it.
//!
//! Invariants of a resolved rule: every target names a device and point that exist; limits are
//! finite; delays and windows are non-negative; an expression compiles against its device.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::describe;
use super::issue::Issues;
use super::load::deserialize_at;
use super::plan::Device;
use crate::detect::expr::Expr;
use crate::detect::rules::Shape;
use crate::detect::rules::anomaly::{self, learn_samples};
use crate::detect::spec::{DeviceSpec, EngineSpec, PointSpec};
use crate::model::Name;

// The rule types belong to the detect stage; config resolves the file into them.
pub use crate::detect::spec::{AlarmPolicy, Rule, RuleKind, Severity, Target};
pub use crate::model::parse_duration;

/// The keys every `[[rules]]` entry takes, whatever its kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCommon {
    /// The rule's name: the `{rule}` of the alarm topic.
    pub name: String,
    /// Device name or glob; every device when absent.
    #[serde(default)]
    pub device: Option<String>,
    /// Point name or glob (point rules, and `anomaly` with one model per point).
    #[serde(default)]
    pub point: Option<String>,
    /// Priority of the alarm.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Message template with `{device}`, `{point}`, `{value}`, `{limit}`, `{unit}`, `{rule}`,
    /// `{over}` (value − limit) and `{over_percent}`.
    #[serde(default)]
    pub message: Option<String>,
    /// How long the condition must hold before the alarm is raised.
    #[serde(default, deserialize_with = "crate::detect::rules::optional_duration")]
    pub on_delay: Option<Duration>,
    /// How long the condition must be gone before the alarm clears.
    #[serde(default, deserialize_with = "crate::detect::rules::optional_duration")]
    pub off_delay: Option<Duration>,
}

/// `[[rules]]` as written: the common keys, and the kind with its own. Read in two parts
/// (see `read_rules`), so that a bad value of a common key is named by `config` itself and
/// only the kind goes through serde's tagged-enum buffer.
#[derive(Debug, Clone)]
pub struct RawRule {
    /// The keys of every kind.
    pub common: RuleCommon,
    /// What it detects, with that kind's keys.
    pub kind: RuleKind,
}

/// The keys `T` accepts, as serde lists them when given the unknown key `probe` beside
/// `with` (each type is `deny_unknown_fields`).
fn keys_of<T: DeserializeOwned>(with: &[(&str, &str)]) -> Vec<String> {
    let mut table = toml::Table::new();
    for (k, v) in with {
        table.insert((*k).to_owned(), toml::Value::String((*v).to_owned()));
    }
    table.insert("\u{1}".to_owned(), toml::Value::Integer(0));
    let Err(err) = T::deserialize(toml::Value::Table(table)) else {
        return Vec::new();
    };
    let message = err.message().to_owned();
    let Some((_, list)) = message.split_once(", expected ") else {
        return Vec::new();
    };
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The keys every kind takes.
pub fn common_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| keys_of::<RuleCommon>(&[]))
}

/// Every kind `kind` may name, in the order the detect stage declares them, with the keys
/// each takes beyond the common ones (none for the kinds made elsewhere).
pub fn kinds() -> &'static [(String, Vec<String>)] {
    static KINDS: OnceLock<Vec<(String, Vec<String>)>> = OnceLock::new();
    KINDS.get_or_init(|| {
        // Naming no kind makes serde list them all.
        let names = keys_of::<RuleKind>(&[("kind", "\u{1}")]);
        names
            .into_iter()
            .map(|k| {
                let keys = keys_of::<RuleKind>(&[("kind", &k)]);
                (k, keys)
            })
            .collect()
    })
}

/// The keys kind `kind` takes beyond the common ones; `None` for a kind that does not exist.
fn kind_keys(kind: &str) -> Option<&'static [String]> {
    kinds()
        .iter()
        .find(|(k, _)| k == kind)
        .map(|(_, keys)| keys.as_slice())
}

/// What a missing kind key wants, for the message that asks for it.
fn example(field: &str) -> &'static str {
    match field {
        "limit" => " (engineering units)",
        "duration" => ", e.g. \"10m\"",
        "horizon" => ", e.g. \"6h\"",
        "direction" => ": \"rising\" or \"falling\"",
        "when" => ", e.g. \"run_state == 1 && current_l1 < 0.5\"",
        _ => "",
    }
}

/// Reads every `[[rules]]` entry, recording every problem of every entry: keys of another
/// kind, unknown keys, bad values (each at its key) and missing keys of the kind.
pub(super) fn read_rules(
    raw: Option<Vec<config::Value>>,
    issues: &mut Issues,
) -> Vec<(String, RawRule)> {
    let mut out = Vec::new();
    for (i, value) in raw.into_iter().flatten().enumerate() {
        let key = format!("rules[{i}]");
        let before = issues.0.len();
        let kind = value
            .clone()
            .into_table()
            .ok()
            .and_then(|t| t.get("kind")?.clone().into_string().ok());
        let allowed = kind.as_deref().and_then(kind_keys);
        let value = drop_foreign_keys(value, &key, kind.as_deref(), allowed, issues);
        let rule = read_rule(value, &key, issues);
        // serde says "missing"; say what the kind needs.
        for issue in &mut issues.0[before..] {
            let Some(field) = issue
                .key
                .strip_prefix(&key)
                .and_then(|f| f.strip_prefix('.'))
            else {
                continue;
            };
            if !issue.message.starts_with("required but missing") {
                continue;
            }
            if field == "kind" {
                let names: Vec<&str> = kinds().iter().map(|(k, _)| k.as_str()).collect();
                issue.message = format!(
                    "required but missing; give one of {}",
                    describe::list(&names)
                );
            } else if let (Some(kind), Some(allowed)) = (&kind, allowed)
                && allowed.iter().any(|k| k == field)
            {
                issue.message = format!("kind = \"{kind}\" needs `{field}`{}", example(field));
            }
        }
        if let Some(rule) = rule {
            out.push((key, rule));
        }
    }
    out
}

/// Reads one rule: its common keys, then its kind with the rest, each part reporting every
/// problem it has.
fn read_rule(value: config::Value, key: &str, issues: &mut Issues) -> Option<RawRule> {
    let origin = value.origin().map(str::to_owned);
    let Ok(table) = value.clone().into_table() else {
        // Not a table: let the loader say so at the element's key.
        deserialize_at::<RuleCommon>(value, key, issues);
        return None;
    };
    let (common, own): (Vec<_>, Vec<_>) = table
        .into_iter()
        .partition(|(k, _)| common_keys().contains(k));
    let part = |entries: Vec<(String, config::Value)>| {
        config::Value::new(
            origin.as_ref(),
            entries.into_iter().collect::<super::raw::RawTable>(),
        )
    };
    let common = deserialize_at::<RuleCommon>(part(common), key, issues);
    let kind = deserialize_at::<RuleKind>(part(own), key, issues);
    Some(RawRule {
        common: common?,
        kind: kind?,
    })
}

/// Removes from a rule's table, with an issue each, the keys its kind does not take: those of
/// another kind, and those of none. Left to serde, they would read as unknown to the kind
/// alone, without saying which kind they belong to.
fn drop_foreign_keys(
    value: config::Value,
    key: &str,
    kind: Option<&str>,
    allowed: Option<&[String]>,
    issues: &mut Issues,
) -> config::Value {
    let origin = value.origin().map(str::to_owned);
    let Ok(mut table) = value.clone().into_table() else {
        return value;
    };
    let common = common_keys();
    let any_kind = |k: &str| kinds().iter().any(|(_, keys)| keys.iter().any(|x| x == k));
    let written: Vec<String> = table.keys().cloned().collect();
    for k in written {
        if k == "kind" || common.contains(&k) {
            continue;
        }
        let message = match (kind, allowed) {
            (Some(_), Some(allowed)) if allowed.contains(&k) => continue,
            (Some(kind), Some(allowed)) if any_kind(&k) => {
                let takes = if allowed.is_empty() {
                    "none of its own".to_owned()
                } else {
                    describe::list(allowed)
                };
                format!("`{k}` does not apply to kind = \"{kind}\"; it takes {takes}")
            }
            // An unknown kind is reported by serde; its keys are judged against every kind.
            _ if any_kind(&k) && allowed.is_none() => continue,
            _ => {
                let mut valid: Vec<&str> = common.iter().map(String::as_str).collect();
                match allowed {
                    Some(a) => valid.extend(a.iter().map(String::as_str)),
                    None => valid.extend(
                        kinds()
                            .iter()
                            .flat_map(|(_, a)| a.iter().map(String::as_str)),
                    ),
                }
                match describe::closest(&k, &valid) {
                    Some(s) => format!(
                        "unknown key `{k}`; did you mean `{s}`? Valid keys: {}",
                        valid.join(", ")
                    ),
                    None => format!("unknown key `{k}`; valid keys: {}", valid.join(", ")),
                }
            }
        };
        issues.push(format!("{key}.{k}"), message);
        table.shift_remove(&k);
    }
    config::Value::new(origin.as_ref(), table)
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

/// Resolves every `[[rules]]` entry against the resolved `devices`.
pub fn resolve_rules(
    raw: Vec<(String, RawRule)>,
    devices: &[Device],
    issues: &mut Issues,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (key, r) in raw {
        if let Some(first) = seen.get(&r.common.name) {
            issues.push(
                format!("{key}.name"),
                format!(
                    "rule `{}` is already defined at {first}; rule names must be unique",
                    r.common.name
                ),
            );
            continue;
        }
        seen.insert(r.common.name.clone(), key.clone());
        if let Some(rule) = resolve_rule(&key, r, devices, issues) {
            rules.push(rule);
        }
    }
    check_limit_order(&rules, devices, issues);
    rules
}

fn resolve_rule(key: &str, r: RawRule, devices: &[Device], issues: &mut Issues) -> Option<Rule> {
    let before = issues.0.len();
    let RawRule { common: c, kind } = r;
    if let Some(source) = kind.made_elsewhere() {
        issues.push(
            format!("{key}.kind"),
            format!(
                "kind = \"{}\" is not written in [[rules]]: {source}",
                kind.name()
            ),
        );
        return None;
    }
    let name = match Name::new(&c.name) {
        Ok(n) => Some(n),
        Err(e) => {
            issues.push(format!("{key}.name"), e.to_string());
            None
        }
    };
    let device_pattern = c.device.clone().unwrap_or_else(|| "*".into());
    let matched: Vec<usize> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| glob_match(&device_pattern, d.name.as_str()))
        .map(|(i, _)| i)
        .collect();
    if matched.is_empty() {
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        let hint = describe::closest(&device_pattern, &names)
            .map(|cl| format!("; did you mean `{cl}`?"))
            .unwrap_or_else(|| format!("; devices: {}", describe::list(&names)));
        issues.push(
            format!("{key}.device"),
            format!("no device matches `{device_pattern}`{hint}"),
        );
    }
    let model = if let RuleKind::Anomaly(a) = &kind {
        Some(a)
    } else {
        None
    };
    let (regime, points) = (
        model.and_then(|a| a.regime.as_deref()),
        model.and_then(|a| a.points.as_deref()),
    );
    if c.point.is_some() && points.is_some() {
        issues.push(
            format!("{key}.points"),
            "give `point` (one model per point) or `points` (one model over the device's \
             points), not both",
        );
    }
    let shape = match (kind.shape(), &c.point) {
        (Shape::PointOrDevice, None) => None,
        (Shape::PointOrDevice | Shape::Point, _) => Some(Shape::Point),
        (Shape::Device, _) => Some(Shape::Device),
    };
    let device_model = shape.is_none();
    let mut targets = Vec::new();
    match shape {
        None => {
            for &d in &matched {
                let regime = regime_point(key, regime, &devices[d], issues);
                if let Some(points) = device_points(key, points, &devices[d], regime, issues) {
                    targets.push(Target {
                        device: d,
                        point: None,
                        alarm: c.name.clone(),
                        expr: None,
                        points,
                        regime,
                    });
                }
            }
        }
        Some(Shape::Point) => match &c.point {
            None => issues.push(
                format!("{key}.point"),
                format!(
                    "kind = \"{}\" watches a point: add `point = \"name\"` (globs like \"temp_*\" allowed)",
                    kind.name()
                ),
            ),
            Some(p) => {
                let glob = is_glob(p);
                for &d in &matched {
                    let regime = regime_point(key, regime, &devices[d], issues);
                    for (pi, point) in devices[d].points.iter().enumerate() {
                        if glob_match(p, point.name.as_str()) && Some(pi) != regime {
                            targets.push(Target {
                                device: d,
                                point: Some(pi),
                                alarm: if glob {
                                    format!("{}.{}", c.name, point.name)
                                } else {
                                    c.name.clone()
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
                        .map(|cl| format!("; did you mean `{cl}`?"))
                        .unwrap_or_default();
                    issues.push(
                        format!("{key}.point"),
                        format!("no point matches `{p}` on the devices `{device_pattern}` selects{hint}"),
                    );
                }
            }
        },
        Some(Shape::Device | Shape::PointOrDevice) => {
            if c.point.is_some() {
                issues.push(
                    format!("{key}.point"),
                    format!(
                        "kind = \"{}\" watches a whole device; remove `point`",
                        kind.name()
                    ),
                );
            }
            for &d in &matched {
                targets.push(Target {
                    device: d,
                    point: None,
                    alarm: c.name.clone(),
                    expr: None,
                    points: Vec::new(),
                    regime: None,
                });
            }
        }
    }
    for (field, message) in kind.problems() {
        issues.push(format!("{key}.{field}"), message);
    }
    if let Some(a) = model
        && let Some(learn) = a.learn
    {
        for t in &targets {
            let device = &devices[t.device];
            if learn_samples(learn, device.poll_interval) < 10 {
                issues.push(
                    format!("{key}.learn"),
                    format!(
                        "`{}` is fewer than 10 polls of device `{}` (every {}); the model \
                         needs at least 10 samples of memory",
                        humantime::format_duration(learn),
                        device.name,
                        humantime::format_duration(device.poll_interval)
                    ),
                );
                break;
            }
        }
    }
    if let RuleKind::Expression(e) = &kind {
        compile_expression(key, &e.when, &mut targets, devices, issues);
    }
    if issues.0.len() != before {
        return None;
    }
    Some(Rule {
        name: name?,
        key: key.to_owned(),
        severity: c.severity.unwrap_or_default(),
        message: c.message.clone().unwrap_or_else(|| {
            if device_model {
                anomaly::DEVICE_MESSAGE.to_owned()
            } else {
                kind.default_message().to_owned()
            }
        }),
        kind,
        on_delay: c.on_delay.unwrap_or_default(),
        off_delay: c.off_delay.unwrap_or_default(),
        targets,
    })
}

/// Compiles an expression rule's `when` against each target's device.
fn compile_expression(
    key: &str,
    src: &str,
    targets: &mut [Target],
    devices: &[Device],
    issues: &mut Issues,
) {
    for t in targets {
        let device = &devices[t.device];
        let compiled = Expr::compile(src, |n| {
            device.points.iter().position(|p| p.name.as_str() == n)
        });
        match compiled {
            Ok(e) => t.expr = Some(e),
            Err(e) => {
                let names: Vec<&str> = device.points.iter().map(|p| p.name.as_str()).collect();
                let hint = backticked(&e.message)
                    .and_then(|w| describe::closest(w, &names))
                    .map(|cl| format!("; did you mean `{cl}`?"))
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

/// The index of `regime`'s run-state point on `device`, if the rule names one.
fn regime_point(
    key: &str,
    regime: Option<&str>,
    device: &Device,
    issues: &mut Issues,
) -> Option<usize> {
    let name = regime?;
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
    points: Option<&[String]>,
    device: &Device,
    regime: Option<usize>,
    issues: &mut Issues,
) -> Option<Vec<usize>> {
    use crate::decode::DataType;
    let mut chosen = Vec::new();
    match points {
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

fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// A limit rule on one point: its rank (low-low 0 … high-high 3), limit and where it was
/// written.
type LimitAt<'a> = (u8, f64, &'a str);

/// The rank and limit of a limit rule (low-low 0, low 1, high 2, high-high 3).
fn limit_rank(kind: &RuleKind) -> Option<(u8, f64)> {
    match kind {
        RuleKind::LowLow(l) => Some((0, l.limit)),
        RuleKind::Low(l) => Some((1, l.limit)),
        RuleKind::High(l) => Some((2, l.limit)),
        RuleKind::HighHigh(l) => Some((3, l.limit)),
        RuleKind::Rate(_)
        | RuleKind::Stuck(_)
        | RuleKind::CommLoss(_)
        | RuleKind::Anomaly(_)
        | RuleKind::Trend(_)
        | RuleKind::Expression(_)
        | RuleKind::ServiceHours(_)
        | RuleKind::ServiceStarts(_)
        | RuleKind::Quota(_)
        | RuleKind::Demand(_)
        | RuleKind::Baseline(_) => None,
    }
}

/// The kind name of a limit rank.
const RANKS: [&str; 4] = ["low_low", "low", "high", "high_high"];

/// Limits on one point must nest: low_low ≤ low < high ≤ high_high.
fn check_limit_order(rules: &[Rule], devices: &[Device], issues: &mut Issues) {
    // (device, point) → (rank, limit, key) of every limit rule on it.
    let mut by_point: HashMap<(usize, usize), Vec<LimitAt<'_>>> = HashMap::new();
    for rule in rules {
        if let Some((rank, limit)) = limit_rank(&rule.kind) {
            for t in &rule.targets {
                if let Some(p) = t.point {
                    by_point
                        .entry((t.device, p))
                        .or_default()
                        .push((rank, limit, &rule.key));
                }
            }
        }
    }
    let mut reported = std::collections::HashSet::new();
    let mut points: Vec<_> = by_point.into_iter().collect();
    points.sort_by_key(|(k, _)| *k);
    for ((d, p), limits) in points {
        for a in &limits {
            for b in &limits {
                let inverted = a.0 < b.0 && (a.1 > b.1 || (a.0 <= 1 && b.0 >= 2 && a.1 >= b.1));
                if inverted && reported.insert((a.2, b.2)) {
                    issues.push(
                        format!("{}.limit", b.2),
                        format!(
                            "inverted limits on {}/{}: {} limit {} is not above the {} limit {} at {}",
                            devices[d].name,
                            devices[d].points[p].name,
                            RANKS[usize::from(b.0)],
                            b.1,
                            RANKS[usize::from(a.0)],
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

    const FLEET: &str = "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
                         [[devices]]\nname = \"a\"\nlink = \"l\"\n[devices.points.t]\naddress = 0\n";

    fn load(rules: &str, env: &[(&str, &str)]) -> Result<super::super::plan::Plan, String> {
        let env = super::super::EnvOverrides::Map(
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        super::super::load_str(
            "t",
            &format!("{FLEET}{rules}"),
            &env,
            std::path::Path::new("."),
            None,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn an_environment_variable_sets_a_kind_key_as_a_number_or_a_duration() {
        let rule = "[[rules]]\nname = \"hot\"\nkind = \"high\"\npoint = \"t\"\nlimit = 1\n\
                    [[rules]]\nname = \"off\"\nkind = \"comm_loss\"\n";
        let plan = load(
            rule,
            &[
                ("PLANTWATCH__RULES__HOT__LIMIT", "95.5"),
                ("PLANTWATCH__RULES__OFF__DURATION", "5m"),
            ],
        )
        .unwrap();
        let RuleKind::High(l) = &plan.rules[0].kind else {
            panic!("{:?}", plan.rules[0].kind);
        };
        assert!((l.limit - 95.5).abs() < 1e-12, "{l:?}");
        assert_eq!(plan.rules[1].kind.hold(), Duration::from_secs(300));
        let err = load(rule, &[("PLANTWATCH__RULES__HOT__LIMIT", "hot")]).unwrap_err();
        assert!(err.contains("rules[0].limit"), "{err}");
    }

    #[test]
    fn every_kind_of_the_detect_enum_is_listed_with_its_keys() {
        let names: Vec<&str> = kinds().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "high_high",
                "high",
                "low",
                "low_low",
                "rate",
                "stuck",
                "comm_loss",
                "anomaly",
                "trend",
                "expression",
                "service_hours",
                "service_starts",
                "quota",
                "demand",
                "baseline"
            ]
        );
        assert_eq!(kind_keys("high").unwrap(), ["limit", "deadband"]);
        assert!(kind_keys("quota").unwrap().is_empty());
        assert!(common_keys().iter().any(|k| k == "on_delay"));
    }

    #[test]
    fn a_kind_made_elsewhere_is_refused_with_its_keys_named() {
        let err = load(
            "[[rules]]\nname = \"q\"\nkind = \"quota\"\nlimit = 5\n",
            &[],
        )
        .unwrap_err();
        assert!(err.contains("rules[0].limit: `limit` does not apply to kind = \"quota\"; it takes none of its own"), "{err}");
        assert!(
            err.contains("rules[0].kind: kind = \"quota\" is not written in [[rules]]"),
            "{err}"
        );
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
