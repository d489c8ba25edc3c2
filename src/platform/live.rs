//! The live recorder: ledger intervals as they close → the records to send now (pure).
//!
//! Real-time records (`statType` 0) come straight from the intervals the core gets from
//! `Ledger::apply`. Day, month and year totals need every interval of their period, and the
//! recorder holds none: when a period has closed it says so ([`Recorder::due`]), the caller
//! streams that period's intervals from the ledger table into a [`Closing`]
//! ([`crate::store::platform_source::close_due`] does it), and [`Recorder::finish`] returns its records. Both
//! paths run the intervals through [`super::build::Fold`], the code behind `plantwatch upload`,
//! so a day is the exact sum of the real-time records sent for it and a resend built later
//! from the ledger carries the same keys and values.
//!
//! **When a period closes.** A day (month, year) is due once it has ended in the platform's
//! zone *and* either every meter of the items that produce it has delivered an interval
//! ending at or after its end, or [`CLOSE_GRACE_MS`] has passed since its end (a meter that
//! went silent must not hold the day back for ever; its share of the day then counts as a
//! hole and the record says `valid = "0"`). Periods close oldest first, a day before the month
//! that ends with it, and a period waits for every earlier one.
//!
//! **Restarts.** [`RecorderState`] is the high-water mark: per meter, the end of the last
//! interval recorded, and the statDate of the next day, month and year to close. The caller
//! saves it (scope [`STATE_SCOPE`]) after enqueuing the records it got, so a crash in between
//! repeats records (same key, same body: the platform keeps one) and never skips one. After a
//! restart the recorder first asks for the real-time records of the intervals stored after
//! its mark (stored, but their records never enqueued), then for every period that closed
//! while the daemon was down, at most [`MAX_CATCH_UP_DAYS`] back; anything older is left to
//! `plantwatch upload` or the `upload` command, and [`Due::skipped_from`] says what was left.
//!
//! **A fresh state** (first start, or after the state was lost) records from now on: the
//! current day, month and year are the first to close, built from whatever the ledger holds
//! for them, so a day that began before the first start may come out short and invalid.
//!
//! **Late intervals.** An interval that reaches the ledger after its day has closed (a meter
//! back after more than the grace time) still gets its real-time record, but the day record
//! already sent lacks it while the month, closed later from the ledger, has it: the month then
//! differs from the sum of the days sent by that interval (the platform allows 5 %).
//! `plantwatch upload` of that day re-sends the corrected day under the same key.
//!
//! **The caller (the daemon's core)**:
//! 1. at start: `Recorder::new(platform, RecorderState::from_rows(&rows), now)` with the rows
//!    of `load_state(STATE_SCOPE)` (an unreadable state: log it, start from the default);
//! 2. per batch of closed intervals: save them in the ledger table *and await it* (the
//!    period reads must see them), then [`Recorder::record`] them;
//! 3. then, and on every tick: [`crate::store::platform_source::close_due`];
//! 4. enqueue every record returned ([`crate::store::record::platform_message`]), await the commit,
//!    then save [`Recorder::state`] under [`STATE_SCOPE`].
//!
//! Invariants:
//! - each real-time record is returned once per interval (an interval starting before its
//!   meter's mark is a repeat from a restored ledger and is dropped);
//! - each period is returned by [`Recorder::due`] until [`Recorder::finish`] consumes its
//!   [`Closing`], then never again (unless the state is rolled back by a crash, see above);
//! - no wall clock: every call takes the time.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Days, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use super::build::{Fold, Select};
use super::record::{Record, StatPeriod, StatType, local_datetime, local_midnight};
use super::spec::Spec;
use crate::process::counter::IntervalQuality;
use crate::process::ledger::LedgerInterval;

/// The engine-state scope the caller saves [`RecorderState`] under.
pub const STATE_SCOPE: &str = "energy_platform";

/// The key of the one state row.
const STATE_KEY: &str = "recorder";

/// How long after its end a period closes even if a meter has not delivered its last
/// interval: one hour, so a gateway that was briefly offline at midnight still gets its full
/// day, and a dead meter delays the day record by an hour at most.
pub const CLOSE_GRACE_MS: i64 = 3_600_000;

