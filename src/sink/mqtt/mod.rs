//! The MQTT sink: one task owns the rumqttc event loop and is its only publisher, so the
//! FIFO of `Outgoing::Publish` events matches the order rows were handed over (STYLE.md C7).
//!
//! Invariants:
//! - a row leaves the outbox only on the PUBACK matched to it through [`inflight::InFlight`];
//! - the session is clean: after every ConnAck the outbox, not the broker, is the memory, so
//!   every unacknowledged row is sent again, flagged `"backfill":true` if it was created before
//!   this connection came up;
//! - backfill is interleaved with live rows (`backfill_per_live` old rows per new one), so a
//!   long backlog never delays live data by more than a few messages;
//! - a desync (an outgoing publish nobody handed over) forces a reconnect, never a guess.

pub mod broker;
pub mod inflight;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::config::daemon::{Mqtt, PasswordSource};
use crate::encode::json_v1;
use crate::model::Timestamp;
use inflight::{InFlight, RowId, Tracked};

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
    /// Deletes acknowledged rows.
    fn ack(&self, rows: Vec<RowId>) -> impl Future<Output = Result<(), OutboxError>> + Send;
    /// The newest row id, if any.
    fn newest(&self) -> impl Future<Output = Result<Option<RowId>, OutboxError>> + Send;
    /// Wire bytes for a stored row; `None` drops an unreadable row (logged by the caller).
    fn render(&self, item: &OutboxItem, backfill: bool) -> Option<Vec<u8>>;
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
}

/// Why the sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The password could not be read.
    #[error("mqtt: cannot read the password from {source_name}: {error}")]
    Password {
        /// File or credential.
        source_name: String,
        /// Why.
        error: String,
    },
    /// A TLS file could not be read.
    #[error("mqtt.tls: cannot read {path}: {error}")]
    TlsFile {
        /// The file.
        path: String,
        /// Why.
        error: String,
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
    let path = match source {
        PasswordSource::File(p) => p.clone(),
        PasswordSource::Credential(name) => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(std::path::PathBuf::from)
            .ok_or_else(|| MqttError::Password {
                source_name: format!("credential `{name}`"),
                error: "$CREDENTIALS_DIRECTORY is not set (is LoadCredential= in the unit?)".into(),
            })?
            .join(name),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| MqttError::Password {
        source_name: path.display().to_string(),
        error: e.to_string(),
    })?;
    Ok(Secret(text.lines().next().unwrap_or_default().to_owned()))
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|e| MqttError::TlsFile {
        path: path.display().to_string(),
        error: e.to_string(),
    })
}

/// The `{prefix}/status` topic.
pub fn status_topic(plan: &Mqtt) -> String {
    format!("{}/status", plan.topic_prefix)
}

/// Builds client options: clean session, Last Will, credentials, TLS.
///
/// # Errors
/// [`MqttError`] when a password or TLS file cannot be read.
pub fn options(plan: &Mqtt, now: Timestamp) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(&plan.client_id, &plan.host, plan.port);
    o.set_clean_session(true)
        .set_keep_alive(plan.keep_alive)
        .set_inflight(plan.max_inflight)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_last_will(LastWill::new(
            status_topic(plan),
            json_v1::status(false, now),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &plan.username {
        let password = match &plan.password {
            Some(source) => read_password(source)?.0,
            None => String::new(),
        };
        o.set_credentials(user, password);
    }
    if let Some(tls) = &plan.tls {
        // One TLS stack: rustls with ring. Installing twice is harmless (the first one stays).
        let _first_install = rustls::crypto::ring::default_provider().install_default();
        let client_auth = match &tls.client_auth {
            Some((cert, key)) => Some((read_file(cert)?, read_file(key)?)),
            None => None,
        };
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca: read_file(&tls.ca_file)?,
                alpn: None,
                client_auth,
            },
        ));
    }
    Ok(o)
}

/// The MQTT sink task's state.
pub struct Session<O: Outbox> {
    plan: Mqtt,
    outbox: Arc<O>,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    stats: Arc<MqttStats>,
}

