//! Configuration in three layers: the file as written ([`raw`]), a pure
//! [`resolve`] that reports every problem at once with its key path, and the typed [`Plan`].
//!
//! Loading goes through the `config` crate so that `PLANTWATCH__SECTION__KEY` environment
//! variables override the file. Each device, link and point is deserialized on its own, so a
//! typo in one is reported together with the problems of all the others.

pub mod benchmarks;
pub mod commands;
pub mod daemon;
mod describe;
pub mod energy;
pub mod influx;
pub mod issue;
pub mod maintenance;
pub mod plan;
pub mod platform;
pub mod profile;
pub mod raw;
pub mod rules;
mod security;
pub mod sparkplug;
pub mod webhooks;
mod write;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::acquire::plan::{ReadPlan, RequestLimits};
use crate::decode::{ByteOrder, Codec, DataType, MAX_DECIMALS};
use crate::model::Name;

pub use issue::{ConfigErrors, ConfigIssue, Issues};
pub use plan::Plan;
pub use profile::{Profile, Profiles};
use raw::{
    Function, Ratio, RawDevice, RawGateway, RawLink, RawPoint, RawPointDefaults, RawTable,
    RawTcpLink,
};

/// The sections a config file may have.
const SECTIONS: &[&str] = &[
    "gateway",
    "links",
    "devices",
    "mqtt",
    "store",
    "influxdb",
    "rules",
    "alarms",
    "webhooks",
    "maintenance",
    "health",
    "energy",
    "meters",
    "production",
    "quotas",
    "baselines",
    "benchmarks",
    "savings",
    "energy_platform",
    "commands",
];

/// Where environment overrides come from.
#[derive(Debug, Clone, Default)]
pub enum EnvOverrides {
    /// The process environment (`PLANTWATCH__…`).
    #[default]
    Process,
    /// A fixed map, for tests.
    Map(HashMap<String, String>),
    /// None.
    Off,
}

/// Loads, overrides and resolves the config file at `path`.
///
/// # Errors
/// Every problem found, each naming its key, under the file's path.
pub fn load_file(
    path: &Path,
    env: &EnvOverrides,
    extra_profiles: Option<&Path>,
) -> Result<Plan, ConfigErrors> {
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
        source_name: source_name.clone(),
        issues: vec![ConfigIssue::new(
            source_name.clone(),
            format!("cannot read config file: {err}"),
        )],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&source_name, &text, env, &base, extra_profiles)
}

/// Loads and resolves config text; relative paths in it are taken from `base_dir`.
///
/// # Errors
/// Every problem found, each naming its key.
pub fn load_str(
    source_name: &str,
    text: &str,
    env: &EnvOverrides,
    base_dir: &Path,
    extra_profiles: Option<&Path>,
) -> Result<Plan, ConfigErrors> {
    let fail = |issues: Vec<ConfigIssue>| ConfigErrors {
        source_name: source_name.to_owned(),
        issues,
    };
    let mut issues = Issues::default();
    let table =
        parse_with_env(source_name, text, env, &mut issues).ok_or_else(|| fail(issues.0))?;
    let mut profiles = Profiles::built_in().map_err(fail)?;
    let dir_in_file = table
        .get("gateway")
        .and_then(|g| g.clone().into_table().ok())
        .and_then(|g| g.get("profiles_dir").cloned())
        .and_then(|d| d.into_string().ok())
        .map(|d| base_dir.join(d));
    if let Some(dir) = &dir_in_file {
        // A directory that cannot be read is the fault of `gateway.profiles_dir`.
        profiles.add_dir(dir).map_err(|issues| {
            let shown = dir.display().to_string();
            fail(
                issues
                    .into_iter()
                    .map(|i| {
                        if i.key == shown {
                            ConfigIssue::new(
                                "gateway.profiles_dir",
                                format!(
                                    "{} (`{shown}`); give an existing directory, relative to \
                                     the config file's directory",
                                    i.message
                                ),
                            )
                        } else {
                            i
                        }
                    })
                    .collect(),
            )
        })?;
    }
    if let Some(dir) = extra_profiles {
        profiles.add_dir(dir).map_err(fail)?;
    }
    resolve(table, &profiles).map_err(fail)
}

fn parse_with_env(
    origin: &str,
    text: &str,
    env: &EnvOverrides,
    issues: &mut Issues,
) -> Option<RawTable> {
    // Parse once with `toml` first: its errors carry line and column, config-rs's do not.
    parse_toml_source(origin, text, issues)?;
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    let environment = config::Environment::with_prefix("PLANTWATCH")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    match env {
        EnvOverrides::Process => builder = builder.add_source(environment),
        EnvOverrides::Map(map) => {
            builder = builder.add_source(environment.source(Some(
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            )))
        }
        EnvOverrides::Off => {}
    }
    match builder
        .build()
        .and_then(config::Config::try_deserialize::<RawTable>)
    {
        Ok(t) => Some(t),
        Err(err) => {
            issues.push(origin, err.to_string());
            None
        }
    }
}

/// Parses TOML text into a table, recording a syntax error with its line under `origin`.
pub(crate) fn parse_toml_source(origin: &str, text: &str, issues: &mut Issues) -> Option<RawTable> {
    if let Err(err) = text.parse::<toml::Table>() {
        issues.push(origin, toml_error(&err, text));
        return None;
    }
    match config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize::<RawTable>)
    {
        Ok(t) => Some(t),
        Err(err) => {
            issues.push(origin, err.to_string());
            None
        }
    }
}

