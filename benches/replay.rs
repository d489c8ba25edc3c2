//! `plantwatch replay` throughput (issue budget: over 1 million rows per second on one core)
//! with every rule kind enabled, and the cost per value of the pipeline step that live and replay
//! share.
//!
//! Run with `cargo bench --bench replay`; `BENCH_ROWS` (default 2 000 000) sets the input size.
//! The input is generated in memory (`timestamp,device,point,value`, one poll per second of a
//! motor PLC, 11 points) and the output goes to a sink, so the figure is parse + detect +
//! write, not disk.
//!
//! Then a fleet (`BENCH_FLEET` devices, default 1 000, each with a comm-loss and a limit rule)
//! polled once a second with the polls spread over the second, as the live daemon sees them:
//! each poll advances time, so what time alone decides (comm-loss delays, shelves) is looked
//! at once per poll. Its figure is the cost of a poll in a large fleet, where a scan of every
//! rule instance per poll would grow with the fleet.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark binary"
)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use plantwatch::config::{EnvOverrides, load_str};
use plantwatch::model::{Name, PointSample, Quality, SampleBatch, Timestamp, Value};
use plantwatch::pipeline::{Outputs, Pipeline, Taps};
use plantwatch::replay::episodes::EpisodeFormat;
use plantwatch::replay::{ReplayOptions, replay, replay_with_episodes};

const CONFIG: &str = r#"
[gateway]
site = "bench"
id = "gw"
timezone = "Asia/Shanghai"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "motor-1"
link = "bus"
profile = "generic-plc"

[[rules]]
name = "hot"
kind = "high"
point = "*_temp"
limit = 95
deadband = 2
on_delay = "10s"

[[rules]]
name = "very-hot"
kind = "high_high"
point = "motor_temp"
limit = 110

[[rules]]
name = "cold"
kind = "low"
point = "ambient_temp"
limit = -10

[[rules]]
name = "frozen-cold"
kind = "low_low"
point = "ambient_temp"
limit = -30

[[rules]]
name = "heating-fast"
kind = "rate"
point = "motor_temp"
limit = 10
per = "minute"
window = "1m"

[[rules]]
name = "stuck"
kind = "stuck"
point = "vibration"
duration = "10m"

[[rules]]
name = "offline"
kind = "comm_loss"
duration = "30s"

[[rules]]
name = "odd"
kind = "anomaly"
point = "vibration"
season = "hour_of_day"

[[rules]]
name = "odd-current"
kind = "anomaly"
point = "motor_current"

[[rules]]
name = "will-overheat"
kind = "trend"
point = "bearing_temp"
limit = 90
direction = "rising"
horizon = "6h"

[[rules]]
name = "dry"
kind = "expression"
when = "run_state == 1 && motor_current < 0.5"

[[maintenance]]
device = "motor-1"
run_point = "run_state"
service_hours = 2000
"#;

const POINTS: [&str; 11] = [
    "motor_temp",
    "bearing_temp",
    "ambient_temp",
    "vibration",
    "run_state",
    "fault",
    "fault_code",
    "running_hours",
    "motor_current",
    "speed",
    "ready",
];

fn value(point: usize, t: i64) -> f64 {
    let wobble = ((t * 7919 + point as i64 * 104_729) % 1000) as f64 / 1000.0;
    match point {
        0 => 70.0 + 5.0 * wobble,
        1 => 55.0 + 3.0 * wobble,
        2 => 20.0 + wobble,
        3 => 2.0 + 0.2 * wobble,
        4 | 10 => 1.0,
        5 | 6 => 0.0,
        7 => (t / 3600) as f64,
        8 => 40.0 + 4.0 * wobble,
        _ => 1480.0 + 20.0 * wobble,
    }
}

