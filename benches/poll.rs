//! Polling budget (docs/design.md §8): N simulated Modbus TCP meters × 22 values at 1 s.
//!
//! The simulator runs as a separate process (`plantwatch simulate`), so the CPU time and
//! resident memory read from `/proc/self` are the poller's alone. Each device count runs in a
//! fresh copy of this binary, so one case's heap does not inflate the next one's RSS.
//!
//! Environment:
//! - `BENCH_DEVICES` (default `200,2000`): device counts, one case each.
//! - `BENCH_SECONDS` (default 60): measuring window; `BENCH_WARMUP` (default 3) before it.
//! - `BENCH_RUNTIME` (default `current_thread,floor`): a comma list of `current_thread`,
//!   `multi_thread` and `floor`. `floor` is no poller at all: one blocking thread sends the same
//!   Modbus frames the read plans would, to every device in turn, and reads the answers without
//!   decoding them. It is what the kernel alone charges for this traffic, the least any poller
//!   with a TCP connection per device can spend. `floor_pipelined` is the same, except that it
//!   sends each device's requests back to back in one write and then reads the answers, as a
//!   client may if the device accepts several transactions in flight (not every one does).
//! - `BENCH_MAX_GAP`: sets every meter's `max_gap_registers` (`support/max_gap.rs`); the
//!   `floor` case sends the merged plans' frames too.
//! - `BENCH_BASE_PORT`: first simulator port (default: ephemeral ports chosen by the kernel).
//! - `PLANTWATCH_BIN`: the plantwatch binary (default `target/release/plantwatch`).
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
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use plantwatch::acquire::{AcquireStats, DeviceStats, spawn_links};
use plantwatch::clock::{Clock, SystemClock};
use plantwatch::config::{EnvOverrides, Plan, load_str};
use plantwatch::model::{DeviceId, Quality, SampleBatch};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[path = "support/max_gap.rs"]
mod max_gap;

/// Points of the chint-dtsu666 profile.
const POINTS_PER_DEVICE: u64 = 22;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn plantwatch_bin() -> PathBuf {
    std::env::var_os("PLANTWATCH_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/plantwatch"),
        PathBuf::from,
    )
}

// ---------------------------------------------------------------------------------------
// /proc readings

/// Clock ticks per second for `/proc/self/stat` (`getconf CLK_TCK`, else the usual 100).
fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// (user, system) CPU time of process `pid` (`self` for this one), all threads, dead or alive.
fn cpu_times(pid: &str, tck: u64) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after `pid (comm)`.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let to = |t: u64| Duration::from_micros(t * 1_000_000 / tck);
    Some((to(utime), to(stime)))
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so the peak excludes config loading.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------
// The simulator child process

/// The simulator process; killed and reaped on drop (also when a case panics).
struct Simulator {
    child: Child,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Err(err) = self.child.kill() {
            eprintln!("poll bench: cannot kill simulator: {err}");
        }
        if let Err(err) = self.child.wait() {
            eprintln!("poll bench: cannot reap simulator: {err}");
        }
    }
}

/// A free run of `count` loopback ports starting at `base`, or an error naming the busy one.
fn check_ports(base: u16, count: u16) -> Result<(), String> {
    for k in 0..count {
        let port = base
            .checked_add(k)
            .ok_or_else(|| format!("ports {base}+{count} overflow"))?;
        TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("port {port} is not free: {e}"))?;
    }
    Ok(())
}

