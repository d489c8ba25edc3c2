//! A device's points: Modicon registers and 0-based addresses, the codec (type, order,
//! scale, bit, length, decimals) and each point's reporting policy.

use std::time::Duration;

use crate::acquire::plan::RequestLimits;
use crate::decode::{ByteOrder, Codec, DataType, MAX_DECIMALS};

use super::issue::Issues;
use super::raw::{self, Function, Ratio, RawDevice, RawPoint, RawPointDefaults};
use super::{name_at, plan, write};

/// Modicon register number → (table, 0-based address), or why not.
pub fn modicon(register: u32) -> Result<(Function, u16), String> {
    let (function, base) = match register {
        1..=9_999 => (Function::Coil, 1),
        10_001..=19_999 => (Function::DiscreteInput, 10_001),
        30_001..=39_999 => (Function::Input, 30_001),
        40_001..=49_999 => (Function::Holding, 40_001),
        100_001..=165_536 => (Function::DiscreteInput, 100_001),
        300_001..=365_536 => (Function::Input, 300_001),
        400_001..=465_536 => (Function::Holding, 400_001),
        _ => {
            return Err(format!(
                "{register} is not a Modicon register number: use 00001-09999 (coils), \
                 1xxxx, 3xxxx or 4xxxx (5 digits) or 1xxxxx, 3xxxxx, 4xxxxx (6 digits); \
                 or give a 0-based `address` with `function`"
            ));
        }
    };
    u16::try_from(register - base)
        .map(|a| (function, a))
        .map_err(|_| format!("{register} is out of range"))
}

/// Overlays `top` (inline) on `base` (profile): fields given inline win.
pub(super) fn overlay(base: &RawPoint, top: &RawPoint) -> RawPoint {
    let mut p = base.clone();
    if top.address.is_some() || top.register.is_some() {
        p.address = top.address;
        p.register = top.register;
    }
    if top.register.is_some() {
        // A Modicon register names its own table; the profile's `function` no longer applies.
        p.function = None;
    }
    // The pattern names every field but the two above: a key added to `RawPoint` fails the
    // build here until it is overlaid, instead of being dropped from profile overrides.
    macro_rules! take {
        ($($f:ident),*) => {
            let RawPoint { address: _, register: _, $($f),* } = top;
            $( if $f.is_some() { p.$f = $f.clone(); } )*
        };
    }
    take!(
        function,
        data_type,
        order,
        scale,
        offset,
        unit,
        decimals,
        bit,
        length,
        ratio,
        description,
        report,
        deadband,
        deadband_percent,
        max_silence_ms,
        min_interval_ms,
        writable,
        min,
        max,
        allowed,
        max_rate,
        verify
    );
    p
}

/// What a point is resolved against, from its device and the sinks.
#[derive(Clone, Copy)]
pub(super) struct PointContext {
    pub(super) limits: RequestLimits,
    /// Every JSON sink is `json_compact` (see [`resolve_report`]).
    pub(super) compact_only: bool,
}

