//! The MQTT sink: one task owns the rumqttc event loop and is its only publisher, so the
//! FIFO of `Outgoing::Publish` events matches the order rows were handed over.
//!
//! Invariants:
//! - a row leaves the outbox only on the PUBACK matched to it through [`inflight::InFlight`];
//! - the session is clean: after every ConnAck the outbox, not the broker, is the memory, so
//!   every unacknowledged row is sent again, flagged `"backfill":true` if it was created before
//!   this connection came up;
//! - backfill is interleaved with live rows (`backfill_per_live` old rows per new one), so a
//!   long backlog never delays live data by more than the read-ahead: a few batches, which is
//!   milliseconds at replay speed;
//! - the ordering contract that follows: per device, order holds within the live stream and
//!   within the backfill stream, not across them; consumers order by `ts` or `seq`;
//! - rows reach the client through the connection's feeder (`feed`), which reads and renders
//!   them a batch ahead, so the event loop never waits on the store; the feeder and what it
//!   read ahead die with the connection, and the next one starts over from the outbox;
//! - a desync (an outgoing publish nobody handed over) forces a reconnect, never a guess;
//! - events that arrive after a connection dropped and before the next ConnAck belong to the
//!   dead connection and are ignored (its rows were already returned to the outbox);
//! - MQTT 3.1.1 and 5 (`mqtt.protocol`) run this same logic through the adapter in `conn`:
//!   only option building and event translation differ. An MQTT 5 PUBACK with an error reason
//!   code is not a delivery: the row stays and goes out again after the next reconnect.

pub(crate) mod alias;
#[cfg(feature = "demo")]
pub mod broker;
pub(crate) mod conn;
pub mod downlink;
mod feed;
pub mod inflight;
pub mod schema;
pub mod spec;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::encode::json_v1;
use crate::model::Timestamp;
use crate::runtime::log_limit::{REPEAT_WINDOW, RepeatLimit, peer_text};
use crate::secret::PasswordSource;
use crate::sink::backoff::Backoff;
use alias::TopicAliases;
use conn::{Client, Event, Returned};
use downlink::CommandGate;
use feed::{Feed, FeedPlan, Ready};
use inflight::{InFlight, RowId, Tracked};
use spec::{Mqtt, Tls};

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Row id: the outbox order.
    pub id: RowId,
    /// Topic below the prefix, e.g. `telemetry/main-meter`.
    pub topic: String,
    /// When it was stored.
    pub created: Timestamp,
    /// The stored form; [`Outbox::render`] turns it into wire bytes.
    pub payload: Vec<u8>,
}

/// A stored row made ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The payload.
    pub payload: Vec<u8>,
    /// Publish with the retain flag (alarm and health state).
    pub retain: bool,
}

/// Why the outbox could not be read or updated.
#[derive(Debug, Clone, thiserror::Error)]
#[error("outbox: {0}")]
pub struct OutboxError(pub String);

