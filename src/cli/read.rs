//! `plantwatch read`: poll one device once, or probe a register pair, for commissioning.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::direct::{self, Endpoint, ParityArg, Reply, SerialLine};
use crate::acquire::link::Connection;
use crate::acquire::poll_once;
use crate::clock::SystemClock;
use crate::config::plan::{Function, Link};
use crate::decode::{ByteOrder, DataType};
use crate::model::Value;

/// Arguments of `read`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without a config, --host or --serial reaches a device directly; --register names what to read
(a Modicon number: 40001 is the first holding register, 30001 the first input register,
10001 a discrete input, 1 a coil). With --type the value is shown in that type and --order;
without it, four registers are shown as every type in all four byte orders, so the cell that
matches the meter's display tells which `type` and `order` to write in the config.

Exits 69 when the device did not answer, answered with an exception, or no point came back
good (every one bad or timed out), so scripts can tell a dead device from a live one.

Examples:
  plantwatch read -c plantwatch.toml main-meter
  plantwatch read -c plantwatch.toml main-meter --probe 0x2006
  plantwatch read --host 192.168.1.20 --unit 1 --register 48199 --type f32 --order cdab
  plantwatch read --serial /dev/ttyUSB0 --baud 9600 --parity even --unit 3 --register 30001")]
pub(super) struct Args {
    /// The device to poll (its `name` in the config).
    #[arg(value_name = "DEVICE", required_unless_present_any = ["host", "serial"],
          conflicts_with_all = ["host", "serial"])]
    first: Option<String>,
    /// The device, when the deprecated `read CONFIG DEVICE` form put the config first.
    #[arg(hide = true)]
    second: Option<String>,
    /// Instead of the device's points, read 4 registers at this 0-based address (decimal or
    /// 0x hex) and show them as every type in all four byte/word orders.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_address, conflicts_with = "register")]
    probe: Option<u16>,
    /// Print the samples as one JSON object (for scripts and interop tests).
    #[arg(long, conflicts_with_all = ["probe", "host", "serial"])]
    json: bool,
    /// Table for --probe.
    #[arg(long, value_enum, default_value_t = ProbeTable::Holding)]
    table: ProbeTable,
    #[command(flatten)]
    endpoint: Endpoint,
    /// The unit id (slave address) of the device given by --host or --serial.
    #[arg(long, value_name = "ID", default_value_t = 1, requires = "Endpoint")]
    unit: u8,
    /// With --host or --serial: the Modicon register to read (40001, 30001, 10001, 1).
    #[arg(long, value_name = "NUMBER", value_parser = direct::parse_register, requires = "Endpoint")]
    register: Option<(Function, u16)>,
    /// Show the register as this type (u16, i16, u32, i32, f32, u64, i64, f64, bcd16, bcd32).
    #[arg(long = "type", value_name = "TYPE", value_parser = direct::parse_type, requires = "register")]
    data_type: Option<DataType>,
    /// The byte order of --type: ABCD (big-endian), CDAB (words swapped), BADC, DCBA.
    #[arg(long, value_name = "ORDER", value_parser = direct::parse_order, default_value = "ABCD",
          requires = "data_type")]
    order: ByteOrder,
    /// Baud rate of --serial.
    #[arg(long, default_value_t = 9600, requires = "serial")]
    baud: u32,
    /// Parity of --serial.
    #[arg(long, value_enum, default_value_t = ParityArg::None, requires = "serial")]
    parity: ParityArg,
    /// Stop bits of --serial.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2),
          requires = "serial")]
    stop_bits: u8,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProbeTable {
    /// Holding registers (function 03).
    Holding,
    /// Input registers (function 04).
    Input,
}

fn parse_address(s: &str) -> Result<u16, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse::<u16>(),
    };
    parsed.map_err(|_| {
        format!("`{s}` is not a register address: use 0 to 65535 or 0x0000 to 0xFFFF (0-based)")
    })
}

impl ProbeTable {
    fn function(self) -> Function {
        match self {
            ProbeTable::Holding => Function::Holding,
            ProbeTable::Input => Function::Input,
        }
    }
}

