//! `[energy_platform]` and `[[energy_platform.items]]`: who the enterprise is at the national
//! key energy-consuming units online monitoring platform, and which ledger meters it uploads
//! under which registered data-item codes (docs/design.md §4, docs/platform.md §1.3).
//!
//! The values of `data_code`, `scope` and `input_type` are registered with the platform
//! beforehand (`dataCollectConfigure`); their layout is not public (docs/platform.md §1.4), so they
//! are opaque text here, checked only for shape.

pub use crate::sink::platform_queue::Https;
use chrono_tz::Tz;
use serde::Deserialize;

use super::describe;
use super::energy::{Counts, Energy};
use super::issue::Issues;
use crate::platform::decimal::MAX_DECIMALS;
use crate::platform::record::StatType;
pub use crate::platform::spec::{Item, Spec};
use crate::platform::uscc::Uscc;

/// Default share of estimated intervals a valid day, month or year may have (mirrors the
/// platform's ≥ 90 % completeness rule, docs/platform.md §1.3 \[S\]).
pub const DEFAULT_MAX_ESTIMATED_SHARE: f64 = 0.1;

/// Default decimal places of `dataValue` (the clients send `"0.00"` for nothing measured).
pub const DEFAULT_DECIMALS: u8 = 2;

/// Ledger intervals the platform takes real-time values at: 15 min, relaxable to 30 min or
/// 1 h (docs/platform.md §1.3 \[S\]).
const REALTIME_INTERVALS_S: [u64; 3] = [900, 1800, 3600];

/// The `inputType` of manual filing (手工填报), which automatic uploads never carry \[C\].
const MANUAL_INPUT_TYPE: &str = "5";

/// `[energy_platform]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnergyPlatform {
    /// The enterprise's 18-character unified social credit code.
    pub enterprise_code: String,
    /// IANA zone of the platform's days; default the gateway's.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `scope` of every item that does not give its own.
    #[serde(default)]
    pub scope: Option<String>,
    /// `inputType` of every item that does not give its own.
    #[serde(default)]
    pub input_type: Option<String>,
    /// Share of estimated intervals a valid day, month or year may have.
    #[serde(default)]
    pub max_estimated_share: Option<f64>,
    /// `[[energy_platform.items]]`, each deserialized on its own so that one typo does not
    /// hide the others' problems.
    #[serde(default)]
    pub items: Vec<config::Value>,
    /// Whether `items` was written as something other than an array of tables.
    #[serde(skip)]
    pub items_malformed: bool,
    /// `[energy_platform.https]`: the platform's HTTPS uplink.
    #[serde(default)]
    pub https: Option<RawHttps>,
    /// `regVersion` that records published over MQTT carry (the HTTPS uplink asks the
    /// platform's `checkVersion` instead).
    #[serde(default)]
    pub reg_version: Option<String>,
    /// `dicVersion` that records published over MQTT carry.
    #[serde(default)]
    pub dic_version: Option<String>,
}

/// `[energy_platform.https]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttps {
    /// Base URL of the platform's enterprise interface, e.g. `https://host/YNEnergy/`.
    pub url: String,
    /// PEM file of the CA that signed the platform's certificate; default the system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// File whose first line is the enterprise's platform password.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// systemd credential holding the password.
    #[serde(default)]
    pub password_credential: Option<String>,
    /// Per-request timeout, e.g. `"30s"` (default).
    #[serde(default)]
    pub timeout: Option<String>,
    /// First wait before the daemon's uploader retries a record, ms; doubles per failure.
    #[serde(default)]
    pub retry_min_ms: Option<u64>,
    /// Longest wait between retries, ms.
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
}

/// Default first retry wait of the uploader: 1 s.
pub const DEFAULT_RETRY_MIN_MS: u64 = 1_000;

/// Default longest retry wait: 5 min, so an outage of hours costs a dozen tries an hour and
/// recovery is noticed within minutes.
pub const DEFAULT_RETRY_MAX_MS: u64 = 300_000;

