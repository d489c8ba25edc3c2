//! The real binary: `check`, `read`, `simulate` and `demo` as a plant engineer runs them.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::Simulator;
use plantwatch::sim::{Bind, Fault};

use crate::harness::{bin, eventually_blocking, exited_within, plan, repo};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run plantwatch");
    crate::harness::finished(&out)
}

#[test]
fn check_prints_points_and_the_read_plan_of_a_valid_config() {
    let demo = repo().join("configs/demo.toml");
    let (code, out, err) = run(&["check", "--config", demo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("main-meter"), "{out}");
    assert!(out.contains("read plan: "), "{out}");
    assert!(
        out.contains("fc03 0x2000"),
        "DTSU666 read starts at 0x2000: {out}"
    );
}

#[test]
fn check_reports_every_error_with_its_key_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"10.0.0.1\"\n\
         [[devices]]\nname = \"m\"\nlink = \"nope\"\nprofile = \"chint-dtsu666\"\n\
         [devices.points.ua]\nadress = 1\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()]);
    // EX_CONFIG, as `run` exits on the same file: the unit's RestartPreventExitStatus=78.
    assert_eq!(code, 78);
    assert!(err.contains("devices[0].link"), "{err}");
    assert!(err.contains("devices[0].points.ua.adress"), "{err}");
    assert!(err.contains("bad.toml"), "names the file: {err}");
}

#[tokio::test]
async fn read_polls_one_device_and_prints_json_matching_the_simulator() {
    let p = plan(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"pump\"\nlink = \"l\"\nprofile = \"generic-plc\"\n",
    );
    let sim = Simulator::start(&p, Bind::LOOPBACK).await.unwrap();
    sim.device("pump").unwrap().inject(Fault::Stuck);
    let port = sim.endpoints[0].1.rsplit_once(':').unwrap().1.to_owned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plant.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             [[devices]]\nname = \"pump\"\nlink = \"l\"\nprofile = \"generic-plc\"\n"
        ),
    )
    .unwrap();
    let path_s = path.to_str().unwrap().to_owned();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run(&["read", "-c", &path_s, "pump", "--json"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(json["answered"], true);
    let temp = json["points"]["motor_temp"]["v"].as_f64().unwrap();
    let expected = sim.device("pump").unwrap().value("motor_temp").unwrap();
    assert!(
        (temp - expected).abs() < 0.051,
        "motor_temp {temp} vs simulator {expected}"
    );
    assert_eq!(json["points"]["run_state"]["q"], "good");

    let path_s = path.to_str().unwrap().to_owned();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run(&["read", "pump", "--probe", "8", "-c", &path_s]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ABCD") && out.contains("f32"), "{out}");
    let current = sim.device("pump").unwrap().value("motor_current").unwrap();
    let f32_row = out.lines().find(|l| l.starts_with("f32")).unwrap();
    let abcd: f64 = f32_row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (abcd - current).abs() < 1e-3 * current.abs().max(1.0),
        "probe f32/ABCD {abcd} vs {current}"
    );

    let path_s = path.to_str().unwrap().to_owned();
    let (code, _, err) =
        tokio::task::spawn_blocking(move || run(&["read", "--config", &path_s, "nosuch"]))
            .await
            .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("no device `nosuch`") && err.contains("pump"),
        "{err}"
    );
    sim.shutdown().await;
}

