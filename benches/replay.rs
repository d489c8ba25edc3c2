//! `plantwatch replay` throughput (issue budget: over 1 million rows per second on one core)
//! with every rule kind enabled, and the cost per value of the pipeline step that live and replay
//! share.
//!
//! Run with `cargo bench --bench replay`; `BENCH_ROWS` (default 2 000 000) sets the input size.
//! The input is generated in memory (`timestamp,device,point,value`, one poll per second of a
//! motor PLC, 11 points) and the output goes to a sink, so the figure is parse + detect +
//! write, not disk.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark binary"
)]

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

fn main() {
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
