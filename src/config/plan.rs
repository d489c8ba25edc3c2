//! The resolved configuration: typed, validated, with no optional values left.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::acquire::plan::{ReadPlan, RequestLimits};
use crate::acquire::write::WriteSpec;
use crate::decode::Codec;
use crate::model::{DeviceId, LinkId, Name, PointId};

pub use super::raw::{Function, Parity, ReportMode};
use crate::pipeline::{Pipeline, PipelineSpec, Taps};
pub use crate::process::report::Report;
use crate::process::report::{DeviceReport, ReportedDevice};

/// Everything the daemon needs, valid as a whole.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Who this gateway is.
    pub gateway: Gateway,
    /// Links in file order.
    pub links: Vec<Link>,
    /// Devices in file order.
    pub devices: Vec<Device>,
    /// Where telemetry goes, one entry per `[[mqtt]]` sink; none polls without delivering
    /// (commissioning).
    pub mqtt: Vec<super::daemon::Mqtt>,
    /// The state file.
    pub store: super::daemon::Store,
    /// InfluxDB copy of the telemetry; `None` when not configured.
    pub influx: Option<super::influx::Influx>,
    /// Alarm rules, each expanded to its targets.
    pub rules: Vec<super::rules::Rule>,
    /// Engine-wide alarm policy (`[alarms]`).
    pub alarm_policy: super::rules::AlarmPolicy,
    /// Group-chat and HTTP alarm notifiers.
    pub webhooks: Vec<super::webhooks::Webhook>,
    /// Running hours and starts counted per device.
    pub maintenance: Vec<super::maintenance::Maintenance>,
    /// Device health publishing.
    pub health: super::maintenance::Health,
    /// Energy meters, production counters, tariff calendar and coefficients.
    pub energy: super::energy::Energy,
    /// Records for the national energy-monitoring platform; `None` when not configured.
    pub energy_platform: Option<super::platform::EnergyPlatform>,
    /// Who may send downlink commands (`[commands]`).
    pub commands: super::commands::Commands,
    /// Settings that work but expose the plant (`check` prints them, `run` logs them); with
    /// `[gateway] strict_security = true` they are errors instead and never get here.
    pub warnings: Vec<super::ConfigIssue>,
}

impl Plan {
    /// The device called `name`.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name.as_str() == name)
    }

    /// The devices on link `index`.
    pub fn devices_on(&self, index: usize) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(move |d| d.link == index)
    }
}

/// `[gateway]`, resolved.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Site name.
    pub site: Name,
    /// Gateway id.
    pub id: Name,
    /// Local time zone.
    pub timezone: chrono_tz::Tz,
}

/// A link to one or more devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Its name.
    pub name: LinkId,
    /// How it is reached.
    pub transport: Transport,
}

/// A link's transport.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// Modbus TCP.
    Tcp(TcpEndpoint),
    /// Modbus RTU on a serial port.
    Rtu(SerialSettings),
    /// RTU framing over TCP.
    RtuOverTcp {
        /// The converter.
        endpoint: TcpEndpoint,
        /// Silence between frames.
        inter_frame_delay: Duration,
    },
}

impl Transport {
    /// `tcp`, `rtu` or `rtu_over_tcp`.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Tcp(_) => "tcp",
            Transport::Rtu(_) => "rtu",
            Transport::RtuOverTcp { .. } => "rtu_over_tcp",
        }
    }

    /// Where it goes, for people.
    pub fn describe(&self) -> String {
        match self {
            Transport::Tcp(e) | Transport::RtuOverTcp { endpoint: e, .. } => e.to_string(),
            Transport::Rtu(s) => format!(
                "{} {} 8{}{}",
                s.path.display(),
                s.baud,
                match s.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                },
                s.stop_bits
            ),
        }
    }
}

/// A host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpEndpoint {
    /// IP literal or host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl std::fmt::Display for TcpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Serial port settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    /// Device path.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Silence between frames.
    pub inter_frame_delay: Duration,
}

/// A polled device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Its name.
    pub name: DeviceId,
    /// Index into [`Plan::links`].
    pub link: usize,
    /// Modbus unit id.
    pub unit_id: u8,
    /// The profile it came from, if any.
    pub profile: Option<String>,
    /// Poll period.
    pub poll_interval: Duration,
    /// Per-transaction timeout.
    pub timeout: Duration,
    /// Retries of transport errors within a cycle.
    pub retries: u32,
    /// First retry backoff.
    pub retry_backoff: Duration,
    /// Failed cycles before offline.
    pub offline_after_failures: u32,
    /// Retry period while offline.
    pub offline_retry: Duration,
    /// Request size limits.
    pub limits: RequestLimits,
    /// Points in config order.
    pub points: std::sync::Arc<[Point]>,
    /// The coalesced requests of one cycle.
    pub read_plan: ReadPlan,
    /// Write registers with function 16 and coils with 15, even one at a time.
    pub write_multiple: bool,
}

/// One point of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Its name.
    pub name: PointId,
    /// Table.
    pub function: Function,
    /// 0-based address.
    pub address: u16,
    /// How registers become its value.
    pub codec: Codec,
    /// Engineering unit (may be empty).
    pub unit: String,
    /// Free text.
    pub description: String,
    /// When its value is reported upstream.
    pub report: Report,
    /// What a write may set it to; `None` for a read-only point (the default).
    pub write: Option<WriteSpec>,
}

impl ReportedDevice for Device {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn point_count(&self) -> usize {
        self.points.len()
    }

    fn policy(&self, index: usize) -> Option<&Report> {
        self.points.get(index).map(|p| &p.report)
    }
}

impl Point {
    /// Registers (or bits) the point spans.
    pub fn width(&self) -> u16 {
        if self.function.is_bits() {
            1
        } else {
            self.codec.registers()
        }
    }
}

impl Plan {
    /// The pipeline's spec: the ledger's meters, the engine's devices and rules, and each
    /// device's reporting policies.
    pub fn pipeline_spec(&self) -> PipelineSpec {
        PipelineSpec {
            ledger: self
                .energy
                .ledger_spec(&self.devices, self.gateway.timezone),
            engine: self.engine_spec(),
            devices: self
                .devices
                .iter()
                .map(|d| DeviceReport {
                    name: d.name.clone(),
                    points: d.points.iter().map(|p| p.report).collect(),
                })
                .collect(),
        }
    }
}

// The pipeline takes its spec, not the plan; this constructor assembles the spec where the
// plan is known, so the pure step does not name `config`.
impl Pipeline {
    /// Fresh stages for `plan`: every counter, rule and reporting memory starts empty.
    // By value, as the daemon, replay and the benches hand over their shared plan.
    #[allow(clippy::needless_pass_by_value)]
    pub fn new(plan: Arc<Plan>, taps: Taps) -> Self {
        Self::from_spec(plan.pipeline_spec(), taps)
    }
}