/// How far back a restart closes missed periods: two months, longer than any outage the
/// outbox is sized for. A state older than that (restored from an old backup, a gateway kept
/// in a drawer) would otherwise flood the queue with stale totals.
pub const MAX_CATCH_UP_DAYS: u64 = 62;

/// The period types the recorder closes, in closing order for periods that end together.
const TOTALS: [StatType; 3] = [StatType::Day, StatType::Month, StatType::Year];

/// The recorder's persisted high-water mark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderState {
    /// Per ledger meter, the end (UTC ms) of the last interval whose records were returned.
    #[serde(default)]
    pub meters: BTreeMap<String, i64>,
    /// The statDate (local, `YYYY-MM-DD`) of the next day to close.
    #[serde(default, with = "opt_date")]
    pub next_day: Option<NaiveDate>,
    /// The statDate of the next month to close (a 1st).
    #[serde(default, with = "opt_date")]
    pub next_month: Option<NaiveDate>,
    /// The statDate of the next year to close (a 1 January).
    #[serde(default, with = "opt_date")]
    pub next_year: Option<NaiveDate>,
}

/// `Option<NaiveDate>` as `"YYYY-MM-DD"` or `null` (chrono is built without serde here).
mod opt_date {
    use chrono::NaiveDate;
    use serde::{Deserialize as _, Deserializer, Serializer};

    const FORMAT: &str = "%Y-%m-%d";

    pub(super) fn serialize<S: Serializer>(d: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&d.format(FORMAT).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<NaiveDate>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                NaiveDate::parse_from_str(&text, FORMAT)
                    .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a date")))
            })
            .transpose()
    }
}

/// Why a saved state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saved energy-platform recorder state (scope `{STATE_SCOPE}`, key `{STATE_KEY}`): {0}")]
pub struct StateError(pub String);

impl RecorderState {
    /// The rows to save with `StoreHandle::save_state(STATE_SCOPE, …)`.
    pub fn to_rows(&self) -> Vec<(String, String)> {
        // Maps of strings to integers and dates always serialise.
        vec![(
            STATE_KEY.to_owned(),
            serde_json::to_string(self).unwrap_or_default(),
        )]
    }

    /// The state saved in `rows` (from `StoreHandle::load_state(STATE_SCOPE)`); the default
    /// (fresh) state when there is none.
    ///
    /// # Errors
    /// [`StateError`] when the row is not readable; start fresh and log it.
    pub fn from_rows(rows: &[(String, String)]) -> Result<Self, StateError> {
        match rows.iter().find(|(k, _)| k == STATE_KEY) {
            None => Ok(Self::default()),
            Some((_, body)) => serde_json::from_str(body).map_err(|e| StateError(e.to_string())),
        }
    }

    fn next(&self, stat_type: StatType) -> Option<NaiveDate> {
        match stat_type {
            StatType::Day => self.next_day,
            StatType::Month => self.next_month,
            StatType::Year => self.next_year,
            StatType::Realtime => None,
        }
    }

    fn set_next(&mut self, stat_type: StatType, date: Option<NaiveDate>) {
        match stat_type {
            StatType::Day => self.next_day = date,
            StatType::Month => self.next_month = date,
            StatType::Year => self.next_year = date,
            StatType::Realtime => {}
        }
    }
}

/// Work the recorder needs the ledger for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueWork {
    /// After a restart: real-time records of the intervals stored after each meter's mark.
    CatchUp {
        /// Read intervals starting from here (the lowest mark), UTC ms.
        from_ms: i64,
        /// Up to here (exclusive).
        to_ms: i64,
    },
    /// A day, month or year has closed.
    Period(StatPeriod),
}

/// A request for the intervals of the ledger the recorder needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// What is due.
    pub work: DueWork,
    /// When periods before this one were passed over (beyond [`MAX_CATCH_UP_DAYS`]): the
    /// statDate of the first one left out. Log it; `plantwatch upload` can fill them.
    pub skipped_from: Option<NaiveDate>,
}

impl Due {
    /// Read the intervals that start in `[from, to)` (UTC ms) of [`Recorder::meters`].
    pub fn range_ms(&self) -> (i64, i64) {
        match &self.work {
            DueWork::CatchUp { from_ms, to_ms } => (*from_ms, *to_ms),
            DueWork::Period(p) => (p.start_ms, p.end_ms),
        }
    }
}

