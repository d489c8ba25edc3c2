//! The JSON profile, version 1 (DESIGN.md §4): telemetry and status payloads.
//!
//! Invariants: every payload carries `"v":1`; telemetry carries the device's `seq`; numbers
//! that are not finite are written as `null` (JSON has no NaN); bad points carry their reason.

use serde_json::{Map, Value as Json, json};

use crate::model::{SampleBatch, Timestamp, Value};

/// The profile version written as `"v"`.
pub const VERSION: u32 = 1;

fn value_json(v: &Value) -> Json {
    match v {
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::I64(i) => json!(i),
        Value::Bool(b) => json!(b),
        Value::Str(s) => json!(s),
    }
}

/// `{"v":1,"device":…,"ts":…,"seq":…,"points":{"ua":{"v":231.4,"q":"good"},…}}`, plus
/// `"backfill":true` for messages replayed after an outage. `ts` is when the poll's last
/// response arrived.
pub fn telemetry(batch: &SampleBatch, seq: u64, backfill: bool) -> Vec<u8> {
    let ts = batch
        .samples
        .iter()
        .map(|s| s.ts)
        .max()
        .unwrap_or(batch.tick);
    let mut points = Map::with_capacity(batch.samples.len());
    for s in &batch.samples {
        let mut p = Map::with_capacity(3);
        p.insert("v".into(), s.value.as_ref().map_or(Json::Null, value_json));
        p.insert("q".into(), json!(s.quality.label()));
        if let Some(reason) = s.quality.reason() {
            p.insert("reason".into(), json!(reason));
        }
        points.insert(s.point.to_string(), Json::Object(p));
    }
    let mut msg = Map::with_capacity(6);
    msg.insert("v".into(), json!(VERSION));
    msg.insert("device".into(), json!(batch.device.as_str()));
    msg.insert("ts".into(), json!(ts.0));
    msg.insert("seq".into(), json!(seq));
    msg.insert("points".into(), Json::Object(points));
    if backfill {
        msg.insert("backfill".into(), json!(true));
    }
    Json::Object(msg).to_string().into_bytes()
}

/// `{"v":1,"state":"online"|"offline","ts":…,"version":"…"}` for `{prefix}/status`.
pub fn status(online: bool, ts: Timestamp) -> Vec<u8> {
    json!({
        "v": VERSION,
        "state": if online { "online" } else { "offline" },
        "ts": ts.0,
        "version": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, Name, PointSample, Quality};

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
    }
}
