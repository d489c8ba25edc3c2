//! The single integration-test binary (STYLE.md C14): real sockets, real ptys, the real binary.

mod config;
