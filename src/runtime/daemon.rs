//! `plantwatch run`: the daemon. Wires acquire → core → outbox → MQTT with bounded channels,
//! and owns the lifecycle: readiness, watchdog, reload on SIGHUP, drain on SIGTERM.
//!
//! Invariants:
//! - polling never waits on the network: the core writes to the local outbox only, and the
//!   MQTT session reads from it on its own schedule;
//! - a sample is "acknowledged to the outbox" when its group commit returned, and only then is
//!   the MQTT session woken for it;
//! - a rejected reload leaves everything running as it was.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify as Wake, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::commands;
use super::metrics::{AlarmGauges, InfluxStats, OutboxGauges, Sources};
use super::signals::{Signal, Signals};
use super::systemd::{self, Heartbeats, Notify};
use crate::acquire::{AcquireStats, spawn_links};
use crate::clock::Clock;
use crate::config::daemon::{DEFAULT_SINK_NAME, Format};
use crate::config::{ConfigErrors, EnvOverrides, Plan};
use crate::detect::{AlarmEvent, AlarmStatus, Engine};
use crate::encode::json_v1;
use crate::model::{DeviceId, SampleBatch, Timestamp};
use crate::platform::record::local_datetime;
use crate::platform::{Record, Recorder, RecorderState, Versions, close_due};
use crate::process::ledger::{Ledger, LedgerInterval};
use crate::process::report::Reporter;
use crate::sink::influx::{InfluxHandle, InfluxSink};
use crate::sink::mqtt::inflight::RowId;
use crate::sink::mqtt::{
    DOWNLINK_QUEUE, Downlink, MqttStats, Outbox, OutboxError, OutboxItem, Rendered, Session,
};
use crate::sink::platform_queue::{PlatformQueue, PlatformUploadStats};
use crate::sink::sparkplug::SparkplugSink;
use crate::sink::webhook::{Notification, Notifier, NotifierHandle, WebhookConfig, WebhookStats};
use crate::sparkplug::DeviceSpec;
use crate::store::{
    AlarmRow, DEFAULT_QUEUE, OutboxLimits, OutboxMessage, OutboxRow, QueueId, Span, StoreError,
    StoreHandle, record,
};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The state file could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics address could not be bound.
    #[error("metrics: cannot listen on {addr}: {error}")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Where the daemon's configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, re-read on SIGHUP.
    File(PathBuf),
    /// A plan built in-process (the demo); SIGHUP keeps it.
    Fixed(Box<Plan>),
}

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration.
    pub config: ConfigSource,
    /// Extra profiles directory from the command line.
    pub profiles_dir: Option<PathBuf>,
    /// Loopback address for `/metrics`; `None` disables it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Longest drain on SIGTERM.
    pub shutdown_grace: Duration,
    /// Stops the daemon like SIGTERM does (for in-process use); `None` for signals only.
    pub stop: Option<CancellationToken>,
}

/// One outbox queue as an MQTT session sees it: stored rows, rendered when sent to JSON v1,
/// or to the platform's body for an `energy_platform` sink.
#[derive(Debug, Clone)]
pub struct StoreOutbox {
    /// The state file.
    pub store: StoreHandle,
    /// The sink's queue in it.
    pub queue: QueueId,
    /// Set for an `energy_platform` sink: its rows are platform records, sent as the
    /// platform's JSON body rather than the JSON profile.
    pub platform: Option<PlatformRender>,
}

/// What an `energy_platform` MQTT sink adds to a stored record when it sends it.
#[derive(Clone)]
pub struct PlatformRender {
    /// `regVersion` and `dicVersion` from `[energy_platform]`.
    pub versions: Versions,
    /// The zone of `uploadDate`.
    pub timezone: chrono_tz::Tz,
    /// The clock `uploadDate` is read from.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PlatformRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformRender")
            .field("versions", &self.versions)
            .field("timezone", &self.timezone)
            .finish_non_exhaustive()
    }
}

impl StoreOutbox {
    /// The default queue (`mqtt`) in the JSON profile: what a single-sink gateway always used.
    pub fn default_queue(store: StoreHandle) -> Self {
        Self {
            store,
            queue: DEFAULT_QUEUE,
            platform: None,
        }
    }
}

