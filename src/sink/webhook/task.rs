//! The service: one task per webhook that takes notifications from its queue, batches them
//! into digests while the bucket is empty, signs, sends and retries.

use std::collections::VecDeque;
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bucket::TokenBucket;
use super::classify::{Outcome, classify};
use super::{
    Format, MAX_REASON_BYTES, Notification, Severity, WebhookConfig, dingtalk_sign, feishu_sign,
    render, truncate_utf8,
};
use crate::sink::backoff::Backoff;

/// Capacity of each notifier's queue; `offer` drops beyond it.
pub const QUEUE_CAP: usize = 256;

/// At most this many notifications are held by the task besides the queue,
/// so memory stays bounded while the bucket is empty.
const MAX_PENDING: usize = QUEUE_CAP;

/// Robot replies are small; anything beyond this is not read (bounded memory
/// against a misbehaving endpoint).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Upper bound for one retry delay, `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Counters of one notifier, shared with the rest of the daemon.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Notifications delivered (each notification of a digest counts).
    pub sent: AtomicU64,
    /// Notifications whose delivery failed permanently or ran out of retries.
    pub failed: AtomicU64,
    /// Notifications dropped: queue full, task gone, or left at cancellation.
    pub dropped: AtomicU64,
    /// Digest messages delivered.
    pub digests: AtomicU64,
}

/// Errors of [`Notifier::spawn`]; none of them carries the URL or secret.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The configuration is unusable.
    #[error("webhook {name}: invalid config: {reason}")]
    InvalidConfig {
        /// Webhook name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("webhook {name}: cannot build HTTP client: {source}")]
    Client {
        /// Webhook name.
        name: String,
        /// Underlying error (built before any URL is used, so URL-free).
        source: reqwest::Error,
    },
    /// `spawn` was called outside a tokio runtime.
    #[error("webhook {name}: no tokio runtime to spawn the notifier on")]
    NoRuntime {
        /// Webhook name.
        name: String,
    },
}

/// How a batch ended.
enum Delivery {
    Delivered,
    Failed,
    Cancelled,
}

/// The background task of one webhook; created by [`Notifier::spawn`].
pub struct Notifier {
    name: Arc<str>,
    format: Format,
    url: Url,
    secret: Option<String>,
    client: reqwest::Client,
    // Only ever called from `&mut self` methods, so Send suffices (no Sync).
    clock: Box<dyn Fn() -> i64 + Send>,
    max_retries: u32,
    retry_base: Duration,
    digest_after: usize,
    bucket: TokenBucket,
    stats: Arc<WebhookStats>,
    cancel: CancellationToken,
    rx: mpsc::Receiver<Notification>,
}

/// Producer side of a [`Notifier`]; `offer` from anywhere, `close` at shutdown.
pub struct NotifierHandle {
    name: Arc<str>,
    min_severity: Severity,
    tx: mpsc::Sender<Notification>,
    stats: Arc<WebhookStats>,
    // Set while offers are being dropped, so a flood logs one warning.
    dropping: AtomicBool,
    task: JoinHandle<()>,
}

impl fmt::Debug for NotifierHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierHandle")
            .field("name", &self.name)
            .field("min_severity", &self.min_severity)
            .finish_non_exhaustive()
    }
}

impl NotifierHandle {
    /// Queues `n` without blocking; ignored below `min_severity`, dropped
    /// and counted when the queue is full.
    pub fn offer(&self, n: Notification) {
        if n.severity < self.min_severity {
            return;
        }
        match self.tx.try_send(n) {
            Ok(()) => self.dropping.store(false, Ordering::Relaxed),
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(webhook = %self.name, capacity = QUEUE_CAP,
                        "webhook queue full; dropping notifications until it drains");
                }
            }
            Err(TrySendError::Closed(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(webhook = %self.name,
                        "webhook notifier has stopped; dropping notifications");
                }
            }
        }
    }

    /// Stops accepting, lets the task deliver what is queued (cut short by
    /// the cancel token, leftovers counted as dropped) and waits for it.
    pub async fn close(self) {
        let Self { name, tx, task, .. } = self;
        // Dropping the only sender is what tells the task no more will come.
        drop(tx);
        if let Err(e) = task.await {
            tracing::error!(webhook = %name, error = %e, "webhook notifier task ended abnormally");
        }
    }
}

impl Notifier {
    /// Validates `cfg`, builds the HTTP client and starts the task on the
    /// current tokio runtime. `clock` returns ms since the epoch and is used
    /// for signatures only (the daemon passes its `Clock`).
    pub fn spawn(
        cfg: WebhookConfig,
        stats: Arc<WebhookStats>,
        cancel: CancellationToken,
        clock: impl Fn() -> i64 + Send + 'static,
    ) -> Result<NotifierHandle, WebhookError> {
        Self::spawn_on(cfg, stats, cancel, clock, &TaskTracker::new())
    }

