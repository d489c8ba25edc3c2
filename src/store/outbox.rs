//! The outbox table: every MQTT message, stored before it is sent and deleted on its PUBACK
//! (STYLE.md C7), plus the per-key `seq` high-water marks and the outbox counters.
//!
//! These functions run on the store thread inside the group's transaction and update an
//! `OutboxState` copy that the thread keeps only if the transaction commits, so memory and
//! file never disagree.
//!
//! Invariants:
//! - row ids strictly increase and are never reused (`AUTOINCREMENT`), even after the outbox
//!   empties or the process restarts, so a fetch cursor (`after`) never skips a new row;
//! - a fetch returns rows in id order, which is enqueue order;
//! - a message's `seq` is at least the key's persisted `next`, and `next` moves past it in the
//!   same transaction as the insert: a seq that was ever stored is never accepted again;
//! - rows leave only through an ack or the drop-oldest bound, and every
//!   dropped row is counted in `dropped_total`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// An outbox row id: increasing in enqueue order, never reused.
///
/// The same type as `sink::mqtt::inflight::RowId`.
pub type RowId = i64;

/// One message to store: what the MQTT sink will publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Topic below the prefix, e.g. `telemetry/meter-1`.
    pub stream: String,
    /// The sequence key, usually the device: `seq` increases per key.
    pub key: String,
    /// The message's sequence number; must not be below [`super::StoreHandle::next_seq`].
    pub seq: u64,
    /// When the message was made, ms since the Unix epoch.
    pub created_ms: i64,
    /// Opaque stored form, rendered to wire bytes at send time (e.g. [`super::record`]).
    pub payload: Vec<u8>,
}

/// One stored message, as [`StoreHandle::fetch`](super::StoreHandle::fetch) returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id: the outbox order.
    pub id: RowId,
    /// Topic below the prefix.
    pub stream: String,
    /// The sequence key.
    pub key: String,
    /// The message's sequence number.
    pub seq: u64,
    /// When the message was made, ms since the Unix epoch.
    pub created_ms: i64,
    /// The stored form.
    pub payload: Vec<u8>,
}

/// The outbox's size and lifetime counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Messages waiting.
    pub rows: u64,
    /// Their payload bytes (what `max_bytes` bounds).
    pub bytes: u64,
    /// `created_ms` of the oldest waiting message.
    pub oldest_created_ms: Option<i64>,
    /// Messages dropped by the size bound, ever (persisted).
    pub dropped_total: u64,
    /// Messages stored, ever (persisted).
    pub enqueued_total: u64,
    /// Messages deleted by an ack, ever (persisted).
    pub acked_total: u64,
    /// Write transactions committed since the store opened: each is one fsync of the WAL.
    pub commits_total: u64,
}

/// Why one outbox operation failed.
#[derive(Debug)]
pub(super) enum OpError {
    /// This request alone is refused; nothing was written for it.
    Rejected(StoreError),
    /// SQLite failed; the whole group's transaction must roll back.
    Sql(&'static str, rusqlite::Error),
}

pub(super) fn sql<T>(what: &'static str, r: rusqlite::Result<T>) -> Result<T, OpError> {
    r.map_err(|e| OpError::Sql(what, e))
}

/// The outbox as the store thread remembers it between transactions.
#[derive(Debug, Clone, Default)]
pub(super) struct OutboxState {
    pub(super) rows: u64,
    pub(super) bytes: u64,
    pub(super) enqueued_total: u64,
    pub(super) acked_total: u64,
    pub(super) dropped_total: u64,
    /// Write commits since open (not persisted).
    pub(super) commits_total: u64,
    /// Next acceptable seq per key.
    pub(super) seqs: HashMap<String, u64>,
    /// Inside a drop episode: over the bound, and not yet back under 90 % of it.
    pub(super) dropping: bool,
    /// Rows dropped in the current episode.
    pub(super) episode_dropped: u64,
}

const META_ENQUEUED: &str = "outbox.enqueued_total";
const META_ACKED: &str = "outbox.acked_total";
const META_DROPPED: &str = "outbox.dropped_total";

/// Reads the outbox state from the file at open.
pub(super) fn load(conn: &Connection) -> rusqlite::Result<OutboxState> {
    let (rows, bytes): (u64, u64) = conn.query_row(
        "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let meta = |key: &str| -> rusqlite::Result<u64> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    };
    let mut seqs = HashMap::new();
    let mut stmt = conn.prepare("SELECT key, next FROM seqs")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))? {
        let (key, next) = row?;
        seqs.insert(key, next);
    }
    Ok(OutboxState {
        rows,
        bytes,
        enqueued_total: meta(META_ENQUEUED)?,
        acked_total: meta(META_ACKED)?,
        dropped_total: meta(META_DROPPED)?,
        commits_total: 0,
        seqs,
        dropping: false,
        episode_dropped: 0,
    })
}

