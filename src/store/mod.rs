//! The state store: one SQLite file (WAL, `synchronous=FULL`) owned by one dedicated thread
//! (docs/design.md §5), and every other reader of that file. Its parts:
//! - [`outbox`]: messages kept until the broker acknowledges them, with their seqs;
//! - [`ledger`]: the energy intervals and counter events; [`platform_source`] reads them back
//!   for the energy platform's day, month and year records;
//! - [`alarms`]: raised alarms and the operator command queue; [`audit`]: the hash-chained
//!   audit trail of downlink commands;
//! - [`offline`]: read-only opening beside the daemon, and `plantwatch backup`; [`lock`]: one
//!   daemon per file; [`health`] and the private recovery and space checks: write failures,
//!   a full disk, a lost WAL.
//!
//! Shape: [`Store::open`] opens and migrates the file, then moves the connection into a
//! `std::thread` (rusqlite blocks, so it is not a task). Callers hold a cheap, cloneable
//! [`StoreHandle`]; each call sends a request over a bounded channel and awaits the answer on a
//! oneshot. The thread stops when the last handle is dropped; [`StoreHandle::closed`] tells the
//! supervisor when it has.
//!
//! Group commit (flash wear, docs/design.md §5, §8): the thread takes every request that is waiting,
//! runs them in arrival order inside ONE transaction, commits, and only then answers them. After
//! a commit that wrote, it rests for `commit_window` before the next group, so there are at most
//! `1 / commit_window` write commits per second (each is one fsync of the WAL; checkpoints add
//! a few more per minute) whatever the message rate, and an idle store commits a lone request
//! at once. A caller that awaits each enqueue before making the next gets one message per
//! window: batch messages, or keep several in flight with [`StoreHandle::submit`]. The one
//! exception is an urgent [`StoreHandle::audit_and_send`] (a point write's audit rows, which
//! an operator waits for): it ends the rest at once, at most [`URGENT_PER_SECOND`] times a
//! second.
//!
//! Invariants:
//! - an `Ok` from [`StoreHandle::enqueue`] means the rows are committed with
//!   `synchronous=FULL`: a SIGKILL or power cut after it loses none of them;
//! - requests are applied in the order they were sent, and a read sees every write sent before
//!   it; no answer is sent before its group is committed;
//! - a failed group (any SQLite error, e.g. [`StoreError::DiskFull`]) is rolled back whole and
//!   every request in it gets the error; memory is updated only after a commit, so it always
//!   matches the file; the thread keeps serving, so the store works again once space returns;
//! - the outbox stays within `max_bytes` of payload: the oldest rows are dropped, counted in
//!   `dropped_total` and logged at ERROR once per episode (an episode ends when the payload is
//!   back under 90 % of the bound).

pub mod alarms;
pub mod audit;
pub mod health;
pub mod ledger;
pub mod lock;
mod models;
pub mod offline;
pub mod outbox;
pub mod platform_source;
pub mod record;
mod recovery;
mod schema;
mod space;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, trace, warn};

pub use alarms::{AlarmRow, CommandRow};
pub use audit::{AuditEntry, AuditRow, SeenId};
pub use health::{Loss, StoreHealth};
pub use outbox::{
    DEFAULT_QUEUE, OutboxMessage, OutboxRow, OutboxStats, QueueId, QueueSize, RowId, Span,
};
use outbox::{OpError, OutboxState};

/// Requests that may wait for the store thread; beyond this, callers wait to send
/// (backpressure instead of unbounded memory).
const QUEUE: usize = 256;

/// The most requests committed in one transaction; more wait for the next group.
const MAX_GROUP: usize = 4 * QUEUE;

/// Prepared statements kept by the store's connection.
const STATEMENT_CACHE: usize = 64;

/// How long a connection waits for a lock held by another process (e.g. `plantwatch export`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer connection's page cache, in KiB (SQLite's default is 2000).
const STORE_CACHE_KIB: i64 = 512;

/// How far each key's seq high-water mark moves ahead of its seqs: the gap a consumer sees
/// after a lost WAL. Keys near their mark move with any key that reaches its own, so that one
/// checkpoint serves them all; at 5 messages a second per key, that is one every half hour.
const SEQ_BLOCK: u64 = 10_000;

/// A TRUNCATE checkpoint at least this often while the store writes, so that the main file
/// holds nearly everything and the WAL gives its space back.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);

/// Delivered rows deleted per transaction while the disk is full: a few dozen pages of WAL.
const ACK_CHUNK: usize = 256;

/// `meta` keys of the recovery bookkeeping (see `recovery.rs`).
const META_RUNNING: &str = "store.running";
const META_LOSSES: &str = "store.losses_total";
const META_CHECKPOINTS: &str = "store.checkpoints";

/// What the daemon does when it finds its state file corrupt at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCorrupt {
    /// Log an ERROR, rename the file to `state.db.corrupt-<UTC time>` and start a fresh one,
    /// rather than fail every start under `Restart=on-failure`.
    #[default]
    MoveAside,
    /// Fail to start, leaving the file for an operator.
    Refuse,
}

/// 256 MiB: about an hour of the 200-meter workload at 1 s (a device message takes about 350
/// bytes in the compact outbox form); small enough for any gateway's card by default.
pub const DEFAULT_MAX_OUTBOX_BYTES: u64 = 256 * 1024 * 1024;

/// What [`Store::open_with`] does about a damaged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// A corrupt file is moved aside (and a fresh one started) or refused.
    pub on_corrupt: OnCorrupt,
    /// Now, ms since the Unix epoch: names the file moved aside.
    pub now_ms: i64,
}

/// How big the outbox may grow and how writes are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Bound on the payload bytes waiting; the oldest rows are dropped beyond it.
    pub max_bytes: u64,
    /// Rest after each write commit, gathering requests: at most one write commit per window.
    pub commit_window: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_OUTBOX_BYTES,
            commit_window: Duration::from_millis(100),
        }
    }
}

