//! Alarms end to end: simulator → real daemon → broker, with the downlink commands, retained
//! state, and a SIGKILL restart that must neither raise again nor forget.

use std::time::Duration;

use plantwatch::sink::mqtt::broker::EmbeddedBroker;

use crate::daemon::{config, plant};
use crate::harness::daemon::Daemon;
use crate::harness::subscriber::{Received, Subscriber};

const RULES: &str = r#"
[[rules]]
name = "warm"
kind = "high"
device = "plc-1"
point = "motor_temp"
limit = -1000
severity = "high"

[[rules]]
name = "never"
kind = "high"
point = "motor_temp"
limit = 100000
"#;

fn alarms<'a>(got: &'a [Received], topic: &str) -> Vec<&'a Received> {
    got.iter().filter(|m| m.topic == topic).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_is_retained_acked_by_command_and_survives_a_sigkill_restart() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(1, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let topic = "ta/alarm/plc-1/warm";
    let mut sub = Subscriber::start(broker.addr, "ta/#").await;
    let mut daemon = Daemon::spawn(
        dir.path(),
        &config("ta", broker.addr.port(), dir.path(), &plant, RULES),
    );
    let got = sub
        .collect_until(Duration::from_secs(30), |g| !alarms(g, topic).is_empty())
        .await;
    let raised = alarms(&got, topic);
    assert_eq!(raised.len(), 1, "one raise\n{}", daemon.log());
    let a = raised[0].json();
    assert_eq!(a["v"], 1);
    assert_eq!(a["state"], "active");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["limit"], -1000.0);
    assert!(a["value"].as_f64().is_some());
    let id = a["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("plc-1/warm/"), "{id}");
    assert!(alarms(&got, "ta/alarm/plc-1/never").is_empty());
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("plantwatch_alarms_raised{severity=\"high\"} 1"),
        "{metrics}"
    );

    // A late subscriber gets the state from the broker's retained copy.
    let mut late = Subscriber::start(broker.addr, topic).await;
    let kept = late
        .collect_until(Duration::from_secs(10), |g| !g.is_empty())
        .await;
    assert!(kept[0].retain, "the alarm state is retained");
    assert_eq!(kept[0].json()["id"], id.as_str());

    // Malformed and unknown commands get a reply that says why, and change nothing.
    sub.publish("ta/cmd/ack", b"{not json").await;
    sub.publish("ta/cmd/ack", br#"{"id":"q1","alarm":"plc-1/nope"}"#)
        .await;
    sub.publish(
        "ta/cmd/shelve",
        br#"{"id":"q2","alarm":"plc-1/warm","duration":"forever"}"#,
    )
    .await;
    sub.publish(
        "ta/cmd/ack",
        format!(r#"{{"id":"q3","alarm":"{id}"}}"#).as_bytes(),
    )
    .await;
    let got = sub
        .collect_until(Duration::from_secs(20), |g| {
            alarms(g, "ta/cmd/ack/reply").len() == 2
                && alarms(g, "ta/cmd/shelve/reply").len() == 1
                && !alarms(g, topic).is_empty()
        })
        .await;
    let replies: Vec<serde_json::Value> = alarms(&got, "ta/cmd/ack/reply")
        .into_iter()
        .chain(alarms(&got, "ta/cmd/shelve/reply"))
        .map(Received::json)
        .collect();
    let by_id = |id: &str| {
        replies
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("reply {id} in {replies:?}\n{}", daemon.log()))
    };
    assert_eq!(by_id("q1")["ok"], false);
    assert!(
        by_id("q1")["error"]
            .as_str()
            .unwrap()
            .contains("no raised alarm")
    );
    assert_eq!(by_id("q2")["ok"], false);
    assert!(
        by_id("q2")["error"]
            .as_str()
            .unwrap()
            .contains("not a duration")
    );
    assert_eq!(by_id("q3")["ok"], true);
    assert_eq!(by_id("q3")["alarm"]["state"], "acked");
    // The malformed one cannot carry an id, but it is answered too.
    let before = alarms(&got, topic);
    assert_eq!(before.len(), 1, "only the ack changed the alarm");
    assert_eq!(before[0].json()["state"], "acked");

    // SIGKILL and restart: the alarm is neither raised again nor forgotten.
    daemon.kill_hard();
    daemon.start();
    let got = sub
        .collect_until(Duration::from_secs(8), |g| {
            g.iter().filter(|m| m.topic.contains("/telemetry/")).count() >= 20
        })
        .await;
    assert!(
        got.iter()
            .filter(|m| m.topic.contains("/telemetry/"))
            .count()
            >= 20,
        "polling resumed\n{}",
        daemon.log()
    );
    let after: Vec<serde_json::Value> = alarms(&got, topic)
        .into_iter()
        .map(Received::json)
        .collect();
    assert!(
        after.iter().all(|a| a["state"] != "active"),
        "raised again after the restart: {after:?}"
    );
    sub.publish("ta/cmd/list", br#"{"id":"q4"}"#).await;
    let got = sub
        .collect_until(Duration::from_secs(10), |g| {
            !alarms(g, "ta/cmd/list/reply").is_empty()
        })
        .await;
    let list = alarms(&got, "ta/cmd/list/reply")[0].json();
    assert_eq!(list["alarms"][0]["id"], id.as_str());
    assert_eq!(list["alarms"][0]["state"], "acked");
}

/// A one-route HTTP server that records request bodies and answers 200.
async fn hook_server() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Bounded: a request larger than 1 MiB is not one of ours.
                while buf.len() < 1 << 20 {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            tx.send(body.to_owned()).await.ok();
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await.ok();
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_alarm_is_posted_to_the_configured_webhook() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(1, 200).await;
    let (hook, mut bodies) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{RULES}\n[[webhooks]]\nname = \"chat\"\nformat = \"generic\"\nurl = \"http://{hook}/hook\"\nmin_severity = \"high\"\n"
    );
    let daemon = Daemon::spawn(
        dir.path(),
        &config("tw", broker.addr.port(), dir.path(), &plant, &extra),
    );
    let body = tokio::time::timeout(Duration::from_secs(30), bodies.recv())
        .await
        .unwrap_or_else(|_| panic!("no webhook call within 30 s\n{}", daemon.log()))
        .unwrap();
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = j.to_string();
    assert!(text.contains("plc-1"), "{text}");
    assert!(text.contains("warm"), "{text}");
    assert!(text.contains("active"), "{text}");
}