/// A TOML syntax error on one line: where, what, and the offending line.
fn toml_error(err: &toml::de::Error, text: &str) -> String {
    let what = err.message().trim_end();
    let Some(span) = err.span() else {
        return format!("not valid TOML: {what}");
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
    format!("not valid TOML at line {line}, column {column}: {what} (in `{source_line}`)")
}

/// Deserializes `value` as `T`, recording every problem under `key` (refined to the field at
/// fault where the error names one).
///
/// Unknown keys are recorded and dropped, and deserialization tried again, so that one typo
/// does not hide the element's other problems. The result is `Some` only when what is left
/// deserializes; the caller must still treat the config as failed if issues were recorded.
pub(crate) fn deserialize_at<T: DeserializeOwned>(
    value: config::Value,
    key: &str,
    issues: &mut Issues,
) -> Option<T> {
    let mut table = value.clone().into_table().ok();
    let mut value = value;
    let mut suggested: Vec<String> = Vec::new();
    // Each round drops one key, so the table's length bounds the rounds.
    let rounds = table.as_ref().map_or(1, |t| t.len() + 1);
    for _ in 0..rounds {
        let err = match value.clone().try_deserialize::<T>() {
            Ok(v) => return Some(v),
            Err(err) => err,
        };
        let d = describe::describe(&err, key);
        // "unknown `hots`, did you mean `host`?" already says that `host` is missing.
        if d.missing.as_ref().is_some_and(|m| suggested.contains(m)) {
            return None;
        }
        // An unknown key, or a known key with a bad value (a wrong type, an enum value that is
        // not one of its variants): either way the key is dropped and the rest tried again.
        let field = d.unknown.clone().or_else(|| {
            let rest = d.key.strip_prefix(key)?.strip_prefix('.')?;
            Some(rest.split(['.', '[']).next().unwrap_or(rest).to_owned())
        });
        let bad_value = d.unknown.is_none();
        issues.push(d.key, d.message);
        let t = table.as_mut()?;
        let field = field.filter(|f| t.shift_remove(f).is_some())?;
        // A required key dropped for its bad value is then "missing": already reported.
        if bad_value {
            suggested.push(field);
        }
        suggested.extend(d.suggestion);
        value = config::Value::new(None, t.clone());
    }
    None
}

/// The array at `key` (empty when absent), or `None` after recording why it is not an array.
fn take_array(table: &mut RawTable, key: &str, issues: &mut Issues) -> Option<Vec<config::Value>> {
    match table.shift_remove(key) {
        None => Some(Vec::new()),
        Some(v) => match v.into_array() {
            Ok(a) => Some(a),
            Err(_) => {
                issues.push(
                    key,
                    format!("expected an array of tables: write [[{key}]], not [{key}]"),
                );
                None
            }
        },
    }
}

/// The `name` written in an element, even when the element as a whole is broken.
fn name_in(value: &config::Value) -> Option<String> {
    value
        .clone()
        .into_table()
        .ok()?
        .get("name")?
        .clone()
        .into_string()
        .ok()
}

fn link_name(link: &RawLink) -> String {
    match link {
        RawLink::Tcp(l) => l.name.clone(),
        RawLink::Rtu(l) => l.name.clone(),
        RawLink::RtuOverTcp(l) => l.name.clone(),
    }
}

/// Deserializes a `[[links]]` entry by its `kind`.
///
/// Not through `RawLink`'s own (internally tagged) `Deserialize`: serde buffers tagged enums,
/// and the errors it then raises ("invalid value: integer `300`, expected u8") lose the key.
fn deserialize_link(value: config::Value, key: &str, issues: &mut Issues) -> Option<RawLink> {
    let kinds = describe::list(describe::LINK_KINDS);
    let mut table = match value.clone().into_table() {
        Ok(t) => t,
        Err(_) => {
            // Let the error say what was found instead of a table.
            deserialize_at::<RawTcpLink>(value, key, issues);
            return None;
        }
    };
    let kind = match table.shift_remove("kind").map(config::Value::into_string) {
        None => {
            issues.push(
                format!("{key}.kind"),
                format!("required but missing; give one of {kinds}"),
            );
            return None;
        }
        Some(Err(_)) => {
            issues.push(
                format!("{key}.kind"),
                format!("expected a string, one of {kinds}"),
            );
            return None;
        }
        Some(Ok(k)) => k,
    };
    let value = config::Value::new(None, table);
    match kind.as_str() {
        "tcp" => deserialize_at(value, key, issues).map(RawLink::Tcp),
        "rtu" => deserialize_at(value, key, issues).map(RawLink::Rtu),
        "rtu_over_tcp" => deserialize_at(value, key, issues).map(RawLink::RtuOverTcp),
        other => {
            let kinds = "`tcp` (Modbus TCP), `rtu` (a serial port) or `rtu_over_tcp` \
                         (a serial-to-Ethernet converter)";
            let message = match describe::closest(other, describe::LINK_KINDS) {
                Some(s) => format!("`{other}` is not valid; did you mean `{s}`? Use {kinds}"),
                None => format!("`{other}` is not valid; use {kinds}"),
            };
            issues.push(format!("{key}.kind"), message);
            None
        }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    issues: &mut Issues,
    key: String,
    value: T,
    lo: T,
    hi: T,
    unit: &str,
) -> bool {
    if value < lo || value > hi {
        issues.push(
            key,
            format!("{value} is out of range; use {lo} to {hi}{unit}"),
        );
        false
    } else {
        true
    }
}

fn name_at(issues: &mut Issues, key: String, s: &str) -> Option<Name> {
    match Name::new(s) {
        Ok(n) => Some(n),
        Err(e) => {
            issues.push(key, e.to_string());
            None
        }
    }
}

/// Whether `host` is an IP literal or a syntactically valid host name (RFC 1123).
///
/// A name whose last label is all digits is rejected: it can only be a mistyped IPv4 address
/// (`10.0.0.256`), and resolvers would treat it as one (RFC 1123 §2.1, RFC 3696 §2).
pub fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && !host
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Resolves a parsed config into a [`Plan`], or returns every problem.
///
/// # Errors
/// All issues found, in file order, each with its key path.
pub fn resolve(mut table: RawTable, profiles: &Profiles) -> Result<Plan, Vec<ConfigIssue>> {
    let mut issues = Issues::default();
    let gateway = match table.shift_remove("gateway") {
        Some(v) => deserialize_at::<RawGateway>(v, "gateway", &mut issues),
        None => {
            issues.push(
                "gateway",
                "missing section: add [gateway] with `site` and `id`",
            );
            None
        }
    };
    let raw_links = take_array(&mut table, "links", &mut issues);
    let raw_devices = take_array(&mut table, "devices", &mut issues);
    let raw_mqtt = take_sinks(&mut table, &mut issues);
    let raw_influx = table
        .shift_remove("influxdb")
        .and_then(|v| deserialize_at::<influx::RawInflux>(v, "influxdb", &mut issues));
    let raw_rules = take_array(&mut table, "rules", &mut issues);
    let raw_webhooks = take_array(&mut table, "webhooks", &mut issues);
    let raw_maintenance = take_array(&mut table, "maintenance", &mut issues);
    let raw_meters = take_array(&mut table, "meters", &mut issues);
    let raw_production = take_array(&mut table, "production", &mut issues);
    let raw_quotas = take_array(&mut table, "quotas", &mut issues);
    let raw_baselines = take_array(&mut table, "baselines", &mut issues);
    let raw_benchmarks = take_array(&mut table, "benchmarks", &mut issues);
    let raw_savings = take_array(&mut table, "savings", &mut issues);
    let raw_energy = table
        .shift_remove("energy")
        .and_then(|v| deserialize_at::<energy::RawEnergy>(v, "energy", &mut issues));
    let raw_platform = table
        .shift_remove("energy_platform")
        .and_then(|v| platform::deserialize_section(v, &mut issues));
    let raw_health = table
        .shift_remove("health")
        .and_then(|v| deserialize_at::<maintenance::RawHealth>(v, "health", &mut issues));
    let raw_alarms = match table.shift_remove("alarms") {
        Some(v) => deserialize_at::<rules::RawAlarms>(v, "alarms", &mut issues),
        None => Some(rules::RawAlarms::default()),
    };
    let raw_commands = table
        .shift_remove("commands")
        .and_then(|v| deserialize_at::<commands::RawCommands>(v, "commands", &mut issues));
    let raw_store = match table.shift_remove("store") {
        Some(v) => deserialize_at::<daemon::RawStore>(v, "store", &mut issues),
        None => Some(daemon::RawStore::default()),
    };
    for key in table.keys() {
        issues.push(
            key.clone(),
            format!("unknown section; valid sections: {}", SECTIONS.join(", ")),
        );
    }
    let strict_security = gateway.as_ref().is_some_and(|g| g.strict_security);
    let gateway = gateway.and_then(|g| resolve_gateway(&g, &mut issues));

    let mut links = Vec::new();
    // Every link name seen, with its index into `links` if it resolved. Broken links are
    // remembered too, so that their devices do not add "no link named" noise.
    let mut link_index: HashMap<String, Option<usize>> = HashMap::new();
    let mut link_keys: HashMap<String, String> = HashMap::new();
    for (i, v) in raw_links.iter().flatten().cloned().enumerate() {
        let key = format!("links[{i}]");
        let written_name = name_in(&v);
        let raw = deserialize_link(v, &key, &mut issues);
        let Some(name) = raw.as_ref().map(link_name).or(written_name) else {
            continue;
        };
        if let Some(first) = link_keys.get(&name) {
            issues.push(
                format!("{key}.name"),
                format!("link `{name}` is already defined at {first}; link names must be unique"),
            );
            continue;
        }
        link_keys.insert(name.clone(), key.clone());
        let resolved = raw.and_then(|raw| resolve_link(&key, &raw, &mut issues));
        link_index.insert(name, resolved.as_ref().map(|_| links.len()));
        if let Some(l) = resolved {
            links.push(l);
        }
    }
    if raw_links.as_ref().is_some_and(Vec::is_empty) {
        issues.push(
            "links",
            format!(
                "no links: add at least one [[links]] with kind = {}",
                describe::list(describe::LINK_KINDS)
            ),
        );
    }

    // A metered link's default (issue 19): with only compact JSON sinks, points report on
    // change. A v1 sink beside them keeps every poll, since both send the same reports.
    let formats = || raw_mqtt.iter().map(|(_, m)| m.format.as_deref());
    let compact_only = formats().any(|f| f == Some("json_compact"))
        && !formats().any(|f| matches!(f, None | Some("json")));
    let mut devices = Vec::new();
    let mut device_keys: HashMap<String, String> = HashMap::new();
    for (i, v) in raw_devices.iter().flatten().cloned().enumerate() {
        let key = format!("devices[{i}]");
        let before = issues.0.len();
        let written_name = name_in(&v);
        let raw = deserialize_at::<RawDevice>(v, &key, &mut issues);
        let Some(name) = raw.as_ref().map(|d| d.name.clone()).or(written_name) else {
            continue;
        };
        if let Some(first) = device_keys.get(&name) {
            issues.push(
                format!("{key}.name"),
                format!(
                    "device `{name}` is already defined at {first}; device names must be unique"
                ),
            );
            continue;
        }
        device_keys.insert(name, key.clone());
        let Some(raw) = raw else { continue };
        let context = DeviceContext {
            links: &links,
            link_index: &link_index,
            profiles,
            before,
            compact_only,
        };
        if let Some(d) = resolve_device(&key, raw, &context, &mut issues) {
            devices.push(d);
        }
    }
    share_point_tables(&mut devices);
    if raw_devices.as_ref().is_some_and(Vec::is_empty) {
        issues.push(
            "devices",
            "no devices: add at least one [[devices]] with `name`, `link` and a `profile` or points",
        );
    }
    let mqtt = resolve_sinks(&raw_mqtt, gateway.as_ref(), &mut issues);
    let influx = raw_influx.and_then(|r| influx::resolve_influx(&r, &mut issues));
    let rules_written = elements::<rules::RawRule>(raw_rules, "rules", &mut issues);
    let rules = rules::resolve_rules(rules_written, &devices, &mut issues);
    let webhooks_written = elements::<webhooks::RawWebhook>(raw_webhooks, "webhooks", &mut issues);
    let webhooks = webhooks::resolve_webhooks(webhooks_written, &mut issues);
    let maintenance_written =
        elements::<maintenance::RawMaintenance>(raw_maintenance, "maintenance", &mut issues);
    let maintenance = maintenance::resolve_maintenance(maintenance_written, &devices, &mut issues);
    let health = maintenance::resolve_health(raw_health, &mut issues);
    let meters_written = elements::<energy::RawMeter>(raw_meters, "meters", &mut issues);
    let production_written =
        elements::<energy::RawProduction>(raw_production, "production", &mut issues);
    let mut energy = energy::resolve_energy(
        raw_energy,
        meters_written,
        production_written,
        elements::<energy::RawQuota>(raw_quotas, "quotas", &mut issues),
        elements::<energy::RawBaseline>(raw_baselines, "baselines", &mut issues),
        &devices,
        &mut issues,
    );
    energy.benchmarks = benchmarks::resolve_benchmarks(
        elements::<benchmarks::RawBenchmark>(raw_benchmarks, "benchmarks", &mut issues),
        &energy.meters,
        &mut issues,
    );
    energy.savings = benchmarks::resolve_savings(
        elements::<benchmarks::RawSavings>(raw_savings, "savings", &mut issues),
        &energy.meters,
        &mut issues,
    );
    let energy_platform = raw_platform.and_then(|r| {
        platform::resolve_platform(
            r,
            &energy,
            gateway.as_ref().map(|g| g.timezone),
            &mut issues,
        )
    });
    for (section, sink) in &raw_mqtt {
        if sink.format.as_deref() == Some("energy_platform") && energy_platform.is_none() {
            issues.push(
                format!("{section}.format"),
                "\"energy_platform\" needs an [energy_platform] section (enterprise code and \
                 the meters' data codes)",
            );
        }
    }
    let alarm_policy = raw_alarms.map(|a| rules::AlarmPolicy {
        max_per_device_per_minute: a.max_per_device_per_minute,
    });
    let commands = commands::resolve_commands(raw_commands, &mut issues);
    let state_directory = state_directory();
    let store =
        raw_store.and_then(|s| daemon::resolve_store(&s, state_directory.as_deref(), &mut issues));
    let mut warnings = std::mem::take(&mut energy.warnings);
    if issues.is_empty() {
        let sections: Vec<(&str, &daemon::Mqtt)> = raw_mqtt
            .iter()
            .map(|(section, _)| section.as_str())
            .zip(&mqtt)
            .collect();
        let insecure = security::insecure(&sections, &webhooks);
        if strict_security {
            for i in insecure {
                issues.push(
                    i.key,
                    format!("{} (refused: [gateway] strict_security = true)", i.message),
                );
            }
        } else {
            warnings.extend(insecure);
        }
    }
    match (gateway, store) {
        (Some(gateway), Some(store)) if issues.is_empty() => Ok(Plan {
            gateway,
            links,
            devices,
            mqtt,
            store,
            influx,
            rules,
            alarm_policy: alarm_policy.unwrap_or_default(),
            webhooks,
            maintenance,
            health,
            energy,
            energy_platform,
            commands,
            warnings,
        }),
        _ => Err(issues.0),
    }
}

/// `[mqtt]` (one sink, keys `mqtt.…`) or `[[mqtt]]` (several, keys `mqtt[i].…`), as written.
fn take_sinks(table: &mut RawTable, issues: &mut Issues) -> Vec<(String, daemon::RawMqtt)> {
    let Some(value) = table.shift_remove("mqtt") else {
        return Vec::new();
    };
    match value.clone().into_array() {
        Ok(array) => elements(Some(array), "mqtt", issues),
        Err(_) => deserialize_at::<daemon::RawMqtt>(value, "mqtt", issues)
            .map(|m| ("mqtt".to_owned(), m))
            .into_iter()
            .collect(),
    }
}

/// Resolves every MQTT sink; their names must differ, since each names an outbox queue.
fn resolve_sinks(
    raw: &[(String, daemon::RawMqtt)],
    gateway: Option<&plan::Gateway>,
    issues: &mut Issues,
) -> Vec<daemon::Mqtt> {
    let mut sinks: Vec<daemon::Mqtt> = Vec::with_capacity(raw.len());
    for (section, m) in raw {
        let Some(sink) = daemon::resolve_mqtt(
            m,
            section,
            gateway.map(|g| &g.site),
            gateway.map(|g| &g.id),
            issues,
        ) else {
            continue;
        };
        if sinks.iter().any(|s| s.name == sink.name) {
            issues.push(
                format!("{section}.name"),
                format!(
                    "another [[mqtt]] sink is already named `{}`: give each a distinct `name` \
                     (it names the sink's outbox queue)",
                    sink.name
                ),
            );
            continue;
        }
        sinks.push(sink);
    }
    sinks
}

/// Deserializes each element of a `[[section]]` array, keyed `section[i]`.
fn elements<T: serde::de::DeserializeOwned>(
    raw: Option<Vec<config::Value>>,
    section: &str,
    issues: &mut Issues,
) -> Vec<(String, T)> {
    raw.into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, v)| {
            let key = format!("{section}[{i}]");
            deserialize_at::<T>(v, &key, issues).map(|r| (key, r))
        })
        .collect()
}

