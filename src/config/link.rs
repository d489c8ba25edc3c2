//! `[[links]]`: how each link is written (by `kind`) and what it resolves to — a TCP endpoint,
//! a serial port, or a serial line behind a TCP converter.

use std::net::IpAddr;
use std::time::Duration;

use super::describe;
use super::issue::Issues;
use super::load::deserialize_at;
use super::plan;
use super::raw::{RawLink, RawTcpLink};
use super::{check_range, ms, name_at};

pub(super) fn link_name(link: &RawLink) -> String {
    match link {
        RawLink::Tcp(l) => l.name.clone(),
        RawLink::Rtu(l) => l.name.clone(),
        RawLink::RtuOverTcp(l) => l.name.clone(),
    }
}

/// Deserializes a `[[links]]` entry by its `kind`.
///
/// Not through `RawLink`'s own (internally tagged) `Deserialize`: serde buffers tagged enums,
/// and the errors it then raises ("invalid value: integer `300`, expected u8") lose the key.
pub(super) fn deserialize_link(
    value: config::Value,
    key: &str,
    issues: &mut Issues,
) -> Option<RawLink> {
    let kinds = describe::list(describe::LINK_KINDS);
    let mut table = match value.clone().into_table() {
        Ok(t) => t,
        Err(_) => {
            // Let the error say what was found instead of a table.
            deserialize_at::<RawTcpLink>(value, key, issues);
            return None;
        }
    };
    let kind = match table.shift_remove("kind").map(config::Value::into_string) {
        None => {
            issues.push(
                format!("{key}.kind"),
                format!("required but missing; give one of {kinds}"),
            );
            return None;
        }
        Some(Err(_)) => {
            issues.push(
                format!("{key}.kind"),
                format!("expected a string, one of {kinds}"),
            );
            return None;
        }
        Some(Ok(k)) => k,
    };
    let value = config::Value::new(None, table);
    match kind.as_str() {
        "tcp" => deserialize_at(value, key, issues).map(RawLink::Tcp),
        "rtu" => deserialize_at(value, key, issues).map(RawLink::Rtu),
        "rtu_over_tcp" => deserialize_at(value, key, issues).map(RawLink::RtuOverTcp),
        other => {
            let kinds = "`tcp` (Modbus TCP), `rtu` (a serial port) or `rtu_over_tcp` \
                         (a serial-to-Ethernet converter)";
            let message = match describe::closest(other, describe::LINK_KINDS) {
                Some(s) => format!("`{other}` is not valid; did you mean `{s}`? Use {kinds}"),
                None => format!("`{other}` is not valid; use {kinds}"),
            };
            issues.push(format!("{key}.kind"), message);
            None
        }
    }
}

/// Whether `host` is an IP literal or a syntactically valid host name (RFC 1123).
///
/// A name whose last label is all digits is rejected: it can only be a mistyped IPv4 address
/// (`10.0.0.256`), and resolvers would treat it as one (RFC 1123 §2.1, RFC 3696 §2).
pub fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && !host
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
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
        .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        .unwrap_or(host);
    let mut ok = true;
    if !valid_host(host) {
        let message = if host.is_empty() {
            "empty; give an IPv4 or IPv6 address or a host name".to_owned()
        } else if host.contains(':') {
            format!("`{host}` is not a valid IPv6 address (e.g. \"fe80::1\" or \"[::1]\")")
        } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            format!(
                "`{host}` is not a valid IPv4 address: use four numbers 0-255, e.g. \
                 \"192.168.1.10\""
            )
        } else {
            format!(
                "`{host}` is neither an IP address nor a valid host name: use letters, \
                 digits, `-` and `.`, e.g. \"plc-01.plant.local\""
            )
        };
        issues.push(format!("{key}.host"), message);
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

pub(super) fn resolve_link(key: &str, raw: &RawLink, issues: &mut Issues) -> Option<plan::Link> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_ip_literals_are_valid_hosts() {
        for host in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "plc-01",
            "plc-01.plant.local",
            "a1",
        ] {
            assert!(valid_host(host), "{host}");
        }
    }

    #[test]
    fn an_all_numeric_name_is_a_mistyped_ipv4_address() {
        for host in [
            "10.0.0.256",
            "1.2.3",
            "300",
            "",
            "a..b",
            "-a",
            "a_b",
            "fe80::zz",
        ] {
            assert!(!valid_host(host), "{host}");
        }
    }
}
