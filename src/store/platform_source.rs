//! Reading the ledger for the energy-platform records: the I/O behind the pure
//! [`crate::platform`], kept here with the rest of the state file's SQLite access.
//!
//! Both the daemon (closing a day, a month, a year; the `upload` command) and `plantwatch
//! upload` read the `energy_intervals` table through their own read-only SQLite connection to
//! the state file, on a blocking thread: the file is in WAL mode, so this reads beside the
//! store thread's writes without stopping them, and sees every interval whose save was
//! committed before the read began (save the intervals, await it, then close). Rows are
//! streamed meter by meter in time order ([`crate::store::ledger::for_each`]) into a
//! [`crate::platform::build::Fold`] or a [`crate::platform::live::Closing`], so a month or a year is never held in
//! memory; only the records made are.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike as _, Months, NaiveDate};

use crate::platform::build::{Fold, Select};
use crate::platform::live::{Closing, Due, Recorder};
use crate::platform::record::{Record, StatType};
use crate::platform::spec::Spec;
use crate::process::counter::IntervalQuality;

/// Most pieces of work [`close_due`] does in one call, so a long catch-up after an outage is
/// spread over several calls instead of holding the caller (the core) for long.
pub const MAX_DUE_PER_CALL: usize = 8;

/// Why records could not be made from the ledger.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The state file could not be opened for reading (the message names it).
    #[error("energy platform: {0}")]
    Open(String),
    /// Reading the ledger table failed.
    #[error("energy platform: cannot read the ledger in {}", path.display())]
    Read {
        /// The state file.
        path: PathBuf,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },
    /// A date has no local start in the platform's zone (out of chrono's range).
    #[error("energy platform: {date} has no start in {tz}")]
    Date {
        /// The date.
        date: NaiveDate,
        /// The platform's zone.
        tz: chrono_tz::Tz,
    },
    /// `to` is before `from`.
    #[error("energy platform: the range ends ({to}) before it begins ({from})")]
    Reversed {
        /// First day.
        from: NaiveDate,
        /// Last day.
        to: NaiveDate,
    },
    /// The reading thread died.
    #[error("energy platform: the ledger reader stopped: {0}")]
    Task(String),
}

/// Something that takes ledger rows as [`crate::store::ledger::for_each`] hands them out.
trait Rows: Send + 'static {
    fn row(&mut self, meter: &str, span: (i64, i64), delta: f64, quality: IntervalQuality);
}

impl Rows for Fold<Arc<Spec>> {
    fn row(&mut self, meter: &str, span: (i64, i64), delta: f64, quality: IntervalQuality) {
        self.push(meter, span, delta, quality);
    }
}

impl Rows for Closing {
    fn row(&mut self, meter: &str, span: (i64, i64), delta: f64, quality: IntervalQuality) {
        self.push(meter, span, delta, quality);
    }
}

/// Streams the intervals of `meters` starting in `[from_ms, to_ms)` from the state file at
/// `path` into `sink`, on a blocking thread.
async fn stream<S: Rows>(
    path: &Path,
    meters: Vec<String>,
    (from_ms, to_ms): (i64, i64),
    mut sink: S,
) -> Result<S, SourceError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let conn = crate::store::alarms::offline::open(&path, false).map_err(SourceError::Open)?;
        let names: Vec<&str> = meters.iter().map(String::as_str).collect();
        crate::store::ledger::for_each(
            &conn,
            &names,
            from_ms,
            to_ms,
            |meter, span, delta, quality, _tou| sink.row(meter, span, delta, quality),
        )
        .map_err(|source| SourceError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(sink)
    })
    .await
    .map_err(|e| SourceError::Task(e.to_string()))?
}

/// Does up to [`MAX_DUE_PER_CALL`] pieces of `recorder`'s due work at `now_ms`, reading the
/// ledger in the state file at `state`; returns the records and the [`Due`]s done (to log
/// [`Due::skipped_from`]). Call it after each [`Recorder::record`] and on the core's tick;
/// enqueue the records, then save [`Recorder::state`].
///
/// # Errors
/// [`SourceError`] when the ledger cannot be read for the first piece of work. A failure
/// after some work was done returns that work's records instead (the failed piece stays due
/// and fails again, with its error, on the next call). Nothing is marked done that is not
/// returned.
pub async fn close_due(
    recorder: &mut Recorder,
    state: &Path,
    now_ms: i64,
) -> Result<(Vec<Record>, Vec<Due>), SourceError> {
    let mut records = Vec::new();
    let mut done = Vec::new();
    for _ in 0..MAX_DUE_PER_CALL {
        let Some(due) = recorder.due(now_ms) else {
            break;
        };
        let closing = recorder.begin(&due);
        let closing = match stream(state, recorder.meters(), due.range_ms(), closing).await {
            Ok(c) => c,
            // Work done so far is already marked in the recorder: hand its records back
            // rather than dropping them with the error.
            Err(_) if !done.is_empty() => break,
            Err(e) => return Err(e),
        };
        records.extend(recorder.finish(closing));
        done.push(due);
    }
    Ok((records, done))
}

/// The records of `platform`'s items whose statDate falls in `from..=to` (local dates),
/// of `stat_types` (empty: every type each item produces), that have ended by `now_ms`,
/// built from the ledger in the state file at `state`: what `plantwatch upload` sends and
/// what the `upload` command enqueues. Day and month records are built from whole days and
/// months (a month that starts in the range is read to its end), so they equal the records
/// the daemon sent live from the same ledger.
///
/// # Errors
/// [`SourceError`]: a reversed range, a date outside the zone's range, or the ledger cannot
/// be read.
pub async fn records_for_range(
    state: &Path,
    platform: &Spec,
    from: NaiveDate,
    to: NaiveDate,
    stat_types: &[StatType],
    now_ms: i64,
) -> Result<Vec<Record>, SourceError> {
    if to < from {
        return Err(SourceError::Reversed { from, to });
    }
    let tz = platform.timezone;
    // A date one past the range's end, or its month's or year's end, may leave chrono's range.
    let midnight = |date: Option<NaiveDate>| {
        date.and_then(|d| crate::clock::local_midnight(tz, d))
            .ok_or(SourceError::Date { date: to, tz })
    };
    let keep_from = midnight(Some(from)).map_err(|_| SourceError::Date { date: from, tz })?;
    let keep_to = midnight(to.succ_opt())?;
    let wants = |t: StatType| stat_types.is_empty() || stat_types.contains(&t);
    // Periods that start in the range are read to their end.
    let mut read_to = keep_to;
    if wants(StatType::Month) {
        let next_month = to
            .with_day(1)
            .and_then(|d| d.checked_add_months(Months::new(1)));
        read_to = read_to.max(midnight(next_month)?);
    }
    if wants(StatType::Year) {
        read_to = read_to.max(midnight(NaiveDate::from_ymd_opt(to.year() + 1, 1, 1))?);
    }
    let platform = Arc::new(platform.clone());
    let mut meters: Vec<String> = platform.items.iter().map(|i| i.meter.clone()).collect();
    meters.sort_unstable();
    meters.dedup();
    let fold = Fold::new(
        platform,
        Select::Range {
            from_ms: keep_from,
            to_ms: keep_to,
            stat_types: stat_types.to_vec(),
            now_ms,
        },
    );
    let fold = stream(state, meters, (keep_from, read_to), fold).await?;
    Ok(fold.finish())
}