/// The intervals of one [`Due`], being folded into its records. `'static` and `Send`, so the
/// caller may fill it on a blocking thread while reading the ledger.
#[derive(Debug)]
pub struct Closing {
    due: Due,
    fold: Fold<Arc<Spec>>,
    /// Catch-up only: per meter, the window of intervals to record.
    windows: BTreeMap<String, (i64, i64)>,
    /// Catch-up only: per meter, the latest end recorded.
    seen: BTreeMap<String, i64>,
}

impl Closing {
    /// What this closing is for.
    pub fn due(&self) -> &Due {
        &self.due
    }

    /// Adds one interval (per meter in time order, each once: the ledger table's order).
    pub fn push(&mut self, meter: &str, span: (i64, i64), delta: f64, quality: IntervalQuality) {
        if let Some((from, to)) = self.windows.get(meter)
            && span.0 >= *from
            && span.1 <= *to
        {
            let end = self.seen.entry(meter.to_owned()).or_insert(span.1);
            *end = (*end).max(span.1);
        }
        self.fold.push(meter, span, delta, quality);
    }

    /// Adds one interval.
    pub fn push_interval(&mut self, interval: &LedgerInterval) {
        self.push(
            &interval.meter,
            (interval.start_ms, interval.end_ms),
            interval.delta,
            interval.quality,
        );
    }
}

/// Turns closing ledger intervals into the energy platform's records as time passes.
#[derive(Debug, Clone)]
pub struct Recorder {
    platform: Arc<Spec>,
    state: RecorderState,
    /// The real-time catch-up still to do after a restart: per meter, the intervals stored
    /// after its saved mark and before the first one recorded live (`i64::MAX` until then).
    /// Fixed at start-up, so live intervals recorded before the catch-up runs neither hide
    /// the gap behind them nor get recorded twice.
    catch_up: BTreeMap<String, (i64, i64)>,
}

impl Recorder {
    /// A recorder for `platform`'s items, resuming from `state` (saved by an earlier run, or
    /// the default for a first start) at `now_ms`.
    pub fn new(platform: &Spec, mut state: RecorderState, now_ms: i64) -> Self {
        let tz = platform.timezone;
        // Marks of meters no item reads any more would only hold the catch-up back.
        state
            .meters
            .retain(|m, _| platform.items.iter().any(|i| i.meter == *m));
        let today = local_datetime(tz, now_ms).map(|t| t.date());
        for stat_type in TOTALS {
            let produced = platform.items.iter().any(|i| i.produces(stat_type));
            if state.next(stat_type).is_none() || !produced {
                // Fresh, or nothing to close: start with the current period.
                let current = today.and_then(|d| period_of(stat_type, tz, d));
                state.set_next(stat_type, current.map(|p| p.stat_date.date()));
            }
        }
        let catch_up = state
            .meters
            .iter()
            .map(|(m, mark)| (m.clone(), (*mark, i64::MAX)))
            .collect();
        Self {
            platform: Arc::new(platform.clone()),
            state,
            catch_up,
        }
    }

    /// The state to save (scope [`STATE_SCOPE`]) once the records returned so far are stored.
    pub fn state(&self) -> &RecorderState {
        &self.state
    }

    /// The ledger meters the items read: the meters to read intervals of for a [`Due`].
    pub fn meters(&self) -> Vec<String> {
        let mut meters: Vec<String> = self
            .platform
            .items
            .iter()
            .map(|i| i.meter.clone())
            .collect();
        meters.sort_unstable();
        meters.dedup();
        meters
    }

    /// The real-time records of `intervals`, just closed (as `Ledger::apply` returns them),
    /// and the meters' marks moved past them. Intervals at or before a meter's mark are
    /// repeats and give nothing.
    pub fn record(&mut self, intervals: &[LedgerInterval]) -> Vec<Record> {
        let mut fold = Fold::new(&*self.platform, Select::AllRealtime);
        for iv in intervals {
            if !self.platform.items.iter().any(|i| i.meter == iv.meter) {
                continue;
            }
            let mark = self.state.meters.get(&iv.meter).copied();
            if mark.is_some_and(|m| iv.start_ms < m) {
                continue;
            }
            if let Some((_, until)) = self.catch_up.get_mut(&iv.meter) {
                // The catch-up stops where live recording took over.
                *until = (*until).min(iv.start_ms);
            }
            fold.push_interval(iv);
            self.state.meters.insert(iv.meter.clone(), iv.end_ms);
        }
        fold.finish()
    }

