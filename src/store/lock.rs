//! One writer per state file: the lock that [`super::Store::open`] takes before it opens one.
//!
//! Two daemons on one state file take the same MQTT client id, knock each other off the
//! broker, and number different readings with the same seqs, so a consumer that
//! de-duplicates by seq throws real data away (issue 18). The writer therefore holds an
//! exclusive `flock` on `<state>.lock` beside the file for as long as its store is open, with
//! its PID written inside so that a refused process can name the holder.
//!
//! Invariants:
//! - the lock lives exactly as long as the store's connection: the kernel drops it when the
//!   file is closed, also on SIGKILL, so a crashed daemon never leaves a stale lock;
//! - readers (`export`, `alarms list`, `backup`) never take it: SQLite's WAL lets them read
//!   beside the writer;
//! - the lock file is never removed: unlinking it would let a starting process lock a file
//!   that is about to disappear while a third creates a new one, and both would "hold" it.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// Why the lock of a state file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{} is held by PID {}", lock.display(), holder.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Held {
        /// The lock file.
        lock: PathBuf,
        /// The PID written by the holder (`None` when it has not written it yet).
        holder: Option<u32>,
    },
    /// The lock file could not be created, opened or locked.
    #[error("cannot lock {}", lock.display())]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive hold on a state file; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StateLock {
    /// Keeps the `flock`: it belongs to this open file.
    _file: File,
}

/// The lock file of the state file at `state`: `state.db` → `state.db.lock`.
#[must_use]
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StateLock {
    /// Takes the lock of the state file at `state` without waiting, and writes this PID into
    /// the lock file.
    ///
    /// # Errors
    /// [`LockError::Held`] when another process holds it, [`LockError::Io`] when the lock file
    /// cannot be opened (e.g. the directory is not writable) or locked.
    pub fn acquire(state: &Path) -> Result<Self, LockError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let lock = lock_path(state);
        let io = |source| LockError::Io {
            lock: lock.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // As private as the state file's directory makes it; only the PID is inside.
            .mode(0o644)
            .open(&lock)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held { lock, holder });
            }
            Err(e) => return Err(io(e.into())),
        }
        // Under the lock: nobody else writes the file now.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let first = StateLock::acquire(&state).unwrap();
        // flock conflicts between two opens of the file, also within one process.
        match StateLock::acquire(&state) {
            Err(LockError::Held { lock, holder }) => {
                assert_eq!(lock, dir.path().join("state.db.lock"));
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = StateLock::acquire(&state).unwrap();
        drop(again);
    }

    #[test]
    fn an_unwritable_directory_is_an_io_error_naming_the_lock_file() {
        let err = StateLock::acquire(Path::new("/nonexistent-dir/state.db")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent-dir/state.db.lock"),
            "{err}"
        );
    }
}
