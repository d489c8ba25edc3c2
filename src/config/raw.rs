//! The configuration exactly as written in the file: serde structs, unknown keys rejected.
//!
//! Sections are deserialized one element at a time (see `config::resolve`), so that one typo
//! does not hide the problems in every other device and point.

use serde::Deserialize;
use std::path::PathBuf;

pub use crate::acquire::spec::{Function, Parity};
use crate::decode::{ByteOrder, DataType};
pub use crate::process::report::ReportMode;

/// A table of values whose order is the file's order.
pub type RawTable = config::Map<String, config::Value>;

/// `[gateway]`: who this gateway is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Plant or site name, `[a-z0-9_-]`.
    pub site: String,
    /// This gateway's id within the site.
    pub id: String,
    /// IANA time zone for local-time rules and reports.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A directory of profile files that override or add to the built-in ones.
    #[serde(default)]
    pub profiles_dir: Option<PathBuf>,
    /// Refuse insecure settings (plain-http webhooks to public hosts, MQTT passwords over
    /// plain TCP) instead of warning about them.
    #[serde(default)]
    pub strict_security: bool,
}

fn default_timezone() -> String {
    "Asia/Shanghai".into()
}

/// `[[links]]` with `kind = "tcp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcpLink {
    /// The link's name, referenced by devices.
    pub name: String,
    /// IPv4 or IPv6 literal, or a host name.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_modbus_port")]
    pub port: u32,
    /// How long to wait for a TCP connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// `[[links]]` with `kind = "rtu"`: a serial bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRtuLink {
    /// The link's name.
    pub name: String,
    /// Serial device path, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity bit of each character; default `none`.
    #[serde(default = "default_parity")]
    pub parity: Parity,
    /// Stop bits (1 or 2).
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silence between frames; default 3.5 character times (1.75 ms above 19200 baud).
    #[serde(default)]
    pub inter_frame_delay_ms: Option<f64>,
}

/// `[[links]]` with `kind = "rtu_over_tcp"`: RTU frames through a serial-to-Ethernet converter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRtuOverTcpLink {
    /// The link's name.
    pub name: String,
    /// Converter address.
    pub host: String,
    /// Converter port.
    #[serde(default = "default_modbus_port")]
    pub port: u32,
    /// How long to wait for a TCP connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Silence between frames on the serial side of the converter.
    #[serde(default)]
    pub inter_frame_delay_ms: Option<f64>,
}

/// One `[[links]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RawLink {
    /// Modbus TCP.
    Tcp(RawTcpLink),
    /// Modbus RTU on a serial port.
    Rtu(RawRtuLink),
    /// Modbus RTU framing over a TCP socket.
    RtuOverTcp(RawRtuOverTcpLink),
}

fn default_modbus_port() -> u32 {
    502
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
fn default_baud() -> u32 {
    9600
}
fn default_parity() -> Parity {
    Parity::None
}
fn default_stop_bits() -> u8 {
    1
}

/// One `[[devices]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// The device's name.
    pub name: String,
    /// The link it is reached through.
    pub link: String,
    /// Modbus unit (slave) id.
    #[serde(default = "default_unit_id")]
    pub unit_id: u32,
    /// A built-in or user profile supplying the register map.
    #[serde(default)]
    pub profile: Option<String>,
    /// Profile points to leave out.
    #[serde(default)]
    pub exclude_points: Vec<String>,
    /// Points, by name; each overrides a profile point of that name or adds one.
    #[serde(default)]
    pub points: RawTable,
    /// Poll period on a fixed grid.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Per-transaction timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of a transaction that failed with a transport error (not a timeout).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff between retries; doubles each time.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Consecutive failed cycles before the device is marked offline.
    #[serde(default = "default_offline_after_failures")]
    pub offline_after_failures: u32,
    /// How often an offline device is tried again.
    #[serde(default = "default_offline_retry_ms")]
    pub offline_retry_ms: u64,
    /// Registers per read request (1 to 125).
    #[serde(default = "default_max_registers")]
    pub max_registers_per_request: u32,
    /// Bits per read request (1 to 2000).
    #[serde(default = "default_max_bits")]
    pub max_bits_per_request: u32,
    /// Unused registers a request may bridge to save a round trip.
    #[serde(default = "default_max_gap_registers")]
    pub max_gap_registers: u32,
    /// Unused bits a request may bridge.
    #[serde(default = "default_max_gap_bits")]
    pub max_gap_bits: u32,
    /// Voltage transformer ratio, applied to points with `ratio = "pt"` or `"pt_ct"`.
    #[serde(default = "one")]
    pub pt_ratio: f64,
    /// Current transformer ratio, applied to points with `ratio = "ct"` or `"pt_ct"`.
    #[serde(default = "one")]
    pub ct_ratio: f64,
    /// Reporting policy: every poll (default) or on change.
    #[serde(default)]
    pub report: Option<ReportMode>,
    /// With `on_change`: report when the value moved by at least this much (engineering units).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// With `on_change`: report when the value moved by at least this percent of the last
    /// reported value.
    #[serde(default)]
    pub deadband_percent: Option<f64>,
    /// With `on_change`: report anyway after this long without a report.
    #[serde(default)]
    pub max_silence_ms: Option<u64>,
    /// With `on_change`: a move alone sends a message at most this often per device; it
    /// waits until then, or rides along with a message something else sends.
    #[serde(default)]
    pub min_interval_ms: Option<u64>,
    /// Write registers with function 16 (coils with 15) even when one would do: many devices
    /// accept only the multiple forms.
    #[serde(default)]
    pub write_multiple: bool,
}

