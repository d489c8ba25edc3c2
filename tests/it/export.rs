//! `plantwatch export` against a fixed ledger: golden CSV and JSON whose numbers were worked
//! out by hand (the comments in `ledger()` show the arithmetic).

use std::path::Path;
use std::process::Command;

use plantwatch::process::counter::{Flags, IntervalQuality};
use plantwatch::process::ledger::LedgerInterval;
use plantwatch::store::{OutboxLimits, Store};

use crate::harness::{bin, repo};

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
name = "meter-1"
link = "bus"
profile = "chint-dtsu666"

[[devices]]
name = "plc-1"
link = "bus"
unit_id = 2
profile = "generic-plc"

[[meters]]
name = "incomer"
device = "meter-1"
point = "ep_import"
kind = "electricity"
groups = ["site", "line-1"]

[[meters]]
name = "boiler-gas"
device = "meter-1"
point = "ep_export"
kind = "natural_gas"
groups = ["site"]

[[production]]
name = "line1-output"
device = "plc-1"
point = "running_hours"
unit = "t"
groups = ["line-1"]
"#;

/// 2026-10-01 00:00 in Asia/Shanghai (+08:00), ms.
const OCT1: i64 = 1_790_784_000_000;
const Q: i64 = 15 * 60_000;

fn iv(
    (meter, kind, unit): (&str, &str, &str),
    start: i64,
    delta: f64,
    quality: IntervalQuality,
    tou: [f64; 4],
    kgce: Option<f64>,
) -> LedgerInterval {
    LedgerInterval {
        meter: meter.into(),
        kind: kind.into(),
        unit: unit.into(),
        start_ms: start,
        end_ms: start + Q,
        delta,
        quality,
        flags: Flags::EMPTY,
        tou,
        kgce,
    }
}

/// incomer: 10 kWh flat (08:45), 20 peak (09:00), 30 sharp estimated (Oct 2 20:00) = 60 kWh,
/// 7.374 kgce, maximum demand 30 kWh / 0.25 h = 120 kW; one September interval is outside.
/// boiler-gas: 4 m³ valley = 4.8572 kgce. line1-output: 2 t. So line-1 uses 7.374 kgce for
/// 2 t = 3.687 kgce/t; the site 12.2312 kgce = 0.0122312 tce. Each meter should have
/// 31 × 96 = 2976 intervals.
fn ledger() -> Vec<LedgerInterval> {
    use IntervalQuality::{Estimated, Good};
    vec![
        iv(
            ("incomer", "electricity", "kWh"),
            OCT1 - Q,
            99.0,
            Good,
            [0.0, 0.0, 0.0, 99.0],
            Some(12.1671),
        ),
        iv(
            ("incomer", "electricity", "kWh"),
            OCT1 + 35 * Q,
            10.0,
            Good,
            [0.0, 0.0, 10.0, 0.0],
            Some(1.229),
        ),
        iv(
            ("incomer", "electricity", "kWh"),
            OCT1 + 36 * Q,
            20.0,
            Good,
            [0.0, 20.0, 0.0, 0.0],
            Some(2.458),
        ),
        iv(
            ("incomer", "electricity", "kWh"),
            OCT1 + 96 * Q + 80 * Q,
            30.0,
            Estimated,
            [30.0, 0.0, 0.0, 0.0],
            Some(3.687),
        ),
        iv(
            ("boiler-gas", "natural_gas", "m³"),
            OCT1,
            4.0,
            Good,
            [0.0, 0.0, 0.0, 4.0],
            Some(4.8572),
        ),
        iv(
            ("line1-output", "production", "t"),
            OCT1 + 36 * Q,
            2.0,
            Good,
            [0.0; 4],
            None,
        ),
    ]
}

async fn write_ledger(dir: &Path) {
    let state = dir.join("state.db");
    let store = Store::open(&state, OutboxLimits::default()).unwrap();
    store.save_intervals(ledger()).await.unwrap();
    drop(store);
    std::fs::write(
        dir.join("c.toml"),
        format!("{CONFIG}\n[store]\npath = \"{}\"\n", state.display()),
    )
    .unwrap();
}

fn export(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("export")
        .arg("--config")
        .arg(dir.join("c.toml"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The golden file `name`; `BLESS=1` rewrites it from `actual` first (then review the diff by
/// hand: these numbers are checked against the arithmetic in `ledger()`).
fn golden(name: &str, actual: &str) -> String {
    let path = repo().join("tests/fixtures/reports").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_months_report_matches_the_hand_computed_golden_csv_and_json() {
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path()).await;
    let (ok, csv, err) = export(dir.path(), &["--month", "2026-10"]);
    assert!(ok, "{err}");
    assert_eq!(csv, golden("2026-10.csv", &csv));
    assert!(
        err.contains("only 0.1 % of the period's intervals were measured"),
        "{err}"
    );
    let (ok, json, err) = export(dir.path(), &["--month", "2026-10", "--format", "json"]);
    assert!(ok, "{err}");
    assert_eq!(json, golden("2026-10.json", &json));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_range_includes_its_last_day_and_bad_periods_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path()).await;
    let (ok, csv, err) = export(dir.path(), &["--from", "2026-10-01", "--to", "2026-10-01"]);
    assert!(ok, "{err}");
    let incomer = csv
        .lines()
        .find(|l| l.starts_with("meter,incomer,"))
        .unwrap();
    assert!(
        incomer.starts_with("meter,incomer,electricity,kWh,30.000,"),
        "{incomer}"
    );
    let (ok, _, err) = export(dir.path(), &["--month", "2026-13"]);
    assert!(!ok && err.contains("--month `2026-13`"), "{err}");
    let (ok, _, err) = export(dir.path(), &["--from", "2026-10-05", "--to", "2026-10-01"]);
    assert!(!ok && err.contains("before --from"), "{err}");
    let (ok, _, err) = export(
        dir.path(),
        &["--month", "2026-10", "--state", "/nonexistent/state.db"],
    );
    assert!(
        !ok && err.contains("no state file at /nonexistent/state.db"),
        "{err}"
    );
}
