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
