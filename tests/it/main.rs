//! The single integration-test binary (STYLE.md C14): real sockets, real ptys, the real binary.

mod acquire;
mod cli;
mod config;
mod harness;
