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
    write_state(dir, ledger(), "").await;
}

/// A state file with `intervals` and the config (`CONFIG` plus `extra`) that points at it.
async fn write_state(dir: &Path, intervals: Vec<LedgerInterval>, extra: &str) {
    let state = dir.join("state.db");
    let store = Store::open(&state, OutboxLimits::default()).unwrap();
    store.save_intervals(intervals).await.unwrap();
    // The store lets go of its lock when its thread ends: wait for that before the
    // next opener.
    let closed = store.closed();
    drop(store);
    closed.await;
    std::fs::write(
        dir.join("c.toml"),
        format!(
            "{CONFIG}\n{extra}\n[store]\npath = \"{}\"\n",
            state.display()
        ),
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

/// The charts every HTML report has (`daily-<kind>` per energy kind of the fixed ledger).
const CHARTS: [&str; 7] = [
    "daily",
    "daily-electricity",
    "daily-natural_gas",
    "load-profile",
    "tou",
    "demand",
    "benchmark",
];

/// Checks that every element opened is closed in order (void and self-closed ones aside):
/// enough to catch a broken template or an unescaped `<` in a name.
fn assert_balanced(html: &str) {
    const VOID: [&str; 4] = ["!DOCTYPE", "meta", "br", "hr"];
    let mut open: Vec<&str> = Vec::new();
    let mut rest = html;
    let mut tags = 0;
    while let Some(at) = rest.find('<') {
        let end = rest[at..].find('>').expect("a tag ends") + at;
        let tag = &rest[at + 1..end];
        rest = &rest[end + 1..];
        tags += 1;
        assert!(tags < 1_000_000, "runaway");
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap();
        if let Some(closing) = tag.strip_prefix('/') {
            let top = open.pop();
            assert_eq!(top, Some(closing.trim()), "</{closing}> closes {top:?}");
        } else if !tag.ends_with('/') && !VOID.contains(&name) {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "left open: {open:?}");
}

/// The table that follows `heading` in `html`.
fn table_after<'a>(html: &'a str, heading: &str) -> &'a str {
    let from = html.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let rest = &html[from..];
    &rest[..rest.find("</table>").unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_is_self_contained_escaped_and_carries_the_hand_computed_figures() {
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path()).await;
    // Free text that is markup, to see it escaped (names cannot be: [a-z0-9_-]).
    let config = std::fs::read_to_string(dir.path().join("c.toml")).unwrap();
    let config = config.replacen(
        "[[meters]]",
        "[energy]\ncoefficients_source = \"R&D <lab> audit\"\n\n[[meters]]",
        1,
    );
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let out = dir.path().join("oct.html");
    let (ok, stdout, err) = export(
        dir.path(),
        &[
            "--month",
            "2026-10",
            "--format",
            "html",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(stdout.is_empty(), "the report goes to --output only");
    assert!(
        !err.contains("exporting:"),
        "no progress line when stderr is not a terminal: {err}"
    );
    let html = std::fs::read_to_string(&out).unwrap();

    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(html.contains("@media print") && html.contains("size: A4"));
    assert_balanced(&html);
    for chart in CHARTS {
        assert!(
            html.contains(&format!("<svg data-chart=\"{chart}\"")),
            "no {chart} chart"
        );
    }
    assert_eq!(html.matches("<svg").count(), CHARTS.len());
    // Self-contained: nothing to run and nothing to fetch.
    for banned in [
        "<script", "http://", "https://", "<link", "<img", "<iframe", "src=", "url(", "@import",
        "onload",
    ] {
        assert!(!html.contains(banned), "found {banned}");
    }
    // Free text is escaped everywhere and never appears raw.
    assert!(html.contains("R&amp;D &lt;lab&gt; audit"));
    assert!(!html.contains("R&D") && !html.contains("<lab>"));

    // The figures of the golden CSV, worked out in `ledger()`.
    let kinds = table_after(&html, "Energy by kind (分品种能耗)");
    assert!(
        kinds.contains(
            "<td class=\"l\">electricity</td><td>kWh</td><td>60.000</td><td>30.000</td>\
             <td>20.000</td><td>10.000</td><td>0.000</td><td>7.374</td>"
        ),
        "{kinds}"
    );
    assert!(
        kinds.contains(
            "<td class=\"l\">natural_gas</td><td>m³</td><td>4.000</td><td>0.000</td>\
             <td>0.000</td><td>0.000</td><td>4.000</td><td>4.857</td>"
        ),
        "{kinds}"
    );
    assert!(
        kinds.contains("<th>12.231</th><th>0.012231 tce</th>"),
        "{kinds}"
    );
    let groups = table_after(&html, "Groups (分组能耗)");
    assert!(
        groups.contains(
            "<td class=\"l\">line-1</td><td class=\"l\">electricity</td><td>kWh</td><td>60.000</td>"
        ),
        "{groups}"
    );
    let demand = table_after(&html, "Maximum demand and data completeness");
    assert!(
        demand.contains(
            "<td class=\"l\">incomer</td><td>120.000</td>\
             <td class=\"l\">2026-10-02T20:00:00+08:00</td><td>2976</td><td>2</td><td>1</td>\
             <td>2973</td>"
        ),
        "{demand}"
    );
    assert!(
        demand.contains("<th>5952</th><th>3</th><th>1</th><th>5948</th>"),
        "{demand}"
    );
    let intensity = table_after(&html, "Energy per unit of product (单位产品能耗)");
    assert!(
        intensity.contains(
            "<td class=\"l\">line-1</td><td class=\"l\">line1-output</td><td>2.000</td>\
             <td>t</td><td>7.374</td><td>3.687</td>"
        ),
        "{intensity}"
    );
    assert!(html.contains("No benchmark values configured"));
    // The series the charts draw: Oct 1 and 2 in the daily table, site demand per day.
    let daily = table_after(&html, "By day (逐日明细)");
    assert!(
        daily.contains(
            "<td class=\"l\">2026-10-01</td><td>30.000</td><td>4.000</td><td>8.544</td>\
             <td>80.000</td><td class=\"l\">2026-10-01T09:00:00+08:00</td>"
        ),
        "{daily}"
    );
    assert_eq!(daily.matches("<tr>").count(), 1 + 31);
    // Every report prints its coefficients.
    let coefficients = table_after(&html, "Coefficients used (折标系数)");
    assert!(
        coefficients.contains("<td class=\"l\">electricity</td><td>kWh</td><td>0.1229</td>"),
        "{coefficients}"
    );
    assert!(
        coefficients.contains("<td class=\"l\">natural_gas</td><td>m³</td><td>1.2143</td>"),
        "{coefficients}"
    );
    assert!(
        coefficients.contains("R&amp;D &lt;lab&gt; audit")
            && coefficients.contains("equivalent (当量值)")
    );

    // Deterministic: the same ledger gives the same bytes.
    let (ok, again, err) = export(dir.path(), &["--month", "2026-10", "--format", "html"]);
    assert!(ok, "{err}");
    assert_eq!(again, html);

    render_in_chromium(&out, dir.path());
}

/// Renders the report headless in Chromium to a PNG, as an energy manager's browser would
/// (`.ci/run` installs it; a developer without it gets a skip).
fn render_in_chromium(html: &Path, dir: &Path) {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        crate::harness::skip_without("chromium", "renders the HTML report to a PNG");
        return;
    }
    let png = dir.join("report.png");
    let profile = dir.join("chromium-profile");
    let log = std::fs::File::create(dir.join("chromium.log")).unwrap();
    // `timeout` bounds the run and kills Chromium's whole process group if it hangs; no
    // network is needed (the flags keep Chromium from trying).
    let status = Command::new("timeout")
        .args(["--kill-after=10", "90"])
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    let log = std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default();
    assert!(status.success(), "chromium: {status}\n{log}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{log}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "{} B: a blank page?", bytes.len());
    if let Some(keep) = std::env::var_os("KEEP_REPORT") {
        std::fs::copy(html, Path::new(&keep).with_extension("html")).unwrap();
        std::fs::copy(&png, Path::new(&keep).with_extension("png")).unwrap();
    }
}

/// Output of day `d` (0 = Sep 1) of the savings ledger, tonnes: 10 to 16 over a week.
fn output_of_day(d: i64) -> f64 {
    10.0 + (d % 7) as f64
}

/// September 2026 as the baseline (daily use exactly 200 kWh + 30 kWh/t) and October using
/// 10 % less than that model, every interval measured; one October day lacks an interval.
fn savings_ledger() -> Vec<LedgerInterval> {
    const SEP1: i64 = OCT1 - 30 * 86_400_000;
    let mut out = Vec::new();
    for d in 0..61 {
        let day = SEP1 + d * 86_400_000;
        let output = output_of_day(d);
        let model = 200.0 + 30.0 * output;
        let used = if day >= OCT1 { 0.9 * model } else { model };
        for q in 0..96 {
            // Oct 20 (d = 49) misses its last interval: that day is left out of the comparison.
            if d == 49 && q == 95 {
                continue;
            }
            out.push(iv(
                ("incomer", "electricity", "kWh"),
                day + q * Q,
                used / 96.0,
                IntervalQuality::Good,
                [0.0, 0.0, used / 96.0, 0.0],
                None,
            ));
        }
        out.push(iv(
            ("line1-output", "production", "t"),
            day + 48 * Q,
            output,
            IntervalQuality::Good,
            [0.0; 4],
            None,
        ));
    }
    out
}

fn csv_total(csv: &str, level: &str, name: &str) -> (String, f64) {
    let line = csv
        .lines()
        .find(|l| l.starts_with(&format!("{level},{name},")))
        .unwrap_or_else(|| panic!("no {level} row for {name}:\n{csv}"));
    let cells: Vec<&str> = line.split(',').collect();
    (cells[2].to_owned(), cells[4].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savings_against_a_regression_baseline_and_benchmark_verdicts_agree_with_the_arithmetic() {
    let dir = tempfile::tempdir().unwrap();
    // October's line-1 intensity, worked out independently of the report: every October day
    // uses 0.9 × (200 + 30 × output) kWh at 0.1229 kgce/kWh, less the missing interval.
    let days = 30..61;
    let oct_output: f64 = days.clone().map(output_of_day).sum();
    let oct_kwh: f64 = days
        .clone()
        .map(|d| 0.9 * (200.0 + 30.0 * output_of_day(d)))
        .sum::<f64>()
        - 0.9 * (200.0 + 30.0 * output_of_day(49)) / 96.0;
    let intensity = oct_kwh * 0.1229 / oct_output;
    let extra = format!(
        "[[benchmarks]]\nproduction = \"line1-output\"\nstandard = \"GB 00000-2026 (test)\"\n\
         advanced = {}\naccess = {}\nlimit = {}\n\n\
         [[savings]]\nname = \"vfd-retrofit\"\ntarget = \"line-1\"\nproduction = \"line1-output\"\n\
         baseline_from = \"2026-09-01\"\nbaseline_to = \"2026-09-30\"\n",
        intensity * 0.9,
        intensity * 1.1,
        intensity * 1.2
    );
    write_state(dir.path(), savings_ledger(), &extra).await;
    let (ok, csv, err) = export(dir.path(), &["--month", "2026-10"]);
    assert!(ok, "{err}");

    let (grade, value) = csv_total(&csv, "verdict", "line-1/line1-output");
    assert_eq!(grade, "access", "{csv}");
    assert!((value - intensity).abs() < 0.001, "{value} vs {intensity}");
    let (grade, value) = csv_total(&csv, "benchmark", "line-1/line1-output");
    assert_eq!(grade, "advanced");
    assert!((value - intensity * 0.9).abs() < 0.001);

    // The 30 complete October days (Oct 20 is incomplete): baseline = Σ model, saving 10 %.
    let compared = || days.clone().filter(|&d| d != 49);
    let baseline: f64 = compared().map(|d| 200.0 + 30.0 * output_of_day(d)).sum();
    let (_, b) = csv_total(&csv, "savings-baseline", "vfd-retrofit");
    let (_, a) = csv_total(&csv, "savings-actual", "vfd-retrofit");
    let (kind, saving) = csv_total(&csv, "savings", "vfd-retrofit");
    assert_eq!(kind, "electricity");
    assert!((b - baseline).abs() < 0.01, "{b} vs {baseline}");
    assert!((a - 0.9 * baseline).abs() < 0.01, "{a}");
    assert!((saving - 0.1 * baseline).abs() < 0.01, "{saving}");

    let (ok, json, err) = export(dir.path(), &["--month", "2026-10", "--format", "json"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sv = &report["savings"][0];
    assert_eq!(sv["baseline_days"], 30);
    assert_eq!(sv["days"], 30);
    assert_eq!(sv["days_excluded"], 1);
    assert_eq!(sv["acceptable"], true, "{sv}");
    assert!((sv["fit"]["slope"].as_f64().unwrap() - 30.0).abs() < 1e-9);
    assert!((sv["fit"]["intercept"].as_f64().unwrap() - 200.0).abs() < 1e-6);
    assert!((sv["saving_percent"].as_f64().unwrap() - 10.0).abs() < 1e-9);
    assert_eq!(report["intensity"][0]["standard"], "GB 00000-2026 (test)");

    let (ok, html, err) = export(dir.path(), &["--month", "2026-10", "--format", "html"]);
    assert!(ok, "{err}");
    let table = table_after(&html, "Savings against the baseline (节能量)");
    assert!(
        table.contains("<td class=\"l\">vfd-retrofit</td>"),
        "{table}"
    );
    assert!(
        table.contains("<td>10.0</td>") && table.contains("acceptable"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savings_baseline_with_too_few_days_is_reported_as_not_acceptable() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[savings]]\nname = \"short\"\ntarget = \"incomer\"\n\
                 baseline_from = \"2026-09-25\"\nbaseline_to = \"2026-09-30\"\n";
    write_state(dir.path(), savings_ledger(), extra).await;
    let (ok, json, err) = export(dir.path(), &["--month", "2026-10", "--format", "json"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sv = &report["savings"][0];
    // Without production the baseline is the mean day of Sep 25–30 (days 24..30).
    let mean: f64 = (24..30)
        .map(|d| 200.0 + 30.0 * output_of_day(d))
        .sum::<f64>()
        / 6.0;
    assert!(
        (sv["mean_daily"].as_f64().unwrap() - mean).abs() < 1e-6,
        "{sv}"
    );
    assert!(
        (sv["baseline"].as_f64().unwrap() - 30.0 * mean).abs() < 1e-6,
        "{sv}"
    );
    assert_eq!(sv["acceptable"], false);
    assert!(
        sv["note"]
            .as_str()
            .unwrap()
            .contains("6 complete baseline days; at least 12"),
        "{sv}"
    );
}

/// Issue 20, defect 12: a month of `incomer` with one interval lost to a counter reset
/// (2975 of 2976 measured, 99.97 %) was reported as "100.0 %", and the reset nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_completeness_shows_counter_events_and_never_rounds_a_gap_to_100_percent() {
    use plantwatch::process::counter::{CounterEvent, EventKind, Flag};
    use plantwatch::process::ledger::LedgerEvent;

    let dir = tempfile::tempdir().unwrap();
    let lost = 1000;
    let intervals: Vec<LedgerInterval> = (0..2976)
        .map(|k| {
            let quality = if k == lost {
                IntervalQuality::Missing
            } else {
                IntervalQuality::Good
            };
            let mut row = iv(
                ("incomer", "electricity", "kWh"),
                OCT1 + k * Q,
                if k == lost { 0.0 } else { 1.0 },
                quality,
                [0.0, 0.0, 0.0, 0.0],
                Some(0.1229),
            );
            if k == lost {
                row.flags = [Flag::Reset].into_iter().collect();
            }
            row
        })
        .collect();
    write_state(dir.path(), intervals, "").await;
    let reset = LedgerEvent {
        meter: "incomer".into(),
        device: "meter-1".into(),
        point: "ep_import".into(),
        unit: "kWh".into(),
        event: CounterEvent {
            kind: EventKind::Reset,
            at_ms: OCT1 + lost * Q + 60_000,
            from_ms: OCT1 + lost * Q - 60_000,
            before: Some(99_990.0),
            after: 42.0,
            booked: 0.0,
            unattributed: 42.0,
            inferred_max: None,
        },
    };
    let store = Store::open(&dir.path().join("state.db"), OutboxLimits::default()).unwrap();
    store.save_energy_events(vec![reset]).await.unwrap();
    // The store lets go of its lock when its thread ends: wait for that before the
    // next opener.
    let closed = store.closed();
    drop(store);
    closed.await;

    let out = dir.path().join("oct.html");
    let (ok, _, err) = export(
        dir.path(),
        &[
            "--month",
            "2026-10",
            "--format",
            "html",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(&out).unwrap();
    let table = table_after(&html, "Maximum demand and data completeness");
    let row = table
        .split("<tr>")
        .find(|r| r.contains(">incomer<"))
        .unwrap();
    assert!(row.contains("<td>2975</td>"), "{row}");
    assert!(row.contains("99.9 %"), "{row}");
    assert!(
        !table.contains("100.0 %"),
        "a gap is never 100.0 %: {table}"
    );
    let summary = table_after(&html, "Data completeness");
    // boiler-gas has no interval at all: 2975 of 5952.
    assert!(
        summary.contains("2975 of 5952 intervals measured (50.0 %)")
            && summary.contains("1 counter event"),
        "{summary}"
    );
    let events = table_after(&html, "Counter events");
    for wanted in ["incomer", "reset", "42.000", "2026-10-11T"] {
        assert!(events.contains(wanted), "no {wanted} in {events}");
    }

    let (ok, json, err) = export(dir.path(), &["--month", "2026-10", "--format", "json"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["meters"][0]["completeness"]["events"], 1, "{json}");
    assert_eq!(report["energy_events"][0]["kind"], "reset");
    assert_eq!(report["energy_events"][0]["unattributed"], 42.0);

    let (ok, csv, err) = export(dir.path(), &["--month", "2026-10"]);
    assert!(ok, "{err}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("event,incomer,reset,kWh,42.000,")),
        "{csv}"
    );
}
