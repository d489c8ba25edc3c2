//! Alarm webhook notifier: pushes alarm raise/clear notifications to a generic
//! JSON webhook or to WeCom (企业微信), DingTalk (钉钉) and Feishu/Lark (飞书)
//! group robots.
//!
//! One background task ([`Notifier`]) runs per configured webhook; producers
//! hold its [`NotifierHandle`] and call [`NotifierHandle::offer`].
//!
//! # Invariants
//! - `offer` never blocks or awaits: the queue holds at most [`QUEUE_CAP`]
//!   notifications; when it is full (or the task has ended) the notification
//!   is dropped and counted in [`WebhookStats::dropped`].
//! - Notifications below `min_severity` are ignored and counted nowhere.
//! - Once the task has ended, every accepted notification is counted in
//!   exactly one of `sent`, `failed`, `dropped` (leftovers at cancellation are
//!   `dropped`). `digests` counts digest messages delivered; their
//!   notifications are also in `sent`.
//! - Every HTTP request (first attempts and retries alike) takes a token from
//!   a bucket of capacity 1 refilled at `rate_per_minute / 60` per second, so
//!   requests are spaced at least `60 / rate_per_minute` s apart and any 60 s
//!   window carries at most `rate_per_minute + 1` of them. Robots allow 20 a
//!   minute, hence the default of 18.
//! - Whenever a token is available and more than `digest_after`
//!   notifications are waiting, they all leave as one digest (count + one
//!   line each, most severe first); otherwise the oldest leaves alone.
//!   Notifications only pile up while the bucket is empty or a delivery is
//!   being retried, so digests happen exactly when the robot limit (or a
//!   failing endpoint) holds messages back.
//! - Retries: network errors, HTTP 5xx, HTTP 429 and a robot's rate-limit
//!   errcode are retried with exponential backoff (1 s, 2 s, 4 s … capped at
//!   60 s, each drawn from the upper half of its step, at least `Retry-After`)
//!   up to `max_retries` times. Any other 4xx
//!   and any other nonzero robot errcode fail permanently: logged once with
//!   the webhook name and the robot's errmsg, counted in `failed`.
//! - Delivery is at-least-once: a request whose response was lost is retried.
//! - Secrets never reach logs: log lines name the webhook by `name` only. The
//!   URL (it carries the WeCom `key` / DingTalk `access_token`) and the
//!   signing secret are never logged, `Debug` redacts both, and reqwest errors
//!   are stripped of their URL (and scrubbed) before they are logged.
//! - Nothing here panics: errors are returned from [`Notifier::spawn`] or
//!   logged and counted by the task.
//!
//! # Wire formats (checked against the vendors' docs)
//! - WeCom group robot — <https://developer.work.weixin.qq.com/document/path/91770>
//!   (also served as <https://work.weixin.qq.com/api/doc/90000/90136/91770>):
//!   `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY`, body
//!   `{"msgtype":"markdown","markdown":{"content":…}}` (markdown content ≤
//!   4096 bytes, text only 2048, hence markdown), no signature, 20 messages a
//!   minute. Reply `{"errcode":0,"errmsg":"ok"}`; 45009 "api freq out of
//!   limit" is the rate-limit code, -1 "system busy" is transient.
//! - DingTalk custom robot with 加签 —
//!   <https://open.dingtalk.com/document/robots/customize-robot-security-settings>
//!   (English: <https://help.dingtalk.io/open/dingstart/customize-robot-security-settings>):
//!   `timestamp` in ms, string_to_sign = `"{timestamp}\n{secret}"`,
//!   sign = urlEncode(base64(HmacSHA256(key = secret, msg = string_to_sign))),
//!   appended as `&timestamp=…&sign=…` to the webhook URL. Body
//!   `{"msgtype":"markdown","markdown":{"title":…,"text":…}}`. Reply `errcode`
//!   0 = ok; 310000 = security check failed (sign not match, invalid
//!   timestamp, keywords not in content, ip not in whitelist) is permanent;
//!   130101 "send too fast, exceed 20 times per minute" is the rate limit
//!   (seen in <https://github.com/ccfos/nightingale/issues/369>).
//! - Feishu/Lark custom bot — <https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>:
//!   `timestamp` in **seconds**, string_to_sign = `"{timestamp}\n{secret}"`,
//!   sign = base64(HmacSHA256(key = string_to_sign, msg = empty)); the body
//!   carries `"timestamp"` (a string) and `"sign"` beside
//!   `"msg_type":"text","content":{"text":…}` (body ≤ 20 KB). Reply
//!   `{"code":0,"msg":"success",…}`, older deployments only
//!   `{"StatusCode":0,"StatusMessage":"success"}`; 19021 = sign match fail
//!   (permanent), 11232 = frequency limited (retried).
//! - Generic: `{"source":"plantwatch","digest":…,"count":…,"title":…,"text":…,
//!   "notifications":[…]}`, see [`render`]; any 2xx is success.

use std::collections::VecDeque;
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Backoff;

/// Capacity of each notifier's queue; `offer` drops beyond it.
pub const QUEUE_CAP: usize = 256;

/// At most this many notifications are held by the task besides the queue,
/// so memory stays bounded while the bucket is empty.
const MAX_PENDING: usize = QUEUE_CAP;

/// Text budget in bytes for one message: WeCom markdown allows 4096 bytes,
/// DingTalk and Feishu more, so one budget below the tightest keeps it simple.
const TEXT_BUDGET: usize = 4000;

/// One notification line is cut to this many bytes so a single long message
/// cannot crowd every other line out of a digest.
const LINE_BUDGET: usize = 500;

/// Room kept at the end of a digest for the "… and N more" line.
const MORE_RESERVE: usize = 64;

