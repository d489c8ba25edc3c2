//! Turns `config`/serde deserialization errors into issues that name the exact key and say
//! what would be valid.
//!
//! The `config` crate reports a field's key in several shapes (`Type { key }`, `At { key }`,
//! `NotFound(key)`) and words its messages for programmers ("an unsigned 32 bit integer",
//! "enum DataType does not have variant constructor float"). This module normalises all of
//! them to `devices[0].points.ua.type` plus a message for the person editing the file.
//!
//! Invariant: every message it produces says what would be valid, either from the error itself
//! (the list of keys or variants) or from [`hint`].

use config::ConfigError;
use serde::de::{DeserializeOwned, Visitor};

use super::raw::{Function, Parity, Ratio};
use crate::decode::{ByteOrder, DataType};

/// The `kind`s a `[[links]]` entry may have.
pub(super) const LINK_KINDS: &[&str] = &["tcp", "rtu", "rtu_over_tcp"];

/// What went wrong, anchored to a key.
#[derive(Debug)]
pub(super) struct Described {
    /// The full key path.
    pub(super) key: String,
    /// For the person editing the file.
    pub(super) message: String,
    /// The field, when the error is an unknown key (so the caller may drop it and go on).
    pub(super) unknown: Option<String>,
    /// The valid key the unknown one most resembles.
    pub(super) suggestion: Option<String>,
    /// The field, when the error is a missing required key.
    pub(super) missing: Option<String>,
}

/// Joins `base` and a relative `field` path (`points.ua`, `[2]`).
pub(super) fn join(base: &str, field: &str) -> String {
    if field.is_empty() {
        base.to_owned()
    } else if base.is_empty() {
        field.to_owned()
    } else if field.starts_with('[') {
        format!("{base}{field}")
    } else {
        format!("{base}.{field}")
    }
}

/// The last segment of a key path: `address` for `devices[0].points.ua.address`.
fn last_segment(path: &str) -> &str {
    let tail = path.rsplit('.').next().unwrap_or(path);
    tail.split('[').next().unwrap_or(tail)
}

/// Describes `err`, raised while deserializing the value at `key`.
pub(super) fn describe(err: &ConfigError, key: &str) -> Described {
    let mut d = describe_raw(err, key);
    d.message = with_hint(&d.message, None);
    d
}

/// Like [`describe`], but may leave a `{hint}` placeholder for the caller's field.
fn describe_raw(err: &ConfigError, key: &str) -> Described {
    match err {
        ConfigError::Type {
            unexpected,
            expected,
            key: field,
            ..
        } => {
            let field = field.as_deref().unwrap_or("");
            Described {
                key: join(key, field),
                message: wrong_type(&unexpected.to_string(), expected, field_hint(field)),
                unknown: None,
                suggestion: None,
                missing: None,
            }
        }
        ConfigError::NotFound(field) => missing(key, field),
        ConfigError::At {
            error, key: field, ..
        } => {
            let field = field.as_deref().unwrap_or("");
            let mut inner = describe_raw(error, &join(key, field));
            if inner.message.contains("{hint}") {
                inner.message = with_hint(&inner.message, field_hint(field));
            }
            inner
        }
        other => describe_message(&other.to_string(), key),
    }
}

fn missing(key: &str, field: &str) -> Described {
    let hint = match last_segment(field) {
        "kind" => Some(format!("one of {}", list(LINK_KINDS))),
        f => hint(f),
    };
    Described {
        key: join(key, field),
        message: match hint {
            Some(h) => format!("required but missing; give {h}"),
            None => "required but missing".to_owned(),
        },
        unknown: None,
        suggestion: None,
        missing: Some(field.to_owned()),
    }
}

/// A hint for `field`, or `None` for a whole element (no field named).
fn field_hint(field: &str) -> Option<String> {
    if field.is_empty() {
        None
    } else {
        hint(last_segment(field))
    }
}

