//! `plantwatch replay` through the real binary: its interface is what scripts rely on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::daemon::Daemon;
use crate::harness::{bin, eventually};

const CONFIG: &str = r#"
[gateway]
site = "plant1"
id = "gw1"
timezone = "Asia/Shanghai"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "motor-1"
link = "bus"
profile = "generic-plc"

[[devices]]
name = "motor-2"
link = "bus"
unit_id = 2
profile = "generic-plc"

[[rules]]
name = "hot"
kind = "high"
point = "bearing_temp"
limit = 90
deadband = 2

[[rules]]
name = "odd"
kind = "anomaly"
point = "vibration"
warmup_samples = 10
"#;

fn replay(dir: &Path, csv: &str, args: &[&str]) -> (bool, String, String) {
    replay_on(dir, CONFIG, csv, args)
}

fn replay_on(dir: &Path, config: &str, csv: &str, args: &[&str]) -> (bool, String, String) {
    std::fs::write(dir.join("c.toml"), config).unwrap();
    std::fs::write(dir.join("in.csv"), csv).unwrap();
    let out = Command::new(bin())
        .arg("replay")
        .arg("--config")
        .arg(dir.join("c.toml"))
        .arg(dir.join("in.csv"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_two_column_series_is_scored_row_by_row_with_its_events() {
    let dir = tempfile::tempdir().unwrap();
    // Local time (no offset): Asia/Shanghai. 88, 91 (raise), 89 (held by the deadband), 87.
    let csv = "timestamp,value\n2026-10-01 08:00:00,88\n2026-10-01 08:00:01,91\n\
               2026-10-01 08:00:02,89\n2026-10-01T08:00:03+08:00,87\n";
    let events = dir.path().join("events.jsonl");
    let (ok, out, err) = replay(
        dir.path(),
        csv,
        &[
            "--point",
            "motor-1/bearing_temp",
            "--events",
            events.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "timestamp,device,point,value,score,alarms\n\
         2026-10-01 08:00:00,motor-1,bearing_temp,88,,\n\
         2026-10-01 08:00:01,motor-1,bearing_temp,91,,hot\n\
         2026-10-01 08:00:02,motor-1,bearing_temp,89,,hot\n\
         2026-10-01T08:00:03+08:00,motor-1,bearing_temp,87,,\n"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    // 2026-10-01 08:00:01 +08:00 = 1790812801000 ms.
    assert_eq!(lines[0]["id"], "motor-1/hot/1790812801000");
    assert_eq!(lines[0]["state"], "active");
    assert_eq!(lines[0]["value"], 91.0);
    assert_eq!(lines[1]["state"], "cleared");
    assert_eq!(lines[1]["ts"], 1_790_812_803_000_i64);
    assert!(err.contains("4 rows"), "{err}");
}

#[test]
fn many_points_are_read_from_four_columns_and_scores_fill_the_score_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("timestamp,device,point,value\n");
    for t in 0..40 {
        let v = 2.0 + 0.01 * f64::from(t % 3);
        csv.push_str(&format!("{},motor-2,vibration,{v}\n", 1_760_000_000 + t));
        csv.push_str(&format!("{},motor-2,bearing_temp,60\n", 1_760_000_000 + t));
    }
    csv.push_str("1760000040,motor-2,vibration,9\n");
    csv.push_str("1760000040,motor-9,vibration,1\n");
    let (ok, out, err) = replay(dir.path(), &csv, &[]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 1 + 82);
    let spike: Vec<&str> = rows[81].split(',').collect();
    assert_eq!(spike[..4], ["1760000040", "motor-2", "vibration", "9"]);
    let score: f64 = spike[4].parse().unwrap();
    assert!(score >= 0.9, "{}", rows[81]);
    assert_eq!(spike[5], "odd");
    // bearing_temp has no anomaly rule: empty score.
    assert!(rows[2].ends_with(",60,,"), "{}", rows[2]);
    assert!(
        err.contains("motor-9/vibration"),
        "unknown points are reported: {err}"
    );
    assert!(
        rows[82].starts_with("1760000040,motor-9,vibration,1,,"),
        "{}",
        rows[82]
    );
}

#[test]
fn a_malformed_row_stops_the_replay_naming_its_line_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "timestamp,value\n1760000000,1\nyesterday,2\n1760000002,x\n1760000003,4\n";
    let (ok, _, err) = replay(dir.path(), csv, &["--point", "motor-1/bearing_temp"]);
    assert!(!ok);
    assert!(
        err.contains("line 3") && err.contains("`yesterday`"),
        "{err}"
    );
    let (ok, out, err) = replay(
        dir.path(),
        csv,
        &["--point", "motor-1/bearing_temp", "--skip-bad-rows"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3);
    assert!(err.contains("skipped 2 malformed rows"), "{err}");
    let (ok, _, err) = replay(dir.path(), csv, &["--point", "motor-1/nope"]);
    assert!(!ok && err.contains("no point `nope`"), "{err}");
    let (ok, _, err) = replay(dir.path(), "1760000000,1\n", &[]);
    assert!(!ok && err.contains("--point"), "{err}");
}

#[test]
fn non_finite_values_and_absurd_timestamps_are_bad_rows_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "timestamp,value\n1760000000,1\n1760000001,NaN\n1760000002,inf\n1760000003,-inf\n\
               0,5\n-1760000000,5\n-9223372036854775808,5\n1e20,5\n1760000009,4\n";
    let point = ["--point", "motor-1/bearing_temp"];
    let (ok, _, err) = replay(dir.path(), csv, &point);
    assert!(!ok, "a NaN stops the replay without --skip-bad-rows");
    assert!(err.contains("line 3") && err.contains("`NaN`"), "{err}");
    let (ok, out, err) = replay(
        dir.path(),
        csv,
        &["--point", "motor-1/bearing_temp", "--skip-bad-rows"],
    );
    assert!(ok, "{err}");
    // The header and the two good rows.
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(err.contains("skipped 7 malformed rows"), "{err}");
    for (line, what) in [
        (3, "`NaN` is not a finite number"),
        (4, "`inf` is not a finite number"),
        (5, "`-inf` is not a finite number"),
        (6, "`0` is outside 1990-2100"),
        (7, "`-1760000000` is outside"),
        (8, "`-9223372036854775808` is"),
        (9, "`1e20` is outside"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("line {line}: ")) && l.contains(what)),
            "line {line} ({what}) not reported:\n{err}"
        );
    }
}

const METER_CONFIG: &str = r#"
[gateway]
site = "plant1"
id = "gw1"
timezone = "Asia/Shanghai"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "meter-1"
link = "bus"
profile = "chint-dtsu666"

[[meters]]
name = "incomer"
device = "meter-1"
point = "ep_import"
kind = "electricity"
groups = ["site"]
"#;

/// Replays `csv` into a fresh state file, then exports 2026-10-01 from it as CSV.
fn import_and_export(dir: &Path, csv: &str, extra: &[&str]) -> String {
    std::fs::write(dir.join("m.toml"), METER_CONFIG).unwrap();
    std::fs::write(dir.join("history.csv"), csv).unwrap();
    let state = dir.join("history.db");
    let out = Command::new(bin())
        .arg("replay")
        .arg("--config")
        .arg(dir.join("m.toml"))
        .arg(dir.join("history.csv"))
        .args([
            "--point",
            "meter-1/ep_import",
            "--output",
            "/dev/null",
            "--state",
        ])
        .arg(&state)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ledger intervals written"));
    let out = Command::new(bin())
        .args([
            "export",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-01",
            "--config",
        ])
        .arg(dir.join("m.toml"))
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn history_imports_into_a_state_file_from_counter_readings_or_interval_consumption() {
    // 30 kWh per hour from 08:00 to 10:00 local: 30 kWh flat (08-09) and 30 kWh peak (09-10)
    // in the Hubei calendar, 60 kWh × 0.1229 = 7.374 kgce, and 7.5 kWh per quarter hour is a
    // demand of 30 kW.
    let expected =
        "meter,incomer,electricity,kWh,60.000,0.000,30.000,30.000,0.000,7.374,0.1229,30.000,";
    let dir = tempfile::tempdir().unwrap();
    let mut readings = String::from("timestamp,value\n");
    for m in (0..=120).step_by(5) {
        readings.push_str(&format!(
            "2026-10-01 {:02}:{:02}:00,{}\n",
            8 + m / 60,
            m % 60,
            1000.0 + 0.5 * f64::from(m)
        ));
    }
    let csv = import_and_export(dir.path(), &readings, &[]);
    let row = csv
        .lines()
        .find(|l| l.starts_with("meter,incomer,"))
        .unwrap();
    assert!(row.starts_with(expected), "{row}");

    let dir = tempfile::tempdir().unwrap();
    let mut consumption = String::from("timestamp,value\n");
    for q in 1..=8 {
        let end = 8 * 60 + q * 15;
        consumption.push_str(&format!(
            "2026-10-01T{:02}:{:02}:00+08:00,7.5\n",
            end / 60,
            end % 60
        ));
    }
    let csv = import_and_export(dir.path(), &consumption, &["--consumption"]);
    let row = csv
        .lines()
        .find(|l| l.starts_with("meter,incomer,"))
        .unwrap();
    assert!(row.starts_with(expected), "{row}");
}

/// Issue 19: a recorded value is written with the digits its register carries, like every
/// payload: a u16 × 0.1 temperature with one decimal, a u16 × 0.01 vibration with two.
#[test]
fn recorded_values_are_written_with_the_digits_of_their_register() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "timestamp,device,point,value\n\
               1760000000,motor-1,bearing_temp,61.30000000000001\n\
               1760000000,motor-1,vibration,2.0100000000000002\n\
               1760000001,motor-1,bearing_temp,61.4\n";
    let (ok, out, err) = replay(dir.path(), csv, &[]);
    assert!(ok, "{err}");
    let values: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap())
        .collect();
    assert_eq!(values, ["61.3", "2.01", "61.4"], "{out}");
}