fn resolve_gateway(raw: &RawGateway, issues: &mut Issues) -> Option<plan::Gateway> {
    let site = name_at(issues, "gateway.site".into(), &raw.site);
    let id = name_at(issues, "gateway.id".into(), &raw.id);
    let timezone = match raw.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            issues.push(
                "gateway.timezone",
                format!(
                    "`{}` is not an IANA time zone (e.g. \"Asia/Shanghai\")",
                    raw.timezone
                ),
            );
            None
        }
    };
    Some(plan::Gateway {
        site: site?,
        id: id?,
        timezone: timezone?,
    })
}

fn endpoint(
    key: &str,
    host: &str,
    port: u32,
    connect_timeout_ms: u64,
    issues: &mut Issues,
) -> Option<plan::TcpEndpoint> {
    // Accept `[::1]` as written in URLs too.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        .unwrap_or(host);
    let mut ok = true;
    if !valid_host(host) {
        let message = if host.is_empty() {
            "empty; give an IPv4 or IPv6 address or a host name".to_owned()
        } else if host.contains(':') {
            format!("`{host}` is not a valid IPv6 address (e.g. \"fe80::1\" or \"[::1]\")")
        } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            format!(
                "`{host}` is not a valid IPv4 address: use four numbers 0-255, e.g. \
                 \"192.168.1.10\""
            )
        } else {
            format!(
                "`{host}` is neither an IP address nor a valid host name: use letters, \
                 digits, `-` and `.`, e.g. \"plc-01.plant.local\""
            )
        };
        issues.push(format!("{key}.host"), message);
        ok = false;
    }
    ok &= check_range(issues, format!("{key}.port"), port, 1, 65535, "");
    ok &= check_range(
        issues,
        format!("{key}.connect_timeout_ms"),
        connect_timeout_ms,
        10,
        60_000,
        " ms",
    );
    ok.then(|| plan::TcpEndpoint {
        host: host.to_owned(),
        port: u16::try_from(port).unwrap_or(502),
        connect_timeout: ms(connect_timeout_ms),
    })
}

