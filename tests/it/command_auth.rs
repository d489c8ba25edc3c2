//! The signed command channel end to end (issue 17): simulator → real daemon → embedded
//! broker, commands signed by `plantwatch sign` or in the test, every forgery refused with a
//! reply and nothing changed, replays refused across a SIGKILL restart, and the audit trail
//! verified and then tampered with.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use plantwatch::auth::keys::key_pair_from_seed;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;

use crate::daemon::{config, plant};
use crate::harness::bin;
use crate::harness::commands::{self, OPS1, VIEWER, audit_cli, commands_section, now_ms, sign_as};
use crate::harness::daemon::Daemon;
use crate::harness::subscriber::{Received, Subscriber};

const PREFIX: &str = "tc";

const RULE: &str = r#"
[[rules]]
name = "warm"
kind = "high"
device = "plc-1"
point = "motor_temp"
limit = -1000
severity = "high"
"#;

/// Writes the operator keys into `dir` and returns the `[commands]` section naming them.
fn keys(dir: &Path) -> String {
    commands_section(dir, &[OPS1, VIEWER], "replay_window = \"60s\"")
}

/// A command `name` with `fields`, signed with `seed` as `key` for topic prefix `prefix`.
fn signed(
    seed: u8,
    key: &str,
    prefix: &str,
    name: &str,
    id: &str,
    ts: i64,
    fields: &str,
) -> Vec<u8> {
    let cmd = format!(r#"{{"id":"{id}","ts":{ts}{fields}}}"#);
    sign_as(seed, key, prefix, name, &cmd)
}

fn replies(got: &[Received], name: &str) -> Vec<serde_json::Value> {
    commands::replies(got, PREFIX, name)
}

fn reply<'a>(got: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    got.iter().find(|r| r["id"] == id)
}

/// Publishes `payload` on `cmd/{name}` and waits (bounded) for the reply carrying `id`.
async fn ask(
    sub: &mut Subscriber,
    name: &str,
    id: &str,
    payload: &[u8],
    log: &dyn Fn() -> String,
) -> serde_json::Value {
    commands::ask(sub, PREFIX, name, id, payload, log).await
}

