//! Demand (需量): average active power over 15-minute fixed blocks or a sliding window, the
//! month's maximum demand, an early warning projected from the running window, and the Hubei
//! rule for billing demand above 105 % of the contract.
//!
//! [`DemandState`] is fed energy booked over spans of time (from the counter's
//! [`Booked`](super::counter::Booked), so rollover, resets and gaps are already handled;
//! docs/platform.md §4.2 prefers energy deltas to averaging instantaneous power). Energy is spread
//! linearly over its span into steps aligned like the counter's intervals ([`interval_end`]); a
//! window is the last `window_ms / step_ms` steps (one step for fixed blocks), evaluated as each
//! step closes.
//!
//! Invariants:
//! - A window's demand is its energy × 3 600 000 / its length in ms (kW for kWh), over its real
//!   length; a window that data covers only in part is reported with `complete: false` (its
//!   demand can only be too low, so it may still set the maximum). Windows with no data at all
//!   are not reported.
//! - A window belongs to the local month of its last instant (`end − 1 ms`): a fixed block to its
//!   own month, a sliding window straddling midnight of the 1st to the new month, the way a meter
//!   keeps computing demand across its monthly reset. The maximum restarts with the first window
//!   of a new month, and the previous month's maximum is emitted as [`DemandEvent::MonthClosed`].
//!   Ties keep the earliest window.
//! - Energy is only ever added forward in time; spans overlapping data already seen are clipped.
//! - Pure: no I/O, no clock. Time is milliseconds since the Unix epoch, UTC.

use std::collections::VecDeque;

use chrono::{DateTime, Datelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::counter::{interval_end, interval_start};
use super::tou::{DAY_MS, MAX_TS_MS, MIN_TS_MS, utc_offset_ms};

/// The demand period of Chinese tariffs: 15 minutes (docs/platform.md §4.2).
pub const DEFAULT_WINDOW_MS: i64 = 15 * 60_000;

/// Share of the contracted demand up to which the contract value is billed in Hubei (105 %).
pub const HUBEI_TOLERANCE: f64 = 1.05;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// How the running window's final demand is projected before it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Projection {
    /// Run rate: energy so far ÷ time covered so far (the window's average so far, i.e. energy so
    /// far ÷ elapsed × window length, as demand). Steady, but late: a load that steps up at
    /// minute 5 of a block is only flagged once the average itself has caught up.
    RunRate,
    /// Energy so far + the power of the last `recent_ms` held until the window ends. Flags a
    /// step-up as soon as it has lasted `recent_ms`, which is what an early warning is for.
    RecentPower {
        /// How far back the current power is averaged (1 min smooths register granularity).
        recent_ms: i64,
    },
}

/// How demand is computed for one meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemandParams {
    /// Length of a demand window (需量周期), default 15 min; must divide a day.
    pub window_ms: i64,
    /// Slide (滑差时间): equal to `window_ms` for fixed blocks, e.g. 1 min for a sliding window;
    /// must divide `window_ms`.
    pub step_ms: i64,
    /// How the running window is projected for early warnings.
    pub projection: Projection,
}

impl Default for DemandParams {
    fn default() -> Self {
        DemandParams::fixed(DEFAULT_WINDOW_MS)
    }
}

impl DemandParams {
    /// Fixed blocks of `block_ms`, projected from the last minute's power.
    pub fn fixed(block_ms: i64) -> DemandParams {
        DemandParams {
            window_ms: block_ms,
            step_ms: block_ms,
            projection: Projection::RecentPower { recent_ms: 60_000 },
        }
    }

    /// A window of `window_ms` sliding by `step_ms`, projected from the last minute's power.
    pub fn sliding(window_ms: i64, step_ms: i64) -> DemandParams {
        DemandParams {
            window_ms,
            step_ms,
            projection: Projection::RecentPower { recent_ms: 60_000 },
        }
    }

