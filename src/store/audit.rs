//! The audit trail (every downlink command, carried out or refused) and the command ids seen
//! within the replay window.
//!
//! Each `audit` row holds its canonical bytes (`body`: JSON with the row's `seq` first, as
//! written once and never re-serialized) and `hash` = SHA-256(previous row's hash ‖ body),
//! the first row chaining from 32 zero bytes. Editing a row's body breaks its hash; deleting a
//! row leaves a gap in `seq`; deleting the newest rows is caught against `meta`'s
//! `audit.last_seq` (and, against someone who can rewrite the whole file, by the copy
//! published on `{prefix}/audit`). [`verify`] names the first row that breaks the chain.
//!
//! `command_ids` remembers which (key, id) pairs were accepted and when they were signed, so
//! a restart within the replay window still refuses a replayed command; rows older than the
//! window are pruned as new ones arrive.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::outbox::{OpError, sql};

/// The `meta` key holding the newest audit row's seq.
const META_LAST_SEQ: &str = "audit.last_seq";

/// One command as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Gateway time it was handled, ms since the Unix epoch.
    pub ts_ms: i64,
    /// Where it came from: `mqtt:{sink}`, or `local` (`plantwatch alarms`).
    pub source: String,
    /// The command name (escaped and cut: it is the peer's topic segment).
    pub command: String,
    /// The key id it was signed with; `None` when unsigned (or the envelope was unreadable).
    pub key: Option<String>,
    /// The command's `id`, as JSON text (cut), when one could be read.
    pub id: Option<String>,
    /// `done`, `failed` (authorized, but the command itself was refused; a write the device
    /// serves another value for), `refused`, `intent` (a write about to be sent; its outcome
    /// follows in a later row), `rejected` (a write the device refused with exception 01–03:
    /// nothing written), `unknown` (a write with no answer, a broken link or a device
    /// failure: it may have landed), `interrupted` (the daemon stopped before the device
    /// answered) or `dropped` (the command queue was full: never looked at, never answered).
    pub outcome: String,
    /// Why it was refused: `bad_signature`, `unknown_key`, `role`, `stale`, `future`,
    /// `replayed`, `unsigned`, `malformed`, …; for a write's `rejected`, `unknown` or
    /// `failed`, what happened (`exception_02`, `timeout`, `link`, `not_verified`).
    pub reason: Option<String>,
    /// The reply sent, cut.
    pub reply: String,
    /// Size of the payload as it arrived.
    pub payload_bytes: u64,
    /// SHA-256 of the payload as it arrived, hex: what was sent, even when it was garbage.
    pub payload_sha256: String,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Its place in the chain, from 1.
    pub seq: i64,
    /// The canonical bytes (JSON) the hash covers.
    pub body: String,
    /// SHA-256(previous hash ‖ body), hex.
    pub hash: String,
}

impl AuditRow {
    /// The message published on `{prefix}/audit`: the row with its hash and the previous one,
    /// so that the platform can check the chain itself.
    pub fn message(&self, prev: &str) -> Vec<u8> {
        let body = serde_json::value::RawValue::from_string(self.body.clone()).ok();
        serde_json::json!({"v": 1, "seq": self.seq, "prev": prev, "hash": self.hash, "row": body})
            .to_string()
            .into_bytes()
    }
}

/// A (key, id) accepted within the replay window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeenId {
    /// The key id.
    pub key: String,
    /// The command id, as JSON text.
    pub id: String,
    /// The command's `ts`, ms.
    pub ts_ms: i64,
}

#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    #[serde(flatten)]
    entry: &'a AuditEntry,
}

