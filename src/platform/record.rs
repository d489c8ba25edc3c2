//! The collected-data record of the energy platform (docs/platform.md §1.3, `EnterpriseEnergyModel`)
//! and its wire form.
//!
//! A [`Record`] is what the builder derives from the ledger; it holds everything that is fixed
//! once its period has closed. A [`Payload`] adds what only the upload knows: the platform's
//! `regVersion` and `dicVersion` (from `checkVersion`) and `uploadDate`. A resend after an
//! outage therefore carries the same [`RecordKey`] and `dataValue` with a new `uploadDate`
//! (docs/platform.md §1.5: re-send the same key, never re-aggregate).
//!
//! Wire facts and their footing:
//! - Field names are those of the Yunnan clients (`enterpriseCode`, `dataCode`, `dataValue`,
//!   `convertRation` with its spelling, …) \[C\].
//! - **Every value is a JSON string**, numbers included: the Linyang client puts each field
//!   into the body with `toString()`, and the Yunnan client's `EnterpriseEnergyModel` declares
//!   every field `String` \[C, client code\]. docs/platform.md itself only states it for `dataValue`;
//!   that the platform refuses JSON numbers is not known \[I\].
//! - `statDate` and `uploadDate` are `yyyy-MM-dd HH:mm:ss` (Linyang `DateUtil.DEFAULT_PATTERN`;
//!   the Yunnan client notes the upload fails unless the time has seconds) \[C, client code\],
//!   local time of the platform's zone, whatever the statistic type: a day is
//!   `2026-10-05 00:00:00`, a month `2026-10-01 00:00:00`.
//! - A real-time record's `statDate` is the **start** of its interval, like the day and month
//!   records name the start of theirs. The clients stamp real-time values with the curve
//!   point's minute, and whether that minute opens or closes the 15 minutes is not documented
//!   \[I\].
//! - `valid` is `"1"` (valid) or `"0"`; only `"1"` is documented \[C\].
//! - The optional `dataIndex` and `remark` are not sent.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::decimal::Fixed;
use super::uscc::Uscc;