/// Why the store could not do what was asked. Every variant names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened.
    #[error("store {}: cannot open the database", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The file system refused WAL mode (e.g. a network file system).
    #[error("store {}: WAL mode is unavailable (journal mode is `{mode}`)", path.display())]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The file was written by a newer plantwatch.
    #[error(
        "store {}: schema version {found} is newer than this build supports ({supported})",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The disk (or the database's page limit) is full; nothing in the group was stored.
    #[error("store {}: the disk is full", path.display())]
    DiskFull {
        /// The database file.
        path: PathBuf,
        /// SQLite's report.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// Any other SQLite failure; nothing in the group was stored.
    #[error("store {}: cannot {what}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        what: &'static str,
        /// SQLite's report.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A message's seq is below the key's next seq, so it may already have been sent.
    #[error("store {}: seq {seq} for `{key}` was already used (next is {next})", path.display())]
    SeqReused {
        /// The database file.
        path: PathBuf,
        /// The sequence key.
        key: String,
        /// The refused seq.
        seq: u64,
        /// The lowest seq the key accepts.
        next: u64,
    },
    /// A message names a queue that was never opened with [`StoreHandle::queue`].
    #[error("store {}: outbox queue {queue} does not exist", path.display())]
    UnknownQueue {
        /// The database file.
        path: PathBuf,
        /// The queue id.
        queue: QueueId,
    },
    /// A seq does not fit SQLite's signed 64-bit integers.
    #[error("store {}: seq {seq} for `{key}` is out of range", path.display())]
    SeqOutOfRange {
        /// The database file.
        path: PathBuf,
        /// The sequence key.
        key: String,
        /// The refused seq.
        seq: u64,
    },
    /// The store thread could not be started.
    #[error("store {}: cannot start the store thread", path.display())]
    Spawn {
        /// The database file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A table the schema version promises is missing.
    #[error("store {}: table `{table}` is missing for schema version {version}", path.display())]
    SchemaMismatch {
        /// The database file.
        path: PathBuf,
        /// The missing table.
        table: String,
        /// The version in the file.
        version: u32,
    },
    /// A corrupt file could not be moved aside.
    #[error("store {}: cannot move the corrupt file to {}", path.display(), to.display())]
    MoveAside {
        /// The database file.
        path: PathBuf,
        /// Where it was to go.
        to: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Another process (another daemon, or `replay --state`) has the file open for writing.
    #[error(
        "store {}: in use by PID {}; two writers would send different readings under the same seqs. Stop it first (e.g. `systemctl stop plantwatch`)",
        path.display(),
        holder.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
    )]
    InUse {
        /// The database file.
        path: PathBuf,
        /// The PID in the lock file, once the holder has written it.
        holder: Option<u32>,
    },
    /// The lock file beside the database could not be created or locked.
    #[error("store {}: cannot take its lock", path.display())]
    Lock {
        /// The database file.
        path: PathBuf,
        /// What the lock file refused.
        #[source]
        source: Arc<lock::LockError>,
    },
    /// The store thread has stopped.
    #[error("store {}: the store thread has stopped", path.display())]
    Closed {
        /// The database file.
        path: PathBuf,
    },
}

impl StoreError {
    /// What an open failure says about the file: corrupt, a schema that does not match its
    /// version, or neither (unreadable, locked, full: keep the file and fail).
    fn damage(&self) -> Option<Loss> {
        match self {
            Self::SchemaMismatch { .. } => Some(Loss::Schema),
            Self::Open { source, .. } | Self::Sqlite { source, .. }
                if recovery::is_corrupt(source) =>
            {
                Some(Loss::Corrupt)
            }
            Self::Sqlite { source, .. } if recovery::is_schema_mismatch(source) => {
                Some(Loss::Schema)
            }
            _ => None,
        }
    }

    /// Wraps a SQLite error, recognising a full disk.
    fn sqlite(path: PathBuf, what: &'static str, e: rusqlite::Error) -> Self {
        let full =
            matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull);
        let source = Arc::new(e);
        if full {
            Self::DiskFull { path, source }
        } else {
            Self::Sqlite { path, what, source }
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One call from a handle to the store thread.
enum Request {
    Enqueue {
        msgs: Vec<OutboxMessage>,
        reply: Reply<Vec<RowId>>,
    },
    Fetch {
        queue: QueueId,
        after: Option<RowId>,
        limit: usize,
        reply: Reply<Vec<OutboxRow>>,
    },
    FetchSpans {
        spans: Vec<Span>,
        reply: Reply<Vec<Vec<OutboxRow>>>,
    },
    Ack {
        queue: QueueId,
        rows: Vec<RowId>,
        reply: Reply<()>,
    },
    Stats {
        reply: Reply<OutboxStats>,
    },
    QueueSize {
        queue: QueueId,
        reply: Reply<QueueSize>,
    },
    OpenQueue {
        name: String,
        reply: Reply<QueueId>,
    },
    NextSeq {
        key: String,
        reply: Reply<u64>,
    },
    Newest {
        queue: QueueId,
        reply: Reply<Option<RowId>>,
    },
    SaveAlarms {
        rows: Vec<AlarmRow>,
        reply: Reply<()>,
    },
    LoadAlarms {
        reply: Reply<Vec<AlarmRow>>,
    },
    PendingCommands {
        reply: Reply<Vec<CommandRow>>,
    },
    SaveState {
        scope: &'static str,
        rows: Vec<(String, String)>,
        reply: Reply<()>,
    },
    LoadState {
        scope: &'static str,
        reply: Reply<Vec<(String, String)>>,
    },
    SaveModels {
        rows: Vec<crate::detect::snapshot::ModelSnapshot>,
        saved_ms: i64,
        reply: Reply<()>,
    },
    LoadModels {
        reply: Reply<Vec<crate::detect::snapshot::ModelSnapshot>>,
    },
    SaveIntervals {
        rows: Vec<crate::process::ledger::LedgerInterval>,
        reply: Reply<()>,
    },
    SaveEnergyEvents {
        rows: Vec<crate::process::ledger::LedgerEvent>,
        reply: Reply<()>,
    },
    AnswerCommands {
        answers: Vec<(i64, String)>,
        reply: Reply<()>,
    },
    Audit {
        // Boxed: the row is far larger than the other requests.
        append: Box<(AuditEntry, Option<SeenId>)>,
        prune_before_ms: i64,
        reply: Reply<(AuditRow, String)>,
    },
    AuditAndSend {
        append: Box<(AuditEntry, Option<SeenId>, AuditDelivery)>,
        prune_before_ms: i64,
        reply: Reply<(AuditRow, String)>,
    },
    SeenIds {
        since_ms: i64,
        reply: Reply<Vec<SeenId>>,
    },
}

impl Request {
    fn writes(&self) -> bool {
        matches!(
            self,
            Self::Enqueue { .. }
                | Self::Ack { .. }
                | Self::OpenQueue { .. }
                | Self::SaveAlarms { .. }
                | Self::SaveState { .. }
                | Self::SaveModels { .. }
                | Self::SaveIntervals { .. }
                | Self::SaveEnergyEvents { .. }
                | Self::AnswerCommands { .. }
                | Self::Audit { .. }
                | Self::AuditAndSend { .. }
        )
    }

    /// Whether it may cut the commit window's rest short (see [`AuditDelivery::urgent`]).
    fn urgent(&self) -> bool {
        matches!(self, Self::AuditAndSend { append, .. } if append.2.urgent)
    }

    /// The outbox rows it stores, whose seqs must be reserved first.
    fn outbox_messages(&self) -> impl Iterator<Item = &OutboxMessage> {
        let (a, b): (&[OutboxMessage], &[OutboxMessage]) = match self {
            Self::Enqueue { msgs, .. } => (msgs, &[]),
            Self::AuditAndSend { append, .. } => (&append.2.copies, &append.2.also),
            _ => (&[], &[]),
        };
        a.iter().chain(b)
    }

    /// Runs the request inside the open transaction. The second value is a failure that
    /// dooms the whole group.
    fn process(
        self,
        conn: &Connection,
        st: &mut OutboxState,
        ctx: &Ctx<'_>,
        path: &Path,
    ) -> (Done, Option<StoreError>) {
        match self {
            Self::Enqueue { msgs, reply } => {
                finish(reply, outbox::enqueue(conn, st, &msgs, path), path)
            }
            Self::Fetch {
                queue,
                after,
                limit,
                reply,
            } => {
                let rows = outbox::fetch(conn, queue, after, limit)
                    .map(|rows| ctx.pending.unacked(queue, rows));
                finish(reply, rows, path)
            }
            Self::FetchSpans { spans, reply } => {
                let rows = spans
                    .into_iter()
                    .map(|span| {
                        outbox::fetch_span(conn, span)
                            .map(|rows| ctx.pending.unacked(span.queue, rows))
                    })
                    .collect();
                finish(reply, rows, path)
            }
            Self::Ack { queue, rows, reply } => finish(
                reply,
                outbox::ack(conn, st, queue, &rows).map(|_deleted| ()),
                path,
            ),
            Self::Stats { reply } => {
                let stats = outbox::stats(conn, st).map(|s| OutboxStats {
                    health: StoreHealth {
                        disk_full: st.full,
                        ..*ctx.health
                    },
                    ..s
                });
                finish(reply, stats, path)
            }
            Self::QueueSize { queue, reply } => {
                let size = st.queues.get(&queue).copied().unwrap_or_default();
                finish(reply, Ok(size), path)
            }
            Self::OpenQueue { name, reply } => {
                finish(reply, outbox::open_queue(conn, st, &name), path)
            }
            Self::NextSeq { key, reply } => {
                let next = st.seqs.get(&key).copied().unwrap_or(0);
                finish(reply, Ok(next), path)
            }
            Self::Newest { queue, reply } => finish(reply, outbox::newest(conn, queue), path),
            Self::SaveAlarms { rows, reply } => finish(reply, alarms::save(conn, &rows), path),
            Self::LoadAlarms { reply } => finish(reply, alarms::load(conn), path),
            Self::PendingCommands { reply } => finish(reply, alarms::pending_commands(conn), path),
            Self::AnswerCommands { answers, reply } => {
                finish(reply, alarms::answer(conn, &answers), path)
            }
            Self::SaveState { scope, rows, reply } => {
                finish(reply, alarms::save_state(conn, scope, &rows), path)
            }
            Self::LoadState { scope, reply } => {
                finish(reply, alarms::load_state(conn, scope), path)
            }
            Self::SaveModels {
                rows,
                saved_ms,
                reply,
            } => finish(reply, models::save(conn, &rows, saved_ms), path),
            Self::LoadModels { reply } => finish(reply, models::load(conn), path),
            Self::SaveIntervals { rows, reply } => finish(reply, ledger::save(conn, &rows), path),
            Self::SaveEnergyEvents { rows, reply } => {
                finish(reply, ledger::save_events(conn, &rows), path)
            }
            Self::Audit {
                append,
                prune_before_ms,
                reply,
            } => finish(
                reply,
                audit::append(conn, &append.0, append.1.as_ref(), prune_before_ms),
                path,
            ),
            Self::AuditAndSend {
                append,
                prune_before_ms,
                reply,
            } => {
                let (entry, seen, delivery) = *append;
                let result = audit_and_send(
                    conn,
                    st,
                    path,
                    &entry,
                    seen.as_ref(),
                    prune_before_ms,
                    delivery,
                );
                finish(reply, result, path)
            }
            Self::SeenIds { since_ms, reply } => {
                finish(reply, audit::seen_since(conn, since_ms), path)
            }
        }
    }

    /// A request the failed group never reached; it gets the group's error.
    fn unprocessed(self) -> Done {
        match self {
            Self::Enqueue { reply, .. } => Done::new(reply, None),
            Self::Fetch { reply, .. } => Done::new(reply, None),
            Self::FetchSpans { reply, .. } => Done::new(reply, None),
            Self::Ack { reply, .. } => Done::new(reply, None),
            Self::Stats { reply } => Done::new(reply, None),
            Self::QueueSize { reply, .. } => Done::new(reply, None),
            Self::OpenQueue { reply, .. } => Done::new(reply, None),
            Self::NextSeq { reply, .. } => Done::new(reply, None),
            Self::Newest { reply, .. } => Done::new(reply, None),
            Self::SaveAlarms { reply, .. } => Done::new(reply, None),
            Self::LoadAlarms { reply } => Done::new(reply, None),
            Self::PendingCommands { reply } => Done::new(reply, None),
            Self::SaveState { reply, .. } => Done::new(reply, None),
            Self::LoadState { reply, .. } => Done::new(reply, None),
            Self::SaveModels { reply, .. } => Done::new(reply, None),
            Self::LoadModels { reply } => Done::new(reply, None),
            Self::SaveIntervals { reply, .. } => Done::new(reply, None),
            Self::SaveEnergyEvents { reply, .. } => Done::new(reply, None),
            Self::AnswerCommands { reply, .. } => Done::new(reply, None),
            Self::Audit { reply, .. } | Self::AuditAndSend { reply, .. } => Done::new(reply, None),
            Self::SeenIds { reply, .. } => Done::new(reply, None),
        }
    }
}

/// Outbox rows committed in the same transaction as an audit row, so that a reply is never
/// stored without the row that records it, and the row's copy on `{prefix}/audit` is never
/// lost to a crash between two commits.
#[derive(Debug, Default)]
pub struct AuditDelivery {
    /// The row's copies, one per sink queue, each with its seq; the store fills the payload
    /// with the row as appended ([`AuditRow::message`], as a wire record).
    pub copies: Vec<OutboxMessage>,
    /// Other rows to store with it, e.g. the command's reply.
    pub also: Vec<OutboxMessage>,
    /// Commit at once instead of after the rest of the commit window: for the write path,
    /// where each commit is a step the operator waits for. At most [`URGENT_PER_SECOND`]
    /// commits a second cut the rest short; beyond that they wait like any other.
    pub urgent: bool,
}

/// Urgent commits a second that may cut the commit window's rest short: the fsync rate stays
/// bounded (1 / `commit_window` + this, so at most twice the window's rate at 100 ms) whatever
/// a peer sends. A write takes two (intent, outcome): five writes a second go at full speed,
/// more wait the window.
pub const URGENT_PER_SECOND: u32 = 10;

/// Appends an audit row and stores `delivery` with it, all or nothing: a refused enqueue
/// takes the row back out (a savepoint), so that the caller's error means nothing was kept.
fn audit_and_send(
    conn: &Connection,
    st: &mut OutboxState,
    path: &Path,
    entry: &AuditEntry,
    seen: Option<&SeenId>,
    prune_before_ms: i64,
    delivery: AuditDelivery,
) -> Result<(AuditRow, String), OpError> {
    outbox::sql(
        "open a savepoint",
        run_cached(conn, "SAVEPOINT audit_and_send"),
    )?;
    let appended = audit::append(conn, entry, seen, prune_before_ms).and_then(|(row, prev)| {
        let message = record::encode_wire(&row.message(&prev), false);
        let AuditDelivery { copies, also, .. } = delivery;
        let msgs: Vec<OutboxMessage> = copies
            .into_iter()
            .map(|m| OutboxMessage {
                payload: message.clone(),
                ..m
            })
            .chain(also)
            .collect();
        outbox::enqueue(conn, st, &msgs, path).map(|_rows| (row, prev))
    });
    if appended.is_err() {
        outbox::sql(
            "roll back to the savepoint",
            run_cached(conn, "ROLLBACK TO audit_and_send"),
        )?;
    }
    outbox::sql(
        "release the savepoint",
        run_cached(conn, "RELEASE audit_and_send"),
    )?;
    appended
}

/// What a request may read besides the connection and the outbox state.
struct Ctx<'a> {
    health: &'a StoreHealth,
    pending: &'a PendingAcks,
}

/// Rows the broker acknowledged whose delete has not committed yet (it failed, e.g. on a full
/// disk). The store deletes them before its next write group, a chunk at a time, so a delete
/// never fails for good, and fetches skip them meanwhile, so a reconnect does not send them
/// again.
#[derive(Debug, Default)]
struct PendingAcks(BTreeMap<QueueId, BTreeSet<RowId>>);

impl PendingAcks {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn add(&mut self, queue: QueueId, rows: &[RowId]) {
        self.0
            .entry(queue)
            .or_default()
            .extend(rows.iter().copied());
    }

    /// `rows` without those waiting for their delete.
    fn unacked(&self, queue: QueueId, mut rows: Vec<OutboxRow>) -> Vec<OutboxRow> {
        if let Some(pending) = self.0.get(&queue) {
            rows.retain(|r| !pending.contains(&r.id));
        }
        rows
    }
}

fn finish<T: Send + 'static>(
    reply: Reply<T>,
    r: Result<T, OpError>,
    path: &Path,
) -> (Done, Option<StoreError>) {
    match r {
        Ok(v) => (Done::new(reply, Some(Ok(v))), None),
        Err(OpError::Rejected(e)) => (Done::new(reply, Some(Err(e))), None),
        Err(OpError::Sql(what, e)) => (
            Done::new(reply, None),
            Some(StoreError::sqlite(path.to_path_buf(), what, e)),
        ),
    }
}

/// Sends an answer, given the group's failure (if any) and the file path.
type Answer = Box<dyn FnOnce(Option<&StoreError>, &Path) + Send>;

/// An answer held back until its group's commit decides what it is.
struct Done(Answer);

impl Done {
    fn new<T: Send + 'static>(reply: Reply<T>, result: Option<Result<T, StoreError>>) -> Self {
        Self(Box::new(move |failure, path| {
            let answer = match (failure, result) {
                (Some(e), _) => Err(e.clone()),
                (None, Some(r)) => r,
                // Unreached: a request goes unprocessed only when its group failed.
                (None, None) => Err(StoreError::Closed {
                    path: path.to_path_buf(),
                }),
            };
            if reply.send(answer).is_err() {
                trace!("The caller stopped waiting for the store.");
            }
        }))
    }

    fn send(self, failure: Option<&StoreError>, path: &Path) {
        (self.0)(failure, path);
    }
}

