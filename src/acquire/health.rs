//! Device health: online until `offline_after` consecutive cycles fail, then offline (polled
//! on the slow schedule) until one succeeds. Pure; the link task logs the transitions.

/// A change of a device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The device stopped answering.
    WentOffline {
        /// Consecutive failed cycles.
        failures: u32,
    },
    /// It answers again.
    CameBack {
        /// How long it was offline.
        outage_ms: u64,
    },
}

/// One device's health state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    offline_after: u32,
    failures: u32,
    offline_since_ms: Option<u64>,
}

impl Health {
    /// A healthy device that goes offline after `offline_after` failed cycles.
    pub fn new(offline_after: u32) -> Self {
        Self {
            offline_after: offline_after.max(1),
            failures: 0,
            offline_since_ms: None,
        }
    }

    /// Whether the device is offline.
    pub fn is_offline(&self) -> bool {
        self.offline_since_ms.is_some()
    }

    /// Consecutive failed cycles.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A cycle in which the device answered (an exception is an answer).
    pub fn on_answered(&mut self, now_ms: u64) -> Option<Transition> {
        self.failures = 0;
        self.offline_since_ms
            .take()
            .map(|since| Transition::CameBack {
                outage_ms: now_ms.saturating_sub(since),
            })
    }

    /// A cycle in which it did not answer at all.
    pub fn on_silent(&mut self, now_ms: u64) -> Option<Transition> {
        self.failures = self.failures.saturating_add(1);
        if self.offline_since_ms.is_none() && self.failures >= self.offline_after {
            self.offline_since_ms = Some(now_ms);
            return Some(Transition::WentOffline {
                failures: self.failures,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_offline_after_the_configured_failures_and_back_on_first_answer() {
        let mut h = Health::new(3);
        assert_eq!(h.on_silent(0), None);
        assert_eq!(h.on_silent(1000), None);
        assert_eq!(
            h.on_silent(2000),
            Some(Transition::WentOffline { failures: 3 })
        );
        assert!(h.is_offline());
        assert_eq!(h.on_silent(32_000), None, "the transition is reported once");
        assert_eq!(
            h.on_answered(62_000),
            Some(Transition::CameBack { outage_ms: 60_000 })
        );
        assert!(!h.is_offline());
        assert_eq!(h.on_answered(63_000), None);
    }

    #[test]
    fn an_answer_resets_the_failure_count() {
        let mut h = Health::new(2);
        h.on_silent(0);
        h.on_answered(1);
        assert_eq!(h.on_silent(2), None);
        assert_eq!(h.failures(), 1);
    }
}
