//! The `alarms` table (the raised alarms, so a restart neither re-raises nor forgets them) and
//! the `commands` table (operator commands from `plantwatch alarms`, for the running daemon).
//!
//! The store keeps alarm bodies opaque (the detect stage's JSON), so the storage layer does
//! not depend on the rule engine. Invariants: one row per (device, alarm); a cleared alarm has
//! no row; a command is answered at most once.

use rusqlite::{Connection, params};

use super::outbox::{OpError, sql};

/// One raised alarm's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRow {
    /// The device.
    pub device: String,
    /// The alarm's name below the device.
    pub alarm: String,
    /// Its state as the detect stage serialised it; `None` deletes the row (cleared).
    pub body: Option<String>,
}

/// An operator command waiting for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    /// Row id, used to answer it.
    pub id: i64,
    /// The command as JSON.
    pub body: String,
}

pub(super) fn save(conn: &Connection, rows: &[AlarmRow]) -> Result<(), OpError> {
    let mut upsert = sql(
        "prepare the alarm upsert",
        conn.prepare_cached(
            "INSERT INTO alarms (device, alarm, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (device, alarm) DO UPDATE SET body = excluded.body",
        ),
    )?;
    for r in rows {
        match &r.body {
            Some(body) => {
                sql(
                    "save an alarm",
                    upsert.execute(params![r.device, r.alarm, body]),
                )?;
            }
            None => {
                sql(
                    "delete a cleared alarm",
                    conn.execute(
                        "DELETE FROM alarms WHERE device = ?1 AND alarm = ?2",
                        params![r.device, r.alarm],
                    ),
                )?;
            }
        }
    }
    Ok(())
}

pub(super) fn load(conn: &Connection) -> Result<Vec<AlarmRow>, OpError> {
    let mut stmt = sql(
        "prepare the alarm load",
        conn.prepare_cached("SELECT device, alarm, body FROM alarms ORDER BY device, alarm"),
    )?;
    let rows = sql(
        "load the alarms",
        stmt.query_map([], |r| {
            Ok(AlarmRow {
                device: r.get(0)?,
                alarm: r.get(1)?,
                body: Some(r.get(2)?),
            })
        }),
    )?;
    sql("read an alarm", rows.collect())
}

pub(super) fn pending_commands(conn: &Connection) -> Result<Vec<CommandRow>, OpError> {
    let mut stmt = sql(
        "prepare the command fetch",
        conn.prepare_cached(
            "SELECT id, body FROM commands WHERE reply IS NULL ORDER BY id LIMIT 100",
        ),
    )?;
    let rows = sql(
        "fetch commands",
        stmt.query_map([], |r| {
            Ok(CommandRow {
                id: r.get(0)?,
                body: r.get(1)?,
            })
        }),
    )?;
    sql("read a command", rows.collect())
}

pub(super) fn answer(conn: &Connection, answers: &[(i64, String)]) -> Result<(), OpError> {
    for (id, reply) in answers {
        sql(
            "answer a command",
            conn.execute(
                "UPDATE commands SET reply = ?2 WHERE id = ?1 AND reply IS NULL",
                params![id, reply],
            ),
        )?;
    }
    // Answers older than a day have been read or never will be.
    sql(
        "prune answered commands",
        conn.execute(
            "DELETE FROM commands WHERE reply IS NOT NULL AND created_ms < \
             (SELECT MAX(created_ms) FROM commands) - 86400000",
            [],
        ),
    )?;
    Ok(())
}

pub(super) fn save_state(
    conn: &Connection,
    scope: &str,
    rows: &[(String, String)],
) -> Result<(), OpError> {
    let mut upsert = sql(
        "prepare the engine state upsert",
        conn.prepare_cached(
            "INSERT INTO engine_state (scope, key, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope, key) DO UPDATE SET body = excluded.body",
        ),
    )?;
    for (key, body) in rows {
        sql(
            "save engine state",
            upsert.execute(params![scope, key, body]),
        )?;
    }
    Ok(())
}

pub(super) fn load_state(conn: &Connection, scope: &str) -> Result<Vec<(String, String)>, OpError> {
    let mut stmt = sql(
        "prepare the engine state load",
        conn.prepare_cached("SELECT key, body FROM engine_state WHERE scope = ?1 ORDER BY key"),
    )?;
    let rows = sql(
        "load engine state",
        stmt.query_map(params![scope], |r| Ok((r.get(0)?, r.get(1)?))),
    )?;
    sql("read engine state", rows.collect())
}

/// Direct access to a state file for `plantwatch alarms`, beside a running daemon: SQLite's
/// WAL mode lets this process read and queue commands while the daemon's store thread writes.
pub mod offline {
    use std::path::Path;

    use rusqlite::{Connection, OptionalExtension, params};

    use super::AlarmRow;

    /// Opens the state file at `path` beside a running daemon (read-only unless `write`), as
    /// [`crate::store::offline::open`] does.
    ///
    /// # Errors
    /// A message naming the file and what is wrong with it, with its causes.
    pub fn open(path: &Path, write: bool) -> Result<Connection, String> {
        crate::store::offline::open(path, write).map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            // Bounded by the error's chain, a handful of links.
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        })
    }

    /// The raised alarms saved in the state file at `path`.
    ///
    /// # Errors
    /// A message naming the file.
    pub fn raised(path: &Path) -> Result<Vec<AlarmRow>, String> {
        let conn = open(path, false)?;
        super::load(&conn).map_err(|e| format!("{}: {e:?}", path.display()))
    }

    /// The rows the daemon saved under `scope` (engine state), in key order.
    ///
    /// # Errors
    /// A message naming the file.
    pub fn state(path: &Path, scope: &str) -> Result<Vec<(String, String)>, String> {
        let conn = open(path, false)?;
        super::load_state(&conn, scope).map_err(|e| format!("{}: {e:?}", path.display()))
    }

    /// Queues a command (JSON) for the daemon; returns its id.
    ///
    /// # Errors
    /// A message naming the file.
    pub fn queue(path: &Path, body: &str, now_ms: i64) -> Result<i64, String> {
        let conn = open(path, true)?;
        conn.execute(
            "INSERT INTO commands (created_ms, body) VALUES (?1, ?2)",
            params![now_ms, body],
        )
        .map_err(|e| format!("cannot queue the command in {}: {e}", path.display()))?;
        Ok(conn.last_insert_rowid())
    }

    /// The daemon's reply to command `id`, once it has answered.
    ///
    /// # Errors
    /// A message naming the file.
    pub fn reply(path: &Path, id: i64) -> Result<Option<String>, String> {
        let conn = open(path, false)?;
        conn.query_row(
            "SELECT reply FROM commands WHERE id = ?1",
            params![id],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(|e| format!("{}: {e}", path.display()))
    }
}
