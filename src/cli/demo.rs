//! `plantwatch demo`: a simulated plant, an in-process MQTT broker and the real daemon, wired
//! on loopback; what is printed is what arrived at the broker.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::EnvOverrides;
use crate::config::daemon::{Format, Mqtt};
use crate::runtime::daemon::{ConfigSource, Options};
use crate::sim::{Bind, Fault, Simulator};
use crate::sink::mqtt::broker::EmbeddedBroker;

/// The demo plant's config.
pub(super) const DEMO_CONFIG: &str = include_str!("../../configs/demo.toml");

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Don't script the pump PLC's communication failure.
    #[arg(long)]
    no_faults: bool,
}

/// The points an engineer looks at first; the rest are counted.
const FIRST: [&str; 12] = [
    "ua",
    "ia",
    "p",
    "pf",
    "freq",
    "ep_import",
    "motor_temp",
    "bearing_temp",
    "vibration",
    "run_state",
    "motor_current",
    "running_hours",
];

fn line(topic: &str, msg: &Json) -> String {
    // Energy intervals carry their end instead of a `ts`.
    let time = msg["ts"]
        .as_i64()
        .or_else(|| msg["end"].as_i64())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono_tz::Asia::Shanghai)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    let short = topic.split_once("/gw-01/").map_or(topic, |(_, t)| t);
    if short.starts_with("energy/") {
        return format!(
            "{time}  {short:<28} {:>8.4} {} {:<7} {:.4} kgce  {}",
            msg["delta"].as_f64().unwrap_or_default(),
            msg["unit"].as_str().unwrap_or_default(),
            msg["tou"].as_str().unwrap_or_default(),
            msg["kgce"].as_f64().unwrap_or_default(),
            msg["quality"].as_str().unwrap_or_default()
        );
    }
    if short.starts_with("alarm/") {
        return format!(
            "{time}  {short:<28} {:<8} [{}] {}",
            msg["state"].as_str().unwrap_or_default().to_uppercase(),
            msg["severity"].as_str().unwrap_or_default(),
            msg["message"].as_str().unwrap_or_default()
        );
    }
    let Some(points) = msg["points"].as_object() else {
        return format!("{time}  {short:<28} {msg}");
    };
    let good = points.values().filter(|p| p["q"] == "good").count();
    let mut shown = Vec::new();
    for (name, p) in points
        .iter()
        .filter(|(n, _)| FIRST.contains(&n.as_str()))
        .take(6)
    {
        shown.push(match (&p["v"], p["reason"].as_str()) {
            (Json::Number(n), _) => match n.as_f64() {
                Some(f) if n.is_f64() => format!("{name}={f:.2}"),
                _ => format!("{name}={n}"),
            },
            (Json::Null, Some(reason)) => format!("{name}=bad:{reason}"),
            (v, _) => format!("{name}={v}"),
        });
    }
    format!(
        "{time}  {short:<28} seq {:<4} {good:>2}/{:<2} good  {}{}",
        msg["seq"],
        points.len(),
        shown.join("  "),
        if msg["backfill"] == true {
            "  (backfill)"
        } else {
            ""
        }
    )
}

