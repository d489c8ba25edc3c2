//! The signals the daemon acts on, as one async stream.
//!
//! | signal  | sent by                                   | [`Signal`]    | the daemon…            |
//! |---------|-------------------------------------------|---------------|------------------------|
//! | SIGTERM | `systemctl stop`, shutdown                | `Terminate`   | drains, then exits (C9) |
//! | SIGINT  | Ctrl-C in a terminal                      | `Interrupt`   | the same               |
//! | SIGHUP  | `ExecReload=` after `plantwatch check`    | `Reload`      | reloads its config (C10) |
//!
//! Invariants:
//! - Create [`Signals`] early, before `READY=1`: from then on the three signals no longer kill
//!   the process (tokio keeps its handlers for the life of the process), so a SIGHUP is never
//!   fatal once systemd may send one.
//! - The same signal delivered twice before [`Signals::recv`] runs is seen once (tokio
//!   coalesces); a *second* SIGTERM that arrives after the first was received is seen again,
//!   which is what "a second signal exits at once" (C9) needs.
//! - When several kinds are pending, stopping wins over reloading: Terminate, then Interrupt,
//!   then Reload.

use std::io;

use tokio::signal::unix::{SignalKind, signal};

/// A signal the daemon acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGTERM: shut down gracefully.
    Terminate,
    /// SIGINT: shut down gracefully (interactive runs).
    Interrupt,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP, received as [`Signal`]s.
#[derive(Debug)]
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    reload: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers for SIGTERM, SIGINT and SIGHUP.
    ///
    /// # Errors
    ///
    /// `Other` when called outside a tokio runtime; otherwise the OS error of installing a
    /// handler.
    ///
    /// # Panics
    ///
    /// Inside a runtime built without `enable_io()` (tokio's signal driver needs it).
    pub fn new() -> io::Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "signal handlers need a tokio runtime; none is running",
            ));
        }
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            reload: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal. `None` once tokio's signal driver has shut down (the runtime
    /// is going away), after which no more signals are seen.
    ///
    /// Cancel-safe: dropping the future loses no signal, so it can sit in a `select!` loop.
    pub async fn recv(&mut self) -> Option<Signal> {
        tokio::select! {
            // Stopping wins over reloading when both are pending.
            biased;
            Some(()) = self.terminate.recv() => Some(Signal::Terminate),
            Some(()) = self.interrupt.recv() => Some(Signal::Interrupt),
            Some(()) = self.reload.recv() => Some(Signal::Reload),
            else => None,
        }
    }
}
