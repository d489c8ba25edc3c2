//! The daemon's topology: which tasks run for a plan (links, core, sinks, notifiers, InfluxDB),
//! how they are wired with channels, started under supervisors, changed on reload and stopped
//! in order.
//!
//! Invariants:
//! - the channels between the links, the core and the MQTT sessions outlive a reload: a part
//!   whose configuration did not change keeps running, with its end of them, and so keeps its
//!   connections (an edited webhook does not reconnect MQTT; a new device does not restart
//!   the other links);
//! - the core is restarted on every reload (it holds no connection) from the state the old
//!   one saved, and takes over the batches the old one left in the channel: nothing polled is
//!   lost;
//! - shutdown stops the parts in order, each within its bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify as Wake, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::core_task::{Core, Receivers, Saved, SinkQueue, load_saved};
use super::metrics::{AlarmGauges, EnergyEventCounts, InfluxStats, OutboxGauges, Sources};
use super::outbox::{PlatformRender, StoreOutbox};
use super::remote_config;
use super::supervisor::{Restarts, Supervisor};
use crate::acquire::write::WriteHandle;
use crate::acquire::{AcquireStats, link_task_with_writes};
use crate::clock::Clock;
use crate::config::Plan;
use crate::config::daemon::{DEFAULT_SINK_NAME, Format, Mqtt};
use crate::config::influx::Influx;
use crate::config::plan::{Device, Link};
use crate::config::platform::EnergyPlatform;
use crate::config::webhooks::Webhook;
use crate::model::{SampleBatch, Timestamp};
use crate::pipeline::{Outputs, Pipeline, Taps};
use crate::platform::{Recorder, RecorderState};
use crate::sink::influx::{InfluxHandle, InfluxSink};
use crate::sink::mqtt::{DOWNLINK_QUEUE, Downlink, DroppedCommands, MqttStats, Session};
use crate::sink::platform_queue::{PlatformQueue, PlatformUploadStats};
use crate::sink::sparkplug::SparkplugSink;
use crate::sink::webhook::{Notifier, NotifierHandle, WebhookConfig, WebhookStats};
use crate::sparkplug::DeviceSpec;
use crate::store::{DEFAULT_QUEUE, StoreHandle};

/// The queue (and log name) of the energy platform's HTTPS uplink: the section it is
/// configured in, which no `[[mqtt]]` name can equal (names have no dots).
const HTTPS_SINK: &str = "energy_platform.https";

/// The first and the longest wait before a failed sink is started again.
const SINK_RESTART: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// How long the webhook notifiers may take to send what they hold when they stop.
const NOTIFIER_DRAIN: Duration = Duration::from_secs(5);

/// How long a sink may take to stop once cancelled.
const SINK_STOP: Duration = Duration::from_secs(3);

/// Batches waiting for the core: a second of 1000 devices.
const BATCH_QUEUE: usize = 1024;

/// One link's task, and the settings it runs with.
struct LinkPart {
    /// The link and its devices, as the task was started with them.
    key: (Link, Vec<Device>),
    tasks: Supervisor,
    stats: AcquireStats,
}

/// What makes a sink's task: it is restarted on reload only when this changes.
#[derive(Debug, Clone, PartialEq)]
enum SinkKey {
    /// An `[[mqtt]]` sink; its devices for Sparkplug (births name them), the platform section
    /// for an `energy_platform` one.
    Mqtt {
        mqtt: Box<Mqtt>,
        devices: Option<Vec<Device>>,
        platform: Option<Box<EnergyPlatform>>,
    },
    /// The energy platform's HTTPS uplink.
    Uplink(Box<EnergyPlatform>),
}

/// One sink's task.
struct SinkPart {
    name: String,
    key: SinkKey,
    tasks: Supervisor,
    restarts: Arc<Restarts>,
    stats: SinkStats,
}

/// A sink's counters for `/metrics`.
#[derive(Clone)]
enum SinkStats {
    Mqtt(Arc<MqttStats>),
    Uplink(Arc<PlatformUploadStats>),
}

/// One webhook's notifier. The core holds a clone of `handle`; the notifier ends once every
/// clone is gone and it has sent what it holds.
struct NotifierPart {
    key: Webhook,
    handle: Arc<NotifierHandle>,
    tasks: Supervisor,
    stats: Arc<WebhookStats>,
}

