//! The Sparkplug B sink: one task owns a broker connection (the JSON sink's, from
//! `sink::mqtt::conn`) and drives the pure [`EdgeNode`] with it (docs/design.md §4).
//!
//! Data comes from the sink's own outbox queue, which is also the store-and-forward buffer:
//! one row per device poll, every poll, stored as [`record::encode_batch`]; the node does the
//! by-exception filtering. Being on disk, the buffer survives a restart during a host outage.
//!
//! Invariants:
//! - rows are read only while connected and born (so, with a primary host configured, while it
//!   is online); otherwise they stay in the queue;
//! - a row leaves the queue once its DDATA was written to the socket (births and data are QoS
//!   0, so rumqttc's `Outgoing::Publish` is all there is to know), or at once when the node has
//!   nothing to send for it (nothing changed, unknown device, unreadable row); never before;
//! - rows stored before the current birth (up to the newest row id when it was made) go out as
//!   historical DDATA with their own timestamps, in row order, then live rows; just before a
//!   birth the node is primed with the newest stored polls, so the births declare current
//!   values (for devices polled within the last few hundred rows);
//! - one task is the only publisher, so the n-th `Outgoing::Publish` is the n-th hand-over, and
//!   messages leave in the order the node made them: `seq` runs on without gaps from each
//!   NBIRTH;
//! - the session is clean: after every ConnAck the subscriptions are made again and the queue is
//!   read from its oldest row; events of a dead connection are ignored;
//! - when the primary host goes offline, rows handed over but not yet written are kept (they
//!   would reach no host) and read again after the next birth;
//! - bdSeq: the next value is saved (state scope `sparkplug`, key `{group}/{edge_node}`) before
//!   every connect attempt, and the will (the NDEATH, QoS 1) is replaced to carry it, so the
//!   will and the NBIRTH of one connection always agree, also across restarts; a clean stop
//!   publishes the NDEATH itself, since a clean disconnect suppresses the will;
//! - DCMD and NCMD metric writes go to the core as commands ([`commands`]); their answer, the
//!   value read back, comes through the queue as a [`commands::WRITTEN_STREAM`] row and goes
//!   out as DDATA whether or not the value changed.

pub mod commands;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::mqtt::conn::{self, Client, Event, Returned, Will};
use super::mqtt::inflight::{RowId, Tracked};
use super::mqtt::{MqttError, MqttStats, Outbox, OutboxError, OutboxItem};
use crate::clock::Clock;
use crate::runtime::log_limit::{REPEAT_WINDOW, RepeatLimit, peer_text};
use crate::sink::backoff::Backoff;
use crate::sink::mqtt::spec::Mqtt;
use crate::sparkplug::{DeviceSpec, EdgeNode, Message, MessageType, NodeConfig, Qos, Topic};
use crate::store::{StoreHandle, record};

/// The state scope holding each node's next bdSeq.
pub const STATE_SCOPE: &str = "sparkplug";

/// Rows read from the queue per store round trip.
const BATCH: usize = 128;

/// Wait before reading the queue again after it could not be read.
const RETRY: Duration = Duration::from_secs(1);

/// Longest wait for the NDEATH and DISCONNECT to go out on a clean stop.
const STOP_DRAIN: Duration = Duration::from_secs(2);

/// The Sparkplug B sink task's state.
pub struct SparkplugSink<O: Outbox> {
    plan: Mqtt,
    node: NodeConfig,
    devices: Vec<DeviceSpec>,
    outbox: Arc<O>,
    wake: Arc<Notify>,
    store: StoreHandle,
    clock: Arc<dyn Clock>,
    stats: Arc<MqttStats>,
    /// Where metric writes go, when the daemon takes commands from this sink.
    forward: Option<commands::Forward>,
}

