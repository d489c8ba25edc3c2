//! The compact JSON profile, payload version 2 (docs/payload.md): telemetry for metered links,
//! and the retained per-device schema that lets it leave out everything a consumer already
//! knows.
//!
//! Invariants: telemetry carries `"v":2`, the device's `seq` and poll time exactly as v1 does;
//! values are written with the same number rule as v1, either in a map by name or, when the
//! message names the schema it was written against (`"sc"`), as an array in that schema's
//! order; a point that is not good is named in `bad` or `unc` with its reason, and a bad point
//! has no value. Points keep config order, which is the schema's order.

use std::collections::HashMap;
use std::io::Write as _;

use sha2::{Digest as _, Sha256};

use crate::model::{PointSample, Quality, SampleBatch, Timestamp};

use super::json_v1::{push_str, push_value, sample_value};

/// The profile version written as `"v"`.
pub const VERSION: u32 = 2;

/// `{"v":2,"d":…,"t":…,"s":…,"p":{"ua":231.4,…}}`, plus `"bad":{"ia":"timeout"}` and
/// `"unc":{"ib":"held"}` for points that are not good, and `"bf":true` for messages replayed
/// after an outage. Always the named form; [`telemetry_of`] with a [`Layout`] may write `p`
/// positionally.
pub fn telemetry(batch: &SampleBatch, seq: u64, backfill: bool) -> Vec<u8> {
    telemetry_of(
        batch.device.as_str(),
        batch.tick,
        &batch.samples,
        seq,
        backfill,
        None,
    )
}

/// The point order of one schema message, as telemetry may be written against it: `p` as an
/// array whose element `i` is the value of the schema's point `i`, named by the schema's `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The schema's `id` ([`schema_id`]).
    id: String,
    /// Each point's position in the schema, by name.
    index: HashMap<String, usize>,
}

impl Layout {
    /// The layout of a schema whose `id` is `id` and whose points are `names`, in order.
    pub fn new<'a>(id: &str, names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            id: id.to_owned(),
            index: names
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n.to_owned(), i))
                .collect(),
        }
    }

    /// The layout a schema message (as [`schema`] writes it) fixes; `None` for anything else.
    pub fn of_schema(payload: &[u8]) -> Option<Self> {
        let doc: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let names = doc["points"]
            .as_array()?
            .iter()
            .map(|p| p["name"].as_str())
            .collect::<Option<Vec<&str>>>()?;
        Some(Self::new(doc["id"].as_str()?, names))
    }

    /// The schema's `id`.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// [`telemetry`] from its parts, for samples with owned or borrowed names (the outbox renders
/// stored samples in place). With `layout`, `p` is written as an array in that schema's order
/// when every sample names one of its points and the array is the shorter form; otherwise (a
/// row polled under another point list, or a message of few values) as the named map.
pub fn telemetry_of<N: AsRef<str>>(
    device: &str,
    tick: Timestamp,
    samples: &[PointSample<N>],
    seq: u64,
    backfill: bool,
    layout: Option<&Layout>,
) -> Vec<u8> {
    let ts = samples.iter().map(|s| s.ts).max().unwrap_or(tick);
    let named = || {
        // A good point takes its name, 4 bytes of punctuation and its value (5 to 8 characters
        // for a meter reading).
        let names: usize = samples.iter().map(|s| s.point.as_ref().len()).sum();
        let mut out = Vec::with_capacity(64 + device.len() + names + 12 * samples.len());
        head(&mut out, device, ts, seq, None);
        out.push(b'{');
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
        tail(&mut out, samples, backfill);
        out
    };
    let Some(positional) = layout.and_then(|l| positional(device, ts, samples, seq, backfill, l))
    else {
        return named();
    };
    let named = named();
    if positional.len() < named.len() {
        positional
    } else {
        named
    }
}

/// `{"v":2,"d":…,"t":…,"s":…,` and, for a positional message, `"sc":…,`, up to `"p":`.
fn head(out: &mut Vec<u8>, device: &str, ts: Timestamp, seq: u64, schema: Option<&str>) {
    out.extend_from_slice(b"{\"v\":2,\"d\":");
    push_str(out, device);
    let _infallible = write!(out, ",\"t\":{},\"s\":{seq},", ts.0);
    if let Some(id) = schema {
        out.extend_from_slice(b"\"sc\":");
        push_str(out, id);
        out.push(b',');
    }
    out.extend_from_slice(b"\"p\":");
}

/// `p` as an array in `layout`'s order, up to the last point that has a value (`null` for a
/// point before it that has none here); `None` when a sample names a point `layout` does not
/// have, which only the named form can carry.
fn positional<N: AsRef<str>>(
    device: &str,
    ts: Timestamp,
    samples: &[PointSample<N>],
    seq: u64,
    backfill: bool,
    layout: &Layout,
) -> Option<Vec<u8>> {
    let mut slots: Vec<Option<&crate::model::Value>> = Vec::new();
    for s in samples {
        let at = *layout.index.get(s.point.as_ref())?;
        let Some(value) = sample_value(s) else {
            continue;
        };
        if slots.len() <= at {
            slots.resize(at + 1, None);
        }
        slots[at] = Some(value);
    }
    let mut out = Vec::with_capacity(80 + device.len() + 8 * slots.len());
    head(&mut out, device, ts, seq, Some(&layout.id));
    out.push(b'[');
    for (i, v) in slots.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_value(&mut out, *v);
    }
    out.push(b']');
    tail(&mut out, samples, backfill);
    Some(out)
}

