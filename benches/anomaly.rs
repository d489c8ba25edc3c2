//! The `anomaly` rule on real, labelled plant recordings: SKAB, a water-pump test bed
//! (8 sensors at 1 s; valve closings, leaks, rotor imbalance, cavitation).
//!
//! First, always, the models' own throughput and memory (no CSV parsing, no engine):
//! univariate updates per second, 8-point device-model samples per second, bytes per model.
//! The release profile's fat LTO takes long to build on a small machine; optimising only
//! this crate gives the figure sooner: `cargo bench --bench anomaly --profile dev --config
//! 'profile.dev.package.plantwatch.opt-level=3' --config
//! 'profile.dev.package.plantwatch.debug-assertions=false'` measured 1.49 M rows/s and
//! 655 k device-samples/s on a shared 2-core machine beside `.ci/run` and two builds (1.19 M
//! and 671 k under six builds, 2.99 M and 1.77 M on a quieter run). Memory (`cargo bench --bench anomaly
//! --profile dev` prints it too): 584 B per point with `season = "none"`, 2696 B while
//! `season = "auto"` is still searching (its 2 KiB summary of `f32` bins; 7024 B before the
//! summary went to `f32` and the cycle's buckets were allocated only once found), 2888 B
//! with a found cycle; 2968 B for an 8-point device model.
//!
//! Run with `PLANTWATCH_SKAB_DIR=/path/to/skab/data cargo bench --bench anomaly`, where the
//! directory holds SKAB's `valve1/`, `valve2/`, `other/` and `anomaly-free/` folders of
//! `;`-separated CSV files (github.com/waico/SKAB, folder `data/`). `PLANTWATCH_SKAB_QUICK=1`
//! runs only the first two experiments of each folder (for CI); `PLANTWATCH_SKAB_THRESHOLD`
//! replaces the default threshold (to see the trade-off; the reported figures use none).
//! `PLANTWATCH_SKAB_MODEL` picks the models: `device` (the default: one device-level model
//! over the 8 points, the `anomaly` rule without `point`), `point` (one model per point) or
//! `both` (a device with a rule per point and a device rule; false episodes then count per
//! model, the device as one more beside the eight points).
//! For CI, `PLANTWATCH_SKAB_MAX_FALSE` (false episodes per model per 10 000 normal samples),
//! `PLANTWATCH_SKAB_MIN_F1` and `PLANTWATCH_SKAB_MIN_NAB` (NAB standard on score onsets, all
//! folders) make the bench fail when a figure is worse.
//!
//! Protocol: every experiment is streamed once, causally, through the models with the rule's
//! default settings. No file is tuned for and no label is read by the detector. Per row the
//! device is predicted
//! - an *outlier* while any model's alarm is raised (its episode is active),
//! - a *change point* where a model's score reaches the threshold (its rising edge: the onset
//!   of a new event, which is what the score means). The scorer also reports, as SKAB's own
//!   baselines turn outlier detectors into change-point detectors, the change points at
//!   every *edge* of the outlier prediction (raised or cleared), and both together.
//!
//! The predictions (timestamps and 0/1 outputs, no labels) are written to
//! `plantwatch-anomaly-bench/` in the system's temporary directory, outside the checkout, and
//! scored by `benches/skab_score.py`, which reads the labels from SKAB's own files, with tsad,
//! the scorer of SKAB's own leaderboard
//! (`pip install --no-deps tsad` plus numpy, pandas, matplotlib): NAB standard / low FP /
//! low FN with a 60 s window right of each change point, and binary F1, per folder.
//! valve1/ is the only folder defaults may be tuned on; valve2/ and other/ are held out.
//!
//! The bench also prints the false-episode rate: alarm raises per model per 10 000 normal
//! samples, on `anomaly-free.csv` and on the stretch of each experiment before its first
//! labelled fault, both counted after the 400 rows SKAB allows for learning.
//!
//! Measured (`--profile dev`, all 34 experiments; NAB standard / low FP / low FN on score
//! onsets, F1 as tsad rounds it and unrounded, false episodes per model per 10 000 normal
//! samples):
//! - `device`: 48.55 / 45.33 / 52.26 (valve1 52.40, valve2 53.16, other 42.23; held out
//!   44.88 / 40.46 / 49.61), 31.58 on alarm edges, 55.53 on both; F1 0.80, 0.805 (valve1
//!   0.875, valve2 0.853, other 0.708; held out 0.740); 4.74 false episodes per device (3.62
//!   on valve1/'s pre-fault stretches, 0 on valve2/'s, 16.98 on other/'s, 2.22 on the
//!   fault-free run: 7 in 14 774 samples, 0.59 per point watched). Before the learning
//!   period was counted from the detector's start (after its warm-up) instead of from the
//!   first sample: 48.50 (held out 44.77), F1 0.798 (other 0.694, held out 0.728), 5.41 per
//!   device (21.22 on other/'s pre-fault stretches). Before a change seen while the
//!   baselines fill was learned instead of raised and an episode's points restarted from
//!   where they settled: 48.49 (valve1 49.64, held out 47.39), F1 0.77 (valve1 0.86, held
//!   out 0.70), 4.06 per device.
//! - `point`: 17.73 / 16.33 / 20.09, 25.48 on alarm edges; F1 0.76; 0.85 per point.
//! - `both`: 50.43 / 46.25 / 54.29; F1 0.79; 1.35 per model.
//!
//! Quick mode (`PLANTWATCH_SKAB_QUICK=1`): `device` 37.72, F1 0.70, 2.03; `point` 21.29,
//! F1 0.74, 0.64 (tests/interop/skab.sh keeps floors a little below these).
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "benchmark binary"
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use plantwatch::detect::anomaly::device::DeviceModel;
use plantwatch::detect::anomaly::{AnomalyModel, AnomalyParams, DEFAULT_THRESHOLD};

