//! `plantwatch replay`: recorded CSV through process + detect at full speed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::rules::RuleKind;
use crate::replay::episodes::EpisodeFormat;
use crate::replay::{ReplayError, ReplayOptions, replay_with_episodes};

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Input, one of three CSV forms:
  timestamp,device,point,value     many points; a header line is optional
  timestamp,value                  one point, named with --point DEVICE/POINT
  timestamp;col1;col2;...          a wide historian export of one device (--device NAME):
                                   a header row is required; `;` if the header has one (then
                                   a decimal comma is read too), else `,`. Each column is
                                   matched to a point of the device by name, exactly or
                                   lower-cased with other characters as `_` (`Volume Flow
                                   RateRMS` is `volume_flow_raterms`). Columns that are no
                                   point (labels, quality flags) are ignored and listed at the
                                   end; a header naming no point, or one point twice, is an
                                   error. One row is one poll.
Timestamps: epoch seconds or ms, or ISO-8601 (an offset, `Z`, or none for the gateway's local
time). An empty value is a point the device did not answer.
A malformed row (column count, timestamp, a value that is not a finite number) stops the
replay with its line number (exit status 65); --skip-bad-rows skips it, counts it and lists
the first 10 with their lines.

Output (stdout unless --output): timestamp,device,point,value,score,alarms
  score   the anomaly score in [0, 1] where the point has an anomaly rule, else empty:
          the evidence that a new anomaly starts at this row, at full precision
  alarms  the alarms raised on that row's point or device, `;`-separated