/// The store thread's state: the connection and what it remembers between groups.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    limits: OutboxLimits,
    outbox: OutboxState,
    /// The file system's room, the reserve file and the full condition.
    space: space::Space,
    /// Deletes of delivered rows that wait for a write group that commits.
    pending_acks: PendingAcks,
    /// Failing writes, for the log, `/metrics` and the watchdog.
    failures: health::WriteFailures,
    /// What was found lost when the file was opened.
    loss: Option<Loss>,
    /// Losses found at open, ever.
    losses_total: u64,
    /// Each key's seq high-water mark, as committed and checkpointed: no seq at or above it
    /// is stored before the mark moves.
    reserved: HashMap<String, u64>,
    /// When the WAL was last checkpointed.
    last_checkpoint: Instant,
    /// This process's hold on the file: no other writer while the connection is open.
    lock: lock::StateLock,
}

/// A file opened and checked, before its thread starts.
struct Opened {
    conn: Connection,
    outbox: OutboxState,
    reserved: HashMap<String, u64>,
    loss: Option<Loss>,
    losses_total: u64,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`, and starts its thread.
    ///
    /// Blocks briefly on file I/O; call it at startup, before the runtime is busy.
    ///
    /// # Errors
    /// [`StoreError`] when another process holds the file ([`StoreError::InUse`]), it cannot be
    /// opened, is not in WAL mode, was written by a newer build, or the thread cannot start.
    pub fn open(path: &Path, limits: OutboxLimits) -> Result<StoreHandle, StoreError> {
        let refuse = Recovery {
            on_corrupt: OnCorrupt::Refuse,
            now_ms: 0,
        };
        Self::open_with(path, limits, refuse)
    }

    /// [`Self::open`] for the daemon: state lost since the last run is reported (and seqs
    /// continue past it), and a corrupt file is moved aside per `recovery`.
    ///
    /// # Errors
    /// As [`Self::open`]; a corrupt file only with [`OnCorrupt::Refuse`], or when it cannot be
    /// moved aside.
    pub fn open_with(
        path: &Path,
        limits: OutboxLimits,
        recovery: Recovery,
    ) -> Result<StoreHandle, StoreError> {
        // Before anything reads the file: what a second writer would see is not to be trusted.
        let lock = lock::StateLock::acquire(path).map_err(|e| match e {
            lock::LockError::Held { holder, .. } => StoreError::InUse {
                path: path.to_path_buf(),
                holder,
            },
            e @ lock::LockError::Io { .. } => StoreError::Lock {
                path: path.to_path_buf(),
                source: Arc::new(e),
            },
        })?;
        let space = space::Space::new(path);
        let wal = recovery::inspect_wal(path, space.wal_max);
        let committed = recovery::committed_frames(path);
        let opened = match Self::open_file(path, wal, committed) {
            Ok(opened) => opened,
            Err(e) => match (e.damage(), recovery.on_corrupt) {
                (Some(kind), OnCorrupt::MoveAside) => {
                    Self::replace(path, &e, kind, recovery.now_ms)?
                }
                (Some(kind), OnCorrupt::Refuse) => {
                    error!(path = %path.display(), error = %e, cause = %cause(&e), "{}; store.on_corrupt = \"refuse\" keeps it.", capitalised(kind.describe()));
                    return Err(e);
                }
                (None, _) => return Err(e),
            },
        };
        Self::start(opened, path, limits, space, lock)
    }

    /// Opens, migrates and checks the file, and finds what an unclean stop lost: `wal` is what
    /// was found where the WAL should be, `committed` the frames its index counted.
    fn open_file(
        path: &Path,
        wal: recovery::WalFile,
        committed: Option<u32>,
    ) -> Result<Opened, StoreError> {
        let err = |what: &'static str| move |e| StoreError::sqlite(path.to_path_buf(), what, e);
        let mut conn = open_connection(path)?;
        // Before anything writes: how many valid frames SQLite found in the WAL.
        let frames: i64 = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .map_err(err("read the WAL"))?;
        schema::migrate(&mut conn, path)?;
        schema::verify(&conn, path)?;
        let mut outbox = outbox::load(&conn).map_err(err("load the outbox"))?;
        let reserved = outbox::load_reserved(&conn).map_err(err("load the seq marks"))?;
        let meta = |key: &str| -> Result<u64, StoreError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(err("read the meta table"))
        };
        let was_running = meta(META_RUNNING)? == 1;
        let mut losses_total = meta(META_LOSSES)?;
        let mut loss = None;
        let cut = committed.is_some_and(|n| i64::from(n) > frames);
        if was_running && (wal != recovery::WalFile::Present || frames <= 0 || cut) {
            // Commits since the last checkpoint are gone, and with them the seqs they moved:
            // every key continues from its mark, which was checkpointed before use.
            conn.execute("UPDATE seqs SET next = max(next, reserved)", [])
                .map_err(err("move the seqs past their marks"))?;
            outbox.seqs = outbox::load_seqs(&conn).map_err(err("load the seqs"))?;
            losses_total += 1;
            loss = Some(Loss::Wal);
            error!(
                path = %path.display(),
                wal = ?wal,
                wal_frames = frames,
                committed_frames = ?committed,
                rows = outbox.rows,
                "State lost: {}; messages stored since the last checkpoint are gone, and seqs continue past their high-water marks.",
                Loss::Wal.describe()
            );
        }
        Ok(Opened {
            conn,
            outbox,
            reserved,
            loss,
            losses_total,
        })
    }

    /// Moves a corrupt file aside and opens a fresh one, carrying over the seq marks and loss
    /// count the old file still yields.
    fn replace(
        path: &Path,
        failure: &StoreError,
        kind: Loss,
        now_ms: i64,
    ) -> Result<Opened, StoreError> {
        let aside = recovery::corrupt_name(path, now_ms);
        error!(
            path = %path.display(),
            moved_to = %aside.display(),
            error = %failure,
            cause = %cause(failure),
            "{}; moving it aside and starting a fresh state file.",
            capitalised(kind.describe())
        );
        recovery::move_aside(path, &aside).map_err(|e| StoreError::MoveAside {
            path: path.to_path_buf(),
            to: aside.clone(),
            source: Arc::new(e),
        })?;
        let beside = recovery::load_marks(path);
        let mut salvage = recovery::salvage(&aside).unwrap_or_else(|e| {
            if beside.is_some() {
                warn!(
                    path = %aside.display(),
                    error = %e,
                    marks = %recovery::marks_path(path).display(),
                    "No seqs could be read from the corrupt file; they continue past the marks kept beside it."
                );
            } else {
                error!(
                    path = %aside.display(),
                    error = %e,
                    "No seqs could be read from the corrupt file, and no marks are kept beside it; seqs restart from 0."
                );
            }
            recovery::Salvage::default()
        });
        for (key, mark) in beside.unwrap_or_default() {
            let seq = salvage.seqs.entry(key).or_default();
            *seq = (*seq).max(mark);
        }
        let mut opened = Self::open_file(path, recovery::WalFile::Missing, None)?;
        let err = |what: &'static str| move |e| StoreError::sqlite(path.to_path_buf(), what, e);
        for (key, &mark) in &salvage.seqs {
            opened
                .conn
                .execute(
                    "INSERT INTO seqs (key, next, reserved) VALUES (?1, ?2, ?2)",
                    params![key, mark],
                )
                .map_err(err("carry the seqs over"))?;
            opened.outbox.seqs.insert(key.clone(), mark);
            opened.reserved.insert(key.clone(), mark);
        }
        if !salvage.seqs.is_empty() {
            info!(
                keys = salvage.seqs.len(),
                "Seqs carried over from the corrupt file."
            );
        }
        opened.losses_total = salvage.losses_total + 1;
        opened.loss = Some(kind);
        Ok(opened)
    }

    /// Marks the file as open, checkpoints, and starts the thread.
    fn start(
        opened: Opened,
        path: &Path,
        limits: OutboxLimits,
        mut space: space::Space,
        lock: lock::StateLock,
    ) -> Result<StoreHandle, StoreError> {
        let Opened {
            conn,
            outbox,
            reserved,
            loss,
            losses_total,
        } = opened;
        let err = |what: &'static str| move |e| StoreError::sqlite(path.to_path_buf(), what, e);
        space.configure(&conn).map_err(err("size the WAL"))?;
        if !space.ensure_reserve() {
            warn!(
                path = %space.reserve_path().display(),
                bytes = space.reserve_bytes,
                "No room for the store's reserve file; a full disk may stall deletes until space returns."
            );
        }
        for (key, value) in [(META_RUNNING, 1), (META_LOSSES, losses_total)] {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(err("mark the file open"))?;
        }
        info!(
            path = %path.display(),
            rows = outbox.rows,
            bytes = outbox.bytes,
            "Store opened."
        );
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
            limits,
            outbox,
            space,
            pending_acks: PendingAcks::default(),
            failures: health::WriteFailures::default(),
            loss,
            losses_total,
            reserved,
            last_checkpoint: crate::clock::monotonic(),
            lock,
        };
        // The mark must be in the main file, not only in a WAL that may be lost.
        store.checkpoint(true);
        store.save_marks();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (exit_tx, exit_rx) = watch::channel(());
        std::thread::Builder::new()
            .name("plantwatch-store".into())
            .spawn(move || store.run(rx, exit_tx))
            .map_err(|e| StoreError::Spawn {
                path: path.to_path_buf(),
                source: Arc::new(e),
            })?;
        Ok(StoreHandle {
            tx,
            path: Arc::from(path),
            exited: exit_rx,
        })
    }

    /// The thread body until every handle is gone.
    ///
    /// After a commit that wrote, writes wait out `commit_window` and then share one commit
    /// (the fsync rate limit for flash), while reads arriving meanwhile are answered at once:
    /// the MQTT sink's fetches must not queue behind the window, or delivery would crawl.
    fn run(mut self, mut rx: mpsc::Receiver<Request>, exited: watch::Sender<()>) {
        // A timer-only runtime, so that this thread can wait for a request with a deadline.
        let timer = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "No timer for the commit window; commits are not grouped.");
                None
            }
        };
        let mut held: Vec<Request> = Vec::new();
        let mut urgent = UrgentBudget::default();
        let mut open = true;
        while open {
            let group = if held.is_empty() {
                let Some(first) = rx.blocking_recv() else {
                    break;
                };
                let mut group = vec![first];
                drain_into(&mut rx, &mut group);
                group
            } else {
                let mut group = std::mem::take(&mut held);
                drain_into(&mut rx, &mut group);
                group
            };
            if !self.run_group(group) || self.limits.commit_window.is_zero() {
                continue;
            }
            let Some(timer) = &timer else { continue };
            let deadline = tokio::time::Instant::now() + self.limits.commit_window;
            loop {
                match timer.block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await }) {
                    Ok(Some(req)) if req.urgent() && urgent.take(crate::clock::monotonic()) => {
                        held.push(req);
                        break;
                    }
                    Ok(Some(req)) if req.writes() => held.push(req),
                    Ok(Some(req)) => {
                        let mut reads = vec![req];
                        while let Ok(r) = rx.try_recv() {
                            if r.writes() {
                                held.push(r);
                            } else {
                                reads.push(r);
                            }
                        }
                        self.run_group(reads);
                    }
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_elapsed) => break,
                }
            }
            if !open && !held.is_empty() {
                self.run_group(std::mem::take(&mut held));
            }
        }
        self.mark_stopped();
        let path = self.path;
        if let Err((_, e)) = self.conn.close() {
            warn!(path = %path.display(), error = %e, "Store did not close cleanly.");
        } else {
            info!(path = %path.display(), "Store closed.");
        }
        // Released before `closed` resolves, so that whoever waited on it can open the file.
        drop(self.lock);
        // Dropping the sender resolves every `StoreHandle::closed`.
        drop(exited);
    }

    /// Runs one group in one transaction and answers it; returns whether it wrote.
    fn run_group(&mut self, group: Vec<Request>) -> bool {
        let writes = group.iter().any(Request::writes);
        if writes {
            if !self.pending_acks.is_empty() {
                self.delete_pending_acks();
            }
            if let Err(e) = self.space.bound_pages(&self.conn, self.outbox.full) {
                debug!(path = %self.path.display(), error = %e, "Cannot bound the database to its file.");
            }
        }
        // The acks of this group, kept in case it rolls back (a few ids per PUBACK batch).
        let acks: Vec<(QueueId, Vec<RowId>)> = group
            .iter()
            .filter_map(|r| match r {
                Request::Ack { queue, rows, .. } => Some((*queue, rows.clone())),
                _ => None,
            })
            .collect();
        // Requests change the state in place. A failed write group gets its counters back from
        // this copy and its seq map from the file: copying the map of every key's seq for each
        // write group showed in the steady-state profile, and a rollback is rare.
        let before = if writes {
            self.outbox.without_seqs()
        } else {
            OutboxState::default()
        };
        let mut done = Vec::with_capacity(group.len());
        let health = self.health(crate::clock::monotonic());
        let reserve_failure = if writes {
            self.reserve_seqs(&group).err()
        } else {
            None
        };
        let ctx = Ctx {
            health: &health,
            pending: &self.pending_acks,
        };
        let failure = if let Some(e) = reserve_failure {
            done.extend(group.into_iter().map(Request::unprocessed));
            Some(e)
        } else {
            execute(
                &self.conn,
                &self.path,
                &self.limits,
                &mut self.space,
                &before,
                &mut self.outbox,
                &ctx,
                group,
                &mut done,
                writes,
            )
        };
        match &failure {
            None => {
                if writes {
                    self.pending_acks = PendingAcks::default();
                }
                self.after_commit(&before, writes);
            }
            Some(e) => {
                if !self.conn.is_autocommit()
                    && let Err(re) = self.conn.execute_batch("ROLLBACK")
                {
                    error!(path = %self.path.display(), error = %re, "Store rollback failed.");
                }
                if writes {
                    self.restore(before);
                    for (queue, rows) in &acks {
                        self.pending_acks.add(*queue, rows);
                    }
                    self.log_failure(e);
                    if matches!(e, StoreError::DiskFull { .. }) {
                        self.make_room();
                    }
                } else {
                    let cause = std::error::Error::source(e)
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    warn!(path = %self.path.display(), error = %e, cause = %cause, "Store read failed.");
                }
            }
        }
        for d in done {
            d.send(failure.as_ref(), &self.path);
        }
        writes
    }

    /// Puts the state back as it was before a write group that rolled back.
    fn restore(&mut self, before: OutboxState) {
        let seqs = std::mem::take(&mut self.outbox.seqs);
        self.outbox = OutboxState { seqs, ..before };
        match outbox::load_seqs(&self.conn) {
            Ok(seqs) => self.outbox.seqs = seqs,
            // The map keeps this group's seqs: ahead of the file, so a seq may be skipped (a gap
            // the subscriber sees) but never given twice.
            Err(e) => {
                error!(path = %self.path.display(), error = %e, "Cannot reread the seqs after a rollback.");
            }
        }
    }

    fn after_commit(&mut self, before: &OutboxState, writes: bool) {
        if !writes {
            return;
        }
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            self.checkpoint(true);
        }
        let path = self.path.display();
        let failed = self.failures.succeeded();
        if failed > 0 {
            info!(path = %path, failed, "Store writes succeed again.");
        }
        let st = &self.outbox;
        if st.dropping && !before.dropping {
            error!(
                path = %path,
                dropped = st.episode_dropped,
                max_bytes = self.limits.max_bytes,
                "Outbox full; dropping the oldest messages until it drains."
            );
        }
        if before.dropping && !st.dropping {
            warn!(
                path = %path,
                dropped = before.episode_dropped,
                dropped_total = st.dropped_total,
                "Outbox back under its size bound."
            );
        }
        self.full_changed(before.full);
    }

    /// On entering or leaving the full condition: one WARN each, and the WAL sized for it.
    fn full_changed(&self, was_full: bool) {
        let st = &self.outbox;
        if st.full != was_full {
            let sized = if st.full {
                self.space.hold_wal(&self.conn)
            } else {
                self.space.configure(&self.conn)
            };
            if let Err(e) = sized {
                debug!(path = %self.path.display(), error = %e, "Cannot resize the WAL.");
            }
        }
        if st.full && !was_full {
            warn!(
                path = %self.path.display(),
                headroom = self.space.headroom,
                "State file system full; each new message now replaces the oldest (counted in plantwatch_outbox_dropped_total)."
            );
        }
        if was_full && !st.full {
            warn!(
                path = %self.path.display(),
                dropped = st.full_dropped,
                dropped_total = st.dropped_total,
                "State file system has room again; messages are no longer dropped for space."
            );
        }
    }

    /// After SQLite found the disk full despite the headroom (another process filled it):
    /// frees the reserve and checkpoints into its space, so that the WAL starts over where it
    /// is; keeps the database within its file from then on (see `Space::bound_pages`); deletes
    /// the delivered rows whose delete failed, a few at a time; and drops the oldest messages
    /// for twice the headroom. Each of these is a transaction of its own followed by a
    /// checkpoint, so that none needs more WAL than the last one freed.
    fn make_room(&mut self) {
        let was_full = self.outbox.full;
        self.space.release_reserve();
        self.outbox.full = true;
        self.checkpoint(true);
        if let Err(e) = self.space.bound_pages(&self.conn, true) {
            debug!(path = %self.path.display(), error = %e, "Cannot bound the database to its file.");
        }
        self.delete_pending_acks();
        let before = self.outbox.without_seqs();
        let result = self.in_transaction(|store| {
            let room = outbox::sql("measure the room", store.space.room(&store.conn))?;
            let wanted = store
                .space
                .headroom
                .saturating_mul(2)
                .saturating_sub(room.bytes);
            let dropped = outbox::drop_bytes(&store.conn, &mut store.outbox, wanted, false)?;
            store.outbox.full_dropped += dropped;
            Ok(())
        });
        if let Err(e) = result {
            self.restore(before);
            debug!(path = %self.path.display(), error = ?e, "No room made yet.");
        }
        self.outbox.full = true;
        self.checkpoint(true);
        self.full_changed(was_full);
    }

    /// Deletes the delivered rows whose delete failed, [`ACK_CHUNK`] at a time, each chunk
    /// committed and checkpointed before the next: on a full disk the WAL has only the room it
    /// already takes, and one delete of thousands of rows needs more than that, so retrying
    /// them all at once would fail for as long as the disk stays full.
    fn delete_pending_acks(&mut self) {
        let pending = std::mem::take(&mut self.pending_acks);
        let mut chunks: Vec<(QueueId, Vec<RowId>)> = Vec::new();
        for (queue, rows) in &pending.0 {
            let rows: Vec<RowId> = rows.iter().copied().collect();
            chunks.extend(rows.chunks(ACK_CHUNK).map(|c| (*queue, c.to_vec())));
        }
        let mut chunks = chunks.into_iter();
        for (queue, rows) in chunks.by_ref() {
            let before = self.outbox.without_seqs();
            let result = self.in_transaction(|store| {
                outbox::ack(&store.conn, &mut store.outbox, queue, &rows).map(|_deleted| ())
            });
            if let Err(e) = result {
                self.restore(before);
                debug!(path = %self.path.display(), error = ?e, "Delivered rows not deleted yet.");
                self.pending_acks.add(queue, &rows);
                break;
            }
            self.checkpoint(true);
        }
        for (queue, rows) in chunks {
            self.pending_acks.add(queue, &rows);
        }
    }

    /// Runs `work` in a write transaction of its own, with the counters saved; rolls back on
    /// failure (the caller restores the state).
    fn in_transaction(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<(), OpError>,
    ) -> Result<(), OpError> {
        let before = self.outbox.without_seqs();
        let result = (|| {
            outbox::sql("begin", run_cached(&self.conn, "BEGIN IMMEDIATE"))?;
            work(self)?;
            outbox::save_counters(&self.conn, &before, &self.outbox)?;
            outbox::sql("commit", run_cached(&self.conn, "COMMIT"))
        })();
        if result.is_err() && !self.conn.is_autocommit() {
            let _rolled_back = self.conn.execute_batch("ROLLBACK");
        }
        result
    }

    /// Copies the WAL into the main file; returns whether it all went in (a reader elsewhere
    /// may hold part back; the next checkpoint finishes). Normally the WAL is then truncated
    /// (TRUNCATE mode), giving its space back; on a full disk it is kept (RESTART mode) and
    /// written over from its start, because growing it again may find no room. With
    /// `keep_wal`, one small write follows, because while the store is open its WAL is never
    /// empty: an empty one at the next open means it was lost (see `recovery.rs`).
    fn checkpoint(&mut self, keep_wal: bool) -> bool {
        self.last_checkpoint = crate::clock::monotonic();
        let sql = if self.outbox.full {
            "PRAGMA wal_checkpoint(RESTART)"
        } else {
            "PRAGMA wal_checkpoint(TRUNCATE)"
        };
        let busy = self.conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        let complete = matches!(busy, Ok(0));
        if let Err(e) = &busy {
            debug!(path = %self.path.display(), error = %e, "Checkpoint failed.");
        }
        if keep_wal
            && let Err(e) = self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, 1) \
                 ON CONFLICT (key) DO UPDATE SET value = value + 1",
                [META_CHECKPOINTS],
            )
        {
            debug!(path = %self.path.display(), error = %e, "Cannot count the checkpoint.");
        }
        complete
    }

    /// At a clean stop: the file is no longer open, and everything is in the main file.
    fn mark_stopped(&mut self) {
        if let Err(e) = self
            .conn
            .execute("UPDATE meta SET value = 0 WHERE key = ?1", [META_RUNNING])
        {
            warn!(path = %self.path.display(), error = %e, "Cannot mark the state file closed; the next start may report a lost WAL.");
        }
        if !self.checkpoint(false) {
            warn!(path = %self.path.display(), "The last checkpoint did not finish; the WAL keeps the rest.");
        }
    }

    /// Moves the seq marks of the keys in `group` that reach them a block ahead, commits and
    /// checkpoints that, before the group's rows use them: a seq is stored only below a mark
    /// the main file already holds, so no loss of the WAL can make it be used twice.
    fn reserve_seqs(&mut self, group: &[Request]) -> Result<(), StoreError> {
        let mut marks: HashMap<String, u64> = HashMap::new();
        for req in group {
            for m in req.outbox_messages() {
                let mark = self.reserved.get(&m.key).copied().unwrap_or(0);
                if m.seq >= mark {
                    let want = m.seq.saturating_add(SEQ_BLOCK).min(i64::MAX as u64);
                    let e = marks.entry(m.key.clone()).or_insert(want);
                    *e = (*e).max(want);
                }
            }
        }
        if marks.is_empty() {
            return Ok(());
        }
        for (key, &mark) in &self.reserved {
            let next = self.outbox.seqs.get(key).copied().unwrap_or(0);
            if mark.saturating_sub(next) < SEQ_BLOCK / 2 && !marks.contains_key(key) {
                marks.insert(
                    key.clone(),
                    next.saturating_add(SEQ_BLOCK).min(i64::MAX as u64),
                );
            }
        }
        let result = (|| -> rusqlite::Result<()> {
            run_cached(&self.conn, "BEGIN IMMEDIATE")?;
            let mut upsert = self.conn.prepare_cached(
                "INSERT INTO seqs (key, next, reserved) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET reserved = max(reserved, excluded.reserved)",
            )?;
            for (key, mark) in &marks {
                let next = self.outbox.seqs.get(key).copied().unwrap_or(0);
                upsert.execute(params![key, next, mark])?;
            }
            run_cached(&self.conn, "COMMIT")
        })();
        if let Err(e) = result {
            if !self.conn.is_autocommit() {
                let _rolled_back = self.conn.execute_batch("ROLLBACK");
            }
            return Err(StoreError::sqlite(
                self.path.clone(),
                "move the seq marks",
                e,
            ));
        }
        if !self.checkpoint(true) {
            warn!(path = %self.path.display(), "The seq marks are not all in the main file yet (a reader holds the WAL); a lost WAL now could repeat seqs.");
        }
        self.reserved.extend(marks);
        self.save_marks();
        Ok(())
    }

    /// Copies the seq marks beside the file, for a main file too corrupt to yield them. Not
    /// fatal: the main file holds them too.
    fn save_marks(&self) {
        if let Err(e) = recovery::save_marks(&self.path, &self.reserved) {
            warn!(
                path = %recovery::marks_path(&self.path).display(),
                error = %e,
                "Cannot copy the seq marks beside the state file; a corrupt file would restart seqs from 0."
            );
        }
    }

    /// Counts a failed write group and logs it: ERROR when writes start to fail, DEBUG while
    /// they keep failing (one line per poll would bury everything else), INFO when they work
    /// again.
    fn log_failure(&mut self, e: &StoreError) {
        let cause = std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default();
        let first = self.failures.failed(crate::clock::monotonic());
        if matches!(e, StoreError::DiskFull { .. }) {
            // The full condition has its own WARN (see `make_room`).
            debug!(path = %self.path.display(), error = %e, cause = %cause, "Store write failed: disk full.");
        } else if first {
            error!(
                path = %self.path.display(),
                error = %e,
                cause = %cause,
                "Store writes fail; nothing is stored until they work again."
            );
        } else {
            debug!(path = %self.path.display(), error = %e, cause = %cause, "Store write failed again.");
        }
    }

    /// The health figures at `now`.
    fn health(&self, now: Instant) -> StoreHealth {
        StoreHealth {
            write_failures_total: self.failures.total,
            failing_for: self.failures.failing_for(now),
            disk_full: self.outbox.full,
            losses_total: self.losses_total,
            loss: self.loss,
        }
    }
}

/// Moves what is already queued into `group`, up to the group size limit.
fn drain_into(rx: &mut mpsc::Receiver<Request>, group: &mut Vec<Request>) {
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(r) => group.push(r),
            Err(_) => break,
        }
    }
}

/// How many urgent requests cut the commit window short in the current second.
#[derive(Debug, Default)]
struct UrgentBudget {
    since: Option<Instant>,
    used: u32,
}

impl UrgentBudget {
    /// Whether one more may cut the rest short now; counts it if so.
    fn take(&mut self, now: Instant) -> bool {
        if self
            .since
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
        {
            self.since = Some(now);
            self.used = 0;
        }
        if self.used >= URGENT_PER_SECOND {
            return false;
        }
        self.used += 1;
        true
    }
}

/// Runs `group` in one transaction; returns the failure that rolls it back, if any.
#[expect(
    clippy::too_many_arguments,
    reason = "disjoint borrows of the store's fields"
)]
fn execute(
    conn: &Connection,
    path: &Path,
    limits: &OutboxLimits,
    space: &mut space::Space,
    before: &OutboxState,
    st: &mut OutboxState,
    ctx: &Ctx<'_>,
    group: Vec<Request>,
    done: &mut Vec<Done>,
    writes: bool,
) -> Option<StoreError> {
    // IMMEDIATE takes the write lock up front, so a reader elsewhere cannot make us fail late.
    let begin = if writes { "BEGIN IMMEDIATE" } else { "BEGIN" };
    st.fresh.clear();
    if let Err(e) = run_cached(conn, begin) {
        done.extend(group.into_iter().map(Request::unprocessed));
        return Some(StoreError::sqlite(
            path.to_path_buf(),
            "begin a transaction",
            e,
        ));
    }
    let mut requests = group.into_iter();
    let mut failure = None;
    let mut dropped = 0;
    for req in requests.by_ref() {
        let (d, fail) = req.process(conn, st, ctx, path);
        done.push(d);
        if fail.is_some() {
            failure = fail;
            break;
        }
        // Bound after every request, not once per group: a stats request later in the same
        // group must never see the outbox above its bound.
        if writes {
            match outbox::enforce_bound(conn, st, limits.max_bytes) {
                Ok(n) => dropped += n,
                Err(e) => {
                    failure = Some(op_error(path, e));
                    break;
                }
            }
        }
    }
    done.extend(requests.map(Request::unprocessed));
    if failure.is_none() && writes {
        failure = bound_and_count(conn, limits, space, before, st, dropped)
            .err()
            .map(|e| op_error(path, e));
    }
    if failure.is_none()
        && let Err(e) = run_cached(conn, "COMMIT")
    {
        failure = Some(StoreError::sqlite(path.to_path_buf(), "commit", e));
    }
    failure
}

/// Runs a statement without parameters or rows from the statement cache: BEGIN and COMMIT come
/// once per group, and parsing them anew each time showed in the replay profile.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_changed| ())
}

/// Applies the size bound, tracks the drop episode and saves the counters.
fn bound_and_count(
    conn: &Connection,
    limits: &OutboxLimits,
    space: &mut space::Space,
    before: &OutboxState,
    st: &mut OutboxState,
    dropped: u64,
) -> Result<(), OpError> {
    st.commits_total += 1;
    if dropped > 0 {
        if !st.dropping {
            st.dropping = true;
            st.episode_dropped = dropped;
        } else {
            st.episode_dropped += dropped;
        }
    } else if st.dropping && outbox::largest_queue_bytes(st) <= limits.max_bytes / 10 * 9 {
        st.dropping = false;
    }
    // The file system's room: while it is below the headroom, the oldest rows make way, as
    // under the byte bound. The drops do not start a byte-bound episode; the full condition
    // has its own log lines.
    let room = outbox::sql("measure the room", space.room(conn))?;
    let deficit = space.deficit(room);
    if deficit > 0 {
        if !st.full {
            st.full = true;
            st.full_dropped = 0;
        }
        st.full_dropped += outbox::drop_bytes(conn, st, deficit, true)?;
    } else if st.full && space.can_leave_full(room) {
        st.full = false;
    }
    if !space.held() && !space.ensure_reserve() {
        // While full, only the pages beyond the headroom: giving back more would only drop
        // more messages to make the headroom again.
        let keep = if st.full {
            space.headroom.saturating_mul(2)
        } else {
            0
        };
        give_pages_back(conn, space.short_for_reserve(), keep)?;
    }
    outbox::save_counters(conn, before, st)
}

/// Returns up to `bytes` of the database's free pages, keeping `keep` bytes of them, to the
/// file system (they leave the file at the next checkpoint), so that the reserve fits again
/// after a full disk. A file made before incremental auto-vacuum was set keeps its pages; the
/// reserve then waits for space.
fn give_pages_back(conn: &Connection, bytes: u64, keep: u64) -> Result<(), OpError> {
    let pragma = |name: &str| -> Result<u64, OpError> {
        outbox::sql(
            "give pages back",
            conn.pragma_query_value(None, name, |r| r.get(0)),
        )
    };
    let page = pragma("page_size")?.max(512);
    let free = pragma("freelist_count")?.saturating_sub(keep.div_ceil(page));
    if bytes == 0 || free == 0 {
        return Ok(());
    }
    let pages = bytes.div_ceil(page).min(free);
    outbox::sql(
        "give pages back",
        conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})")),
    )
}

/// The source of `e`, or nothing.
fn cause(e: &StoreError) -> String {
    std::error::Error::source(e)
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// `text` with its first letter in upper case, to start a log message.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn op_error(path: &Path, e: OpError) -> StoreError {
    match e {
        OpError::Rejected(e) => e,
        OpError::Sql(what, e) => StoreError::sqlite(path.to_path_buf(), what, e),
    }
}

/// Opens the file with the durability settings the outbox promises.
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let err = |what: &'static str| move |e| StoreError::sqlite(path.to_path_buf(), what, e);
    let conn = Connection::open(path).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(err("set the busy timeout"))?;
    // Only a new file takes it (before its first table): free pages can then be given back to
    // the file system, so that the reserve fits again after a full disk (see `space.rs`).
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(err("set incremental auto-vacuum"))?;
    // Every statement the thread runs stays prepared; rusqlite's default of 16 is fewer than
    // the outbox, alarm, ledger and transaction statements together.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .map_err(err("enable WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // FULL: in WAL mode every commit fsyncs the WAL, so a power cut keeps every committed group
    // (NORMAL would only keep the database consistent, not the last commits).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err("set synchronous=FULL"))?;
    // SQLite's default 2 MiB page cache fills over hours as the outbox churns through pages,
    // an eighth of the daemon's 15 MiB budget (docs/design.md §8). The outbox is appended at one
    // end and read and deleted at the other, so its hot pages are few; the kernel's page cache
    // serves the rest.
    conn.pragma_update(None, "cache_size", -STORE_CACHE_KIB)
        .map_err(err("set the page cache size"))?;
    Ok(conn)
}

/// A cloneable, `Send` handle to the store thread; every method is a request to it.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Request>,
    path: Arc<Path>,
    exited: watch::Receiver<()>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Enqueue { .. } => "Enqueue",
            Self::Fetch { .. } => "Fetch",
            Self::FetchSpans { .. } => "FetchSpans",
            Self::Ack { .. } => "Ack",
            Self::Stats { .. } => "Stats",
            Self::QueueSize { .. } => "QueueSize",
            Self::OpenQueue { .. } => "OpenQueue",
            Self::NextSeq { .. } => "NextSeq",
            Self::Newest { .. } => "Newest",
            Self::SaveAlarms { .. } => "SaveAlarms",
            Self::LoadAlarms { .. } => "LoadAlarms",
            Self::PendingCommands { .. } => "PendingCommands",
            Self::SaveState { .. } => "SaveState",
            Self::LoadState { .. } => "LoadState",
            Self::SaveModels { .. } => "SaveModels",
            Self::LoadModels { .. } => "LoadModels",
            Self::SaveIntervals { .. } => "SaveIntervals",
            Self::SaveEnergyEvents { .. } => "SaveEnergyEvents",
            Self::AnswerCommands { .. } => "AnswerCommands",
            Self::Audit { .. } => "Audit",
            Self::AuditAndSend { .. } => "AuditAndSend",
            Self::SeenIds { .. } => "SeenIds",
        };
        f.write_str(name)
    }
}

impl StoreHandle {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `msgs` in order and returns their row ids once they are committed (durable).
    ///
    /// Each message's `seq` must be at least [`Self::next_seq`] for its key, and increase
    /// within the call; the store moves the key's next seq past it in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::SeqReused`] or [`StoreError::SeqOutOfRange`] (nothing of this call is
    /// stored), [`StoreError::DiskFull`] or another SQLite error (nothing of the group is
    /// stored; retrying later with the same seqs is fine), [`StoreError::Closed`].
    pub async fn enqueue(&self, msgs: Vec<OutboxMessage>) -> Result<Vec<RowId>, StoreError> {
        self.submit(msgs).await?.await
    }

    /// Sends `msgs` to the store without waiting for the commit; await the returned
    /// [`PendingEnqueue`] for the row ids. Requests keep their order, so several may be in
    /// flight at once and share one commit.
    ///
    /// # Errors
    /// [`StoreError::Closed`] when the store thread has stopped; commit errors come from the
    /// [`PendingEnqueue`].
    pub async fn submit(&self, msgs: Vec<OutboxMessage>) -> Result<PendingEnqueue, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Enqueue { msgs, reply }).await?;
        Ok(PendingEnqueue {
            rx,
            path: self.path.clone(),
        })
    }

    /// The id of the outbox queue called `name` (a sink's name), created on first use.
    /// `mqtt` is [`DEFAULT_QUEUE`].
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn queue(&self, name: &str) -> Result<QueueId, StoreError> {
        let name = name.to_owned();
        self.call(|reply| Request::OpenQueue { name, reply }).await
    }

    /// Up to `limit` rows of the default queue with an id above `after` (all rows for `None`),
    /// oldest first.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn fetch(
        &self,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.fetch_in(DEFAULT_QUEUE, after, limit).await
    }

    /// Up to `limit` rows of `queue` with an id above `after`, oldest first.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn fetch_in(
        &self,
        queue: QueueId,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.call(|reply| Request::Fetch {
            queue,
            after,
            limit,
            reply,
        })
        .await
    }

    /// The rows of each span, in one round trip to the store thread (the MQTT sink reads its
    /// live and backlog cursors together this way).
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn fetch_spans(&self, spans: Vec<Span>) -> Result<Vec<Vec<OutboxRow>>, StoreError> {
        self.call(|reply| Request::FetchSpans { spans, reply })
            .await
    }

    /// Deletes the rows the broker acknowledged. Unknown ids (acked before, or dropped by the
    /// bound) are ignored; `acked_total` counts only rows that existed.
    ///
    /// # Errors
    /// A SQLite error (the rows stay and may be sent again), or [`StoreError::Closed`].
    pub async fn ack(&self, rows: Vec<RowId>) -> Result<(), StoreError> {
        self.ack_in(DEFAULT_QUEUE, rows).await
    }

    /// [`Self::ack`] for the rows of `queue`.
    ///
    /// # Errors
    /// A SQLite error (the rows stay and may be sent again), or [`StoreError::Closed`].
    pub async fn ack_in(&self, queue: QueueId, rows: Vec<RowId>) -> Result<(), StoreError> {
        self.call(|reply| Request::Ack { queue, rows, reply }).await
    }

    /// One queue's rows and bytes waiting.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn queue_size(&self, queue: QueueId) -> Result<QueueSize, StoreError> {
        self.call(|reply| Request::QueueSize { queue, reply }).await
    }

    /// The outbox's size (all queues together) and counters.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn stats(&self) -> Result<OutboxStats, StoreError> {
        self.call(|reply| Request::Stats { reply }).await
    }

    /// The lowest seq `key` accepts: one past the highest ever stored, 0 for a new key. Seed the
    /// producer's counter with it at startup.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn next_seq(&self, key: &str) -> Result<u64, StoreError> {
        let key = key.to_owned();
        self.call(|reply| Request::NextSeq { key, reply }).await
    }

    /// The newest row id of the default queue, if it is not empty.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn newest(&self) -> Result<Option<RowId>, StoreError> {
        self.newest_in(DEFAULT_QUEUE).await
    }

    /// The newest row id of `queue`, if it is not empty.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn newest_in(&self, queue: QueueId) -> Result<Option<RowId>, StoreError> {
        self.call(|reply| Request::Newest { queue, reply }).await
    }

    /// Saves raised alarms and deletes cleared ones (rows with no body), in the next group
    /// commit; submit it before awaiting the outbox enqueue of the same events so both share
    /// one transaction.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn save_alarms(&self, rows: Vec<AlarmRow>) -> Result<(), StoreError> {
        self.call(|reply| Request::SaveAlarms { rows, reply }).await
    }

    /// The raised alarms saved by [`Self::save_alarms`].
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn load_alarms(&self) -> Result<Vec<AlarmRow>, StoreError> {
        self.call(|reply| Request::LoadAlarms { reply }).await
    }

    /// Saves engine state rows `(key, JSON)` under `scope`, replacing rows with the same key.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn save_state(
        &self,
        scope: &'static str,
        rows: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Request::SaveState { scope, rows, reply })
            .await
    }

    /// The engine state rows saved under `scope`.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn load_state(
        &self,
        scope: &'static str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|reply| Request::LoadState { scope, reply }).await
    }

    /// Saves the rules' learned model states at `saved_ms`, each replacing the last one of
    /// its rule instance.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn save_models(
        &self,
        rows: Vec<crate::detect::snapshot::ModelSnapshot>,
        saved_ms: i64,
    ) -> Result<(), StoreError> {
        self.call(|reply| Request::SaveModels {
            rows,
            saved_ms,
            reply,
        })
        .await
    }

    /// Every saved model state.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn load_models(
        &self,
    ) -> Result<Vec<crate::detect::snapshot::ModelSnapshot>, StoreError> {
        self.call(|reply| Request::LoadModels { reply }).await
    }

    /// Saves closed ledger intervals (replacing any with the same meter and start).
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn save_intervals(
        &self,
        rows: Vec<crate::process::ledger::LedgerInterval>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Request::SaveIntervals { rows, reply })
            .await
    }

    /// Saves counter events (replacing any with the same meter, time and kind).
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn save_energy_events(
        &self,
        rows: Vec<crate::process::ledger::LedgerEvent>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Request::SaveEnergyEvents { rows, reply })
            .await
    }

    /// Operator commands not yet answered, oldest first (at most 100).
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn pending_commands(&self) -> Result<Vec<CommandRow>, StoreError> {
        self.call(|reply| Request::PendingCommands { reply }).await
    }

    /// Records the replies to commands (by row id).
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn answer_commands(&self, answers: Vec<(i64, String)>) -> Result<(), StoreError> {
        self.call(|reply| Request::AnswerCommands { answers, reply })
            .await
    }

    /// Appends `entry` to the audit trail and, for an accepted signed command, remembers its
    /// id (forgetting those signed before `prune_before_ms`), in one transaction. Returns the
    /// row and the hash of the row before it.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn audit(
        &self,
        entry: AuditEntry,
        seen: Option<SeenId>,
        prune_before_ms: i64,
    ) -> Result<(AuditRow, String), StoreError> {
        self.call(|reply| Request::Audit {
            append: Box::new((entry, seen)),
            prune_before_ms,
            reply,
        })
        .await
    }

    /// [`StoreHandle::audit`] and the outbox rows of `delivery`, in one transaction: the
    /// row's copies get its message as their payload. An urgent delivery is committed without
    /// waiting out the commit window (within [`URGENT_PER_SECOND`]).
    ///
    /// # Errors
    /// A SQLite error, a refused enqueue (then nothing was kept), or [`StoreError::Closed`].
    pub async fn audit_and_send(
        &self,
        entry: AuditEntry,
        seen: Option<SeenId>,
        prune_before_ms: i64,
        delivery: AuditDelivery,
    ) -> Result<(AuditRow, String), StoreError> {
        self.call(|reply| Request::AuditAndSend {
            append: Box::new((entry, seen, delivery)),
            prune_before_ms,
            reply,
        })
        .await
    }

    /// The command ids accepted with a `ts` at or after `since_ms`.
    ///
    /// # Errors
    /// A SQLite error, or [`StoreError::Closed`].
    pub async fn seen_ids(&self, since_ms: i64) -> Result<Vec<SeenId>, StoreError> {
        self.call(|reply| Request::SeenIds { since_ms, reply })
            .await
    }

    /// Resolves once the store thread has stopped (after the last handle is dropped, or if it
    /// died); it does not keep the store open.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut exited = self.exited.clone();
        async move { while exited.changed().await.is_ok() {} }
    }

    fn closed_error(&self) -> StoreError {
        StoreError::Closed {
            path: self.path.to_path_buf(),
        }
    }

    async fn send(&self, req: Request) -> Result<(), StoreError> {
        self.tx.send(req).await.map_err(|_| self.closed_error())
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| self.closed_error())?
    }
}

