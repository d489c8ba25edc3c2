//! The state store: one SQLite file (WAL, `synchronous=FULL`) owned by one dedicated thread
//! (DESIGN.md §5, STYLE.md C8). Today it holds the MQTT outbox ([`outbox`]); the energy ledger
//! and alarms will be further tables behind the same thread.
//!
//! Shape: [`Store::open`] opens and migrates the file, then moves the connection into a
//! `std::thread` (rusqlite blocks, so it is not a task). Callers hold a cheap, cloneable
//! [`StoreHandle`]; each call sends a request over a bounded channel and awaits the answer on a
//! oneshot. The thread stops when the last handle is dropped; [`StoreHandle::closed`] tells the
//! supervisor when it has.
//!
//! Group commit (flash wear, DESIGN.md §5, §8): the thread takes every request that is waiting,
//! runs them in arrival order inside ONE transaction, commits, and only then answers them. After
//! a commit that wrote, it rests for `commit_window` before the next group, so there are at most
//! `1 / commit_window` write commits per second (each is one fsync of the WAL; checkpoints add
//! a few more per minute) whatever the message rate, and an idle store commits a lone request
//! at once. A caller that awaits each enqueue before making the next gets one message per
//! window: batch messages, or keep several in flight with [`StoreHandle::submit`].
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
pub mod ledger;
pub mod outbox;
pub mod record;
mod schema;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, trace, warn};

pub use alarms::{AlarmRow, CommandRow};
pub use outbox::{
    DEFAULT_QUEUE, OutboxMessage, OutboxRow, OutboxStats, QueueId, QueueSize, RowId, Span,
};
use outbox::{OpError, OutboxState};

/// Requests that may wait for the store thread; beyond this, callers wait to send
/// (backpressure instead of unbounded memory).
const QUEUE: usize = 256;

/// The most requests committed in one transaction; more wait for the next group.
const MAX_GROUP: usize = 4 * QUEUE;

/// The WAL file is truncated back to this after a checkpoint, so a burst does not leave a large
/// file on a small card.
const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// Prepared statements kept by the store's connection.
const STATEMENT_CACHE: usize = 64;

/// How long a connection waits for a lock held by another process (e.g. `plantwatch export`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer connection's page cache, in KiB (SQLite's default is 2000).
const STORE_CACHE_KIB: i64 = 512;

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
            max_bytes: crate::config::daemon::DEFAULT_MAX_OUTBOX_BYTES,
            commit_window: Duration::from_millis(100),
        }
    }
}

