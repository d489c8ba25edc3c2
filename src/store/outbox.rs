//! The outbox table: every MQTT message, stored before it is sent and deleted on its PUBACK
//!, plus the per-key `seq` high-water marks and the outbox counters.
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
/// The same type as `sink::mqtt::inflight::RowId`. Ids are per queue.
pub type RowId = i64;

/// An outbox queue: one per sink, each in its own table, so that one sink's backlog (or its
/// drop-oldest bound) never holds back or eats into another's.
pub type QueueId = u32;

/// The queue named `mqtt`, kept in the `outbox` table that every file had before queues
/// existed: a single-broker gateway upgraded in place keeps its backlog.
pub const DEFAULT_QUEUE: QueueId = 0;

/// The table holding `queue`'s rows. Names come from ids the store assigned, never from input.
pub(super) fn table(queue: QueueId) -> String {
    if queue == DEFAULT_QUEUE {
        "outbox".to_owned()
    } else {
        format!("outbox_{queue}")
    }
}

/// One message to store: what the MQTT sink will publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The queue (sink) it is for; see [`super::StoreHandle::queue`].
    pub queue: QueueId,
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

impl OutboxRow {
    /// Reads a row selected as `id, stream, key, seq, created_ms, payload`, the column order of
    /// every outbox table.
    ///
    /// # Errors
    /// A column missing or of another type.
    pub fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            stream: r.get(1)?,
            key: r.get(2)?,
            seq: r.get(3)?,
            created_ms: r.get(4)?,
            payload: r.get(5)?,
        })
    }
}

/// One queue's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSize {
    /// Messages waiting.
    pub rows: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// The outbox's size (all queues together) and lifetime counters.
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
    /// Failing writes, a full disk, state lost at open.
    pub health: super::StoreHealth,
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
    /// Rows and bytes of all queues together.
    pub(super) rows: u64,
    pub(super) bytes: u64,
    /// Each queue's share, by id; a queue exists once it is here.
    pub(super) queues: HashMap<QueueId, QueueSize>,
    /// Queue ids by name.
    pub(super) names: HashMap<String, QueueId>,
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
    /// Inside the full condition: the file system's room is below the headroom (see
    /// `space.rs`), and new rows replace the oldest.
    pub(super) full: bool,
    /// Rows dropped for room in the current full condition.
    pub(super) full_dropped: u64,
    /// Per queue, the first row the current write group stored (cleared with each group).
    pub(super) fresh: HashMap<QueueId, RowId>,
}

impl OutboxState {
    /// A copy without the seq map, which is the large part and is kept in the file too.
    pub(super) fn without_seqs(&self) -> Self {
        Self {
            queues: self.queues.clone(),
            names: self.names.clone(),
            seqs: HashMap::new(),
            fresh: HashMap::new(),
            ..*self
        }
    }
}

const META_ENQUEUED: &str = "outbox.enqueued_total";
const META_ACKED: &str = "outbox.acked_total";
const META_DROPPED: &str = "outbox.dropped_total";

/// Reads the outbox state from the file at open.
pub(super) fn load(conn: &Connection) -> rusqlite::Result<OutboxState> {
    let mut names = HashMap::new();
    let mut stmt = conn.prepare("SELECT name, id FROM outbox_queues")?;
    for row in stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, QueueId>(1)?))
    })? {
        let (name, id) = row?;
        names.insert(name, id);
    }
    let mut queues = HashMap::new();
    let (mut rows, mut bytes) = (0, 0);
    for &id in names.values() {
        let size = conn.query_row(
            &format!(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM {}",
                table(id)
            ),
            [],
            |r| {
                Ok(QueueSize {
                    rows: r.get(0)?,
                    bytes: r.get(1)?,
                })
            },
        )?;
        rows += size.rows;
        bytes += size.bytes;
        queues.insert(id, size);
    }
    let meta = |key: &str| -> rusqlite::Result<u64> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    };
    let seqs = load_seqs(conn)?;
    Ok(OutboxState {
        rows,
        bytes,
        queues,
        names,
        enqueued_total: meta(META_ENQUEUED)?,
        acked_total: meta(META_ACKED)?,
        dropped_total: meta(META_DROPPED)?,
        commits_total: 0,
        seqs,
        dropping: false,
        episode_dropped: 0,
        full: false,
        full_dropped: 0,
        fresh: HashMap::new(),
    })
}

