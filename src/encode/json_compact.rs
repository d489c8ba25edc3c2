//! The compact JSON profile, payload version 2 (docs/payload.md): telemetry for metered links,
//! and the retained per-device schema that lets it leave out everything a consumer already
//! knows.
//!
//! Invariants: telemetry carries `"v":2`, the device's `seq` and poll time exactly as v1 does;
//! good values sit in one plain map, written with the same number rule as v1; a point that is
//! not good is named in `bad` or `unc` with its reason, and a bad point has no value. Points keep
//! config order, which is the schema's order.

use std::io::Write as _;

use crate::model::{PointSample, Quality, SampleBatch, Timestamp};

use super::json_v1::{push_str, push_value, sample_value};

/// The profile version written as `"v"`.
pub const VERSION: u32 = 2;

/// `{"v":2,"d":…,"t":…,"s":…,"p":{"ua":231.4,…}}`, plus `"bad":{"ia":"timeout"}` and
/// `"unc":{"ib":"held"}` for points that are not good, and `"bf":true` for messages replayed
/// after an outage.
pub fn telemetry(batch: &SampleBatch, seq: u64, backfill: bool) -> Vec<u8> {
    telemetry_of(
        batch.device.as_str(),
        batch.tick,
        &batch.samples,
        seq,
        backfill,
    )
}

/// [`telemetry`] from its parts, for samples with owned or borrowed names (the outbox renders
/// stored samples in place).
pub fn telemetry_of<N: AsRef<str>>(
    device: &str,
    tick: Timestamp,
    samples: &[PointSample<N>],
    seq: u64,
    backfill: bool,
) -> Vec<u8> {
    let ts = samples.iter().map(|s| s.ts).max().unwrap_or(tick);
    // A good point takes its name, 4 bytes of punctuation and its value (5 to 8 characters for
    // a meter reading).
    let names: usize = samples.iter().map(|s| s.point.as_ref().len()).sum();
    let mut out = Vec::with_capacity(64 + device.len() + names + 12 * samples.len());
    out.extend_from_slice(b"{\"v\":2,\"d\":");
    push_str(&mut out, device);
    let _infallible = write!(out, ",\"t\":{},\"s\":{seq},\"p\":{{", ts.0);
    let mut first = true;
    for s in samples {
        let Some(value) = sample_value(s) else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        push_str(&mut out, s.point.as_ref());
        out.push(b':');
        push_value(&mut out, Some(value));
    }
    out.push(b'}');
    for (key, wanted) in [
        (
            "bad",
            (|q| matches!(q, Quality::Bad(_))) as fn(Quality) -> bool,
        ),
        ("unc", |q| matches!(q, Quality::Uncertain(_))),
    ] {
        let mut open = false;
        for s in samples.iter().filter(|s| wanted(s.quality)) {
            let Some(reason) = s.quality.reason() else {
                continue;
            };
            // `p` always comes first, so every entry and every group opens with a comma.
            out.push(b',');
            if !open {
                push_str(&mut out, key);
                out.extend_from_slice(b":{");
                open = true;
            }
            push_str(&mut out, s.point.as_ref());
            out.push(b':');
            push_str(&mut out, &reason);
        }
        if open {
            out.push(b'}');
        }
    }
    if backfill {
        out.extend_from_slice(b",\"bf\":true");
    }
    out.push(b'}');
    out
}

/// One point as the schema message describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaPoint<'a> {
    /// The point's name: its key in `p`, `bad` and `unc`.
    pub name: &'a str,
    /// Engineering unit (may be empty).
    pub unit: &'a str,
    /// What its value is on the wire: `number`, `integer`, `bool` or `string`.
    pub kind: &'a str,
}