/// The InfluxDB writer.
struct InfluxPart {
    key: (Influx, String, String),
    cancel: CancellationToken,
    handle: InfluxHandle,
    timeout: Duration,
    stats: Arc<InfluxStats>,
}

/// The core task, and where it hands its receivers back when it stops.
struct CorePart {
    tasks: Supervisor,
    handback: oneshot::Receiver<Receivers>,
}

/// Everything running for one plan.
pub(super) struct Generation {
    /// The plan it runs.
    pub(super) plan: Arc<Plan>,
    /// The links' end of the batch channel, for links started on a reload.
    batches: mpsc::Sender<SampleBatch>,
    /// The sessions' end of the downlink channel, for sessions started on a reload.
    downlink: mpsc::Sender<Downlink>,
    /// Where the daemon tells the core how a config push ended.
    notices: mpsc::Sender<remote_config::Notice>,
    /// The write routes and the dropped commands, for the daemon's life.
    remote: Remote,
    links: Vec<LinkPart>,
    core: CorePart,
    sinks: Vec<SinkPart>,
    notifiers: Vec<NotifierPart>,
    influx: Option<InfluxPart>,
    /// Each sink's outbox queue and the signal that wakes its task.
    queues: Vec<SinkQueue>,
    alarm_gauges: Arc<AlarmGauges>,
    energy_events: Arc<EnergyEventCounts>,
}

/// What the daemon keeps across every reload for its downlink.
#[derive(Clone, Default)]
pub(super) struct Remote {
    /// Routes `write` commands to the link tasks: a link kept over a reload keeps its
    /// routes, a restarted one replaces them.
    writes: WriteHandle,
    /// Commands the sessions dropped on a full queue, for the core to audit.
    dropped: Arc<DroppedCommands>,
    /// The config file pushes are checked against, and where validated ones go; `None` when
    /// the configuration is embedded (the demo).
    config: Option<(remote_config::Target, mpsc::Sender<remote_config::Push>)>,
    /// The running configuration's hash, for the sessions' retained status.
    config_hash: Option<tokio::sync::watch::Receiver<String>>,
}

impl Remote {
    /// What a daemon started from `config` keeps across reloads; `config_hash` follows the
    /// file that runs.
    pub(super) fn new(
        config: Option<(remote_config::Target, mpsc::Sender<remote_config::Push>)>,
        config_hash: tokio::sync::watch::Receiver<String>,
    ) -> Self {
        Self {
            config,
            config_hash: Some(config_hash),
            ..Self::default()
        }
    }
}

/// What a new generation takes over from the old one.
#[derive(Default)]
struct Kept {
    links: Vec<LinkPart>,
    sinks: Vec<SinkPart>,
    notifiers: Vec<NotifierPart>,
    influx: Option<InfluxPart>,
    queues: Vec<SinkQueue>,
}

/// The channels a generation is wired with.
struct Wiring {
    batches: mpsc::Sender<SampleBatch>,
    downlink: mpsc::Sender<Downlink>,
    notices: mpsc::Sender<remote_config::Notice>,
    receivers: Receivers,
}

impl Wiring {
    fn new() -> Self {
        let (batches, batch_rx) = mpsc::channel(BATCH_QUEUE);
        let (downlink, downlink_rx) = mpsc::channel(DOWNLINK_QUEUE);
        let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        Self {
            batches,
            downlink,
            notices,
            receivers: Receivers {
                batches: batch_rx,
                downlink: downlink_rx,
                notices: notices_rx,
            },
        }
    }
}

/// Config-push outcomes waiting for the core; one push is watched at a time.
const NOTICE_QUEUE: usize = 8;

impl Generation {
    /// Starts every part of `plan`, from the state a last run saved.
    pub(super) async fn start(
        plan: Arc<Plan>,
        store: &StoreHandle,
        clock: &Arc<dyn Clock>,
        saved: &Saved,
        remote: Remote,
    ) -> Self {
        Self::assemble(
            plan,
            store,
            clock,
            saved,
            Wiring::new(),
            Kept::default(),
            remote,
        )
        .await
    }