#[test]
fn simulate_writes_a_config_that_read_can_poll() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sim.toml");
    let mut child = Command::new(bin())
        .args([
            "simulate",
            "--profile",
            "chint-dtsu666",
            "--count",
            "2",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--write-config")
        .arg(&cfg)
        .args(["--duration", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Generous: on a loaded 2-core CI machine the child may take seconds to start.
    eventually_blocking(
        Duration::from_secs(30),
        "simulator wrote its config",
        || std::fs::read_to_string(&cfg).is_ok_and(|t| t.contains("chint-dtsu666-2")),
    );
    let (code, out, err) = run(&[
        "read",
        "-c",
        cfg.to_str().unwrap(),
        "chint-dtsu666-2",
        "--json",
    ]);
    // The simulator may already have exited on its --duration; either way it is gone.
    child.kill().ok();
    child.wait().ok();
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ua = json["points"]["ua"]["v"].as_f64().unwrap();
    assert!((220.0..240.0).contains(&ua), "ua = {ua}");
}

#[cfg(feature = "demo")]
#[test]
fn demo_shows_live_values_within_seconds() {
    let (code, out, err) = run(&["demo", "--duration", "3", "--no-faults"]);
    assert_eq!(code, 0, "{err}");
    for device in ["main-meter", "line1-meter", "compressor-meter", "pump-1"] {
        assert!(
            out.lines()
                .any(|l| l.contains(device) && l.contains("good") && l.contains('=')),
            "{device} polled: {out}"
        );
    }
}

/// Starts `plantwatch demo`, waits (bounded) for its first telemetry line, sends `signal`,
/// and returns the exit code (None: still running after 15 s, then killed) and the output.
#[cfg(feature = "demo")]
fn demo_stopped_by(signal: &str) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(bin())
        .args(["demo", "--no-faults"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start plantwatch demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    // Bounded: the demo prints a telemetry line per device per second.
    for line in lines.by_ref().take(200) {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
        if line.contains("telemetry/") {
            break;
        }
    }
    let sent = out.contains("telemetry/")
        && Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success();
    let exited = sent && exited_within(&mut child, Duration::from_secs(15)).is_some();
    if !exited {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    assert!(
        sent,
        "no telemetry before the signal, or kill failed:\n{out}"
    );
    let code = exited.then(|| status.code().unwrap_or(-1));
    for line in lines.map_while(Result::ok) {
        out.push_str(&line);
        out.push('\n');
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, format!("{out}\nstderr:\n{err}"))
}

#[cfg(feature = "demo")]
#[test]
fn demo_exits_on_sigterm() {
    let (code, out) = demo_stopped_by("TERM");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Stopped cleanly"), "{out}");
}

#[cfg(feature = "demo")]
#[test]
fn demo_exits_on_one_sigint_without_calling_it_a_second_signal() {
    let (code, out) = demo_stopped_by("INT");
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("Second signal"), "{out}");
}

#[cfg(not(feature = "demo"))]
#[test]
fn demo_without_the_demo_feature_says_the_build_left_it_out() {
    let (code, out, err) = run(&["demo", "--duration", "3", "--no-faults"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("built without the `demo` feature") && err.contains("cargo build"),
        "{err}"
    );
    let (code, out, _) = run(&["demo", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("built without the `demo` feature"), "{out}");
}

#[test]
fn check_warns_about_a_plain_http_webhook_to_a_public_host_and_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plant.toml");
    std::fs::write(
        &path,
        "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"m\"\nlink = \"l\"\nprofile = \"generic-plc\"\n\
         [[webhooks]]\nname = \"chat\"\nformat = \"generic\"\nurl = \"http://alarms.example.com/hook\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--quiet", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: webhooks[0].url: webhook `chat` posts alarms to a public host"),
        "{err}"
    );
}

#[test]
fn help_teaches_the_first_commands() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("plantwatch demo") && out.contains("--probe"),
        "{out}"
    );
}

/// A config that `run` can start on with nothing answering: one PLC on a closed port, no
/// broker, the state file in `dir`.
fn idle_plant(dir: &std::path::Path) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n[store]\npath = \"{}\"\n\
         [[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {closed}\n\
         [[devices]]\nname = \"pump\"\nlink = \"l\"\nprofile = \"generic-plc\"\n",
        dir.join("state.db").display()
    )
}

/// Waits (bounded) until the daemon's log says it is running.
fn wait_running(daemon: &crate::harness::daemon::Daemon) {
    eventually_blocking(Duration::from_secs(20), "the daemon running", || {
        let log = daemon.log();
        if log.contains("plantwatch running") {
            Ok(())
        } else {
            Err(format!("the log:\n{log}"))
        }
    });
}

/// Runs the binary and gives its exit code and stderr, or kills it after `limit` (None).
fn run_bounded(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    use std::io::Read as _;
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plantwatch");
    let code = exited_within(&mut child, limit).map(|s| s.code().unwrap_or(-1));
    if code.is_none() {
        child.kill().ok();
    }
    child.wait().ok();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    (code, err)
}

/// Issue 18: a second daemon on the same state file took the same client id and numbered
/// different readings with the same seqs. It is refused, naming the first one's PID, and
/// the read-only commands still work beside the first.
#[test]
fn issue_18_a_second_daemon_on_one_state_file_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = crate::harness::daemon::Daemon::spawn(dir.path(), &idle_plant(dir.path()));
    wait_running(&first);
    let config = first.config.to_str().unwrap().to_owned();
    let (code, err) = run_bounded(
        &["run", "--config", &config, "--no-metrics"],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "refused at once: {err}\n{}", first.log());
    assert!(
        err.contains("in use") && err.contains(&format!("PID {}", first.pid())),
        "names the holder: {err}"
    );
    let (code, out, err) = run(&["alarms", "--config", &config, "list"]);
    assert_eq!(code, 0, "alarms list beside the daemon: {out}{err}");
    let (code, _, err) = run(&["export", "--config", &config, "--month", "2026-10"]);
    assert_eq!(code, 0, "export beside the daemon: {err}");
}

