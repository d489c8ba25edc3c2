//! `plantwatch replay`: recorded samples through the same detect code as the live daemon, at
//! full speed, so an engineer can tune a rule on last month's data before deploying it.
//!
//! Input is CSV, `timestamp,value` for one point (named with `--point`),
//! `timestamp,device,point,value` for many, with or without a header, or a *wide* historian
//! export of one device (`--device`, see [`wide`]): a header `timestamp;col1;col2;…` naming
//! the device's points, `,` or `;` separated, one row per poll. Timestamps are epoch
//! seconds or milliseconds (told apart by size), or ISO-8601 (`2026-10-01T08:00:00Z`,
//! `+08:00`, or without an offset meaning the gateway's local time). An empty value is a poll
//! the device did not answer. Consecutive rows with the same timestamp and device form one
//! poll, as the live daemon sees them.
//!
//! Output, per input row: `timestamp,device,point,value,score,alarms` (the anomaly score in
//! [0, 1] where the point has an anomaly rule, and the `;`-separated alarms raised on that
//! row's point or device), plus the alarm events as JSON lines and, on request, the anomaly
//! episodes (see [`episodes`]).

pub mod episodes;
pub mod wide;

use std::io::{Read, Write};

use chrono::{DateTime, NaiveDateTime, TimeZone};

use std::time::Duration;

use crate::acquire::spec::Device;
use crate::decode::Precision;
use crate::encode::json_v1;
use crate::model::{BadReason, Name, PointSample, Quality, SampleBatch, Timestamp, Value};
use crate::pipeline::{Outputs, Pipeline, PipelineSpec, Taps};
use crate::process::ledger::{LedgerEvent, LedgerInterval};

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input is not CSV we can read.
    #[error("{input}: line {line}: {message}")]
    Row {
        /// Input name.
        input: String,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{what}: {source}")]
    Io {
        /// Which file.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How to read the input.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// `device/point` for two-column input.
    pub point: Option<(String, String)>,
    /// The device of a wide export (`timestamp;point1;point2;…`).
    pub device: Option<String>,
    /// Skip (and count) malformed rows instead of stopping at the first.
    pub skip_bad_rows: bool,
    /// Name of the input, for messages.
    pub input_name: String,
    /// The values are consumption per interval (ending at the timestamp), not counter
    /// readings: they are summed into a counter before the ledger sees them.
    pub consumption: bool,
}

/// What a replay runs the recording through; `config` assembles it from the plan.
#[derive(Debug, Clone)]
pub struct ReplaySpec {
    /// The stages, as the live daemon builds them.
    pub pipeline: PipelineSpec,
    /// The devices whose points a recording names, in the plan's order.
    pub devices: Vec<Device>,
    /// The gateway's zone: local timestamps, and episode times.
    pub timezone: chrono_tz::Tz,
    /// The ledger interval: with `--consumption`, a point's counter starts one interval
    /// before its first row.
    pub interval: Duration,
}

/// Where the energy ledger of a replay goes (`plantwatch replay --state FILE`).
pub trait LedgerSink {
    /// Closed intervals, in order.
    fn intervals(&mut self, intervals: Vec<LedgerInterval>) -> std::io::Result<()>;
    /// Counter wraps, resets, replacements and jumps, in order.
    fn events(&mut self, events: Vec<LedgerEvent>) -> std::io::Result<()>;
    /// The counters' states at the end, as `(meter, JSON)`.
    fn states(&mut self, states: Vec<(String, String)>) -> std::io::Result<()>;
    /// The rules' trained models at the end (`at_ms`: the last poll replayed), for a later
    /// `plantwatch run` to resume from. Ignored unless implemented.
    fn models(
        &mut self,
        snapshots: Vec<crate::detect::snapshot::ModelSnapshot>,
        at_ms: i64,
    ) -> std::io::Result<()> {
        let _ = (snapshots, at_ms);
        Ok(())
    }
}

/// The pipeline a replayed poll goes through, and where its ledger rows and episodes go.
struct Stages<'a> {
    /// The spec the pipeline was built from (a wide export names its points and zone).
    spec: &'a ReplaySpec,
    pipeline: Pipeline,
    out: Outputs,
    ledger: Option<&'a mut dyn LedgerSink>,
    episodes: Option<episodes::EpisodeLog<'a>>,
    /// The time of the last poll run.
    last_ms: i64,
}

