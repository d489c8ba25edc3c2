//! What time alone decides, without a poll: a comm-loss delay that runs out on a silent
//! device, and a shelve that ends.
//!
//! The engine keeps, per device, the earliest time at which time alone may change something
//! there, and a min-heap of those times, so that [`Engine::tick`] (called by the pipeline at
//! every poll and live every second) touches only the devices with a timer due instead of every
//! rule instance. A device's time is recomputed after whatever can set or move one of its
//! timers: a poll of it, a tick that handled it, a shelve, a restore. A time that is early (the
//! timer went away) costs one look at the device; one that is late would delay an alarm, so
//! every such change reschedules.
//!
//! The events come out exactly as a scan of every instance would give them: first the
//! comm-loss delays of every due device in device order, then the shelves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::command::status_of;
use super::engine::{DeviceRules, Engine};
use super::message::AlarmEvent;
use super::settle::{Owner, delays};
use super::spec::RuleKind;

/// Each device's earliest due time, and a heap of them.
#[derive(Debug, Clone, Default)]
pub(super) struct Timers {
    /// The earliest time (ms) at which time alone may change something on each device.
    due: Vec<Option<i64>>,
    /// (time, device); an entry whose time is no longer its device's `due` is stale.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
}

impl Timers {
    /// No timer on any of `devices` devices.
    pub(super) fn new(devices: usize) -> Self {
        Self {
            due: vec![None; devices],
            heap: BinaryHeap::new(),
        }
    }

    /// Records device `di`'s earliest due time.
    pub(super) fn set(&mut self, di: usize, due: Option<i64>) {
        if self.due.len() <= di {
            self.due.resize(di + 1, None);
        }
        if self.due[di] == due {
            return;
        }
        self.due[di] = due;
        if let Some(t) = due {
            self.heap.push(Reverse((t, di)));
        }
    }

    /// The devices with a timer due at `now`, in device order; their times are taken (the
    /// caller reschedules them once it has handled them).
    fn take_due(&mut self, now: i64) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(&Reverse((t, di))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if self.due.get(di) == Some(&Some(t)) {
                self.due[di] = None;
                out.push(di);
            }
        }
        out.sort_unstable();
        out
    }
}

/// The earliest time at which time alone changes something on `dev`: a comm-loss on- or
/// off-delay that runs out (it fires once time is past it, as [`AlarmState::advance`] says),
/// or the end of a raised alarm's shelve.
///
/// [`AlarmState::advance`]: super::alarm::AlarmState::advance
pub(super) fn device_due(dev: &DeviceRules) -> Option<i64> {
    use super::alarm::Phase;
    dev.instances
        .iter()
        .filter_map(|inst| {
            let delay = if let RuleKind::CommLoss(_) = inst.kind {
                let (on, off) = delays(inst);
                match inst.state.phase {
                    Phase::Pending { since } if on > 0 => Some(since.saturating_add(on)),
                    Phase::Clearing { since } if off > 0 => Some(since.saturating_add(off)),
                    Phase::Normal
                    | Phase::Active
                    | Phase::Pending { .. }
                    | Phase::Clearing { .. } => None,
                }
                .map(|t| t.saturating_add(1))
            } else {
                None
            };
            let shelve = inst.state.shelved_until.filter(|_| inst.state.is_raised());
            delay.into_iter().chain(shelve).min()
        })
        .min()
}

impl Engine {
    /// What time alone decides at `now`, for devices that send nothing: a comm-loss alarm
    /// whose duration ran out (raised at its exact time, so replay, which learns of it at the
    /// next poll, raises the same alarm), and shelves that expired.
    ///
    /// Only the devices with a timer due are looked at (the `detect::timers` module says how).
    pub fn tick(&mut self, now: i64, events: &mut Vec<AlarmEvent>) {
        let due = self.timers.take_due(now);
        if due.is_empty() {
            return;
        }
        self.tick_devices(&due, now, events);
        for di in due {
            self.reschedule(di);
        }
    }

    /// What time alone decides at `now` on the devices `due`: their comm-loss instances, then
    /// their shelves that expired.
    fn tick_devices(&mut self, due: &[usize], now: i64, events: &mut Vec<AlarmEvent>) {
        let policy = &self.policy;
        for &di in due {
            let Some(dev) = self.devices.get_mut(di) else {
                continue;
            };
            let mut owner = Owner {
                name: &dev.name,
                points: &dev.point_names,
                units: &dev.units,
                flood: &mut dev.flood,
                policy,
            };
            for inst in &mut dev.instances {
                if let RuleKind::CommLoss(_) = inst.kind {
                    owner.observe(inst, None, now, events);
                }
            }
        }
        for &di in due {
            for ii in 0..self.devices[di].instances.len() {
                let state = &mut self.devices[di].instances[ii].state;
                if state.is_raised() && state.shelved_until.is_some_and(|u| now >= u) {
                    state.shelved_until = None;
                    let status = status_of(state, now);
                    events.extend(self.emit((di, ii), status, now));
                }
            }
        }
    }

