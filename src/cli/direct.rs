//! A device reached without a config, for commissioning: `read --host`/`--serial` and `scan`.
//! Also the probe table that shows a few registers as every type in every byte order.

use std::path::PathBuf;
use std::time::Duration;

use crate::acquire::link::{Connection, ReadResult};
use crate::config::default_inter_frame_delay;
use crate::config::plan::{Function, Link, Parity, SerialSettings, TcpEndpoint, Transport};
use crate::decode::{ByteOrder, Codec, DataType, decode};
use crate::model::Name;

/// Where a device is, when no config says it: `--host` (Modbus TCP) or `--serial` (RTU).
#[derive(Debug, Clone, clap::Args)]
pub(super) struct Endpoint {
    /// Reach the device over Modbus TCP at this IP address or host name, without a config.
    #[arg(long, value_name = "HOST", conflicts_with = "serial")]
    pub(super) host: Option<String>,
    /// The TCP port of --host.
    #[arg(long, value_name = "PORT", default_value_t = 502, requires = "host")]
    pub(super) port: u16,
    /// Reach the device over Modbus RTU on this serial port (e.g. /dev/ttyUSB0), without a config.
    #[arg(long, value_name = "PATH")]
    pub(super) serial: Option<PathBuf>,
    /// How long to wait for each answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub(super) timeout_ms: u64,
}

impl Endpoint {
    /// Whether the device is given here rather than by a config.
    pub(super) fn is_given(&self) -> bool {
        self.host.is_some() || self.serial.is_some()
    }

    /// Each answer's timeout.
    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The link to the device, with these serial settings when it is a serial port.
    pub(super) fn link(&self, serial: SerialLine) -> Option<Link> {
        let transport = match (&self.host, &self.serial) {
            (Some(host), _) => Transport::Tcp(TcpEndpoint {
                host: host.clone(),
                port: self.port,
                connect_timeout: self.timeout().max(Duration::from_secs(3)),
            }),
            (None, Some(path)) => Transport::Rtu(SerialSettings {
                path: path.clone(),
                baud: serial.baud,
                parity: serial.parity,
                stop_bits: serial.stop_bits,
                inter_frame_delay: default_inter_frame_delay(serial.baud),
            }),
            (None, None) => return None,
        };
        Some(Link {
            name: Name::new("direct").ok()?,
            transport,
        })
    }

    /// The device's place for people: `192.0.2.7:502` or `/dev/ttyUSB0 9600 8N1`.
    pub(super) fn describe(&self, serial: SerialLine) -> String {
        self.link(serial)
            .map_or_else(String::new, |l| l.transport.describe())
    }
}

/// One serial line setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SerialLine {
    /// Bits per second.
    pub(super) baud: u32,
    /// Parity bit of each character (`none`, `even`, `odd`).
    pub(super) parity: Parity,
    /// 1 or 2.
    pub(super) stop_bits: u8,
}

/// Parity on the command line (the config's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ParityArg {
    /// No parity bit (8N1): the config's default.
    None,
    /// Even parity (8E1): the Modbus specification's default.
    Even,
    /// Odd parity (8O1).
    Odd,
}

impl From<ParityArg> for Parity {
    fn from(p: ParityArg) -> Self {
        match p {
            ParityArg::None => Parity::None,
            ParityArg::Even => Parity::Even,
            ParityArg::Odd => Parity::Odd,
        }
    }
}

/// A register as the command line names it: a Modicon number (40001) into table and address.
pub(super) fn parse_register(s: &str) -> Result<(Function, u16), String> {
    let number: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a register number such as 40001 or 30001"))?;
    crate::config::modicon(number)
}

/// A data type by its config name (`u16`, `f32`, `bcd32`…).
pub(super) fn parse_type(s: &str) -> Result<DataType, String> {
    PROBE_TYPES
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names: Vec<&str> = PROBE_TYPES.iter().map(|t| t.name()).collect();
            format!(
                "`{s}` is not a register type; use one of {}",
                names.join(", ")
            )
        })
}

/// A byte order by its config name (`ABCD`, `cdab`…).
pub(super) fn parse_order(s: &str) -> Result<ByteOrder, String> {
    ByteOrder::ALL
        .into_iter()
        .find(|o| o.to_string().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("`{s}` is not a byte order; use ABCD, CDAB, BADC or DCBA"))
}