    /// Checks the parameters; [`DemandState::add`] ignores energy while it fails.
    ///
    /// # Errors
    /// The first field out of range, by name.
    pub fn validate(&self) -> Result<(), DemandError> {
        let bad = |field: &'static str, message: String| {
            Err(DemandError::InvalidParam { field, message })
        };
        if !(60_000..=DAY_MS).contains(&self.window_ms) || DAY_MS % self.window_ms != 0 {
            return bad(
                "window_ms",
                format!(
                    "{} ms does not divide a day into windows of at least 1 min",
                    self.window_ms
                ),
            );
        }
        if !(1000..=self.window_ms).contains(&self.step_ms) || self.window_ms % self.step_ms != 0 {
            return bad(
                "step_ms",
                format!(
                    "{} ms does not divide the window of {} ms into steps of at least 1 s",
                    self.step_ms, self.window_ms
                ),
            );
        }
        if let Projection::RecentPower { recent_ms } = self.projection {
            if !(1000..=self.window_ms).contains(&recent_ms) {
                return bad(
                    "projection.recent_ms",
                    format!("{recent_ms} ms is not between 1 s and the window"),
                );
            }
        }
        Ok(())
    }

    fn steps_per_window(&self) -> usize {
        usize::try_from(self.window_ms / self.step_ms).unwrap_or(1)
    }
}

/// Why demand input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemandError {
    /// A demand parameter is out of range.
    #[error("demand parameter `{field}`: {message}")]
    InvalidParam {
        /// The field, as named in config.
        field: &'static str,
        /// What is wrong with its value.
        message: String,
    },
}

/// The average power of one closed window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DemandWindow {
    /// Start, inclusive (UTC ms).
    pub start_ms: i64,
    /// End, exclusive (UTC ms).
    pub end_ms: i64,
    /// Average power, energy units per hour (kW for kWh).
    pub kw: f64,
    /// Whether data covered the whole window.
    pub complete: bool,
}

/// Something [`DemandState::add`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum DemandEvent {
    /// A window closed.
    Window(DemandWindow),
    /// A window of a new month closed; this was the previous month's maximum demand.
    MonthClosed {
        /// Local year of the month closed.
        year: i32,
        /// Local month (1–12) of the month closed.
        month: u32,
        /// The window with the highest demand in it.
        peak: DemandWindow,
    },
}

/// The projected demand of the window still running.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Projected {
    /// Start of the running window (UTC ms).
    pub start_ms: i64,
    /// End of the running window (UTC ms).
    pub end_ms: i64,
    /// Time of the latest data the projection rests on (UTC ms).
    pub at_ms: i64,
    /// Projected demand at the window's end.
    pub kw: f64,
}

/// Demand as billed under the Hubei contract rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BilledDemand {
    /// Demand to multiply by the demand price (kW-equivalent, the excess counted twice).
    pub billed_kw: f64,
    /// Demand above 105 % of the contract (0 when within it).
    pub excess_kw: f64,
}

/// Applies the contract rule to a month's maximum demand: up to 105 % of `contract_kw` the
/// contract value is billed; above it the maximum is billed and the part above 105 % once more.
pub fn billed_demand(contract_kw: f64, max_kw: f64) -> BilledDemand {
    // docs/platform.md §4.2 [S], State Grid 国家电网财〔2016〕633号: above 105 % of the contract "超过
    // 105%部分的基本电费加一倍收取" (the excess part's charge is doubled); at or below it the
    // contract value is billed. Read as 1.05·C + 2·excess (e.g. C = 1000, max 1200 → 1050 +
    // 2 × 150 = 1350): the part up to 105 % at the single price, the excess at twice it. This is
    // billing interpretation, so it is kept apart from measurement and easy to replace.
    let threshold = contract_kw * HUBEI_TOLERANCE;
    if max_kw <= threshold {
        BilledDemand {
            billed_kw: contract_kw,
            excess_kw: 0.0,
        }
    } else {
        let excess_kw = max_kw - threshold;
        BilledDemand {
            billed_kw: threshold + 2.0 * excess_kw,
            excess_kw,
        }
    }
}

/// One step of the demand grid and the energy spread into it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Step {
    start_ms: i64,
    end_ms: i64,
    kwh: f64,
    covered_ms: i64,
}