impl Stages<'_> {
    /// One poll of device `di` through the same step as the live daemon; its events are in
    /// `out.events`. The batch comes back (the `every_poll` tap), so its buffers serve the
    /// next poll.
    fn run(&mut self, batch: SampleBatch, di: usize) -> Result<Option<SampleBatch>, ReplayError> {
        self.out.events.clear();
        self.out.polls.clear();
        // Replay has no clock: the poll's own tick is its "now".
        let tick = batch.tick;
        self.last_ms = self.last_ms.max(tick.0);
        self.pipeline.step(batch, tick, &mut self.out);
        if let Some(log) = self.episodes.as_mut() {
            log.observe(self.pipeline.engine(), di, tick.0)
                .map_err(|source| ReplayError::Io {
                    what: "episodes".into(),
                    source,
                })?;
        }
        let back = self.out.polls.pop();
        // Handed over in chunks: a year of readings must not pile up in memory.
        if self.out.intervals.len() >= 4096 || !self.out.energy_events.is_empty() {
            self.hand_over()?;
        }
        Ok(back)
    }

    fn hand_over(&mut self) -> Result<(), ReplayError> {
        let closed = std::mem::take(&mut self.out.intervals);
        let events = std::mem::take(&mut self.out.energy_events);
        let Some(sink) = self.ledger.as_mut() else {
            return Ok(());
        };
        let io = |source| ReplayError::Io {
            what: "state".into(),
            source,
        };
        if !events.is_empty() {
            sink.events(events).map_err(io)?;
        }
        if closed.is_empty() {
            return Ok(());
        }
        sink.intervals(closed).map_err(io)
    }

    fn finish(&mut self) -> Result<(), ReplayError> {
        if !self.out.intervals.is_empty() || !self.out.energy_events.is_empty() {
            self.hand_over()?;
        }
        if let Some(log) = self.episodes.as_mut() {
            log.finish(self.pipeline.engine())
                .map_err(|source| ReplayError::Io {
                    what: "episodes".into(),
                    source,
                })?;
        }
        let Some(sink) = self.ledger.as_mut() else {
            return Ok(());
        };
        let io = |source| ReplayError::Io {
            what: "state".into(),
            source,
        };
        sink.states(self.pipeline.ledger().states()).map_err(io)?;
        sink.models(self.pipeline.engine().model_snapshots(), self.last_ms)
            .map_err(io)
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Rows read (excluding a header).
    pub rows: u64,
    /// Rows whose device or point is not in the config (passed through unscored).
    pub unknown: u64,
    /// The first unknown `device/point`, for the message.
    pub first_unknown: Option<String>,
    /// Malformed rows skipped.
    pub skipped: u64,
    /// The first skipped rows (at most [`REPORTED_BAD_ROWS`]): line and what is wrong.
    pub bad_rows: Vec<(u64, String)>,
    /// Alarm events written.
    pub events: u64,
    /// Anomaly episodes written (`--episodes`).
    pub episodes: u64,
    /// Columns of a wide export that name no point of its device (ignored).
    pub unknown_columns: Vec<String>,
}

/// One row waiting for its poll to be evaluated.
struct Pending {
    record: csv::ByteRecord,
    target: Option<(usize, usize)>,
}

/// The batch being assembled from consecutive rows. Its row records and sample vector are
/// reused from poll to poll, so a replay allocates nothing per row.
struct Group {
    key: Option<(i64, usize)>,
    batch: Option<SampleBatch>,
    rows: Vec<Pending>,
    /// Rows of `rows` in use; the rest are spare records.
    len: usize,
}

/// Skipped rows listed by line in a replay's summary; the rest are only counted.
pub const REPORTED_BAD_ROWS: usize = 10;

/// Timestamps a recording can have (ms, 1990-01-01 to 2100-01-01 UTC): anything else is a unit
/// or format mistake (0, a negative number, 1e20), not a reading.
const PLAUSIBLE_MS: std::ops::Range<i64> = 631_152_000_000..4_102_444_800_000;

/// A row that cannot be replayed: with `--skip-bad-rows` it is counted (and the first few
/// kept, with their line); without, it stops the replay.
fn reject(
    summary: &mut ReplaySummary,
    opts: &ReplayOptions,
    line: u64,
    message: String,
) -> Result<(), ReplayError> {
    if !opts.skip_bad_rows {
        return Err(ReplayError::Row {
            input: opts.input_name.clone(),
            line,
            message,
        });
    }
    summary.skipped += 1;
    if summary.bad_rows.len() < REPORTED_BAD_ROWS {
        summary.bad_rows.push((line, message));
    }
    Ok(())
}

