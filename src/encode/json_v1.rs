//! The JSON profile, version 1 (docs/design.md §4): telemetry and status payloads.
//!
//! Invariants: every payload carries `"v":1`; telemetry carries the device's `seq`; numbers
//! that are not finite are written as `null` (JSON has no NaN); bad points carry their reason.

use std::io::Write as _;

use serde_json::json;

use crate::detect::{AlarmEvent, DeviceHealth, PointShare};
use crate::model::{PointSample, Quality, SampleBatch, Timestamp, Value};
use crate::process::ledger::LedgerInterval;
use crate::process::tou::Period;

/// The profile version written as `"v"`.
pub const VERSION: u32 = 1;

/// Appends `text` as a JSON string (quoted and escaped).
pub(crate) fn push_str(out: &mut Vec<u8>, text: &str) {
    // Writing a &str into a Vec cannot fail.
    let _infallible = serde_json::to_writer(&mut *out, text);
}

/// Appends a value as JSON: numbers by the shortest text that reads back as the same f64
/// (decode has already moved them to the decimal their register carries), `null` when absent
/// or not finite.
pub(crate) fn push_value(out: &mut Vec<u8>, v: Option<&Value>) {
    // serde_json writes floats in their shortest round-tripping form and non-finite ones as
    // `null` (JSON has no NaN), straight into `out`: no String per value on the hot path.
    let _infallible = match v {
        None => out.write_all(b"null"),
        Some(Value::F64(f)) => serde_json::to_writer(&mut *out, f).map_err(std::io::Error::from),
        Some(Value::I64(i)) => serde_json::to_writer(&mut *out, i).map_err(std::io::Error::from),
        Some(Value::Bool(b)) => out.write_all(if *b { b"true" } else { b"false" }),
        Some(Value::Str(t)) => {
            push_str(out, t);
            Ok(())
        }
    };
}

/// A sample's value as payloads write it: absent when the quality is bad, whatever the
/// sample still holds.
pub(crate) fn sample_value<N>(s: &PointSample<N>) -> Option<&Value> {
    if matches!(s.quality, Quality::Bad(_)) {
        None
    } else {
        s.value.as_ref()
    }
}

/// `{"v":1,"device":…,"ts":…,"seq":…,"points":{"ua":{"v":231.4,"q":"good"},…}}`, plus
/// `"backfill":true` for messages replayed after an outage. `ts` is when the poll's last
/// response arrived. Written directly (not through a map) so that points keep config order
/// and encoding stays cheap on the hot path.
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
    // Sized for the common case so the buffer is not doubled: a good point takes its name plus
    // 24 bytes of envelope and its value (5 to 8 characters for a meter reading, up to 24 for an
    // f64 at full precision). Replay keeps up to `max_inflight` of these in memory at once.
    let names: usize = samples.iter().map(|s| s.point.as_ref().len()).sum();
    let mut out = Vec::with_capacity(80 + device.len() + names + 32 * samples.len());
    out.extend_from_slice(b"{\"v\":1,\"device\":");
    push_str(&mut out, device);
    let _infallible = write!(out, ",\"ts\":{},\"seq\":{seq},\"points\":{{", ts.0);
    for (i, s) in samples.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(&mut out, s.point.as_ref());
        out.extend_from_slice(b":{\"v\":");
        push_value(&mut out, sample_value(s));
        out.extend_from_slice(b",\"q\":\"");
        out.extend_from_slice(s.quality.label().as_bytes());
        out.push(b'"');
        if let Some(reason) = s.quality.reason() {
            out.extend_from_slice(b",\"reason\":");
            push_str(&mut out, &reason);
        }
        out.push(b'}');
    }
    out.push(b'}');
    if backfill {
        out.extend_from_slice(b",\"backfill\":true");
    }
    out.push(b'}');
    out
}

/// Adds `"backfill":true` to a stored JSON object payload replayed after an outage; any other
/// payload (an empty retained clear) is returned as is.
pub fn mark_backfill(payload: &[u8], backfill: bool) -> Vec<u8> {
    match payload.strip_suffix(b"}") {
        Some(head) if backfill && payload.first() == Some(&b'{') && payload.len() > 2 => {
            let mut out = Vec::with_capacity(payload.len() + 16);
            out.extend_from_slice(head);
            out.extend_from_slice(b",\"backfill\":true}");
            out
        }
        _ => payload.to_vec(),
    }
}

