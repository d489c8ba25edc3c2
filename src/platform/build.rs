//! Closed ledger intervals → the platform's real-time, day, month and year records (pure).
//!
//! For each configured item, the intervals of its meter become:
//! - one real-time record (`statType` 0) per interval;
//! - one day record (`statType` 1) per local day, once the day has ended (at local midnight);
//! - one month record (`statType` 2) per local month, once it has ended (on the 1st at 00:00);
//! - one year record (`statType` 3) per local year, once it has ended, when configured.
//!
//! An interval belongs to the day that holds its start. Ledger intervals divide the day and
//! follow the local clock, so none straddles midnight when the platform's zone is the
//! gateway's (the default).
//!
//! **Exact totals.** Each interval's consumption is rounded once to the item's decimal places
//! ([`Fixed::from_f64`]); a day is the integer sum of its intervals, a month the sum of its
//! days and a year the sum of its months. So the printed day equals the sum of the printed
//! intervals, and the printed month the sum of the printed days, to the last digit. Against the
//! unrounded ledger a day may differ by at most half a unit of the last place per interval
//! (0.48 kWh for 96 intervals at 2 places), far inside the platform's 5 % day/month tolerance.
//! Integer sums do not depend on grouping, so a month folded straight from its intervals is
//! the same figure as the sum of its days: that is what lets [`Fold`] stream a period without
//! holding its days.
//!
//! **Validity** (`valid`). A record is valid (`"1"`) when all of:
//! 1. its intervals tile its period exactly: the first starts at the period's start, each next
//!    one starts where the previous ended, the last ends at the period's end (no hole);
//! 2. none is `missing`, and none has a delta that cannot be represented (NaN, infinite,
//!    negative or 10^15 and above, counted as missing with value 0);
//! 3. at most `max_estimated_share` of them (by count) are `estimated`.
//!
//! A real-time record is its own period, so with a share below 1 it is valid exactly when its
//! interval is `good`. Counter flags (rollover, reset, replacement) do not affect validity:
//! the counter has already turned them into a sound delta.
//!
//! **Input.** A period's record is exactly as complete as the intervals passed in: pass every
//! interval of the period (the ledger's range query over it), or the record comes out short
//! and invalid. When an interval of a meter appears more than once, the last one wins, as in
//! the ledger table. The same intervals always give the same records, so a resend after an
//! outage carries the keys and values of the first attempt.
//!
//! Two entry points share one code path: [`Builder::build`] takes a slice (sorted and
//! de-duplicated here); [`Fold`] takes intervals one at a time, per meter in time order (as
//! [`crate::store::ledger::for_each`] streams them), and keeps only one running total per
//! item and period, so a month or a year is never held in memory.

use std::collections::BTreeMap;
use std::ops::Deref;

use super::decimal::Fixed;
use super::record::{Record, RecordKey, StatPeriod, StatType, local_datetime};
use super::spec::{Item, Spec};
use crate::process::counter::IntervalQuality;
use crate::process::ledger::LedgerInterval;

/// What a run of consecutive intervals adds up to, and how complete it is.
#[derive(Debug, Clone, Copy)]
struct Tally {
    sum: Fixed,
    first_start: i64,
    last_end: i64,
    contiguous: bool,
    count: u64,
    estimated: u64,
    missing: u64,
}

impl Tally {
    fn of(
        (start_ms, end_ms): (i64, i64),
        delta: f64,
        quality: IntervalQuality,
        decimals: u8,
    ) -> Tally {
        let value = Some(delta)
            .filter(|d| *d >= 0.0)
            .and_then(|d| Fixed::from_f64(d, decimals));
        Tally {
            sum: value.unwrap_or_else(|| Fixed::zero(decimals)),
            first_start: start_ms,
            last_end: end_ms,
            contiguous: true,
            count: 1,
            estimated: u64::from(quality == IntervalQuality::Estimated),
            missing: u64::from(quality == IntervalQuality::Missing || value.is_none()),
        }
    }

