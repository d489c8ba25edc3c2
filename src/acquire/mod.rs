//! Acquisition: the I/O shell that turns Modbus devices into [`SampleBatch`]es.
//!
//! One task per link ([`run_link`]). A link serves its devices one transaction at a time,
//! keeping the inter-frame silence on serial buses, each device on its own fixed tick grid.
//! Decoding happens here, inside the link task, so what leaves on the channel is typed.
//!
//! Invariants:
//! - every batch carries one sample per configured point, in config order, with a quality;
//! - after a timeout the rest of that device's cycle is skipped (`bad:timeout`), so a dead
//!   slave costs its bus one timeout per cycle, and after `offline_after_failures` silent
//!   cycles it is polled only every `offline_retry_ms` (`bad:comm_lost`);
//! - a request refused with exception 02 (illegal data address) is split and the split kept;
//! - writes ([`write::WriteHandle`]) are served by the same task, between two device cycles and
//!   before the next poll that is due, so they never overlap a transaction on the bus and never
//!   move a device's tick grid.

pub mod health;
pub mod link;
mod mbap;
pub mod plan;
pub mod schedule;
pub mod spec;
pub mod write;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::decode::{decode, decode_bit};
use crate::model::{BadReason, PointSample, Quality, SampleBatch, Timestamp};
use health::{Health, Transition};
use link::{Connection, ReadResult};
use plan::Split;
use schedule::Grid;
use spec::{Device, Fleet, Link, Transport};
use write::{RateLimiter, WriteError, WriteHandle, WriteRequest};

/// Counters for one device, shared with metrics and benchmarks.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Cycles in which the device answered.
    pub polls_ok: AtomicU64,
    /// Cycles in which it did not.
    pub polls_failed: AtomicU64,
    /// Grid ticks skipped because the link was busy or the consumer slow.
    pub missed_ticks: AtomicU64,
    /// Transactions sent.
    pub requests: AtomicU64,
    /// Transactions that timed out.
    pub timeouts: AtomicU64,
    /// Exception responses.
    pub exceptions: AtomicU64,
    /// Duration of the last cycle, in microseconds.
    pub last_cycle_us: AtomicU64,
    /// Cycle durations: counts per [`LATENCY_BUCKETS_MS`] bucket, the last one for +Inf.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    /// Sum of cycle durations, in microseconds.
    pub latency_sum_us: AtomicU64,
}

/// Upper bounds (ms) of the poll-cycle latency histogram buckets.
pub const LATENCY_BUCKETS_MS: [u64; 9] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500];