/// The alarm topic's payload (docs/design.md §4):
/// `{"v":1,"id":…,"state":…,"severity":…,"raised":…,"value":…,"limit":…,"message":…}` plus
/// `device`, `alarm`, `rule`, `point`, `ts`, while shelved `shelved_until`, for a
/// device-level anomaly `shares`: `[{"point":…,"share":0.81},…]`, largest first, and for an
/// `anomaly` rule `anomaly_kind` (`spike`, `level_shift`, `drift`, `variance`, `stuck`,
/// `pattern`), with `"anomaly_kind_provisional":true` while the kind may still change.
pub fn alarm(e: &AlarmEvent) -> Vec<u8> {
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    let mut doc = json!({
        "v": VERSION,
        "id": e.id,
        "device": e.device,
        "alarm": e.alarm,
        "rule": e.rule,
        "state": e.state.as_str(),
        "severity": e.severity.as_str(),
        "raised": e.raised,
        "ts": e.ts,
        "value": finite(e.value),
        "limit": finite(e.limit),
        "message": e.message,
    });
    if let Some(map) = doc.as_object_mut() {
        if let Some(p) = &e.point {
            map.insert("point".into(), json!(p));
        }
        if let Some(u) = e.shelved_until {
            map.insert("shelved_until".into(), json!(u));
        }
        if !e.shares.is_empty() {
            map.insert("shares".into(), shares(&e.shares));
        }
        if let Some(kind) = &e.anomaly_kind {
            map.insert("anomaly_kind".into(), json!(kind));
        }
        if e.anomaly_kind_provisional {
            map.insert("anomaly_kind_provisional".into(), json!(true));
        }
    }
    doc.to_string().into_bytes()
}

/// `{prefix}/health/{device}`: `{"v":1,"device":…,"ts":…,"index":87,"parts":{"comm":…,
/// "alarms":…,"anomaly":…,"trend":…},"running_hours":…,"starts":…}`; parts are the points
/// each deducts from 100, to one decimal. While a device-level anomaly alarm is raised,
/// `shares` says which points explain it, as in the alarm payload.
pub fn health(h: &DeviceHealth, ts: Timestamp) -> Vec<u8> {
    let r = |v: f64| (v * 10.0).round() / 10.0;
    let mut doc = json!({
        "v": VERSION,
        "device": h.device,
        "ts": ts.0,
        "index": h.parts.index(),
        "parts": {
            "comm": r(h.parts.comm),
            "alarms": r(h.parts.alarms),
            "anomaly": r(h.parts.anomaly),
            "trend": r(h.parts.trend),
        },
    });
    if let Some(map) = doc.as_object_mut() {
        if let Some(hours) = h.running_hours {
            map.insert("running_hours".into(), json!(r(hours)));
        }
        if let Some(starts) = h.starts {
            map.insert("starts".into(), json!(starts));
        }
        if !h.shares.is_empty() {
            map.insert("shares".into(), shares(&h.shares));
        }
        if let Some((alarm, kind)) = &h.anomaly_kind {
            map.insert("anomaly_alarm".into(), json!(alarm));
            map.insert("anomaly_kind".into(), json!(kind));
        }
    }
    doc.to_string().into_bytes()
}

/// Points' shares of a device-level anomaly, to three decimals.
fn shares(shares: &[PointShare]) -> serde_json::Value {
    shares
        .iter()
        .map(|s| json!({"point": s.point, "share": (s.share * 1000.0).round() / 1000.0}))
        .collect()
}

/// `{prefix}/energy/{meter}`: one closed interval (docs/design.md §4),
/// `{"v":1,"meter":…,"start":…,"end":…,"kind":"electricity","unit":"kWh","delta":…,
/// "tou":"peak","kgce":…,"quality":"good"}`, plus `tou_split` when the interval straddles a
/// period boundary and `flags` when the counter rolled over, reset, was replaced, jumped or
/// had a gap.
pub fn energy(iv: &LedgerInterval) -> Vec<u8> {
    let finite =
        |v: f64| serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into);
    let mut doc = json!({
        "v": VERSION,
        "meter": iv.meter,
        "start": iv.start_ms,
        "end": iv.end_ms,
        "kind": iv.kind,
        "unit": iv.unit,
        "delta": finite(iv.delta),
        "quality": iv.quality.as_str(),
    });
    if let Some(map) = doc.as_object_mut() {
        if let Some(p) = iv.main_period() {
            map.insert("tou".into(), json!(p.as_str()));
        }
        let used: serde_json::Map<String, serde_json::Value> = Period::ALL
            .iter()
            .zip(iv.tou)
            .filter(|(_, v)| *v > 0.0)
            .map(|(p, v)| (p.as_str().to_owned(), finite(v)))
            .collect();
        if used.len() > 1 {
            map.insert("tou_split".into(), serde_json::Value::Object(used));
        }
        if let Some(k) = iv.kgce {
            map.insert("kgce".into(), finite(k));
        }
        if !iv.flags.is_empty() {
            let flags: Vec<&str> = iv.flags.iter().map(|f| f.as_str()).collect();
            map.insert("flags".into(), json!(flags));
        }
    }
    doc.to_string().into_bytes()
}