impl Step {
    fn containing(tz: Tz, step_ms: i64, ts_ms: i64) -> Step {
        Step::new(
            interval_start(tz, step_ms, ts_ms),
            interval_end(tz, step_ms, ts_ms),
        )
    }

    fn new(start_ms: i64, end_ms: i64) -> Step {
        Step {
            start_ms,
            end_ms,
            kwh: 0.0,
            covered_ms: 0,
        }
    }
}

/// The persisted demand state of one meter (serde, so the month's maximum survives restarts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DemandState {
    /// Closed steps of the running window, oldest first; at most `steps_per_window − 1`.
    done: VecDeque<Step>,
    /// The step being filled.
    cur: Option<Step>,
    /// End of the data added so far.
    data_to_ms: Option<i64>,
    /// Local (year, month) of the maximum below.
    month: Option<(i32, u32)>,
    /// The month's highest window so far.
    peak: Option<DemandWindow>,
    /// Recent (time, cumulative energy) points for the recent-power projection.
    recent: VecDeque<(i64, f64)>,
    /// Energy added since the state began; only differences of it are used.
    total_kwh: f64,
}

impl DemandState {
    /// A state that has seen no energy.
    pub fn new() -> DemandState {
        DemandState::default()
    }

    /// Adds `kwh` consumed evenly over `[from_ms, to_ms)` and appends every window it closes.
    ///
    /// A span before the data already seen is ignored and one overlapping it is clipped in
    /// proportion; time with no span added is uncovered. Ignored while `params` fail
    /// [`DemandParams::validate`] or `kwh` is not finite.
    pub fn add(
        &mut self,
        params: &DemandParams,
        tz: Tz,
        from_ms: i64,
        to_ms: i64,
        kwh: f64,
        out: &mut Vec<DemandEvent>,
    ) {
        if params.validate().is_err() || !kwh.is_finite() {
            return;
        }
        let from = from_ms.clamp(MIN_TS_MS, MAX_TS_MS);
        let to = to_ms.clamp(MIN_TS_MS, MAX_TS_MS);
        let (from, kwh) = match self.data_to_ms {
            _ if to <= from => return,
            Some(seen) if to <= seen => return,
            Some(seen) if from < seen => (seen, kwh * ((to - seen) as f64) / ((to - from) as f64)),
            _ => (from, kwh),
        };
        self.remember_recent(params, from, to, kwh);
        self.advance_to(params, tz, from, out);
        let Some(mut cur) = self.cur.take() else {
            return;
        };
        let total = (to - from) as f64;
        let mut given = 0.0;
        loop {
            let overlap = (to.min(cur.end_ms) - from.max(cur.start_ms)).max(0);
            let last = to <= cur.end_ms;
            // The last piece takes the remainder so the steps hold exactly what was added.
            let piece = if last {
                kwh - given
            } else {
                kwh * (overlap as f64) / total
            };
            given += piece;
            cur.kwh += piece;
            cur.covered_ms += overlap;
            if to < cur.end_ms {
                break;
            }
            let next = Step::new(cur.end_ms, interval_end(tz, params.step_ms, cur.end_ms));
            self.close(params, tz, cur, out);
            cur = next;
            if last {
                break;
            }
        }
        self.cur = Some(cur);
        self.data_to_ms = Some(to);
    }

    /// The maximum demand of the current month so far: local (year, month) and the window.
    pub fn month_peak(&self) -> Option<(i32, u32, DemandWindow)> {
        match (self.month, self.peak) {
            (Some((year, month)), Some(peak)) => Some((year, month, peak)),
            _ => None,
        }
    }

