//! Cumulative meter counter → consumption per closed ledger interval (default 15 min).
//!
//! [`CounterState`] receives one meter's readings (time, counter value in engineering units) and
//! appends every interval that a reading closes. It owns the step logic: rollover, reset,
//! replacement, impossible jumps, and gaps.
//!
//! Invariants:
//! - A delta is never negative and never a spike: a decrease that is not a rollover, and an
//!   increase the meter cannot have made, are held as *suspect* until the next good reading
//!   decides between a glitch (ignored) and a real discontinuity (flagged, booked as nothing).
//! - Consumption between two readings is spread linearly in time across the intervals the step
//!   touches, the last piece taking the remainder, so the deltas of the intervals add up to the
//!   counter's progress × multiplier (up to float rounding) wherever a step is booked.
//! - Intervals are emitted in time order, each exactly once, tiling time without overlap.
//!   Boundaries are local wall-clock marks of the meter's zone; see [`interval_end`] for DST.
//! - An interval closes only when a good reading (or, for a provably unbookable gap, a later
//!   bad reading) shows that nothing more can be booked into it; what a sequence of readings
//!   emits never depends on the bad readings interleaved with it.
//! - Pure: no I/O, no clock. Time is milliseconds since the Unix epoch, UTC, and must lie in
//!   `MIN_TS_MS..=MAX_TS_MS` (`super::tou`); readings outside are ignored.
//!
//! Rules chosen where the design left a choice:
//! - **Rollover**: with `register_max` set, a decrease from the top 10 % of the register
//!   (`prev ≥ max − 0.1·(max − min)`) to the bottom 10 % (`new ≤ min + 0.1·(max − min)`)
//!   wrapped; its delta is `(max − prev) + (new − min) + resolution`. Without `register_max`
//!   (a float counter nobody gave a width), a drop is judged by plausibility: from the top to
//!   the bottom 10 % of the next power of ten, with progress no more than the rating allows
//!   (or, unrated, twice the fastest progress measured so far), it is a rollover there;
//!   anything else is a reset.
//! - **Reset**: any other decrease, once confirmed. The step that contains it books `new ×
//!   multiplier` (what a counter restarted at zero has registered since) when a rated maximum is
//!   configured and says that much fits in the step; otherwise it books nothing.
//! - **Replacement** (signalled by [`CounterState::replaced`]): the step from the last reading
//!   to the replacement books nothing; the old meter's last reading, if known, is pushed first.
//! - **Impossible jump**: an increase above `max_rate_per_hour × max(step, interval)` (a whole
//!   interval's worth is allowed, since meters update registers in bursts). The step books
//!   nothing; the interval becomes `Estimated` (or `Missing` if nothing else covered it).
//! - **Gap**: an interval with no good reading anywhere in `[start, end]`. Under
//!   [`GapPolicy::Interpolate`] (default) the step across it is spread linearly and every interval
//!   it touches is `Estimated`; under [`GapPolicy::Missing`], or when the step is longer than
//!   `max_interpolate_ms` (24 h), the step books nothing: intervals inside are `Missing` with delta
//!   0 and the intervals at its ends keep only what was measured (`Estimated`). Missing intervals
//!   are listed for at most `max_gap_ms` (31 days) after the last good reading, so a wall-clock
//!   jump (a gateway without RTC booting in 1970) cannot flood the ledger.
//! - **Events**: every rollover, confirmed reset, signalled replacement and confirmed jump is
//!   also reported as a [`CounterEvent`] with what the step booked and what it left
//!   unattributed, so none of them passes in silence.
//! - **Quality** follows coverage: `Good` when good steps cover the whole interval, `Missing`
//!   when nothing booked covers any of it, `Estimated` otherwise.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::tou::{DAY_MS, MAX_TS_MS, MIN_TS_MS, offset_change_in, utc_offset_ms};

/// Default ledger interval: 15 minutes.
pub const DEFAULT_INTERVAL_MS: i64 = 15 * 60_000;

/// Default longest step that may be interpolated across: 24 hours.
pub const DEFAULT_MAX_INTERPOLATE_MS: i64 = DAY_MS;

/// Default longest silence for which `Missing` intervals are listed: 31 days.
pub const DEFAULT_MAX_GAP_MS: i64 = 31 * DAY_MS;

/// Share of the register at its top and bottom between which a decrease counts as a rollover.
const ROLLOVER_BAND: f64 = 0.1;

const MS_PER_HOUR: f64 = 3_600_000.0;

// ---------------------------------------------------------------------------------------------
// The interval grid
// ---------------------------------------------------------------------------------------------

/// Whether an offset change at `tr` (from `before` to `after`) is itself a boundary: the wall
/// clock lands on a mark, or had just reached one, or jumps forward across one.
fn change_is_boundary(tr: i64, before: i64, after: i64, iv: i64) -> bool {
    let (was, now) = (tr + before, tr + after);
    was.rem_euclid(iv) == 0
        || now.rem_euclid(iv) == 0
        || (now > was && now - now.rem_euclid(iv) >= was)
}

/// End of the ledger interval containing `ts_ms`: the first boundary strictly after it.
///
/// A boundary is an instant at which the local wall clock of `tz` shows a multiple of
/// `interval_ms` counted from local midnight, or jumps forward across one. So intervals follow
/// local quarter-hours even in zones offset by a non-multiple of the interval (`+05:30` with
/// hourly intervals ends them at UTC :30); in zones with DST they tile UTC time without overlap,
/// are named by their UTC start, and keep their nominal length across whole-hour changes (a
/// 15-minute ledger has 92 intervals on the spring-forward day and 100 on the fall-back day, and
/// no interval spans a change). Only a shift that is not a multiple of the interval (Lord Howe's
/// 30 minutes under hourly intervals) yields one shorter or longer interval. `interval_ms` is
/// clamped to 1 ms..=1 day and `ts_ms` to the supported range.
pub fn interval_end(tz: Tz, interval_ms: i64, ts_ms: i64) -> i64 {
    let iv = interval_ms.clamp(1, DAY_MS);
    let t = ts_ms.clamp(MIN_TS_MS, MAX_TS_MS);
    let off = utc_offset_ms(tz, t);
    let cand = ((t + off).div_euclid(iv) + 1) * iv - off;
    if utc_offset_ms(tz, cand) == off {
        return cand;
    }
    // The offset changes before the next mark: the change may itself be the boundary, else the
    // next mark on the new clock is.
    let tr = offset_change_in(tz, t, cand, off);
    let after = utc_offset_ms(tz, tr);
    if change_is_boundary(tr, off, after, iv) {
        tr
    } else {
        ((tr + after).div_euclid(iv) + 1) * iv - after
    }
}

/// Start of the ledger interval containing `ts_ms`: the last boundary at or before it (see
/// [`interval_end`] for what a boundary is).
pub fn interval_start(tz: Tz, interval_ms: i64, ts_ms: i64) -> i64 {
    let iv = interval_ms.clamp(1, DAY_MS);
    let t = ts_ms.clamp(MIN_TS_MS, MAX_TS_MS);
    let off = utc_offset_ms(tz, t);
    let cand = (t + off).div_euclid(iv) * iv - off;
    let off_cand = utc_offset_ms(tz, cand);
    if off_cand == off {
        return cand;
    }
    // The current offset began after `cand`: the interval starts at that change if it is a
    // boundary, else at the last mark of the old clock.
    let tr = offset_change_in(tz, cand, t, off_cand);
    if change_is_boundary(tr, off_cand, utc_offset_ms(tz, tr), iv) {
        tr
    } else {
        (tr - 1 + off_cand).div_euclid(iv) * iv - off_cand
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// What to do with intervals that no good reading touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapPolicy {
    /// Spread the step across the gap linearly and mark the intervals `Estimated`.
    #[default]
    Interpolate,
    /// Book nothing across the gap: intervals inside are `Missing` with delta 0.
    Missing,
}

/// Per-meter settings of the counter → interval conversion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeterParams {
    /// Ledger interval; must divide a day evenly (default 15 min).
    pub interval_ms: i64,
    /// CT/PT ratio (or any factor) applied to every delta; the counter itself is unscaled.
    pub multiplier: f64,
    /// Largest value the register shows before it rolls over (65535 × scale for u16); for a
    /// float counter, the value at which it shows 0 again (100000 for one that shows 99999.99
    /// and then 0.00). `None`: no known width (see the module doc for how a drop is judged).
    pub register_max: Option<f64>,
    /// Smallest value the register shows, where a rollover lands: 0, or −2³¹ × scale for i32.
    pub register_min: f64,
    /// Value of one register count (the scale of an integer point, 0 for a float); a rollover
    /// adds it, since `max → min` is one count.
    pub resolution: f64,
    /// Rated maximum in delta units per hour after the multiplier (kW for kWh); more is a glitch.
    pub max_rate_per_hour: Option<f64>,
    /// Treatment of intervals that no good reading touches.
    pub gap_policy: GapPolicy,
    /// Longest step that `Interpolate` spreads; longer gaps are treated as `Missing`.
    pub max_interpolate_ms: i64,
    /// Longest silence after the last good reading for which `Missing` intervals are listed.
    pub max_gap_ms: i64,
}

impl Default for MeterParams {
    fn default() -> Self {
        MeterParams {
            interval_ms: DEFAULT_INTERVAL_MS,
            multiplier: 1.0,
            register_max: None,
            register_min: 0.0,
            resolution: 0.0,
            max_rate_per_hour: None,
            gap_policy: GapPolicy::Interpolate,
            max_interpolate_ms: DEFAULT_MAX_INTERPOLATE_MS,
            max_gap_ms: DEFAULT_MAX_GAP_MS,
        }
    }
}

