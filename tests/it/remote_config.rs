//! Remote configuration end to end (issue 17, slice 4): a signed `config` push to the real
//! daemon is checked like `plantwatch check` (every problem in the reply), applied as a
//! reload, confirmed after its health window, or rolled back when it cuts the devices or the
//! broker; `plantwatch config history` lists each push and its outcome.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::Simulator;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;
use serde_json::{Value as Json, json};

use crate::daemon::config;
use crate::harness::bin;
use crate::harness::commands::{
    self, ENG1, OPS1, commands_section, now_ms, outcomes, private_key_file, serve, sign, sign_as,
};
use crate::harness::daemon::Daemon;
use crate::harness::subscriber::{Received, Subscriber};

const PREFIX: &str = "rc";

/// `eng1` may push configurations, `ops1` may only operate.
fn keys(dir: &Path, window: &str) -> String {
    commands_section(
        dir,
        &[OPS1, ENG1],
        &format!("config_health_window = \"{window}\""),
    )
}

fn push(seed: u8, key: &str, id: &str, text: &str) -> Vec<u8> {
    let cmd = json!({"id": id, "ts": now_ms(), "config": text});
    sign_as(seed, key, PREFIX, "config", &cmd.to_string())
}

/// Waits (bounded) for `n` replies to `name` with `id`.
async fn answers(
    sub: &mut Subscriber,
    name: &str,
    id: &str,
    n: usize,
    limit: Duration,
) -> Vec<Json> {
    commands::answers(sub, PREFIX, name, id, n, limit).await
}

fn history(state: &Path) -> Vec<Json> {
    commands::state_listing(state, "config", &["history"])
}

struct Site {
    _broker: EmbeddedBroker,
    broker_addr: std::net::SocketAddr,
    port: u16,
    sim: Simulator,
    plant: String,
    dir: tempfile::TempDir,
    sub: Subscriber,
    daemon: Daemon,
}

