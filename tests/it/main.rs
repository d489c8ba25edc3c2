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
mod cli;
mod config;
mod daemon;
mod detect;
mod energy;
mod export;
mod faults;
mod harness;
mod influx;
mod mqtt;
mod platform;
mod profiles;
mod replay;
mod sparkplug;
mod sparkplug_live;
mod store;
mod systemd;
