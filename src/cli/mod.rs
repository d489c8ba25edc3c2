//! The command line: the one module that prints to stdout.
//!
//! One grammar for every subcommand: the config is `--config FILE` / `-c FILE` (or
//! `PLANTWATCH_CONFIG`, or `/etc/plantwatch/plantwatch.toml`), accepted before or after the
//! subcommand and its other flags. The positional config of `check`, `run`, `read`, `replay`
//! and `simulate` still works for one release, with a warning. Every outcome maps to one
//! documented exit status (listed in `plantwatch --help`).

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
mod backup;
mod check;
mod config_history;
// Commissioning without a config: `read --host`/`--serial` and `scan`.
mod direct;
// A build without the `demo` feature has no embedded broker; its `demo` only says so.
#[cfg_attr(not(feature = "demo"), path = "demo_unavailable.rs")]
mod demo;
mod export;
mod generate;
mod read;
mod replay;
mod run;
mod scan;
mod sign;
mod simulate;
mod upload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

use crate::config::{ConfigErrors, EnvOverrides, Plan};
use crate::store::offline::OfflineError;

/// plantwatch: read PLCs and energy meters over Modbus, detect anomalies and overuse, and
/// deliver everything to the energy platform without losing a sample.
#[derive(Debug, Parser)]
#[command(name = "plantwatch", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// The config file [default: /etc/plantwatch/plantwatch.toml].
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "PLANTWATCH_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
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

const AFTER_HELP: &str = "\
Start here:
  plantwatch demo                          simulated plant, live values in seconds
  plantwatch run -c plantwatch.toml        the daemon (what systemd starts)
  plantwatch check -c plantwatch.toml      validate a config, print points and read plan
  plantwatch read -c plantwatch.toml meter-1
                                           poll one device once while commissioning
  plantwatch read -c plantwatch.toml meter-1 --probe 0x2006
                                           show a register pair as every type and order
  plantwatch simulate --profile chint-dtsu666 --listen 127.0.0.1:5020
                                           serve a simulated meter to test against
  plantwatch replay -c plantwatch.toml history.csv --events alarms.jsonl
                                           tune alarm rules on recorded data
  plantwatch export --month 2026-10        last month's energy report (CSV)
  plantwatch upload --from 2026-10-01 --to 2026-10-31
                                           re-send October to the energy platform
  plantwatch backup /var/lib/plantwatch/state.db state-copy.db
                                           a consistent copy of the running state file

The config is --config FILE or -c FILE, anywhere on the line (or PLANTWATCH_CONFIG; default
/etc/plantwatch/plantwatch.toml). `plantwatch check FILE`, with the config as a positional
argument, still works in this release and warns; it goes in the next.

Exit status:
  0   success
  1   runtime failure (e.g. the state file is held by another daemon)
  2   usage: an unknown flag, a missing or malformed argument
  65  bad data: a malformed input row, a file that is not a usable state file
  69  unavailable: the device did not answer or gave no good point; the platform is unreachable
  74  I/O: a file that cannot be read or written
  78  the config is invalid (the unit's RestartPreventExitStatus=78)";

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
    /// Find the unit ids (and serial settings) that answer on a TCP gateway or a serial bus.
    Scan(scan::Args),
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
    /// Copy a state file consistently, WAL included, while the daemon keeps running.
    Backup(backup::Args),
    /// Sign a downlink command with an operator key: prints the topic and the payload.
    Sign(sign::SignArgs),
    /// Make an Ed25519 key pair for signing commands.
    Keygen(sign::KeygenArgs),
    /// List or verify the audit trail of downlink commands.
    Audit(audit::Args),
    /// Man pages and shell completions from this command line (packaging runs it).
    #[command(hide = true)]
    Generate(generate::Args),
    /// The configurations pushed over the signed command channel, and how each ended.
    Config(config_history::Args),
}

/// Runs the CLI and maps the outcome to an exit code (`plantwatch --help` lists them).
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config = ConfigArg {
        on_command_line: given_on_command_line(&matches, "config"),
        path: cli.config,
    };
    // The demo's embedded broker logs every connection at INFO; keep its screen for the data.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn,plantwatch=info,rumqttd=off",
        _ => "info,rumqttd=warn",
    };
    init_logging(cli.log_format, cli.log.as_deref(), default_filter);
    // One TLS stack for every client (MQTT, InfluxDB): rustls with ring, chosen once here.
    let _first_install = rustls::crypto::ring::default_provider().install_default();
    let profiles_dir = cli.profiles_dir.as_deref();
    let result = match cli.command {
        Command::Check(args) => config
            .resolve("check", args.positional_config.as_deref())
            .and_then(|c| check::run(&args, &c, profiles_dir)),
        Command::Read(args) if args.is_direct() => {
            runtime().and_then(|rt| rt.block_on(read::run_direct(&args)))
        }
        Command::Scan(args) => runtime().and_then(|rt| rt.block_on(scan::run(&args))),
        Command::Read(args) => config
            .resolve("read", args.positional_config())
            .and_then(|c| runtime()?.block_on(read::run(&args, &c, profiles_dir))),
        Command::Run(args) => config
            .resolve("run", args.positional_config.as_deref())
            .and_then(|c| runtime()?.block_on(run::run(&args, &c, profiles_dir))),
        Command::Simulate(args) => config
            .explicit("simulate", args.positional_config.as_deref())
            .and_then(|c| runtime()?.block_on(simulate::run(args, c, profiles_dir))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(&args))),
        Command::Replay(args) => config
            .resolve("replay", args.positional_config())
            .and_then(|c| replay::run(&args, &c, profiles_dir)),
        Command::Alarms(args) => alarms::run(&args, &config.or_default(), profiles_dir),
        Command::Export(args) => export::run(&args, &config.or_default(), profiles_dir),
        Command::Upload(args) => runtime()
            .and_then(|rt| rt.block_on(upload::run(&args, &config.or_default(), profiles_dir))),
        Command::Backup(args) => backup::run(&args),
        Command::Sign(args) => sign::sign(&args),
        Command::Keygen(args) => sign::keygen(&args),
        Command::Audit(args) => audit::run(&args, &config.or_default(), profiles_dir),
        Command::Generate(args) => generate::run(&args, Cli::command()),
        Command::Config(args) => config_history::run(&args, &config.or_default(), profiles_dir),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("plantwatch: {err:#}");
            ExitCode::from(status_of(&err))
        }
    }
}