/// Bounds of the retry waits: at least 10 ms (no busy loop), at most a day.
const RETRY_RANGE_MS: std::ops::RangeInclusive<u64> = 10..=86_400_000;

/// Resolves `[energy_platform.https]`.
fn resolve_https(raw: &RawHttps, issues: &mut Issues) -> Option<Https> {
    const KEY: &str = "energy_platform.https";
    let url = match reqwest::Url::parse(&raw.url) {
        Ok(mut u) if u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty()) => {
            if !u.path().ends_with('/') {
                // `join` replaces the last segment unless the base ends in a slash.
                u.set_path(&format!("{}/", u.path()));
            }
            Some(u)
        }
        Ok(_) => {
            issues.push(
                format!("{KEY}.url"),
                format!(
                    "`{}` must be an https URL with a host, e.g. \"https://platform.example/YNEnergy/\"",
                    raw.url
                ),
            );
            None
        }
        Err(e) => {
            issues.push(
                format!("{KEY}.url"),
                format!("`{}` is not a URL: {e}", raw.url),
            );
            None
        }
    };
    let before = issues.0.len();
    let password = super::daemon::password_source(
        KEY,
        ("password_file", raw.password_file.as_ref()),
        ("password_credential", raw.password_credential.as_ref()),
        issues,
    );
    if password.is_none() && issues.0.len() == before {
        issues.push(
            format!("{KEY}.password_file"),
            "the platform login needs the enterprise's password: give `password_file` or \
             `password_credential`",
        );
    }
    let timeout = match &raw.timeout {
        None => Some(std::time::Duration::from_secs(30)),
        Some(t) => match super::rules::parse_duration(t) {
            Ok(d) if d >= std::time::Duration::from_secs(1) => Some(d),
            Ok(_) => {
                issues.push(format!("{KEY}.timeout"), "must be at least 1s");
                None
            }
            Err(e) => {
                issues.push(format!("{KEY}.timeout"), e);
                None
            }
        },
    };
    let retry_min = raw.retry_min_ms.unwrap_or(DEFAULT_RETRY_MIN_MS);
    let retry_max = raw
        .retry_max_ms
        .unwrap_or(DEFAULT_RETRY_MAX_MS.max(retry_min));
    let mut retry_ok = true;
    for (key, value) in [("retry_min_ms", retry_min), ("retry_max_ms", retry_max)] {
        if !RETRY_RANGE_MS.contains(&value) {
            issues.push(
                format!("{KEY}.{key}"),
                format!("{value} is out of range; use 10 to 86400000 (a day), e.g. 1000"),
            );
            retry_ok = false;
        }
    }
    if retry_ok && retry_max < retry_min {
        issues.push(
            format!("{KEY}.retry_max_ms"),
            format!("{retry_max} is below retry_min_ms ({retry_min})"),
        );
        retry_ok = false;
    }
    Some(Https {
        url: url?,
        ca_file: raw.ca_file.clone(),
        password: password?,
        timeout: timeout?,
        retry_min: retry_ok.then(|| std::time::Duration::from_millis(retry_min))?,
        retry_max: std::time::Duration::from_millis(retry_max),
    })
}

/// `[[energy_platform.items]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawItem {
    /// The `name` of a `[[meters]]` (or `[[production]]`) entry.
    pub meter: String,
    /// The data-item code registered with the platform.
    pub data_code: String,
    /// `convertRation`; default the meter kind's standard-coal coefficient.
    #[serde(default)]
    pub convert_ratio: Option<f64>,
    /// `scope`; default `energy_platform.scope`.
    #[serde(default)]
    pub scope: Option<String>,
    /// `inputType`; default `energy_platform.input_type`.
    #[serde(default)]
    pub input_type: Option<String>,
    /// Which records to produce; default real-time, day and month.
    #[serde(default)]
    pub stat_types: Option<Vec<StatType>>,
    /// Decimal places of `dataValue`, 0 to 6.
    #[serde(default)]
    pub decimals: Option<u32>,
}