/// The Modbus RTU silent interval: 3.5 character times (11 bits each), fixed at 1.75 ms above
/// 19200 baud as the spec allows.
pub fn default_inter_frame_delay(baud: u32) -> Duration {
    if baud > 19_200 || baud == 0 {
        Duration::from_micros(1750)
    } else {
        Duration::from_micros(u64::from(38_500_000 / baud))
    }
}

fn inter_frame(key: &str, value: Option<f64>, baud: u32, issues: &mut Issues) -> Option<Duration> {
    match value {
        None => Some(default_inter_frame_delay(baud)),
        Some(v) if v.is_finite() && (0.0..=1000.0).contains(&v) => {
            Some(Duration::from_secs_f64(v / 1000.0))
        }
        Some(v) => {
            issues.push(
                format!("{key}.inter_frame_delay_ms"),
                format!("{v} is out of range; use 0 to 1000 ms"),
            );
            None
        }
    }
}

fn resolve_link(key: &str, raw: &RawLink, issues: &mut Issues) -> Option<plan::Link> {
    let (name, transport) = match raw {
        RawLink::Tcp(l) => (
            &l.name,
            endpoint(key, &l.host, l.port, l.connect_timeout_ms, issues).map(plan::Transport::Tcp),
        ),
        RawLink::RtuOverTcp(l) => {
            let e = endpoint(key, &l.host, l.port, l.connect_timeout_ms, issues);
            let d = inter_frame(key, l.inter_frame_delay_ms, 9600, issues);
            (
                &l.name,
                e.zip(d).map(
                    |(endpoint, inter_frame_delay)| plan::Transport::RtuOverTcp {
                        endpoint,
                        inter_frame_delay,
                    },
                ),
            )
        }
        RawLink::Rtu(l) => {
            let mut ok = check_range(issues, format!("{key}.baud"), l.baud, 300, 921_600, " baud");
            if !matches!(l.stop_bits, 1 | 2) {
                issues.push(
                    format!("{key}.stop_bits"),
                    format!("{} is not valid; use 1 or 2", l.stop_bits),
                );
                ok = false;
            }
            if l.path.as_os_str().is_empty() {
                issues.push(
                    format!("{key}.path"),
                    "empty; give the serial device, e.g. \"/dev/ttyUSB0\"",
                );
                ok = false;
            }
            let d = inter_frame(key, l.inter_frame_delay_ms, l.baud, issues);
            (
                &l.name,
                d.filter(|_| ok).map(|inter_frame_delay| {
                    plan::Transport::Rtu(plan::SerialSettings {
                        path: l.path.clone(),
                        baud: l.baud,
                        parity: l.parity,
                        stop_bits: l.stop_bits,
                        inter_frame_delay,
                    })
                }),
            )
        }
    };
    let name = name_at(issues, format!("{key}.name"), name);
    Some(plan::Link {
        name: name?,
        transport: transport?,
    })
}