/// What the MQTT session needs from the outbox.
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` rows with id greater than `after`, oldest first.
    fn fetch(
        &self,
        after: Option<RowId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxItem>, OutboxError>> + Send;
    /// The next rows of both of the sender's cursors in one round trip: up to `limit` rows after `live`,
    /// and, for `backlog = Some((after, until))`, up to `limit` rows with `after < id <= until`;
    /// each oldest first. The default asks [`Self::fetch`] twice.
    fn fetch_both(
        &self,
        live: Option<RowId>,
        backlog: Option<(Option<RowId>, RowId)>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<OutboxItem>, Vec<OutboxItem>), OutboxError>> + Send {
        async move {
            let live = self.fetch(live, limit).await?;
            let backlog = match backlog {
                Some((after, until)) => {
                    let mut rows = self.fetch(after, limit).await?;
                    rows.retain(|r| r.id <= until);
                    rows
                }
                None => Vec::new(),
            };
            Ok((live, backlog))
        }
    }
    /// Deletes acknowledged rows.
    fn ack(&self, rows: Vec<RowId>) -> impl Future<Output = Result<(), OutboxError>> + Send;
    /// The newest row id, if any.
    fn newest(&self) -> impl Future<Output = Result<Option<RowId>, OutboxError>> + Send;
    /// Wire bytes for a stored row; `None` drops an unreadable row (logged by the caller).
    fn render(&self, item: &OutboxItem, backfill: bool) -> Option<Rendered>;
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Messages handed to the client.
    pub published: AtomicU64,
    /// Rows acknowledged by the broker.
    pub acked: AtomicU64,
    /// Successful connections.
    pub connects: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
    /// Rows that could not be rendered and were dropped.
    pub unreadable: AtomicU64,
    /// MQTT 5 PUBACKs with an error reason code; the rows stay in the outbox.
    pub rejected: AtomicU64,
}

/// Why the sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The password could not be read.
    #[error("{key}: cannot read the password from {source_name}: {error}")]
    Password {
        /// The config key naming the source: `mqtt.password_file` or `mqtt.password_credential`.
        key: &'static str,
        /// File or credential.
        source_name: String,
        /// What went wrong reading it.
        error: String,
    },
    /// A TLS file could not be read.
    #[error("{key}: cannot read {path}: {error}")]
    TlsFile {
        /// The config key naming the file, e.g. `mqtt.tls.ca_file`.
        key: &'static str,
        /// The file.
        path: String,
        /// What went wrong reading or parsing it.
        error: String,
    },
    /// A TLS file holds no PEM block of the expected kind.
    #[error("{key}: {path} holds no PEM {what}")]
    TlsPem {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What was expected: `certificate` or `unencrypted private key`.
        what: &'static str,
    },
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

fn read_password(source: &PasswordSource) -> Result<Secret, MqttError> {
    let key = match source {
        PasswordSource::File(_) => "mqtt.password_file",
        PasswordSource::Credential(_) => "mqtt.password_credential",
    };
    source
        .read_first_line()
        .map(Secret)
        .map_err(|(source_name, error)| MqttError::Password {
            key,
            source_name,
            error,
        })
}

/// Reads a PEM file named by config `key` and checks that it holds a `-----BEGIN …{label}-----`
/// block, so that a wrong file fails at start-up rather than on every connection attempt.
fn read_pem(
    key: &'static str,
    path: &std::path::Path,
    label: &str,
    what: &'static str,
) -> Result<Vec<u8>, MqttError> {
    let bytes = std::fs::read(path).map_err(|e| MqttError::TlsFile {
        key,
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    // rumqttc cannot use an encrypted key, so it does not count.
    let found = text.lines().any(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|name| name.ends_with(label) && !name.starts_with("ENCRYPTED"))
    });
    if found {
        Ok(bytes)
    } else {
        Err(MqttError::TlsPem {
            key,
            path: path.display().to_string(),
            what,
        })
    }
}

/// The `{prefix}/status` topic.
pub fn status_topic(plan: &Mqtt) -> String {
    format!("{}/status", plan.topic_prefix)
}

/// The TLS transport for `tls`: rustls with the ring provider, the server verified against
/// `ca_file`, and a client certificate when configured. rumqttc takes the PEM bytes.
fn tls_transport(tls: &Tls) -> Result<rumqttc::Transport, MqttError> {
    // One TLS stack: rustls with ring. Installing twice is harmless (the first one stays).
    let _first_install = rustls::crypto::ring::default_provider().install_default();
    let ca = read_pem(
        "mqtt.tls.ca_file",
        &tls.ca_file,
        "CERTIFICATE",
        "certificate",
    )?;
    let client_auth = match &tls.client_auth {
        Some((cert, key)) => Some((
            read_pem(
                "mqtt.tls.client_cert_file",
                cert,
                "CERTIFICATE",
                "certificate",
            )?,
            read_pem(
                "mqtt.tls.client_key_file",
                key,
                "PRIVATE KEY",
                "unencrypted private key",
            )?,
        )),
        None => None,
    };
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        },
    ))
}

/// A downlink command as it arrived on `{prefix}/cmd/{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    /// The sink it arrived on (`mqtt.name`): the reply goes back there.
    pub sink: String,
    /// The `{name}` segment.
    pub name: String,
    /// The raw payload, validated by whoever handles it.
    pub payload: Vec<u8>,
    /// It arrived with the retain flag: a stored command, possibly old, possibly seen
    /// before. It must be refused, never carried out.
    pub retained: bool,
}

/// Commands queued for the core before new ones are refused (and logged).
pub const DOWNLINK_QUEUE: usize = 64;

