//! The single integration-test binary: real sockets, real ptys, the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "test helpers fail loudly; that is their job"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "tests spawn the peers they talk to; the bans (spawning, the clock) guard src/"
)]
// Without the embedded broker the harness's daemon, proxy and subscriber have no users; the
// default build, which CI lints with `--all-targets`, still reports dead code.
#![cfg_attr(
    not(feature = "demo"),
    allow(dead_code, reason = "harness parts that only the broker tests use")
)]

// The modules marked `demo` run against the embedded broker, which only that feature builds.
mod acquire;
#[cfg(feature = "demo")]
mod alarms;
mod architecture;
mod cli;
#[cfg(feature = "demo")]
mod command_auth;
mod commissioning;
#[cfg(feature = "demo")]
mod compact;
mod config;
mod config_check;
#[cfg(feature = "demo")]
mod daemon;
mod detect;
#[cfg(feature = "demo")]
mod energy;
mod export;
// Needs the embedded broker.
#[cfg(feature = "demo")]
mod faults;
mod harness;
mod influx;
#[cfg(feature = "demo")]
mod listener;
#[cfg(feature = "demo")]
mod mqtt;
mod pipeline;
mod platform;
mod portability;
mod profiles;
#[cfg(feature = "demo")]
mod reload;
#[cfg(feature = "demo")]
mod remote_config;
#[cfg(feature = "demo")]
mod remote_write;
mod replay;
mod sparkplug;
#[cfg(feature = "demo")]
mod sparkplug_live;
#[cfg(feature = "demo")]
mod sparkplug_writes;
mod store;
mod systemd;
mod writes;
