//! What the store tells the supervisor about itself beyond its size: writes that fail, a full
//! file system, and state found lost when the file was opened.
//!
//! The supervisor reads it with every [`super::StoreHandle::stats`]: `/metrics` shows the
//! counters, `STATUS=` shows [`StoreHealth::status`], and the watchdog is fed only while
//! [`StoreHealth::degraded`] is false, so systemd's `Restart=` acts on a store that has not been
//! able to write for [`DEGRADED_AFTER`] (a read alone proves nothing: a read-only or immutable
//! file still answers reads).

use std::time::{Duration, Instant};

/// How long writes may keep failing, with no success in between, before the store counts as
/// degraded: long enough to ride out a lock held by `plantwatch export` or a brief I/O error,
/// short enough that a daemon losing every poll is restarted within minutes.
pub const DEGRADED_AFTER: Duration = Duration::from_secs(120);

/// Why state was found lost when the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The write-ahead log of an unclean stop was missing, short, or not a WAL.
    Wal,
    /// The file's schema did not match its version (e.g. a migration that lived only in a lost
    /// WAL).
    Schema,
    /// The main file was corrupt; it was moved aside and a fresh one started.
    Corrupt,
}

impl Loss {
    /// A few words for logs and `STATUS=`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Wal => "the write-ahead log of an unclean stop was missing or damaged",
            Self::Schema => "the state file's schema did not match its version and it was replaced",
            Self::Corrupt => "the state file was corrupt and was replaced",
        }
    }
}

/// The store's health, as of one [`super::StoreHandle::stats`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Write transactions that failed (and were rolled back) since the store opened.
    pub write_failures_total: u64,
    /// How long writes have been failing with no success in between; `None` while they work.
    pub failing_for: Option<Duration>,
    /// The file system is full (or nearly): each new message replaces the oldest ones.
    pub disk_full: bool,
    /// Times state was found lost at open, ever (persisted; a replaced file carries it over).
    pub losses_total: u64,
    /// What was lost when this run opened the file, if anything.
    pub loss: Option<Loss>,
}

impl StoreHealth {
    /// Writes have failed for [`DEGRADED_AFTER`] or longer: stop feeding the watchdog.
    pub fn degraded(&self) -> bool {
        self.failing_for.is_some_and(|d| d >= DEGRADED_AFTER)
    }

    /// The store's part of the `STATUS=` line, when there is something to say.
    pub fn status(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(for_) = self.failing_for {
            let state = if self.degraded() {
                "degraded"
            } else {
                "failing"
            };
            parts.push(format!(
                "store {state}: writes failing for {} s",
                for_.as_secs()
            ));
        }
        if self.disk_full {
            parts.push("disk full: dropping the oldest messages".to_owned());
        }
        if let Some(loss) = self.loss {
            parts.push(format!("state lost at start: {}", loss.describe()));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// The store thread's record of failing writes.
#[derive(Debug, Default)]
pub(super) struct WriteFailures {
    /// Failed write transactions since open.
    pub(super) total: u64,
    /// The first failure of the current run of failures.
    pub(super) since: Option<Instant>,
    /// Failures in the current run (for the recovery log line).
    pub(super) in_run: u64,
}

impl WriteFailures {
    /// Records a failed write; returns whether it starts a run of failures.
    pub(super) fn failed(&mut self, now: Instant) -> bool {
        self.total += 1;
        self.in_run += 1;
        let first = self.since.is_none();
        self.since.get_or_insert(now);
        first
    }

    /// Records a committed write; returns how many failures the run it ends had (0 if none).
    pub(super) fn succeeded(&mut self) -> u64 {
        self.since = None;
        std::mem::take(&mut self.in_run)
    }

    /// How long the current run has lasted at `now`.
    pub(super) fn failing_for(&self, now: Instant) -> Option<Duration> {
        self.since.map(|s| now.saturating_duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_only_after_the_bound_of_unbroken_failures() {
        let t0 = crate::clock::monotonic();
        let mut f = WriteFailures::default();
        assert!(f.failed(t0));
        assert!(!f.failed(t0 + Duration::from_secs(60)));
        let health = |f: &WriteFailures, at| StoreHealth {
            write_failures_total: f.total,
            failing_for: f.failing_for(at),
            ..StoreHealth::default()
        };
        let h = health(&f, t0 + DEGRADED_AFTER - Duration::from_secs(1));
        assert!(!h.degraded());
        assert!(h.status().unwrap().contains("store failing"), "{h:?}");
        let h = health(&f, t0 + DEGRADED_AFTER);
        assert!(h.degraded());
        assert_eq!(
            h.status().unwrap(),
            "store degraded: writes failing for 120 s"
        );
        // One success ends the run; the total stays.
        assert_eq!(f.succeeded(), 2);
        let h = health(&f, t0 + DEGRADED_AFTER * 2);
        assert!(!h.degraded());
        assert_eq!(h.write_failures_total, 2);
        assert_eq!(h.status(), None);
    }
}
