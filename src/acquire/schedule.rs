//! A fixed-grid poll schedule: ticks at `origin + k × period`, never drifting; ticks that
//! were missed (the link was busy, the consumer slow) are skipped and counted, never bunched.
//!
//! Pure: time is milliseconds on a monotonic axis supplied by the caller.

/// One device's tick grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    period_ms: u64,
    next_ms: u64,
    missed: u64,
}

/// What firing the grid found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// The tick being served.
    pub tick_ms: u64,
    /// Ticks that passed unserved before it.
    pub skipped: u64,
}

impl Grid {
    /// A grid whose first tick is at `first_ms`.
    pub fn new(first_ms: u64, period_ms: u64) -> Self {
        Self {
            period_ms: period_ms.max(1),
            next_ms: first_ms,
            missed: 0,
        }
    }

    /// When the next tick is due.
    pub fn next_tick(&self) -> u64 {
        self.next_ms
    }

    /// The period.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }

    /// Ticks skipped since the grid was made.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Serves the tick due at or before `now_ms`: the latest grid point not after `now_ms`;
    /// earlier unserved ones count as skipped. The next tick is the one after it.
    pub fn fire(&mut self, now_ms: u64) -> Fired {
        let behind = now_ms.saturating_sub(self.next_ms) / self.period_ms;
        let tick_ms = self.next_ms + behind * self.period_ms;
        self.missed += behind;
        self.next_ms = tick_ms + self.period_ms;
        Fired {
            tick_ms,
            skipped: behind,
        }
    }

    /// Switches to a new period (the offline retry schedule, or back), starting from `now_ms`.
    pub fn reschedule(&mut self, now_ms: u64, period_ms: u64) {
        self.period_ms = period_ms.max(1);
        self.next_ms = now_ms + self.period_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_ticks_stay_on_the_grid() {
        let mut g = Grid::new(0, 1000);
        assert_eq!(g.fire(3).tick_ms, 0);
        assert_eq!(g.next_tick(), 1000);
        // Waking late by 40 ms does not move the grid.
        assert_eq!(
            g.fire(1040),
            Fired {
                tick_ms: 1000,
                skipped: 0
            }
        );
        assert_eq!(g.next_tick(), 2000);
    }

    #[test]
    fn a_long_stall_skips_and_counts_instead_of_bunching() {
        let mut g = Grid::new(0, 1000);
        g.fire(0);
        let f = g.fire(4500);
        assert_eq!(
            f,
            Fired {
                tick_ms: 4000,
                skipped: 3
            }
        );
        assert_eq!(g.next_tick(), 5000);
        assert_eq!(g.missed(), 3);
    }

    #[test]
    fn reschedule_moves_to_the_slow_period_from_now() {
        let mut g = Grid::new(0, 1000);
        g.fire(0);
        g.reschedule(250, 30_000);
        assert_eq!(g.next_tick(), 30_250);
        assert_eq!(g.period_ms(), 30_000);
    }
}