/// 2026-10-05 00:00 +08:00.
const OCT5: i64 = 1_791_129_600_000;

/// A config with one metered meter uploaded to the energy platform, its state file in `dir`,
/// and the state file holding a day of its quarter-hours; the store stays open (returned),
/// so the intervals are still in the WAL. Returns the config's path and the store.
async fn metered_state(
    dir: &std::path::Path,
) -> (std::path::PathBuf, plantwatch::store::StoreHandle) {
    use plantwatch::process::counter::{Flags, IntervalQuality};
    use plantwatch::process::ledger::LedgerInterval;
    let state = dir.join("state.db");
    let store =
        plantwatch::store::Store::open(&state, plantwatch::store::OutboxLimits::default()).unwrap();
    let day = (0..96)
        .map(|q| LedgerInterval {
            meter: "incomer".into(),
            kind: "electricity".into(),
            unit: "kWh".into(),
            start_ms: OCT5 + q * 900_000,
            end_ms: OCT5 + (q + 1) * 900_000,
            delta: 2.5 + f64::from(u8::try_from(q).unwrap()) / 8.0,
            quality: IntervalQuality::Good,
            flags: Flags::EMPTY,
            tou: [0.0, 0.0, 2.5, 0.0],
            kgce: None,
        })
        .collect();
    store.save_intervals(day).await.unwrap();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\ntimezone = \"Asia/Shanghai\"\n\
             [[links]]\nname = \"bus\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[devices]]\nname = \"meter-1\"\nlink = \"bus\"\nprofile = \"chint-dtsu666\"\n\
             [[meters]]\nname = \"incomer\"\ndevice = \"meter-1\"\npoint = \"ep_import\"\nkind = \"electricity\"\n\
             [energy_platform]\nenterprise_code = \"123456789012345678\"\nscope = \"1\"\ninput_type = \"1\"\n\
             [[energy_platform.items]]\nmeter = \"incomer\"\ndata_code = \"E001-0101-00\"\n\
             [store]\npath = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    (config, store)
}

/// Runs the binary off the runtime.
async fn run_async(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    })
    .await
    .unwrap()
}

fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_gives_a_file_that_export_reads_equal_to_the_source() {
    use plantwatch::store::{DEFAULT_QUEUE, OutboxMessage};
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = metered_state(dir.path()).await;
    let config = config.to_str().unwrap().to_owned();
    let state = dir.path().join("state.db");
    // Load: the outbox takes messages as fast as the store commits them, during the backup.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && seq < 1_000_000 {
                let msg = OutboxMessage {
                    queue: DEFAULT_QUEUE,
                    stream: "telemetry/m".into(),
                    key: "m".into(),
                    seq,
                    created_ms: OCT5,
                    payload: vec![7; 200],
                };
                store.enqueue(vec![msg]).await.unwrap();
                seq += 1;
            }
            seq
        })
    };
    let dest = dir.path().join("backup.db");
    let (code, out, err) = run_async(s(&[
        "backup",
        state.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]))
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(written > 0, "the store was written during the backup");
    let range = ["--from", "2026-10-05", "--to", "2026-10-05"];
    let export_of = |file: &std::path::Path| {
        let mut args = s(&[
            "export",
            "--config",
            &config,
            "--state",
            file.to_str().unwrap(),
        ]);
        args.extend(s(&range));
        run_async(args)
    };
    let (code, source, err) = export_of(&state).await;
    assert_eq!(code, 0, "{err}");
    assert!(source.contains("meter,incomer,"), "{source}");
    let (code, copy, err) = export_of(&dest).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(copy, source, "the backup holds the same ledger");
    assert!(!err.contains("-wal"), "a backup needs no WAL: {err}");
    drop(store);
}