/// A row's timestamp in ms, or why it is not one, as the replay reports it.
fn timestamp(text: &str, tz: chrono_tz::Tz) -> Result<i64, String> {
    match parse_ts(text, tz) {
        Some(ts) if PLAUSIBLE_MS.contains(&ts) => Ok(ts),
        Some(_) => Err(format!(
            "timestamp `{text}` is outside 1990-2100 (epoch seconds or milliseconds, or ISO-8601)"
        )),
        None => Err(format!(
            "timestamp `{text}` is neither epoch seconds/ms nor ISO-8601"
        )),
    }
}

fn parse_ts(text: &str, tz: chrono_tz::Tz) -> Option<i64> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i64>() {
        // Seconds until the year 5138; milliseconds after 1973.
        return if n.unsigned_abs() < 100_000_000_000 {
            n.checked_mul(1000)
        } else {
            Some(n)
        };
    }
    if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() {
            let ms = if f.abs() < 1e11 { f * 1000.0 } else { f };
            return Some(ms.round() as i64);
        }
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, fmt) {
            return tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|d| d.timestamp_millis());
        }
    }
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(dt.timestamp_millis());
    }
    None
}

/// Field `i` without surrounding whitespace (trimmed here rather than by the CSV reader,
/// which would trim every field of every row).
fn bytes(r: &csv::ByteRecord, i: usize) -> &[u8] {
    r.get(i).unwrap_or_default().trim_ascii()
}

fn field(r: &csv::ByteRecord, i: usize) -> &str {
    std::str::from_utf8(bytes(r, i)).unwrap_or("")
}

/// Runs `input` through `spec`'s rules, writing rows to `output` and events to `events`.
///
/// # Errors
/// [`ReplayError`] for unreadable input (with its line) or a failed write.
pub fn replay<'a, R: Read, W: Write, E: Write>(
    spec: &'a ReplaySpec,
    input: R,
    output: W,
    events: Option<E>,
    opts: &ReplayOptions,
    ledger: Option<&'a mut dyn LedgerSink>,
    progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    replay_with_episodes(spec, input, output, events, opts, ledger, None, progress)
}

