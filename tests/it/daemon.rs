//! `plantwatch run` end to end: simulator → real daemon binary → broker → subscriber, with
//! broker outages, SIGKILL, SIGHUP and SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::harness::Simulator;
use plantwatch::sim::Bind;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;

use crate::harness::daemon::Daemon;
use crate::harness::proxy::Proxy;
use crate::harness::subscriber::{Received, Subscriber};
use crate::harness::{eventually_async, plan};

/// A simulated plant of `n` PLCs on one TCP link; returns it and the TOML that polls it.
pub(crate) async fn plant(n: u8, poll_ms: u64) -> (Simulator, String) {
    let mut devices = String::new();
    for k in 1..=n {
        devices.push_str(&format!(
            "[[devices]]\nname = \"plc-{k}\"\nlink = \"plc-net\"\nunit_id = {k}\nprofile = \"generic-plc\"\npoll_interval_ms = {poll_ms}\n\n"
        ));
    }
    let links =
        "[[links]]\nname = \"plc-net\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n";
    let p = plan(&format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n{links}{devices}"
    ));
    let sim = Simulator::start(&p, Bind::LOOPBACK).await.unwrap();
    let port = sim.endpoints[0].1.rsplit_once(':').unwrap().1.to_owned();
    let links = links.replace("port = 502", &format!("port = {port}"));
    (sim, format!("{links}{devices}"))
}

pub(crate) fn config(
    prefix: &str,
    broker_port: u16,
    state: &std::path::Path,
    plant: &str,
    extra: &str,
) -> String {
    format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\ntopic_prefix = \"{prefix}\"\n\
         reconnect_min_ms = 100\nreconnect_max_ms = 1000\n\n[store]\npath = \"{}\"\ncommit_window_ms = 20\n{extra}\n\n{plant}",
        state.join("state.db").display()
    )
}

