//! Room for the state file on its file system (issue 20, "disk full").
//!
//! The outbox's byte bound alone does not keep the file system from filling: the WAL, the page
//! overhead and other files share it. So after every write group the store measures its
//! [`Room`] (free space on the file system, plus the database's free pages, less what the WAL
//! may still grow, and never more than `max_page_count` allows) and, while the room is below
//! the headroom, drops the oldest messages and counts them as the byte bound does. That is the
//! "full" condition: entered and left with one WARN each, shown in `/metrics` and `STATUS=`.
//!
//! Besides, a reserve file (`<state file>.reserve`) is written with real bytes when the store
//! opens. If SQLite still reports a full disk (another process took the headroom), the store
//! deletes the reserve, checkpoints, and only then drops rows: the checkpoint may have to grow
//! the main file by what the WAL holds past its end, at most the WAL limit, so the reserve is
//! that plus the headroom. Then the WAL starts over in the space it has, and deleting
//! delivered rows always has room. The reserve is written again once space returns.
//!
//! Sizes follow the file system: on a small card, a WAL of the default 4 MiB would take the
//! whole of it, so the WAL limit is a sixteenth of the file system (between 256 KiB and 4 MiB)
//! and the headroom a thirty-second (between 64 KiB and 1 MiB).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// The largest WAL the store lets SQLite grow before a checkpoint (and truncate back to).
const WAL_MAX: u64 = 4 * 1024 * 1024;
const WAL_MIN: u64 = 256 * 1024;
/// The headroom's bounds.
const HEADROOM_MAX: u64 = 1024 * 1024;
const HEADROOM_MIN: u64 = 64 * 1024;

/// The store's view of its file system.
#[derive(Debug)]
pub(super) struct Space {
    /// The directory holding the state file (what `statvfs` is asked about).
    dir: PathBuf,
    /// The state file.
    db: PathBuf,
    /// The state file's WAL.
    wal: PathBuf,
    /// The reserve file.
    reserve: PathBuf,
    /// The room kept free besides what the WAL and its checkpoint may still take.
    pub(super) headroom: u64,
    /// The reserve file's size: the WAL limit plus the headroom.
    pub(super) reserve_bytes: u64,
    /// The WAL's limit in bytes.
    pub(super) wal_max: u64,
    /// Whether the reserve file is in place.
    held: bool,
    /// While the database may not grow past its file: the page limit to restore after.
    unbounded: Option<u64>,
}

/// Free space for the store, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Room {
    /// What new pages may still take.
    pub(super) bytes: u64,
}

impl Space {
    /// Sizes the WAL and reserve for the file system holding `db`.
    pub(super) fn new(db: &Path) -> Self {
        let dir = db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let total = rustix::fs::statvfs(&dir)
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
            .unwrap_or(u64::MAX);
        let mut name = db.as_os_str().to_owned();
        name.push(".reserve");
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let headroom = (total / 32).clamp(HEADROOM_MIN, HEADROOM_MAX);
        let wal_max = (total / 16).clamp(WAL_MIN, WAL_MAX);
        Self {
            dir,
            db: db.to_path_buf(),
            wal: PathBuf::from(wal),
            reserve: PathBuf::from(name),
            headroom,
            reserve_bytes: wal_max + headroom,
            wal_max,
            held: false,
            unbounded: None,
        }
    }

    /// The reserve file's path.
    pub(super) fn reserve_path(&self) -> &Path {
        &self.reserve
    }

    /// While full: checkpoint as soon as the WAL is as long as it is now, so that it starts
    /// over in the space it already has instead of growing into space there is not.
    pub(super) fn hold_wal(&self, conn: &Connection) -> rusqlite::Result<()> {
        let page: u64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let wal = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        let pages = (wal / (page.max(512) + 24)).max(16);
        conn.pragma_update(None, "wal_autocheckpoint", pages)
    }

    /// Applies the WAL limit to the connection: checkpoints every `wal_max` bytes of WAL and
    /// truncates it back to that size.
    pub(super) fn configure(&self, conn: &Connection) -> rusqlite::Result<()> {
        let page: u64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages = (self.wal_max / page.max(512)).max(16);
        conn.pragma_update(None, "wal_autocheckpoint", pages)?;
        conn.pragma_update(None, "journal_size_limit", self.wal_max)?;
        Ok(())
    }