/// Where delivery stands on the current connection; reset whenever it drops, and partly when
/// the primary host goes offline.
#[derive(Debug, Default)]
struct Flow {
    /// ConnAck seen and no error since.
    connected: bool,
    /// Last row taken from the queue.
    cursor: Option<RowId>,
    /// Rows up to here were stored before the current birth: history.
    watermark: Option<RowId>,
    /// Rows read, not yet given to the node.
    unsent: VecDeque<OutboxItem>,
    /// Messages made, not yet handed to the client, with the row each one delivers.
    ready: VecDeque<(Tracked, Message)>,
    /// Handed to the client, not yet written: one entry per coming `Outgoing::Publish`.
    inflight: VecDeque<Tracked>,
    /// The last read found nothing new: wait for a wake-up.
    idle: bool,
}

impl Flow {
    /// A new connection (or none): everything is read again from the oldest row.
    fn reset(&mut self, connected: bool) {
        *self = Self {
            connected,
            ..Self::default()
        };
    }

    /// The primary host went offline: nothing more is handed over, and the rows not yet
    /// written are read again after the next birth. Entries stay in `inflight` (untracked) so
    /// that the coming `Outgoing::Publish` events still line up.
    fn gate_closed(&mut self) {
        let mut first: Option<RowId> = None;
        let mut note = |row: RowId| first = Some(first.map_or(row, |f| f.min(row)));
        for t in &mut self.inflight {
            if let Tracked::Row(row) = *t {
                note(row);
                *t = Tracked::Untracked;
            }
        }
        for (t, _) in &self.ready {
            if let Tracked::Row(row) = *t {
                note(row);
            }
        }
        for item in &self.unsent {
            note(item.id);
        }
        if let Some(first) = first {
            self.cursor = Some(first - 1);
        }
        self.ready.clear();
        self.unsent.clear();
        self.watermark = None;
        self.idle = false;
    }
}

/// A background delete of rows and the rows it deletes.
type Acking = JoinHandle<(Vec<RowId>, Result<(), OutboxError>)>;

/// A background read of the queue.
type Fetching = JoinHandle<Result<Vec<OutboxItem>, OutboxError>>;

