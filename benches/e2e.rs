//! End-to-end budget (docs/design.md §8, issue 3): simulator → `plantwatch run` → MQTT broker →
//! subscriber, N meters × 22 values at 1 s; and the outbox replay rate after an outage.
//!
//! The simulator and the daemon are separate processes, so the CPU time and peak RSS read
//! from `/proc/<daemon pid>` are the daemon's alone. The broker is mosquitto when installed
//! (`.ci/run` installs it), else the embedded rumqttd in this process.
//!
//! Environment: `BENCH_DEVICES` (default 200), `BENCH_SECONDS` (default 60), `BENCH_WARMUP`
//! (default 5), `BENCH_OUTAGE` (seconds the broker is unreachable before the replay
//! measurement; default 60), `PLANTWATCH_BIN` (default `target/release/plantwatch`),
//! `BENCH_MAX_GAP` (sets every meter's `max_gap_registers`: `support/max_gap.rs`),
//! `BENCH_MAX_INFLIGHT` (sets `[mqtt] max_inflight`, which bounds the replay's memory and rate).
//!
//! `BENCH_WIRE=1` measures bytes on the wire instead (issue 19, `support/wire.rs`): per delivered
//! value, per value and poll, and per device-day, for json, json_compact and sparkplug_b with
//! every-poll and on-change reporting, and for the energy-platform records. Bytes do not depend on the build, so
//! `PLANTWATCH_BIN=target/debug/plantwatch` serves. `BENCH_TOPIC_ALIASES=N` has mosquitto grant N
//! MQTT 5 topic aliases (its default is 10). `BENCH_WIRE_ONLY=TEXT` runs only the cases
//! whose label contains TEXT.
//!
//! `BENCH_BACKLOG_HOURS=H` (unset by default; needs mosquitto) measures a real backlog of H
//! hours instead of extrapolating from the outage's: the outage's rows are copied in the
//! outbox, renumbered so that every device's seqs stay contiguous, until it holds
//! devices × H × 3600 messages; then the drain is timed against docs/design.md §8's budget of ten
//! minutes for a day's backlog with live polling going on. H = 24 is 17.28 M rows for 200
//! devices: a few minutes to grow and about 7 GB under `$TMPDIR`. The rows are copies, so
//! their timestamps repeat.
#![allow(
    clippy::disallowed_methods,
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::QoS;

#[path = "support/max_gap.rs"]
mod max_gap;
#[path = "support/subscriber.rs"]
mod subscriber;
#[path = "support/wire.rs"]
mod wire;

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

/// The daemon's CPU ticks so far, in user space and in the kernel.
fn cpu_split(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command name comes field 3 (state); utime and stime are fields 14 and 15.
    let field = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(14), field(15))
}

fn cpu_ticks(pid: u32) -> u64 {
    let (user, kernel) = cpu_split(pid);
    user + kernel
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

/// Bytes the process caused to be written to storage (the outbox's WAL and checkpoints).
fn disk_written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
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
    /// Backfill seqs per device, and how often one arrived below the last.
    backfill_seen: Mutex<HashMap<String, Seen>>,
    backfill_out_of_order: AtomicU64,
    /// Backfill seqs seen for the first time, and again.
    backfill_distinct: AtomicU64,
    backfill_duplicates: AtomicU64,
    /// When the first backfill message arrived.
    first_backfill: Mutex<Option<Instant>>,
    live: Mutex<LiveGaps>,
}

/// Above this a seq is not tracked: a bitmap indexed by seq stays small only because the bench
/// starts from a fresh state file (a day of 1 s polls is 86 400 seqs per device).
const TRACKED_SEQS: u64 = 1 << 24;

#[derive(Default)]
struct Seen {
    last: Option<u64>,
    /// Bit `seq` set once seq has arrived: exact missing and duplicate counts for millions of
    /// messages at a few KiB per device.
    bits: Vec<u64>,
}

/// Whether live data kept flowing while a backlog drains: arrival of each device's last live
/// message, and the longest wait between two of one device's.
#[derive(Default)]
struct LiveGaps {
    last: HashMap<String, Instant>,
    first: Option<Instant>,
    longest: Duration,
    longest_device: String,
}

