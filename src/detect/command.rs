//! Operator commands on raised alarms: acknowledge, shelve, and record a service.

use super::alarm::AlarmState;
use super::engine::Engine;
use super::message::{AlarmEvent, AlarmStatus, event};

/// Why an operator command on an alarm was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No raised alarm has that id or name.
    #[error("no raised alarm `{0}`; `plantwatch alarms list` shows the raised ones")]
    Unknown(String),
    /// The alarm is already acknowledged.
    #[error("alarm `{0}` is already acknowledged")]
    AlreadyAcked(String),
    /// The device counts no running hours or starts.
    #[error("device `{0}` has no [[maintenance]] counters")]
    NoCounters(String),
    /// A shelve duration of zero or beyond the allowed maximum.
    #[error("shelve duration {0} ms is out of range: give 1s to 30d")]
    Duration(i64),
}

/// The longest shelve an operator may ask for.
pub const MAX_SHELVE_MS: i64 = 30 * 24 * 3_600_000;

impl Engine {
    /// Every raised alarm as its current event (for `alarms list` and command replies).
    pub fn raised(&self) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        for d in &self.devices {
            for inst in d.instances.iter().filter(|i| i.state.is_raised()) {
                out.push(event(
                    &d.name,
                    &d.point_names,
                    &d.units,
                    inst,
                    status_of(&inst.state, inst.state.raised_ms),
                    inst.state.raised_ms,
                ));
            }
        }
        out
    }

    fn find_mut(&mut self, target: &str) -> Option<(usize, usize)> {
        for (di, d) in self.devices.iter().enumerate() {
            for (ii, inst) in d.instances.iter().enumerate() {
                if !inst.state.is_raised() {
                    continue;
                }
                let short = format!("{}/{}", d.name, inst.alarm);
                let id = format!("{short}/{}", inst.state.raised_ms);
                if target == id || target == short {
                    return Some((di, ii));
                }
            }
        }
        None
    }

    pub(super) fn emit(
        &self,
        (di, ii): (usize, usize),
        state: AlarmStatus,
        now: i64,
    ) -> Option<AlarmEvent> {
        let d = self.devices.get(di)?;
        let inst = d.instances.get(ii)?;
        Some(event(&d.name, &d.point_names, &d.units, inst, state, now))
    }

    /// Acknowledges the raised alarm `target` (its id, or `device/alarm`) at `now`.
    ///
    /// # Errors
    /// [`CommandError`] when no such alarm is raised or it is already acknowledged.
    pub fn ack(&mut self, target: &str, now: i64) -> Result<AlarmEvent, CommandError> {
        let at = self
            .find_mut(target)
            .ok_or_else(|| CommandError::Unknown(target.to_owned()))?;
        let inst = &mut self.devices[at.0].instances[at.1];
        if inst.state.acked {
            return Err(CommandError::AlreadyAcked(target.to_owned()));
        }
        inst.state.acked = true;
        let status = status_of(&inst.state, now);
        self.emit(at, status, now)
            .ok_or_else(|| CommandError::Unknown(target.to_owned()))
    }

    /// Shelves the raised alarm `target` for `duration_ms` from `now`; 0 unshelves it.
    ///
    /// # Errors
    /// [`CommandError`] when no such alarm is raised or the duration is out of range.
    pub fn shelve(
        &mut self,
        target: &str,
        duration_ms: i64,
        now: i64,
    ) -> Result<AlarmEvent, CommandError> {
        if !(0..=MAX_SHELVE_MS).contains(&duration_ms) {
            return Err(CommandError::Duration(duration_ms));
        }
        let at = self
            .find_mut(target)
            .ok_or_else(|| CommandError::Unknown(target.to_owned()))?;
        let inst = &mut self.devices[at.0].instances[at.1];
        inst.state.shelved_until = (duration_ms > 0).then_some(now + duration_ms);
        let status = status_of(&inst.state, now);
        // The shelve's end is a timer of its device.
        self.reschedule(at.0);
        self.emit(at, status, now)
            .ok_or_else(|| CommandError::Unknown(target.to_owned()))
    }

    /// Records a service of `device`: its service intervals count again from now, and its
    /// service alarms clear at its next poll.
    ///
    /// # Errors
    /// [`CommandError::Unknown`] when the device has no `[[maintenance]]`.
    pub fn serviced(&mut self, device: &str) -> Result<(f64, u64), CommandError> {
        let (_, c) = self
            .devices
            .iter_mut()
            .find(|d| d.name.as_str() == device)
            .and_then(|d| d.maintenance.as_mut())
            .ok_or_else(|| CommandError::NoCounters(device.to_owned()))?;
        c.serviced();
        Ok((c.running_hours(), c.starts))
    }
}

pub(super) fn status_of(state: &AlarmState, now: i64) -> AlarmStatus {
    if state.is_shelved(now) {
        AlarmStatus::Shelved
    } else if state.acked {
        AlarmStatus::Acked
    } else {
        AlarmStatus::Active
    }
}
