//! `plantwatch export`: the energy report of a month or a date range, from the ledger.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::NaiveDate;

use crate::export::{Builder, Span};

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// One table (a `level` column says what each row sums).
    Csv,
    /// The whole report as one JSON object.
    Json,
    /// One self-contained page with charts and tables, to open, print and send.
    Html,
}

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads the ledger in the state file: while the daemon runs (it only reads), or from a copy.
Periods are local dates in the gateway's time zone; --to is inclusive. With --output and a
terminal, a progress line shows on stderr.

Examples:
  plantwatch export --month 2026-10                        last month, CSV to stdout
  plantwatch export --month 2026-10 --format json --output oct.json
  plantwatch export --month 2026-10 --format html --output oct.html
                                                           charts and tables, to print or send
  plantwatch export --from 2026-10-01 --to 2026-10-15 --state copy-of-state.db
  plantwatch export -c plant.toml --month 2026-10 | head  a closed pipe ends it quietly

A copy for --state is made with `plantwatch backup STATE DEST`; a `cp` of a running state file
misses what is in its WAL, and export says so.")]
pub(super) struct Args {
    /// Read this state file instead of the config's (e.g. a copy).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// A calendar month, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM", conflicts_with_all = ["from", "to"])]
    month: Option<String>,
    /// First day, YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD", requires = "to")]
    from: Option<String>,
    /// Last day (inclusive), YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD", requires = "from")]
    to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Write here instead of stdout (and show progress when stderr is a terminal).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn date(s: &str, what: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{what} `{s}`: expected a date as YYYY-MM-DD"))
}

fn local_midnight(tz: chrono_tz::Tz, d: NaiveDate) -> anyhow::Result<i64> {
    crate::clock::local_midnight(tz, d)
        .with_context(|| format!("{d} has no local midnight in {tz}"))
}

fn span(args: &Args, tz: chrono_tz::Tz) -> anyhow::Result<Span> {
    let (first, after, label) = match (&args.month, &args.from, &args.to) {
        (Some(m), _, _) => {
            let first = date(&format!("{m}-01"), "--month")
                .with_context(|| format!("--month `{m}`: expected YYYY-MM"))?;
            let after = first
                .checked_add_months(chrono::Months::new(1))
                .context("month out of range")?;
            (first, after, m.clone())
        }
        (None, Some(f), Some(t)) => {
            let first = date(f, "--from")?;
            let last = date(t, "--to")?;
            anyhow::ensure!(last >= first, "--to {t} is before --from {f}");
            let after = last.succ_opt().context("date out of range")?;
            (first, after, format!("{f}..{t}"))
        }
        _ => anyhow::bail!("give --month YYYY-MM, or --from and --to"),
    };
    Ok(Span {
        label,
        from_ms: local_midnight(tz, first)?,
        to_ms: local_midnight(tz, after)?,
        timezone: tz.name().to_owned(),
    })
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
    let tz = plan.gateway.timezone;
    let span = span(args, tz).map_err(super::usage)?;
    let path = args
        .state
        .clone()
        .unwrap_or_else(|| plan.store.path.clone());
    let conn = crate::store::offline::open(&path, false).map_err(super::offline_failed)?;
    let spec = plan.energy.report_spec();
    let mut builder = Builder::new(span.clone(), &spec);
    // Progress only where someone watches it and it cannot mix with the report on stdout.
    let mut progress = (args.output.is_some() && std::io::stderr().is_terminal())
        .then(|| Progress::new(builder.expected_rows(), crate::clock::monotonic()));
    let mut rows: u64 = 0;
    let meters: Vec<&str> = plan.energy.meters.iter().map(|m| m.name.as_str()).collect();
    // The savings baselines lie before the span, usually: one more pass over their dates.
    if let Some((from, to)) = builder.baseline_span() {
        crate::store::ledger::for_each(&conn, &meters, from, to, |meter, at, delta, q, _| {
            builder.add_baseline(meter, at.0, delta, q);
        })
        .with_context(|| format!("cannot read the savings baselines in {}", path.display()))
        .map_err(super::io_failed)?;
    }
    crate::store::ledger::for_each(
        &conn,
        &meters,
        span.from_ms,
        span.to_ms,
        |meter, at, delta, q, tou| {
            builder.add(meter, at, delta, q, tou);
            rows += 1;
            // Reading the clock costs more than adding a row: look only every 4096 rows.
            if rows % 4096 == 0 {
                if let Some(line) = progress
                    .as_mut()
                    .and_then(|p| p.tick(rows, crate::clock::monotonic()))
                {
                    std::io::stderr().write_all(line.as_bytes()).ok();
                }
            }
        },
    )
    .with_context(|| format!("cannot read the ledger in {}", path.display()))
    .map_err(super::io_failed)?;
    if let Some(line) = progress.as_ref().and_then(|p| p.done(rows)) {
        std::io::stderr().write_all(line.as_bytes()).ok();
    }
    for e in crate::store::ledger::events(&conn, &meters, span.from_ms, span.to_ms)
        .with_context(|| format!("cannot read the ledger's events in {}", path.display()))?
    {
        builder.add_event(&e);
    }
    let report = builder.finish();
    let local = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| {
                t.with_timezone(&tz)
                    .format("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let text = match args.format {
        Format::Csv => crate::export::csv::render(&report, local),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&report)?;
            s.push('\n');
            s
        }
        Format::Html => crate::export::html::render(&report, local),
    };
    match &args.output {
        Some(p) => std::fs::write(p, text)
            .with_context(|| format!("cannot write {}", p.display()))
            .map_err(super::io_failed)?,
        None => {
            // A closed pipe (`| head`) is not an error worth a message.
            std::io::stdout().write_all(text.as_bytes()).ok();
        }
    }
    if report.completeness.expected > 0 && report.completeness.measured_percent() < 90.0 {
        eprintln!(
            "plantwatch: note: only {} % of the period's intervals were measured ({} estimated, {} missing)",
            report.completeness.measured_percent_text(),
            report.completeness.estimated,
            report.completeness.missing
        );
    }
    if report.completeness.events > 0 {
        eprintln!(
            "plantwatch: note: {} counter events (wrap, reset, replacement, jump) in the period; \
             the report lists them",
            report.completeness.events
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The progress line of a long export: `\r` and a percentage on stderr, redrawn at most
/// ten times a second, and only once an export has run for that long (a short one prints
/// nothing). The estimate is every interval of every meter, which a complete ledger has;
/// the display stops at 99 % until the rows are all read, since a ledger can hold more.
#[derive(Debug)]
struct Progress {
    expected: u64,
    /// When the line may next be drawn.
    next: Instant,
    drawn: bool,
}

impl Progress {
    const EVERY: Duration = Duration::from_millis(100);

    fn new(expected: u64, now: Instant) -> Self {
        Self {
            expected,
            next: now + Self::EVERY,
            drawn: false,
        }
    }

    /// The line to draw after `rows` rows at `now`, if it is time.
    fn tick(&mut self, rows: u64, now: Instant) -> Option<String> {
        if now < self.next {
            return None;
        }
        self.next = now + Self::EVERY;
        self.drawn = true;
        let percent = rows
            .saturating_mul(100)
            .checked_div(self.expected)
            .map_or(99, |p| p.min(99));
        Some(format!(
            "\rexporting: {percent:>2} % ({rows} of ~{} intervals)",
            self.expected
        ))
    }

    /// The final line (ending the progress line) once all `rows` are read, if one was drawn.
    fn done(&self, rows: u64) -> Option<String> {
        // Trailing spaces wipe the longer estimate of the last line drawn.
        self.drawn
            .then(|| format!("\rexporting: 100 % ({rows} intervals read){:12}\n", ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_silent_for_a_short_export_and_redraws_at_most_ten_times_a_second() {
        let t0 = crate::clock::monotonic();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Progress::new(1000, t0);
        assert_eq!(p.tick(10, ms(50)), None);
        assert_eq!(p.done(20), None, "a short export leaves stderr alone");
        let line = p.tick(250, ms(100)).unwrap();
        assert_eq!(line, "\rexporting: 25 % (250 of ~1000 intervals)");
        assert_eq!(p.tick(300, ms(150)), None);
        assert!(p.tick(400, ms(200)).unwrap().contains("40 %"));
        // More rows than estimated: never 100 % before the end.
        assert!(p.tick(5000, ms(400)).unwrap().contains("99 %"));
        assert!(p.done(5000).unwrap().ends_with('\n'));
    }
}
