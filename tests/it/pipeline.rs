//! Live and replay run one pipeline: the demo plant polled by the real daemon, then its stored
//! telemetry replayed through `plantwatch replay`, must give the same alarm events and the
//! same ledger intervals, byte for byte.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::Simulator;
use plantwatch::clock::{Clock, SystemClock};
use plantwatch::config::{EnvOverrides, load_str};
use plantwatch::encode::json_v1;
use plantwatch::process::ledger::{LedgerEvent, LedgerInterval};
use plantwatch::replay::{LedgerSink, ReplayOptions, replay};
use plantwatch::runtime::daemon::{ConfigSource, Options};
use plantwatch::sim::{Bind, Fault};
use plantwatch::store::record;
use tokio_util::sync::CancellationToken;

use crate::harness::{eventually, within};

/// The demo plant, polled five times faster, with a short ledger interval and rules of every
/// family that can fire within seconds: limits, rate, expression, comm loss, demand, quota.
fn config() -> String {
    let demo = std::fs::read_to_string(crate::harness::repo().join("configs/demo.toml")).unwrap();
    let demo = demo
        .replace("poll_interval_ms = 1000", "poll_interval_ms = 200")
        .replace("interval = \"10s\"", "interval = \"2s\"")
        .replace("duration = \"3s\"", "duration = \"1s\"");
    assert!(demo.contains("poll_interval_ms = 200") && demo.contains("interval = \"2s\""));
    format!(
        "{demo}\n\
         [[rules]]\nname = \"temp-rising\"\nkind = \"rate\"\ndevice = \"pump-1\"\npoint = \"motor_temp\"\n\
         limit = 20.0\nper = \"second\"\nwindow = \"1s\"\n\n\
         [[rules]]\nname = \"running-hot\"\nkind = \"expression\"\ndevice = \"pump-1\"\n\
         when = \"run_state == 1 && motor_temp > 60\"\n\n\
         [[rules]]\nname = \"ua-low\"\nkind = \"low\"\ndevice = \"main-meter\"\npoint = \"ua\"\nlimit = 400.0\n\n\
         [[quotas]]\nname = \"tiny-daily\"\ntarget = \"incomer\"\nperiod = \"day\"\nlimit = 0.0001\nmin_elapsed = 0.0\n"
    )
}

/// Collects what replay books: the ledger's JSON messages, and its counter events as
/// `meter kind at_ms`.
#[derive(Default)]
struct Booked(Vec<Vec<u8>>, Vec<String>);

impl LedgerSink for Booked {
    fn intervals(&mut self, intervals: Vec<LedgerInterval>) -> std::io::Result<()> {
        self.0.extend(intervals.iter().map(json_v1::energy));
        Ok(())
    }

    fn events(&mut self, events: Vec<LedgerEvent>) -> std::io::Result<()> {
        self.1.extend(
            events
                .iter()
                .map(|e| format!("{} {} {}", e.meter, e.event.kind.as_str(), e.event.at_ms)),
        );
        Ok(())
    }

    fn states(&mut self, _states: Vec<(String, String)>) -> std::io::Result<()> {
        Ok(())
    }
}

