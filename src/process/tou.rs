//! Time-of-use (TOU) calendar: which tariff period (sharp, peak, flat, valley) applies at an
//! instant, and how an amount consumed over a span splits across periods. Also the local-time
//! primitives that the energy ledger shares (UTC offset, offset changes, supported range).
//!
//! Invariants:
//! - A calendar holds exactly 12 month schedules (January first) and an optional holiday
//!   schedule; every schedule covers the local day `[00:00, 24:00)` with no gap and no overlap,
//!   which [`Calendar::from_spec`] checks (collecting every problem with its key path) and
//!   [`Calendar::hubei_2021`] satisfies by construction (a test checks it).
//! - Schedules are in local wall-clock time of the zone passed in; a holiday date (local) uses the
//!   holiday schedule instead of its month's.
//! - [`Calendar::split`] divides an amount in proportion to time, measured in whole milliseconds,
//!   and its parts sum to the amount up to float rounding (the last part takes the remainder, so
//!   no error accumulates across parts). Segments are also
//!   cut at UTC-offset changes, so a DST day is split by the clock that was actually on the wall.
//! - Pure: no I/O, no clock; instants are milliseconds since the Unix epoch, UTC.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Milliseconds in a (nominal, local) day.
pub const DAY_MS: i64 = 86_400_000;

/// Earliest instant the energy modules accept: the Unix epoch (a gateway that booted without an
/// RTC reports times near it, so it must be accepted, not treated as garbage).
pub const MIN_TS_MS: i64 = 0;

/// Latest instant the energy modules accept: 9999-12-31T23:59:59.999Z. Bounding time keeps every
/// `ts ± offset ± interval` sum far from `i64` overflow and inside chrono's range.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Offset of local wall-clock time from UTC at `ts_ms`, in milliseconds (`local = utc + offset`).
pub fn utc_offset_ms(tz: Tz, ts_ms: i64) -> i64 {
    let ts_ms = ts_ms.clamp(MIN_TS_MS, MAX_TS_MS);
    // Cannot fail inside the clamped range; UTC is the harmless answer if it ever did.
    DateTime::from_timestamp_millis(ts_ms).map_or(0, |utc| {
        i64::from(
            tz.offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc(),
        ) * 1000
    })
}