fn start_simulator(bin: &Path, devices: u16, lifetime: Duration) -> Result<Simulator, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let config = dir.path().join("sim.toml");
    let listen = match std::env::var("BENCH_BASE_PORT") {
        Ok(base) => {
            let base: u16 = base
                .parse()
                .map_err(|e| format!("BENCH_BASE_PORT `{base}`: {e}"))?;
            check_ports(base, devices)?;
            format!("127.0.0.1:{base}")
        }
        // Port 0: the simulator binds ephemeral ports and writes them into the config.
        Err(_) => "127.0.0.1:0".into(),
    };
    let mut child = Command::new(bin)
        .args(["simulate", "--profile", "chint-dtsu666", "--count"])
        .arg(devices.to_string())
        .args(["--listen", &listen, "--write-config"])
        .arg(&config)
        // A backstop: the simulator stops by itself even if this process is killed -9.
        .args(["--duration", &lifetime.as_secs().to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take();
    let sim = Simulator {
        child,
        config,
        _dir: dir,
    };
    let Some(stdout) = stdout else {
        return Err("simulator stdout not captured".into());
    };
    // Read its stdout on a thread (and keep draining it so the pipe never fills).
    let (ready_tx, ready_rx) = std_mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("simulated device(s) ready") {
                let _ignored = ready_tx.send(line);
            }
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(120)) {
        Ok(_) => Ok(sim),
        Err(_) => Err(format!(
            "simulator did not report ready within 120 s (devices {devices}, listen {listen})"
        )),
    }
}

// ---------------------------------------------------------------------------------------
// One case

#[derive(Debug, Default)]
struct Window {
    batches: u64,
    values: u64,
    good: u64,
    /// Achieved periods (ms) between consecutive polls of the same device.
    periods: Vec<i64>,
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn snapshot(stats: &AcquireStats) -> [u64; 4] {
    [
        stats.total(|s: &DeviceStats| &s.missed_ticks),
        stats.total(|s: &DeviceStats| &s.polls_ok),
        stats.total(|s: &DeviceStats| &s.polls_failed),
        stats.total(|s: &DeviceStats| &s.timeouts),
    ]
}

struct Measured {
    /// KiB: VmRSS and VmHWM after spawn_links, VmHWM at the end of the warm-up, VmRSS at the
    /// start and end of the window, VmHWM at the end of the window (all links still running).
    rss: [Option<u64>; 6],
    window: Window,
    wall: Duration,
    cpu_user: Duration,
    cpu_sys: Duration,
    sim_cpu: Option<Duration>,
    before: [u64; 4],
    after: [u64; 4],
}

async fn measure(plan: &Plan, warmup: Duration, seconds: Duration, sim_pid: u32) -> Measured {
    let tck = clk_tck();
    let (tx, mut rx) = mpsc::channel::<SampleBatch>(256);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let stats = spawn_links(plan.fleet(), &tx, &clock, &cancel, &mut tasks);
    drop(tx);
    let rss_spawned = status_kib("VmRSS");
    let hwm_spawned = status_kib("VmHWM");

    let sim_pid = sim_pid.to_string();
    let mut last_tick: HashMap<DeviceId, i64> = HashMap::with_capacity(plan.devices.len());
    let mut window = Window {
        periods: Vec::with_capacity(plan.devices.len() * (seconds.as_secs() as usize + 2)),
        ..Window::default()
    };
    let start = tokio::time::Instant::now();
    let warm_end = start + warmup;
    let end = warm_end + seconds;
    let mut measuring = false;
    let mut hwm_warm = None;
    let mut rss_window_start = None;
    // One timer for both phase ends, so the consumer loop does not re-arm a timer per batch.
    let phase = tokio::time::sleep_until(warm_end);
    tokio::pin!(phase);
    let (mut wall0, mut cpu0, mut sim0, mut before) = (
        Instant::now(),
        (Duration::ZERO, Duration::ZERO),
        None,
        [0; 4],
    );
    loop {
        tokio::select! {
            biased;
            () = &mut phase => {
                if measuring {
                    break;
                }
                measuring = true;
                hwm_warm = status_kib("VmHWM");
                rss_window_start = status_kib("VmRSS");
                phase.as_mut().reset(end);
                wall0 = Instant::now();
                cpu0 = cpu_times("self", tck).unwrap_or_default();
                sim0 = cpu_times(&sim_pid, tck);
                before = snapshot(&stats);
            }
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let tick = batch.tick.millis();
                if let Some(prev) = last_tick.insert(batch.device.clone(), tick) {
                    if measuring {
                        window.periods.push(tick - prev);
                    }
                }
                if measuring {
                    window.batches += 1;
                    window.values += batch.samples.len() as u64;
                    window.good += batch
                        .samples
                        .iter()
                        .filter(|s| s.quality == Quality::Good)
                        .count() as u64;
                }
            }
        }
    }
    let wall = wall0.elapsed();
    let cpu1 = cpu_times("self", tck).unwrap_or_default();
    let sim1 = cpu_times(&sim_pid, tck);
    let after = snapshot(&stats);
    let rss_window_end = status_kib("VmRSS");
    let hwm_window_end = status_kib("VmHWM");
    cancel.cancel();
    drop(rx);
    while tasks.join_next().await.is_some() {}
    let sim_cpu = match (sim0, sim1) {
        (Some(a), Some(b)) => Some((b.0 + b.1).saturating_sub(a.0 + a.1)),
        _ => None,
    };
    Measured {
        rss: [
            rss_spawned,
            hwm_spawned,
            hwm_warm,
            rss_window_start,
            rss_window_end,
            hwm_window_end,
        ],
        window,
        wall,
        cpu_user: cpu1.0.saturating_sub(cpu0.0),
        cpu_sys: cpu1.1.saturating_sub(cpu0.1),
        sim_cpu,
        before,
        after,
    }
}

