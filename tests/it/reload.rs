//! SIGHUP restarts only what changed: a device added to one link restarts that link alone, and
//! an edited webhook restarts that webhook alone; the MQTT session and the other links keep
//! their connections.

use std::time::Duration;

use crate::harness::Simulator;
use plantwatch::sim::Bind;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;

use crate::harness::daemon::Daemon;
use crate::harness::plan;
use crate::harness::subscriber::{Received, Subscriber};

/// Two TCP links with a PLC each, and `b-2` on the second link when `with_b2`.
fn plant(ports: (&str, &str), with_b2: bool) -> String {
    let device = |name: &str, link: &str, unit: u8| {
        format!(
            "[[devices]]\nname = \"{name}\"\nlink = \"{link}\"\nunit_id = {unit}\nprofile = \"generic-plc\"\npoll_interval_ms = 100\n\n"
        )
    };
    let mut text = format!(
        "[[links]]\nname = \"line-a\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\n\n\
         [[links]]\nname = \"line-b\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\n\n",
        ports.0, ports.1
    );
    text.push_str(&device("a-1", "line-a", 1));
    text.push_str(&device("b-1", "line-b", 1));
    if with_b2 {
        text.push_str(&device("b-2", "line-b", 2));
    }
    text
}

fn config(broker_port: u16, state: &std::path::Path, plant: &str, webhook_timeout: &str) -> String {
    format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\ntopic_prefix = \"t9\"\n\
         reconnect_min_ms = 100\nreconnect_max_ms = 1000\n\n[store]\npath = \"{}\"\ncommit_window_ms = 20\n\n\
         [[webhooks]]\nname = \"chat\"\nformat = \"generic\"\nurl = \"http://127.0.0.1:9/hook\"\ntimeout_ms = {webhook_timeout}\n\n{plant}",
        state.join("state.db").display()
    )
}

/// The `result="ok"` poll count of `device` in a `/metrics` text.
fn polls_ok(metrics: &str, device: &str) -> u64 {
    let prefix = format!("plantwatch_poll_cycles_total{{device=\"{device}\",result=\"ok\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn online_statuses(got: &[Received]) -> usize {
    got.iter()
        .filter(|m| m.topic == "t9/status" && m.json()["state"] == "online")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_only_the_parts_whose_config_changed() {
    let broker = EmbeddedBroker::start().unwrap();
    // The simulator serves b-2 from the start; the daemon learns of it on the reload.
    let sim_plan = plan(&format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n{}",
        plant(("502", "503"), true)
    ));
    let sim = Simulator::start(&sim_plan, Bind::LOOPBACK).await.unwrap();
    let port = |link: &str| {
        let (_, endpoint) = sim.endpoints.iter().find(|(l, _)| l == link).unwrap();
        endpoint.rsplit_once(':').unwrap().1.to_owned()
    };
    let ports = (port("line-a"), port("line-b"));
    let ports = (ports.0.as_str(), ports.1.as_str());
    let dir = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::start(broker.addr, "t9/#").await;
    let daemon = Daemon::spawn(
        dir.path(),
        &config(broker.addr.port(), dir.path(), &plant(ports, false), "5000"),
    );
    let mut got = sub
        .collect_until(Duration::from_secs(30), |g| online_statuses(g) == 1)
        .await;
    assert_eq!(online_statuses(&got), 1, "connected\n{}", daemon.log());
    // Long enough that a restarted link could not have counted as many polls since.
    let mut before = 0;
    for _ in 0..100 {
        before = polls_ok(&daemon.metrics().await, "a-1");
        if before >= 40 {
            break;
        }
        got.extend(
            sub.collect_until(Duration::from_millis(200), |_| false)
                .await,
        );
    }
    assert!(before >= 40, "a-1 polled {before} times\n{}", daemon.log());

    std::fs::write(
        &daemon.config,
        config(broker.addr.port(), dir.path(), &plant(ports, true), "7000"),
    )
    .unwrap();
    daemon.signal("HUP");
    got.extend(
        sub.collect_until(Duration::from_secs(20), |g| {
            g.iter().any(|m| m.topic == "t9/telemetry/b-2")
        })
        .await,
    );
    assert!(
        got.iter().any(|m| m.topic == "t9/telemetry/b-2"),
        "the new device is polled after the reload\n{}",
        daemon.log()
    );
    let metrics = daemon.metrics().await;
    let after = polls_ok(&metrics, "a-1");
    assert!(
        after >= before,
        "line-a was restarted: a-1's poll count went from {before} to {after}\n{}",
        daemon.log()
    );
    // The kept session publishes its status again, naming the new file (issue 17); a second
    // status for the same file would mean it reconnected.
    got.extend(sub.collect_until(Duration::from_secs(1), |_| false).await);
    let configs: Vec<String> = got
        .iter()
        .filter(|m| m.topic == "t9/status" && m.json()["state"] == "online")
        .map(|m| m.json()["config"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        configs.len(),
        2,
        "the MQTT session reconnected on a reload that did not change it, or did not name \
         the new file: {configs:?}\n{}",
        daemon.log()
    );
    assert_ne!(
        configs[0], configs[1],
        "the status names the same file twice"
    );
    assert!(
        metrics.contains("plantwatch_mqtt_connects_total{sink=\"mqtt\"} 1"),
        "{metrics}"
    );
    let log = daemon.log();
    assert!(log.contains("Configuration reloaded"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("Link changed") && l.contains("line-a")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Link changed") && l.contains("line-b")),
        "{log}"
    );
}