/// Reads every key's next seq from the file.
pub(super) fn load_seqs(conn: &Connection) -> rusqlite::Result<HashMap<String, u64>> {
    let mut stmt = conn.prepare_cached("SELECT key, next FROM seqs")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
    rows.collect()
}

/// Reads every key's seq high-water mark from the file.
pub(super) fn load_reserved(conn: &Connection) -> rusqlite::Result<HashMap<String, u64>> {
    let mut stmt = conn.prepare_cached("SELECT key, reserved FROM seqs")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
    rows.collect()
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
        if !st.queues.contains_key(&m.queue) {
            return Err(OpError::Rejected(StoreError::UnknownQueue {
                path: path.to_path_buf(),
                queue: m.queue,
            }));
        }
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

    let mut ids = Vec::with_capacity(msgs.len());
    let mut bytes = 0u64;
    // The statement text of the last queue: a group's rows are nearly always for one queue.
    let mut text: Option<(QueueId, String)> = None;
    for m in msgs {
        let insert_sql = match &text {
            Some((queue, t)) if *queue == m.queue => t,
            _ => {
                let t = format!(
                    "INSERT INTO {} (stream, key, seq, created_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
                    table(m.queue)
                );
                &text.insert((m.queue, t)).1
            }
        };
        let mut insert = sql("prepare insert", conn.prepare_cached(insert_sql))?;
        sql(
            "insert into outbox",
            insert.execute(params![m.stream, m.key, m.seq, m.created_ms, m.payload]),
        )?;
        let id = conn.last_insert_rowid();
        ids.push(id);
        st.fresh.entry(m.queue).or_insert(id);
        bytes += m.payload.len() as u64;
        let size = st.queues.entry(m.queue).or_default();
        size.rows += 1;
        size.bytes += m.payload.len() as u64;
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
        match st.seqs.get_mut(key) {
            Some(seq) => *seq = n,
            None => {
                st.seqs.insert(key.to_owned(), n);
            }
        }
    }
    st.rows += ids.len() as u64;
    st.bytes += bytes;
    st.enqueued_total += ids.len() as u64;
    Ok(ids)
}

/// One cursor of [`StoreHandle::fetch_spans`](super::StoreHandle::fetch_spans): the rows with
/// `after < id <= until`, oldest first, at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The queue read.
    pub queue: QueueId,
    /// Rows above this id; `None` starts at the oldest row.
    pub after: Option<RowId>,
    /// Rows up to and including this id; `None` has no upper end.
    pub until: Option<RowId>,
    /// The most rows to return.
    pub limit: usize,
}

/// Up to `limit` rows of `queue` with id above `after`, oldest first.
pub(super) fn fetch(
    conn: &Connection,
    queue: QueueId,
    after: Option<RowId>,
    limit: usize,
) -> Result<Vec<OutboxRow>, OpError> {
    fetch_span(
        conn,
        Span {
            queue,
            after,
            until: None,
            limit,
        },
    )
}

/// The rows of one [`Span`], oldest first.
pub(super) fn fetch_span(conn: &Connection, span: Span) -> Result<Vec<OutboxRow>, OpError> {
    // No `LIMIT ?`: SQLite re-prepares a statement whenever a LIMIT parameter is bound again
    // (it may pick a plan by the value), which showed in every fetch of the replay profile. A
    // scan in rowid order yields rows one step at a time, so stopping after `limit` is as cheap.
    let mut stmt = sql(
        "prepare fetch",
        conn.prepare_cached(&format!(
            "SELECT id, stream, key, seq, created_ms, payload FROM {} \
             WHERE id > ?1 AND id <= ?2 ORDER BY id",
            table(span.queue)
        )),
    )?;
    let rows = sql(
        "fetch",
        stmt.query_map(
            params![span.after.unwrap_or(0), span.until.unwrap_or(RowId::MAX)],
            OutboxRow::from_sql,
        ),
    )?;
    // Sized up front: a replay fetches hundreds of rows at a time.
    let mut out = Vec::with_capacity(span.limit.min(4096));
    for row in rows.take(span.limit) {
        out.push(sql("fetch", row)?);
    }
    Ok(out)
}

