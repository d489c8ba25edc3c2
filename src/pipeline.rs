//! The one pipeline step (process → detect → report) that the live daemon, `replay` and the
//! benches all call, so a recording replayed offline raises exactly the alarms and books
//! exactly the ledger rows that the daemon did live.
//!
//! Order per poll, the same everywhere: time advances to the poll's time (a comm-loss alarm
//! whose duration ran out is raised at its exact instant, before the poll is looked at); the
//! energy ledger takes the counters; the rules evaluate the poll; the energy alarms (quotas,
//! demand, baselines) see what this poll booked; the reporting policy decides what the JSON
//! telemetry carries. Live, the daemon also advances time every second, so a device that
//! sends nothing is noticed; replay learns of the same instant at the next poll, and the
//! events come out the same and in the same order. Pure: no I/O, no clock (`now` is passed
//! in).

use std::collections::HashMap;

use crate::detect::spec::EngineSpec;
use crate::detect::{AlarmEvent, Engine};
use crate::model::{DeviceId, SampleBatch, Timestamp};
use crate::process::counter::Booked;
use crate::process::ledger::{Ledger, LedgerEvent, LedgerInterval};
use crate::process::report::{DeviceReport, Reporter};
use crate::process::spec::LedgerSpec;

/// Which copies of each poll a caller wants back in [`Outputs`], beyond events and intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taps {
    /// Every poll as read (Sparkplug reports by exception itself, from every poll).
    pub every_poll: bool,
    /// The samples the reporting policy lets through (JSON telemetry).
    pub reported: bool,
}

/// What [`Pipeline::step`] appends to; the caller drains or clears it between groups.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Alarm changes, in the order they happened.
    pub events: Vec<AlarmEvent>,
    /// Ledger intervals closed, in order.
    pub intervals: Vec<LedgerInterval>,
    /// Counter wraps, resets, replacements and jumps, in order.
    pub energy_events: Vec<LedgerEvent>,
    /// Every poll, when [`Taps::every_poll`] is set.
    pub polls: Vec<SampleBatch>,
    /// The reported part of each poll that has one, when [`Taps::reported`] is set.
    pub reported: Vec<SampleBatch>,
}

impl Outputs {
    /// Empties every list, keeping their capacity.
    pub fn clear(&mut self) {
        self.events.clear();
        self.intervals.clear();
        self.energy_events.clear();
        self.polls.clear();
        self.reported.clear();
    }
}

/// What the pipeline's stages are built from; `config` assembles it from the plan.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// The energy ledger's meters.
    pub ledger: LedgerSpec,
    /// The detect engine's devices and rules.
    pub engine: EngineSpec,
    /// Each device's reporting policies, in the order the plan lists the devices.
    pub devices: Vec<DeviceReport>,
}

/// The pure stages' state for one configuration.
#[derive(Debug)]
pub struct Pipeline {
    devices: Vec<DeviceReport>,
    device_index: HashMap<DeviceId, usize>,
    ledger: Ledger,
    engine: Engine,
    reporter: Reporter,
    taps: Taps,
    /// What the ledger booked for the poll in hand (reused, so a step allocates nothing).
    booked: Vec<(usize, Booked)>,
    /// The newest time the stages were advanced to (ms): timers fire once, in time order.
    advanced_to: i64,
}