impl<O: Outbox> SparkplugSink<O> {
    /// A sink delivering the polls in `outbox` as edge node `node` with `devices`, over the
    /// connection `plan`; `wake` is notified when rows are added, `store` keeps the bdSeq.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a distinct shared resource the daemon hands over once"
    )]
    pub fn new(
        plan: Mqtt,
        node: NodeConfig,
        devices: Vec<DeviceSpec>,
        outbox: Arc<O>,
        wake: Arc<Notify>,
        store: StoreHandle,
        clock: Arc<dyn Clock>,
        stats: Arc<MqttStats>,
    ) -> Self {
        Self {
            plan,
            node,
            devices,
            outbox,
            wake,
            store,
            clock,
            stats,
            forward: None,
        }
    }

    /// Hands the metric writes of DCMD and NCMD to the core's downlink queue `tx` (the
    /// core refuses them unless `[mqtt.sparkplug] writes = true`), and those a full queue
    /// drops to `dropped` for the audit trail.
    #[must_use]
    pub fn with_commands(
        mut self,
        tx: tokio::sync::mpsc::Sender<crate::sink::mqtt::Downlink>,
        dropped: Arc<crate::sink::mqtt::DroppedCommands>,
    ) -> Self {
        self.forward = Some(commands::Forward::new(
            tx,
            dropped,
            self.plan.name.to_string(),
        ));
        self
    }

    /// The state key of this node's bdSeq: `{group}/{edge_node}`.
    pub fn state_key(node: &NodeConfig) -> String {
        format!("{}/{}", node.group_id, node.edge_node_id)
    }

    /// Runs until `cancel` fires; then publishes the NDEATH and disconnects.
    ///
    /// # Errors
    /// Only start-up errors (credentials, TLS files); connection trouble is retried forever,
    /// and so is reading the persisted bdSeq.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), MqttError> {
        let key = Self::state_key(&self.node);
        let Some(next) = self.load_bd_seq(&key, &cancel).await else {
            return Ok(());
        };
        let mut node = EdgeNode::new(self.node.clone(), &self.devices, next);
        let will = node.connecting();
        // Start-up errors first: a connection that cannot be made uses up no bdSeq.
        let (client, mut events) = conn::connect_with_will(&self.plan, to_will(will))?;
        self.save_bd_seq(&key, node.next_bd_seq()).await;
        let broker = format!("{}:{}", self.plan.host, self.plan.port);
        let window = usize::from(self.plan.max_inflight.max(1));
        let mut flow = Flow::default();
        let mut backoff = Backoff::new(self.plan.reconnect.0, self.plan.reconnect.1);
        let mut outage_logged = false;
        let mut fetching: Option<Fetching> = None;
        let mut acking: Option<Acking> = None;
        let mut pending_acks: Vec<RowId> = Vec::new();
        // Rows acked but maybe not yet deleted: a read that returns them skips them, so that a
        // reconnect does not send them twice.
        let mut deleting: BTreeSet<RowId> = BTreeSet::new();
        // Inbound messages are the peer's to repeat at will: one line a minute per kind.
        let inbound_logs = RepeatLimit::new(REPEAT_WINDOW);
        let host = self
            .node
            .primary_host_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                done = join(&mut acking), if acking.is_some() => {
                    acking = None;
                    self.acked(done, &mut deleting);
                }
                fetched = join(&mut fetching), if fetching.is_some() => {
                    fetching = None;
                    match fetched {
                        Ok(Ok(rows)) => {
                            flow.idle = rows.is_empty();
                            if let Some(last) = rows.last() {
                                flow.cursor = Some(last.id);
                            }
                            flow.unsent.extend(rows.into_iter().filter(|r| !deleting.contains(&r.id)));
                        }
                        // The task already waited RETRY; the next turn reads again.
                        Ok(Err(err)) => error!(error = %err, "Cannot read the Sparkplug queue; retrying."),
                        Err(err) => error!(error = %err, "The Sparkplug queue reader failed; retrying."),
                    }
                }
                event = events.poll() => match event {
                    Event::ConnAck { .. } => {
                        abort(&mut fetching);
                        flow.reset(true);
                        backoff.reset();
                        outage_logged = false;
                        self.stats.connects.fetch_add(1, Ordering::Relaxed);
                        self.stats.connected.store(1, Ordering::Relaxed);
                        info!(broker = %broker, bd_seq = node.bd_seq().unwrap_or_default(),
                              "Sparkplug edge node connected to the broker.");
                        // Clean sessions forget subscriptions: subscribe on every connection,
                        // before any birth is queued behind them.
                        for (topic, qos) in node.subscriptions() {
                            if client.try_subscribe(topic.clone(), mqtt_qos(qos)).is_err() {
                                warn!(broker = %broker, topic = %topic, "Cannot subscribe on this connection.");
                            }
                        }
                        let watermark = self.prime(&mut node).await;
                        let out = node.on_connected(self.clock.now());
                        take(&mut flow, out, watermark);
                    }
                    Event::OutgoingPublish(pkid) if !flow.connected => {
                        debug!(pkid, "Event of a dropped connection ignored.");
                    }
                    Event::OutgoingPublish(pkid) => match flow.inflight.pop_front() {
                        Some(Tracked::Row(row)) => {
                            deleting.insert(row);
                            pending_acks.push(row);
                        }
                        Some(Tracked::Untracked) => {}
                        None => {
                            error!(pkid, "MQTT client sent a publish never handed to it; reconnecting to resync.");
                            let _ignored = client.try_disconnect();
                        }
                    },
                    Event::Message { topic, payload, retained } => {
                        let forwarded = self
                            .forward
                            .as_ref()
                            .is_some_and(|f| f.forward(&node, &topic, &payload, retained));
                        let was_born = node.is_born();
                        let host_before = node.host_online();
                        let ours = self.is_ours(&topic);
                        let watermark = if ours.is_some() { self.prime(&mut node).await } else { None };
                        let now = crate::clock::monotonic();
                        match node.on_message(&topic, &payload, self.clock.now()) {
                            Ok(out) => {
                                if out.is_empty() && !forwarded {
                                    log_ignored(&topic, ours, &inbound_logs, now);
                                }
                                take(&mut flow, out, watermark);
                            }
                            Err(err) => {
                                if let Some(left_out) = inbound_logs.admit("unreadable", now) {
                                    warn!(topic = %peer_text(&topic), error = %err, left_out,
                                        "Sparkplug message ignored (left_out: as many since the last such line).");
                                }
                            }
                        }
                        match (host_before, node.host_online()) {
                            (before, Some(true)) if before != Some(true) => {
                                info!(host = %host, "Primary host online (STATE); births and data may flow.");
                            }
                            (before, Some(false)) if before != Some(false) => {
                                warn!(host = %host, "Primary host offline (STATE); data waits in the queue until it is back.");
                            }
                            _ => {}
                        }
                        if was_born && !node.is_born() {
                            info!(broker = %broker, "Primary host offline; keeping data in the queue until it is back.");
                            abort(&mut fetching);
                            flow.gate_closed();
                        }
                    }
                    Event::PubAck(_) | Event::PubRejected { .. } | Event::OutgoingDisconnect | Event::Other => {}
                    Event::Error(err) | Event::TooLarge(err) => {
                        if flow.connected || !outage_logged {
                            warn!(broker = %broker, error = %err,
                                  "Broker unreachable; keeping data in the queue.");
                            outage_logged = true;
                        }
                        abort(&mut fetching);
                        flow.reset(false);
                        node.on_connection_lost();
                        self.stats.connected.store(0, Ordering::Relaxed);
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(backoff.next()) => {}
                        }
                        // A new connect attempt: a new bdSeq, saved first, and its will.
                        let will = node.connecting();
                        self.save_bd_seq(&key, node.next_bd_seq()).await;
                        events.set_will(to_will(will));
                    }
                },
                () = self.wake.notified(), if flow.idle => flow.idle = false,
            }
            if acking.is_none() && !pending_acks.is_empty() {
                let rows = std::mem::take(&mut pending_acks);
                let outbox = self.outbox.clone();
                acking = Some(crate::sink::spawn_round_trip(async move {
                    let result = outbox.ack(rows.clone()).await;
                    (rows, result)
                }));
            }
            self.pump(
                &client,
                &mut node,
                &mut flow,
                &mut pending_acks,
                &mut deleting,
                window,
            );
            if flow.connected
                && node.is_born()
                && flow.unsent.is_empty()
                && !flow.idle
                && fetching.is_none()
            {
                let outbox = self.outbox.clone();
                let after = flow.cursor;
                fetching = Some(crate::sink::spawn_round_trip(async move {
                    let rows = outbox.fetch(after, BATCH).await;
                    if rows.is_err() {
                        tokio::time::sleep(RETRY).await;
                    }
                    rows
                }));
            }
        }
        abort(&mut fetching);
        self.stop(
            &client,
            &mut events,
            &mut node,
            &mut flow,
            &mut pending_acks,
        )
        .await;
        if let Some(done) = acking.take() {
            self.acked(done.await, &mut deleting);
        }
        if !pending_acks.is_empty() {
            let result = self.outbox.ack(pending_acks.clone()).await;
            self.acked(Ok((pending_acks, result)), &mut deleting);
        }
        self.stats.connected.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Clean stop: the NDEATH (QoS 1) and DISCONNECT, if connected; rows whose DDATA are
    /// written meanwhile are still acked.
    async fn stop(
        &self,
        client: &Client,
        events: &mut conn::Events,
        node: &mut EdgeNode,
        flow: &mut Flow,
        pending_acks: &mut Vec<RowId>,
    ) {
        let Some(death) = node.shutdown(self.clock.now()) else {
            return;
        };
        if !flow.connected {
            return;
        }
        let _queued =
            client.try_publish(death.topic, QoS::AtLeastOnce, death.retain, death.payload);
        let _queued = client.try_disconnect();
        let drain = async {
            // Bounded: what is in flight, the NDEATH, the DISCONNECT, and some pings and acks.
            for _ in 0..flow.inflight.len() + 16 {
                match events.poll().await {
                    Event::OutgoingPublish(_) => {
                        if let Some(Tracked::Row(row)) = flow.inflight.pop_front() {
                            pending_acks.push(row);
                        }
                    }
                    Event::OutgoingDisconnect | Event::Error(_) | Event::TooLarge(_) => break,
                    _ => {}
                }
            }
        };
        if tokio::time::timeout(STOP_DRAIN, drain).await.is_err() {
            warn!("The NDEATH may not have gone out before the stop; the broker sends the will.");
        }
    }

    /// Hands made messages to the client while the window has room, making more from the rows
    /// read while born.
    fn pump(
        &self,
        client: &Client,
        node: &mut EdgeNode,
        flow: &mut Flow,
        pending_acks: &mut Vec<RowId>,
        deleting: &mut BTreeSet<RowId>,
        window: usize,
    ) {
        if !flow.connected {
            return;
        }
        // Bounded: each turn hands over a message or gives the node a row.
        for _ in 0..2 * (window + BATCH) {
            if flow.inflight.len() >= window {
                return;
            }
            if let Some((tracked, m)) = flow.ready.pop_front() {
                let Message {
                    kind,
                    topic,
                    qos,
                    retain,
                    payload,
                } = m;
                match client.try_publish(topic, mqtt_qos(qos), retain, payload) {
                    Ok(()) => {
                        flow.inflight.push_back(tracked);
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                    }
                    // The request channel is full: keep it first in line for the next turn.
                    Err(Some(Returned { topic, payload })) => {
                        flow.ready.push_front((
                            tracked,
                            Message {
                                kind,
                                topic,
                                qos,
                                retain,
                                payload,
                            },
                        ));
                        return;
                    }
                    // Unreached (rumqttc hands back the publish it refused). Sending the next
                    // would leave a gap in `seq`: start over on a new connection.
                    Err(None) => {
                        error!("The MQTT client lost a refused publish; reconnecting to resync.");
                        flow.ready.clear();
                        flow.unsent.clear();
                        let _ignored = client.try_disconnect();
                        return;
                    }
                }
                continue;
            }
            if !node.is_born() {
                return;
            }
            let Some(item) = flow.unsent.pop_front() else {
                return;
            };
            match record::decode_batch(&item.payload) {
                Ok((batch, _seq)) => {
                    let now = self.clock.now();
                    let historical = flow.watermark.is_some_and(|w| item.id <= w);
                    let written = item.topic.starts_with(commands::WRITTEN_STREAM);
                    let mut out = if historical {
                        node.on_historical(&batch, now).into_iter().collect()
                    } else if written {
                        node.on_written(&batch, now).into_iter().collect()
                    } else {
                        node.on_poll(&batch, now)
                    };
                    match out.pop() {
                        // The row is delivered with its (only) message.
                        Some(last) => {
                            for m in out {
                                flow.ready.push_back((Tracked::Untracked, m));
                            }
                            flow.ready.push_back((Tracked::Row(item.id), last));
                        }
                        // Nothing to send (nothing changed): done with it.
                        None => {
                            deleting.insert(item.id);
                            pending_acks.push(item.id);
                        }
                    }
                }
                Err(err) => {
                    error!(row = item.id, error = %err, "Unreadable Sparkplug queue row dropped.");
                    self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                    deleting.insert(item.id);
                    pending_acks.push(item.id);
                }
            }
        }
    }

    /// Reads the newest stored polls into the node before a possible birth, so that the
    /// births declare them; returns the newest row id, the history watermark for that birth.
    async fn prime(&self, node: &mut EdgeNode) -> Option<RowId> {
        let newest = match self.outbox.newest().await {
            Ok(newest) => newest?,
            Err(err) => {
                warn!(error = %err, "Cannot read the Sparkplug queue; the births declare older values.");
                return None;
            }
        };
        // A few polls per device: with polls interleaved, each device's newest is among them.
        let rows = (self.devices.len() * 8).clamp(64, 2048);
        let after = newest - RowId::try_from(rows).unwrap_or(RowId::MAX);
        match self.outbox.fetch((after > 0).then_some(after), rows).await {
            Ok(items) => {
                for item in items.iter().filter(|i| i.id <= newest) {
                    if let Ok((batch, _)) = record::decode_batch(&item.payload) {
                        node.prime(&batch);
                    }
                }
            }
            Err(err) => {
                warn!(error = %err, "Cannot read the Sparkplug queue; the births declare older values.");
            }
        }
        Some(newest)
    }

    /// Whether `topic` is this node's NCMD (`Some(true)`) or the primary host's STATE
    /// (`Some(false)`): the messages that can lead to a birth.
    fn is_ours(&self, topic: &str) -> Option<bool> {
        match Topic::parse(topic).ok()? {
            Topic::State { host_id } if Some(&host_id) == self.node.primary_host_id.as_ref() => {
                Some(false)
            }
            Topic::Edge {
                group_id,
                message_type: MessageType::NCmd,
                edge_node_id,
                ..
            } if group_id == self.node.group_id && edge_node_id == self.node.edge_node_id => {
                Some(true)
            }
            _ => None,
        }
    }

    /// The persisted next bdSeq (0 for a node never connected); retried until it can be read,
    /// since guessing could reuse a bdSeq the broker still holds a will for. `None` if
    /// cancelled meanwhile.
    async fn load_bd_seq(&self, key: &str, cancel: &CancellationToken) -> Option<u8> {
        let mut backoff = Backoff::new(self.plan.reconnect.0, self.plan.reconnect.1);
        loop {
            match self.store.load_state(STATE_SCOPE).await {
                Ok(rows) => {
                    let saved = rows.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                    return Some(match saved {
                        None => 0,
                        Some(text) => parse_bd_seq(text).unwrap_or_else(|| {
                            warn!(key, value = %text, "Saved Sparkplug bdSeq unreadable; starting from 0.");
                            0
                        }),
                    });
                }
                Err(err) => {
                    error!(key, error = %err, "Cannot read the saved Sparkplug bdSeq; retrying before connecting.");
                    tokio::select! {
                        () = cancel.cancelled() => return None,
                        () = tokio::time::sleep(backoff.next()) => {}
                    }
                }
            }
        }
    }

    /// Saves the bdSeq the next connection will use.
    async fn save_bd_seq(&self, key: &str, next: u8) {
        let row = (key.to_owned(), bd_seq_json(next));
        if let Err(err) = self.store.save_state(STATE_SCOPE, vec![row]).await {
            error!(key, error = %err,
                   "Cannot save the Sparkplug bdSeq; a restart may reuse this connection's bdSeq.");
        }
    }

    /// Counts (or logs) the outcome of a background delete.
    fn acked(
        &self,
        done: Result<(Vec<RowId>, Result<(), OutboxError>), tokio::task::JoinError>,
        deleting: &mut BTreeSet<RowId>,
    ) {
        match done {
            Ok((rows, result)) => {
                for row in &rows {
                    deleting.remove(row);
                }
                match result {
                    Ok(()) => {
                        self.stats
                            .acked
                            .fetch_add(rows.len() as u64, Ordering::Relaxed);
                    }
                    // The rows stay and go out again as history: a duplicate, never a loss.
                    Err(err) => {
                        error!(error = %err, "Cannot delete delivered rows; they will be sent again.")
                    }
                }
            }
            Err(err) => {
                // The rows are unknown now; forget them all so that nothing is skipped for ever.
                deleting.clear();
                error!(error = %err, "The queue delete task failed; the rows will be sent again.");
            }
        }
    }
}

