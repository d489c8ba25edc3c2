//! Where wall-clock time comes from. Pure code takes a [`Timestamp`]; I/O code asks a [`Clock`].

use std::sync::atomic::{AtomicI64, Ordering};

use crate::model::Timestamp;

/// A source of wall-clock time; tests and `replay` supply their own.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(clippy::disallowed_methods, reason = "the single wall-clock read")]
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// The monotonic clock for timeouts, rate limits, heartbeats and elapsed times in the I/O
/// shell: tokio's, so a test on paused time (`tokio::time::pause`) moves it too; outside a
/// runtime it is the system's monotonic clock. clippy.toml bans `std::time::Instant::now`,
/// which paused time does not move, everywhere else.
pub fn monotonic() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(AtomicI64::new(start.0))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// The instant (UTC ms) at which local `date` begins in `tz`. A midnight skipped by a clock
/// change (a few zones move their clocks at 00:00) begins the day at the change. The one
/// definition of a local day's start for the ledger, quotas, baselines, exports and the
/// energy platform, so that they all agree on where days fall.
pub fn local_midnight(tz: chrono_tz::Tz, date: chrono::NaiveDate) -> Option<i64> {
    use chrono::TimeZone as _;
    let midnight = date.and_hms_opt(0, 0, 0)?;
    // Every real clock change is a whole number of quarter-hours of at most two hours.
    (0..=8).find_map(|quarter| {
        let local = midnight.checked_add_signed(chrono::TimeDelta::minutes(15 * quarter))?;
        tz.from_local_datetime(&local)
            .earliest()
            .map(|t| t.timestamp_millis())
    })
}