/// Rows SKAB's protocol treats as known-normal learning data.
const LEARN_ROWS: usize = 400;
const POINTS: [&str; 8] = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
];
const FOLDERS: [&str; 3] = ["valve1", "valve2", "other"];

struct Row {
    datetime: String,
    ts_ms: i64,
    values: [f64; 8],
    anomaly: u8,
}

fn read_skab(path: &Path) -> Vec<Row> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name);
    let points: Vec<usize> = POINTS
        .iter()
        .map(|p| col(p).unwrap_or_else(|| panic!("{}: no column {p}", path.display())))
        .collect();
    let anomaly = col("anomaly");
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let datetime = record[0].to_owned();
        let ts = chrono::NaiveDateTime::parse_from_str(&datetime, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("{}:{}: {datetime}: {e}", path.display(), line + 2));
        let mut values = [0.0; 8];
        for (v, &c) in values.iter_mut().zip(&points) {
            *v = record[c].parse().unwrap_or(f64::NAN);
        }
        let flag = |c: Option<usize>| {
            c.map_or(0, |c| {
                u8::from(record[c].parse::<f64>().unwrap_or(0.0) > 0.5)
            })
        };
        rows.push(Row {
            datetime,
            ts_ms: ts.and_utc().timestamp_millis(),
            values,
            anomaly: flag(anomaly),
        });
    }
    rows
}

/// One point under the default `anomaly` rule: the onset score, and the episode the alarm follows.
struct PointRule {
    model: AnomalyModel,
    raised: bool,
    above: bool,
}

impl PointRule {
    fn new(threshold: f64) -> Self {
        Self {
            model: AnomalyModel::new(AnomalyParams {
                threshold,
                ..AnomalyParams::default()
            }),
            raised: false,
            above: false,
        }
    }