    /// Moves to `next`: stops what changed or went away, keeps what did not, restarts the
    /// core from the state the old one saved, and starts what is new or changed.
    pub(super) async fn reload(
        mut self,
        next: Arc<Plan>,
        store: &StoreHandle,
        clock: &Arc<dyn Clock>,
        grace: Duration,
    ) -> Self {
        let mut kept = Kept::default();
        let wanted = link_keys(&next);
        for part in std::mem::take(&mut self.links) {
            if wanted.contains(&part.key) {
                kept.links.push(part);
            } else {
                info!(link = %part.key.0.name, "Link changed; restarting it.");
                part.tasks.stop("link", grace).await;
            }
        }
        // The old core saves its state and hands back the channels' receiving ends, with
        // whatever it had not taken yet.
        self.core.tasks.token().cancel();
        let receivers = match tokio::time::timeout(grace, self.core.handback).await {
            Ok(Ok(r)) => Some(r),
            _ => None,
        };
        self.core.tasks.stop("core", Duration::from_secs(1)).await;
        let wiring = match receivers {
            Some(receivers) => Wiring {
                batches: self.batches.clone(),
                downlink: self.downlink.clone(),
                notices: self.notices.clone(),
                receivers,
            },
            None => {
                // The old core is gone without its receivers: new channels, so every link and
                // session must start again on them.
                error!("The core did not stop within the grace period; restarting every part.");
                for part in kept.links.drain(..) {
                    part.tasks.stop("link", grace).await;
                }
                for part in self.sinks.drain(..) {
                    part.tasks.stop("sink", SINK_STOP).await;
                }
                Wiring::new()
            }
        };
        let wanted = sink_keys(&next);
        for part in std::mem::take(&mut self.sinks) {
            if wanted
                .iter()
                .any(|(n, k)| *n == part.name && *k == part.key)
            {
                kept.sinks.push(part);
            } else {
                info!(sink = %part.name, "Sink changed; restarting it.");
                part.tasks.stop("sink", SINK_STOP).await;
            }
        }
        for part in std::mem::take(&mut self.notifiers) {
            if next.webhooks.contains(&part.key) {
                kept.notifiers.push(part);
            } else {
                let NotifierPart { handle, tasks, .. } = part;
                drop(handle);
                stop_notifier(&tasks).await;
            }
        }
        let influx_key = next.influx.clone().map(|i| {
            (
                i,
                next.gateway.site.to_string(),
                next.gateway.id.to_string(),
            )
        });
        match self.influx.take() {
            Some(part) if Some(&part.key) == influx_key.as_ref() => kept.influx = Some(part),
            Some(part) => stop_influx(part).await,
            None => {}
        }
        kept.queues = std::mem::take(&mut self.queues);
        let saved = load_saved(store).await;
        Self::assemble(next, store, clock, &saved, wiring, kept, self.remote).await
    }