/// The wire format of `statDate` and `uploadDate`.
pub const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Which statistic a record carries (`statType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatType {
    /// `0`: one ledger interval (15 min, relaxable to 30 min or 1 h).
    Realtime,
    /// `1`: a local calendar day.
    Day,
    /// `2`: a local calendar month.
    Month,
    /// `3`: a local calendar year.
    Year,
}

impl StatType {
    /// Every statistic type, in `statType` order.
    pub const ALL: [StatType; 4] = [
        StatType::Realtime,
        StatType::Day,
        StatType::Month,
        StatType::Year,
    ];

    /// The `statType` sent: `"0"` to `"3"`.
    pub fn code(self) -> &'static str {
        match self {
            StatType::Realtime => "0",
            StatType::Day => "1",
            StatType::Month => "2",
            StatType::Year => "3",
        }
    }

    /// The statistic type of a `statType` code, `"0"` to `"3"`.
    pub fn from_code(code: &str) -> Option<StatType> {
        StatType::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            StatType::Realtime => "realtime",
            StatType::Day => "day",
            StatType::Month => "month",
            StatType::Year => "year",
        }
    }
}

/// The local wall-clock time of `ms` (UTC milliseconds) in `tz`.
pub fn local_datetime(tz: Tz, ms: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).naive_local())
}

pub use crate::clock::local_midnight;

/// A day, month or year of the platform's calendar: `[start_ms, end_ms)` in UTC milliseconds,
/// and its `statDate` (local midnight of its first day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatPeriod {
    /// Day, month or year.
    pub stat_type: StatType,
    /// `statDate`: the local start.
    pub stat_date: NaiveDateTime,
    /// First instant, inclusive.
    pub start_ms: i64,
    /// End, exclusive: the next period's start.
    pub end_ms: i64,
}

impl StatPeriod {
    /// The period of `stat_type` that holds the instant `ts_ms` in `tz`; `None` for
    /// [`StatType::Realtime`] (an interval is its own period) and outside chrono's range.
    pub fn containing(stat_type: StatType, tz: Tz, ts_ms: i64) -> Option<StatPeriod> {
        let day = local_datetime(tz, ts_ms)?.date();
        let (first, next) = match stat_type {
            StatType::Realtime => return None,
            StatType::Day => (day, day.succ_opt()?),
            StatType::Month => {
                let first = day.with_day(1)?;
                (first, first.checked_add_months(Months::new(1))?)
            }
            StatType::Year => {
                let first = NaiveDate::from_ymd_opt(day.year(), 1, 1)?;
                (first, first.checked_add_months(Months::new(12))?)
            }
        };
        Some(StatPeriod {
            stat_type,
            stat_date: first.and_hms_opt(0, 0, 0)?,
            start_ms: local_midnight(tz, first)?,
            end_ms: local_midnight(tz, next)?,
        })
    }
}

/// What identifies a record at the platform: the same key is the same figure, so a resend
/// carries the key it had the first time (docs/platform.md §1.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// The enterprise's unified social credit code.
    pub enterprise_code: Uscc,
    /// The data-item code registered with the platform.
    pub data_code: String,
    /// Which statistic.
    pub stat_type: StatType,
    /// The local start of the interval, day, month or year.
    pub stat_date: NaiveDateTime,
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.enterprise_code,
            self.data_code,
            self.stat_type.code(),
            self.stat_date.format(DATE_FORMAT)
        )
    }
}

/// One figure for the platform: a data item's interval, day, month or year total.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its identity at the platform.
    pub key: RecordKey,
    /// The ledger meter it comes from (for logs; not sent).
    pub meter: String,
    /// The UTC span it covers, `[start_ms, end_ms)` (not sent).
    pub span_ms: (i64, i64),
    /// `dataValue`: the consumption (or output) in the meter's unit.
    pub value: Fixed,
    /// `convertRation`: the standard-coal factor of the item.
    pub convert_ratio: f64,
    /// `valid`: whether the figure passed the completeness rule.
    pub valid: bool,
    /// `scope`, as registered for the item.
    pub scope: String,
    /// `inputType`, as registered for the item.
    pub input_type: String,
}

/// The dictionary and registration versions the platform returns from `checkVersion`; every
/// upload carries them (docs/platform.md §1.2, step 4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Versions {
    /// `regVersion`.
    pub reg_version: String,
    /// `dicVersion`.
    pub dic_version: String,
}

/// The JSON body of one `dataEnterpriseEnergy` upload, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// 18-character unified social credit code.
    pub enterprise_code: String,
    /// From `checkVersion`.
    pub reg_version: String,
    /// From `checkVersion`.
    pub dic_version: String,
    /// The registered data-item code.
    pub data_code: String,
    /// The figure, as fixed-point decimal text.
    pub data_value: String,
    /// The standard-coal factor, shortest decimal text (`"0.1229"`, `"1"`).
    pub convert_ration: String,
    /// `"1"` valid, `"0"` not.
    pub valid: String,
    /// As registered.
    pub scope: String,
    /// As registered.
    pub input_type: String,
    /// `"0"` real-time, `"1"` day, `"2"` month, `"3"` year.
    pub stat_type: String,
    /// Local start of the period, `yyyy-MM-dd HH:mm:ss`.
    pub stat_date: String,
    /// Local time of this upload, `yyyy-MM-dd HH:mm:ss`.
    pub upload_date: String,
}

impl Record {
    /// The body that uploads this record at local time `uploaded`.
    pub fn payload(&self, versions: &Versions, uploaded: NaiveDateTime) -> Payload {
        Payload {
            enterprise_code: self.key.enterprise_code.to_string(),
            reg_version: versions.reg_version.clone(),
            dic_version: versions.dic_version.clone(),
            data_code: self.key.data_code.clone(),
            data_value: self.value.to_string(),
            convert_ration: format!("{}", self.convert_ratio),
            valid: if self.valid { "1" } else { "0" }.to_owned(),
            scope: self.scope.clone(),
            input_type: self.input_type.clone(),
            stat_type: self.key.stat_type.code().to_owned(),
            stat_date: self.key.stat_date.format(DATE_FORMAT).to_string(),
            upload_date: uploaded.format(DATE_FORMAT).to_string(),
        }
    }
}

/// How a [`Record`] is kept in the outbox until the platform has it: every field of the
/// record and nothing that only the upload knows (versions, `uploadDate`), so the same record
/// always stores as the same bytes and a resend carries what the first attempt carried.
///
/// Field order is fixed by the struct, numbers are exact (`dataValue` as decimal text,
/// `convertRation` as the shortest `f64` text that reads back the same).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    enterprise_code: String,
    data_code: String,
    stat_type: String,
    stat_date: String,
    data_value: String,
    convert_ration: f64,
    valid: bool,
    scope: String,
    input_type: String,
    meter: String,
    start_ms: i64,
    end_ms: i64,
}

/// Why stored bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored energy-platform record: {0}")]
pub struct StoredRecordError(pub String);

impl Record {
    /// The stored form (JSON bytes) described at [`Record::from_stored`].
    pub fn to_stored(&self) -> Vec<u8> {
        let stored = Stored {
            enterprise_code: self.key.enterprise_code.to_string(),
            data_code: self.key.data_code.clone(),
            stat_type: self.key.stat_type.code().to_owned(),
            stat_date: self.key.stat_date.format(DATE_FORMAT).to_string(),
            data_value: self.value.to_string(),
            convert_ration: self.convert_ratio,
            valid: self.valid,
            scope: self.scope.clone(),
            input_type: self.input_type.clone(),
            meter: self.meter.clone(),
            start_ms: self.span_ms.0,
            end_ms: self.span_ms.1,
        };
        // A struct of strings, numbers and booleans always serialises.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Reads back what [`Record::to_stored`] wrote: a JSON object with the record's fields,
    /// named as on the wire (`enterpriseCode`, …, `convertRation`) plus `meter`, `startMs` and
    /// `endMs`.
    ///
    /// # Errors
    /// [`StoredRecordError`] naming the field that is missing or wrong.
    pub fn from_stored(bytes: &[u8]) -> Result<Record, StoredRecordError> {
        let s: Stored =
            serde_json::from_slice(bytes).map_err(|e| StoredRecordError(e.to_string()))?;
        let bad = |field: &str, value: &str| StoredRecordError(format!("`{field}` is `{value}`"));
        Ok(Record {
            key: RecordKey {
                enterprise_code: Uscc::parse(&s.enterprise_code)
                    .map_err(|_| bad("enterpriseCode", &s.enterprise_code))?,
                stat_type: StatType::from_code(&s.stat_type)
                    .ok_or_else(|| bad("statType", &s.stat_type))?,
                stat_date: NaiveDateTime::parse_from_str(&s.stat_date, DATE_FORMAT)
                    .map_err(|_| bad("statDate", &s.stat_date))?,
                data_code: s.data_code,
            },
            value: s
                .data_value
                .parse()
                .map_err(|_| bad("dataValue", &s.data_value))?,
            meter: s.meter,
            span_ms: (s.start_ms, s.end_ms),
            convert_ratio: s.convert_ration,
            valid: s.valid,
            scope: s.scope,
            input_type: s.input_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn stat_type_codes_follow_the_platform() {
        let codes: Vec<&str> = StatType::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, ["0", "1", "2", "3"]);
        let names: Vec<&str> = StatType::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["realtime", "day", "month", "year"]);
    }

    #[test]
    fn a_shanghai_day_runs_from_16_00_utc_to_16_00_utc() {
        let p = StatPeriod::containing(StatType::Day, SH, utc("2026-10-04T16:00:00Z")).unwrap();
        assert_eq!(
            p.stat_date.format(DATE_FORMAT).to_string(),
            "2026-10-05 00:00:00"
        );
        assert_eq!(p.start_ms, utc("2026-10-04T16:00:00Z"));
        assert_eq!(p.end_ms, utc("2026-10-05T16:00:00Z"));
        let before =
            StatPeriod::containing(StatType::Day, SH, utc("2026-10-04T15:59:59.999Z")).unwrap();
        assert_eq!(before.end_ms, p.start_ms);
        assert_eq!(
            before.stat_date.format(DATE_FORMAT).to_string(),
            "2026-10-04 00:00:00"
        );
    }

    #[test]
    fn months_and_years_start_at_local_midnight_of_their_first_day() {
        let m = StatPeriod::containing(StatType::Month, SH, utc("2024-02-29T15:59:00Z")).unwrap();
        assert_eq!(
            m.stat_date.format(DATE_FORMAT).to_string(),
            "2024-02-01 00:00:00"
        );
        assert_eq!(m.start_ms, utc("2024-01-31T16:00:00Z"));
        assert_eq!(m.end_ms, utc("2024-02-29T16:00:00Z"));
        let y = StatPeriod::containing(StatType::Year, SH, utc("2026-12-31T16:00:00Z")).unwrap();
        assert_eq!(
            y.stat_date.format(DATE_FORMAT).to_string(),
            "2027-01-01 00:00:00"
        );
        assert_eq!(y.start_ms, utc("2026-12-31T16:00:00Z"));
        assert!(StatPeriod::containing(StatType::Realtime, SH, 0).is_none());
    }

    #[test]
    fn a_skipped_midnight_starts_the_day_at_the_clock_change() {
        // Havana moves its clocks from 00:00 to 01:00 in spring (2026-03-08).
        let havana = chrono_tz::America::Havana;
        let date = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        assert_eq!(
            local_midnight(havana, date),
            Some(utc("2026-03-08T05:00:00Z"))
        );
    }

    #[test]
    fn a_stored_record_reads_back_equal_and_stores_as_the_same_bytes() {
        let record = Record {
            key: RecordKey {
                enterprise_code: Uscc::parse("91350100M000100Y43").unwrap(),
                data_code: "E001-0101-00".into(),
                stat_type: StatType::Month,
                stat_date: NaiveDate::from_ymd_opt(2026, 10, 1)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap(),
            },
            meter: "incomer".into(),
            span_ms: (utc("2026-09-30T16:00:00Z"), utc("2026-10-31T16:00:00Z")),
            value: "30325.440".parse().unwrap(),
            convert_ratio: 0.1229,
            valid: false,
            scope: "1".into(),
            input_type: "2".into(),
        };
        let bytes = record.to_stored();
        let back = Record::from_stored(&bytes).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.value.to_string(), "30325.440", "the places are kept");
        assert_eq!(back.to_stored(), bytes);
        let text = String::from_utf8(bytes).unwrap();
        let broken = text.replace("\"statType\":\"2\"", "\"statType\":\"9\"");
        let err = Record::from_stored(broken.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("`statType` is `9`"), "{err}");
        assert!(Record::from_stored(b"{}").is_err());
    }

    #[test]
    fn keys_show_every_part() {
        let key = RecordKey {
            enterprise_code: Uscc::parse("91350100M000100Y43").unwrap(),
            data_code: "00-00-0000023400-80".into(),
            stat_type: StatType::Day,
            stat_date: NaiveDate::from_ymd_opt(2026, 10, 5)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap(),
        };
        assert_eq!(
            key.to_string(),
            "91350100M000100Y43/00-00-0000023400-80/1/2026-10-05 00:00:00"
        );
    }
}
