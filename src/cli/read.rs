//! `plantwatch read`: poll one device once, or probe a register pair, for commissioning.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::acquire::link::{Connection, ReadResult};
use crate::acquire::poll_once;
use crate::clock::SystemClock;
use crate::config::plan::Function;
use crate::decode::{ByteOrder, Codec, DataType, decode};
use crate::model::Value;

/// Arguments of `read`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exits 69 when the device did not answer or no point came back good (every one bad or timed
out), so scripts can tell a dead device from a live one.

Examples:
  plantwatch read -c plantwatch.toml main-meter
  plantwatch read -c plantwatch.toml main-meter --probe 0x2006")]
pub(super) struct Args {
    /// The device to poll (its `name` in the config).
    #[arg(value_name = "DEVICE")]
    first: String,
    /// The device, when the deprecated `read CONFIG DEVICE` form put the config first.
    #[arg(hide = true)]
    second: Option<String>,
    /// Instead of the device's points, read 4 registers at this 0-based address (decimal or
    /// 0x hex) and show them as every type in all four byte/word orders.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_address)]
    probe: Option<u16>,
    /// Print the samples as one JSON object (for scripts and interop tests).
    #[arg(long, conflicts_with = "probe")]
    json: bool,
    /// Table for --probe.
    #[arg(long, value_enum, default_value_t = ProbeTable::Holding)]
    table: ProbeTable,
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

impl Args {
    /// The config of the deprecated `read CONFIG DEVICE` form.
    pub(super) fn positional_config(&self) -> Option<&Path> {
        self.second.is_some().then(|| Path::new(&self.first))
    }

    /// The device to poll.
    fn device(&self) -> &str {
        self.second.as_deref().unwrap_or(&self.first)
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
        let function = match args.table {
            ProbeTable::Holding => Function::Holding,
            ProbeTable::Input => Function::Input,
        };
        return probe(
            link.clone(),
            device.unit_id,
            device.timeout,
            function,
            address,
        )
        .await;
    }
    let polled = poll_once(&plan, device, &SystemClock).await;
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
    link: crate::config::plan::Link,
    unit: u8,
    timeout: std::time::Duration,
    function: Function,
    address: u16,
) -> anyhow::Result<ExitCode> {
    let unavailable = |e| super::failure(super::EX_UNAVAILABLE, e);
    let mut conn = Connection::new(link);
    conn.ensure_open()
        .await
        .map_err(|e| unavailable(anyhow::Error::new(e)))?;
    // Four registers cover 64-bit types; near the end of a map the device may refuse, so shrink.
    let mut words = None;
    for count in [4u16, 2, 1] {
        match conn.read(unit, function, address, count, timeout).await {
            ReadResult::Words(w) => {
                words = Some(w);
                break;
            }
            ReadResult::Exception(2) => {}
            ReadResult::Exception(code) => {
                anyhow::bail!("device answered exception {code:02} at {address:#06x}")
            }
            ReadResult::Timeout => {
                return Err(unavailable(anyhow::anyhow!(
                    "no answer from unit {unit} within {} ms",
                    timeout.as_millis()
                )));
            }
            ReadResult::Failed(e) => {
                return Err(unavailable(anyhow::anyhow!("link failed: {e}")));
            }
            ReadResult::Bits(_) => anyhow::bail!("unexpected bit response"),
        }
        if !conn.is_open() {
            conn.ensure_open()
                .await
                .map_err(|e| unavailable(anyhow::Error::new(e)))?;
        }
    }
    let words = words
        .with_context(|| format!("device refused every read at {address:#06x} (exception 02)"))?;
    let hex: Vec<String> = words.iter().map(|w| format!("{w:04X}")).collect();
    out!(
        "fc{:02} {address:#06x}: {} ({} registers)",
        function.code(),
        hex.join(" "),
        words.len()
    );
    out!(
        "{:<7} {:>22} {:>22} {:>22} {:>22}",
        "TYPE",
        "ABCD",
        "CDAB",
        "BADC",
        "DCBA"
    );
    let types = [
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::U64,
        DataType::I64,
        DataType::F64,
        DataType::Bcd16,
        DataType::Bcd32,
    ];
    for ty in types {
        if usize::from(ty.registers(1)) > words.len() {
            continue;
        }
        let cells: Vec<String> = ByteOrder::ALL
            .iter()
            .map(|&order| {
                let codec = Codec {
                    order,
                    ..Codec::plain(ty)
                };
                decode(&words, &codec).map_or_else(
                    |e| format!("({e})").chars().take(22).collect(),
                    |v| v.to_string(),
                )
            })
            .collect();
        out!(
            "{:<7} {:>22} {:>22} {:>22} {:>22}",
            ty.name(),
            cells[0],
            cells[1],
            cells[2],
            cells[3]
        );
    }
    out!("Pick the cell that matches the meter's display; set `type` and `order` on the point.");
    Ok(ExitCode::SUCCESS)
}