    /// Starts what `kept` lacks for `plan`, and a new core on `wiring`.
    async fn assemble(
        plan: Arc<Plan>,
        store: &StoreHandle,
        clock: &Arc<dyn Clock>,
        saved: &Saved,
        wiring: Wiring,
        mut kept: Kept,
        remote: Remote,
    ) -> Self {
        let writes = &remote.writes;
        let links = start_links(
            &plan,
            &wiring.batches,
            writes,
            clock,
            std::mem::take(&mut kept.links),
        );
        // A removed device's route would lead to a stopped link: gone, it is refused as
        // unknown. Kept and restarted links registered their devices above.
        writes.retain(|device| plan.devices.iter().any(|d| d.name.as_str() == device));
        let queues = sink_queues(&plan, store, &kept.queues).await;
        let influx = kept.influx.take().or_else(|| start_influx(&plan));
        let notifiers = start_notifiers(&plan, clock, std::mem::take(&mut kept.notifiers));
        let sinks = start_sinks(
            &plan,
            store,
            clock,
            &queues,
            &wiring.downlink,
            &remote,
            std::mem::take(&mut kept.sinks),
        );
        let alarm_gauges = Arc::new(AlarmGauges::default());
        let energy_events = Arc::new(EnergyEventCounts::default());
        let taps = Taps {
            every_poll: queues.iter().any(|s| s.format == Format::SparkplugB),
            reported: true,
        };
        let mut pipeline = Pipeline::from_spec(plan.pipeline_spec(), taps);
        let engine = pipeline.engine_mut();
        engine.restore(&saved.raised);
        engine.restore_counters(&saved.counters);
        engine.restore_baselines(&saved.baselines);
        super::core_task::log_restored(&engine.restore_models(&saved.models));
        pipeline.ledger_mut().restore(&saved.ledger);
        let core = Core {
            plan: plan.clone(),
            influx: influx.as_ref().map(|i| i.handle.clone()),
            pipeline,
            out: Outputs::default(),
            notifiers: notifiers.iter().map(|n| n.handle.clone()).collect(),
            alarm_gauges: alarm_gauges.clone(),
            energy_events: energy_events.clone(),
            seqs: HashMap::new(),
            store: store.clone(),
            recorder: recorder(&plan, &queues, &saved.platform, clock.now()),
            sinks: queues.clone(),
            clock: clock.clone(),
            auth: super::command_auth::CommandAuth::new(&plan.commands),
            writes: super::remote_write::Writes::new(writes.clone()),
            dropped: remote.dropped.clone(),
            config_push: remote.config.clone(),
            saved_models: Default::default(),
        };
        // Ends when every link has dropped its sender and the channel is drained, or when its
        // token is cancelled (a reload, or the grace period of a shutdown is over).
        let tasks = Supervisor::default();
        let (back, handback) = oneshot::channel();
        let token = tasks.token().clone();
        tasks.spawn("core", async move {
            let receivers = core.run(wiring.receivers, token).await;
            // Nobody waits for them at a shutdown.
            let _unwanted = back.send(receivers);
        });
        Self {
            plan,
            batches: wiring.batches,
            downlink: wiring.downlink,
            notices: wiring.notices,
            remote,
            links,
            core: CorePart { tasks, handback },
            sinks,
            notifiers,
            influx,
            queues,
            alarm_gauges,
            energy_events,
        }
    }

    /// Tells the core how a config push ended, for it to audit and answer.
    pub(super) fn notify(&self, notice: remote_config::Notice) {
        if self.notices.try_send(notice).is_err() {
            error!("Cannot hand a config push's outcome to the core; it is in the log only.");
        }
    }

    /// What `/metrics` reads from this generation.
    pub(super) fn sources(&self, outbox: &Arc<OutboxGauges>) -> Sources {
        let mut mqtt = Vec::new();
        let mut platform = None;
        for s in &self.sinks {
            match &s.stats {
                SinkStats::Mqtt(m) => mqtt.push((s.name.clone(), m.clone())),
                SinkStats::Uplink(u) => platform = Some(u.clone()),
            }
        }
        Sources {
            acquire: self.acquire(),
            mqtt,
            platform,
            outbox: outbox.clone(),
            influx: self.influx.as_ref().map(|i| i.stats.clone()),
            alarms: self.alarm_gauges.clone(),
            energy_events: self.energy_events.clone(),
            webhooks: self
                .notifiers
                .iter()
                .map(|n| (n.key.name.clone(), n.stats.clone()))
                .collect(),
            restarts: self
                .sinks
                .iter()
                .map(|s| (format!("sink {}", s.name), s.restarts.clone()))
                .collect(),
        }
    }

    /// Every device's poll counters.
    pub(super) fn acquire(&self) -> AcquireStats {
        AcquireStats {
            devices: self
                .links
                .iter()
                .flat_map(|l| l.stats.devices.iter().cloned())
                .collect(),
        }
    }

    /// How many MQTT sinks are connected, of how many.
    pub(super) fn brokers_connected(&self) -> (usize, usize) {
        let mqtt: Vec<&Arc<MqttStats>> = self
            .sinks
            .iter()
            .filter_map(|s| match &s.stats {
                SinkStats::Mqtt(m) => Some(m),
                SinkStats::Uplink(_) => None,
            })
            .collect();
        let connected = mqtt
            .iter()
            .filter(|m| m.connected.load(std::sync::atomic::Ordering::Relaxed) == 1)
            .count();
        (connected, mqtt.len())
    }