/// Issue 18: `cp state.db x.db` while the data is in the WAL. A copy of a running file is
/// called what it is, and one whose schema is only in the WAL is not "an older plantwatch".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_a_copy_without_its_wal_is_diagnosed_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = metered_state(dir.path()).await;
    let config = config.to_str().unwrap().to_owned();
    let copy = dir.path().join("copy.db");
    std::fs::copy(dir.path().join("state.db"), &copy).unwrap();
    let (_, _, err) = run_async(s(&[
        "export",
        "--config",
        &config,
        "--state",
        copy.to_str().unwrap(),
        "--month",
        "2026-10",
    ]))
    .await;
    assert!(
        err.contains("without its -wal") && err.contains("plantwatch backup"),
        "{err}"
    );
    drop(store);

    // A file whose schema has not reached the main file yet: the copy's main file is empty.
    let fresh = dir.path().join("fresh.db");
    let conn = rusqlite::Connection::open(&fresh).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t (x); PRAGMA user_version=9;")
        .unwrap();
    let copy = dir.path().join("copy-of-fresh.db");
    std::fs::copy(&fresh, &copy).unwrap();
    let (code, _, err) = run_async(s(&[
        "export",
        "--config",
        &config,
        "--state",
        copy.to_str().unwrap(),
        "--month",
        "2026-10",
    ]))
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("-wal") && !err.contains("older plantwatch"),
        "{err}"
    );
    drop(conn);
}

/// After a clean stop everything is in the main file: a plain copy is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_a_plain_copy_of_the_state_file_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = metered_state(dir.path()).await;
    let closed = store.closed();
    drop(store);
    crate::harness::within(Duration::from_secs(10), "store closes", closed).await;
    let copy = dir.path().join("copy.db");
    std::fs::copy(dir.path().join("state.db"), &copy).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let export_of = |file: &std::path::Path| {
        run_async(s(&[
            "export",
            "--config",
            &config,
            "--state",
            file.to_str().unwrap(),
            "--month",
            "2026-10",
        ]))
    };
    let (code, source, err) = export_of(&dir.path().join("state.db")).await;
    assert_eq!(code, 0, "{err}");
    let (code, copied, err) = export_of(&copy).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(copied, source);
    assert!(!err.contains("-wal"), "{err}");
}

/// Issue 18: a state file the user may not read was reported as missing. Root reads every
/// file, so as root (CI) the binary runs as `nobody` through setpriv(1).
#[test]
fn issue_18_an_unreadable_state_file_is_a_permission_problem_not_a_missing_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::copy(repo().join("configs/demo.toml"), &config).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("state.db"), b"").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = locked.join("state.db");
    let args = [
        "export",
        "--config",
        config.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--month",
        "2026-10",
    ];
    let as_root = std::fs::metadata("/root").is_ok_and(|_| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    });
    let out = if as_root {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux) runs the binary as nobody")
    } else {
        Command::new(bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("permission denied") && !err.contains("no state file"),
        "{err}"
    );
}

/// Issue 18: the config was positional for some commands and `--config` for others.
#[test]
fn issue_18_the_config_is_one_flag_anywhere_on_the_line_and_the_positional_form_warns() {
    let demo = repo().join("configs/demo.toml");
    let demo = demo.to_str().unwrap();
    for args in [
        &["check", "--quiet", "--config", demo][..],
        &["check", "-c", demo, "--quiet"],
        &["--config", demo, "check", "--quiet"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!err.contains("deprecated"), "{args:?}: {err}");
    }
    let out = Command::new(bin())
        .args(["check", "--quiet"])
        .env("PLANTWATCH_CONFIG", demo)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = run(&["check", "--quiet", demo]);
    assert_eq!(code, 0, "the positional form still works: {err}");
    assert!(
        err.contains("deprecated") && err.contains(&format!("--config {demo}")),
        "{err}"
    );
    let (code, _, err) = run(&["check", "--config", demo, demo]);
    assert_eq!(code, 2, "given twice: {err}");
}