    /// `self` followed by `next`, which starts no earlier than `self` ends.
    fn then(self, next: Tally) -> Tally {
        let sum = self.sum.checked_add(next.sum);
        Tally {
            // An overflow cannot happen with the input caps; were it to, the total is flagged.
            sum: sum.unwrap_or(self.sum),
            first_start: self.first_start,
            last_end: next.last_end,
            contiguous: self.contiguous && next.contiguous && self.last_end == next.first_start,
            count: self.count + next.count,
            estimated: self.estimated + next.estimated,
            missing: self.missing + next.missing + u64::from(sum.is_none()),
        }
    }

    /// The module's validity rule for a period spanning `[start, end)`.
    fn valid(&self, (start, end): (i64, i64), max_estimated_share: f64) -> bool {
        self.contiguous
            && self.first_start == start
            && self.last_end == end
            && self.missing == 0
            && self.estimated as f64 <= max_estimated_share * self.count as f64
    }
}

/// Turns ledger intervals into records for the configured items.
#[derive(Debug, Clone, Copy)]
pub struct Builder<'a> {
    platform: &'a Spec,
}

impl<'a> Builder<'a> {
    /// A builder for `platform`'s items.
    pub fn new(platform: &'a Spec) -> Self {
        Self { platform }
    }

    /// Every record of the configured items whose interval or period has ended by `now_ms`,
    /// item by item in config order, then by statistic type, then by time.
    pub fn build(&self, intervals: &[LedgerInterval], now_ms: i64) -> Vec<Record> {
        let mut latest: BTreeMap<(&str, i64), &LedgerInterval> = BTreeMap::new();
        for interval in intervals {
            latest.insert((interval.meter.as_str(), interval.start_ms), interval);
        }
        let mut fold = Fold::new(self.platform, Select::Ended { now_ms });
        for interval in latest.values() {
            fold.push_interval(interval);
        }
        fold.finish()
    }
}

/// Which records a [`Fold`] keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// Every record whose interval or period has ended by `now_ms` (what [`Builder::build`]
    /// returns).
    Ended {
        /// The current time, UTC ms.
        now_ms: i64,
    },
    /// The records of `stat_types` (empty: every type) whose interval or period starts in
    /// `[from_ms, to_ms)` and has ended by `now_ms`.
    Range {
        /// First start kept, UTC ms.
        from_ms: i64,
        /// Starts from here on are not kept.
        to_ms: i64,
        /// The types kept; empty keeps every type an item produces.
        stat_types: Vec<StatType>,
        /// The current time, UTC ms.
        now_ms: i64,
    },
    /// Each item's record of this one day, month or year.
    Period(StatPeriod),
    /// The real-time record of every interval pushed (the caller has chosen them).
    AllRealtime,
    /// The real-time records of the intervals of the meters in `windows` that start at or
    /// after the window's first value and end by its second; other meters give nothing.
    Realtime {
        /// Per meter, `(first start kept, last end kept)`, UTC ms.
        windows: BTreeMap<String, (i64, i64)>,
    },
}

impl Select {
    /// Whether the real-time record of `meter`'s interval `[start, end)` is kept.
    fn realtime(&self, meter: &str, (start, end): (i64, i64)) -> bool {
        match self {
            Self::Ended { now_ms } => end <= *now_ms,
            Self::Range {
                from_ms,
                to_ms,
                stat_types,
                now_ms,
            } => {
                (stat_types.is_empty() || stat_types.contains(&StatType::Realtime))
                    && (*from_ms..*to_ms).contains(&start)
                    && end <= *now_ms
            }
            Self::Period(_) => false,
            Self::AllRealtime => true,
            Self::Realtime { windows } => windows
                .get(meter)
                .is_some_and(|(from, to)| start >= *from && end <= *to),
        }
    }

    /// Whether intervals are summed into periods of `stat_type` at all.
    fn sums(&self, stat_type: StatType) -> bool {
        match self {
            Self::Ended { .. } => true,
            Self::Range { stat_types, .. } => {
                stat_types.is_empty() || stat_types.contains(&stat_type)
            }
            Self::Period(p) => p.stat_type == stat_type,
            Self::AllRealtime | Self::Realtime { .. } => false,
        }
    }