--events writes every alarm change as one JSON object per line, as on the alarm topic.
--episodes writes every anomaly episode, one per line, when it ends (those still open at the
  end of the input last, without an end). CSV, or JSON lines if FILE ends in .jsonl, .ndjson
  or .json:
    device,alarm,point,kind,start,end,start_ms,end_ms,peak_score,points
  kind is spike, level_shift, drift, variance or stuck; start and end are ISO-8601 in the
  gateway's time zone; peak_score is the highest onset score of the episode; points are the
  points that explain it as `point:share` joined by `;` (a device-level model's points with
  at least 1 % of the deviation summed over the episode, largest first; a point model's own
  point with 1). JSON lines carry the same fields, points as [{\"point\",\"share\"}].
--state FILE also keeps what the replay learned: the energy ledger (history import for
  `plantwatch export`) and the trained anomaly, trend and rate models, which a later
  `plantwatch run` with the same state file and the same rules resumes from. The replay
  itself starts from fresh models and replaces those saved in the file.

Examples:
  tune a rule on last month's bearing temperature, then deploy it:
    plantwatch replay -c plantwatch.toml bearing.csv --point motor-1/bearing_temp \\
        --output scored.csv --events alarms.jsonl
  list the anomalies of a pump in a historian export:
    plantwatch replay -c plantwatch.toml pump-export.csv --device pump-1 \\
        --output /dev/null --episodes episodes.csv")]
pub(super) struct Args {
    /// The recorded samples (CSV); `-` reads stdin.
    #[arg(value_name = "INPUT")]
    first: PathBuf,
    /// The input, when the deprecated `replay CONFIG INPUT` form put the config first.
    #[arg(hide = true)]
    second: Option<PathBuf>,
    /// The point of a two-column `timestamp,value` input.
    #[arg(long, value_name = "DEVICE/POINT")]
    point: Option<String>,
    /// The device of a wide export `timestamp;point1;point2;…` (header row of point names).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["point", "consumption"])]
    device: Option<String>,
    /// Write the scored rows here instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Write the alarm events here, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Write each anomaly episode here, one per line (CSV, or JSON lines for `*.jsonl`).
    #[arg(long, value_name = "FILE")]
    episodes: Option<PathBuf>,
    /// Skip malformed rows (counted) instead of stopping at the first.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Keep what the replay learned in this state file: the energy ledger's intervals and
    /// counters (history import for `plantwatch export`) and the trained anomaly, trend and
    /// rate models, which a later `plantwatch run` with the same rules resumes.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// The values are consumption per interval (the timestamp ends the interval), not meter
    /// counter readings.
    #[arg(long)]
    consumption: bool,
}

/// Writes a replay's ledger into a state file through the store thread.
struct StateSink {
    rt: tokio::runtime::Runtime,
    store: crate::store::StoreHandle,
    written: u64,
    /// Counter events written.
    events: u64,
    /// Trained models saved.
    models: usize,
}

impl crate::replay::LedgerSink for StateSink {
    fn intervals(
        &mut self,
        intervals: Vec<crate::process::ledger::LedgerInterval>,
    ) -> std::io::Result<()> {
        self.written += intervals.len() as u64;
        self.rt
            .block_on(self.store.save_intervals(intervals))
            .map_err(std::io::Error::other)
    }

    fn events(&mut self, events: Vec<crate::process::ledger::LedgerEvent>) -> std::io::Result<()> {
        // A replayed history's wraps and resets deserve the same word as live ones.
        for e in &events {
            eprintln!(
                "replay: warning: meter `{}` ({}/{}) {} at {} ms: {}",
                e.meter,
                e.device,
                e.point,
                e.event.kind.as_str(),
                e.event.at_ms,
                e.describe()
            );
        }
        self.events += events.len() as u64;
        self.rt
            .block_on(self.store.save_energy_events(events))
            .map_err(std::io::Error::other)
    }

    fn states(&mut self, states: Vec<(String, String)>) -> std::io::Result<()> {
        if states.is_empty() {
            return Ok(());
        }
        self.rt
            .block_on(
                self.store
                    .save_state(crate::process::ledger::STATE_SCOPE, states),
            )
            .map_err(std::io::Error::other)
    }

    fn models(
        &mut self,
        snapshots: Vec<crate::detect::snapshot::ModelSnapshot>,
        at_ms: i64,
    ) -> std::io::Result<()> {
        self.models = snapshots.len();
        if snapshots.is_empty() {
            return Ok(());
        }
        self.rt
            .block_on(self.store.save_models(snapshots, at_ms))
            .map_err(std::io::Error::other)
    }
}

impl Args {
    /// The config of the deprecated `replay CONFIG INPUT` form.
    pub(super) fn positional_config(&self) -> Option<&Path> {
        self.second.as_ref().map(|_| self.first.as_path())
    }

    /// The recorded samples.
    fn input(&self) -> &Path {
        self.second.as_deref().unwrap_or(&self.first)
    }
}

pub(super) fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let plan = match super::load(config, profiles_dir) {
        Ok(p) => p,
        Err(errors) => return Ok(super::config_failed(&errors)),
    };
    let point = match &args.point {
        None => None,
        Some(s) => match s.split_once('/') {
            Some((d, p)) if !d.is_empty() && !p.is_empty() => Some((d.to_owned(), p.to_owned())),
            _ => {
                return Err(super::usage(format!(
                    "--point `{s}`: write it as DEVICE/POINT, e.g. motor-1/bearing_temp"
                )));
            }
        },
    };
    let opts = ReplayOptions {
        point,
        device: args.device.clone(),
        skip_bad_rows: args.skip_bad_rows,
        input_name: args.input().display().to_string(),
        consumption: args.consumption,
    };
    let learns = plan.rules.iter().any(|r| {
        matches!(
            r.kind,
            RuleKind::Anomaly { .. } | RuleKind::Trend { .. } | RuleKind::Rate { .. }
        )
    });
    if args.state.is_some() && plan.energy.meters.is_empty() && !learns {
        anyhow::bail!(
            "--state: {} has no [[meters]] or [[production]] and no anomaly, trend or rate \
             rule; the state file would stay empty",
            config.display()
        );
    }
    let mut sink = match &args.state {
        Some(path) => Some(StateSink {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            store: crate::store::Store::open(path, crate::store::OutboxLimits::from(&plan.store))?,
            written: 0,
            events: 0,
            models: 0,
        }),
        None => None,
    };
    let input: Box<dyn std::io::Read> = if args.input() == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            File::open(args.input())
                .with_context(|| format!("cannot open {}", args.input().display()))
                .map_err(super::io_failed)?,
        )
    };
    let output: Box<dyn std::io::Write> = match &args.output {
        Some(p) => Box::new(
            File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))
                .map_err(super::io_failed)?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let events = match &args.events {
        Some(p) => Some(std::io::BufWriter::new(
            File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))
                .map_err(super::io_failed)?,
        )),
        None => None,
    };
    let started = crate::clock::monotonic();
    let show_progress =
        args.output.is_some() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let ledger = sink
        .as_mut()
        .map(|s| s as &mut dyn crate::replay::LedgerSink);
    let mut episodes = match &args.episodes {
        Some(p) => Some(std::io::BufWriter::new(
            File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))
                .map_err(super::io_failed)?,
        )),
        None => None,
    };
    let episode_format = args
        .episodes
        .as_deref()
        .map_or(EpisodeFormat::Csv, EpisodeFormat::for_path);
    let episodes_out = episodes
        .as_mut()
        .map(|w| (w as &mut dyn std::io::Write, episode_format));
    let spec = plan.replay_spec();
    let summary = match replay_with_episodes(
        &spec,
        input,
        output,
        events,
        &opts,
        ledger,
        episodes_out,
        |rows| {
            if show_progress {
                eprint!("\r{rows} rows…");
            }
        },
    ) {
        Ok(summary) => summary,
        // `replay … | head`: the reader has what it wanted.
        Err(ReplayError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe && args.output.is_none() =>
        {
            return Ok(ExitCode::SUCCESS);
        }
        Err(e @ ReplayError::Row { .. }) => return Err(super::failure(super::EX_DATAERR, e)),
        Err(e @ ReplayError::Io { .. }) => return Err(super::io_failed(e)),
    };
    let secs = started.elapsed().as_secs_f64();
    if show_progress {
        eprint!("\r");
    }
    eprintln!(
        "replay: {} rows in {secs:.2} s ({:.0} rows/s), {} alarm events",
        summary.rows,
        summary.rows as f64 / secs.max(1e-9),
        summary.events
    );
    if let Some(p) = &args.episodes {
        eprintln!(
            "replay: {} anomaly episodes written to {}",
            summary.episodes,
            p.display()
        );
    }
    if !summary.unknown_columns.is_empty() {
        eprintln!(
            "replay: {} columns name no point of device `{}` and were ignored: {}",
            summary.unknown_columns.len(),
            args.device.as_deref().unwrap_or_default(),
            summary.unknown_columns.join(", ")
        );
    }
    if let Some(s) = &sink {
        let state = args
            .state
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !plan.energy.meters.is_empty() {
            eprintln!("replay: {} ledger intervals written to {state}", s.written);
        }
        if s.models > 0 {
            eprintln!(
                "replay: {} trained models (anomaly, trend, rate) saved to {state}; \
                 `plantwatch run` with this state file and the same rules resumes them",
                s.models
            );
        }
        if s.events > 0 {
            eprintln!(
                "replay: {} counter events (wrap, reset, replacement, jump) written beside them",
                s.events
            );
        }
    }
    if summary.skipped > 0 {
        eprintln!("replay: skipped {} malformed rows", summary.skipped);
        for (line, why) in &summary.bad_rows {
            eprintln!("  line {line}: {why}");
        }
        if summary.skipped > summary.bad_rows.len() as u64 {
            eprintln!("  (only the first {} are listed)", summary.bad_rows.len());
        }
    }
    if summary.unknown > 0 {
        eprintln!(
            "replay: {} rows name a device or point not in {} (first: {}); passed through unscored",
            summary.unknown,
            config.display(),
            summary.first_unknown.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
