//! Finding lost state when the store opens, and starting over from a corrupt file (issue 20).
//!
//! Everything the store commits lives in the WAL until a checkpoint copies it into the main
//! file. A WAL that is missing after an unclean stop (`cp state.db` alone, a bad SD card), or
//! short, or not a WAL at all, has taken commits with it, and SQLite opens what is left without
//! a word. So the main file records whether a store has it open (`store.running`, set and
//! checkpointed at open, cleared at a clean close), and while it is open the WAL is never
//! empty (a small write follows every TRUNCATE checkpoint). At the next open, "was running"
//! plus a WAL without a valid frame means commits were lost. A WAL cut at a frame boundary
//! still has valid frames; it is told by the wal-index (`-shm`) the unclean stop left behind,
//! which counts more committed frames than SQLite then finds (see [`committed_frames`]). Only a
//! cut WAL without its index (copied alone, or after a power cut lost the index) goes unseen.
//!
//! What the loss must not do is reuse a seq the platform already holds: each key's seq
//! high-water mark (`seqs.reserved`) moves ahead in blocks, committed and checkpointed into
//! the main file before any seq of the block is stored (see `Store::reserve_seqs`). After a
//! detected loss every key continues from its mark, leaving a gap instead of a repeat.
//!
//! A main file that SQLite finds corrupt, or whose schema does not match its version, is
//! renamed to `<file>.corrupt-<UTC time>` (with its WAL) and a fresh file started, unless
//! `store.on_corrupt = "refuse"`. The fresh file takes over the seq marks the old one still
//! yields, and those of `<file>.seqs`, a copy written beside it whenever the marks move, so
//! seqs carry on even when the old file yields nothing; only without both do seqs restart from
//! 0, and the ERROR says so.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

/// The WAL header's magic numbers (big- and little-endian checksums).
const WAL_MAGIC: [u32; 2] = [0x377f_0682, 0x377f_0683];
/// The WAL header's length; each frame adds a 24-byte header to a page.
const WAL_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 24;

/// What was found where the WAL should be, before SQLite opened the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WalFile {
    /// No WAL file.
    Missing,
    /// Shorter than one header and frame, not starting with a WAL header, or cut inside a
    /// frame.
    Damaged,
    /// A WAL header and whole frames.
    Present,
}

/// The `-wal` file beside `db`.
pub(super) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Looks at the WAL of `db` without opening the database. `size_limit` is the length SQLite
/// truncates a WAL to (`journal_size_limit`), which need not end on a frame.
pub(super) fn inspect_wal(db: &Path, size_limit: u64) -> WalFile {
    let path = wal_path(db);
    let Ok(mut file) = std::fs::File::open(&path) else {
        return WalFile::Missing;
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let mut header = [0u8; WAL_HEADER as usize];
    if file.read_exact(&mut header).is_err() {
        return WalFile::Damaged;
    }
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let page = u64::from(u32::from_be_bytes([
        header[8], header[9], header[10], header[11],
    ]));
    if !WAL_MAGIC.contains(&magic) || !(512..=65536).contains(&page) || !page.is_power_of_two() {
        return WalFile::Damaged;
    }
    let frames = len - WAL_HEADER;
    if frames < page + FRAME_HEADER || (frames % (page + FRAME_HEADER) != 0 && len != size_limit) {
        return WalFile::Damaged;
    }
    WalFile::Present
}

/// The wal-index (`-shm`) header's version, and its two copies' length.
const SHM_VERSION: u32 = 3_007_000;
const SHM_HEADER: usize = 48;

/// How many frames the WAL of `db` held when the store last committed, by its wal-index
/// (`-shm`), read before SQLite opens the file (which rebuilds the index from the WAL). A WAL
/// cut at a frame boundary has whole frames and a valid header, so it looks like one with
/// fewer commits; only this witness, which outlives a killed process, tells the difference.
/// `None` when there is no index, or it does not belong to the WAL beside it (other salts),
/// or its two header copies disagree (a writer was updating it).
pub(super) fn committed_frames(db: &Path) -> Option<u32> {
    let mut shm_name = db.as_os_str().to_owned();
    shm_name.push("-shm");
    let mut shm = [0u8; 2 * SHM_HEADER];
    std::fs::File::open(PathBuf::from(shm_name))
        .and_then(|mut f| f.read_exact(&mut shm))
        .ok()?;
    let mut wal = [0u8; WAL_HEADER as usize];
    std::fs::File::open(wal_path(db))
        .and_then(|mut f| f.read_exact(&mut wal))
        .ok()?;
    // Native byte order: the index is shared memory of this machine. The salts are the WAL
    // header's bytes 16..24, copied as they are.
    let word = |h: &[u8], at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let (first, second) = shm.split_at(SHM_HEADER);
    if first != second
        || word(first, 0) != SHM_VERSION
        || first[12] != 1
        || first[32..40] != wal[16..24]
    {
        return None;
    }
    Some(word(first, 16))
}

/// Whether an open failed because the file is corrupt (move it aside) rather than unreadable,
/// full or locked (fail, and keep it).
pub(super) fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Whether an open failed on the schema: a table or column that the version promises is
/// missing, or one a migration adds is there already.
pub(super) fn is_schema_mismatch(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::Unknown)
}