impl Outbox for StoreOutbox {
    async fn fetch(
        &self,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, OutboxError> {
        let rows = self
            .store
            .fetch_in(self.queue, after, limit)
            .await
            .map_err(|e| OutboxError(e.to_string()))?;
        Ok(rows.into_iter().map(item).collect())
    }

    async fn fetch_both(
        &self,
        live: Option<RowId>,
        backlog: Option<(Option<RowId>, RowId)>,
        limit: usize,
    ) -> Result<(Vec<OutboxItem>, Vec<OutboxItem>), OutboxError> {
        let mut spans = vec![Span {
            queue: self.queue,
            after: live,
            until: None,
            limit,
        }];
        if let Some((after, until)) = backlog {
            spans.push(Span {
                queue: self.queue,
                after,
                until: Some(until),
                limit,
            });
        }
        let mut rows = self
            .store
            .fetch_spans(spans)
            .await
            .map_err(|e| OutboxError(e.to_string()))?
            .into_iter()
            .map(|span| span.into_iter().map(item).collect::<Vec<_>>());
        let live = rows.next().unwrap_or_default();
        let backlog = rows.next().unwrap_or_default();
        Ok((live, backlog))
    }

    async fn ack(&self, rows: Vec<RowId>) -> Result<(), OutboxError> {
        self.store
            .ack_in(self.queue, rows)
            .await
            .map(|_| ())
            .map_err(|e| OutboxError(e.to_string()))
    }

    async fn newest(&self) -> Result<Option<RowId>, OutboxError> {
        self.store
            .newest_in(self.queue)
            .await
            .map_err(|e| OutboxError(e.to_string()))
    }

    fn render(&self, item: &OutboxItem, backfill: bool) -> Option<Rendered> {
        if let Some(p) = &self.platform {
            // The platform de-duplicates by the record's key, so a resend needs no flag.
            let record = crate::platform::outbox::decode(&item.payload).ok()?;
            let uploaded = local_datetime(p.timezone, p.clock.now().0)?;
            return Some(Rendered {
                payload: serde_json::to_vec(&record.payload(&p.versions, uploaded)).ok()?,
                retain: false,
            });
        }
        if let Some((wire, retain)) = record::decode_wire(&item.payload) {
            return Some(Rendered {
                payload: json_v1::mark_backfill(wire, backfill),
                retain,
            });
        }
        let stored = record::read_batch(&item.payload).ok()?;
        Some(Rendered {
            payload: json_v1::telemetry_of(
                stored.device,
                stored.tick,
                &stored.samples,
                stored.seq,
                backfill,
            ),
            retain: false,
        })
    }
}

fn item(r: OutboxRow) -> OutboxItem {
    OutboxItem {
        id: r.id,
        topic: r.stream,
        created: Timestamp(r.created_ms),
        payload: r.payload,
    }
}

/// A sink's outbox queue as the core fills it.
#[derive(Debug, Clone)]
struct SinkQueue {
    /// The sink's name (`mqtt.name`).
    name: String,
    /// Its queue in the store.
    queue: QueueId,
    /// What it publishes.
    format: Format,
    /// Woken when rows are added to the queue.
    wake: Arc<Wake>,
}

impl SinkQueue {
    /// The seq key of `key` in this queue: the default queue keeps the bare keys it always
    /// had; every other queue counts its own.
    fn seq_key(&self, key: &str) -> String {
        if self.queue == DEFAULT_QUEUE {
            key.to_owned()
        } else {
            format!("{}:{key}", self.name)
        }
    }
}

/// A JSON-profile message before it is copied into each JSON sink's queue with that queue's
/// seq.
struct Draft {
    /// Topic below the prefix.
    stream: String,
    /// Sequence key.
    key: String,
    /// What is stored.
    body: DraftBody,
    /// Only for the sink that received the command it answers; `None` for every sink of
    /// `format`.
    only: Option<String>,
    /// The sinks it is for: JSON-profile messages, or energy-platform records.
    format: Format,
}

/// The stored form of a [`Draft`].
enum DraftBody {
    /// A poll, encoded with its seq per queue.
    Batch(SampleBatch),
    /// Wire bytes, already in `record::encode_wire` form.
    Wire(Vec<u8>),
}

impl Draft {
    fn wire(stream: String, key: String, payload: &[u8], retain: bool) -> Self {
        Self {
            stream,
            key,
            body: DraftBody::Wire(record::encode_wire(payload, retain)),
            only: None,
            format: Format::Json,
        }
    }

    /// An energy-platform record for every `energy_platform` sink and the HTTPS uplink.
    fn platform(r: &Record) -> Self {
        let key = crate::platform::outbox::stream(&r.key.data_code);
        Self {
            stream: key.clone(),
            key,
            body: DraftBody::Wire(crate::platform::outbox::payload(r)),
            only: None,
            format: Format::EnergyPlatform,
        }
    }
}

/// The core stage: detection, reporting policy, sequence numbers, and the outbox write.
struct Core {
    plan: Arc<Plan>,
    /// Each device's index in `plan.devices`: a batch finds its device without a scan, which
    /// was a linear search per batch, devices² compares per tick.
    device_index: HashMap<DeviceId, usize>,
    /// Gets every poll (before the reporting policy): a database is not a metered link.
    influx: Option<InfluxHandle>,
    reporter: Reporter,
    engine: Engine,
    ledger: Ledger,
    notifiers: Vec<NotifierHandle>,
    alarm_gauges: Arc<AlarmGauges>,
    seqs: HashMap<String, u64>,
    store: StoreHandle,
    /// Every sink's queue; when no sink is configured, the default queue alone, so that a
    /// commissioning gateway still keeps what it would send.
    sinks: Vec<SinkQueue>,
    /// Energy-platform records from the ledger, when a sink takes them.
    recorder: Option<Recorder>,
    clock: Arc<dyn Clock>,
}

/// What ends a core's input wait.
enum CoreInput {
    Batch(SampleBatch),
    Downlink(Downlink),
    Tick,
    Closed,
}

impl Core {
    async fn seq(&mut self, key: &str) -> u64 {
        if let Some(next) = self.seqs.get_mut(key) {
            let seq = *next;
            *next += 1;
            return seq;
        }
        // First message of this key in this process: continue where the last run stopped.
        let seq = self.store.next_seq(key).await.unwrap_or(0);
        self.seqs.insert(key.to_owned(), seq + 1);
        seq
    }