/// Issue 18: `alarms list --config X` failed; only `alarms --config X list` worked.
#[test]
fn issue_18_subcommand_flags_come_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let store =
        plantwatch::store::Store::open(&state, plantwatch::store::OutboxLimits::default()).unwrap();
    drop(store);
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[devices]]\nname = \"m\"\nlink = \"l\"\nprofile = \"generic-plc\"\n[store]\npath = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let state_s = state.to_str().unwrap();
    for args in [
        &["alarms", "list", "--config", config][..],
        &["alarms", "--config", config, "list", "--json"],
        &["-c", config, "alarms", "list"],
        &["alarms", "list", "--json", "-c", config],
        // --state after the action, as the examples in `audit --help` and `config --help` write it.
        &["alarms", "list", "--state", state_s, "-c", config],
        &["alarms", "--state", state_s, "list", "-c", config],
        &["audit", "verify", "--state", state_s, "-c", config],
        &["config", "history", "--state", state_s, "-c", config],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
}

#[test]
fn exit_status_2_for_usage_errors_found_by_clap_and_after_it() {
    let demo = repo().join("configs/demo.toml");
    let (code, _, err) = run(&["check", "--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["export", "-c", demo.to_str().unwrap()]);
    assert_eq!(code, 2, "no period: {err}");
    assert!(err.contains("--month"), "{err}");
}

#[test]
fn exit_status_65_for_bad_data_74_for_io_and_help_lists_them_all() {
    let demo = repo().join("configs/demo.toml");
    let demo = demo.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "not a database, whatever its name says\n".repeat(40)).unwrap();
    let (code, _, err) = run(&[
        "export",
        "-c",
        demo,
        "--month",
        "2026-10",
        "--state",
        text.to_str().unwrap(),
    ]);
    assert_eq!(code, 65, "{err}");
    // Every reader of the state file gives the same diagnosis of one that is not a database.
    for args in [
        &["config", "history"][..],
        &["alarms", "list"],
        &["audit", "verify"],
    ] {
        let mut args = args.to_vec();
        args.extend(["-c", demo, "--state", text.to_str().unwrap()]);
        let (code, _, err) = run(&args);
        assert_eq!(code, 65, "{args:?}: {err}");
        assert!(err.contains("notes.db"), "{args:?} names the file: {err}");
    }
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "1790784000,main-meter,ua,230\nyesterday,main-meter,ua,231\n",
    )
    .unwrap();
    let (code, _, err) = run(&["replay", "-c", demo, csv.to_str().unwrap()]);
    assert_eq!(code, 65, "a malformed row: {err}");

    let state = dir.path().join("state.db");
    drop(
        plantwatch::store::Store::open(&state, plantwatch::store::OutboxLimits::default()).unwrap(),
    );
    let (code, _, err) = run(&[
        "export",
        "-c",
        demo,
        "--month",
        "2026-10",
        "--state",
        state.to_str().unwrap(),
        "--output",
        dir.path().join("no/such/dir/report.csv").to_str().unwrap(),
    ]);
    assert_eq!(code, 74, "{err}");
    let (code, _, err) = run(&[
        "export",
        "-c",
        demo,
        "--month",
        "2026-10",
        "--state",
        dir.path().join("missing.db").to_str().unwrap(),
    ]);
    assert_eq!(code, 74, "{err}");

    let (_, help, _) = run(&["--help"]);
    for line in ["0 ", "1 ", "2 ", "65 ", "69 ", "74 ", "78 "] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(line)),
            "--help documents exit status {line}: {help}"
        );
    }
}

