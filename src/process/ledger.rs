//! The energy ledger's pure core: counter readings of every configured meter and production
//! counter → closed intervals, each split across time-of-use periods and converted to
//! standard coal (docs/design.md §6).
//!
//! Deterministic in (state, batch): the time of a reading is its poll's time, as for alarms.
//! Invariants: an interval is emitted once by a given state (the store keys them by meter and
//! start, so a state restored from before a crash re-emits the same keys, never new ones);
//! the period split of an interval sums to its delta.

use std::collections::HashMap;

use serde::Serialize;

use super::counter::{CounterState, Flags, IntervalQuality};
use super::tou::Period;
use crate::config::energy::{Counts, Energy, Meter};
use crate::config::plan::Plan;
use crate::model::{Name, Quality, SampleBatch};

/// The engine-state scope under which the counters' states are saved.
pub const STATE_SCOPE: &str = "energy";

/// One closed interval of one meter, ready for the ledger table and the energy topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerInterval {
    /// The meter or production counter.
    pub meter: String,
    /// Energy kind, or `production`.
    pub kind: String,
    /// Unit of `delta`.
    pub unit: String,
    /// Start, inclusive (UTC ms).
    pub start_ms: i64,
    /// End, exclusive (UTC ms).
    pub end_ms: i64,
    /// Consumption (or output); never negative.
    pub delta: f64,
    /// How much of it was measured.
    pub quality: IntervalQuality,
    /// What happened to the counter.
    pub flags: Flags,
    /// `delta` split over sharp, peak, flat and valley (zeros for production).
    pub tou: [f64; 4],
    /// Standard coal, kgce (energy only).
    pub kgce: Option<f64>,
}

impl LedgerInterval {
    /// The period holding most of the interval (the `tou` of the energy topic).
    pub fn main_period(&self) -> Option<Period> {
        let (i, v) = self
            .tou
            .iter()
            .enumerate()
            .fold(
                (0, f64::MIN),
                |best, (i, v)| if *v > best.1 { (i, *v) } else { best },
            );
        (v > 0.0).then(|| Period::ALL[i])
    }
}

/// Every counter's state.
#[derive(Debug, Clone)]
pub struct Ledger {
    energy: Energy,
    tz: chrono_tz::Tz,
    states: Vec<CounterState>,
    /// Meter indices by device name.
    by_device: HashMap<Name, Vec<usize>>,
    point_names: Vec<Name>,
    scratch: Vec<super::counter::Interval>,
}

impl Ledger {
    /// A ledger for `plan`'s meters, every counter fresh.
    pub fn new(plan: &Plan) -> Self {
        let mut by_device: HashMap<Name, Vec<usize>> = HashMap::new();
        let mut point_names = Vec::new();
        for (i, m) in plan.energy.meters.iter().enumerate() {
            let d = &plan.devices[m.device];
            by_device.entry(d.name.clone()).or_default().push(i);
            point_names.push(d.points[m.point].name.clone());
        }
        Self {
            states: vec![CounterState::new(); plan.energy.meters.len()],
            energy: plan.energy.clone(),
            tz: plan.gateway.timezone,
            by_device,
            point_names,
            scratch: Vec::new(),
        }
    }

    /// Whether any counter is configured.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The configured meters.
    pub fn meters(&self) -> &[Meter] {
        &self.energy.meters
    }

    /// Takes the counters in `batch` and appends every interval they close to `out`, and what
    /// each reading booked (meter index, span, energy) to `steps`, for demand.
    pub fn apply(
        &mut self,
        batch: &SampleBatch,
        out: &mut Vec<LedgerInterval>,
        steps: &mut Vec<(usize, super::counter::Booked)>,
    ) {
        let Some(indices) = self.by_device.get(&batch.device) else {
            return;
        };
        let now = batch.time();
        for &i in indices {
            let meter = &self.energy.meters[i];
            let Some(sample) = batch
                .samples
                .get(meter.point)
                .filter(|s| s.point == self.point_names[i])
                .or_else(|| {
                    batch
                        .samples
                        .iter()
                        .find(|s| s.point == self.point_names[i])
                })
            else {
                continue;
            };
            let value = match sample.quality {
                Quality::Good => sample.value.as_ref().and_then(|v| v.as_f64()),
                _ => None,
            };
            self.scratch.clear();
            self.states[i].push(&meter.params, self.tz, now, value, &mut self.scratch);
            steps.extend(self.states[i].last_booked().map(|b| (i, b)));
            for iv in &self.scratch {
                out.push(self.book(meter, iv));
            }
        }
    }

    fn book(&self, meter: &Meter, iv: &super::counter::Interval) -> LedgerInterval {
        let mut tou = [0.0; 4];
        let kgce = match &meter.counts {
            Counts::Energy(kind) => {
                for (period, amount) in
                    self.energy
                        .calendar
                        .split(self.tz, iv.start_ms, iv.end_ms, iv.delta)
                {
                    if let Some(slot) = Period::ALL.iter().position(|p| *p == period) {
                        tou[slot] += amount;
                    }
                }
                Some(self.energy.coefficients.kgce(*kind, iv.delta))
            }
            Counts::Product(_) => None,
        };
        LedgerInterval {
            meter: meter.name.clone(),
            kind: meter.counts.kind_str().to_owned(),
            unit: meter.counts.unit().to_owned(),
            start_ms: iv.start_ms,
            end_ms: iv.end_ms,
            delta: iv.delta,
            quality: iv.quality,
            flags: iv.flags,
            tou,
            kgce,
        }
    }

    /// Every counter's state as `(meter, JSON)`, to persist.
    pub fn states(&self) -> Vec<(String, String)> {
        self.energy
            .meters
            .iter()
            .zip(&self.states)
            .filter_map(|(m, s)| Some((m.name.clone(), serde_json::to_string(s).ok()?)))
            .collect()
    }

    /// Puts back persisted states; unknown meters and unreadable states are skipped (the
    /// counter then starts afresh at its next reading).
    pub fn restore(&mut self, saved: &[(String, String)]) {
        for (name, body) in saved {
            if let Some(i) = self.energy.meters.iter().position(|m| &m.name == name)
                && let Ok(state) = serde_json::from_str::<CounterState>(body)
            {
                self.states[i] = state;
            }
        }
    }
}