impl DeviceStats {
    /// Records one cycle's duration.
    pub fn observe_cycle(&self, us: u64) {
        self.last_cycle_us.store(us, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&ms| us <= ms * 1000)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// Stats for every device, in plan order.
#[derive(Debug, Clone, Default)]
pub struct AcquireStats {
    /// (device name, its counters).
    pub devices: Vec<(String, Arc<DeviceStats>)>,
}

impl AcquireStats {
    /// Sum of a counter over all devices.
    pub fn total(&self, pick: impl Fn(&DeviceStats) -> &AtomicU64) -> u64 {
        self.devices
            .iter()
            .map(|(_, s)| pick(s).load(Ordering::Relaxed))
            .sum()
    }
}

/// One device cycle's outcome.
#[derive(Debug)]
pub struct Polled {
    /// The samples.
    pub batch: SampleBatch,
    /// Whether any transaction got an answer (exceptions count).
    pub answered: bool,
    /// The first link or transport failure, for logs and `read`.
    pub error: Option<String>,
}

fn bad_all(device: &Device, ts: Timestamp, reason: BadReason) -> Vec<PointSample> {
    device
        .points
        .iter()
        .map(|p| PointSample {
            point: p.name.clone(),
            ts,
            value: None,
            quality: Quality::Bad(reason),
        })
        .collect()
}

/// Marks the points of `slots` bad for `reason` at `ts`.
fn mark(samples: &mut [PointSample], slots: &[plan::Slot], reason: BadReason, ts: Timestamp) {
    for slot in slots {
        samples[slot.point].quality = Quality::Bad(reason);
        samples[slot.point].ts = ts;
    }
}

/// Decodes a good response into the samples of `slots`.
fn fill(
    samples: &mut [PointSample],
    device: &Device,
    slots: &[plan::Slot],
    result: &ReadResult,
    ts: Timestamp,
) {
    for slot in slots {
        let point = &device.points[slot.point];
        let at = usize::from(slot.offset);
        let decoded = match result {
            ReadResult::Words(words) => words.get(at..).map(|w| decode(w, &point.codec)),
            ReadResult::Bits(bits) => bits.get(at).map(|b| Ok(decode_bit(*b, &point.codec))),
            _ => None,
        };
        let s = &mut samples[slot.point];
        s.ts = ts;
        match decoded {
            Some(Ok(v)) => {
                s.value = Some(v);
                s.quality = Quality::Good;
            }
            Some(Err(err)) => {
                debug!(device = %device.name, point = %point.name, error = %err, "Cannot decode point.");
                s.quality = Quality::Bad(BadReason::Decode);
            }
            // A response shorter than requested: the device or a gateway truncated it.
            None => s.quality = Quality::Bad(BadReason::Decode),
        }
    }
}

/// Sends one request, retrying transport failures (not timeouts) with doubling backoff.
async fn transact(
    conn: &mut Connection,
    device: &Device,
    index: usize,
    stats: &DeviceStats,
) -> ReadResult {
    let request = &device.read_plan.requests[index];
    let mut attempt = 0;
    loop {
        if let Err(err) = conn.ensure_open().await {
            return ReadResult::Failed(err.to_string());
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let result = conn
            .read(
                device.unit_id,
                request.function,
                request.address,
                request.count,
                device.timeout,
            )
            .await;
        match result {
            ReadResult::Failed(_) if attempt < device.retries => {
                tokio::time::sleep(device.retry_backoff * 2u32.saturating_pow(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Polls every point of `device` once over `conn`.
pub async fn poll_device(
    conn: &mut Connection,
    device: &mut Device,
    clock: &dyn Clock,
    stats: &DeviceStats,
) -> Polled {
    let tick = clock.now();
    if let Err(err) = conn.ensure_open().await {
        return Polled {
            batch: SampleBatch {
                device: device.name.clone(),
                tick,
                samples: bad_all(device, tick, BadReason::CommLost),
            },
            answered: false,
            error: Some(err.to_string()),
        };
    }
    let mut samples = bad_all(device, tick, BadReason::Timeout);
    let mut answered = false;
    let mut error = None;
    let mut i = 0;
    while i < device.read_plan.requests.len() {
        let result = transact(conn, device, i, stats).await;
        let ts = clock.now();
        let slots = &device.read_plan.requests[i].slots;
        match result {
            ReadResult::Words(_) | ReadResult::Bits(_) => {
                answered = true;
                fill(&mut samples, device, slots, &result, ts);
            }
            ReadResult::Exception(code) => {
                answered = true;
                stats.exceptions.fetch_add(1, Ordering::Relaxed);
                let request = &device.read_plan.requests[i];
                let (function, address, count) =
                    (request.function.code(), request.address, request.count);
                if code == 2 {
                    if let Split::Into(parts) = device.read_plan.split(i, &device.points) {
                        info!(device = %device.name, function, address, count, parts,
                              "Device refused a read as an illegal address; split it and will keep the split.");
                        // Read the parts now, starting with the first one at index i.
                        continue;
                    }
                }
                debug!(device = %device.name, function, address, code, "Exception response.");
                mark(
                    &mut samples,
                    &device.read_plan.requests[i].slots,
                    BadReason::Exception(code),
                    ts,
                );
            }
            ReadResult::Timeout | ReadResult::Failed(_) => {
                let reason = if let ReadResult::Failed(msg) = result {
                    error.get_or_insert(msg);
                    BadReason::CommLost
                } else {
                    stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    BadReason::Timeout
                };
                // Skip the rest of the cycle: one dead slave must not starve its bus.
                for request in &device.read_plan.requests[i..] {
                    mark(&mut samples, &request.slots, reason, ts);
                }
                break;
            }
        }
        i += 1;
    }
    Polled {
        batch: SampleBatch {
            device: device.name.clone(),
            tick,
            samples,
        },
        answered,
        error,
    }
}

/// Connects to `device`'s link and polls it once: what `plantwatch read` does.
pub async fn poll_once(fleet: Fleet<'_>, device: &Device, clock: &dyn Clock) -> Polled {
    let mut conn = Connection::new(fleet.links[device.link].clone());
    let mut device = device.clone();
    poll_device(&mut conn, &mut device, clock, &DeviceStats::default()).await
}

struct DeviceRun {
    device: Device,
    grid: Grid,
    health: Health,
    stats: Arc<DeviceStats>,
    writes: RateLimiter,
}

/// The next write for this link; never, when the link takes none.
async fn next_write(writes: &mut Option<mpsc::Receiver<WriteRequest>>) -> Option<WriteRequest> {
    match writes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves one write request on the link's connection and sends its outcome back.
async fn serve_write(conn: &mut Connection, runs: &mut [DeviceRun], request: WriteRequest) {
    let WriteRequest {
        device,
        point,
        value,
        not_after,
        reply,
    } = request;
    let outcome = if tokio::time::Instant::now() > not_after {
        Err(WriteError::Expired { device, point })
    } else if let Some(run) = runs.iter_mut().find(|r| r.device.name.as_str() == device) {
        writer::serve(
            conn,
            &run.device,
            run.health.is_offline(),
            &mut run.writes,
            &run.stats,
            &point,
            &value,
        )
        .await
    } else {
        Err(WriteError::UnknownDevice { device })
    };
    // The caller may have given up waiting; the outcome is logged by the writer either way.
    drop(reply.send(outcome));
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Serves one link until `cancel` fires or the receiver is gone.
///
/// `first_tick` is each device's offset into its first period, so that many devices do not
/// all poll at the same instant.
pub async fn run_link(
    link: Link,
    devices: Vec<(Device, Duration, Arc<DeviceStats>)>,
    tx: mpsc::Sender<SampleBatch>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    run_link_with_writes(link, devices, None, tx, clock, cancel).await;
}

/// [`run_link`], also serving the writes that arrive on `writes`: each goes before the next
/// poll that is due, between two device cycles.
pub async fn run_link_with_writes(
    link: Link,
    devices: Vec<(Device, Duration, Arc<DeviceStats>)>,
    mut writes: Option<mpsc::Receiver<WriteRequest>>,
    tx: mpsc::Sender<SampleBatch>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    let base = tokio::time::Instant::now();
    let link_name = link.name.clone();
    let mut conn = Connection::new(link);
    let mut runs: Vec<DeviceRun> = devices
        .into_iter()
        .map(|(device, first_tick, stats)| DeviceRun {
            grid: Grid::new(ms(first_tick), ms(device.poll_interval)),
            health: Health::new(device.offline_after_failures),
            device,
            stats,
            writes: RateLimiter::default(),
        })
        .collect();
    let mut wrote_since_poll = false;
    loop {
        let Some((idx, due)) = runs
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.grid.next_tick()))
            .min_by_key(|&(_, t)| t)
        else {
            return;
        };
        let due_at = base + Duration::from_millis(due);
        // One write at most before a poll that is already due: a burst of writes delays the
        // poll by one transaction sequence, never by the whole burst.
        let poll_waits = wrote_since_poll && tokio::time::Instant::now() >= due_at;
        // Biased: a write that is waiting goes before a poll that is due. The poll then runs
        // late within its tick, and the grid stays where it was.
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            request = next_write(&mut writes), if !poll_waits => {
                match request {
                    Some(request) => {
                        serve_write(&mut conn, &mut runs, request).await;
                        wrote_since_poll = true;
                    }
                    // Every handle is gone: stop listening.
                    None => writes = None,
                }
                continue;
            }
            () = tokio::time::sleep_until(due_at) => {}
        }
        wrote_since_poll = false;
        let run = &mut runs[idx];
        let fired = run.grid.fire(ms(base.elapsed()));
        if fired.skipped > 0 {
            run.stats
                .missed_ticks
                .fetch_add(fired.skipped, Ordering::Relaxed);
            debug!(device = %run.device.name, skipped = fired.skipped, "Skipped poll ticks.");
        }
        let started = tokio::time::Instant::now();
        let mut polled = poll_device(&mut conn, &mut run.device, clock.as_ref(), &run.stats).await;
        run.stats
            .observe_cycle(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        let now_ms = ms(base.elapsed());
        let transition = if polled.answered {
            run.stats.polls_ok.fetch_add(1, Ordering::Relaxed);
            run.health.on_answered(now_ms)
        } else {
            run.stats.polls_failed.fetch_add(1, Ordering::Relaxed);
            run.health.on_silent(now_ms)
        };
        match transition {
            Some(Transition::WentOffline { failures }) => {
                warn!(link = %link_name, device = %run.device.name, failures,
                      error = polled.error.as_deref().unwrap_or("timeout"),
                      retry_ms = ms(run.device.offline_retry),
                      "Device offline; retrying on the slow schedule.");
                run.grid.reschedule(now_ms, ms(run.device.offline_retry));
            }
            Some(Transition::CameBack { outage_ms }) => {
                info!(link = %link_name, device = %run.device.name, outage_ms, "Device back online.");
                run.grid.reschedule(now_ms, ms(run.device.poll_interval));
            }
            None => {}
        }
        if run.health.is_offline() {
            for s in &mut polled.batch.samples {
                if matches!(s.quality, Quality::Bad(_)) {
                    s.quality = Quality::Bad(BadReason::CommLost);
                }
            }
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            sent = tx.send(polled.batch) => if sent.is_err() { return },
        }
    }
}

/// Spawns one task per link of `fleet` onto `tasks`, sending batches to `tx`.
pub fn spawn_links(
    fleet: Fleet<'_>,
    tx: &mpsc::Sender<SampleBatch>,
    clock: &Arc<dyn Clock>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> AcquireStats {
    let (stats, links) = link_tasks(fleet, tx, clock, cancel);
    for (_name, task) in links {
        tasks.spawn(task);
    }
    stats
}

/// [`spawn_links`] whose links also serve the writes sent through `writes`.
pub fn spawn_links_with_writes(
    fleet: Fleet<'_>,
    writes: &WriteHandle,
    tx: &mpsc::Sender<SampleBatch>,
    clock: &Arc<dyn Clock>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> AcquireStats {
    let mut stats = AcquireStats::default();
    for index in 0..fleet.links.len() {
        if let Some((link_stats, task)) =
            link_task_with_writes(fleet, index, writes, tx, clock, cancel)
        {
            stats.devices.extend(link_stats.devices);
            tasks.spawn(task);
        }
    }
    stats
}

/// One task per link of `fleet` that has devices, named by its link, for the caller to spawn:
/// each polls its devices and sends their batches to `tx` until `cancel`.
pub fn link_tasks(
    fleet: Fleet<'_>,
    tx: &mpsc::Sender<SampleBatch>,
    clock: &Arc<dyn Clock>,
    cancel: &CancellationToken,
) -> (
    AcquireStats,
    Vec<(String, impl Future<Output = ()> + Send + 'static)>,
) {
    let mut stats = AcquireStats::default();
    let mut tasks = Vec::with_capacity(fleet.links.len());
    for index in 0..fleet.links.len() {
        if let Some((link_stats, task)) = link_task(fleet, index, tx, clock, cancel) {
            stats.devices.extend(link_stats.devices);
            tasks.push((format!("link {}", fleet.links[index].name), task));
        }
    }
    (stats, tasks)
}

/// The task of link `index` of `fleet`: it polls the link's devices and sends their batches to
/// `tx` until `cancel`. `None` when the link has no devices.
pub fn link_task(
    fleet: Fleet<'_>,
    index: usize,
    tx: &mpsc::Sender<SampleBatch>,
    clock: &Arc<dyn Clock>,
    cancel: &CancellationToken,
) -> Option<(AcquireStats, impl Future<Output = ()> + Send + 'static)> {
    link_task_inner(fleet, index, None, tx, clock, cancel)
}

/// [`link_task`] that also serves writes: its devices are registered with `writes`, so
/// [`WriteHandle::write`] reaches them through this task.
pub fn link_task_with_writes(
    fleet: Fleet<'_>,
    index: usize,
    writes: &WriteHandle,
    tx: &mpsc::Sender<SampleBatch>,
    clock: &Arc<dyn Clock>,
    cancel: &CancellationToken,
) -> Option<(AcquireStats, impl Future<Output = ()> + Send + 'static)> {
    link_task_inner(fleet, index, Some(writes), tx, clock, cancel)
}

fn link_task_inner(
    fleet: Fleet<'_>,
    index: usize,
    writes: Option<&WriteHandle>,
    tx: &mpsc::Sender<SampleBatch>,
    clock: &Arc<dyn Clock>,
    cancel: &CancellationToken,
) -> Option<(AcquireStats, impl Future<Output = ()> + Send + 'static)> {
    let link = fleet.links.get(index)?;
    let mut stats = AcquireStats::default();
    let devices: Vec<_> = fleet
        .devices
        .iter()
        .filter(|d| d.link == index)
        .map(|d| {
            let s = Arc::new(DeviceStats::default());
            stats.devices.push((d.name.to_string(), s.clone()));
            // Every device starts on the same instant of the period, not spread over it:
            // each distinct poll instant wakes the runtime and makes its own outbox commit (an
            // fsync), and 200 of them a second cost more CPU than the polls (cargo bench
            // --bench e2e, 200 devices: 16.4 µs per value spread evenly, 7.4 µs in 4 slots,
            // 5.2 µs together). Devices on one link still take turns, and 2000 devices at 1 s
            // start together without a missed tick (cargo bench --bench poll).
            (d.clone(), Duration::ZERO, s)
        })
        .collect();
    if devices.is_empty() {
        return None;
    }
    let write_rx = writes.map(|handle| {
        let (write_tx, write_rx) = mpsc::channel(write::WRITE_QUEUE);
        let connect = match &link.transport {
            Transport::Tcp(e) | Transport::RtuOverTcp { endpoint: e, .. } => e.connect_timeout,
            Transport::Rtu(_) => Duration::ZERO,
        };
        for (device, _, _) in &devices {
            // Connect, read before, write, read back; a second for the silences between.
            let longest = connect + device.timeout * 3 + Duration::from_secs(1);
            handle.register(device.name.as_str(), write_tx.clone(), longest);
        }
        write_rx
    });
    let span = tracing::info_span!("link", link = %link.name);
    let task = tracing::Instrument::instrument(
        run_link_with_writes(
            link.clone(),
            devices,
            write_rx,
            tx.clone(),
            clock.clone(),
            cancel.child_token(),
        ),
        span,
    );
    Some((stats, task))
}
