//! The core task: every poll through the pipeline step, alarm changes and ledger intervals to
//! the outbox with a seq per sink queue, operator commands, and the state a restart resumes
//! from. One task; it owns the pipeline's state.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify as Wake, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::command_auth::{self, Audited, CommandAuth};
use super::commands;
use super::metrics::{AlarmGauges, EnergyEventCounts};
use super::remote_config::{self, Notice, Origin, Push, Target};
use super::remote_write::{Finished, Started, Writes};
use crate::clock::Clock;
use crate::config::Plan;
use crate::config::daemon::Format;
use crate::detect::{AlarmEvent, AlarmStatus};
use crate::encode::json_v1;
use crate::model::{SampleBatch, Timestamp};
use crate::pipeline::{Outputs, Pipeline};
use crate::platform::{Record, Recorder};
use crate::process::ledger::{LedgerEvent, LedgerInterval};
use crate::sink::influx::InfluxHandle;
use crate::sink::mqtt::{Downlink, DroppedCommands};
use crate::sink::webhook::{Notification, NotifierHandle};
use crate::store::platform_source::close_due;
use crate::store::{
    AlarmRow, AuditEntry, DEFAULT_QUEUE, OutboxMessage, QueueId, StoreHandle, record,
};

mod writes;

/// The receiving ends of the core's inputs, handed from one core to the next on a reload.
pub(super) struct Receivers {
    /// Polls from the links.
    pub(super) batches: mpsc::Receiver<SampleBatch>,
    /// Commands from the MQTT sessions.
    pub(super) downlink: mpsc::Receiver<Downlink>,
    /// How config pushes ended, from the daemon.
    pub(super) notices: mpsc::Receiver<Notice>,
}

/// A sink's outbox queue as the core fills it.
#[derive(Debug, Clone)]
pub(super) struct SinkQueue {
    /// The sink's name (`mqtt.name`).
    pub(super) name: String,
    /// Its queue in the store.
    pub(super) queue: QueueId,
    /// What it publishes.
    pub(super) format: Format,
    /// Woken when rows are added to the queue.
    pub(super) wake: Arc<Wake>,
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
            body: DraftBody::Wire(crate::store::record::platform_payload(r)),
            only: None,
            format: Format::EnergyPlatform,
        }
    }
}

/// The core stage: the pipeline step for every poll, sequence numbers, and the outbox write.
pub(super) struct Core {
    pub(super) plan: Arc<Plan>,
    /// Gets every poll (before the reporting policy): a database is not a metered link.
    pub(super) influx: Option<InfluxHandle>,
    /// Process, detect and the reporting policy: the same step `replay` runs.
    pub(super) pipeline: Pipeline,
    /// The pipeline's output for the group of polls in hand, reused from group to group.
    pub(super) out: Outputs,
    pub(super) notifiers: Vec<Arc<NotifierHandle>>,
    pub(super) alarm_gauges: Arc<AlarmGauges>,
    pub(super) energy_events: Arc<EnergyEventCounts>,
    pub(super) seqs: HashMap<String, u64>,
    pub(super) store: StoreHandle,
    /// Every sink's queue; when no sink is configured, the default queue alone, so that a
    /// commissioning gateway still keeps what it would send.
    pub(super) sinks: Vec<SinkQueue>,
    /// Energy-platform records from the ledger, when a sink takes them.
    pub(super) recorder: Option<Recorder>,
    pub(super) clock: Arc<dyn Clock>,
    /// Who may send which downlink command, and the ids seen in the replay window.
    pub(super) auth: CommandAuth,
    /// The `write` commands waiting for their links.
    pub(super) writes: Writes,
    /// Commands the MQTT sessions dropped on a full queue, for the audit trail.
    pub(super) dropped: Arc<DroppedCommands>,
    /// The config file pushes are checked against, and the daemon's end for valid ones.
    pub(super) config_push: Option<(Target, mpsc::Sender<Push>)>,
    /// What this core last saved of each model, so an unchanged one is not written again.
    pub(super) saved_models: SavedModels,
}

