//! Sparkplug B interop: what the edge node state machine publishes, decoded by an independent
//! implementation (the PyPI package pysparkplug, through `tests/interop/sparkplug_decode.py`)
//! and checked field by field against expectations written here by hand.

use std::path::Path;
use std::process::Command;

use serde_json::{Value as Json, json};

use plantwatch::decode::{Codec, DataType as PointType};
use plantwatch::model::{BadReason, Name, PointSample, Quality, SampleBatch, Timestamp, Value};
use plantwatch::sparkplug::{
    DataMode, DeviceSpec, EdgeNode, HostState, Id, Message, MessageType, NodeConfig, PointSpec,
    Qos, datatype_of,
};

use crate::harness::{repo, skip_without};

const T0: i64 = 1_700_000_000_000;
const STATE: &str = "spBv1.0/STATE/scada";

/// Whether pysparkplug can be imported; skips (or, under CI, fails) the test when not.
fn pysparkplug() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pysparkplug"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_without(
            "pysparkplug",
            "pip install pysparkplug; .ci/run installs it",
        );
    }
    ok
}

/// Runs the decoder on `dir`, bounded in time, and fails the test with its output on mismatch.
fn decode_with_pysparkplug(dir: &Path) {
    let out = Command::new("timeout")
        .arg("120")
        .arg("python3")
        .arg(repo().join("tests/interop/sparkplug_decode.py"))
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pysparkplug disagrees ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{}", stdout.lines().last().unwrap_or_default());
}

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn spec(device: &str, points: &[(&str, Codec)]) -> DeviceSpec {
    DeviceSpec {
        name: n(device),
        points: points
            .iter()
            .map(|(name, codec)| PointSpec {
                name: n(name),
                datatype: datatype_of(codec),
            })
            .collect(),
    }
}

/// One point of every type, plus a scaled one; aliases 1 to 14.
fn all_types() -> DeviceSpec {
    let mut points: Vec<(&str, Codec)> = PointType::ALL
        .iter()
        .map(|t| (t.name(), Codec::plain(*t)))
        .collect();
    points.push((
        "scaled",
        Codec {
            scale: 0.1,
            ..Codec::plain(PointType::U16)
        },
    ));
    spec("all-types", &points)
}

/// Aliases 15 and 16.
fn pump() -> DeviceSpec {
    spec(
        "pump-2",
        &[
            ("speed", Codec::plain(PointType::F64)),
            ("fault", Codec::plain(PointType::I16)),
        ],
    )
}

fn good(point: &str, ts: i64, value: Value) -> PointSample {
    PointSample {
        point: n(point),
        ts: Timestamp(ts),
        value: Some(value),
        quality: Quality::Good,
    }
}

/// A poll of `all-types` whose `i16` reads `i16`.
fn all_types_poll(ts: i64, i16: i64) -> SampleBatch {
    SampleBatch {
        device: n("all-types"),
        tick: Timestamp(ts),
        samples: vec![
            good("bool", ts, Value::Bool(true)),
            good("bit", ts, Value::Bool(false)),
            good("u16", ts, Value::I64(65_535)),
            good("i16", ts, Value::I64(i16)),
            good("u32", ts, Value::I64(4_294_967_295)),
            good("i32", ts, Value::I64(-2_147_483_648)),
            // Beyond i64::MAX decode hands a u64 on as f64.
            good("u64", ts, Value::F64(9_223_372_036_854_775_808.0)),
            good("i64", ts, Value::I64(-5)),
            good("f32", ts, Value::F64(f64::from(0.95f32))),
            good("f64", ts, Value::F64(-1.5e300)),
            good("string", ts, Value::Str("DTSU666".into())),
            good("bcd16", ts, Value::I64(1234)),
            good("bcd32", ts, Value::I64(12_345_678)),
            good("scaled", ts, Value::F64(231.4)),
        ],
    }
}

fn pump_poll(ts: i64, speed: f64, fault: Option<i64>) -> SampleBatch {
    let fault = match fault {
        Some(v) => good("fault", ts, Value::I64(v)),
        None => PointSample {
            point: n("fault"),
            ts: Timestamp(ts),
            value: None,
            quality: Quality::Bad(BadReason::Timeout),
        },
    };
    SampleBatch {
        device: n("pump-2"),
        tick: Timestamp(ts),
        samples: vec![good("speed", ts, Value::F64(speed)), fault],
    }
}