/// The counter events the daemon booked in the state file, as `meter kind at_ms`.
fn stored_events(state: &Path) -> Vec<String> {
    let db =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut q = db
        .prepare("SELECT meter, kind, at_ms FROM energy_events ORDER BY at_ms, meter")
        .unwrap();
    q.query_map([], |r| {
        Ok(format!(
            "{} {} {}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?
        ))
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

/// The stored outbox, in the order the core wrote it: (stream, payload).
fn outbox(state: &Path) -> Vec<(String, Vec<u8>)> {
    outbox_rows(state).unwrap()
}

fn outbox_rows(state: &Path) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let db =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut q = db.prepare("SELECT stream, payload FROM outbox ORDER BY id")?;
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

/// Waits (bounded: 30 s) until the state file's outbox holds `count` rows for which `wanted`
/// holds, given the row's stream and its wire message as JSON (null for a telemetry batch).
async fn wait_for(
    state: &Path,
    count: usize,
    what: &str,
    wanted: impl Fn(&str, &serde_json::Value) -> bool,
) {
    eventually(Duration::from_secs(30), what, || {
        // The daemon creates the file and its tables: until then there is nothing to read.
        let rows = if state.exists() {
            outbox_rows(state).unwrap_or_default()
        } else {
            Vec::new()
        };
        let found = rows
            .iter()
            .filter(|(stream, payload)| {
                let body = record::decode_wire(payload)
                    .and_then(|(b, _)| serde_json::from_slice(b).ok())
                    .unwrap_or(serde_json::Value::Null);
                wanted(stream, &body)
            })
            .count();
        (found >= count).then_some(())
    })
    .await;
}

/// Whether `body` is an alarm change of `rule` to `state`.
fn alarm(body: &serde_json::Value, rule: &str, state: &str) -> bool {
    body["rule"] == rule && body["state"] == state
}

/// A stored wire message's bytes (alarms, energy), without its retain flag.
fn wire(payload: &[u8]) -> Vec<u8> {
    record::decode_wire(payload).unwrap().0.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_live_recording_gives_the_same_alarms_and_ledger() {
    let text = config();
    let plan = load_str(
        "equivalence.toml",
        &text,
        &EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .unwrap();
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let mut live = sim.plan.clone();
    live.store.path = state.clone();
    live.mqtt.clear();

    let stop = CancellationToken::new();
    let daemon = tokio::spawn(plantwatch::runtime::daemon::run(
        Options {
            config: ConfigSource::Fixed(Box::new(live.clone())),
            profiles_dir: None,
            metrics_addr: None,
            shutdown_grace: Duration::from_secs(5),
            stop: Some(stop.clone()),
        },
        Arc::new(SystemClock) as Arc<dyn Clock>,
    ));
    // A spike, then a cable pulled and put back: limit, rate, expression and comm-loss alarms
    // raise and clear while the meter's counter closes ledger intervals every 2 s. Each step
    // waits (bounded) until the daemon has stored what it should show.
    let pump = sim.device("pump-1").unwrap();
    wait_for(&state, 5, "pump-1 polled", |stream, _| {
        stream == "telemetry/pump-1"
    })
    .await;
    pump.inject(Fault::Spike(3));
    wait_for(&state, 1, "the spike raises motor-overheat", |_, b| {
        alarm(b, "motor-overheat", "active")
    })
    .await;
    pump.inject(Fault::NoAnswer);
    wait_for(&state, 1, "the pulled cable raises offline", |_, b| {
        alarm(b, "offline", "active")
    })
    .await;
    pump.clear_faults();
    wait_for(&state, 1, "the cable put back clears offline", |_, b| {
        alarm(b, "offline", "cleared")
    })
    .await;
    wait_for(&state, 3, "three ledger intervals", |stream, _| {
        stream.starts_with("energy/")
    })
    .await;
    stop.cancel();
    within(Duration::from_secs(20), "the daemon stops", daemon)
        .await
        .unwrap()
        .unwrap();
    sim.shutdown().await;

    let stored = outbox(&state);
    let mut csv = String::from("timestamp,device,point,value\n");
    let (mut live_alarms, mut live_energy) = (Vec::new(), Vec::new());
    let mut polls = 0;
    for (stream, payload) in &stored {
        if stream.starts_with("telemetry/") {
            let (batch, _seq) = record::decode_batch(payload).unwrap();
            // The time a telemetry message carries: the poll's last response.
            let ts = batch.samples.iter().map(|s| s.ts.0).max().unwrap();
            for s in &batch.samples {
                let value = match (s.quality.label(), s.value.as_ref().and_then(|v| v.as_f64())) {
                    ("good", Some(v)) => format!("{v:?}"),
                    _ => String::new(),
                };
                csv.push_str(&format!("{ts},{},{},{value}\n", batch.device, s.point));
            }
            polls += 1;
        } else if stream.starts_with("alarm/") {
            let body = wire(payload);
            // A cleared alarm's retained state is removed by an empty message: not an event.
            if !body.is_empty() {
                live_alarms.push(body);
            }
        } else if stream.starts_with("energy/") {
            live_energy.push(wire(payload));
        }
    }
    assert!(polls > 100, "{polls} polls stored");
    assert!(
        live_energy.len() >= 3,
        "{} ledger intervals closed live",
        live_energy.len()
    );
    let kinds: Vec<String> = live_alarms
        .iter()
        .map(|a| {
            let j: serde_json::Value = serde_json::from_slice(a).unwrap();
            format!("{}:{}", j["rule"], j["state"])
        })
        .collect();
    for wanted in [
        "\"offline\":\"active\"",
        "\"offline\":\"cleared\"",
        "\"tiny-daily",
    ] {
        assert!(
            kinds.iter().any(|k| k.contains(wanted)),
            "no {wanted} event live: {kinds:?}"
        );
    }

    let mut events = Vec::new();
    let mut booked = Booked::default();
    let opts = ReplayOptions {
        input_name: "live recording".into(),
        ..ReplayOptions::default()
    };
    let summary = replay(
        &live.replay_spec(),
        csv.as_bytes(),
        std::io::sink(),
        Some(&mut events),
        &opts,
        Some(&mut booked),
        |_| {},
    )
    .unwrap();
    assert_eq!(summary.unknown, 0);
    let replayed: Vec<Vec<u8>> = events
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let text = |v: &[Vec<u8>]| {
        v.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        text(&replayed),
        text(&live_alarms),
        "alarm events: replay (left) against live (right)"
    );
    assert_eq!(
        text(&booked.0),
        text(&live_energy),
        "ledger intervals: replay (left) against live (right)"
    );
    assert_eq!(
        booked.1,
        stored_events(&state),
        "counter events: replay (left) against live (right)"
    );
}