    /// Like [`Notifier::spawn`], with the task tracked by `tracker`, so a shutdown can wait
    /// for it to deliver what it holds.
    pub fn spawn_on(
        cfg: WebhookConfig,
        stats: Arc<WebhookStats>,
        cancel: CancellationToken,
        clock: impl Fn() -> i64 + Send + 'static,
        tracker: &TaskTracker,
    ) -> Result<NotifierHandle, WebhookError> {
        let invalid = |reason: &str| WebhookError::InvalidConfig {
            name: cfg.name.clone(),
            reason: reason.to_owned(),
        };
        if cfg.name.is_empty() {
            return Err(invalid("name must not be empty"));
        }
        // The parse error text never contains the URL itself.
        let url = Url::parse(&cfg.url).map_err(|e| invalid(&format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("url must be http or https"));
        }
        if cfg.rate_per_minute == 0 {
            return Err(invalid("rate_per_minute must be at least 1"));
        }
        if cfg.timeout.is_zero() {
            return Err(invalid("timeout must be positive"));
        }
        match (&cfg.secret, cfg.format) {
            (Some(s), _) if s.is_empty() => return Err(invalid("secret must not be empty")),
            // A secret on an unsigned format would silently be ignored, which
            // hides a misconfiguration (e.g. the wrong format chosen).
            (Some(_), Format::Generic | Format::Wecom) => {
                return Err(invalid("secret is only used by dingtalk and feishu"));
            }
            _ => {}
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(WebhookError::NoRuntime { name: cfg.name });
        };

        // reqwest is built without a crypto provider; install ring as the
        // process default (a no-op error if one is already installed).
        let _first_install = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(cfg.timeout);
        // A proxy taken from the environment makes no sense for a local
        // receiver (and would break loopback tests on proxied hosts).
        let loopback = url.host_str().is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        if loopback {
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|e| WebhookError::Client {
            name: cfg.name.clone(),
            source: e.without_url(),
        })?;

        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let (tx, rx) = mpsc::channel(QUEUE_CAP);
        let worker = Notifier {
            name: name.clone(),
            format: cfg.format,
            url,
            secret: cfg.secret,
            client,
            clock: Box::new(clock),
            max_retries: cfg.max_retries,
            retry_base: cfg.retry_base,
            digest_after: usize::try_from(cfg.digest_after).unwrap_or(usize::MAX),
            bucket: TokenBucket::new(cfg.rate_per_minute, Instant::now()),
            stats: stats.clone(),
            cancel,
            rx,
        };
        let task = tracker.spawn_on(worker.run(), &runtime);
        Ok(NotifierHandle {
            name,
            min_severity: cfg.min_severity,
            tx,
            stats,
            dropping: AtomicBool::new(false),
            task,
        })
    }