/// First instant in `(lo, hi]` whose UTC offset differs from `offset_lo`, the offset at `lo`.
///
/// The caller knows the offset at `hi` differs; zones change offset at most a few times a year,
/// so within the spans used here (at most a day) there is exactly one change to find.
pub fn offset_change_in(tz: Tz, lo: i64, hi: i64, offset_lo: i64) -> i64 {
    let (mut lo, mut hi) = (lo, hi);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if utc_offset_ms(tz, mid) == offset_lo {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// A tariff period of the time-of-use scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// 尖峰, critical peak.
    Sharp,
    /// 高峰, peak.
    Peak,
    /// 平段, flat (shoulder).
    Flat,
    /// 低谷, valley (off-peak).
    Valley,
}

impl Period {
    /// Every period, in the order reports list them (and [`Calendar::split`] returns them).
    pub const ALL: [Period; 4] = [Period::Sharp, Period::Peak, Period::Flat, Period::Valley];

    /// The name used on the wire and in config: "sharp", "peak", "flat", "valley".
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Sharp => "sharp",
            Period::Peak => "peak",
            Period::Flat => "flat",
            Period::Valley => "valley",
        }
    }

    fn index(self) -> usize {
        match self {
            Period::Sharp => 0,
            Period::Peak => 1,
            Period::Flat => 2,
            Period::Valley => 3,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in a [`CalendarSpec`]: the key path (e.g. `months[7].periods[2]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecIssue {
    /// Where in the spec, written as config keys and 0-based list indexes.
    pub path: String,
    /// What is wrong, in words a plant engineer can act on.
    pub message: String,
}

/// A calendar as config writes it; [`Calendar::from_spec`] validates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// Exactly 12 day schedules, January first.
    pub months: Vec<DaySpec>,
    /// Local dates, `YYYY-MM-DD`, that follow `holiday` instead of their month's schedule.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// The schedule of a holiday (e.g. all flat, or a weekend schedule); required with `holidays`.
    #[serde(default)]
    pub holiday: Option<DaySpec>,
}

/// One day's schedule as config writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaySpec {
    /// Ranges that together cover the day exactly once.
    pub periods: Vec<RangeSpec>,
}

/// One local-time range of a day: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// `HH:MM`, 00:00–23:59.
    pub start: String,
    /// `HH:MM`, 00:01–24:00; an end at or before `start` wraps past midnight (23:00–07:00).
    pub end: String,
    /// The period in force during the range.
    pub period: Period,
}

/// A piece of a day: `[start, end)` in milliseconds after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    start: i64,
    end: i64,
    period: Period,
}

/// Sorted, contiguous segments covering `[0, DAY_MS)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Day {
    segments: Vec<Segment>,
}

impl Day {
    /// Builds a day from `(start_minute, end_minute, period)` triples already known to tile the
    /// day in order; only the shipped calendars use it, and a test validates them.
    fn from_minutes(ranges: &[(i64, i64, Period)]) -> Day {
        Day {
            segments: ranges
                .iter()
                .map(|&(start, end, period)| Segment {
                    start: start * 60_000,
                    end: end * 60_000,
                    period,
                })
                .collect(),
        }
    }

    /// The period at `tod` (ms after local midnight) and the time of day at which it ends.
    fn at(&self, tod: i64) -> (Period, i64) {
        // Segments are few (under a dozen): a linear scan beats a binary search here.
        self.segments
            .iter()
            .find(|s| tod < s.end)
            .map_or((Period::Flat, DAY_MS), |s| (s.period, s.end))
    }
}

/// A validated time-of-use calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    months: Vec<Day>,
    holidays: Vec<NaiveDate>,
    holiday: Option<Day>,
}

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl Calendar {
    /// Hubei's 2021 industrial scheme, the same every month: sharp 20–22, peak 9–15, valley 23–7,
    /// flat otherwise.
    pub fn hubei_2021() -> Calendar {
        // docs/platform.md §4.1 "2021 scheme" (in force from 2021-01-01, tagged [S]): 尖峰 20:00–22:00,
        // 高峰 09:00–15:00, 平 07:00–09:00 + 15:00–20:00 + 22:00–23:00, 低谷 23:00–07:00, with no
        // month qualifier on any row; docs/design.md §6 agrees. Month-dependent critical peaks
        // (Jul–Aug 20–22, other months 18–20) and a 12:00–14:00 valley belong to the January 2024
        // *draft* in the same section, whose final form is unknown (docs/platform.md §7.4), so they are
        // not applied here. No holiday rule is published for Hubei, hence no holidays.
        let day = Day::from_minutes(&[
            (0, 7 * 60, Period::Valley),
            (7 * 60, 9 * 60, Period::Flat),
            (9 * 60, 15 * 60, Period::Peak),
            (15 * 60, 20 * 60, Period::Flat),
            (20 * 60, 22 * 60, Period::Sharp),
            (22 * 60, 23 * 60, Period::Flat),
            (23 * 60, 24 * 60, Period::Valley),
        ]);
        Calendar {
            months: vec![day; 12],
            holidays: Vec::new(),
            holiday: None,
        }
    }

    /// Validates a spec into a calendar.
    ///
    /// # Errors
    /// Every problem found, each with its key path: a month count other than 12, malformed or
    /// out-of-range times, empty ranges, overlaps, uncovered stretches of a day, malformed or
    /// repeated holiday dates, and holidays listed without a holiday schedule.
    pub fn from_spec(spec: &CalendarSpec) -> Result<Calendar, Vec<SpecIssue>> {
        let mut issues = Vec::new();
        if spec.months.len() != 12 {
            issues.push(SpecIssue {
                path: "months".into(),
                message: format!(
                    "needs 12 day schedules, January first; found {}",
                    spec.months.len()
                ),
            });
        }
        let months: Vec<Day> = spec
            .months
            .iter()
            .enumerate()
            .map(|(i, day)| {
                let name = MONTH_NAMES.get(i).copied().unwrap_or("extra month");
                check_day(day, &format!("months[{i}]"), name, &mut issues)
            })
            .collect();
        let holiday = spec
            .holiday
            .as_ref()
            .map(|day| check_day(day, "holiday", "the holiday schedule", &mut issues));
        let mut holidays = Vec::with_capacity(spec.holidays.len());
        for (i, text) in spec.holidays.iter().enumerate() {
            match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(date) if holidays.contains(&date) => issues.push(SpecIssue {
                    path: format!("holidays[{i}]"),
                    message: format!("`{text}` is listed twice"),
                }),
                Ok(date) => holidays.push(date),
                Err(_) => issues.push(SpecIssue {
                    path: format!("holidays[{i}]"),
                    message: format!("`{text}` is not a date written YYYY-MM-DD"),
                }),
            }
        }
        if !spec.holidays.is_empty() && spec.holiday.is_none() {
            issues.push(SpecIssue {
                path: "holiday".into(),
                message: "holidays are listed but no holiday schedule says which periods they use"
                    .into(),
            });
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        holidays.sort_unstable();
        Ok(Calendar {
            months,
            holidays,
            holiday,
        })
    }

    /// The period in force at `ts_ms` in zone `tz`.
    pub fn period_at(&self, tz: Tz, ts_ms: i64) -> Period {
        self.segment_at(tz, ts_ms.clamp(MIN_TS_MS, MAX_TS_MS)).0
    }

    /// Splits `amount`, consumed evenly over `[start_ms, end_ms)`, across the periods in force,
    /// in proportion to time; one entry per period present, in [`Period::ALL`] order.
    ///
    /// The parts sum to `amount` up to float rounding. An empty or reversed span yields no
    /// entries; instants are clamped to [`MIN_TS_MS`]..=[`MAX_TS_MS`].
    pub fn split(&self, tz: Tz, start_ms: i64, end_ms: i64, amount: f64) -> Vec<(Period, f64)> {
        let start = start_ms.clamp(MIN_TS_MS, MAX_TS_MS);
        let end = end_ms.clamp(MIN_TS_MS, MAX_TS_MS);
        if start >= end {
            return Vec::new();
        }
        let mut ms = [0_i64; 4];
        let mut t = start;
        while t < end {
            let (period, seg_end) = self.segment_at(tz, t);
            let to = seg_end.min(end);
            if let Some(slot) = ms.get_mut(period.index()) {
                *slot += to - t;
            }
            t = to;
        }
        let total = (end - start) as f64;
        let present = ms.iter().filter(|&&m| m > 0).count();
        let mut parts = Vec::with_capacity(present);
        let mut given = 0.0;
        for (period, m) in Period::ALL.into_iter().zip(ms) {
            if m == 0 {
                continue;
            }
            // The last part takes the remainder, so rounding does not accumulate across parts.
            let part = if parts.len() + 1 == present {
                amount - given
            } else {
                amount * (m as f64) / total
            };
            given += part;
            parts.push((period, part));
        }
        parts
    }

    /// The schedule for a local date.
    fn day(&self, date: NaiveDate) -> Option<&Day> {
        match &self.holiday {
            Some(holiday) if self.holidays.binary_search(&date).is_ok() => Some(holiday),
            _ => self.months.get(date.month0() as usize),
        }
    }

    /// The period at `t` and the instant (UTC ms, > `t`) at which that stretch ends: the end of
    /// the schedule segment, or the next UTC-offset change, whichever is first.
    fn segment_at(&self, tz: Tz, t: i64) -> (Period, i64) {
        let offset = utc_offset_ms(tz, t);
        let local = t + offset;
        let tod = local.rem_euclid(DAY_MS);
        // The UTC calendar date of the local millisecond count is the local date.
        let date = DateTime::from_timestamp_millis(local)
            .map(|d| d.date_naive())
            .unwrap_or_default();
        let (period, seg_end_tod) = self.day(date).map_or((Period::Flat, DAY_MS), |d| d.at(tod));
        // Assume the offset holds until the segment ends, then check: a DST change inside the
        // segment cuts it, and the next call reads the schedule on the new wall clock.
        let end = t + (seg_end_tod - tod).max(1);
        if utc_offset_ms(tz, end) == offset {
            (period, end)
        } else {
            (period, offset_change_in(tz, t, end, offset))
        }
    }
}

/// Parses `HH:MM`; `24:00` only when `allow_24` (range ends).
fn parse_time(text: &str, allow_24: bool) -> Option<i64> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    let minutes = h * 60 + m;
    let ok = (0..60).contains(&m) && (0..24).contains(&h) || allow_24 && minutes == 24 * 60;
    ok.then_some(minutes)
}

fn hhmm(minutes: i64) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Checks one day spec; returns its segments (possibly incomplete when issues were pushed).
fn check_day(day: &DaySpec, path: &str, name: &str, issues: &mut Vec<SpecIssue>) -> Day {
    // (start, end, period, entry index) in minutes, wrapping ranges split at midnight.
    let mut pieces: Vec<(i64, i64, Period, usize)> = Vec::new();
    for (i, range) in day.periods.iter().enumerate() {
        let at = format!("{path}.periods[{i}]");
        let start = parse_time(&range.start, false);
        let end = parse_time(&range.end, true);
        if start.is_none() {
            issues.push(SpecIssue {
                path: format!("{at}.start"),
                message: format!("`{}` is not a time from 00:00 to 23:59", range.start),
            });
        }
        if end.is_none() {
            issues.push(SpecIssue {
                path: format!("{at}.end"),
                message: format!("`{}` is not a time from 00:01 to 24:00", range.end),
            });
        }
        let (Some(start), Some(end)) = (start, end) else {
            continue;
        };
        if start == end {
            // `07:00–07:00` could mean nothing or the whole day; make the author say which.
            issues.push(SpecIssue {
                path: at,
                message: format!(
                    "{}–{} is empty; write 00:00–24:00 for a whole day",
                    range.start, range.end
                ),
            });
            continue;
        }
        let end = if end == 0 { 24 * 60 } else { end };
        if start < end {
            pieces.push((start, end, range.period, i));
        } else {
            pieces.push((start, 24 * 60, range.period, i));
            pieces.push((0, end, range.period, i));
        }
    }
    pieces.sort_by_key(|p| (p.0, p.1));
    let mut covered_to = 0;
    let mut covered_by: Option<usize> = None;
    for &(start, end, _, i) in &pieces {
        if start < covered_to {
            let other = covered_by
                .and_then(|j| day.periods.get(j).map(|r| (j, r)))
                .map_or_else(String::new, |(j, r)| {
                    format!(" {path}.periods[{j}] ({}–{})", r.start, r.end)
                });
            issues.push(SpecIssue {
                path: format!("{path}.periods[{i}]"),
                message: format!(
                    "{}–{} overlaps{other} in {name}",
                    hhmm(start),
                    hhmm(end.min(covered_to))
                ),
            });
        } else if start > covered_to {
            issues.push(SpecIssue {
                path: format!("{path}.periods"),
                message: format!(
                    "nothing covers {}–{} in {name}",
                    hhmm(covered_to),
                    hhmm(start)
                ),
            });
        }
        if end > covered_to {
            covered_to = end;
            covered_by = Some(i);
        }
    }
    if covered_to < 24 * 60 {
        issues.push(SpecIssue {
            path: format!("{path}.periods"),
            message: format!("nothing covers {}–24:00 in {name}", hhmm(covered_to)),
        });
    }
    // Adjacent pieces of one period merge, so segment ends are true period changes.
    let mut segments: Vec<Segment> = Vec::with_capacity(pieces.len());
    for (start, end, period, _) in pieces {
        match segments.last_mut() {
            Some(last) if last.period == period && last.end == start * 60_000 => {
                last.end = end * 60_000;
            }
            _ => segments.push(Segment {
                start: start * 60_000,
                end: end * 60_000,
                period,
            }),
        }
    }
    Day { segments }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;

    fn at(tz: Tz, (y, mo, d): (i32, u32, u32), h: u32, mi: u32) -> i64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .timestamp_millis()
    }

    fn sh(h: u32, mi: u32) -> i64 {
        at(SH, (2024, 3, 1), h, mi)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    fn range(start: &str, end: &str, period: Period) -> RangeSpec {
        RangeSpec {
            start: start.into(),
            end: end.into(),
            period,
        }
    }

    fn hubei_day() -> DaySpec {
        DaySpec {
            periods: vec![
                range("23:00", "07:00", Period::Valley),
                range("07:00", "09:00", Period::Flat),
                range("09:00", "15:00", Period::Peak),
                range("15:00", "20:00", Period::Flat),
                range("20:00", "22:00", Period::Sharp),
                range("22:00", "23:00", Period::Flat),
            ],
        }
    }

    /// The January 2024 Hubei draft (docs/platform.md §4.1): month-dependent sharp hours.
    fn hubei_2024_draft() -> Calendar {
        let day = |sharp: (&str, &str), peaks: [(&str, &str); 2]| DaySpec {
            periods: vec![
                range("00:00", "01:00", Period::Flat),
                range("01:00", "07:00", Period::Valley),
                range("07:00", "12:00", Period::Flat),
                range("12:00", "14:00", Period::Valley),
                range("14:00", "16:00", Period::Flat),
                range(peaks[0].0, peaks[0].1, Period::Peak),
                range(sharp.0, sharp.1, Period::Sharp),
                range(peaks[1].0, peaks[1].1, Period::Peak),
            ],
        };
        let summer = day(("20:00", "22:00"), [("16:00", "20:00"), ("22:00", "24:00")]);
        let other = day(("18:00", "20:00"), [("16:00", "18:00"), ("20:00", "24:00")]);
        let months = (1..=12)
            .map(|m| {
                if m == 7 || m == 8 {
                    summer.clone()
                } else {
                    other.clone()
                }
            })
            .collect();
        Calendar::from_spec(&CalendarSpec {
            months,
            holidays: vec![],
            holiday: None,
        })
        .unwrap()
    }

    fn paths(spec: &CalendarSpec) -> Vec<String> {
        Calendar::from_spec(spec)
            .unwrap_err()
            .into_iter()
            .map(|i| i.path)
            .collect()
    }

    #[test]
    fn hubei_2021_periods_change_exactly_at_the_published_hours() {
        let cal = Calendar::hubei_2021();
        let cases = [
            ((0, 0), Period::Valley),
            ((6, 59), Period::Valley),
            ((7, 0), Period::Flat),
            ((8, 59), Period::Flat),
            ((9, 0), Period::Peak),
            ((14, 59), Period::Peak),
            ((15, 0), Period::Flat),
            ((19, 59), Period::Flat),
            ((20, 0), Period::Sharp),
            ((21, 59), Period::Sharp),
            ((22, 0), Period::Flat),
            ((22, 59), Period::Flat),
            ((23, 0), Period::Valley),
            ((23, 59), Period::Valley),
        ];
        for ((h, m), period) in cases {
            assert_eq!(cal.period_at(SH, sh(h, m)), period, "{h:02}:{m:02}");
        }
        // One millisecond before a boundary still belongs to the period before it.
        assert_eq!(cal.period_at(SH, sh(9, 0) - 1), Period::Flat);
        // Every month is the same in the 2021 scheme, sharp hours included.
        for month in 1..=12 {
            assert_eq!(
                cal.period_at(SH, at(SH, (2024, month, 15), 21, 0)),
                Period::Sharp
            );
        }
    }

    #[test]
    fn hubei_2021_is_a_valid_calendar_equal_to_its_spec_form() {
        let spec = CalendarSpec {
            months: vec![hubei_day(); 12],
            holidays: vec![],
            holiday: None,
        };
        assert_eq!(Calendar::from_spec(&spec).unwrap(), Calendar::hubei_2021());
    }

    #[test]
    fn a_quarter_hour_straddling_nine_splits_two_thirds_flat_one_third_peak() {
        let parts = Calendar::hubei_2021().split(SH, sh(8, 50), sh(9, 5), 3.0);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, Period::Peak);
        assert_eq!(parts[1].0, Period::Flat);
        assert!(close(parts[0].1, 1.0), "{parts:?}");
        assert!(close(parts[1].1, 2.0), "{parts:?}");
        assert!(close(parts[0].1 + parts[1].1, 3.0));
    }

    #[test]
    fn the_valley_crosses_midnight() {
        let cal = Calendar::hubei_2021();
        let parts = cal.split(SH, sh(22, 50), sh(23, 10), 2.0);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].0, parts[1].0), (Period::Flat, Period::Valley));
        assert!(
            close(parts[0].1, 1.0) && close(parts[1].1, 1.0),
            "{parts:?}"
        );
        let over_midnight = cal.split(SH, sh(23, 50), sh(23, 50) + 20 * 60_000, 5.0);
        assert_eq!(over_midnight, vec![(Period::Valley, 5.0)]);
    }

    #[test]
    fn a_boundary_at_half_past_splits_by_minutes() {
        let day = DaySpec {
            periods: vec![
                range("00:00", "11:30", Period::Valley),
                range("11:30", "24:00", Period::Peak),
            ],
        };
        let cal = Calendar::from_spec(&CalendarSpec {
            months: vec![day; 12],
            holidays: vec![],
            holiday: None,
        })
        .unwrap();
        let parts = cal.split(SH, sh(11, 20), sh(11, 35), 1.5);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].0, parts[1].0), (Period::Peak, Period::Valley));
        assert!(
            close(parts[0].1, 0.5) && close(parts[1].1, 1.0),
            "{parts:?}"
        );
        assert_eq!(cal.period_at(SH, sh(11, 30)), Period::Peak);
        assert_eq!(cal.period_at(SH, sh(11, 30) - 1), Period::Valley);
    }

    #[test]
    fn a_holiday_follows_the_holiday_schedule() {
        let mut spec = CalendarSpec {
            months: vec![hubei_day(); 12],
            holidays: vec!["2024-10-01".into(), "2024-10-02".into()],
            holiday: Some(DaySpec {
                periods: vec![range("00:00", "24:00", Period::Flat)],
            }),
        };
        let cal = Calendar::from_spec(&spec).unwrap();
        assert_eq!(
            cal.period_at(SH, at(SH, (2024, 10, 1), 10, 0)),
            Period::Flat
        );
        assert_eq!(
            cal.period_at(SH, at(SH, (2024, 10, 3), 10, 0)),
            Period::Peak
        );
        // The holiday is a local date: 2024-09-30 23:30 local is valley, then flat at midnight.
        let parts = cal.split(
            SH,
            at(SH, (2024, 9, 30), 23, 30),
            at(SH, (2024, 10, 1), 0, 30),
            2.0,
        );
        assert_eq!(parts, vec![(Period::Flat, 1.0), (Period::Valley, 1.0)]);
        spec.holiday = None;
        assert_eq!(paths(&spec), vec!["holiday"]);
    }

    #[test]
    fn a_month_dependent_calendar_changes_at_local_midnight_of_the_1st() {
        let cal = hubei_2024_draft();
        assert_eq!(
            cal.period_at(SH, at(SH, (2024, 8, 31), 19, 0)),
            Period::Peak
        );
        assert_eq!(
            cal.period_at(SH, at(SH, (2024, 9, 1), 19, 0)),
            Period::Sharp
        );
        assert_eq!(
            cal.period_at(SH, at(SH, (2024, 9, 1), 13, 0)),
            Period::Valley
        );
        // 22:00–24:00 is peak and 00:00–01:00 flat in both month groups.
        let parts = cal.split(
            SH,
            at(SH, (2024, 8, 31), 23, 50),
            at(SH, (2024, 9, 1), 0, 10),
            1.0,
        );
        assert_eq!(parts.len(), 2);
        assert!(
            close(parts[0].1, 0.5) && close(parts[1].1, 0.5),
            "{parts:?}"
        );
    }

    #[test]
    fn the_repeated_hour_of_a_dst_fall_back_follows_the_wall_clock() {
        let berlin = chrono_tz::Europe::Berlin;
        let day = DaySpec {
            periods: vec![
                range("00:00", "02:30", Period::Valley),
                range("02:30", "24:00", Period::Flat),
            ],
        };
        let cal = Calendar::from_spec(&CalendarSpec {
            months: vec![day; 12],
            holidays: vec![],
            holiday: None,
        })
        .unwrap();
        // 2024-10-27: 03:00 CEST (01:00 UTC) becomes 02:00 CET, so 02:00–02:30 happens twice.
        let start = at(berlin, (2024, 10, 27), 0, 0); // 22:00 UTC the day before
        let four_utc = start + 6 * 3_600_000; // 05:00 CET
        let parts = cal.split(berlin, start, four_utc, 6.0);
        // Valley 22:00–00:30 and 01:00–01:30 UTC (3 h), flat for the other 3 h.
        assert_eq!(parts.len(), 2);
        assert!(
            close(parts[0].1, 3.0) && close(parts[1].1, 3.0),
            "{parts:?}"
        );
    }

    #[test]
    fn spec_problems_are_all_reported_with_their_paths() {
        let mut spec = CalendarSpec {
            months: vec![hubei_day(); 12],
            holidays: vec![
                "2024-13-01".into(),
                "2024-05-01".into(),
                "2024-05-01".into(),
            ],
            holiday: Some(DaySpec {
                periods: vec![range("00:00", "24:00", Period::Flat)],
            }),
        };
        spec.months[7].periods[2] = range("08:00", "15:00", Period::Peak); // overlaps 07–09
        spec.months[3].periods[3] = range("16:00", "20:00", Period::Flat); // 15–16 uncovered
        spec.months[0].periods[0] = range("23:00", "25:00", Period::Valley);
        spec.months[1].periods[1] = range("7:00", "09:00", Period::Flat);
        spec.months[2].periods[5] = range("22:00", "22:00", Period::Flat);
        let issues = Calendar::from_spec(&spec).unwrap_err();
        let got: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for want in [
            "months[7].periods[2]",
            "months[3].periods",
            "months[0].periods[0].end",
            "months[1].periods[1].start",
            "months[2].periods[5]",
            "holidays[0]",
            "holidays[2]",
        ] {
            assert!(got.contains(&want), "missing {want} in {issues:#?}");
        }
        let overlap = issues
            .iter()
            .find(|i| i.path == "months[7].periods[2]")
            .unwrap();
        assert_eq!(
            overlap.to_string(),
            "months[7].periods[2]: 08:00–09:00 overlaps months[7].periods[1] (07:00–09:00) \
             in August"
        );
        let gap = issues
            .iter()
            .find(|i| i.path == "months[3].periods")
            .unwrap();
        assert!(gap.message.contains("nothing covers 15:00–16:00"), "{gap}");

        spec.months.truncate(11);
        assert!(paths(&spec).contains(&"months".to_string()));
    }

    #[test]
    fn empty_and_reversed_spans_split_into_nothing() {
        let cal = Calendar::hubei_2021();
        assert!(cal.split(SH, sh(9, 0), sh(9, 0), 1.0).is_empty());
        assert!(cal.split(SH, sh(10, 0), sh(9, 0), 1.0).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn split_parts_sum_to_the_amount_and_follow_time(
            start in 1_600_000_000_000_i64..1_900_000_000_000,
            len in 1_i64..3 * DAY_MS,
            amount in 0.0_f64..1e6,
        ) {
            let cal = Calendar::hubei_2021();
            for tz in [SH, chrono_tz::Europe::Berlin, chrono_tz::Asia::Kathmandu] {
                let parts = cal.split(tz, start, start + len, amount);
                let sum: f64 = parts.iter().map(|p| p.1).sum();
                prop_assert!((sum - amount).abs() <= 1e-9 * amount.max(1.0), "{parts:?}");
                prop_assert!(parts.iter().all(|p| p.1 >= 0.0), "{parts:?}");
                prop_assert!(parts.windows(2).all(|w| w[0].0 < w[1].0));
            }
        }
    }
}