/// Sets bit `i`; false if it was set already.
fn set_bit(bits: &mut Vec<u64>, i: u64) -> bool {
    let (word, bit) = ((i / 64) as usize, i % 64);
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    let fresh = bits[word] & (1 << bit) == 0;
    bits[word] |= 1 << bit;
    fresh
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
        let mut seen = counts.backfill_seen.lock().unwrap();
        let d = seen.entry(device.clone()).or_default();
        if d.last.replace(seq).is_some_and(|p| seq < p) {
            counts.backfill_out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        if seq < TRACKED_SEQS {
            let tally = if set_bit(&mut d.bits, seq) {
                &counts.backfill_distinct
            } else {
                &counts.backfill_duplicates
            };
            tally.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        let now = Instant::now();
        let mut live = counts.live.lock().unwrap();
        live.first.get_or_insert(now);
        if let Some(prev) = live.last.insert(device.clone(), now) {
            if now - prev > live.longest {
                live.longest = now - prev;
                live.longest_device.clone_from(&device);
            }
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
    let backlog_hours = std::env::var("BENCH_BACKLOG_HOURS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|h| *h > 0.0);
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
            // `BENCH_TOPIC_ALIASES=N`: the MQTT 5 topic aliases the broker grants a client
            // (mosquitto's default is 10).
            let aliases = std::env::var("BENCH_TOPIC_ALIASES")
                .map(|n| format!("max_topic_alias {n}\n"))
                .unwrap_or_default();
            std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n{aliases}")).unwrap();
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
    let plant = max_gap::apply(plant);
    if std::env::var_os("BENCH_WIRE").is_some_and(|v| v == "1") {
        let workload = wire::Workload {
            devices,
            warmup,
            seconds,
        };
        wire::run(&rt, &bin, broker, &plant, &dir, &workload);
        // Seven cases leave seven state files (about 50 MB together).
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    let cfg = dir.join("plantwatch.toml");
    let inflight = std::env::var("BENCH_MAX_INFLIGHT")
        .ok()
        .filter(|n| !n.is_empty())
        .map_or_else(String::new, |n| format!("max_inflight = {n}\n"));
    std::fs::write(&cfg, format!(
        "[gateway]\nsite = \"bench\"\nid = \"gw\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n{inflight}\n[store]\npath = \"{}\"\n\n{plant}",
        broker.port(), dir.join("state.db").display()
    )).unwrap();

    // The subscriber.
    let counts = Arc::new(Counts::default());
    {
        let counts = counts.clone();
        subscriber::start(
            &rt,
            broker,
            "bench-sub",
            "plantwatch/bench/gw/telemetry/#",
            QoS::AtMostOnce,
            move |p| count(&counts, &p.payload),
        );
    }
    let daemon = Guard(
        Command::new(&bin)
            .arg("run")
            .arg("--config")
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
    let (cpu0, v0, m0, t0, disk0, rss0) = (
        cpu_split(pid),
        counts.values.load(Ordering::Relaxed),
        counts.messages.load(Ordering::Relaxed),
        Instant::now(),
        disk_written(pid),
        status_kib(pid, "VmRSS:"),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, v1, m1, dt, disk1) = (
        cpu_split(pid),
        counts.values.load(Ordering::Relaxed),
        counts.messages.load(Ordering::Relaxed),
        t0.elapsed(),
        disk_written(pid),
    );
    let values = v1 - v0;
    let per_value = |ticks: u64| ticks as f64 / tck as f64 * 1e6 / values.max(1) as f64;
    let (user, kernel) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let cpu_s = (user + kernel) as f64 / tck as f64;
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
    // On loopback the kernel time includes the peers' TCP receive work, which a NIC would
    // take on a real network; the user time is the daemon's own.
    println!(
        "  daemon CPU: {cpu_s:.2} s = {:.2} µs per delivered value ({:.2} µs user, {:.2} µs kernel)",
        per_value(user + kernel),
        per_value(user),
        per_value(kernel)
    );
    let rss1 = status_kib(pid, "VmRSS:");
    println!(
        "  daemon memory: VmRSS {:.1} MiB, VmHWM (peak) {:.1} MiB; {:+.0} KiB/min over the window",
        rss1 as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0,
        (rss1 as f64 - rss0 as f64) * 60.0 / dt.as_secs_f64()
    );
    println!(
        "  daemon disk writes: {:.1} bytes per delivered value ({:.0} KiB/s; /proc/<pid>/io write_bytes)",
        (disk1 - disk0) as f64 / values.max(1) as f64,
        (disk1 - disk0) as f64 / 1024.0 / dt.as_secs_f64()
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
    let daemon = run_quiet(&bin, &cfg);
    std::thread::sleep(Duration::from_secs(outage));
    drop(daemon);
    if let Some(hours) = backlog_hours {
        replay_backlog(&bin, &cfg, &text, &counts, devices, hours);
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    std::fs::write(&cfg, text).unwrap();
    let backfill0 = counts.backfill.load(Ordering::Relaxed);
    let m_before = counts.messages.load(Ordering::Relaxed);
    *counts.first_backfill.lock().unwrap() = None;
    let daemon = run_quiet(&bin, &cfg);
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

/// docs/design.md §8: a day's backlog drains within this while live polling continues.
const BUDGET: Duration = Duration::from_secs(600);

/// `plantwatch run` with its output silenced: a daemon that cannot reach its broker logs every
/// reconnect.
fn run_quiet(bin: &Path, cfg: &Path) -> Guard {
    Guard(
        Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(cfg)
            .arg("--no-metrics")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The outbox after [`grow_outbox`].
struct Grown {
    rows_before: u64,
    rows: u64,
    /// Rows that are not telemetry (device status, alarms): copied as they are, sent on topics
    /// the subscriber does not count.
    others: u64,
    payload_bytes: u64,
    passes: u32,
    took: Duration,
    /// Telemetry seqs stored, per device as the subscriber sees it (the JSON `device`).
    expected: HashMap<String, Vec<u64>>,
    journal_mode: String,
}

/// Copies the default outbox's rows until it holds `target`, each copy renumbered past its key's
/// seqs, then moves `seqs.next` past them. Doubling keeps every pass a plain read of rows already
/// there; copying in id order keeps each device's seqs contiguous and increasing with id, as the
/// daemon would have stored a long outage.
fn grow_outbox(db: &Path, target: u64) -> anyhow::Result<Grown> {
    use plantwatch::store::{OutboxRow, record};
    use rusqlite::{Connection, params};

    // Rows per read and per transaction: big enough that commits cost nothing, small enough to
    // hold in memory (a few hundred bytes each).
    const CHUNK: u64 = 50_000;

    let start = Instant::now();
    let mut conn = Connection::open(db)?;
    // Bench setup on a throwaway file: a crash here loses nothing worth an fsync.
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -65_536)?;

    let mut range: HashMap<String, (u64, u64)> = HashMap::new(); // key -> (min, max) seq
    let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
    let (mut rows, mut payload_bytes) = (0u64, 0u64);
    {
        let mut stmt = conn.prepare("SELECT key, seq, payload FROM outbox")?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let (key, seq): (String, u64) = (r.get(0)?, r.get(1)?);
            let payload = r.get_ref(2)?.as_blob()?;
            rows += 1;
            payload_bytes += payload.len() as u64;
            if payload.first() == Some(&record::FORMAT) {
                let (batch, wire) = record::decode_batch(payload)?;
                set_bit(
                    expected
                        .entry(batch.device.as_str().to_owned())
                        .or_default(),
                    wire,
                );
            }
            let e = range.entry(key).or_insert((seq, seq));
            e.0 = e.0.min(seq);
            e.1 = e.1.max(seq);
        }
    }
    let rows_before = rows;
    anyhow::ensure!(rows > 0, "the outage left the outbox empty");

    let mut passes = 0;
    while rows < target {
        let (first, last): (i64, i64) =
            conn.query_row("SELECT min(id), max(id) FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        // Taken before the pass: its copies land after every seq the key has now.
        let shift: HashMap<String, u64> = range
            .iter()
            .map(|(k, (lo, hi))| (k.clone(), hi - lo + 1))
            .collect();
        let pass_start = Instant::now();
        let mut after = first - 1;
        // The last pass copies only the oldest rows: still a prefix of every device's seqs.
        while rows < target && after < last {
            let chunk: Vec<OutboxRow> = conn
                .prepare_cached(
                    "SELECT id, stream, key, seq, created_ms, payload FROM outbox \
                     WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
                )?
                .query_map(
                    params![after, last, CHUNK.min(target - rows)],
                    OutboxRow::from_sql,
                )?
                .collect::<Result<_, _>>()?;
            let Some(tail) = chunk.last() else { break };
            after = tail.id;
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO outbox (stream, key, seq, created_ms, payload) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for row in chunk {
                    // Alarms and health carry no seq of their own to move.
                    let (seq, payload) = if row.payload.first() == Some(&record::FORMAT) {
                        let (batch, wire) = record::decode_batch(&row.payload)?;
                        let seq = wire + shift[&row.key];
                        set_bit(
                            expected
                                .entry(batch.device.as_str().to_owned())
                                .or_default(),
                            seq,
                        );
                        (seq, record::encode_batch(&batch, seq))
                    } else {
                        (row.seq, row.payload)
                    };
                    insert.execute(params![row.stream, row.key, seq, row.created_ms, payload])?;
                    let e = range.get_mut(&row.key).expect("key read above");
                    e.1 = e.1.max(seq);
                    rows += 1;
                    payload_bytes += payload.len() as u64;
                }
            }
            tx.commit()?;
        }
        passes += 1;
        println!(
            "  pass {passes}: {rows} rows ({:.1} s)",
            pass_start.elapsed().as_secs_f64()
        );
    }

    let tx = conn.transaction()?;
    {
        // Live polls continue after the backlog instead of being refused as reused seqs.
        let mut next = tx.prepare(
            "INSERT INTO seqs (key, next) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET next = max(next, excluded.next)",
        )?;
        for (key, (_, max)) in &range {
            next.execute(params![key, max + 1])?;
        }
    }
    // So that the outbox counters still add up: enqueued = acked + dropped + stored.
    tx.execute(
        "UPDATE meta SET value = value + ?1 WHERE key = 'outbox.enqueued_total'",
        [rows - rows_before],
    )?;
    tx.commit()?;
    // The daemon opens in WAL mode and refuses any other.
    let journal_mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(Grown {
        rows_before,
        rows,
        others: conn.query_row(
            "SELECT count(*) FROM outbox WHERE substr(payload, 1, 1) <> ?1",
            [vec![record::FORMAT]],
            |r| r.get(0),
        )?,
        payload_bytes,
        passes,
        took: start.elapsed(),
        expected,
        journal_mode,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The replay phase of `BENCH_BACKLOG_HOURS`: grows the outage's backlog to `hours` of polls,
/// then times its drain by a daemon that polls live at the same time.
fn replay_backlog(bin: &Path, cfg: &Path, text: &str, counts: &Counts, devices: u64, hours: f64) {
    let target = (devices as f64 * hours * 3600.0).round() as u64;
    let db = cfg.with_file_name("state.db");
    println!(
        "backlog: growing the outbox to {target} rows ({devices} devices × {hours} h of 1 s polls)"
    );
    let g = match grow_outbox(&db, target) {
        Ok(g) => g,
        Err(e) => {
            println!("backlog: cannot grow the outbox: {e:#}");
            return;
        }
    };
    let file = |suffix: &str| {
        std::fs::metadata(db.with_file_name(format!("state.db{suffix}"))).map_or(0, |m| m.len())
    };
    let (holes, devices_stored) = g.expected.values().fold((0, 0), |(holes, n), bits| {
        let set: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
        let lo = bits
            .iter()
            .position(|w| *w != 0)
            .map_or(0, |i| i as u64 * 64 + u64::from(bits[i].trailing_zeros()));
        let hi =
            bits.len() as u64 * 64 - 1 - u64::from(bits.last().map_or(64, |w| w.leading_zeros()));
        (holes + (hi + 1 - lo - set), n + 1)
    });
    println!(
        "  {} → {} rows in {:.1} s ({} passes); payload {:.1} MiB ({:.0} B per row); state.db {:.1} MiB (+ WAL {:.1} MiB), journal_mode {}",
        g.rows_before,
        g.rows,
        g.took.as_secs_f64(),
        g.passes,
        mib(g.payload_bytes),
        g.payload_bytes as f64 / g.rows as f64,
        mib(file("")),
        mib(file("-wal")),
        g.journal_mode
    );
    println!(
        "  of which {} are telemetry and {} device status or alarm messages (on other topics)",
        g.rows - g.others,
        g.others
    );
    println!(
        "  seqs stored: {devices_stored} devices, {}",
        if holes == 0 {
            "each contiguous".to_owned()
        } else {
            format!("{holes} seqs missing between a device's first and last")
        }
    );
    // Below its backlog the daemon would drop the oldest rows as it starts.
    let max_bytes = (g.payload_bytes as f64 * 1.5) as u64;
    std::fs::write(
        cfg,
        text.replacen(
            "[store]\n",
            &format!("[store]\nmax_outbox_bytes = {}\n", max_bytes.max(256 << 20)),
            1,
        ),
    )
    .unwrap();

    counts.backfill_seen.lock().unwrap().clear();
    *counts.live.lock().unwrap() = LiveGaps::default();
    *counts.first_backfill.lock().unwrap() = None;
    let expected: u64 = g
        .expected
        .values()
        .flatten()
        .map(|w| u64::from(w.count_ones()))
        .sum();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (b0, d0, dup0, o0, m0) = (
        load(&counts.backfill),
        load(&counts.backfill_distinct),
        load(&counts.backfill_duplicates),
        load(&counts.backfill_out_of_order),
        load(&counts.messages),
    );
    let live_now = || (load(&counts.messages) - m0) - (load(&counts.backfill) - b0);
    let timeout = Duration::from_secs_f64((BUDGET.as_secs_f64() * 1.5).max(900.0));
    const WINDOW: Duration = Duration::from_secs(60);

    let daemon = run_quiet(bin, cfg);
    let start = Instant::now();
    let pid = daemon.0.id();
    let tck = clk_tck();
    let cpu0 = cpu_ticks(pid);
    let mut windows = Vec::new(); // live messages per WINDOW
    let (mut window_end, mut live_before, mut backfill_before) = (WINDOW, 0, 0);
    let mut drained = None;
    while start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(10));
        let distinct = load(&counts.backfill_distinct) - d0;
        if distinct >= expected {
            drained = Some(start.elapsed());
            break;
        }
        if start.elapsed() >= window_end {
            let (live, backfill) = (live_now(), load(&counts.backfill) - b0);
            windows.push(live - live_before);
            println!(
                "  [{:>4} s] backfill {distinct} of {expected} ({:.0} msg/s), live {:.0} msg/s",
                window_end.as_secs(),
                (backfill - backfill_before) as f64 / WINDOW.as_secs_f64(),
                (live - live_before) as f64 / WINDOW.as_secs_f64(),
            );
            (live_before, backfill_before) = (live, backfill);
            window_end += WINDOW;
        }
    }
    let t = drained.unwrap_or_else(|| start.elapsed());
    let cpu_s = (cpu_ticks(pid) - cpu0) as f64 / tck as f64;
    let hwm = status_kib(pid, "VmHWM:");
    let end = Instant::now();
    let got = load(&counts.backfill) - b0;
    let distinct = load(&counts.backfill_distinct) - d0;
    let live = live_now();
    let last_window = t.saturating_sub(window_end - WINDOW);
    let first = counts.first_backfill.lock().unwrap().map(|f| f - start);

    let (missing, unexpected) = {
        let seen = counts.backfill_seen.lock().unwrap();
        let mut missing = 0u64;
        for (device, want) in &g.expected {
            let have = seen.get(device).map_or(&[][..], |s| &s.bits[..]);
            for (i, w) in want.iter().enumerate() {
                missing += u64::from((w & !have.get(i).copied().unwrap_or(0)).count_ones());
            }
        }
        let mut unexpected = 0u64;
        for (device, s) in seen.iter() {
            let want = g.expected.get(device).map_or(&[][..], |w| &w[..]);
            for (i, w) in s.bits.iter().enumerate() {
                unexpected += u64::from((w & !want.get(i).copied().unwrap_or(0)).count_ones());
            }
        }
        (missing, unexpected)
    };
    let (gap, gap_device, first_live, silent) = {
        let l = counts.live.lock().unwrap();
        // A device whose live messages stopped for good has its gap still open at the end.
        let (mut gap, mut device) = (l.longest, l.longest_device.clone());
        for (d, at) in &l.last {
            if end - *at > gap {
                gap = end - *at;
                device.clone_from(d);
            }
        }
        (
            gap,
            device,
            l.first.map(|f| f - start),
            devices.saturating_sub(l.last.len() as u64),
        )
    };

    let verdict = |minutes: f64| {
        if minutes * 60.0 <= BUDGET.as_secs_f64() {
            "within"
        } else {
            "OVER"
        }
    };
    let per_day = devices * 86_400;
    let rate = got as f64 / t.as_secs_f64();
    match drained {
        Some(_) => println!(
            "replay: a {hours} h backlog of {} rows drained in {:.2} min ({:.1} s) = {rate:.0} msg/s, with {live} live messages interleaved",
            g.rows,
            t.as_secs_f64() / 60.0,
            t.as_secs_f64()
        ),
        None => println!(
            "replay: NOT drained: {distinct} of {expected} backfill messages within {} s ({rate:.0} msg/s), with {live} live messages interleaved",
            timeout.as_secs()
        ),
    }
    if let Some(first) = first.filter(|f| *f < t) {
        println!(
            "  first backfill message after {:.2} s (daemon start, loading the outbox, connecting); {:.0} msg/s from then on",
            first.as_secs_f64(),
            got as f64 / (t - first).as_secs_f64()
        );
    }
    let mut per_window: Vec<String> = windows
        .iter()
        .map(|n| format!("{:.0}", *n as f64 / WINDOW.as_secs_f64()))
        .collect();
    if !last_window.is_zero() {
        per_window.push(format!(
            "{:.0} (last {:.0} s)",
            (live - live_before) as f64 / last_window.as_secs_f64(),
            last_window.as_secs_f64()
        ));
    }
    println!(
        "  live while draining: {} msg/s per {} s window (polling {devices} devices at 1 s); first live message after {}; longest gap between one device's live messages {:.2} s ({gap_device}); devices with no live message: {silent}",
        per_window.join(", "),
        WINDOW.as_secs(),
        first_live.map_or_else(
            || "never".to_owned(),
            |f| format!("{:.2} s", f.as_secs_f64())
        ),
        gap.as_secs_f64(),
    );
    println!(
        "  daemon CPU: {cpu_s:.1} s = {:.1} µs per message; VmHWM (peak) {:.1} MiB",
        cpu_s * 1e6 / (got + live).max(1) as f64,
        hwm as f64 / 1024.0
    );
    println!(
        "  backfill: {distinct} distinct of {expected} stored, missing seqs {missing}, duplicates {}, unexpected {unexpected}, arriving out of order per device {}",
        load(&counts.backfill_duplicates) - dup0,
        load(&counts.backfill_out_of_order) - o0
    );
    let minutes = t.as_secs_f64() / 60.0;
    if drained.is_none() {
        println!(
            "  budget: OVER: a {hours} h backlog did not drain in {:.0} min (budget 10 min for 24 h)",
            timeout.as_secs_f64() / 60.0
        );
    } else if (hours - 24.0).abs() < 1e-9 {
        println!(
            "  budget: a 24 h backlog ({} rows) drained in {minutes:.1} min: {} the 10-minute budget",
            g.rows,
            verdict(minutes)
        );
    } else {
        let day = minutes * per_day as f64 / g.rows as f64;
        println!(
            "  budget: extrapolated from {hours} h, a 24 h backlog ({per_day} rows) would take ≈{day:.1} min: {} the 10-minute budget (BENCH_BACKLOG_HOURS=24 measures it)",
            verdict(day)
        );
    }
    drop(daemon);
}