/// [`replay`], also writing every anomaly episode to `episodes` in the given format.
///
/// # Errors
/// [`ReplayError`] for unreadable input (with its line) or a failed write.
#[allow(clippy::too_many_arguments)]
pub fn replay_with_episodes<'a, R: Read, W: Write, E: Write>(
    spec: &'a ReplaySpec,
    input: R,
    output: W,
    mut events: Option<E>,
    opts: &ReplayOptions,
    ledger: Option<&'a mut dyn LedgerSink>,
    episodes: Option<(&'a mut dyn Write, episodes::EpisodeFormat)>,
    mut progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    let tz = spec.timezone;
    let episodes = match episodes {
        Some((out, format)) => Some(
            episodes::EpisodeLog::new(
                out,
                format,
                tz,
                spec.devices.iter().map(|d| d.name.clone()).collect(),
            )
            .map_err(|source| ReplayError::Io {
                what: "episodes".into(),
                source,
            })?,
        ),
        None => None,
    };
    let mut stages = Stages {
        spec,
        pipeline: Pipeline::from_spec(
            spec.pipeline.clone(),
            Taps {
                every_poll: true,
                reported: false,
            },
        ),
        out: Outputs::default(),
        ledger,
        episodes,
        last_ms: i64::MIN,
    };
    // Consumption input: running sums per point, and the interval length that dates the
    // counter's zero (one interval before a point's first row).
    let mut sums: std::collections::HashMap<(usize, usize), f64> = std::collections::HashMap::new();
    let interval_ms = i64::try_from(spec.interval.as_millis()).unwrap_or(900_000);
    let fixed =
        match &opts.point {
            Some((d, p)) => {
                let di =
                    stages
                        .pipeline
                        .engine()
                        .device_index(d)
                        .ok_or_else(|| ReplayError::Row {
                            input: opts.input_name.clone(),
                            line: 0,
                            message: format!("--point: no device `{d}` in the config"),
                        })?;
                let pi = stages.pipeline.engine().point_index(di, p).ok_or_else(|| {
                    ReplayError::Row {
                        input: opts.input_name.clone(),
                        line: 0,
                        message: format!("--point: device `{d}` has no point `{p}`"),
                    }
                })?;
                Some((di, pi))
            }
            None => None,
        };
    let names: Vec<(Name, Vec<Name>)> = spec
        .devices
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.points.iter().map(|p| p.name.clone()).collect(),
            )
        })
        .collect();
    // Each point's number rule (docs/payload.md): a recorded value is replayed, and written,
    // with the digits its register carries.
    let precisions: Vec<Vec<Precision>> = spec
        .devices
        .iter()
        .map(|d| d.points.iter().map(|p| p.codec.precision()).collect())
        .collect();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, output);
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| ReplayError::Io { what, source }
    };
    out.write_all(b"timestamp,device,point,value,score,alarms\n")
        .map_err(io("output"))?;
    if let Some(device) = &opts.device {
        let mut summary = wide::replay(
            &mut stages,
            input,
            &mut out,
            &mut events,
            opts,
            device,
            &precisions,
            &mut progress,
        )?;
        stages.finish()?;
        summary.episodes = stages.episodes.as_ref().map_or(0, |l| l.written);
        out.flush().map_err(io("output"))?;
        if let Some(e) = events.as_mut() {
            e.flush().map_err(io("events"))?;
        }
        return Ok(summary);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut summary = ReplaySummary::default();
    let mut lookup: std::collections::HashMap<Vec<u8>, Option<(usize, usize)>> =
        std::collections::HashMap::new();
    let mut key = Vec::with_capacity(64);
    let mut group = Group {
        key: None,
        batch: None,
        rows: Vec::new(),
        len: 0,
    };
    let mut record = csv::ByteRecord::new();
    let mut line = 0u64;
    let columns = if fixed.is_some() { 2 } else { 4 };
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .map_err(|e| ReplayError::Row {
                input: opts.input_name.clone(),
                line: line + 1,
                message: e.to_string(),
            })?;
        if !more {
            break;
        }
        line = record.position().map_or(line + 1, |p| p.line());
        if record.len() != columns {
            let what = if columns == 2 {
                "`timestamp,value` (with --point DEVICE/POINT)"
            } else {
                "`timestamp,device,point,value` (or give --point DEVICE/POINT for `timestamp,value`)"
            };
            reject(
                &mut summary,
                opts,
                line,
                format!("{} columns; expected {what}", record.len()),
            )?;
            continue;
        }
        let ts_text = field(&record, 0);
        let ts = match timestamp(ts_text, tz) {
            Ok(ts) => ts,
            // A header.
            Err(_) if line == 1 && parse_ts(ts_text, tz).is_none() => continue,
            Err(why) => {
                reject(&mut summary, opts, line, why)?;
                continue;
            }
        };
        let value_text = field(&record, columns - 1);
        let value = if value_text.is_empty() {
            None
        } else {
            match value_text.parse::<f64>() {
                Ok(v) if v.is_finite() => Some(v),
                Ok(_) => {
                    reject(
                        &mut summary,
                        opts,
                        line,
                        format!("value `{value_text}` is not a finite number"),
                    )?;
                    continue;
                }
                Err(_) => match value_text {
                    "true" | "TRUE" | "True" => Some(1.0),
                    "false" | "FALSE" | "False" => Some(0.0),
                    _ => {
                        reject(
                            &mut summary,
                            opts,
                            line,
                            format!("value `{value_text}` is not a number"),
                        )?;
                        continue;
                    }
                },
            }
        };
        summary.rows += 1;
        if summary.rows % 1_000_000 == 0 {
            progress(summary.rows);
        }
        let target = match fixed {
            Some(t) => Some(t),
            None => {
                key.clear();
                key.extend_from_slice(bytes(&record, 1));
                key.push(0);
                key.extend_from_slice(bytes(&record, 2));
                match lookup.get(key.as_slice()) {
                    Some(t) => *t,
                    None => {
                        let d = field(&record, 1);
                        let p = field(&record, 2);
                        let t = stages.pipeline.engine().device_index(d).and_then(|di| {
                            stages
                                .pipeline
                                .engine()
                                .point_index(di, p)
                                .map(|pi| (di, pi))
                        });
                        lookup.insert(key.clone(), t);
                        t
                    }
                }
            }
        };
        let Some((di, pi)) = target else {
            summary.unknown += 1;
            if summary.first_unknown.is_none() {
                summary.first_unknown =
                    Some(format!("{}/{}", field(&record, 1), field(&record, 2)));
            }
            flush_group(
                &mut group,
                &mut stages,
                &mut out,
                &mut events,
                &mut summary,
                &names,
                fixed,
            )?;
            write_row(&mut out, &record, fixed, &names, None, &[]).map_err(io("output"))?;
            continue;
        };
        // Consumption is summed into a counter; only a reading is the register's own value.
        let value = match value {
            Some(v) if !opts.consumption => {
                let honest = precisions[di][pi].apply(v);
                if honest.to_bits() != v.to_bits() {
                    rewrite_field(&mut record, columns - 1, honest);
                }
                Some(honest)
            }
            v => v,
        };
        let value = match (opts.consumption, value) {
            (true, Some(v)) => {
                if !sums.contains_key(&(di, pi)) {
                    // The counter starts at zero one interval before the first consumption.
                    flush_group(
                        &mut group,
                        &mut stages,
                        &mut out,
                        &mut events,
                        &mut summary,
                        &names,
                        fixed,
                    )?;
                    let zero = SampleBatch {
                        device: names[di].0.clone(),
                        tick: Timestamp(ts - interval_ms),
                        samples: vec![PointSample {
                            point: names[di].1[pi].clone(),
                            ts: Timestamp(ts - interval_ms),
                            value: Some(Value::F64(0.0)),
                            quality: Quality::Good,
                        }],
                    };
                    stages.run(zero, di)?;
                }
                let sum = sums.entry((di, pi)).or_insert(0.0);
                *sum += v;
                Some(*sum)
            }
            (_, v) => v,
        };
        if group.key != Some((ts, di)) {
            flush_group(
                &mut group,
                &mut stages,
                &mut out,
                &mut events,
                &mut summary,
                &names,
                fixed,
            )?;
            group.key = Some((ts, di));
        }
        let (device, points) = &names[di];
        let batch = group.batch.get_or_insert_with(|| SampleBatch {
            device: device.clone(),
            tick: Timestamp(ts),
            samples: Vec::new(),
        });
        if batch.samples.is_empty() {
            batch.device.clone_from(device);
            batch.tick = Timestamp(ts);
        }
        batch.samples.push(PointSample {
            point: points[pi].clone(),
            ts: Timestamp(ts),
            value: value.map(Value::F64),
            quality: if value.is_some() {
                Quality::Good
            } else {
                Quality::Bad(BadReason::CommLost)
            },
        });
        // Swap the record into the group and take a spare one to read the next row into.
        if group.len == group.rows.len() {
            group.rows.push(Pending {
                record: csv::ByteRecord::new(),
                target: None,
            });
        }
        let slot = &mut group.rows[group.len];
        std::mem::swap(&mut slot.record, &mut record);
        slot.target = Some((di, pi));
        group.len += 1;
    }
    flush_group(
        &mut group,
        &mut stages,
        &mut out,
        &mut events,
        &mut summary,
        &names,
        fixed,
    )?;
    stages.finish()?;
    summary.episodes = stages.episodes.as_ref().map_or(0, |l| l.written);
    out.flush().map_err(io("output"))?;
    if let Some(e) = events.as_mut() {
        e.flush().map_err(io("events"))?;
    }
    Ok(summary)
}