/// Robot replies are small; anything beyond this is not read (bounded memory
/// against a misbehaving endpoint).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Upper bound for one retry delay, `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Robot errmsg / error text in logs is cut to this many bytes.
const MAX_REASON_BYTES: usize = 300;

/// Which wire format a webhook speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Plain JSON with every field, for in-house receivers.
    Generic,
    /// WeCom (企业微信) group robot.
    Wecom,
    /// DingTalk (钉钉) custom robot, optionally signed (加签).
    Dingtalk,
    /// Feishu/Lark (飞书) custom bot, optionally signed (签名校验).
    Feishu,
}

pub use crate::config::rules::Severity;

/// Configuration of one webhook.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Name used in logs instead of the URL (which may carry a key).
    pub name: String,
    /// Full webhook URL, query included (WeCom `key`, DingTalk `access_token`).
    pub url: String,
    /// Wire format.
    pub format: Format,
    /// Signing secret for DingTalk/Feishu; never logged, redacted in `Debug`.
    pub secret: Option<String>,
    /// Notifications below this severity are ignored.
    pub min_severity: Severity,
    /// Timeout of one HTTP request, response included.
    pub timeout: Duration,
    /// Retries after the first attempt for transient failures.
    pub max_retries: u32,
    /// First wait before a retry; doubled per attempt up to a minute.
    pub retry_base: Duration,
    /// Requests per minute (token bucket refill rate, capacity 1); ≥ 1.
    pub rate_per_minute: u32,
    /// When more than this many notifications wait, they go as one digest.
    pub digest_after: u32,
}

impl WebhookConfig {
    /// A config with defaults: no secret, all severities, 10 s timeout,
    /// 5 retries, 18 requests a minute (robots allow 20), digest after 3.
    pub fn new(name: impl Into<String>, url: impl Into<String>, format: Format) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            format,
            secret: None,
            min_severity: Severity::Low,
            timeout: Duration::from_secs(10),
            max_retries: 5,
            retry_base: Duration::from_secs(1),
            rate_per_minute: 18,
            digest_after: 3,
        }
    }
}

impl fmt::Debug for WebhookConfig {
    // Hand-written so neither the URL's key/token nor the secret can leak
    // through a `{:?}` in a log line; only the host is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &format_args!("<redacted, host {host}>"))
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("min_severity", &self.min_severity)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_base", &self.retry_base)
            .field("rate_per_minute", &self.rate_per_minute)
            .field("digest_after", &self.digest_after)
            .finish()
    }
}

/// One alarm state change to push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Device the alarm belongs to.
    pub device: String,
    /// Rule that raised the alarm.
    pub rule: String,
    /// Alarm instance id.
    pub id: String,
    /// "active" | "cleared" | other states (shown uppercased).
    pub state: String,
    /// Severity of the alarm.
    pub severity: Severity,
    /// Human-readable message.
    pub message: String,
    /// Measured value, if any.
    pub value: Option<f64>,
    /// Limit that was crossed, if any.
    pub limit: Option<f64>,
    /// Event time, ms since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// Site name.
    pub site: String,
    /// Gateway name.
    pub gateway: String,
}

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

/// DingTalk 加签: `urlencode(base64(HmacSHA256(secret, "{timestamp_ms}\n{secret}")))`.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let string_to_sign = format!("{timestamp_ms}\n{secret}");
    let b64 = BASE64.encode(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()));
    // Base64 output only holds [A-Za-z0-9+/=]; of those only '+', '/' and '='
    // need escaping in a query, so this is a complete URL encoding of it
    // (identical to Python's quote_plus in DingTalk's sample) without a crate.
    let mut out = String::with_capacity(b64.len() + 8);
    for c in b64.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// Feishu 签名校验: `base64(HmacSHA256(key = "{timestamp_s}\n{secret}", msg = ""))`.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    // Feishu keys the HMAC with the string to sign and hashes nothing,
    // unlike DingTalk; that is what its samples do.
    let string_to_sign = format!("{timestamp_s}\n{secret}");
    BASE64.encode(hmac_sha256(string_to_sign.as_bytes(), b""))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the
    // fallback only exists to keep this path free of unwrap.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(msg);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Body for `format`: one notification's message, or a digest of `batch`.
///
/// A batch of one renders as a single message; more render as a digest
/// (count, then one line each, most severe first, oldest first within a
/// severity). Text is cut to about 4000 bytes with a "… and N more" line.
/// Signing fields (Feishu `timestamp`/`sign`) are added at send time, not here.
pub fn render(format: Format, batch: &[Notification]) -> Value {
    let title = title(batch);
    match format {
        Format::Generic => json!({
            "source": "plantwatch",
            "digest": batch.len() > 1,
            "count": batch.len(),
            "title": title,
            "text": text(batch, "\n"),
            "notifications": sorted(batch),
        }),
        Format::Wecom => json!({
            "msgtype": "markdown",
            "markdown": { "content": text(batch, "\n") },
        }),
        // DingTalk markdown joins single newlines, so lines are paragraphs.
        Format::Dingtalk => json!({
            "msgtype": "markdown",
            "markdown": { "title": title, "text": text(batch, "\n\n") },
        }),
        Format::Feishu => json!({
            "msg_type": "text",
            "content": { "text": text(batch, "\n") },
        }),
    }
}

/// Chinese tag and English state word for a notification state.
fn state_words(state: &str) -> (&'static str, String) {
    match state.to_ascii_lowercase().as_str() {
        "active" | "raised" | "raise" | "firing" => ("【告警】", "ACTIVE".to_owned()),
        "cleared" | "clear" | "resolved" | "ok" => ("【恢复】", "CLEARED".to_owned()),
        _ => ("【通知】", state.to_uppercase()),
    }
}