/// Modicon register number → (table, 0-based address), or why not.
pub fn modicon(register: u32) -> Result<(Function, u16), String> {
    let (function, base) = match register {
        1..=9_999 => (Function::Coil, 1),
        10_001..=19_999 => (Function::DiscreteInput, 10_001),
        30_001..=39_999 => (Function::Input, 30_001),
        40_001..=49_999 => (Function::Holding, 40_001),
        100_001..=165_536 => (Function::DiscreteInput, 100_001),
        300_001..=365_536 => (Function::Input, 300_001),
        400_001..=465_536 => (Function::Holding, 400_001),
        _ => {
            return Err(format!(
                "{register} is not a Modicon register number: use 00001-09999 (coils), \
                 1xxxx, 3xxxx or 4xxxx (5 digits) or 1xxxxx, 3xxxxx, 4xxxxx (6 digits); \
                 or give a 0-based `address` with `function`"
            ));
        }
    };
    u16::try_from(register - base)
        .map(|a| (function, a))
        .map_err(|_| format!("{register} is out of range"))
}

/// Overlays `top` (inline) on `base` (profile): fields given inline win.
fn overlay(base: &RawPoint, top: &RawPoint) -> RawPoint {
    let mut p = base.clone();
    if top.address.is_some() || top.register.is_some() {
        p.address = top.address;
        p.register = top.register;
    }
    if top.register.is_some() {
        // A Modicon register names its own table; the profile's `function` no longer applies.
        p.function = None;
    }
    macro_rules! take {
        ($($f:ident),*) => { $( if top.$f.is_some() { p.$f = top.$f.clone(); } )* };
    }
    take!(
        function,
        data_type,
        order,
        scale,
        offset,
        unit,
        decimals,
        bit,
        length,
        ratio,
        description,
        report,
        deadband,
        deadband_percent,
        max_silence_ms,
        writable,
        min,
        max,
        allowed,
        max_rate,
        verify
    );
    p
}

/// What a device is resolved against.
struct DeviceContext<'a> {
    links: &'a [plan::Link],
    link_index: &'a HashMap<String, Option<usize>>,
    profiles: &'a Profiles,
    /// The issue count before the device was deserialized (unknown keys may already be in).
    before: usize,
    /// Every JSON sink is `json_compact`: points report on change unless they say otherwise.
    compact_only: bool,
}

/// Lets devices whose resolved points are equal (a profile used without overrides) share one
/// table: 200 DTSU666 meters held 200 copies, 0.6 MB of the daemon's heap (heaptrack).
fn share_point_tables(devices: &mut [plan::Device]) {
    let mut tables: Vec<Arc<[plan::Point]>> = Vec::new();
    for device in devices {
        match tables.iter().find(|t| t[..] == device.points[..]) {
            Some(shared) => device.points = Arc::clone(shared),
            None => tables.push(Arc::clone(&device.points)),
        }
    }
}

