//! The single integration-test binary (STYLE.md C14): real sockets, real ptys, the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "test helpers fail loudly; that is their job"
)]

mod acquire;
mod alarms;
mod architecture;
mod cli;
mod config;
mod daemon;
mod detect;
mod energy;
mod export;
mod harness;
mod influx;
mod listener;
mod mqtt;
mod pipeline;
mod platform;
mod profiles;
mod reload;
mod replay;
mod sparkplug;
mod sparkplug_live;
mod store;
mod systemd;