    /// Feeds one sample; returns (change point predicted here, alarm raised, alarm raised now).
    fn step(&mut self, ts_ms: i64, value: f64, trace: bool) -> (bool, bool, bool) {
        let Some(score) = self.model.update(ts_ms, 0, value) else {
            return (false, self.raised, false);
        };
        if trace {
            println!(
                "trace {ts_ms} value {value} expected {:.6} raw {:.3} score {:.6} episode {} {}",
                score.expected,
                score.raw,
                score.score,
                score.episode.active,
                score.episode.kind.as_str()
            );
        }
        let above = score.score >= self.model.params().threshold;
        let onset = above && !self.above;
        self.above = above;
        let was = self.raised;
        self.raised = score.episode.active;
        (onset, self.raised, self.raised && !was)
    }
}

/// Detector outputs per row of one recording, and the raises counted in its normal stretch.
struct Run {
    pred_outlier: Vec<u8>,
    pred_cp: Vec<u8>,
    normal_samples: usize,
    false_raises: usize,
    false_by_point: [usize; 8],
}

/// `PLANTWATCH_SKAB_TRACE=valve1/13.csv:7` prints every score of point 7 of that file.
fn run(rows: &[Row], name: &str) -> Run {
    let trace = std::env::var("PLANTWATCH_SKAB_TRACE").ok().and_then(|t| {
        let (file, point) = t.rsplit_once(':')?;
        (file == name)
            .then(|| point.parse::<usize>().ok())
            .flatten()
    });
    let threshold = std::env::var("PLANTWATCH_SKAB_THRESHOLD")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_THRESHOLD);
    let mut rules: Vec<PointRule> = POINTS.iter().map(|_| PointRule::new(threshold)).collect();
    let first_fault = rows
        .iter()
        .position(|r| r.anomaly == 1)
        .unwrap_or(rows.len());
    let mut out = Run {
        pred_outlier: Vec::with_capacity(rows.len()),
        pred_cp: Vec::with_capacity(rows.len()),
        normal_samples: 0,
        false_raises: 0,
        false_by_point: [0; 8],
    };
    let (use_points, use_device) = mode();
    let mut device = DeviceModel::new(POINTS.len(), AnomalyParams::default().learn_samples);
    let (mut device_raised, mut device_above) = (false, false);
    for (i, row) in rows.iter().enumerate() {
        let (mut cp, mut outlier) = (false, false);
        let normal = (LEARN_ROWS..first_fault).contains(&i);
        if use_points {
            for (p, (rule, &v)) in rules.iter_mut().zip(&row.values).enumerate() {
                let (onset, raised, raise) = rule.step(row.ts_ms, v, trace == Some(p));
                cp |= onset;
                outlier |= raised;
                if normal {
                    out.normal_samples += 1;
                    out.false_raises += usize::from(raise);
                    out.false_by_point[p] += usize::from(raise);
                }
            }
        }
        if use_device {
            let s = device.update(row.ts_ms, &row.values, threshold);
            let (score, active) = s.map_or((0.0, device_raised), |s| (s.score, s.episode.active));
            cp |= score >= threshold && !device_above;
            device_above = score >= threshold;
            if normal {
                // Per device: counted as one more "point" beside the eight.
                out.normal_samples += 1;
                out.false_raises += usize::from(active && !device_raised);
            }
            device_raised = active;
            outlier |= active;
        }
        out.pred_outlier.push(u8::from(outlier));
        out.pred_cp.push(u8::from(cp));
    }
    out
}

/// Which models run, from `PLANTWATCH_SKAB_MODEL`: (one per point, one per device).
fn mode() -> (bool, bool) {
    match std::env::var("PLANTWATCH_SKAB_MODEL").as_deref() {
        Ok("point") => (true, false),
        Ok("both") => (true, true),
        _ => (false, true),
    }
}

fn experiments(dir: &Path, quick: bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    // Numeric order (1, 2, ..., 10), as SKAB numbers its experiments.
    files.sort_by_key(|p| {
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        (stem.len(), stem)
    });
    if quick {
        files.truncate(2);
    }
    files
}