/// The name a corrupt file is moved to: `<file>.corrupt-<UTC time>`.
pub(super) fn corrupt_name(db: &Path, now_ms: i64) -> PathBuf {
    let stamp = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ");
    let mut name = db.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    PathBuf::from(name)
}

/// Renames `db` and its WAL to `aside` (and `aside-wal`), and deletes its shared-memory index.
///
/// # Errors
/// The rename of the main file.
pub(super) fn move_aside(db: &Path, aside: &Path) -> std::io::Result<()> {
    std::fs::rename(db, aside)?;
    let wal = wal_path(db);
    if wal.exists() {
        std::fs::rename(&wal, wal_path(aside))?;
    }
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    let _gone = std::fs::remove_file(PathBuf::from(shm));
    Ok(())
}

/// The file beside `db` that keeps a copy of the seq marks: `<db>.seqs`.
pub(super) fn marks_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".seqs");
    PathBuf::from(name)
}

/// Writes every key's seq mark to `<db>.seqs` (JSON, through a synced temporary file and a
/// rename), a witness apart from the main file for when that file is too corrupt to yield
/// them. Written only when marks move: once per several thousand messages of a key.
///
/// # Errors
/// Writing, syncing or renaming the file.
pub(super) fn save_marks(db: &Path, marks: &HashMap<String, u64>) -> std::io::Result<()> {
    let path = marks_path(db);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let json = serde_json::to_vec(marks).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, &json)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// The seq marks `<db>.seqs` holds, if it can be read.
pub(super) fn load_marks(db: &Path) -> Option<HashMap<String, u64>> {
    let bytes = std::fs::read(marks_path(db)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What a corrupt file still yields: each key's highest seq mark and the loss counter. Empty
/// when even that cannot be read.
#[derive(Debug, Default)]
pub(super) struct Salvage {
    /// Per key, a seq at or above every seq the file ever stored.
    pub(super) seqs: HashMap<String, u64>,
    /// The old file's `store.losses_total`.
    pub(super) losses_total: u64,
}

/// Reads what it can from the file moved aside, read-only.
pub(super) fn salvage(aside: &Path) -> Result<Salvage, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        aside,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let query = |sql: &str| -> rusqlite::Result<HashMap<String, u64>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
        rows.collect()
    };
    // A file from before the marks has only `next`.
    let seqs = query("SELECT key, max(next, reserved) FROM seqs")
        .or_else(|_| query("SELECT key, next FROM seqs"))?;
    let losses_total = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'store.losses_total'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    Ok(Salvage { seqs, losses_total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wal_is_judged_by_its_header_and_whole_frames() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let wal = wal_path(&db);
        assert_eq!(inspect_wal(&db, 1 << 20), WalFile::Missing);
        let mut bytes = vec![0u8; 32 + 2 * (4096 + 24)];
        std::fs::write(&wal, &bytes).unwrap();
        assert_eq!(inspect_wal(&db, 1 << 20), WalFile::Damaged, "zeroed");
        bytes[..4].copy_from_slice(&0x377f_0682u32.to_be_bytes());
        bytes[8..12].copy_from_slice(&4096u32.to_be_bytes());
        std::fs::write(&wal, &bytes).unwrap();
        assert_eq!(inspect_wal(&db, 1 << 20), WalFile::Present);
        std::fs::write(&wal, &bytes[..bytes.len() - 100]).unwrap();
        assert_eq!(
            inspect_wal(&db, 1 << 20),
            WalFile::Damaged,
            "cut in a frame"
        );
        let limit = (bytes.len() - 100) as u64;
        assert_eq!(
            inspect_wal(&db, limit),
            WalFile::Present,
            "cut to the limit"
        );
        std::fs::write(&wal, &bytes[..32]).unwrap();
        assert_eq!(inspect_wal(&db, 1 << 20), WalFile::Damaged, "no frame");
    }

    #[test]
    fn a_corrupt_file_is_named_by_its_utc_time() {
        let name = corrupt_name(Path::new("/x/state.db"), 1_765_000_000_000);
        assert_eq!(name, Path::new("/x/state.db.corrupt-20251206T054640Z"));
    }
}