    /// The running window's demand as projected at the latest data, if there is enough data.
    pub fn projection(&self, params: &DemandParams) -> Option<Projected> {
        let cur = self.cur?;
        let now = self.data_to_ms?;
        let n = params.steps_per_window();
        let prior = self.done.iter().rev().take(n.saturating_sub(1));
        let (mut kwh, mut covered) = (cur.kwh, cur.covered_ms);
        for step in prior {
            kwh += step.kwh;
            covered += step.covered_ms;
        }
        // The running window is the last n − 1 closed steps and the current one.
        let start_ms = match n.checked_sub(1) {
            Some(0) | None => cur.start_ms,
            Some(before) => self
                .done
                .len()
                .checked_sub(before)
                .and_then(|i| self.done.get(i))
                .map_or(cur.end_ms - params.window_ms, |s| s.start_ms),
        };
        let len = (cur.end_ms - start_ms) as f64;
        let kw = match params.projection {
            Projection::RunRate if covered > 0 => kwh * MS_PER_HOUR / (covered as f64),
            Projection::RunRate => return None,
            Projection::RecentPower { recent_ms } => {
                let power = self.recent_power(recent_ms)?;
                let remaining = (cur.end_ms - now) as f64;
                (kwh * MS_PER_HOUR + power * remaining) / len
            }
        };
        Some(Projected {
            start_ms,
            end_ms: cur.end_ms,
            at_ms: now,
            kw,
        })
    }

    /// Whether the running window is projected to end above `contract_kw × margin` (a margin of
    /// 1.05 warns before the Hubei double-billing threshold, 0.95 earlier still).
    pub fn projected_exceeds(&self, params: &DemandParams, contract_kw: f64, margin: f64) -> bool {
        self.projection(params)
            .is_some_and(|p| p.kw > contract_kw * margin)
    }

    /// Keeps the (time, cumulative energy) points that the recent-power projection needs.
    fn remember_recent(&mut self, params: &DemandParams, from: i64, to: i64, kwh: f64) {
        let recent_ms = match params.projection {
            Projection::RecentPower { recent_ms } => recent_ms,
            Projection::RunRate => return,
        };
        if self.data_to_ms != Some(from) || self.recent.is_empty() {
            // After a hole the power before it says nothing about now.
            self.recent.clear();
            self.recent.push_back((from, self.total_kwh));
        }
        self.total_kwh += kwh;
        // Bounded memory at any poll rate: a point closer than recent/16 to the one before the
        // last makes the last redundant for linear interpolation at that resolution.
        let len = self.recent.len();
        if len >= 2
            && self
                .recent
                .get(len - 2)
                .is_some_and(|&(t, _)| to - t <= recent_ms / 16)
        {
            self.recent.pop_back();
        }
        self.recent.push_back((to, self.total_kwh));
        while self
            .recent
            .get(1)
            .is_some_and(|&(t, _)| t <= to - recent_ms)
        {
            self.recent.pop_front();
        }
    }

    /// Average power over the last `recent_ms` of data (or what there is of it).
    fn recent_power(&self, recent_ms: i64) -> Option<f64> {
        let &(t1, c1) = self.recent.back()?;
        let &(first, _) = self.recent.front()?;
        let t0 = (t1 - recent_ms).max(first);
        if t1 <= t0 {
            return None;
        }
        let mut c0 = None;
        for (&(ta, ca), &(tb, cb)) in self.recent.iter().zip(self.recent.iter().skip(1)) {
            if (ta..=tb).contains(&t0) && tb > ta {
                c0 = Some(ca + (cb - ca) * ((t0 - ta) as f64) / ((tb - ta) as f64));
                break;
            }
        }
        Some((c1 - c0?) * MS_PER_HOUR / ((t1 - t0) as f64))
    }

    /// Closes every step that ends by `t`, and makes the step containing `t` current.
    fn advance_to(&mut self, params: &DemandParams, tz: Tz, t: i64, out: &mut Vec<DemandEvent>) {
        let Some(mut cur) = self.cur.take() else {
            self.cur = Some(Step::containing(tz, params.step_ms, t));
            return;
        };
        let data_end = self.data_to_ms.unwrap_or(cur.start_ms);
        while cur.end_ms <= t {
            if cur.start_ms >= data_end + params.window_ms {
                // No window from here to `t` holds any data: skip them in one move.
                self.done.clear();
                cur = Step::containing(tz, params.step_ms, t);
                break;
            }
            let next = Step::new(cur.end_ms, interval_end(tz, params.step_ms, cur.end_ms));
            self.close(params, tz, cur, out);
            cur = next;
        }
        self.cur = Some(cur);
    }