/// The fleet case: `devices` devices polled every second for `seconds`, polls spread evenly
/// over each second, every tenth device silent for a minute in the middle (so comm-loss
/// delays are running); prints the cost per poll.
fn fleet(devices: usize, seconds: i64) {
    let mut config = String::from(
        "[gateway]\nsite = \"bench\"\nid = \"gw\"\n[[links]]\nname = \"bus\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[rules]]\nname = \"offline\"\nkind = \"comm_loss\"\nduration = \"30s\"\n\
         [[rules]]\nname = \"hot\"\nkind = \"high\"\npoint = \"t\"\nlimit = 90\non_delay = \"10s\"\n",
    );
    for d in 0..devices {
        write!(
            config,
            "[[devices]]\nname = \"m-{d}\"\nlink = \"bus\"\n[devices.points.t]\naddress = 0\n[devices.points.p]\naddress = 1\n"
        )
        .unwrap();
    }
    let plan = load_str(
        "fleet.toml",
        &config,
        &EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .unwrap();
    let names: Vec<Name> = (0..devices)
        .map(|d| Name::new(&format!("m-{d}")).unwrap())
        .collect();
    let (t, p) = (Name::new("t").unwrap(), Name::new("p").unwrap());
    let mut pipeline = Pipeline::from_spec(plan.pipeline_spec(), Taps::default());
    let mut out = Outputs::default();
    let (mut polls, mut events) = (0usize, 0usize);
    let start = 1_764_000_000_000_i64;
    let mut busy = std::time::Duration::ZERO;
    for s in 0..seconds {
        // One second of polls, built before the clock starts.
        let batches: Vec<SampleBatch> = names
            .iter()
            .enumerate()
            .map(|(d, name)| {
                let at = start + s * 1000 + (d * 1000 / devices) as i64;
                let silent = d % 10 == 0 && (seconds / 2..seconds / 2 + 60).contains(&s);
                let sample = |point: &Name, v: f64| PointSample {
                    point: point.clone(),
                    ts: Timestamp(at),
                    value: (!silent).then_some(Value::F64(v)),
                    quality: if silent {
                        Quality::Bad(plantwatch::model::BadReason::Timeout)
                    } else {
                        Quality::Good
                    },
                };
                SampleBatch {
                    device: name.clone(),
                    tick: Timestamp(at),
                    samples: vec![sample(&t, value(0, s + d as i64)), sample(&p, 1.0)],
                }
            })
            .collect();
        polls += batches.len();
        let started = Instant::now();
        for b in batches {
            let tick = b.tick;
            pipeline.step(b, tick, &mut out);
        }
        busy += started.elapsed();
        events += out.events.len();
        out.clear();
    }
    let secs = busy.as_secs_f64();
    println!(
        "fleet: {devices} devices × {seconds} s = {polls} polls (2 rules each, polls spread over the second) in {secs:.3} s: {:.0} ns/poll, {events} events",
        secs * 1e9 / polls as f64,
    );
}

fn main() {
    let fleet_devices: usize = std::env::var("BENCH_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    fleet(fleet_devices, 300);
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let plan = load_str(
        "bench.toml",
        CONFIG,
        &EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .unwrap();
    let rules: usize = plan.rules.iter().map(|r| r.targets.len()).sum();

    // The pipeline step alone, on ready-made batches: what live and replay both pay per value.
    let polls = rows / POINTS.len();
    let names: Vec<Name> = POINTS.iter().map(|p| Name::new(p).unwrap()).collect();
    let device = Name::new("motor-1").unwrap();
    let batches: Vec<SampleBatch> = (0..polls.min(200_000))
        .map(|i| {
            let t = 1_764_000_000_000 + i as i64 * 1000;
            SampleBatch {
                device: device.clone(),
                tick: Timestamp(t),
                samples: names
                    .iter()
                    .enumerate()
                    .map(|(p, n)| PointSample {
                        point: n.clone(),
                        ts: Timestamp(t),
                        value: Some(Value::F64(value(p, i as i64))),
                        quality: Quality::Good,
                    })
                    .collect(),
            }
        })
        .collect();
    let mut pipeline = Pipeline::from_spec(plan.pipeline_spec(), Taps::default());
    let mut out = Outputs::default();
    let (polls, values) = (batches.len(), batches.len() * POINTS.len());
    let started = Instant::now();
    for b in batches {
        let tick = b.tick;
        pipeline.step(b, tick, &mut out);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "pipeline step (ledger, rules, energy alarms): {values} values ({polls} polls, {rules} alarms) in {secs:.3} s: {:.2} M values/s, {:.0} ns/value, {} events",
        values as f64 / secs / 1e6,
        secs * 1e9 / values as f64,
        out.events.len()
    );

    // Replay end to end: CSV parse + detect + CSV write.
    let mut csv = Vec::with_capacity(rows * 40);
    csv.extend_from_slice(b"timestamp,device,point,value\n");
    for i in 0..rows {
        let (t, p) = ((i / POINTS.len()) as i64, i % POINTS.len());
        writeln!(
            csv,
            "{},motor-1,{},{:.3}",
            1_764_000_000 + t,
            POINTS[p],
            value(p, t)
        )
        .unwrap();
    }
    let opts = ReplayOptions {
        input_name: "generated".into(),
        ..ReplayOptions::default()
    };
    let started = Instant::now();
    let summary = replay(
        &plan.replay_spec(),
        csv.as_slice(),
        std::io::sink(),
        Some(std::io::sink()),
        &opts,
        None,
        |_| {},
    )
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replay: {} rows ({:.1} MiB of CSV, every rule kind: {rules} alarms) in {secs:.3} s: {:.2} M rows/s, {} events",
        summary.rows,
        csv.len() as f64 / (1024.0 * 1024.0),
        summary.rows as f64 / secs / 1e6,
        summary.events
    );

    // The same values as a wide historian export (`--device`, one row per poll), with the
    // episode list (`--episodes`) written too.
    let mut wide = Vec::with_capacity(rows * 10);
    wide.extend_from_slice(b"timestamp");
    for p in POINTS {
        write!(wide, ";{p}").unwrap();
    }
    wide.push(b'\n');
    for t in 0..(rows / POINTS.len()) as i64 {
        write!(wide, "{}", 1_764_000_000 + t).unwrap();
        for p in 0..POINTS.len() {
            write!(wide, ";{:.3}", value(p, t)).unwrap();
        }
        wide.push(b'\n');
    }
    let opts = ReplayOptions {
        input_name: "generated".into(),
        device: Some("motor-1".into()),
        ..ReplayOptions::default()
    };
    let mut episodes = std::io::sink();
    let started = Instant::now();
    let summary = replay_with_episodes(
        &plan.replay_spec(),
        wide.as_slice(),
        std::io::sink(),
        Some(std::io::sink()),
        &opts,
        None,
        Some((&mut episodes, EpisodeFormat::Csv)),
        |_| {},
    )
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let values = summary.rows as usize * POINTS.len();
    println!(
        "replay --device --episodes: {} polls of {} points ({:.1} MiB of CSV) in {secs:.3} s: {:.2} M values/s, {} episodes",
        summary.rows,
        POINTS.len(),
        wide.len() as f64 / (1024.0 * 1024.0),
        values as f64 / secs / 1e6,
        summary.episodes
    );
}