/// One device's connection and its read plan's requests as ready-made Modbus TCP frames.
struct RawDevice {
    stream: std::net::TcpStream,
    /// (frame, values the request carries).
    requests: Vec<(Vec<u8>, u64)>,
}

fn connect_raw(plan: &Plan) -> Result<Vec<RawDevice>, String> {
    use plantwatch::config::plan::Transport;
    let mut raw = Vec::with_capacity(plan.devices.len());
    for d in &plan.devices {
        let Some(Transport::Tcp(e)) = plan.links.get(d.link).map(|l| &l.transport) else {
            return Err(format!("device {}: floor needs a Modbus TCP link", d.name));
        };
        let stream = std::net::TcpStream::connect((e.host.as_str(), e.port))
            .map_err(|err| format!("device {}: connect {e}: {err}", d.name))?;
        let requests = d
            .read_plan
            .requests
            .iter()
            .map(|r| {
                let [ah, al] = r.address.to_be_bytes();
                let [ch, cl] = r.count.to_be_bytes();
                // MBAP header (transaction id patched per send, protocol 0, 6 bytes follow), PDU.
                let frame = vec![
                    0,
                    0,
                    0,
                    0,
                    0,
                    6,
                    d.unit_id,
                    r.function.code(),
                    ah,
                    al,
                    ch,
                    cl,
                ];
                (frame, r.slots.len() as u64)
            })
            .collect();
        raw.push(RawDevice { stream, requests });
    }
    Ok(raw)
}

/// One cycle: request k of every device, then its answers, for each k. Returns (values, good).
fn floor_cycle(raw: &mut [RawDevice], tid: u16) -> std::io::Result<(u64, u64)> {
    use std::io::{Read as _, Write as _};
    let (mut values, mut good) = (0, 0);
    let rounds = raw.iter().map(|d| d.requests.len()).max().unwrap_or(0);
    let mut answer = [0u8; 260];
    for k in 0..rounds {
        for d in raw.iter_mut() {
            if let Some((frame, _)) = d.requests.get_mut(k) {
                frame[..2].copy_from_slice(&tid.to_be_bytes());
                d.stream.write_all(frame)?;
            }
        }
        for d in raw.iter_mut() {
            let Some((_, n)) = d.requests.get(k) else {
                continue;
            };
            d.stream.read_exact(&mut answer[..7])?;
            let len = usize::from(u16::from_be_bytes([answer[4], answer[5]])).clamp(1, 254);
            d.stream.read_exact(&mut answer[..len - 1])?;
            values += n;
            // An exception sets the function code's high bit.
            if answer[0] & 0x80 == 0 {
                good += n;
            }
        }
    }
    Ok((values, good))
}