/// Deletes the rows that exist among `ids` and returns how many did.
///
/// The ids are taken as runs of consecutive integers, each deleted with one range statement:
/// a run holds every id between its ends, so the range removes exactly the listed rows. A
/// replay acknowledges thousands of neighbouring rows per commit, and one `DELETE … RETURNING`
/// per row (each with its own statement journal) dominated the store thread.
pub(super) fn ack(
    conn: &Connection,
    st: &mut OutboxState,
    queue: QueueId,
    ids: &[RowId],
) -> Result<u64, OpError> {
    let Some(size) = st.queues.get_mut(&queue) else {
        return Ok(0);
    };
    let name = table(queue);
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut measure = sql(
        "prepare ack",
        conn.prepare_cached(&format!(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM {name} \
             WHERE id BETWEEN ?1 AND ?2"
        )),
    )?;
    let mut delete = sql(
        "prepare ack",
        conn.prepare_cached(&format!("DELETE FROM {name} WHERE id BETWEEN ?1 AND ?2")),
    )?;
    let mut deleted = 0u64;
    for (first, last) in runs(&ids) {
        // Unknown ids were acked before (a duplicate PUBACK) or dropped by the bound.
        let (rows, bytes): (u64, u64) = sql(
            "ack",
            measure.query_row(params![first, last], |r| Ok((r.get(0)?, r.get(1)?))),
        )?;
        if rows > 0 {
            sql("ack", delete.execute(params![first, last]))?;
            deleted += rows;
            st.bytes = st.bytes.saturating_sub(bytes);
            size.bytes = size.bytes.saturating_sub(bytes);
        }
    }
    size.rows = size.rows.saturating_sub(deleted);
    st.rows = st.rows.saturating_sub(deleted);
    st.acked_total += deleted;
    Ok(deleted)
}

/// The runs of consecutive integers in sorted, duplicate-free `ids`, as `(first, last)`.
fn runs(ids: &[RowId]) -> impl Iterator<Item = (RowId, RowId)> + '_ {
    let mut rest = ids;
    std::iter::from_fn(move || {
        let (&first, _) = rest.split_first()?;
        let len = rest
            .windows(2)
            .position(|w| w[1] != w[0].wrapping_add(1))
            .map_or(rest.len(), |i| i + 1);
        let last = rest[len - 1];
        rest = &rest[len..];
        Some((first, last))
    })
}

/// The newest row id of `queue`, if any.
pub(super) fn newest(conn: &Connection, queue: QueueId) -> Result<Option<RowId>, OpError> {
    sql(
        "newest",
        conn.prepare_cached(&format!("SELECT max(id) FROM {}", table(queue)))
            .and_then(|mut s| s.query_row([], |r| r.get(0))),
    )
}

/// The id of the queue called `name`, created (with its table) on first use.
pub(super) fn open_queue(
    conn: &Connection,
    st: &mut OutboxState,
    name: &str,
) -> Result<QueueId, OpError> {
    if let Some(&id) = st.names.get(name) {
        return Ok(id);
    }
    let id = st.queues.keys().max().map_or(DEFAULT_QUEUE, |m| m + 1);
    sql(
        "create a queue",
        conn.execute(
            "INSERT INTO outbox_queues (name, id) VALUES (?1, ?2)",
            params![name, id],
        ),
    )?;
    // AUTOINCREMENT for the same reason as `outbox`: a sink's fetch cursor must never see an
    // id reused.
    sql(
        "create a queue",
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                 id         INTEGER PRIMARY KEY AUTOINCREMENT,
                 stream     TEXT    NOT NULL,
                 key        TEXT    NOT NULL,
                 seq        INTEGER NOT NULL,
                 created_ms INTEGER NOT NULL,
                 payload    BLOB    NOT NULL
             );",
            table(id)
        )),
    )?;
    st.names.insert(name.to_owned(), id);
    st.queues.insert(id, QueueSize::default());
    Ok(id)
}

