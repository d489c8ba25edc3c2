//! `plantwatch upload`: (re-)upload a date range of energy-platform records from the ledger.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDate;

use crate::platform::record::{Record, StatType, Versions, local_datetime};
use crate::sink::platform_http::{Uplink, UplinkConfig};

/// Arguments of `upload`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Builds the [energy_platform] records whose statDate falls in --from..--to (local dates,
inclusive) from the ledger, exactly as the daemon builds them, and posts them to the platform
over [energy_platform.https]. The same ledger gives the same records with the same keys, so
the platform can drop what it already has. Day and month records are built from whole days
and months, and only for periods that have ended.

Examples:
  plantwatch upload --from 2026-10-01 --to 2026-10-31              re-send October
  plantwatch upload --from 2026-10-05 --to 2026-10-05 --stat-type day
  plantwatch upload --from 2026-10-01 --to 2026-10-31 --dry-run    print what would go")]
pub(super) struct Args {
    /// Read this state file instead of the config's.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// First day, YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    from: String,
    /// Last day (inclusive), YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    to: String,
    /// Only these statTypes (default: what each item produces).
    #[arg(long, value_enum, value_delimiter = ',')]
    stat_type: Vec<Kind>,
    /// Print the payloads as JSON lines instead of sending them.
    #[arg(long)]
    dry_run: bool,
}

/// A statType as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    /// statType 0, every ledger interval.
    Realtime,
    /// statType 1.
    Day,
    /// statType 2.
    Month,
    /// statType 3.
    Year,
}

impl Kind {
    fn stat_type(self) -> StatType {
        match self {
            Self::Realtime => StatType::Realtime,
            Self::Day => StatType::Day,
            Self::Month => StatType::Month,
            Self::Year => StatType::Year,
        }
    }
}

fn date(text: &str, what: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("{what} `{text}`: expected a date as YYYY-MM-DD"))
}

/// Tries per record before giving up on a failure worth retrying.
const ATTEMPTS: u32 = 3;

pub(super) async fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let plan = match super::load(config, profiles_dir) {
        Ok(p) => p,
        Err(errors) => return Ok(super::config_failed(&errors)),
    };
    let Some(platform) = plan.energy_platform.as_ref() else {
        anyhow::bail!(
            "{} has no [energy_platform] section: nothing to upload",
            config.display()
        );
    };
    let (from, to) = (
        date(&args.from, "--from").map_err(super::usage)?,
        date(&args.to, "--to").map_err(super::usage)?,
    );
    if from > to {
        return Err(super::usage(format!("--to {to} is before --from {from}")));
    }
    let tz = platform.spec.timezone;
    let path = args
        .state
        .clone()
        .unwrap_or_else(|| plan.store.path.clone());
    let now_ms = crate::clock::Clock::now(&crate::clock::SystemClock).0;
    let wanted: Vec<StatType> = args.stat_type.iter().map(|k| k.stat_type()).collect();
    // The daemon's `upload` command builds its records with the same call.
    let records: Vec<Record> = crate::store::platform_source::records_for_range(
        &path,
        &platform.spec,
        from,
        to,
        &wanted,
        now_ms,
    )
    .await?;
    let uploaded = local_datetime(tz, now_ms).context("the local time now")?;
    if args.dry_run {
        let mut stdout = std::io::stdout().lock();
        for r in &records {
            let line = serde_json::to_string(&r.payload(&Versions::default(), uploaded))?;
            // `--dry-run | head -1`: a reader that has had enough ends the listing quietly.
            if writeln!(stdout, "{line}").is_err() {
                return Ok(ExitCode::SUCCESS);
            }
        }
        eprintln!(
            "{} records from the ledger in {} (not sent: --dry-run)",
            records.len(),
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(https) = &platform.https else {
        anyhow::bail!(
            "{}: [energy_platform.https] is not configured; add it, or use --dry-run",
            config.display()
        );
    };
    let password = https.password.read_first_line().map_err(|(at, why)| {
        anyhow::anyhow!("cannot read the platform password from {at}: {why}")
    })?;
    let ca_pem = https
        .ca_file
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let mut uplink = Uplink::new(UplinkConfig {
        base_url: https.url.clone(),
        enterprise_code: platform.spec.enterprise_code.as_str().to_owned(),
        password,
        ca_pem,
        timeout: https.timeout,
    })?;
    let (mut sent, mut refused) = (0_usize, 0_usize);
    for r in &records {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match uplink.send(r, uploaded).await {
                Ok(()) => {
                    sent += 1;
                    break;
                }
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    eprintln!("{}: {e}; retrying", r.key);
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
                }
                Err(e) if e.is_retryable() => {
                    return Err(super::failure(
                        super::EX_UNAVAILABLE,
                        anyhow::anyhow!(
                            "{}: {e}; stopped after {sent} of {} records sent (run again to \
                             resume: the keys are the same)",
                            r.key,
                            records.len()
                        ),
                    ));
                }
                Err(e) => {
                    eprintln!("{}: {e}; skipped", r.key);
                    refused += 1;
                    break;
                }
            }
        }
    }
    eprintln!("{sent} records sent, {refused} refused by the platform");
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