fn with_hint(message: &str, hint: Option<String>) -> String {
    match hint {
        Some(h) => message.replace("{hint}", &format!("; use {h}")),
        None => message.replace("{hint}", ""),
    }
}

/// Describes a plain message (serde's wording, or config-rs's for enums).
fn describe_message(message: &str, key: &str) -> Described {
    let mut d = Described {
        key: key.to_owned(),
        message: String::new(),
        unknown: None,
        suggestion: None,
        missing: None,
    };
    if let Some(field) = backticked(message, "unknown field ") {
        let valid = backticked_all(message.split_once(", expected").map_or("", |(_, v)| v));
        let suggestion = closest(&field, &valid);
        d.message = match &suggestion {
            Some(s) => format!(
                "unknown key `{field}`; did you mean `{s}`? Valid keys: {}",
                valid.join(", ")
            ),
            None if valid.is_empty() => format!("unknown key `{field}`; no keys are valid here"),
            None => format!("unknown key `{field}`; valid keys: {}", valid.join(", ")),
        };
        d.key = join(key, &field);
        d.unknown = Some(field);
        d.suggestion = suggestion.map(str::to_owned);
        return d;
    }
    if let Some(field) = backticked(message, "missing field ") {
        return missing(key, &field);
    }
    if let Some(rest) = message.strip_prefix("enum ") {
        // config-rs: "enum DataType does not have variant constructor float"
        if let Some((name, variant)) = rest.split_once(" does not have variant constructor ") {
            d.message = bad_variant(variant, enum_variants(name));
            return d;
        }
    }
    if let Some(rest) = message.strip_prefix("value of enum ") {
        let name = rest.split_whitespace().next().unwrap_or("");
        d.message = match enum_variants(name) {
            Some(v) => format!("expected a string, one of {}", list(v)),
            None => "expected a string".to_owned(),
        };
        return d;
    }
    if let Some(variant) = backticked(message, "unknown variant ") {
        let valid = backticked_all(message.split_once(", expected").map_or("", |(_, v)| v));
        d.message = bad_variant(&variant, Some(&valid));
        return d;
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((unexpected, expected)) = rest.split_once(", expected ") {
            d.message = wrong_type(unexpected, expected, None) + "{hint}";
            return d;
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((unexpected, _)) = rest.split_once(", expected ") {
            if let Some(n) = backticked(unexpected, "integer ") {
                d.message = format!("{n} is out of range{{hint}}");
                return d;
            }
        }
    }
    d.message = message.to_owned();
    d
}

fn bad_variant<S: AsRef<str>>(variant: &str, valid: Option<&[S]>) -> String {
    let Some(valid) = valid else {
        return format!("`{variant}` is not valid here");
    };
    let names: Vec<&str> = valid.iter().map(AsRef::as_ref).collect();
    match closest(variant, &names) {
        Some(s) => format!(
            "`{variant}` is not valid; did you mean `{s}`? Use one of {}",
            list(&names)
        ),
        None => format!("`{variant}` is not valid; use one of {}", list(&names)),
    }
}

/// `expected …, found …`, in the file's vocabulary, with what would be valid.
fn wrong_type(unexpected: &str, expected: &str, hint: Option<String>) -> String {
    if expected.contains("integer") || is_rust_int(expected) {
        if let Some(n) = integer_in(unexpected) {
            return match hint {
                Some(h) => format!("{n} is out of range; use {h}"),
                None => format!("{n} is out of range for {}", friendly_expected(expected)),
            };
        }
    }
    let base = format!(
        "expected {}, found {}",
        friendly_expected(expected),
        friendly_unexpected(unexpected)
    );
    match hint {
        Some(h) => format!("{base}; use {h}"),
        None => base,
    }
}

fn is_rust_int(s: &str) -> bool {
    matches!(
        s,
        "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" | "usize"
    )
}

/// The integer in "64-bit integer `-1`" or "integer `300`".
fn integer_in(unexpected: &str) -> Option<String> {
    if !unexpected.contains("integer") {
        return None;
    }
    let start = unexpected.find('`')? + 1;
    let end = start + unexpected[start..].find('`')?;
    Some(unexpected[start..end].to_owned())
}

fn friendly_expected(expected: &str) -> &'static str {
    if expected.contains("integer") || is_rust_int(expected) {
        "a whole number"
    } else if expected.contains("floating") || matches!(expected, "f32" | "f64") {
        "a number"
    } else if expected.contains("bool") {
        "true or false"
    } else if expected.contains("map") || expected.starts_with("struct") {
        "a table"
    } else if expected.contains("seq") || expected.contains("array") {
        "an array"
    } else if expected.contains("string") || expected.contains("str") {
        "a string"
    } else {
        "another type"
    }
}