/// One cycle with every device's requests sent in one write, then all their answers read,
/// as many as have arrived per read call. Returns (values, good).
fn pipelined_cycle(raw: &mut [RawDevice], tid: u16) -> std::io::Result<(u64, u64)> {
    use std::io::{Read as _, Write as _};
    let (mut values, mut good) = (0, 0);
    let mut out = Vec::new();
    for d in raw.iter_mut() {
        out.clear();
        for (frame, _) in &mut d.requests {
            frame[..2].copy_from_slice(&tid.to_be_bytes());
            out.extend_from_slice(frame);
        }
        d.stream.write_all(&out)?;
    }
    let mut buf = vec![0u8; 260 * 8];
    for d in raw.iter_mut() {
        let (mut filled, mut at) = (0, 0);
        for (_, n) in &d.requests {
            // The next answer's header, then its whole frame; what follows it stays buffered.
            let mut frame_len = None;
            loop {
                if frame_len.is_none() && filled - at >= 6 {
                    let len = usize::from(u16::from_be_bytes([buf[at + 4], buf[at + 5]]));
                    frame_len = Some(6 + len.clamp(2, 254));
                }
                if frame_len.is_some_and(|len| filled - at >= len) {
                    break;
                }
                if filled == buf.len() {
                    buf.copy_within(at..filled, 0);
                    (filled, at) = (filled - at, 0);
                }
                let got = d.stream.read(&mut buf[filled..])?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                filled += got;
            }
            values += n;
            // An exception sets the function code's high bit.
            if buf[at + 7] & 0x80 == 0 {
                good += n;
            }
            at += frame_len.unwrap_or(0);
        }
    }
    Ok((values, good))
}

fn measure_floor(
    plan: &Plan,
    warmup: Duration,
    seconds: Duration,
    sim_pid: u32,
    pipelined: bool,
) -> Result<Measured, String> {
    let tck = clk_tck();
    let rss_spawned = status_kib("VmRSS");
    let hwm_spawned = status_kib("VmHWM");
    let mut raw = connect_raw(plan)?;
    let sim_pid = sim_pid.to_string();
    let mut window = Window::default();
    let start = Instant::now();
    let cycles = (warmup + seconds).as_secs();
    let (mut wall0, mut cpu0, mut sim0, mut hwm_warm, mut rss_w0) =
        (start, (Duration::ZERO, Duration::ZERO), None, None, None);
    for cycle in 0..cycles {
        let due = start + Duration::from_secs(cycle);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if cycle == warmup.as_secs() {
            hwm_warm = status_kib("VmHWM");
            rss_w0 = status_kib("VmRSS");
            wall0 = Instant::now();
            cpu0 = cpu_times("self", tck).unwrap_or_default();
            sim0 = cpu_times(&sim_pid, tck);
        }
        let tid = cycle as u16;
        let (values, good) = if pipelined {
            pipelined_cycle(&mut raw, tid)
        } else {
            floor_cycle(&mut raw, tid)
        }
        .map_err(|e| format!("cycle {cycle}: {e}"))?;
        if cycle >= warmup.as_secs() {
            window.batches += raw.len() as u64;
            window.values += values;
            window.good += good;
        }
    }
    std::thread::sleep((start + warmup + seconds).saturating_duration_since(Instant::now()));
    let wall = wall0.elapsed();
    let cpu1 = cpu_times("self", tck).unwrap_or_default();
    let sim_cpu = match (sim0, cpu_times(&sim_pid, tck)) {
        (Some(a), Some(b)) => Some((b.0 + b.1).saturating_sub(a.0 + a.1)),
        _ => None,
    };
    Ok(Measured {
        rss: [
            rss_spawned,
            hwm_spawned,
            hwm_warm,
            rss_w0,
            status_kib("VmRSS"),
            status_kib("VmHWM"),
        ],
        window,
        wall,
        cpu_user: cpu1.0.saturating_sub(cpu0.0),
        cpu_sys: cpu1.1.saturating_sub(cpu0.1),
        sim_cpu,
        before: [0; 4],
        after: [0; 4],
    })
}