/// The types a few raw registers can be shown as.
pub(super) const PROBE_TYPES: [DataType; 10] = [
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

/// Registers the probe reads: enough for the 64-bit types.
pub(super) const PROBE_REGISTERS: u16 = 4;

/// `words` as `ty` in `order`: integers exact, floats in `%g` style (shortest round trip, with
/// an exponent when very small or large), a short reason in parentheses when not valid.
pub(super) fn cell(words: &[u16], ty: DataType, order: ByteOrder) -> String {
    let codec = |t| Codec {
        order,
        ..Codec::plain(t)
    };
    if usize::from(ty.registers(1)) > words.len() {
        return "-".to_owned();
    }
    // Bit patterns through the signed decoder, which keeps every bit exactly.
    let bits = |t| match decode(words, &codec(t)) {
        Ok(crate::model::Value::I64(v)) => Some(v),
        _ => None,
    };
    match ty {
        DataType::F32 => bits(DataType::U32)
            .and_then(|b| u32::try_from(b).ok())
            .map_or_else(|| "-".to_owned(), |b| general(f32::from_bits(b))),
        DataType::F64 => bits(DataType::I64).map_or_else(
            || "-".to_owned(),
            |b| general(f64::from_bits(u64::from_ne_bytes(b.to_ne_bytes()))),
        ),
        DataType::U64 => bits(DataType::I64).map_or_else(
            || "-".to_owned(),
            |b| u64::from_ne_bytes(b.to_ne_bytes()).to_string(),
        ),
        _ => match decode(words, &codec(ty)) {
            Ok(v) => v.to_string(),
            Err(crate::decode::DecodeError::InvalidBcd(_)) => "(not bcd)".to_owned(),
            Err(e) => format!("({e})"),
        },
    }
}

/// A float as C's `%g` would choose, but with the shortest digits that read back the same:
/// plain between 1e-4 and 1e16, with an exponent outside (3.4e-19, not 0).
fn general<T: std::fmt::Display + std::fmt::LowerExp>(v: T) -> String {
    let sci = format!("{v:e}");
    let exponent = sci
        .rsplit_once('e')
        .and_then(|(_, e)| e.parse::<i32>().ok());
    match exponent {
        Some(e) if !(-4..16).contains(&e) => sci,
        _ => v.to_string(),
    }
}

/// The probe table of `words`: a row per type, a column per byte order, each column as wide
/// as its longest cell.
pub(super) fn probe_table(words: &[u16]) -> Vec<String> {
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once("TYPE".to_owned())
            .chain(ByteOrder::ALL.iter().map(ToString::to_string))
            .collect(),
    ];
    for ty in PROBE_TYPES {
        if usize::from(ty.registers(1)) > words.len() {
            continue;
        }
        rows.push(
            std::iter::once(ty.name().to_owned())
                .chain(ByteOrder::ALL.iter().map(|&o| cell(words, ty, o)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..=ByteOrder::ALL.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = format!("{:<w$}", r[0], w = widths[0]);
            for (text, w) in r.iter().zip(&widths).skip(1) {
                line.push_str(&format!("  {text:>w$}"));
            }
            line
        })
        .collect()
}

/// What one read of a probe or scan got back.
#[derive(Debug)]
pub(super) enum Reply {
    /// Registers or bits (bits as 0/1).
    Data(Vec<u16>),
    /// A Modbus exception: a device is there but refused this read.
    Exception(u8),
    /// Nothing within the timeout.
    Silence,
    /// The link failed (refused, reset, a garbled frame): the text says how.
    Failed(String),
}

/// Reads `count` registers (or bits) of `function` at `address` from `unit`, opening the link
/// first if needed; a device that refuses a long read near the end of its map is asked for
/// fewer registers, down to one.
pub(super) async fn read_shrinking(
    conn: &mut Connection,
    unit: u8,
    function: Function,
    address: u16,
    count: u16,
    timeout: Duration,
) -> Reply {
    let mut n = count.max(1);
    // Bounded: n halves from at most 125 to 1.
    loop {
        if let Err(e) = conn.ensure_open().await {
            return Reply::Failed(e.to_string());
        }
        let last = match conn.read(unit, function, address, n, timeout).await {
            ReadResult::Words(w) => return Reply::Data(w),
            ReadResult::Bits(b) => return Reply::Data(b.into_iter().map(u16::from).collect()),
            ReadResult::Exception(code) => Reply::Exception(code),
            ReadResult::Timeout => return Reply::Silence,
            ReadResult::Failed(e) => return Reply::Failed(e),
        };
        if !matches!(last, Reply::Exception(2)) || n == 1 {
            return last;
        }
        n /= 2;
    }
}

/// Registers as the manuals print them: `41C8 0000`.
pub(super) fn hex(words: &[u16]) -> String {
    words
        .iter()
        .map(|w| format!("{w:04X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Modbus exception's meaning, for people.
pub(super) fn exception_text(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(words: &[u16], ty: DataType) -> Vec<String> {
        ByteOrder::ALL.iter().map(|&o| cell(words, ty, o)).collect()
    }

    #[test]
    fn u64_cells_are_exact_beyond_i64() {
        // 14639531430600774000 printed for 0xCB2A_…: the f64 route lost the last digits.
        let words = [0xCB2A, 0x1B9D, 0x4C3E, 0x8F71];
        let expected = 0xCB2A_1B9D_4C3E_8F71_u64.to_string();
        assert_eq!(cells(&words, DataType::U64)[0], expected);
        assert_eq!(
            cell(&words, DataType::I64, ByteOrder::Abcd),
            0xCB2A_1B9D_4C3E_8F71_u64.cast_signed().to_string()
        );
    }

    #[test]
    fn tiny_and_huge_floats_keep_their_digits_with_an_exponent() {
        let tiny = 3.4e-19_f32.to_bits();
        let words = [(tiny >> 16) as u16, (tiny & 0xFFFF) as u16];
        assert_eq!(cell(&words, DataType::F32, ByteOrder::Abcd), "3.4e-19");
        let plain = 231.8_f32.to_bits();
        let words = [(plain >> 16) as u16, (plain & 0xFFFF) as u16];
        assert_eq!(cell(&words, DataType::F32, ByteOrder::Abcd), "231.8");
        assert_eq!(
            cell(&[words[1], words[0]], DataType::F32, ByteOrder::Cdab),
            "231.8"
        );
        let big = 6.02e23_f64.to_bits();
        let words = [
            (big >> 48) as u16,
            (big >> 32) as u16,
            (big >> 16) as u16,
            big as u16,
        ];
        assert_eq!(cell(&words, DataType::F64, ByteOrder::Abcd), "6.02e23");
        assert_eq!(cell(&[0x7FC0, 0], DataType::F32, ByteOrder::Abcd), "NaN");
    }

    #[test]
    fn every_column_is_as_wide_as_its_longest_cell() {
        let table = probe_table(&[0x1234, 0x56AB, 0xFFFF, 0xFFFF]);
        let header = &table[0];
        let lengths: Vec<usize> = table.iter().map(|l| l.chars().count()).collect();
        assert!(lengths.iter().all(|&n| n == lengths[0]), "{table:#?}");
        let bcd32 = table
            .iter()
            .find(|l| l.starts_with("bcd32"))
            .expect("bcd32 row");
        assert!(bcd32.contains("(not bcd)"), "{bcd32}");
        let bcd16 = table
            .iter()
            .find(|l| l.starts_with("bcd16"))
            .expect("bcd16 row");
        assert!(
            bcd16.contains(" 1234 ") && bcd16.contains("3412"),
            "{bcd16}"
        );
        assert!(header.ends_with("DCBA"), "{header}");
    }

    #[test]
    fn registers_types_and_orders_parse_as_the_config_writes_them() {
        assert_eq!(parse_register("40001"), Ok((Function::Holding, 0)));
        assert_eq!(parse_register("300010"), Ok((Function::Input, 9)));
        assert!(parse_register("50001").unwrap_err().contains("Modicon"));
        assert!(parse_register("x").unwrap_err().contains("`x`"));
        assert_eq!(parse_type("F32"), Ok(DataType::F32));
        assert!(parse_type("float").unwrap_err().contains("f32"));
        assert_eq!(parse_order("cdab"), Ok(ByteOrder::Cdab));
        assert!(parse_order("abdc").unwrap_err().contains("ABCD"));
    }
}
