//! `plantwatch scan`: which unit ids answer on a TCP gateway or a serial bus, and at which
//! serial settings, before a config exists.

use std::process::ExitCode;

use anyhow::Context as _;

use super::direct::{self, Endpoint, ParityArg, Reply, SerialLine};
use crate::acquire::link::Connection;
use crate::config::plan::{Function, Link};

/// Arguments of `scan`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each try reads one register of one unit id and waits at most --timeout-ms for the answer, so
a scan takes at most (settings × unit ids × timeout): the line before the first try says how
long. A unit that answers with a Modbus exception is there (it only refused that register);
on a TCP gateway, exceptions 0A and 0B mean nobody answered behind it. On serial, a garbled
answer at one setting usually means a device that talks at another baud rate or parity.

Exits 0 when some unit answered, 69 when none did.

Examples:
  plantwatch scan --host 192.168.1.20 --units 1-10
  plantwatch scan --serial /dev/ttyUSB0 --baud 9600,19200 --parity none,even --timeout-ms 200")]
pub(super) struct Args {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The unit ids to try: a range and/or a list, e.g. `1-247` or `1,2,10-20`.
    #[arg(long, value_name = "IDS", default_value = "1-247", value_parser = parse_units)]
    units: UnitIds,
    /// The register each try reads (a Modicon number; 40001 is the first holding register).
    #[arg(long, value_name = "NUMBER", default_value = "40001", value_parser = direct::parse_register)]
    register: (Function, u16),
    /// Baud rates to try on --serial, e.g. `9600,19200`.
    #[arg(
        long,
        value_name = "RATES",
        value_delimiter = ',',
        default_value = "9600,19200",
        requires = "serial"
    )]
    baud: Vec<u32>,
    /// Parities to try on --serial, e.g. `none,even`.
    #[arg(
        long,
        value_name = "PARITIES",
        value_enum,
        value_delimiter = ',',
        default_value = "none,even",
        requires = "serial"
    )]
    parity: Vec<ParityArg>,
    /// Stop bits on --serial.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2),
          requires = "serial")]
    stop_bits: u8,
    /// Stop at the first unit that answers.
    #[arg(long)]
    first: bool,
}

/// A set of unit ids, in the order given, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnitIds(Vec<u8>);

fn parse_units(s: &str) -> Result<UnitIds, String> {
    let mut ids = Vec::new();
    for part in s.split(',').map(str::trim) {
        let id = |t: &str| {
            t.trim()
                .parse::<u8>()
                .map_err(|_| format!("`{t}` is not a unit id: use 0 to 247"))
                .and_then(|n| {
                    if n <= 247 {
                        Ok(n)
                    } else {
                        Err(format!("{n} is not a unit id: Modbus allows 0 to 247"))
                    }
                })
        };
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (id(a)?, id(b)?),
            None => (id(part)?, id(part)?),
        };
        if from > to {
            return Err(format!("`{part}` runs backwards; write the lower id first"));
        }
        for n in from..=to {
            if !ids.contains(&n) {
                ids.push(n);
            }
        }
    }
    Ok(UnitIds(ids))
}

/// One unit that answered, at one line setting.
struct Found {
    unit: u8,
    setting: String,
    reply: String,
}

pub(super) async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !args.endpoint.is_given() {
        return Err(super::usage(
            "say where to scan: --host HOST (Modbus TCP) or --serial PATH (RTU)",
        ));
    }
    let lines: Vec<SerialLine> = if args.endpoint.serial.is_some() {
        args.baud
            .iter()
            .flat_map(|&baud| {
                args.parity.iter().map(move |&p| SerialLine {
                    baud,
                    parity: p.into(),
                    stop_bits: args.stop_bits,
                })
            })
            .collect()
    } else {
        // TCP has no line settings; one pass.
        vec![SerialLine {
            baud: 9600,
            parity: crate::config::plan::Parity::None,
            stop_bits: 1,
        }]
    };
    let timeout = args.endpoint.timeout();
    let tries = lines.len() * args.units.0.len();
    let most = timeout * u32::try_from(tries).unwrap_or(u32::MAX);
    out!(
        "scanning {} unit id(s) at {} setting(s), {} ms each: at most {} s",
        args.units.0.len(),
        lines.len(),
        timeout.as_millis(),
        most.as_secs().max(1)
    );
    let (function, address) = args.register;
    let mut found = Vec::new();
    let mut garbled = Vec::new();
    'lines: for &line in &lines {
        let link: Link = args.endpoint.link(line).context("no endpoint")?;
        let setting = args.endpoint.describe(line);
        let mut conn = Connection::new(link);
        for &unit in &args.units.0 {
            let reply =
                direct::read_shrinking(&mut conn, unit, function, address, 1, timeout).await;
            let text = match reply {
                Reply::Data(words) => format!("answered: {}", direct::hex(&words)),
                Reply::Exception(code @ (0x0A | 0x0B)) if args.endpoint.host.is_some() => {
                    tracing::debug!(unit, code, "gateway: nobody behind it");
                    continue;
                }
                Reply::Exception(code) => format!(
                    "answered with exception {code:02} ({})",
                    direct::exception_text(code)
                ),
                Reply::Silence => continue,
                Reply::Failed(e) if args.endpoint.host.is_some() => {
                    // No TCP connection at all: no unit id will do better.
                    return Err(super::failure(
                        super::EX_UNAVAILABLE,
                        anyhow::anyhow!("{setting}: {e}"),
                    ));
                }
                Reply::Failed(e) => {
                    garbled.push(format!("{setting} unit {unit}: {e}"));
                    continue;
                }
            };
            out!("{setting} unit {unit}: {text}");
            found.push(Found {
                unit,
                setting: setting.clone(),
                reply: text,
            });
            if args.first {
                break 'lines;
            }
        }
    }
    for g in &garbled {
        out!("garbled: {g} (a device at another baud rate or parity?)");
    }
    if found.is_empty() {
        out!("no unit answered");
        return Ok(ExitCode::from(super::EX_UNAVAILABLE));
    }
    out!("{} unit(s) answered:", found.len());
    for f in &found {
        out!("  unit {:>3}  {}  {}", f.unit, f.setting, f.reply);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_ids_take_ranges_and_lists_once_each() {
        assert_eq!(parse_units("1-3,2,10"), Ok(UnitIds(vec![1, 2, 3, 10])));
        assert_eq!(parse_units("247").map(|u| u.0.len()), Ok(1));
        assert!(parse_units("0-248").unwrap_err().contains("248"));
        assert!(parse_units("5-1").unwrap_err().contains("backwards"));
        assert!(parse_units("a").unwrap_err().contains("`a`"));
    }
}