impl Args {
    /// The config of the deprecated `read CONFIG DEVICE` form.
    pub(super) fn positional_config(&self) -> Option<&Path> {
        self.second
            .is_some()
            .then_some(self.first.as_deref())
            .flatten()
            .map(Path::new)
    }

    /// The device to poll.
    fn device(&self) -> &str {
        self.second
            .as_deref()
            .or(self.first.as_deref())
            .unwrap_or_default()
    }

    /// Whether the device is given by --host or --serial, without a config.
    pub(super) fn is_direct(&self) -> bool {
        self.endpoint.is_given()
    }
}

pub(super) async fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let plan = match super::load(config, profiles_dir) {
        Ok(p) => p,
        Err(errors) => return Ok(super::config_failed(&errors)),
    };
    let device = plan.device(args.device()).with_context(|| {
        let names: Vec<&str> = plan.devices.iter().map(|d| d.name.as_str()).collect();
        format!(
            "no device `{}` in {}; devices: {}",
            args.device(),
            config.display(),
            names.join(", ")
        )
    })?;
    let link = &plan.links[device.link];
    if let Some(address) = args.probe {
        return probe(
            link.clone(),
            device.unit_id,
            device.timeout,
            args.table.function(),
            address,
        )
        .await;
    }
    let polled = poll_once(plan.fleet(), device, &SystemClock).await;
    if args.json {
        let mut points = serde_json::Map::new();
        for (s, p) in polled.batch.samples.iter().zip(device.points.iter()) {
            let v = match &s.value {
                Some(Value::F64(f)) => serde_json::json!(f),
                Some(Value::I64(i)) => serde_json::json!(i),
                Some(Value::Bool(b)) => serde_json::json!(b),
                Some(Value::Str(t)) => serde_json::json!(t),
                None => serde_json::Value::Null,
            };
            points.insert(
                s.point.to_string(),
                serde_json::json!({"v": v, "q": s.quality.label(), "reason": s.quality.reason(), "unit": p.unit, "ts": s.ts.0}),
            );
        }
        let out = serde_json::json!({"device": device.name.as_str(), "answered": polled.answered, "error": polled.error, "points": points});
        out!("{out}");
        return Ok(outcome(polled.answered, &polled.batch.samples));
    }
    out!(
        "{} via {} {} unit {}",
        device.name,
        link.name,
        link.transport.describe(),
        device.unit_id
    );
    if let Some(err) = &polled.error {
        out!("error: {err}");
    }
    out!(
        "{:<18} {:>16} {:<6} {:<18} TIME",
        "POINT",
        "VALUE",
        "UNIT",
        "QUALITY"
    );
    let mut good = 0;
    for (s, p) in polled.batch.samples.iter().zip(device.points.iter()) {
        good += usize::from(s.quality == crate::model::Quality::Good);
        out!(
            "{:<18} {:>16} {:<6} {:<18} {}",
            s.point,
            s.value
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            p.unit,
            s.quality.to_string(),
            s.ts
        );
    }
    out!("{good} of {} points good", device.points.len());
    Ok(outcome(polled.answered, &polled.batch.samples))
}

/// Success when the device answered with at least one good point; "unavailable" (69) when it
/// did not answer, or every point came back bad (an exception on every read, a timeout).
fn outcome(answered: bool, samples: &[crate::model::PointSample]) -> ExitCode {
    let any_good = samples
        .iter()
        .any(|s| s.quality == crate::model::Quality::Good);
    if answered && (any_good || samples.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EX_UNAVAILABLE)
    }
}

async fn probe(
    link: Link,
    unit: u8,
    timeout: std::time::Duration,
    function: Function,
    address: u16,
) -> anyhow::Result<ExitCode> {
    let mut conn = Connection::new(link);
    let words = answer(
        direct::read_shrinking(
            &mut conn,
            unit,
            function,
            address,
            direct::PROBE_REGISTERS,
            timeout,
        )
        .await,
        unit,
        function,
        address,
        timeout,
    )?;
    out!(
        "fc{:02} {address:#06x}: {} ({} registers)",
        function.code(),
        direct::hex(&words),
        words.len()
    );
    for line in direct::probe_table(&words) {
        out!("{line}");
    }
    out!("Pick the cell that matches the meter's display; set `type` and `order` on the point.");
    Ok(ExitCode::SUCCESS)
}