fn run_case(bin: &Path, devices: u16, flavor: &str, warmup: Duration, seconds: Duration) -> bool {
    println!(
        "--- poll: {devices} devices × {POINTS_PER_DEVICE} values at 1 s, {flavor} runtime, warm-up {} s, window {} s",
        warmup.as_secs(),
        seconds.as_secs()
    );
    let lifetime = warmup + seconds + Duration::from_secs(120);
    let sim = match start_simulator(bin, devices, lifetime) {
        Ok(s) => s,
        Err(e) => {
            println!("poll bench: {e}");
            return false;
        }
    };
    let text = match std::fs::read_to_string(&sim.config) {
        Ok(t) => max_gap::apply(t),
        Err(e) => {
            println!("poll bench: cannot read {}: {e}", sim.config.display());
            return false;
        }
    };
    let plan = match load_str("bench", &text, &EnvOverrides::Off, Path::new("."), None) {
        Ok(p) => p,
        Err(e) => {
            println!("poll bench: config from the simulator does not load: {e}");
            return false;
        }
    };
    drop(text);
    let rss_loaded = status_kib("VmRSS");
    let hwm_startup = status_kib("VmHWM");
    let reset = reset_peak_rss();

    let m = if flavor.starts_with("floor") {
        let pipelined = flavor == "floor_pipelined";
        match measure_floor(&plan, warmup, seconds, sim.child.id(), pipelined) {
            Ok(m) => m,
            Err(e) => {
                println!("poll bench: floor: {e}");
                return false;
            }
        }
    } else {
        let runtime = if flavor == "multi_thread" {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        };
        let runtime = match runtime {
            Ok(r) => r,
            Err(e) => {
                println!("poll bench: cannot build the tokio runtime: {e}");
                return false;
            }
        };
        runtime.block_on(measure(&plan, warmup, seconds, sim.child.id()))
    };
    let rss_end = status_kib("VmRSS");
    let hwm = status_kib("VmHWM");
    drop(sim);

    let w = &m.window;
    let secs = m.wall.as_secs_f64();
    let expected = u64::from(devices) * POINTS_PER_DEVICE * seconds.as_secs();
    let cpu = m.cpu_user + m.cpu_sys;
    let mut periods = w.periods.clone();
    periods.sort_unstable();
    let late = periods.iter().filter(|&&p| p > 1500).count();
    let [missed0, ok0, failed0, timeouts0] = m.before;
    let [missed1, ok1, failed1, timeouts1] = m.after;
    println!(
        "devices {devices}: values delivered {} ({} batches, {:.2}% of the {expected} scheduled), {:.2}% good, {:.0} values/s",
        w.values,
        w.batches,
        100.0 * w.values as f64 / expected.max(1) as f64,
        100.0 * w.good as f64 / w.values.max(1) as f64,
        w.values as f64 / secs
    );
    // The floor has no scheduler: its cycles are back to back, so periods and ticks mean nothing.
    if !flavor.starts_with("floor") {
        println!(
            "devices {devices}: poll period p50 {} ms, p99 {} ms, min {} ms, max {} ms, >1.5 s gaps {late}",
            percentile(&periods, 50.0),
            percentile(&periods, 99.0),
            periods.first().copied().unwrap_or(0),
            periods.last().copied().unwrap_or(0),
        );
        println!(
            "devices {devices}: missed ticks {} in window ({missed1} since start), polls ok {}, failed {}, timeouts {}",
            missed1 - missed0,
            ok1 - ok0,
            failed1 - failed0,
            timeouts1 - timeouts0
        );
    }
    println!(
        "devices {devices}: CPU {:.3} s over {secs:.1} s ({:.1}% of one core; user {:.3} s, sys {:.3} s) = {:.3} µs per value{}",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / secs,
        m.cpu_user.as_secs_f64(),
        m.cpu_sys.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / w.values.max(1) as f64,
        m.sim_cpu.map_or_else(String::new, |s| format!(
            " (simulator process: {:.1}% of one core)",
            100.0 * s.as_secs_f64() / secs
        ))
    );
    let [rss_spawned, hwm_spawned, hwm_warm, rss_w0, rss_w1, hwm_w1] = m.rss;
    let growth = match (rss_w0, rss_w1) {
        (Some(a), Some(b)) => format!(
            "{:+.0} KiB/min",
            (b as f64 - a as f64) * 60.0 / secs.max(1e-9)
        ),
        _ => "?".into(),
    };
    println!(
        "devices {devices}: RSS during window {} -> {} MiB ({growth}), peak {} MiB {} \
         [after config load {} MiB, after spawn_links {} MiB (peak {}), end of warm-up peak {}]",
        mib(rss_w0),
        mib(rss_w1),
        mib(hwm_w1),
        if reset {
            "since config loaded"
        } else {
            "incl. startup"
        },
        mib(rss_loaded),
        mib(rss_spawned),
        mib(hwm_spawned),
        mib(hwm_warm),
    );
    println!(
        "devices {devices}: process peak incl. startup/config load {} MiB; after links stopped: RSS {} MiB",
        // VmHWM is updated lazily by the kernel, so take the largest of every reading.
        mib([hwm_startup, hwm, hwm_w1, rss_w1]
            .into_iter()
            .flatten()
            .max()),
        mib(rss_end)
    );
    true
}