/// Issue 16: a wide historian export (`;`, decimal commas, a label column) is replayed as
/// the device's polls, and each anomaly episode is listed with its kind, score and points.
#[test]
fn a_wide_export_is_replayed_per_device_and_its_episodes_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("Time;Vibration;Bearing Temp;label\n");
    for t in 0..40 {
        let v = format!("2,0{}", t % 3);
        csv.push_str(&format!("{};{v};60;0\n", 1_760_000_000 + t));
    }
    csv.push_str("1760000040;9;91;1\n");
    let episodes = dir.path().join("episodes.csv");
    let (ok, out, err) = replay(
        dir.path(),
        &csv,
        &[
            "--device",
            "motor-1",
            "--episodes",
            episodes.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 1 + 41 * 2, "{out}");
    assert_eq!(rows[1], "1760000000,motor-1,vibration,2.0,,");
    // A decimal comma is written as a decimal point.
    assert_eq!(rows[3], "1760000001,motor-1,vibration,2.01,,");
    assert_eq!(rows[2], "1760000000,motor-1,bearing_temp,60,,");
    let spike: Vec<&str> = rows[81].split(',').collect();
    assert_eq!(spike[..4], ["1760000040", "motor-1", "vibration", "9"]);
    assert!(spike[4].parse::<f64>().unwrap() >= 0.9, "{}", rows[81]);
    assert_eq!(spike[5], "odd");
    assert!(rows[82].ends_with(",91,,hot"), "{}", rows[82]);
    assert!(
        err.contains("1 columns name no point of device `motor-1` and were ignored: label"),
        "{err}"
    );
    let listed = std::fs::read_to_string(&episodes).unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines[0],
        "device,alarm,point,kind,start,end,start_ms,end_ms,peak_score,points"
    );
    assert_eq!(lines.len(), 2, "{listed}");
    let f: Vec<&str> = lines[1].split(',').collect();
    // Still open when the input ended: no end.
    assert_eq!(f[..4], ["motor-1", "odd", "vibration", "spike"]);
    assert_eq!(f[4], "2025-10-09T16:54:00+08:00");
    assert_eq!((f[5], f[6], f[7]), ("", "1760000040000", ""));
    assert!(f[8].parse::<f64>().unwrap() >= 0.9, "{}", lines[1]);
    assert_eq!(f[9], "vibration:1");
    assert!(err.contains("1 anomaly episodes written"), "{err}");

    // JSON lines, by the file's name.
    let jsonl = dir.path().join("episodes.jsonl");
    let (ok, _, err) = replay(
        dir.path(),
        &csv,
        &["--device", "motor-1", "--episodes", jsonl.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&jsonl).unwrap().trim()).unwrap();
    assert_eq!(line["kind"], "spike");
    assert_eq!(line["point"], "vibration");
    assert_eq!(line["end"], serde_json::Value::Null);
    assert_eq!(line["points"][0]["share"], 1.0);
}