pub(super) async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let broker = EmbeddedBroker::start()?;
    let plan = crate::config::load_str(
        "demo.toml",
        DEMO_CONFIG,
        &EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sim = Simulator::start(plan.fleet(), plan.gateway.timezone, Bind::LOOPBACK).await?;
    let mut plan = plan.with_links(&sim.links);
    let prefix = format!("plantwatch/{}/{}", plan.gateway.site, plan.gateway.id);
    plan.mqtt = vec![Mqtt {
        name: crate::model::Name::new(crate::config::daemon::DEFAULT_SINK_NAME)?,
        format: Format::Json,
        sparkplug: None,
        host: broker.addr.ip().to_string(),
        port: broker.addr.port(),
        client_id: "plantwatch-demo".into(),
        topic_prefix: prefix.clone(),
        qos: 1,
        keep_alive: Duration::from_secs(30),
        max_inflight: 64,
        reconnect: (Duration::from_millis(200), Duration::from_secs(5)),
        backfill_per_live: 4,
        username: None,
        password: None,
        tls: None,
        protocol: Default::default(),
        topic_aliases: false,
    }];
    let state = std::env::temp_dir().join(format!("plantwatch-demo-{}.db", std::process::id()));
    plan.store.path = state.clone();

    out!(
        "plantwatch demo: a simulated plant, the real daemon, and an MQTT broker in this process."
    );
    for (link, endpoint) in &sim.endpoints {
        out!("  simulated link {link:<12} on {endpoint}");
    }
    out!(
        "  MQTT broker on {}; subscribe with: mosquitto_sub -p {} -t '{prefix}/#' -v",
        broker.addr,
        broker.addr.port()
    );
    out!("  Below: what arrives at the broker. Ctrl-C to stop.\n");

    let mut opts = MqttOptions::new(
        "plantwatch-demo-viewer",
        broker.addr.ip().to_string(),
        broker.addr.port(),
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (viewer, mut events) = AsyncClient::new(opts, 16);
    viewer
        .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
        .await?;

    let stop = CancellationToken::new();
    // The daemon owns SIGINT and SIGTERM (a second one exits at once); the demo ends when it
    // does. A second listener here would see the same Ctrl-C as a second signal.
    #[expect(
        clippy::disallowed_methods,
        reason = "the demo awaits the daemon it runs; the daemon supervises its own tasks"
    )]
    let mut daemon = tokio::spawn(crate::runtime::daemon::run(
        Options {
            config: ConfigSource::Fixed(Box::new(plan)),
            profiles_dir: None,
            metrics_addr: None,
            shutdown_grace: Duration::from_secs(3),
            stop: Some(stop.clone()),
        },
        Arc::new(SystemClock) as Arc<dyn Clock>,
    ));
    let start = tokio::time::Instant::now();
    let until = async {
        match args.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let (mut fault_on, mut fault_done) = (false, args.no_faults);
    let mut spiked = args.no_faults;
    let mut daemon_done = false;
    let mut failed = None;
    loop {
        tokio::select! {
            result = &mut daemon => {
                daemon_done = true;
                failed = result.map_or_else(|e| Some(anyhow::Error::new(e)), |r| r.err().map(anyhow::Error::new));
                break;
            }
            () = &mut until => break,
            event = events.poll() => match event {
                // An empty retained message removes a cleared alarm's state: nothing to show.
                Ok(Event::Incoming(Packet::Publish(p))) if p.payload.is_empty() => {}
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let msg: Json = serde_json::from_slice(&p.payload).unwrap_or(Json::Null);
                    out!("{}", line(&p.topic, &msg));
                }
                Ok(_) => {}
                Err(err) => {
                    eprintln!("viewer: {err}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let elapsed = start.elapsed();
        if !spiked && elapsed > Duration::from_secs(5) {
            if let Some(pump) = sim.device("pump-1") {
                pump.inject(Fault::Spike(3));
                out!("\n>>> demo: pump-1's motor temperature jumps for three polls <<<\n");
            }
            spiked = true;
        }
        if !fault_done && !fault_on && elapsed > Duration::from_secs(12) {
            if let Some(pump) = sim.device("pump-1") {
                pump.inject(Fault::NoAnswer);
                out!("\n>>> demo: pump-1's PLC stops answering (cable pulled) <<<\n");
                fault_on = true;
            }
        }
        if fault_on && elapsed > Duration::from_secs(24) {
            if let Some(pump) = sim.device("pump-1") {
                pump.clear_faults();
                out!("\n>>> demo: pump-1's PLC answers again <<<\n");
            }
            fault_on = false;
            fault_done = true;
        }
    }
    stop.cancel();
    if !daemon_done {
        let _finished = tokio::time::timeout(Duration::from_secs(5), daemon).await;
    }
    sim.shutdown().await;
    for suffix in ["", "-wal", "-shm"] {
        let _gone = std::fs::remove_file(format!("{}{suffix}", state.display()));
    }
    match failed {
        Some(err) => Err(err.context("the demo's daemon stopped")),
        None => Ok(ExitCode::SUCCESS),
    }
}