fn main() -> ExitCode {
    let bin = plantwatch_bin();
    if !bin.exists() {
        println!(
            "poll bench: SKIPPED: the simulator binary {} does not exist.\n\
             Build it with `cargo build --release` (or set PLANTWATCH_BIN), then rerun \
             `cargo bench --bench poll`.",
            bin.display()
        );
        return ExitCode::SUCCESS;
    }
    let seconds: u64 = env_or("BENCH_SECONDS", "60").parse().unwrap_or(60).max(1);
    let warmup: u64 = env_or("BENCH_WARMUP", "3").parse().unwrap_or(3);
    let devices: Vec<u16> = env_or("BENCH_DEVICES", "200,2000")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let flavor_list = env_or("BENCH_RUNTIME", "current_thread,floor");
    let flavors: Vec<&str> = flavor_list
        .split(',')
        .map(|f| match f.trim() {
            "multi_thread" | "multi" => "multi_thread",
            "floor" => "floor",
            "floor_pipelined" => "floor_pipelined",
            _ => "current_thread",
        })
        .collect();
    let (warmup, seconds) = (Duration::from_secs(warmup), Duration::from_secs(seconds));

    // A single case runs here; several run each in a fresh process (clean RSS per case).
    if let (Ok(_), [n], [flavor]) = (
        std::env::var("BENCH_POLL_CHILD"),
        devices.as_slice(),
        flavors.as_slice(),
    ) {
        return if run_case(&bin, *n, flavor, warmup, seconds) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            println!("poll bench: cannot find this executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for &n in &devices {
        for flavor in &flavors {
            let status = Command::new(&exe)
                .env("BENCH_POLL_CHILD", "1")
                .env("BENCH_DEVICES", n.to_string())
                .env("BENCH_RUNTIME", flavor)
                .env("BENCH_SECONDS", seconds.as_secs().to_string())
                .env("BENCH_WARMUP", warmup.as_secs().to_string())
                .env("PLANTWATCH_BIN", &bin)
                .status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    println!("poll bench: case {n} devices / {flavor} failed: {s}");
                    ok = false;
                }
                Err(e) => {
                    println!("poll bench: cannot run case {n} devices / {flavor}: {e}");
                    ok = false;
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