/// Writes the alarm events of the poll just run and counts them.
fn write_events<E: Write>(
    stages: &Stages<'_>,
    events: &mut Option<E>,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    if let Some(e) = events.as_mut() {
        for ev in &stages.out.events {
            let written = e
                .write_all(&json_v1::alarm(ev))
                .and_then(|()| e.write_all(b"\n"));
            written.map_err(|source| ReplayError::Io {
                what: "events".into(),
                source,
            })?;
        }
    }
    summary.events += stages.out.events.len() as u64;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn flush_group<W: Write, E: Write>(
    group: &mut Group,
    stages: &mut Stages<'_>,
    out: &mut W,
    events: &mut Option<E>,
    summary: &mut ReplaySummary,
    names: &[(Name, Vec<Name>)],
    fixed: Option<(usize, usize)>,
) -> Result<(), ReplayError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| ReplayError::Io { what, source }
    };
    if let Some(batch) = group.batch.take_if(|b| !b.samples.is_empty()) {
        let di = group.key.map_or(0, |(_, di)| di);
        group.batch = stages.run(batch, di)?.map(|mut b| {
            b.samples.clear();
            b
        });
        write_events(stages, events, summary)?;
    }
    let mut alarms: Vec<&str> = Vec::new();
    for row in &group.rows[..group.len] {
        alarms.clear();
        let score = row.target.and_then(|(di, pi)| {
            alarms.extend(stages.pipeline.engine().raised_for(di, pi));
            stages.pipeline.engine().score(di, pi)
        });
        write_row(out, &row.record, fixed, names, score, &alarms).map_err(io("output"))?;
    }
    group.key = None;
    group.len = 0;
    Ok(())
}

