//! A state file opened from outside the daemon: `export`, `alarms`, `upload` and `backup`
//! read it beside a running daemon (SQLite's WAL lets them) or from a copy.
//!
//! A file they cannot use gets the diagnosis that fits, because the obvious one is often
//! wrong (issue 18): a directory the user may not enter looks like a missing file, and a
//! copy made with `cp` while the data was in the `-wal` file looks like an empty database.
//! [`backup`] makes the copy that needs no WAL.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _};
use tracing::warn;

/// The oldest schema the offline readers understand.
const OLDEST_READABLE: u32 = 4;

/// Why a state file cannot be used from outside the daemon. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Nothing at the path.
    #[error("no state file at {}; `plantwatch run` creates it (or give --state FILE)", path.display())]
    Missing {
        /// The state file.
        path: PathBuf,
    },
    /// The file, or a directory on its path, may not be read by this user.
    #[error(
        "cannot read {}: permission denied; run as the daemon's user (e.g. `sudo -u plantwatch …`) or as a member of its group",
        path.display()
    )]
    Denied {
        /// The state file.
        path: PathBuf,
        /// The system's report.
        #[source]
        source: std::io::Error,
    },
    /// The main file has no schema yet, is in WAL mode, and has no `-wal` beside it: a copy
    /// made without its WAL, which held everything.
    #[error(
        "{} holds no plantwatch data in its main file and its WAL ({}) is missing: it was copied without it. Copy a state file with `plantwatch backup STATE DEST`",
        path.display(),
        wal.display()
    )]
    WalMissing {
        /// The state file.
        path: PathBuf,
        /// Where its WAL would be.
        wal: PathBuf,
    },
    /// An SQLite file that plantwatch did not write.
    #[error("{} is not a plantwatch state file (it has no schema version)", path.display())]
    NotState {
        /// The file.
        path: PathBuf,
    },
    /// A state file with a schema older than the readers understand.
    #[error(
        "{} was written by an older plantwatch (schema {version}); start `plantwatch run` once to upgrade it",
        path.display()
    )]
    Older {
        /// The state file.
        path: PathBuf,
        /// Its schema version.
        version: u32,
    },
    /// The destination of a backup exists already.
    #[error("{} exists; a backup never overwrites a file (remove it, or choose another name)", path.display())]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("cannot {what} {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The system's report.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("{}: cannot {what}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },
}

impl OfflineError {
    /// Whether the file's contents are the problem (not a plantwatch file, lost WAL, corrupt),
    /// rather than reaching or writing it.
    #[must_use]
    pub fn is_bad_data(&self) -> bool {
        match self {
            Self::WalMissing { .. } | Self::NotState { .. } | Self::Older { .. } => true,
            Self::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            ),
            Self::Missing { .. } | Self::Denied { .. } | Self::Exists { .. } | Self::Io { .. } => {
                false
            }
        }
    }
}

/// The `-wal` file of the state file at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Whether the SQLite header in `head` (the file's first bytes) says WAL mode: both format
/// version bytes (offsets 18 and 19) are 2.
fn header_says_wal(head: &[u8]) -> bool {
    head.starts_with(b"SQLite format 3\0") && head.get(18..20) == Some(&[2, 2][..])
}

/// Opens the state file at `path` beside a running daemon (read-only unless `write`), after
/// telling a missing file from an unreadable one and a copy without its WAL from an old file.
/// A copy taken while a daemon ran (its `-wal` left behind) opens, with a warning that its
/// newest data may be missing.
///
/// # Errors
/// [`OfflineError`], naming the file and what is wrong with it.
pub fn open(path: &Path, write: bool) -> Result<Connection, OfflineError> {
    let io = |what: &'static str| {
        move |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => OfflineError::Missing {
                path: path.to_path_buf(),
            },
            std::io::ErrorKind::PermissionDenied => OfflineError::Denied {
                path: path.to_path_buf(),
                source,
            },
            _ => OfflineError::Io {
                path: path.to_path_buf(),
                what,
                source,
            },
        }
    };
    // `Path::exists` says "missing" for a file in a directory we may not enter: ask for why.
    std::fs::metadata(path).map_err(io("look at"))?;
    let mut head = Vec::with_capacity(100);
    File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut head))
        .map_err(io("read"))?;
    let wal = wal_path(path);
    // Before SQLite opens it: a connection may create the WAL.
    let without_wal = header_says_wal(&head) && !wal.exists();
    let sqlite = |what: &'static str| {
        move |source| OfflineError::Sqlite {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sqlite("open"))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite("set the busy timeout"))?;
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite("read the schema version"))?;
    if version == 0 {
        return Err(if without_wal {
            OfflineError::WalMissing {
                path: path.to_path_buf(),
                wal,
            }
        } else {
            OfflineError::NotState {
                path: path.to_path_buf(),
            }
        });
    }
    if version < OLDEST_READABLE {
        return Err(OfflineError::Older {
            path: path.to_path_buf(),
            version,
        });
    }
    let running: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [super::META_RUNNING],
            |r| r.get(0),
        )
        .optional()
        .map_err(sqlite("read the meta table"))?;
    if without_wal && running == Some(1) {
        warn!(
            path = %path.display(),
            wal = %wal.display(),
            "The state file was copied while plantwatch was running, without its -wal file: data since its last checkpoint is missing. Copy a state file with `plantwatch backup STATE DEST`."
        );
    }
    Ok(conn)
}

