//! The MQTT sink's settings (`[mqtt]`, resolved): what `config` assembles and the sink and the
//! runtime read. The sink owns them so that it never names `config`.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::Name;
use crate::secret::PasswordSource;

/// TLS, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// CA bundle.
    pub ca_file: PathBuf,
    /// Client certificate and key, both or neither.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// The MQTT protocol version spoken to the broker (`mqtt.protocol`).
///
/// Both run the same delivery logic with a fresh session per connection: 3.1.1 with
/// `clean_session = true`, 5 with `clean_start = true` and a session expiry of 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4), the default.
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

impl Protocol {
    /// Parses the `mqtt.protocol` value: `"3.1.1"` or `"5"` (`"5.0"` is accepted too).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "3.1.1" => Some(Self::V311),
            "5" | "5.0" => Some(Self::V5),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V311 => "3.1.1",
            Self::V5 => "5",
        })
    }
}

/// What a sink publishes (`mqtt.format`, docs/design.md §4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// The JSON profile v1: telemetry, energy, alarms, health, command replies.
    #[default]
    Json,
    /// The compact JSON profile (payload version 2) for metered links: the same messages as
    /// [`Format::Json`] with telemetry in short form, plus a retained schema per device.
    JsonCompact,
    /// Energy-platform records (GB/T 37947 data model) from the `[energy_platform]` section.
    EnergyPlatform,
    /// Sparkplug B for a SCADA host, with its own delivery rules (`[mqtt.sparkplug]`).
    SparkplugB,
}

impl Format {
    /// Parses the `format` value as written.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(Self::Json),
            "json_compact" => Some(Self::JsonCompact),
            "energy_platform" => Some(Self::EnergyPlatform),
            "sparkplug_b" => Some(Self::SparkplugB),
            _ => None,
        }
    }
}

impl Format {
    /// Whether a sink of this format takes messages made for `draft`: a compact sink takes
    /// every JSON-profile message (rendering telemetry in short form when it sends) and its
    /// own schema messages.
    pub fn takes(self, draft: Format) -> bool {
        self == draft || (self == Self::JsonCompact && draft == Self::Json)
    }

    /// Whether the sink speaks the JSON profile (either version), and so takes commands.
    pub fn is_json(self) -> bool {
        matches!(self, Self::Json | Self::JsonCompact)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::JsonCompact => "json_compact",
            Self::EnergyPlatform => "energy_platform",
            Self::SparkplugB => "sparkplug_b",
        })
    }
}

/// One `[mqtt]` sink, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mqtt {
    /// The sink's name (its outbox queue).
    pub name: Name,
    /// Payload profile.
    pub format: Format,
    /// The Sparkplug edge node, for [`Format::SparkplugB`].
    pub sparkplug: Option<crate::sparkplug::NodeConfig>,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// Topic prefix without trailing slash.
    pub topic_prefix: String,
    /// Telemetry QoS (0 or 1).
    pub qos: u8,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// In-flight window.
    pub max_inflight: u16,
    /// Reconnect backoff bounds.
    pub reconnect: (Duration, Duration),
    /// Backfill messages per live message.
    pub backfill_per_live: u32,
    /// User name.
    pub username: Option<String>,
    /// Password source.
    pub password: Option<PasswordSource>,
    /// TLS settings; `None` connects in plain TCP.
    pub tls: Option<Tls>,
    /// Protocol version.
    pub protocol: Protocol,
    /// Use MQTT 5 topic aliases for topics published often (`mqtt.topic_aliases`; only with
    /// [`Protocol::V5`]), as many as the broker grants.
    pub topic_aliases: bool,
}
