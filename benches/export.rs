//! `plantwatch export` on a year of 15-minute intervals for 200 meters (about 7 million
//! ledger rows), rendered as CSV, JSON and HTML. Budget (issue): under 5 s and under 200 MiB.
//!
//! Run with `cargo bench --bench export`. The ledger is written once to a temporary SQLite
//! file; the export then runs in a fresh child process (this binary again, with
//! `BENCH_EXPORT_CHILD` set) so its peak resident memory (VmHWM) is the export's alone.
//! `BENCH_METERS` (default 200) and `BENCH_DAYS` (default 365) size the ledger.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark binary"
)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use plantwatch::config::{EnvOverrides, Plan, load_str};
use plantwatch::export::{Builder, Span};

/// 2026-01-01 00:00 +08:00.
const JAN1: i64 = 1_767_196_800_000;
const Q: i64 = 900_000;

fn config(meters: usize, state: &Path) -> String {
    let mut text = format!(
        "[gateway]\nsite = \"bench\"\nid = \"gw\"\n\n[store]\npath = \"{}\"\n\n\
         [[links]]\nname = \"bus\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\n",
        state.display()
    );
    for i in 0..meters {
        text.push_str(&format!(
            "[[devices]]\nname = \"m{i}\"\nlink = \"bus\"\nunit_id = {}\nprofile = \"chint-dtsu666\"\n\n\
             [[meters]]\nname = \"m{i}\"\ndevice = \"m{i}\"\npoint = \"ep_import\"\nkind = \"electricity\"\n\
             groups = [\"site\", \"line-{}\"]\n\n",
            i % 247 + 1,
            i % 10
        ));
    }
    text
}

fn plan(meters: usize, state: &Path) -> Plan {
    load_str(
        "bench.toml",
        &config(meters, state),
        &EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .unwrap()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn child(state: &Path, meters: usize, days: i64) {
    let plan = plan(meters, state);
    let started = Instant::now();
    let span = Span {
        label: "year".into(),
        from_ms: JAN1,
        to_ms: JAN1 + days * 86_400_000,
        timezone: "Asia/Shanghai".into(),
    };
    let conn = plantwatch::store::alarms::offline::open(state, false).unwrap();
    let spec = plan.energy.report_spec();
    let mut b = Builder::new(span, &spec);
    let names: Vec<&str> = plan.energy.meters.iter().map(|m| m.name.as_str()).collect();
    let rows = plantwatch::store::ledger::for_each(
        &conn,
        &names,
        JAN1,
        JAN1 + days * 86_400_000,
        |m, at, d, q, tou| {
            b.add(m, at, d, q, tou);
        },
    )
    .unwrap();
    let report = b.finish();
    let csv = plantwatch::export::csv::render(&report, |ms| ms.to_string());
    let json = serde_json::to_string(&report).unwrap();
    let html = plantwatch::export::html::render(&report, |ms| ms.to_string());
    let secs = started.elapsed().as_secs_f64();
    // The same scan with nothing done per row: how much of the time is SQLite's alone.
    let scan_started = Instant::now();
    let mut sum = 0.0;
    plantwatch::store::ledger::for_each(
        &conn,
        &names,
        JAN1,
        JAN1 + days * 86_400_000,
        |_, _, d, _, _| sum += d,
    )
    .unwrap();
    let scan_secs = scan_started.elapsed().as_secs_f64();
    println!(
        "export: {rows} intervals of {meters} meters in {secs:.2} s ({:.1} M intervals/s), \
         peak RSS {:.1} MiB, report {} B CSV / {} B JSON / {} B HTML, total {:.1} tce",
        rows as f64 / secs / 1e6,
        peak_rss_kib() as f64 / 1024.0,
        csv.len(),
        json.len(),
        html.len(),
        report.total_tce
    );
    println!(
        "  of which the ledger scan alone (SQLite, nothing done per row) takes {scan_secs:.2} s \
         ({:.1} kWh)",
        sum
    );
}

fn main() {
    let meters: usize = std::env::var("BENCH_METERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let days: i64 = std::env::var("BENCH_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(365);
    if let Some(state) = std::env::var_os("BENCH_EXPORT_CHILD") {
        child(Path::new(&state), meters, days);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    // Create the schema through the store, then bulk-load in one transaction.
    drop(
        plantwatch::store::Store::open(&state, plantwatch::store::OutboxLimits::default()).unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(&state).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT INTO energy_intervals (meter, start_ms, end_ms, kind, unit, delta, quality,
                 flags, tou_sharp, tou_peak, tou_flat, tou_valley, kgce)
                 VALUES (?1, ?2, ?3, 'electricity', 'kWh', ?4, 'good', 0, 0, ?4, 0, 0, ?5)",
            )
            .unwrap();
        for m in 0..meters {
            let name = format!("m{m}");
            for i in 0..days * 96 {
                let delta = 5.0 + (i % 96) as f64 * 0.1;
                st.execute(rusqlite::params![
                    name,
                    JAN1 + i * Q,
                    JAN1 + (i + 1) * Q,
                    delta,
                    delta * 0.1229
                ])
                .unwrap();
            }
        }
    }
    tx.commit().unwrap();
    drop(conn);
    println!(
        "ledger: {} intervals written in {:.1} s ({:.0} MiB file)",
        meters as i64 * days * 96,
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0
    );
    let status = Command::new(std::env::current_exe().unwrap())
        .env("BENCH_EXPORT_CHILD", &state)
        .status()
        .unwrap();
    assert!(status.success());
}
