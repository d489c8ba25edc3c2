//! Settling an observation: time passes first (a delay that ran out fires at its own time),
//! then the condition seen; what that changes is published, subject to flood control.

use super::alarm::Transition;
use super::engine::{Instance, ms};
use super::flood::{Flood, flood_allows};
use super::message::{AlarmEvent, AlarmStatus, event, raise_message};
use super::spec::AlarmPolicy;
use crate::model::Name;

/// An instance's (on-delay, off-delay) in ms; a comm-loss duration adds to its on-delay.
pub(super) fn delays(inst: &Instance) -> (i64, i64) {
    let rule = &inst.rule;
    (ms(rule.on_delay) + ms(inst.kind.hold()), ms(rule.off_delay))
}

/// What settling an alarm needs of its device, borrowed apart from the device's instances.
pub(super) struct Owner<'a> {
    pub(super) name: &'a Name,
    pub(super) points: &'a [Name],
    pub(super) units: &'a [String],
    pub(super) flood: &'a mut Flood,
    pub(super) policy: &'a AlarmPolicy,
}

impl Owner<'_> {
    /// Applies an observation of `inst` at `at`: time passes first (a delay that ran out
    /// before `at` fires at its own time), then the condition seen at `at`, if any.
    pub(super) fn observe(
        &mut self,
        inst: &mut Instance,
        condition: Option<bool>,
        at: i64,
        events: &mut Vec<AlarmEvent>,
    ) {
        let (on_delay, off_delay) = delays(inst);
        if let Some((transition, t)) = inst.state.advance(at, on_delay, off_delay) {
            self.settle(inst, Some(transition), t, events);
        }
        if let Some(condition) = condition {
            let transition = inst.state.step(condition, at, on_delay, off_delay);
            self.settle(inst, transition, at, events);
        }
    }

    /// Publishes what a step of `inst` at `at` changed: a raise (subject to flood control), a
    /// clear, or the end of a shelve.
    fn settle(
        &mut self,
        inst: &mut Instance,
        transition: Option<Transition>,
        at: i64,
        events: &mut Vec<AlarmEvent>,
    ) {
        let (name, points, units) = (self.name, self.points, self.units);
        let shelf_expired = inst
            .state
            .shelved_until
            .is_some_and(|until| at >= until && inst.state.is_raised());
        match transition {
            Some(Transition::Raised) => {
                inst.state.shelved_until = None;
                inst.message = raise_message(name, points, units, inst);
                if flood_allows(self.flood, self.policy, at) {
                    events.push(event(name, points, units, inst, AlarmStatus::Active, at));
                } else {
                    inst.state.suppressed = true;
                }
            }
            Some(Transition::Cleared) if !inst.state.suppressed => {
                events.push(event(name, points, units, inst, AlarmStatus::Cleared, at));
            }
            Some(Transition::Cleared) => inst.state.suppressed = false,
            None if shelf_expired => {
                inst.state.shelved_until = None;
                let status = if inst.state.acked {
                    AlarmStatus::Acked
                } else {
                    AlarmStatus::Active
                };
                events.push(event(name, points, units, inst, status, at));
            }
            None => {}
        }
    }
}