#[test]
fn a_wide_export_with_bad_rows_or_no_header_is_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "ts,vibration,bearing_temp\n1760000000,2,60\n1760000001,2\n\
               1760000002,x,60\n1760000003,2,60\n";
    let device = ["--device", "motor-1"];
    let (ok, _, err) = replay(dir.path(), csv, &device);
    assert!(!ok);
    assert!(
        err.contains("line 3") && err.contains("2 columns; the header has 3"),
        "{err}"
    );
    let (ok, out, err) = replay(dir.path(), csv, &["--device", "motor-1", "--skip-bad-rows"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1 + 2 * 2, "{out}");
    assert!(err.contains("skipped 2 malformed rows"), "{err}");
    assert!(
        err.contains("line 4: column `vibration`: value `x` is not a number"),
        "{err}"
    );
    let (ok, _, err) = replay(dir.path(), "1760000000,2,60\n", &device);
    assert!(
        !ok && err.contains("line 1") && err.contains("header row"),
        "{err}"
    );
    let (ok, _, err) = replay(dir.path(), "ts,a,b\n1760000000,2,60\n", &device);
    assert!(
        !ok && err.contains("no column of the header names a point of device `motor-1`"),
        "{err}"
    );
    let (ok, _, err) = replay(dir.path(), csv, &["--device", "motor-9"]);
    assert!(!ok && err.contains("no device `motor-9`"), "{err}");
}