/// How long a stopping core waits for the writes in flight (their links are stopping too)
/// before auditing them as interrupted.
const WRITE_DRAIN: Duration = Duration::from_secs(2);

/// What ends a core's input wait.
enum CoreInput {
    Batch(SampleBatch),
    Downlink(Downlink),
    // Boxed: a finished write is several times the size of the other inputs.
    Written(Box<Finished>),
    Notice(Notice),
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

    /// Runs until every link has stopped and the batches are drained, or until `cancel`
    /// (the shutdown's grace period is over).
    /// Hands the receivers back, with what it has not taken, for the next core (a reload).
    pub(super) async fn run(
        mut self,
        receivers: Receivers,
        cancel: CancellationToken,
    ) -> Receivers {
        let Receivers {
            batches: mut rx,
            mut downlink,
            mut notices,
        } = receivers;
        self.publish_schemas().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            let input = tokio::select! {
                () = cancel.cancelled() => CoreInput::Closed,
                b = rx.recv() => b.map_or(CoreInput::Closed, CoreInput::Batch),
                Some(d) = downlink.recv() => CoreInput::Downlink(d),
                Some(n) = notices.recv() => CoreInput::Notice(n),
                Some(w) = self.writes.next(), if !self.writes.is_idle() => CoreInput::Written(Box::new(w)),
                _ = tick.tick() => CoreInput::Tick,
            };
            match input {
                CoreInput::Batch(first) => self.batches(first, &mut rx).await,
                CoreInput::Downlink(d) => self.downlink(&d).await,
                CoreInput::Written(w) => self.finish_write(*w).await,
                CoreInput::Notice(n) => self.config_outcome(n).await,
                CoreInput::Tick => {
                    ticks += 1;
                    self.tick().await;
                    let health_s = self.plan.health.interval.as_secs();
                    if health_s > 0 && ticks % health_s == 0 {
                        self.publish_health().await;
                    }
                    // A crash loses at most a minute of running time and of learning.
                    if ticks % 60 == 0 {
                        self.save_counters().await;
                        self.save_models().await;
                    }
                }
                CoreInput::Closed => break,
            }
        }
        // Every write that was audited as intent gets its outcome row: the links are stopping,
        // so what is in flight ends soon; what does not is audited as interrupted.
        let deadline = tokio::time::Instant::now() + WRITE_DRAIN;
        while !self.writes.is_idle() {
            match tokio::time::timeout_at(deadline, self.writes.next()).await {
                Ok(Some(w)) => self.finish_write(w).await,
                _ => break,
            }
        }
        for w in self.writes.abandon() {
            self.finish_write(w).await;
        }
        self.save_counters().await;
        self.save_models().await;
        Receivers {
            batches: rx,
            downlink,
            notices,
        }
    }

    /// Saves every rule's learned model (anomaly, trend, rate) that changed since this core
    /// last saved it, so a restart resumes with it.
    async fn save_models(&mut self) {
        let rows = self
            .saved_models
            .changed(self.pipeline.engine().model_snapshots());
        if rows.is_empty() {
            return;
        }
        let n = rows.len();
        let marks = SavedModels::marks(&rows);
        match self.store.save_models(rows, self.clock.now().0).await {
            Ok(()) => self.saved_models.remember(marks),
            Err(err) => {
                error!(error = %err, models = n, "Cannot save the learned models; a restart would learn them afresh.");
            }
        }
    }

    async fn save_counters(&self) {
        let baselines = self.pipeline.engine().baseline_states();
        if !baselines.is_empty()
            && let Err(err) = self.store.save_state(BASELINE_SCOPE, baselines).await
        {
            error!(error = %err, "Cannot save the energy baselines.");
        }
        if !self.pipeline.ledger().is_empty()
            && let Err(err) = self
                .store
                .save_state(LEDGER_SCOPE, self.pipeline.ledger().states())
                .await
        {
            error!(error = %err, "Cannot save the energy counters.");
        }
        let rows: Vec<(String, String)> = self
            .pipeline
            .engine()
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

    /// `{prefix}/schema/{device}` for every device, retained, to the compact sinks: at start
    /// and after every reload, so a consumer always holds the schema of what it receives (the
    /// queue sends it before any telemetry stored after it).
    async fn publish_schemas(&mut self) {
        if !self.sinks.iter().any(|s| s.format == Format::JsonCompact) {
            return;
        }
        let now = self.clock.now();
        let drafts = self
            .plan
            .devices
            .iter()
            .map(|d| {
                let key = format!("schema/{}", d.name);
                let mut draft = Draft::wire(
                    key.clone(),
                    key,
                    &crate::sink::mqtt::schema::device_schema(d, now),
                    true,
                );
                draft.format = Format::JsonCompact;
                draft
            })
            .collect();
        self.store_all(drafts, &[], now).await;
    }

    /// `{prefix}/health/{device}` for every device, retained.
    async fn publish_health(&mut self) {
        let now = self.clock.now();
        let drafts = self
            .pipeline
            .engine()
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
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        for batch in batches {
            if let Some(influx) = &self.influx {
                influx.offer(&batch);
            }
            self.pipeline.step(batch, now, &mut out);
        }
        let mut drafts = Vec::with_capacity(out.polls.len() + out.reported.len());
        // Sparkplug reports by exception itself, from every poll: it gets them before the
        // JSON reporting policy thins them out.
        for batch in out.polls.drain(..) {
            drafts.push(Draft {
                stream: format!("sparkplug/{}", batch.device),
                key: batch.device.to_string(),
                body: DraftBody::Batch(batch),
                only: None,
                format: Format::SparkplugB,
            });
        }
        for batch in out.reported.drain(..) {
            drafts.push(Draft {
                stream: format!("telemetry/{}", batch.device),
                key: batch.device.to_string(),
                body: DraftBody::Batch(batch),
                only: None,
                format: Format::Json,
            });
        }
        let events = std::mem::take(&mut out.events);
        let intervals = std::mem::take(&mut out.intervals);
        let energy_events = std::mem::take(&mut out.energy_events);
        self.out = out;
        if !energy_events.is_empty() {
            self.book_events(energy_events).await;
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
            self.store
                .save_state(LEDGER_SCOPE, self.pipeline.ledger().states())
        );
        if let Err(err) = saved.and(states) {
            error!(error = %err, intervals = intervals.len(), "Cannot save ledger intervals.");
        }
    }

    /// Counter wraps, resets, replacements and jumps: the ledger's event table, one WARN each
    /// and `plantwatch_energy_events_total`, so none passes in silence.
    async fn book_events(&mut self, events: Vec<LedgerEvent>) {
        for e in &events {
            warn!(
                meter = %e.meter,
                device = %e.device,
                point = %e.point,
                kind = e.event.kind.as_str(),
                at_ms = e.event.at_ms,
                unattributed = e.event.unattributed,
                unit = %e.unit,
                what = %e.describe(),
                "Energy counter event booked."
            );
            self.energy_events.count(&e.device, &e.point, e.event.kind);
        }
        let n = events.len();
        if let Err(err) = self.store.save_energy_events(events).await {
            error!(error = %err, events = n, "Cannot save energy counter events.");
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
                // The retained state goes away: an empty retained message (docs/design.md §4).
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
            for a in self.pipeline.engine().raised() {
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
            // The samples are lost only if the disk is; keep polling. The store logs a failing
            // disk once when it starts and once when it ends, counts every failed write
            // (plantwatch_store_write_failures_total) and tells systemd: a line per batch here
            // would flood the journal of a gateway whose card is full.
            Err(err) => {
                debug!(messages = n, error = %err, "Cannot store messages in the outbox.");
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
            let wanted = |s: &&SinkQueue| {
                s.format.takes(format) && only.as_ref().is_none_or(|o| *o == s.name)
            };
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
        let sink = self.plan.mqtt.iter().find(|m| m.name.as_str() == d.sink);
        if let Some(node) = sink.and_then(|m| m.sparkplug.as_ref()) {
            let on = node.writes;
            self.sparkplug_write(d, on).await;
            return;
        }
        let now = self.clock.now();
        let mut drafts = Vec::new();
        let prefix = self
            .plan
            .mqtt
            .iter()
            .find(|m| m.name.as_str() == d.sink)
            .map_or("", |m| m.topic_prefix.as_str());
        let mut key = None;
        let mut refused = None;
        let mut seen = None;
        let (reply, event) = if d.retained {
            // Refused whatever it says (see `parse_downlink`), before any signature is checked.
            refused = Some("retained");
            let reply = commands::parse_downlink(&d.name, &d.payload, true)
                .err()
                .unwrap_or_else(|| commands::error_reply(&serde_json::Value::Null, "retained"));
            (command_auth::mark_refused(reply, "retained"), None)
        } else {
            let restored = self.auth.restore(&self.store, now.0).await;
            match restored.map(|()| self.auth.gate.admit(prefix, &d.name, &d.payload, now.0)) {
                Ok(Ok(admitted)) => {
                    key = admitted.key.map(|(id, _role)| id);
                    seen = admitted.seen;
                    match commands::parse(&d.name, &admitted.command) {
                        Ok(commands::Request {
                            id,
                            command:
                                commands::Command::Write {
                                    device,
                                    point,
                                    value,
                                },
                        }) => {
                            let started = Started {
                                id,
                                sink: d.sink.clone(),
                                key: key.clone(),
                                payload: d.payload.clone(),
                                device,
                                point,
                                received: crate::clock::monotonic(),
                                sparkplug: false,
                            };
                            match self.admit_write(&started, &value) {
                                Ok(value) => {
                                    self.start_write(started, value, seen, now).await;
                                    return;
                                }
                                Err((reply, kind)) => {
                                    commands::log_refused(&d.name, &reply);
                                    refused = kind;
                                    (reply, None)
                                }
                            }
                        }
                        Ok(commands::Request {
                            id,
                            command: commands::Command::Config { text },
                        }) => {
                            let origin = Origin {
                                id,
                                sink: d.sink.clone(),
                                key: key.clone(),
                                payload: d.payload.clone(),
                            };
                            let (reply, kind) = self.accept_config(origin, text);
                            if kind.is_some() {
                                commands::log_refused(&d.name, &reply);
                            }
                            refused = kind;
                            (reply, None)
                        }
                        Ok(req) => self.carry_out(&req, now, &mut drafts).await,
                        Err(reply) => {
                            commands::log_refused(&d.name, &reply);
                            (reply, None)
                        }
                    }
                }
                Ok(Err(no)) => {
                    command_auth::log_refusal(&d.name, &no);
                    refused = Some(no.reason.kind());
                    key = no.key.clone();
                    (
                        command_auth::refusal_reply(&no, &d.name, self.auth.gate.window_ms()),
                        None,
                    )
                }
                Err(why) => {
                    refused = Some("unavailable");
                    let reply = commands::error_reply(
                        &serde_json::Value::Null,
                        &format!("refused `{}`: {why}", super::log_limit::peer_text(&d.name)),
                    );
                    (command_auth::mark_refused(reply, "unavailable"), None)
                }
            }
        };
        let audited = Audited {
            now_ms: now.0,
            source: format!("mqtt:{}", d.sink),
            name: &d.name,
            key: key.as_deref(),
            refused,
            outcome: None,
            payload: &d.payload,
            reply: &reply,
        };
        self.audit(&audited, seen, &mut drafts).await;
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

    /// Appends a command's row to the audit trail (with the id it used, for the replay
    /// window) and queues the row for `{prefix}/audit` on every JSON sink; whether it was
    /// committed.
    async fn audit(
        &self,
        audited: &Audited<'_>,
        seen: Option<crate::store::SeenId>,
        drafts: &mut Vec<Draft>,
    ) -> bool {
        self.audit_entry(audited.entry(), seen, drafts).await
    }

    /// [`Core::audit`] of a row built by the caller.
    async fn audit_entry(
        &self,
        entry: AuditEntry,
        seen: Option<crate::store::SeenId>,
        drafts: &mut Vec<Draft>,
    ) -> bool {
        let oldest = entry.ts_ms - self.auth.gate.window_ms();
        let command = super::log_limit::peer_text(&entry.command);
        match self.store.audit(entry, seen, oldest).await {
            Ok((row, prev)) => {
                drafts.push(Draft::wire(
                    "audit".into(),
                    "audit".into(),
                    &row.message(&prev),
                    false,
                ));
                true
            }
            Err(err) => {
                error!(error = %err, command = %command, "Cannot append a command to the audit trail.");
                false
            }
        }
    }

    /// Checks a signed `config` push against the resolver and hands a valid one to the
    /// daemon: the reply (`accepted`, or every problem) and its refusal kind.
    fn accept_config(&self, origin: Origin, text: String) -> (Vec<u8>, Option<&'static str>) {
        let id = origin.id.clone();
        let refuse = |kind: &'static str, why: &str| {
            let reply = commands::error_reply(&id, &format!("refused `config`: {why}"));
            (command_auth::mark_refused(reply, kind), Some(kind))
        };
        let Some((target, daemon)) = &self.config_push else {
            return refuse(
                "unavailable",
                "this gateway runs an embedded configuration, not a file",
            );
        };
        if let Err(issues) = remote_config::validate(target, &text) {
            return (remote_config::invalid_reply(&id, &issues), Some("invalid"));
        }
        let hash = crate::store::audit::sha256_hex(text.as_bytes());
        let window_s = self.plan.commands.config_health_window.as_secs();
        let push = Push {
            text,
            hash: hash.clone(),
            origin,
        };
        if daemon.try_send(push).is_err() {
            return refuse(
                "busy",
                "another configuration is being applied; send it again later",
            );
        }
        info!(hash = %hash, "Accepted a pushed configuration; applying it.");
        let reply = serde_json::json!({"v": 1, "id": id, "ok": true, "accepted": true,
            "hash": hash, "health_window_s": window_s});
        (reply.to_string().into_bytes(), None)
    }

    /// Audits and answers how a config push ended.
    async fn config_outcome(&mut self, notice: Notice) {
        let now = self.clock.now();
        let mut drafts = Vec::new();
        let origin = &notice.origin;
        let audited = Audited {
            now_ms: now.0,
            source: format!("mqtt:{}", origin.sink),
            name: "config",
            key: origin.key.as_deref(),
            refused: None,
            outcome: notice.reason.map(|_| "failed"),
            payload: &origin.payload,
            reply: &notice.reply,
        };
        self.audit(&audited, None, &mut drafts).await;
        let mut answer = Draft::wire(
            "cmd/config/reply".into(),
            "cmd/config".into(),
            &notice.reply,
            false,
        );
        answer.only = Some(origin.sink.clone());
        drafts.push(answer);
        self.store_all(drafts, &[], now).await;
    }

    /// One audit row per command an MQTT session dropped on a full queue (never looked at,
    /// never answered), and one for those beyond what the sessions could hold.
    async fn audit_dropped(&mut self, now: Timestamp) {
        let (held, beyond) = self.dropped.take();
        if held.is_empty() && beyond == 0 {
            return;
        }
        let mut drafts = Vec::new();
        for d in held {
            let entry = AuditEntry {
                ts_ms: now.0,
                source: format!("mqtt:{}", d.sink),
                command: d.name,
                key: None,
                id: None,
                outcome: "dropped".into(),
                reason: Some("queue_full".into()),
                reply: String::new(),
                payload_bytes: d.bytes,
                payload_sha256: d.sha256,
            };
            self.audit_entry(entry, None, &mut drafts).await;
        }
        if beyond > 0 {
            let entry = AuditEntry {
                ts_ms: now.0,
                source: "mqtt".into(),
                command: "*".into(),
                key: None,
                id: None,
                outcome: "dropped".into(),
                reason: Some("queue_full".into()),
                reply: format!(
                    "{beyond} more commands dropped on a full queue, not held one by one"
                ),
                payload_bytes: 0,
                payload_sha256: String::new(),
            };
            self.audit_entry(entry, None, &mut drafts).await;
        }
        self.store_all(drafts, &[], now).await;
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
            return commands::apply(self.pipeline.engine_mut(), req, now.0);
        };
        let queued = match (&self.plan.energy_platform, self.recorder.is_some()) {
            (None, _) => Err("no [energy_platform] section in the configuration".to_owned()),
            (Some(_), false) => Err("no sink takes energy-platform records: add \
                 [energy_platform.https] or an [[mqtt]] sink with format = \"energy_platform\""
                .to_owned()),
            (Some(platform), true) => {
                match crate::store::platform_source::records_for_range(
                    self.store.path(),
                    &platform.spec,
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

    /// Shelve expiries, commands left in the state file by `plantwatch alarms`, and the
    /// audit rows of commands dropped on a full queue.
    async fn tick(&mut self) {
        let now = self.clock.now();
        self.audit_dropped(now).await;
        let mut events = Vec::new();
        self.pipeline.advance(now.0, &mut events);
        let commands = self.store.pending_commands().await.unwrap_or_default();
        let mut answers = Vec::with_capacity(commands.len());
        let mut drafts = Vec::new();
        for c in commands {
            let (name, reply) = match serde_json::from_str::<QueuedCommand>(&c.body) {
                Ok(q) => match commands::parse(&q.name, q.payload.to_string().as_bytes()) {
                    Ok(req) => {
                        let (reply, event) = self.carry_out(&req, now, &mut drafts).await;
                        events.extend(event);
                        (q.name, reply)
                    }
                    Err(reply) => (q.name, reply),
                },
                Err(e) => (
                    String::new(),
                    commands::error_reply(
                        &serde_json::Value::Null,
                        &format!("unreadable queued command: {e}"),
                    ),
                ),
            };
            // `plantwatch alarms` needs write access to the state file, so it is not signed;
            // it is audited like the downlink.
            let audited = Audited {
                now_ms: now.0,
                source: "local".into(),
                name: &name,
                key: None,
                refused: None,
                outcome: None,
                payload: c.body.as_bytes(),
                reply: &reply,
            };
            self.audit(&audited, None, &mut drafts).await;
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
fn log_alarm(e: &AlarmEvent) {
    match e.state {
        AlarmStatus::Active => {
            warn!(alarm = %e.id, severity = e.severity.as_str(), "Alarm raised: {}", e.message)
        }
        AlarmStatus::Cleared => info!(alarm = %e.id, "Alarm cleared: {}", e.message),
        state => info!(alarm = %e.id, state = state.as_str(), "Alarm {}.", state.as_str()),
    }
}

/// What a new generation starts from: the state the last one (or the last run) saved.
pub(super) struct Saved {
    pub(super) raised: Vec<AlarmEvent>,
    pub(super) counters: Vec<(String, crate::detect::maintenance::Counters)>,
    pub(super) ledger: Vec<(String, String)>,
    pub(super) baselines: Vec<(String, String)>,
    pub(super) platform: Vec<(String, String)>,
    pub(super) models: Vec<crate::detect::snapshot::ModelSnapshot>,
}

pub(super) async fn load_saved(store: &StoreHandle) -> Saved {
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
        models: store.load_models().await.unwrap_or_else(|err| {
            error!(error = %err, "Cannot load the learned models; every rule learns afresh.");
            Vec::new()
        }),
    }
}

/// Logs what became of the saved models at a start or reload: the rules that resume, those
/// that learn afresh because they changed, and (WARN) the snapshots that could not be read.
pub(super) fn log_restored(outcomes: &[crate::detect::snapshot::RestoreOutcome]) {
    use crate::detect::snapshot::Restored;
    let mut resumed = 0usize;
    for o in outcomes {
        match &o.restored {
            Restored::Resumed => resumed += 1,
            Restored::Changed => info!(
                device = %o.device,
                alarm = %o.alarm,
                "Rule changed since its model was saved; it learns afresh."
            ),
            Restored::Unreadable(why) => warn!(
                device = %o.device,
                alarm = %o.alarm,
                error = %why,
                "Saved model of the rule cannot be read; it learns afresh."
            ),
            Restored::NoRule => debug!(
                device = %o.device,
                alarm = %o.alarm,
                "Saved model of a rule no longer configured left unused."
            ),
        }
    }
    if resumed > 0 {
        info!(
            models = resumed,
            "Resumed trained models from the state file."
        );
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

/// A hash of each model as this core last saved it, keyed by device and alarm. A device that
/// stopped answering leaves its models unchanged, and a minute's save would rewrite them for
/// nothing; only the process's own memory is compared, so a new core (a reload) saves all once.
#[derive(Debug, Default)]
pub(super) struct SavedModels(HashMap<(String, String), u64>);

impl SavedModels {
    /// The snapshots that differ from what was last saved under their rule.
    fn changed(
        &self,
        rows: Vec<crate::detect::snapshot::ModelSnapshot>,
    ) -> Vec<crate::detect::snapshot::ModelSnapshot> {
        rows.into_iter()
            .filter(|r| self.0.get(&(r.device.clone(), r.alarm.clone())) != Some(&Self::hash(r)))
            .collect()
    }

    /// The marks to [`remember`](Self::remember) once `rows` are saved.
    fn marks(rows: &[crate::detect::snapshot::ModelSnapshot]) -> Vec<((String, String), u64)> {
        rows.iter()
            .map(|r| ((r.device.clone(), r.alarm.clone()), Self::hash(r)))
            .collect()
    }

    fn remember(&mut self, marks: Vec<((String, String), u64)>) {
        self.0.extend(marks);
    }

    fn hash(r: &crate::detect::snapshot::ModelSnapshot) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&r.fingerprint, r.version, &r.body).hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::SavedModels;
    use crate::detect::snapshot::ModelSnapshot;

    fn row(alarm: &str, body: &str) -> ModelSnapshot {
        ModelSnapshot {
            device: "pump".into(),
            alarm: alarm.into(),
            fingerprint: "00000000000000ab".into(),
            version: 1,
            body: body.into(),
        }
    }

    #[test]
    fn only_models_that_changed_since_the_last_save_are_saved_again() {
        let mut saved = SavedModels::default();
        let first = saved.changed(vec![row("odd", "{\"n\":1}"), row("trend", "{\"n\":5}")]);
        assert_eq!(first.len(), 2, "nothing saved yet: all of them");
        saved.remember(SavedModels::marks(&first));
        let again = saved.changed(vec![row("odd", "{\"n\":2}"), row("trend", "{\"n\":5}")]);
        assert_eq!(
            again,
            vec![row("odd", "{\"n\":2}")],
            "the unchanged trend is skipped"
        );
        // Not remembered (the save failed): the same rows are offered again next time.
        let retry = saved.changed(vec![row("odd", "{\"n\":2}")]);
        assert_eq!(retry.len(), 1);
    }
}
