//! Schema migrations, tracked by SQLite's `user_version` pragma.
//!
//! Invariants: migration `i` (0-based) brings the file from version `i` to `i + 1` and runs in
//! its own transaction together with the version bump, so a crash mid-migration leaves the
//! previous version intact; migrations are append-only (never edit a shipped one); a file
//! written by a newer build (a higher version) is refused rather than guessed at.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Each entry upgrades the schema by one version.
const MIGRATIONS: &[&str] = &[
    // 1: the outbox, per-key seq high-water marks and persisted counters.
    // AUTOINCREMENT so row ids are never reused after the outbox empties: the MQTT sink's
    // fetch cursor relies on new rows having higher ids than any it has seen.
    "CREATE TABLE outbox (
         id         INTEGER PRIMARY KEY AUTOINCREMENT,
         stream     TEXT    NOT NULL,
         key        TEXT    NOT NULL,
         seq        INTEGER NOT NULL,
         created_ms INTEGER NOT NULL,
         payload    BLOB    NOT NULL
     );
     CREATE TABLE seqs (
         key  TEXT PRIMARY KEY,
         next INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE meta (
         key   TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 2: raised alarms (restored at start) and the operator command queue of `plantwatch
    // alarms`, which writes here so that it works whether or not the daemon is running.
    "CREATE TABLE alarms (
         device TEXT NOT NULL,
         alarm  TEXT NOT NULL,
         body   TEXT NOT NULL,
         PRIMARY KEY (device, alarm)
     ) WITHOUT ROWID;
     CREATE TABLE commands (
         id         INTEGER PRIMARY KEY AUTOINCREMENT,
         created_ms INTEGER NOT NULL,
         body       TEXT    NOT NULL,
         reply      TEXT
     );",
    // 3: other engine state that must survive restarts (maintenance counters), as opaque
    // JSON per (scope, key).
    "CREATE TABLE engine_state (
         scope TEXT NOT NULL,
         key   TEXT NOT NULL,
         body  TEXT NOT NULL,
         PRIMARY KEY (scope, key)
     ) WITHOUT ROWID;",
    // 4: the energy ledger: closed intervals per meter (docs/design.md §5), keyed so that an
    // interval re-emitted after a crash replaces itself. `tou_*` split `delta` by period.
    "CREATE TABLE energy_intervals (
         meter      TEXT    NOT NULL,
         start_ms   INTEGER NOT NULL,
         end_ms     INTEGER NOT NULL,
         kind       TEXT    NOT NULL,
         unit       TEXT    NOT NULL,
         delta      REAL    NOT NULL,
         quality    TEXT    NOT NULL,
         flags      INTEGER NOT NULL,
         tou_sharp  REAL    NOT NULL,
         tou_peak   REAL    NOT NULL,
         tou_flat   REAL    NOT NULL,
         tou_valley REAL    NOT NULL,
         kgce       REAL,
         PRIMARY KEY (meter, start_ms)
     ) WITHOUT ROWID;
     CREATE INDEX energy_intervals_by_time ON energy_intervals (start_ms);",
    // 5: named outbox queues, one per sink. The existing `outbox` table becomes queue 0,
    // named `mqtt` like the single `[mqtt]` sink that filled it; other queues get tables
    // `outbox_{id}` when first opened.
    "CREATE TABLE outbox_queues (
         name TEXT    PRIMARY KEY,
         id   INTEGER NOT NULL UNIQUE
     ) WITHOUT ROWID;
     INSERT INTO outbox_queues (name, id) VALUES ('mqtt', 0);",
    // 6: each key's seq high-water mark, moved ahead in blocks and checkpointed before use, so
    // that a lost WAL never lets a seq be used twice (see recovery.rs).
    "ALTER TABLE seqs ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;",
    // 7: the ledger's counter events (wrap, reset, replacement, jump) with the energy each
    // left unattributed, keyed like the intervals so that one re-emitted after a crash
    // replaces itself.
    "CREATE TABLE energy_events (
         meter        TEXT    NOT NULL,
         at_ms        INTEGER NOT NULL,
         kind         TEXT    NOT NULL,
         device       TEXT    NOT NULL,
         point        TEXT    NOT NULL,
         unit         TEXT    NOT NULL,
         from_ms      INTEGER NOT NULL,
         before       REAL,
         after        REAL    NOT NULL,
         booked       REAL    NOT NULL,
         unattributed REAL    NOT NULL,
         inferred_max REAL,
         PRIMARY KEY (meter, at_ms, kind)
     ) WITHOUT ROWID;",
    // 8: the tamper-evident audit trail of downlink commands, and the command ids accepted
    // within the replay window (see audit.rs).
    "CREATE TABLE audit (
         seq  INTEGER PRIMARY KEY,
         body TEXT    NOT NULL,
         hash TEXT    NOT NULL
     );
     CREATE TABLE command_ids (
         key   TEXT    NOT NULL,
         id    TEXT    NOT NULL,
         ts_ms INTEGER NOT NULL,
         PRIMARY KEY (key, id)
     ) WITHOUT ROWID;",
    // 9: the learned state of anomaly, trend and rate models per rule instance (see
    // detect/snapshot.rs), restored at start where the rule's fingerprint is unchanged.
    "CREATE TABLE model_snapshots (
         device      TEXT    NOT NULL,
         alarm       TEXT    NOT NULL,
         fingerprint TEXT    NOT NULL,
         version     INTEGER NOT NULL,
         saved_ms    INTEGER NOT NULL,
         body        TEXT    NOT NULL,
         PRIMARY KEY (device, alarm)
     ) WITHOUT ROWID;",
];

/// The tables every file at [`VERSION`] has; a file without one of them is not what its
/// version says (e.g. a migration that lived only in a lost WAL).
const TABLES: &[&str] = &[
    "outbox",
    "seqs",
    "meta",
    "alarms",
    "commands",
    "engine_state",
    "energy_intervals",
    "outbox_queues",
    "energy_events",
    "audit",
    "command_ids",
    "model_snapshots",
];

/// The schema version this build writes.
pub(super) const VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the file at `path` up to [`VERSION`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| StoreError::sqlite(path, what, source)
    };
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err("read the schema version"))?;
    if found > VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: VERSION,
        });
    }
    for (version, sql) in (found..).zip(MIGRATIONS.iter().skip(found as usize)) {
        let tx = conn.transaction().map_err(err("begin a migration"))?;
        tx.execute_batch(sql).map_err(err("migrate the schema"))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(err("set the schema version"))?;
        tx.commit().map_err(err("commit a migration"))?;
    }
    Ok(())
}

/// Checks that the file has every table its version promises.
pub(super) fn verify(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| StoreError::sqlite(path.to_path_buf(), "read the schema version", e))?;
    for table in TABLES {
        let found: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| StoreError::sqlite(path.to_path_buf(), "read the schema", e))?;
        if !found {
            return Err(StoreError::SchemaMismatch {
                path: path.to_path_buf(),
                table: (*table).to_owned(),
                version,
            });
        }
    }
    Ok(())
}
