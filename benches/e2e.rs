//! End-to-end budget (DESIGN.md §8, issue 3): simulator → `plantwatch run` → MQTT broker →
//! subscriber, N meters × 22 values at 1 s; and the outbox replay rate after an outage.
//!
//! The simulator and the daemon are separate processes, so the CPU time and peak RSS read
//! from `/proc/<daemon pid>` are the daemon's alone. The broker is mosquitto when installed
//! (`.ci/run` installs it), else the embedded rumqttd in this process.
//!
//! Environment: `BENCH_DEVICES` (default 200), `BENCH_SECONDS` (default 60), `BENCH_WARMUP`
//! (default 5), `BENCH_OUTAGE` (seconds the broker is unreachable before the replay
//! measurement; default 60), `PLANTWATCH_BIN` (default `target/release/plantwatch`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "benchmark binary"
)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bin() -> PathBuf {
    std::env::var_os("PLANTWATCH_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/plantwatch"),
        PathBuf::from,
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when dropped, whatever happens.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command name comes field 3 (state); utime and stime are fields 14 and 15.
    let field = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    values: AtomicU64,
    backfill: AtomicU64,
    seqs: Mutex<HashMap<String, (u64, u64, u64)>>, // device -> (min, max, count)
    /// Last backfill seq per device, and how often one arrived below it.
    backfill_last: Mutex<HashMap<String, u64>>,
    backfill_out_of_order: AtomicU64,
    /// When the first backfill message arrived.
    first_backfill: Mutex<Option<Instant>>,
}

/// The raw value of the first `"key":` in a JSON object: up to the next `,` or `}`. The top-level
/// `device` and `seq` come before `points`, so the first match is theirs.
fn field<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let pat = format!("\"{key}\":");
    let at = json.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let rest = &json[at..];
    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
    Some(&rest[..end])
}

