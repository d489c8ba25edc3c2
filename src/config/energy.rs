//! `[energy]`, `[[meters]]` and `[[production]]`: which points are cumulative energy or
//! production counters, how they become ledger intervals, the time-of-use calendar, and the
//! standard-coal coefficients (docs/design.md §6).

use std::time::Duration;

use serde::Deserialize;

use super::describe;
use super::issue::{ConfigIssue, Issues};
use super::plan::Device;
use super::rules::parse_duration;
use crate::decode::DataType;
use crate::export::spec::ReportSpec;
use crate::process::coal::{Coefficients, EnergyKind};
use crate::process::counter::{GapPolicy, MeterParams};
use crate::process::spec::{CounterPoint, LedgerSpec};
pub use crate::process::spec::{Counts, Meter};
use crate::process::tou::{Calendar, CalendarSpec};

/// `[energy]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnergy {
    /// Ledger interval, e.g. `"15m"`; must divide a day.
    #[serde(default)]
    pub interval: Option<String>,
    /// `interpolate` (default) or `missing`.
    #[serde(default)]
    pub gap_policy: Option<GapPolicy>,
    /// A built-in calendar (`"hubei-2021"`, the default) or `"custom"` with `[energy.calendar]`.
    #[serde(default)]
    pub tariff: Option<String>,
    /// The custom calendar.
    #[serde(default)]
    pub calendar: Option<CalendarSpec>,
    /// kgce per unit, by energy kind, overriding GB/T 2589.
    #[serde(default)]
    pub coefficients: Option<std::collections::BTreeMap<String, f64>>,
    /// Electricity at an equal-value coefficient (kgce/kWh) instead of the calorific 0.1229.
    #[serde(default)]
    pub electricity_equal_value: Option<f64>,
    /// Where the coefficients come from, printed in reports.
    #[serde(default)]
    pub coefficients_source: Option<String>,
    /// Demand window (需量周期), default `"15m"`.
    #[serde(default)]
    pub demand_window: Option<String>,
    /// Slide of a sliding demand window (滑差), e.g. `"1m"`; default the window (fixed blocks).
    #[serde(default)]
    pub demand_slide: Option<String>,
}

/// `[[meters]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeter {
    /// The meter's name: `{prefix}/energy/{name}` and report rows.
    pub name: String,
    /// The device that has the counter.
    pub device: String,
    /// The cumulative counter point.
    pub point: String,
    /// What it counts.
    pub kind: EnergyKind,
    /// Applied to every delta (a CT/PT ratio the point does not already include).
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// The largest value the register shows before it rolls over; default from the point's
    /// type and scale. For a float point, the value at which it shows 0 again (no default).
    #[serde(default)]
    pub register_max: Option<f64>,
    /// The meter's rated maximum, in units per hour: more is a glitch, not consumption.
    #[serde(default)]
    pub max_rate_per_hour: Option<f64>,
    /// Roll-up groups (line, workshop, site).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Contracted maximum demand, kW (electricity): warn before a demand block exceeds it.
    #[serde(default)]
    pub contract_kw: Option<f64>,
    /// Warn when the running block is projected above this share of the contract (1.05: the
    /// Hubei line above which the excess is billed double).
    #[serde(default)]
    pub demand_warn_at: Option<f64>,
}

/// `[[quotas]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    /// The quota's name: its alarm's name.
    pub name: String,
    /// A meter's name or a group's.
    pub target: String,
    /// Which energy counts (for groups with several kinds). Default: the meter's, or electricity.
    #[serde(default)]
    pub kind: Option<EnergyKind>,
    /// `shift`, `day` or `month`.
    pub period: QuotaPeriodName,
    /// The quota, in the kind's unit.
    pub limit: f64,
    /// Shift start times, `"HH:MM"` (period = "shift").
    #[serde(default)]
    pub shifts: Option<Vec<String>>,
    /// No projection before this share of the period has passed. Default 0.1.
    #[serde(default)]
    pub min_elapsed: Option<f64>,
    /// Severity of its alarms.
    #[serde(default)]
    pub severity: Option<super::rules::Severity>,
}