/// Whether the configuration's hash changed; `false` once its sender is gone; pends without
/// one.
async fn config_changed(config: &mut Option<tokio::sync::watch::Receiver<String>>) -> bool {
    match config {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Dropped commands held one by one for the audit trail; beyond, only counted.
pub const MAX_DROPPED_HELD: usize = 1024;

/// A command dropped on a full queue, as its audit row names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedCommand {
    /// The sink it arrived on.
    pub sink: String,
    /// The `{name}` segment.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its payload, hex.
    pub sha256: String,
}

/// Commands the sessions dropped because the core's queue was full, until the core audits
/// them: a flood that overflows the queue still leaves a row per command (up to
/// [`MAX_DROPPED_HELD`] between two audits, and a count beyond).
#[derive(Debug, Default)]
pub struct DroppedCommands {
    // A std mutex: held for a push or a swap, never across an await.
    inner: std::sync::Mutex<(Vec<DroppedCommand>, u64)>,
}

impl DroppedCommands {
    /// Holds `d` for the audit trail, or counts it when the hold is full.
    pub fn push(&self, d: DroppedCommand) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.0.len() < MAX_DROPPED_HELD {
            inner.0.push(d);
        } else {
            inner.1 += 1;
        }
    }

    /// Takes what is held, and the count of those beyond it.
    pub fn take(&self) -> (Vec<DroppedCommand>, u64) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = std::mem::take(&mut inner.0);
        (held, std::mem::replace(&mut inner.1, 0))
    }
}

/// The MQTT sink task's state.
pub struct Session<O: Outbox> {
    plan: Mqtt,
    outbox: Arc<O>,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    stats: Arc<MqttStats>,
    downlink: Option<tokio::sync::mpsc::Sender<Downlink>>,
    /// Where dropped commands wait for the audit trail.
    dropped: Arc<DroppedCommands>,
    /// The running configuration's hash, for the retained status; a change republishes it.
    config: Option<tokio::sync::watch::Receiver<String>>,
    /// A command flood fills the queue with every message: one line a minute, with a count.
    queue_full: RepeatLimit,
}

impl<O: Outbox> Session<O> {
    /// A session delivering `outbox` per `plan`; `wake` is notified when rows are added.
    pub fn new(
        plan: Mqtt,
        outbox: Arc<O>,
        wake: Arc<Notify>,
        clock: Arc<dyn Clock>,
        stats: Arc<MqttStats>,
    ) -> Self {
        Self {
            plan,
            outbox,
            wake,
            clock,
            stats,
            downlink: None,
            dropped: Arc::default(),
            config: None,
            queue_full: RepeatLimit::new(REPEAT_WINDOW),
        }
    }

    /// Subscribes to `{prefix}/cmd/+` and hands every command to `tx` (never blocking: a full
    /// queue drops the command with a log line, and the sender gets no reply). The
    /// subscription follows the rules of [`downlink`]: only once the connection delivers, and
    /// not for a cool-down after an oversized message.
    #[must_use]
    pub fn with_downlink(mut self, tx: tokio::sync::mpsc::Sender<Downlink>) -> Self {
        self.downlink = Some(tx);
        self
    }

    /// Hands the commands a full queue drops to `dropped`, for the core to audit.
    #[must_use]
    pub fn with_dropped(mut self, dropped: Arc<DroppedCommands>) -> Self {
        self.dropped = dropped;
        self
    }

    /// Names the running configuration (its hash) in the retained status, published again
    /// whenever it changes.
    #[must_use]
    pub fn with_config(mut self, config: tokio::sync::watch::Receiver<String>) -> Self {
        self.config = Some(config);
        self
    }

    /// The online status, naming the running configuration.
    fn online_status(&self, now: Timestamp) -> Vec<u8> {
        let hash = self.config.as_ref().map(|c| c.borrow().clone());
        json_v1::status_with_config(true, now, hash.as_deref())
    }