/// Inserts `msgs` in order, moving each key's `next` past its seqs; all or nothing.
pub(super) fn enqueue(
    conn: &Connection,
    st: &mut OutboxState,
    msgs: &[OutboxMessage],
    path: &std::path::Path,
) -> Result<Vec<RowId>, OpError> {
    // Validate the whole request first, so a refusal writes nothing.
    let mut next: HashMap<&str, u64> = HashMap::new();
    for m in msgs {
        let floor = next
            .get(m.key.as_str())
            .or_else(|| st.seqs.get(&m.key))
            .copied()
            .unwrap_or(0);
        if m.seq < floor {
            return Err(OpError::Rejected(StoreError::SeqReused {
                path: path.to_path_buf(),
                key: m.key.clone(),
                seq: m.seq,
                next: floor,
            }));
        }
        // SQLite integers are i64, and `next` is seq + 1.
        if m.seq >= i64::MAX as u64 {
            return Err(OpError::Rejected(StoreError::SeqOutOfRange {
                path: path.to_path_buf(),
                key: m.key.clone(),
                seq: m.seq,
            }));
        }
        next.insert(m.key.as_str(), m.seq + 1);
    }

    let mut insert = sql(
        "prepare insert",
        conn.prepare_cached(
            "INSERT INTO outbox (stream, key, seq, created_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
        ),
    )?;
    let mut ids = Vec::with_capacity(msgs.len());
    let mut bytes = 0u64;
    for m in msgs {
        sql(
            "insert into outbox",
            insert.execute(params![m.stream, m.key, m.seq, m.created_ms, m.payload]),
        )?;
        ids.push(conn.last_insert_rowid());
        bytes += m.payload.len() as u64;
    }
    let mut upsert = sql(
        "prepare seq update",
        conn.prepare_cached(
            "INSERT INTO seqs (key, next) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET next = max(next, excluded.next)",
        ),
    )?;
    for (key, n) in &next {
        sql("update seqs", upsert.execute(params![key, n]))?;
    }
    for (key, n) in next {
        st.seqs.insert(key.to_owned(), n);
    }
    st.rows += ids.len() as u64;
    st.bytes += bytes;
    st.enqueued_total += ids.len() as u64;
    Ok(ids)
}

/// Up to `limit` rows with id above `after`, oldest first.
pub(super) fn fetch(
    conn: &Connection,
    after: Option<RowId>,
    limit: usize,
) -> Result<Vec<OutboxRow>, OpError> {
    let mut stmt = sql(
        "prepare fetch",
        conn.prepare_cached(
            "SELECT id, stream, key, seq, created_ms, payload FROM outbox \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        ),
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = sql(
        "fetch",
        stmt.query_map(params![after.unwrap_or(0), limit], |r| {
            Ok(OutboxRow {
                id: r.get(0)?,
                stream: r.get(1)?,
                key: r.get(2)?,
                seq: r.get(3)?,
                created_ms: r.get(4)?,
                payload: r.get(5)?,
            })
        }),
    )?;
    sql("fetch", rows.collect())
}

/// Deletes the rows that exist among `ids` and returns how many did.
pub(super) fn ack(conn: &Connection, st: &mut OutboxState, ids: &[RowId]) -> Result<u64, OpError> {
    let mut stmt = sql(
        "prepare ack",
        conn.prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING length(payload)"),
    )?;
    let mut deleted = 0u64;
    for id in ids {
        // An unknown id was acked before (a duplicate PUBACK) or dropped by the bound.
        if let Some(len) = sql(
            "ack",
            stmt.query_row([id], |r| r.get::<_, u64>(0)).optional(),
        )? {
            deleted += 1;
            st.bytes = st.bytes.saturating_sub(len);
        }
    }
    st.rows = st.rows.saturating_sub(deleted);
    st.acked_total += deleted;
    Ok(deleted)
}

/// The newest row id, if any.
pub(super) fn newest(conn: &Connection) -> Result<Option<RowId>, OpError> {
    sql(
        "newest",
        conn.query_row("SELECT max(id) FROM outbox", [], |r| r.get(0)),
    )
}

/// The counters plus the oldest row's age.
pub(super) fn stats(conn: &Connection, st: &OutboxState) -> Result<OutboxStats, OpError> {
    let oldest = sql(
        "stats",
        conn.query_row(
            "SELECT created_ms FROM outbox ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional(),
    )?;
    Ok(OutboxStats {
        rows: st.rows,
        bytes: st.bytes,
        oldest_created_ms: oldest,
        dropped_total: st.dropped_total,
        enqueued_total: st.enqueued_total,
        acked_total: st.acked_total,
        commits_total: st.commits_total,
    })
}

/// Deletes the oldest rows until the payload bytes are within `max_bytes`; returns how many.
pub(super) fn enforce_bound(
    conn: &Connection,
    st: &mut OutboxState,
    max_bytes: u64,
) -> Result<u64, OpError> {
    if st.bytes <= max_bytes {
        return Ok(0);
    }
    let excess = st.bytes - max_bytes;
    let mut freed = 0u64;
    let mut count = 0u64;
    let mut last = None;
    {
        let mut stmt = sql(
            "prepare drop scan",
            conn.prepare_cached("SELECT id, length(payload) FROM outbox ORDER BY id"),
        )?;
        let mut rows = sql("drop scan", stmt.query([]))?;
        while let Some(row) = sql("drop scan", rows.next())? {
            let id: RowId = sql("drop scan", row.get(0))?;
            let len: u64 = sql("drop scan", row.get(1))?;
            freed += len;
            count += 1;
            last = Some(id);
            if freed >= excess {
                break;
            }
        }
    }
    if let Some(last) = last {
        sql(
            "drop oldest",
            conn.execute("DELETE FROM outbox WHERE id <= ?1", [last]),
        )?;
    }
    st.rows = st.rows.saturating_sub(count);
    st.bytes = st.bytes.saturating_sub(freed);
    st.dropped_total += count;
    Ok(count)
}

/// Writes the counters that changed since `before`.
pub(super) fn save_counters(
    conn: &Connection,
    before: &OutboxState,
    st: &OutboxState,
) -> Result<(), OpError> {
    let mut stmt = sql(
        "prepare counters",
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        ),
    )?;
    for (key, old, new) in [
        (META_ENQUEUED, before.enqueued_total, st.enqueued_total),
        (META_ACKED, before.acked_total, st.acked_total),
        (META_DROPPED, before.dropped_total, st.dropped_total),
    ] {
        if old != new {
            sql("save counters", stmt.execute(params![key, new]))?;
        }
    }
    Ok(())
}
