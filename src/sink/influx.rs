//! The InfluxDB v2 sink: device polls as line protocol, POSTed to `/api/v2/write` in batches.
//!
//! This sink is lossy on purpose: the outbox and MQTT own delivery, InfluxDB is
//! a convenience copy, and a slow or dead database must never slow polling or MQTT.
//!
//! Receives: [`InfluxHandle::offer`], called by the core for every batch. It encodes the poll
//! as one line and hands it over with `try_send`; it never awaits.
//! Sends: HTTP POSTs of up to `batch_size` lines, at the latest `batch_interval` after the
//! first line of a batch arrived.
//!
//! Invariants:
//! - the queue holds at most `queue_capacity` *points* (fields); a line that does not fit is
//!   dropped and its points are added to [`InfluxStats::dropped`]. Memory is bounded by that
//!   queue plus the one batch being written;
//! - a failed write is retried with doubling backoff (`retry` bounds, honouring `Retry-After`)
//!   up to `max_attempts` tries; then its points are counted as dropped. While the task retries
//!   it does not drain the queue, so a dead database turns into counted drops, never into
//!   memory growth or back-pressure;
//! - a rejection that retrying cannot fix (a 4xx other than 408 and 429: bad token, unknown
//!   bucket, malformed data) drops the batch at once;
//! - the backoff survives from batch to batch and resets on the first success, so a database
//!   that stays down is asked at most once per `retry.1` or so;
//! - every outage logs once when it starts, once when data is first lost, and once when writes
//!   succeed again;
//! - counters are in points: [`InfluxStats::written`] counts fields in acknowledged writes,
//!   [`InfluxStats::dropped`] fields lost to a full queue, exhausted retries, a rejection or
//!   shutdown. Bad-quality samples and non-finite floats are not points: they are never written
//!   and never counted.
//!
//! - proxies: like any reqwest client it honours `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`.
//!
//! Line format: `{measurement},device={d},gateway={g},site={s} {point}={value},… {ts}` with
//! `precision=ms`; tags are sorted by key as InfluxDB recommends. `ts` is when the poll's last
//! response arrived, the same instant the MQTT telemetry message carries.

use std::fmt::Write as _;
use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::model::{Name, PointSample, Quality, SampleBatch, Value};
use crate::runtime::metrics::InfluxStats;
use crate::secret::PasswordSource;

/// `[influxdb]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Influx {
    /// Base URL, `http` or `https`, path ending in `/`, no credentials, query or fragment.
    pub url: Url,
    /// Organization.
    pub org: String,
    /// Bucket.
    pub bucket: String,
    /// Where the API token comes from; read when the sink starts, never logged.
    pub token: Option<PasswordSource>,
    /// Measurement name.
    pub measurement: String,
    /// Most lines per write request.
    pub batch_size: NonZeroUsize,
    /// Longest a line waits for its batch to fill.
    pub batch_interval: Duration,
    /// Points the queue holds (excluding the batch being written).
    pub queue_capacity: NonZeroUsize,
    /// Retry backoff bounds (first wait, longest wait).
    pub retry: (Duration, Duration),
    /// Tries per batch, the first included.
    pub max_attempts: NonZeroU32,
    /// Connect plus request limit.
    pub timeout: Duration,
}

impl Influx {
    /// The write endpoint: `{url}api/v2/write?org=…&bucket=…&precision=ms`.
    pub fn write_url(&self) -> Url {
        let mut url = self.url.clone();
        // `url` is a base (checked by `resolve_influx`), so this only appends path segments.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["api", "v2", "write"]);
        }
        url.query_pairs_mut()
            .append_pair("org", &self.org)
            .append_pair("bucket", &self.bucket)
            .append_pair("precision", "ms");
        url
    }
}