/// Telemetry seqs per device.
fn seqs(got: &[Received]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in got.iter().filter(|m| m.topic.contains("/telemetry/")) {
        let j = m.json();
        out.entry(j["device"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(j["seq"].as_u64().unwrap());
    }
    out
}

/// Asserts that each device's seqs form one run without holes (duplicates allowed).
fn assert_no_gaps(got: &[Received], log: &str) {
    for (device, list) in seqs(got) {
        let set: BTreeSet<u64> = list.iter().copied().collect();
        let (lo, hi) = (*set.first().unwrap(), *set.last().unwrap());
        let missing: Vec<u64> = (lo..=hi).filter(|s| !set.contains(s)).collect();
        assert!(
            missing.is_empty(),
            "{device}: seqs {lo}..={hi} miss {missing:?}\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_arrives_with_continuous_seq_and_an_online_status() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(3, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::start(broker.addr, "t1/#").await;
    let daemon = Daemon::spawn(
        dir.path(),
        &config("t1", broker.addr.port(), dir.path(), &plant, ""),
    );
    let got = sub
        .collect_until(Duration::from_secs(30), |g| {
            seqs(g).values().filter(|v| v.len() >= 10).count() == 3
        })
        .await;
    assert_eq!(
        seqs(&got).len(),
        3,
        "three devices reported\n{}",
        daemon.log()
    );
    assert_no_gaps(&got, &daemon.log());
    let status = got.iter().find(|m| m.topic == "t1/status").expect("status");
    assert_eq!(status.json()["state"], "online");
    let t = got
        .iter()
        .find(|m| m.topic == "t1/telemetry/plc-1")
        .unwrap()
        .json();
    assert_eq!(t["v"], 1);
    assert_eq!(t["points"]["motor_temp"]["q"], "good");
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("plantwatch_poll_cycles_total{device=\"plc-1\",result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plantwatch_mqtt_connected{sink=\"mqtt\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_and_replays_as_backfill() {
    let broker = EmbeddedBroker::start().unwrap();
    let proxy = Proxy::start(broker.addr).await;
    let (_sim, plant) = plant(2, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::start(broker.addr, "t2/#").await;
    let daemon = Daemon::spawn(
        dir.path(),
        &config("t2", proxy.addr.port(), dir.path(), &plant, ""),
    );
    let before = sub
        .collect_until(Duration::from_secs(30), |g| {
            seqs(g).values().all(|v| v.len() >= 5) && seqs(g).len() == 2
        })
        .await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    let last_before: BTreeMap<String, u64> = seqs(&before)
        .into_iter()
        .map(|(d, v)| (d, *v.iter().max().unwrap()))
        .collect();
    // About 30 polls per device happened during the outage; wait for them and some live ones.
    let after = sub
        .collect_until(Duration::from_secs(40), |g| {
            let s = seqs(g);
            s.len() == 2
                && s.iter()
                    .all(|(d, v)| v.iter().max().copied().unwrap_or(0) >= last_before[d] + 40)
        })
        .await;
    let all: Vec<Received> = before.iter().chain(after.iter()).cloned().collect();
    assert_no_gaps(&all, &daemon.log());
    let backfilled = after
        .iter()
        .filter(|m| m.topic.contains("/telemetry/") && m.json()["backfill"] == true)
        .count();
    assert!(
        backfilled >= 20,
        "messages stored during the 3 s outage come back as backfill: {backfilled}\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_leaves_no_seq_missing() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(2, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::start(broker.addr, "t3/#").await;
    let mut daemon = Daemon::spawn(
        dir.path(),
        &config("t3", broker.addr.port(), dir.path(), &plant, ""),
    );
    let mut all = Vec::new();
    for round in 0..3 {
        let target = 8 * (round + 1);
        let got = sub
            .collect_until(Duration::from_secs(30), |g| {
                let s = seqs(&[all.as_slice(), g].concat());
                s.len() == 2 && s.values().all(|v| v.len() >= target)
            })
            .await;
        all.extend(got);
        daemon.kill_hard();
        daemon.start();
    }
    let got = sub
        .collect_until(Duration::from_secs(30), |g| {
            let s = seqs(&[all.as_slice(), g].concat());
            s.len() == 2 && s.values().all(|v| v.len() >= 40)
        })
        .await;
    all.extend(got);
    assert_no_gaps(&all, &daemon.log());
    let s = seqs(&all);
    assert!(
        s.values().all(|v| v.len() >= 40),
        "kept delivering after restarts: {:?}",
        s.values().map(Vec::len).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_config_and_keeps_running_on_an_invalid_one() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant2) = plant(2, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::start(broker.addr, "t4/#").await;
    // Start polling plc-1 only.
    let one = plant2
        .split("[[devices]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("[[devices]]");
    let mut daemon = Daemon::spawn(
        dir.path(),
        &config("t4", broker.addr.port(), dir.path(), &one, ""),
    );
    sub.collect_until(Duration::from_secs(30), |g| seqs(g).contains_key("plc-1"))
        .await;

    std::fs::write(&daemon.config, "[gateway]\nsite = \"s\"\n").unwrap();
    daemon.signal("HUP");
    let got = sub
        .collect_until(Duration::from_secs(10), |g| {
            seqs(g).get("plc-1").is_some_and(|v| v.len() >= 10)
        })
        .await;
    assert!(
        daemon.running(),
        "an invalid reload must not stop the daemon\n{}",
        daemon.log()
    );
    assert!(
        seqs(&got).get("plc-1").is_some_and(|v| v.len() >= 10),
        "still polling\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("Reload rejected"), "{}", daemon.log());

    std::fs::write(
        &daemon.config,
        config("t4", broker.addr.port(), dir.path(), &plant2, ""),
    )
    .unwrap();
    daemon.signal("HUP");
    let got = sub
        .collect_until(Duration::from_secs(20), |g| seqs(g).contains_key("plc-2"))
        .await;
    assert!(
        seqs(&got).contains_key("plc-2"),
        "the new device is polled after reload\n{}",
        daemon.log()
    );

    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)),
        Some(0),
        "SIGTERM drains and exits 0\n{}",
        daemon.log()
    );
    let got = sub
        .collect_until(Duration::from_secs(5), |g| {
            g.iter()
                .any(|m| m.topic == "t4/status" && m.json()["state"] == "offline")
        })
        .await;
    assert!(
        got.iter()
            .any(|m| m.topic == "t4/status" && m.json()["state"] == "offline"),
        "offline status on clean stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_the_oldest_counts_it_and_keeps_running() {
    let (_sim, plant) = plant(4, 20).await;
    let dir = tempfile::tempdir().unwrap();
    // No broker at all: everything accumulates against a tiny bound.
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = Daemon::spawn(
        dir.path(),
        &config(
            "t5",
            unreachable,
            dir.path(),
            &plant,
            "max_outbox_bytes = 65536",
        ),
    );
    let bytes = eventually_async(Duration::from_secs(30), "drops are counted", || async {
        let m = daemon.metrics().await;
        let value = |name: &str| {
            m.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let dropped = value("plantwatch_outbox_dropped_total ").unwrap_or(0);
        let bytes = value("plantwatch_outbox_bytes ").unwrap_or(u64::MAX);
        if dropped > 0 {
            Ok(bytes)
        } else {
            Err(format!("no drop yet\n{}", daemon.log()))
        }
    })
    .await;
    assert!(bytes <= 65_536, "the bound holds: {bytes} bytes");
    assert!(daemon.running(), "the daemon keeps running");
    assert!(
        daemon.log().contains("dropped") || daemon.log().contains("Dropped"),
        "logged once per episode\n{}",
        daemon.log()
    );
}

/// Receives notify datagrams until one contains `want` (bounded); returns all seen.
fn notify_until(
    sock: &std::os::unix::net::UnixDatagram,
    want: &str,
    seen: &mut Vec<String>,
) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..200 {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                seen.push(msg);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_sees_ready_watchdog_reloading_and_stopping_on_a_real_notify_socket() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(1, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut daemon = Daemon::spawn_with_env(
        dir.path(),
        &config("t6", broker.addr.port(), dir.path(), &plant, ""),
        // A 2 s watchdog: the daemon must ping about every second while polling progresses.
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut seen = Vec::new();
    assert!(
        notify_until(&sock, "READY=1", &mut seen),
        "READY=1: {seen:?}\n{}",
        daemon.log()
    );
    assert!(
        notify_until(&sock, "WATCHDOG=1", &mut seen),
        "WATCHDOG=1: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| m.starts_with("STATUS=") || m.contains("\nSTATUS=")),
        "a STATUS line: {seen:?}"
    );
    daemon.signal("HUP");
    assert!(
        notify_until(&sock, "RELOADING=1", &mut seen),
        "RELOADING=1: {seen:?}"
    );
    let reloading = seen
        .iter()
        .rev()
        .find(|m| m.contains("RELOADING=1"))
        .unwrap()
        .clone();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(
        notify_until(&sock, "READY=1", &mut seen),
        "READY=1 after the reload: {seen:?}"
    );
    daemon.signal("TERM");
    assert!(
        notify_until(&sock, "STOPPING=1", &mut seen),
        "STOPPING=1: {seen:?}"
    );
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Two `[[mqtt]]` sinks, each with its own outbox queue: the second broker is unreachable for
/// the first seconds, and the first sink delivers all along; then the second catches up with
/// everything it missed, marked backfill, its seqs counted on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sink_never_holds_back_the_other_and_catches_up_after() {
    let plant_broker = EmbeddedBroker::start().unwrap();
    let scada_broker = EmbeddedBroker::start().unwrap();
    let scada_link = Proxy::start(scada_broker.addr).await;
    scada_link.cut();
    let (_sim, plant) = plant(2, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let mut plant_sub = Subscriber::start(plant_broker.addr, "t9/#").await;
    let mut scada_sub = Subscriber::start(scada_broker.addr, "t9s/#").await;
    let sinks = format!(
        "[[mqtt]]\nname = \"plant\"\nhost = \"127.0.0.1\"\nport = {}\ntopic_prefix = \"t9\"\n\
         reconnect_min_ms = 100\nreconnect_max_ms = 500\n\n\
         [[mqtt]]\nname = \"scada\"\nhost = \"127.0.0.1\"\nport = {}\ntopic_prefix = \"t9s\"\n\
         reconnect_min_ms = 100\nreconnect_max_ms = 500\n\n",
        plant_broker.addr.port(),
        scada_link.addr.port()
    );
    let toml = format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n{sinks}[store]\npath = \"{}\"\ncommit_window_ms = 20\n\n{plant}",
        dir.path().join("state.db").display()
    );
    let daemon = Daemon::spawn(dir.path(), &toml);
    let live = plant_sub
        .collect_until(Duration::from_secs(30), |g| {
            let s = seqs(g);
            s.len() == 2 && s.values().all(|v| v.len() >= 20)
        })
        .await;
    assert!(
        seqs(&live).values().all(|v| v.len() >= 20),
        "the plant sink delivers while the SCADA broker is down\n{}",
        daemon.log()
    );
    assert_no_gaps(&live, &daemon.log());
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("plantwatch_mqtt_connected{sink=\"plant\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plantwatch_mqtt_connected{sink=\"scada\"} 0"),
        "{metrics}"
    );

    scada_link.restore();
    let caught_up = scada_sub
        .collect_until(Duration::from_secs(30), |g| {
            let s = seqs(g);
            s.len() == 2 && s.values().all(|v| v.len() >= 30)
        })
        .await;
    let scada = seqs(&caught_up);
    assert_eq!(scada.len(), 2, "both devices reach SCADA\n{}", daemon.log());
    for (device, list) in &scada {
        assert_eq!(
            list.iter().min(),
            Some(&0),
            "{device}: the SCADA sink starts at its own seq 0, nothing of the outage lost"
        );
    }
    assert_no_gaps(&caught_up, &daemon.log());
    let backfilled = caught_up
        .iter()
        .filter(|m| m.topic.contains("/telemetry/") && m.json()["backfill"] == true)
        .count();
    assert!(
        backfilled >= 20,
        "what SCADA missed comes as backfill: {backfilled}\n{}",
        daemon.log()
    );
}