fn state(online: bool, timestamp: u64) -> Vec<u8> {
    HostState { online, timestamp }.to_json()
}

fn metric(name: &str, alias: u64, datatype: &str, ts: i64, value: Json) -> Json {
    let mut m = json!({"name": name, "alias": alias, "datatype": datatype, "timestamp": ts});
    m["value"] = value;
    m
}

fn historical(mut metrics: Vec<Json>) -> Vec<Json> {
    for m in &mut metrics {
        m["is_historical"] = json!(true);
    }
    metrics
}

/// What pysparkplug must read back for every `all-types` metric, all sampled at `ts`.
fn all_types_expected(ts: i64, i16: i64) -> Vec<Json> {
    vec![
        metric("bool", 1, "BOOLEAN", ts, json!(true)),
        metric("bit", 2, "BOOLEAN", ts, json!(false)),
        metric("u16", 3, "UINT16", ts, json!(65_535)),
        metric("i16", 4, "INT16", ts, json!(i16)),
        metric("u32", 5, "UINT32", ts, json!(4_294_967_295u64)),
        metric("i32", 6, "INT32", ts, json!(-2_147_483_648i64)),
        metric("u64", 7, "UINT64", ts, json!(9_223_372_036_854_775_808u64)),
        metric("i64", 8, "INT64", ts, json!(-5)),
        metric("f32", 9, "FLOAT", ts, json!(0.95)),
        metric("f64", 10, "DOUBLE", ts, json!(-1.5e300)),
        metric("string", 11, "STRING", ts, json!("DTSU666")),
        metric("bcd16", 12, "UINT16", ts, json!(1234)),
        metric("bcd32", 13, "UINT32", ts, json!(12_345_678)),
        metric("scaled", 14, "DOUBLE", ts, json!(231.4)),
    ]
}

/// The topic, spelled out rather than built by the code under test.
fn topic(kind: &str, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("spBv1.0/plant/{kind}/gw-01/{d}"),
        None => format!("spBv1.0/plant/{kind}/gw-01"),
    }
}

fn ndeath(ts: Option<i64>) -> (Json, MessageType) {
    (
        json!({"topic": topic("NDEATH", None), "timestamp": ts, "bdSeq": 200}),
        MessageType::NDeath,
    )
}

fn nbirth(ts: i64) -> (Json, MessageType) {
    (
        json!({"topic": topic("NBIRTH", None), "timestamp": ts, "seq": 0, "bdSeq": 200,
        "metrics": [
            metric("bdSeq", 0, "INT64", ts, json!(200)),
            metric("Node Control/Rebirth", 0, "BOOLEAN", ts, json!(false)),
        ]}),
        MessageType::NBirth,
    )
}

fn payload(
    kind: MessageType,
    device: &str,
    ts: i64,
    seq: u64,
    metrics: Vec<Json>,
) -> (Json, MessageType) {
    let mut p = json!({"topic": topic(kind.as_str(), Some(device)), "timestamp": ts, "seq": seq});
    p["metrics"] = Json::Array(metrics);
    (p, kind)
}