/// Where the pump stands within one connection.
#[derive(Debug)]
struct Cursors {
    /// Rows up to here existed when the connection came up: the backlog.
    watermark: Option<RowId>,
    /// Last backlog row handed over.
    backlog: Option<RowId>,
    /// Last live row handed over.
    live: Option<RowId>,
    /// Rows created before this are replays: before the outage ended, or, on the first
    /// connection, before this process started (left by an earlier run).
    backfill_before: Timestamp,
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
        }
    }

    /// Runs until `cancel` fires; then publishes the offline status and disconnects.
    ///
    /// # Errors
    /// Only start-up errors (credentials, TLS files); connection trouble is retried forever.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), MqttError> {
        let started = self.clock.now();
        let opts = options(&self.plan, started)?;
        // A small request channel: the outbox, not rumqttc, holds the backlog.
        let (client, mut eventloop) =
            AsyncClient::new(opts, usize::from(self.plan.max_inflight) + 4);
        let qos = if self.plan.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let mut inflight = InFlight::default();
        let mut cursors: Option<Cursors> = None;
        let mut backoff = self.plan.reconnect.0;
        let mut outage_since: Option<Timestamp> = None;
        let mut pending_acks: Vec<RowId> = Vec::new();
        loop {
            let can_pump =
                cursors.is_some() && inflight.len() < usize::from(self.plan.max_inflight);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        inflight.on_connection_lost();
                        let watermark = self.outbox.newest().await.unwrap_or(None);
                        let now = self.clock.now();
                        let backfill_before = if outage_since.is_some() { now } else { started };
                        cursors = Some(Cursors { watermark, backlog: None, live: watermark, backfill_before });
                        backoff = self.plan.reconnect.0;
                        self.stats.connects.fetch_add(1, Ordering::Relaxed);
                        self.stats.connected.store(1, Ordering::Relaxed);
                        match outage_since.take() {
                            Some(since) => info!(broker = %format!("{}:{}", self.plan.host, self.plan.port),
                                outage_ms = now.0 - since.0, "Broker connection restored; replaying the outbox."),
                            None => info!(broker = %format!("{}:{}", self.plan.host, self.plan.port), "Connected to the broker."),
                        }
                        if client.try_publish(status_topic(&self.plan), QoS::AtLeastOnce, true, json_v1::status(true, now)).is_ok() {
                            inflight.handed_to_client(Tracked::Untracked);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Err(desync) = inflight.on_outgoing_publish(pkid) {
                            error!(error = %desync, "MQTT client and outbox disagree; reconnecting to resync.");
                            // Dropping the connection resets both sides; rows stay in the outbox.
                            let _ignored = client.try_disconnect();
                        } else if qos == QoS::AtMostOnce {
                            // QoS 0 has no PUBACK: written to the socket is all we will know.
                            if let Some(Tracked::Row(row)) = inflight.on_puback(pkid) {
                                pending_acks.push(row);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(Tracked::Row(row)) = inflight.on_puback(ack.pkid) {
                            pending_acks.push(row);
                        }
                    }
                    Ok(other) => debug!(event = ?other, "MQTT event."),
                    Err(err) => {
                        // The first failed connect counts as an outage too: rows stored meanwhile
                        // are replays by the time they go out.
                        if cursors.take().is_some() || outage_since.is_none() {
                            warn!(broker = %format!("{}:{}", self.plan.host, self.plan.port), error = %err,
                                  "Broker unreachable; keeping messages in the outbox.");
                            outage_since.get_or_insert(self.clock.now());
                        }
                        self.stats.connected.store(0, Ordering::Relaxed);
                        inflight.on_connection_lost();
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(self.plan.reconnect.1);
                    }
                },
                () = self.wake.notified(), if can_pump => {}
            }
            if !pending_acks.is_empty() {
                let n = pending_acks.len() as u64;
                match self.outbox.ack(std::mem::take(&mut pending_acks)).await {
                    Ok(()) => {
                        self.stats.acked.fetch_add(n, Ordering::Relaxed);
                    }
                    // The rows stay and will be sent again: a duplicate, never a loss.
                    Err(err) => {
                        error!(error = %err, "Cannot delete acknowledged rows; they will be resent.")
                    }
                }
            }
            if let Some(c) = cursors.as_mut() {
                self.pump(&client, qos, &mut inflight, c).await;
            }
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
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _elapsed = tokio::time::timeout(Duration::from_secs(2), drain).await;
        self.stats.connected.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Hands rows to the client while the window has room: one live row, then up to
    /// `backfill_per_live` backlog rows, until both are exhausted or the window is full.
    async fn pump(&self, client: &AsyncClient, qos: QoS, inflight: &mut InFlight, c: &mut Cursors) {
        let window = usize::from(self.plan.max_inflight);
        let ratio = self.plan.backfill_per_live as usize;
        loop {
            let room = window.saturating_sub(inflight.len());
            if room == 0 {
                return;
            }
            let live = match self.outbox.fetch(c.live, 1.min(room)).await {
                Ok(rows) => rows,
                Err(err) => {
                    error!(error = %err, "Cannot read the outbox.");
                    return;
                }
            };
            let backlog_done = c.watermark.is_none() || c.backlog >= c.watermark;
            let backlog = if backlog_done {
                Vec::new()
            } else {
                match self
                    .outbox
                    .fetch(c.backlog, ratio.min(room.saturating_sub(live.len()).max(1)))
                    .await
                {
                    Ok(rows) => rows
                        .into_iter()
                        .take_while(|r| Some(r.id) <= c.watermark)
                        .collect(),
                    Err(err) => {
                        error!(error = %err, "Cannot read the outbox.");
                        return;
                    }
                }
            };
            if backlog.is_empty() && !backlog_done {
                c.backlog = c.watermark;
            }
            if live.is_empty() && backlog.is_empty() {
                return;
            }
            for (item, is_live) in live
                .iter()
                .map(|r| (r, true))
                .chain(backlog.iter().map(|r| (r, false)))
            {
                let backfill = item.created < c.backfill_before;
                let Some(payload) = self.outbox.render(item, backfill) else {
                    error!(row = item.id, topic = %item.topic, "Unreadable outbox row dropped.");
                    self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                    let _logged = self.outbox.ack(vec![item.id]).await;
                    advance(c, item.id, is_live);
                    continue;
                };
                let topic = format!("{}/{}", self.plan.topic_prefix, item.topic);
                match client.try_publish(topic, qos, false, payload) {
                    Ok(()) => {
                        inflight.handed_to_client(Tracked::Row(item.id));
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                        advance(c, item.id, is_live);
                    }
                    // The request channel is full: the event loop will drain it; try later.
                    Err(_) => return,
                }
            }
        }
    }
}

fn advance(c: &mut Cursors, id: RowId, live: bool) {
    if live {
        c.live = Some(id);
    } else {
        c.backlog = Some(id);
    }
}