    /// Files a finished step and reports the window that ends with it.
    fn close(&mut self, params: &DemandParams, tz: Tz, step: Step, out: &mut Vec<DemandEvent>) {
        let n = params.steps_per_window();
        self.done.push_back(step);
        while self.done.len() > n {
            self.done.pop_front();
        }
        let end_ms = step.end_ms;
        let start_ms = match self.done.front() {
            Some(first) if self.done.len() == n => first.start_ms,
            _ => end_ms - params.window_ms,
        };
        let (kwh, covered) = self
            .done
            .iter()
            .fold((0.0, 0), |(e, c), s| (e + s.kwh, c + s.covered_ms));
        if self.done.len() == n {
            self.done.pop_front();
        }
        if covered == 0 {
            return;
        }
        let window = DemandWindow {
            start_ms,
            end_ms,
            kw: kwh * MS_PER_HOUR / ((end_ms - start_ms) as f64),
            complete: covered >= end_ms - start_ms,
        };
        out.push(DemandEvent::Window(window));
        let month = local_month(tz, end_ms - 1);
        if self.month != Some(month) {
            if let (Some((year, month)), Some(peak)) = (self.month, self.peak) {
                out.push(DemandEvent::MonthClosed { year, month, peak });
            }
            self.month = Some(month);
            self.peak = None;
        }
        if self.peak.is_none_or(|p| window.kw > p.kw) {
            self.peak = Some(window);
        }
    }
}