fn friendly_unexpected(unexpected: &str) -> String {
    if let Some(n) = integer_in(unexpected) {
        return format!("the whole number {n}");
    }
    match unexpected {
        "sequence" => "an array".to_owned(),
        "map" => "a table".to_owned(),
        "unit value" => "nothing".to_owned(),
        other => other
            .strip_prefix("floating point ")
            .map(|v| format!("the number {}", v.trim_matches('`')))
            .or_else(|| {
                other
                    .strip_prefix("boolean ")
                    .map(|v| format!("boolean {}", v.trim_matches('`')))
            })
            .unwrap_or_else(|| other.to_owned()),
    }
}

/// What is valid for a key, by its name (the same name means the same thing in every section).
pub(super) fn hint(field: &str) -> Option<String> {
    let h = match field {
        "site" | "id" | "name" => "1 to 64 of a-z, 0-9, `_` and `-`",
        "link" => "the `name` of a [[links]] entry",
        "timezone" => "an IANA time zone such as \"Asia/Shanghai\"",
        "profiles_dir" => "a directory path",
        "host" => "an IPv4 or IPv6 address or a host name",
        "port" => "1 to 65535",
        "connect_timeout_ms" | "timeout_ms" => "10 to 60000 (ms)",
        "path" => "a serial device such as \"/dev/ttyUSB0\"",
        "baud" => "300 to 921600",
        "stop_bits" => "1 or 2",
        "inter_frame_delay_ms" => "0 to 1000 (ms)",
        "unit_id" => "1 to 247 (0 to 255 on a tcp link)",
        "profile" => "the name of a built-in or profiles_dir profile",
        "exclude_points" => "a list of point names, e.g. [\"ua\", \"ub\"]",
        "points" => "a table of points: [devices.points.NAME]",
        "poll_interval_ms" => "10 to 86400000 (ms)",
        "retries" => "0 to 10",
        "retry_backoff_ms" => "0 to 60000 (ms)",
        "offline_after_failures" => "1 to 1000",
        "offline_retry_ms" => "100 to 86400000 (ms)",
        "max_registers_per_request" => "1 to 125",
        "max_bits_per_request" => "1 to 2000",
        "max_gap_registers" => "0 to 124",
        "max_gap_bits" => "0 to 1999",
        "pt_ratio" | "ct_ratio" => "a positive number",
        "address" => "0 to 65535",
        "register" => "a Modicon register number such as 40001 or 300001",
        "scale" => "a finite, non-zero number",
        "offset" => "a finite number",
        "bit" => "0 to 15",
        "length" => "1 to 125 (registers)",
        "writable" | "verify" | "write_multiple" => "true or false",
        "max_rate" => "1 to 600 (writes a minute)",
        "allowed" => "a list of values, e.g. [false, true] or [0, 2]",
        "unit" | "description" | "manufacturer" | "model" | "source" | "notes" => "text",
        "kind" => return Some(format!("one of {}", list(LINK_KINDS))),
        "type" => return enum_variants("DataType").map(|v| format!("one of {}", list(v))),
        "order" => return enum_variants("ByteOrder").map(|v| format!("one of {}", list(v))),
        "function" => return enum_variants("Function").map(|v| format!("one of {}", list(v))),
        "ratio" => return enum_variants("Ratio").map(|v| format!("one of {}", list(v))),
        "parity" => return enum_variants("Parity").map(|v| format!("one of {}", list(v))),
        _ => return None,
    };
    Some(h.to_owned())
}