fn write_predictions(path: &Path, rows: &[Row], run: &Run) {
    let mut text = String::from("datetime;pred_outlier;pred_cp;pred_edge\n");
    let mut before = 0;
    for (i, r) in rows.iter().enumerate() {
        let outlier = run.pred_outlier[i];
        writeln!(
            text,
            "{};{};{};{}",
            r.datetime,
            outlier,
            run.pred_cp[i],
            u8::from(outlier != before)
        )
        .unwrap();
        before = outlier;
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn rate(raises: usize, samples: usize) -> f64 {
    raises as f64 * 10_000.0 / samples.max(1) as f64
}

/// Deterministic noise in [-1, 1) for sample `i` (splitmix64), cheap next to the models.
fn noise(i: u64) -> f64 {
    let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Prints model updates per second, univariate and for an 8-point device model, and the
/// memory each model holds. Counts the models' own work: no CSV parsing, no engine.
fn throughput() {
    use std::hint::black_box;
    use std::time::Instant;
    if cfg!(debug_assertions) {
        println!("throughput: unoptimised build (--profile dev), figures not representative");
    }
    let rows: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        5_000_000
    };
    let mut model = AnomalyModel::new(AnomalyParams::default());
    let searching = model.memory_bytes();
    let start = Instant::now();
    for i in 0..rows {
        // A 90-sample cycle under noise, so season = "auto" finds it and models it.
        let v = 50.0 + (i as f64 * std::f64::consts::TAU / 90.0).sin() + 0.3 * noise(i);
        black_box(model.update(i as i64 * 1000, 0, black_box(v)));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "throughput: univariate {:.2} M rows/s ({rows} rows, season auto, cycle found: {}); \
         memory per point {} B while searching for a cycle, {} B with it",
        rows as f64 / secs / 1e6,
        model.period_ms().is_some(),
        searching,
        model.memory_bytes()
    );
    let plain = AnomalyModel::new(AnomalyParams {
        season: plantwatch::detect::anomaly::Season::None,
        ..AnomalyParams::default()
    });
    println!(
        "throughput: memory per point with season = \"none\": {} B",
        plain.memory_bytes()
    );
    let samples = rows / 4;
    let mut device = DeviceModel::new(8, AnomalyParams::default().learn_samples);
    let mut x = [0.0; 8];
    let start = Instant::now();
    for i in 0..samples {
        let load = (i as f64 / 40.0).sin();
        for (k, v) in x.iter_mut().enumerate() {
            *v = (k + 1) as f64 * load + 0.1 * noise(i * 8 + k as u64);
        }
        black_box(device.update(i as i64 * 1000, black_box(&x), DEFAULT_THRESHOLD));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "throughput: device model, 8 points: {:.0} k device-samples/s ({samples} samples); \
         memory {} B",
        samples as f64 / secs / 1e3,
        device.memory_bytes()
    );
}

fn main() {
    throughput();
    let Some(skab) = std::env::var_os("PLANTWATCH_SKAB_DIR").map(PathBuf::from) else {
        println!(
            "anomaly bench: skipped. Set PLANTWATCH_SKAB_DIR to SKAB's data/ folder (with \
             valve1/, valve2/, other/, anomaly-free/; github.com/waico/SKAB) and install the \
             scorer: pip install --no-deps tsad numpy pandas matplotlib"
        );
        return;
    };
    let quick = std::env::var_os("PLANTWATCH_SKAB_QUICK").is_some_and(|v| v != "0");
    // Outside the checkout: the files name SKAB's experiments and carry its timestamps, and
    // its GPL data stays where it was read from (the scorer takes the labels from there).
    let out_root = std::env::temp_dir().join("plantwatch-anomaly-bench");
    let (use_points, use_device) = mode();
    let models = match (use_points, use_device) {
        (true, true) => "one model per point and one per device",
        (true, false) => "one model per point",
        _ => "one device model over the points",
    };
    println!(
        "anomaly bench: default rule (threshold {DEFAULT_THRESHOLD}), {models}, {} points; \
         predictions in {}",
        POINTS.len(),
        out_root.display()
    );

    // A model is a point's or the device's: its normal samples are the rows it scored.
    println!(
        "{:<14} {:>5} {:>8} {:>15} {:>20}",
        "false episodes", "files", "rows", "normal samples", "per model per 10k"
    );
    let (mut all_samples, mut all_raises) = (0, 0);
    let mut by_point = [0usize; 8];
    for folder in FOLDERS {
        let dir = skab.join(folder);
        let dest = out_root.join(folder);
        // A quick run must not score the files a full run left behind.
        if dest.exists() {
            std::fs::remove_dir_all(&dest).unwrap();
        }
        std::fs::create_dir_all(&dest).unwrap();
        let files = experiments(&dir, quick);
        let (mut rows_n, mut samples, mut raises) = (0, 0, 0);
        for file in &files {
            let rows = read_skab(file);
            let name = format!("{folder}/{}", file.file_name().unwrap().to_string_lossy());
            let run = run(&rows, &name);
            write_predictions(&dest.join(file.file_name().unwrap()), &rows, &run);
            rows_n += rows.len();
            samples += run.normal_samples;
            raises += run.false_raises;
            for (all, n) in by_point.iter_mut().zip(run.false_by_point) {
                *all += n;
            }
        }
        println!(
            "{:<14} {:>5} {:>8} {:>15} {:>20.2}",
            format!("{folder} pre-fault"),
            files.len(),
            rows_n,
            samples,
            rate(raises, samples)
        );
        all_samples += samples;
        all_raises += raises;
    }
    let free = skab.join("anomaly-free/anomaly-free.csv");
    let rows = read_skab(&free);
    let run = run(&rows, "anomaly-free.csv");
    println!(
        "{:<14} {:>5} {:>8} {:>15} {:>20.2}",
        "anomaly-free",
        1,
        rows.len(),
        run.normal_samples,
        rate(run.false_raises, run.normal_samples)
    );
    all_samples += run.normal_samples;
    all_raises += run.false_raises;
    for (all, n) in by_point.iter_mut().zip(run.false_by_point) {
        *all += n;
    }
    println!(
        "{:<14} {:>5} {:>8} {:>15} {:>20.2}",
        "all normal",
        "",
        "",
        all_samples,
        rate(all_raises, all_samples)
    );
    let per_point: Vec<String> = POINTS
        .iter()
        .zip(by_point)
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    if use_points {
        println!("false episodes by point: {}", per_point.join(", "));
    }

    let all_rate = rate(all_raises, all_samples);
    let floor = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.parse::<f64>()
                .unwrap_or_else(|e| panic!("{name}={v}: {e}"))
        })
    };
    if let Some(max) = floor("PLANTWATCH_SKAB_MAX_FALSE") {
        if all_rate > max {
            eprintln!("anomaly bench: {all_rate:.2} false episodes per point per 10k > {max}");
            std::process::exit(1);
        }
    }

    let scorer = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/skab_score.py");
    let mut command = Command::new("python3");
    command.arg(&scorer).arg(&out_root).arg(&skab);
    if let Some(f1) = floor("PLANTWATCH_SKAB_MIN_F1") {
        command.arg(format!("--min-f1={f1}"));
    }
    if let Some(nab) = floor("PLANTWATCH_SKAB_MIN_NAB") {
        command.arg(format!("--min-nab={nab}"));
    }
    let status = command.status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!(
            "anomaly bench: the scorer failed or a figure is below its floor (the tsad \
             scorer installs with `pip install --no-deps tsad numpy pandas matplotlib`)"
        );
        std::process::exit(1);
    }
}