/// `【告警】[high] ACTIVE motor-1 bearing-hot: msg (value 92.3, limit 90, site/gw, 2026-11-29 08:00:00 UTC, id a-1)`
fn line(n: &Notification) -> String {
    let (tag, word) = state_words(&n.state);
    let mut extras = String::new();
    if let Some(v) = n.value {
        let _infallible = write!(extras, "value {v}, ");
    }
    if let Some(l) = n.limit {
        let _infallible = write!(extras, "limit {l}, ");
    }
    let s = format!(
        "{tag}[{sev}] {word} {dev} {rule}: {msg} ({extras}{site}/{gw}, {time}, id {id})",
        sev = n.severity,
        dev = n.device,
        rule = n.rule,
        msg = n.message,
        site = n.site,
        gw = n.gateway,
        time = format_utc(n.ts_ms),
        id = n.id,
    );
    truncate_utf8(&s, LINE_BUDGET)
}

fn title(batch: &[Notification]) -> String {
    match batch {
        [n] => {
            let (tag, _) = state_words(&n.state);
            format!("{tag}{} {}", n.device, n.rule)
        }
        _ => format!("【告警汇总】{} notifications", batch.len()),
    }
}

/// Most severe first; stable, so equal severities stay oldest first after
/// the time sort.
fn sorted(batch: &[Notification]) -> Vec<&Notification> {
    let mut v: Vec<&Notification> = batch.iter().collect();
    v.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.ts_ms.cmp(&b.ts_ms)));
    v
}

fn text(batch: &[Notification], sep: &str) -> String {
    if let [n] = batch {
        return line(n);
    }
    let (mut active, mut cleared) = (0usize, 0usize);
    for n in batch {
        match state_words(&n.state).1.as_str() {
            "ACTIVE" => active += 1,
            "CLEARED" => cleared += 1,
            _ => {}
        }
    }
    let other = batch.len() - active - cleared;
    let total = batch.len();
    let mut out = format!(
        "【告警汇总】{total} 条通知 / {total} notifications ({active} ACTIVE, {cleared} CLEARED{}), 按严重程度排序 / most severe first:",
        if other > 0 {
            format!(", {other} OTHER")
        } else {
            String::new()
        }
    );
    let list = sorted(batch);
    for (i, n) in list.iter().enumerate() {
        let entry = format!("{sep}{}. {}", i + 1, line(n));
        if out.len() + entry.len() + MORE_RESERVE > TEXT_BUDGET {
            let rest = list.len() - i;
            let _infallible = write!(out, "{sep}…另有 {rest} 条 / and {rest} more");
            break;
        }
        out.push_str(&entry);
    }
    out
}

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut.
fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.get(..end).unwrap_or_default().to_owned();
    out.push('…');
    out
}

/// `YYYY-MM-DD HH:MM:SS UTC`; an instant chrono cannot represent prints as its ms.
fn format_utc(ts_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ts_ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{ts_ms} ms UTC"),
    }
}

/// Result of one HTTP attempt.
#[derive(Debug, PartialEq)]
enum Outcome {
    Delivered,
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Permanent(String),
}

/// The robot's own status code and message in a reply body, if any.
fn robot_status(format: Format, body: &[u8]) -> Option<(i64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match format {
        Format::Generic => None,
        Format::Wecom | Format::Dingtalk => {
            let code = v.get("errcode")?.as_i64()?;
            Some((code, text("errmsg").unwrap_or_default()))
        }
        // New replies carry `code`/`msg`; older ones only `StatusCode`/`StatusMessage`.
        Format::Feishu => {
            if let Some(code) = v.get("code").and_then(Value::as_i64) {
                Some((code, text("msg").unwrap_or_default()))
            } else {
                let code = v.get("StatusCode")?.as_i64()?;
                Some((code, text("StatusMessage").unwrap_or_default()))
            }
        }
    }
}

/// Robot codes that mean "slow down / try later" rather than "wrong request".
fn is_retryable_code(format: Format, code: i64) -> bool {
    match format {
        Format::Generic => false,
        // 45009: api freq out of limit; -1: system busy.
        Format::Wecom => matches!(code, 45009 | -1),
        // 130101: send too fast, exceed 20 times per minute; -1: system busy.
        Format::Dingtalk => matches!(code, 130101 | -1),
        // 11232: frequency limited.
        Format::Feishu => code == 11232,
    }
}

/// Decides delivered / retry / permanent from status and body.
fn classify(format: Format, status: u16, body: &[u8], retry_after: Option<Duration>) -> Outcome {
    let robot = robot_status(format, body);
    let detail = robot
        .as_ref()
        .map(|(c, m)| format!(", errcode {c}: {}", truncate_utf8(m, MAX_REASON_BYTES)))
        .unwrap_or_default();
    if status == 429 || status >= 500 {
        return Outcome::Retry {
            reason: format!("HTTP {status}{detail}"),
            after: retry_after,
        };
    }
    let ok_status = (200..300).contains(&status);
    if format == Format::Generic {
        return if ok_status {
            Outcome::Delivered
        } else {
            Outcome::Permanent(format!("HTTP {status}"))
        };
    }
    match robot {
        Some((0, _)) if ok_status => Outcome::Delivered,
        // Checked before the status: Feishu answers some rate limits with 400.
        Some((code, _)) if is_retryable_code(format, code) => Outcome::Retry {
            reason: format!("rate limited: HTTP {status}{detail}"),
            after: retry_after,
        },
        Some(_) => Outcome::Permanent(format!("HTTP {status}{detail}")),
        None if ok_status => Outcome::Permanent(format!(
            "HTTP {status} without a robot status code in the reply"
        )),
        None => Outcome::Permanent(format!("HTTP {status}")),
    }
}

