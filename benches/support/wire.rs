//! Bytes on the wire per payload profile and reporting policy (issue 19), for the e2e bench:
//! `BENCH_WIRE=1` runs the daemon once per case against the same simulated plant and counts
//! every MQTT packet the daemon's messages cost on the broker link.
//!
//! The bytes are counted on the daemon's link itself: the daemon connects to the broker through
//! a counting relay (`Relay`), so every MQTT byte either way is in the figure (PUBLISH with its
//! topic or topic alias, PUBACK, PINGREQ and PINGRESP); TCP/IP and TLS framing are left out, as
//! they depend on the link. The per-message model the first figures used (PUBLISH with its
//! full topic and packet id, plus a 4-byte PUBACK) is printed beside it; the two differ by the
//! pings, by MQTT 5's property bytes, and by what topic aliases save.
//! Values are those a platform receives: v1 points, v2 entries of `p` and `bad`, Sparkplug DDATA
//! metrics. Messages sent once at start (births, schemas, status) fall in the warm-up and are
//! not counted. For json_compact it also shows the share of messages written positionally
//! (against the schema, docs/payload.md) and how often each point goes out on change; the
//! energy-platform records are computed from the daemon's record builder, since they close
//! every 15 minutes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rumqttc::QoS;
use tokio::runtime::Runtime;

use super::{Guard, subscriber};

/// One measured combination.
struct Case {
    label: &'static str,
    /// Added to `[mqtt]`.
    mqtt: &'static str,
    /// Added to every `[[devices]]`.
    device: &'static str,
}

const CASES: [Case; 12] = [
    Case {
        label: "json every poll",
        mqtt: "",
        device: "",
    },
    Case {
        label: "json on change (any change)",
        mqtt: "",
        device: "report = \"on_change\"\n",
    },
    Case {
        label: "json_compact every poll",
        mqtt: "format = \"json_compact\"\n",
        device: "report = \"every_poll\"\n",
    },
    Case {
        label: "json_compact on change (its default)",
        mqtt: "format = \"json_compact\"\n",
        device: "",
    },
    Case {
        label: "json every poll, MQTT 5 topic aliases",
        mqtt: "protocol = \"5\"\ntopic_aliases = true\n",
        device: "",
    },
    Case {
        label: "json_compact every poll, MQTT 5 aliases",
        mqtt: "format = \"json_compact\"\nprotocol = \"5\"\ntopic_aliases = true\n",
        device: "report = \"every_poll\"\n",
    },
    Case {
        label: "json_compact on change (its default), MQTT 5 aliases",
        mqtt: "format = \"json_compact\"\nprotocol = \"5\"\ntopic_aliases = true\n",
        device: "",
    },
    Case {
        label: "json_compact on change, moves at once (min_interval_ms = 0)",
        mqtt: "format = \"json_compact\"\n",
        device: "min_interval_ms = 0\n",
    },
    Case {
        label: "json_compact on change, min_interval_ms = 10000",
        mqtt: "format = \"json_compact\"\n",
        device: "min_interval_ms = 10000\n",
    },
    Case {
        label: "json_compact on change, 1 % deadband",
        mqtt: "format = \"json_compact\"\n",
        device: "deadband_percent = 1.0\n",
    },
    Case {
        label: "sparkplug_b every poll",
        mqtt: "format = \"sparkplug_b\"\n[mqtt.sparkplug]\ngroup_id = \"bench\"\ndata = \"every_poll\"\n",
        device: "",
    },
    Case {
        label: "sparkplug_b by exception (its default)",
        mqtt: "format = \"sparkplug_b\"\n[mqtt.sparkplug]\ngroup_id = \"bench\"\n",
        device: "",
    },
];

#[derive(Default)]
struct Tally {
    bytes: AtomicU64,
    values: AtomicU64,
    messages: AtomicU64,
    /// v2 telemetry messages written positionally (`p` an array in schema order).
    positional: AtomicU64,
    /// Each device's schema point names, in order, to name positional values.
    schemas: Mutex<BTreeMap<String, Vec<String>>>,
    /// Telemetry messages, and how often each point was in one (json_compact), to show where
    /// on-change bytes go.
    telemetry: AtomicU64,
    reported: Mutex<BTreeMap<String, u64>>,
    /// Of v2 telemetry messages, modelled: MQTT bytes (full topic), payload bytes outside the
    /// values (the envelope), and the values' own text (names with their values in a named
    /// `p`, values and separators in a positional one, and `bad`/`unc` entries).
    v2_mqtt: AtomicU64,
    v2_envelope: AtomicU64,
    v2_values: AtomicU64,
}

