//! What survives a restart or a reload besides the learned models ([`snapshot`](super::snapshot)):
//! the raised alarms and the maintenance counters.

use super::alarm::Phase;
use super::engine::Engine;
use super::maintenance::Counters;
use super::message::{AlarmEvent, AlarmStatus};
use crate::model::Name;

impl Engine {
    /// Puts back the raised alarms of a previous run (the alarms table, or the engine being
    /// replaced on reload), so they are neither raised again nor forgotten. Events of alarms
    /// the current rules no longer produce are ignored.
    pub fn restore(&mut self, raised: &[AlarmEvent]) {
        for e in raised.iter().filter(|e| e.state != AlarmStatus::Cleared) {
            let Some(&di) = Name::new(&e.device).ok().and_then(|n| self.by_name.get(&n)) else {
                continue;
            };
            let Some(d) = self.devices.get_mut(di) else {
                continue;
            };
            if let Some(inst) = d.instances.iter_mut().find(|i| i.alarm == e.alarm) {
                inst.state.phase = Phase::Active;
                inst.state.raised_ms = e.raised;
                inst.state.acked = e.state == AlarmStatus::Acked;
                inst.state.shelved_until = e.shelved_until;
                inst.seen.value = e.value;
                inst.seen.limit = e.limit;
                inst.message.clone_from(&e.message);
            }
        }
        self.reschedule_all();
    }
}

impl Engine {
    /// The maintenance counters of every device that has them, to persist.
    pub fn counters(&self) -> Vec<(String, Counters)> {
        self.devices
            .iter()
            .filter_map(|d| Some((d.name.to_string(), d.maintenance.as_ref()?.1.clone())))
            .collect()
    }

    /// Puts back persisted counters (devices without `[[maintenance]]` now are ignored).
    pub fn restore_counters(&mut self, saved: &[(String, Counters)]) {
        for (device, c) in saved {
            if let Some(d) = self.devices.iter_mut().find(|d| d.name.as_str() == device)
                && let Some((_, counters)) = d.maintenance.as_mut()
            {
                *counters = c.clone();
            }
        }
    }
}