/// Quota periods, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriodName {
    /// Between shift starts.
    Shift,
    /// A local day.
    Day,
    /// A local month.
    Month,
}

pub use crate::detect::spec::{Baseline, Quota, Regression};

/// How a baseline predicts normal use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineMethod {
    /// Each hour against the median of the same hour of the week over recent weeks.
    #[default]
    HourOfWeek,
    /// Each day against a least-squares line of daily use on daily output over recent days.
    Regression,
}

/// `[[baselines]]` as written: deviation from the same hour of the week over recent weeks,
/// or from a regression of daily use on production.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBaseline {
    /// The alarm's name.
    pub name: String,
    /// A meter's name or a group.
    pub target: String,
    /// Which energy counts; default the meter's kind, or electricity.
    #[serde(default)]
    pub kind: Option<EnergyKind>,
    /// `hour_of_week` (default) or `regression`.
    #[serde(default)]
    pub method: Option<BaselineMethod>,
    /// The `[[production]]` counter a regression is on.
    #[serde(default)]
    pub production: Option<String>,
    /// Days of history a regression is fitted on. Default 28.
    #[serde(default)]
    pub days: Option<usize>,
    /// Days needed before a regression judges. Default 10.
    #[serde(default)]
    pub min_days: Option<usize>,
    /// Weeks of history the median is taken over. Default 4.
    #[serde(default)]
    pub weeks: Option<usize>,
    /// Weeks needed before it judges. Default 2.
    #[serde(default)]
    pub min_weeks: Option<usize>,
    /// Alarm when an hour uses more than this percent above its baseline. Default 20.
    #[serde(default)]
    pub over_percent: Option<f64>,
    /// Severity.
    #[serde(default)]
    pub severity: Option<super::rules::Severity>,
}

/// `[[production]]` as written: a counter of product (pieces, tonnes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProduction {
    /// The counter's name.
    pub name: String,
    /// The device that has it.
    pub device: String,
    /// The cumulative counter point.
    pub point: String,
    /// Unit of product, e.g. `"t"` or `"pcs"`.
    pub unit: String,
    /// Applied to every delta.
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// As for a meter: the largest value the register shows (for a float, where it shows 0
    /// again); default from the point's type and scale.
    #[serde(default)]
    pub register_max: Option<f64>,
    /// Groups whose energy this output is the product of.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[energy]` and the counters, resolved.
#[derive(Debug, Clone)]
pub struct Energy {
    /// Energy meters and production counters, in file order.
    pub meters: Vec<Meter>,
    /// Time-of-use calendar.
    pub calendar: Calendar,
    /// Its name, for reports.
    pub tariff: String,
    /// Standard-coal coefficients.
    pub coefficients: Coefficients,
    /// Ledger interval.
    pub interval: Duration,
    /// Quotas per meter or group.
    pub quotas: Vec<Quota>,
    /// Hour-of-week baselines per meter or group.
    pub baselines: Vec<Baseline>,
    /// How demand is averaged for contract warnings.
    pub demand: crate::process::demand::DemandParams,
    /// Benchmark values for energy per unit of product, for reports.
    pub benchmarks: Vec<super::benchmarks::Benchmark>,
    /// Energy-performance-contract baselines, for reports.
    pub savings: Vec<super::benchmarks::Savings>,
    /// What `check` should warn about: float counters without `register_max`.
    pub warnings: Vec<ConfigIssue>,
}