    /// The next piece of work that needs the ledger at `now_ms`, if any: hand its intervals
    /// to [`Self::begin`]'s [`Closing`] and pass that to [`Self::finish`]. Call it until it
    /// says `None` (a bounded number of times), after each [`Self::record`] and on a timer,
    /// so a day closes even when no interval arrives.
    pub fn due(&self, now_ms: i64) -> Option<Due> {
        if let Some(from_ms) = self.catch_up.values().map(|(from, _)| *from).min() {
            return Some(Due {
                work: DueWork::CatchUp {
                    from_ms,
                    to_ms: now_ms.max(from_ms),
                },
                skipped_from: None,
            });
        }
        let tz = self.platform.timezone;
        let window = local_datetime(tz, now_ms)
            .map(|t| t.date())
            .and_then(|d| d.checked_sub_days(Days::new(MAX_CATCH_UP_DAYS)))
            .and_then(|d| local_midnight(tz, d))?;
        let mut next: Option<(StatPeriod, Option<NaiveDate>)> = None;
        for stat_type in TOTALS {
            // A type no item produces is never closed (it would read the ledger for nothing).
            if !self.platform.items.iter().any(|i| i.produces(stat_type)) {
                continue;
            }
            let Some(date) = self.state.next(stat_type) else {
                continue;
            };
            let Some(mut period) = period_of(stat_type, tz, date) else {
                continue;
            };
            let mut skipped = None;
            if period.end_ms <= window {
                // Jump to the oldest period still inside the window.
                skipped = Some(period.stat_date.date());
                period = StatPeriod::containing(stat_type, tz, window)?;
            }
            if period.end_ms > now_ms {
                continue;
            }
            let earlier = next
                .as_ref()
                .is_none_or(|(p, _)| (period.end_ms, period.stat_type) < (p.end_ms, p.stat_type));
            if earlier {
                next = Some((period, skipped));
            }
        }
        let (period, skipped_from) = next?;
        self.ready(&period, now_ms).then_some(Due {
            work: DueWork::Period(period),
            skipped_from,
        })
    }

    /// Whether every meter of the items producing `period`'s type has delivered up to its
    /// end, or the grace time has passed.
    fn ready(&self, period: &StatPeriod, now_ms: i64) -> bool {
        now_ms >= period.end_ms.saturating_add(CLOSE_GRACE_MS)
            || self
                .platform
                .items
                .iter()
                .filter(|i| i.produces(period.stat_type))
                .all(|i| {
                    self.state
                        .meters
                        .get(&i.meter)
                        .is_some_and(|end| *end >= period.end_ms)
                })
    }

    /// An empty [`Closing`] for `due`; feed it the intervals of [`Self::meters`] starting in
    /// [`Due::range_ms`].
    pub fn begin(&self, due: &Due) -> Closing {
        let (select, windows) = match &due.work {
            DueWork::CatchUp { to_ms, .. } => {
                let windows: BTreeMap<String, (i64, i64)> = self
                    .catch_up
                    .iter()
                    .map(|(m, (from, until))| (m.clone(), (*from, (*until).min(*to_ms))))
                    .collect();
                (
                    Select::Realtime {
                        windows: windows.clone(),
                    },
                    windows,
                )
            }
            DueWork::Period(p) => (Select::Period(*p), BTreeMap::new()),
        };
        Closing {
            due: due.clone(),
            fold: Fold::new(self.platform.clone(), select),
            windows,
            seen: BTreeMap::new(),
        }
    }