/// An enqueue the store has received; resolves to the row ids once they are committed.
#[derive(Debug)]
#[must_use = "the rows are durable only when this resolves to Ok"]
pub struct PendingEnqueue {
    rx: oneshot::Receiver<Result<Vec<RowId>, StoreError>>,
    path: Arc<Path>,
}

impl Future for PendingEnqueue {
    type Output = Result<Vec<RowId>, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(StoreError::Closed {
                    path: self.path.to_path_buf(),
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(key: &str, seq: u64, len: usize) -> OutboxMessage {
        OutboxMessage {
            queue: DEFAULT_QUEUE,
            stream: format!("telemetry/{key}"),
            key: key.into(),
            seq,
            created_ms: 1_700_000_000_000,
            payload: vec![7; len],
        }
    }

    fn limits() -> OutboxLimits {
        OutboxLimits {
            max_bytes: u64::MAX,
            commit_window: Duration::ZERO,
        }
    }

    /// A store driven on this thread, without its own thread, so its state and logs are visible.
    fn bare(dir: &Path, max_bytes: u64) -> Store {
        let path = dir.join("state.db");
        let mut conn = open_connection(&path).unwrap();
        schema::migrate(&mut conn, &path).unwrap();
        let outbox = outbox::load(&conn).unwrap();
        let space = space::Space::new(&path);
        space.configure(&conn).unwrap();
        Store {
            conn,
            path,
            limits: OutboxLimits {
                max_bytes,
                commit_window: Duration::ZERO,
            },
            outbox,
            space,
            pending_acks: PendingAcks::default(),
            failures: health::WriteFailures::default(),
            loss: None,
            losses_total: 0,
            reserved: HashMap::new(),
            last_checkpoint: crate::clock::monotonic(),
            lock: lock::StateLock::acquire(dir.join("state.db").as_path()).unwrap(),
        }
    }

    fn enqueue_now(store: &mut Store, seq: u64) -> RowId {
        let (reply, mut rx) = oneshot::channel();
        store.run_group(vec![Request::Enqueue {
            msgs: vec![msg("m", seq, 100)],
            reply,
        }]);
        rx.try_recv().unwrap().unwrap()[0]
    }

    fn ack_now(store: &mut Store, rows: Vec<RowId>) {
        let (reply, mut rx) = oneshot::channel();
        store.run_group(vec![Request::Ack {
            queue: DEFAULT_QUEUE,
            rows,
            reply,
        }]);
        rx.try_recv().unwrap().unwrap();
    }

    fn audit_entry(id: &str) -> AuditEntry {
        AuditEntry {
            ts_ms: 1_700_000_000_000,
            source: "mqtt:mqtt".into(),
            command: "write".into(),
            key: Some("ops1".into()),
            id: Some(format!("\"{id}\"")),
            outcome: "intent".into(),
            reason: None,
            reply: "{}".into(),
            payload_bytes: 2,
            payload_sha256: audit::sha256_hex(b"{}"),
        }
    }

    fn audit_and_send_now(
        store: &mut Store,
        id: &str,
        copies: Vec<OutboxMessage>,
        also: Vec<OutboxMessage>,
    ) -> Result<(AuditRow, String), StoreError> {
        let (reply, mut rx) = oneshot::channel();
        store.run_group(vec![Request::AuditAndSend {
            append: Box::new((
                audit_entry(id),
                None,
                AuditDelivery {
                    copies,
                    also,
                    urgent: true,
                },
            )),
            prune_before_ms: 0,
            reply,
        }]);
        rx.try_recv().unwrap()
    }

    fn audit_rows(store: &Store) -> i64 {
        store
            .conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn an_audit_row_and_its_outbox_rows_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = bare(dir.path(), u64::MAX);
        let copy = |seq| OutboxMessage {
            stream: "audit".into(),
            ..msg("audit", seq, 0)
        };
        let (row, prev) =
            audit_and_send_now(&mut store, "w-1", vec![copy(0)], vec![msg("reply", 0, 5)]).unwrap();
        let stored = outbox::fetch(&store.conn, DEFAULT_QUEUE, None, 10).unwrap();
        assert_eq!(stored.len(), 2, "{stored:?}");
        // The copy carries the row as appended, with its hash and the one before it.
        assert_eq!(
            stored[0].payload,
            record::encode_wire(&row.message(&prev), false)
        );
        assert_eq!(stored[1].payload, vec![7; 5]);
        assert_eq!(audit_rows(&store), 1);
        // A refused enqueue (a seq already used) takes the audit row back out with it.
        let refused = audit_and_send_now(&mut store, "w-2", vec![copy(0)], Vec::new());
        assert!(
            matches!(refused, Err(StoreError::SeqReused { .. })),
            "{refused:?}"
        );
        assert_eq!(audit_rows(&store), 1);
        assert_eq!(
            outbox::fetch(&store.conn, DEFAULT_QUEUE, None, 10)
                .unwrap()
                .len(),
            2
        );
        // And the chain goes on from the row that was kept.
        let (next, prev) =
            audit_and_send_now(&mut store, "w-3", vec![copy(1)], Vec::new()).unwrap();
        assert_eq!(next.seq, row.seq + 1);
        assert_eq!(prev, row.hash);
        let verdict = audit::verify(&dir.path().join("state.db")).unwrap();
        assert!(
            matches!(verdict, audit::Verdict::Intact { rows: 2 }),
            "{verdict:?}"
        );
    }

    #[test]
    fn urgent_commits_are_bounded_per_second() {
        let mut budget = UrgentBudget::default();
        let t0 = crate::clock::monotonic();
        let taken = (0..3 * URGENT_PER_SECOND)
            .filter(|_| budget.take(t0))
            .count();
        assert_eq!(taken, URGENT_PER_SECOND as usize);
        assert!(!budget.take(t0 + Duration::from_millis(999)));
        assert!(budget.take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn drops_are_logged_once_per_episode() {
        let dir = tempfile::tempdir().unwrap();
        crate::test_log::capture(|logs| {
            let mut store = bare(dir.path(), 1_000);
            let ids: Vec<RowId> = (0..10).map(|s| enqueue_now(&mut store, s)).collect();
            assert!(!store.outbox.dropping);
            // Over the bound three times in a row: one episode, one ERROR.
            for seq in 10..13 {
                enqueue_now(&mut store, seq);
            }
            assert!(store.outbox.dropping);
            assert_eq!(store.outbox.episode_dropped, 3);
            assert_eq!(store.outbox.dropped_total, 3);
            assert_eq!(logs.count("Outbox full"), 1);
            // Back to 90 % of the bound: the episode ends.
            ack_now(&mut store, vec![ids[3]]);
            assert!(!store.outbox.dropping);
            assert_eq!(logs.count("Outbox back under its size bound"), 1);
            // Filling up again starts a new episode.
            enqueue_now(&mut store, 13);
            enqueue_now(&mut store, 14);
            assert_eq!(store.outbox.episode_dropped, 1);
            assert_eq!(logs.count("Outbox full"), 2);
        });
    }

    fn page_budget(store: &Store, extra: u64) {
        let pages: u64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        store
            .conn
            .pragma_update(None, "max_page_count", pages + extra)
            .unwrap();
    }

    fn enqueue_batch(store: &mut Store, seqs: std::ops::Range<u64>, len: usize) -> Vec<RowId> {
        let (reply, mut rx) = oneshot::channel();
        store.run_group(vec![Request::Enqueue {
            msgs: seqs.map(|s| msg("m", s, len)).collect(),
            reply,
        }]);
        rx.try_recv().unwrap().unwrap()
    }

    /// A page budget stands in for a full disk (SQLite reports SQLITE_FULL either way): every
    /// enqueue still succeeds, the oldest rows make way and are counted, one WARN marks each
    /// end of the full condition, and acks empty it again.
    #[test]
    fn a_full_disk_drops_the_oldest_counts_them_and_warns_once_each_way() {
        let dir = tempfile::tempdir().unwrap();
        let ((), logs) = crate::test_log::capture(|_| {
            let mut store = bare(dir.path(), u64::MAX);
            store.space.headroom = 64 * 1024;
            page_budget(&store, 256);
            let mut stored = 0u64;
            for batch in 0..100u64 {
                stored +=
                    enqueue_batch(&mut store, batch * 10..batch * 10 + 10, 2_000).len() as u64;
            }
            assert_eq!(stored, 1_000, "every enqueue succeeded");
            let st = &store.outbox;
            assert!(st.full);
            assert!(st.dropped_total > 0);
            assert_eq!(
                st.rows + st.dropped_total,
                1_000,
                "every row is kept or counted"
            );
            assert!(store.health(crate::clock::monotonic()).disk_full);
            assert_eq!(store.failures.total, 0, "no write failed");
            assert!(!st.dropping, "not the byte bound's episode");

            // Delivery frees room; the next write leaves the full condition.
            let ids: Vec<RowId> = outbox::fetch(&store.conn, DEFAULT_QUEUE, None, 10_000)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            ack_now(&mut store, ids);
            enqueue_now(&mut store, 5_000);
            assert!(!store.outbox.full);
        });
        assert_eq!(logs.count("State file system full"), 1);
        assert_eq!(logs.count("State file system has room again"), 1);
        assert_eq!(logs.count("ERROR"), 0);
    }

    /// On a disk that others filled, with little waiting, each new message is kept for the
    /// broker: the drops take only what was there before its group.
    #[test]
    fn a_full_disk_drops_the_older_rows_not_the_group_that_just_found_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = bare(dir.path(), u64::MAX);
        store.space.headroom = 64 * 1024;
        enqueue_now(&mut store, 0);
        // Room for 8 pages: below the headroom, whatever the outbox drops.
        page_budget(&store, 8);
        for seq in 1..5 {
            let id = enqueue_now(&mut store, seq);
            assert!(store.outbox.full);
            let kept: Vec<RowId> = outbox::fetch(&store.conn, DEFAULT_QUEUE, None, 100)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(kept, [id], "seq {seq}");
            assert_eq!(store.outbox.dropped_total, seq);
        }
    }

    /// Without its reserve file the store has no room left to checkpoint and delete on the
    /// next full disk, so it stays in the full condition, delivered rows or not, until the
    /// reserve is back.
    #[test]
    fn the_full_condition_lasts_until_the_reserve_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let ((), logs) = crate::test_log::capture(|_| {
            let mut store = bare(dir.path(), u64::MAX);
            store.space.headroom = 64 * 1024;
            page_budget(&store, 256);
            for batch in 0..100u64 {
                enqueue_batch(&mut store, batch * 10..batch * 10 + 10, 2_000);
            }
            assert!(store.outbox.full);
            // Another process took the space the reserve needs.
            store.space.release_reserve();
            let reserve_bytes = store.space.reserve_bytes;
            store.space.reserve_bytes = u64::MAX / 4;
            let ids: Vec<RowId> = outbox::fetch(&store.conn, DEFAULT_QUEUE, None, 10_000)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            ack_now(&mut store, ids);
            enqueue_now(&mut store, 5_000);
            enqueue_now(&mut store, 5_001);
            assert_eq!(store.outbox.rows, 2, "the new rows are kept");
            assert!(store.outbox.full, "no reserve, still full");
            assert_eq!(store.failures.total, 0);
            // Space returns: the reserve is written again, and the condition ends.
            store.space.reserve_bytes = reserve_bytes;
            enqueue_now(&mut store, 5_002);
            enqueue_now(&mut store, 5_003);
            assert!(store.space.held());
            assert!(!store.outbox.full);
        });
        assert_eq!(logs.count("State file system full"), 1);
        assert_eq!(logs.count("State file system has room again"), 1);
    }

    /// A group that fails takes the acks in it down too; they are deleted on their own once
    /// room is made, and fetches skip them meanwhile, so nothing delivered is sent again.
    #[test]
    fn a_delete_that_failed_is_retried_and_its_rows_are_not_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = bare(dir.path(), u64::MAX);
        store.space.headroom = 1024;
        let ids = enqueue_batch(&mut store, 0..5, 100);
        page_budget(&store, 64);
        let acked_before = store.outbox.acked_total;
        let (ack, mut ack_rx) = oneshot::channel();
        let (big, mut big_rx) = oneshot::channel();
        store.run_group(vec![
            Request::Ack {
                queue: DEFAULT_QUEUE,
                rows: ids[..2].to_vec(),
                reply: ack,
            },
            Request::Enqueue {
                msgs: vec![msg("m", 5, 1_000_000)],
                reply: big,
            },
        ]);
        assert!(matches!(
            big_rx.try_recv().unwrap(),
            Err(StoreError::DiskFull { .. })
        ));
        assert!(ack_rx.try_recv().unwrap().is_err());
        let (reply, mut rx) = oneshot::channel();
        store.run_group(vec![Request::Fetch {
            queue: DEFAULT_QUEUE,
            after: None,
            limit: 100,
            reply,
        }]);
        let fetched: Vec<RowId> = rx
            .try_recv()
            .unwrap()
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(fetched, ids[2..], "acked rows are not fetched again");
        enqueue_now(&mut store, 6);
        assert_eq!(store.outbox.acked_total, acked_before + 2);
        assert_eq!(store.outbox.rows, 4);
        assert!(store.pending_acks.is_empty());
    }

    #[test]
    fn a_group_that_rolls_back_leaves_the_seqs_and_counters_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = bare(dir.path(), u64::MAX);
        // Little headroom, so that the room made after the failure drops nothing.
        store.space.headroom = 1024;
        enqueue_now(&mut store, 0);
        let before = outbox::stats(&store.conn, &store.outbox).unwrap();
        // Room for a small row, not for a big one: the second enqueue fails after the first has
        // moved its key's seq, and the whole group rolls back.
        let pages: u64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        store
            .conn
            .pragma_update(None, "max_page_count", pages + 4)
            .unwrap();
        let (small, mut small_rx) = oneshot::channel();
        let (big, mut big_rx) = oneshot::channel();
        store.run_group(vec![
            Request::Enqueue {
                msgs: vec![msg("x", 0, 10)],
                reply: small,
            },
            Request::Enqueue {
                msgs: vec![msg("m", 1, 100_000)],
                reply: big,
            },
        ]);
        assert!(matches!(
            big_rx.try_recv().unwrap(),
            Err(StoreError::DiskFull { .. })
        ));
        assert!(small_rx.try_recv().unwrap().is_err());
        // `x` may have a row from its seq mark, but its next seq is still 0.
        assert_eq!(store.outbox.seqs.get("x").copied().unwrap_or(0), 0);
        assert_eq!(store.outbox.seqs.get("m"), Some(&1));
        let after = outbox::stats(&store.conn, &store.outbox).unwrap();
        assert_eq!(after.rows, before.rows);
        assert_eq!(after.enqueued_total, before.enqueued_total);
        // The rolled-back seq is free again.
        let (retry, mut retry_rx) = oneshot::channel();
        store.run_group(vec![Request::Enqueue {
            msgs: vec![msg("x", 0, 10)],
            reply: retry,
        }]);
        assert_eq!(retry_rx.try_recv().unwrap().unwrap().len(), 1);
    }