/// `"bad"`, `"unc"` and `"bf"` (both forms name the points that are not good), and the
/// closing brace.
fn tail<N: AsRef<str>>(out: &mut Vec<u8>, samples: &[PointSample<N>], backfill: bool) {
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
                push_str(out, key);
                out.extend_from_slice(b":{");
                open = true;
            }
            push_str(out, s.point.as_ref());
            out.push(b':');
            push_str(out, &reason);
        }
        if open {
            out.push(b'}');
        }
    }
    if backfill {
        out.extend_from_slice(b",\"bf\":true");
    }
    out.push(b'}');
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

/// The `points` array of a schema message, as [`schema`] writes it.
fn schema_points(points: &[SchemaPoint<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 40 * points.len());
    out.push(b'[');
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
    out.push(b']');
    out
}

/// A schema's `id`: the first 8 hex digits of the SHA-256 of its `points` array as written.
/// Points, their order, units and types fix it; the device and time do not, so a reload that
/// changes none of them keeps it.
pub fn schema_id(points: &[SchemaPoint<'_>]) -> String {
    id_of(&schema_points(points))
}

fn id_of(points_json: &[u8]) -> String {
    let digest = Sha256::digest(points_json);
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// `{prefix}/schema/{device}`, retained: `{"v":2,"device":…,"id":…,"ts":…,"points":[{"name":
/// "ua","unit":"V","type":"number"},…]}` in config order, the order telemetry keeps; `id` is
/// [`schema_id`], which positional telemetry names.
pub fn schema(device: &str, points: &[SchemaPoint<'_>], ts: Timestamp) -> Vec<u8> {
    let list = schema_points(points);
    let mut out = Vec::with_capacity(64 + device.len() + list.len());
    out.extend_from_slice(b"{\"v\":2,\"device\":");
    push_str(&mut out, device);
    out.extend_from_slice(b",\"id\":");
    push_str(&mut out, &id_of(&list));
    let _infallible = write!(out, ",\"ts\":{},\"points\":", ts.0);
    out.extend_from_slice(&list);
    out.push(b'}');
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
            r#"{"v":2,"device":"main-meter","id":"7b10b799","ts":5,"points":[{"name":"ua","unit":"V","type":"number"},{"name":"run","unit":"","type":"bool"}]}"#
        );
        // The id is the SHA-256 of the `points` array as written (`sha256sum` agrees), and
        // neither the device nor the time moves it.
        assert_eq!(schema_id(&points), "7b10b799");
        let elsewhere = String::from_utf8(schema("other", &points, Timestamp(9))).unwrap();
        assert!(elsewhere.contains(r#""id":"7b10b799""#), "{elsewhere}");
        let layout = Layout::of_schema(text.as_bytes()).unwrap();
        assert_eq!(layout, Layout::new("7b10b799", ["ua", "run"]));
        assert!(Layout::of_schema(b"{\"v\":2}").is_none());
    }

    /// The schema of [`batch`]'s points, in its order.
    fn layout() -> Layout {
        let points: Vec<SchemaPoint<'_>> = [
            ("ua", "V", "number"),
            ("ia", "A", "number"),
            ("run", "", "bool"),
            ("ib", "A", "number"),
            ("starts", "", "integer"),
        ]
        .iter()
        .map(|&(name, unit, kind)| SchemaPoint { name, unit, kind })
        .collect();
        Layout::of_schema(&schema("main-meter", &points, Timestamp(0))).unwrap()
    }

    #[test]
    fn positional_telemetry_matches_the_documented_example_byte_for_byte() {
        let l = layout();
        assert_eq!(l.id(), "07206f6d");
        let text = String::from_utf8(telemetry_of(
            "main-meter",
            Timestamp(0),
            &batch().samples,
            42,
            false,
            Some(&l),
        ))
        .unwrap();
        assert_eq!(
            text,
            r#"{"v":2,"d":"main-meter","t":1700000000015,"s":42,"sc":"07206f6d","p":[231.4,null,true,4.2,12],"bad":{"ia":"timeout"},"unc":{"ib":"held"}}"#
        );
    }

    #[test]
    fn the_shorter_form_is_written_and_a_point_the_schema_lacks_keeps_names() {
        let l = layout();
        let render = |samples: &[PointSample<Name>], l: Option<&Layout>| {
            let bytes = telemetry_of("main-meter", Timestamp(0), samples, 1, true, l);
            serde_json::from_slice::<Json>(&bytes).unwrap()
        };
        // One point late in the order: `"starts":12` is shorter than four nulls.
        let b = batch();
        let sparse = render(&b.samples[4..], Some(&l));
        assert_eq!(
            sparse,
            json!({"v":2,"d":"main-meter","t":1_700_000_000_015_i64,"s":1,
                                  "p":{"starts":12},"bf":true})
        );
        // So is the first point alone: `"sc"` costs more than one name saves.
        let head = render(&b.samples[..1], Some(&l));
        assert_eq!(head["p"], json!({"ua":231.4}));
        // A poll with a point the schema does not have is named, whatever the length.
        let mut extra = b.samples.clone();
        extra[0].point = Name::new("retired").unwrap();
        let named = render(&extra, Some(&l));
        assert!(named.get("sc").is_none(), "{named}");
        assert_eq!(named["p"]["retired"], 231.4);
        // Nothing reported has a value: `p` is empty in either form.
        let bad_only = render(&b.samples[1..2], Some(&l));
        assert_eq!(bad_only["bad"], json!({"ia":"timeout"}));
        assert!(
            bad_only["p"]
                .as_object()
                .is_some_and(serde_json::Map::is_empty)
                || bad_only["p"] == json!([]),
            "{bad_only}"
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