    /// Runs until every link has stopped and the batches are drained.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<SampleBatch>,
        mut downlink: mpsc::Receiver<Downlink>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            let input = tokio::select! {
                b = rx.recv() => b.map_or(CoreInput::Closed, CoreInput::Batch),
                Some(d) = downlink.recv() => CoreInput::Downlink(d),
                _ = tick.tick() => CoreInput::Tick,
            };
            match input {
                CoreInput::Batch(first) => self.batches(first, &mut rx).await,
                CoreInput::Downlink(d) => self.downlink(&d).await,
                CoreInput::Tick => {
                    ticks += 1;
                    self.tick().await;
                    let health_s = self.plan.health.interval.as_secs();
                    if health_s > 0 && ticks % health_s == 0 {
                        self.publish_health().await;
                    }
                    // A crash loses at most a minute of running time.
                    if ticks % 60 == 0 {
                        self.save_counters().await;
                    }
                }
                CoreInput::Closed => break,
            }
        }
        self.save_counters().await;
    }

    async fn save_counters(&self) {
        let baselines = self.engine.baseline_states();
        if !baselines.is_empty()
            && let Err(err) = self.store.save_state(BASELINE_SCOPE, baselines).await
        {
            error!(error = %err, "Cannot save the energy baselines.");
        }
        if !self.ledger.is_empty()
            && let Err(err) = self
                .store
                .save_state(LEDGER_SCOPE, self.ledger.states())
                .await
        {
            error!(error = %err, "Cannot save the energy counters.");
        }
        let rows: Vec<(String, String)> = self
            .engine
            .counters()
            .into_iter()
            .filter_map(|(device, c)| Some((device, serde_json::to_string(&c).ok()?)))
            .collect();
        if !rows.is_empty()
            && let Err(err) = self.store.save_state(COUNTERS_SCOPE, rows).await
        {
            error!(error = %err, "Cannot save maintenance counters.");
        }
    }

    /// `{prefix}/health/{device}` for every device, retained.
    async fn publish_health(&mut self) {
        let now = self.clock.now();
        let drafts = self
            .engine
            .health()
            .into_iter()
            .map(|h| {
                let key = format!("health/{}", h.device);
                Draft::wire(key.clone(), key, &json_v1::health(&h, now), true)
            })
            .collect();
        self.store_all(drafts, &[], now).await;
    }

    /// Detects on and stores every batch waiting in `rx`, in one group commit.
    async fn batches(&mut self, first: SampleBatch, rx: &mut mpsc::Receiver<SampleBatch>) {
        let mut batches = vec![first];
        // Drain what queued up while the last commit was running: one commit for all of it.
        while batches.len() < 4096 {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let now = self.clock.now();
        let mut drafts = Vec::with_capacity(batches.len());
        let mut events = Vec::new();
        let mut intervals = Vec::new();
        let mut steps = Vec::new();
        for batch in batches {
            let Some(device) = self
                .device_index
                .get(&batch.device)
                .and_then(|&i| self.plan.devices.get(i))
            else {
                continue;
            };
            if let Some(influx) = &self.influx {
                influx.offer(&batch);
            }
            self.ledger.apply(&batch, &mut intervals, &mut steps);
            self.engine.evaluate(&batch, &mut events);
            // Sparkplug reports by exception itself, from every poll: it gets them before the
            // JSON reporting policy thins them out.
            if self.sinks.iter().any(|s| s.format == Format::SparkplugB) {
                drafts.push(Draft {
                    stream: format!("sparkplug/{}", batch.device),
                    key: batch.device.to_string(),
                    body: DraftBody::Batch(batch.clone()),
                    only: None,
                    format: Format::SparkplugB,
                });
            }
            let Some(batch) = self.reporter.filter(device, batch, now) else {
                continue;
            };
            drafts.push(Draft {
                stream: format!("telemetry/{}", batch.device),
                key: batch.device.to_string(),
                body: DraftBody::Batch(batch),
                only: None,
                format: Format::Json,
            });
        }
        if !intervals.is_empty() || !steps.is_empty() {
            self.engine.energy(&intervals, &steps, &mut events);
        }
        let mut recorded = false;
        if !intervals.is_empty() {
            // `book` awaits the ledger write, which the recorder's period reads must see.
            self.book(&intervals, &mut drafts).await;
            if let Some(recorder) = &mut self.recorder {
                drafts.extend(recorder.record(&intervals).iter().map(Draft::platform));
                recorded = true;
            }
        }
        if self.store_all(drafts, &events, now).await && recorded {
            self.save_recorder().await;
        }
    }

    /// Closed ledger intervals: the energy topic through the outbox, the ledger table, and the
    /// counter states that produced them (so a restart continues from here).
    async fn book(&mut self, intervals: &[LedgerInterval], drafts: &mut Vec<Draft>) {
        for iv in intervals {
            let key = format!("energy/{}", iv.meter);
            drafts.push(Draft::wire(key.clone(), key, &json_v1::energy(iv), false));
        }
        let (saved, states) = tokio::join!(
            self.store.save_intervals(intervals.to_vec()),
            self.store.save_state(LEDGER_SCOPE, self.ledger.states())
        );
        if let Err(err) = saved.and(states) {
            error!(error = %err, intervals = intervals.len(), "Cannot save ledger intervals.");
        }
    }

    /// Outbox messages (and alarm rows) for alarm changes, then one store round for all.
    /// Returns whether everything was stored (the recorder's mark may move past it).
    async fn store_all(
        &mut self,
        mut drafts: Vec<Draft>,
        events: &[AlarmEvent],
        now: Timestamp,
    ) -> bool {
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            let stream = format!("alarm/{}/{}", e.device, e.alarm);
            let key = format!("alarm/{}", e.device);
            let body = json_v1::alarm(e);
            let cleared = e.state == AlarmStatus::Cleared;
            drafts.push(Draft::wire(stream.clone(), key.clone(), &body, !cleared));
            if cleared {
                // The retained state goes away: an empty retained message (DESIGN.md §4).
                drafts.push(Draft::wire(stream, key, b"", true));
            }
            rows.push(AlarmRow {
                device: e.device.clone(),
                alarm: e.alarm.clone(),
                body: (!cleared).then(|| serde_json::to_string(e).unwrap_or_default()),
            });
            log_alarm(e);
            if matches!(e.state, AlarmStatus::Active | AlarmStatus::Cleared) {
                for n in &self.notifiers {
                    n.offer(notification(e, &self.plan));
                }
            }
        }
        if !events.is_empty() {
            self.alarm_gauges
                .changes
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            let mut by_severity = [0u64; 4];
            for a in self.engine.raised() {
                by_severity[a.severity as usize] += 1;
            }
            for (gauge, n) in self.alarm_gauges.raised.iter().zip(by_severity) {
                gauge.store(n, Ordering::Relaxed);
            }
        }
        let messages = self.fan_out(drafts, now).await;
        if messages.is_empty() {
            return true;
        }
        let n = messages.len();
        // Outbox first: a crash between the two re-raises an alarm (a duplicate), never
        // remembers one that was not sent.
        let (stored, saved) = tokio::join!(self.store.enqueue(messages), async {
            if rows.is_empty() {
                Ok(())
            } else {
                self.store.save_alarms(rows).await
            }
        });
        if let Err(err) = saved {
            error!(error = %err, "Cannot save alarm state; a restart may raise these alarms again.");
        }
        match stored {
            Ok(_) => {
                for sink in &self.sinks {
                    sink.wake.notify_one();
                }
                true
            }
            // The samples are lost only if the disk is: log loudly, keep polling.
            Err(err) => {
                error!(messages = n, error = %err, "Cannot store messages in the outbox.");
                false
            }
        }
    }

    /// Copies each draft into the queue of every sink it is for, with that queue's seq.
    async fn fan_out(&mut self, drafts: Vec<Draft>, now: Timestamp) -> Vec<OutboxMessage> {
        // Taken for the loop (`seq` borrows the core mutably) and put back: copying the list
        // for every batch would allocate on the poll path.
        let sinks = std::mem::take(&mut self.sinks);
        let mut messages = Vec::with_capacity(drafts.len());
        for mut d in drafts {
            let (format, only) = (d.format, d.only.take());
            let wanted =
                |s: &&SinkQueue| s.format == format && only.as_ref().is_none_or(|o| *o == s.name);
            let targets = sinks.iter().filter(wanted).count();
            for (i, sink) in sinks.iter().filter(wanted).enumerate() {
                // The last copy takes the draft's buffers: one sink (the usual case) copies
                // nothing.
                let last = i + 1 == targets;
                let key = sink.seq_key(&d.key);
                let seq = self.seq(&key).await;
                let payload = match &mut d.body {
                    DraftBody::Batch(batch) => record::encode_batch(batch, seq),
                    DraftBody::Wire(wire) if last => std::mem::take(wire),
                    DraftBody::Wire(wire) => wire.clone(),
                };
                let stream = if last {
                    std::mem::take(&mut d.stream)
                } else {
                    d.stream.clone()
                };
                messages.push(OutboxMessage {
                    queue: sink.queue,
                    stream,
                    key,
                    seq,
                    created_ms: now.0,
                    payload,
                });
            }
        }
        self.sinks = sinks;
        messages
    }

    async fn downlink(&mut self, d: &Downlink) {
        let now = self.clock.now();
        let mut drafts = Vec::new();
        let (reply, event) = match commands::parse(&d.name, &d.payload) {
            Ok(req) => self.carry_out(&req, now, &mut drafts).await,
            Err(reply) => {
                warn!(command = %d.name, reply = %String::from_utf8_lossy(&reply), "Refused a downlink command.");
                (reply, None)
            }
        };
        let mut answer = Draft::wire(
            format!("cmd/{}/reply", d.name),
            format!("cmd/{}", d.name),
            &reply,
            false,
        );
        // The reply goes back where the command came from.
        answer.only = Some(d.sink.clone());
        drafts.push(answer);
        let events: Vec<AlarmEvent> = event.into_iter().collect();
        self.store_all(drafts, &events, now).await;
    }

    /// Carries out a parsed command: `upload` here (it needs the ledger and the platform
    /// queues), the alarm commands in [`commands::apply`]. Records to send go into `drafts`.
    async fn carry_out(
        &mut self,
        req: &commands::Request,
        now: Timestamp,
        drafts: &mut Vec<Draft>,
    ) -> (Vec<u8>, Option<AlarmEvent>) {
        let commands::Command::Upload {
            from,
            to,
            stat_types,
        } = &req.command
        else {
            return commands::apply(&mut self.engine, req, now.0);
        };
        let queued = match (&self.plan.energy_platform, self.recorder.is_some()) {
            (None, _) => Err("no [energy_platform] section in the configuration".to_owned()),
            (Some(_), false) => Err("no sink takes energy-platform records: add \
                 [energy_platform.https] or an [[mqtt]] sink with format = \"energy_platform\""
                .to_owned()),
            (Some(platform), true) => {
                match crate::platform::records_for_range(
                    self.store.path(),
                    platform,
                    *from,
                    *to,
                    stat_types,
                    now.0,
                )
                .await
                {
                    Ok(records) => {
                        info!(from = %from, to = %to, records = records.len(), "Re-queued energy-platform records on request.");
                        drafts.extend(records.iter().map(Draft::platform));
                        Ok(records.len())
                    }
                    Err(err) => Err(err.to_string()),
                }
            }
        };
        (commands::upload_reply(&req.id, queued), None)
    }

    /// Day, month and year records whose period has closed, then the recorder's mark.
    async fn close_periods(&mut self, now: Timestamp) {
        let Some(recorder) = &mut self.recorder else {
            return;
        };
        let (records, done) = match close_due(recorder, self.store.path(), now.0).await {
            Ok(r) => r,
            Err(err) => {
                error!(error = %err, "Cannot read the ledger to close an energy-platform period; trying again in a second.");
                return;
            }
        };
        for due in &done {
            if let Some(from) = due.skipped_from {
                warn!(from = %from, "Energy-platform periods this old were not closed after the restart; `plantwatch upload` can send them.");
            }
        }
        if done.is_empty() {
            return;
        }
        let drafts = records.iter().map(Draft::platform).collect();
        if self.store_all(drafts, &[], now).await {
            self.save_recorder().await;
        }
    }

    /// Saves the recorder's mark, once what it returned is stored.
    async fn save_recorder(&self) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        if let Err(err) = self
            .store
            .save_state(PLATFORM_SCOPE, recorder.state().to_rows())
            .await
        {
            error!(error = %err, "Cannot save the energy-platform recorder's mark; a restart repeats some records.");
        }
    }

    /// Shelve expiries, and commands left in the state file by `plantwatch alarms`.
    async fn tick(&mut self) {
        let now = self.clock.now();
        let mut events = Vec::new();
        self.engine.tick(now.0, &mut events);
        let commands = self.store.pending_commands().await.unwrap_or_default();
        let mut answers = Vec::with_capacity(commands.len());
        let mut drafts = Vec::new();
        for c in commands {
            let reply = match serde_json::from_str::<QueuedCommand>(&c.body) {
                Ok(q) => match commands::parse(&q.name, q.payload.to_string().as_bytes()) {
                    Ok(req) => {
                        let (reply, event) = self.carry_out(&req, now, &mut drafts).await;
                        events.extend(event);
                        reply
                    }
                    Err(reply) => reply,
                },
                Err(e) => commands::error_reply(
                    &serde_json::Value::Null,
                    &format!("unreadable queued command: {e}"),
                ),
            };
            answers.push((c.id, String::from_utf8_lossy(&reply).into_owned()));
        }
        self.store_all(drafts, &events, now).await;
        self.close_periods(now).await;
        if !answers.is_empty()
            && let Err(err) = self.store.answer_commands(answers).await
        {
            error!(error = %err, "Cannot record command replies.");
        }
    }
}