/// `{"v":1,"state":"online"|"offline","ts":…,"version":"…"}` for `{prefix}/status`.
pub fn status(online: bool, ts: Timestamp) -> Vec<u8> {
    status_with_config(online, ts, None)
}

/// [`status`] naming the running configuration: `config` is the SHA-256 (hex) of its file,
/// the version `plantwatch config history` and `cmd/config` replies name.
pub fn status_with_config(online: bool, ts: Timestamp, config: Option<&str>) -> Vec<u8> {
    let mut status = json!({
        "v": VERSION,
        "state": if online { "online" } else { "offline" },
        "ts": ts.0,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(hash) = config.filter(|h| !h.is_empty()) {
        status["config"] = json!(hash);
    }
    status.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, Name, PointSample, Quality};
    use serde_json::Value as Json;

    fn batch() -> SampleBatch {
        let n = |s: &str| Name::new(s).unwrap();
        SampleBatch {
            device: n("main-meter"),
            tick: Timestamp(1_700_000_000_000),
            samples: vec![
                PointSample {
                    point: n("ua"),
                    ts: Timestamp(1_700_000_000_012),
                    value: Some(Value::F64(231.4)),
                    quality: Quality::Good,
                },
                PointSample {
                    point: n("run"),
                    ts: Timestamp(1_700_000_000_015),
                    value: Some(Value::Bool(true)),
                    quality: Quality::Good,
                },
                PointSample {
                    point: n("ep"),
                    ts: Timestamp(1_700_000_000_015),
                    value: None,
                    quality: Quality::Bad(BadReason::Exception(2)),
                },
            ],
        }
    }

    #[test]
    fn telemetry_matches_the_design_contract_byte_for_byte() {
        let text = String::from_utf8(telemetry(&batch(), 42, false)).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"device":"main-meter","ts":1700000000015,"seq":42,"points":{"ua":{"v":231.4,"q":"good"},"run":{"v":true,"q":"good"},"ep":{"v":null,"q":"bad","reason":"exception:02"}}}"#
        );
    }

    #[test]
    fn a_meters_payload_fits_its_first_allocation() {
        // The DTSU666 profile's 22 points, f32 readings in their shortest form.
        let profiles = crate::config::Profiles::built_in().unwrap();
        let meter = profiles.get("chint-dtsu666").unwrap();
        let mut b = batch();
        b.samples = meter
            .points
            .iter()
            .map(|(name, _)| PointSample {
                point: Name::new(name).unwrap(),
                ts: b.tick,
                value: Some(Value::F64(231.47)),
                quality: Quality::Good,
            })
            .collect();
        assert_eq!(b.samples.len(), 22);
        let payload = telemetry(&b, u64::from(u32::MAX), true);
        // A buffer that had to grow would be about twice the payload.
        assert!(
            payload.capacity() - payload.len() < payload.len() / 4,
            "{} bytes in a buffer of {}",
            payload.len(),
            payload.capacity()
        );
    }

    /// The text of point `name`'s value in a v1 payload, as written.
    fn value_text<'a>(payload: &'a str, name: &str) -> &'a str {
        let start = payload.find(&format!("\"{name}\":{{\"v\":")).unwrap() + name.len() + 8;
        let rest = &payload[start..];
        &rest[..rest.find(',').unwrap()]
    }

    #[test]
    fn f32_registers_round_trip_through_the_payload_in_every_bit_pattern_class() {
        use crate::decode::{Codec, DataType, decode};
        let classes: [(&str, f32); 8] = [
            ("reading", 231.799),
            ("smallest subnormal", f32::from_bits(1)),
            ("largest subnormal", f32::from_bits(0x007F_FFFF)),
            ("smallest normal", f32::MIN_POSITIVE),
            ("largest", f32::MAX),
            ("most negative", f32::MIN),
            ("negative zero", -0.0),
            ("NaN", f32::NAN),
        ];
        let mut b = batch();
        b.samples = classes
            .iter()
            .enumerate()
            .map(|(i, (_, x))| {
                let bits = x.to_bits();
                let decoded = decode(
                    &[(bits >> 16) as u16, bits as u16],
                    &Codec::plain(DataType::F32),
                );
                // What acquisition does with a decode error: the point is bad, and payloads
                // write no value for it.
                let (value, quality) = match decoded {
                    Ok(v) => (Some(v), Quality::Good),
                    Err(_) => (
                        Some(Value::F64(f64::from(*x))),
                        Quality::Bad(BadReason::Decode),
                    ),
                };
                PointSample {
                    point: Name::new(&format!("p{i}")).unwrap(),
                    ts: b.tick,
                    value,
                    quality,
                }
            })
            .collect();
        let text = String::from_utf8(telemetry(&b, 1, false)).unwrap();
        assert!(text.contains(r#""p0":{"v":231.799,"q":"good"}"#), "{text}");
        assert!(
            text.contains(r#""p7":{"v":null,"q":"bad","reason":"decode"}"#),
            "{text}"
        );
        serde_json::from_str::<Json>(&text).unwrap();
        for (i, (class, x)) in classes.iter().enumerate().take(7) {
            let written = value_text(&text, &format!("p{i}"));
            let back: f32 = written.parse().unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{class}: {written}");
        }
    }

    #[test]
    fn a_scaled_register_is_written_with_the_decimals_of_its_scale() {
        use crate::decode::{Codec, DataType, decode};
        let mut b = batch();
        let tenths = Codec {
            scale: 0.1,
            ..Codec::plain(DataType::U16)
        };
        b.samples[0].value = Some(decode(&[2314], &tenths).unwrap());
        b.samples.truncate(1);
        let text = String::from_utf8(telemetry(&b, 1, false)).unwrap();
        assert_eq!(value_text(&text, "ua"), "231.4");
        let whole = Codec {
            decimals: Some(0),
            ..tenths
        };
        b.samples[0].value = Some(decode(&[2316], &whole).unwrap());
        let text = String::from_utf8(telemetry(&b, 1, false)).unwrap();
        assert_eq!(value_text(&text, "ua"), "232.0");
    }

    #[test]
    fn replayed_telemetry_is_marked_backfill() {
        let parsed: Json = serde_json::from_slice(&telemetry(&batch(), 7, true)).unwrap();
        assert_eq!(parsed["backfill"], json!(true));
        assert_eq!(parsed["seq"], json!(7));
    }

    #[test]
    fn non_finite_values_become_null_not_invalid_json() {
        let mut b = batch();
        b.samples[0].value = Some(Value::F64(f64::NAN));
        let parsed: Json = serde_json::from_slice(&telemetry(&b, 1, false)).unwrap();
        assert_eq!(parsed["points"]["ua"]["v"], Json::Null);
    }

    #[test]
    fn status_says_online_or_offline_with_the_version() {
        let parsed: Json = serde_json::from_slice(&status(false, Timestamp(5))).unwrap();
        assert_eq!(parsed["state"], "offline");
        assert_eq!(parsed["v"], 1);
        assert_eq!(parsed["version"], env!("CARGO_PKG_VERSION"));
        assert!(parsed.get("config").is_none());
        let named = status_with_config(true, Timestamp(5), Some("ab12"));
        let parsed: Json = serde_json::from_slice(&named).unwrap();
        assert_eq!(
            (parsed["state"].as_str(), parsed["config"].as_str()),
            (Some("online"), Some("ab12"))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_batch_encodes_to_json_that_parses_back(values in proptest::collection::vec(proptest::prelude::any::<f64>(), 0..30), text in "\\PC*", seq in 0u64..u64::MAX) {
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
            proptest::prop_assert_eq!(parsed["seq"].as_u64(), Some(seq));
            proptest::prop_assert_eq!(parsed["points"]["ua"]["v"].as_str(), Some(text.as_str()));
            for (i, v) in values.iter().enumerate() {
                let got = &parsed["points"][format!("p{i}")]["v"];
                if v.is_finite() {
                    // Exact, subnormals included: ryu writes the shortest round-tripping form and
                    // serde_json's float_roundtrip parser reads it back bit for bit.
                    proptest::prop_assert_eq!(got.as_f64(), Some(*v));
                } else { proptest::prop_assert!(got.is_null()); }
            }
        }
    }
}
