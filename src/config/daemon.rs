//! The daemon's own sections: `[mqtt]` (where to deliver; `[[mqtt]]` for several brokers) and
//! `[store]` (the state file). A resolved `[mqtt]` is the sink's own type
//! ([`crate::sink::mqtt::spec::Mqtt`]), re-exported here; this module reads and checks it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::issue::Issues;
use super::valid_host;
use crate::model::Name;
pub use crate::secret::PasswordSource;
pub use crate::sink::mqtt::spec::{Format, Mqtt, Protocol, Tls};
use crate::store::OutboxLimits;
pub use crate::store::{DEFAULT_MAX_OUTBOX_BYTES, OnCorrupt};

/// `[mqtt]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// The sink's name: its outbox queue, metrics label and log field; default `mqtt`.
    #[serde(default)]
    pub name: Option<String>,
    /// Payload profile: `"json"` (default), `"json_compact"`, `"energy_platform"` or
    /// `"sparkplug_b"`.
    #[serde(default)]
    pub format: Option<String>,
    /// Broker host name or IP literal.
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS).
    #[serde(default)]
    pub port: Option<u32>,
    /// MQTT client id; default `plantwatch-{site}-{gateway}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Topic prefix; default `plantwatch/{site}/{gateway}`.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// QoS of telemetry: 0 or 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Keep-alive interval in seconds.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Publishes in flight before waiting for acknowledgements.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u32,
    /// First reconnect backoff; doubles up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect backoff.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Backfill messages sent per live message while replaying after an outage.
    #[serde(default = "default_backfill_ratio")]
    pub backfill_per_live: u32,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Name of a systemd credential (`LoadCredential=`) holding the password.
    #[serde(default)]
    pub password_credential: Option<String>,
    /// TLS settings; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// MQTT protocol version: `"3.1.1"` (default) or `"5"`, quoted or a bare `5`.
    #[serde(default)]
    pub protocol: Option<RawProtocol>,
    /// MQTT 5 topic aliases: name a topic published often by an alias the broker grants, so
    /// later messages carry 2 bytes instead of the topic. Needs `protocol = "5"`.
    #[serde(default)]
    pub topic_aliases: bool,
    /// `[mqtt.sparkplug]`: the edge node, for `format = "sparkplug_b"`.
    #[serde(default)]
    pub sparkplug: Option<super::sparkplug::RawSparkplug>,
}

/// `protocol` as written: text, or a bare number (`protocol = 5`), which strict typing would
/// otherwise refuse; anything else is kept so that the message can list the choices.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawProtocol {
    /// `"3.1.1"`, `"5"`.
    Text(String),
    /// `5`.
    Integer(i64),
    /// `5.0`.
    Float(f64),
    /// `true`: never valid, reported with the choices.
    Bool(bool),
}