/// `` `a`, `b`, `c` ``
pub(super) fn list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The config names of the variants of the config enum called `name` (its Rust name).
fn enum_variants(name: &str) -> Option<&'static [&'static str]> {
    [
        variants_of::<DataType>(),
        variants_of::<ByteOrder>(),
        variants_of::<Function>(),
        variants_of::<Ratio>(),
        variants_of::<Parity>(),
        variants_of::<super::rules::Severity>(),
        variants_of::<crate::sink::webhook::Format>(),
        variants_of::<crate::process::coal::EnergyKind>(),
        variants_of::<crate::process::counter::GapPolicy>(),
        variants_of::<crate::process::tou::Period>(),
        variants_of::<crate::platform::record::StatType>(),
    ]
    .into_iter()
    .flatten()
    .find(|(n, _)| *n == name)
    .map(|(_, v)| v)
}

/// Asks `T`'s `Deserialize` impl for its enum name and variant names (as serde renames them),
/// so that messages never drift from the types.
fn variants_of<T: DeserializeOwned>() -> Option<(&'static str, &'static [&'static str])> {
    let mut slot = None;
    match T::deserialize(EnumProbe(&mut slot)) {
        Ok(_) | Err(_) => slot,
    }
}

struct EnumProbe<'a>(&'a mut Option<(&'static str, &'static [&'static str])>);

impl<'de> serde::Deserializer<'de> for EnumProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not an enum"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some((name, variants));
        Err(serde::de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

/// The first backticked word after `after`.
fn backticked(message: &str, after: &str) -> Option<String> {
    let rest = &message[message.find(after)? + after.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// Every backticked word in `s`.
fn backticked_all(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// The candidate `word` was most likely meant to be, if any is close.
pub(super) fn closest<'a, S: AsRef<str>>(word: &str, candidates: &'a [S]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(AsRef::as_ref)
        .filter_map(|c| {
            let lower = c.to_ascii_lowercase();
            let d = edit_distance(&word, &lower);
            let prefix = (lower.len() >= 2 && word.starts_with(&lower))
                || (word.len() >= 3 && lower.starts_with(&word));
            // On a tie, a prefix (`uaa` → `ua`, not `uab`) is the likelier intent.
            (d <= 2.max(lower.len() / 4) || prefix).then_some(((d, !prefix), c))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_variants_come_from_the_serde_impls() {
        let types = enum_variants("DataType").unwrap();
        assert!(types.contains(&"f32") && types.contains(&"bcd16"));
        assert_eq!(
            enum_variants("ByteOrder").unwrap(),
            ["ABCD", "CDAB", "BADC", "DCBA"]
        );
        assert_eq!(
            enum_variants("Function").unwrap(),
            ["coil", "discrete_input", "holding", "input"]
        );
        assert_eq!(enum_variants("Parity").unwrap(), ["none", "even", "odd"]);
        assert!(enum_variants("Nope").is_none());
    }

    #[test]
    fn closest_suggests_typos_and_prefixes_but_not_strangers() {
        let keys = ["name", "host", "port", "connect_timeout_ms"];
        assert_eq!(closest("hots", &keys), Some("host"));
        assert_eq!(
            closest("connect_timeout", &keys),
            Some("connect_timeout_ms")
        );
        assert_eq!(closest("baudrate", &["baud", "path"]), Some("baud"));
        assert_eq!(closest("holdings", &["coil", "holding"]), Some("holding"));
        assert_eq!(closest("zzz", &keys), None);
    }

    #[test]
    fn every_range_hint_names_values() {
        for field in [
            "unit_id", "address", "bit", "type", "order", "kind", "parity",
        ] {
            assert!(hint(field).is_some(), "{field}");
        }
    }
}