fn resolve_device(
    key: &str,
    mut raw: RawDevice,
    cx: &DeviceContext<'_>,
    issues: &mut Issues,
) -> Option<plan::Device> {
    let DeviceContext {
        links,
        link_index,
        profiles,
        before,
        compact_only,
    } = *cx;
    let name = name_at(issues, format!("{key}.name"), &raw.name);
    let link = match link_index.get(&raw.link) {
        Some(l) => *l,
        // No link at all is already reported at `links`.
        None if link_index.is_empty() => None,
        None => {
            let mut known: Vec<&str> = link_index.keys().map(String::as_str).collect();
            known.sort_unstable();
            let guess = describe::closest(&raw.link, &known)
                .map(|g| format!(" (did you mean `{g}`?)"))
                .unwrap_or_default();
            issues.push(
                format!("{key}.link"),
                format!(
                    "no link named `{}`{guess}; use the `name` of a [[links]] entry: {}",
                    raw.link,
                    known.join(", ")
                ),
            );
            None
        }
    };
    match link.and_then(|i| links.get(i)) {
        Some(l) => {
            let (lo, hi, on) = match l.transport {
                plan::Transport::Tcp(_) => (0, 255, " on a tcp link"),
                plan::Transport::Rtu(_) => (1, 247, " on an rtu link (0 is broadcast)"),
                plan::Transport::RtuOverTcp { .. } => {
                    (1, 247, " on an rtu_over_tcp link (0 is broadcast)")
                }
            };
            check_range(issues, format!("{key}.unit_id"), raw.unit_id, lo, hi, on);
        }
        // The link is broken or unknown: still catch what no link allows.
        None => {
            check_range(
                issues,
                format!("{key}.unit_id"),
                raw.unit_id,
                0,
                255,
                " (1 to 247 on a serial link)",
            );
        }
    }
    check_range(
        issues,
        format!("{key}.poll_interval_ms"),
        raw.poll_interval_ms,
        10,
        86_400_000,
        " ms",
    );
    check_range(
        issues,
        format!("{key}.timeout_ms"),
        raw.timeout_ms,
        10,
        60_000,
        " ms",
    );
    check_range(issues, format!("{key}.retries"), raw.retries, 0, 10, "");
    check_range(
        issues,
        format!("{key}.retry_backoff_ms"),
        raw.retry_backoff_ms,
        0,
        60_000,
        " ms",
    );
    check_range(
        issues,
        format!("{key}.offline_after_failures"),
        raw.offline_after_failures,
        1,
        1000,
        "",
    );
    check_range(
        issues,
        format!("{key}.offline_retry_ms"),
        raw.offline_retry_ms,
        100,
        86_400_000,
        " ms",
    );
    check_range(
        issues,
        format!("{key}.max_registers_per_request"),
        raw.max_registers_per_request,
        1,
        125,
        " (the Modbus limit for function 03/04)",
    );
    check_range(
        issues,
        format!("{key}.max_bits_per_request"),
        raw.max_bits_per_request,
        1,
        2000,
        " (the Modbus limit for function 01/02)",
    );
    check_range(
        issues,
        format!("{key}.max_gap_registers"),
        raw.max_gap_registers,
        0,
        124,
        "",
    );
    check_range(
        issues,
        format!("{key}.max_gap_bits"),
        raw.max_gap_bits,
        0,
        1999,
        "",
    );
    for (field, v) in [("pt_ratio", raw.pt_ratio), ("ct_ratio", raw.ct_ratio)] {
        if !(v.is_finite() && v > 0.0) {
            issues.push(
                format!("{key}.{field}"),
                format!("{v} is not valid; use a positive number (primary / secondary, e.g. 100)"),
            );
        }
    }

    let profile = match &raw.profile {
        None => None,
        Some(p) => match profiles.get(p) {
            Some(p) => Some(p),
            None => {
                let names = profiles.names();
                let guess = describe::closest(p, &names)
                    .map(|g| format!(" (did you mean `{g}`?)"))
                    .unwrap_or_default();
                issues.push(
                    format!("{key}.profile"),
                    format!(
                        "no profile named `{p}`{guess}; known profiles: {}",
                        names.join(", ")
                    ),
                );
                return None;
            }
        },
    };
    let defaults = profile.map(|p| p.defaults.clone()).unwrap_or_default();
    let mut merged: Vec<(String, RawPoint, String)> = Vec::new();
    if let Some(profile) = profile {
        for ex in &raw.exclude_points {
            if !profile.points.iter().any(|(n, _)| n == ex) {
                let names: Vec<&str> = profile.points.iter().map(|(n, _)| n.as_str()).collect();
                issues.push(
                    format!("{key}.exclude_points"),
                    format!(
                        "profile `{}` has no point `{ex}`; its points: {}",
                        profile.meta.name,
                        names.join(", ")
                    ),
                );
            }
        }
        for (n, p) in &profile.points {
            if !raw.exclude_points.contains(n) {
                let at = format!("{key}.points.{n} (from profile {})", profile.meta.name);
                for k in p.write_keys() {
                    // Writes are allow-listed per device in the config itself: a profile is
                    // shared by every device that uses it.
                    issues.push(
                        format!("{at}.{k}"),
                        "write keys belong in the device's own [devices.points.NAME], never in \
                         a profile",
                    );
                }
                let mut p = p.clone();
                p.clear_write_keys();
                merged.push((n.clone(), p, at));
            }
        }
    } else if !raw.exclude_points.is_empty() {
        issues.push(
            format!("{key}.exclude_points"),
            "only meaningful with a `profile`; without one, leave the points out of `points`",
        );
    }
    for (n, v) in std::mem::take(&mut raw.points) {
        let pkey = format!("{key}.points.{n}");
        let point_before = issues.0.len();
        let Some(top) = deserialize_at::<RawPoint>(v, &pkey, issues) else {
            continue;
        };
        if issues.0.len() != point_before {
            // An unknown key was dropped (e.g. `adress`); resolving the rest would only add
            // "address required" noise.
            continue;
        }
        match merged.iter_mut().find(|(m, _, _)| *m == n) {
            Some(slot) => {
                slot.1 = overlay(&slot.1, &top);
                slot.2 = pkey;
            }
            None if top.address.is_none()
                && top.register.is_none()
                && profile.is_some_and(|p| !p.points.iter().any(|(m, _)| *m == n)) =>
            {
                // Most likely a misspelt override of a profile point.
                let names: Vec<&str> = profile
                    .map(|p| p.points.iter().map(|(m, _)| m.as_str()).collect())
                    .unwrap_or_default();
                let message = match describe::closest(&n, &names) {
                    Some(s) => format!(
                        "`{n}` is not a point of profile `{}` (did you mean `{s}`?), so it \
                         needs `address` (with `function`) or a Modicon `register`",
                        raw.profile.as_deref().unwrap_or_default()
                    ),
                    None => format!(
                        "`{n}` is not a point of profile `{}`, so it needs `address` (with \
                         `function`) or a Modicon `register`; profile points: {}",
                        raw.profile.as_deref().unwrap_or_default(),
                        names.join(", ")
                    ),
                };
                issues.push(format!("{pkey}.address"), message);
            }
            None => merged.push((n, top, pkey)),
        }
    }
    if merged.is_empty() && issues.0.len() == before {
        issues.push(
            format!("{key}.points"),
            "no points: give a `profile` or at least one [devices.points.NAME]",
        );
    }
    let limits = RequestLimits {
        max_registers: u16::try_from(raw.max_registers_per_request).unwrap_or(125),
        max_bits: u16::try_from(raw.max_bits_per_request).unwrap_or(2000),
        max_gap_registers: u16::try_from(raw.max_gap_registers).unwrap_or(0),
        max_gap_bits: u16::try_from(raw.max_gap_bits).unwrap_or(0),
    };
    let mut points = Vec::with_capacity(merged.len());
    for (n, p, pkey) in &merged {
        let cx = PointContext {
            limits,
            compact_only,
        };
        if let Some(p) = resolve_point(pkey, n, p, &defaults, &raw, cx, issues) {
            points.push(p);
        }
    }
    if issues.0.len() != before {
        return None;
    }
    let read_plan = ReadPlan::build(&points, limits);
    Some(plan::Device {
        name: name?,
        link: link?,
        unit_id: u8::try_from(raw.unit_id).ok()?,
        profile: raw.profile.clone(),
        poll_interval: ms(raw.poll_interval_ms),
        timeout: ms(raw.timeout_ms),
        retries: raw.retries,
        retry_backoff: ms(raw.retry_backoff_ms),
        offline_after_failures: raw.offline_after_failures,
        offline_retry: ms(raw.offline_retry_ms),
        limits,
        points: points.into(),
        read_plan,
        write_multiple: raw.write_multiple,
    })
}

/// What a point is resolved against, from its device and the sinks.
#[derive(Clone, Copy)]
struct PointContext {
    limits: RequestLimits,
    /// Every JSON sink is `json_compact` (see [`resolve_report`]).
    compact_only: bool,
}