impl MeterParams {
    /// Checks the parameters; config resolution calls it, and [`CounterState::push`] ignores
    /// readings while it fails.
    ///
    /// # Errors
    /// The first field out of range, by name.
    pub fn validate(&self) -> Result<(), CounterError> {
        let bad = |field: &'static str, message: String| {
            Err(CounterError::InvalidParam { field, message })
        };
        if !(1000..=DAY_MS).contains(&self.interval_ms) || DAY_MS % self.interval_ms != 0 {
            return bad(
                "interval_ms",
                format!(
                    "{} ms does not divide a day into whole intervals of at least 1 s \
                     (900000 is 15 min)",
                    self.interval_ms
                ),
            );
        }
        if !(self.multiplier.is_finite() && self.multiplier > 0.0) {
            return bad(
                "multiplier",
                format!("{} is not a positive ratio", self.multiplier),
            );
        }
        if let Some(max) = self.register_max {
            if !(max.is_finite() && max > 0.0) {
                return bad(
                    "register_max",
                    format!("{max} is not a positive register range"),
                );
            }
            if !(self.register_min.is_finite() && self.register_min < max) {
                return bad(
                    "register_min",
                    format!("{} is not below register_max {max}", self.register_min),
                );
            }
            if !(self.resolution.is_finite()
                && (0.0..=(max - self.register_min) * ROLLOVER_BAND).contains(&self.resolution))
            {
                return bad(
                    "resolution",
                    format!(
                        "{} is not a count size within the register",
                        self.resolution
                    ),
                );
            }
        } else if !(self.resolution.is_finite() && self.resolution >= 0.0) {
            return bad(
                "resolution",
                format!("{} is not a count size", self.resolution),
            );
        }
        if let Some(rate) = self.max_rate_per_hour {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(
                    "max_rate_per_hour",
                    format!("{rate} is not a positive rating"),
                );
            }
        }
        if !(0..=366 * DAY_MS).contains(&self.max_interpolate_ms) {
            return bad(
                "max_interpolate_ms",
                format!("{} ms is not between 0 and a year", self.max_interpolate_ms),
            );
        }
        if !(self.max_interpolate_ms..=366 * DAY_MS).contains(&self.max_gap_ms) {
            return bad(
                "max_gap_ms",
                format!(
                    "{} ms is not between max_interpolate_ms ({} ms) and a year",
                    self.max_gap_ms, self.max_interpolate_ms
                ),
            );
        }
        Ok(())
    }

    /// Most the meter can register in a step of `dt_ms` (a whole interval's worth at least).
    fn plausible(&self, delta: f64, dt_ms: i64) -> bool {
        delta.is_finite()
            && self.max_rate_per_hour.is_none_or(|rate| {
                delta <= rate * (dt_ms.max(self.interval_ms) as f64) / MS_PER_HOUR
            })
    }
}

/// Why counter input was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CounterError {
    /// A meter parameter is out of range.
    #[error("meter parameter `{field}`: {message}")]
    InvalidParam {
        /// The field, as named in config.
        field: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// A replacement was signalled at or before a reading already booked.
    #[error(
        "meter replacement at {ts_ms} ms is not after {last_ms} ms, up to which readings are \
         already booked (a new meter's readings among them were handled as a reset)"
    )]
    ReplacedInPast {
        /// When the replacement was said to happen.
        ts_ms: i64,
        /// The latest reading already accepted.
        last_ms: i64,
    },
    /// The new meter's first reading is not a finite value at a supported time.
    #[error(
        "meter replacement reading {value} at {ts_ms} ms is not a finite value at a supported time"
    )]
    InvalidReplacement {
        /// When the replacement was said to happen.
        ts_ms: i64,
        /// The new meter's reading.
        value: f64,
    },
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// How much of a closed interval's delta was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalQuality {
    /// Good readings cover the whole interval.
    Good,
    /// Part of the delta is interpolated, or part of the interval is unaccounted for.
    Estimated,
    /// Nothing booked covers any of the interval; the delta is 0.
    Missing,
}

impl IntervalQuality {
    /// The name used on the wire: "good", "estimated", "missing".
    pub fn as_str(self) -> &'static str {
        match self {
            IntervalQuality::Good => "good",
            IntervalQuality::Estimated => "estimated",
            IntervalQuality::Missing => "missing",
        }
    }
}

/// Something that happened to the counter within an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// The register wrapped past its maximum (counted, not lost).
    Rollover,
    /// The counter went back (reset or an unsignalled replacement); marks the interval of the
    /// reading that revealed it.
    Reset,
    /// A replacement was signalled; marks the interval of the replacement.
    Replaced,
    /// An increase beyond the meter's rating was excluded; marks the interval of the reading.
    ImpossibleJump,
    /// Part of the interval had no good reading; marks every interval the gap touches.
    Gap,
}

impl Flag {
    /// Every flag, in bit order.
    pub const ALL: [Flag; 5] = [
        Flag::Rollover,
        Flag::Reset,
        Flag::Replaced,
        Flag::ImpossibleJump,
        Flag::Gap,
    ];

    /// The name used on the wire: "rollover", "reset", "replaced", "impossible_jump", "gap".
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Rollover => "rollover",
            Flag::Reset => "reset",
            Flag::Replaced => "replaced",
            Flag::ImpossibleJump => "impossible_jump",
            Flag::Gap => "gap",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Flag::Rollover => 1,
            Flag::Reset => 1 << 1,
            Flag::Replaced => 1 << 2,
            Flag::ImpossibleJump => 1 << 3,
            Flag::Gap => 1 << 4,
        }
    }
}

/// A set of [`Flag`]s, one byte on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flags(u8);

impl Flags {
    /// No flags.
    pub const EMPTY: Flags = Flags(0);

    /// Whether `flag` is set.
    pub fn contains(self, flag: Flag) -> bool {
        self.0 & flag.bit() != 0
    }

    /// Sets `flag`.
    pub fn insert(&mut self, flag: Flag) {
        self.0 |= flag.bit();
    }

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The raw bits, for compact storage.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set stored as [`Self::bits`]; unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Flags {
        Flags(bits & 0b1_1111)
    }

    /// The flags set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Flag> {
        Flag::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl FromIterator<Flag> for Flags {
    fn from_iter<I: IntoIterator<Item = Flag>>(iter: I) -> Self {
        let mut flags = Flags::EMPTY;
        for flag in iter {
            flags.insert(flag);
        }
        flags
    }
}

/// A closed ledger interval of one meter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Start, inclusive (UTC ms).
    pub start_ms: i64,
    /// End, exclusive (UTC ms).
    pub end_ms: i64,
    /// Consumption in engineering units × multiplier; never negative.
    pub delta: f64,
    /// How much of `delta` was measured.
    pub quality: IntervalQuality,
    /// What happened to the counter within the interval.
    pub flags: Flags,
}

/// What the latest push or replacement booked, spanning every step it resolved (for demand).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Booked {
    /// Start of the span (the previous accepted reading).
    pub from_ms: i64,
    /// End of the span (the reading just accepted).
    pub to_ms: i64,
    /// Consumption booked over the span.
    pub delta: f64,
    /// `Good` if all measured, `Missing` if nothing was booked, else `Estimated`.
    pub quality: IntervalQuality,
}

/// What broke a counter's continuity: each one is an event row of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The register rolled over past its maximum; the step is booked in full.
    Wrap,
    /// The counter went back and stayed back (a reset, or a replacement nobody signalled).
    Reset,
    /// A replacement was signalled.
    Replacement,
    /// The counter rose more than the meter's rating allows and stayed up; the rise is left out.
    Jump,
}

impl EventKind {
    /// Every kind, in order.
    pub const ALL: [EventKind; 4] = [
        EventKind::Wrap,
        EventKind::Reset,
        EventKind::Replacement,
        EventKind::Jump,
    ];

    /// The name in the ledger, the log and the metric label: "wrap", "reset", "replacement",
    /// "jump".
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Wrap => "wrap",
            EventKind::Reset => "reset",
            EventKind::Replacement => "replacement",
            EventKind::Jump => "jump",
        }
    }

    /// The kind named by [`Self::as_str`], if any.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One discontinuity of a counter, with what the ledger booked for the step that holds it and
/// what it had to leave out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CounterEvent {
    /// What happened.
    pub kind: EventKind,
    /// The reading that showed it (UTC ms); for a replacement, when it was signalled.
    pub at_ms: i64,
    /// The last accepted reading before it (UTC ms); `at_ms` when there was none.
    pub from_ms: i64,
    /// The counter at `from_ms`, if there was a reading.
    pub before: Option<f64>,
    /// The counter at `at_ms`.
    pub after: f64,
    /// Consumption booked for the step `from_ms → at_ms` (after the multiplier).
    pub booked: f64,
    /// Consumption the counter shows but no interval holds (after the multiplier): what a
    /// reset meter registered since zero, or a jump's rise. A lower bound: what the meter
    /// registered before a reset between two readings cannot be known.
    pub unattributed: f64,
    /// For a wrap of a counter without `register_max`: the range it was judged to roll over
    /// at (a power of ten), to be confirmed in config.
    pub inferred_max: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Reading {
    ts_ms: i64,
    value: f64,
}

/// Why a reading broke continuity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Break {
    Decrease,
    Jump,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Suspect {
    reading: Reading,
    kind: Break,
}

/// How a step's time counts toward the quality of the intervals it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    Measured,
    Estimated,
    Unbooked,
}

/// A rollover a step went across.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Wrapped {
    /// The range a float counter without `register_max` was judged to roll over at.
    inferred_max: Option<f64>,
}

/// How the counter moved between two readings.
enum Step {
    /// Plausible progress (possibly across a rollover).
    Continuous { delta: f64, wrap: Option<Wrapped> },
    /// A break of continuity that the next reading must confirm.
    Break(Break),
}