/// The engine-state scope of the maintenance counters.
const COUNTERS_SCOPE: &str = "maintenance";
/// The engine-state scope of the hour-of-week energy baselines.
const BASELINE_SCOPE: &str = "baselines";
/// The engine-state scope of the energy-platform recorder's mark.
const PLATFORM_SCOPE: &str = crate::platform::live::STATE_SCOPE;
/// The engine-state scope of the energy counters.
const LEDGER_SCOPE: &str = crate::process::ledger::STATE_SCOPE;

/// The maintenance counters saved in the state file.
async fn load_counters(store: &StoreHandle) -> Vec<(String, crate::detect::maintenance::Counters)> {
    match store.load_state(COUNTERS_SCOPE).await {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(device, body)| {
                serde_json::from_str(&body)
                    .map_err(|e| warn!(device = %device, error = %e, "Unreadable saved counters skipped."))
                    .ok()
                    .map(|c| (device, c))
            })
            .collect(),
        Err(err) => {
            error!(error = %err, "Cannot load maintenance counters; they start from zero.");
            Vec::new()
        }
    }
}

/// A command as `plantwatch alarms` queues it in the state file.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct QueuedCommand {
    /// The command name (`ack`, `shelve`, …).
    pub name: String,
    /// Its JSON body, as on the MQTT command topic.
    pub payload: serde_json::Value,
}