fn default_unit_id() -> u32 {
    1
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_retries() -> u32 {
    1
}
fn default_retry_backoff_ms() -> u64 {
    100
}
fn default_offline_after_failures() -> u32 {
    3
}
fn default_offline_retry_ms() -> u64 {
    30_000
}
fn default_max_registers() -> u32 {
    125
}
fn default_max_bits() -> u32 {
    2000
}
fn default_max_gap_registers() -> u32 {
    16
}
fn default_max_gap_bits() -> u32 {
    64
}
fn one() -> f64 {
    1.0
}

/// Which transformer ratios multiply a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ratio {
    /// No transformer ratio: the meter reads primary values itself.
    #[default]
    None,
    /// `pt_ratio` only.
    Pt,
    /// `ct_ratio` only.
    Ct,
    /// Both (energy and power on meters behind PTs and CTs).
    PtCt,
}

/// One point, inline in a device or in a profile; absent keys fall back to defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoint {
    /// Which table (function code) to read.
    #[serde(default)]
    pub function: Option<Function>,
    /// 0-based protocol address.
    #[serde(default)]
    pub address: Option<u32>,
    /// Modicon register number (00001, 10001, 30001, 40001 …); sets the function too.
    #[serde(default)]
    pub register: Option<u32>,
    /// Data type.
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    /// Byte and word order.
    #[serde(default)]
    pub order: Option<ByteOrder>,
    /// Factor from the raw register value to the engineering unit, applied before `offset`.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Added after scaling.
    #[serde(default)]
    pub offset: Option<f64>,
    /// Engineering unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// Decimals written in payloads, overriding what the type and `scale` imply.
    #[serde(default)]
    pub decimals: Option<u32>,
    /// Bit number for `type = "bit"`.
    #[serde(default)]
    pub bit: Option<u32>,
    /// Registers for `type = "string"`.
    #[serde(default)]
    pub length: Option<u32>,
    /// Transformer ratios to apply.
    #[serde(default)]
    pub ratio: Option<Ratio>,
    /// Free text shown by `check` and `read`.
    #[serde(default)]
    pub description: Option<String>,
    /// Reporting policy: every poll (default) or on change.
    #[serde(default)]
    pub report: Option<ReportMode>,
    /// With `on_change`: report when the value moved by at least this much (engineering units).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// With `on_change`: report when the value moved by at least this percent of the last
    /// reported value.
    #[serde(default)]
    pub deadband_percent: Option<f64>,
    /// With `on_change`: report anyway after this long without a report.
    #[serde(default)]
    pub max_silence_ms: Option<u64>,
    /// With `on_change`: a move alone sends a message at most this often per device; it
    /// waits until then, or rides along with a message something else sends.
    #[serde(default)]
    pub min_interval_ms: Option<u64>,
    /// Opt in to writes (inline only, never from a profile).
    #[serde(default)]
    pub writable: Option<bool>,
    /// Lowest value a write may set (engineering units).
    #[serde(default)]
    pub min: Option<f64>,
    /// Highest value a write may set.
    #[serde(default)]
    pub max: Option<f64>,
    /// The only values a write may set (coils, bits, enumerations, text).
    #[serde(default)]
    pub allowed: Option<Vec<RawAllowed>>,
    /// Writes per minute at most.
    #[serde(default)]
    pub max_rate: Option<u32>,
    /// Read back after writing and compare (default true).
    #[serde(default)]
    pub verify: Option<bool>,
}

impl RawPoint {
    /// The write keys given, by name, for errors and for refusing them where they do not
    /// apply.
    pub fn write_keys(&self) -> Vec<&'static str> {
        [
            ("writable", self.writable.is_some()),
            ("min", self.min.is_some()),
            ("max", self.max.is_some()),
            ("allowed", self.allowed.is_some()),
            ("max_rate", self.max_rate.is_some()),
            ("verify", self.verify.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, given)| given.then_some(k))
        .collect()
    }

    /// Drops every write key, leaving the point read-only.
    pub fn clear_write_keys(&mut self) {
        self.writable = None;
        self.min = None;
        self.max = None;
        self.allowed = None;
        self.max_rate = None;
        self.verify = None;
    }
}

/// One entry of `allowed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RawAllowed {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// A string (also what a quoted number is, which strict typing refuses).
    Text(String),
}

/// `[defaults]` in a profile: what its points use unless they say otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPointDefaults {
    /// Default table.
    #[serde(default)]
    pub function: Option<Function>,
    /// Default type.
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    /// Default order.
    #[serde(default)]
    pub order: Option<ByteOrder>,
}
