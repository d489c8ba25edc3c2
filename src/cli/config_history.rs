//! `plantwatch config history`: the configurations pushed over `{prefix}/cmd/config`, when,
//! by which key, and how each ended, read from the state file (read-only, beside a running
//! daemon).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::runtime::daemon::CONFIG_HISTORY_SCOPE;

/// Arguments of `config`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
One JSON object per line, oldest first: ts_ms, key, id, hash (SHA-256 of the file), and
outcome: applied, then confirmed (it passed its health window), rolled_back (with why) or
superseded (a local reload ended its window); not_applied when it could not be written or
loaded, or another push was still being watched.

Example:
  plantwatch config history --state /var/lib/plantwatch/state.db")]
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
    /// Print every configuration push and its outcome.
    History,
}

pub(super) fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let path = super::state_file(args.state.as_deref(), config, profiles_dir)?;
    super::diagnose_state_file(&path)?;
    match args.action {
        Action::History => {
            let rows = crate::store::alarms::offline::state(&path, CONFIG_HISTORY_SCOPE)
                .map_err(anyhow::Error::msg)?;
            for (_key, row) in rows {
                out!("{row}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