fn notification(e: &AlarmEvent, plan: &Plan) -> Notification {
    Notification {
        device: e.device.clone(),
        rule: e.alarm.clone(),
        id: e.id.clone(),
        state: e.state.as_str().to_owned(),
        severity: e.severity,
        message: e.message.clone(),
        value: e.value,
        limit: e.limit,
        ts_ms: e.ts,
        site: plan.gateway.site.to_string(),
        gateway: plan.gateway.id.to_string(),
    }
}

/// Starts a notifier per `[[webhooks]]` entry; one that cannot start is logged and skipped.
fn spawn_notifiers(
    plan: &Plan,
    clock: &Arc<dyn Clock>,
    cancel: &CancellationToken,
) -> (Vec<NotifierHandle>, Vec<(String, Arc<WebhookStats>)>) {
    let mut out = Vec::new();
    let mut stats = Vec::new();
    for w in &plan.webhooks {
        let secret = match w.secret.as_ref().map(|s| s.read_first_line()).transpose() {
            Ok(s) => s,
            Err((source, why)) => {
                error!(webhook = %w.name, source = %source, error = %why, "Webhook secret unreadable; this webhook is off.");
                continue;
            }
        };
        let mut cfg = WebhookConfig::new(w.name.clone(), w.url.clone(), w.format);
        cfg.secret = secret;
        cfg.min_severity = w.min_severity;
        cfg.timeout = w.timeout;
        cfg.max_retries = w.max_retries;
        cfg.rate_per_minute = w.rate_per_minute;
        cfg.digest_after = w.digest_after;
        let c = clock.clone();
        let counters = Arc::new(WebhookStats::default());
        match Notifier::spawn(cfg, counters.clone(), cancel.clone(), move || c.now().0) {
            Ok(h) => {
                out.push(h);
                stats.push((w.name.clone(), counters));
            }
            Err(err) => error!(webhook = %w.name, error = %err, "Webhook cannot start; it is off."),
        }
    }
    (out, stats)
}

fn log_alarm(e: &AlarmEvent) {
    match e.state {
        AlarmStatus::Active => {
            warn!(alarm = %e.id, severity = e.severity.as_str(), "Alarm raised: {}", e.message)
        }
        AlarmStatus::Cleared => info!(alarm = %e.id, "Alarm cleared: {}", e.message),
        state => info!(alarm = %e.id, state = state.as_str(), "Alarm {}.", state.as_str()),
    }
}

/// A running acquisition + core + MQTT generation, replaced as a whole on reload.
struct Generation {
    plan: Arc<Plan>,
    acquire_cancel: CancellationToken,
    tasks: JoinSet<()>,
    mqtt: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
    acquire: AcquireStats,
    mqtt_stats: Vec<(String, Arc<MqttStats>)>,
    /// The HTTPS uplink's counters, when it runs.
    platform_stats: Option<Arc<PlatformUploadStats>>,
    influx: Option<(CancellationToken, InfluxHandle, Duration)>,
    influx_stats: Option<Arc<InfluxStats>>,
    /// Cancels the webhook notifiers once the core (their only user) has stopped.
    notify_cancel: CancellationToken,
    alarm_gauges: Arc<AlarmGauges>,
    webhook_stats: Vec<(String, Arc<WebhookStats>)>,
}

/// The queue (and log name) of the energy platform's HTTPS uplink: the section it is
/// configured in, which no `[[mqtt]]` name can equal (names have no dots).
const HTTPS_SINK: &str = "energy_platform.https";