impl Site {
    async fn start(window: &str) -> Self {
        let broker = EmbeddedBroker::start().unwrap();
        let plant = "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
                     [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 500\n\
                     [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n";
        let (sim, plant) = serve(plant).await;
        let dir = tempfile::tempdir().unwrap();
        let sub = Subscriber::start(broker.addr, &format!("{PREFIX}/#")).await;
        let text = config(
            PREFIX,
            broker.addr.port(),
            dir.path(),
            &plant,
            &keys(dir.path(), window),
        );
        let daemon = Daemon::spawn(dir.path(), &text);
        let mut site = Self {
            port: broker.addr.port(),
            broker_addr: broker.addr,
            _broker: broker,
            sim,
            plant,
            dir,
            sub,
            daemon,
        };
        site.wait_polling().await;
        site
    }

    /// The daemon's config with `plant` and `window`, on broker port `port`.
    fn text(&self, port: u16, plant: &str, window: &str) -> String {
        config(
            PREFIX,
            port,
            self.dir.path(),
            plant,
            &keys(self.dir.path(), window),
        )
    }

    /// Waits (bounded) until the daemon publishes telemetry of `plc`: running, subscribed.
    async fn wait_polling(&mut self) {
        let topic = format!("{PREFIX}/telemetry/plc");
        let got = self
            .sub
            .collect_until(Duration::from_secs(20), |g| {
                g.iter().any(|m| m.topic == topic)
            })
            .await;
        assert!(
            got.iter().any(|m| m.topic == topic),
            "no telemetry\n{}",
            self.daemon.log()
        );
    }

    /// Sends `payload` on `cmd/config` until the daemon answers (it may not have subscribed
    /// yet), then returns the first answer.
    async fn ask(&mut self, id: &str, payload: &[u8]) -> Json {
        self.sub
            .publish(&format!("{PREFIX}/cmd/config"), payload)
            .await;
        answers(&mut self.sub, "config", id, 1, Duration::from_secs(20))
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no reply to {id}\n{}", self.daemon.log()))
    }

    fn config_file(&self) -> String {
        std::fs::read_to_string(&self.daemon.config).unwrap()
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
async fn issue_17_a_pushed_config_is_checked_applied_confirmed_and_in_the_history() {
    let mut site = Site::start("10s").await;
    let original = site.config_file();

    // Every problem of a bad file is in the reply, and nothing changes.
    let bad = format!(
        "{}\n[[devices]]\nname = \"ghost\"\nlink = \"nowhere\"\nunit_id = 1\npoll_interval_ms = -5\n",
        site.text(site.port, &site.plant, "10s")
    );
    let r = site.ask("bad", &push(4, "eng1", "bad", &bad)).await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["refused"], "invalid", "{r}");
    assert!(r["issues"].as_array().unwrap().len() >= 2, "{r}");
    assert_eq!(site.config_file(), original);
    // Only an engineer may push.
    let good = site.text(
        site.port,
        &site
            .plant
            .replace("poll_interval_ms = 500", "poll_interval_ms = 400"),
        "10s",
    );
    let r = site.ask("by-ops", &push(1, "ops1", "by-ops", &good)).await;
    assert_eq!(r["refused"], "role", "{r}");

    let r = site.ask("good", &push(4, "eng1", "good", &good)).await;
    assert_eq!(r["ok"], true, "{r}\n{}", site.daemon.log());
    assert_eq!(r["accepted"], true, "{r}");
    let hash = r["hash"].as_str().unwrap().to_owned();
    let done = answers(&mut site.sub, "config", "good", 1, Duration::from_secs(40)).await;
    let done = done
        .iter()
        .find(|r| r["confirmed"] == true)
        .unwrap_or_else(|| panic!("not confirmed: {done:?}\n{}", site.daemon.log()));
    assert_eq!(done["hash"], hash.as_str());
    assert_eq!(site.config_file(), good);
    // The retained status names the configuration that runs now.
    let status = format!("{PREFIX}/status");
    let named = |m: &Received| m.retain && m.json()["config"] == hash.as_str();
    let mut late = Subscriber::start(site.broker_addr, &status).await;
    let got = late
        .collect_until(Duration::from_secs(20), |g| g.iter().any(named))
        .await;
    assert!(
        got.iter().any(named),
        "no status naming {hash}\n{}",
        site.daemon.log()
    );
    let previous = site
        .daemon
        .config
        .with_file_name("plantwatch.toml.previous");
    assert_eq!(std::fs::read_to_string(previous).unwrap(), original);
    let h = history(&site.dir.path().join("state.db"));
    let outcomes: Vec<&str> = h.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["applied", "confirmed"], "{h:?}");
    assert_eq!(h[0]["key"], "eng1");
    assert_eq!(h[0]["hash"], hash.as_str());
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_push_that_cuts_the_devices_or_the_broker_is_rolled_back() {
    let mut site = Site::start("60s").await;
    let original = site.config_file();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // The device's link moved to a port where nothing answers.
    let sim_port = site.sim.endpoints[0]
        .1
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    let cut_devices = site.text(
        site.port,
        &site
            .plant
            .replace(&format!("port = {sim_port}"), &format!("port = {dead}")),
        "60s",
    );
    let r = site
        .ask("cut-dev", &push(4, "eng1", "cut-dev", &cut_devices))
        .await;
    assert_eq!(r["accepted"], true, "{r}");
    let got = answers(
        &mut site.sub,
        "config",
        "cut-dev",
        1,
        Duration::from_secs(45),
    )
    .await;
    let back = got
        .iter()
        .find(|r| r["rolled_back"] == true)
        .unwrap_or_else(|| panic!("not rolled back: {got:?}\n{}", site.daemon.log()));
    assert!(
        back["error"]
            .as_str()
            .unwrap()
            .contains("stopped answering: plc"),
        "{back}"
    );
    assert_eq!(site.config_file(), original);
    site.wait_polling().await;

    // The broker moved to a port where nothing listens.
    let cut_broker = site.text(dead, &site.plant, "60s");
    site.sub
        .publish(
            &format!("{PREFIX}/cmd/config"),
            &push(4, "eng1", "cut-mqtt", &cut_broker),
        )
        .await;
    // The `accepted` reply can still be in the outbox when the sink moves to the dead broker:
    // then it arrives with the rollback's, once the sink is back on this one.
    let got = answers(
        &mut site.sub,
        "config",
        "cut-mqtt",
        2,
        Duration::from_secs(80),
    )
    .await;
    assert!(
        got.iter().any(|r| r["accepted"] == true),
        "not accepted: {got:?}\n{}",
        site.daemon.log()
    );
    let back = got
        .iter()
        .find(|r| r["rolled_back"] == true)
        .unwrap_or_else(|| panic!("not rolled back: {got:?}\n{}", site.daemon.log()));
    assert!(back["error"].as_str().unwrap().contains("broker"), "{back}");
    assert_eq!(site.config_file(), original);
    let h = history(&site.dir.path().join("state.db"));
    let outcomes: Vec<&str> = h.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes,
        ["applied", "rolled_back", "applied", "rolled_back"],
        "{h:?}"
    );
    site.stop().await;
}

/// Items 4 and "restart in the middle of an anti-replay window": `plantwatch sign
/// --config-file` builds the push an engineer sends, and it is applied; the daemon is then
/// killed and restarted within the replay window (60 s by default), and the same push sent
/// again is refused as a replay, changes nothing, and is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_config_signed_by_the_cli_is_applied_and_its_replay_refused_across_a_restart() {
    let mut site = Site::start("5s").await;
    let changed = site.text(
        site.port,
        &site
            .plant
            .replace("poll_interval_ms = 500", "poll_interval_ms = 300"),
        "5s",
    );
    let file = site.dir.path().join("push.toml");
    std::fs::write(&file, &changed).unwrap();
    let key = private_key_file(site.dir.path(), ENG1);
    let out = Command::new(bin())
        .args([
            "sign",
            "--key-id",
            ENG1.id,
            "--prefix",
            PREFIX,
            "--key-file",
        ])
        .arg(&key)
        .arg("--config-file")
        .arg(&file)
        .args(["config", r#"{"id":"cli-1"}"#])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = printed.lines();
    assert_eq!(lines.next(), Some(format!("{PREFIX}/cmd/config").as_str()));
    let payload = lines.next().unwrap().as_bytes().to_vec();

    let r = site.ask("cli-1", &payload).await;
    assert_eq!(r["accepted"], true, "{r}\n{}", site.daemon.log());
    let done = answers(&mut site.sub, "config", "cli-1", 1, Duration::from_secs(30)).await;
    assert!(
        done.iter().any(|r| r["confirmed"] == true),
        "not confirmed: {done:?}\n{}",
        site.daemon.log()
    );
    assert_eq!(site.config_file(), changed);

    // A crash, and a restart well within the replay window.
    site.daemon.kill_hard();
    site.daemon.start();
    site.wait_polling().await;
    // Until the restarted daemon answers commands (it subscribes once the outbox flows).
    let mut answered = false;
    for attempt in 0..40 {
        let id = format!("up-{attempt}");
        let list = sign(
            ENG1,
            PREFIX,
            "list",
            &json!({"id": id, "ts": now_ms()}).to_string(),
        );
        site.sub.publish(&format!("{PREFIX}/cmd/list"), &list).await;
        if !answers(&mut site.sub, "list", &id, 1, Duration::from_millis(500))
            .await
            .is_empty()
        {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "no answer after the restart\n{}",
        site.daemon.log()
    );

    let r = site.ask("cli-1", &payload).await;
    assert_eq!(r["refused"], "replayed", "{r}");
    assert_eq!(site.config_file(), changed);
    let rows = commands::audit_rows(&site.dir.path().join("state.db"));
    let seen = outcomes(&rows, "cli-1");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("refused:replayed"),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|o| o.starts_with("refused")).count(),
        1,
        "{seen:?}"
    );
    site.stop().await;
}