/// What [`backup`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Size of the copy.
    pub bytes: u64,
}

/// Tries of a backup step that finds the source busy (a checkpoint holding it), 100 ms apart.
const BUSY_TRIES: u32 = 100;

/// Copies the state file at `source` to `dest` as one consistent snapshot, with everything in
/// its WAL, while a daemon may be writing it. The copy is one self-contained file (rollback
/// journal mode; a daemon started on it switches it back to WAL) written beside `dest` and
/// renamed into place, so `dest` is never half written.
///
/// # Errors
/// As [`open`] for the source; [`OfflineError::Exists`] when `dest` exists; SQLite and I/O
/// errors naming the file.
pub fn backup(source: &Path, dest: &Path) -> Result<Copied, OfflineError> {
    let src = open(source, false)?;
    if dest.exists() {
        return Err(OfflineError::Exists {
            path: dest.to_path_buf(),
        });
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let io = |path: &Path, what: &'static str| {
        let path = path.to_path_buf();
        move |source| OfflineError::Io { path, what, source }
    };
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&partial, "remove the unfinished copy")(e)),
    }
    let sqlite = |what: &'static str| {
        let path = partial.clone();
        move |source| OfflineError::Sqlite { path, what, source }
    };
    let mut dst = Connection::open(&partial).map_err(sqlite("create"))?;
    {
        let copy =
            rusqlite::backup::Backup::new(&src, &mut dst).map_err(sqlite("start the copy"))?;
        // All pages in one step: one read transaction, so one snapshot however busy the
        // writer is (a step at a time would start over after each of its commits).
        let mut tries = 0;
        loop {
            match copy.step(-1).map_err(sqlite("copy the pages"))? {
                rusqlite::backup::StepResult::Done => break,
                _ if tries < BUSY_TRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    return Err(OfflineError::Sqlite {
                        path: source.to_path_buf(),
                        what: "copy it: it stayed busy for 10 s",
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            None,
                        ),
                    });
                }
            }
        }
    }
    // One file, no WAL needed beside it: what `cp` and archives expect.
    let _mode: String = dst
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(sqlite("leave WAL mode"))?;
    // The copy is whole, so the daemon's "running" flag must not read as a lost WAL when it is
    // restored. The source goes on numbering after the snapshot: a restored copy continues
    // past its seq marks, leaving an honest gap rather than reusing seqs the platform has.
    dst.execute_batch(&format!(
        "BEGIN; UPDATE meta SET value = 0 WHERE key = '{}'; \
         UPDATE seqs SET next = max(next, reserved); COMMIT;",
        super::META_RUNNING
    ))
    .map_err(sqlite("mark the copy as stopped"))?;
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sqlite("check the copy"))?;
    if check != "ok" {
        return Err(OfflineError::Sqlite {
            path: partial,
            what: "check the copy",
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(check),
            ),
        });
    }
    dst.close().map_err(|(_, e)| sqlite("close")(e))?;
    let file = File::open(&partial).map_err(io(&partial, "open"))?;
    file.sync_all().map_err(io(&partial, "flush"))?;
    let bytes = file
        .metadata()
        .map_err(io(&partial, "measure"))
        .map(|m| m.len())?;
    std::fs::rename(&partial, dest).map_err(io(dest, "move the copy to"))?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable only once the directory is.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir, "flush the directory"))?;
    }
    Ok(Copied { bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DEFAULT_QUEUE, OutboxLimits, OutboxMessage, Store};

    /// A backup of a running store, restored: no "state lost" and no reused seq.
    #[tokio::test]
    async fn a_restored_backup_is_not_a_lost_wal_and_continues_past_its_seq_marks() {
        let dir = tempfile::tempdir().unwrap();
        let limits = || OutboxLimits {
            max_bytes: u64::MAX,
            commit_window: Duration::ZERO,
        };
        let live = Store::open(&dir.path().join("state.db"), limits()).unwrap();
        let msg = |seq| OutboxMessage {
            queue: DEFAULT_QUEUE,
            stream: "telemetry/m".into(),
            key: "m".into(),
            seq,
            created_ms: 1,
            payload: vec![1; 10],
        };
        let next = live.next_seq("m").await.unwrap();
        live.enqueue(vec![msg(next), msg(next + 1)]).await.unwrap();
        let copy = dir.path().join("restored").join("state.db");
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        backup(&dir.path().join("state.db"), &copy).unwrap();

        let restored = Store::open(&copy, limits()).unwrap();
        let health = restored.stats().await.unwrap().health;
        assert_eq!(health.loss, None, "{health:?}");
        assert_eq!(health.losses_total, 0);
        assert!(
            restored.next_seq("m").await.unwrap() >= next + super::super::SEQ_BLOCK,
            "continues past the mark"
        );
        assert_eq!(
            restored.stats().await.unwrap().rows,
            2,
            "the data came along"
        );
    }
}