/// The model snapshots of a state file: (device, alarm, saved_ms), by device.
fn snapshots(state: &Path) -> Vec<(String, String, i64)> {
    let conn = rusqlite::Connection::open(state).unwrap();
    let mut stmt = conn
        .prepare("SELECT device, alarm, saved_ms FROM model_snapshots ORDER BY device, alarm")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Issue 16, item 5: `replay --state` leaves trained models that `run` resumes, saves again
/// at a clean stop, and drops (saying so) when the rule was edited or the snapshot damaged.
#[tokio::test]
async fn a_replay_leaves_trained_models_that_the_daemon_resumes_unless_edited_or_damaged() {
    let limit = Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let mut csv = String::from("timestamp,value\n");
    for t in 0..100 {
        let v = 2.0 + 0.01 * f64::from(t % 3);
        csv.push_str(&format!("{},{v}\n", 1_760_000_000 + t));
    }
    let (ok, _, err) = replay(
        dir.path(),
        &csv,
        &[
            "--point",
            "motor-1/vibration",
            "--output",
            "/dev/null",
            "--state",
            state.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    // `odd` watches the vibration of both motors: motor-1's model is trained.
    assert!(err.contains("2 trained models"), "{err}");
    let last_ms = 1_760_000_099_000;
    let both = |saved_ms: i64| {
        vec![
            ("motor-1".to_owned(), "odd".to_owned(), saved_ms),
            ("motor-2".to_owned(), "odd".to_owned(), saved_ms),
        ]
    };
    assert_eq!(snapshots(&state), both(last_ms));

    let run = format!("{CONFIG}\n[store]\npath = \"{}\"\n", state.display());
    let start = |name: &str, config: &str| {
        let at = dir.path().join(name);
        std::fs::create_dir(&at).unwrap();
        Daemon::spawn(&at, config)
    };
    let stop = |mut daemon: Daemon| {
        daemon.signal("TERM");
        assert_eq!(
            daemon.wait_exit(Duration::from_secs(15)),
            Some(0),
            "{}",
            daemon.log()
        );
        daemon.log()
    };

    let daemon = start("resume", &run);
    eventually(limit, "the replayed models resumed", || {
        daemon
            .log()
            .contains("Resumed trained models from the state file. models=2")
            .then_some(())
    })
    .await;
    let log = stop(daemon);
    assert!(!log.contains("learns afresh"), "{log}");
    // Saved again at the clean stop, at the daemon's clock.
    let saved = snapshots(&state);
    assert_eq!(saved.len(), 2);
    assert!(saved.iter().all(|s| s.2 > last_ms), "{saved:?}");

    let edited = run.replace("warmup_samples = 10", "warmup_samples = 20");
    let daemon = start("edited", &edited);
    eventually(limit, "the edited rule learning afresh", || {
        let log = daemon.log();
        (log.contains("Rule changed since its model was saved; it learns afresh.")
            && log.contains("alarm=odd"))
        .then_some(())
    })
    .await;
    let log = stop(daemon);
    assert!(!log.contains("Resumed trained models"), "{log}");

    let conn = rusqlite::Connection::open(&state).unwrap();
    conn.execute(
        "UPDATE model_snapshots SET body = '{\"models\":[' WHERE device = 'motor-1'",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE model_snapshots SET version = 99 WHERE device = 'motor-2'",
        [],
    )
    .unwrap();
    drop(conn);
    let mut daemon = start("damaged", &edited);
    eventually(limit, "a WARN for each damaged snapshot", || {
        let log = daemon.log();
        let warned = log
            .lines()
            .filter(|l| {
                l.contains("WARN") && l.contains("cannot be read") && l.contains("alarm=odd")
            })
            .count();
        (warned == 2).then_some(())
    })
    .await;
    assert!(daemon.running(), "{}", daemon.log());
    let log = stop(daemon);
    assert!(log.contains("snapshot version 99"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A device-level model's episode names its kind and the point that explains it.
#[test]
fn a_device_model_episode_lists_its_kind_and_the_points_that_explain_it() {
    let config = format!(
        "{CONFIG}\n[[rules]]\nname = \"motor-odd\"\nkind = \"anomaly\"\ndevice = \"motor-1\"\n\
         points = [\"motor_temp\", \"motor_current\", \"speed\"]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    // Three independent noisy points (a fixed linear congruential sequence), and from row 500
    // (once the baselines have filled their 360-sample memory: a change before that is
    // learned, not raised) the motor temperature alone sits far off, the others unchanged.
    let mut seed = 12_345_u64;
    let mut noise = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut csv = String::from("ts,motor_temp,motor_current,speed\n");
    for t in 0..550 {
        let temp = if t >= 500 { 90.0 } else { 60.0 } + noise();
        let current = 10.0 + 0.2 * noise();
        let speed = 1480.0 + 5.0 * noise();
        csv.push_str(&format!(
            "{},{temp:.2},{current:.2},{speed:.1}\n",
            1_760_000_000 + t
        ));
    }
    let episodes = dir.path().join("episodes.csv");
    let (ok, _, err) = replay_on(
        dir.path(),
        &config,
        &csv,
        &[
            "--device",
            "motor-1",
            "--output",
            "/dev/null",
            "--episodes",
            episodes.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let listed = std::fs::read_to_string(&episodes).unwrap();
    let line = listed
        .lines()
        .find(|l| l.starts_with("motor-1,motor-odd,"))
        .unwrap_or_else(|| panic!("no device episode:\n{listed}"));
    let f: Vec<&str> = line.split(',').collect();
    // No point of its own; a kind of its own (the detector that started it), named soon
    // after the shift began.
    assert_eq!(f[2], "", "{line}");
    assert_eq!(f[3], "level_shift", "{line}");
    let start_ms: i64 = f[6].parse().unwrap();
    assert!(
        (1_760_000_500_000..=1_760_000_520_000).contains(&start_ms),
        "{line}"
    );
    assert!(
        f[9].starts_with("motor_temp:"),
        "the temperature explains most of it: {line}"
    );
}