/// The earliest interval not yet closed, with what has been booked into it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Open {
    start_ms: i64,
    end_ms: i64,
    delta: f64,
    measured_ms: i64,
    estimated_ms: i64,
    flags: Flags,
}

impl Open {
    fn containing(tz: Tz, iv: i64, ts_ms: i64) -> Open {
        Open::new(interval_start(tz, iv, ts_ms), interval_end(tz, iv, ts_ms))
    }

    fn new(start_ms: i64, end_ms: i64) -> Open {
        Open {
            start_ms,
            end_ms,
            delta: 0.0,
            measured_ms: 0,
            estimated_ms: 0,
            flags: Flags::EMPTY,
        }
    }

    fn snapshot(&self) -> Interval {
        let len = self.end_ms - self.start_ms;
        let quality = if self.measured_ms >= len {
            IntervalQuality::Good
        } else if self.measured_ms + self.estimated_ms == 0 {
            IntervalQuality::Missing
        } else {
            IntervalQuality::Estimated
        };
        Interval {
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            delta: self.delta,
            quality,
            flags: self.flags,
        }
    }
}

/// The persisted state of one meter's counter (serde, so it survives restarts).
///
/// A state belongs to one `(interval_ms, zone)`; after either changes, the interval open at the
/// time keeps its old bounds and the grid follows the new setting from its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterState {
    /// The last accepted reading: where the next step starts.
    base: Option<Reading>,
    /// A reading after `base` that broke continuity, awaiting the next good reading.
    suspect: Option<Suspect>,
    /// The earliest interval not yet closed; present whenever `base` is.
    open: Option<Open>,
    /// The bad reading that last closed intervals early: a good reading must come after it, or
    /// the gap those intervals were closed for could shrink after the fact.
    #[serde(default)]
    horizon_ms: Option<i64>,
    /// The fastest measured progress so far, in delta units per hour: what a drop of a counter
    /// without a known register width must fit to count as a rollover.
    #[serde(default)]
    peak_rate_per_hour: Option<f64>,
    /// What the latest call booked; transient.
    #[serde(skip)]
    booked: Option<Booked>,
    /// The discontinuities the latest call found; transient.
    #[serde(skip)]
    events: Vec<CounterEvent>,
}

impl CounterState {
    /// A state that has seen no reading.
    pub fn new() -> CounterState {
        CounterState::default()
    }

    /// Time of the last accepted good reading, if any (a suspect one is not yet accepted).
    pub fn last_good_ms(&self) -> Option<i64> {
        self.base.map(|b| b.ts_ms)
    }

    /// What the latest [`push`](Self::push) or [`replaced`](Self::replaced) booked, if anything.
    pub fn last_booked(&self) -> Option<Booked> {
        self.booked
    }

    /// The wraps, resets, replacements and jumps that the latest [`push`](Self::push) or
    /// [`replaced`](Self::replaced) found, in time order.
    pub fn events(&self) -> &[CounterEvent] {
        &self.events
    }

    /// The interval still open, as it would close if nothing more were booked into it.
    pub fn pending(&self) -> Option<Interval> {
        self.open.map(|o| o.snapshot())
    }

    /// Takes one reading (`value` is `None` for a bad one) and appends every interval it closes.
    ///
    /// Readings at or before the latest accepted one (or the end of an interval already closed)
    /// are dropped as duplicates or out of order, unless they are more than `max_gap_ms` earlier:
    /// then the wall clock was stepped back, the open interval is closed as it stands and the
    /// counter restarts at the reading. Readings are ignored while `params` fail
    /// [`MeterParams::validate`].
    pub fn push(
        &mut self,
        params: &MeterParams,
        tz: Tz,
        ts_ms: i64,
        value: Option<f64>,
        out: &mut Vec<Interval>,
    ) {
        self.booked = None;
        self.events.clear();
        if params.validate().is_err() || !(MIN_TS_MS..=MAX_TS_MS).contains(&ts_ms) {
            return;
        }
        let latest = self.settled_ms();
        let Some(value) = value.filter(|v| v.is_finite()) else {
            if latest.is_some_and(|l| ts_ms > l) {
                self.close_unbookable(params, tz, ts_ms, out);
            }
            return;
        };
        let reading = Reading { ts_ms, value };
        match latest {
            None => self.restart(params, tz, reading),
            Some(l) if ts_ms > l => self.accept(params, tz, reading, out),
            Some(l) if l - ts_ms > params.max_gap_ms => {
                if let Some(mut open) = self.open.take() {
                    open.flags.insert(Flag::Gap);
                    out.push(open.snapshot());
                }
                self.restart(params, tz, reading);
            }
            Some(_) => {}
        }
    }

    /// Signals that the meter was replaced at `ts_ms` and the new one read `new_value` then.
    ///
    /// The step from the last reading to `ts_ms` books nothing (push the old meter's final
    /// reading first if it is known); the interval of `ts_ms` is flagged `Replaced`.
    ///
    /// # Errors
    /// Invalid `params`; a non-finite `new_value` or unsupported time; a `ts_ms` at or before
    /// the latest accepted reading (by then the new meter's readings were judged as a reset).
    pub fn replaced(
        &mut self,
        params: &MeterParams,
        tz: Tz,
        ts_ms: i64,
        new_value: f64,
        out: &mut Vec<Interval>,
    ) -> Result<(), CounterError> {
        params.validate()?;
        if !new_value.is_finite() || !(MIN_TS_MS..=MAX_TS_MS).contains(&ts_ms) {
            return Err(CounterError::InvalidReplacement {
                ts_ms,
                value: new_value,
            });
        }
        if let Some(last_ms) = self.settled_ms().filter(|&l| ts_ms <= l) {
            return Err(CounterError::ReplacedInPast { ts_ms, last_ms });
        }
        self.booked = None;
        self.events.clear();
        let reading = Reading {
            ts_ms,
            value: new_value,
        };
        self.events.push(CounterEvent {
            kind: EventKind::Replacement,
            at_ms: ts_ms,
            from_ms: self.base.map_or(ts_ms, |b| b.ts_ms),
            before: self.base.map(|b| b.value),
            after: new_value,
            booked: 0.0,
            unattributed: 0.0,
            inferred_max: None,
        });
        match self.base {
            None => {
                self.restart(params, tz, reading);
                if let Some(open) = self.open.as_mut() {
                    open.flags.insert(Flag::Replaced);
                }
            }
            Some(base) => {
                // Whatever the suspect was, the replacement explains it.
                self.suspect = None;
                self.book(
                    params,
                    tz,
                    base.ts_ms,
                    ts_ms,
                    (Coverage::Unbooked, 0.0),
                    Some(Flag::Replaced),
                    out,
                );
                self.base = Some(reading);
            }
        }
        Ok(())
    }

    /// Readings at or before this instant can no longer be booked: the latest accepted reading,
    /// or the bad reading that closed intervals early.
    fn settled_ms(&self) -> Option<i64> {
        let latest = self
            .suspect
            .map(|s| s.reading.ts_ms)
            .or(self.base.map(|b| b.ts_ms));
        latest.max(self.horizon_ms)
    }

    /// Starts the counter afresh at `reading`; the part of its interval before it is a gap.
    fn restart(&mut self, params: &MeterParams, tz: Tz, reading: Reading) {
        let mut open = Open::containing(tz, params.interval_ms, reading.ts_ms);
        if open.start_ms < reading.ts_ms {
            open.flags.insert(Flag::Gap);
        }
        self.base = Some(reading);
        self.suspect = None;
        self.open = Some(open);
        self.horizon_ms = None;
    }

    /// A good reading later than everything accepted so far.
    fn accept(&mut self, params: &MeterParams, tz: Tz, reading: Reading, out: &mut Vec<Interval>) {
        let Some(base) = self.base else {
            self.restart(params, tz, reading);
            return;
        };
        let Some(suspect) = self.suspect.take() else {
            self.step(params, tz, base, reading, out);
            return;
        };
        if let Step::Continuous { delta, wrap } = self.classify(params, base, reading) {
            // The series carries on from before the suspect: it was a glitch.
            self.book_progress(params, tz, base, reading, delta, wrap, out);
            return;
        }
        // The series does not return: the break at the suspect was real.
        let s = suspect.reading;
        let (booking, flag, event) = match suspect.kind {
            Break::Jump => {
                let rise = ((s.value - base.value) * params.multiplier).max(0.0);
                (
                    (Coverage::Unbooked, 0.0),
                    Flag::ImpossibleJump,
                    (EventKind::Jump, rise),
                )
            }
            Break::Decrease => {
                let since_zero = s.value * params.multiplier;
                let fits = params.max_rate_per_hour.is_some()
                    && s.value >= 0.0
                    && params.plausible(since_zero, s.ts_ms - base.ts_ms);
                if fits {
                    (
                        (Coverage::Estimated, since_zero),
                        Flag::Reset,
                        (EventKind::Reset, 0.0),
                    )
                } else {
                    let lost = since_zero.max(0.0);
                    (
                        (Coverage::Unbooked, 0.0),
                        Flag::Reset,
                        (EventKind::Reset, lost),
                    )
                }
            }
        };
        self.book(params, tz, base.ts_ms, s.ts_ms, booking, Some(flag), out);
        self.events.push(CounterEvent {
            kind: event.0,
            at_ms: s.ts_ms,
            from_ms: base.ts_ms,
            before: Some(base.value),
            after: s.value,
            booked: booking.1,
            unattributed: event.1,
            inferred_max: None,
        });
        self.base = Some(s);
        self.step(params, tz, s, reading, out);
    }