pub(super) fn resolve_point(
    key: &str,
    name: &str,
    p: &RawPoint,
    defaults: &RawPointDefaults,
    device: &RawDevice,
    cx: PointContext,
    issues: &mut Issues,
) -> Option<plan::Point> {
    let PointContext {
        limits,
        compact_only,
    } = cx;
    let before = issues.0.len();
    let name = name_at(issues, key.to_owned(), name);
    let (function, address) = match (p.address, p.register) {
        (Some(_), Some(_)) => {
            issues.push(
                format!("{key}.register"),
                "give `address` (0-based) or `register` (Modicon), not both",
            );
            (None, None)
        }
        (None, None) => {
            issues.push(format!("{key}.address"), "required: a 0-based `address` (with `function`) or a Modicon `register` such as 40001");
            (None, None)
        }
        (Some(a), None) => {
            let f = p
                .function
                .or(defaults.function)
                .unwrap_or(Function::Holding);
            match u16::try_from(a) {
                Ok(a) => (Some(f), Some(a)),
                Err(_) => {
                    issues.push(
                        format!("{key}.address"),
                        format!("{a} is out of range; use 0 to 65535"),
                    );
                    (Some(f), None)
                }
            }
        }
        (None, Some(r)) => match modicon(r) {
            Ok((f, a)) => {
                if let Some(given) = p.function.filter(|g| *g != f) {
                    issues.push(
                        format!("{key}.function"),
                        format!(
                            "`{}` contradicts register {r}, which is in the `{}` table \
                             (function {:02}); drop `function` or give a 0-based `address`",
                            given.name(),
                            f.name(),
                            f.code()
                        ),
                    );
                }
                (Some(f), Some(a))
            }
            Err(msg) => {
                issues.push(format!("{key}.register"), msg);
                (None, None)
            }
        },
    };
    let function = function?;
    let data_type = p
        .data_type
        .or(if function.is_bits() {
            Some(DataType::Bool)
        } else {
            defaults.data_type
        })
        .unwrap_or(DataType::U16);
    if function.is_bits() != (data_type == DataType::Bool) {
        let fix = if function.is_bits() {
            "coils and discrete inputs are `bool`"
        } else {
            "`bool` is for coils and discrete inputs; use `bit` with `bit = N` for a bit of a register"
        };
        issues.push(
            format!("{key}.type"),
            format!(
                "`{data_type}` cannot be read with function {} ({}): {fix}",
                function.code(),
                function.name()
            ),
        );
    }
    let bit = match (data_type, p.bit) {
        (DataType::Bit, None) => {
            issues.push(
                format!("{key}.bit"),
                "required for type `bit`: 0 (least significant) to 15",
            );
            0
        }
        (DataType::Bit, Some(b)) if b > 15 => {
            issues.push(
                format!("{key}.bit"),
                format!("{b} is out of range; use 0 to 15"),
            );
            0
        }
        (DataType::Bit, Some(b)) => u8::try_from(b).unwrap_or(0),
        (_, Some(_)) => {
            issues.push(
                format!("{key}.bit"),
                format!("only valid with type = \"bit\", not `{data_type}`"),
            );
            0
        }
        (_, None) => 0,
    };
    let length = match (data_type, p.length) {
        (DataType::String, None) => {
            issues.push(
                format!("{key}.length"),
                "required for type `string`: registers, 1 to 125",
            );
            1
        }
        (DataType::String, Some(l)) if !(1..=125).contains(&l) => {
            issues.push(
                format!("{key}.length"),
                format!("{l} is out of range; use 1 to 125 registers"),
            );
            1
        }
        (DataType::String, Some(l)) => u16::try_from(l).unwrap_or(1),
        (_, Some(_)) => {
            issues.push(
                format!("{key}.length"),
                format!("only valid with type = \"string\", not `{data_type}`"),
            );
            1
        }
        (_, None) => 1,
    };
    let mut scale = p.scale.unwrap_or(1.0);
    let offset = p.offset.unwrap_or(0.0);
    if !scale.is_finite() || scale == 0.0 {
        issues.push(
            format!("{key}.scale"),
            format!("{scale} is not a usable multiplier; use a finite, non-zero number"),
        );
    }
    if !offset.is_finite() {
        issues.push(format!("{key}.offset"), "must be a finite number");
    }
    match p.ratio.unwrap_or_default() {
        Ratio::None => {}
        Ratio::Pt => scale *= device.pt_ratio,
        Ratio::Ct => scale *= device.ct_ratio,
        Ratio::PtCt => scale *= device.pt_ratio * device.ct_ratio,
    }
    let mut codec = Codec {
        data_type,
        order: p.order.or(defaults.order).unwrap_or(ByteOrder::Abcd),
        scale,
        offset,
        bit,
        length,
        decimals: None,
    };
    codec.decimals = resolve_decimals(key, p.decimals, &codec, issues);
    if let Some(address) = address {
        let width = if function.is_bits() {
            1
        } else {
            codec.registers()
        };
        if u32::from(address) + u32::from(width) > 65_536 {
            issues.push(
                format!("{key}.address"),
                format!(
                    "{address} + {width} registers runs past 65535; `{data_type}` needs an \
                     address of at most {}",
                    65_536 - u32::from(width)
                ),
            );
        }
        if !function.is_bits() && width > limits.max_registers {
            issues.push(
                format!("{key}.type"),
                format!(
                    "`{data_type}` needs {width} registers but max_registers_per_request is {}; \
                     raise it (up to 125) or read fewer registers",
                    limits.max_registers
                ),
            );
        }
    }
    if issues.0.len() != before {
        return None;
    }
    let write = write::resolve_write(key, p, function, &codec, issues);
    if issues.0.len() != before {
        return None;
    }
    let report = resolve_report(key, p, device, compact_only.then_some(&codec), issues)?;
    Some(plan::Point {
        name: name?,
        function,
        address: address?,
        codec,
        unit: p.unit.clone().unwrap_or_default(),
        description: p.description.clone().unwrap_or_default(),
        report,
        write,
    })
}