    /// The WAL's frames from its header on: `(offset, is a commit frame)` for each whole one.
    fn wal_frames(wal: &[u8]) -> Vec<(usize, bool)> {
        let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
        (32..wal.len())
            .step_by(page + 24)
            .filter(|&at| at + page + 24 <= wal.len())
            .map(|at| (at, wal[at + 4..at + 8] != [0; 4]))
            .collect()
    }

    /// A crash image (the files copied while the store runs) whose WAL lost its last commit
    /// whole, cut at a frame boundary: SQLite opens what is left without a word, so the store
    /// must tell the loss by the wal-index the crash left behind, and move seqs past their
    /// marks.
    #[tokio::test]
    async fn a_wal_cut_at_a_frame_boundary_is_a_detected_loss() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let image = dir.path().join("image");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&image).unwrap();
        let store = Store::open(&live.join("state.db"), limits()).unwrap();
        for seq in 0..4 {
            store.enqueue(vec![msg("m", seq, 100)]).await.unwrap();
        }
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            std::fs::copy(live.join(name), image.join(name)).unwrap();
        }
        let wal_path = image.join("state.db-wal");
        let wal = std::fs::read(&wal_path).unwrap();
        let commits: Vec<usize> = wal_frames(&wal)
            .iter()
            .filter(|(_, commit)| *commit)
            .map(|(at, _)| *at)
            .collect();
        assert!(commits.len() >= 2, "{commits:?}");
        // Up to the end of the next-to-last commit frame: the last commit is gone, whole.
        let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
        let cut = commits[commits.len() - 2] + page + 24;
        std::fs::write(&wal_path, &wal[..cut]).unwrap();

        let recovery = Recovery {
            on_corrupt: OnCorrupt::MoveAside,
            now_ms: 1_765_000_000_000,
        };
        let reopened = Store::open_with(&image.join("state.db"), limits(), recovery).unwrap();
        let stats = reopened.stats().await.unwrap();
        assert_eq!(stats.health.loss, Some(Loss::Wal), "{stats:?}");
        assert_eq!(stats.health.losses_total, 1);
        assert!(reopened.next_seq("m").await.unwrap() >= SEQ_BLOCK);
        // The store that left the image behind saw nothing.
        assert_eq!(store.stats().await.unwrap().health.loss, None);
    }

    /// A file so corrupt that not even its seq marks can be read: seqs continue past the
    /// marks kept beside it, never from 0, which the platform already holds.
    #[tokio::test]
    async fn seqs_continue_when_a_corrupt_files_marks_are_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path, limits()).unwrap();
        store.enqueue(vec![msg("m", 41, 10)]).await.unwrap();
        let closed = store.closed();
        drop(store);
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::write(&path, vec![0x5a; len as usize]).unwrap();
        let recovery = Recovery {
            on_corrupt: OnCorrupt::MoveAside,
            now_ms: 1_765_000_000_000,
        };
        let reopened = Store::open_with(&path, limits(), recovery).unwrap();
        assert_eq!(
            reopened.stats().await.unwrap().health.loss,
            Some(Loss::Corrupt)
        );
        let next = reopened.next_seq("m").await.unwrap();
        assert!(next > 41, "seqs went back to {next}");
    }

    #[tokio::test]
    async fn a_reused_seq_is_refused_without_touching_the_rest_of_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), limits()).unwrap();
        store.enqueue(vec![msg("a", 5, 1)]).await.unwrap();
        // Sent together, so they share a group: one is refused, the other commits.
        let bad = store.submit(vec![msg("a", 5, 1)]).await.unwrap();
        let good = store.submit(vec![msg("b", 0, 1)]).await.unwrap();
        assert!(matches!(
            bad.await,
            Err(StoreError::SeqReused {
                seq: 5,
                next: 6,
                ..
            })
        ));
        assert_eq!(good.await.unwrap().len(), 1);
        assert_eq!(store.stats().await.unwrap().rows, 2);
    }

    #[tokio::test]
    async fn a_file_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", schema::VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(&path, limits()).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn closed_resolves_when_the_last_handle_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), limits()).unwrap();
        let other = store.clone();
        let closed = store.closed();
        drop(store);
        other.stats().await.unwrap();
        drop(other);
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .unwrap();
    }
}