    /// Books plausible progress `base → reading` (across a rollover if `wrap`), notes its rate
    /// and any rollover, and moves the base on.
    #[expect(
        clippy::too_many_arguments,
        reason = "one step's facts, as `book` takes them"
    )]
    fn book_progress(
        &mut self,
        params: &MeterParams,
        tz: Tz,
        base: Reading,
        reading: Reading,
        delta: f64,
        wrap: Option<Wrapped>,
        out: &mut Vec<Interval>,
    ) {
        let flag = wrap.map(|_| Flag::Rollover);
        let booking = (Coverage::Measured, delta);
        self.book(params, tz, base.ts_ms, reading.ts_ms, booking, flag, out);
        let dt_ms = reading.ts_ms - base.ts_ms;
        match wrap {
            Some(w) => self.events.push(CounterEvent {
                kind: EventKind::Wrap,
                at_ms: reading.ts_ms,
                from_ms: base.ts_ms,
                before: Some(base.value),
                after: reading.value,
                booked: delta,
                unattributed: 0.0,
                inferred_max: w.inferred_max,
            }),
            None if dt_ms > 0 => {
                let rate = delta * MS_PER_HOUR / dt_ms as f64;
                if rate.is_finite() && self.peak_rate_per_hour.is_none_or(|p| rate > p) {
                    self.peak_rate_per_hour = Some(rate);
                }
            }
            None => {}
        }
        self.base = Some(reading);
    }

    /// Books `base → reading` if the counter moved plausibly, else holds `reading` as suspect.
    fn step(
        &mut self,
        params: &MeterParams,
        tz: Tz,
        base: Reading,
        reading: Reading,
        out: &mut Vec<Interval>,
    ) {
        match self.classify(params, base, reading) {
            Step::Continuous { delta, wrap } => {
                self.book_progress(params, tz, base, reading, delta, wrap, out);
            }
            Step::Break(kind) => self.suspect = Some(Suspect { reading, kind }),
        }
    }

    /// Books a step `(a, b]` with its coverage and delta, applying the gap policy, and closes
    /// every interval that ends by `b`. `flag` marks the interval holding `b`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one step's facts; a struct for them would be built once and unpacked once"
    )]
    fn book(
        &mut self,
        params: &MeterParams,
        tz: Tz,
        a: i64,
        b: i64,
        (coverage, delta): (Coverage, f64),
        flag: Option<Flag>,
        out: &mut Vec<Interval>,
    ) {
        let iv = params.interval_ms;
        let mut cur = self
            .open
            .take()
            .unwrap_or_else(|| Open::containing(tz, iv, a));
        // A gap: some interval lies strictly inside (a, b), touched by no reading. Most steps end
        // inside the open interval and need no grid arithmetic to see that they are not gaps.
        let e0 = if cur.start_ms <= a {
            cur.end_ms
        } else {
            interval_end(tz, iv, a)
        };
        let gap = b > e0 && interval_end(tz, iv, e0) < b;
        let (coverage, delta) = match coverage {
            Coverage::Unbooked => (Coverage::Unbooked, 0.0),
            _ if !gap => (coverage, delta),
            _ if params.gap_policy == GapPolicy::Interpolate
                && b - a <= params.max_interpolate_ms =>
            {
                (Coverage::Estimated, delta)
            }
            _ => (Coverage::Unbooked, 0.0),
        };
        let total = (b - a) as f64;
        let mut given = 0.0;
        loop {
            if coverage == Coverage::Unbooked
                && cur.start_ms - a >= params.max_gap_ms
                && cur.end_ms < b
            {
                // Too long a silence to list interval by interval: resume at the reading.
                cur = Open::containing(tz, iv, b);
            }
            let overlap = (b.min(cur.end_ms) - a.max(cur.start_ms)).max(0);
            let last = b <= cur.end_ms;
            let piece = match coverage {
                Coverage::Unbooked => 0.0,
                // The remainder, so pieces sum to the delta; never below zero through rounding.
                _ if last => (delta - given).max(0.0),
                _ => delta * (overlap as f64) / total,
            };
            given += piece;
            cur.delta += piece;
            match coverage {
                Coverage::Measured => cur.measured_ms += overlap,
                Coverage::Estimated => cur.estimated_ms += overlap,
                Coverage::Unbooked => {}
            }
            if overlap > 0 {
                if gap {
                    cur.flags.insert(Flag::Gap);
                }
                if let Some(flag) = flag.filter(|_| last) {
                    cur.flags.insert(flag);
                }
            }
            if b < cur.end_ms {
                break;
            }
            out.push(cur.snapshot());
            cur = Open::new(cur.end_ms, interval_end(tz, iv, cur.end_ms));
            if last {
                break;
            }
        }
        self.open = Some(cur);
        let quality = match coverage {
            Coverage::Measured => IntervalQuality::Good,
            Coverage::Estimated => IntervalQuality::Estimated,
            Coverage::Unbooked => IntervalQuality::Missing,
        };
        self.booked = Some(match self.booked {
            Some(prev) => Booked {
                from_ms: prev.from_ms,
                to_ms: b,
                delta: prev.delta + delta,
                quality: prev.quality.max(quality),
            },
            None => Booked {
                from_ms: a,
                to_ms: b,
                delta,
                quality,
            },
        });
    }

    /// On a bad reading at `ts_ms`: if the step from the last good reading must turn out an
    /// unbookable gap whatever comes next, closes the intervals that ended before `ts_ms`, so a
    /// dead meter's ledger keeps pace. They close exactly as the eventual reading would close
    /// them, which keeps output independent of bad readings.
    fn close_unbookable(
        &mut self,
        params: &MeterParams,
        tz: Tz,
        ts_ms: i64,
        out: &mut Vec<Interval>,
    ) {
        // A pending suspect decides where the step starts; wait for it.
        let (Some(base), None, Some(mut cur)) = (self.base, self.suspect, self.open) else {
            return;
        };
        let a = base.ts_ms;
        let iv = params.interval_ms;
        let unbookable =
            params.gap_policy == GapPolicy::Missing || ts_ms - a > params.max_interpolate_ms;
        // Good readings must now come after ts_ms (the horizon), so an interval ending before
        // it, after the one holding `a`, proves the gap, and the step's length exceeds the cap.
        if !unbookable || interval_end(tz, iv, interval_end(tz, iv, a)) >= ts_ms {
            return;
        }
        self.horizon_ms = Some(ts_ms);
        while cur.end_ms < ts_ms && cur.start_ms - a < params.max_gap_ms {
            cur.flags.insert(Flag::Gap);
            out.push(cur.snapshot());
            cur = Open::new(cur.end_ms, interval_end(tz, iv, cur.end_ms));
        }
        self.open = Some(cur);
    }
}

impl CounterState {
    /// How the counter moved from `from` to `to`.
    fn classify(&self, params: &MeterParams, from: Reading, to: Reading) -> Step {
        let dt = to.ts_ms - from.ts_ms;
        let rise = to.value - from.value;
        let continuous = |delta: f64, wrap: Option<Wrapped>| {
            if params.plausible(delta, dt) {
                Step::Continuous { delta, wrap }
            } else {
                Step::Break(Break::Jump)
            }
        };
        if rise >= 0.0 {
            return continuous(rise * params.multiplier, None);
        }
        if let Some(max) = params.register_max {
            let min = params.register_min;
            let band = ROLLOVER_BAND * (max - min);
            let wrapped =
                (max - band..=max).contains(&from.value) && (min..=min + band).contains(&to.value);
            if wrapped {
                let counts = (max - from.value) + (to.value - min) + params.resolution;
                let wrap = Wrapped { inferred_max: None };
                return continuous(counts * params.multiplier, Some(wrap));
            }
            return Step::Break(Break::Decrease);
        }
        self.decade_wrap(params, from, to)
            .unwrap_or(Step::Break(Break::Decrease))
    }

