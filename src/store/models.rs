//! The `model_snapshots` table: each rule instance's learned model state (see
//! `detect::snapshot`), one row per (device, alarm), replaced at every save.

use rusqlite::{Connection, params};

use super::outbox::{OpError, sql};
use crate::detect::snapshot::ModelSnapshot;

/// Saves `rows` at `saved_ms`, each replacing the row of its rule instance.
pub(super) fn save(
    conn: &Connection,
    rows: &[ModelSnapshot],
    saved_ms: i64,
) -> Result<(), OpError> {
    let mut upsert = sql(
        "prepare the model snapshot upsert",
        conn.prepare_cached(
            "INSERT INTO model_snapshots (device, alarm, fingerprint, version, saved_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (device, alarm) DO UPDATE SET fingerprint = excluded.fingerprint,
                 version = excluded.version, saved_ms = excluded.saved_ms, body = excluded.body",
        ),
    )?;
    for r in rows {
        sql(
            "save a model snapshot",
            upsert.execute(params![
                r.device,
                r.alarm,
                r.fingerprint,
                r.version,
                saved_ms,
                r.body
            ]),
        )?;
    }
    Ok(())
}

/// Every saved snapshot, by device and alarm.
pub(super) fn load(conn: &Connection) -> Result<Vec<ModelSnapshot>, OpError> {
    let mut stmt = sql(
        "prepare the model snapshot load",
        conn.prepare_cached(
            "SELECT device, alarm, fingerprint, version, body FROM model_snapshots
             ORDER BY device, alarm",
        ),
    )?;
    let rows = sql(
        "load model snapshots",
        stmt.query_map([], |r| {
            Ok(ModelSnapshot {
                device: r.get(0)?,
                alarm: r.get(1)?,
                fingerprint: r.get(2)?,
                // Out of range (a damaged row) reads as a version no build writes.
                version: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(u32::MAX),
                body: r.get(4)?,
            })
        }),
    )?;
    sql("read model snapshots", rows.collect())
}