    fn on_message(&self, topic: &str, payload: Vec<u8>, retained: bool) {
        let Some(tx) = &self.downlink else { return };
        let prefix = format!("{}/cmd/", self.plan.topic_prefix);
        let Some(name) = topic.strip_prefix(&prefix).filter(|n| !n.contains('/')) else {
            debug!(topic = %peer_text(topic), "Message on a topic that is not a command; ignored.");
            return;
        };
        let Err(err) = tx.try_send(Downlink {
            sink: self.plan.name.to_string(),
            name: name.to_owned(),
            payload,
            retained,
        }) else {
            return;
        };
        let d = err.into_inner();
        self.dropped.push(DroppedCommand {
            sink: d.sink,
            name: peer_text(&d.name),
            bytes: d.payload.len() as u64,
            sha256: crate::store::audit::sha256_hex(&d.payload),
        });
        if let Some(left_out) = self.queue_full.admit("", crate::clock::monotonic()) {
            warn!(
                topic = %peer_text(topic),
                left_out,
                "Command queue full (or the core stopped); command dropped unanswered, and \
                 audited (left_out: as many since the last such line)."
            );
        }
    }

    /// Runs until `cancel` fires; then publishes the offline status and disconnects.
    ///
    /// # Errors
    /// Only start-up errors (credentials, TLS files); connection trouble is retried forever.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), MqttError> {
        let started = self.clock.now();
        let (client, mut events) = conn::connect(&self.plan, started)?;
        let broker = format!("{}:{}", self.plan.host, self.plan.port);
        let protocol = self.plan.protocol;
        let qos = if self.plan.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let mut inflight = InFlight::default();
        // MQTT 5 topic aliases of the current connection (none over 3.1.1).
        let mut aliases = TopicAliases::default();
        // Present while connected: the feeder reading ahead for this connection.
        let mut feed: Option<Feed> = None;
        // Rendered messages taken from the feeder, waiting for room in the window.
        let mut ready: VecDeque<Ready> = VecDeque::new();
        let mut backoff = Backoff::new(self.plan.reconnect.0, self.plan.reconnect.1);
        let mut outage_since: Option<Timestamp> = None;
        let mut pending_acks: Vec<RowId> = Vec::new();
        // Deletes run beside the event loop: awaiting each one here would hold up every PUBACK
        // behind the store's commit window. One at a time; the next takes all that piled up.
        let mut acking: Option<tokio::task::JoinHandle<(u64, Result<(), OutboxError>)>> = None;
        let window = usize::from(self.plan.max_inflight);
        // One log line per connection for rejected publishes; the counter has the rest.
        let mut rejection_logged = false;
        let mut commands = CommandGate::new(self.downlink.is_some());
        let commands_topic = format!("{}/cmd/+", self.plan.topic_prefix);
        loop {
            let resume_commands = commands.resume_at().filter(|_| feed.is_some());
            let want = ready.is_empty() && inflight.len() < window;
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                // Before events: under load the event loop is always ready (PUBACKs keep
                // coming), and the window would drain empty before the next batch was taken.
                batch = next_batch(&mut feed), if want => match batch {
                    Some(batch) => ready.extend(batch),
                    // The feeder only ends when dropped, so it failed: start over on a new
                    // connection rather than leave this one idle.
                    None => {
                        error!("The outbox reader stopped; reconnecting to start it again.");
                        let _ignored = client.try_disconnect();
                    }
                },
                // Commands were paused and may come back on this connection.
                () = sleep_until(resume_commands), if resume_commands.is_some() => {}
                // A reload changed the configuration: the retained status says which runs now.
                changed = config_changed(&mut self.config) => {
                    if !changed {
                        self.config = None;
                    } else if feed.is_some()
                        && client
                            .try_publish(status_topic(&self.plan), QoS::AtLeastOnce, true, self.online_status(self.clock.now()))
                            .is_ok()
                    {
                        inflight.handed_to_client(Tracked::Untracked);
                    }
                }
                event = events.poll() => {
                if let Event::TooLarge(err) = &event {
                    let paused = commands.on_too_large(tokio::time::Instant::now());
                    if paused.first {
                        warn!(broker = %broker, topic = %commands_topic, error = %err, cooldown_s = paused.cooldown.as_secs(),
                            "The broker sent a message over the packet limit; commands are off for the cool-down so that \
                             telemetry keeps flowing. A retained message on a command topic is the usual cause: clear it.");
                    } else {
                        debug!(broker = %broker, error = %err, cooldown_s = paused.cooldown.as_secs(),
                            "Another message over the packet limit; commands are off again.");
                    }
                }
                match event {
                    Event::ConnAck { topic_alias_max } => {
                        inflight.on_connection_lost();
                        // Only where the configuration asks for them (a broker's alias support
                        // is not always sound: the embedded rumqttd 0.20 cannot forward such a
                        // publish to a 3.1.1 subscriber).
                        aliases.reset(if self.plan.topic_aliases { topic_alias_max } else { 0 });
                        ready.clear();
                        let now = self.clock.now();
                        let backfill_before = if outage_since.is_some() { now } else { started };
                        feed = Some(Feed::start(self.outbox.clone(), self.wake.clone(), self.stats.clone(), FeedPlan {
                            prefix: self.plan.topic_prefix.clone(),
                            backfill_per_live: self.plan.backfill_per_live as usize,
                            backfill_before,
                        }));
                        backoff.reset();
                        rejection_logged = false;
                        self.stats.connects.fetch_add(1, Ordering::Relaxed);
                        self.stats.connected.store(1, Ordering::Relaxed);
                        match outage_since.take() {
                            Some(since) => info!(broker = %broker, protocol = %protocol, outage_ms = now.0 - since.0,
                                "Broker connection restored; replaying the outbox."),
                            None => info!(broker = %broker, protocol = %protocol, "Connected to the broker."),
                        }
                        if client.try_publish(status_topic(&self.plan), QoS::AtLeastOnce, true, self.online_status(now)).is_ok() {
                            inflight.handed_to_client(Tracked::Untracked);
                        }
                        // Clean sessions forget subscriptions: the gate subscribes again on every
                        // connection, once it delivers.
                        commands.on_connected();
                    }
                    // Left over from a connection that already dropped: its rows were returned.
                    Event::OutgoingPublish(pkid) | Event::PubAck(pkid) | Event::PubRejected { pkid, .. }
                        if feed.is_none() => debug!(pkid, "Event of a dropped connection ignored."),
                    Event::OutgoingPublish(pkid) => {
                        if let Err(desync) = inflight.on_outgoing_publish(pkid) {
                            error!(error = %desync, "MQTT client and outbox disagree; reconnecting to resync.");
                            // Dropping the connection resets both sides; rows stay in the outbox.
                            let _ignored = client.try_disconnect();
                        } else if pkid == 0 {
                            // QoS 0 has no PUBACK: written to the socket is all we will know.
                            if let Some(Tracked::Row(row)) = inflight.on_puback(pkid) {
                                pending_acks.push(row);
                            }
                        }
                    }
                    Event::PubAck(pkid) => {
                        commands.on_delivered();
                        if let Some(Tracked::Row(row)) = inflight.on_puback(pkid) {
                            pending_acks.push(row);
                        }
                    }
                    Event::PubRejected { pkid, reason } => {
                        // Not delivered: the row stays and is sent again after the next ConnAck.
                        if let Some(Tracked::Row(row)) = inflight.on_puback(pkid) {
                            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                            if !std::mem::replace(&mut rejection_logged, true) {
                                error!(broker = %broker, row, reason = %reason,
                                    "Broker rejected a publish; keeping it in the outbox until the next connection.");
                            }
                        }
                    }
                    Event::Message { topic, payload, retained } => self.on_message(&topic, payload, retained),
                    Event::OutgoingDisconnect | Event::Other => {}
                    Event::Error(err) | Event::TooLarge(err) => {
                        // The first failed connect counts as an outage too: rows stored meanwhile
                        // are replays by the time they go out.
                        if feed.take().is_some() || outage_since.is_none() {
                            warn!(broker = %broker, protocol = %protocol, error = %err,
                                  "Broker unreachable; keeping messages in the outbox.");
                            outage_since.get_or_insert(self.clock.now());
                        }
                        ready.clear();
                        self.stats.connected.store(0, Ordering::Relaxed);
                        inflight.on_connection_lost();
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(backoff.next()) => {}
                        }
                    }
                }},
                // A finished delete: count it, and let the next one take what piled up.
                result = join(&mut acking), if acking.is_some() => {
                    acking = None;
                    self.acked(result);
                }
            }
            if acking.is_none() && !pending_acks.is_empty() {
                let rows = std::mem::take(&mut pending_acks);
                let outbox = self.outbox.clone();
                acking = Some(crate::sink::spawn_round_trip(async move {
                    let n = rows.len() as u64;
                    (n, outbox.ack(rows).await)
                }));
            }
            if let Some(f) = feed.as_mut() {
                self.hand_over(&client, qos, &mut inflight, &mut aliases, &mut ready, f);
                if commands.should_subscribe(tokio::time::Instant::now()) {
                    if client
                        .try_subscribe_commands(commands_topic.clone())
                        .is_ok()
                    {
                        commands.on_subscribed(tokio::time::Instant::now());
                    } else {
                        debug!(broker = %broker, "Request queue full; subscribing to commands after the next event.");
                    }
                }
            }
        }
        // What is in flight may be delivered already: take the PUBACKs that come within the
        // drain (the daemon waits a bounded time for this task), so that rows the broker has
        // are deleted now instead of being sent again at the next start.
        if feed.is_some() && !inflight.is_empty() {
            let drained = tokio::time::timeout(
                PUBACK_DRAIN,
                drain_pubacks(&mut events, &mut inflight, &mut pending_acks),
            )
            .await;
            if drained.is_err() {
                info!(broker = %broker, unacknowledged = inflight.len(),
                    "Stopping with publishes unacknowledged; they stay in the outbox and go out again at the next start.");
            }
        }
        if let Some(done) = acking.take() {
            self.acked(done.await);
        }
        if !pending_acks.is_empty() {
            let n = pending_acks.len() as u64;
            self.acked(Ok((n, self.outbox.ack(pending_acks).await)));
        }
        // Clean shutdown: say so explicitly, since a clean disconnect suppresses the Last Will.
        let _queued = client.try_publish(
            status_topic(&self.plan),
            QoS::AtLeastOnce,
            true,
            json_v1::status(false, self.clock.now()),
        );
        let _queued = client.try_disconnect();
        let drain = async {
            for _ in 0..16 {
                match events.poll().await {
                    Event::OutgoingDisconnect | Event::Error(_) | Event::TooLarge(_) => break,
                    _ => {}
                }
            }
        };
        let _elapsed = tokio::time::timeout(Duration::from_secs(2), drain).await;
        self.stats.connected.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Counts (or logs) the outcome of a background delete.
    fn acked(&self, done: Result<(u64, Result<(), OutboxError>), tokio::task::JoinError>) {
        match done {
            Ok((n, Ok(()))) => {
                self.stats.acked.fetch_add(n, Ordering::Relaxed);
            }
            // The store keeps the ids and retries the delete with its next write, and does not
            // hand the rows out again meanwhile; it logs a failing disk itself, once.
            Ok((_, Err(err))) => {
                debug!(error = %err, "Cannot delete acknowledged rows yet; the store retries.")
            }
            Err(err) => {
                error!(error = %err, "The outbox delete task failed; the rows will be resent.")
            }
        }
    }

    /// Hands rendered messages to the client, oldest first, while the window has room.
    fn hand_over(
        &self,
        client: &Client,
        qos: QoS,
        inflight: &mut InFlight,
        aliases: &mut TopicAliases,
        ready: &mut VecDeque<Ready>,
        feed: &mut Feed,
    ) {
        let window = usize::from(self.plan.max_inflight);
        while inflight.len() < window
            && let Some(m) = ready.pop_front()
        {
            let alias = aliases.for_topic(&m.topic);
            // Recorded before the topic moves into the client; undone below if refused.
            aliases.sent(&m.topic, alias);
            match client.try_publish_aliased(m.topic, qos, m.retain, m.payload, alias) {
                Ok(()) => {
                    inflight.handed_to_client(Tracked::Row(m.row));
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                }
                // The request channel is full (it holds a window, so only if the event loop
                // stalls): keep the message first in line and try after the next event.
                Err(Some(Returned { topic, payload })) => {
                    aliases.refused(&topic, alias);
                    ready.push_front(Ready {
                        row: m.row,
                        topic,
                        payload,
                        retain: m.retain,
                    });
                    return;
                }
                // Unreached (rumqttc hands back the publish it refused). Sending the next row
                // instead would skip this one: send nothing more on this connection, and
                // start over on the next.
                Err(None) => {
                    error!(
                        row = m.row,
                        "The MQTT client lost a refused publish; reconnecting to resync."
                    );
                    ready.clear();
                    feed.stop();
                    let _ignored = client.try_disconnect();
                    return;
                }
            }
        }
    }
}

