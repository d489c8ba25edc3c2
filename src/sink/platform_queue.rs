//! The continuous HTTPS uploader of the energy platform: drains its own outbox queue of
//! records ([`crate::store::record::platform_payload`]) through an [`Uplink`], one POST per record, oldest
//! first.
//!
//! What happens to a row, by the platform's answer:
//! - **accepted** (HTTP 2xx, `responseCode` 200): the row is acknowledged (deleted);
//! - **worth retrying** (no answer, HTTP 5xx/401/429, an answer that is not the envelope, a
//!   token still refused after one renewal): the *same* row is sent again after a wait that
//!   starts at `retry_min_ms` and doubles up to `retry_max_ms`, each drawn from the upper half
//!   of its step so that gateways do not retry in step; later rows wait behind it, so
//!   records arrive in queue order and nothing is skipped;
//! - **login refused** (wrong password or enterprise code): as above, and the password is read
//!   again from `password_file` / `password_credential` before each login, so fixing the file
//!   is enough; nothing is deleted meanwhile;
//! - **refused for another reason** (HTTP 404 or 403 to any call: a wrong URL or a proxy
//!   rather than a bad record): as above, logged at ERROR once;
//! - **record refused** (any other `responseCode` answering the record, e.g. an unregistered
//!   `dataCode`, or HTTP 400/422 to it): sending it unchanged cannot succeed, and keeping it at the head would stop
//!   every record behind it for ever. It is **moved aside by acknowledging it**: logged at
//!   ERROR with its dataCode, statType, statDate and the platform's message, and counted in
//!   `rejected`. Nothing is lost for good: records are rebuilt from the ledger, so once the
//!   item is registered (or its config fixed) `plantwatch upload` or the `upload` command
//!   sends the period again under the same key. A row that cannot be decoded goes the same
//!   way.
//!
//! Logging follows "log transitions, count repetitions": the first failure of an episode is
//! logged (WARN for the link, ERROR for refused credentials, which need an operator), each
//! retry only counts, and the first success after it logs the recovery.
//!
//! Invariants:
//! - a row is deleted only after the platform accepted it or refused it as a record; a crash
//!   before the (batched) acknowledgement sends it again under the same key;
//! - one row is in flight at a time, in row order;
//! - the password is never logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::mqtt::inflight::RowId;
use super::mqtt::{Outbox, OutboxItem};
use super::platform_http::{Uplink, UplinkConfig, UplinkError};
use crate::clock::Clock;
use crate::platform::record::{DATE_FORMAT, Record, local_datetime};
use crate::platform::spec::Spec;
use crate::secret::PasswordSource;
use crate::sink::backoff::Backoff;
use crate::store::record::platform_record;

/// Rows read from the outbox at a time.
const BATCH: usize = 64;

/// Delivered rows acknowledged in one store write (each write is a commit and an fsync; a
/// crash loses at most this many acknowledgements, which means resends, not losses).
const ACK_BATCH: usize = 32;

/// How long an idle uploader waits for a wake-up before looking at the outbox anyway: a
/// safety net for a missed notification, cheap enough to never matter.
const IDLE_POLL: Duration = Duration::from_secs(60);

/// Counters for metrics (`plantwatch_platform_…_total`) and the status line.
#[derive(Debug, Default)]
pub struct PlatformUploadStats {
    /// Upload attempts (POSTs of a record, retries included).
    pub sent: AtomicU64,
    /// Rows deleted because the platform accepted them.
    pub acked: AtomicU64,
    /// Failed attempts that will be retried.
    pub retried: AtomicU64,
    /// Rows moved aside: refused by the platform as records, or unreadable.
    pub rejected: AtomicU64,
    /// Sessions opened (first login and renewals).
    pub logins: AtomicU64,
    /// What is failing right now, if anything (for status lines; never the password).
    /// A std mutex: held for a clone, never across an await.
    pub problem: Mutex<Option<String>>,
}

impl PlatformUploadStats {
    /// The current problem, if any.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn set_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.problem.lock() {
            *p = problem;
        }
    }
}

/// Why the uploader cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlatformQueueError {
    /// `[energy_platform]` has no `[energy_platform.https]`.
    #[error("energy_platform.https: not configured; the platform queue has nowhere to send")]
    NotConfigured,
    /// The CA file could not be read.
    #[error("energy_platform.https.ca_file: cannot read {}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTPS client could not be built.
    #[error(transparent)]
    Uplink(#[from] UplinkError),
}

/// What kind of failure an episode is, so that each kind is logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// The platform is unreachable or failing.
    Link,
    /// The login is refused or the password unreadable: an operator must act.
    Credentials,
    /// The platform refuses a call for a reason a record cannot cause (wrong URL, say): an
    /// operator must act.
    Setup,
    /// The outbox cannot be read or updated.
    Store,
}

/// What one attempt at a row came to.
enum Outcome {
    Delivered,
    /// The platform refused this record; move it aside.
    Refused(UplinkError),
    Retry(Trouble, String),
}