/// Each sink's outbox queue (opened on first use); the default queue alone when there is no
/// sink. A queue that cannot be opened leaves its sink out, logged.
async fn sink_queues(plan: &Plan, store: &StoreHandle) -> Vec<SinkQueue> {
    if plan.mqtt.is_empty()
        && plan
            .energy_platform
            .as_ref()
            .is_none_or(|p| p.https.is_none())
    {
        warn!("No [mqtt] section: polling and storing only.");
        return vec![SinkQueue {
            name: DEFAULT_SINK_NAME.to_owned(),
            queue: DEFAULT_QUEUE,
            format: Format::Json,
            wake: Arc::new(Wake::new()),
        }];
    }
    let https = plan
        .energy_platform
        .as_ref()
        .filter(|p| p.https.is_some())
        .map(|_| (HTTPS_SINK, Format::EnergyPlatform));
    let mut queues = Vec::with_capacity(plan.mqtt.len() + 1);
    for (name, format) in plan
        .mqtt
        .iter()
        .map(|m| (m.name.as_str(), m.format))
        .chain(https)
    {
        match store.queue(name).await {
            Ok(queue) => queues.push(SinkQueue {
                name: name.to_owned(),
                queue,
                format,
                wake: Arc::new(Wake::new()),
            }),
            Err(err) => {
                error!(sink = %name, error = %err, "Cannot open the sink's outbox queue; the sink does not run.");
            }
        }
    }
    queues
}

/// The energy-platform recorder, resumed from its saved mark, when some sink takes records.
fn recorder(
    plan: &Plan,
    sinks: &[SinkQueue],
    saved: &[(String, String)],
    now: Timestamp,
) -> Option<Recorder> {
    let platform = plan.energy_platform.as_ref()?;
    if !sinks.iter().any(|s| s.format == Format::EnergyPlatform) {
        return None;
    }
    let state = RecorderState::from_rows(saved).unwrap_or_else(|err| {
        error!(error = %err, "Unreadable energy-platform recorder mark; recording from today.");
        RecorderState::default()
    });
    Some(Recorder::new(platform, state, now.0))
}

async fn start_generation(
    plan: Arc<Plan>,
    store: &StoreHandle,
    clock: &Arc<dyn Clock>,
    reporter: Reporter,
    saved: &Saved,
) -> Generation {
    let (tx, rx) = mpsc::channel::<SampleBatch>(1024);
    let (downlink_tx, downlink_rx) = mpsc::channel::<Downlink>(DOWNLINK_QUEUE);
    let acquire_cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let acquire = spawn_links(&plan, &tx, clock, &acquire_cancel, &mut tasks);
    drop(tx);
    let sinks = sink_queues(&plan, store).await;
    let influx_stats = plan
        .influx
        .as_ref()
        .map(|_| Arc::new(InfluxStats::default()));
    let influx_cancel = CancellationToken::new();
    let influx = plan
        .influx
        .clone()
        .zip(influx_stats.clone())
        .and_then(|(p, stats)| {
            let timeout = p.timeout;
            InfluxSink::spawn(
                p,
                &plan.gateway.site,
                &plan.gateway.id,
                stats,
                influx_cancel.clone(),
            )
            .map_err(
                |err| error!(error = %err, "InfluxDB sink cannot start; continuing without it."),
            )
            .ok()
            .map(|h| (influx_cancel.clone(), h, timeout))
        });
    let mut engine = Engine::new(&plan);
    engine.restore(&saved.raised);
    engine.restore_counters(&saved.counters);
    engine.restore_baselines(&saved.baselines);
    let mut ledger = Ledger::new(&plan);
    ledger.restore(&saved.ledger);
    let notify_cancel = CancellationToken::new();
    let (notifiers, webhook_stats) = spawn_notifiers(&plan, clock, &notify_cancel);
    let alarm_gauges = Arc::new(AlarmGauges::default());
    let core = Core {
        plan: plan.clone(),
        device_index: plan
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect(),
        influx: influx.as_ref().map(|(_, h, _)| h.clone()),
        reporter,
        engine,
        ledger,
        notifiers,
        alarm_gauges: alarm_gauges.clone(),
        seqs: HashMap::new(),
        store: store.clone(),
        recorder: recorder(&plan, &sinks, &saved.platform, clock.now()),
        sinks: sinks.clone(),
        clock: clock.clone(),
    };
    // Ends when every link task has dropped its sender and the channel is drained.
    tasks.spawn(core.run(rx, downlink_rx));
    let mut mqtt = Vec::with_capacity(plan.mqtt.len());
    let mut mqtt_stats = Vec::with_capacity(plan.mqtt.len());
    for (m, sink) in plan
        .mqtt
        .iter()
        .filter_map(|m| Some((m, sinks.iter().find(|s| s.name == m.name.as_str())?)))
    {
        let stats = Arc::new(MqttStats::default());
        let cancel = CancellationToken::new();
        let platform = plan
            .energy_platform
            .as_ref()
            .filter(|_| m.format == Format::EnergyPlatform)
            .map(|p| PlatformRender {
                versions: p.versions.clone(),
                timezone: p.timezone,
                clock: clock.clone(),
            });
        let outbox = Arc::new(StoreOutbox {
            store: store.clone(),
            queue: sink.queue,
            platform,
        });
        let c = cancel.clone();
        let name = m.name.clone();
        let handle = match &m.sparkplug {
            Some(node) => {
                let devices = plan.devices.iter().map(DeviceSpec::from_plan).collect();
                let sink = SparkplugSink::new(
                    m.clone(),
                    node.clone(),
                    devices,
                    outbox,
                    sink.wake.clone(),
                    store.clone(),
                    clock.clone(),
                    stats.clone(),
                );
                tokio::spawn(async move {
                    if let Err(err) = sink.run(c).await {
                        error!(sink = %name, error = %err, "Sparkplug sink cannot start; its polls stay in the outbox.");
                    }
                })
            }
            None => {
                let mut session = Session::new(
                    m.clone(),
                    outbox,
                    sink.wake.clone(),
                    clock.clone(),
                    stats.clone(),
                );
                // Commands and their replies are JSON-profile messages: an energy_platform
                // sink's queue holds only records.
                if m.format == Format::Json {
                    session = session.with_downlink(downlink_tx.clone());
                }
                tokio::spawn(async move {
                    if let Err(err) = session.run(c).await {
                        error!(sink = %name, error = %err, "MQTT sink cannot start; its messages stay in the outbox.");
                    }
                })
            }
        };
        mqtt.push((cancel, handle));
        mqtt_stats.push((m.name.to_string(), stats));
    }
    let mut platform_stats = None;
    if let (Some(platform), Some(sink)) = (
        plan.energy_platform.as_ref(),
        sinks.iter().find(|s| s.name == HTTPS_SINK),
    ) {
        let stats = Arc::new(PlatformUploadStats::default());
        let outbox = Arc::new(StoreOutbox {
            store: store.clone(),
            queue: sink.queue,
            platform: None,
        });
        match PlatformQueue::new(
            platform,
            outbox,
            sink.wake.clone(),
            clock.clone(),
            stats.clone(),
        ) {
            Ok(uploader) => {
                let cancel = CancellationToken::new();
                let c = cancel.clone();
                let handle = tokio::spawn(async move {
                    if let Err(err) = uploader.run(c).await {
                        error!(error = %err, "Energy-platform uploader cannot start; its records stay in the outbox.");
                    }
                });
                mqtt.push((cancel, handle));
                platform_stats = Some(stats);
            }
            Err(err) => {
                error!(error = %err, "Energy-platform uploader cannot start; its records stay in the outbox.");
            }
        }
    }
    Generation {
        plan,
        acquire_cancel,
        tasks,
        mqtt,
        acquire,
        mqtt_stats,
        platform_stats,
        influx,
        influx_stats,
        notify_cancel,
        alarm_gauges,
        webhook_stats,
    }
}