    /// Whether the record of `period` is kept.
    fn keeps(&self, period: &StatPeriod) -> bool {
        match self {
            Self::Ended { now_ms } => period.end_ms <= *now_ms,
            Self::Range {
                from_ms,
                to_ms,
                now_ms,
                ..
            } => (*from_ms..*to_ms).contains(&period.start_ms) && period.end_ms <= *now_ms,
            Self::Period(p) => p == period,
            Self::AllRealtime | Self::Realtime { .. } => false,
        }
    }
}

/// The period types summed from intervals, in output order.
const TOTALS: [StatType; 3] = [StatType::Day, StatType::Month, StatType::Year];

/// Streams intervals into the records that [`Select`] asks for, holding one running total per
/// item and period (plus the real-time records it returns), never the intervals.
///
/// Feed each meter's intervals in time order, each once (the ledger table's order); meters may
/// interleave. `P` is any owner of the platform spec (`&Spec`, `Arc<…>`).
#[derive(Debug)]
pub struct Fold<P> {
    platform: P,
    select: Select,
    /// Item indices by meter name (several items may read one meter).
    by_meter: BTreeMap<String, Vec<usize>>,
    /// Real-time records, per item.
    realtime: Vec<Vec<Record>>,
    /// Running totals by (item, type, period start).
    totals: BTreeMap<(usize, StatType, i64), (StatPeriod, Tally)>,
    /// Per item and total type, the period of the last interval (saves a zone lookup each).
    last: Vec<[Option<StatPeriod>; 3]>,
}

impl<P: Deref<Target = Spec>> Fold<P> {
    /// An empty fold of `platform`'s items, keeping what `select` asks for.
    pub fn new(platform: P, select: Select) -> Self {
        let mut by_meter: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, item) in platform.items.iter().enumerate() {
            by_meter.entry(item.meter.clone()).or_default().push(i);
        }
        let n = platform.items.len();
        Self {
            platform,
            select,
            by_meter,
            realtime: vec![Vec::new(); n],
            totals: BTreeMap::new(),
            last: vec![[None; 3]; n],
        }
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

    /// Adds one interval given by its parts (the shape [`crate::store::ledger::for_each`]
    /// hands out).
    pub fn push(&mut self, meter: &str, span: (i64, i64), delta: f64, quality: IntervalQuality) {
        let Self {
            platform,
            select,
            by_meter,
            realtime,
            totals,
            last,
        } = self;
        let Some(indices) = by_meter.get(meter) else {
            return;
        };
        let platform: &Spec = platform;
        let tz = platform.timezone;
        for &i in indices {
            let item = &platform.items[i];
            let tally = Tally::of(span, delta, quality, item.decimals);
            if item.produces(StatType::Realtime)
                && select.realtime(meter, span)
                && let Some(stat_date) = local_datetime(tz, span.0)
            {
                realtime[i].push(record(
                    platform,
                    item,
                    StatType::Realtime,
                    stat_date,
                    span,
                    &tally,
                ));
            }
            for (k, stat_type) in TOTALS.into_iter().enumerate() {
                if !item.produces(stat_type) || !select.sums(stat_type) {
                    continue;
                }
                let period = match last[i][k] {
                    Some(p) if p.start_ms <= span.0 && span.0 < p.end_ms => p,
                    _ => {
                        let Some(p) = StatPeriod::containing(stat_type, tz, span.0) else {
                            continue;
                        };
                        last[i][k] = Some(p);
                        p
                    }
                };
                if !select.keeps(&period) {
                    continue;
                }
                totals
                    .entry((i, stat_type, period.start_ms))
                    .and_modify(|(_, acc)| *acc = acc.then(tally))
                    .or_insert((period, tally));
            }
        }
    }

    /// The records, item by item in config order, then by statistic type, then by time.
    pub fn finish(self) -> Vec<Record> {
        let platform: &Spec = &self.platform;
        let mut out = Vec::new();
        let mut realtime = self.realtime.into_iter();
        for (i, item) in platform.items.iter().enumerate() {
            out.extend(realtime.next().unwrap_or_default());
            for stat_type in TOTALS {
                for (period, tally) in self
                    .totals
                    .range((i, stat_type, i64::MIN)..=(i, stat_type, i64::MAX))
                    .map(|(_, v)| v)
                {
                    let span = (period.start_ms, period.end_ms);
                    out.push(record(
                        platform,
                        item,
                        stat_type,
                        period.stat_date,
                        span,
                        tally,
                    ));
                }
            }
        }
        out
    }
}