    /// Writes the reserve file if it is missing and there is room for it and the headroom
    /// besides; returns whether it is in place.
    pub(super) fn ensure_reserve(&mut self) -> bool {
        if self.held {
            return true;
        }
        if let Ok(m) = std::fs::metadata(&self.reserve)
            && m.len() >= self.reserve_bytes
        {
            self.held = true;
            return true;
        }
        if self.available()
            < self
                .reserve_bytes
                .saturating_add(self.headroom.saturating_mul(2))
        {
            return false;
        }
        // Real bytes, not `set_len`: a sparse file would reserve nothing.
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&self.reserve)?;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = self.reserve_bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        };
        match write() {
            Ok(()) => self.held = true,
            Err(_) => {
                let _gone = std::fs::remove_file(&self.reserve);
            }
        }
        self.held
    }

    /// Deletes the reserve file, freeing its space for deletes and checkpoints; returns
    /// whether there was one.
    pub(super) fn release_reserve(&mut self) -> bool {
        let was = self.held || self.reserve.exists();
        let _gone = std::fs::remove_file(&self.reserve);
        self.held = false;
        was
    }

    /// While full without the reserve, keeps the database within the pages its file already
    /// has (`max_page_count`), so that new rows take the pages of delivered and dropped ones.
    /// A checkpoint then never has to grow the main file, so it needs no space the disk may
    /// not have, and the WAL can always start over: without this, a checkpoint that cannot
    /// grow the file leaves the WAL full for good and no delete can ever commit. The limit is
    /// lifted once the reserve is back.
    pub(super) fn bound_pages(&mut self, conn: &Connection, full: bool) -> rusqlite::Result<()> {
        if !full || self.ensure_reserve() {
            if let Some(max) = self.unbounded.take() {
                conn.pragma_update(None, "max_page_count", max)?;
            }
            return Ok(());
        }
        let pragma = |name: &str| -> rusqlite::Result<u64> {
            conn.pragma_query_value(None, name, |r| r.get(0))
        };
        if self.unbounded.is_none() {
            self.unbounded = Some(pragma("max_page_count")?);
        }
        let file_pages =
            std::fs::metadata(&self.db).map_or(0, |m| m.len()) / pragma("page_size")?.max(512);
        // SQLite keeps the limit at or above the pages in use (some may be in the WAL only,
        // until the next checkpoint copies them; the released reserve has room for those).
        conn.pragma_update(None, "max_page_count", file_pages)
    }

    /// Bytes free on the file system for an unprivileged writer.
    fn available(&self) -> u64 {
        rustix::fs::statvfs(&self.dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .unwrap_or(u64::MAX)
    }

    /// The room for new pages now (inside the current transaction, so its deletes count).
    pub(super) fn room(&self, conn: &Connection) -> rusqlite::Result<Room> {
        let pragma = |name: &str| -> rusqlite::Result<u64> {
            conn.pragma_query_value(None, name, |r| r.get(0))
        };
        let page = pragma("page_size")?;
        let free_pages = pragma("freelist_count")?;
        let page_room =
            pragma("max_page_count")?.saturating_sub(pragma("page_count")?) + free_pages;
        let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal_growth = self.wal_max.saturating_sub(len(&self.wal));
        // Pages past the main file's end live only in the WAL so far; the checkpoint that
        // copies them will grow the file.
        let db_growth = pragma("page_count")?
            .saturating_mul(page)
            .saturating_sub(len(&self.db));
        let fs_room = self
            .available()
            .saturating_add(free_pages * page)
            .saturating_sub(wal_growth)
            .saturating_sub(db_growth);
        Ok(Room {
            bytes: fs_room.min(page_room.saturating_mul(page)),
        })
    }

    /// Payload bytes to drop so that `room` gets back to the headroom (0 when it is there).
    pub(super) fn deficit(&self, room: Room) -> u64 {
        self.headroom.saturating_sub(room.bytes)
    }

    /// Whether `room` is enough to leave the full condition: twice the headroom, so that the
    /// condition does not flap, and the reserve back in place, so that the next full disk
    /// again finds room to checkpoint and delete.
    pub(super) fn can_leave_full(&self, room: Room) -> bool {
        self.held && room.bytes >= self.headroom.saturating_mul(2)
    }

    /// Whether the reserve file is in place.
    pub(super) fn held(&self) -> bool {
        self.held
    }

    /// Bytes the file system lacks for the reserve file (and the headroom besides).
    pub(super) fn short_for_reserve(&self) -> u64 {
        self.reserve_bytes
            .saturating_add(self.headroom.saturating_mul(2))
            .saturating_sub(self.available())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_real_bytes_and_is_released_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let mut space = Space::new(&db);
        assert!((HEADROOM_MIN..=HEADROOM_MAX).contains(&space.headroom));
        assert_eq!(space.reserve_bytes, space.wal_max + space.headroom);
        assert!(space.ensure_reserve());
        let meta = std::fs::metadata(space.reserve_path()).unwrap();
        assert_eq!(meta.len(), space.reserve_bytes);
        // Allocated, not sparse: the blocks are really taken.
        use std::os::unix::fs::MetadataExt as _;
        assert!(meta.blocks() * 512 >= space.reserve_bytes, "{meta:?}");
        assert!(space.release_reserve());
        assert!(!space.reserve_path().exists());
        assert!(space.ensure_reserve());
        assert!(space.reserve_path().exists());
    }

    #[test]
    fn the_page_limit_bounds_the_room() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let space = Space::new(&db);
        let pages: u64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages + 10)
            .unwrap();
        let page: u64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        assert_eq!(space.room(&conn).unwrap().bytes, 10 * page);
        assert_eq!(
            space.deficit(Room { bytes: 0 }),
            space.headroom,
            "no room: drop the headroom's worth"
        );
    }
}