impl Default for Energy {
    fn default() -> Self {
        Self {
            meters: Vec::new(),
            calendar: Calendar::hubei_2021(),
            tariff: "hubei-2021".into(),
            coefficients: Coefficients::gb_t_2589(),
            interval: Duration::from_secs(900),
            quotas: Vec::new(),
            baselines: Vec::new(),
            demand: crate::process::demand::DemandParams::default(),
            benchmarks: Vec::new(),
            savings: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Energy {
    /// The report's spec: meters, tariff, coefficients, interval, benchmarks and savings.
    pub fn report_spec(&self) -> ReportSpec {
        ReportSpec {
            meters: self.meters.clone(),
            tariff: self.tariff.clone(),
            coefficients: self.coefficients.clone(),
            interval: self.interval,
            benchmarks: self.benchmarks.clone(),
            savings: self.savings.clone(),
        }
    }

    /// The ledger's spec: these meters, reading from `devices` (the plan's, which the meters
    /// index), with days and periods in `timezone`.
    pub fn ledger_spec(&self, devices: &[Device], timezone: chrono_tz::Tz) -> LedgerSpec {
        let points = self
            .meters
            .iter()
            .map(|m| {
                let d = &devices[m.device];
                CounterPoint {
                    device: d.name.clone(),
                    point: d.points[m.point].name.clone(),
                }
            })
            .collect();
        LedgerSpec {
            meters: self.meters.clone(),
            points,
            calendar: self.calendar.clone(),
            coefficients: self.coefficients.clone(),
            timezone,
        }
    }
}

/// The range a counter point's register shows, `(min, max)` in engineering units, from its type,
/// scale and offset; `None` for floats, whose width only `register_max` can tell.
fn register_range(device: &Device, point: usize) -> Option<(f64, f64)> {
    let codec = &device.points.get(point)?.codec;
    let (low, high) = match codec.data_type {
        DataType::U16 => (0.0, 65_535.0),
        DataType::Bcd16 => (0.0, 9_999.0),
        DataType::U32 => (0.0, 4_294_967_295.0),
        DataType::Bcd32 => (0.0, 99_999_999.0),
        DataType::U64 => (0.0, 18_446_744_073_709_551_615.0),
        DataType::I16 => (-32_768.0, 32_767.0),
        DataType::I32 => (-2_147_483_648.0, 2_147_483_647.0),
        DataType::I64 => (-9_223_372_036_854_775_808.0, 9_223_372_036_854_775_807.0),
        _ => return None,
    };
    let (a, b) = (
        low * codec.scale + codec.offset,
        high * codec.scale + codec.offset,
    );
    Some((a.min(b), a.max(b)))
}

/// Whether a counter point is a float, whose register width the config must give.
fn is_float(device: &Device, point: usize) -> bool {
    device
        .points
        .get(point)
        .is_some_and(|p| matches!(p.codec.data_type, DataType::F32 | DataType::F64))
}

fn find_point(
    key: &str,
    device: &str,
    point: &str,
    devices: &[Device],
    issues: &mut Issues,
) -> Option<(usize, usize)> {
    let Some(d) = devices.iter().position(|d| d.name.as_str() == device) else {
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        let hint = describe::closest(device, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        issues.push(
            format!("{key}.device"),
            format!("no device `{device}`{hint}"),
        );
        return None;
    };
    let Some(p) = devices[d]
        .points
        .iter()
        .position(|p| p.name.as_str() == point)
    else {
        let names: Vec<&str> = devices[d].points.iter().map(|p| p.name.as_str()).collect();
        let hint = describe::closest(point, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        issues.push(
            format!("{key}.point"),
            format!("device `{device}` has no point `{point}`{hint}"),
        );
        return None;
    };
    Some((d, p))
}

/// Everything the counters need beside their own keys.
struct Common {
    interval_ms: i64,
    gap_policy: GapPolicy,
}

#[allow(clippy::too_many_arguments)]
fn resolve_counter(
    key: &str,
    (name, device, point): (&str, &str, &str),
    counts: Counts,
    (multiplier, register, max_rate): (Option<f64>, Option<f64>, Option<f64>),
    groups: &[String],
    common: &Common,
    devices: &[Device],
    (issues, warnings): (&mut Issues, &mut Vec<ConfigIssue>),
) -> Option<Meter> {
    let (d, p) = find_point(key, device, point, devices, issues)?;
    let codec = &devices[d].points[p].codec;
    let float = is_float(&devices[d], p);
    // A float has no counts: its register_max is where it shows 0 again, and a wrap adds
    // nothing. An integer's width comes from its type unless config says otherwise.
    let (register_min, register_max, resolution) = match (register, register_range(&devices[d], p))
    {
        (Some(max), _) if float => (0.0, Some(max), 0.0),
        (Some(max), _) => (codec.offset, Some(max), codec.scale.abs()),
        (None, Some((min, max))) => (min, Some(max), codec.scale.abs()),
        (None, None) => (0.0, None, 0.0),
    };
    if float && register.is_none() {
        warnings.push(ConfigIssue::new(
            format!("{key}.register_max"),
            format!(
                "`{device}.{point}` is a float counter without register_max: a drop counts as \
                 a rollover only where plausible (from the top to the bottom tenth of a power of \
                 ten, within max_rate_per_hour or the fastest pace seen), else as a reset; give \
                 the value at which the meter shows 0 again, e.g. 100000 for one that shows \
                 99999.99 and then 0.00"
            ),
        ));
    }
    let params = MeterParams {
        interval_ms: common.interval_ms,
        multiplier: multiplier.unwrap_or(1.0),
        register_max,
        register_min,
        resolution,
        max_rate_per_hour: max_rate,
        gap_policy: common.gap_policy,
        ..MeterParams::default()
    };
    if let Err(e) = params.validate() {
        let field = match &e {
            crate::process::counter::CounterError::InvalidParam { field, .. } => *field,
            _ => "multiplier",
        };
        issues.push(format!("{key}.{field}"), e.to_string());
        return None;
    }
    for (i, g) in groups.iter().enumerate() {
        if crate::model::Name::new(g).is_err() {
            issues.push(
                format!("{key}.groups[{i}]"),
                format!("`{g}` is not a valid group name: use 1 to 64 of a-z, 0-9, `_` and `-`"),
            );
        }
    }
    if crate::model::Name::new(name).is_err() {
        issues.push(
            format!("{key}.name"),
            format!("`{name}` is not a valid name: use 1 to 64 of a-z, 0-9, `_` and `-`"),
        );
        return None;
    }
    Some(Meter {
        name: name.to_owned(),
        device: d,
        point: p,
        counts,
        params,
        groups: groups.to_vec(),
        demand: None,
    })
}

/// The meters of `kind` that are `target` or belong to it; an issue at `{key}.target` if none.
pub(super) fn counted_meters(
    key: &str,
    target: &str,
    kind: EnergyKind,
    meters: &[Meter],
    issues: &mut Issues,
) -> Vec<usize> {
    let counted: Vec<usize> = meters
        .iter()
        .enumerate()
        .filter(|(_, m)| m.name == target || m.groups.iter().any(|g| g == target))
        .filter(|(_, m)| m.counts == Counts::Energy(kind))
        .map(|(i, _)| i)
        .collect();
    if counted.is_empty() {
        let mut names: Vec<&str> = meters.iter().map(|m| m.name.as_str()).collect();
        names.extend(
            meters
                .iter()
                .flat_map(|m| m.groups.iter().map(String::as_str)),
        );
        let hint = describe::closest(target, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        issues.push(
            format!("{key}.target"),
            format!(
                "no {} meter is or belongs to `{target}`{hint}",
                kind.as_str()
            ),
        );
    }
    counted
}

/// The kind a quota or baseline counts: as written, else the target meter's, else electricity.
pub(super) fn target_kind(
    written: Option<EnergyKind>,
    target: &str,
    meters: &[Meter],
) -> EnergyKind {
    written.unwrap_or(
        match meters.iter().find(|m| m.name == target).map(|m| &m.counts) {
            Some(Counts::Energy(k)) => *k,
            _ => EnergyKind::Electricity,
        },
    )
}

/// Resolves `[[baselines]]`.
fn resolve_baselines(
    raw: Vec<(String, RawBaseline)>,
    meters: &[Meter],
    issues: &mut Issues,
) -> Vec<Baseline> {
    let mut out = Vec::new();
    for (key, b) in raw {
        let before = issues.0.len();
        let name = crate::model::Name::new(&b.name)
            .map_err(|e| issues.push(format!("{key}.name"), e.to_string()))
            .ok();
        let kind = target_kind(b.kind, &b.target, meters);
        let counted = counted_meters(&key, &b.target, kind, meters, issues);
        let method = b.method.unwrap_or_default();
        let wrong_method = |field: &str, issues: &mut Issues| {
            issues.push(
                format!("{key}.{field}"),
                format!(
                    "`{field}` is for method = \"{}\" only",
                    match method {
                        BaselineMethod::HourOfWeek => "regression",
                        BaselineMethod::Regression => "hour_of_week",
                    }
                ),
            );
        };
        let regression = match method {
            BaselineMethod::HourOfWeek => {
                for (field, given) in [
                    ("production", b.production.is_some()),
                    ("days", b.days.is_some()),
                    ("min_days", b.min_days.is_some()),
                ] {
                    if given {
                        wrong_method(field, issues);
                    }
                }
                None
            }
            BaselineMethod::Regression => {
                for (field, given) in [
                    ("weeks", b.weeks.is_some()),
                    ("min_weeks", b.min_weeks.is_some()),
                ] {
                    if given {
                        wrong_method(field, issues);
                    }
                }
                let days = b.days.unwrap_or(28);
                let min_days = b.min_days.unwrap_or(10);
                if !(3..=366).contains(&days) {
                    issues.push(format!("{key}.days"), "must be 3 to 366");
                }
                if min_days < 3 || min_days > days {
                    issues.push(
                        format!("{key}.min_days"),
                        "must be at least 3 and at most `days`",
                    );
                }
                match &b.production {
                    None => {
                        issues.push(
                            format!("{key}.production"),
                            "method = \"regression\" needs the [[production]] counter to regress on",
                        );
                        None
                    }
                    Some(p) => super::benchmarks::production_index(
                        &format!("{key}.production"),
                        p,
                        meters,
                        issues,
                    )
                    .map(|production| Regression {
                        production,
                        production_name: p.clone(),
                        days,
                        min_days,
                    }),
                }
            }
        };
        let weeks = b.weeks.unwrap_or(4);
        let min_weeks = b.min_weeks.unwrap_or(2);
        if !(1..=52).contains(&weeks) {
            issues.push(format!("{key}.weeks"), "must be 1 to 52");
        }
        if min_weeks == 0 || min_weeks > weeks {
            issues.push(
                format!("{key}.min_weeks"),
                "must be at least 1 and at most `weeks`",
            );
        }
        let over = b.over_percent.unwrap_or(20.0);
        if !(over.is_finite() && over > 0.0) {
            issues.push(format!("{key}.over_percent"), "must be above 0");
        }
        if issues.0.len() != before {
            continue;
        }
        if let Some(name) = name {
            out.push(Baseline {
                name,
                target: b.target,
                unit: kind.unit().to_owned(),
                weeks,
                min_weeks,
                over_percent: over,
                severity: b.severity.unwrap_or(super::rules::Severity::Medium),
                meters: counted,
                regression,
            });
        }
    }
    out
}

/// Resolves `[[quotas]]` against the resolved meters and their groups.
fn resolve_quotas(
    raw: Vec<(String, RawQuota)>,
    meters: &[Meter],
    issues: &mut Issues,
) -> Vec<Quota> {
    use crate::detect::quota::QuotaPeriod;
    let mut out: Vec<Quota> = Vec::new();
    for (key, q) in raw {
        let before = issues.0.len();
        let name = crate::model::Name::new(&q.name)
            .map_err(|e| issues.push(format!("{key}.name"), e.to_string()))
            .ok();
        if out.iter().any(|o| o.name.as_str() == q.name) {
            issues.push(
                format!("{key}.name"),
                format!("quota `{}` is defined twice", q.name),
            );
        }
        let kind = target_kind(q.kind, &q.target, meters);
        let counted = counted_meters(&key, &q.target, kind, meters, issues);
        if !(q.limit.is_finite() && q.limit > 0.0) {
            issues.push(format!("{key}.limit"), "must be above 0");
        }
        let min_elapsed = q.min_elapsed.unwrap_or(0.1);
        if !(0.0..1.0).contains(&min_elapsed) {
            issues.push(
                format!("{key}.min_elapsed"),
                "must be from 0 up to (not including) 1",
            );
        }
        let period = match (q.period, &q.shifts) {
            (QuotaPeriodName::Day, None) => QuotaPeriod::Day,
            (QuotaPeriodName::Month, None) => QuotaPeriod::Month,
            (QuotaPeriodName::Shift, Some(list)) if !list.is_empty() => {
                let mut starts = Vec::new();
                for (i, t) in list.iter().enumerate() {
                    match chrono::NaiveTime::parse_from_str(t, "%H:%M") {
                        Ok(time) => starts.push(
                            chrono::Timelike::hour(&time) * 60 + chrono::Timelike::minute(&time),
                        ),
                        Err(_) => issues.push(
                            format!("{key}.shifts[{i}]"),
                            format!("`{t}` is not a time; write \"HH:MM\", e.g. \"08:00\""),
                        ),
                    }
                }
                starts.sort_unstable();
                starts.dedup();
                QuotaPeriod::Shift(starts)
            }
            (QuotaPeriodName::Shift, _) => {
                issues.push(
                    format!("{key}.shifts"),
                    "period = \"shift\" needs `shifts`, e.g. [\"08:00\", \"16:00\", \"00:00\"]",
                );
                QuotaPeriod::Day
            }
            (_, Some(_)) => {
                issues.push(
                    format!("{key}.shifts"),
                    "only period = \"shift\" takes `shifts`",
                );
                QuotaPeriod::Day
            }
        };
        if issues.0.len() != before {
            continue;
        }
        if let Some(name) = name {
            out.push(Quota {
                name,
                target: q.target.clone(),
                kind,
                period,
                limit: q.limit,
                min_elapsed,
                severity: q.severity.unwrap_or(super::rules::Severity::High),
                meters: counted,
            });
        }
    }
    out
}

/// `[energy] demand_window` and `demand_slide` as demand parameters (fixed 15-minute blocks
/// by default).
fn resolve_demand(raw: &RawEnergy, issues: &mut Issues) -> crate::process::demand::DemandParams {
    use crate::process::demand::DemandParams;
    let ms = |key: &str, text: &Option<String>, issues: &mut Issues| -> Option<Option<i64>> {
        let Some(text) = text else {
            return Some(None);
        };
        match parse_duration(text) {
            Ok(d) => Some(Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
            Err(e) => {
                issues.push(key, e);
                None
            }
        }
    };
    let window = ms("energy.demand_window", &raw.demand_window, issues);
    let slide = ms("energy.demand_slide", &raw.demand_slide, issues);
    let (Some(window), Some(slide)) = (window, slide) else {
        return DemandParams::default();
    };
    let window = window.unwrap_or(DemandParams::default().window_ms);
    let params = match slide {
        Some(step) if step != window => DemandParams::sliding(window, step),
        _ => DemandParams::fixed(window),
    };
    match params.validate() {
        Ok(()) => params,
        Err(crate::process::demand::DemandError::InvalidParam { field, message }) => {
            let key = if field == "window_ms" {
                "energy.demand_window"
            } else {
                "energy.demand_slide"
            };
            issues.push(key, message);
            DemandParams::default()
        }
    }
}

/// Resolves `[energy]`, `[[meters]]`, `[[production]]` and `[[quotas]]`.
pub fn resolve_energy(
    raw: Option<RawEnergy>,
    meters: Vec<(String, RawMeter)>,
    production: Vec<(String, RawProduction)>,
    quotas: Vec<(String, RawQuota)>,
    baselines: Vec<(String, RawBaseline)>,
    devices: &[Device],
    issues: &mut Issues,
) -> Energy {
    let raw = raw.unwrap_or_default();
    let mut energy = Energy {
        demand: resolve_demand(&raw, issues),
        ..Energy::default()
    };
    if let Some(text) = &raw.interval {
        match parse_duration(text) {
            // Seconds-long intervals are for commissioning and tests; reports want 15m.
            Ok(d)
                if d >= Duration::from_secs(1)
                    && d.subsec_millis() == 0
                    && 86_400 % d.as_secs().max(1) == 0 =>
            {
                energy.interval = d;
            }
            Ok(_) => issues.push(
                "energy.interval",
                format!("`{text}` must be whole seconds that divide a day, e.g. \"15m\", \"1h\""),
            ),
            Err(m) => issues.push("energy.interval", m),
        }
    }
    match (raw.tariff.as_deref(), &raw.calendar) {
        (None | Some("hubei-2021"), None) => {}
        (Some("custom"), Some(spec)) => match Calendar::from_spec(spec) {
            Ok(c) => {
                energy.calendar = c;
                energy.tariff = "custom".into();
            }
            Err(list) => {
                for i in list {
                    issues.push(format!("energy.calendar.{}", i.path), i.message);
                }
            }
        },
        (Some("custom"), None) => issues.push(
            "energy.calendar",
            "tariff = \"custom\" needs an [energy.calendar] with 12 [[energy.calendar.months]]",
        ),
        (_, Some(_)) => issues.push(
            "energy.tariff",
            "an [energy.calendar] is given: set tariff = \"custom\" to use it",
        ),
        (Some(other), None) => issues.push(
            "energy.tariff",
            format!("unknown tariff `{other}`; built in: \"hubei-2021\", or \"custom\" with [energy.calendar]"),
        ),
    }
    for (name, value) in raw.coefficients.iter().flatten() {
        let kind: Result<EnergyKind, _> =
            serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(name));
        match kind {
            Ok(k) => {
                if let Err(e) = energy.coefficients.set(k, *value) {
                    issues.push(format!("energy.coefficients.{name}"), e.to_string());
                }
            }
            Err(_) => issues.push(
                format!("energy.coefficients.{name}"),
                "not an energy kind; use electricity, natural_gas, steam, water, compressed_air, heat, raw_coal, diesel, gasoline, …",
            ),
        }
    }
    if let Some(v) = raw.electricity_equal_value
        && let Err(e) = energy.coefficients.set_electricity_equal_value(v)
    {
        issues.push("energy.electricity_equal_value", e.to_string());
    }
    if let Some(s) = &raw.coefficients_source {
        energy.coefficients.set_source(s.clone());
    }
    let common = Common {
        interval_ms: i64::try_from(energy.interval.as_millis()).unwrap_or(900_000),
        gap_policy: raw.gap_policy.unwrap_or_default(),
    };
    let mut names: Vec<String> = Vec::new();
    let mut unique = |key: &str, name: &str, issues: &mut Issues| {
        if names.iter().any(|n| n == name) {
            issues.push(
                format!("{key}.name"),
                format!("`{name}` is already a meter or production counter; names must be unique"),
            );
            false
        } else {
            names.push(name.to_owned());
            true
        }
    };
    for (key, m) in meters {
        if !unique(&key, &m.name, issues) {
            continue;
        }
        let demand = match (m.contract_kw, m.demand_warn_at) {
            (None, None) => None,
            (None, Some(_)) => {
                issues.push(format!("{key}.demand_warn_at"), "needs `contract_kw`");
                None
            }
            (Some(c), w) => {
                let w = w.unwrap_or(crate::process::demand::HUBEI_TOLERANCE);
                if m.kind != EnergyKind::Electricity {
                    issues.push(
                        format!("{key}.contract_kw"),
                        "demand applies to electricity meters",
                    );
                } else if !(c.is_finite() && c > 0.0) {
                    issues.push(format!("{key}.contract_kw"), "must be above 0 (kW)");
                } else if !(w.is_finite() && w > 0.0) {
                    issues.push(
                        format!("{key}.demand_warn_at"),
                        "must be above 0, e.g. 1.05",
                    );
                }
                Some((c, w))
            }
        };
        energy.meters.extend(
            resolve_counter(
                &key,
                (&m.name, &m.device, &m.point),
                Counts::Energy(m.kind),
                (m.multiplier, m.register_max, m.max_rate_per_hour),
                &m.groups,
                &common,
                devices,
                (issues, &mut energy.warnings),
            )
            .map(|mut meter| {
                meter.demand = demand;
                meter
            }),
        );
    }
    for (key, p) in production {
        if !unique(&key, &p.name, issues) {
            continue;
        }
        if p.unit.trim().is_empty() {
            issues.push(
                format!("{key}.unit"),
                "give the unit of product, e.g. \"t\"",
            );
            continue;
        }
        energy.meters.extend(resolve_counter(
            &key,
            (&p.name, &p.device, &p.point),
            Counts::Product(p.unit.clone()),
            (p.multiplier, p.register_max, None),
            &p.groups,
            &common,
            devices,
            (issues, &mut energy.warnings),
        ));
    }
    energy.quotas = resolve_quotas(quotas, &energy.meters, issues);
    energy.baselines = resolve_baselines(baselines, &energy.meters, issues);
    energy
}

#[cfg(test)]
mod tests {
    use crate::config::{EnvOverrides, Plan, load_str};

    /// A plan with one meter on point `e` of the given type and extra meter keys.
    fn plan(point: &str, meter: &str) -> Plan {
        let text = format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\n\
             host = \"127.0.0.1\"\n[[devices]]\nname = \"m\"\nlink = \"l\"\n\
             [devices.points.e]\naddress = 0\n{point}\n\
             [[meters]]\nname = \"main\"\ndevice = \"m\"\npoint = \"e\"\nkind = \"electricity\"\n{meter}\n"
        );
        load_str(
            "t",
            &text,
            &EnvOverrides::Off,
            std::path::Path::new("."),
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_float_counter_without_register_max_is_warned_about_and_gets_no_width() {
        let p = plan("type = \"f32\"", "");
        let keys: Vec<&str> = p.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["meters[0].register_max"], "{:?}", p.warnings);
        assert!(p.warnings[0].message.contains("`m.e` is a float counter"));
        let params = &p.energy.meters[0].params;
        assert_eq!((params.register_max, params.resolution), (None, 0.0));
    }

    #[test]
    fn a_float_counter_with_register_max_wraps_there_adding_no_count() {
        let p = plan("type = \"f32\"", "register_max = 100000.0");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let params = &p.energy.meters[0].params;
        assert_eq!(params.register_max, Some(100_000.0));
        assert_eq!((params.register_min, params.resolution), (0.0, 0.0));
    }

    #[test]
    fn an_integer_counter_takes_its_width_from_its_type_and_scale() {
        for (ty, min, max) in [
            ("u16", 0.0, 655.35),
            ("u32", 0.0, 42_949_672.95),
            ("bcd16", 0.0, 99.99),
            ("bcd32", 0.0, 999_999.99),
            ("i32", -21_474_836.48, 21_474_836.47),
        ] {
            let p = plan(&format!("type = \"{ty}\"\nscale = 0.01"), "");
            assert!(p.warnings.is_empty(), "{ty}: {:?}", p.warnings);
            let params = &p.energy.meters[0].params;
            let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
            assert!(near(params.register_max.unwrap(), max), "{ty}: {params:?}");
            assert!(near(params.register_min, min), "{ty}: {params:?}");
            assert!(near(params.resolution, 0.01), "{ty}: {params:?}");
        }
    }
}
