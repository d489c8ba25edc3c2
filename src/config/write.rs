//! A point's write keys (`writable`, `min`/`max` or `allowed`, `max_rate`, `verify`),
//! resolved into acquisition's [`WriteSpec`]. Writes are off unless a point opts in with
//! limits, so every misuse of these keys is an error, never a silent read-only point.

use super::issue::Issues;
use super::raw::{Function, RawAllowed, RawPoint};
use crate::acquire::write::{WriteLimits, WriteSpec};
use crate::decode::{Codec, DataType, encode};
use crate::model::Value;

/// Function 16 carries at most 123 registers (Modbus Application Protocol v1.1b3 §6.12).
const MAX_WRITE_REGISTERS: u16 = 123;

/// Writes per minute a point may allow at most.
const MAX_RATE: u32 = 600;

/// The write spec of the point at `key`; `None` when it is read-only or its keys are wrong
/// (each problem is pushed to `issues`).
pub(super) fn resolve_write(
    key: &str,
    p: &RawPoint,
    function: Function,
    codec: &Codec,
    issues: &mut Issues,
) -> Option<WriteSpec> {
    let given = p.write_keys();
    if given.is_empty() {
        return None;
    }
    if matches!(function, Function::Input | Function::DiscreteInput) {
        for k in given {
            issues.push(
                format!("{key}.{k}"),
                format!(
                    "`{}` is a read-only table (function {:02}): nothing can be written there; \
                     remove `{k}`",
                    function.name(),
                    function.code()
                ),
            );
        }
        return None;
    }
    if p.writable != Some(true) {
        for k in given.into_iter().filter(|k| *k != "writable") {
            issues.push(
                format!("{key}.{k}"),
                "only applies with writable = true; set that or remove this key",
            );
        }
        return None;
    }
    let before = issues.0.len();
    let switch = function.is_bits() || codec.data_type == DataType::Bit;
    if codec.data_type == DataType::String && codec.length > MAX_WRITE_REGISTERS {
        issues.push(
            format!("{key}.writable"),
            format!(
                "a `string` of {} registers cannot be written: one function 16 request carries \
                 at most {MAX_WRITE_REGISTERS}",
                codec.length
            ),
        );
    }
    let limits = match (p.min, p.max, &p.allowed) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            issues.push(
                format!("{key}.allowed"),
                "give `min` and `max` or `allowed`, not both",
            );
            None
        }
        (None, None, None) => {
            let example = if switch {
                "allowed = [false, true]"
            } else if codec.data_type == DataType::String {
                "allowed = [\"auto\", \"manual\"]"
            } else {
                "min = 0 and max = 100"
            };
            issues.push(
                format!("{key}.writable"),
                format!(
                    "a writable point needs limits: `min` and `max`, or `allowed = [...]` \
                     (e.g. {example})"
                ),
            );
            None
        }
        (Some(_), None, None) => {
            issues.push(format!("{key}.max"), "required with `min`");
            None
        }
        (None, Some(_), None) => {
            issues.push(format!("{key}.min"), "required with `max`");
            None
        }
        (Some(min), Some(max), None) => range(key, min, max, switch, codec, issues),
        (None, None, Some(values)) => allowed(key, values, switch, codec, issues),
    };
    if let Some(rate) = p.max_rate.filter(|r| !(1..=MAX_RATE).contains(r)) {
        issues.push(
            format!("{key}.max_rate"),
            format!("{rate} is out of range; use 1 to {MAX_RATE} writes a minute"),
        );
    }
    if issues.0.len() != before {
        return None;
    }
    Some(WriteSpec {
        limits: limits?,
        max_rate: p.max_rate,
        verify: p.verify.unwrap_or(true),
    })
}

/// Whether `value` encodes into `codec`'s registers; the problem otherwise.
fn encodes(value: &Value, switch: bool, codec: &Codec) -> Result<(), String> {
    if switch || codec.data_type == DataType::Bool {
        return Ok(());
    }
    encode(value, codec).map(drop).map_err(|err| {
        if codec.is_scaled() {
            format!(
                "{err} (after removing scale {} and offset {})",
                codec.scale, codec.offset
            )
        } else {
            err.to_string()
        }
    })
}

fn range(
    key: &str,
    min: f64,
    max: f64,
    switch: bool,
    codec: &Codec,
    issues: &mut Issues,
) -> Option<WriteLimits> {
    let before = issues.0.len();
    if codec.data_type == DataType::String {
        issues.push(
            format!("{key}.min"),
            "text is limited with `allowed = [\"...\"]`, not `min` and `max`",
        );
        return None;
    }
    for (k, v) in [("min", min), ("max", max)] {
        if !v.is_finite() {
            issues.push(format!("{key}.{k}"), format!("{v} is not a finite number"));
        } else if let Err(why) = encodes(&Value::F64(v), switch, codec) {
            issues.push(
                format!("{key}.{k}"),
                format!("{v} cannot be written to this point: {why}"),
            );
        }
    }
    if min > max {
        issues.push(
            format!("{key}.min"),
            format!("{min} is above max = {max}; min must not exceed max"),
        );
    }
    (issues.0.len() == before).then_some(WriteLimits::Range { min, max })
}

fn allowed(
    key: &str,
    values: &[RawAllowed],
    switch: bool,
    codec: &Codec,
    issues: &mut Issues,
) -> Option<WriteLimits> {
    let at = format!("{key}.allowed");
    if values.is_empty() {
        issues.push(
            at,
            "empty: list the values a write may set, or remove `writable`",
        );
        return None;
    }
    let text = codec.data_type == DataType::String;
    let mut out = Vec::with_capacity(values.len());
    for (i, raw) in values.iter().enumerate() {
        let value = match (raw, switch, text) {
            (RawAllowed::Bool(b), true, _) => Ok(Value::Bool(*b)),
            (RawAllowed::Int(0), true, _) => Ok(Value::Bool(false)),
            (RawAllowed::Int(1), true, _) => Ok(Value::Bool(true)),
            (_, true, _) => Err("a coil or bit is written as true/false (or 1/0)".to_owned()),
            (RawAllowed::Text(s), false, true) => Ok(Value::Str(s.clone())),
            (_, false, true) => Err("a `string` point takes text values".to_owned()),
            (RawAllowed::Int(v), false, false) => Ok(Value::I64(*v)),
            (RawAllowed::Float(v), false, false) if v.is_finite() => Ok(Value::F64(*v)),
            (RawAllowed::Float(v), false, false) => Err(format!("{v} is not a finite number")),
            (RawAllowed::Bool(_) | RawAllowed::Text(_), false, false) => Err(format!(
                "a `{}` point takes numbers",
                codec.data_type.name()
            )),
        };
        match value.and_then(|v| encodes(&v, switch, codec).map(|()| v)) {
            Ok(v) => out.push(v),
            Err(why) => issues.push(format!("{at}[{i}]"), why),
        }
    }
    (out.len() == values.len()).then_some(WriteLimits::Allowed(out))
}
