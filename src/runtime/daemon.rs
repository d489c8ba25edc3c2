//! `plantwatch run`: the daemon's lifecycle: readiness, watchdog and status, reload on SIGHUP,
//! drain on SIGTERM. What runs and how it is wired is `topology`'s; the core task is
//! `core_task`'s.
//!
//! Invariants:
//! - polling never waits on the network: the core writes to the local outbox only, and the
//!   MQTT session reads from it on its own schedule;
//! - a sample is "acknowledged to the outbox" when its group commit returned, and only then is
//!   the MQTT session woken for it;
//! - a rejected reload leaves everything running as it was.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::core_task::load_saved;
use super::metrics::OutboxGauges;
use super::remote_config::{self, Answering, Ending, Notice, Push, Verdict, Watch};
use super::signals::{Signal, Signals};
use super::supervisor::Supervisor;
use super::systemd::{self, Heartbeats, Notify};
use super::topology::{Generation, Remote};
use crate::clock::Clock;
use crate::config::{ConfigErrors, EnvOverrides, Plan};
use crate::store::{OutboxLimits, StoreError};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The state file could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics address could not be bound.
    #[error("metrics: cannot listen on {addr}: {error}")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Where the daemon's configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, re-read on SIGHUP.
    File(PathBuf),
    /// A plan built in-process (the demo); SIGHUP keeps it.
    Fixed(Box<Plan>),
}

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration.
    pub config: ConfigSource,
    /// Extra profiles directory from the command line.
    pub profiles_dir: Option<PathBuf>,
    /// Loopback address for `/metrics`; `None` disables it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Longest drain on SIGTERM.
    pub shutdown_grace: Duration,
    /// Stops the daemon like SIGTERM does (for in-process use); `None` for signals only.
    pub stop: Option<CancellationToken>,
}

/// Logs the plan's insecure settings, once per load.
fn log_warnings(plan: &Plan) {
    for w in &plan.warnings {
        warn!(key = %w.key, "{}", w.message);
    }
}

fn load(opts: &Options) -> Result<Plan, ConfigErrors> {
    let plan = match &opts.config {
        ConfigSource::File(path) => {
            crate::config::load_file(path, &EnvOverrides::Process, opts.profiles_dir.as_deref())
        }
        ConfigSource::Fixed(plan) => Ok((**plan).clone()),
    }?;
    // A command key that cannot be read stops a start and a reload, like any config error.
    crate::auth::keys::Keyring::check(&plan.commands).map_err(|issues| ConfigErrors {
        source_name: match &opts.config {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Fixed(_) => "<embedded>".to_owned(),
        },
        issues,
    })?;
    Ok(plan)
}

/// SHA-256 (hex) of the config file as it is now; empty for an embedded configuration or a
/// file that cannot be read.
fn config_hash(opts: &Options) -> String {
    match &opts.config {
        ConfigSource::File(path) => std::fs::read(path)
            .map(|text| crate::store::audit::sha256_hex(&text))
            .unwrap_or_default(),
        ConfigSource::Fixed(_) => String::new(),
    }
}

/// The engine-state scope of `plantwatch config history`.
pub const CONFIG_HISTORY_SCOPE: &str = "config_history";