    /// Stops in order, each part bounded: polling stops; the core stores what was polled
    /// (within `grace`, else it is cancelled: polls not yet stored are lost, what is stored is
    /// safe); InfluxDB flushes; the notifiers send what they hold; the sinks stop.
    pub(super) async fn stop(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let left = || {
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(100))
        };
        for part in &self.links {
            part.tasks.stop("link", left()).await;
        }
        // The links' senders are gone; with this last one the core sees the channel close
        // once it has taken every batch.
        drop(self.batches);
        if !self.core.tasks.drain(left()).await {
            warn!(
                grace_ms = grace.as_millis(),
                "Grace period over; stopping with work in flight (what is stored is in the outbox)."
            );
            self.core.tasks.stop("core", Duration::from_secs(1)).await;
        }
        if let Some(part) = self.influx {
            stop_influx(part).await;
        }
        // The core has stopped and dropped its clones of the notifiers' handles.
        for NotifierPart { handle, tasks, .. } in self.notifiers {
            drop(handle);
            stop_notifier(&tasks).await;
        }
        for part in &self.sinks {
            part.tasks.stop("sink", SINK_STOP).await;
        }
    }
}

/// Link `index` of `plan` with its devices, as its task is started with them; `None` for a
/// link without devices (it runs no task).
fn link_key(plan: &Plan, index: usize) -> Option<(Link, Vec<Device>)> {
    let devices: Vec<Device> = plan
        .devices
        .iter()
        .filter(|d| d.link == index)
        .cloned()
        .collect();
    (!devices.is_empty()).then(|| (plan.links[index].clone(), devices))
}

/// Every link of `plan` that runs a task, as [`link_key`] gives it.
fn link_keys(plan: &Plan) -> Vec<(Link, Vec<Device>)> {
    (0..plan.links.len())
        .filter_map(|i| link_key(plan, i))
        .collect()
}

/// Keeps the links of `kept` that `plan` still has as they are, and starts the others.
fn start_links(
    plan: &Plan,
    batches: &mpsc::Sender<SampleBatch>,
    writes: &WriteHandle,
    clock: &Arc<dyn Clock>,
    mut kept: Vec<LinkPart>,
) -> Vec<LinkPart> {
    let mut parts = Vec::with_capacity(plan.links.len());
    for index in 0..plan.links.len() {
        let Some(key) = link_key(plan, index) else {
            continue;
        };
        if let Some(i) = kept.iter().position(|k| k.key == key) {
            parts.push(kept.swap_remove(i));
            continue;
        }
        let tasks = Supervisor::default();
        let Some((stats, task)) =
            link_task_with_writes(plan.fleet(), index, writes, batches, clock, tasks.token())
        else {
            continue;
        };
        tasks.spawn(&format!("link {}", key.0.name), task);
        parts.push(LinkPart { key, tasks, stats });
    }
    parts
}

/// Each sink of `plan` by name, with what its task is made from.
fn sink_keys(plan: &Plan) -> Vec<(String, SinkKey)> {
    let mut keys: Vec<(String, SinkKey)> = plan
        .mqtt
        .iter()
        .map(|m| {
            let key = SinkKey::Mqtt {
                mqtt: Box::new(m.clone()),
                devices: m.sparkplug.as_ref().map(|_| plan.devices.clone()),
                platform: plan
                    .energy_platform
                    .clone()
                    .filter(|_| m.format == Format::EnergyPlatform)
                    .map(Box::new),
            };
            (m.name.to_string(), key)
        })
        .collect();
    if let Some(p) = plan.energy_platform.as_ref().filter(|p| p.https.is_some()) {
        keys.push((HTTPS_SINK.to_owned(), SinkKey::Uplink(Box::new(p.clone()))));
    }
    keys
}