impl Generation {
    /// What `/metrics` reads from this generation.
    fn sources(&self, outbox: &Arc<OutboxGauges>) -> Sources {
        Sources {
            acquire: self.acquire.clone(),
            mqtt: self.mqtt_stats.clone(),
            platform: self.platform_stats.clone(),
            outbox: outbox.clone(),
            influx: self.influx_stats.clone(),
            alarms: self.alarm_gauges.clone(),
            webhooks: self.webhook_stats.clone(),
        }
    }

    /// Stops polling, lets the core store what is in flight, then gives MQTT `grace` to send.
    async fn stop(mut self, grace: Duration) {
        self.acquire_cancel.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                grace_ms = grace.as_millis(),
                "Grace period over; stopping with work in flight (it is in the outbox)."
            );
            self.tasks.abort_all();
        }
        if let Some((cancel, handle, timeout)) = self.influx {
            // The core has drained: flush what the InfluxDB queue holds, bounded.
            let stopped = handle.stopped();
            drop(handle);
            cancel.cancel();
            let _flushed = tokio::time::timeout(timeout + Duration::from_secs(1), stopped).await;
        }
        // The core has stopped and dropped its notifier handles, so the notifiers are
        // sending what they hold; give them a moment, then stop them.
        let notify_cancel = self.notify_cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            notify_cancel.cancel();
        });
        for (cancel, _) in &self.mqtt {
            cancel.cancel();
        }
        for (_, handle) in self.mqtt {
            let _finished = tokio::time::timeout(Duration::from_secs(3), handle).await;
        }
    }
}

/// What a new generation starts from: the state the last one (or the last run) saved.
struct Saved {
    raised: Vec<AlarmEvent>,
    counters: Vec<(String, crate::detect::maintenance::Counters)>,
    ledger: Vec<(String, String)>,
    baselines: Vec<(String, String)>,
    platform: Vec<(String, String)>,
}

async fn load_saved(store: &StoreHandle) -> Saved {
    Saved {
        platform: store.load_state(PLATFORM_SCOPE).await.unwrap_or_else(|err| {
            error!(error = %err, "Cannot load the energy-platform recorder's mark; it starts from today.");
            Vec::new()
        }),
        raised: load_raised(store).await,
        counters: load_counters(store).await,
        ledger: store.load_state(LEDGER_SCOPE).await.unwrap_or_else(|err| {
            error!(error = %err, "Cannot load the energy counters; they start afresh.");
            Vec::new()
        }),
        baselines: store
            .load_state(BASELINE_SCOPE)
            .await
            .unwrap_or_else(|err| {
                error!(error = %err, "Cannot load the energy baselines; they learn afresh.");
                Vec::new()
            }),
    }
}

/// The raised alarms saved in the state file; unreadable rows are logged and skipped.
async fn load_raised(store: &StoreHandle) -> Vec<AlarmEvent> {
    match store.load_alarms().await {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|r| {
                let body = r.body?;
                serde_json::from_str(&body)
                    .map_err(|e| warn!(device = %r.device, alarm = %r.alarm, error = %e, "Unreadable saved alarm skipped."))
                    .ok()
            })
            .collect(),
        Err(err) => {
            error!(error = %err, "Cannot load saved alarms; raised alarms may be raised again.");
            Vec::new()
        }
    }
}