/// Local (year, month) at `ts_ms`.
fn local_month(tz: Tz, ts_ms: i64) -> (i32, u32) {
    let local = ts_ms + utc_offset_ms(tz, ts_ms);
    DateTime::from_timestamp_millis(local).map_or((1970, 1), |d| (d.year(), d.month()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;
    const MIN: i64 = 60_000;

    fn at(day: (i32, u32, u32), h: u32, mi: u32) -> i64 {
        SH.with_ymd_and_hms(day.0, day.1, day.2, h, mi, 0)
            .single()
            .unwrap()
            .timestamp_millis()
    }

    fn t(h: u32, mi: u32) -> i64 {
        at((2024, 3, 1), h, mi)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    /// Feeds one-minute spans from `start` at the power `kw(minute)`.
    fn feed(
        state: &mut DemandState,
        params: &DemandParams,
        start: i64,
        minutes: i64,
        kw: impl Fn(i64) -> f64,
        out: &mut Vec<DemandEvent>,
    ) {
        for i in 0..minutes {
            let from = start + i * MIN;
            state.add(params, SH, from, from + MIN, kw(i) / 60.0, out);
        }
    }

    fn windows(out: &[DemandEvent]) -> Vec<DemandWindow> {
        out.iter()
            .filter_map(|e| match e {
                DemandEvent::Window(w) => Some(*w),
                DemandEvent::MonthClosed { .. } => None,
            })
            .collect()
    }

    /// First minute of the block after which the projection exceeds 1020 kW (1000 × 1.02).
    fn first_warning(params: &DemandParams) -> Option<i64> {
        let mut state = DemandState::new();
        let mut out = Vec::new();
        let load = |i: i64| if i < 5 { 800.0 } else { 1200.0 };
        for k in 1..15 {
            feed(
                &mut state,
                params,
                t(10, 0) + (k - 1) * MIN,
                1,
                |_| load(k - 1),
                &mut out,
            );
            if state.projected_exceeds(params, 1000.0, 1.02) {
                return Some(k);
            }
        }
        None
    }

    #[test]
    fn a_step_up_at_minute_5_warns_at_minute_6_from_recent_power() {
        // At 10:06: 86.67 kWh so far + 1200 kW for 9 more minutes = 266.67 kWh → 1066.7 kW.
        // At 10:05 the projection is exactly 800 kW.
        assert_eq!(
            first_warning(&DemandParams::fixed(DEFAULT_WINDOW_MS)),
            Some(6)
        );
        let mut state = DemandState::new();
        let mut out = Vec::new();
        let params = DemandParams::default();
        feed(
            &mut state,
            &params,
            t(10, 0),
            6,
            |i| if i < 5 { 800.0 } else { 1200.0 },
            &mut out,
        );
        let p = state.projection(&params).unwrap();
        assert_eq!(
            (p.start_ms, p.end_ms, p.at_ms),
            (t(10, 0), t(10, 15), t(10, 6))
        );
        assert!(close(p.kw, 3200.0 / 3.0), "{p:?}");
    }

    #[test]
    fn the_run_rate_warns_only_once_the_average_has_caught_up() {
        // (4000 + 1200·(k − 5)) / k > 1020 first holds at k = 12.
        let params = DemandParams {
            projection: Projection::RunRate,
            ..DemandParams::default()
        };
        assert_eq!(first_warning(&params), Some(12));
    }

    #[test]
    fn a_fixed_block_averages_its_energy_and_sets_the_month_maximum() {
        let params = DemandParams::default();
        let mut state = DemandState::new();
        let mut out = Vec::new();
        feed(
            &mut state,
            &params,
            t(10, 0),
            30,
            |i| match i {
                0..5 => 800.0,
                5..15 => 1200.0,
                _ => 300.0,
            },
            &mut out,
        );
        let w = windows(&out);
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].start_ms, w[0].end_ms, w[0].complete),
            (t(10, 0), t(10, 15), true)
        );
        assert!(
            close(w[0].kw, (800.0 * 5.0 + 1200.0 * 10.0) / 15.0),
            "{w:?}"
        );
        assert!(close(w[1].kw, 300.0));
        let (year, month, peak) = state.month_peak().unwrap();
        assert_eq!((year, month, peak), (2024, 3, w[0]));
    }

    #[test]
    fn a_sliding_window_finds_the_earliest_window_holding_a_short_burst() {
        let params = DemandParams::sliding(15 * MIN, MIN);
        let mut state = DemandState::new();
        let mut out = Vec::new();
        feed(
            &mut state,
            &params,
            t(10, 0),
            60,
            |i| if (30..35).contains(&i) { 1500.0 } else { 0.0 },
            &mut out,
        );
        let w = windows(&out);
        assert_eq!(w.len(), 60);
        assert!(w.iter().take(14).all(|w| !w.complete));
        assert!(
            w.iter()
                .skip(14)
                .all(|w| w.complete && w.end_ms - w.start_ms == 15 * MIN)
        );
        let (_, _, peak) = state.month_peak().unwrap();
        // 1500 kW × 5 min / 15 min, first reached by the window 10:20–10:35.
        assert_eq!((peak.start_ms, peak.end_ms), (t(10, 20), t(10, 35)));
        assert!(close(peak.kw, 500.0));
        assert_eq!(w.iter().filter(|x| close(x.kw, 500.0)).count(), 11);
    }

    #[test]
    fn the_maximum_restarts_with_the_first_block_of_a_local_month() {
        let params = DemandParams::default();
        let mut state = DemandState::new();
        let mut out = Vec::new();
        // 2024-02-29 23:00 to 2024-03-01 01:00 in Shanghai (15:00–17:00 UTC on the 29th).
        let start = at((2024, 2, 29), 23, 0);
        feed(
            &mut state,
            &params,
            start,
            120,
            |i| match i {
                30..45 => 2000.0,
                75..90 => 900.0,
                _ => 500.0,
            },
            &mut out,
        );
        let closed: Vec<_> = out
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                DemandEvent::MonthClosed { year, month, peak } => Some((i, *year, *month, *peak)),
                DemandEvent::Window(_) => None,
            })
            .collect();
        assert_eq!(closed.len(), 1);
        let (i, year, month, peak) = closed[0];
        assert_eq!((year, month), (2024, 2));
        assert_eq!(
            (peak.start_ms, peak.end_ms),
            (at((2024, 2, 29), 23, 30), at((2024, 2, 29), 23, 45))
        );
        assert!(close(peak.kw, 2000.0));
        // Reported right after the first March block, 00:00–00:15 local.
        assert!(matches!(out[i - 1], DemandEvent::Window(w) if w.start_ms == t(0, 0)));
        let (year, month, peak) = state.month_peak().unwrap();
        assert_eq!((year, month, peak.start_ms), (2024, 3, t(0, 15)));
        assert!(close(peak.kw, 900.0));
    }

    #[test]
    fn a_hole_in_the_data_leaves_windows_incomplete_or_unreported() {
        let params = DemandParams::default();
        let mut state = DemandState::new();
        let mut out = Vec::new();
        feed(&mut state, &params, t(10, 0), 5, |_| 600.0, &mut out);
        feed(&mut state, &params, t(11, 2), 28, |_| 600.0, &mut out);
        let w = windows(&out);
        let summary: Vec<_> = w.iter().map(|w| (w.start_ms, w.complete)).collect();
        assert_eq!(
            summary,
            vec![(t(10, 0), false), (t(11, 0), false), (t(11, 15), true)]
        );
        assert!(close(w[0].kw, 200.0) && close(w[1].kw, 520.0) && close(w[2].kw, 600.0));
    }

    #[test]
    fn energy_overlapping_what_was_seen_is_clipped() {
        let params = DemandParams::default();
        let mut state = DemandState::new();
        let mut out = Vec::new();
        state.add(&params, SH, t(10, 0), t(10, 10), 10.0, &mut out);
        state.add(&params, SH, t(10, 5), t(10, 15), 10.0, &mut out);
        state.add(&params, SH, t(10, 0), t(10, 5), 99.0, &mut out);
        let w = windows(&out);
        assert_eq!(w.len(), 1);
        assert!(close(w[0].kw, 60.0), "{w:?}"); // 15 kWh in a quarter hour
    }

    #[test]
    fn billed_demand_follows_the_105_percent_rule() {
        let within = billed_demand(1000.0, 1040.0);
        assert_eq!((within.billed_kw, within.excess_kw), (1000.0, 0.0));
        let below = billed_demand(1000.0, 600.0);
        assert!(close(below.billed_kw, 1000.0));
        let at_limit = billed_demand(1000.0, 1050.0);
        assert!(close(at_limit.excess_kw, 0.0));
        let over = billed_demand(1000.0, 1200.0);
        assert!(close(over.excess_kw, 150.0));
        assert!(close(over.billed_kw, 1050.0 + 300.0));
    }

    #[test]
    fn invalid_parameters_name_the_field() {
        let p = DemandParams::sliding(15 * MIN, 7 * MIN);
        let err = p.validate().unwrap_err();
        assert!(
            err.to_string().starts_with("demand parameter `step_ms`"),
            "{err}"
        );
        let mut state = DemandState::new();
        let mut out = Vec::new();
        state.add(&p, SH, t(10, 0), t(10, 30), 1.0, &mut out);
        assert!(out.is_empty() && state.projection(&DemandParams::default()).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn fixed_windows_hold_exactly_the_energy_added(
            spans in prop::collection::vec(
                (1_000_i64..20 * MIN, 0_i64..3 * MIN, 0.0_f64..100.0),
                1..80,
            ),
        ) {
            let params = DemandParams::default();
            let mut state = DemandState::new();
            let mut out = Vec::new();
            let mut ts = t(10, 0);
            let mut total = 0.0;
            for (len, hole, kwh) in spans {
                ts += hole;
                state.add(&params, SH, ts, ts + len, kwh, &mut out);
                ts += len;
                total += kwh;
            }
            // Close every block by adding nothing far later.
            state.add(&params, SH, ts + DAY_MS, ts + DAY_MS + 1, 0.0, &mut out);
            let booked: f64 = windows(&out)
                .iter()
                .map(|w| w.kw * ((w.end_ms - w.start_ms) as f64) / MS_PER_HOUR)
                .sum();
            prop_assert!((booked - total).abs() <= 1e-9 * total.max(1.0), "{booked} vs {total}");
            prop_assert!(windows(&out).windows(2).all(|w| w[0].end_ms <= w[1].start_ms));
        }
    }
}