/// Why the sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// The token could not be read, or is empty or not valid in an HTTP header.
    #[error("influxdb: cannot use the token from {source_name}: {error}")]
    Token {
        /// File or credential.
        source_name: String,
        /// Why.
        error: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("influxdb: cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Reads the API token (first line of the file) as an `Authorization` header that never prints.
fn read_token(source: &PasswordSource) -> Result<HeaderValue, InfluxError> {
    let text = source
        .read_first_line()
        .map_err(|(source_name, error)| InfluxError::Token { source_name, error })?;
    let fail = |error: String| InfluxError::Token {
        source_name: match source {
            PasswordSource::File(p) => p.display().to_string(),
            PasswordSource::Credential(name) => format!("credential `{name}`"),
        },
        error,
    };
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(fail("the first line is empty".into()));
    }
    // The error says nothing about the value, so it cannot leak the token.
    let mut value = HeaderValue::from_str(&format!("Token {token}"))
        .map_err(|_| fail("it has characters not allowed in an HTTP header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Line-protocol specials in a measurement name.
const MEASUREMENT_SPECIALS: &[char] = &[',', ' ', '\\'];
/// Line-protocol specials in tag keys, tag values and field keys.
const KEY_SPECIALS: &[char] = &[',', '=', ' ', '\\'];

/// Appends `s` with every special character backslash-escaped. Newlines cannot be escaped in
/// line protocol, so CR and LF become (escaped) spaces; names in plantwatch never have any.
fn push_escaped(out: &mut String, s: &str, specials: &[char]) {
    if !s.contains(|c: char| specials.contains(&c) || c == '\n' || c == '\r') {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        let c = if c == '\n' || c == '\r' { ' ' } else { c };
        if specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Appends a string field value: quoted, `"` and `\` escaped, CR/LF as spaces (InfluxDB and
/// VictoriaMetrics both split the body at newlines).
fn push_string_field(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The value a sample contributes as a field: none when it is bad, absent or not finite
/// (line protocol has no NaN or infinity).
fn field_value(s: &PointSample) -> Option<&Value> {
    if matches!(s.quality, Quality::Bad(_)) {
        return None;
    }
    match &s.value {
        Some(Value::F64(v)) if !v.is_finite() => None,
        v => v.as_ref(),
    }
}

/// How many fields [`lines`] writes for `batch`.
pub fn points_in(batch: &SampleBatch) -> usize {
    batch
        .samples
        .iter()
        .filter(|s| field_value(s).is_some())
        .count()
}

/// Appends the line-protocol line of one device poll to `out` and returns its field count.
///
/// Tags `device`, `gateway` and `site` (sorted by key; an empty tag is left out); one field per
/// point that is not bad: f64 as a float, i64 as `123i`, bool as `true`/`false`, text quoted.
/// The timestamp (ms) is the latest response time in the poll, or its tick if it has no
/// samples. A poll without a single usable value writes nothing (a line needs a field).
pub fn lines(
    batch: &SampleBatch,
    site: &str,
    gateway: &str,
    measurement: &str,
    out: &mut String,
) -> usize {
    let start = out.len();
    push_escaped(out, measurement, MEASUREMENT_SPECIALS);
    for (key, value) in [
        ("device", batch.device.as_str()),
        ("gateway", gateway),
        ("site", site),
    ] {
        if !value.is_empty() {
            out.push(',');
            out.push_str(key);
            out.push('=');
            push_escaped(out, value, KEY_SPECIALS);
        }
    }
    out.push(' ');
    let mut fields = 0;
    for s in &batch.samples {
        let Some(value) = field_value(s) else {
            continue;
        };
        if fields > 0 {
            out.push(',');
        }
        push_escaped(out, s.point.as_str(), KEY_SPECIALS);
        out.push('=');
        // Writing to a String cannot fail.
        let _infallible = match value {
            Value::F64(v) => write!(out, "{v}"),
            Value::I64(v) => write!(out, "{v}i"),
            Value::Bool(b) => write!(out, "{b}"),
            Value::Str(text) => {
                push_string_field(out, text);
                Ok(())
            }
        };
        fields += 1;
    }
    if fields == 0 {
        out.truncate(start);
        return 0;
    }
    let ts = batch
        .samples
        .iter()
        .map(|s| s.ts)
        .max()
        .unwrap_or(batch.tick);
    let _infallible = writeln!(out, " {}", ts.millis());
    fields
}

/// One encoded line waiting in the queue; its permits are its points' share of the queue.
#[derive(Debug)]
struct Queued {
    line: String,
    points: u64,
    _permit: OwnedSemaphorePermit,
}

/// Shed-episode bookkeeping shared by every clone of the handle.
#[derive(Debug, Default)]
struct Shedding {
    active: AtomicBool,
    dropped: AtomicU64,
}

/// The core's side of the sink: cheap to clone, never blocks.
///
/// The task drains and stops once every clone is dropped (or the token is cancelled), so do
/// not keep a clone just to wait for it: use [`InfluxHandle::stopped`].
#[derive(Debug, Clone)]
pub struct InfluxHandle {
    tx: mpsc::Sender<Queued>,
    permits: Arc<Semaphore>,
    shedding: Arc<Shedding>,
    stats: Arc<InfluxStats>,
    site: Name,
    gateway: Name,
    measurement: Arc<str>,
    done: CancellationToken,
}

impl InfluxHandle {
    /// Queues one device poll for InfluxDB, or drops it (and counts its points) when the queue
    /// is full or the sink has stopped. Never awaits; called once per batch.
    pub fn offer(&self, batch: &SampleBatch) {
        let points = points_in(batch);
        if points == 0 {
            return;
        }
        // Take the points' share of the queue first, so that a full queue costs no encoding.
        let Some(permit) = u32::try_from(points)
            .ok()
            .and_then(|n| self.permits.clone().try_acquire_many_owned(n).ok())
        else {
            self.shed(points);
            return;
        };
        let mut line = String::with_capacity(96 + batch.samples.len() * 24);
        lines(
            batch,
            self.site.as_str(),
            self.gateway.as_str(),
            &self.measurement,
            &mut line,
        );
        let queued = Queued {
            line,
            points: points as u64,
            _permit: permit,
        };
        match self.tx.try_send(queued) {
            Ok(()) => self.accepting(),
            // Full cannot happen before the permits run out (every line holds at least one),
            // closed means the task is gone: either way the points are lost.
            Err(_) => self.shed(points),
        }
    }

    /// A future that completes when the sink task has finished (after its final flush).
    /// It holds no sender, so it does not keep the task alive.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.done.clone().cancelled_owned()
    }

    fn shed(&self, points: usize) {
        let points = points as u64;
        self.stats.dropped.fetch_add(points, Ordering::Relaxed);
        self.shedding.dropped.fetch_add(points, Ordering::Relaxed);
        if !self.shedding.active.swap(true, Ordering::Relaxed) {
            error!(
                points,
                "InfluxDB queue full; dropping new points until it drains."
            );
        }
    }

    fn accepting(&self) {
        if self.shedding.active.load(Ordering::Relaxed)
            && self.shedding.active.swap(false, Ordering::Relaxed)
        {
            let dropped = self.shedding.dropped.swap(0, Ordering::Relaxed);
            info!(dropped, "InfluxDB queue accepts points again.");
        }
    }
}

/// Lines collected for the next write.
#[derive(Debug, Default)]
struct Batch {
    body: String,
    lines: usize,
    points: u64,
}

impl Batch {
    fn push(&mut self, queued: Queued) {
        let Queued {
            line,
            points,
            _permit: permit,
        } = queued;
        self.body.push_str(&line);
        self.lines += 1;
        self.points += points;
        // The points left the queue: make room for new ones.
        drop(permit);
    }
}

/// Why a write failed, and whether trying again can help.
#[derive(Debug)]
enum Failure {
    /// Network trouble, a timeout, 408, 429 or 5xx.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Any other status: the same request would fail the same way.
    Reject { reason: String },
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Retry { reason, .. } | Failure::Reject { reason } => reason,
        }
    }
}

/// One unbroken run of failed writes.
#[derive(Debug)]
struct Outage {
    since: Instant,
    dropped: u64,
    loss_logged: bool,
}

/// The sink task's state: the HTTP client, the batch being built, backoff and outage.
#[derive(Debug)]
pub struct InfluxSink {
    client: reqwest::Client,
    url: Url,
    token: Option<HeaderValue>,
    plan: Influx,
    stats: Arc<InfluxStats>,
    backoff: Duration,
    outage: Option<Outage>,
}

impl InfluxSink {
    /// Starts the sink task (on the current tokio runtime) and returns the handle the core
    /// offers batches to.
    ///
    /// The task stops when `cancel` fires or every handle is dropped. A request in flight
    /// finishes (at most `timeout`), retry waits are cut short, and what is still queued gets
    /// one try, or none while the database is failing; so wait on [`InfluxHandle::stopped`]
    /// for `timeout` plus a little.
    ///
    /// # Errors
    /// [`InfluxError`] when the token cannot be read or the HTTP client cannot be built.
    pub fn spawn(
        plan: Influx,
        site: &Name,
        gateway: &Name,
        stats: Arc<InfluxStats>,
        cancel: CancellationToken,
    ) -> Result<InfluxHandle, InfluxError> {
        let token = plan.token.as_ref().map(read_token).transpose()?;
        // One TLS stack: rustls with ring. reqwest is built without a provider of its own and
        // uses the process default; installing twice is harmless (the first one stays).
        let _first_install = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(plan.timeout)
            .connect_timeout(plan.timeout)
            .user_agent(concat!("plantwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(InfluxError::Client)?;
        // The permits are the real bound (points); the channel only has to hold as many lines,
        // and every line holds at least one point. tokio panics above MAX_PERMITS.
        let capacity = plan.queue_capacity.get().min(Semaphore::MAX_PERMITS);
        let (tx, rx) = mpsc::channel(capacity);
        let done = CancellationToken::new();
        let handle = InfluxHandle {
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            shedding: Arc::new(Shedding::default()),
            stats: stats.clone(),
            site: site.clone(),
            gateway: gateway.clone(),
            measurement: Arc::from(plan.measurement.as_str()),
            done: done.clone(),
        };
        let sink = InfluxSink {
            client,
            url: plan.write_url(),
            token,
            backoff: plan.retry.0,
            plan,
            stats,
            outage: None,
        };
        info!(url = %sink.plan.url, bucket = %sink.plan.bucket, "InfluxDB sink started.");
        #[expect(
            clippy::disallowed_methods,
            reason = "the writer's task; its handle's `stopped()` is what shutdown waits for"
        )]
        tokio::spawn(async move {
            // Fires when the task ends, however it ends (even aborted).
            let _done = done.drop_guard();
            sink.run(rx, cancel).await;
        });
        Ok(handle)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Queued>, cancel: CancellationToken) {
        let mut batch = Batch::default();
        let mut due: Option<Instant> = None;
        loop {
            let deadline = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = deadline => {
                    self.write(&mut batch, &cancel).await;
                    due = None;
                }
                queued = rx.recv() => {
                    let Some(queued) = queued else { break };
                    batch.push(queued);
                    due.get_or_insert_with(|| {
                        let now = Instant::now();
                        now.checked_add(self.plan.batch_interval).unwrap_or(now)
                    });
                    if batch.lines >= self.plan.batch_size.get() {
                        self.write(&mut batch, &cancel).await;
                        due = None;
                    }
                }
            }
        }
        // Stopping: what is already queued gets one try; nothing new gets in.
        rx.close();
        while let Some(queued) = rx.recv().await {
            batch.push(queued);
            if batch.lines >= self.plan.batch_size.get() {
                self.write_final(&mut batch).await;
            }
        }
        self.write_final(&mut batch).await;
        info!("InfluxDB sink stopped.");
    }

    /// Writes `batch` with retries; on return the batch is empty, written or counted as dropped.
    async fn write(&mut self, batch: &mut Batch, cancel: &CancellationToken) {
        let attempts = self.plan.max_attempts.get();
        self.write_with(batch, attempts, Some(cancel)).await;
    }

    /// One try per batch at shutdown, and none while the database is known to be down.
    async fn write_final(&mut self, batch: &mut Batch) {
        if batch.lines == 0 {
            return;
        }
        if self.outage.is_some() {
            let points = std::mem::take(batch).points;
            self.lost(points, "stopping while the database is unreachable");
            return;
        }
        self.write_with(batch, 1, None).await;
    }

    async fn write_with(
        &mut self,
        batch: &mut Batch,
        attempts: u32,
        cancel: Option<&CancellationToken>,
    ) {
        let Batch {
            body,
            lines,
            points,
        } = std::mem::take(batch);
        if lines == 0 {
            return;
        }
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let request = match request.build() {
            Ok(r) => r,
            Err(err) => {
                self.lost(points, &super::error_chain(&err));
                return;
            }
        };
        let mut last = String::new();
        for attempt in 1..=attempts {
            // A body built from a String is a buffer, so this always clones.
            let Some(try_request) = request.try_clone() else {
                break;
            };
            // Not cut short by `cancel`: a request in flight finishes (within `timeout`), so
            // that stopping never loses a write the database may already have taken.
            let result = self.client.execute(try_request).await;
            match Self::judge(result).await {
                Ok(()) => {
                    self.succeeded(points);
                    return;
                }
                Err(failure) => {
                    last = failure.reason().to_owned();
                    let Failure::Retry { after, reason } = failure else {
                        break;
                    };
                    self.failed(&reason);
                    if attempt == attempts {
                        break;
                    }
                    let wait = after.map_or(self.backoff, |after| {
                        after.clamp(self.backoff, self.plan.retry.1.max(self.backoff))
                    });
                    self.backoff = self.backoff.saturating_mul(2).min(self.plan.retry.1);
                    match cancel {
                        Some(cancel) => tokio::select! {
                            biased;
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(wait) => {}
                        },
                        None => tokio::time::sleep(wait).await,
                    }
                }
            }
        }
        if last.is_empty() {
            last = "the request could not be cloned for a retry".into();
        }
        self.lost(points, &last);
    }

    /// Turns a response (or transport error) into success or a [`Failure`].
    async fn judge(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), Failure> {
        let response = result.map_err(|err| Failure::Retry {
            reason: super::error_chain(&err.without_url()),
            after: None,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let mut snippet: String = text.trim().chars().take(300).collect();
        if snippet.is_empty() {
            snippet = status.canonical_reason().unwrap_or("no reason").to_owned();
        }
        let reason = format!("HTTP {}: {snippet}", status.as_u16());
        let retryable = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        Err(if retryable {
            Failure::Retry { reason, after }
        } else {
            Failure::Reject { reason }
        })
    }

    fn succeeded(&mut self, points: u64) {
        self.stats.written.fetch_add(points, Ordering::Relaxed);
        self.backoff = self.plan.retry.0;
        if let Some(outage) = self.outage.take() {
            info!(
                url = %self.plan.url,
                outage_s = outage.since.elapsed().as_secs(),
                dropped = outage.dropped,
                "InfluxDB writes succeed again."
            );
        }
    }

    fn failed(&mut self, reason: &str) {
        if self.outage.is_none() {
            warn!(url = %self.plan.url, error = %reason, "InfluxDB write failed; retrying with backoff.");
            self.outage = Some(Outage {
                since: Instant::now(),
                dropped: 0,
                loss_logged: false,
            });
        }
    }

    fn lost(&mut self, points: u64, reason: &str) {
        self.stats.dropped.fetch_add(points, Ordering::Relaxed);
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: Instant::now(),
            dropped: 0,
            loss_logged: false,
        });
        outage.dropped += points;
        if !outage.loss_logged {
            outage.loss_logged = true;
            error!(
                url = %self.plan.url,
                points,
                error = %reason,
                "Cannot write to InfluxDB; dropping batches until a write succeeds."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, PointSample, Timestamp, UncertainReason};

    fn sample(point: &str, ts: i64, value: Option<Value>, quality: Quality) -> PointSample {
        PointSample {
            point: Name::new(point).unwrap(),
            ts: Timestamp(ts),
            value,
            quality,
        }
    }

    fn batch(samples: Vec<PointSample>) -> SampleBatch {
        SampleBatch {
            device: Name::new("main-meter").unwrap(),
            tick: Timestamp(1_700_000_000_000),
            samples,
        }
    }

    fn encode(b: &SampleBatch, measurement: &str) -> (String, usize) {
        let mut out = String::new();
        let n = lines(b, "hq", "gw-1", measurement, &mut out);
        (out, n)
    }

    #[test]
    fn one_poll_is_one_line_with_typed_fields_and_the_latest_response_time() {
        let b = batch(vec![
            sample(
                "ua",
                1_700_000_000_012,
                Some(Value::F64(231.4)),
                Quality::Good,
            ),
            sample(
                "starts",
                1_700_000_000_015,
                Some(Value::I64(-42)),
                Quality::Good,
            ),
            sample(
                "run",
                1_700_000_000_015,
                Some(Value::Bool(true)),
                Quality::Good,
            ),
            sample(
                "model",
                1_700_000_000_013,
                Some(Value::Str("DTSU666".into())),
                Quality::Good,
            ),
        ]);
        let (line, n) = encode(&b, "plantwatch");
        assert_eq!(n, 4);
        assert_eq!(
            line,
            "plantwatch,device=main-meter,gateway=gw-1,site=hq \
             ua=231.4,starts=-42i,run=true,model=\"DTSU666\" 1700000000015\n"
        );
        assert_eq!(points_in(&b), 4);
    }

    #[test]
    fn registers_are_written_with_the_digits_they_carry() {
        use crate::decode::{Codec, DataType, decode};
        let bits = 231.799f32.to_bits();
        let f32_words = [(bits >> 16) as u16, bits as u16];
        let tenths = Codec {
            scale: 0.1,
            ..Codec::plain(DataType::U16)
        };
        let b = batch(vec![
            sample(
                "ua",
                1,
                decode(&f32_words, &Codec::plain(DataType::F32)).ok(),
                Quality::Good,
            ),
            sample("ub", 1, decode(&[2314], &tenths).ok(), Quality::Good),
        ]);
        let (line, _) = encode(&b, "m");
        assert!(line.contains(" ua=231.799,ub=231.4 "), "{line}");
    }

    #[test]
    fn bad_points_and_non_finite_floats_are_left_out() {
        let b = batch(vec![
            sample("ua", 1, Some(Value::F64(1.0)), Quality::Good),
            sample("ub", 2, None, Quality::Bad(BadReason::Timeout)),
            sample("uc", 3, Some(Value::F64(f64::NAN)), Quality::Good),
            sample("ud", 4, Some(Value::F64(f64::INFINITY)), Quality::Good),
            sample(
                "held",
                1,
                Some(Value::Bool(false)),
                Quality::Uncertain(UncertainReason::Held),
            ),
        ]);
        let (line, n) = encode(&b, "m");
        assert_eq!(n, 2);
        assert_eq!(points_in(&b), 2);
        // The timestamp is still the poll's last response.
        assert_eq!(
            line,
            "m,device=main-meter,gateway=gw-1,site=hq ua=1,held=false 4\n"
        );
    }

    #[test]
    fn a_poll_without_usable_values_writes_nothing() {
        let mut out = String::from("previous line\n");
        let b = batch(vec![sample(
            "ua",
            1,
            None,
            Quality::Bad(BadReason::CommLost),
        )]);
        assert_eq!(lines(&b, "hq", "gw", "m", &mut out), 0);
        assert_eq!(out, "previous line\n");
        assert_eq!(lines(&batch(vec![]), "hq", "gw", "m", &mut out), 0);
        assert_eq!(out, "previous line\n");
    }

    #[test]
    fn specials_are_escaped_per_the_line_protocol_spec() {
        let b = batch(vec![sample(
            "text",
            7,
            Some(Value::Str("say \"hi\" \\ bye\nnext".into())),
            Quality::Good,
        )]);
        let mut out = String::new();
        lines(&b, "a b,c=d", "x\\y", "my meas,urement=1", &mut out);
        assert_eq!(
            out,
            "my\\ meas\\,urement=1,device=main-meter,gateway=x\\\\y,site=a\\ b\\,c\\=d \
             text=\"say \\\"hi\\\" \\\\ bye next\" 7\n"
        );
    }

    #[test]
    fn empty_tags_are_left_out() {
        let b = batch(vec![sample("ua", 5, Some(Value::I64(1)), Quality::Good)]);
        let mut out = String::new();
        lines(&b, "", "gw", "m", &mut out);
        assert_eq!(out, "m,device=main-meter,gateway=gw ua=1i 5\n");
    }

    #[test]
    fn floats_keep_full_precision_and_never_use_exponents() {
        let b = batch(vec![
            sample("a", 1, Some(Value::F64(0.1 + 0.2)), Quality::Good),
            sample("b", 1, Some(Value::F64(1e21)), Quality::Good),
            sample("c", 1, Some(Value::F64(-0.5)), Quality::Good),
        ]);
        let (line, _) = encode(&b, "m");
        assert!(
            line.contains(" a=0.30000000000000004,b=1000000000000000000000,c=-0.5 "),
            "{line}"
        );
    }
}