    async fn run(mut self) {
        let cancel = self.cancel.clone();
        let mut pending: VecDeque<Notification> = VecDeque::new();
        let mut open = true;
        loop {
            if pending.is_empty() {
                if !open {
                    break;
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    m = self.rx.recv() => match m {
                        Some(n) => pending.push_back(n),
                        None => open = false,
                    },
                }
                continue;
            }
            // Take whatever else is already queued so a burst is seen whole.
            while open && pending.len() < MAX_PENDING {
                match self.rx.try_recv() {
                    Ok(n) => pending.push_back(n),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if let Err(wait) = self.bucket.try_take(Instant::now()) {
                // Keep collecting while waiting, up to the pending bound
                // (beyond it the queue fills and `offer` drops).
                let room = open && pending.len() < MAX_PENDING;
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = sleep(wait) => {}
                    m = self.rx.recv(), if room => match m {
                        Some(n) => pending.push_back(n),
                        None => open = false,
                    },
                }
                continue;
            }
            let batch: Vec<Notification> = if pending.len() > self.digest_after {
                pending.drain(..).collect()
            } else {
                pending.pop_front().into_iter().collect()
            };
            let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            match self.deliver(&batch).await {
                Delivery::Delivered => {
                    self.stats.sent.fetch_add(count, Ordering::Relaxed);
                    if batch.len() > 1 {
                        self.stats.digests.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Delivery::Failed => {
                    self.stats.failed.fetch_add(count, Ordering::Relaxed);
                }
                Delivery::Cancelled => {
                    pending.extend(batch);
                    break;
                }
            }
        }
        // Whatever is left was accepted but will never be sent.
        self.rx.close();
        let mut left = pending.len();
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            self.stats
                .dropped
                .fetch_add(u64::try_from(left).unwrap_or(u64::MAX), Ordering::Relaxed);
            tracing::warn!(webhook = %self.name, count = left,
                "webhook notifier stopped with undelivered notifications");
        }
    }

    /// Sends one message with retries. The caller has taken the first token.
    async fn deliver(&mut self, batch: &[Notification]) -> Delivery {
        let cancel = self.cancel.clone();
        let body = render(self.format, batch);
        let mut attempt: u32 = 0;
        let mut backoff = Backoff::new(self.retry_base, MAX_BACKOFF);
        loop {
            let outcome = tokio::select! {
                biased;
                () = cancel.cancelled() => return Delivery::Cancelled,
                o = self.attempt(&body) => o,
            };
            match outcome {
                Outcome::Delivered => {
                    tracing::debug!(webhook = %self.name, count = batch.len(), "webhook delivered");
                    return Delivery::Delivered;
                }
                Outcome::Permanent(reason) => {
                    tracing::warn!(webhook = %self.name, count = batch.len(), error = %reason,
                        "webhook delivery failed permanently; not retried");
                    return Delivery::Failed;
                }
                Outcome::Retry { reason, after } => {
                    if attempt >= self.max_retries {
                        tracing::warn!(webhook = %self.name, count = batch.len(), error = %reason,
                            attempts = attempt + 1, "webhook delivery failed; retries exhausted");
                        return Delivery::Failed;
                    }
                    let delay = backoff
                        .next()
                        .max(after.unwrap_or_default())
                        .min(MAX_BACKOFF);
                    attempt += 1;
                    tracing::debug!(webhook = %self.name, error = %reason, attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "webhook delivery failed; will retry");
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return Delivery::Cancelled,
                        () = sleep(delay) => {}
                    }
                    // Retries count against the robot's limit too.
                    loop {
                        match self.bucket.try_take(Instant::now()) {
                            Ok(()) => break,
                            Err(wait) => tokio::select! {
                                biased;
                                () = cancel.cancelled() => return Delivery::Cancelled,
                                () = sleep(wait) => {}
                            },
                        }
                    }
                }
            }
        }
    }

    /// One signed POST of `body`, classified.
    async fn attempt(&mut self, body: &Value) -> Outcome {
        let mut url = self.url.clone();
        let mut body = body.clone();
        // Signed fresh per attempt: both robots reject timestamps older than
        // an hour, and a retry may come much later than the first try.
        match (self.format, self.secret.as_deref()) {
            (Format::Dingtalk, Some(secret)) => {
                let ts = (self.clock)();
                let extra = format!("timestamp={ts}&sign={}", dingtalk_sign(secret, ts));
                let query = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{extra}"),
                    _ => extra,
                };
                // set_query keeps existing %XX escapes, so the sign arrives
                // encoded exactly once.
                url.set_query(Some(&query));
            }
            (Format::Feishu, Some(secret)) => {
                let ts = (self.clock)().div_euclid(1000);
                if let Value::Object(map) = &mut body {
                    map.insert("timestamp".to_owned(), Value::String(ts.to_string()));
                    map.insert("sign".to_owned(), Value::String(feishu_sign(secret, ts)));
                }
            }
            _ => {}
        }
        let bytes = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => return Outcome::Permanent(format!("cannot encode body: {e}")),
        };
        let sent = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(bytes)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    reason: self.describe(e),
                    after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut buf = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let take = chunk.len().min(MAX_RESPONSE_BYTES - buf.len());
                    buf.extend_from_slice(chunk.get(..take).unwrap_or_default());
                    if buf.len() >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome::Retry {
                        reason: format!("reading reply: {}", self.describe(e)),
                        after: None,
                    };
                }
            }
        }
        classify(self.format, status, &buf, retry_after)
    }

    /// Loggable text of a reqwest error: URL removed, then scrubbed of the
    /// query and secret in case a lower layer echoed them.
    fn describe(&self, e: reqwest::Error) -> String {
        let e = e.without_url();
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect error"
        } else {
            "request error"
        };
        let mut s = format!("{kind}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            let _infallible = write!(s, ": {inner}");
            source = inner.source();
        }
        let mut secrets: Vec<&str> = vec![self.url.as_str()];
        secrets.extend(self.url.query().filter(|q| !q.is_empty()));
        secrets.extend(self.secret.as_deref());
        for secret in secrets {
            s = s.replace(secret, "<redacted>");
        }
        truncate_utf8(&s, MAX_REASON_BYTES)
    }
}