/// Queues what the node made; an NBIRTH starts a birth, whose history is the rows up to
/// `watermark`.
fn take(flow: &mut Flow, out: Vec<Message>, watermark: Option<RowId>) {
    for m in out {
        if m.kind == MessageType::NBirth {
            info!(history_until_row = ?watermark,
                  "Sparkplug node born; polls stored before now follow as history.");
            flow.watermark = watermark;
            flow.idle = false;
        }
        flow.ready.push_back((Tracked::Untracked, m));
    }
}

/// Logs a command the node had nothing to do for, at most once a minute per kind with the
/// count of those left out: a host (or anyone) may send them by the thousand.
fn log_ignored(topic: &str, ours: Option<bool>, limit: &RepeatLimit, now: std::time::Instant) {
    let kind = match Topic::parse(topic) {
        Ok(Topic::Edge {
            message_type: MessageType::DCmd,
            ..
        }) => "dcmd",
        Ok(Topic::Edge {
            message_type: MessageType::NCmd,
            ..
        }) if ours == Some(true) => "ncmd",
        _ => {
            debug!(topic = %peer_text(topic), "Sparkplug message needs no action.");
            return;
        }
    };
    let Some(left_out) = limit.admit(kind, now) else {
        return;
    };
    let topic = peer_text(topic);
    if kind == "dcmd" {
        info!(topic = %topic, left_out,
            "Sparkplug device command ignored: it is not for this node, or this sink takes no \
             commands.");
    } else {
        info!(topic = %topic, left_out,
            "Sparkplug node command ignored: only Node Control/Rebirth is handled, only while born, \
             and at most once in 5 s.");
    }
}