/// The raised alarm's state, as a signed `list` by the read-only key sees it.
async fn alarm_state(sub: &mut Subscriber, n: u32, log: &dyn Fn() -> String) -> String {
    let id = format!("list-{n}");
    let r = ask(
        sub,
        "list",
        &id,
        &signed(2, "viewer", PREFIX, "list", &id, now_ms(), ""),
        log,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    r["alarms"][0]["state"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

fn audit(state: &Path, action: &str) -> (bool, String) {
    audit_cli(state, &[action])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_signed_commands_are_carried_out_forgeries_refused_and_all_audited() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(1, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{RULE}\n{}", keys(dir.path()));
    let mut sub = Subscriber::start(broker.addr, &format!("{PREFIX}/#")).await;
    let mut audit_sub = Subscriber::start(broker.addr, &format!("{PREFIX}/audit")).await;
    let mut daemon = Daemon::spawn(
        dir.path(),
        &config(PREFIX, broker.addr.port(), dir.path(), &plant, &extra),
    );
    let alarm_topic = format!("{PREFIX}/alarm/plc-1/warm");
    let got = sub
        .collect_until(Duration::from_secs(30), |g| {
            g.iter().any(|m| m.topic == alarm_topic)
        })
        .await;
    let raised = got
        .iter()
        .find(|m| m.topic == alarm_topic)
        .unwrap_or_else(|| panic!("no alarm\n{}", daemon.log()));
    let alarm = raised.json()["id"].as_str().unwrap().to_owned();
    let log_of = |d: &Daemon| d.log();
    let log = || log_of(&daemon);
    let fields = format!(r#","alarm":"{alarm}""#);
    let now = now_ms();

    // Every forgery gets a reply that says why, and the alarm stays active.
    let forgeries: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "f-unsigned",
            format!(r#"{{"id":"f-unsigned","alarm":"{alarm}"}}"#).into_bytes(),
            "unsigned",
        ),
        (
            "f-sig",
            signed(3, "ops1", PREFIX, "ack", "f-sig", now, &fields),
            "bad_signature",
        ),
        (
            "f-gateway",
            signed(1, "ops1", "other/gw", "ack", "f-gateway", now, &fields),
            "bad_signature",
        ),
        (
            "f-key",
            signed(1, "ops9", PREFIX, "ack", "f-key", now, &fields),
            "unknown_key",
        ),
        (
            "f-role",
            signed(2, "viewer", PREFIX, "ack", "f-role", now, &fields),
            "role",
        ),
        (
            "f-stale",
            signed(1, "ops1", PREFIX, "ack", "f-stale", now - 120_000, &fields),
            "stale",
        ),
        (
            "f-future",
            signed(1, "ops1", PREFIX, "ack", "f-future", now + 120_000, &fields),
            "future",
        ),
    ];
    for (id, payload, why) in &forgeries {
        let r = ask(&mut sub, "ack", id, payload, &log).await;
        assert_eq!(r["ok"], false, "{id}: {r}");
        assert_eq!(r["refused"], *why, "{id}: {r}");
        assert!(
            r["error"].as_str().unwrap().starts_with("refused `ack`"),
            "{r}"
        );
    }
    assert_eq!(
        alarm_state(&mut sub, 1, &log).await,
        "active",
        "a forgery changed the alarm"
    );

    // `plantwatch sign` with a key from `plantwatch keygen`… for a key the gateway does not
    // know is refused; the configured one is taken.
    let keygen = Command::new(bin())
        .arg("keygen")
        .arg(dir.path().join("new.key"))
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    std::fs::write(
        dir.path().join("ops1.key"),
        format!("{}\n", key_pair_from_seed(&[1; 32]).0),
    )
    .unwrap();
    let sign = |key_file: &str, id: &str| {
        let out = Command::new(bin())
            .args(["sign", "--key-id", "ops1", "--prefix", PREFIX, "--key-file"])
            .arg(dir.path().join(key_file))
            .arg("shelve")
            .arg(format!(
                r#"{{"id":"{id}","alarm":"{alarm}","duration":"2h"}}"#
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (topic, payload) = text.trim_end().split_once('\n').unwrap();
        assert_eq!(topic, format!("{PREFIX}/cmd/shelve"));
        payload.as_bytes().to_vec()
    };
    let r = ask(&mut sub, "shelve", "s-new", &sign("new.key", "s-new"), &log).await;
    assert_eq!(r["refused"], "bad_signature", "{r}");
    let shelve = sign("ops1.key", "s-1");
    let r = ask(&mut sub, "shelve", "s-1", &shelve, &log).await;
    assert_eq!(r["ok"], true, "{r}\n{}", daemon.log());
    assert_eq!(r["alarm"]["state"], "shelved", "{r}");
    let r = ask(
        &mut sub,
        "unshelve",
        "u-1",
        &signed(1, "ops1", PREFIX, "unshelve", "u-1", now_ms(), &fields),
        &log,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(alarm_state(&mut sub, 2, &log).await, "active");

    // The same shelve again, then after a SIGKILL restart: refused as a replay both times.
    let r = ask(&mut sub, "shelve", "s-1", &shelve, &log).await;
    assert_eq!(r["refused"], "replayed", "{r}");
    daemon.kill_hard();
    daemon.start();
    // The first answered `list` says the restarted daemon has subscribed again; the replay's
    // own row in the audit trail (checked below) tells its refusal from a reply that was
    // stored before the SIGKILL and delivered after it.
    let mut answered = false;
    for attempt in 0..40 {
        let id = format!("hello-{attempt}");
        sub.publish(
            &format!("{PREFIX}/cmd/list"),
            &signed(2, "viewer", PREFIX, "list", &id, now_ms(), ""),
        )
        .await;
        let got = sub
            .collect_until(Duration::from_millis(500), |g| {
                reply(&replies(g, "list"), &id).is_some()
            })
            .await;
        if reply(&replies(&got, "list"), &id).is_some() {
            answered = true;
            break;
        }
    }
    assert!(answered, "no reply after the restart\n{}", daemon.log());
    let r = ask(&mut sub, "shelve", "s-1", &shelve, &|| daemon.log()).await;
    assert_eq!(r["refused"], "replayed", "after the restart: {r}");
    assert_eq!(
        alarm_state(&mut sub, 3, &|| daemon.log()).await,
        "active",
        "the replay changed the alarm"
    );
    let r = ask(
        &mut sub,
        "ack",
        "a-1",
        &signed(1, "ops1", PREFIX, "ack", "a-1", now_ms(), &fields),
        &|| daemon.log(),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["alarm"]["state"], "acked", "{r}");

    // Every command is on `{prefix}/audit` (at least once), each row chained to the last.
    let seqs = |g: &[Received]| {
        g.iter()
            .filter_map(|m| m.json()["seq"].as_i64())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let state = dir.path().join("state.db");
    let (_, listed) = audit(&state, "list");
    let rows: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hellos = rows
        .iter()
        .filter(|r| r["id"].as_str().is_some_and(|i| i.starts_with("\"hello-")))
        .count();
    // 7 forgeries, 2 `sign`ed shelves, 1 unshelve, 2 replays, 3 lists, 1 ack, and the lists
    // sent while the daemon restarted that reached it.
    let total = 16 + hellos;
    assert!(hellos >= 1 && rows.len() == total, "{listed}");
    let got = audit_sub
        .collect_until(Duration::from_secs(20), |g| seqs(g).len() >= total)
        .await;
    let total = i64::try_from(total).unwrap();
    assert_eq!(
        seqs(&got),
        (1..=total).collect(),
        "{}\n{}",
        audit(&dir.path().join("state.db"), "list").1,
        daemon.log()
    );
    let mut by_seq = std::collections::BTreeMap::new();
    for a in got.iter().map(Received::json) {
        assert_eq!(a["hash"].as_str().map(str::len), Some(64), "{a}");
        assert!(a["row"]["command"].is_string(), "{a}");
        by_seq.insert(a["seq"].as_i64().unwrap(), a);
    }
    for seq in 2..=total {
        assert_eq!(
            by_seq[&seq]["prev"],
            by_seq[&(seq - 1)]["hash"],
            "row {seq}"
        );
    }
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    let (ok, text) = audit(&state, "verify");
    assert!(ok, "{text}");
    assert!(text.contains(&format!("intact, {total} rows")), "{text}");
    let after_restart: Vec<&serde_json::Value> = rows[13..].iter().collect();
    assert!(
        after_restart
            .iter()
            .any(|r| r["id"] == "\"s-1\"" && r["reason"] == "replayed"),
        "the replay after the restart was refused: {listed}"
    );
    assert_eq!(rows[0]["reason"], "unsigned");
    assert_eq!(rows[1]["key"], "ops1");
    assert_eq!(rows[1]["reason"], "bad_signature");
    assert!(
        rows.iter()
            .any(|r| r["outcome"] == "done" && r["command"] == "shelve" && r["key"] == "ops1")
    );

    // Edit one row: `verify` names it. Put it back, delete another: `verify` names that.
    let db = rusqlite::Connection::open(&state).unwrap();
    let body: String = db
        .query_row("SELECT body FROM audit WHERE seq = 5", [], |r| r.get(0))
        .unwrap();
    db.execute(
        "UPDATE audit SET body = ?1 WHERE seq = 5",
        [body.replace("role", "done")],
    )
    .unwrap();
    let (ok, text) = audit(&state, "verify");
    assert!(
        !ok && text.contains("broken at row 5") && text.contains("edited"),
        "{text}"
    );
    db.execute("UPDATE audit SET body = ?1 WHERE seq = 5", [&body])
        .unwrap();
    assert!(audit(&state, "verify").0);
    let (newest, newest_hash): (String, String) = db
        .query_row(
            "SELECT body, hash FROM audit WHERE seq = ?1",
            [total],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    db.execute("DELETE FROM audit WHERE seq = ?1", [total])
        .unwrap();
    let (ok, text) = audit(&state, "verify");
    assert!(
        !ok && text.contains(&format!("broken at row {total}")) && text.contains("newest"),
        "{text}"
    );
    db.execute(
        "INSERT INTO audit (seq, body, hash) VALUES (?1, ?2, ?3)",
        rusqlite::params![total, newest, newest_hash],
    )
    .unwrap();
    assert!(audit(&state, "verify").0);
    db.execute("DELETE FROM audit WHERE seq = 9", []).unwrap();
    let (ok, text) = audit(&state, "verify");
    assert!(
        !ok && text.contains("broken at row 9") && text.contains("deleted"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_thousand_malformed_commands_change_nothing_and_panic_nothing() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(1, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{RULE}\n{}", keys(dir.path()));
    let mut sub = Subscriber::start(broker.addr, &format!("{PREFIX}/#")).await;
    let mut daemon = Daemon::spawn(
        dir.path(),
        &config(PREFIX, broker.addr.port(), dir.path(), &plant, &extra),
    );
    let alarm_topic = format!("{PREFIX}/alarm/plc-1/warm");
    sub.collect_until(Duration::from_secs(30), |g| {
        g.iter().any(|m| m.topic == alarm_topic)
    })
    .await;
    let log = || String::new();
    assert_eq!(
        alarm_state(&mut sub, 1, &log).await,
        "active",
        "{}",
        daemon.log()
    );
    let now = now_ms();
    let big = "x".repeat(200_000);
    let garbage = |n: usize| -> (String, Vec<u8>) {
        let names = ["ack", "shelve", "upload", "write", "config", "nope", "list"];
        let name = names[n % names.len()].to_owned();
        let payload = match n % 10 {
            0 => b"{not json".to_vec(),
            1 => vec![0xff; 100],
            2 => format!(r#"{{"key":"ops1","sig":"AAAA","cmd":{{"id":"g{n}","ts":{now},"alarm":"plc-1/warm"}}}}"#).into_bytes(),
            3 => format!(r#"{{"key":"ops1","sig":"{big}","cmd":{{"id":"g{n}"}}}}"#).into_bytes(),
            4 => format!(r#"{{"key":"{big}","sig":"x","cmd":{{}}}}"#).into_bytes(),
            5 => format!(r#"{{"key":"ops1","sig":"x","cmd":"{big}"}}"#).into_bytes(),
            6 => format!(r#"{{"id":"g{n}","alarm":"plc-1/warm","duration":"2h"}}"#).into_bytes(),
            7 => format!(r#"{{"key":"ops1","cmd":{{"id":"g{n}","ts":{now}}}}}"#).into_bytes(),
            8 => b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec(),
            _ => signed(1, "ops1", "other/gw", &name, &format!("g{n}"), now, r#","alarm":"plc-1/warm""#),
        };
        (name, payload)
    };
    // In rounds that the command queue holds: a command dropped at a full queue is not
    // malformed, only unanswered.
    let reply_count = |g: &[Received]| g.iter().filter(|m| m.topic.ends_with("/reply")).count();
    let mut answered = 0;
    for round in 0..20 {
        for k in 0..50 {
            let (name, payload) = garbage(round * 50 + k);
            sub.publish(&format!("{PREFIX}/cmd/{name}"), &payload).await;
        }
        let got = sub
            .collect_until(Duration::from_secs(30), |g| reply_count(g) >= 50)
            .await;
        answered += reply_count(&got);
        for m in got.iter().filter(|m| m.topic.ends_with("/reply")) {
            assert_eq!(
                m.json()["ok"],
                false,
                "{}: {}",
                m.topic,
                String::from_utf8_lossy(&m.payload)
            );
        }
        assert!(daemon.running(), "the daemon stopped\n{}", daemon.log());
    }
    assert_eq!(answered, 1000, "every malformed command is answered");
    assert_eq!(
        alarm_state(&mut sub, 2, &log).await,
        "active",
        "{}",
        daemon.log()
    );
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    let lines = daemon.log().matches("Refused a downlink command").count();
    assert!(lines < 60, "{lines} refusal lines: the log is rate-limited");
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    let (ok, text) = audit(&dir.path().join("state.db"), "verify");
    assert!(ok, "{text}");
    assert!(
        text.contains("intact, 1002 rows"),
        "the audit keeps every refusal: {text}"
    );
}

#[test]
fn issue_17_check_names_the_key_that_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short.pub"), "AAAA\n").unwrap();
    let text = format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n[[links]]\nname = \"bus\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\n\
         [[devices]]\nname = \"m\"\nlink = \"bus\"\nprofile = \"chint-dtsu666\"\n\n\
         [commands]\n[[commands.keys]]\nid = \"ops1\"\nrole = \"operate\"\npublic_key_file = \"{}\"\n\
         [[commands.keys]]\nid = \"eng2\"\nrole = \"engineer\"\npublic_key_file = \"{}\"\n",
        dir.path().join("missing.pub").display(),
        dir.path().join("short.pub").display()
    );
    let path = dir.path().join("plantwatch.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("commands.keys[0]") && err.contains("key `ops1`: cannot read"),
        "{err}"
    );
    assert!(
        err.contains("commands.keys[1]") && err.contains("key `eng2`") && err.contains("3 bytes"),
        "{err}"
    );
    // The daemon does not start on it either.
    let run = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(78), "{err}");
    assert!(err.contains("key `ops1`"), "{err}");

    // A systemd credential is checked where the service has it, and only named elsewhere.
    let (_private, public) = key_pair_from_seed(&[4; 32]);
    std::fs::write(dir.path().join("eng.pub"), format!("{public}\n")).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text.split("[commands]").next().unwrap();
    std::fs::write(
        &path,
        format!("{head}[commands]\n[[commands.keys]]\nid = \"eng\"\nrole = \"engineer\"\ncredential = \"eng.pub\"\n"),
    )
    .unwrap();
    let check = |credentials: Option<&Path>| {
        let mut c = Command::new(bin());
        c.arg("check")
            .args(["--quiet", "--config"])
            .arg(&path)
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = credentials {
            c.env("CREDENTIALS_DIRECTORY", dir);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(Some(dir.path()));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check(None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("command key `eng` is a systemd credential"),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    let (code, err) = check(Some(empty.path()));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("key `eng`: cannot read"), "{err}");
}
