//! What acquisition is asked to do: the links, the devices on them and their points, as
//! `config` resolves them. Acquisition owns these types; `config` assembles them from the file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::plan::{ReadPlan, RequestLimits};
use super::write::WriteSpec;
use crate::decode::Codec;
use crate::model::{DeviceId, LinkId, PointId};
use crate::process::report::{Report, ReportedDevice};

/// The links and the devices on them: what acquisition needs of a whole configuration.
#[derive(Debug, Clone, Copy)]
pub struct Fleet<'a> {
    /// Links in file order.
    pub links: &'a [Link],
    /// Devices in file order; each names its link by index into `links`.
    pub devices: &'a [Device],
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// The Modbus table a point is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Function 01, coils.
    Coil,
    /// Function 02, discrete inputs.
    DiscreteInput,
    /// Function 03, holding registers.
    Holding,
    /// Function 04, input registers.
    Input,
}

impl Function {
    /// The Modbus function code used to read this table.
    pub fn code(self) -> u8 {
        match self {
            Function::Coil => 1,
            Function::DiscreteInput => 2,
            Function::Holding => 3,
            Function::Input => 4,
        }
    }

    /// Whether the table holds bits rather than registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Function::Coil | Function::DiscreteInput)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Function::Coil => "coil",
            Function::DiscreteInput => "discrete_input",
            Function::Holding => "holding",
            Function::Input => "input",
        }
    }
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
    /// TCP port (502 for Modbus).
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
    /// Parity bit of each character.
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
    /// Index into the links of its [`Fleet`].
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
    /// The Modbus table it lives in, which sets the read and write function codes.
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

    fn poll_interval(&self) -> Duration {
        self.poll_interval
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
