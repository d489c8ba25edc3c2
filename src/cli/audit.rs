//! `plantwatch audit`: the audit trail of downlink commands, read from the state file
//! (read-only, beside a running daemon).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::store::audit::{self, Verdict};

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Every downlink command, carried out or refused, is a row chained to the one before it by
SHA-256. `verify` names the first row that was edited or deleted and exits 1.

Examples:
  plantwatch audit list --last 20
  plantwatch audit verify --state /var/lib/plantwatch/state.db")]
pub(super) struct Args {
    /// The state file, instead of the one the config names (e.g. a copy). Global, so it may
    /// come before or after the action (`audit verify --state FILE`).
    #[arg(long, value_name = "FILE", global = true)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print the newest rows, oldest first, one JSON object per line.
    List {
        /// How many rows.
        #[arg(long, value_name = "N", default_value_t = 100)]
        last: usize,
    },
    /// Check the whole chain; name the first edited or deleted row.
    Verify,
}

pub(super) fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let path = super::state_file(args.state.as_deref(), config, profiles_dir)?;
    super::diagnose_state_file(&path)?;
    match args.action {
        Action::List { last } => {
            for row in audit::list(&path, last).map_err(anyhow::Error::msg)? {
                out!("{}", row.body);
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Verify => match audit::verify(&path).map_err(anyhow::Error::msg)? {
            Verdict::Intact { rows } => {
                out!("{}: audit trail intact, {rows} rows", path.display());
                Ok(ExitCode::SUCCESS)
            }
            Verdict::Broken { seq, what } => {
                eprintln!(
                    "{}: audit trail broken at row {seq}: {what}",
                    path.display()
                );
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