/// Runs `plantwatch alarms ARGS` on `config`; returns (success, stdout + stderr).
fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(crate::harness::bin())
        .arg("alarms")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_shelves_alarms_through_the_running_daemon() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(1, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let topic = "tc/alarm/plc-1/warm";
    let mut sub = Subscriber::start(broker.addr, "tc/alarm/#").await;
    let daemon = Daemon::spawn(
        dir.path(),
        &config("tc", broker.addr.port(), dir.path(), &plant, RULES),
    );
    let got = sub
        .collect_until(Duration::from_secs(30), |g| !alarms(g, topic).is_empty())
        .await;
    assert_eq!(alarms(&got, topic).len(), 1, "{}", daemon.log());
    let cfg = dir.path().join("plantwatch.toml");
    let (ok, text) = cli(&cfg, &["list"]);
    assert!(
        ok && text.contains("plc-1/warm") && text.contains("active"),
        "{text}"
    );
    let (ok, text) = cli(&cfg, &["ack", "plc-1/nope"]);
    assert!(
        !ok && text.contains("no raised alarm `plc-1/nope`"),
        "{text}"
    );
    let (ok, text) = cli(&cfg, &["shelve", "plc-1/warm", "soon"]);
    assert!(
        !ok && text.contains("not a duration"),
        "{text}\n{}",
        daemon.log()
    );
    let (ok, text) = cli(&cfg, &["shelve", "plc-1/warm", "1h"]);
    assert!(
        ok && text.contains("is now shelved"),
        "{text}\n{}",
        daemon.log()
    );
    let got = sub
        .collect_until(Duration::from_secs(10), |g| !alarms(g, topic).is_empty())
        .await;
    let shelved = alarms(&got, topic)[0].json();
    assert_eq!(shelved["state"], "shelved");
    assert!(shelved["shelved_until"].as_i64().unwrap() > shelved["ts"].as_i64().unwrap());
    let (ok, text) = cli(&cfg, &["list", "--json"]);
    assert!(ok, "{text}");
    let listed: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(listed["state"], "shelved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_published_retained_with_its_parts_and_counters() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(1, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{RULES}\n[health]\ninterval = \"1s\"\n\n[[maintenance]]\ndevice = \"plc-*\"\nrun_point = \"run_state\"\n"
    );
    let mut sub = Subscriber::start(broker.addr, "th/health/#").await;
    let daemon = Daemon::spawn(
        dir.path(),
        &config("th", broker.addr.port(), dir.path(), &plant, &extra),
    );
    let got = sub
        .collect_until(Duration::from_secs(30), |g| !g.is_empty())
        .await;
    assert!(!got.is_empty(), "no health message\n{}", daemon.log());
    let h = got[0].json();
    assert_eq!(got[0].topic, "th/health/plc-1");
    assert_eq!(h["v"], 1);
    assert_eq!(h["device"], "plc-1");
    // The `warm` alarm (high) is raised: 25 points off, and the payload says so.
    assert_eq!(h["parts"]["alarms"], 25.0, "{h}");
    let index = h["index"].as_u64().unwrap();
    assert!(index <= 75, "{h}");
    assert!(h["running_hours"].as_f64().is_some(), "{h}");
    assert!(h["starts"].as_u64().is_some(), "{h}");
    let mut late = Subscriber::start(broker.addr, "th/health/plc-1").await;
    let kept = late
        .collect_until(Duration::from_secs(5), |g| !g.is_empty())
        .await;
    assert!(kept[0].retain, "health is retained");
}

