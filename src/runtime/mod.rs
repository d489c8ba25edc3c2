//! The daemon's runtime shell: how the process talks to its service manager and the OS.
//!
//! - [`signals`]: SIGTERM, SIGINT and SIGHUP as one async stream of [`signals::Signal`]s.
//! - [`systemd`]: `sd_notify` messages (readiness, reload, stop, status, watchdog) and the
//!   per-stage [`systemd::Heartbeats`] that decide whether the watchdog may be fed.
//!
//! - [`metrics`] and [`http`]: Prometheus text on a loopback port, rendered from the stages'
//!   own counters at scrape time.
//! - [`daemon`]: `plantwatch run`'s lifecycle: start, SIGHUP reload, SIGTERM drain, watchdog.
//! - `topology`: which tasks run for a plan and how they are wired, started and stopped.
//! - [`supervisor`]: the one place tasks are spawned, with restart policy and bounded stops.
//! - [`core_task`]: the core task: pipeline step, seqs, outbox writes, operator commands.
//! - [`outbox`]: the state file's outbox queues as the sinks read and render them.
//! - [`commands`]: the downlink commands (`ack`, `shelve`, `list`, …), parsed and applied.
//! - `remote_config`: `config` pushes: validated, applied, watched, rolled back.
//! - `remote_write`: the signed `write` command: intent audited, sent to the link, outcome
//!   audited and answered.
//!
//! - [`listener`]: the accept loop every listening socket goes through: a connection cap,
//!   header and connection time limits, no spinning on a failed accept.
//! - [`log_limit`]: log lines a peer can trigger, rate-limited and escaped.
//!
//! Invariant: nothing here mutates the process environment.

mod command_auth;
pub mod commands;
pub mod core_task;
pub mod daemon;
pub mod http;
pub mod listener;
pub mod log_limit;
pub mod metrics;
pub mod outbox;
pub(crate) mod remote_config;
mod remote_write;
pub mod signals;
pub mod supervisor;
pub mod systemd;
mod topology;