/// `read --host`/`--serial`: one register of a device that no config describes yet.
pub(super) async fn run_direct(args: &Args) -> anyhow::Result<ExitCode> {
    let line = SerialLine {
        baud: args.baud,
        parity: args.parity.into(),
        stop_bits: args.stop_bits,
    };
    let link = args
        .endpoint
        .link(line)
        .context("give --host or --serial")?;
    let (function, address) = match (args.register, args.probe) {
        (Some(register), _) => register,
        (None, Some(address)) => (args.table.function(), address),
        (None, None) => {
            return Err(super::usage(
                "say what to read: --register NUMBER (40001 is the first holding register)",
            ));
        }
    };
    out!(
        "{} unit {}: {} (fc{:02} address {address})",
        args.endpoint.describe(line),
        args.unit,
        modicon_name(function, address),
        function.code()
    );
    let timeout = args.endpoint.timeout();
    if function.is_bits() {
        let mut conn = Connection::new(link);
        let bits = answer(
            direct::read_shrinking(&mut conn, args.unit, function, address, 1, timeout).await,
            args.unit,
            function,
            address,
            timeout,
        )?;
        out!(
            "{}",
            if bits.first() == Some(&1) {
                "on"
            } else {
                "off"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(data_type) = args.data_type else {
        return probe(link, args.unit, timeout, function, address).await;
    };
    let mut conn = Connection::new(link);
    let count = data_type.registers(1);
    let words = answer(
        direct::read_shrinking(&mut conn, args.unit, function, address, count, timeout).await,
        args.unit,
        function,
        address,
        timeout,
    )?;
    if words.len() < usize::from(count) {
        return Err(super::failure(
            super::EX_UNAVAILABLE,
            anyhow::anyhow!(
                "{data_type} needs {count} registers; the device gave {} at {}",
                words.len(),
                modicon_name(function, address)
            ),
        ));
    }
    out!("registers: {}", direct::hex(&words));
    out!(
        "{data_type} {}: {}",
        args.order,
        direct::cell(&words, data_type, args.order)
    );
    Ok(ExitCode::SUCCESS)
}

/// The data of a reply, or why there is none (exit 69: the device is not usable as asked).
fn answer(
    reply: Reply,
    unit: u8,
    function: Function,
    address: u16,
    timeout: std::time::Duration,
) -> anyhow::Result<Vec<u16>> {
    let at = modicon_name(function, address);
    let error = match reply {
        Reply::Data(words) => return Ok(words),
        Reply::Exception(code) => anyhow::anyhow!(
            "unit {unit} answered exception {code:02} ({}) at {at}",
            direct::exception_text(code)
        ),
        Reply::Silence => anyhow::anyhow!(
            "no answer from unit {unit} within {} ms at {at}",
            timeout.as_millis()
        ),
        Reply::Failed(e) => anyhow::anyhow!("link failed reading unit {unit} at {at}: {e}"),
    };
    Err(super::failure(super::EX_UNAVAILABLE, error))
}

/// The Modicon number of a table's 0-based address, as the manuals print it (40001).
fn modicon_name(function: Function, address: u16) -> String {
    let base: u32 = match function {
        Function::Coil => 1,
        Function::DiscreteInput => 10_001,
        Function::Input => 30_001,
        Function::Holding => 40_001,
    };
    let number = base + u32::from(address);
    // Five digits while they suffice, six beyond (as the config accepts both); coils have
    // only the five-digit form.
    match function {
        _ if address <= 9_998 => format!("register {number:05}"),
        Function::Coil => format!("coil at address {address}"),
        _ => format!("register {}", number + (base - 1) * 9),
    }
}