impl From<&crate::config::daemon::Store> for OutboxLimits {
    fn from(c: &crate::config::daemon::Store) -> Self {
        Self {
            max_bytes: c.max_outbox_bytes,
            commit_window: c.commit_window,
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
        /// Why.
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
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The store thread has stopped.
    #[error("store {}: the store thread has stopped", path.display())]
    Closed {
        /// The database file.
        path: PathBuf,
    },
}

impl StoreError {
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
    SaveIntervals {
        rows: Vec<crate::process::ledger::LedgerInterval>,
        reply: Reply<()>,
    },
    AnswerCommands {
        answers: Vec<(i64, String)>,
        reply: Reply<()>,
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
                | Self::SaveIntervals { .. }
                | Self::AnswerCommands { .. }
        )
    }

    /// Runs the request inside the open transaction. The second value is a failure that
    /// dooms the whole group.
    fn process(
        self,
        conn: &Connection,
        st: &mut OutboxState,
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
            } => finish(reply, outbox::fetch(conn, queue, after, limit), path),
            Self::FetchSpans { spans, reply } => {
                let rows = spans
                    .into_iter()
                    .map(|span| outbox::fetch_span(conn, span))
                    .collect();
                finish(reply, rows, path)
            }
            Self::Ack { queue, rows, reply } => finish(
                reply,
                outbox::ack(conn, st, queue, &rows).map(|_deleted| ()),
                path,
            ),
            Self::Stats { reply } => finish(reply, outbox::stats(conn, st), path),
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
            Self::SaveIntervals { rows, reply } => finish(reply, ledger::save(conn, &rows), path),
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
            Self::SaveIntervals { reply, .. } => Done::new(reply, None),
            Self::AnswerCommands { reply, .. } => Done::new(reply, None),
        }
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
    /// Inside a disk-full episode (logged once).
    disk_full: bool,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`, and starts its thread.
    ///
    /// Blocks briefly on file I/O; call it at startup, before the runtime is busy.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be opened, is not in WAL mode, was written by a newer
    /// build, or the thread cannot start.
    pub fn open(path: &Path, limits: OutboxLimits) -> Result<StoreHandle, StoreError> {
        Self::start(open_connection(path)?, path, limits)
    }

    /// Migrates, loads and starts the thread on an opened connection.
    fn start(
        mut conn: Connection,
        path: &Path,
        limits: OutboxLimits,
    ) -> Result<StoreHandle, StoreError> {
        schema::migrate(&mut conn, path)?;
        let outbox = outbox::load(&conn)
            .map_err(|e| StoreError::sqlite(path.to_path_buf(), "load the outbox", e))?;
        info!(
            path = %path.display(),
            rows = outbox.rows,
            bytes = outbox.bytes,
            "Store opened."
        );
        let store = Self {
            conn,
            path: path.to_path_buf(),
            limits,
            outbox,
            disk_full: false,
        };
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
        let path = self.path;
        if let Err((_, e)) = self.conn.close() {
            warn!(path = %path.display(), error = %e, "Store did not close cleanly.");
        } else {
            info!(path = %path.display(), "Store closed.");
        }
        // Dropping the sender resolves every `StoreHandle::closed`.
        drop(exited);
    }

    /// Runs one group in one transaction and answers it; returns whether it wrote.
    fn run_group(&mut self, group: Vec<Request>) -> bool {
        let writes = group.iter().any(Request::writes);
        // Requests change the state in place. A failed write group gets its counters back from
        // this copy and its seq map from the file: copying the map of every key's seq for each
        // write group showed in the steady-state profile, and a rollback is rare.
        let before = if writes {
            self.outbox.without_seqs()
        } else {
            OutboxState::default()
        };
        let mut done = Vec::with_capacity(group.len());
        let failure = execute(
            &self.conn,
            &self.path,
            &self.limits,
            &before,
            &mut self.outbox,
            group,
            &mut done,
            writes,
        );
        match &failure {
            None => self.after_commit(&before, writes),
            Some(e) => {
                if !self.conn.is_autocommit()
                    && let Err(re) = self.conn.execute_batch("ROLLBACK")
                {
                    error!(path = %self.path.display(), error = %re, "Store rollback failed.");
                }
                if writes {
                    self.restore(before);
                }
                self.log_failure(e);
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
        let path = self.path.display();
        if self.disk_full {
            self.disk_full = false;
            info!(path = %path, "Store writes succeed again.");
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
    }

    fn log_failure(&mut self, e: &StoreError) {
        let cause = std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default();
        if matches!(e, StoreError::DiskFull { .. }) {
            if !self.disk_full {
                self.disk_full = true;
                error!(
                    path = %self.path.display(),
                    error = %e,
                    cause = %cause,
                    "Store write failed: disk full; nothing is stored until space returns."
                );
            }
        } else {
            error!(path = %self.path.display(), error = %e, cause = %cause, "Store write failed.");
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

/// Runs `group` in one transaction; returns the failure that rolls it back, if any.
#[expect(
    clippy::too_many_arguments,
    reason = "disjoint borrows of the store's fields"
)]
fn execute(
    conn: &Connection,
    path: &Path,
    limits: &OutboxLimits,
    before: &OutboxState,
    st: &mut OutboxState,
    group: Vec<Request>,
    done: &mut Vec<Done>,
    writes: bool,
) -> Option<StoreError> {
    // IMMEDIATE takes the write lock up front, so a reader elsewhere cannot make us fail late.
    let begin = if writes { "BEGIN IMMEDIATE" } else { "BEGIN" };
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
        let (d, fail) = req.process(conn, st, path);
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
        failure = bound_and_count(conn, limits, before, st, dropped)
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
    outbox::save_counters(conn, before, st)
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
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(err("set the WAL size limit"))?;
    // SQLite's default 2 MiB page cache fills over hours as the outbox churns through pages,
    // an eighth of the daemon's 15 MiB budget (DESIGN.md §8). The outbox is appended at one
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
            Self::SaveIntervals { .. } => "SaveIntervals",
            Self::AnswerCommands { .. } => "AnswerCommands",
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
        Store {
            conn,
            path,
            limits: OutboxLimits {
                max_bytes,
                commit_window: Duration::ZERO,
            },
            outbox,
            disk_full: false,
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

    /// Captures formatted log lines.
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn count(&self, needle: &str) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .matches(needle)
                .count()
        }
    }

    #[test]
    fn drops_are_logged_once_per_episode() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _pin = crate::test_log::pin_interest();
        tracing::subscriber::with_default(subscriber, || {
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

    #[tokio::test]
    async fn a_full_disk_is_an_error_and_the_store_recovers_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = open_connection(&path).unwrap();
        // A page budget stands in for a full disk: SQLite reports SQLITE_FULL either way.
        conn.pragma_update(None, "max_page_count", 40).unwrap();
        let store = Store::start(conn, &path, limits()).unwrap();

        let mut seq = 0;
        let mut stored = Vec::new();
        let full = loop {
            assert!(seq < 1_000, "the page budget never filled");
            match store.enqueue(vec![msg("m", seq, 2_000)]).await {
                Ok(ids) => stored.extend(ids),
                Err(e) => break e,
            }
            seq += 1;
        };
        assert!(matches!(full, StoreError::DiskFull { .. }), "{full:?}");
        assert!(full.to_string().contains("state.db"), "{full}");
        let before = store.stats().await.unwrap();
        assert_eq!(before.rows, stored.len() as u64);

        // Still serving; acking frees pages, and the same seq is accepted on retry.
        store.ack(stored[..10].to_vec()).await.unwrap();
        let ids = store.enqueue(vec![msg("m", seq, 2_000)]).await.unwrap();
        assert_eq!(ids.len(), 1);
        let after = store.stats().await.unwrap();
        assert_eq!(after.rows, before.rows - 10 + 1);
        assert_eq!(after.enqueued_total, before.enqueued_total + 1);
        assert_eq!(store.next_seq("m").await.unwrap(), seq + 1);
    }

    #[test]
    fn a_group_that_rolls_back_leaves_the_seqs_and_counters_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = bare(dir.path(), u64::MAX);
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
        assert_eq!(store.outbox.seqs.get("x"), None);
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