#[test]
fn a_whole_session_decodes_with_pysparkplug_field_by_field() {
    if !pysparkplug() {
        return;
    }
    let config = NodeConfig {
        group_id: Id::new("plant").unwrap(),
        edge_node_id: Id::new("gw-01").unwrap(),
        primary_host_id: Some(Id::new("scada").unwrap()),
        data_mode: DataMode::ByException,
        buffer_limit: 100,
        writes: false,
    };
    let mut node = EdgeNode::new(config, &[all_types(), pump()], 200);
    let mut sent: Vec<Message> = Vec::new();
    let at = |ms: i64| Timestamp(T0 + ms);

    sent.push(node.connecting());
    assert!(node.on_connected(at(0)).is_empty(), "waits for the host");
    assert!(
        node.on_poll(&all_types_poll(T0 + 1_010, -12), at(1_000))
            .is_empty()
    );
    sent.extend(node.on_message(STATE, &state(true, 1), at(2_000)).unwrap());
    sent.extend(node.on_poll(&pump_poll(T0 + 3_005, 1480.5, None), at(3_000)));
    sent.extend(node.on_poll(&all_types_poll(T0 + 4_005, 7), at(4_000)));
    assert!(
        node.on_message(STATE, &state(false, 2), at(5_000))
            .unwrap()
            .is_empty()
    );
    assert!(
        node.on_poll(&pump_poll(T0 + 6_005, 1490.0, Some(-3)), at(6_000))
            .is_empty()
    );
    sent.extend(node.on_message(STATE, &state(true, 3), at(7_000)).unwrap());
    sent.push(node.shutdown(at(8_000)).unwrap());

    let ms = |x: i64| T0 + x;
    let mut expected: Vec<(Json, MessageType)> = vec![ndeath(None)];
    // First birth, then the poll buffered before it as history.
    expected.push(nbirth(ms(2_000)));
    expected.push(payload(
        MessageType::DBirth,
        "all-types",
        ms(2_000),
        1,
        all_types_expected(ms(1_010), -12),
    ));
    expected.push(payload(
        MessageType::DBirth,
        "pump-2",
        ms(2_000),
        2,
        vec![
            metric("speed", 15, "DOUBLE", ms(2_000), Json::Null),
            metric("fault", 16, "INT16", ms(2_000), Json::Null),
        ],
    ));
    expected.push(payload(
        MessageType::DData,
        "all-types",
        ms(2_000),
        3,
        historical(all_types_expected(ms(1_010), -12)),
    ));
    // Live, by exception: the pump's fault stays null as declared; only i16 moved.
    expected.push(payload(
        MessageType::DData,
        "pump-2",
        ms(3_000),
        4,
        vec![metric("speed", 15, "DOUBLE", ms(3_005), json!(1480.5))],
    ));
    expected.push(payload(
        MessageType::DData,
        "all-types",
        ms(4_000),
        5,
        vec![metric("i16", 4, "INT16", ms(4_005), json!(7))],
    ));
    // The host's return: fresh births with the latest values, then the outage as history.
    expected.push(nbirth(ms(7_000)));
    expected.push(payload(
        MessageType::DBirth,
        "all-types",
        ms(7_000),
        1,
        all_types_expected(ms(4_005), 7),
    ));
    let pump_now = vec![
        metric("speed", 15, "DOUBLE", ms(6_005), json!(1490.0)),
        metric("fault", 16, "INT16", ms(6_005), json!(-3)),
    ];
    expected.push(payload(
        MessageType::DBirth,
        "pump-2",
        ms(7_000),
        2,
        pump_now.clone(),
    ));
    expected.push(payload(
        MessageType::DData,
        "pump-2",
        ms(7_000),
        3,
        historical(pump_now),
    ));
    expected.push(ndeath(Some(ms(8_000))));

    assert_eq!(
        sent.iter().map(|m| m.kind).collect::<Vec<_>>(),
        expected.iter().map(|(_, k)| *k).collect::<Vec<_>>()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut messages = Vec::new();
    for (i, (m, (mut want, kind))) in sent.iter().zip(expected).enumerate() {
        // Sparkplug's delivery rules: only the death at QoS 1, nothing retained.
        let qos = if kind == MessageType::NDeath {
            Qos::AtLeastOnce
        } else {
            Qos::AtMostOnce
        };
        assert_eq!((m.qos, m.retain), (qos, false), "{i}: {}", m.topic);
        let file = format!("{i:02}-{}.bin", kind.as_str().to_lowercase());
        std::fs::write(dir.path().join(&file), &m.payload).unwrap();
        // Node metrics have no alias: write it as null for the decoder.
        if let Some(metrics) = want["metrics"].as_array_mut() {
            for metric in metrics {
                if metric["alias"] == json!(0) {
                    metric["alias"] = Json::Null;
                }
            }
        }
        assert_eq!(json!(m.topic), want["topic"], "{i}");
        want["file"] = json!(file);
        messages.push(want);
    }
    std::fs::write(
        dir.path().join("manifest.json"),
        serde_json::to_vec_pretty(&json!({ "messages": messages })).unwrap(),
    )
    .unwrap();
    decode_with_pysparkplug(dir.path());
}

#[test]
fn the_hex_goldens_decode_with_pysparkplug_field_by_field() {
    if !pysparkplug() {
        return;
    }
    decode_with_pysparkplug(&repo().join("tests/fixtures/sparkplug"));
}
