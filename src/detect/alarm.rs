//! One alarm's state machine: the ISA-18.2 basics (on-delay, off-delay) and the lifecycle
//! (active → acked / shelved → cleared).
//!
//! The detector decides whether the abnormal condition holds at a sample (hysteresis lives
//! there, because only it knows what "back past the limit" means); this machine decides when
//! that becomes a raise or a clear. Pure and deterministic in (state, condition, time).
//!
//! Invariants: a raise is always followed by exactly one clear before the next raise; the
//! condition must hold for `on_delay` (measured between sample times) before a raise, and be
//! gone for `off_delay` before a clear; `acked` and `shelved_until` only exist while raised.

/// Where the alarm is between raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Condition absent.
    #[default]
    Normal,
    /// Condition present since `since`, waiting out the on-delay.
    Pending {
        /// When it was first seen.
        since: i64,
    },
    /// Raised and not yet acknowledged or cleared.
    Active,
    /// Raised, condition gone since `since`, waiting out the off-delay.
    Clearing {
        /// When it was first seen gone.
        since: i64,
    },
}

/// What a step changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The alarm was raised at this step.
    Raised,
    /// The alarm cleared at this step.
    Cleared,
}

/// One alarm's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlarmState {
    /// Raise/clear phase.
    pub phase: Phase,
    /// When the current occurrence was raised (ms).
    pub raised_ms: i64,
    /// Acknowledged by an operator since it was raised.
    pub acked: bool,
    /// Shelved (hidden) until this time (ms).
    pub shelved_until: Option<i64>,
    /// Raised during a flood and not announced.
    pub suppressed: bool,
    /// The condition at the last step, so a tick can carry it forward.
    pub last_condition: Option<bool>,
}

impl AlarmState {
    /// Whether the alarm is raised (including while waiting out its off-delay).
    pub fn is_raised(&self) -> bool {
        matches!(self.phase, Phase::Active | Phase::Clearing { .. })
    }

    /// Whether it is shelved at `now`.
    pub fn is_shelved(&self, now: i64) -> bool {
        self.shelved_until.is_some_and(|until| now < until)
    }

    /// Feeds the condition seen at `now`; returns a raise or clear if one happened.
    pub fn step(
        &mut self,
        condition: bool,
        now: i64,
        on_delay_ms: i64,
        off_delay_ms: i64,
    ) -> Option<Transition> {
        self.last_condition = Some(condition);
        match (self.phase, condition) {
            (Phase::Normal, true) => {
                if on_delay_ms <= 0 {
                    return Some(self.raise(now));
                }
                self.phase = Phase::Pending { since: now };
                None
            }
            (Phase::Pending { since }, true) => {
                (now - since >= on_delay_ms).then(|| self.raise(now))
            }
            (Phase::Pending { .. }, false) => {
                self.phase = Phase::Normal;
                None
            }
            (Phase::Active, false) => {
                if off_delay_ms <= 0 {
                    return Some(self.clear());
                }
                self.phase = Phase::Clearing { since: now };
                None
            }
            (Phase::Clearing { since }, false) => {
                (now - since >= off_delay_ms).then(|| self.clear())
            }
            (Phase::Clearing { .. }, true) => {
                self.phase = Phase::Active;
                None
            }
            (Phase::Normal, false) | (Phase::Active, true) => None,
        }
    }

    /// Lets time pass to `now` without a new observation: an on- or off-delay that ran out
    /// strictly before `now` fires, at the exact time it ran out. (A delay that runs out at
    /// `now` itself is decided by [`Self::step`] with the condition seen at `now`.)
    pub fn advance(
        &mut self,
        now: i64,
        on_delay_ms: i64,
        off_delay_ms: i64,
    ) -> Option<(Transition, i64)> {
        match self.phase {
            Phase::Pending { since } if on_delay_ms > 0 && now > since + on_delay_ms => {
                Some((self.raise(since + on_delay_ms), since + on_delay_ms))
            }
            Phase::Clearing { since } if off_delay_ms > 0 && now > since + off_delay_ms => {
                Some((self.clear(), since + off_delay_ms))
            }
            _ => None,
        }
    }

    fn raise(&mut self, now: i64) -> Transition {
        self.phase = Phase::Active;
        self.raised_ms = now;
        self.acked = false;
        self.suppressed = false;
        Transition::Raised
    }

    fn clear(&mut self) -> Transition {
        self.phase = Phase::Normal;
        self.acked = false;
        self.shelved_until = None;
        Transition::Cleared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `conditions` at 1 s steps and returns (time, transition) pairs.
    fn run(conditions: &[bool], on: i64, off: i64) -> Vec<(i64, Transition)> {
        let mut a = AlarmState::default();
        conditions
            .iter()
            .enumerate()
            .filter_map(|(i, &c)| {
                let t = i as i64 * 1000;
                a.step(c, t, on, off).map(|tr| (t, tr))
            })
            .collect()
    }

    #[test]
    fn without_delays_raise_and_clear_follow_the_condition() {
        let got = run(&[false, true, true, false, true], 0, 0);
        assert_eq!(
            got,
            vec![
                (1000, Transition::Raised),
                (3000, Transition::Cleared),
                (4000, Transition::Raised)
            ]
        );
    }

    #[test]
    fn on_delay_needs_the_condition_to_hold_throughout() {
        // Held 2 s then dropped: no raise. Then held from 4 s: raised at 4 s + 3 s.
        let got = run(
            &[false, true, true, false, true, true, true, true, true],
            3000,
            0,
        );
        assert_eq!(got, vec![(7000, Transition::Raised)]);
    }

    #[test]
    fn off_delay_ignores_short_dropouts() {
        let got = run(&[true, false, true, false, false, false, false], 0, 2000);
        assert_eq!(
            got,
            vec![(0, Transition::Raised), (5000, Transition::Cleared)]
        );
    }

    #[test]
    fn time_passing_fires_a_delay_at_the_exact_time_it_ran_out() {
        let mut a = AlarmState::default();
        assert_eq!(a.step(true, 1_000, 3_000, 0), None);
        assert_eq!(a.advance(4_000, 3_000, 0), None, "not strictly after yet");
        assert_eq!(
            a.advance(9_000, 3_000, 0),
            Some((Transition::Raised, 4_000))
        );
        assert_eq!(a.raised_ms, 4_000);
        assert_eq!(a.step(false, 10_000, 3_000, 2_000), None);
        assert_eq!(
            a.advance(12_500, 3_000, 2_000),
            Some((Transition::Cleared, 12_000))
        );
    }

    #[test]
    fn clearing_resets_ack_and_shelve() {
        let mut a = AlarmState::default();
        a.step(true, 0, 0, 0);
        a.acked = true;
        a.shelved_until = Some(10_000);
        assert!(a.is_shelved(5_000));
        a.step(false, 1_000, 0, 0);
        assert!(!a.acked);
        assert!(!a.is_shelved(5_000));
        assert!(!a.is_raised());
    }
}