/// Issue 18: `read` exited 0 when every point was `bad:exception:02`, and 1 on a timeout.
#[tokio::test]
async fn issue_18_read_exits_69_when_the_device_gives_no_good_point() {
    let p = plan(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"pump\"\nlink = \"l\"\nprofile = \"generic-plc\"\n",
    );
    let sim = Simulator::start(&p, Bind::LOOPBACK).await.unwrap();
    sim.device("pump")
        .unwrap()
        .inject(Fault::parse("exception:2").unwrap());
    let port = sim.endpoints[0].1.rsplit_once(':').unwrap().1.to_owned();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plant.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n\
             [[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             [[links]]\nname = \"gone\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {closed}\n\
             [[devices]]\nname = \"pump\"\nlink = \"l\"\nprofile = \"generic-plc\"\n\
             [[devices]]\nname = \"dead\"\nlink = \"gone\"\nprofile = \"generic-plc\"\ntimeout_ms = 300\n"
        ),
    )
    .unwrap();
    let config = path.to_str().unwrap().to_owned();
    for device in ["pump", "dead"] {
        let (code, out, err) = run_async(s(&["read", "-c", &config, device])).await;
        assert_eq!(code, 69, "{device}: {out}{err}");
        let (code, out, err) = run_async(s(&["read", "-c", &config, device, "--json"])).await;
        assert_eq!(code, 69, "{device} --json: {out}{err}");
    }
    sim.device("pump").unwrap().clear_faults();
    let (code, out, err) = run_async(s(&["read", "-c", &config, "pump"])).await;
    assert_eq!(code, 0, "{out}{err}");
    sim.shutdown().await;
}

/// Spawns the binary with stdout a pipe whose reader is already closed (`| head` that has
/// read its line), and gives its exit code (None: still running after 30 s) and stderr.
fn into_a_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    use std::io::Read as _;
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let code = exited_within(&mut child, Duration::from_secs(30)).map(|s| s.code().unwrap_or(-1));
    if code.is_none() {
        child.kill().ok();
    }
    child.wait().ok();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    (code, err)
}

/// Issue 18: `upload --dry-run | head -1` aborted with "failed printing to stdout".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_a_closed_pipe_ends_upload_dry_run_and_export_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = metered_state(dir.path()).await;
    let config = config.to_str().unwrap().to_owned();
    let (code, err) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            into_a_closed_pipe(&[
                "upload",
                "--config",
                &config,
                "--from",
                "2026-10-05",
                "--to",
                "2026-10-05",
                "--dry-run",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    let (code, err) = tokio::task::spawn_blocking(move || {
        into_a_closed_pipe(&["export", "--config", &config, "--month", "2026-10"])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    drop(store);
}

/// `replay … | head`: the scored rows stop quietly when the reader has had enough.
#[test]
fn a_closed_pipe_ends_replay_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    let rows: String = (0..5000)
        .map(|k| format!("{},main-meter,ua,{}\n", 1_790_784_000 + k, 230 + k % 3))
        .collect();
    std::fs::write(&csv, rows).unwrap();
    let demo = repo().join("configs/demo.toml");
    let (code, err) = into_a_closed_pipe(&[
        "replay",
        "-c",
        demo.to_str().unwrap(),
        csv.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}

/// Starts `plantwatch simulate` with a stdin that stays open and silent (a terminal nobody
/// types in), waits for its ready line, sends `signal`, and gives the exit code (None: still
/// running 10 s later, then killed) and the output.
fn simulate_stopped_by(signal: &str) -> (Option<i32>, String) {
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new(bin())
        .args([
            "simulate",
            "--profile",
            "generic-plc",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(50)
    {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
        if line.contains("ready") {
            break;
        }
    }
    assert!(out.contains("ready"), "{out}");
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(sent);
    let code = exited_within(&mut child, Duration::from_secs(10)).map(|s| s.code().unwrap_or(-1));
    if code.is_none() {
        child.kill().ok();
    }
    child.wait().ok();
    drop(stdin);
    (code, out)
}

/// Issue 18: `simulate` waited for Enter on its stdin after Ctrl-C or SIGTERM.
#[test]
fn issue_18_simulate_stops_on_the_first_sigint() {
    let (code, out) = simulate_stopped_by("INT");
    assert_eq!(code, Some(0), "{out}");
}

/// Issue 18: as above, for SIGTERM (systemd, `kill`).
#[test]
fn issue_18_simulate_stops_on_sigterm() {
    let (code, out) = simulate_stopped_by("TERM");
    assert_eq!(code, Some(0), "{out}");
}