/// The hash of the empty chain, hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _infallible = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// SHA-256(prev ‖ body) with `prev` given in hex (a malformed one hashes as its text).
fn chain_hash(prev_hex: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(decode_hex(prev_hex).unwrap_or_else(|| prev_hex.as_bytes().to_vec()));
    h.update(body.as_bytes());
    hex(&h.finalize())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Appends `entry` to the chain and, for an accepted signed command, remembers its id (and
/// forgets ids signed before `prune_before_ms`). Returns the row and the previous hash.
pub(super) fn append(
    conn: &Connection,
    entry: &AuditEntry,
    seen: Option<&SeenId>,
    prune_before_ms: i64,
) -> Result<(AuditRow, String), OpError> {
    if let Some(s) = seen {
        sql(
            "forget old command ids",
            conn.prepare_cached("DELETE FROM command_ids WHERE ts_ms < ?1")
                .and_then(|mut st| st.execute(params![prune_before_ms])),
        )?;
        sql(
            "remember a command id",
            conn.prepare_cached(
                "INSERT INTO command_ids (key, id, ts_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key, id) DO UPDATE SET ts_ms = excluded.ts_ms",
            )
            .and_then(|mut st| st.execute(params![s.key, s.id, s.ts_ms])),
        )?;
    }
    let last: Option<(i64, String)> = sql(
        "read the audit chain's head",
        conn.prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional()),
    )?;
    let (seq, prev) = last.map_or((1, GENESIS.to_owned()), |(s, h)| (s + 1, h));
    let body = serde_json::to_string(&Canonical { seq, entry }).unwrap_or_default();
    let hash = chain_hash(&prev, &body);
    sql(
        "append to the audit trail",
        conn.prepare_cached("INSERT INTO audit (seq, body, hash) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![seq, body, hash])),
    )?;
    sql(
        "record the audit chain's length",
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut st| st.execute(params![META_LAST_SEQ, seq])),
    )?;
    Ok((AuditRow { seq, body, hash }, prev))
}

/// The ids accepted with a `ts` at or after `since_ms`.
pub(super) fn seen_since(conn: &Connection, since_ms: i64) -> Result<Vec<SeenId>, OpError> {
    let mut st = sql(
        "prepare the command id read",
        conn.prepare_cached("SELECT key, id, ts_ms FROM command_ids WHERE ts_ms >= ?1"),
    )?;
    let rows = sql(
        "read command ids",
        st.query_map(params![since_ms], |r| {
            Ok(SeenId {
                key: r.get(0)?,
                id: r.get(1)?,
                ts_ms: r.get(2)?,
            })
        }),
    )?;
    sql("read command ids", rows.collect())
}

/// The newest `limit` audit rows of the state file at `path` (opened read-only), oldest first.
///
/// # Errors
/// A message naming the file.
pub fn list(path: &Path, limit: usize) -> Result<Vec<AuditRow>, String> {
    let conn = open(path)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = read_rows(
        &conn,
        path,
        "SELECT seq, body, hash FROM audit ORDER BY seq DESC LIMIT ?1",
        &[&limit],
    )?;
    rows.reverse();
    Ok(rows)
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every row chains to the one before it; `rows` rows.
    Intact {
        /// How many rows were checked.
        rows: u64,
    },
    /// The first row where the chain breaks, and how.
    Broken {
        /// The row's seq.
        seq: i64,
        /// What is wrong, for people.
        what: String,
    },
}

/// Checks the whole chain of the state file at `path`, opened read-only.
///
/// # Errors
/// A message naming the file when it cannot be read at all.
pub fn verify(path: &Path) -> Result<Verdict, String> {
    let conn = open(path)?;
    let rows = read_rows(
        &conn,
        path,
        "SELECT seq, body, hash FROM audit ORDER BY seq",
        &[],
    )?;
    let last_seq: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [META_LAST_SEQ],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(check_chain(&rows, last_seq))
}

/// The pure check behind [`verify`].
pub fn check_chain(rows: &[AuditRow], last_seq: Option<i64>) -> Verdict {
    let mut prev = GENESIS.to_owned();
    let mut expected = 1;
    for row in rows {
        if row.seq != expected {
            let what = if row.seq > expected + 1 {
                format!("rows {expected} to {} were deleted", row.seq - 1)
            } else {
                format!("row {expected} was deleted")
            };
            return Verdict::Broken {
                seq: expected,
                what,
            };
        }
        let body_seq = serde_json::from_str::<serde_json::Value>(&row.body)
            .ok()
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_i64));
        if body_seq != Some(row.seq) || chain_hash(&prev, &row.body) != row.hash {
            return Verdict::Broken {
                seq: row.seq,
                what: format!(
                    "row {} was edited: its content does not match its hash (or row {}'s hash \
                     was rewritten)",
                    row.seq,
                    row.seq - 1
                ),
            };
        }
        prev.clone_from(&row.hash);
        expected += 1;
    }
    match last_seq {
        Some(last) if last >= expected => Verdict::Broken {
            seq: expected,
            what: if last == expected {
                format!("row {expected}, the newest, was deleted")
            } else {
                format!("rows {expected} to {last}, the newest, were deleted")
            },
        },
        _ => Verdict::Intact {
            rows: u64::try_from(expected - 1).unwrap_or(0),
        },
    }
}

