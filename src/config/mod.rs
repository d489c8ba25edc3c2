//! Configuration in three layers (STYLE.md C3): the file as written ([`raw`]), a pure
//! [`resolve`] that reports every problem at once with its key path, and the typed [`Plan`].
//!
//! Loading goes through the `config` crate so that `PLANTWATCH__SECTION__KEY` environment
//! variables override the file. Each device, link and point is deserialized on its own, so a
//! typo in one is reported together with the problems of all the others.

pub mod issue;
pub mod plan;
pub mod profile;
pub mod raw;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::acquire::plan::{ReadPlan, RequestLimits};
use crate::decode::{ByteOrder, Codec, DataType};
use crate::model::Name;

pub use issue::{ConfigErrors, ConfigIssue, Issues};
pub use plan::Plan;
pub use profile::{Profile, Profiles};
use raw::{Function, Ratio, RawDevice, RawGateway, RawLink, RawPoint, RawPointDefaults, RawTable};

/// The sections a config file may have.
const SECTIONS: &[&str] = &["gateway", "links", "devices"];

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
    for dir in [dir_in_file.as_deref(), extra_profiles]
        .into_iter()
        .flatten()
    {
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
        issues.push(
            origin,
            format!("not valid TOML: {}", err.to_string().trim_end()),
        );
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

/// Deserializes `value` as `T`, recording a problem under `key` (refined to the field at fault
/// where the error names one).
pub(crate) fn deserialize_at<T: DeserializeOwned>(
    value: config::Value,
    key: &str,
    issues: &mut Issues,
) -> Option<T> {
    let table = value.clone().into_table().ok();
    match value.try_deserialize::<T>() {
        Ok(v) => Some(v),
        Err(err) => {
            let (k, message) = describe_error(&err, key, table.as_ref());
            issues.push(k, message);
            None
        }
    }
}

fn backticked(message: &str, after: &str) -> Option<String> {
    let rest = &message[message.find(after)? + after.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_owned())
}

fn describe_error(
    err: &config::ConfigError,
    key: &str,
    table: Option<&RawTable>,
) -> (String, String) {
    use config::ConfigError;
    match err {
        ConfigError::Type {
            unexpected,
            expected,
            key: Some(field),
            ..
        } => (
            format!("{key}.{field}"),
            format!("expected {expected}, found {unexpected}"),
        ),
        ConfigError::Type {
            unexpected,
            expected,
            ..
        } => (
            key.to_owned(),
            format!("expected {expected}, found {unexpected}"),
        ),
        other => {
            let message = other.to_string();
            if let Some(field) = backticked(&message, "unknown field ") {
                let valid = message
                    .split_once(", expected ")
                    .map(|(_, v)| v.to_owned())
                    .unwrap_or_else(|| "no keys here".into());
                return (
                    format!("{key}.{field}"),
                    format!("unknown key (a typo?); valid keys: {valid}"),
                );
            }
            if let Some(field) = backticked(&message, "missing field ") {
                return (format!("{key}.{field}"), "required but missing".into());
            }
            if let Some(variant) = backticked(&message, "unknown variant ") {
                // Name the field whose value is the unknown variant.
                let field = table.and_then(|t| {
                    t.iter().find_map(|(k, v)| {
                        (v.clone().into_string().ok().as_deref() == Some(variant.as_str()))
                            .then(|| k.clone())
                    })
                });
                let valid = message
                    .split_once(", expected ")
                    .map(|(_, v)| v.to_owned())
                    .unwrap_or_default();
                return (
                    field.map_or_else(|| key.to_owned(), |f| format!("{key}.{f}")),
                    format!("`{variant}` is not valid here; expected {valid}"),
                );
            }
            (key.to_owned(), message)
        }
    }
}

fn take_array(table: &mut RawTable, key: &str, issues: &mut Issues) -> Vec<config::Value> {
    match table.shift_remove(key) {
        None => Vec::new(),
        Some(v) => match v.into_array() {
            Ok(a) => a,
            Err(_) => {
                issues.push(key, format!("expected an array of tables: write [[{key}]]"));
                Vec::new()
            }
        },
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
pub fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
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
    for key in table.keys() {
        issues.push(
            key.clone(),
            format!("unknown section; valid sections: {}", SECTIONS.join(", ")),
        );
    }
    let gateway = gateway.and_then(|g| resolve_gateway(&g, &mut issues));

    let mut links = Vec::new();
    let mut link_index: HashMap<String, Option<usize>> = HashMap::new();
    for (i, v) in raw_links.into_iter().enumerate() {
        let key = format!("links[{i}]");
        let raw: Option<RawLink> = deserialize_at(v, &key, &mut issues);
        let Some(raw) = raw else { continue };
        let name = match &raw {
            RawLink::Tcp(l) => &l.name,
            RawLink::Rtu(l) => &l.name,
            RawLink::RtuOverTcp(l) => &l.name,
        }
        .clone();
        if link_index.contains_key(&name) {
            issues.push(
                format!("{key}.name"),
                format!("link `{name}` is defined twice"),
            );
            continue;
        }
        let resolved = resolve_link(&key, &raw, &mut issues);
        // Remember the name even when the link is broken, so its devices don't add noise.
        link_index.insert(name, resolved.as_ref().map(|_| links.len()));
        if let Some(l) = resolved {
            links.push(l);
        }
    }
    if links.is_empty() && link_index.is_empty() {
        issues.push(
            "links",
            "no links: add at least one [[links]] (kind = \"tcp\", \"rtu\" or \"rtu_over_tcp\")",
        );
    }

    let mut devices = Vec::new();
    let mut device_names = HashSet::new();
    for (i, v) in raw_devices.into_iter().enumerate() {
        let key = format!("devices[{i}]");
        let Some(raw) = deserialize_at::<RawDevice>(v, &key, &mut issues) else {
            continue;
        };
        if !device_names.insert(raw.name.clone()) {
            issues.push(
                format!("{key}.name"),
                format!("device `{}` is defined twice", raw.name),
            );
            continue;
        }
        if let Some(d) = resolve_device(&key, raw, &links, &link_index, profiles, &mut issues) {
            devices.push(d);
        }
    }
    if devices.is_empty() && device_names.is_empty() {
        issues.push("devices", "no devices: add at least one [[devices]]");
    }
    match gateway {
        Some(gateway) if issues.is_empty() => Ok(Plan {
            gateway,
            links,
            devices,
        }),
        _ => Err(issues.0),
    }
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
        .unwrap_or(host);
    let mut ok = true;
    if !valid_host(host) {
        issues.push(
            format!("{key}.host"),
            format!("`{host}` is neither an IP address nor a valid host name"),
        );
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
        bit,
        length,
        ratio,
        description
    );
    p
}

fn resolve_device(
    key: &str,
    mut raw: RawDevice,
    links: &[plan::Link],
    link_index: &HashMap<String, Option<usize>>,
    profiles: &Profiles,
    issues: &mut Issues,
) -> Option<plan::Device> {
    let before = issues.0.len();
    let name = name_at(issues, format!("{key}.name"), &raw.name);
    let link = match link_index.get(&raw.link) {
        Some(l) => *l,
        None => {
            let known: Vec<&str> = link_index.keys().map(String::as_str).collect();
            issues.push(
                format!("{key}.link"),
                format!(
                    "no link named `{}`; defined links: {}",
                    raw.link,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            None
        }
    };
    if let Some(l) = link.and_then(|i| links.get(i)) {
        let (lo, hi) = match l.transport {
            plan::Transport::Tcp(_) => (0, 255),
            plan::Transport::Rtu(_) | plan::Transport::RtuOverTcp { .. } => (1, 247),
        };
        check_range(
            issues,
            format!("{key}.unit_id"),
            raw.unit_id,
            lo,
            hi,
            &format!(" on a {} link", l.transport.kind()),
        );
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
                format!("{v} is not a positive number"),
            );
        }
    }

    let profile = match &raw.profile {
        None => None,
        Some(p) => match profiles.get(p) {
            Some(p) => Some(p),
            None => {
                issues.push(
                    format!("{key}.profile"),
                    format!(
                        "no profile named `{p}`; known profiles: {}",
                        profiles.names().join(", ")
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
                issues.push(
                    format!("{key}.exclude_points"),
                    format!("profile `{}` has no point `{ex}`", profile.meta.name),
                );
            }
        }
        for (n, p) in &profile.points {
            if !raw.exclude_points.contains(n) {
                merged.push((
                    n.clone(),
                    p.clone(),
                    format!("{key}.points.{n} (from profile {})", profile.meta.name),
                ));
            }
        }
    } else if !raw.exclude_points.is_empty() {
        issues.push(
            format!("{key}.exclude_points"),
            "only meaningful with a `profile`",
        );
    }
    for (n, v) in std::mem::take(&mut raw.points) {
        let pkey = format!("{key}.points.{n}");
        let Some(top) = deserialize_at::<RawPoint>(v, &pkey, issues) else {
            continue;
        };
        match merged.iter_mut().find(|(m, _, _)| *m == n) {
            Some(slot) => {
                slot.1 = overlay(&slot.1, &top);
                slot.2 = pkey;
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
        if let Some(p) = resolve_point(pkey, n, p, &defaults, &raw, limits, issues) {
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
        points,
        read_plan,
    })
}

fn resolve_point(
    key: &str,
    name: &str,
    p: &RawPoint,
    defaults: &RawPointDefaults,
    device: &RawDevice,
    limits: RequestLimits,
    issues: &mut Issues,
) -> Option<plan::Point> {
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
                            "`{}` contradicts register {r}, which is a {} register",
                            given.name(),
                            f.name()
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
    let codec = Codec {
        data_type,
        order: p.order.or(defaults.order).unwrap_or(ByteOrder::Abcd),
        scale,
        offset,
        bit,
        length,
    };
    if let Some(address) = address {
        let width = if function.is_bits() {
            1
        } else {
            codec.registers()
        };
        if u32::from(address) + u32::from(width) > 65_536 {
            issues.push(
                format!("{key}.address"),
                format!("{address} + {width} registers runs past 65535"),
            );
        }
        if !function.is_bits() && width > limits.max_registers {
            issues.push(
                format!("{key}.type"),
                format!(
                    "`{data_type}` needs {width} registers but max_registers_per_request is {}",
                    limits.max_registers
                ),
            );
        }
    }
    if issues.0.len() != before {
        return None;
    }
    Some(plan::Point {
        name: name?,
        function,
        address: address?,
        codec,
        unit: p.unit.clone().unwrap_or_default(),
        description: p.description.clone().unwrap_or_default(),
    })
}

/// The default config path under systemd.
pub fn default_path() -> PathBuf {
    PathBuf::from("/etc/plantwatch/plantwatch.toml")
}