/// The config key the password comes from, for messages.
fn password_key(source: &PasswordSource) -> &'static str {
    match source {
        PasswordSource::File(_) => "energy_platform.https.password_file",
        PasswordSource::Credential(_) => "energy_platform.https.password_credential",
    }
}

/// `[energy_platform.https]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Https {
    /// Base URL, ending in `/` so that calls join below it.
    pub url: reqwest::Url,
    /// CA file, if not the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// Per-request timeout.
    pub timeout: std::time::Duration,
    /// First wait before a retry (doubles per failure up to `retry_max`).
    pub retry_min: std::time::Duration,
    /// Longest wait between retries.
    pub retry_max: std::time::Duration,
}

/// The uploader task of one platform queue.
pub struct PlatformQueue<O: Outbox> {
    outbox: Arc<O>,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    stats: Arc<PlatformUploadStats>,
    https: Https,
    enterprise_code: String,
    timezone: chrono_tz::Tz,
}

impl<O: Outbox> PlatformQueue<O> {
    /// An uploader of `spec`'s records from `outbox` (its own queue) over `https`, woken by
    /// `wake` when rows are added, counting into `stats`; `clock` stamps `uploadDate`.
    ///
    /// # Errors
    /// [`PlatformQueueError::NotConfigured`] without `[energy_platform.https]`.
    pub fn new(
        spec: &Spec,
        https: Option<&Https>,
        outbox: Arc<O>,
        wake: Arc<Notify>,
        clock: Arc<dyn Clock>,
        stats: Arc<PlatformUploadStats>,
    ) -> Result<Self, PlatformQueueError> {
        let https = https.cloned().ok_or(PlatformQueueError::NotConfigured)?;
        Ok(Self {
            outbox,
            wake,
            clock,
            stats,
            https,
            enterprise_code: spec.enterprise_code.as_str().to_owned(),
            timezone: spec.timezone,
        })
    }