/// A TCP relay between the daemon and the broker that counts every byte it passes, both ways:
/// what the daemon's MQTT link carries. Its threads end with their connections; the listener's
/// thread stops at the next connection attempt after the relay is dropped (it polls a flag).
struct Relay {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(broker: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, st) = (bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((daemon, _)) => {
                        daemon.set_nonblocking(false).unwrap();
                        let Ok(up) = TcpStream::connect(broker) else {
                            continue;
                        };
                        for (mut from, mut to) in [
                            (daemon.try_clone().unwrap(), up.try_clone().unwrap()),
                            (up, daemon),
                        ] {
                            let b = b.clone();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 16 * 1024];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                    b.fetch_add(n as u64, Ordering::Relaxed);
                                }
                                to.shutdown(Shutdown::Both).ok();
                                from.shutdown(Shutdown::Both).ok();
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { addr, bytes, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Points of the DTSU666 profile.
const POINTS: usize = 22;

fn varint_len(mut n: usize) -> u64 {
    let mut len = 1;
    while n >= 128 {
        n /= 128;
        len += 1;
    }
    len
}

/// Notes a device's schema message, whose point order positional telemetry follows.
fn schema(t: &Tally, payload: &[u8]) {
    let j: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let names = j["points"].as_array().map_or_else(Vec::new, |points| {
        points
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    });
    if let Some(device) = j["device"].as_str() {
        t.schemas.lock().unwrap().insert(device.to_owned(), names);
    }
}

/// What one delivered PUBLISH cost the daemon's link, and the values it carried.
fn tally(t: &Tally, topic: &str, payload: &[u8], qos: QoS) {
    let acked = qos != QoS::AtMostOnce;
    let remaining = 2 + topic.len() + if acked { 2 } else { 0 } + payload.len();
    let packet = 1 + varint_len(remaining) + remaining as u64 + if acked { 4 } else { 0 };
    let values = if topic.contains("/telemetry/") {
        if payload.starts_with(b"{\"v\":2") {
            let j: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
            let bad = j["bad"].as_object().map_or(0, serde_json::Map::len);
            // The points with a value, by name either way.
            let named: Vec<String> = match &j["p"] {
                serde_json::Value::Array(values) => {
                    t.positional.fetch_add(1, Ordering::Relaxed);
                    let schemas = t.schemas.lock().unwrap();
                    let order = j["d"].as_str().and_then(|d| schemas.get(d));
                    values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(i, _)| {
                            order
                                .and_then(|o| o.get(i))
                                .cloned()
                                .unwrap_or_else(|| format!("#{i}"))
                        })
                        .collect()
                }
                p => p
                    .as_object()
                    .map_or_else(Vec::new, |p| p.keys().cloned().collect()),
            };
            let mut reported = t.reported.lock().unwrap();
            for k in &named {
                *reported.entry(k.clone()).or_default() += 1;
            }
            // The values' text: each of `p`, `bad` and `unc` as written, less its brackets.
            let inner = |k: &str| {
                (!j[k].is_null()).then(|| serde_json::to_string(&j[k]).map_or(0, |t| t.len() - 2))
            };
            let values_text = ["p", "bad", "unc"]
                .iter()
                .filter_map(|k| inner(k))
                .sum::<usize>() as u64;
            t.v2_values.fetch_add(values_text, Ordering::Relaxed);
            t.v2_envelope
                .fetch_add(payload.len() as u64 - values_text, Ordering::Relaxed);
            t.v2_mqtt
                .fetch_add(packet - payload.len() as u64, Ordering::Relaxed);
            (named.len() + bad) as u64
        } else {
            payload.windows(5).filter(|w| w == b"\"q\":\"").count() as u64
        }
    } else if topic.contains("/DDATA/") {
        plantwatch::sparkplug::proto::Payload::decode(payload).map_or(0, |p| p.metrics.len() as u64)
    } else {
        0
    };
    t.bytes.fetch_add(packet, Ordering::Relaxed);
    t.values.fetch_add(values, Ordering::Relaxed);
    t.messages.fetch_add(1, Ordering::Relaxed);
    if topic.contains("/telemetry/") {
        t.telemetry.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the bench runs: `devices` DTSU666 meters polled at 1 s, measured for `seconds` after
/// `warmup`.
pub(crate) struct Workload {
    pub(crate) devices: u64,
    pub(crate) warmup: u64,
    pub(crate) seconds: u64,
}

/// Runs every case of `workload` and prints its figures, then the energy-platform records'.
pub(crate) fn run(
    rt: &Runtime,
    bin: &Path,
    broker: SocketAddr,
    plant: &str,
    dir: &Path,
    workload: &Workload,
) {
    let Workload {
        devices,
        warmup,
        seconds,
    } = *workload;
    println!(
        "wire: {devices} devices × {POINTS} values polled at 1 s, {seconds} s per case; MQTT bytes both ways on the daemon's link"
    );
    println!(
        "  {:<52} {:>8} {:>12} {:>14} {:>12} {:>12} {:>12}",
        "profile, reporting",
        "B/value",
        "B/value/poll",
        "MB/device-day",
        "values/poll",
        "positional %",
        "model B/v/p"
    );
    // `BENCH_WIRE_ONLY=on change` runs only the cases whose label contains it; a final `$`
    // asks for the label that ends there.
    let only = std::env::var("BENCH_WIRE_ONLY").unwrap_or_default();
    for (i, case) in CASES.iter().enumerate() {
        let wanted = match only.strip_suffix('$') {
            Some(end) => case.label.ends_with(end),
            None => case.label.contains(only.as_str()),
        };
        if !wanted {
            continue;
        }
        let t = Arc::new(Tally::default());
        let sub = {
            let t = t.clone();
            // QoS 1 on the subscription: each message arrives at the QoS it was sent with.
            subscriber::start(
                rt,
                broker,
                &format!("wire-sub-{i}"),
                "#",
                QoS::AtLeastOnce,
                move |p| {
                    if p.topic.contains("/schema/") {
                        schema(&t, &p.payload);
                    }
                    if !p.retain {
                        tally(&t, &p.topic, &p.payload, p.qos);
                    }
                },
            )
        };
        let relay = Relay::start(broker);
        let case_dir = dir.join(format!("wire-{i}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let cfg = case_dir.join("plantwatch.toml");
        let plant = plant.replace("[[devices]]\n", &format!("[[devices]]\n{}", case.device));
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nsite = \"bench\"\nid = \"gw\"\n\n[store]\npath = \"{}\"\n\n{plant}\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n{}",
                case_dir.join("state.db").display(),
                relay.addr.port(),
                case.mqtt
            ),
        )
        .unwrap();
        let daemon = Guard(
            Command::new(bin)
                .arg("run")
                .arg("--config")
                .arg(&cfg)
                .arg("--no-metrics")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_secs(warmup));
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let link0 = load(&relay.bytes);
        let parts0 = [&t.v2_mqtt, &t.v2_envelope, &t.v2_values].map(load);
        let (b0, v0, q0, m0, t0) = (
            load(&t.bytes),
            load(&t.values),
            load(&t.positional),
            load(&t.telemetry),
            Instant::now(),
        );
        let reported0 = t.reported.lock().unwrap().clone();
        std::thread::sleep(Duration::from_secs(seconds));
        let (bytes, values, positional, telemetry, dt) = (
            load(&t.bytes) - b0,
            load(&t.values) - v0,
            load(&t.positional) - q0,
            load(&t.telemetry) - m0,
            t0.elapsed().as_secs_f64(),
        );
        let link = load(&relay.bytes) - link0;
        let parts = [&t.v2_mqtt, &t.v2_envelope, &t.v2_values].map(load);
        let reported = t.reported.lock().unwrap().clone();
        drop(daemon);
        drop(relay);
        sub.abort();
        let polled = devices as f64 * POINTS as f64 * dt;
        let compact = case.mqtt.contains("json_compact");
        println!(
            "  {:<52} {:>8.1} {:>12.2} {:>14.3} {:>12.2} {:>12} {:>12.2}",
            case.label,
            link as f64 / values.max(1) as f64,
            link as f64 / polled,
            link as f64 / devices as f64 / dt * 86_400.0 / 1e6,
            values as f64 / polled * POINTS as f64,
            if compact {
                format!("{:.0}", positional as f64 / telemetry.max(1) as f64 * 100.0)
            } else {
                "-".to_owned()
            },
            bytes as f64 / polled,
        );
        if compact {
            let per = |k: usize| (parts[k] - parts0[k]) as f64 / telemetry.max(1) as f64;
            println!(
                "    per telemetry message: {:.0} B on the link; modelled {:.0} MQTT (full topic) + {:.0} envelope + {:.0} values ({:.1} values)",
                link as f64 / telemetry.max(1) as f64,
                per(0),
                per(1),
                per(2),
                values as f64 / telemetry.max(1) as f64,
            );
        }
        if compact && !case.device.contains("every_poll") {
            let polls = devices as f64 * dt;
            let shares: Vec<String> = reported
                .iter()
                .map(|(k, n)| {
                    let before = reported0.get(k).copied().unwrap_or(0);
                    format!("{k} {:.0}", (n - before) as f64 / polls * 100.0)
                })
                .collect();
            println!(
                "    telemetry messages per device-poll {:.2}; % of polls reporting each point: {}",
                telemetry as f64 / polls,
                shares.join(", ")
            );
        }
    }
    energy_platform();
    println!(
        "  B/value: link bytes per value delivered; B/value/poll: per value polled (22 a device each second), what on-change saves shows here; positional %: json_compact telemetry messages written against the schema (`p` an array); model B/v/p: the per-message model (PUBLISH with the full topic + 4-byte PUBACK) per value polled"
    );
}

/// The energy-platform records of one meter for one day, built by the daemon's own builder and
/// written as its MQTT sink publishes them (`format = "energy_platform"`). They are computed, not
/// run: real-time records close every 15 minutes (the platform accepts no shorter interval), so a
/// live run would need a day to show what this shows. The interval deltas follow the
/// simulator's daily load shape on a 30 kW plant.
fn energy_platform() {
    use plantwatch::platform::Builder;
    use plantwatch::process::counter::{Flags, IntervalQuality};
    use plantwatch::process::ledger::LedgerInterval;

    let text = "[gateway]\nsite = \"bench\"\nid = \"gw\"\ntimezone = \"Asia/Shanghai\"\n\n\
        [[links]]\nname = \"bus\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\n\
        [[devices]]\nname = \"chint-dtsu666-1\"\nlink = \"bus\"\nprofile = \"chint-dtsu666\"\n\n\
        [energy]\ninterval = \"15m\"\n\n\
        [[meters]]\nname = \"incomer\"\ndevice = \"chint-dtsu666-1\"\npoint = \"ep_import\"\nkind = \"electricity\"\n\n\
        [energy_platform]\nenterprise_code = \"91420100MA4K2N7Q8G\"\nscope = \"1\"\ninput_type = \"1\"\n\n\
        [[energy_platform.items]]\nmeter = \"incomer\"\ndata_code = \"E001-0101-00\"\n";
    let plan = plantwatch::config::load_str(
        "bench.toml",
        text,
        &plantwatch::config::EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .unwrap();
    let platform = plan.energy_platform.unwrap();
    // 2026-10-05 00:00 in Asia/Shanghai.
    let day = 1_759_593_600_000_i64;
    let intervals: Vec<LedgerInterval> = (0..96_i64)
        .map(|q| {
            let hour = q as f64 / 4.0;
            let delta = 30.0 * plantwatch::sim::behaviour::load_shape(hour) * 0.25;
            LedgerInterval {
                meter: "incomer".into(),
                kind: "electricity".into(),
                unit: "kWh".into(),
                start_ms: day + q * 900_000,
                end_ms: day + (q + 1) * 900_000,
                delta,
                quality: IntervalQuality::Good,
                flags: Flags::EMPTY,
                tou: [0.0, 0.0, delta, 0.0],
                kgce: None,
            }
        })
        .collect();
    let records = Builder::new(&platform.spec).build(&intervals, day + 86_400_000 + 60_000);
    let uploaded = chrono::NaiveDate::from_ymd_opt(2026, 10, 6)
        .and_then(|d| d.and_hms_opt(0, 0, 5))
        .unwrap();
    let (mut bytes, mut count, mut day_record) = (0u64, 0u64, 0u64);
    for r in &records {
        let payload = serde_json::to_vec(&r.payload(&platform.spec.versions, uploaded)).unwrap();
        let topic = format!(
            "plantwatch/bench/gw/{}",
            plantwatch::platform::outbox::stream(&r.key.data_code)
        );
        let remaining = 2 + topic.len() + 2 + payload.len();
        let packet = 1 + varint_len(remaining) + remaining as u64 + 4;
        if r.key.stat_type.code() == "1" {
            day_record = packet;
        }
        bytes += packet;
        count += 1;
    }
    // A month record, the size of a day's, once a month.
    let per_day = bytes as f64 + day_record as f64 / 30.4;
    println!(
        "  {:<52} {:>8.1} {:>12.4} {:>14.3} {:>12} {:>12} {:>12}",
        "energy_platform, 15 min (computed)",
        bytes as f64 / count.max(1) as f64,
        per_day / (POINTS as f64 * 86_400.0),
        per_day / 1e6,
        format!("{count}/day"),
        "-",
        "-",
    );
}
