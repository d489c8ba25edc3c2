//! The signed `write` downlink command end to end (issue 17, slice 3): simulator → real
//! daemon → embedded broker. A signed write lands and reads back in every type and order;
//! every refusal is answered and writes nothing; writes on a shared RS-485 bus keep the poll
//! grid; a flood of garbage changes nothing and every dropped command is audited; a reload
//! moves the write routes with the links; a crash mid-write leaves its intent in the audit.

use std::path::Path;
use std::time::Duration;

use crate::harness::Simulator;
use plantwatch::model::Value;
use plantwatch::sim::Fault;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;
use serde_json::{Value as Json, json};

use crate::daemon::config;
use crate::harness::commands::{
    self, OPS1, VIEWER, audit_cli, audit_rows, commands_section, held, now_ms, outcomes, serve,
    sign_as,
};
use crate::harness::daemon::Daemon;
use crate::harness::subscriber::{Received, Subscriber};
use crate::harness::{eventually, eventually_async};

const PREFIX: &str = "rw";

/// Operator keys in `dir`: `ops1` may operate, `viewer` may only read.
fn keys(dir: &Path) -> String {
    commands_section(dir, &[OPS1, VIEWER], "replay_window = \"60s\"")
}

/// A `write` of `value` to `device`/`point`, signed with `seed` as `key`.
fn write_cmd(
    seed: u8,
    key: &str,
    id: &str,
    ts: i64,
    device: &str,
    point: &str,
    value: &Json,
) -> Vec<u8> {
    let cmd = format!(
        r#"{{"id":"{id}","ts":{ts},"device":"{device}","point":"{point}","value":{value}}}"#
    );
    sign_as(seed, key, PREFIX, "write", &cmd)
}

/// A write signed by `ops1` now.
fn ops(id: &str, device: &str, point: &str, value: &Json) -> Vec<u8> {
    write_cmd(OPS1.seed, OPS1.id, id, now_ms(), device, point, value)
}

fn replies(got: &[Received]) -> Vec<Json> {
    commands::replies(got, PREFIX, "write")
}

fn json_of(v: &Value) -> Json {
    match v {
        Value::F64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::Bool(b) => json!(b),
        Value::Str(s) => json!(s),
    }
}

fn same(a: &Json, b: &Value) -> bool {
    match (a.as_f64(), b) {
        (Some(x), Value::F64(_) | Value::I64(_)) => (x - b.as_f64().unwrap()).abs() < 1e-6,
        _ => *a == json_of(b),
    }
}

fn audit_verify(state: &Path) -> (bool, String) {
    audit_cli(state, &["verify"])
}

/// A value of `name` in the `/metrics` text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Site {
    broker: EmbeddedBroker,
    sim: Simulator,
    dir: tempfile::TempDir,
    sub: Subscriber,
    daemon: Daemon,
}

impl Site {
    /// The simulator serving `plant`, and the daemon polling it with `extra` devices
    /// (served elsewhere) and the operator keys.
    async fn start(plant: &str, extra: &str) -> Self {
        let broker = EmbeddedBroker::start().unwrap();
        let (sim, plant) = serve(plant).await;
        let dir = tempfile::tempdir().unwrap();
        let sub = Subscriber::start(broker.addr, &format!("{PREFIX}/#")).await;
        let daemon = Daemon::spawn(
            dir.path(),
            &config(
                PREFIX,
                broker.addr.port(),
                dir.path(),
                &format!("{plant}{extra}"),
                &keys(dir.path()),
            ),
        );
        Self {
            broker,
            sim,
            dir,
            sub,
            daemon,
        }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }

    async fn ask(&mut self, id: &str, payload: &[u8]) -> Json {
        let daemon = &self.daemon;
        commands::ask(&mut self.sub, PREFIX, "write", id, payload, &|| {
            daemon.log()
        })
        .await
    }

    /// Asks until the daemon has subscribed and answers (the first commands may be sent
    /// before it has); the first answer.
    async fn first(&mut self, id: &str, device: &str, point: &str, value: &Json) -> Json {
        for attempt in 0..40 {
            let id = format!("{id}-{attempt}");
            self.sub
                .publish(
                    &format!("{PREFIX}/cmd/write"),
                    &ops(&id, device, point, value),
                )
                .await;
            let got = self
                .sub
                .collect_until(Duration::from_millis(500), |g| {
                    replies(g).iter().any(|r| r["id"] == id.as_str())
                })
                .await;
            if let Some(r) = replies(&got).into_iter().find(|r| r["id"] == id.as_str()) {
                return r;
            }
        }
        panic!("no reply to a write\n{}", self.daemon.log());
    }