/// Token bucket of capacity 1 (see the module invariants).
struct TokenBucket {
    tokens: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate_per_minute: u32, now: Instant) -> Self {
        Self {
            tokens: 1.0,
            per_sec: f64::from(rate_per_minute.max(1)) / 60.0,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(1.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.per_sec;
            // Bounded by 60 s since per_sec ≥ 1/60; the fallback avoids a
            // panic path in Duration::from_secs_f64.
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(60)))
        }
    }
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

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a test spawns the peer or server it talks to"
)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;
    use tokio::time::timeout;

    /// Fixed clock: 2026-11-29 08:00:00 UTC.
    const NOW_MS: i64 = 1_795_939_200_000;
    const WAIT: Duration = Duration::from_secs(5);

    /// One request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        path: String,
        raw_query: String,
        query: Vec<(String, String)>,
        body: Value,
    }

    impl Seen {
        fn param(&self, k: &str) -> Option<&str> {
            self.query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        }
    }

    type Responder = Arc<dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync>;

    /// Loopback HTTP/1 server on an ephemeral port; every request is
    /// reported on the channel and answered by `responder(request, index)`.
    async fn serve(responder: Responder) -> (String, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, responder, count) = (tx.clone(), responder.clone(), count.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (tx, responder, count) = (tx.clone(), responder.clone(), count.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let raw_query = req.uri().query().unwrap_or("").to_owned();
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            // Decoded with url's form decoder, independent of
                            // the encoder under test.
                            let query = Url::parse(&format!("http://x/?{raw_query}"))
                                .unwrap()
                                .query_pairs()
                                .into_owned()
                                .collect();
                            let seen = Seen {
                                path,
                                raw_query,
                                query,
                                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                            };
                            let idx = count.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = responder(&seen, idx);
                            let _receiver_gone = tx.send(seen);
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _connection_ended = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        timeout(WAIT, rx.recv())
            .await
            .expect("timed out waiting for a request")
            .expect("server gone")
    }

    /// All requests the server saw (call after `close`).
    fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
        let mut v = Vec::new();
        while let Ok(s) = rx.try_recv() {
            v.push(s);
        }
        v
    }

    fn cfg(name: &str, url: String, format: Format) -> WebhookConfig {
        WebhookConfig {
            timeout: WAIT,
            max_retries: 3,
            // Retry tests stay fast; the doubling and the cap are the same.
            retry_base: Duration::from_millis(20),
            rate_per_minute: 6000,
            digest_after: 1000,
            ..WebhookConfig::new(name, url, format)
        }
    }

    fn notif(device: &str, severity: Severity, state: &str) -> Notification {
        Notification {
            device: device.to_owned(),
            rule: "bearing-hot".to_owned(),
            id: format!("{device}-a1"),
            state: state.to_owned(),
            severity,
            message: "bearing 92.3 °C above 90".to_owned(),
            value: Some(92.3),
            limit: Some(90.0),
            ts_ms: NOW_MS,
            site: "site-a".to_owned(),
            gateway: "gw-1".to_owned(),
        }
    }

    fn spawn(c: WebhookConfig) -> (NotifierHandle, Arc<WebhookStats>) {
        let stats = Arc::new(WebhookStats::default());
        let h = Notifier::spawn(c, stats.clone(), CancellationToken::new(), || NOW_MS).unwrap();
        (h, stats)
    }

    async fn close(h: NotifierHandle) {
        timeout(WAIT, h.close()).await.expect("close timed out");
    }

    fn counts(s: &WebhookStats) -> [u64; 4] {
        [
            s.sent.load(Ordering::SeqCst),
            s.failed.load(Ordering::SeqCst),
            s.dropped.load(Ordering::SeqCst),
            s.digests.load(Ordering::SeqCst),
        ]
    }

    fn reply(status: u16, body: &str) -> (u16, String) {
        (status, body.to_owned())
    }

    // Known answers computed with Python, independent of this code:
    // python3 -c "import hmac,hashlib,base64,urllib.parse as u; s='this is secret'; t=1795939200000; print(u.quote_plus(base64.b64encode(hmac.new(s.encode(), f'{t}\n{s}'.encode(), hashlib.sha256).digest())))"
    const DING_SECRET: &str = "this is secret";
    const DING_SIGN: &str = "ynaZu0LXtnf%2BpPErk5DG%2F8BaAzR7bzNrV9zZMaOhtxA%3D";
    // python3 -c "import hmac,hashlib,base64; s='this is secret'; t=1795939200; print(base64.b64encode(hmac.new(f'{t}\n{s}'.encode(), b'', hashlib.sha256).digest()).decode())"
    const FEISHU_SECRET: &str = "this is secret";
    const FEISHU_SIGN: &str = "vB7JGtgTu/FS8KjU3gfQkHikq7RlGK39gvQ54b5/zwI=";

    #[test]
    fn dingtalk_sign_known_answers() {
        assert_eq!(dingtalk_sign(DING_SECRET, NOW_MS), DING_SIGN);
        // python3 -c "...s='SEC000000000000000000000000000000000000000000000000000000000000test'; t=1764403200000 ..." (same formula)
        assert_eq!(
            dingtalk_sign(
                "SEC000000000000000000000000000000000000000000000000000000000000test",
                1_764_403_200_000
            ),
            "rZcYPA5aJ7XkrB%2BAuiDJQhBwzzuq81Q5HNs7KmBQg3w%3D"
        );
    }

    #[test]
    fn feishu_sign_known_answers() {
        assert_eq!(feishu_sign(FEISHU_SECRET, NOW_MS / 1000), FEISHU_SIGN);
        // python3 -c "...s='feishu-secret-123'; t=1764403200 ..." (same formula)
        assert_eq!(
            feishu_sign("feishu-secret-123", 1_764_403_200),
            "MHdQwPcillks42vGm+0+ppU9+pBsFgq+CXykcV34F9o="
        );
    }

    #[test]
    fn utc_formatting_known_answers() {
        // python3 -c "import datetime as d; print(d.datetime.fromtimestamp(1795939200, d.timezone.utc))"
        assert_eq!(format_utc(NOW_MS), "2026-11-29 08:00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn severity_is_ordered() {
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
    }

    #[test]
    fn single_line_text() {
        let raise = line(&notif("motor-1", Severity::High, "active"));
        assert_eq!(
            raise,
            "【告警】[high] ACTIVE motor-1 bearing-hot: bearing 92.3 °C above 90 \
             (value 92.3, limit 90, site-a/gw-1, 2026-11-29 08:00:00 UTC, id motor-1-a1)"
        );
        let clear = line(&notif("motor-1", Severity::High, "cleared"));
        assert!(
            clear.starts_with("【恢复】[high] CLEARED motor-1 bearing-hot"),
            "{clear}"
        );
        let other = line(&notif("motor-1", Severity::Low, "acked"));
        assert!(other.starts_with("【通知】[low] ACKED motor-1"), "{other}");
    }

    #[test]
    fn robot_bodies_have_documented_shape() {
        let one = [notif("motor-1", Severity::High, "active")];
        let w = render(Format::Wecom, &one);
        assert_eq!(w["msgtype"], "markdown");
        assert_eq!(w["markdown"]["content"], line(&one[0]));
        let d = render(Format::Dingtalk, &one);
        assert_eq!(d["msgtype"], "markdown");
        assert_eq!(d["markdown"]["title"], "【告警】motor-1 bearing-hot");
        assert_eq!(d["markdown"]["text"], line(&one[0]));
        let f = render(Format::Feishu, &one);
        assert_eq!(
            f,
            json!({"msg_type": "text", "content": {"text": line(&one[0])}})
        );
    }

    #[test]
    fn digest_is_counted_and_most_severe_first() {
        let batch = [
            notif("m1", Severity::Low, "active"),
            notif("m2", Severity::Critical, "active"),
            notif("m3", Severity::Medium, "cleared"),
            notif("m4", Severity::High, "active"),
        ];
        let t = text(&batch, "\n");
        assert!(
            t.starts_with("【告警汇总】4 条通知 / 4 notifications (3 ACTIVE, 1 CLEARED)"),
            "{t}"
        );
        let order: Vec<usize> = ["[critical]", "[high]", "[medium]", "[low]"]
            .iter()
            .map(|s| t.find(s).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{t}");
        assert!(t.contains("\n1. 【告警】[critical] ACTIVE m2"), "{t}");
        // DingTalk separates lines as paragraphs.
        let d = render(Format::Dingtalk, &batch);
        assert!(d["markdown"]["text"].as_str().unwrap().contains("\n\n1. "));
        assert_eq!(d["markdown"]["title"], "【告警汇总】4 notifications");
    }

    #[test]
    fn digest_text_is_bounded() {
        let batch: Vec<Notification> = (0..300)
            .map(|i| notif(&format!("m{i}"), Severity::Low, "active"))
            .collect();
        let t = text(&batch, "\n");
        assert!(t.len() <= TEXT_BUDGET, "{}", t.len());
        assert!(t.starts_with("【告警汇总】300 条通知"));
        assert!(t.contains(" more"), "{t}");
        let long = Notification {
            message: "é".repeat(5000),
            ..notif("m", Severity::Low, "active")
        };
        assert!(line(&long).len() <= LINE_BUDGET);
    }

    #[test]
    fn classification() {
        use Format::*;
        let ok = |f, s, b: &str| classify(f, s, b.as_bytes(), None);
        assert_eq!(
            ok(Wecom, 200, r#"{"errcode":0,"errmsg":"ok"}"#),
            Outcome::Delivered
        );
        assert!(matches!(
            ok(
                Wecom,
                200,
                r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            ),
            Outcome::Retry { .. }
        ));
        assert!(
            matches!(ok(Wecom, 200, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#), Outcome::Permanent(m) if m.contains("invalid webhook url"))
        );
        assert!(matches!(
            ok(
                Dingtalk,
                200,
                r#"{"errcode":130101,"errmsg":"send too fast"}"#
            ),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            ok(
                Dingtalk,
                200,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            Outcome::Permanent(_)
        ));
        assert_eq!(
            ok(Feishu, 200, r#"{"code":0,"msg":"success","StatusCode":0}"#),
            Outcome::Delivered
        );
        assert_eq!(
            ok(Feishu, 200, r#"{"StatusCode":0,"StatusMessage":"success"}"#),
            Outcome::Delivered
        );
        assert!(matches!(
            ok(Feishu, 400, r#"{"code":11232,"msg":"frequency limited"}"#),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            ok(Feishu, 200, r#"{"code":19021,"msg":"sign match fail"}"#),
            Outcome::Permanent(_)
        ));
        assert!(matches!(ok(Feishu, 200, "<html>"), Outcome::Permanent(_)));
        assert_eq!(ok(Generic, 204, ""), Outcome::Delivered);
        assert!(matches!(ok(Generic, 404, ""), Outcome::Permanent(_)));
        assert!(matches!(ok(Generic, 502, ""), Outcome::Retry { .. }));
        assert_eq!(
            classify(Generic, 429, b"", Some(Duration::from_secs(7))),
            Outcome::Retry {
                reason: "HTTP 429".to_owned(),
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn token_bucket_spaces_requests() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, t0);
        assert_eq!(b.try_take(t0), Ok(()));
        let wait = b.try_take(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(b.try_take(t0 + Duration::from_secs(1)), Ok(()));
        // Capacity 1: a long idle period does not allow a burst.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.try_take(later), Ok(()));
        assert!(b.try_take(later).is_err());
    }

    #[test]
    fn config_is_validated_without_echoing_the_url() {
        let secret_url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRETKEY";
        let bad = |c: WebhookConfig| {
            // A current-thread runtime exists so only the config is judged.
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let _g = rt.enter();
            let e = Notifier::spawn(c, Arc::default(), CancellationToken::new(), || 0).unwrap_err();
            let s = e.to_string();
            assert!(!s.contains("SECRETKEY"), "{s}");
            s
        };
        let base = WebhookConfig::new("w", secret_url, Format::Wecom);
        assert!(
            bad(WebhookConfig {
                rate_per_minute: 0,
                ..base.clone()
            })
            .contains("rate_per_minute")
        );
        assert!(
            bad(WebhookConfig {
                secret: Some("x".into()),
                ..base.clone()
            })
            .contains("secret")
        );
        assert!(
            bad(WebhookConfig {
                url: "ftp://h/?key=SECRETKEY".into(),
                ..base.clone()
            })
            .contains("http")
        );
        assert!(
            bad(WebhookConfig {
                url: "not a url SECRETKEY".into(),
                ..base.clone()
            })
            .contains("url")
        );
        let e = Notifier::spawn(base, Arc::default(), CancellationToken::new(), || 0).unwrap_err();
        assert!(matches!(e, WebhookError::NoRuntime { .. }));
    }

    #[test]
    fn debug_redacts_url_and_secret() {
        let c = WebhookConfig {
            secret: Some("SECsupersecret".into()),
            ..WebhookConfig::new(
                "ding",
                "https://oapi.dingtalk.com/robot/send?access_token=TOKEN123",
                Format::Dingtalk,
            )
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("TOKEN123") && !d.contains("SECsupersecret"),
            "{d}"
        );
        assert!(d.contains("oapi.dingtalk.com") && d.contains("ding"), "{d}");
    }

    #[tokio::test]
    async fn dingtalk_signed_request_passes_and_wrong_secret_fails_permanently() {
        // The server recomputes the signature from the timestamp it received,
        // like DingTalk does, and answers 310000 when it does not match.
        let responder: Responder = Arc::new(|s: &Seen, _| {
            let ts: i64 = s.param("timestamp").unwrap_or("0").parse().unwrap_or(0);
            let expect = BASE64.encode(hmac_sha256(
                DING_SECRET.as_bytes(),
                format!("{ts}\n{DING_SECRET}").as_bytes(),
            ));
            if s.param("sign") == Some(expect.as_str()) && s.param("access_token") == Some("tok") {
                reply(200, r#"{"errcode":0,"errmsg":"ok"}"#)
            } else {
                reply(
                    200,
                    r#"{"errcode":310000,"errmsg":"sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}"#,
                )
            }
        });
        let (base, mut rx) = serve(responder).await;
        let url = format!("{base}/robot/send?access_token=tok");

        let good = WebhookConfig {
            secret: Some(DING_SECRET.into()),
            ..cfg("ding-ok", url.clone(), Format::Dingtalk)
        };
        let (h, stats) = spawn(good);
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        let seen = drain(&mut rx);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/robot/send");
        assert_eq!(seen[0].param("timestamp"), Some("1795939200000"));
        // Encoded exactly once on the wire (Python's quote_plus result).
        assert!(
            seen[0].raw_query.ends_with(&format!("&sign={DING_SIGN}")),
            "{}",
            seen[0].raw_query
        );
        assert_eq!(seen[0].body["msgtype"], "markdown");
        assert_eq!(
            seen[0].body["markdown"]["title"],
            "【告警】motor-1 bearing-hot"
        );
        assert_eq!(counts(&stats), [1, 0, 0, 0]);

        let wrong = WebhookConfig {
            secret: Some("SECwrong".into()),
            ..cfg("ding-bad", url, Format::Dingtalk)
        };
        let (h, stats) = spawn(wrong);
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        assert_eq!(
            drain(&mut rx).len(),
            1,
            "a permanent failure is not retried"
        );
        assert_eq!(counts(&stats), [0, 1, 0, 0]);
    }

    #[tokio::test]
    async fn feishu_signed_body_passes_and_wrong_secret_fails_permanently() {
        let responder: Responder = Arc::new(|s: &Seen, _| {
            let ts = s.body["timestamp"].as_str().unwrap_or("");
            let expect = BASE64.encode(hmac_sha256(
                format!("{ts}\n{FEISHU_SECRET}").as_bytes(),
                b"",
            ));
            if s.body["sign"].as_str() == Some(expect.as_str()) {
                reply(
                    200,
                    r#"{"code":0,"msg":"success","data":{},"Extra":null,"StatusCode":0,"StatusMessage":"success"}"#,
                )
            } else {
                reply(
                    200,
                    r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time","data":{}}"#,
                )
            }
        });
        let (base, mut rx) = serve(responder).await;
        let url = format!("{base}/open-apis/bot/v2/hook/abc");

        let good = WebhookConfig {
            secret: Some(FEISHU_SECRET.into()),
            ..cfg("fs-ok", url.clone(), Format::Feishu)
        };
        let (h, stats) = spawn(good);
        h.offer(notif("motor-1", Severity::Critical, "cleared"));
        close(h).await;
        let seen = drain(&mut rx);
        assert_eq!(seen.len(), 1);
        let b = &seen[0].body;
        assert_eq!(b["timestamp"], "1795939200", "seconds, as a string");
        assert_eq!(b["sign"], FEISHU_SIGN);
        assert_eq!(b["msg_type"], "text");
        assert!(
            b["content"]["text"]
                .as_str()
                .unwrap()
                .starts_with("【恢复】[critical] CLEARED motor-1")
        );
        assert_eq!(counts(&stats), [1, 0, 0, 0]);

        let wrong = WebhookConfig {
            secret: Some("nope".into()),
            ..cfg("fs-bad", url, Format::Feishu)
        };
        let (h, stats) = spawn(wrong);
        h.offer(notif("motor-1", Severity::Critical, "active"));
        close(h).await;
        assert_eq!(
            drain(&mut rx).len(),
            1,
            "a permanent failure is not retried"
        );
        assert_eq!(counts(&stats), [0, 1, 0, 0]);
    }

    #[tokio::test]
    async fn wecom_rate_limit_errcode_is_retried_then_delivered() {
        let responder: Responder = Arc::new(|_: &Seen, i| match i {
            0 => reply(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
            _ => reply(200, r#"{"errcode":0,"errmsg":"ok"}"#),
        });
        let (base, mut rx) = serve(responder).await;
        let (h, stats) = spawn(cfg(
            "wecom",
            format!("{base}/cgi-bin/webhook/send?key=K-1"),
            Format::Wecom,
        ));
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        let seen = drain(&mut rx);
        assert_eq!(seen.len(), 2);
        for s in &seen {
            assert_eq!(s.path, "/cgi-bin/webhook/send");
            assert_eq!(s.param("key"), Some("K-1"));
            assert_eq!(
                s.body,
                json!({"msgtype": "markdown", "markdown": {"content": line(&notif("motor-1", Severity::High, "active"))}})
            );
        }
        assert_eq!(counts(&stats), [1, 0, 0, 0]);
    }

    /// Captures events of this module (not of reqwest/hyper) as text.
    struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

    struct Fields(String);

    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn fmt::Debug) {
            let _infallible = write!(self.0, "{}={:?} ", f.name(), v);
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            let module = module_path!().trim_end_matches("::tests");
            m.target().starts_with(module)
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            let mut f = Fields(String::new());
            e.record(&mut f);
            self.0.lock().unwrap().push((*e.metadata().level(), f.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test]
    async fn permanent_robot_error_is_logged_once_by_name_without_the_key() {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let _pin = crate::test_log::pin_interest();
        // Current-thread test runtime: the notifier task runs on this thread.
        let _guard = tracing::subscriber::set_default(Capture(logs.clone()));
        let responder: Responder = Arc::new(|_: &Seen, _| {
            reply(
                200,
                r#"{"errcode":93000,"errmsg":"invalid webhook url, hint: [1700000000_abc]"}"#,
            )
        });
        let (base, mut rx) = serve(responder).await;
        let (h, stats) = spawn(cfg(
            "wecom-maint",
            format!("{base}/cgi-bin/webhook/send?key=SECRETKEY42"),
            Format::Wecom,
        ));
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        assert_eq!(drain(&mut rx).len(), 1);
        assert_eq!(counts(&stats), [0, 1, 0, 0]);

        // Also a connect error, whose reqwest error would carry the URL.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = dead.local_addr().unwrap().port();
        drop(dead);
        let (h, stats) = spawn(WebhookConfig {
            max_retries: 1,
            ..cfg(
                "wecom-dead",
                format!("http://127.0.0.1:{port}/send?key=SECRETKEY42"),
                Format::Wecom,
            )
        });
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        assert_eq!(counts(&stats), [0, 1, 0, 0]);

        let logs = logs.lock().unwrap();
        assert!(!logs.is_empty());
        for (_, l) in logs.iter() {
            assert!(
                !l.contains("SECRETKEY42"),
                "key leaked into a log line: {l}"
            );
        }
        let warns: Vec<&String> = logs
            .iter()
            .filter(|(lvl, _)| *lvl <= tracing::Level::WARN)
            .map(|(_, l)| l)
            .collect();
        assert_eq!(warns.len(), 2, "{warns:?}");
        assert!(
            warns[0].contains("wecom-maint") && warns[0].contains("invalid webhook url"),
            "{}",
            warns[0]
        );
        assert!(
            warns[1].contains("wecom-dead") && warns[1].contains("connect"),
            "{}",
            warns[1]
        );
    }

    #[tokio::test]
    async fn generic_body_has_exact_fields() {
        let (base, mut rx) = serve(Arc::new(|_: &Seen, _| reply(204, ""))).await;
        let (h, stats) = spawn(cfg("generic", format!("{base}/hook"), Format::Generic));
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        let seen = drain(&mut rx);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].body,
            json!({
                "source": "plantwatch",
                "digest": false,
                "count": 1,
                "title": "【告警】motor-1 bearing-hot",
                "text": "【告警】[high] ACTIVE motor-1 bearing-hot: bearing 92.3 °C above 90 (value 92.3, limit 90, site-a/gw-1, 2026-11-29 08:00:00 UTC, id motor-1-a1)",
                "notifications": [{
                    "device": "motor-1",
                    "rule": "bearing-hot",
                    "id": "motor-1-a1",
                    "state": "active",
                    "severity": "high",
                    "message": "bearing 92.3 °C above 90",
                    "value": 92.3,
                    "limit": 90.0,
                    "ts_ms": NOW_MS,
                    "site": "site-a",
                    "gateway": "gw-1",
                }],
            })
        );
        assert_eq!(counts(&stats), [1, 0, 0, 0]);
    }

    #[tokio::test]
    async fn server_error_is_retried_and_delivered_once() {
        let responder: Responder = Arc::new(|_: &Seen, i| {
            if i == 0 {
                reply(500, "")
            } else {
                reply(200, "{}")
            }
        });
        let (base, mut rx) = serve(responder).await;
        let (h, stats) = spawn(cfg("g500", format!("{base}/hook"), Format::Generic));
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        assert_eq!(drain(&mut rx).len(), 2);
        assert_eq!(counts(&stats), [1, 0, 0, 0]);
    }

    #[tokio::test]
    async fn retries_stop_at_max_and_client_errors_are_not_retried() {
        let (base, mut rx) = serve(Arc::new(|s: &Seen, _| {
            if s.path == "/busy" {
                reply(503, "")
            } else {
                reply(400, "")
            }
        }))
        .await;
        let (h, stats) = spawn(WebhookConfig {
            max_retries: 2,
            ..cfg("busy", format!("{base}/busy"), Format::Generic)
        });
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        assert_eq!(drain(&mut rx).len(), 3, "first attempt + 2 retries");
        assert_eq!(counts(&stats), [0, 1, 0, 0]);

        let (h, stats) = spawn(cfg("bad", format!("{base}/bad"), Format::Generic));
        h.offer(notif("motor-1", Severity::High, "active"));
        close(h).await;
        assert_eq!(drain(&mut rx).len(), 1);
        assert_eq!(counts(&stats), [0, 1, 0, 0]);
    }

    #[tokio::test]
    async fn waiting_notifications_become_one_digest_most_severe_first() {
        let (base, mut rx) = serve(Arc::new(|_: &Seen, _| {
            reply(200, r#"{"errcode":0,"errmsg":"ok"}"#)
        }))
        .await;
        // 120/min: after the first message the next token is 0.5 s away.
        let (h, stats) = spawn(WebhookConfig {
            rate_per_minute: 120,
            digest_after: 5,
            ..cfg("digest", format!("{base}/send?key=k"), Format::Wecom)
        });
        let started = std::time::Instant::now();
        h.offer(notif("first", Severity::Low, "active"));
        let first = next(&mut rx).await;
        assert!(
            first.body["markdown"]["content"]
                .as_str()
                .unwrap()
                .starts_with("【告警】[low] ACTIVE first")
        );
        // The bucket is empty now, so these 29 wait and merge.
        for i in 0..29 {
            let sev = match i {
                17 => Severity::Critical,
                i if i % 3 == 0 => Severity::High,
                i if i % 3 == 1 => Severity::Medium,
                _ => Severity::Low,
            };
            let state = if i % 2 == 0 { "active" } else { "cleared" };
            // Short lines so all 29 fit the 4000-byte text budget.
            h.offer(Notification {
                message: "hot".to_owned(),
                value: None,
                limit: None,
                ..notif(&format!("m{i:02}"), sev, state)
            });
        }
        let digest = next(&mut rx).await;
        let elapsed = started.elapsed();
        close(h).await;
        assert!(drain(&mut rx).is_empty(), "exactly two messages");
        let t = digest.body["markdown"]["content"].as_str().unwrap();
        assert!(
            t.starts_with("【告警汇总】29 条通知 / 29 notifications (15 ACTIVE, 14 CLEARED)"),
            "{t}"
        );
        assert!(
            t.contains("\n1. 【恢复】[critical] CLEARED m17 "),
            "most severe first: {t}"
        );
        let lines: Vec<&str> = t.lines().skip(1).collect();
        assert_eq!(lines.len(), 29, "{t}");
        assert!(
            lines
                .iter()
                .take(1 + 10)
                .skip(1)
                .all(|l| l.contains("[high]")),
            "{t}"
        );
        // The rate limit held the digest back until the next token (0.5 s); no upper bound,
        // which would only measure how busy the machine is.
        assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
        assert_eq!(counts(&stats), [30, 0, 0, 1]);
    }

    #[tokio::test]
    async fn severity_filter_ignores_low_notifications() {
        let (base, mut rx) = serve(Arc::new(|_: &Seen, _| reply(200, "{}"))).await;
        let (h, stats) = spawn(WebhookConfig {
            min_severity: Severity::High,
            ..cfg("filter", format!("{base}/h"), Format::Generic)
        });
        for sev in [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            h.offer(notif("m", sev, "active"));
        }
        close(h).await;
        let sevs: Vec<Value> = drain(&mut rx)
            .iter()
            .map(|s| s.body["notifications"][0]["severity"].clone())
            .collect();
        assert_eq!(sevs, [json!("high"), json!("critical")]);
        assert_eq!(counts(&stats), [2, 0, 0, 0]);
    }

    #[tokio::test]
    async fn full_queue_drops_and_cancel_counts_leftovers() {
        let (base, _rx) = serve(Arc::new(|_: &Seen, _| reply(200, "{}"))).await;
        let stats = Arc::new(WebhookStats::default());
        let cancel = CancellationToken::new();
        let h = Notifier::spawn(
            cfg("full", format!("{base}/h"), Format::Generic),
            stats.clone(),
            cancel.clone(),
            || NOW_MS,
        )
        .unwrap();
        // The current-thread runtime has not polled the task yet, so the
        // queue fills up: 256 queued, 44 dropped, and offer never waits.
        for i in 0..300 {
            h.offer(notif(&format!("m{i}"), Severity::High, "active"));
        }
        assert_eq!(stats.dropped.load(Ordering::SeqCst), 44);
        cancel.cancel();
        close(h).await;
        assert_eq!(counts(&stats), [0, 0, 300, 0], "every offer accounted for");
    }
}