impl Pipeline {
    /// Fresh stages for `spec`: every counter, rule and reporting memory starts empty.
    pub fn from_spec(spec: PipelineSpec, taps: Taps) -> Self {
        Self {
            device_index: spec
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| (d.name.clone(), i))
                .collect(),
            ledger: Ledger::from_spec(spec.ledger),
            engine: Engine::from_spec(&spec.engine),
            reporter: Reporter::default(),
            devices: spec.devices,
            taps,
            booked: Vec::new(),
            advanced_to: i64::MIN,
        }
    }

    /// Lets time alone act at `now` (ms): comm-loss alarms of devices that sent nothing, shelves
    /// that expired. Times older than one already seen do nothing, so a recording sorted by
    /// device rather than by time does not fire one device's timers at another's time.
    pub fn advance(&mut self, now: i64, events: &mut Vec<AlarmEvent>) {
        if now > self.advanced_to {
            self.advanced_to = now;
            self.engine.tick(now, events);
        }
    }

    /// The detect engine: scores, raised alarms, operator commands, saved state.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The detect engine, for operator commands and restoring saved state.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The energy ledger's counters.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The energy ledger, for restoring saved counter states.
    pub fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    /// Runs one poll through every stage, appending what it produced to `out`. A poll of a
    /// device that is not in the plan is ignored (it can only come from a stale generation).
    pub fn step(&mut self, batch: SampleBatch, now: Timestamp, out: &mut Outputs) {
        let Some(&device) = self.device_index.get(&batch.device) else {
            return;
        };
        self.advance(batch.time(), &mut out.events);
        let first = out.intervals.len();
        self.booked.clear();
        self.ledger.apply(
            &batch,
            &mut out.intervals,
            &mut out.energy_events,
            &mut self.booked,
        );
        self.engine.evaluate(&batch, &mut out.events);
        if out.intervals.len() > first || !self.booked.is_empty() {
            self.engine
                .energy(&out.intervals[first..], &self.booked, &mut out.events);
        }
        if !self.taps.reported {
            if self.taps.every_poll {
                out.polls.push(batch);
            }
            return;
        }
        if self.taps.every_poll {
            out.polls.push(batch.clone());
        }
        let Some(device) = self.devices.get(device) else {
            return;
        };
        if let Some(reported) = self.reporter.filter(device, batch, now) {
            out.reported.push(reported);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::plan::Plan;
    use crate::config::{EnvOverrides, load_str};
    use crate::model::{BadReason, Name, PointSample, Quality, Value};

    fn plan() -> Arc<Plan> {
        let text = "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
                    [[devices]]\nname = \"a\"\nlink = \"l\"\n[devices.points.t]\naddress = 0\n\
                    [[devices]]\nname = \"b\"\nlink = \"l\"\n[devices.points.t]\naddress = 0\n\
                    [[rules]]\nname = \"offline\"\nkind = \"comm_loss\"\nduration = \"5s\"\n\
                    [[rules]]\nname = \"hot\"\nkind = \"high\"\ndevice = \"b\"\npoint = \"t\"\nlimit = 0.5\n";
        Arc::new(
            load_str(
                "t",
                text,
                &EnvOverrides::Off,
                std::path::Path::new("."),
                None,
            )
            .unwrap(),
        )
    }

    /// A poll of `device` at `ms`: the value, or no answer.
    fn poll(device: &str, ms: i64, value: Option<f64>) -> SampleBatch {
        SampleBatch {
            device: Name::new(device).unwrap(),
            tick: Timestamp(ms),
            samples: vec![PointSample {
                point: Name::new("t").unwrap(),
                ts: Timestamp(ms),
                value: value.map(Value::F64),
                quality: match value {
                    Some(_) => Quality::Good,
                    None => Quality::Bad(BadReason::Timeout),
                },
            }],
        }
    }

    fn changes(out: &Outputs) -> Vec<String> {
        out.events
            .iter()
            .map(|e| format!("{} {} {} {}", e.device, e.rule, e.state.as_str(), e.ts))
            .collect()
    }

    fn run(p: &mut Pipeline, polls: &[(&str, i64, Option<f64>)]) -> Outputs {
        let mut out = Outputs::default();
        for &(device, ms, value) in polls {
            p.step(poll(device, ms, value), Timestamp(ms), &mut out);
        }
        out
    }

    #[test]
    fn a_silence_that_ran_out_is_raised_before_a_later_poll_of_another_device() {
        let mut p = Pipeline::from_spec(plan().pipeline_spec(), Taps::default());
        // a stops answering at 1 s; its comm loss is due at 6 s. b's poll at 10 s raises `hot`:
        // live, the core's 1 s tick raised a's comm loss first, so replay must as well.
        let out = run(
            &mut p,
            &[
                ("a", 0, Some(1.0)),
                ("b", 0, Some(0.0)),
                ("a", 1_000, None),
                ("b", 10_000, Some(1.0)),
                ("a", 20_000, Some(1.0)),
            ],
        );
        assert_eq!(
            changes(&out),
            [
                "a offline active 6000",
                "b hot active 10000",
                "a offline cleared 20000"
            ]
        );
    }

    #[test]
    fn time_never_goes_back_so_an_older_poll_fires_no_timer() {
        let mut p = Pipeline::from_spec(plan().pipeline_spec(), Taps::default());
        let mut out = run(
            &mut p,
            &[("a", 0, Some(1.0)), ("a", 1_000, None), ("b", 0, Some(0.0))],
        );
        p.advance(5_000, &mut out.events);
        // Due at 6 s; a recording sorted by device brings b's older rows after a's.
        p.step(poll("b", 3_000, Some(0.0)), Timestamp(3_000), &mut out);
        assert!(out.events.is_empty(), "{:?}", changes(&out));
        p.advance(6_500, &mut out.events);
        assert_eq!(changes(&out), ["a offline active 6000"]);
    }
}