fn load(opts: &Options) -> Result<Plan, ConfigErrors> {
    match &opts.config {
        ConfigSource::File(path) => {
            crate::config::load_file(path, &EnvOverrides::Process, opts.profiles_dir.as_deref())
        }
        ConfigSource::Fixed(plan) => Ok((**plan).clone()),
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// [`DaemonError`] when it cannot start; once running, problems are logged and survived.
pub async fn run(opts: Options, clock: Arc<dyn Clock>) -> Result<(), DaemonError> {
    let mut signals = Signals::new().map_err(DaemonError::Signals)?;
    let plan = Arc::new(load(&opts)?);
    let recovery = crate::store::Recovery {
        on_corrupt: plan.store.on_corrupt,
        now_ms: clock.now().millis(),
    };
    let store = crate::store::Store::open_with(
        &plan.store.path,
        OutboxLimits::from(&plan.store),
        recovery,
    )?;
    let gauges = Arc::new(OutboxGauges::default());
    let saved = load_saved(&store).await;
    if !saved.raised.is_empty() {
        info!(
            alarms = saved.raised.len(),
            "Restored raised alarms from the state file."
        );
    }
    let mut generation =
        start_generation(plan.clone(), &store, &clock, Reporter::default(), &saved).await;
    let metrics_cancel = CancellationToken::new();
    let mut sources = generation.sources(&gauges);
    let (sources_tx, sources_rx) = tokio::sync::watch::channel(sources.clone());
    if let Some(addr) = opts.metrics_addr {
        let listener = super::http::bind(addr)
            .await
            .map_err(|error| DaemonError::Metrics {
                addr: addr.to_string(),
                error,
            })?;
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Serving /metrics.");
        tokio::spawn(super::http::serve(
            listener,
            sources_rx,
            clock.clone(),
            metrics_cancel.clone(),
        ));
    }
    info!(devices = plan.devices.len(), links = plan.links.len(), store = %plan.store.path.display(), "plantwatch running.");
    systemd::notify(&[
        Notify::Ready,
        Notify::Status(format!("{} devices", plan.devices.len())),
    ]);
    let watchdog = systemd::watchdog_interval();
    let mut tick = tokio::time::interval(
        watchdog
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5)),
    );
    let mut hearts = Heartbeats::new();
    let mut last_polls = 0u64;
    let mut last_progress = tokio::time::Instant::now();
    let mut second_signal = false;
    let mut store_status: Option<String> = None;
    let stop = opts.stop.clone().unwrap_or_default();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            signal = signals.recv() => match signal {
                Some(Signal::Reload) => {
                    systemd::notify(&[Notify::Reloading]);
                    match load(&opts) {
                        Ok(next) => {
                            if next.store.path != generation.plan.store.path {
                                warn!(old = %generation.plan.store.path.display(), new = %next.store.path.display(),
                                      "store.path changed; it takes effect at the next restart.");
                            }
                            let next = Arc::new(next);
                            // Stop first, so the new core starts from every alarm the old one saved.
                            generation.stop(opts.shutdown_grace).await;
                            let saved = load_saved(&store).await;
                            generation = start_generation(next.clone(), &store, &clock, Reporter::default(), &saved).await;
                            sources = generation.sources(&gauges);
                            let _receivers_gone = sources_tx.send(sources.clone());
                            info!(devices = next.devices.len(), "Configuration reloaded.");
                        }
                        Err(errors) => {
                            for issue in &errors.issues {
                                error!(key = %issue.key, "{}", issue.message);
                            }
                            error!(count = errors.issues.len(), "Reload rejected; the running configuration is unchanged.");
                        }
                    }
                    systemd::notify(&[Notify::Ready]);
                }
                Some(Signal::Terminate | Signal::Interrupt) | None => break,
            },
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                let polls = generation.acquire.total(|s| &s.polls_ok) + generation.acquire.total(|s| &s.polls_failed);
                if polls != last_polls || generation.plan.devices.is_empty() {
                    last_polls = polls;
                    last_progress = now;
                }
                if let Ok(stats) = store.stats().await {
                    gauges.update(&stats);
                    // A store that answers but cannot write is not alive (issue 20).
                    if !stats.health.degraded() {
                        hearts.beat("store", std::time::Instant::now());
                    }
                    store_status = stats.health.status();
                }
                let slowest = generation.plan.devices.iter().map(|d| d.poll_interval.max(d.offline_retry)).max().unwrap_or_default();
                // Feed the watchdog only while polling makes progress and the store answers.
                let alive = now.duration_since(last_progress) <= slowest * 3 + Duration::from_secs(10);
                if watchdog.is_some() && alive && hearts.all_fresh(std::time::Instant::now()).is_ok() {
                    systemd::notify(&[Notify::Watchdog]);
                }
                let connected = generation.mqtt_stats.iter().filter(|(_, m)| m.connected.load(Ordering::Relaxed) == 1).count();
                let brokers = match generation.plan.mqtt.len() {
                    0 => "broker not configured".to_owned(),
                    1 => format!("broker {}", if connected == 1 { "connected" } else { "disconnected" }),
                    n => format!("{connected} of {n} brokers connected"),
                };
                systemd::notify(&[Notify::Status(format!(
                    "{} devices, outbox {} messages, {brokers}{}",
                    generation.plan.devices.len(),
                    gauges.rows.load(Ordering::Relaxed),
                    store_status.as_deref().map(|s| format!(", {s}")).unwrap_or_default(),
                ))]);
                if hearts.is_empty() {
                    hearts.register("store", Duration::from_secs(60), std::time::Instant::now());
                }
            }
        }
    }
    systemd::notify(&[Notify::Stopping]);
    info!("Stopping: draining in-flight samples to the outbox.");
    let draining = generation.stop(opts.shutdown_grace);
    tokio::select! {
        () = draining => info!("Stopped cleanly."),
        signal = signals.recv() => if signal.is_some() { second_signal = true },
    }
    if second_signal {
        warn!("Second signal; exiting now. Everything stored is safe in the outbox.");
    }
    metrics_cancel.cancel();
    // Let the store thread checkpoint and close the file before the process exits.
    let closed = store.closed();
    drop(store);
    if tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .is_err()
    {
        warn!("The store did not close within 10 s; its WAL keeps what was not checkpointed.");
    }
    Ok(())
}