/// Each sink's outbox queue (opened on first use), keeping the wake signal of a queue that
/// `old` has (a sink kept over a reload waits on it); the default queue alone when there is no
/// sink. A queue that cannot be opened leaves its sink out, logged.
async fn sink_queues(plan: &Plan, store: &StoreHandle, old: &[SinkQueue]) -> Vec<SinkQueue> {
    let wake = |name: &str| {
        old.iter()
            .find(|q| q.name == name)
            .map_or_else(|| Arc::new(Wake::new()), |q| q.wake.clone())
    };
    let keys = sink_keys(plan);
    if keys.is_empty() {
        warn!("No [mqtt] section: polling and storing only.");
        return vec![SinkQueue {
            name: DEFAULT_SINK_NAME.to_owned(),
            queue: DEFAULT_QUEUE,
            format: Format::Json,
            wake: wake(DEFAULT_SINK_NAME),
        }];
    }
    let mut queues = Vec::with_capacity(keys.len());
    for (name, key) in keys {
        let format = match &key {
            SinkKey::Mqtt { mqtt, .. } => mqtt.format,
            SinkKey::Uplink(_) => Format::EnergyPlatform,
        };
        match store.queue(&name).await {
            Ok(queue) => queues.push(SinkQueue {
                wake: wake(&name),
                name,
                queue,
                format,
            }),
            Err(err) => {
                error!(sink = %name, error = %err, "Cannot open the sink's outbox queue; the sink does not run.");
            }
        }
    }
    queues
}