/// Appends a line to the history of pushed configurations (`plantwatch config history`).
async fn history(
    store: &crate::store::StoreHandle,
    clock: &Arc<dyn Clock>,
    push: &Push,
    outcome: &str,
    why: Option<&str>,
) {
    let now = clock.now().millis();
    let key = format!("{now:016}-{outcome}");
    let row = remote_config::history_row(now, push, outcome, why);
    if let Err(err) = store
        .save_state(CONFIG_HISTORY_SCOPE, vec![(key, row)])
        .await
    {
        error!(error = %err, "Cannot record a configuration push in its history.");
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// [`DaemonError`] when it cannot start; once running, problems are logged and survived.
pub async fn run(opts: Options, clock: Arc<dyn Clock>) -> Result<(), DaemonError> {
    let mut signals = Signals::new().map_err(DaemonError::Signals)?;
    let plan = Arc::new(load(&opts)?);
    log_warnings(&plan);
    let recovery = crate::store::Recovery {
        on_corrupt: plan.store.on_corrupt,
        now_ms: clock.now().millis(),
    };
    let store = crate::store::Store::open_with(
        &plan.store.path,
        OutboxLimits::from(&plan.store),
        recovery,
    )?;
    let gauges = Arc::new(OutboxGauges::default());
    let saved = load_saved(&store).await;
    if !saved.raised.is_empty() {
        info!(
            alarms = saved.raised.len(),
            "Restored raised alarms from the state file."
        );
    }
    // Config pushes the core validated; only a daemon run from a file takes them.
    let (push_tx, mut pushes) = tokio::sync::mpsc::channel::<Push>(1);
    let target = match &opts.config {
        ConfigSource::File(path) => Some(remote_config::Target {
            path: path.clone(),
            profiles_dir: opts.profiles_dir.clone(),
        }),
        ConfigSource::Fixed(_) => None,
    };
    let (hash_tx, hash_rx) = tokio::sync::watch::channel(config_hash(&opts));
    let remote = Remote::new(target.clone().map(|t| (t, push_tx)), hash_rx);
    let mut generation = Generation::start(plan.clone(), &store, &clock, &saved, remote).await;
    let mut answering = Answering::default();
    let mut watch: Option<Watch> = None;
    // Tasks that live as long as the process: the metrics server.
    let process_tasks = Supervisor::default();
    let mut sources = generation.sources(&gauges);
    let (sources_tx, sources_rx) = tokio::sync::watch::channel(sources.clone());
    if let Some(addr) = opts.metrics_addr {
        let listener = super::http::bind(addr)
            .await
            .map_err(|error| DaemonError::Metrics {
                addr: addr.to_string(),
                error,
            })?;
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Serving /metrics.");
        process_tasks.spawn(
            "metrics",
            super::http::serve(
                listener,
                sources_rx,
                clock.clone(),
                process_tasks.token().clone(),
            ),
        );
    }
    info!(devices = plan.devices.len(), links = plan.links.len(), store = %plan.store.path.display(), "plantwatch running.");
    systemd::notify(&[
        Notify::Ready,
        Notify::Status(format!("{} devices", plan.devices.len())),
    ]);
    let watchdog = systemd::watchdog_interval();
    let mut tick = tokio::time::interval(
        watchdog
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5)),
    );
    let mut hearts = Heartbeats::new();
    let mut last_polls = 0u64;
    let mut last_progress = tokio::time::Instant::now();
    let mut second_signal = false;
    let mut store_status: Option<String> = None;
    let stop = opts.stop.clone().unwrap_or_default();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            signal = signals.recv() => match signal {
                Some(Signal::Reload) => {
                    systemd::notify(&[Notify::Reloading]);
                    // Someone on the gateway took over: a rollback now would undo their file.
                    if let Some(w) = watch.take() {
                        warn!(hash = %w.push.hash, "A local reload ends the health window of the pushed configuration; it is no longer rolled back.");
                        history(&store, &clock, &w.push, "superseded", Some("a local reload (SIGHUP) during the health window")).await;
                        generation.notify(Notice {
                            reply: remote_config::outcome_reply(&w.push, Ending::Superseded, "a local reload (SIGHUP) ended its health window; the file on the gateway runs"),
                            origin: w.push.origin,
                            reason: Some("superseded"),
                        });
                    }
                    match load(&opts) {
                        Ok(next) => {
                            if next.store.path != generation.plan.store.path {
                                warn!(old = %generation.plan.store.path.display(), new = %next.store.path.display(),
                                      "store.path changed; it takes effect at the next restart.");
                            }
                            log_warnings(&next);
                            let next = Arc::new(next);
                            // Only what changed restarts; the core always does, from every alarm
                            // and counter the old one saved.
                            generation = generation.reload(next.clone(), &store, &clock, opts.shutdown_grace).await;
                            hash_tx.send_replace(config_hash(&opts));
                            sources = generation.sources(&gauges);
                            let _receivers_gone = sources_tx.send(sources.clone());
                            info!(devices = next.devices.len(), "Configuration reloaded.");
                        }
                        Err(errors) => {
                            for issue in &errors.issues {
                                error!(key = %issue.key, "{}", issue.message);
                            }
                            error!(count = errors.issues.len(), "Reload rejected; the running configuration is unchanged.");
                        }
                    }
                    systemd::notify(&[Notify::Ready]);
                }
                Some(Signal::Terminate | Signal::Interrupt) | None => break,
            },
            Some(push) = pushes.recv() => {
                let Some(target) = &target else { continue };
                if let Some(w) = &watch {
                    let why = format!("the push {} is still in its health window", w.push.hash);
                    generation.notify(Notice {
                        reply: remote_config::outcome_reply(&push, Ending::NotApplied, &why),
                        origin: push.origin,
                        reason: Some("not_applied"),
                    });
                    continue;
                }
                systemd::notify(&[Notify::Reloading]);
                let (connected, _) = generation.brokers_connected();
                answering.look(&generation.acquire());
                let answered = answering.lately();
                // Put the previous file back only once the new one replaced it: before that
                // the running file is untouched, and `.previous` may be an older push's.
                let loaded = remote_config::install(&target.path, &push.text).and_then(|()| {
                    load(&opts).map_err(|e| {
                        if let Err(err) = remote_config::restore(&target.path) {
                            error!(error = %err, "Cannot put the previous configuration file back.");
                        }
                        e.to_string()
                    })
                });
                match loaded {
                    Ok(next) => {
                        log_warnings(&next);
                        let next = Arc::new(next);
                        generation = generation.reload(next.clone(), &store, &clock, opts.shutdown_grace).await;
                        hash_tx.send_replace(config_hash(&opts));
                        sources = generation.sources(&gauges);
                        let _receivers_gone = sources_tx.send(sources.clone());
                        let window = next.commands.config_health_window;
                        info!(hash = %push.hash, window_s = window.as_secs(), "Applied a pushed configuration; watching the broker link and the devices.");
                        history(&store, &clock, &push, "applied", None).await;
                        watch = Some(Watch::new(push, tokio::time::Instant::now(), window, connected > 0, &answered, &next));
                    }
                    Err(why) => {
                        error!(hash = %push.hash, error = %why, "A pushed configuration could not be applied; the running one stays.");
                        history(&store, &clock, &push, "not_applied", Some(&why)).await;
                        generation.notify(Notice {
                            reply: remote_config::outcome_reply(&push, Ending::NotApplied, &why),
                            origin: push.origin,
                            reason: Some("not_applied"),
                        });
                    }
                }
                systemd::notify(&[Notify::Ready]);
            },
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                let acquire = generation.acquire();
                answering.look(&acquire);
                if let (Some(w), Some(target)) = (&mut watch, &target) {
                    let (connected, _) = generation.brokers_connected();
                    match w.judge(now, connected > 0, &answering.recent) {
                        Verdict::Wait => {}
                        Verdict::Healthy => {
                            if let Some(w) = watch.take() {
                                info!(hash = %w.push.hash, "The pushed configuration passed its health window; it stays.");
                                history(&store, &clock, &w.push, "confirmed", None).await;
                                generation.notify(Notice {
                                    reply: remote_config::outcome_reply(&w.push, Ending::Confirmed, ""),
                                    origin: w.push.origin,
                                    reason: None,
                                });
                            }
                        }
                        Verdict::Failed(why) => {
                            let path = target.path.clone();
                            if let Some(w) = watch.take() {
                                warn!(hash = %w.push.hash, why = %why, "The pushed configuration failed its health window; putting the previous file back.");
                                systemd::notify(&[Notify::Reloading]);
                                let restored = remote_config::restore(&path)
                                    .and_then(|()| load(&opts).map_err(|e| e.to_string()));
                                let why = match restored {
                                    Ok(previous) => {
                                        generation = generation.reload(Arc::new(previous), &store, &clock, opts.shutdown_grace).await;
                                        hash_tx.send_replace(config_hash(&opts));
                                        sources = generation.sources(&gauges);
                                        let _receivers_gone = sources_tx.send(sources.clone());
                                        why
                                    }
                                    Err(e) => {
                                        error!(error = %e, "Cannot restore the previous configuration; the pushed one keeps running.");
                                        format!("{why}; and the previous file could not be restored: {e}")
                                    }
                                };
                                systemd::notify(&[Notify::Ready]);
                                history(&store, &clock, &w.push, "rolled_back", Some(&why)).await;
                                generation.notify(Notice {
                                    reply: remote_config::outcome_reply(&w.push, Ending::RolledBack, &why),
                                    origin: w.push.origin,
                                    reason: Some("rolled_back"),
                                });
                            }
                        }
                    }
                }
                let polls = acquire.total(|s| &s.polls_ok) + acquire.total(|s| &s.polls_failed);
                if polls != last_polls || generation.plan.devices.is_empty() {
                    last_polls = polls;
                    last_progress = now;
                }
                if let Ok(stats) = store.stats().await {
                    gauges.update(&stats);
                    // A store that answers but cannot write is not alive (issue 20).
                    if !stats.health.degraded() {
                        hearts.beat("store", crate::clock::monotonic());
                    }
                    store_status = stats.health.status();
                }
                let slowest = generation.plan.devices.iter().map(|d| d.poll_interval.max(d.offline_retry)).max().unwrap_or_default();
                // Feed the watchdog only while polling makes progress and the store answers.
                let alive = now.duration_since(last_progress) <= slowest * 3 + Duration::from_secs(10);
                if watchdog.is_some() && alive && hearts.all_fresh(crate::clock::monotonic()).is_ok() {
                    systemd::notify(&[Notify::Watchdog]);
                }
                let (connected, brokers) = generation.brokers_connected();
                let brokers = match brokers {
                    0 => "broker not configured".to_owned(),
                    1 => format!("broker {}", if connected == 1 { "connected" } else { "disconnected" }),
                    n => format!("{connected} of {n} brokers connected"),
                };
                systemd::notify(&[Notify::Status(format!(
                    "{} devices, outbox {} messages, {brokers}{}",
                    generation.plan.devices.len(),
                    gauges.rows.load(Ordering::Relaxed),
                    store_status.as_deref().map(|s| format!(", {s}")).unwrap_or_default(),
                ))]);
                if hearts.is_empty() {
                    hearts.register("store", Duration::from_secs(60), crate::clock::monotonic());
                }
            }
        }
    }
    systemd::notify(&[Notify::Stopping]);
    info!("Stopping: draining in-flight samples to the outbox.");
    let draining = generation.stop(opts.shutdown_grace);
    tokio::select! {
        () = draining => info!("Stopped cleanly."),
        signal = signals.recv() => if signal.is_some() { second_signal = true },
    }
    if second_signal {
        warn!("Second signal; exiting now. Everything stored is safe in the outbox.");
    }
    process_tasks.stop("metrics", Duration::from_secs(1)).await;
    // Let the store thread checkpoint and close the file before the process exits.
    let closed = store.closed();
    drop(store);
    if tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .is_err()
    {
        warn!("The store did not close within 10 s; its WAL keeps what was not checkpointed.");
    }
    Ok(())
}
