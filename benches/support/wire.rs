//! Bytes on the wire per payload profile and reporting policy (issue 19), for the e2e bench:
//! `BENCH_WIRE=1` runs the daemon once per case against the same simulated plant and counts
//! every MQTT packet the daemon's messages cost on the broker link.
//!
//! A message costs its PUBLISH packet (fixed header, topic, packet id at QoS 1, payload) and,
//! at QoS 1, the 4-byte PUBACK; TCP/IP and TLS framing are left out, as they depend on the link.
//! Values are those a platform receives: v1 points, v2 entries of `p` and `bad`, Sparkplug DDATA
//! metrics. Messages sent once at start (births, schemas, status) fall in the warm-up and are
//! not counted.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::Guard;

/// One measured combination.
struct Case {
    label: &'static str,
    /// Added to `[mqtt]`.
    mqtt: &'static str,
    /// Added to every `[[devices]]`.
    device: &'static str,
}

const CASES: [Case; 7] = [
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
}

fn varint_len(mut n: usize) -> u64 {
    let mut len = 1;
    while n >= 128 {
        n /= 128;
        len += 1;
    }
    len
}

/// What one delivered PUBLISH cost the daemon's link, and the values it carried.
fn tally(t: &Tally, topic: &str, payload: &[u8], qos: QoS) {
    let acked = qos != QoS::AtMostOnce;
    let remaining = 2 + topic.len() + if acked { 2 } else { 0 } + payload.len();
    let packet = 1 + varint_len(remaining) + remaining as u64 + if acked { 4 } else { 0 };
    let values = if topic.contains("/telemetry/") {
        if payload.starts_with(b"{\"v\":2") {
            let j: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
            let n = |k: &str| j[k].as_object().map_or(0, serde_json::Map::len);
            (n("p") + n("bad")) as u64
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
}

/// Runs every case for `seconds` after `warmup` and prints its figures.
pub(crate) fn run(
    bin: &Path,
    broker: SocketAddr,
    plant: &str,
    dir: &Path,
    devices: u64,
    warmup: u64,
    seconds: u64,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "wire: {devices} devices × 22 values polled at 1 s, {seconds} s per case; MQTT bytes (PUBLISH + PUBACK) on the daemon's link"
    );
    println!(
        "  {:<40} {:>10} {:>12} {:>16} {:>14}",
        "profile, reporting", "B/value", "B/value/poll", "MB/device-day", "values/poll"
    );
    for (i, case) in CASES.iter().enumerate() {
        let t = Arc::new(Tally::default());
        let ready = Arc::new(AtomicBool::new(false));
        let sub = {
            let (t, ready) = (t.clone(), ready.clone());
            rt.spawn(async move {
                let mut o = MqttOptions::new(
                    format!("wire-sub-{i}"),
                    broker.ip().to_string(),
                    broker.port(),
                );
                o.set_max_packet_size(1 << 20, 1 << 20)
                    .set_keep_alive(Duration::from_secs(30));
                let (client, mut ev) = AsyncClient::new(o, 100);
                // QoS 1 on the subscription: each message arrives at the QoS it was sent with.
                client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            ready.store(true, Ordering::SeqCst)
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            if !p.retain {
                                tally(&t, &p.topic, &p.payload, p.qos);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        };
        for _ in 0..100 {
            if ready.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let case_dir = dir.join(format!("wire-{i}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let cfg = case_dir.join("plantwatch.toml");
        let plant = plant.replace("[[devices]]\n", &format!("[[devices]]\n{}", case.device));
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nsite = \"bench\"\nid = \"gw\"\n\n[store]\npath = \"{}\"\n\n{plant}\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n{}",
                case_dir.join("state.db").display(),
                broker.port(),
                case.mqtt
            ),
        )
        .unwrap();
        let daemon = Guard(
            Command::new(bin)
                .arg("run")
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
        let (b0, v0, t0) = (
            t.bytes.load(Ordering::Relaxed),
            t.values.load(Ordering::Relaxed),
            Instant::now(),
        );
        std::thread::sleep(Duration::from_secs(seconds));
        let (bytes, values, dt) = (
            t.bytes.load(Ordering::Relaxed) - b0,
            t.values.load(Ordering::Relaxed) - v0,
            t0.elapsed().as_secs_f64(),
        );
        drop(daemon);
        sub.abort();
        let polled = devices as f64 * 22.0 * dt;
        println!(
            "  {:<40} {:>10.1} {:>12.2} {:>16.2} {:>14.2}",
            case.label,
            bytes as f64 / values.max(1) as f64,
            bytes as f64 / polled,
            bytes as f64 / devices as f64 / dt * 86_400.0 / 1e6,
            values as f64 / polled * 22.0,
        );
    }
}