/// The next rendered batch of the connection's feeder, or `None` once if the feeder ended;
/// never resolves without a running feeder.
async fn next_batch(feed: &mut Option<Feed>) -> Option<Vec<Ready>> {
    match feed.as_mut() {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

/// How long a stopping session waits for the PUBACKs of what it has in flight. The daemon
/// gives the task 3 s in all; the offline status and the DISCONNECT need the rest.
const PUBACK_DRAIN: Duration = Duration::from_millis(1500);

/// Polls the event loop until nothing is in flight or the connection ends, collecting the
/// rows whose PUBACKs arrive; the client keeps sending what it had queued meanwhile.
async fn drain_pubacks(events: &mut conn::Events, inflight: &mut InFlight, acked: &mut Vec<RowId>) {
    while !inflight.is_empty() {
        match events.poll().await {
            Event::OutgoingPublish(pkid) => {
                if inflight.on_outgoing_publish(pkid).is_err() {
                    return;
                }
                if pkid == 0
                    && let Some(Tracked::Row(row)) = inflight.on_puback(pkid)
                {
                    acked.push(row);
                }
            }
            Event::PubAck(pkid) => {
                if let Some(Tracked::Row(row)) = inflight.on_puback(pkid) {
                    acked.push(row);
                }
            }
            // Not delivered: the row stays for the next start.
            Event::PubRejected { pkid, .. } => {
                let _kept = inflight.on_puback(pkid);
            }
            // A new connection has a fresh session: what was in flight is unsent again.
            Event::ConnAck { .. }
            | Event::Error(_)
            | Event::TooLarge(_)
            | Event::OutgoingDisconnect => {
                return;
            }
            Event::Message { .. } | Event::Other => {}
        }
    }
}

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Awaits the task in `slot`; never resolves when there is none.
async fn join<T>(
    slot: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match slot.as_mut() {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_commands_are_held_one_by_one_then_counted_and_taken_once() {
        let dropped = DroppedCommands::default();
        for i in 0..MAX_DROPPED_HELD + 5 {
            dropped.push(DroppedCommand {
                sink: "mqtt".into(),
                name: "write".into(),
                bytes: i as u64,
                sha256: String::new(),
            });
        }
        let (held, beyond) = dropped.take();
        assert_eq!((held.len(), beyond), (MAX_DROPPED_HELD, 5));
        assert_eq!(held[7].bytes, 7);
        assert_eq!(dropped.take(), (Vec::new(), 0));
    }

    #[test]
    fn a_tls_file_must_hold_the_expected_pem_block_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let cert = write(
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let ec_key = write(
            "ec.key",
            "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
        );
        let encrypted = write(
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let key = "mqtt.tls.client_key_file";
        assert!(read_pem("mqtt.tls.ca_file", &cert, "CERTIFICATE", "certificate").is_ok());
        assert!(read_pem(key, &ec_key, "PRIVATE KEY", "unencrypted private key").is_ok());
        let err = read_pem(key, &encrypted, "PRIVATE KEY", "unencrypted private key");
        assert_eq!(
            err.unwrap_err().to_string(),
            format!(
                "mqtt.tls.client_key_file: {} holds no PEM unencrypted private key",
                encrypted.display()
            )
        );
        let err = read_pem("mqtt.tls.ca_file", &ec_key, "CERTIFICATE", "certificate");
        assert!(err.is_err(), "a key is not a CA");
        let missing = dir.path().join("missing.pem");
        let err = read_pem("mqtt.tls.ca_file", &missing, "CERTIFICATE", "certificate");
        let text = err.unwrap_err().to_string();
        assert!(text.starts_with("mqtt.tls.ca_file: cannot read "), "{text}");
    }

    #[test]
    fn a_password_is_the_first_line_and_a_missing_file_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let secret = read_password(&PasswordSource::File(file)).unwrap();
        assert_eq!(secret, Secret("s3cret".into()));
        let missing = PasswordSource::File(dir.path().join("missing"));
        let text = read_password(&missing).unwrap_err().to_string();
        assert!(
            text.starts_with("mqtt.password_file: cannot read the password from "),
            "{text}"
        );
        assert!(!text.contains("s3cret"));
    }

    #[test]
    fn a_secret_never_prints() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "***");
    }
}