/// A point's `decimals`: at most [`MAX_DECIMALS`], and only where the value can have a
/// fraction (a float, or a scaled integer or bit).
fn resolve_decimals(
    key: &str,
    given: Option<u32>,
    codec: &Codec,
    issues: &mut Issues,
) -> Option<u8> {
    let n = given?;
    let fractional = matches!(codec.data_type, DataType::F32 | DataType::F64)
        || (codec.data_type != DataType::String && codec.is_scaled());
    if !fractional {
        issues.push(
            format!("{key}.decimals"),
            format!(
                "a{} `{}` value has no fraction to round; set `scale`, or remove `decimals`",
                if codec.data_type == DataType::String {
                    ""
                } else {
                    "n unscaled"
                },
                codec.data_type
            ),
        );
        return None;
    }
    match u8::try_from(n) {
        Ok(n) if n <= MAX_DECIMALS => Some(n),
        _ => {
            issues.push(
                format!("{key}.decimals"),
                format!("{n} is out of range; use 0 to {MAX_DECIMALS}"),
            );
            None
        }
    }
}

/// A point's reporting policy: its own keys, else its device's, else every poll; with
/// `compact` (the point's codec, when every JSON sink is compact), on change with a deadband
/// of the point's resolution.
fn resolve_report(
    key: &str,
    p: &RawPoint,
    device: &RawDevice,
    compact: Option<&Codec>,
    issues: &mut Issues,
) -> Option<plan::Report> {
    let before = issues.0.len();
    // A device-level key is checked once per point: report each problem once, not per point.
    let push = |issues: &mut Issues, at: String, message: String| {
        if !issues.0.iter().any(|i| i.key == at && i.message == message) {
            issues.push(at, message);
        }
    };
    let defaults = plan::Report::default();
    let written = p.report.or(device.report);
    let mode = match (written, compact) {
        (Some(mode), _) => mode,
        (None, Some(_)) => raw::ReportMode::OnChange,
        (None, None) => raw::ReportMode::default(),
    };
    let written_deadband = p.deadband.or(device.deadband);
    let derived = written_deadband.is_none()
        && written.is_none()
        && compact.is_some()
        && p.deadband_percent.or(device.deadband_percent).is_none();
    let deadband = written_deadband.or_else(|| {
        // Half a step: a change of one step in the written digits (0.1 V as 231.5 - 231.4 =
        // 0.0999…) must pass. A written percent deadband decides alone.
        derived.then(|| compact.map_or(0.0, Codec::resolution) / 2.0)
    });
    let percent = p.deadband_percent.or(device.deadband_percent);
    let silence = p.max_silence_ms.or(device.max_silence_ms);
    let interval = p.min_interval_ms.or(device.min_interval_ms);
    // Name the key where the value was written: the point's own, or the device's.
    let at = |field: &str, on_point: bool| {
        if on_point {
            format!("{key}.{field}")
        } else {
            format!(
                "{}.{field}",
                key.rsplit_once(".points.").map_or(key, |(d, _)| d)
            )
        }
    };
    // A device's keys are for its on-change points: one of its points that chose every poll
    // itself just does not use them.
    let inherits_quietly = p.report == Some(raw::ReportMode::EveryPoll);
    if mode == raw::ReportMode::EveryPoll {
        for (field, given, on_point) in [
            ("deadband", deadband.is_some(), p.deadband.is_some()),
            (
                "deadband_percent",
                percent.is_some(),
                p.deadband_percent.is_some(),
            ),
            (
                "max_silence_ms",
                silence.is_some(),
                p.max_silence_ms.is_some(),
            ),
            (
                "min_interval_ms",
                interval.is_some(),
                p.min_interval_ms.is_some(),
            ),
        ] {
            if given && (on_point || !inherits_quietly) {
                push(
                    issues,
                    at(field, on_point),
                    "only applies with report = \"on_change\"; set that or remove this key".into(),
                );
            }
        }
    }
    if let Some(d) = deadband.filter(|d| !d.is_finite() || *d < 0.0) {
        push(
            issues,
            at("deadband", p.deadband.is_some()),
            format!("{d} is not valid; use a number of at least 0 (engineering units)"),
        );
    }
    if let Some(d) = percent.filter(|d| !d.is_finite() || !(0.0..=100.0).contains(d)) {
        push(
            issues,
            at("deadband_percent", p.deadband_percent.is_some()),
            format!("{d} is out of range; use 0 to 100"),
        );
    }
    if let Some(s) = silence.filter(|s| !(1000..=604_800_000).contains(s)) {
        push(
            issues,
            at("max_silence_ms", p.max_silence_ms.is_some()),
            format!("{s} is out of range; use 1000 ms to 7 days (604800000)"),
        );
    }
    let max_silence = silence.map_or(defaults.max_silence, Duration::from_millis);
    // Judged against a valid silence only: a bad one has its own error.
    let silence_valid = silence.is_none_or(|s| (1000..=604_800_000).contains(&s));
    if silence_valid && let Some(i) = interval.filter(|i| u128::from(*i) >= max_silence.as_millis())
    {
        let whose = if p.max_silence_ms.is_some() && p.min_interval_ms.is_none() {
            format!(" (this point's, `{key}.max_silence_ms`)")
        } else {
            String::new()
        };
        push(
            issues,
            at("min_interval_ms", p.min_interval_ms.is_some()),
            format!(
                "{i} is out of range; use 0 (a move goes at once) up to less than \
                 max_silence_ms, which is {} ms{whose}",
                max_silence.as_millis()
            ),
        );
    }
    if issues.0.len() != before {
        return None;
    }
    let report = plan::Report {
        mode,
        deadband: deadband.unwrap_or(defaults.deadband),
        deadband_percent: percent.unwrap_or(defaults.deadband_percent),
        max_silence,
        // A compact-only gateway is on a metered link, whoever chose on-change: a device that
        // keeps moving sends at most one message per interval, and never waits so long that
        // a short silence could not end (docs/payload.md, "Reporting by exception").
        min_interval: interval.map_or_else(
            || {
                if compact.is_some() && mode == raw::ReportMode::OnChange {
                    crate::process::report::DEFAULT_MIN_INTERVAL.min(max_silence / 2)
                } else {
                    Duration::ZERO
                }
            },
            Duration::from_millis,
        ),
        // The metered default also ignores what the reading's own scatter moves it by
        // (docs/payload.md, "Reporting by exception is the default").
        noise: if derived {
            crate::process::report::DEFAULT_NOISE
        } else {
            0.0
        },
    };
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modicon_numbers_map_to_tables_and_zero_based_addresses() {
        assert_eq!(modicon(1), Ok((Function::Coil, 0)));
        assert_eq!(modicon(10_001), Ok((Function::DiscreteInput, 0)));
        assert_eq!(modicon(30_001), Ok((Function::Input, 0)));
        assert_eq!(modicon(40_001), Ok((Function::Holding, 0)));
        assert_eq!(modicon(300_001), Ok((Function::Input, 0)));
        assert_eq!(modicon(465_536), Ok((Function::Holding, 65_535)));
        for bad in [0, 20_001, 50_000, 99_999, 465_537] {
            assert!(modicon(bad).is_err(), "{bad}");
        }
    }
}
