//! Round trip of a signed `write` command (issue 17): publish on `{prefix}/cmd/write` → the
//! daemon admits it, audits the intent, writes over Modbus TCP, reads back, audits the outcome
//! → reply on `…/cmd/write/reply`; all on loopback, against the simulator and the embedded
//! broker, with `plantwatch run` as its own process. Prints p50, p90, p99 and the worst.
//!
//! Run with `cargo bench --bench write`. Environment: `BENCH_WRITES` (default 500),
//! `PLANTWATCH_BIN` (default: the binary this bench was built with), `BENCH_WRITE_GAP_MS`
//! (default 250: one write every 250 ms, as an operator's writes come; the store commits a
//! write's two audit rows at once up to 10 such commits a second, and beyond that they wait
//! its 100 ms commit window, so `0`, back-to-back writes, measures that limit). It also prints the
//! median of each phase of the daemon's own timing line (intent committed, link, waiting for
//! the core, outcome committed, reply stored), read from its DEBUG log.
//!
//! `BENCH_BROKER_NODELAY=true` sets mosquitto's `set_tcp_nodelay` (default false, mosquitto's
//! own). With Nagle on in the broker, the reply's forward to this client waits for this
//! client's delayed ACK of the command's PUBACK (40 ms on Linux), so the round trip is about
//! 43 ms whatever the daemon does; with it off, the round trip is the daemon's and loopback's.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::panic,
    clippy::let_underscore_must_use,
    clippy::disallowed_methods,
    missing_docs,
    reason = "benchmark binary: it spawns its peers, reads the wall clock for `ts`, fails loudly"
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plantwatch::auth::envelope::{signed_bytes, wrap};
use plantwatch::auth::keys::{SigningSecret, key_pair_from_seed};
use plantwatch::sim::{Bind, Simulator};
use plantwatch::sink::mqtt::broker::EmbeddedBroker;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const PREFIX: &str = "bench/write";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// mosquitto's `set_tcp_nodelay`: `BENCH_BROKER_NODELAY`, else mosquitto's own default.
fn broker_nodelay() -> bool {
    std::env::var("BENCH_BROKER_NODELAY").is_ok_and(|v| v == "true" || v == "1")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let writes: usize = std::env::var("BENCH_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let bin = std::env::var_os("PLANTWATCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_plantwatch")),
        PathBuf::from,
    );
    let dir = tempfile::tempdir().unwrap();
    // mosquitto when installed (`.ci/run` installs it), else the embedded rumqttd.
    let mosquitto = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut _broker = None;
    let (broker_port, broker_name): (u16, String) = match mosquitto {
        Some(m) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay {}\n",
                    broker_nodelay()
                ),
            )
            .unwrap();
            _broker = Some(Guard(
                Command::new(m)
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            ));
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            for _ in 0..100 {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (
                port,
                format!("mosquitto (set_tcp_nodelay {})", broker_nodelay()),
            )
        }
        None => (
            EmbeddedBroker::start().unwrap().addr.port(),
            "embedded rumqttd".to_owned(),
        ),
    };
    let plant = "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
                 [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 1000\n\
                 [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100000\n";
    let plan = plantwatch::config::load_str(
        "sim.toml",
        &format!("[gateway]\nsite = \"s\"\nid = \"g\"\n\n{plant}"),
        &plantwatch::config::EnvOverrides::Off,
        dir.path(),
        None,
    )
    .unwrap();
    let sim = Simulator::start(plan.fleet(), plan.gateway.timezone, Bind::LOOPBACK)
        .await
        .unwrap();
    let port = sim.endpoints[0].1.rsplit_once(':').unwrap().1.to_owned();
    let (private, public) = key_pair_from_seed(&[7; 32]);
    std::fs::write(dir.path().join("ops1.pub"), format!("{public}\n")).unwrap();
    let config = format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {}\ntopic_prefix = \"{PREFIX}\"\n\n\
         [store]\npath = \"{}\"\n\n\
         [commands]\n[[commands.keys]]\nid = \"ops1\"\nrole = \"operate\"\npublic_key_file = \"{}\"\n\n{}",
        broker_port,
        dir.path().join("state.db").display(),
        dir.path().join("ops1.pub").display(),
        plant.replace("port = 502", &format!("port = {port}")),
    );
    let config_path = dir.path().join("plantwatch.toml");
    std::fs::write(&config_path, config).unwrap();
    let _daemon = Guard(
        Command::new(&bin)
            .args([
                "run",
                "--log",
                "info,plantwatch::runtime::remote_write=debug",
                "--config",
            ])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let mut opts = MqttOptions::new("bench-write", "127.0.0.1", broker_port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(format!("{PREFIX}/cmd/write/reply"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut replies) = tokio::sync::mpsc::unbounded_channel::<(Instant, String)>();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let id = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let _ = tx.send((Instant::now(), id));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    let signer = SigningSecret::parse(&private, false).unwrap();
    let command = |id: &str, value: usize| {
        let cmd = format!(
            r#"{{"id":"{id}","ts":{},"device":"plc","point":"sp","value":{value}}}"#,
            now_ms()
        );
        let sig = signer.sign(&signed_bytes(PREFIX, "write", cmd.as_bytes()));
        wrap("ops1", &sig, &cmd).into_bytes()
    };
    let topic = format!("{PREFIX}/cmd/write");
    // Until the daemon has subscribed and answers (any warm-up reply will do).
    let mut ready = false;
    for attempt in 0..20 {
        let id = format!("warm-{attempt}");
        client
            .publish(&topic, QoS::AtLeastOnce, false, command(&id, attempt))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        if let Ok(Some((_, got))) = tokio::time::timeout_at(deadline, replies.recv()).await {
            ready = got.starts_with("warm-");
        }
        if ready {
            break;
        }
    }
    // Replies to the other warm-up writes still on their way.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), replies.recv()).await {}
    assert!(
        ready,
        "the daemon never answered a write:\n{}",
        std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
    );
    let gap = Duration::from_millis(
        std::env::var("BENCH_WRITE_GAP_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(250),
    );
    let mut took = Vec::with_capacity(writes);
    for i in 0..writes {
        let next = tokio::time::Instant::now() + gap;
        let id = format!("w-{i}");
        let payload = command(&id, i);
        let sent = Instant::now();
        client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, replies.recv()).await {
                Ok(Some((at, got))) if got == id => {
                    took.push(at - sent);
                    break;
                }
                Ok(Some(_)) => {}
                _ => panic!("no reply to write {i}"),
            }
        }
        tokio::time::sleep_until(next).await;
    }
    took.sort();
    println!(
        "write round trip (publish → reply; signed, intent and outcome audited, FC16 + read \
         before + read back), {} writes one per {} ms on loopback via {broker_name}: p50 {:.2} \
         ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        gap.as_millis(),
        percentile(&took, 0.50).as_secs_f64() * 1e3,
        percentile(&took, 0.90).as_secs_f64() * 1e3,
        percentile(&took, 0.99).as_secs_f64() * 1e3,
        took.last().unwrap().as_secs_f64() * 1e3,
    );
    print_phases(&std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default());
    sim.shutdown().await;
}

/// The median of every `…_ms=` field of the daemon's "Write answered" lines.
fn print_phases(log: &str) {
    let mut phases: Vec<(String, Vec<f64>)> = Vec::new();
    for line in log.lines().filter(|l| l.contains("Write answered")) {
        for field in line.split_whitespace() {
            let Some((name, value)) = field.split_once('=') else {
                continue;
            };
            let Some(value) = name
                .strip_suffix("_ms")
                .and(value.trim_end_matches(',').parse::<f64>().ok())
            else {
                continue;
            };
            match phases.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(value),
                None => phases.push((name.to_owned(), vec![value])),
            }
        }
    }
    if phases.is_empty() {
        println!("(no timing lines in the daemon's log)");
        return;
    }
    let medians: Vec<String> = phases
        .iter_mut()
        .map(|(name, values)| {
            values.sort_by(f64::total_cmp);
            format!("{name} {:.1}", values[values.len() / 2])
        })
        .collect();
    println!("daemon's phases, median ms: {}", medians.join(", "));
}