fn mqtt_qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

fn to_will(m: Message) -> Will {
    Will {
        topic: m.topic,
        payload: m.payload,
        qos: mqtt_qos(m.qos),
        retain: m.retain,
    }
}

/// The saved form of the next bdSeq.
fn bd_seq_json(next: u8) -> String {
    serde_json::json!({ "next_bd_seq": next }).to_string()
}

/// The next bdSeq from its saved form.
fn parse_bd_seq(text: &str) -> Option<u8> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    u8::try_from(value.get("next_bd_seq")?.as_u64()?).ok()
}

/// Stops a background read, if any.
fn abort(slot: &mut Option<Fetching>) {
    if let Some(handle) = slot.take() {
        handle.abort();
    }
}

/// Awaits the task in `slot`; never resolves when there is none.
async fn join<T>(slot: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match slot.as_mut() {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn item(id: RowId) -> OutboxItem {
        OutboxItem {
            id,
            topic: "d".into(),
            created: Timestamp(0),
            payload: Vec::new(),
        }
    }

    fn message() -> Message {
        Message {
            kind: MessageType::DData,
            topic: "t".into(),
            qos: Qos::AtMostOnce,
            retain: false,
            payload: Vec::new(),
        }
    }

    #[test]
    fn the_bd_seq_round_trips_through_its_saved_form() {
        for n in [0, 1, 255] {
            assert_eq!(parse_bd_seq(&bd_seq_json(n)), Some(n));
        }
        assert_eq!(parse_bd_seq("{\"next_bd_seq\":256}"), None);
        assert_eq!(parse_bd_seq("7"), None);
        assert_eq!(parse_bd_seq("not json"), None);
    }

    #[test]
    fn a_closed_gate_rereads_from_the_first_row_not_yet_written() {
        let mut flow = Flow {
            connected: true,
            cursor: Some(20),
            watermark: Some(9),
            idle: true,
            ..Flow::default()
        };
        flow.inflight
            .extend([Tracked::Untracked, Tracked::Row(12), Tracked::Row(13)]);
        flow.ready.push_back((Tracked::Row(14), message()));
        flow.unsent.extend([item(15), item(16)]);
        flow.gate_closed();
        assert_eq!(flow.cursor, Some(11));
        assert_eq!(
            flow.inflight,
            [Tracked::Untracked; 3],
            "events still line up, rows are not acked"
        );
        assert!(flow.ready.is_empty() && flow.unsent.is_empty());
        assert_eq!(
            (flow.watermark, flow.idle, flow.connected),
            (None, false, true)
        );

        // Nothing outstanding: the cursor stays.
        let mut flow = Flow {
            cursor: Some(20),
            ..Flow::default()
        };
        flow.gate_closed();
        assert_eq!(flow.cursor, Some(20));
    }

    #[test]
    fn a_birth_sets_the_history_watermark() {
        let mut flow = Flow {
            idle: true,
            ..Flow::default()
        };
        let nbirth = Message {
            kind: MessageType::NBirth,
            ..message()
        };
        take(&mut flow, vec![message()], Some(3));
        assert_eq!((flow.watermark, flow.idle), (None, true));
        take(&mut flow, vec![nbirth, message()], Some(3));
        assert_eq!((flow.watermark, flow.idle), (Some(3), false));
        assert_eq!(flow.ready.len(), 3);
    }
}
