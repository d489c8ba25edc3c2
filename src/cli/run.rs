//! `plantwatch run`: the daemon, as systemd starts it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SystemClock;
use crate::runtime::daemon::{ConfigSource, DaemonError, Options};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Signals: SIGHUP re-reads the config (a rejected one keeps the running config), SIGTERM or
Ctrl-C drains in-flight samples to the outbox and exits; a second signal exits at once.
Under systemd (Type=notify) it reports READY, STATUS, RELOADING and STOPPING, and feeds the
watchdog only while polling makes progress. One daemon per state file: a second one on the
same store.path is refused (exit 1), naming the PID that holds it.

Example:
  plantwatch run --config /etc/plantwatch/plantwatch.toml")]
pub(super) struct Args {
    /// Deprecated: the config as a positional argument (use --config).
    #[arg(hide = true, value_name = "CONFIG")]
    pub(super) positional_config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback addresses only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9898", value_parser = loopback)]
    metrics_listen: SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    no_metrics: bool,
    /// Longest drain on SIGTERM, in milliseconds (systemd's TimeoutStopSec must be longer).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    shutdown_grace_ms: u64,
}

fn loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|e| format!("`{s}`: {e}; expected e.g. 127.0.0.1:9898"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "`{s}` is not a loopback address; metrics are served on 127.0.0.1 or [::1] only"
        ))
    }
}

pub(super) async fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let opts = Options {
        config: ConfigSource::File(config.to_path_buf()),
        profiles_dir: profiles_dir.map(Path::to_path_buf),
        metrics_addr: (!args.no_metrics).then_some(args.metrics_listen),
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        stop: None,
    };
    match crate::runtime::daemon::run(opts, Arc::new(SystemClock)).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(DaemonError::Config(errors)) => Ok(super::config_failed(&errors)),
        Err(err) => Err(err.into()),
    }
}