impl RawProtocol {
    /// The version as text, as `Protocol::parse` reads it.
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Integer(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

/// `[mqtt.tls]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file of the CA(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

fn default_qos() -> u8 {
    1
}
fn default_keep_alive_s() -> u64 {
    30
}
/// The window bounds outbox replay: 64 capped it at about 6400 msg/s on loopback, 256 at
/// 25 000 msg/s (a day's backlog of the 200-device workload in 11.3 min), 1000 at 35 000
/// msg/s (8.2 min, inside the 10 minutes of docs/design.md §8). A wide window is also cheaper per
/// message (e2e bench, 180 s outage: 17.5 µs at 1000, 22.9 at 500, 26.1 at 250). It costs
/// about 1.1 MiB of rendered messages in flight at a 22-point meter's 1 KB payload.
fn default_max_inflight() -> u32 {
    1000
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_backfill_ratio() -> u32 {
    4
}

/// `[store]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// The SQLite state file; default `$STATE_DIRECTORY/state.db` under systemd, else
    /// `/var/lib/plantwatch/state.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Outbox bound in bytes; the oldest messages are dropped (and counted) beyond it.
    #[serde(default)]
    pub max_outbox_bytes: Option<u64>,
    /// Longest wait to group outbox writes into one transaction (flash wear).
    #[serde(default)]
    pub commit_window_ms: Option<u64>,
    /// What to do with a corrupt state file: `move_aside` (default) or `refuse`.
    #[serde(default)]
    pub on_corrupt: Option<String>,
}

/// The password source of a `{file_key}` / `{credential_key}` pair of `section`; at most one
/// may be set.
pub fn password_source(
    section: &str,
    (file_key, file): (&str, Option<&PathBuf>),
    (credential_key, credential): (&str, Option<&String>),
    issues: &mut Issues,
) -> Option<PasswordSource> {
    match (file, credential) {
        (Some(_), Some(_)) => {
            issues.push(
                format!("{section}.{credential_key}"),
                format!("give `{file_key}` or `{credential_key}`, not both"),
            );
            None
        }
        (Some(f), None) => Some(PasswordSource::File(f.clone())),
        (None, Some(c)) => {
            if c.is_empty() || c.contains('/') || c == "." || c == ".." {
                issues.push(
                    format!("{section}.{credential_key}"),
                    format!(
                        "`{c}` is not a credential name (a file name in $CREDENTIALS_DIRECTORY)"
                    ),
                );
            }
            Some(PasswordSource::Credential(c.clone()))
        }
        (None, None) => None,
    }
}

/// The name of a sink that does not give one; also the outbox queue every file started with.
pub const DEFAULT_SINK_NAME: &str = "mqtt";

/// `[store]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// State file.
    pub path: PathBuf,
    /// Outbox bound.
    pub max_outbox_bytes: u64,
    /// Group-commit window.
    pub commit_window: Duration,
    /// What to do with a corrupt state file.
    pub on_corrupt: OnCorrupt,
}

impl From<&Store> for OutboxLimits {
    fn from(c: &Store) -> Self {
        Self {
            max_bytes: c.max_outbox_bytes,
            commit_window: c.commit_window,
        }
    }
}

/// Resolves one MQTT sink written at `section` (`mqtt`, or `mqtt[1]` in an array).
pub fn resolve_mqtt(
    raw: &RawMqtt,
    section: &str,
    site: Option<&Name>,
    gateway: Option<&Name>,
    issues: &mut Issues,
) -> Option<Mqtt> {
    let before = issues.0.len();
    let key = |field: &str| format!("{section}.{field}");
    let name = match Name::new(raw.name.as_deref().unwrap_or(DEFAULT_SINK_NAME)) {
        Ok(n) => Some(n),
        Err(e) => {
            issues.push(key("name"), e.to_string());
            None
        }
    };
    let format = match raw.format.as_deref() {
        None => Format::default(),
        Some(text) => Format::parse(text).unwrap_or_else(|| {
            issues.push(
                key("format"),
                format!(
                    "`{text}` is not a payload profile; use \"json\", \"json_compact\", \
                     \"energy_platform\" or \"sparkplug_b\""
                ),
            );
            Format::default()
        }),
    };
    if !valid_host(&raw.host) {
        issues.push(
            key("host"),
            format!(
                "`{}` is neither an IP address nor a valid host name",
                raw.host
            ),
        );
    }
    let port = raw
        .port
        .unwrap_or(if raw.tls.is_some() { 8883 } else { 1883 });
    if !(1..=65_535).contains(&port) {
        issues.push(
            key("port"),
            format!("{port} is out of range; use 1 to 65535"),
        );
    }
    if raw.qos > 1 {
        issues.push(
            key("qos"),
            format!(
                "{} is not supported; use 0 or 1 (QoS 1 is what the outbox relies on)",
                raw.qos
            ),
        );
    }
    if !(5..=3600).contains(&raw.keep_alive_s) {
        issues.push(
            key("keep_alive_s"),
            format!("{} is out of range; use 5 to 3600 s", raw.keep_alive_s),
        );
    }
    if !(1..=1000).contains(&raw.max_inflight) {
        issues.push(
            key("max_inflight"),
            format!("{} is out of range; use 1 to 1000", raw.max_inflight),
        );
    }
    if raw.reconnect_min_ms == 0 || raw.reconnect_min_ms > raw.reconnect_max_ms {
        issues.push(
            key("reconnect_min_ms"),
            "must be at least 1 and at most reconnect_max_ms",
        );
    }
    if raw.backfill_per_live == 0 {
        issues.push(key("backfill_per_live"), "must be at least 1");
    }
    let password = password_source(
        section,
        ("password_file", raw.password_file.as_ref()),
        ("password_credential", raw.password_credential.as_ref()),
        issues,
    );
    if password.is_some() && raw.username.is_none() {
        issues.push(
            key("username"),
            "a password is configured but no `username`",
        );
    }
    let prefix = raw.topic_prefix.clone().unwrap_or_else(|| {
        format!(
            "plantwatch/{}/{}",
            site.map_or("site", Name::as_str),
            gateway.map_or("gateway", Name::as_str)
        )
    });
    let prefix = prefix.trim_end_matches('/').to_owned();
    if prefix.is_empty() || prefix.contains(['+', '#']) || prefix.starts_with('$') {
        issues.push(
            key("topic_prefix"),
            format!("`{prefix}` is not a publishable topic: no wildcards (+ #), no leading $"),
        );
    }
    // Two sinks on one broker must not share a client id, or each connection would kick
    // the other off.
    let client_id = raw.client_id.clone().unwrap_or_else(|| {
        let base = format!(
            "plantwatch-{}-{}",
            site.map_or("site", Name::as_str),
            gateway.map_or("gateway", Name::as_str)
        );
        match raw.name.as_deref() {
            Some(n) if n != DEFAULT_SINK_NAME => format!("{base}-{n}"),
            _ => base,
        }
    });
    if client_id.is_empty() || client_id.len() > 128 {
        issues.push(key("client_id"), "must be 1 to 128 characters");
    }
    let tls = raw
        .tls
        .as_ref()
        .and_then(|t| match (&t.client_cert_file, &t.client_key_file) {
            (Some(c), Some(k)) => Some(Tls {
                ca_file: t.ca_file.clone(),
                client_auth: Some((c.clone(), k.clone())),
            }),
            (None, None) => Some(Tls {
                ca_file: t.ca_file.clone(),
                client_auth: None,
            }),
            _ => {
                issues.push(
                    key("tls.client_key_file"),
                    "mutual TLS needs both `client_cert_file` and `client_key_file`",
                );
                None
            }
        });
    let protocol = match raw.protocol.as_ref().map(RawProtocol::text) {
        None => Protocol::default(),
        Some(text) => Protocol::parse(&text).unwrap_or_else(|| {
            issues.push(
                key("protocol"),
                format!("`{text}` is not supported; use \"3.1.1\" or \"5\""),
            );
            Protocol::default()
        }),
    };
    if raw.topic_aliases && protocol != Protocol::V5 {
        issues.push(
            key("topic_aliases"),
            "topic aliases are an MQTT 5 feature; set protocol = \"5\" or remove `topic_aliases`",
        );
    }
    if raw.topic_aliases && format == Format::SparkplugB {
        issues.push(
            key("topic_aliases"),
            "a Sparkplug B sink names its metrics by alias already and does not use topic aliases; remove `topic_aliases`",
        );
    }
    let sparkplug = match (&raw.sparkplug, format) {
        (Some(sp), Format::SparkplugB) => super::sparkplug::resolve(
            sp,
            gateway.map_or("gateway", Name::as_str),
            &key("sparkplug"),
            issues,
        ),
        (None, Format::SparkplugB) => {
            issues.push(
                key("sparkplug"),
                "format = \"sparkplug_b\" needs a [mqtt.sparkplug] table with at least `group_id`",
            );
            None
        }
        (Some(_), _) => {
            issues.push(
                key("sparkplug"),
                format!(
                    "only a sink with format = \"sparkplug_b\" uses it; this one is \"{format}\""
                ),
            );
            None
        }
        (None, _) => None,
    };
    let name = name?;
    (issues.0.len() == before).then(|| Mqtt {
        name,
        format,
        sparkplug,
        host: raw
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: u16::try_from(port).unwrap_or(1883),
        client_id,
        topic_prefix: prefix,
        qos: raw.qos,
        keep_alive: Duration::from_secs(raw.keep_alive_s),
        max_inflight: u16::try_from(raw.max_inflight).unwrap_or(64),
        reconnect: (
            Duration::from_millis(raw.reconnect_min_ms),
            Duration::from_millis(raw.reconnect_max_ms),
        ),
        backfill_per_live: raw.backfill_per_live,
        username: raw.username.clone(),
        password,
        tls,
        protocol,
        topic_aliases: raw.topic_aliases,
    })
}

/// Resolves `[store]`; `state_directory` is systemd's `$STATE_DIRECTORY`, passed in so that
/// resolving stays pure.
pub fn resolve_store(
    raw: &RawStore,
    state_directory: Option<&str>,
    issues: &mut Issues,
) -> Option<Store> {
    let before = issues.0.len();
    let path = raw.path.clone().unwrap_or_else(|| {
        state_directory
            .and_then(|d| d.split(':').next())
            .map_or_else(|| PathBuf::from("/var/lib/plantwatch"), PathBuf::from)
            .join("state.db")
    });
    let max = raw.max_outbox_bytes.unwrap_or(DEFAULT_MAX_OUTBOX_BYTES);
    if max < 64 * 1024 {
        issues.push(
            "store.max_outbox_bytes",
            format!("{max} is too small; use at least 65536 (64 KiB)"),
        );
    }
    let window = raw.commit_window_ms.unwrap_or(100);
    if window > 5000 {
        issues.push(
            "store.commit_window_ms",
            format!("{window} is out of range; use 0 to 5000 ms"),
        );
    }
    let on_corrupt = match raw.on_corrupt.as_deref() {
        None | Some("move_aside") => OnCorrupt::MoveAside,
        Some("refuse") => OnCorrupt::Refuse,
        Some(other) => {
            issues.push(
                "store.on_corrupt",
                format!("`{other}` is not a choice; use \"move_aside\" or \"refuse\""),
            );
            OnCorrupt::MoveAside
        }
    };
    (issues.0.len() == before).then(|| Store {
        path,
        max_outbox_bytes: max,
        commit_window: Duration::from_millis(window),
        on_corrupt,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Protocol;
    use crate::config::{ConfigErrors, EnvOverrides, Plan, load_str};

    fn load(mqtt: &str) -> Result<Plan, ConfigErrors> {
        let text = format!(
            "[gateway]\nsite = \"plant1\"\nid = \"gw1\"\n\
             [[links]]\nname = \"bus\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[devices]]\nname = \"m1\"\nlink = \"bus\"\nprofile = \"generic-plc\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\n{mqtt}\n"
        );
        load_str("test.toml", &text, &EnvOverrides::Off, Path::new("."), None)
    }

    fn protocol(mqtt: &str) -> Protocol {
        load(mqtt).unwrap().mqtt[0].protocol
    }

    #[test]
    fn the_protocol_defaults_to_3_1_1() {
        assert_eq!(protocol(""), Protocol::V311);
        assert_eq!(protocol("protocol = \"3.1.1\""), Protocol::V311);
    }

    #[test]
    fn protocol_5_is_accepted_quoted_or_bare() {
        assert_eq!(protocol("protocol = \"5\""), Protocol::V5);
        assert_eq!(protocol("protocol = \"5.0\""), Protocol::V5);
        assert_eq!(protocol("protocol = 5"), Protocol::V5);
    }

    #[test]
    fn an_unknown_protocol_names_the_key_and_the_choices() {
        for bad in ["\"4\"", "\"3.1\"", "\"mqtt5\"", "true"] {
            let errors = load(&format!("protocol = {bad}")).unwrap_err();
            let issue = errors
                .issues
                .iter()
                .find(|i| i.key == "mqtt.protocol")
                .unwrap_or_else(|| panic!("{bad}: {errors}"));
            assert!(
                issue.message.contains("\"3.1.1\" or \"5\""),
                "{bad}: {issue:?}"
            );
        }
    }

    #[test]
    fn topic_aliases_need_mqtt_5_and_a_json_or_energy_sink() {
        let aliases = |mqtt: &str| load(mqtt).map(|p| p.mqtt[0].topic_aliases);
        assert!(!aliases("protocol = \"5\"").unwrap(), "off by default");
        assert!(aliases("protocol = \"5\"\ntopic_aliases = true").unwrap());
        for bad in [
            "topic_aliases = true",
            "protocol = \"3.1.1\"\ntopic_aliases = true",
        ] {
            let errors = aliases(bad).unwrap_err();
            let issue = errors
                .issues
                .iter()
                .find(|i| i.key == "mqtt.topic_aliases")
                .unwrap_or_else(|| panic!("{bad}: {errors}"));
            assert!(
                issue.message.contains("protocol = \"5\""),
                "{}",
                issue.message
            );
        }
    }

    #[test]
    fn protocol_displays_as_written_in_the_config() {
        for p in [Protocol::V311, Protocol::V5] {
            assert_eq!(Protocol::parse(&p.to_string()), Some(p));
        }
    }
}