fn resolve_point(
    key: &str,
    name: &str,
    p: &RawPoint,
    defaults: &RawPointDefaults,
    device: &RawDevice,
    cx: PointContext,
    issues: &mut Issues,
) -> Option<plan::Point> {
    let PointContext {
        limits,
        compact_only,
    } = cx;
    let before = issues.0.len();
    let name = name_at(issues, key.to_owned(), name);
    let (function, address) = match (p.address, p.register) {
        (Some(_), Some(_)) => {
            issues.push(
                format!("{key}.register"),
                "give `address` (0-based) or `register` (Modicon), not both",
            );
            (None, None)
        }
        (None, None) => {
            issues.push(format!("{key}.address"), "required: a 0-based `address` (with `function`) or a Modicon `register` such as 40001");
            (None, None)
        }
        (Some(a), None) => {
            let f = p
                .function
                .or(defaults.function)
                .unwrap_or(Function::Holding);
            match u16::try_from(a) {
                Ok(a) => (Some(f), Some(a)),
                Err(_) => {
                    issues.push(
                        format!("{key}.address"),
                        format!("{a} is out of range; use 0 to 65535"),
                    );
                    (Some(f), None)
                }
            }
        }
        (None, Some(r)) => match modicon(r) {
            Ok((f, a)) => {
                if let Some(given) = p.function.filter(|g| *g != f) {
                    issues.push(
                        format!("{key}.function"),
                        format!(
                            "`{}` contradicts register {r}, which is in the `{}` table \
                             (function {:02}); drop `function` or give a 0-based `address`",
                            given.name(),
                            f.name(),
                            f.code()
                        ),
                    );
                }
                (Some(f), Some(a))
            }
            Err(msg) => {
                issues.push(format!("{key}.register"), msg);
                (None, None)
            }
        },
    };
    let function = function?;
    let data_type = p
        .data_type
        .or(if function.is_bits() {
            Some(DataType::Bool)
        } else {
            defaults.data_type
        })
        .unwrap_or(DataType::U16);
    if function.is_bits() != (data_type == DataType::Bool) {
        let fix = if function.is_bits() {
            "coils and discrete inputs are `bool`"
        } else {
            "`bool` is for coils and discrete inputs; use `bit` with `bit = N` for a bit of a register"
        };
        issues.push(
            format!("{key}.type"),
            format!(
                "`{data_type}` cannot be read with function {} ({}): {fix}",
                function.code(),
                function.name()
            ),
        );
    }
    let bit = match (data_type, p.bit) {
        (DataType::Bit, None) => {
            issues.push(
                format!("{key}.bit"),
                "required for type `bit`: 0 (least significant) to 15",
            );
            0
        }
        (DataType::Bit, Some(b)) if b > 15 => {
            issues.push(
                format!("{key}.bit"),
                format!("{b} is out of range; use 0 to 15"),
            );
            0
        }
        (DataType::Bit, Some(b)) => u8::try_from(b).unwrap_or(0),
        (_, Some(_)) => {
            issues.push(
                format!("{key}.bit"),
                format!("only valid with type = \"bit\", not `{data_type}`"),
            );
            0
        }
        (_, None) => 0,
    };
    let length = match (data_type, p.length) {
        (DataType::String, None) => {
            issues.push(
                format!("{key}.length"),
                "required for type `string`: registers, 1 to 125",
            );
            1
        }
        (DataType::String, Some(l)) if !(1..=125).contains(&l) => {
            issues.push(
                format!("{key}.length"),
                format!("{l} is out of range; use 1 to 125 registers"),
            );
            1
        }
        (DataType::String, Some(l)) => u16::try_from(l).unwrap_or(1),
        (_, Some(_)) => {
            issues.push(
                format!("{key}.length"),
                format!("only valid with type = \"string\", not `{data_type}`"),
            );
            1
        }
        (_, None) => 1,
    };
    let mut scale = p.scale.unwrap_or(1.0);
    let offset = p.offset.unwrap_or(0.0);
    if !scale.is_finite() || scale == 0.0 {
        issues.push(
            format!("{key}.scale"),
            format!("{scale} is not a usable multiplier; use a finite, non-zero number"),
        );
    }
    if !offset.is_finite() {
        issues.push(format!("{key}.offset"), "must be a finite number");
    }
    match p.ratio.unwrap_or_default() {
        Ratio::None => {}
        Ratio::Pt => scale *= device.pt_ratio,
        Ratio::Ct => scale *= device.ct_ratio,
        Ratio::PtCt => scale *= device.pt_ratio * device.ct_ratio,
    }
    let mut codec = Codec {
        data_type,
        order: p.order.or(defaults.order).unwrap_or(ByteOrder::Abcd),
        scale,
        offset,
        bit,
        length,
        decimals: None,
    };
    codec.decimals = resolve_decimals(key, p.decimals, &codec, issues);
    if let Some(address) = address {
        let width = if function.is_bits() {
            1
        } else {
            codec.registers()
        };
        if u32::from(address) + u32::from(width) > 65_536 {
            issues.push(
                format!("{key}.address"),
                format!(
                    "{address} + {width} registers runs past 65535; `{data_type}` needs an \
                     address of at most {}",
                    65_536 - u32::from(width)
                ),
            );
        }
        if !function.is_bits() && width > limits.max_registers {
            issues.push(
                format!("{key}.type"),
                format!(
                    "`{data_type}` needs {width} registers but max_registers_per_request is {}; \
                     raise it (up to 125) or read fewer registers",
                    limits.max_registers
                ),
            );
        }
    }
    if issues.0.len() != before {
        return None;
    }
    let write = write::resolve_write(key, p, function, &codec, issues);
    if issues.0.len() != before {
        return None;
    }
    let report = resolve_report(key, p, device, compact_only.then_some(&codec), issues)?;
    Some(plan::Point {
        name: name?,
        function,
        address: address?,
        codec,
        unit: p.unit.clone().unwrap_or_default(),
        description: p.description.clone().unwrap_or_default(),
        report,
        write,
    })
}

/// A point's `decimals`: at most [`MAX_DECIMALS`], and only where the value can have a
/// fraction (a float, or a scaled integer or bit).
fn resolve_decimals(
    key: &str,
    given: Option<u32>,
    codec: &Codec,
    issues: &mut Issues,
) -> Option<u8> {
    let n = given?;
    let fractional = matches!(codec.data_type, DataType::F32 | DataType::F64)
        || (codec.data_type != DataType::String && codec.is_scaled());
    if !fractional {
        issues.push(
            format!("{key}.decimals"),
            format!(
                "a{} `{}` value has no fraction to round; set `scale`, or remove `decimals`",
                if codec.data_type == DataType::String {
                    ""
                } else {
                    "n unscaled"
                },
                codec.data_type
            ),
        );
        return None;
    }
    match u8::try_from(n) {
        Ok(n) if n <= MAX_DECIMALS => Some(n),
        _ => {
            issues.push(
                format!("{key}.decimals"),
                format!("{n} is out of range; use 0 to {MAX_DECIMALS}"),
            );
            None
        }
    }
}