    /// The records of a filled [`Closing`]; marks its work done.
    pub fn finish(&mut self, closing: Closing) -> Vec<Record> {
        match &closing.due.work {
            DueWork::CatchUp { .. } => {
                self.catch_up.clear();
                for (meter, end) in &closing.seen {
                    let mark = self.state.meters.entry(meter.clone()).or_insert(*end);
                    *mark = (*mark).max(*end);
                }
            }
            DueWork::Period(p) => {
                let date = p.stat_date.date();
                let after = match p.stat_type {
                    StatType::Day => date.checked_add_days(Days::new(1)),
                    StatType::Month => date.checked_add_months(Months::new(1)),
                    StatType::Year => date.checked_add_months(Months::new(12)),
                    StatType::Realtime => None,
                };
                // Never move a mark backwards (a stale closing handed in twice).
                if after > self.state.next(p.stat_type) {
                    self.state.set_next(p.stat_type, after);
                }
            }
        }
        closing.fold.finish()
    }

    /// [`Self::begin`], every interval of `intervals`, then [`Self::finish`]: for callers (and
    /// tests) that already hold the intervals, in any order.
    pub fn close(&mut self, due: &Due, intervals: &[LedgerInterval]) -> Vec<Record> {
        let mut sorted: BTreeMap<(&str, i64), &LedgerInterval> = BTreeMap::new();
        for iv in intervals {
            sorted.insert((iv.meter.as_str(), iv.start_ms), iv);
        }
        let mut closing = self.begin(due);
        for iv in sorted.values() {
            closing.push_interval(iv);
        }
        self.finish(closing)
    }
}

