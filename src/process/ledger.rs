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

use super::counter::{CounterEvent, CounterState, EventKind, Flags, IntervalQuality};
use super::spec::{Counts, LedgerSpec, Meter};
use super::tou::Period;
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

/// A wrap, reset, replacement or jump of one meter's counter: a row of the ledger's event
/// table, a WARN line and a count in `/metrics`, so that no discontinuity passes in silence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEvent {
    /// The meter or production counter.
    pub meter: String,
    /// The device that has its counter point.
    pub device: String,
    /// The counter point.
    pub point: String,
    /// Unit of `booked` and `unattributed`.
    pub unit: String,
    /// What happened, with the step's readings and energy.
    #[serde(flatten)]
    pub event: CounterEvent,
}

impl LedgerEvent {
    /// What happened, in words, for the log and reports.
    pub fn describe(&self) -> String {
        let e = &self.event;
        let unit = &self.unit;
        let before = e
            .before
            .map_or_else(|| "nothing".to_owned(), |v| format!("{v}"));
        match e.kind {
            EventKind::Wrap => match e.inferred_max {
                Some(max) => format!(
                    "counter went from {before} to {} and was taken to roll over at {max} \
                     ({:.3} {unit} booked); set register_max if that is not where it does",
                    e.after, e.booked
                ),
                None => format!(
                    "counter rolled over from {before} to {} ({:.3} {unit} booked)",
                    e.after, e.booked
                ),
            },
            EventKind::Reset => format!(
                "counter went back from {before} to {} and stayed: reset or replaced; \
                 {:.3} {unit} booked for the step, at least {:.3} {unit} unattributed",
                e.after, e.booked, e.unattributed
            ),
            EventKind::Replacement => format!(
                "meter replaced: the old one last read {before}, the new one {}",
                e.after
            ),
            EventKind::Jump => format!(
                "counter jumped from {before} to {}, more than the meter's rating allows: \
                 {:.3} {unit} left unattributed",
                e.after, e.unattributed
            ),
        }
    }
}

/// Every counter's state.
#[derive(Debug, Clone)]
pub struct Ledger {
    spec: LedgerSpec,
    states: Vec<CounterState>,
    /// Meter indices by device name.
    by_device: HashMap<Name, Vec<usize>>,
    scratch: Vec<super::counter::Interval>,
}

impl Ledger {
    /// A ledger for `spec`'s meters, every counter fresh.
    pub fn from_spec(spec: LedgerSpec) -> Self {
        let mut by_device: HashMap<Name, Vec<usize>> = HashMap::new();
        for (i, p) in spec.points.iter().enumerate() {
            by_device.entry(p.device.clone()).or_default().push(i);
        }
        Self {
            states: vec![CounterState::new(); spec.meters.len()],
            spec,
            by_device,
            scratch: Vec::new(),
        }
    }

    /// Whether any counter is configured.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The configured meters.
    pub fn meters(&self) -> &[Meter] {
        &self.spec.meters
    }

    /// Takes the counters in `batch` and appends every interval they close to `out`, every
    /// wrap, reset, replacement or jump they show to `events`, and what each reading booked
    /// (meter index, span, energy) to `steps`, for demand.
    pub fn apply(
        &mut self,
        batch: &SampleBatch,
        out: &mut Vec<LedgerInterval>,
        events: &mut Vec<LedgerEvent>,
        steps: &mut Vec<(usize, super::counter::Booked)>,
    ) {
        let Some(indices) = self.by_device.get(&batch.device) else {
            return;
        };
        let now = batch.time();
        for &i in indices {
            let meter = &self.spec.meters[i];
            let Some(sample) = batch
                .samples
                .get(meter.point)
                .filter(|s| s.point == self.spec.points[i].point)
                .or_else(|| {
                    batch
                        .samples
                        .iter()
                        .find(|s| s.point == self.spec.points[i].point)
                })
            else {
                continue;
            };
            let value = match sample.quality {
                Quality::Good => sample.value.as_ref().and_then(|v| v.as_f64()),
                _ => None,
            };
            self.scratch.clear();
            self.states[i].push(
                &meter.params,
                self.spec.timezone,
                now,
                value,
                &mut self.scratch,
            );
            steps.extend(self.states[i].last_booked().map(|b| (i, b)));
            for e in self.states[i].events() {
                events.push(LedgerEvent {
                    meter: meter.name.clone(),
                    device: self.spec.points[i].device.to_string(),
                    point: self.spec.points[i].point.to_string(),
                    unit: meter.counts.unit().to_owned(),
                    event: *e,
                });
            }
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
                    self.spec
                        .calendar
                        .split(self.spec.timezone, iv.start_ms, iv.end_ms, iv.delta)
                {
                    if let Some(slot) = Period::ALL.iter().position(|p| *p == period) {
                        tou[slot] += amount;
                    }
                }
                Some(self.spec.coefficients.kgce(*kind, iv.delta))
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
        self.spec
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
            if let Some(i) = self.spec.meters.iter().position(|m| &m.name == name)
                && let Ok(state) = serde_json::from_str::<CounterState>(body)
            {
                self.states[i] = state;
            }
        }
    }
}