    /// Sends every row, then waits for more, until `cancel`; returns `Ok` when cancelled.
    ///
    /// # Errors
    /// Start-up failures only: an unreadable CA file, an HTTPS client that cannot be built.
    /// Everything later is retried (or, for a refused record, moved aside) as the module
    /// docs say.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), PlatformQueueError> {
        let ca_pem = match &self.https.ca_file {
            Some(path) => {
                Some(
                    std::fs::read(path).map_err(|source| PlatformQueueError::CaFile {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let mut uplink = Uplink::new(UplinkConfig {
            base_url: self.https.url.clone(),
            enterprise_code: self.enterprise_code.clone(),
            // Read before each login (see `attempt`).
            password: String::new(),
            ca_pem,
            timeout: self.https.timeout,
        })?;
        info!(url = %self.https.url, "Energy platform uploader started.");
        let mut run = Run {
            queue: &self,
            uplink: &mut uplink,
            backoff: Backoff::new(self.https.retry_min, self.https.retry_max),
            trouble: None,
            failures: 0,
            done: Vec::new(),
        };
        run.drain(&cancel).await;
        run.flush_acks().await;
        Ok(())
    }
}

/// The uploader's working state.
struct Run<'a, O: Outbox> {
    queue: &'a PlatformQueue<O>,
    uplink: &'a mut Uplink,
    backoff: Backoff,
    /// The episode in progress, if any.
    trouble: Option<Trouble>,
    /// Failed attempts in the episode.
    failures: u64,
    /// Rows finished but not yet acknowledged to the store.
    done: Vec<RowId>,
}

impl<O: Outbox> Run<'_, O> {
    /// The main loop; returns when cancelled.
    async fn drain(&mut self, cancel: &CancellationToken) {
        let mut cursor: Option<RowId> = None;
        while !cancel.is_cancelled() {
            let rows = match self.queue.outbox.fetch(cursor, BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    self.trouble(Trouble::Store, e.to_string());
                    if !self.pause(cancel).await {
                        return;
                    }
                    continue;
                }
            };
            if rows.is_empty() {
                self.flush_acks().await;
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = self.queue.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            for row in rows {
                if !self.deliver(&row, cancel).await {
                    return;
                }
                cursor = Some(row.id);
                if self.done.len() >= ACK_BATCH {
                    self.flush_acks().await;
                }
            }
            self.flush_acks().await;
        }
    }

    /// Sends `row` until it is delivered or moved aside; `false` when cancelled first.
    async fn deliver(&mut self, row: &OutboxItem, cancel: &CancellationToken) -> bool {
        let record = match platform_record(&row.payload) {
            Ok(r) => r,
            Err(e) => {
                error!(row = row.id, stream = %row.topic, error = %e, "Unreadable energy-platform row moved aside.");
                self.queue.stats.rejected.fetch_add(1, Ordering::Relaxed);
                self.done.push(row.id);
                return true;
            }
        };
        loop {
            // A shutdown does not wait for a slow platform: the row stays and goes again.
            let outcome = tokio::select! {
                () = cancel.cancelled() => return false,
                outcome = self.attempt(&record) => outcome,
            };
            match outcome {
                Outcome::Delivered => {
                    self.recovered();
                    self.queue.stats.acked.fetch_add(1, Ordering::Relaxed);
                    self.done.push(row.id);
                    return true;
                }
                Outcome::Refused(e) => {
                    // The link works: this is about the record alone.
                    self.recovered();
                    error!(
                        data_code = %record.key.data_code,
                        stat_type = record.key.stat_type.code(),
                        stat_date = %record.key.stat_date.format(DATE_FORMAT),
                        meter = %record.meter,
                        error = %e,
                        "The energy platform refused a record; moved aside. Fix the item's \
                         registration or config, then re-send it with `plantwatch upload`."
                    );
                    self.queue.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    self.done.push(row.id);
                    return true;
                }
                Outcome::Retry(kind, message) => {
                    self.queue.stats.retried.fetch_add(1, Ordering::Relaxed);
                    self.trouble(kind, message);
                    // Acknowledge what went through before waiting, so a long outage does
                    // not leave delivered rows to be sent again after a restart.
                    self.flush_acks().await;
                    if !self.pause(cancel).await {
                        return false;
                    }
                }
            }
        }
    }

    /// One try at `record`.
    async fn attempt(&mut self, record: &Record) -> Outcome {
        if !self.uplink.has_session() {
            // Read the password before each login, so that fixing the file is enough.
            let source = &self.queue.https.password;
            match source.read_first_line() {
                Ok(password) => self.uplink.set_password(password),
                Err((at, why)) => {
                    return Outcome::Retry(
                        Trouble::Credentials,
                        format!(
                            "{}: cannot read the platform password from {at}: {why}",
                            password_key(source)
                        ),
                    );
                }
            }
        }
        let now = self.queue.clock.now().0;
        let Some(uploaded) = local_datetime(self.queue.timezone, now) else {
            return Outcome::Retry(Trouble::Link, format!("the clock reads {now} ms"));
        };
        let logins = self.uplink.logins();
        self.queue.stats.sent.fetch_add(1, Ordering::Relaxed);
        let result = self.uplink.send(record, uploaded).await;
        self.queue
            .stats
            .logins
            .fetch_add(self.uplink.logins() - logins, Ordering::Relaxed);
        match result {
            Ok(()) => Outcome::Delivered,
            Err(e) if e.is_record_refused() => Outcome::Refused(e),
            Err(e) if e.is_login_refused() => Outcome::Retry(
                Trouble::Credentials,
                format!(
                    "{}: the platform refused the login of enterprise {}: {e}",
                    password_key(&self.queue.https.password),
                    self.queue.enterprise_code
                ),
            ),
            Err(e) if e.is_retryable() => Outcome::Retry(Trouble::Link, e.to_string()),
            // The platform refuses a call itself (HTTP 404 on a wrong path, say): a setup
            // problem, which must not cost the record.
            Err(e) => Outcome::Retry(
                Trouble::Setup,
                format!("energy_platform.https.url ({}): {e}", self.queue.https.url),
            ),
        }
    }

    /// Notes a failure; logs it when it starts an episode of its kind.
    fn trouble(&mut self, kind: Trouble, message: String) {
        self.failures += 1;
        if self.trouble != Some(kind) {
            match kind {
                Trouble::Credentials => error!(
                    error = %message,
                    "Energy platform login refused; records stay queued. Fix the password (it \
                     is read again before each retry)."
                ),
                Trouble::Link => warn!(
                    error = %message,
                    "Energy platform unreachable or failing; records stay queued and are retried."
                ),
                Trouble::Setup => error!(
                    error = %message,
                    "The energy platform refuses the upload call; records stay queued. Check \
                     energy_platform.https."
                ),
                Trouble::Store => error!(
                    error = %message,
                    "Cannot read or update the energy platform queue; retrying."
                ),
            }
            self.trouble = Some(kind);
        }
        self.queue.stats.set_problem(Some(message));
    }

    /// Ends an episode, if one is running.
    fn recovered(&mut self) {
        self.backoff.reset();
        if self.trouble.take().is_some() {
            info!(
                failures = self.failures,
                "Energy platform upload recovered."
            );
            self.queue.stats.set_problem(None);
        }
        self.failures = 0;
    }

    /// Waits out the next backoff step; `false` when cancelled first.
    async fn pause(&mut self, cancel: &CancellationToken) -> bool {
        let wait = self.backoff.next();
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }

    /// Acknowledges finished rows; on failure keeps them for the next try (the rows are only
    /// sent again if the daemon restarts before then).
    async fn flush_acks(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.done);
        if let Err(e) = self.queue.outbox.ack(rows.clone()).await {
            warn!(rows = rows.len(), error = %e, "Cannot delete delivered energy-platform rows yet; retrying.");
            self.done = rows;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_messages_name_the_config_key() {
        assert_eq!(
            password_key(&PasswordSource::File("/etc/p".into())),
            "energy_platform.https.password_file"
        );
        assert_eq!(
            password_key(&PasswordSource::Credential("platform-password".into())),
            "energy_platform.https.password_credential"
        );
    }
}