/// `{prefix}/schema/{device}`, retained: `{"v":2,"device":…,"ts":…,"points":[{"name":"ua",
/// "unit":"V","type":"number"},…]}` in config order, the order telemetry keeps.
pub fn schema(device: &str, points: &[SchemaPoint<'_>], ts: Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + device.len() + 40 * points.len());
    out.extend_from_slice(b"{\"v\":2,\"device\":");
    push_str(&mut out, device);
    let _infallible = write!(out, ",\"ts\":{},\"points\":[", ts.0);
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        push_str(&mut out, p.name);
        out.extend_from_slice(b",\"unit\":");
        push_str(&mut out, p.unit);
        out.extend_from_slice(b",\"type\":");
        push_str(&mut out, p.kind);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, Name, UncertainReason, Value};
    use serde_json::{Value as Json, json};

    fn batch() -> SampleBatch {
        let n = |s: &str| Name::new(s).unwrap();
        let good = |name: &str, ts: i64, v: Value| PointSample {
            point: n(name),
            ts: Timestamp(ts),
            value: Some(v),
            quality: Quality::Good,
        };
        SampleBatch {
            device: n("main-meter"),
            tick: Timestamp(1_700_000_000_000),
            samples: vec![
                good("ua", 1_700_000_000_012, Value::F64(231.4)),
                PointSample {
                    point: n("ia"),
                    ts: Timestamp(1_700_000_000_015),
                    value: Some(Value::F64(5.0)),
                    quality: Quality::Bad(BadReason::Timeout),
                },
                good("run", 1_700_000_000_015, Value::Bool(true)),
                PointSample {
                    point: n("ib"),
                    ts: Timestamp(1_700_000_000_015),
                    value: Some(Value::F64(4.2)),
                    quality: Quality::Uncertain(UncertainReason::Held),
                },
                good("starts", 1_700_000_000_015, Value::I64(12)),
            ],
        }
    }

    #[test]
    fn telemetry_matches_the_documented_example_byte_for_byte() {
        let text = String::from_utf8(telemetry(&batch(), 42, false)).unwrap();
        assert_eq!(
            text,
            r#"{"v":2,"d":"main-meter","t":1700000000015,"s":42,"p":{"ua":231.4,"run":true,"ib":4.2,"starts":12},"bad":{"ia":"timeout"},"unc":{"ib":"held"}}"#
        );
    }

    #[test]
    fn an_all_good_poll_carries_no_quality_and_backfill_is_flagged() {
        let mut b = batch();
        b.samples.retain(|s| s.quality == Quality::Good);
        let parsed: Json = serde_json::from_slice(&telemetry(&b, 7, true)).unwrap();
        assert_eq!(
            parsed,
            json!({"v":2,"d":"main-meter","t":1_700_000_000_015_i64,"s":7,
                   "p":{"ua":231.4,"run":true,"starts":12},"bf":true})
        );
    }

    #[test]
    fn the_schema_lists_points_in_order_with_unit_and_type() {
        let points = [
            SchemaPoint {
                name: "ua",
                unit: "V",
                kind: "number",
            },
            SchemaPoint {
                name: "run",
                unit: "",
                kind: "bool",
            },
        ];
        let text = String::from_utf8(schema("main-meter", &points, Timestamp(5))).unwrap();
        assert_eq!(
            text,
            r#"{"v":2,"device":"main-meter","ts":5,"points":[{"name":"ua","unit":"V","type":"number"},{"name":"run","unit":"","type":"bool"}]}"#
        );
    }

    proptest::proptest! {
        #[test]
        fn any_poll_encodes_to_json_that_parses_back(values in proptest::collection::vec(proptest::prelude::any::<f64>(), 0..30), text in "\\PC*", seq in 0u64..u64::MAX) {
            let mut b = batch();
            b.samples.truncate(1);
            b.samples[0].value = Some(Value::Str(text.clone()));
            for (i, v) in values.iter().enumerate() {
                let mut s = b.samples[0].clone();
                s.point = Name::new(&format!("p{i}")).unwrap();
                s.value = Some(Value::F64(*v));
                b.samples.push(s);
            }
            let parsed: Json = serde_json::from_slice(&telemetry(&b, seq, false)).unwrap();
            proptest::prop_assert_eq!(parsed["s"].as_u64(), Some(seq));
            proptest::prop_assert_eq!(parsed["p"]["ua"].as_str(), Some(text.as_str()));
            for (i, v) in values.iter().enumerate() {
                let got = &parsed["p"][format!("p{i}")];
                if v.is_finite() {
                    proptest::prop_assert_eq!(got.as_f64(), Some(*v));
                } else { proptest::prop_assert!(got.is_null()); }
            }
        }
    }
}