    async fn stop(mut self) {
        self.daemon.signal("TERM");
        assert_eq!(
            self.daemon.wait_exit(Duration::from_secs(15)),
            Some(0),
            "{}",
            self.daemon.log()
        );
        self.sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_signed_write_lands_and_reads_back_in_every_type_and_order() {
    let (points, values) = crate::writes::every_type_and_order();
    let mut site = Site::start(
        &format!(
            "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
             [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 3\npoll_interval_ms = 1000\n{points}"
        ),
        "",
    )
    .await;
    let (first, _) = &values[0];
    let r = site.first("hello", "plc", first, &json!(false)).await;
    assert_eq!(r["ok"], true, "{r}");
    for (i, (point, value)) in values.iter().enumerate() {
        let id = format!("w-{i}");
        let r = site
            .ask(&id, &ops(&id, "plc", point, &json_of(value)))
            .await;
        assert_eq!(r["ok"], true, "{point}: {r}\n{}", site.daemon.log());
        assert_eq!(r["verified"], true, "{point}: {r}");
        assert!(
            same(&r["value"], value),
            "{point}: wrote {value}, reply {r}"
        );
        let now = held(&site.sim, "plc", point);
        assert!(
            same(&r["value"], &now),
            "{point}: reply says {}, device holds {now}",
            r["value"]
        );
        assert!(r.get("before").is_some(), "{point}: {r}");
    }
    let rows = audit_rows(&site.state());
    assert_eq!(outcomes(&rows, "w-0"), ["intent", "done"]);
    let done = rows.iter().rfind(|r| r["id"] == "\"w-0\"").unwrap();
    let reply: Json = serde_json::from_str(done["reply"].as_str().unwrap()).unwrap();
    assert!(
        reply.get("before").is_some() && reply["verified"] == true,
        "{done}"
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_every_refused_write_is_answered_audited_and_writes_nothing() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut site = Site::start(
        "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
         [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 500\n\
         [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\nmax_rate = 2\n\
         [devices.points.ro]\naddress = 10\n\
         [devices.points.rated]\naddress = 20\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\nmax_rate = 1\n\n",
        &format!(
            "[[links]]\nname = \"dead\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {dead_port}\n\n\
             [[devices]]\nname = \"gone\"\nlink = \"dead\"\nunit_id = 1\npoll_interval_ms = 200\n\
             offline_after_failures = 1\noffline_retry_ms = 60000\n\
             [devices.points.sp]\naddress = 0\nwritable = true\nmin = 0\nmax = 10\n"
        ),
    )
    .await;
    let r = site.first("w-ok", "plc", "sp", &json!(10)).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = site.ask("w-2", &ops("w-2", "plc", "sp", &json!(20))).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(held(&site.sim, "plc", "sp"), Value::F64(20.0));
    // `rated` allows one write a minute.
    let r = site
        .ask("w-rated", &ops("w-rated", "plc", "rated", &json!(5)))
        .await;
    assert_eq!(r["ok"], true, "{r}");

    let now = now_ms();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "r-unsigned",
            br#"{"id":"r-unsigned","device":"plc","point":"sp","value":30}"#.to_vec(),
            "unsigned",
        ),
        ("r-ro", ops("r-ro", "plc", "ro", &json!(30)), "not_writable"),
        (
            "r-nopoint",
            ops("r-nopoint", "plc", "nope", &json!(30)),
            "unknown_point",
        ),
        (
            "r-nodev",
            ops("r-nodev", "nope", "sp", &json!(30)),
            "unknown_device",
        ),
        (
            "r-range",
            ops("r-range", "plc", "sp", &json!(150)),
            "out_of_range",
        ),
        (
            "r-kind",
            ops("r-kind", "plc", "sp", &json!("thirty")),
            "wrong_kind",
        ),
        (
            "r-sig",
            write_cmd(3, "ops1", "r-sig", now, "plc", "sp", &json!(30)),
            "bad_signature",
        ),
        (
            "r-key",
            write_cmd(1, "ops9", "r-key", now, "plc", "sp", &json!(30)),
            "unknown_key",
        ),
        (
            "r-role",
            write_cmd(2, "viewer", "r-role", now, "plc", "sp", &json!(30)),
            "role",
        ),
        (
            "r-stale",
            write_cmd(1, "ops1", "r-stale", now - 120_000, "plc", "sp", &json!(30)),
            "stale",
        ),
        (
            "r-future",
            write_cmd(
                1,
                "ops1",
                "r-future",
                now + 120_000,
                "plc",
                "sp",
                &json!(30),
            ),
            "future",
        ),
        // The second write within a minute of a point allowing one.
        (
            "r-rate",
            ops("r-rate", "plc", "rated", &json!(6)),
            "over_rate",
        ),
    ];
    for (id, payload, why) in &cases {
        let r = site.ask(id, payload).await;
        assert_eq!(r["ok"], false, "{id}: {r}");
        assert_eq!(r["refused"], *why, "{id}: {r}");
        assert!(r["error"].as_str().unwrap().contains("write"), "{id}: {r}");
        assert_eq!(
            held(&site.sim, "plc", "sp"),
            Value::F64(20.0),
            "{id} changed the point"
        );
        assert_eq!(held(&site.sim, "plc", "rated"), Value::F64(5.0), "{id}");
    }
    let rows = audit_rows(&site.state());
    assert_eq!(outcomes(&rows, "w-2"), ["intent", "done"], "{rows:?}");
    // The device that stopped answering: refused as offline once it is marked so.
    let mut attempt = 0;
    let last = eventually_async(Duration::from_secs(20), "refused as offline", async || {
        let id = format!("r-offline-{attempt}");
        attempt += 1;
        let r = site.ask(&id, &ops(&id, "gone", "sp", &json!(5))).await;
        if r["refused"] == "offline" {
            Ok(r)
        } else {
            Err(r)
        }
    })
    .await;
    assert!(
        last["error"].as_str().unwrap().contains("gone/sp"),
        "{last}"
    );

    let rows = audit_rows(&site.state());
    for (id, _, why) in &cases {
        let want: Vec<String> = match *why {
            // Checked by the link, after the intent was audited.
            "over_rate" => vec!["intent".into(), format!("refused:{why}")],
            _ => vec![format!("refused:{why}")],
        };
        assert_eq!(outcomes(&rows, id), want, "{id}");
    }
    let (ok, text) = audit_verify(&site.state());
    assert!(ok, "{text}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_replayed_write_is_refused_and_writes_nothing() {
    let mut site = Site::start(
        "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
         [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 500\n\
         [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n",
        "",
    )
    .await;
    let r = site.first("hello", "plc", "sp", &json!(1)).await;
    assert_eq!(r["ok"], true, "{r}");
    let once = ops("w-once", "plc", "sp", &json!(10));
    let r = site.ask("w-once", &once).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = site
        .ask("w-20", &ops("w-20", "plc", "sp", &json!(20)))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = site.ask("w-once", &once).await;
    assert_eq!(r["refused"], "replayed", "{r}");
    assert_eq!(held(&site.sim, "plc", "sp"), Value::F64(20.0));
    let rows = audit_rows(&site.state());
    assert_eq!(
        outcomes(&rows, "w-once"),
        ["intent", "done", "refused:replayed"]
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_writes_on_a_shared_rs485_bus_keep_the_poll_grid() {
    let period = 250i64;
    let mut site = Site::start(
        &format!(
            "[[links]]\nname = \"bus\"\nkind = \"rtu\"\npath = \"/dev/null\"\nbaud = 38400\n\n\
             [[devices]]\nname = \"meter\"\nlink = \"bus\"\nunit_id = 1\nprofile = \"eastron-sdm630\"\npoll_interval_ms = {period}\n\n\
             [[devices]]\nname = \"plc\"\nlink = \"bus\"\nunit_id = 2\npoll_interval_ms = {period}\n\
             [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n\
             [devices.points.state]\naddress = 10\n\n"
        ),
        "",
    )
    .await;
    let r = site.first("hello", "plc", "sp", &json!(0)).await;
    assert_eq!(r["ok"], true, "{r}");
    let mut telemetry: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for i in 1..=12u32 {
        let id = format!("bus-{i}");
        site.sub
            .publish(
                &format!("{PREFIX}/cmd/write"),
                &ops(&id, "plc", "sp", &json!(i)),
            )
            .await;
        let got = site
            .sub
            .collect_until(Duration::from_secs(20), |g| {
                replies(g).iter().any(|r| r["id"] == id.as_str())
            })
            .await;
        let r = replies(&got)
            .into_iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no reply to {id}\n{}", site.daemon.log()));
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["value"], json!(f64::from(i)), "{r}");
        for m in got.iter().filter(|m| m.topic.contains("/telemetry/")) {
            let j = m.json();
            telemetry
                .entry(j["device"].as_str().unwrap().to_owned())
                .or_default()
                .push(j["ts"].as_i64().unwrap());
        }
    }
    assert_eq!(held(&site.sim, "plc", "sp"), Value::F64(12.0));
    let metrics = site.daemon.metrics().await;
    for device in ["meter", "plc"] {
        assert_eq!(
            metric(
                &metrics,
                &format!("plantwatch_poll_missed_ticks_total{{device=\"{device}\"}}")
            ),
            0,
            "{device} missed ticks\n{metrics}"
        );
        let t = telemetry.get(device).cloned().unwrap_or_default();
        assert!(t.len() >= 4, "{device}: {} polls seen", t.len());
        // Each poll within one period of its slot on the grid of the first one seen: a
        // skipped, bunched or drifting poll lands a whole period off.
        let off: Vec<i64> = t
            .iter()
            .map(|x| {
                let k = ((x - t[0]) as f64 / period as f64).round() as i64;
                x - t[0] - k * period
            })
            .collect();
        assert!(
            off.iter().all(|o| o.abs() < period / 2),
            "{device}: polls off their grid slots (ms): {off:?}"
        );
        let mut sorted = t.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), t.len(), "{device}: a poll repeated");
    }
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_garbage_oversized_and_malformed_commands_change_nothing_and_are_audited() {
    let mut site = Site::start(
        "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
         [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 100\n\
         [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n",
        "",
    )
    .await;
    let r = site.first("hello", "plc", "sp", &json!(42)).await;
    assert_eq!(r["ok"], true, "{r}");
    let polls = |m: &str| {
        metric(
            m,
            "plantwatch_poll_cycles_total{device=\"plc\",result=\"ok\"}",
        )
    };
    let before = polls(&site.daemon.metrics().await);
    let state = site.state();
    let audited_before = audit_rows(&state).len();
    let now = now_ms();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut sent = 0u64;
    for i in 0..1_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let payload: Vec<u8> = match i % 10 {
            // Random bytes.
            0 | 1 => (0..(seed % 300) as usize)
                .map(|k| (seed >> (k % 56)) as u8)
                .collect(),
            2 => b"{\"key\":\"ops1\",\"sig\":\"AAAA\",\"cmd\":{".to_vec(),
            3 => format!(r#"{{"key":"ops1","sig":"{}","cmd":{{"id":"g{i}","ts":{now},"device":"plc","point":"sp","value":1}}}}"#, "A".repeat(86)).into_bytes(),
            4 => br#"{"id":[1],"device":"plc","point":"sp","value":1}"#.to_vec(),
            5 => format!(r#"{{"key":"ops1","sig":7,"cmd":"{i}"}}"#).into_bytes(),
            6 => b"\xff\xfe\x00null".to_vec(),
            7 => br#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["#.to_vec(),
            8 => format!(r#"{{"id":"u{i}","device":"plc","point":"sp","value":99}}"#).into_bytes(),
            _ => write_cmd(1, "ops1", &format!("s{i}"), now, "plc", "sp", &json!("x".repeat(200))),
        };
        let name = ["write", "ack", "config", "w\u{202e}x", "list"][(i % 5) as usize];
        site.sub
            .publish(&format!("{PREFIX}/cmd/{name}"), &payload)
            .await;
        sent += 1;
    }
    // Every command reaches the audit trail, handled or dropped on a full queue: wait for the
    // count (bounded), then check nothing changed and polling went on.
    let (rows, accounted) = eventually(
        Duration::from_secs(30),
        "every command answered or audited as dropped",
        || {
            let rows = audit_rows(&state).split_off(audited_before);
            let beyond: u64 = rows
                .iter()
                .filter(|r| r["command"] == "*")
                .filter_map(|r| r["reply"].as_str()?.split(' ').next()?.parse::<u64>().ok())
                .sum();
            let accounted = rows.iter().filter(|r| r["command"] != "*").count() as u64 + beyond;
            if accounted >= sent {
                Ok((rows, accounted))
            } else {
                Err(format!("{accounted} of {sent} accounted for"))
            }
        },
    )
    .await;
    assert_eq!(
        accounted, sent,
        "commands neither answered nor audited as dropped"
    );
    let handled = rows.iter().filter(|r| r["outcome"] != "dropped").count();
    let dropped = rows.iter().filter(|r| r["outcome"] == "dropped").count();
    assert!(
        rows.iter()
            .all(|r| r["outcome"] != "done" && r["outcome"] != "intent"),
        "a garbage command was carried out: {rows:?}"
    );
    assert_eq!(held(&site.sim, "plc", "sp"), Value::F64(42.0));
    assert!(site.daemon.running(), "{}", site.daemon.log());
    let metrics = site.daemon.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "plantwatch_poll_missed_ticks_total{device=\"plc\"}"
        ),
        0,
        "{metrics}"
    );
    let after = polls(&metrics);
    assert!(after > before, "polling stopped: {before} → {after}");
    println!(
        "flood: {sent} commands sent, {handled} answered and audited, {dropped} dropped on a full \
         queue and audited; {} polls meanwhile, 0 missed ticks",
        after - before
    );
    let (ok, text) = audit_verify(&state);
    assert!(ok, "{text}");
    // About 1 MiB (as much as the test's client sends), twice: it may cost the daemon's session
    // a reconnect, never the daemon.
    for name in ["write", "ack"] {
        site.sub
            .publish(
                &format!("{PREFIX}/cmd/{name}"),
                &vec![b'{'; (1 << 20) - 1024],
            )
            .await;
    }
    let r = site.first("after", "plc", "sp", &json!(43)).await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(site.daemon.running(), "{}", site.daemon.log());
    assert_eq!(held(&site.sim, "plc", "sp"), Value::F64(43.0));
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_after_a_reload_writes_go_to_the_new_links() {
    let device = |name: &str, link: &str| {
        format!(
            "[[devices]]\nname = \"{name}\"\nlink = \"{link}\"\nunit_id = 1\npoll_interval_ms = 500\n\
             [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n\n"
        )
    };
    let link = |name: &str| {
        format!(
            "[[links]]\nname = \"{name}\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n"
        )
    };
    let (old_sim, old_plant) = serve(&format!("{}{}", link("a"), device("plc", "a"))).await;
    let (new_sim, new_plant) = serve(&format!("{}{}", link("b"), device("plc", "b"))).await;
    let (_other_sim, other_plant) = serve(&format!("{}{}", link("c"), device("aux", "c"))).await;
    let mut site = Site::start(&format!("{}{}", link("x"), device("unused", "x")), "").await;
    // Running, and past installing its signal handlers.
    let r = site.first("hello", "unused", "sp", &json!(1)).await;
    assert_eq!(r["ok"], true, "{r}");
    // Replace the daemon's plant: `plc` on link a, `aux` on link c.
    let extra = keys(site.dir.path());
    let (path, port, dir) = (
        site.daemon.config.clone(),
        site.broker.addr.port(),
        site.dir.path().to_owned(),
    );
    let write_config = |plant: &str| {
        std::fs::write(&path, config(PREFIX, port, &dir, plant, &extra)).unwrap();
    };
    write_config(&format!("{old_plant}{other_plant}"));
    site.daemon.signal("HUP");
    // Until the reload is done: the running configuration knows no `plc` before it.
    let mut attempt = 0;
    eventually_async(
        Duration::from_secs(20),
        "a write to `plc` done",
        async || {
            let id = format!("before-{attempt}");
            attempt += 1;
            let r = site.ask(&id, &ops(&id, "plc", "sp", &json!(11))).await;
            if r["ok"] == true {
                Ok(())
            } else {
                Err(format!("{r}\n{}", site.daemon.log()))
            }
        },
    )
    .await;
    assert_eq!(held(&old_sim, "plc", "sp"), Value::F64(11.0));
    let r = site
        .ask("aux-1", &ops("aux-1", "aux", "sp", &json!(1)))
        .await;
    assert_eq!(r["ok"], true, "{r}");

    // `plc` moves to link b; `aux` goes away.
    write_config(&new_plant);
    site.daemon.signal("HUP");
    let mut attempt = 0;
    eventually_async(
        Duration::from_secs(20),
        "a write to `plc` done on link b",
        async || {
            let id = format!("after-{attempt}");
            attempt += 1;
            let moved = site.ask(&id, &ops(&id, "plc", "sp", &json!(22))).await;
            let held = held(&new_sim, "plc", "sp");
            if moved["ok"] == true && held == Value::F64(22.0) {
                Ok(())
            } else {
                Err(format!(
                    "{moved}, link b holds {held:?}\n{}",
                    site.daemon.log()
                ))
            }
        },
    )
    .await;
    assert_eq!(
        held(&old_sim, "plc", "sp"),
        Value::F64(11.0),
        "a write went to the old link"
    );
    let r = site
        .ask("aux-2", &ops("aux-2", "aux", "sp", &json!(2)))
        .await;
    assert_eq!(r["refused"], "unknown_device", "{r}");
    site.stop().await;
    old_sim.shutdown().await;
    new_sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_crash_mid_write_leaves_its_intent_in_the_audit_trail() {
    let mut site = Site::start(
        "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
         [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 60000\ntimeout_ms = 5000\n\
         [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n",
        "",
    )
    .await;
    let r = site.first("hello", "plc", "sp", &json!(1)).await;
    assert_eq!(r["ok"], true, "{r}");
    // The device takes the write and never answers: the gateway waits its timeout.
    site.sim.device("plc").unwrap().inject(Fault::WriteNoAnswer);
    let hung = ops("hung", "plc", "sp", &json!(50));
    site.sub
        .publish(&format!("{PREFIX}/cmd/write"), &hung)
        .await;
    let got = site
        .sub
        .collect_until(Duration::from_secs(20), |g| {
            g.iter().any(|m| {
                m.topic == format!("{PREFIX}/audit")
                    && m.json()["row"]["outcome"] == "intent"
                    && m.json()["row"]["id"] == "\"hung\""
            })
        })
        .await;
    assert!(
        got.iter().any(|m| m.topic == format!("{PREFIX}/audit")),
        "no intent row published\n{}",
        site.daemon.log()
    );
    site.daemon.kill_hard();
    let rows = audit_rows(&site.state());
    assert_eq!(outcomes(&rows, "hung"), ["intent"], "{rows:?}");
    let intent = rows.iter().rfind(|r| r["id"] == "\"hung\"").unwrap();
    assert!(
        intent["reply"].as_str().unwrap().contains("\"value\":50"),
        "{intent}"
    );
    // After the restart the same command is still a replay.
    site.sim.device("plc").unwrap().clear_faults();
    site.daemon.start();
    let r = site.first("back", "plc", "sp", &json!(2)).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = site.ask("hung", &hung).await;
    assert_eq!(r["refused"], "replayed", "{r}");
    let (ok, text) = audit_verify(&site.state());
    assert!(ok, "{text}");
    site.stop().await;
}

/// A device that answers a write with exception 02 did not carry it out: refused by the device,
/// audited `rejected`, nothing written. Exception 04 (server device failure) and no answer at
/// all leave it unknown whether the write landed, and the audit says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_device_exception_is_audited_apart_from_a_write_that_may_have_landed() {
    let mut site = Site::start(
        "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
         [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 60000\ntimeout_ms = 500\n\
         [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n",
        "",
    )
    .await;
    let r = site.first("hello", "plc", "sp", &json!(1)).await;
    assert_eq!(r["ok"], true, "{r}");

    site.sim
        .device("plc")
        .unwrap()
        .inject(Fault::WriteException(2));
    let r = site
        .ask("x-02", &ops("x-02", "plc", "sp", &json!(20)))
        .await;
    assert_eq!(r["refused"], "device_exception", "{r}");
    assert_eq!(r["exception"], 2, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("nothing was written"),
        "{r}"
    );
    assert_eq!(held(&site.sim, "plc", "sp"), Value::F64(1.0));
    site.sim.device("plc").unwrap().clear_faults();

    site.sim
        .device("plc")
        .unwrap()
        .inject(Fault::WriteException(4));
    let r = site
        .ask("x-04", &ops("x-04", "plc", "sp", &json!(30)))
        .await;
    assert_eq!(r["failed"], "exception", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("may have landed"),
        "{r}"
    );
    site.sim.device("plc").unwrap().clear_faults();

    site.sim.device("plc").unwrap().inject(Fault::WriteNoAnswer);
    let r = site
        .ask("x-none", &ops("x-none", "plc", "sp", &json!(40)))
        .await;
    assert_eq!(r["failed"], "timeout", "{r}");
    site.sim.device("plc").unwrap().clear_faults();

    let rows = audit_rows(&site.state());
    assert_eq!(outcomes(&rows, "x-02"), ["intent", "rejected:exception_02"]);
    assert_eq!(outcomes(&rows, "x-04"), ["intent", "unknown:exception_04"]);
    assert_eq!(outcomes(&rows, "x-none"), ["intent", "unknown:timeout"]);
    let (ok, text) = audit_verify(&site.state());
    assert!(ok, "{text}");
    site.stop().await;
}
