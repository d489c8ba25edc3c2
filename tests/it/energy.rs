//! The energy ledger end to end: a simulated meter → the real daemon → closed intervals on the
//! energy topic, checked against the meter's own counter.

use std::time::Duration;

use plantwatch::sim::{Bind, Simulator};
use plantwatch::sink::mqtt::broker::EmbeddedBroker;

use crate::harness::daemon::Daemon;
use crate::harness::plan;
use crate::harness::subscriber::{Received, Subscriber};

/// The meter's counter at `t` (ms), linearly between the two polls around it.
fn counter_at(readings: &[(i64, f64)], t: i64) -> Option<f64> {
    let i = readings.iter().position(|&(ts, _)| ts >= t)?;
    if i == 0 {
        return None;
    }
    let ((t0, v0), (t1, v1)) = (readings[i - 1], readings[i]);
    Some(v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_intervals_equal_the_meters_own_counter_progress() {
    let broker = EmbeddedBroker::start().unwrap();
    let devices = "[[devices]]\nname = \"meter-1\"\nlink = \"switchroom\"\nunit_id = 1\n\
                   profile = \"chint-dtsu666\"\npoll_interval_ms = 200\n";
    let sim_plan = plan(&format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n[[links]]\nname = \"switchroom\"\nkind = \"tcp\"\n\
         host = \"127.0.0.1\"\nport = 502\n\n{devices}"
    ));
    let sim = Simulator::start(&sim_plan, Bind::LOOPBACK).await.unwrap();
    let port = sim.endpoints[0].1.rsplit_once(':').unwrap().1.to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n\
         topic_prefix = \"te\"\n\n[store]\npath = \"{}\"\ncommit_window_ms = 20\n\n\
         [energy]\ninterval = \"2s\"\n\n\
         [[meters]]\nname = \"main\"\ndevice = \"meter-1\"\npoint = \"ep_import\"\n\
         kind = \"electricity\"\ngroups = [\"site\"]\n\n\
         [[links]]\nname = \"switchroom\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\n\n{devices}",
        broker.addr.port(),
        dir.path().join("state.db").display()
    );
    let mut sub = Subscriber::start(broker.addr, "te/#").await;
    let daemon = Daemon::spawn(dir.path(), &config);
    let got = sub
        .collect_until(Duration::from_secs(40), |g| {
            g.iter().filter(|m| m.topic == "te/energy/main").count() >= 6
        })
        .await;
    let intervals: Vec<serde_json::Value> = got
        .iter()
        .filter(|m| m.topic == "te/energy/main")
        .map(Received::json)
        .collect();
    assert!(
        intervals.len() >= 6,
        "intervals: {intervals:?}\n{}",
        daemon.log()
    );
    let readings: Vec<(i64, f64)> = got
        .iter()
        .filter(|m| m.topic == "te/telemetry/meter-1")
        .map(Received::json)
        .filter_map(|j| Some((j["ts"].as_i64()?, j["points"]["ep_import"]["v"].as_f64()?)))
        .collect();
    let mut checked = 0;
    for w in intervals.windows(2) {
        assert_eq!(w[0]["end"], w[1]["start"], "intervals tile time: {w:?}");
    }
    for iv in &intervals {
        assert_eq!(iv["v"], 1);
        assert_eq!(iv["kind"], "electricity");
        assert_eq!(iv["unit"], "kWh");
        let (start, end) = (iv["start"].as_i64().unwrap(), iv["end"].as_i64().unwrap());
        assert_eq!(end - start, 2000);
        assert_eq!(
            start % 2000,
            0,
            "aligned to the local clock (whole-hour zone)"
        );
        let delta = iv["delta"].as_f64().unwrap();
        let kgce = iv["kgce"].as_f64().unwrap();
        assert!((kgce - delta * 0.1229).abs() < 1e-9, "{iv}");
        assert!(iv["tou"].is_string(), "{iv}");
        if iv["quality"] != "good" {
            continue;
        }
        let (Some(a), Some(b)) = (counter_at(&readings, start), counter_at(&readings, end)) else {
            continue;
        };
        // The ledger splits each poll-to-poll step linearly in time, exactly as this check
        // interpolates; the residue is float rounding of an f32 register.
        assert!(
            (delta - (b - a)).abs() < 1e-3,
            "interval {start}..{end}: delta {delta} vs counter progress {}",
            b - a
        );
        assert!(delta > 0.0, "the simulated plant draws power: {iv}");
        checked += 1;
    }
    assert!(checked >= 3, "checked {checked} intervals: {intervals:?}");
}