/// The period of `stat_type` whose statDate is `date` (a day, a 1st, a 1 January).
fn period_of(stat_type: StatType, tz: chrono_tz::Tz, date: NaiveDate) -> Option<StatPeriod> {
    StatPeriod::containing(stat_type, tz, local_midnight(tz, date)?)
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use proptest::prelude::*;

    use super::*;
    use crate::platform::Builder;
    use crate::platform::decimal::Fixed;
    use crate::platform::record::DATE_FORMAT;
    use crate::platform::spec::Item;
    use crate::platform::uscc::Uscc;
    use crate::process::counter::Flags;

    const SH: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
    const QUARTER: i64 = 900_000;

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn item(meter: &str, code: &str, stat_types: &[StatType]) -> Item {
        Item {
            meter: meter.into(),
            meter_index: 0,
            data_code: code.into(),
            convert_ratio: 0.1229,
            scope: "1".into(),
            input_type: "1".into(),
            stat_types: stat_types.to_vec(),
            decimals: 2,
        }
    }

    fn platform(items: Vec<Item>) -> Spec {
        Spec {
            enterprise_code: Uscc::parse("91350100M000100Y43").unwrap(),
            timezone: SH,
            max_estimated_share: 0.1,
            items,
            versions: Default::default(),
        }
    }

    fn one_meter() -> Spec {
        platform(vec![item(
            "incomer",
            "E001-0101-00",
            &[StatType::Realtime, StatType::Day, StatType::Month],
        )])
    }

    fn iv(meter: &str, start_ms: i64, delta: f64) -> LedgerInterval {
        LedgerInterval {
            meter: meter.into(),
            kind: "electricity".into(),
            unit: "kWh".into(),
            start_ms,
            end_ms: start_ms + QUARTER,
            delta,
            quality: IntervalQuality::Good,
            flags: Flags::EMPTY,
            tou: [0.0; 4],
            kgce: None,
        }
    }

    fn date(r: &Record) -> String {
        r.key.stat_date.format(DATE_FORMAT).to_string()
    }

    /// A tiny ledger table: what the caller reads a [`Due`]'s intervals from.
    #[derive(Default)]
    struct Table(BTreeMap<(String, i64), LedgerInterval>);

    impl Table {
        fn save(&mut self, intervals: &[LedgerInterval]) {
            for i in intervals {
                self.0.insert((i.meter.clone(), i.start_ms), i.clone());
            }
        }

        /// Runs every due piece of work at `now` (bounded), as the core does.
        fn close_due(&self, rec: &mut Recorder, now: i64) -> Vec<Record> {
            let mut out = Vec::new();
            for _ in 0..200 {
                let Some(due) = rec.due(now) else {
                    return out;
                };
                let (from, to) = due.range_ms();
                let mut closing = rec.begin(&due);
                for i in self.0.values() {
                    if (from..to).contains(&i.start_ms) {
                        closing.push_interval(i);
                    }
                }
                out.extend(rec.finish(closing));
            }
            panic!("due() never ran dry");
        }
    }

    #[test]
    fn intervals_become_realtime_records_at_once_and_the_day_at_midnight() {
        let p = one_meter();
        let day = utc("2026-10-04T16:00:00Z"); // 2026-10-05 00:00 in Shanghai
        let mut rec = Recorder::new(&p, RecorderState::default(), day + 60_000);
        let mut table = Table::default();
        let mut realtime = Vec::new();
        let mut totals = Vec::new();
        for q in 0..96 {
            let closed = [iv("incomer", day + q * QUARTER, 1.25)];
            table.save(&closed);
            realtime.extend(rec.record(&closed));
            let now = day + (q + 1) * QUARTER + 5_000;
            totals.extend(table.close_due(&mut rec, now));
        }
        assert_eq!(realtime.len(), 96);
        assert!(
            realtime
                .iter()
                .all(|r| r.key.stat_type == StatType::Realtime)
        );
        assert_eq!(date(&realtime[0]), "2026-10-05 00:00:00");
        // The last quarter arrived (end = midnight), so the day closed without the grace wait.
        assert_eq!(totals.len(), 1, "{totals:?}");
        assert_eq!(totals[0].key.stat_type, StatType::Day);
        assert_eq!(totals[0].value.to_string(), "120.00");
        assert!(totals[0].valid);
        assert_eq!(rec.state().next_day, NaiveDate::from_ymd_opt(2026, 10, 6));
        // Nothing more is due until the next midnight.
        assert_eq!(rec.due(day + 86_400_000 + 3 * CLOSE_GRACE_MS), None);
    }

    #[test]
    fn a_silent_meter_holds_the_day_back_for_the_grace_time_only() {
        let p = one_meter();
        let day = utc("2026-10-04T16:00:00Z");
        let mut rec = Recorder::new(&p, RecorderState::default(), day);
        let mut table = Table::default();
        let closed: Vec<LedgerInterval> = (0..95)
            .map(|q| iv("incomer", day + q * QUARTER, 1.0))
            .collect();
        table.save(&closed);
        rec.record(&closed);
        let midnight = day + 86_400_000;
        assert!(table.close_due(&mut rec, midnight).is_empty());
        assert!(
            table
                .close_due(&mut rec, midnight + CLOSE_GRACE_MS - 1)
                .is_empty()
        );
        let totals = table.close_due(&mut rec, midnight + CLOSE_GRACE_MS);
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].value.to_string(), "95.00");
        assert!(!totals[0].valid, "the last quarter-hour is a hole");
    }

    #[test]
    fn the_last_day_of_a_month_closes_before_its_month_and_both_once() {
        let p = one_meter();
        let start = utc("2026-09-30T16:00:00Z"); // 2026-10-01 00:00 local
        let mut rec = Recorder::new(&p, RecorderState::default(), start);
        let mut table = Table::default();
        let mut totals = Vec::new();
        for q in 0..31 * 96 {
            let closed = [iv("incomer", start + q * QUARTER, 0.5)];
            table.save(&closed);
            rec.record(&closed);
            totals.extend(table.close_due(&mut rec, start + (q + 1) * QUARTER));
        }
        let kinds: Vec<(StatType, String)> =
            totals.iter().map(|r| (r.key.stat_type, date(r))).collect();
        assert_eq!(kinds.len(), 32);
        assert_eq!(kinds[30], (StatType::Day, "2026-10-31 00:00:00".into()));
        assert_eq!(kinds[31], (StatType::Month, "2026-10-01 00:00:00".into()));
        assert_eq!(totals[31].value.to_string(), "1488.00");
    }

    #[test]
    fn a_restart_across_midnight_closes_the_missed_day_once_and_catches_up_realtime() {
        let p = one_meter();
        let day = utc("2026-10-04T16:00:00Z");
        let mut table = Table::default();
        let mut rec = Recorder::new(&p, RecorderState::default(), day);
        let first: Vec<LedgerInterval> = (0..80)
            .map(|q| iv("incomer", day + q * QUARTER, 1.0))
            .collect();
        table.save(&first);
        assert_eq!(rec.record(&first).len(), 80);
        let saved = RecorderState::from_rows(&rec.state().to_rows()).unwrap();
        assert_eq!(&saved, rec.state());
        // Stored, but the records were never enqueued: the daemon died right after saving.
        let lost: Vec<LedgerInterval> = (80..90)
            .map(|q| iv("incomer", day + q * QUARTER, 1.0))
            .collect();
        table.save(&lost);
        // Down until 03:00 the next day; the ledger filled the gap when it came back.
        let rest: Vec<LedgerInterval> = (90..96 + 12)
            .map(|q| iv("incomer", day + q * QUARTER, 1.0))
            .collect();
        table.save(&rest);
        let now = day + 86_400_000 + 3 * 3_600_000;
        let mut rec = Recorder::new(&p, saved, now);
        let mut out = table.close_due(&mut rec, now);
        let realtime: Vec<&Record> = out
            .iter()
            .filter(|r| r.key.stat_type == StatType::Realtime)
            .collect();
        assert_eq!(
            realtime.len(),
            96 + 12 - 80,
            "every interval after the mark, once"
        );
        let days: Vec<&Record> = out
            .iter()
            .filter(|r| r.key.stat_type == StatType::Day)
            .collect();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].value.to_string(), "96.00");
        assert!(days[0].valid);
        // The ledger re-emits an interval it had already booked: no second record.
        assert!(rec.record(&rest[..1]).is_empty());
        out = table.close_due(&mut rec, now + 1);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn live_intervals_recorded_before_the_catch_up_neither_hide_the_gap_nor_repeat() {
        let p = one_meter();
        let day = utc("2026-10-04T16:00:00Z");
        let mut table = Table::default();
        let mut rec = Recorder::new(&p, RecorderState::default(), day);
        let first: Vec<LedgerInterval> = (0..40)
            .map(|q| iv("incomer", day + q * QUARTER, 1.0))
            .collect();
        table.save(&first);
        rec.record(&first);
        let saved = rec.state().clone();
        // Stored, never recorded: the crash came between the save and the enqueue.
        let lost: Vec<LedgerInterval> = (40..50)
            .map(|q| iv("incomer", day + q * QUARTER, 1.0))
            .collect();
        table.save(&lost);
        let now = day + 60 * QUARTER;
        let mut rec = Recorder::new(&p, saved, now);
        // The first batch after the restart arrives before the core's first close_due.
        let live: Vec<LedgerInterval> = (50..60)
            .map(|q| iv("incomer", day + q * QUARTER, 1.0))
            .collect();
        table.save(&live);
        let from_live = rec.record(&live);
        let from_catch_up = table.close_due(&mut rec, now);
        let dates = |rs: &[Record]| -> Vec<i64> { rs.iter().map(|r| r.span_ms.0).collect() };
        assert_eq!(dates(&from_live), dates(&record_list(&live)));
        assert_eq!(dates(&from_catch_up), dates(&record_list(&lost)));
        assert_eq!(rec.state().meters["incomer"], day + 60 * QUARTER);
        assert!(table.close_due(&mut rec, now).is_empty());
    }

    /// The real-time records the builder makes of `intervals`.
    fn record_list(intervals: &[LedgerInterval]) -> Vec<Record> {
        let p = one_meter();
        Builder::new(&p)
            .build(intervals, i64::MAX)
            .into_iter()
            .filter(|r| r.key.stat_type == StatType::Realtime)
            .collect()
    }

    #[test]
    fn a_state_older_than_the_catch_up_window_skips_and_says_from_when() {
        let p = one_meter();
        let old = RecorderState {
            next_day: NaiveDate::from_ymd_opt(2025, 1, 1),
            next_month: NaiveDate::from_ymd_opt(2025, 1, 1),
            ..RecorderState::default()
        };
        let now = utc("2026-10-05T04:00:00Z");
        let rec = Recorder::new(&p, old, now);
        let due = rec.due(now).unwrap();
        assert_eq!(due.skipped_from, NaiveDate::from_ymd_opt(2025, 1, 1));
        let DueWork::Period(period) = due.work else {
            panic!("{due:?}")
        };
        assert_eq!(period.stat_type, StatType::Day);
        assert_eq!(
            period.stat_date.date(),
            NaiveDate::from_ymd_opt(2026, 8, 4).unwrap(),
            "62 days before 2026-10-05"
        );
    }

    #[test]
    fn an_unreadable_state_is_an_error_naming_its_scope_and_no_state_is_fresh() {
        let err = RecorderState::from_rows(&[("recorder".into(), "{oops".into())]).unwrap_err();
        assert!(err.to_string().contains("scope `energy_platform`"), "{err}");
        assert_eq!(
            RecorderState::from_rows(&[]).unwrap(),
            RecorderState::default()
        );
    }

    /// Runs the recorder over `intervals` (several meters, some gaps), closing at the given
    /// steps, and returns every record it produced.
    fn live_run(p: &Spec, intervals: &[LedgerInterval], restart_at: Option<usize>) -> Vec<Record> {
        let start = intervals.iter().map(|i| i.start_ms).min().unwrap_or(0);
        let mut rec = Recorder::new(p, RecorderState::default(), start);
        let mut table = Table::default();
        let mut out = Vec::new();
        for (k, chunk) in intervals.chunks(7).enumerate() {
            table.save(chunk);
            out.extend(rec.record(chunk));
            let now = chunk.iter().map(|i| i.end_ms).max().unwrap_or(start);
            out.extend(table.close_due(&mut rec, now));
            if restart_at == Some(k) {
                let state = RecorderState::from_rows(&rec.state().to_rows()).unwrap();
                rec = Recorder::new(p, state, now);
            }
        }
        let end = intervals.iter().map(|i| i.end_ms).max().unwrap_or(0);
        // Long after: every period has closed.
        out.extend(table.close_due(&mut rec, end + 40 * 86_400_000));
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn live_days_and_months_equal_the_sums_of_the_live_realtime_records_and_the_builder(
            lead in 0_i64..400,
            cells in prop::collection::vec((0.0_f64..500.0, 0_u8..40, any::<bool>()), 1..1500),
            restart in prop::option::of(0_usize..200),
        ) {
            // Starts shortly before a month boundary; two meters, holes, estimates.
            let boundary = utc("2026-10-31T16:00:00Z");
            let first = boundary - lead * QUARTER;
            let p = platform(vec![
                item("incomer", "E001", &[StatType::Realtime, StatType::Day, StatType::Month]),
                item("boiler", "E002", &[StatType::Realtime, StatType::Day]),
            ]);
            let mut intervals = Vec::new();
            for (k, (delta, kind, second)) in cells.iter().enumerate() {
                if *kind == 0 {
                    continue; // a hole
                }
                let meter = if *second { "boiler" } else { "incomer" };
                let mut i = iv(meter, first + k as i64 * QUARTER, *delta);
                if *kind < 4 {
                    i.quality = IntervalQuality::Estimated;
                }
                intervals.push(i);
            }
            let live = live_run(&p, &intervals, restart);
            let of = |t: StatType| -> Vec<&Record> { live.iter().filter(|r| r.key.stat_type == t).collect() };
            // Every interval gave exactly one real-time record.
            prop_assert_eq!(of(StatType::Realtime).len(), intervals.len());
            // Each total is the exact sum of the printed real-time records inside it.
            for total in of(StatType::Day).into_iter().chain(of(StatType::Month)) {
                let mut sum = Fixed::zero(2);
                for r in of(StatType::Realtime) {
                    if r.key.data_code == total.key.data_code
                        && total.span_ms.0 <= r.span_ms.0 && r.span_ms.0 < total.span_ms.1
                    {
                        sum = sum.checked_add(r.value.to_string().parse().unwrap()).unwrap();
                    }
                }
                prop_assert_eq!(sum.to_string(), total.value.to_string(), "{}", total.key);
            }
            // And live agrees with the on-demand builder, record for record, for every period
            // that lies wholly after the recorder's start (it begins with the period it starts in).
            let built = Builder::new(&p).build(&intervals, i64::MAX);
            for r in of(StatType::Day).into_iter().chain(of(StatType::Month)) {
                let same = built.iter().find(|b| b.key == r.key);
                prop_assert_eq!(same, Some(r));
            }
            // No key twice.
            let mut keys: Vec<String> = live.iter().map(|r| r.key.to_string()).collect();
            keys.sort();
            let n = keys.len();
            keys.dedup();
            prop_assert_eq!(keys.len(), n);
        }
    }
}