fn write_row<W: Write>(
    out: &mut W,
    record: &csv::ByteRecord,
    fixed: Option<(usize, usize)>,
    names: &[(Name, Vec<Name>)],
    score: Option<f64>,
    alarms: &[&str],
) -> std::io::Result<()> {
    let text = |i: usize| bytes(record, i);
    out.write_all(text(0))?;
    out.write_all(b",")?;
    match fixed {
        Some((di, pi)) => {
            out.write_all(names[di].0.as_str().as_bytes())?;
            out.write_all(b",")?;
            out.write_all(names[di].1[pi].as_str().as_bytes())?;
            out.write_all(b",")?;
            out.write_all(text(1))?;
        }
        None => {
            out.write_all(text(1))?;
            out.write_all(b",")?;
            out.write_all(text(2))?;
            out.write_all(b",")?;
            out.write_all(text(3))?;
        }
    }
    write_score_alarms(out, score, alarms)
}

/// The `,score,alarms` end of an output row, and its newline.
fn write_score_alarms<W: Write>(
    out: &mut W,
    score: Option<f64>,
    alarms: &[&str],
) -> std::io::Result<()> {
    out.write_all(b",")?;
    if let Some(s) = score.filter(|s| s.is_finite()) {
        // Full precision (the shortest text that reads back as the same f64): four decimals
        // made thousands of rows of a lasting change read `1.0000`, hiding how the score
        // moved. ryu (already in the build through csv) is several times faster than `{}`.
        out.write_all(
            ryu::Buffer::new()
                .format_finite(s.clamp(0.0, 1.0))
                .as_bytes(),
        )?;
    }
    out.write_all(b",")?;
    for (i, a) in alarms.iter().enumerate() {
        if i > 0 {
            out.write_all(b";")?;
        }
        out.write_all(a.as_bytes())?;
    }
    out.write_all(b"\n")
}

/// Replaces field `at` of `record` with `value` in its shortest form: only for a recorded
/// value written with more digits than its register carries, so a clean input costs nothing.
fn rewrite_field(record: &mut csv::ByteRecord, at: usize, value: f64) {
    let mut text = ryu::Buffer::new();
    let text = text.format_finite(value).as_bytes();
    let mut rewritten = csv::ByteRecord::with_capacity(record.as_slice().len(), record.len());
    for (i, f) in record.iter().enumerate() {
        rewritten.push_field(if i == at { text } else { f });
    }
    *record = rewritten;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_written_with_full_precision() {
        let mut record = csv::ByteRecord::new();
        record.push_field(b"1760000000");
        record.push_field(b"1");
        let names = vec![(Name::new("d").unwrap(), vec![Name::new("p").unwrap()])];
        let mut out = Vec::new();
        for score in [0.999_871_234_5, 1e-9, 1.0] {
            write_row(&mut out, &record, Some((0, 0)), &names, Some(score), &[]).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let scores: Vec<f64> = text
            .lines()
            .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
            .collect();
        assert_eq!(scores, [0.999_871_234_5, 1e-9, 1.0], "{text}");
    }

    #[test]
    fn timestamps_in_every_documented_form() {
        let tz = chrono_tz::Asia::Shanghai;
        assert_eq!(parse_ts("1764374400", tz), Some(1_764_374_400_000));
        assert_eq!(parse_ts("1764374400000", tz), Some(1_764_374_400_000));
        assert_eq!(parse_ts("1764374400.5", tz), Some(1_764_374_400_500));
        assert_eq!(
            parse_ts("2025-11-29T00:00:00Z", tz),
            Some(1_764_374_400_000)
        );
        assert_eq!(
            parse_ts("2025-11-29T08:00:00+08:00", tz),
            Some(1_764_374_400_000)
        );
        // No offset: the gateway's local time.
        assert_eq!(parse_ts("2025-11-29 08:00:00", tz), Some(1_764_374_400_000));
        assert_eq!(
            parse_ts("2025-11-29T08:00:00.250", tz),
            Some(1_764_374_400_250)
        );
        assert_eq!(parse_ts("timestamp", tz), None);
    }
}
