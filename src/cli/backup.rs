//! `plantwatch backup`: a consistent copy of a state file, taken beside the running daemon.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `backup`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The copy is one snapshot, taken with SQLite's backup API while the daemon keeps writing,
and includes what is still in the WAL (`state.db-wal`). It is a single file: `cp` of a running
state file misses the WAL, and with it the newest data. Restoring: stop the daemon, put the
copy at store.path, remove the old -wal and -shm files (keep `state.db.seqs`), start it. The
copy is marked as cleanly stopped, and its message numbers (seq) continue past the marks it
holds, so the platform sees a gap for what was sent after the copy, never a reused seq.

Example:
  plantwatch backup /var/lib/plantwatch/state.db /srv/backup/state-$(date +%F).db")]
pub(super) struct Args {
    /// The state file to copy (the config's store.path).
    state: PathBuf,
    /// Where to write the copy; must not exist yet.
    dest: PathBuf,
}

pub(super) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let copied =
        crate::store::offline::backup(&args.state, &args.dest).map_err(anyhow::Error::new)?;
    out!(
        "{} copied to {} ({} bytes)",
        args.state.display(),
        args.dest.display(),
        copied.bytes
    );
    Ok(ExitCode::SUCCESS)
}