    /// A drop of a counter without a known width, judged by plausibility: a rollover at the
    /// next power of ten (where meters that count in decimal digits roll over) if it went from
    /// the top of that range to its bottom, and the progress that makes is no more than the
    /// meter's rating allows, or without a rating, twice the fastest progress measured so far
    /// (over at least an interval). Anything else is no rollover.
    fn decade_wrap(&self, params: &MeterParams, from: Reading, to: Reading) -> Option<Step> {
        if !(from.value > 0.0 && to.value >= 0.0) {
            return None;
        }
        let mut max = 10f64.powf(from.value.log10().ceil());
        if max <= from.value {
            max *= 10.0;
        }
        let band = ROLLOVER_BAND * max;
        if !(from.value >= max - band && to.value <= band && max.is_finite()) {
            return None;
        }
        let delta = ((max - from.value) + to.value) * params.multiplier;
        let dt_ms = (to.ts_ms - from.ts_ms).max(params.interval_ms) as f64;
        let plausible = match params.max_rate_per_hour {
            Some(_) => params.plausible(delta, to.ts_ms - from.ts_ms),
            None => self
                .peak_rate_per_hour
                .is_some_and(|peak| delta <= 2.0 * peak * dt_ms / MS_PER_HOUR),
        };
        plausible.then_some(Step::Continuous {
            delta,
            wrap: Some(Wrapped {
                inferred_max: Some(max),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;
    const MIN: i64 = 60_000;
    const IV: i64 = DEFAULT_INTERVAL_MS;

    fn at(tz: Tz, (y, mo, d): (i32, u32, u32), h: u32, mi: u32, s: u32) -> i64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap()
            .timestamp_millis()
    }

    /// A time on 2024-03-01 in Shanghai.
    fn t(h: u32, mi: u32) -> i64 {
        at(SH, (2024, 3, 1), h, mi, 0)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn run(params: &MeterParams, readings: &[(i64, Option<f64>)]) -> (CounterState, Vec<Interval>) {
        let mut state = CounterState::new();
        let mut out = Vec::new();
        for &(ts, value) in readings {
            state.push(params, SH, ts, value, &mut out);
        }
        (state, out)
    }

    fn good(readings: &[(i64, f64)]) -> Vec<(i64, Option<f64>)> {
        readings.iter().map(|&(t, v)| (t, Some(v))).collect()
    }

    #[track_caller]
    fn check(iv: &Interval, start: i64, delta: f64, quality: IntervalQuality, flags: &[Flag]) {
        assert_eq!(iv.start_ms, start, "{iv:?}");
        assert_eq!(iv.end_ms, start + IV, "{iv:?}");
        assert!(
            close(iv.delta, delta),
            "delta {} != {delta}: {iv:?}",
            iv.delta
        );
        assert_eq!(iv.quality, quality, "{iv:?}");
        assert_eq!(iv.flags, flags.iter().copied().collect::<Flags>(), "{iv:?}");
    }

    #[test]
    fn a_reading_pair_straddling_a_boundary_is_split_by_time() {
        let p = MeterParams::default();
        let readings = good(&[
            (t(8, 0), 100.0),
            (t(8, 10), 104.0),
            (t(8, 20), 110.0),
            (t(8, 30), 112.0),
        ]);
        let (state, out) = run(&p, &readings);
        assert_eq!(out.len(), 2);
        // 08:10–08:20 registered 6: half before 08:15, half after.
        check(&out[0], t(8, 0), 4.0 + 3.0, IntervalQuality::Good, &[]);
        check(&out[1], t(8, 15), 3.0 + 2.0, IntervalQuality::Good, &[]);
        // A reading exactly on a boundary closes the interval it ends.
        let pending = state.pending().unwrap();
        assert_eq!((pending.start_ms, pending.delta), (t(8, 30), 0.0));
    }

    #[test]
    fn irregular_poll_times_split_by_milliseconds() {
        let p = MeterParams::default();
        let s = |mi, se| at(SH, (2024, 3, 1), 8, mi, se);
        let readings = good(&[
            (s(0, 0), 0.0),
            (s(7, 13), 1.0),
            (s(16, 2), 3.0),
            (s(29, 59), 4.0),
            (s(31, 0), 5.0),
        ]);
        let (_, out) = run(&p, &readings);
        assert_eq!(out.len(), 2);
        // 08:07:13–08:16:02 (529 s) registered 2, of which 467 s fall before 08:15.
        let first = 1.0 + 2.0 * 467.0 / 529.0;
        // 08:29:59–08:31:00 (61 s) registered 1, of which 1 s falls before 08:30.
        let second = 2.0 * 62.0 / 529.0 + 1.0 + 1.0 / 61.0;
        check(&out[0], s(0, 0), first, IntervalQuality::Good, &[]);
        check(&out[1], s(15, 0), second, IntervalQuality::Good, &[]);
    }

    #[test]
    fn u16_rollover_is_a_delta_not_a_spike() {
        // A u16 register scaled by 0.01 counts 0.00..=655.35, then 0.00 again.
        let p = MeterParams {
            register_max: Some(655.35),
            resolution: 0.01,
            ..MeterParams::default()
        };
        let readings = good(&[
            (t(8, 0), 655.00),
            (t(8, 5), 655.30),
            (t(8, 10), 0.05),
            (t(8, 15), 0.25),
        ]);
        let (_, out) = run(&p, &readings);
        assert_eq!(out.len(), 1);
        // 0.30, then 0.05 to the top + 0.01 for the wrap + 0.05, then 0.20.
        check(
            &out[0],
            t(8, 0),
            0.30 + 0.11 + 0.20,
            IntervalQuality::Good,
            &[Flag::Rollover],
        );
    }

    #[test]
    fn u32_rollover_is_scaled_by_the_ct_ratio() {
        // u32 × 0.1 kWh behind a 200/5 A CT (ratio 40).
        let p = MeterParams {
            register_max: Some(429_496_729.5),
            resolution: 0.1,
            multiplier: 40.0,
            ..MeterParams::default()
        };
        let readings = good(&[
            (t(8, 0), 429_496_728.0),
            (t(8, 5), 429_496_729.0),
            (t(8, 10), 0.4),
            (t(8, 15), 1.4),
        ]);
        let (_, out) = run(&p, &readings);
        assert_eq!(out.len(), 1);
        check(
            &out[0],
            t(8, 0),
            (1.0 + 1.0 + 1.0) * 40.0,
            IntervalQuality::Good,
            &[Flag::Rollover],
        );
    }

    /// Like [`run`], also collecting every event the pushes reported.
    fn run_events(
        params: &MeterParams,
        readings: &[(i64, Option<f64>)],
    ) -> (CounterState, Vec<Interval>, Vec<CounterEvent>) {
        let mut state = CounterState::new();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for &(ts, value) in readings {
            state.push(params, SH, ts, value, &mut out);
            events.extend_from_slice(state.events());
        }
        (state, out, events)
    }

    /// Checks an event's kind, time and energy, to well within the ledger's 0.01 kWh (a
    /// register near 4·10⁷ carries float rounding of a few 10⁻⁹).
    #[track_caller]
    fn event(e: &CounterEvent, kind: EventKind, at: i64, booked: f64, unattributed: f64) {
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert_eq!((e.kind, e.at_ms), (kind, at), "{e:?}");
        assert!(
            near(e.booked, booked),
            "booked {} != {booked}: {e:?}",
            e.booked
        );
        assert!(
            near(e.unattributed, unattributed),
            "unattributed {} != {unattributed}: {e:?}",
            e.unattributed
        );
    }

    #[test]
    fn a_float_counter_with_register_max_wraps_exactly_and_says_so() {
        // A float register that shows 99999.99 and then 0.00: register_max is where it is 0 again.
        let p = MeterParams {
            register_max: Some(100_000.0),
            ..MeterParams::default()
        };
        let readings = good(&[
            (t(8, 0), 99_990.5),
            (t(8, 5), 99_995.25),
            (t(8, 10), 3.0),
            (t(8, 15), 8.5),
        ]);
        let (_, out, events) = run_events(&p, &readings);
        check(
            &out[0],
            t(8, 0),
            4.75 + 7.75 + 5.5,
            IntervalQuality::Good,
            &[Flag::Rollover],
        );
        assert_eq!(events.len(), 1, "{events:?}");
        event(&events[0], EventKind::Wrap, t(8, 10), 7.75, 0.0);
        assert_eq!(events[0].inferred_max, None);
    }

    #[test]
    fn a_u32_wrap_is_an_event_with_nothing_unattributed() {
        let p = MeterParams {
            register_max: Some(42_949_672.95),
            resolution: 0.01,
            ..MeterParams::default()
        };
        let readings = good(&[
            (t(8, 0), 42_949_670.0),
            (t(8, 5), 42_949_672.5),
            (t(8, 10), 1.0),
            (t(8, 15), 2.0),
        ]);
        let (_, out, events) = run_events(&p, &readings);
        check(
            &out[0],
            t(8, 0),
            2.5 + (0.45 + 0.01 + 1.0) + 1.0,
            IntervalQuality::Good,
            &[Flag::Rollover],
        );
        assert_eq!(events.len(), 1, "{events:?}");
        event(&events[0], EventKind::Wrap, t(8, 10), 1.46, 0.0);
    }

    #[test]
    fn a_replaced_meter_near_zero_is_a_reset_event_with_its_count_unattributed() {
        let readings = good(&[
            (t(8, 0), 5_000.0),
            (t(8, 5), 5_010.0),
            // The new meter reads 0.8; nobody signalled the swap.
            (t(8, 10), 0.8),
            (t(8, 15), 2.0),
        ]);
        let (_, out, events) = run_events(&MeterParams::default(), &readings);
        // 10, then nothing for the reset step, then 1.2.
        check(
            &out[0],
            t(8, 0),
            11.2,
            IntervalQuality::Estimated,
            &[Flag::Reset],
        );
        assert_eq!(events.len(), 1, "{events:?}");
        event(&events[0], EventKind::Reset, t(8, 10), 0.0, 0.8);
        assert_eq!(
            (events[0].from_ms, events[0].before, events[0].after),
            (t(8, 5), Some(5_010.0), 0.8)
        );
    }

    #[test]
    fn a_jump_beyond_the_rated_power_is_an_event_with_the_rise_unattributed() {
        let p = MeterParams {
            max_rate_per_hour: Some(100.0),
            ..MeterParams::default()
        };
        let readings = good(&[
            (t(8, 0), 1_000.0),
            (t(8, 5), 1_005.0),
            // 3 000 kWh in five minutes from a 100 kW feeder, and it stays up.
            (t(8, 10), 4_005.0),
            (t(8, 15), 4_010.0),
        ]);
        let (_, out, events) = run_events(&p, &readings);
        check(
            &out[0],
            t(8, 0),
            10.0,
            IntervalQuality::Estimated,
            &[Flag::ImpossibleJump],
        );
        assert_eq!(events.len(), 1, "{events:?}");
        event(&events[0], EventKind::Jump, t(8, 10), 0.0, 3_000.0);
    }

    #[test]
    fn a_float_drop_without_register_max_is_judged_by_plausibility() {
        // Measured pace: 6 kWh in 5 min (72 kWh/h). 99 998 → 4 at the next power of ten is
        // 6 kWh more: a rollover at 100 000, booked in full.
        let wraps = good(&[
            (t(8, 0), 99_992.0),
            (t(8, 5), 99_998.0),
            (t(8, 10), 4.0),
            (t(8, 15), 10.0),
        ]);
        let (_, out, events) = run_events(&MeterParams::default(), &wraps);
        check(
            &out[0],
            t(8, 0),
            18.0,
            IntervalQuality::Good,
            &[Flag::Rollover],
        );
        assert_eq!(events.len(), 1, "{events:?}");
        event(&events[0], EventKind::Wrap, t(8, 10), 6.0, 0.0);
        assert_eq!(events[0].inferred_max, Some(100_000.0));
        // 95 000 → 4 would be 5 004 kWh in 5 min at that pace: a reset, not a rollover.
        let resets = good(&[
            (t(8, 0), 94_994.0),
            (t(8, 5), 95_000.0),
            (t(8, 10), 4.0),
            (t(8, 15), 10.0),
        ]);
        let (_, out, events) = run_events(&MeterParams::default(), &resets);
        assert!(out[0].flags.contains(Flag::Reset), "{out:?}");
        assert_eq!(events.len(), 1, "{events:?}");
        event(&events[0], EventKind::Reset, t(8, 10), 0.0, 4.0);
        // Without a measured pace or a rating nothing says a rollover fits: a reset.
        let (_, _, events) = run_events(
            &MeterParams::default(),
            &good(&[(t(8, 0), 99_998.0), (t(8, 10), 4.0), (t(8, 15), 10.0)]),
        );
        assert_eq!(events[0].kind, EventKind::Reset, "{events:?}");
    }

    #[test]
    fn a_signed_register_wraps_from_its_top_to_its_bottom() {
        // i32 × 0.01: 21 474 836.47 is followed by −21 474 836.48.
        let p = MeterParams {
            register_max: Some(21_474_836.47),
            register_min: -21_474_836.48,
            resolution: 0.01,
            ..MeterParams::default()
        };
        let readings = good(&[
            (t(8, 0), 21_474_835.0),
            (t(8, 10), -21_474_835.48),
            (t(8, 15), -21_474_834.48),
        ]);
        let (_, out, events) = run_events(&p, &readings);
        check(
            &out[0],
            t(8, 0),
            1.47 + 0.01 + 1.0 + 1.0,
            IntervalQuality::Good,
            &[Flag::Rollover],
        );
        assert_eq!(events[0].kind, EventKind::Wrap);
    }

    #[test]
    fn a_signalled_replacement_is_an_event() {
        let p = MeterParams::default();
        let mut state = CounterState::new();
        let mut out = Vec::new();
        state.push(&p, SH, t(8, 0), Some(500.0), &mut out);
        state.replaced(&p, SH, t(8, 5), 0.0, &mut out).unwrap();
        assert_eq!(state.events().len(), 1);
        event(
            &state.events()[0],
            EventKind::Replacement,
            t(8, 5),
            0.0,
            0.0,
        );
        assert_eq!(state.events()[0].before, Some(500.0));
        state.push(&p, SH, t(8, 10), Some(1.0), &mut out);
        assert!(state.events().is_empty(), "events are per call");
    }

    #[test]
    fn a_decrease_far_from_the_register_top_is_a_reset_never_negative() {
        let readings = good(&[
            (t(8, 0), 1000.0),
            (t(8, 1), 1000.5),
            (t(8, 2), 0.2),
            (t(8, 3), 0.5),
            (t(8, 15), 1.7),
        ]);
        // Without a rating the reset step books nothing: 0.5 + 0 + 0.3 + 1.2.
        let (_, out) = run(&MeterParams::default(), &readings);
        assert_eq!(out.len(), 1);
        check(
            &out[0],
            t(8, 0),
            2.0,
            IntervalQuality::Estimated,
            &[Flag::Reset],
        );
        // With a rating, 0.2 since a restart at zero fits in a minute: it is booked.
        let rated = MeterParams {
            max_rate_per_hour: Some(100.0),
            ..MeterParams::default()
        };
        let (_, out) = run(&rated, &readings);
        check(
            &out[0],
            t(8, 0),
            2.2,
            IntervalQuality::Estimated,
            &[Flag::Reset],
        );
        // Even a register with a rollover range resets when the drop is not top-to-bottom.
        let u16 = MeterParams {
            register_max: Some(655.35),
            resolution: 0.01,
            ..MeterParams::default()
        };
        let (_, out) = run(
            &u16,
            &good(&[
                (t(8, 0), 300.0),
                (t(8, 5), 250.0),
                (t(8, 10), 250.5),
                (t(8, 15), 251.0),
            ]),
        );
        check(
            &out[0],
            t(8, 0),
            1.0,
            IntervalQuality::Estimated,
            &[Flag::Reset],
        );
    }

    #[test]
    fn a_single_low_glitch_is_ignored_not_booked_as_a_reset_and_a_spike() {
        let readings = good(&[
            (t(8, 0), 1000.0),
            (t(8, 5), 0.0),
            (t(8, 10), 1000.3),
            (t(8, 15), 1000.6),
        ]);
        let (_, out) = run(&MeterParams::default(), &readings);
        check(&out[0], t(8, 0), 0.6, IntervalQuality::Good, &[]);
    }

    #[test]
    fn an_impossible_jump_is_excluded_and_flagged() {
        // 100 kW rated: at most 25 kWh in any step up to a quarter hour.
        let p = MeterParams {
            max_rate_per_hour: Some(100.0),
            ..MeterParams::default()
        };
        let real = good(&[
            (t(8, 0), 1000.0),
            (t(8, 5), 1000.5),
            (t(8, 6), 9000.0),
            (t(8, 10), 9000.3),
            (t(8, 15), 9000.8),
        ]);
        let (_, out) = run(&p, &real);
        check(
            &out[0],
            t(8, 0),
            0.5 + 0.3 + 0.5,
            IntervalQuality::Estimated,
            &[Flag::ImpossibleJump],
        );
        // A one-reading spike (a decode glitch) is dropped without a trace.
        let glitch = good(&[
            (t(8, 0), 1000.0),
            (t(8, 5), 1.0e9),
            (t(8, 10), 1000.4),
            (t(8, 15), 1000.5),
        ]);
        let (_, out) = run(&p, &glitch);
        check(&out[0], t(8, 0), 0.5, IntervalQuality::Good, &[]);
        // 25 kWh in a minute is within a quarter hour's rating, so it is consumption.
        let burst = good(&[(t(8, 0), 0.0), (t(8, 1), 25.0), (t(8, 15), 26.0)]);
        let (_, out) = run(&p, &burst);
        check(&out[0], t(8, 0), 26.0, IntervalQuality::Good, &[]);
    }

    #[test]
    fn a_signalled_replacement_books_nothing_across_the_swap() {
        let p = MeterParams::default();
        let (mut state, mut out) = run(&p, &good(&[(t(8, 0), 1000.0), (t(8, 5), 1000.5)]));
        state.replaced(&p, SH, t(8, 6), 3.0, &mut out).unwrap();
        for (ts, v) in [(t(8, 10), 3.4), (t(8, 15), 3.9)] {
            state.push(&p, SH, ts, Some(v), &mut out);
        }
        assert_eq!(out.len(), 1);
        check(
            &out[0],
            t(8, 0),
            0.5 + 0.4 + 0.5,
            IntervalQuality::Estimated,
            &[Flag::Replaced],
        );
        let err = state.replaced(&p, SH, t(8, 15), 0.0, &mut out).unwrap_err();
        assert!(matches!(err, CounterError::ReplacedInPast { .. }), "{err}");
        assert!(state.replaced(&p, SH, t(9, 0), f64::NAN, &mut out).is_err());
    }

    #[test]
    fn a_gap_under_the_missing_policy_books_nothing_inside() {
        let p = MeterParams {
            gap_policy: GapPolicy::Missing,
            ..MeterParams::default()
        };
        let readings = good(&[
            (t(8, 0), 100.0),
            (t(8, 5), 101.0),
            (t(8, 50), 110.0),
            (t(9, 0), 111.0),
        ]);
        let (_, out) = run(&p, &readings);
        assert_eq!(out.len(), 4);
        check(
            &out[0],
            t(8, 0),
            1.0,
            IntervalQuality::Estimated,
            &[Flag::Gap],
        );
        check(
            &out[1],
            t(8, 15),
            0.0,
            IntervalQuality::Missing,
            &[Flag::Gap],
        );
        check(
            &out[2],
            t(8, 30),
            0.0,
            IntervalQuality::Missing,
            &[Flag::Gap],
        );
        check(
            &out[3],
            t(8, 45),
            1.0,
            IntervalQuality::Estimated,
            &[Flag::Gap],
        );
    }

    #[test]
    fn a_gap_under_the_interpolate_policy_is_spread_linearly() {
        let readings = good(&[
            (t(8, 0), 100.0),
            (t(8, 5), 101.0),
            (t(8, 50), 110.0),
            (t(9, 0), 111.0),
        ]);
        let (_, out) = run(&MeterParams::default(), &readings);
        assert_eq!(out.len(), 4);
        // 9 over the 45 minutes 08:05–08:50: 0.2 a minute.
        check(
            &out[0],
            t(8, 0),
            1.0 + 2.0,
            IntervalQuality::Estimated,
            &[Flag::Gap],
        );
        check(
            &out[1],
            t(8, 15),
            3.0,
            IntervalQuality::Estimated,
            &[Flag::Gap],
        );
        check(
            &out[2],
            t(8, 30),
            3.0,
            IntervalQuality::Estimated,
            &[Flag::Gap],
        );
        check(
            &out[3],
            t(8, 45),
            1.0 + 1.0,
            IntervalQuality::Estimated,
            &[Flag::Gap],
        );
        assert!(close(out.iter().map(|i| i.delta).sum(), 11.0));
    }

    #[test]
    fn a_gap_longer_than_the_cap_is_never_interpolated() {
        let p = MeterParams {
            max_interpolate_ms: 30 * MIN,
            ..MeterParams::default()
        };
        let readings = good(&[
            (t(8, 0), 100.0),
            (t(8, 5), 101.0),
            (t(8, 50), 110.0),
            (t(9, 0), 111.0),
        ]);
        let (_, out) = run(&p, &readings);
        check(
            &out[0],
            t(8, 0),
            1.0,
            IntervalQuality::Estimated,
            &[Flag::Gap],
        );
        check(
            &out[1],
            t(8, 15),
            0.0,
            IntervalQuality::Missing,
            &[Flag::Gap],
        );
    }

    #[test]
    fn a_dead_meter_keeps_the_ledger_moving_without_changing_it() {
        let p = MeterParams {
            gap_policy: GapPolicy::Missing,
            ..MeterParams::default()
        };
        let goods = good(&[
            (t(8, 0), 100.0),
            (t(8, 5), 101.0),
            (t(8, 50), 110.0),
            (t(9, 0), 111.0),
        ]);
        let (_, quiet) = run(&p, &goods);
        let mut state = CounterState::new();
        let mut out = Vec::new();
        state.push(&p, SH, t(8, 0), Some(100.0), &mut out);
        state.push(&p, SH, t(8, 5), Some(101.0), &mut out);
        for minute in 6..50 {
            state.push(&p, SH, t(8, minute), None, &mut out);
            if minute == 31 {
                // 08:15–08:30 has provably no reading: both intervals before 08:30 are out.
                assert_eq!(out.len(), 2);
            }
        }
        state.push(&p, SH, t(8, 50), Some(110.0), &mut out);
        state.push(&p, SH, t(9, 0), Some(111.0), &mut out);
        assert_eq!(out, quiet);
    }

    #[test]
    fn a_good_reading_older_than_an_early_closing_bad_one_is_dropped() {
        // Found by `arbitrary_input_never_panics_or_books_a_negative`: a bad reading just after
        // 08:30 closed 08:15–08:30 as Missing; a good reading stamped before it must not book
        // into that emitted interval (it did, leaving a Missing interval with a delta).
        let p = MeterParams {
            gap_policy: GapPolicy::Missing,
            ..MeterParams::default()
        };
        let (state, out) = run(
            &p,
            &[
                (t(8, 0) + 19_516, Some(0.0)),
                (t(8, 30) + 1, None),
                (t(8, 30) - 1, Some(655.35)),
                (t(8, 30), Some(655.35)),
            ],
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|i| i.delta == 0.0));
        assert_eq!(state.last_good_ms(), Some(t(8, 0) + 19_516));
    }

    #[test]
    fn a_good_reading_older_than_a_bad_one_cannot_undo_an_uninterpolatable_gap() {
        // Cap 60 min: the bad reading at 09:01:31 proves the step from 08:00:30 is longer than
        // the cap and closes 08:00–09:00. A good reading stamped 09:00:10 (59 min 40 s after the
        // base) would have been interpolatable, and its whole delta would have landed in
        // 09:00–09:15 as a spike.
        let p = MeterParams {
            max_interpolate_ms: 60 * MIN,
            ..MeterParams::default()
        };
        let s = |h, mi, se| at(SH, (2024, 3, 1), h, mi, se);
        let (mut state, mut out) = run(
            &p,
            &[
                (s(8, 0, 30), Some(100.0)),
                (s(9, 1, 31), None),
                (s(9, 0, 10), Some(160.0)),
            ],
        );
        assert_eq!(out.len(), 4);
        assert_eq!(state.last_good_ms(), Some(s(8, 0, 30)));
        state.push(&p, SH, s(9, 15, 0), Some(161.0), &mut out);
        assert_eq!(out.len(), 5);
        check(
            &out[4],
            s(9, 0, 0),
            0.0,
            IntervalQuality::Missing,
            &[Flag::Gap],
        );
    }

    #[test]
    fn a_month_boundary_is_an_ordinary_local_boundary() {
        let m = |d: u32, h, mi| at(SH, (2024, d / 100, d % 100), h, mi, 0);
        let readings = good(&[
            (m(131, 23, 45), 99.0),
            (m(131, 23, 50), 100.0),
            (m(201, 0, 10), 104.0),
            (m(201, 0, 15), 105.0),
        ]);
        let (_, out) = run(&MeterParams::default(), &readings);
        assert_eq!(out.len(), 2);
        check(
            &out[0],
            m(131, 23, 45),
            1.0 + 2.0,
            IntervalQuality::Good,
            &[],
        );
        check(&out[1], m(201, 0, 0), 2.0 + 1.0, IntervalQuality::Good, &[]);
        // Local midnight of 1 February in Shanghai is 16:00 UTC on 31 January.
        assert_eq!(out[1].start_ms, 1_706_716_800_000);
    }

    #[test]
    fn the_first_interval_is_partial_and_says_so() {
        let (state, out) = run(
            &MeterParams::default(),
            &good(&[(t(8, 5), 10.0), (t(8, 15), 11.0)]),
        );
        check(
            &out[0],
            t(8, 0),
            1.0,
            IntervalQuality::Estimated,
            &[Flag::Gap],
        );
        assert_eq!(state.last_good_ms(), Some(t(8, 15)));
    }

    #[test]
    fn out_of_order_readings_are_dropped_and_a_clock_stepped_back_restarts() {
        let p = MeterParams::default();
        let (mut state, mut out) = run(
            &p,
            &good(&[
                (t(8, 0), 10.0),
                (t(8, 10), 11.0),
                (t(8, 5), 99.0),
                (t(8, 10), 12.0),
            ]),
        );
        assert!(close(state.pending().unwrap().delta, 1.0));
        // A wall clock stepped back by more than max_gap_ms: close what is open and restart.
        let back = t(8, 11) - 40 * DAY_MS;
        state.push(&p, SH, back, Some(50.0), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].flags.contains(Flag::Gap));
        assert_eq!(state.last_good_ms(), Some(back));
    }

    #[test]
    fn a_wall_clock_jump_from_1970_lists_at_most_max_gap_of_missing_intervals() {
        let p = MeterParams {
            gap_policy: GapPolicy::Missing,
            max_gap_ms: DAY_MS,
            ..MeterParams::default()
        };
        let (state, out) = run(&p, &good(&[(5_000, 1.0), (t(8, 7), 2.0)]));
        // 1970-01-01 08:00–08:15 Shanghai (holding the reading at 08:00:05), then the 96 Missing
        // intervals that start within a day of that reading, then nothing until 2024.
        assert_eq!(out.len(), 97);
        assert!(
            out.iter()
                .skip(1)
                .all(|i| i.quality == IntervalQuality::Missing)
        );
        let pending = state.pending().unwrap();
        assert_eq!(pending.start_ms, t(8, 0));
        assert!(pending.flags.contains(Flag::Gap));
    }

    #[test]
    fn last_booked_spans_every_step_a_reading_resolved() {
        let p = MeterParams::default();
        let mut state = CounterState::new();
        let mut out = Vec::new();
        state.push(&p, SH, t(8, 0), Some(10.0), &mut out);
        assert_eq!(state.last_booked(), None);
        state.push(&p, SH, t(8, 1), Some(11.0), &mut out);
        let b = state.last_booked().unwrap();
        assert_eq!(
            (b.from_ms, b.to_ms, b.quality),
            (t(8, 0), t(8, 1), IntervalQuality::Good)
        );
        state.push(&p, SH, t(8, 2), Some(1.0), &mut out); // suspect: nothing booked yet
        assert_eq!(state.last_booked(), None);
        state.push(&p, SH, t(8, 3), Some(1.5), &mut out); // reset confirmed, then 0.5
        let b = state.last_booked().unwrap();
        assert_eq!((b.from_ms, b.to_ms), (t(8, 1), t(8, 3)));
        assert!(close(b.delta, 0.5));
        assert_eq!(b.quality, IntervalQuality::Missing);
    }

    #[test]
    fn invalid_parameters_name_the_field_and_stop_pushes() {
        let bad = MeterParams {
            interval_ms: 7 * MIN,
            ..MeterParams::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(
            err.to_string().starts_with("meter parameter `interval_ms`"),
            "{err}"
        );
        let (state, out) = run(&bad, &good(&[(t(8, 0), 1.0), (t(9, 0), 2.0)]));
        assert!(out.is_empty() && state.last_good_ms().is_none());
        for (p, field) in [
            (
                MeterParams {
                    multiplier: 0.0,
                    ..MeterParams::default()
                },
                "multiplier",
            ),
            (
                MeterParams {
                    register_max: Some(-1.0),
                    ..MeterParams::default()
                },
                "register_max",
            ),
            (
                MeterParams {
                    max_rate_per_hour: Some(f64::NAN),
                    ..MeterParams::default()
                },
                "max_rate_per_hour",
            ),
            (
                MeterParams {
                    max_gap_ms: 0,
                    ..MeterParams::default()
                },
                "max_gap_ms",
            ),
        ] {
            let err = p.validate().unwrap_err();
            assert!(
                matches!(err, CounterError::InvalidParam { field: f, .. } if f == field),
                "{err}"
            );
        }
    }

    // --- The grid -------------------------------------------------------------------------

    fn intervals_between(tz: Tz, iv: i64, from: i64, to: i64) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        let mut s = interval_start(tz, iv, from);
        while s < to {
            let e = interval_end(tz, iv, s);
            v.push((s, e));
            s = e;
        }
        v
    }

    #[test]
    fn dst_days_have_92_and_100_quarter_hours_none_spanning_the_change() {
        let berlin = chrono_tz::Europe::Berlin;
        for (day, next, count) in [
            ((2024, 3, 31), (2024, 4, 1), 92),
            ((2024, 10, 27), (2024, 10, 28), 100),
            ((2024, 6, 1), (2024, 6, 2), 96),
        ] {
            let from = at(berlin, day, 0, 0, 0);
            let to = at(berlin, next, 0, 0, 0);
            let ivs = intervals_between(berlin, IV, from, to);
            assert_eq!(ivs.len(), count, "{day:?}");
            assert!(ivs.iter().all(|(s, e)| e - s == IV));
            assert_eq!(ivs.last().unwrap().1, to);
        }
        // The change instant (01:00 UTC) is itself a boundary.
        let change = 1_711_846_800_000; // 2024-03-31T01:00:00Z
        assert_eq!(interval_start(berlin, IV, change), change);
        assert_eq!(interval_end(berlin, IV, change - 1), change);
    }

    #[test]
    fn boundaries_follow_the_local_clock_in_offset_zones() {
        let utc_10 = 1_717_236_000_000; // 2024-06-01T10:00:00Z
        // India (+05:30): hourly intervals end at half past in UTC.
        assert_eq!(
            interval_end(chrono_tz::Asia::Kolkata, 60 * MIN, utc_10),
            utc_10 + 30 * MIN
        );
        // Nepal (+05:45): quarter hours coincide with UTC's, hours end at a quarter past.
        assert_eq!(
            interval_end(chrono_tz::Asia::Kathmandu, IV, utc_10),
            utc_10 + IV
        );
        assert_eq!(
            interval_end(chrono_tz::Asia::Kathmandu, 60 * MIN, utc_10),
            utc_10 + 15 * MIN
        );
        assert_eq!(
            interval_start(chrono_tz::Asia::Kathmandu, 60 * MIN, utc_10),
            utc_10 - 45 * MIN
        );
    }

    #[test]
    fn a_half_hour_dst_shift_under_hourly_intervals_still_tiles_time() {
        // Lord Howe Island moves 30 minutes; 2024-10-06 02:00 (+10:30) becomes 02:30 (+11:00).
        let tz = chrono_tz::Australia::Lord_Howe;
        let from = at(tz, (2024, 10, 5), 22, 0, 0);
        let ivs = intervals_between(tz, 60 * MIN, from, from + 8 * 60 * MIN);
        assert!(ivs.windows(2).all(|w| w[0].1 == w[1].0));
        let lengths: Vec<i64> = ivs.iter().map(|(s, e)| (e - s) / MIN).collect();
        assert!(lengths.contains(&30), "{lengths:?}");
        assert!(lengths.iter().all(|&l| l == 60 || l == 30), "{lengths:?}");
    }

    // --- Properties -----------------------------------------------------------------------

    const ZONES: [Tz; 6] = [
        chrono_tz::Asia::Shanghai,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Asia::Kolkata,
        chrono_tz::Asia::Kathmandu,
        chrono_tz::Australia::Lord_Howe,
    ];

    /// Readings from 2024-03-01 00:00 Shanghai: (gap after the previous one in ms, increment).
    fn series() -> impl Strategy<Value = Vec<(i64, f64)>> {
        prop::collection::vec((1_000_i64..40 * MIN, 0.0_f64..50.0), 1..120)
    }

    fn total_of(state: &CounterState, out: &[Interval]) -> f64 {
        out.iter().map(|i| i.delta).sum::<f64>() + state.pending().map_or(0.0, |p| p.delta)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_grid_tiles_time_in_every_zone(
            ts in 1_600_000_000_000_i64..1_900_000_000_000,
            z in 0_usize..6,
            k in 0_usize..4,
        ) {
            let tz = ZONES[z];
            let iv = [MIN, IV, 30 * MIN, 60 * MIN][k];
            let (s, e) = (interval_start(tz, iv, ts), interval_end(tz, iv, ts));
            prop_assert!(s <= ts && ts < e);
            prop_assert_eq!(interval_start(tz, iv, e), e);
            prop_assert_eq!(interval_end(tz, iv, s), e);
            prop_assert_eq!(interval_start(tz, iv, e - 1), s);
            prop_assert!(e - s >= iv / 2 && e - s <= 2 * iv, "{} {}", s, e);
        }

        #[test]
        fn interval_sums_equal_counter_progress(steps in series(), multiplier in 0.1_f64..100.0) {
            let p = MeterParams { multiplier, ..MeterParams::default() };
            let mut state = CounterState::new();
            let mut out = Vec::new();
            let (mut ts, mut value) = (t(0, 0), 1000.0);
            state.push(&p, SH, ts, Some(value), &mut out);
            for (dt, inc) in steps {
                ts += dt;
                value += inc;
                state.push(&p, SH, ts, Some(value), &mut out);
            }
            let want = (value - 1000.0) * multiplier;
            prop_assert!((total_of(&state, &out) - want).abs() <= 1e-9 * want.max(1.0));
            prop_assert!(out.iter().all(|i| i.delta >= 0.0));
            prop_assert!(out.windows(2).all(|w| w[0].end_ms == w[1].start_ms));
        }

        #[test]
        fn a_wrapping_u16_register_loses_nothing(steps in series()) {
            let p = MeterParams {
                register_max: Some(655.35),
                resolution: 0.01,
                ..MeterParams::default()
            };
            let mut state = CounterState::new();
            let mut out = Vec::new();
            let mut ts = t(0, 0);
            let mut counts: i64 = 60_000;
            let mut total: i64 = 0;
            state.push(&p, SH, ts, Some(counts as f64 * 0.01), &mut out);
            for (dt, inc) in steps {
                // At most 10 % of the register per step, so every wrap lands in the bottom band.
                let inc = (inc * 130.0) as i64;
                ts += dt;
                total += inc;
                counts = (counts + inc) % 65_536;
                state.push(&p, SH, ts, Some(counts as f64 * 0.01), &mut out);
            }
            let want = total as f64 * 0.01;
            let got = total_of(&state, &out);
            prop_assert!((got - want).abs() <= 1e-6 * want.max(1.0), "{got} vs {want}");
            prop_assert!(out.iter().all(|i| !i.flags.contains(Flag::Reset)));
        }

        #[test]
        fn a_wrapping_float_register_loses_nothing_and_reports_every_wrap(steps in series()) {
            // A float register that shows 0.00 again at 1000 (register_max is that value).
            let p = MeterParams {
                register_max: Some(1000.0),
                ..MeterParams::default()
            };
            let mut state = CounterState::new();
            let mut out = Vec::new();
            let mut ts = t(0, 0);
            // Hundredths of a kWh, as the meter shows them.
            let (mut shown, mut total, mut wraps, mut events) = (90_000_i64, 0_i64, 0, 0);
            state.push(&p, SH, ts, Some(shown as f64 / 100.0), &mut out);
            for (dt, inc) in steps {
                // At most 10 % of the register per step, so every wrap lands in the bottom band.
                let inc = (inc * 200.0) as i64;
                ts += dt;
                total += inc;
                wraps += (shown + inc) / 100_000;
                shown = (shown + inc) % 100_000;
                state.push(&p, SH, ts, Some(shown as f64 / 100.0), &mut out);
                events += state.events().iter().filter(|e| e.kind == EventKind::Wrap).count();
            }
            let want = total as f64 / 100.0;
            let got = total_of(&state, &out);
            prop_assert!((got - want).abs() < 0.01, "{got} vs {want}");
            prop_assert_eq!(events as i64, wraps);
            prop_assert!(out.iter().all(|i| i.quality == IntervalQuality::Good || i.flags.contains(Flag::Gap)));
        }

        #[test]
        fn arbitrary_input_never_panics_or_books_a_negative(
            input in prop::collection::vec((-3 * IV..3 * IV, prop::option::of(prop_oneof![
                -1e12_f64..1e12, Just(f64::NAN), Just(f64::INFINITY), Just(0.0), Just(655.35)
            ])), 1..80),
            replace_at in prop::option::of(0_usize..80),
            z in 0_usize..6,
            rated in any::<bool>(),
            missing in any::<bool>(),
        ) {
            let p = MeterParams {
                register_max: Some(655.35),
                resolution: 0.01,
                max_rate_per_hour: rated.then_some(500.0),
                gap_policy: if missing { GapPolicy::Missing } else { GapPolicy::Interpolate },
                ..MeterParams::default()
            };
            let tz = ZONES[z];
            let mut state = CounterState::new();
            let mut out = Vec::new();
            let mut ts = t(0, 0);
            for (i, (dt, value)) in input.into_iter().enumerate() {
                ts += dt;
                if replace_at == Some(i) {
                    let _ignored = state.replaced(&p, tz, ts, 1.0, &mut out);
                }
                state.push(&p, tz, ts, value, &mut out);
            }
            prop_assert!(out.iter().all(|i| i.delta >= 0.0 && i.delta.is_finite()), "{out:?}");
            prop_assert!(out.iter().all(|i| i.start_ms < i.end_ms));
            prop_assert!(out.windows(2).all(|w| w[0].end_ms <= w[1].start_ms));
            let missing_is_zero = |i: &Interval| {
                i.quality != IntervalQuality::Missing || i.delta == 0.0
            };
            prop_assert!(out.iter().all(missing_is_zero));
        }

        #[test]
        fn bad_readings_between_good_ones_never_change_the_ledger(
            steps in prop::collection::vec((1_000_i64..90 * MIN, 0.0_f64..5.0, 0_usize..4), 1..60),
            missing in any::<bool>(),
        ) {
            let p = MeterParams {
                gap_policy: if missing { GapPolicy::Missing } else { GapPolicy::Interpolate },
                max_interpolate_ms: 60 * MIN,
                ..MeterParams::default()
            };
            let (mut plain, mut noisy) = (CounterState::new(), CounterState::new());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (mut ts, mut value) = (t(0, 0), 0.0);
            plain.push(&p, SH, ts, Some(value), &mut a);
            noisy.push(&p, SH, ts, Some(value), &mut b);
            for (dt, inc, bad) in steps {
                for k in 1..=bad {
                    noisy.push(&p, SH, ts + dt * k as i64 / (bad as i64 + 1), None, &mut b);
                }
                ts += dt;
                value += inc;
                plain.push(&p, SH, ts, Some(value), &mut a);
                noisy.push(&p, SH, ts, Some(value), &mut b);
            }
            prop_assert_eq!(a, b);
        }
    }
}