/// Keeps the sinks of `kept` that `plan` still has as they are, and starts the others, each
/// restarted with backoff when it fails.
fn start_sinks(
    plan: &Plan,
    store: &StoreHandle,
    clock: &Arc<dyn Clock>,
    queues: &[SinkQueue],
    downlink: &mpsc::Sender<Downlink>,
    remote: &Remote,
    mut kept: Vec<SinkPart>,
) -> Vec<SinkPart> {
    let mut parts = Vec::new();
    for (name, key) in sink_keys(plan) {
        if let Some(i) = kept.iter().position(|k| k.name == name && k.key == key) {
            parts.push(kept.swap_remove(i));
            continue;
        }
        let Some(queue) = queues.iter().find(|q| q.name == name) else {
            continue;
        };
        let tasks = Supervisor::default();
        let restarts = Arc::new(Restarts::default());
        let task = format!("sink {name}");
        let stats = match &key {
            SinkKey::Mqtt {
                mqtt,
                devices,
                platform,
            } => {
                let stats = Arc::new(MqttStats::default());
                let outbox = Arc::new(StoreOutbox {
                    store: store.clone(),
                    queue: queue.queue,
                    compact: mqtt.format == Format::JsonCompact,
                    schemas: Default::default(),
                    platform: platform.as_ref().map(|p| PlatformRender {
                        versions: p.spec.versions.clone(),
                        timezone: p.spec.timezone,
                        clock: clock.clone(),
                    }),
                });
                let (m, wake, clock, counters) = (
                    (**mqtt).clone(),
                    queue.wake.clone(),
                    clock.clone(),
                    stats.clone(),
                );
                match (mqtt.sparkplug.clone(), devices) {
                    (Some(node), Some(devices)) => {
                        let store = store.clone();
                        // Every DCMD and NCMD write reaches the core, which refuses them
                        // (audited) unless `[mqtt.sparkplug] writes = true`.
                        let (tx, dropped) = (downlink.clone(), remote.dropped.clone());
                        let devices: Vec<DeviceSpec> = devices
                            .iter()
                            .map(crate::config::sparkplug::device_spec)
                            .collect();
                        tasks.spawn_restarting(&task, SINK_RESTART, restarts.clone(), move |c| {
                            SparkplugSink::new(
                                m.clone(),
                                node.clone(),
                                devices.clone(),
                                outbox.clone(),
                                wake.clone(),
                                store.clone(),
                                clock.clone(),
                                counters.clone(),
                            )
                            .with_commands(tx.clone(), dropped.clone())
                            .run(c)
                        });
                    }
                    _ => {
                        // Commands and their replies are JSON-profile messages: an
                        // energy_platform sink's queue holds only records.
                        let downlink = m.format.is_json().then(|| downlink.clone());
                        let dropped = remote.dropped.clone();
                        let config_hash = remote.config_hash.clone();
                        tasks.spawn_restarting(&task, SINK_RESTART, restarts.clone(), move |c| {
                            let mut session = Session::new(
                                m.clone(),
                                outbox.clone(),
                                wake.clone(),
                                clock.clone(),
                                counters.clone(),
                            );
                            if let Some(tx) = &downlink {
                                session = session
                                    .with_downlink(tx.clone())
                                    .with_dropped(dropped.clone());
                            }
                            if let Some(hash) = &config_hash {
                                session = session.with_config(hash.clone());
                            }
                            session.run(c)
                        });
                    }
                }
                SinkStats::Mqtt(stats)
            }
            SinkKey::Uplink(platform) => {
                let stats = Arc::new(PlatformUploadStats::default());
                let outbox = Arc::new(StoreOutbox {
                    store: store.clone(),
                    queue: queue.queue,
                    compact: false,
                    schemas: Default::default(),
                    platform: None,
                });
                // Built once here to check its settings (a bad certificate is a config
                // problem that no restart fixes), then again for each start.
                let checked = PlatformQueue::new(
                    &platform.spec,
                    platform.https.as_ref(),
                    outbox.clone(),
                    queue.wake.clone(),
                    clock.clone(),
                    stats.clone(),
                );
                if let Err(err) = checked {
                    error!(error = %err, "Energy-platform uploader cannot start; its records stay in the outbox.");
                    continue;
                }
                let (spec, https, wake, clock, counters) = (
                    platform.spec.clone(),
                    platform.https.clone(),
                    queue.wake.clone(),
                    clock.clone(),
                    stats.clone(),
                );
                tasks.spawn_restarting(&task, SINK_RESTART, restarts.clone(), move |c| {
                    let uploader = PlatformQueue::new(
                        &spec,
                        https.as_ref(),
                        outbox.clone(),
                        wake.clone(),
                        clock.clone(),
                        counters.clone(),
                    );
                    async move {
                        match uploader {
                            Ok(u) => u.run(c).await.map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                });
                SinkStats::Uplink(stats)
            }
        };
        parts.push(SinkPart {
            name,
            key,
            tasks,
            restarts,
            stats,
        });
    }
    parts
}

/// Keeps the notifiers of `kept` whose webhook `plan` still has as it is, and starts one for
/// every other `[[webhooks]]` entry; one that cannot start is logged and skipped.
fn start_notifiers(
    plan: &Plan,
    clock: &Arc<dyn Clock>,
    mut kept: Vec<NotifierPart>,
) -> Vec<NotifierPart> {
    let mut parts = Vec::new();
    for w in &plan.webhooks {
        if let Some(i) = kept.iter().position(|k| k.key == *w) {
            parts.push(kept.swap_remove(i));
            continue;
        }
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
        let stats = Arc::new(WebhookStats::default());
        let tasks = Supervisor::default();
        let spawned = Notifier::spawn_on(
            cfg,
            stats.clone(),
            tasks.token().clone(),
            move || c.now().0,
            tasks.tracker(),
        );
        match spawned {
            Ok(handle) => parts.push(NotifierPart {
                key: w.clone(),
                handle: Arc::new(handle),
                tasks,
                stats,
            }),
            Err(err) => error!(webhook = %w.name, error = %err, "Webhook cannot start; it is off."),
        }
    }
    parts
}

/// Lets a notifier whose handles are all dropped send what it holds, bounded, then stops it.
async fn stop_notifier(tasks: &Supervisor) {
    if !tasks.drain(NOTIFIER_DRAIN).await {
        tasks.stop("webhook", Duration::from_secs(1)).await;
    }
}

/// The InfluxDB writer of `plan`, when it has one that can start.
fn start_influx(plan: &Plan) -> Option<InfluxPart> {
    let config = plan.influx.clone()?;
    let stats = Arc::new(InfluxStats::default());
    let cancel = CancellationToken::new();
    let key = (
        config.clone(),
        plan.gateway.site.to_string(),
        plan.gateway.id.to_string(),
    );
    let timeout = config.timeout;
    match InfluxSink::spawn(
        config,
        &plan.gateway.site,
        &plan.gateway.id,
        stats.clone(),
        cancel.clone(),
    ) {
        Ok(handle) => Some(InfluxPart {
            key,
            cancel,
            handle,
            timeout,
            stats,
        }),
        Err(err) => {
            error!(error = %err, "InfluxDB sink cannot start; continuing without it.");
            None
        }
    }
}

/// Flushes what the InfluxDB queue holds (the core, its only sender, has stopped), bounded
/// by the writer's timeout.
async fn stop_influx(part: InfluxPart) {
    let stopped = part.handle.stopped();
    drop(part.handle);
    part.cancel.cancel();
    let _flushed = tokio::time::timeout(part.timeout + Duration::from_secs(1), stopped).await;
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
    Some(Recorder::new(&platform.spec, state, now.0))
}
