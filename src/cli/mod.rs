//! The command line: the one module that prints to stdout.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI is the one module that prints for people"
)]

/// `println!` that ignores a closed stdout (`plantwatch check … | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).ok();
    }};
}

mod alarms;
mod audit;
mod check;
// A build without the `demo` feature has no embedded broker; its `demo` only says so.
#[cfg_attr(not(feature = "demo"), path = "demo_unavailable.rs")]
mod demo;
mod export;
mod read;
mod replay;
mod run;
mod sign;
mod simulate;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{ConfigErrors, EnvOverrides, Plan};

/// plantwatch: read PLCs and energy meters over Modbus, detect anomalies and overuse, and
/// deliver everything to the energy platform without losing a sample.
#[derive(Debug, Parser)]
#[command(name = "plantwatch", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// Log format: `text` for terminals (compact under journald), `json` for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info`, `plantwatch=debug` (overrides RUST_LOG).
    #[arg(long, global = true)]
    log: Option<String>,
    /// A directory of profile files that override or add to the built-in profiles.
    #[arg(long, global = true, value_name = "DIR")]
    profiles_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Start here:
  plantwatch demo                          simulated plant, live values in seconds
  plantwatch run plantwatch.toml           the daemon (what systemd starts)
  plantwatch check plantwatch.toml         validate a config, print points and read plan
  plantwatch read plantwatch.toml meter-1  poll one device once while commissioning
  plantwatch read plantwatch.toml meter-1 --probe 0x2006
                                           show a register pair as every type and order
  plantwatch simulate --profile chint-dtsu666 --listen 127.0.0.1:5020
                                           serve a simulated meter to test against
  plantwatch replay plantwatch.toml history.csv --events alarms.jsonl
                                           tune alarm rules on recorded data
  plantwatch export --month 2026-10        last month's energy report (CSV)
  plantwatch upload --from 2026-10-01 --to 2026-10-31
                                           re-send October to the energy platform";

/// Output format for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config: print the resolved devices, points and read plan, or every error.
    Check(check::Args),
    /// Poll one device once and print every point with value, unit and quality.
    Read(read::Args),
    /// Run the daemon: poll, store every sample in the outbox, deliver over MQTT.
    Run(run::Args),
    /// Serve simulated Modbus devices (profiles or a config's devices) with injectable faults.
    Simulate(simulate::Args),
    /// Run a simulated plant and the real acquisition engine against it, printing live values.
    #[cfg_attr(
        not(feature = "demo"),
        command(about = "Not in this build: it was built without the `demo` feature")
    )]
    Demo(demo::Args),
    /// Run recorded CSV through the alarm rules at full speed: scores, alarms and events.
    Replay(replay::Args),
    /// List, acknowledge or shelve alarms (through the running daemon).
    Alarms(alarms::Args),
    /// The energy report of a month or date range from the ledger: CSV, JSON or HTML.
    Export(export::Args),
    /// Upload a date range of energy-platform records from the ledger over HTTPS.
    Upload(upload::Args),
    /// Sign a downlink command with an operator key: prints the topic and the payload.
    Sign(sign::SignArgs),
    /// Make an Ed25519 key pair for signing commands.
    Keygen(sign::KeygenArgs),
    /// List or verify the audit trail of downlink commands.
    Audit(audit::Args),
}

/// Runs the CLI and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's embedded broker logs every connection at INFO; keep its screen for the data.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn,plantwatch=info,rumqttd=off",
        _ => "info,rumqttd=warn",
    };
    init_logging(cli.log_format, cli.log.as_deref(), default_filter);
    // One TLS stack for every client (MQTT, InfluxDB): rustls with ring, chosen once here.
    let _first_install = rustls::crypto::ring::default_provider().install_default();
    let result =
        match cli.command {
            Command::Check(args) => check::run(&args, cli.profiles_dir.as_deref()),
            Command::Read(args) => {
                runtime().and_then(|rt| rt.block_on(read::run(&args, cli.profiles_dir.as_deref())))
            }
            Command::Run(args) => {
                runtime().and_then(|rt| rt.block_on(run::run(&args, cli.profiles_dir.as_deref())))
            }
            Command::Simulate(args) => runtime()
                .and_then(|rt| rt.block_on(simulate::run(args, cli.profiles_dir.as_deref()))),
            Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(&args))),
            Command::Replay(args) => replay::run(&args, cli.profiles_dir.as_deref()),
            Command::Alarms(args) => alarms::run(&args, cli.profiles_dir.as_deref()),
            Command::Export(args) => export::run(&args, cli.profiles_dir.as_deref()),
            Command::Upload(args) => runtime()
                .and_then(|rt| rt.block_on(upload::run(&args, cli.profiles_dir.as_deref()))),
            Command::Sign(args) => sign::sign(&args),
            Command::Keygen(args) => sign::keygen(&args),
            Command::Audit(args) => audit::run(&args, cli.profiles_dir.as_deref()),
        };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("plantwatch: {err:#}");
            if err.chain().any(|e| e.is::<ConfigErrors>()) {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The exit status of every command whose config is invalid (sysexits' EX_CONFIG): the unit's
/// `RestartPreventExitStatus=78` stops systemd from restarting on a file that cannot work.
const EX_CONFIG: u8 = 78;

/// Prints a config's issues and gives the exit status that says "fix the config".
fn config_failed(errors: &ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    ExitCode::from(EX_CONFIG)
}

/// One thread runs every task. The work is I/O (polls, MQTT, HTTP); the store has its own
/// thread for SQLite. Against a multi-thread runtime this saves a worker's stack and malloc
/// arena (about 1 MiB of RSS) and the wake-ups between workers, at the same CPU per value.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn init_logging(format: LogFormat, filter: Option<&str>, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd the journal adds its own timestamps.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // A second init (tests calling main twice) keeps the first subscriber; nothing to report.
    let _already_set = match (format, journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).try_init(),
        // Colours only for a person at a terminal, not in log files or pipes.
        (LogFormat::Text, false) => builder
            .compact()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Loads and resolves a config, printing every issue on failure.
fn load(
    path: &std::path::Path,
    profiles_dir: Option<&std::path::Path>,
) -> Result<Plan, ConfigErrors> {
    crate::config::load_file(path, &EnvOverrides::Process, profiles_dir)
}

/// Config file path argument shared by subcommands.
fn default_config() -> PathBuf {
    crate::config::default_path()
}