fn open(path: &Path) -> Result<Connection, String> {
    let conn = super::alarms::offline::open(path, false)?;
    let has_audit: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'audit'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !has_audit {
        return Err(format!(
            "{} has no audit trail yet (written by an older plantwatch); start `plantwatch run` \
             once to upgrade it",
            path.display()
        ));
    }
    Ok(conn)
}

fn read_rows(
    conn: &Connection,
    path: &Path,
    query: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<AuditRow>, String> {
    let err =
        |e: rusqlite::Error| format!("cannot read the audit trail of {}: {e}", path.display());
    let mut st = conn.prepare(query).map_err(err)?;
    let rows = st
        .query_map(args, |r| {
            Ok(AuditRow {
                seq: r.get(0)?,
                body: r.get(1)?,
                hash: r.get(2)?,
            })
        })
        .map_err(err)?;
    rows.collect::<Result<_, _>>().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> AuditEntry {
        AuditEntry {
            ts_ms: n,
            source: "mqtt:mqtt".into(),
            command: "ack".into(),
            key: Some("ops1".into()),
            id: Some(format!("\"c{n}\"")),
            outcome: "done".into(),
            reason: None,
            reply: "{}".into(),
            payload_bytes: 10,
            payload_sha256: sha256_hex(b"x"),
        }
    }

    fn chain(n: i64) -> (Connection, Vec<AuditRow>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, hash TEXT NOT NULL);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE command_ids (key TEXT, id TEXT, ts_ms INTEGER, PRIMARY KEY (key, id));",
        )
        .unwrap();
        let rows = (1..=n)
            .map(|i| append(&conn, &entry(i), None, 0).ok().unwrap().0)
            .collect();
        (conn, rows)
    }

    #[test]
    fn an_intact_chain_verifies_and_each_row_names_its_seq_first() {
        let (_conn, rows) = chain(3);
        assert!(
            rows[0].body.starts_with(r#"{"seq":1,"ts_ms":1,"#),
            "{}",
            rows[0].body
        );
        assert_eq!(rows[1].seq, 2);
        assert_eq!(check_chain(&rows, Some(3)), Verdict::Intact { rows: 3 });
    }

    #[test]
    fn an_edit_a_deletion_or_a_cut_tail_is_named_by_its_row() {
        let (_conn, rows) = chain(5);
        let mut edited = rows.clone();
        edited[2].body = edited[2].body.replace("\"done\"", "\"failed\"");
        assert!(
            matches!(check_chain(&edited, Some(5)), Verdict::Broken { seq: 3, ref what } if what.contains("edited"))
        );
        let mut deleted = rows.clone();
        deleted.remove(1);
        assert!(
            matches!(check_chain(&deleted, Some(5)), Verdict::Broken { seq: 2, ref what } if what.contains("deleted"))
        );
        assert!(matches!(
            check_chain(&rows[..4], Some(5)),
            Verdict::Broken { seq: 5, .. }
        ));
        // Moving a row to another place breaks it even with its own hash.
        let mut moved = rows;
        moved.swap(0, 1);
        assert!(matches!(
            check_chain(&moved, Some(5)),
            Verdict::Broken { seq: 1, .. }
        ));
    }

    #[test]
    fn seen_ids_are_kept_within_the_window_and_pruned_after() {
        let (conn, _) = chain(0);
        let seen = |id: &str, ts| SeenId {
            key: "k".into(),
            id: id.into(),
            ts_ms: ts,
        };
        append(&conn, &entry(1), Some(&seen("a", 1_000)), 0)
            .ok()
            .unwrap();
        append(&conn, &entry(2), Some(&seen("b", 100_000)), 50_000)
            .ok()
            .unwrap();
        let ids: Vec<String> = seen_since(&conn, 0)
            .ok()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["b"], "`a` was signed before the window and pruned");
    }
}