/// The record of `item` for `span` with the figures of `tally`.
fn record(
    platform: &Spec,
    item: &Item,
    stat_type: StatType,
    stat_date: chrono::NaiveDateTime,
    span_ms: (i64, i64),
    tally: &Tally,
) -> Record {
    Record {
        key: RecordKey {
            enterprise_code: platform.enterprise_code.clone(),
            data_code: item.data_code.clone(),
            stat_type,
            stat_date,
        },
        meter: item.meter.clone(),
        span_ms,
        value: tally.sum,
        convert_ratio: item.convert_ratio,
        valid: tally.valid(span_ms, platform.max_estimated_share),
        scope: item.scope.clone(),
        input_type: item.input_type.clone(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    use proptest::prelude::*;

    use super::*;
    use crate::platform::record::{DATE_FORMAT, Versions};
    use crate::platform::uscc::Uscc;
    use crate::process::counter::Flags;

    const SH: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
    const MIN: i64 = 60_000;
    const QUARTER: i64 = 15 * MIN;

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn item(stat_types: &[StatType], decimals: u8) -> Item {
        Item {
            meter: "incomer".into(),
            meter_index: 0,
            data_code: "E001-0101-00".into(),
            convert_ratio: 0.1229,
            scope: "1".into(),
            input_type: "1".into(),
            stat_types: stat_types.to_vec(),
            decimals,
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

    fn interval(
        start_ms: i64,
        length_ms: i64,
        delta: f64,
        quality: IntervalQuality,
    ) -> LedgerInterval {
        LedgerInterval {
            meter: "incomer".into(),
            kind: "electricity".into(),
            unit: "kWh".into(),
            start_ms,
            end_ms: start_ms + length_ms,
            delta,
            quality,
            flags: Flags::EMPTY,
            tou: [0.0; 4],
            kgce: Some(delta * 0.1229),
        }
    }

    fn good(start_ms: i64, delta: f64) -> LedgerInterval {
        interval(start_ms, QUARTER, delta, IntervalQuality::Good)
    }

    fn date(record: &Record) -> String {
        record.key.stat_date.format(DATE_FORMAT).to_string()
    }

    fn of_type(records: &[Record], stat_type: StatType) -> Vec<&Record> {
        records
            .iter()
            .filter(|r| r.key.stat_type == stat_type)
            .collect()
    }

    /// October 2026 in Shanghai, every quarter-hour: 10.000, 10.125, 10.250, 10.375 kWh in turn
    /// (printed 10.00, 10.13, 10.25, 10.38), so every day is 24 × 40.76 = 978.24 kWh.
    fn october() -> Vec<LedgerInterval> {
        let start = utc("2026-09-30T16:00:00Z");
        (0..31 * 96)
            .map(|k| good(start + k * QUARTER, 10.0 + (k % 4) as f64 * 0.125))
            .collect()
    }

    fn uploaded() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 1)
            .unwrap()
            .and_hms_opt(0, 5, 0)
            .unwrap()
    }

    fn golden(name: &str) -> &'static str {
        match name {
            "realtime" => include_str!("../../tests/fixtures/platform/realtime.json"),
            "day" => include_str!("../../tests/fixtures/platform/day.json"),
            "month" => include_str!("../../tests/fixtures/platform/month.json"),
            _ => unreachable!(),
        }
    }

    #[test]
    fn one_record_of_each_type_matches_its_golden_payload() {
        let p = platform(vec![item(
            &[StatType::Realtime, StatType::Day, StatType::Month],
            2,
        )]);
        let records = Builder::new(&p).build(&october(), utc("2026-10-31T16:00:00Z"));
        let versions = Versions {
            reg_version: "3".into(),
            dic_version: "12".into(),
        };
        let pick = |stat_type: StatType, stat_date: &str| {
            let record = records
                .iter()
                .find(|r| r.key.stat_type == stat_type && date(r) == stat_date)
                .unwrap_or_else(|| panic!("no {stat_type:?} record at {stat_date}"));
            serde_json::to_string(&record.payload(&versions, uploaded())).unwrap()
        };
        for (name, stat_type, stat_date) in [
            ("realtime", StatType::Realtime, "2026-10-05 08:15:00"),
            ("day", StatType::Day, "2026-10-05 00:00:00"),
            ("month", StatType::Month, "2026-10-01 00:00:00"),
        ] {
            assert_eq!(
                pick(stat_type, stat_date),
                golden(name).trim_end(),
                "{name}"
            );
        }
        assert_eq!(of_type(&records, StatType::Realtime).len(), 31 * 96);
        assert_eq!(of_type(&records, StatType::Day).len(), 31);
        assert_eq!(of_type(&records, StatType::Month).len(), 1);
        assert!(records.iter().all(|r| r.valid));
    }

    #[test]
    fn days_split_at_shanghai_midnight_not_utc_midnight() {
        // 2026-10-31 15:30Z .. 16:30Z is 23:30 .. 00:30 local, across a day and a month.
        let start = utc("2026-10-31T15:30:00Z");
        let intervals: Vec<LedgerInterval> = (0..4)
            .map(|k| good(start + k * QUARTER, 1.0 + k as f64))
            .collect();
        let p = platform(vec![item(&StatType::ALL, 2)]);
        let records = Builder::new(&p).build(&intervals, utc("2028-01-01T00:00:00Z"));
        let summary: Vec<(StatType, String, String)> = records
            .iter()
            .filter(|r| r.key.stat_type != StatType::Realtime)
            .map(|r| (r.key.stat_type, date(r), r.value.to_string()))
            .collect();
        let expected = [
            (StatType::Day, "2026-10-31 00:00:00", "3.00"),
            (StatType::Day, "2026-11-01 00:00:00", "7.00"),
            (StatType::Month, "2026-10-01 00:00:00", "3.00"),
            (StatType::Month, "2026-11-01 00:00:00", "7.00"),
            (StatType::Year, "2026-01-01 00:00:00", "10.00"),
        ];
        let expected: Vec<(StatType, String, String)> = expected
            .iter()
            .map(|(t, d, v)| (*t, (*d).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(summary, expected);
        let realtime: Vec<String> = of_type(&records, StatType::Realtime)
            .iter()
            .map(|r| date(r))
            .collect();
        assert_eq!(
            realtime,
            [
                "2026-10-31 23:30:00",
                "2026-10-31 23:45:00",
                "2026-11-01 00:00:00",
                "2026-11-01 00:15:00"
            ]
        );
        let day = of_type(&records, StatType::Day)[1];
        assert_eq!(
            day.span_ms,
            (utc("2026-10-31T16:00:00Z"), utc("2026-11-01T16:00:00Z"))
        );
    }

    #[test]
    fn a_day_is_produced_at_its_local_midnight_and_not_before() {
        let day_start = utc("2026-10-04T16:00:00Z");
        let intervals: Vec<LedgerInterval> = (0..96)
            .map(|k| good(day_start + k * QUARTER, 1.0))
            .collect();
        let p = platform(vec![item(&[StatType::Day], 2)]);
        let midnight = utc("2026-10-05T16:00:00Z");
        assert!(Builder::new(&p).build(&intervals, midnight - 1).is_empty());
        let records = Builder::new(&p).build(&intervals, midnight);
        assert_eq!(records.len(), 1);
        assert_eq!(date(&records[0]), "2026-10-05 00:00:00");
        assert_eq!(records[0].value.to_string(), "96.00");
        assert!(records[0].valid);
    }

    #[test]
    fn a_month_is_produced_on_the_first_at_midnight() {
        let p = platform(vec![item(&[StatType::Month], 2)]);
        let first = utc("2026-10-31T16:00:00Z");
        assert!(Builder::new(&p).build(&october(), first - 1).is_empty());
        let records = Builder::new(&p).build(&october(), first);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].value.to_string(), "30325.44");
    }

    fn day_with(change: impl Fn(usize, &mut LedgerInterval)) -> Vec<LedgerInterval> {
        let day_start = utc("2026-10-04T16:00:00Z");
        (0_i64..96)
            .map(|k| {
                let mut iv = good(day_start + k * QUARTER, 1.0);
                change(k as usize, &mut iv);
                iv
            })
            .collect()
    }

    fn day_valid(intervals: &[LedgerInterval]) -> bool {
        let p = platform(vec![item(&[StatType::Day], 2)]);
        let records = Builder::new(&p).build(intervals, utc("2027-01-01T00:00:00Z"));
        assert_eq!(records.len(), 1);
        records[0].valid
    }

    #[test]
    fn a_day_is_valid_only_when_complete_and_measured() {
        assert!(day_valid(&day_with(|_, _| {})));
        let mut holed = day_with(|_, _| {});
        holed.remove(40);
        assert!(!day_valid(&holed), "a hole");
        assert!(!day_valid(&day_with(|k, iv| if k == 95 {
            iv.quality = IntervalQuality::Missing;
        })));
        // 9 estimated of 96 is within 10 %, 10 is not.
        assert!(day_valid(&day_with(|k, iv| if k < 9 {
            iv.quality = IntervalQuality::Estimated;
        })));
        assert!(!day_valid(&day_with(|k, iv| if k < 10 {
            iv.quality = IntervalQuality::Estimated;
        })));
        assert!(!day_valid(&day_with(|k, iv| if k == 3 {
            iv.delta = f64::NAN;
        })));
        let mut late_start = day_with(|_, _| {});
        late_start.remove(0);
        assert!(!day_valid(&late_start), "the first quarter-hour is absent");
    }

    #[test]
    fn a_realtime_record_is_valid_when_its_interval_is_good() {
        let p = platform(vec![item(&[StatType::Realtime], 2)]);
        let start = utc("2026-10-05T00:00:00Z");
        let intervals = [
            good(start, 1.0),
            interval(start + QUARTER, QUARTER, 1.0, IntervalQuality::Estimated),
            interval(start + 2 * QUARTER, QUARTER, 0.0, IntervalQuality::Missing),
        ];
        let valid: Vec<bool> = Builder::new(&p)
            .build(&intervals, start + 3 * QUARTER)
            .iter()
            .map(|r| r.valid)
            .collect();
        assert_eq!(valid, [true, false, false]);
    }

    #[test]
    fn only_configured_meters_and_closed_intervals_are_built() {
        let p = platform(vec![item(&[StatType::Realtime], 2)]);
        let start = utc("2026-10-05T00:00:00Z");
        let mut other = good(start, 5.0);
        other.meter = "boiler-gas".into();
        let records = Builder::new(&p).build(&[other, good(start, 1.0)], start + QUARTER);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].meter, "incomer");
        assert!(
            Builder::new(&p)
                .build(&[good(start, 1.0)], start + QUARTER - 1)
                .is_empty()
        );
    }

    #[test]
    fn a_resend_carries_the_same_keys_and_values() {
        let p = platform(vec![item(&StatType::ALL, 3)]);
        let mut intervals = october();
        let first = Builder::new(&p).build(&intervals, utc("2027-01-01T00:00:00Z"));
        // Re-read in another order, with an interval saved twice (the later copy wins).
        let mut stale = intervals[100].clone();
        stale.delta = 999.0;
        intervals.reverse();
        intervals.insert(0, stale);
        let again = Builder::new(&p).build(&intervals, utc("2027-01-01T00:00:00Z"));
        assert_eq!(first, again);
    }

    #[test]
    fn each_item_uses_its_own_code_ratio_and_places() {
        let mut coal = item(&[StatType::Day], 0);
        coal.data_code = "E001-0101-01".into();
        coal.convert_ratio = 1.0;
        let p = platform(vec![item(&[StatType::Day], 2), coal]);
        let records = Builder::new(&p).build(&october()[..96], utc("2026-10-01T16:00:00Z"));
        let shown: Vec<(String, String, String)> = records
            .iter()
            .map(|r| {
                let payload = r.payload(&Versions::default(), uploaded());
                (
                    payload.data_code,
                    payload.data_value,
                    payload.convert_ration,
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("E001-0101-00".into(), "978.24".into(), "0.1229".into()),
                // 10 + 10 (10.125) + 10 + 10 (10.375) per hour, rounded per interval.
                ("E001-0101-01".into(), "960".into(), "1".into()),
            ]
        );
    }

    /// Local midnights (Shanghai) that open a month, some a year, one after a leap day.
    fn boundaries() -> Vec<i64> {
        [
            "2026-01-31T16:00:00Z",
            "2026-02-28T16:00:00Z",
            "2024-02-29T16:00:00Z",
            "2026-12-31T16:00:00Z",
            "2026-10-31T16:00:00Z",
        ]
        .iter()
        .map(|t| utc(t))
        .collect()
    }

    /// Sums records' printed values (read back exactly) by the period of `group` holding them.
    fn printed_sums(records: &[&Record], group: StatType) -> BTreeMap<i64, Fixed> {
        let mut sums: BTreeMap<i64, Fixed> = BTreeMap::new();
        for r in records {
            let period = StatPeriod::containing(group, SH, r.span_ms.0).unwrap();
            let printed: Fixed = r.value.to_string().parse().unwrap();
            let entry = sums.entry(period.start_ms).or_insert(Fixed::zero(0));
            *entry = entry.checked_add(printed).unwrap();
        }
        sums
    }

    fn assert_sums(parts: &[&Record], totals: &[&Record], group: StatType) {
        let sums = printed_sums(parts, group);
        assert_eq!(sums.len(), totals.len(), "{group:?} periods");
        for total in totals {
            let sum = sums[&total.span_ms.0];
            assert_eq!(sum.to_string(), total.value.to_string(), "{}", total.key);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn days_months_and_years_are_exact_sums_of_the_level_below(
            boundary in prop::sample::select(boundaries()),
            minutes in prop::sample::select(vec![15_i64, 30, 60]),
            lead in 0_i64..300,
            cells in prop::collection::vec((0.0_f64..5_000.0, 0_u8..100), 1..700),
            decimals in 0_u8..=4,
        ) {
            let length = minutes * MIN;
            let first = boundary - lead * length;
            let mut intervals = Vec::new();
            for (k, (delta, kind)) in cells.iter().enumerate() {
                let start = first + k as i64 * length;
                let quality = match kind {
                    0 => continue, // a hole
                    1 => IntervalQuality::Missing,
                    2..=6 => IntervalQuality::Estimated,
                    _ => IntervalQuality::Good,
                };
                let delta = if quality == IntervalQuality::Missing { 0.0 } else { *delta };
                intervals.push(interval(start, length, delta, quality));
            }
            let p = platform(vec![item(&StatType::ALL, decimals)]);
            let records = Builder::new(&p).build(&intervals, utc("2100-01-01T00:00:00Z"));
            let realtime = of_type(&records, StatType::Realtime);
            let days = of_type(&records, StatType::Day);
            let months = of_type(&records, StatType::Month);
            let years = of_type(&records, StatType::Year);

            prop_assert_eq!(realtime.len(), intervals.len());
            for (r, iv) in realtime.iter().zip(&intervals) {
                prop_assert_eq!(r.value, Fixed::from_f64(iv.delta, decimals).unwrap());
                prop_assert_eq!(r.value.decimals(), decimals);
            }
            assert_sums(&realtime, &days, StatType::Day);
            assert_sums(&days, &months, StatType::Month);
            assert_sums(&months, &years, StatType::Year);

            // Validity of each day against a direct reading of the rule.
            for day in &days {
                let (start, end) = day.span_ms;
                let inside: Vec<&LedgerInterval> =
                    intervals.iter().filter(|i| i.start_ms >= start && i.start_ms < end).collect();
                let tiles = inside.len() as i64 * length == end - start;
                let missing = inside.iter().any(|i| i.quality == IntervalQuality::Missing);
                let estimated =
                    inside.iter().filter(|i| i.quality == IntervalQuality::Estimated).count();
                let expected = tiles && !missing && estimated as f64 <= 0.1 * inside.len() as f64;
                prop_assert_eq!(day.valid, expected, "{}", day.key);
            }
        }
    }
}