/// `[energy_platform]`, resolved: the platform stage's spec of the records to build, and the
/// HTTPS uplink that delivers them.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyPlatform {
    /// What the platform stage builds: enterprise, zone, items, versions.
    pub spec: Spec,
    /// The HTTPS uplink, if configured.
    pub https: Option<Https>,
}

/// Whether `text` is 1 to `max` printable ASCII characters without spaces.
fn is_code(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_graphic())
}

/// What is wrong with `text` as the registered code of `field`, if anything.
fn code_problem(field: &str, text: &str) -> Option<&'static str> {
    if !is_code(text, 16) {
        Some("is not a code: use 1 to 16 letters, digits or symbols, no spaces")
    } else if field == "input_type" && text == MANUAL_INPUT_TYPE {
        Some(
            "marks manual filing (手工填报), which the platform's automatic uploads skip; use \
             the data-source code registered for the metered item",
        )
    } else {
        None
    }
}

/// A registered code (`scope`, `input_type`) from the item, else the section; an issue at the
/// item's key when neither gives a usable one.
fn code_at(
    key: &str,
    field: &str,
    own: Option<&String>,
    section: Option<&String>,
    issues: &mut Issues,
) -> Option<String> {
    let Some(text) = own.or(section) else {
        issues.push(
            format!("{key}.{field}"),
            format!(
                "required: the `{field}` code registered for this data item with the platform; \
                 give it here or once as energy_platform.{field}"
            ),
        );
        return None;
    };
    match code_problem(field, text) {
        None => Some(text.clone()),
        Some(problem) => {
            // A bad section default is reported once, at the section, not for every item.
            if own.is_some() {
                issues.push(format!("{key}.{field}"), format!("`{text}` {problem}"));
            }
            None
        }
    }
}

/// Checks a section-level code default once.
fn check_section_code(field: &str, text: Option<&String>, issues: &mut Issues) {
    if let Some(text) = text
        && let Some(problem) = code_problem(field, text)
    {
        issues.push(
            format!("energy_platform.{field}"),
            format!("`{text}` {problem}"),
        );
    }
}

/// Deserializes `[energy_platform]`, its `items` array apart, so that a malformed array does
/// not hide the section's other problems.
pub(crate) fn deserialize_section(
    value: config::Value,
    issues: &mut Issues,
) -> Option<RawEnergyPlatform> {
    let (value, items) = match value.clone().into_table() {
        Ok(mut table) => {
            let items = table.shift_remove("items").map(config::Value::into_array);
            (config::Value::new(None, table), items)
        }
        // Let the error say what was found instead of a table.
        Err(_) => (value, None),
    };
    let raw = super::deserialize_at::<RawEnergyPlatform>(value, "energy_platform", issues);
    raw.map(|raw| RawEnergyPlatform {
        items_malformed: matches!(items, Some(Err(_))),
        items: items.and_then(Result::ok).unwrap_or_default(),
        ..raw
    })
}

