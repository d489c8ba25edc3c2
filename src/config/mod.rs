//! Configuration in three layers: the file as written ([`raw`]), a pure
//! [`resolve`] that reports every problem at once with its key path, and the typed [`Plan`].
//!
//! Loading merges the main file, its `conf.d/*.toml` drop-ins ([`dropin`]) and
//! `PLANTWATCH__SECTION__KEY` environment variables, remembering who set each key. Each
//! device, link and point is deserialized on its own, so a typo in one is reported together
//! with the problems of all the others.
//!
//! The map: `load` reads the file and the environment and deserializes each element; this
//! file's [`resolve`] assembles the sections; `link`, `device` and `point` resolve the Modbus
//! side, and the other modules one section each.

pub mod benchmarks;
pub mod commands;
pub mod daemon;
mod describe;
mod device;
pub mod dropin;
pub mod energy;
pub mod files;
pub mod influx;
pub mod issue;
mod link;
mod load;
pub mod maintenance;
pub mod plan;
pub mod platform;
mod point;
pub mod profile;
pub mod raw;
pub mod reference;
pub mod rules;
mod security;
pub mod sparkplug;
pub mod webhooks;
mod write;

use std::collections::HashMap;
use std::time::Duration;

use crate::model::Name;

use device::{DeviceContext, resolve_device, share_point_tables};
pub use issue::{ConfigErrors, ConfigIssue, Issues};
pub use link::{default_inter_frame_delay, valid_host};
use link::{deserialize_link, link_name, resolve_link};
pub use load::{EnvOverrides, Layers, default_path, load_file, load_str, read_layers};
pub(crate) use load::{deserialize_at, parse_toml_source};
use load::{name_in, take_array};
pub use plan::Plan;
pub use point::modicon;
pub use profile::{Profile, Profiles};
use raw::{RawDevice, RawGateway, RawTable};

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

/// What resolution takes from the process environment besides the file: read by the loader
/// and passed in, so that [`resolve`] itself reads nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// systemd's `$STATE_DIRECTORY`: where `[store] path` defaults to under systemd.
    pub state_directory: Option<String>,
}

impl Environment {
    /// The process's environment, as the daemon and the command line run.
    pub fn from_process() -> Self {
        Self {
            state_directory: std::env::var("STATE_DIRECTORY").ok(),
        }
    }
}

/// Resolves a parsed config into a [`Plan`] in `env`, or returns every problem.
///
/// # Errors
/// All issues found, in file order, each with its key path.
pub fn resolve(
    mut table: RawTable,
    profiles: &Profiles,
    env: &Environment,
) -> Result<Plan, Vec<ConfigIssue>> {
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
    let rules_written = rules::read_rules(raw_rules, &mut issues);
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
    let store = raw_store
        .and_then(|s| daemon::resolve_store(&s, env.state_directory.as_deref(), &mut issues));
    let mut warnings = std::mem::take(&mut energy.warnings);
    warnings.extend(warn_every_poll_beside_an_interval(&devices, &device_keys));
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

/// A point that reports every poll opens a message at every poll, and the moves its device's
/// other points hold back for their minimum interval ride along with it: the interval then
/// saves nothing, which a metered gateway should hear about (docs/payload.md).
fn warn_every_poll_beside_an_interval(
    devices: &[plan::Device],
    keys: &HashMap<String, String>,
) -> Vec<ConfigIssue> {
    devices
        .iter()
        .filter_map(|d| {
            let waits = d.points.iter().any(|p| {
                p.report.mode == plan::ReportMode::OnChange && !p.report.min_interval.is_zero()
            });
            let every = d
                .points
                .iter()
                .find(|p| p.report.mode == plan::ReportMode::EveryPoll)?;
            let key = keys.get(d.name.as_str())?;
            waits.then(|| {
                ConfigIssue::new(
                    key.clone(),
                    format!(
                        "point `{}` reports every poll, so device `{}` sends a message at every \
                         poll and its other points' min_interval_ms saves no bytes; give that \
                         point report = \"on_change\" unless every poll of it is needed",
                        every.name, d.name
                    ),
                )
            })
        })
        .collect()
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