/// Counts what a platform would consume from one telemetry message. A byte scan rather than a
/// full JSON parse, so that the subscriber keeps up with a replay and the rate measured is the
/// daemon's, not this process's.
fn count(counts: &Counts, payload: &[u8]) {
    let n = payload.windows(5).filter(|w| w == b"\"q\":\"").count() as u64;
    counts.messages.fetch_add(1, Ordering::Relaxed);
    counts.values.fetch_add(n, Ordering::Relaxed);
    let device = field(payload, "device")
        .map(|d| String::from_utf8_lossy(d).trim_matches('"').to_owned())
        .unwrap_or_default();
    let seq = field(payload, "seq")
        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
        .unwrap_or(0);
    if payload.ends_with(b",\"backfill\":true}") {
        counts.backfill.fetch_add(1, Ordering::Relaxed);
        counts
            .first_backfill
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let mut last = counts.backfill_last.lock().unwrap();
        let prev = last.insert(device.clone(), seq);
        if prev.is_some_and(|p| seq < p) {
            counts.backfill_out_of_order.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut seqs = counts.seqs.lock().unwrap();
    let e = seqs.entry(device).or_insert((seq, seq, 0));
    e.0 = e.0.min(seq);
    e.1 = e.1.max(seq);
    e.2 += 1;
}

fn main() {
    let bin = bin();
    if !bin.exists() {
        println!(
            "e2e bench: {} not found; build it first with `cargo build --release`",
            bin.display()
        );
        return;
    }
    let devices = env_u64("BENCH_DEVICES", 200);
    let seconds = env_u64("BENCH_SECONDS", 60);
    let warmup = env_u64("BENCH_WARMUP", 5);
    let outage = env_u64("BENCH_OUTAGE", 60);
    let dir = std::env::temp_dir().join(format!("plantwatch-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // The broker.
    let mosquitto = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let port = free_port();
    let mut _broker_guard = None;
    let (broker, broker_name) = match mosquitto {
        Some(m) => {
            let conf = dir.join("mosquitto.conf");
            std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n")).unwrap();
            _broker_guard = Some(Guard(
                Command::new(m)
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            ));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Listening before the simulator binds its 200 ephemeral ports, one of which could
            // otherwise be the port picked for the broker (the bench then measured nothing).
            for _ in 0..100 {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (addr, "mosquitto")
        }
        None => (
            plantwatch::sink::mqtt::broker::EmbeddedBroker::start()
                .unwrap()
                .addr,
            "embedded rumqttd",
        ),
    };
    // The plant.
    let sim_cfg = dir.join("sim.toml");
    let _sim = Guard(
        Command::new(&bin)
            .args([
                "simulate",
                "--profile",
                "chint-dtsu666",
                "--count",
                &devices.to_string(),
                "--listen",
                // Port 0: each simulated meter gets a free port, written into the config.
                "127.0.0.1:0",
            ])
            .arg("--write-config")
            .arg(&sim_cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    for _ in 0..600 {
        if std::fs::read_to_string(&sim_cfg)
            .is_ok_and(|t| t.contains(&format!("chint-dtsu666-{devices}\"")))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let plant = std::fs::read_to_string(&sim_cfg).expect("simulator config");
    let plant = plant.replacen("[gateway]\nsite = \"sim\"\nid = \"sim-gw\"\n", "", 1);
    let cfg = dir.join("plantwatch.toml");
    std::fs::write(&cfg, format!(
        "[gateway]\nsite = \"bench\"\nid = \"gw\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\n[store]\npath = \"{}\"\n\n{plant}",
        broker.port(), dir.join("state.db").display()
    )).unwrap();

    // The subscriber.
    let counts = Arc::new(Counts::default());
    let connected = Arc::new(AtomicBool::new(false));
    {
        let counts = counts.clone();
        let connected = connected.clone();
        rt.spawn(async move {
            let mut o = MqttOptions::new("bench-sub", broker.ip().to_string(), broker.port());
            o.set_max_packet_size(1 << 20, 1 << 20)
                .set_keep_alive(Duration::from_secs(30));
            let (client, mut ev) = AsyncClient::new(o, 100);
            client
                .subscribe("plantwatch/bench/gw/telemetry/#", QoS::AtMostOnce)
                .await
                .unwrap();
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        connected.store(true, Ordering::SeqCst)
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => count(&counts, &p.payload),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
    }
    for _ in 0..100 {
        if connected.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let daemon = Guard(
        Command::new(&bin)
            .arg("run")
            .arg(&cfg)
            .arg("--no-metrics")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    std::thread::sleep(Duration::from_secs(warmup));
    let tck = clk_tck();
    let (cpu0, v0, m0, t0) = (
        cpu_ticks(pid),
        counts.values.load(Ordering::Relaxed),
        counts.messages.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, v1, m1, dt) = (
        cpu_ticks(pid),
        counts.values.load(Ordering::Relaxed),
        counts.messages.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    let values = v1 - v0;
    let cpu_s = (cpu1 - cpu0) as f64 / tck as f64;
    let (mut expected, mut received) = (0u64, 0u64);
    for (_, (lo, hi, n)) in counts.seqs.lock().unwrap().iter() {
        expected += hi - lo + 1;
        received += (*n).min(hi - lo + 1);
    }
    println!(
        "e2e: {devices} devices × 22 values at 1 s, broker {broker_name}, {} s measured",
        dt.as_secs()
    );
    println!(
        "  delivered: {} messages, {values} values ({:.0} values/s); seq coverage {:.3} % ({received} of {expected} seqs)",
        m1 - m0,
        values as f64 / dt.as_secs_f64(),
        100.0 * received as f64 / expected.max(1) as f64
    );
    println!(
        "  marked backfill: {} (a fresh state and a reachable broker leave nothing to replay)",
        counts.backfill.load(Ordering::Relaxed)
    );
    println!(
        "  daemon CPU: {cpu_s:.2} s = {:.2} µs per delivered value",
        cpu_s * 1e6 / values.max(1) as f64
    );
    println!(
        "  daemon memory: VmRSS {:.1} MiB, VmHWM (peak) {:.1} MiB",
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0
    );

    // Outbox replay: make the broker unreachable (SIGSTOP the broker would stall the socket;
    // instead restart the daemon pointed at a dead port), let a backlog build, then point it back.
    if outage == 0 || mosquitto.is_none() {
        println!("replay: skipped (BENCH_OUTAGE=0 or no mosquitto)");
        return;
    }
    drop(daemon);
    let dead = free_port();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen(
            &format!("port = {}\n", broker.port()),
            &format!("port = {dead}\n"),
            1,
        ),
    )
    .unwrap();
    let daemon = Guard(
        Command::new(&bin)
            .arg("run")
            .arg(&cfg)
            .arg("--no-metrics")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(outage));
    drop(daemon);
    std::fs::write(&cfg, text).unwrap();
    let backfill0 = counts.backfill.load(Ordering::Relaxed);
    let m_before = counts.messages.load(Ordering::Relaxed);
    *counts.first_backfill.lock().unwrap() = None;
    let daemon = Guard(
        Command::new(&bin)
            .arg("run")
            .arg(&cfg)
            .arg("--no-metrics")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let backlog = outage * devices;
    let start = Instant::now();
    let pid = daemon.0.id();
    let cpu0 = cpu_ticks(pid);
    let mut drained = None;
    // Polled often: at tens of thousands of messages a second a whole backlog of a short outage
    // goes out in well under a second.
    while start.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(10));
        if counts.backfill.load(Ordering::Relaxed) - backfill0 >= backlog * 95 / 100 {
            drained = Some(start.elapsed());
            break;
        }
    }
    let cpu_s = (cpu_ticks(pid) - cpu0) as f64 / tck as f64;
    let got = counts.backfill.load(Ordering::Relaxed) - backfill0;
    let live = counts.messages.load(Ordering::Relaxed) - m_before - got;
    let first = counts.first_backfill.lock().unwrap().map(|f| f - start);
    match drained {
        Some(t) => {
            let rate = got as f64 / t.as_secs_f64();
            println!(
                "replay: {got} backfill messages (≈{backlog} expected from a {outage} s outage) in {:.1} s = {rate:.0} msg/s, with {live} live messages interleaved ({:.0} live msg/s for {devices} devices)",
                t.as_secs_f64(),
                live as f64 / t.as_secs_f64()
            );
            // The rate above includes the daemon's start and connect; this one only the sending.
            if let Some(first) = first.filter(|f| *f < t) {
                let sending = t - first;
                println!(
                    "  first backfill message after {:.2} s; {:.0} msg/s from then on",
                    first.as_secs_f64(),
                    got as f64 / sending.as_secs_f64()
                );
            }
            println!(
                "  a 24 h backlog of this workload ({} messages) would take ≈{:.1} min at this rate",
                devices * 86_400,
                (devices * 86_400) as f64 / rate / 60.0
            );
            println!(
                "  daemon CPU while replaying: {cpu_s:.2} s = {:.1} µs per message; VmHWM (peak) {:.1} MiB",
                cpu_s * 1e6 / (got + live).max(1) as f64,
                status_kib(pid, "VmHWM:") as f64 / 1024.0
            );
            println!(
                "  backfill arriving out of order per device: {}",
                counts.backfill_out_of_order.load(Ordering::Relaxed)
            );
        }
        None => println!("replay: only {got} of ≈{backlog} backfill messages within 600 s"),
    }
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
}
