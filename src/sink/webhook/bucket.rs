//! The request budget: a token bucket of capacity 1, so requests keep the robots' rate.

use std::time::Duration;

use tokio::time::Instant;

/// Token bucket of capacity 1 (see the module invariants).
pub(super) struct TokenBucket {
    tokens: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate_per_minute: u32, now: Instant) -> Self {
        Self {
            tokens: 1.0,
            per_sec: f64::from(rate_per_minute.max(1)) / 60.0,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub(super) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(1.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.per_sec;
            // Bounded by 60 s since per_sec ≥ 1/60; the fallback avoids a
            // panic path in Duration::from_secs_f64.
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(60)))
        }
    }
}