/// Whether the global argument `id` was written on the command line (not taken from the
/// environment), before or after the subcommands.
fn given_on_command_line(matches: &clap::ArgMatches, id: &str) -> bool {
    let mut level = Some(matches);
    // Bounded by the depth of the command tree (two levels of subcommands).
    for _ in 0..4 {
        let Some(m) = level else { break };
        if matches!(m.value_source(id), Some(ValueSource::CommandLine)) {
            return true;
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    false
}

/// The config as the command line gave it: `--config`/`-c` or `PLANTWATCH_CONFIG`.
struct ConfigArg {
    path: Option<PathBuf>,
    /// Given as `--config` (not only through the environment).
    on_command_line: bool,
}

impl ConfigArg {
    /// The config to use, given the subcommand's deprecated positional one, if any.
    fn resolve(&self, command: &str, positional: Option<&Path>) -> anyhow::Result<PathBuf> {
        Ok(self
            .explicit(command, positional)?
            .unwrap_or_else(default_config))
    }

    /// The config given on the command line or in the environment, if any.
    fn explicit(
        &self,
        command: &str,
        positional: Option<&Path>,
    ) -> anyhow::Result<Option<PathBuf>> {
        let Some(positional) = positional else {
            return Ok(self.path.clone());
        };
        if self.on_command_line {
            return Err(usage(format!(
                "the config is given twice: --config {} and `{}`; give only --config",
                self.path.as_deref().unwrap_or(Path::new("")).display(),
                positional.display()
            )));
        }
        eprintln!(
            "plantwatch: warning: `plantwatch {command} {}` (the config as a positional argument) is deprecated and goes in the next release; write `plantwatch {command} --config {}`",
            positional.display(),
            positional.display()
        );
        Ok(Some(positional.to_path_buf()))
    }

    /// The config given, or the default path.
    fn or_default(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(default_config)
    }
}

/// Usage errors found after parsing (sysexits' EX_USAGE is clap's own status for them).
const EX_USAGE: u8 = 2;
/// Input data that cannot be used (sysexits' EX_DATAERR).
const EX_DATAERR: u8 = 65;
/// A device or peer that did not answer (sysexits' EX_UNAVAILABLE).
const EX_UNAVAILABLE: u8 = 69;
/// A file that cannot be read or written (sysexits' EX_IOERR).
const EX_IOERR: u8 = 74;
/// The exit status of every command whose config is invalid (sysexits' EX_CONFIG): the unit's
/// `RestartPreventExitStatus=78` stops systemd from restarting on a file that cannot work.
const EX_CONFIG: u8 = 78;

/// An error that ends the command with `status`; it reads as the error it carries.
#[derive(Debug)]
struct Failure {
    status: u8,
    error: anyhow::Error,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// `error`, ending the command with `status`.
fn failure(status: u8, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        status,
        error: error.into(),
    })
}

/// A usage error found after parsing (exit 2).
fn usage(error: impl std::fmt::Display) -> anyhow::Error {
    failure(EX_USAGE, anyhow::anyhow!("{error:#}"))
}

/// A file that cannot be read or written (exit 74).
fn io_failed(error: impl Into<anyhow::Error>) -> anyhow::Error {
    failure(EX_IOERR, error)
}

/// A state file that cannot be used: its contents (65) or reaching it (74).
/// Diagnoses a state file before a command reads it: one that is not a plantwatch state file
/// exits 65, one that cannot be opened 74, each naming the file.
fn diagnose_state_file(path: &Path) -> anyhow::Result<()> {
    drop(crate::store::offline::open(path, false).map_err(offline_failed)?);
    Ok(())
}

fn offline_failed(error: OfflineError) -> anyhow::Error {
    let status = if error.is_bad_data() {
        EX_DATAERR
    } else {
        EX_IOERR
    };
    failure(status, error)
}

/// The exit status of a failed command: the first status an error in the chain carries, else
/// 78 for an invalid config, else 1.
fn status_of(err: &anyhow::Error) -> u8 {
    for e in err.chain() {
        if let Some(f) = e.downcast_ref::<Failure>() {
            return f.status;
        }
        if e.is::<ConfigErrors>() {
            return EX_CONFIG;
        }
    }
    1
}

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

/// The state file a command that reads it uses: `--state FILE` when given (e.g. a copy), else
/// the one the config names.
fn state_file(
    state: Option<&std::path::Path>,
    config: &std::path::Path,
    profiles_dir: Option<&std::path::Path>,
) -> anyhow::Result<PathBuf> {
    if let Some(s) = state {
        return Ok(s.to_path_buf());
    }
    match load(config, profiles_dir) {
        Ok(plan) => Ok(plan.store.path),
        Err(errors) => Err(anyhow::Error::new(errors)
            .context("the config names the state file (or give --state FILE)")),
    }
}

/// The config path when none is given.
fn default_config() -> PathBuf {
    crate::config::default_path()
}