/// The recorded telemetry as replay input: `timestamp,device,point,value` (empty when bad).
fn telemetry_csv(got: &[Received]) -> String {
    let mut polls: Vec<serde_json::Value> = got
        .iter()
        .filter(|m| m.topic.contains("/telemetry/"))
        .map(Received::json)
        .collect();
    polls.sort_by_key(|j| j["seq"].as_u64());
    let mut csv = String::from("timestamp,device,point,value\n");
    for j in &polls {
        for (point, p) in j["points"].as_object().unwrap() {
            let value = match &p["v"] {
                serde_json::Value::Number(n) => n.as_f64().unwrap().to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => String::new(),
                // Text points carry nothing a rule can read.
                _ => continue,
            };
            csv.push_str(&format!(
                "{},{},{point},{value}\n",
                j["ts"],
                j["device"].as_str().unwrap()
            ));
        }
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_recorded_telemetry_reproduces_the_live_alarm_events() {
    use plantwatch::sim::Fault;
    let broker = EmbeddedBroker::start().unwrap();
    let (sim, plant) = plant(1, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
[[rules]]
name = "overheat"
kind = "high"
point = "motor_temp"
limit = 150
deadband = 5

[[rules]]
name = "frozen"
kind = "stuck"
point = "vibration"
duration = "1s"

[[rules]]
name = "offline"
kind = "comm_loss"
duration = "1s"

[[rules]]
name = "heating-fast"
kind = "rate"
point = "motor_temp"
limit = 100
per = "second"
window = "1s"
"#;
    // An offline device is retried every second, so its silence shows in the recording as
    // polls: replay knows only the time its rows show.
    let cfg = config("tr", broker.addr.port(), dir.path(), &plant, rules).replace(
        "poll_interval_ms = 200",
        "poll_interval_ms = 200\ntimeout_ms = 300\noffline_retry_ms = 1000",
    );
    let mut sub = Subscriber::start(broker.addr, "tr/#").await;
    let daemon = Daemon::spawn(dir.path(), &cfg);
    let plc = sim.device("plc-1").unwrap().clone();
    let mut got = sub
        .collect_until(Duration::from_secs(20), |g| {
            g.iter().filter(|m| m.topic.contains("/telemetry/")).count() >= 5
        })
        .await;
    // A spike, a frozen signal, then a pulled cable: each with its alarm and clear.
    for (fault, hold) in [
        (Fault::Spike(3), Duration::from_millis(1500)),
        (Fault::Stuck, Duration::from_millis(2500)),
        (Fault::NoAnswer, Duration::from_millis(3000)),
    ] {
        plc.inject(fault);
        got.extend(sub.collect_until(hold, |_| false).await);
        plc.clear_faults();
        got.extend(
            sub.collect_until(Duration::from_millis(1500), |_| false)
                .await,
        );
    }
    let live: Vec<(String, String)> = got
        .iter()
        .filter(|m| m.topic.starts_with("tr/alarm/") && !m.payload.is_empty())
        .map(|m| {
            let j = m.json();
            (
                j["id"].as_str().unwrap().to_owned(),
                j["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let alarms: std::collections::BTreeSet<&str> = live
        .iter()
        .map(|(id, _)| id.split('/').nth(1).unwrap())
        .collect();
    assert!(
        alarms.contains("overheat") && alarms.contains("frozen") && alarms.contains("offline"),
        "every fault alarmed live: {live:?}\n{}",
        daemon.log()
    );

    std::fs::write(dir.path().join("recorded.csv"), telemetry_csv(&got)).unwrap();

    let events = dir.path().join("events.jsonl");
    let out = std::process::Command::new(crate::harness::bin())
        .arg("replay")
        .arg("--config")
        .arg(dir.path().join("plantwatch.toml"))
        .arg(dir.path().join("recorded.csv"))
        .arg("--output")
        .arg(dir.path().join("scored.csv"))
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<(String, String)> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                j["id"].as_str().unwrap().to_owned(),
                j["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(replayed, live, "replay and live disagree");
}