/// The counters plus the oldest row's age.
pub(super) fn stats(conn: &Connection, st: &OutboxState) -> Result<OutboxStats, OpError> {
    let mut oldest: Option<i64> = None;
    for &queue in st.queues.keys() {
        let first: Option<i64> = sql(
            "stats",
            conn.prepare_cached(&format!(
                "SELECT created_ms FROM {} ORDER BY id LIMIT 1",
                table(queue)
            ))
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional()),
        )?;
        oldest = match (oldest, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(OutboxStats {
        rows: st.rows,
        bytes: st.bytes,
        oldest_created_ms: oldest,
        dropped_total: st.dropped_total,
        enqueued_total: st.enqueued_total,
        acked_total: st.acked_total,
        commits_total: st.commits_total,
        health: super::StoreHealth::default(),
    })
}

/// Deletes each queue's oldest rows until its payload bytes are within `max_bytes`; returns
/// how many.
pub(super) fn enforce_bound(
    conn: &Connection,
    st: &mut OutboxState,
    max_bytes: u64,
) -> Result<u64, OpError> {
    if st.bytes <= max_bytes {
        return Ok(0);
    }
    let over: Vec<QueueId> = st
        .queues
        .iter()
        .filter(|(_, size)| size.bytes > max_bytes)
        .map(|(&q, _)| q)
        .collect();
    let mut dropped = 0;
    for queue in over {
        dropped += drop_oldest(conn, st, queue, max_bytes, None)?;
    }
    Ok(dropped)
}

/// Deletes the oldest rows worth at least `bytes` of payload, from the largest queue first;
/// returns how many. Each is counted in `dropped_total`, as under the byte bound. With
/// `spare_fresh`, the rows the current group stored are kept: they found room, and dropping
/// them would only lose what the broker could take next (while the disk is full with little
/// waiting, every new message would go).
pub(super) fn drop_bytes(
    conn: &Connection,
    st: &mut OutboxState,
    mut bytes: u64,
    spare_fresh: bool,
) -> Result<u64, OpError> {
    let mut dropped = 0;
    // Bounded: each pass empties a queue or frees what is asked.
    for _ in 0..st.queues.len() {
        let Some((&queue, size)) = st.queues.iter().max_by_key(|(_, s)| s.bytes) else {
            break;
        };
        if bytes == 0 || size.bytes == 0 {
            break;
        }
        let had = size.bytes;
        let keep = had.saturating_sub(bytes);
        let below = spare_fresh.then(|| st.fresh.get(&queue).copied()).flatten();
        dropped += drop_oldest(conn, st, queue, keep, below)?;
        let freed = had - st.queues.get(&queue).map_or(0, |s| s.bytes);
        bytes = bytes.saturating_sub(freed);
    }
    Ok(dropped)
}

/// The largest queue's payload bytes: the bound applies to each queue.
pub(super) fn largest_queue_bytes(st: &OutboxState) -> u64 {
    st.queues.values().map(|s| s.bytes).max().unwrap_or(0)
}

/// Deletes `queue`'s oldest rows (only those below `below`, if given) until its payload is
/// within `max_bytes` or no such row is left; returns how many.
fn drop_oldest(
    conn: &Connection,
    st: &mut OutboxState,
    queue: QueueId,
    max_bytes: u64,
    below: Option<RowId>,
) -> Result<u64, OpError> {
    let Some(size) = st.queues.get_mut(&queue) else {
        return Ok(0);
    };
    let excess = size.bytes - max_bytes;
    let name = table(queue);
    let mut freed = 0u64;
    let mut count = 0u64;
    let mut last = None;
    {
        let mut stmt = sql(
            "prepare drop scan",
            conn.prepare_cached(&format!(
                "SELECT id, length(payload) FROM {name} WHERE id < ?1 ORDER BY id"
            )),
        )?;
        let mut rows = sql("drop scan", stmt.query([below.unwrap_or(RowId::MAX)]))?;
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
            conn.execute(&format!("DELETE FROM {name} WHERE id <= ?1"), [last]),
        )?;
    }
    size.rows = size.rows.saturating_sub(count);
    size.bytes = size.bytes.saturating_sub(freed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_sorted_ids_where_they_stop_being_consecutive() {
        let ids = [1, 2, 3, 7, 9, 10, RowId::MAX - 1, RowId::MAX];
        assert_eq!(
            runs(&ids).collect::<Vec<_>>(),
            [(1, 3), (7, 7), (9, 10), (RowId::MAX - 1, RowId::MAX)]
        );
        assert_eq!(runs(&[]).count(), 0);
        assert_eq!(runs(&[5]).collect::<Vec<_>>(), [(5, 5)]);
    }
}