    /// Recomputes device `di`'s earliest due time, after something that can set or move one
    /// of its timers.
    pub(super) fn reschedule(&mut self, di: usize) {
        if let Some(dev) = self.devices.get(di) {
            self.timers.set(di, device_due(dev));
        }
    }

    /// [`Engine::reschedule`] for every device.
    pub(super) fn reschedule_all(&mut self) {
        for di in 0..self.devices.len() {
            self.reschedule(di);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, Name, PointSample, Quality, SampleBatch, Timestamp, Value};

    /// What `tick` did before it kept timers: every device looked at, due or not. The timers
    /// must give exactly its events.
    fn tick_by_scan(engine: &mut Engine, now: i64, events: &mut Vec<AlarmEvent>) {
        let every: Vec<usize> = (0..engine.devices.len()).collect();
        engine.tick_devices(&every, now, events);
    }

    fn engine(devices: usize) -> Engine {
        let mut text = String::from(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[rules]]\nname = \"offline\"\nkind = \"comm_loss\"\nduration = \"5s\"\noff_delay = \"3s\"\n\
             [[rules]]\nname = \"hot\"\nkind = \"high\"\npoint = \"t\"\nlimit = 0.5\non_delay = \"2s\"\n",
        );
        for d in 0..devices {
            text.push_str(&format!(
                "[[devices]]\nname = \"d{d}\"\nlink = \"l\"\n[devices.points.t]\naddress = 0\n"
            ));
        }
        let plan = crate::config::load_str(
            "t",
            &text,
            &crate::config::EnvOverrides::Off,
            std::path::Path::new("."),
            None,
        )
        .unwrap();
        Engine::from_spec(&plan.engine_spec())
    }

    fn poll(device: usize, at: i64, value: Option<f64>) -> SampleBatch {
        SampleBatch {
            device: Name::new(&format!("d{device}")).unwrap(),
            tick: Timestamp(at),
            samples: vec![PointSample {
                point: Name::new("t").unwrap(),
                ts: Timestamp(at),
                value: value.map(Value::F64),
                quality: match value {
                    Some(_) => Quality::Good,
                    None => Quality::Bad(BadReason::Timeout),
                },
            }],
        }
    }

    #[test]
    fn timers_give_the_events_of_a_scan_of_every_instance() {
        let (mut timed, mut scanned) = (engine(6), engine(6));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // A fixed pseudo-random run: polls, silences, ticks and shelves, 20 000 steps.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut now = 1_000_000;
        for _ in 0..20_000 {
            now += i64::try_from(next(700)).unwrap();
            match next(10) {
                0..=5 => {
                    let device = usize::try_from(next(6)).unwrap();
                    let value = match next(4) {
                        0 => None,
                        1 => Some(1.0),
                        _ => Some(0.0),
                    };
                    let batch = poll(device, now, value);
                    timed.evaluate(&batch, &mut a);
                    scanned.evaluate(&batch, &mut b);
                }
                6 => {
                    let raised = timed.raised();
                    if !raised.is_empty() {
                        let target =
                            &raised[usize::try_from(next(raised.len() as u64)).unwrap()].id;
                        let ms = i64::try_from(next(20_000)).unwrap();
                        assert_eq!(
                            timed.shelve(target, ms, now).ok(),
                            scanned.shelve(target, ms, now).ok()
                        );
                    }
                }
                _ => {
                    timed.tick(now, &mut a);
                    tick_by_scan(&mut scanned, now, &mut b);
                }
            }
        }
        assert!(
            a.len() > 500,
            "the run exercises the timers: {} events",
            a.len()
        );
        assert_eq!(a, b);
    }

    #[test]
    fn a_tick_looks_only_at_devices_with_a_timer_due() {
        let mut engine = engine(3);
        let mut events = Vec::new();
        for d in 0..3 {
            engine.evaluate(&poll(d, 0, Some(0.0)), &mut events);
        }
        assert!(
            engine.timers.heap.is_empty(),
            "nothing pending, nothing scheduled"
        );
        engine.evaluate(&poll(1, 1_000, None), &mut events);
        // Silent since 1 s: the comm loss is due strictly after 1 s + 5 s.
        assert_eq!(engine.timers.due, [None, Some(6_001), None]);
        engine.tick(6_000, &mut events);
        assert!(events.is_empty());
        engine.tick(6_001, &mut events);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].alarm.as_str(), events[0].ts), ("offline", 6_000));
        assert_eq!(engine.timers.due, [None, None, None]);
    }
}
