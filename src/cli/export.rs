//! `plantwatch export`: the energy report of a month or a date range, from the ledger.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{NaiveDate, TimeZone};

use crate::export::{Builder, Span};
use crate::store::alarms::offline;

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// One table (a `level` column says what each row sums).
    Csv,
    /// The whole report as one JSON object.
    Json,
}

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads the ledger in the state file: while the daemon runs (it only reads), or from a copy.
Periods are local dates in the gateway's time zone; --to is inclusive.

Examples:
  plantwatch export --month 2026-10                        last month, CSV to stdout
  plantwatch export --month 2026-10 --format json --output oct.json
  plantwatch export --from 2026-10-01 --to 2026-10-15 --state copy-of-state.db")]
pub(super) struct Args {
    /// The config (meters, groups, coefficients, and its state file).
    #[arg(long, default_value_os_t = super::default_config(), env = "PLANTWATCH_CONFIG")]
    config: PathBuf,
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
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn date(s: &str, what: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{what} `{s}`: expected a date as YYYY-MM-DD"))
}

fn local_midnight(tz: chrono_tz::Tz, d: NaiveDate) -> anyhow::Result<i64> {
    let naive = d.and_hms_opt(0, 0, 0).context("midnight")?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
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

pub(super) fn run(args: &Args, profiles_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let plan = match super::load(&args.config, profiles_dir) {
        Ok(p) => p,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(78));
        }
    };
    let tz = plan.gateway.timezone;
    let span = span(args, tz)?;
    let path = args
        .state
        .clone()
        .unwrap_or_else(|| plan.store.path.clone());
    let conn = offline::open(&path, false).map_err(anyhow::Error::msg)?;
    let mut builder = Builder::new(span.clone(), &plan.energy);
    crate::store::ledger::for_each(
        &conn,
        span.from_ms,
        span.to_ms,
        |meter, at, delta, q, tou| {
            builder.add(meter, at, delta, q, tou);
        },
    )
    .with_context(|| format!("cannot read the ledger in {}", path.display()))?;
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
    };
    match &args.output {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => {
            use std::io::Write as _;
            // A closed pipe (`| head`) is not an error worth a message.
            std::io::stdout().write_all(text.as_bytes()).ok();
        }
    }
    if report.completeness.expected > 0 && report.completeness.measured_percent() < 90.0 {
        eprintln!(
            "plantwatch: note: only {:.1} % of the period's intervals were measured ({} estimated, {} missing)",
            report.completeness.measured_percent(),
            report.completeness.estimated,
            report.completeness.missing
        );
    }
    Ok(ExitCode::SUCCESS)
}
