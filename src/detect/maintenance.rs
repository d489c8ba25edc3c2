//! Running hours and start counts from a run-state (or current) point, for service intervals.
//!
//! Invariants: running time accrues only between two consecutive good samples that both say
//! "running" and are at most [`MAX_GAP_MS`] apart, so a gateway outage never books hours the
//! machine may not have run; a start is an off → on change between good samples.

use serde::{Deserialize, Serialize};

/// The longest gap between samples across which running time still accrues.
pub const MAX_GAP_MS: i64 = 10 * 60_000;

/// One device's counters, persisted across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Running time, ms, since the counters began.
    pub running_ms: i64,
    /// Starts since the counters began.
    pub starts: u64,
    /// `running_ms` at the last service.
    pub serviced_running_ms: i64,
    /// `starts` at the last service.
    pub serviced_starts: u64,
    /// The last good sample: (time, running).
    #[serde(default)]
    pub last: Option<(i64, bool)>,
}

impl Counters {
    /// Feeds the run point's good value at `ts`.
    pub fn update(&mut self, ts: i64, value: f64, run_above: f64) {
        let running = value > run_above;
        if let Some((t0, was)) = self.last {
            if ts <= t0 {
                return;
            }
            if was && running && ts - t0 <= MAX_GAP_MS {
                self.running_ms += ts - t0;
            }
            if !was && running {
                self.starts += 1;
            }
        }
        self.last = Some((ts, running));
    }

    /// Running hours in total.
    pub fn running_hours(&self) -> f64 {
        self.running_ms as f64 / 3_600_000.0
    }

    /// Running hours since the last service.
    pub fn hours_since_service(&self) -> f64 {
        (self.running_ms - self.serviced_running_ms) as f64 / 3_600_000.0
    }

    /// Starts since the last service.
    pub fn starts_since_service(&self) -> u64 {
        self.starts.saturating_sub(self.serviced_starts)
    }

    /// Records a service now: the intervals count again from here.
    pub fn serviced(&mut self) {
        self.serviced_running_ms = self.running_ms;
        self.serviced_starts = self.starts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_accrue_only_while_running_and_starts_count_rising_edges() {
        let mut c = Counters::default();
        // Off, on for 2 h in 1-minute samples, off, on again briefly.
        c.update(0, 0.0, 0.5);
        for m in 1..=120 {
            c.update(m * 60_000, 1.0, 0.5);
        }
        c.update(121 * 60_000, 0.0, 0.5);
        c.update(122 * 60_000, 1.0, 0.5);
        c.update(123 * 60_000, 1.0, 0.5);
        assert_eq!(c.starts, 2);
        assert_eq!(c.running_ms, 119 * 60_000 + 60_000);
        assert!((c.running_hours() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_long_gap_books_no_hours() {
        let mut c = Counters::default();
        c.update(0, 1.0, 0.5);
        c.update(MAX_GAP_MS + 1, 1.0, 0.5);
        assert_eq!(c.running_ms, 0);
        c.serviced();
        c.update(MAX_GAP_MS + 60_001, 1.0, 0.5);
        assert!((c.hours_since_service() - 1.0 / 60.0).abs() < 1e-9);
    }
}