/// A point's reporting policy: its own keys, else its device's, else every poll; with
/// `compact` (the point's codec, when every JSON sink is compact), on change with a deadband
/// of the point's resolution.
fn resolve_report(
    key: &str,
    p: &RawPoint,
    device: &RawDevice,
    compact: Option<&Codec>,
    issues: &mut Issues,
) -> Option<plan::Report> {
    let before = issues.0.len();
    // A device-level key is checked once per point: report each problem once, not per point.
    let push = |issues: &mut Issues, at: String, message: String| {
        if !issues.0.iter().any(|i| i.key == at && i.message == message) {
            issues.push(at, message);
        }
    };
    let defaults = plan::Report::default();
    let written = p.report.or(device.report);
    let mode = match (written, compact) {
        (Some(mode), _) => mode,
        (None, Some(_)) => raw::ReportMode::OnChange,
        (None, None) => raw::ReportMode::default(),
    };
    let deadband = p.deadband.or(device.deadband).or_else(|| {
        // Half a step: a change of one step in the written digits (0.1 V as 231.5 - 231.4 =
        // 0.0999…) must pass. A written percent deadband decides alone.
        let step = compact.filter(|_| written.is_none())?.resolution();
        (p.deadband_percent.or(device.deadband_percent).is_none()).then_some(step / 2.0)
    });
    let percent = p.deadband_percent.or(device.deadband_percent);
    let silence = p.max_silence_ms.or(device.max_silence_ms);
    // Name the key where the value was written: the point's own, or the device's.
    let at = |field: &str, on_point: bool| {
        if on_point {
            format!("{key}.{field}")
        } else {
            format!(
                "{}.{field}",
                key.rsplit_once(".points.").map_or(key, |(d, _)| d)
            )
        }
    };
    if mode == raw::ReportMode::EveryPoll {
        for (field, given, on_point) in [
            ("deadband", deadband.is_some(), p.deadband.is_some()),
            (
                "deadband_percent",
                percent.is_some(),
                p.deadband_percent.is_some(),
            ),
            (
                "max_silence_ms",
                silence.is_some(),
                p.max_silence_ms.is_some(),
            ),
        ] {
            if given {
                push(
                    issues,
                    at(field, on_point),
                    "only applies with report = \"on_change\"; set that or remove this key".into(),
                );
            }
        }
    }
    if let Some(d) = deadband.filter(|d| !d.is_finite() || *d < 0.0) {
        push(
            issues,
            at("deadband", p.deadband.is_some()),
            format!("{d} is not valid; use a number of at least 0 (engineering units)"),
        );
    }
    if let Some(d) = percent.filter(|d| !d.is_finite() || !(0.0..=100.0).contains(d)) {
        push(
            issues,
            at("deadband_percent", p.deadband_percent.is_some()),
            format!("{d} is out of range; use 0 to 100"),
        );
    }
    if let Some(s) = silence.filter(|s| !(1000..=604_800_000).contains(s)) {
        push(
            issues,
            at("max_silence_ms", p.max_silence_ms.is_some()),
            format!("{s} is out of range; use 1000 ms to 7 days (604800000)"),
        );
    }
    if issues.0.len() != before {
        return None;
    }
    let report = plan::Report {
        mode,
        deadband: deadband.unwrap_or(defaults.deadband),
        deadband_percent: percent.unwrap_or(defaults.deadband_percent),
        max_silence: silence.map_or(defaults.max_silence, Duration::from_millis),
    };
    Some(report)
}

/// The default config path under systemd.
pub fn default_path() -> PathBuf {
    PathBuf::from("/etc/plantwatch/plantwatch.toml")
}

/// systemd's `$STATE_DIRECTORY`, the one environment input of resolution (read here so that
/// `resolve` callers need not know about it).
fn state_directory() -> Option<String> {
    std::env::var("STATE_DIRECTORY").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_ip_literals_are_valid_hosts() {
        for host in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "plc-01",
            "plc-01.plant.local",
            "a1",
        ] {
            assert!(valid_host(host), "{host}");
        }
    }

    #[test]
    fn an_all_numeric_name_is_a_mistyped_ipv4_address() {
        for host in [
            "10.0.0.256",
            "1.2.3",
            "300",
            "",
            "a..b",
            "-a",
            "a_b",
            "fe80::zz",
        ] {
            assert!(!valid_host(host), "{host}");
        }
    }

    #[test]
    fn modicon_numbers_map_to_tables_and_zero_based_addresses() {
        assert_eq!(modicon(1), Ok((Function::Coil, 0)));
        assert_eq!(modicon(10_001), Ok((Function::DiscreteInput, 0)));
        assert_eq!(modicon(30_001), Ok((Function::Input, 0)));
        assert_eq!(modicon(40_001), Ok((Function::Holding, 0)));
        assert_eq!(modicon(300_001), Ok((Function::Input, 0)));
        assert_eq!(modicon(465_536), Ok((Function::Holding, 65_535)));
        for bad in [0, 20_001, 50_000, 99_999, 465_537] {
            assert!(modicon(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_toml_syntax_error_is_one_line_with_line_and_column() {
        let mut issues = Issues::default();
        assert!(parse_toml_source("x.toml", "a = 1\nb = \"open\n", &mut issues).is_none());
        assert_eq!(issues.0.len(), 1);
        let message = &issues.0[0].message;
        assert!(message.contains("line 2, column"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn one_typo_does_not_hide_the_other_problems_of_an_element() {
        let mut table = RawTable::new();
        table.insert("sitename".into(), "a".into());
        table.insert("idd".into(), "b".into());
        table.insert("site".into(), "a".into());
        table.insert("id".into(), "b".into());
        let mut issues = Issues::default();
        let gateway: Option<RawGateway> =
            deserialize_at(config::Value::new(None, table), "gateway", &mut issues);
        assert!(gateway.is_some());
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["gateway.sitename", "gateway.idd"]);
    }

    #[test]
    fn a_bad_enum_value_does_not_hide_the_other_problems_of_an_element() {
        let mut issues = Issues::default();
        let table = parse_toml_source(
            "t.toml",
            "[[rules]]\nname = \"r\"\nkind = \"anomaly\"\nseason = \"x\"\ndirection = \"up\"\nthreshhold = 0.5\n",
            &mut issues,
        )
        .unwrap();
        let value = table["rules"].clone().into_array().unwrap().remove(0);
        let rule: Option<rules::RawRule> = deserialize_at(value, "rules[0]", &mut issues);
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rules[0].season",
                "rules[0].direction",
                "rules[0].threshhold"
            ],
            "{issues:?}"
        );
        assert!(rule.is_some(), "what is left deserializes");
    }

    #[test]
    fn a_required_key_with_a_bad_value_is_not_also_reported_missing() {
        let mut issues = Issues::default();
        let table = parse_toml_source(
            "t.toml",
            "[[rules]]\nname = \"r\"\nkind = \"hihg\"\n",
            &mut issues,
        )
        .unwrap();
        let value = table["rules"].clone().into_array().unwrap().remove(0);
        let rule: Option<rules::RawRule> = deserialize_at(value, "rules[0]", &mut issues);
        assert!(rule.is_none());
        assert_eq!(issues.0.len(), 1, "{issues:?}");
        assert_eq!(issues.0[0].key, "rules[0].kind");
    }
}