/// Resolves `[energy_platform]` against the resolved `[energy]` (meters, coefficients and
/// ledger interval) and the gateway's zone.
pub fn resolve_platform(
    raw: RawEnergyPlatform,
    energy: &Energy,
    gateway_timezone: Option<Tz>,
    issues: &mut Issues,
) -> Option<EnergyPlatform> {
    let before = issues.0.len();
    let https = raw.https.as_ref().and_then(|h| resolve_https(h, issues));
    let enterprise_code = match Uscc::parse(&raw.enterprise_code) {
        Ok(code) => Some(code),
        Err(err) => {
            issues.push(
                "energy_platform.enterprise_code",
                format!(
                    "`{}` is not a unified social credit code (GB 32100): {err}",
                    raw.enterprise_code
                ),
            );
            None
        }
    };
    let timezone = match &raw.timezone {
        None => gateway_timezone.unwrap_or(chrono_tz::Asia::Shanghai),
        Some(text) => text.parse::<Tz>().unwrap_or_else(|_| {
            issues.push(
                "energy_platform.timezone",
                format!("`{text}` is not an IANA time zone (e.g. \"Asia/Shanghai\")"),
            );
            chrono_tz::Asia::Shanghai
        }),
    };
    let max_estimated_share = raw
        .max_estimated_share
        .unwrap_or(DEFAULT_MAX_ESTIMATED_SHARE);
    if !(0.0..=1.0).contains(&max_estimated_share) {
        issues.push(
            "energy_platform.max_estimated_share",
            format!("{max_estimated_share} is out of range; use 0 to 1, e.g. 0.1"),
        );
    }
    check_section_code("scope", raw.scope.as_ref(), issues);
    check_section_code("input_type", raw.input_type.as_ref(), issues);
    if raw.items_malformed {
        issues.push(
            "energy_platform.items",
            "expected an array of tables: write [[energy_platform.items]], not \
             [energy_platform.items]",
        );
    } else if raw.items.is_empty() {
        issues.push(
            "energy_platform.items",
            "no items: add [[energy_platform.items]] with a `meter` and its `data_code`",
        );
    }
    let meter_names: Vec<&str> = energy.meters.iter().map(|m| m.name.as_str()).collect();
    let mut items: Vec<Item> = Vec::new();
    let mut code_keys: Vec<(String, String)> = Vec::new();
    for (i, value) in raw.items.into_iter().enumerate() {
        let key = format!("energy_platform.items[{i}]");
        let Some(r) = super::deserialize_at::<RawItem>(value, &key, issues) else {
            continue;
        };
        let item_before = issues.0.len();
        let meter_index = meter_names.iter().position(|n| *n == r.meter);
        if meter_index.is_none() {
            let hint = describe::closest(&r.meter, &meter_names)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            issues.push(
                format!("{key}.meter"),
                format!(
                    "no [[meters]] or [[production]] entry is named `{}`{hint}",
                    r.meter
                ),
            );
        }
        if !is_code(&r.data_code, 64) {
            issues.push(
                format!("{key}.data_code"),
                format!(
                    "`{}` is not a data code: use the code registered with the platform, 1 to 64 \
                     letters, digits or symbols, no spaces",
                    r.data_code
                ),
            );
        } else if let Some((_, first)) = code_keys.iter().find(|(c, _)| *c == r.data_code) {
            issues.push(
                format!("{key}.data_code"),
                format!(
                    "`{}` is already the data code of {first}; each data item is uploaded under \
                     one code, once",
                    r.data_code
                ),
            );
        } else {
            code_keys.push((r.data_code.clone(), key.clone()));
        }
        let convert_ratio = match (
            r.convert_ratio,
            meter_index.map(|m| &energy.meters[m].counts),
        ) {
            (Some(v), _) if !(v.is_finite() && v > 0.0) => {
                issues.push(
                    format!("{key}.convert_ratio"),
                    format!("{v} is not a usable factor; use a number above 0, e.g. 0.1229"),
                );
                None
            }
            (Some(v), _) => Some(v),
            (None, Some(Counts::Energy(kind))) => Some(energy.coefficients.get(*kind)),
            // Product output has no standard-coal factor; the clients default to 1.
            (None, Some(Counts::Product(_))) => Some(1.0),
            (None, None) => None,
        };
        let scope = code_at(&key, "scope", r.scope.as_ref(), raw.scope.as_ref(), issues);
        let input_type = code_at(
            &key,
            "input_type",
            r.input_type.as_ref(),
            raw.input_type.as_ref(),
            issues,
        );
        let mut stat_types = r
            .stat_types
            .unwrap_or_else(|| vec![StatType::Realtime, StatType::Day, StatType::Month]);
        if stat_types.is_empty() {
            issues.push(
                format!("{key}.stat_types"),
                "empty: list at least one of \"realtime\", \"day\", \"month\", \"year\"",
            );
        }
        stat_types.sort_unstable();
        stat_types.dedup();
        let decimals = r.decimals.unwrap_or(u32::from(DEFAULT_DECIMALS));
        let decimals = match u8::try_from(decimals) {
            Ok(d) if d <= MAX_DECIMALS => Some(d),
            _ => {
                issues.push(
                    format!("{key}.decimals"),
                    format!("{decimals} is out of range; use 0 to {MAX_DECIMALS}"),
                );
                None
            }
        };
        if issues.0.len() != item_before {
            continue;
        }
        if let (Some(meter_index), Some(convert_ratio), Some(scope), Some(input_type), Some(d)) =
            (meter_index, convert_ratio, scope, input_type, decimals)
        {
            items.push(Item {
                meter: r.meter,
                meter_index,
                data_code: r.data_code,
                convert_ratio,
                scope,
                input_type,
                stat_types,
                decimals: d,
            });
        }
    }
    let interval_s = energy.interval.as_secs();
    if items.iter().any(|i| i.produces(StatType::Realtime))
        && !REALTIME_INTERVALS_S.contains(&interval_s)
    {
        issues.push(
            "energy.interval",
            format!(
                "is {interval_s} s, but the energy platform takes real-time values every 15 min, \
                 30 min or 1 h: set \"15m\", \"30m\" or \"1h\", or leave \"realtime\" out of \
                 the stat_types of every energy_platform.items entry"
            ),
        );
    }
    if issues.0.len() != before {
        return None;
    }
    Some(EnergyPlatform {
        spec: Spec {
            enterprise_code: enterprise_code?,
            timezone,
            max_estimated_share,
            items,
            versions: crate::platform::record::Versions {
                reg_version: raw.reg_version.clone().unwrap_or_default(),
                dic_version: raw.dic_version.clone().unwrap_or_default(),
            },
        },
        https,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{EnvOverrides, load_str};

    /// A minimal config with one platform item and `https` as `[energy_platform.https]`.
    fn load(https: &str) -> Result<super::Https, String> {
        let text = format!(
            r#"
[gateway]
site = "s"
id = "g"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "meter-1"
link = "bus"
profile = "chint-dtsu666"

[[meters]]
name = "incomer"
device = "meter-1"
point = "ep_import"
kind = "electricity"

[energy_platform]
enterprise_code = "91350100M000100Y43"
scope = "1"
input_type = "1"

[[energy_platform.items]]
meter = "incomer"
data_code = "E001-0101-00"

[energy_platform.https]
url = "https://platform.example/YNEnergy"
password_file = "/etc/plantwatch/platform-password"
{https}
"#
        );
        load_str(
            "p.toml",
            &text,
            &EnvOverrides::Off,
            std::path::Path::new("."),
            None,
        )
        .map_err(|e| e.to_string())
        .map(|plan| {
            plan.energy_platform
                .and_then(|p| p.https)
                .expect("[energy_platform.https]")
        })
    }

    #[test]
    fn retry_waits_default_to_a_second_doubling_to_five_minutes() {
        let https = load("").unwrap();
        assert_eq!(https.retry_min, Duration::from_secs(1));
        assert_eq!(https.retry_max, Duration::from_secs(300));
        assert_eq!(https.url.as_str(), "https://platform.example/YNEnergy/");
        let https = load("retry_min_ms = 50\nretry_max_ms = 2000").unwrap();
        assert_eq!(
            (https.retry_min, https.retry_max),
            (Duration::from_millis(50), Duration::from_secs(2))
        );
        // A first wait above the default cap lifts the cap with it.
        let https = load("retry_min_ms = 600000").unwrap();
        assert_eq!(https.retry_max, Duration::from_secs(600));
    }

    #[test]
    fn retry_waits_out_of_range_or_reversed_are_refused_at_their_key() {
        let err = load("retry_min_ms = 0").unwrap_err();
        assert!(
            err.contains("energy_platform.https.retry_min_ms: 0 is out of range"),
            "{err}"
        );
        let err = load("retry_max_ms = 100000000").unwrap_err();
        assert!(err.contains("energy_platform.https.retry_max_ms"), "{err}");
        let err = load("retry_min_ms = 5000\nretry_max_ms = 1000").unwrap_err();
        assert!(
            err.contains("energy_platform.https.retry_max_ms: 1000 is below retry_min_ms (5000)"),
            "{err}"
        );
    }
}
