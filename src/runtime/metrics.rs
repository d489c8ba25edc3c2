//! Self-monitoring in the Prometheus text format (exposition format 0.0.4), rendered from the
//! stages' own atomic counters at scrape time, so nothing is counted twice and the hot paths
//! only ever bump an atomic.
//!
//! Names follow `plantwatch_<subject>_<measure>_<unit>[_total]`; labels are bounded (device,
//! link, result), never error text. Point names appear only on the energy event counter: its
//! points are the configured meters, a bounded set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::acquire::{AcquireStats, DeviceStats, LATENCY_BUCKETS_MS};
use crate::sink::mqtt::MqttStats;

/// Outbox gauges, refreshed by the daemon from the store every few seconds.
#[derive(Debug, Default)]
pub struct OutboxGauges {
    /// Messages waiting.
    pub rows: AtomicU64,
    /// Their payload bytes.
    pub bytes: AtomicU64,
    /// Creation time (ms) of the oldest waiting message; 0 when empty.
    pub oldest_ms: AtomicI64,
    /// Messages dropped by the size bound, ever.
    pub dropped: AtomicU64,
    /// Messages stored, ever.
    pub enqueued: AtomicU64,
    /// Store write transactions that failed, this run.
    pub write_failures: AtomicU64,
    /// 1 while store writes have failed for longer than the degraded bound.
    pub degraded: AtomicU64,
    /// 1 while the state file's file system is full and new messages replace the oldest.
    pub disk_full: AtomicU64,
    /// Times state was found lost when the store was opened, ever.
    pub losses: AtomicU64,
}

impl OutboxGauges {
    /// Takes the figures of one [`crate::store::StoreHandle::stats`] call.
    pub fn update(&self, stats: &crate::store::OutboxStats) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.rows, stats.rows);
        set(&self.bytes, stats.bytes);
        self.oldest_ms
            .store(stats.oldest_created_ms.unwrap_or(0), Ordering::Relaxed);
        set(&self.dropped, stats.dropped_total);
        set(&self.enqueued, stats.enqueued_total);
        let h = &stats.health;
        set(&self.write_failures, h.write_failures_total);
        set(&self.degraded, u64::from(h.degraded()));
        set(&self.disk_full, u64::from(h.disk_full));
        set(&self.losses, h.losses_total);
    }
}

/// InfluxDB sink counters.
#[derive(Debug, Default)]
pub struct InfluxStats {
    /// Points written.
    pub written: AtomicU64,
    /// Points dropped (queue full or retries exhausted).
    pub dropped: AtomicU64,
}

/// Alarm gauges and counters, updated by the core when alarms change.
#[derive(Debug, Default)]
pub struct AlarmGauges {
    /// Raised alarms by severity: low, medium, high, critical.
    pub raised: [AtomicU64; 4],
    /// Alarm changes published, ever (this run).
    pub changes: AtomicU64,
}

/// The ledger's counter events (wrap, reset, replacement, jump) by device, point and kind,
/// counted by the core as it books them.
#[derive(Debug, Default)]
pub struct EnergyEventCounts {
    /// std Mutex: held only to bump a count or copy the map, never across an await.
    by_key: Mutex<BTreeMap<(String, String, &'static str), u64>>,
}

impl EnergyEventCounts {
    /// Counts one event of `kind` on `device`'s counter `point`.
    pub fn count(&self, device: &str, point: &str, kind: crate::process::counter::EventKind) {
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry((device.to_owned(), point.to_owned(), kind.as_str()))
            .or_default() += 1;
    }

    /// Every count so far, sorted by device, point and kind.
    pub fn snapshot(&self) -> Vec<((String, String, &'static str), u64)> {
        let map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Everything `/metrics` reads.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Per-device poll counters.
    pub acquire: AcquireStats,
    /// MQTT counters by sink name.
    pub mqtt: Vec<(String, Arc<MqttStats>)>,
    /// The energy platform's HTTPS uplink counters, when it runs.
    pub platform: Option<Arc<crate::sink::platform_queue::PlatformUploadStats>>,
    /// Outbox gauges.
    pub outbox: Arc<OutboxGauges>,
    /// InfluxDB counters, when configured.
    pub influx: Option<Arc<InfluxStats>>,
    /// Alarm gauges.
    pub alarms: Arc<AlarmGauges>,
    /// The ledger's counter events.
    pub energy_events: Arc<EnergyEventCounts>,
    /// Webhook counters, by webhook name.
    pub webhooks: Vec<(String, Arc<crate::sink::webhook::WebhookStats>)>,
    /// Restarts of the supervised tasks, by task name.
    pub restarts: Vec<(String, Arc<super::supervisor::Restarts>)>,
}

/// The text exposition, one metric family at a time: its HELP and TYPE lines, then samples.
struct Exposition {
    out: String,
}

/// A family being written: every sample is named after it.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Exposition {
    /// Starts the family `name` of `kind` (`counter`, `gauge`, `histogram`).
    fn family(&mut self, name: &'static str, kind: &str, help: &str) -> Family<'_> {
        let _infallible = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family {
            out: &mut self.out,
            name,
        }
    }
}

impl Family<'_> {
    /// One sample of the family itself.
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        self.suffixed("", labels, value)
    }

    /// One sample of a histogram's `_bucket`, `_sum` or `_count` series.
    fn suffixed(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) -> &mut Self {
        let _w = write!(self.out, "{}{suffix}", self.name);
        for (i, (key, text)) in labels.iter().enumerate() {
            let open = if i == 0 { "{" } else { "," };
            let _w = write!(self.out, "{open}{key}=\"{}\"", escape(text));
        }
        let close = if labels.is_empty() { "" } else { "}" };
        let _w = writeln!(self.out, "{close} {value}");
        self
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A counter or gauge read from a stage's stats struct.
type Field<T> = fn(&T) -> &AtomicU64;

/// The per-device poll counters, one family each.
const POLL_COUNTERS: [(&str, &str, Field<DeviceStats>); 4] = [
    (
        "plantwatch_poll_requests_total",
        "Modbus transactions sent.",
        |d| &d.requests,
    ),
    (
        "plantwatch_poll_timeouts_total",
        "Modbus transactions that timed out.",
        |d| &d.timeouts,
    ),
    (
        "plantwatch_poll_exceptions_total",
        "Modbus exception responses.",
        |d| &d.exceptions,
    ),
    (
        "plantwatch_poll_missed_ticks_total",
        "Poll ticks skipped because the link or consumer was busy.",
        |d| &d.missed_ticks,
    ),
];

/// The store's health, one family each: (name, kind, help, field).
const STORE_HEALTH: [(&str, &str, &str, Field<OutboxGauges>); 4] = [
    (
        "plantwatch_store_write_failures_total",
        "counter",
        "State-file write transactions that failed and were rolled back.",
        |o| &o.write_failures,
    ),
    (
        "plantwatch_store_degraded",
        "gauge",
        "1 while state-file writes have failed for minutes; the watchdog is no longer fed.",
        |o| &o.degraded,
    ),
    (
        "plantwatch_store_disk_full",
        "gauge",
        "1 while the state file's file system is full and new messages replace the oldest.",
        |o| &o.disk_full,
    ),
    (
        "plantwatch_store_losses_total",
        "counter",
        "Times stored state was found lost when the state file was opened.",
        |o| &o.losses,
    ),
];

/// The MQTT sinks' counters, one family each, a sample per sink.
const MQTT_FAMILIES: [(&str, &str, &str, Field<MqttStats>); 5] = [
    (
        "plantwatch_mqtt_connected",
        "gauge",
        "1 while connected to the broker, per sink.",
        |m| &m.connected,
    ),
    (
        "plantwatch_mqtt_connects_total",
        "counter",
        "Successful broker connections, per sink.",
        |m| &m.connects,
    ),
    (
        "plantwatch_mqtt_published_total",
        "counter",
        "Messages handed to the MQTT client, per sink.",
        |m| &m.published,
    ),
    (
        "plantwatch_mqtt_acked_total",
        "counter",
        "Messages acknowledged by the broker, per sink.",
        |m| &m.acked,
    ),
    (
        "plantwatch_mqtt_unreadable_total",
        "counter",
        "Outbox rows that could not be rendered, per sink.",
        |m| &m.unreadable,
    ),
];

/// Renders every metric at `now_ms`.
pub fn render(s: &Sources, now_ms: i64) -> String {
    let mut e = Exposition {
        out: String::with_capacity(4096 + s.acquire.devices.len() * 1024),
    };
    let devices = &s.acquire.devices;
    let mut f = e.family(
        "plantwatch_poll_cycles_total",
        "counter",
        "Device poll cycles by result.",
    );
    for (device, st) in devices {
        f.sample(&[("device", device), ("result", "ok")], load(&st.polls_ok))
            .sample(
                &[("device", device), ("result", "failed")],
                load(&st.polls_failed),
            );
    }
    for (name, help, field) in POLL_COUNTERS {
        let mut f = e.family(name, "counter", help);
        for (device, st) in devices {
            f.sample(&[("device", device)], load(field(st)));
        }
    }
    let mut f = e.family(
        "plantwatch_poll_duration_seconds",
        "histogram",
        "Duration of a device's poll cycle.",
    );
    for (device, st) in devices {
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += load(&st.latency_buckets[i]);
            let le = (*le as f64 / 1000.0).to_string();
            f.suffixed("_bucket", &[("device", device), ("le", &le)], cumulative);
        }
        cumulative += load(&st.latency_buckets[LATENCY_BUCKETS_MS.len()]);
        f.suffixed("_bucket", &[("device", device), ("le", "+Inf")], cumulative)
            .suffixed(
                "_sum",
                &[("device", device)],
                load(&st.latency_sum_us) as f64 / 1e6,
            )
            .suffixed("_count", &[("device", device)], cumulative);
    }
    let o = &s.outbox;
    e.family(
        "plantwatch_outbox_rows",
        "gauge",
        "Messages waiting in the outbox.",
    )
    .sample(&[], load(&o.rows));
    e.family(
        "plantwatch_outbox_bytes",
        "gauge",
        "Payload bytes waiting in the outbox.",
    )
    .sample(&[], load(&o.bytes));
    let oldest = o.oldest_ms.load(Ordering::Relaxed);
    let age = if oldest > 0 {
        (now_ms - oldest).max(0) as f64 / 1000.0
    } else {
        0.0
    };
    e.family(
        "plantwatch_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest waiting message.",
    )
    .sample(&[], age);
    e.family(
        "plantwatch_outbox_enqueued_total",
        "counter",
        "Messages stored in the outbox.",
    )
    .sample(&[], load(&o.enqueued));
    e.family(
        "plantwatch_outbox_dropped_total",
        "counter",
        "Messages dropped by the outbox size bound.",
    )
    .sample(&[], load(&o.dropped));
    for (name, kind, help, field) in STORE_HEALTH {
        e.family(name, kind, help).sample(&[], load(field(o)));
    }
    if !s.mqtt.is_empty() {
        for (name, kind, help, field) in MQTT_FAMILIES {
            let mut f = e.family(name, kind, help);
            for (sink, m) in &s.mqtt {
                f.sample(&[("sink", sink)], load(field(m)));
            }
        }
    }
    if let Some(p) = &s.platform {
        let mut f = e.family(
            "plantwatch_platform_uploads_total",
            "counter",
            "Energy-platform record uploads over HTTPS, by outcome.",
        );
        for (result, v) in [
            ("sent", &p.sent),
            ("acked", &p.acked),
            ("retried", &p.retried),
            ("rejected", &p.rejected),
        ] {
            f.sample(&[("result", result)], load(v));
        }
        e.family(
            "plantwatch_platform_logins_total",
            "counter",
            "Energy-platform sessions opened (first login and renewals).",
        )
        .sample(&[], load(&p.logins));
    }
    if let Some(i) = &s.influx {
        e.family(
            "plantwatch_influx_written_total",
            "counter",
            "Points written to InfluxDB.",
        )
        .sample(&[], load(&i.written));
        e.family(
            "plantwatch_influx_dropped_total",
            "counter",
            "Points dropped by the InfluxDB sink.",
        )
        .sample(&[], load(&i.dropped));
    }
    let mut f = e.family(
        "plantwatch_alarms_raised",
        "gauge",
        "Alarms raised now, by severity.",
    );
    for (severity, n) in ["low", "medium", "high", "critical"]
        .iter()
        .zip(&s.alarms.raised)
    {
        f.sample(&[("severity", severity)], load(n));
    }
    e.family(
        "plantwatch_alarm_changes_total",
        "counter",
        "Alarm changes (raise, ack, shelve, clear) published.",
    )
    .sample(&[], load(&s.alarms.changes));
    let mut f = e.family(
        "plantwatch_energy_events_total",
        "counter",
        "Energy counter wraps, resets, replacements and implausible jumps booked by the ledger.",
    );
    for ((device, point, kind), n) in s.energy_events.snapshot() {
        f.sample(&[("device", &device), ("point", &point), ("kind", kind)], n);
    }
    if !s.webhooks.is_empty() {
        let mut f = e.family(
            "plantwatch_webhook_notifications_total",
            "counter",
            "Alarm notifications per webhook by result.",
        );
        for (name, w) in &s.webhooks {
            for (result, v) in [
                ("sent", &w.sent),
                ("failed", &w.failed),
                ("dropped", &w.dropped),
            ] {
                f.sample(&[("webhook", name), ("result", result)], load(v));
            }
        }
    }
    if !s.restarts.is_empty() {
        let mut f = e.family(
            "plantwatch_task_restarts_total",
            "counter",
            "Times a supervised task (a sink) failed or panicked and was started again.",
        );
        for (name, r) in &s.restarts {
            f.sample(&[("task", name)], load(&r.total));
        }
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquire::DeviceStats;

    #[test]
    fn renders_counters_histograms_and_gauges_in_the_text_format() {
        let dev = Arc::new(DeviceStats::default());
        dev.polls_ok.store(7, Ordering::Relaxed);
        dev.observe_cycle(3_000);
        dev.observe_cycle(40_000);
        dev.observe_cycle(9_000_000);
        let sources = Sources {
            acquire: AcquireStats {
                devices: vec![("main-meter".into(), dev)],
            },
            mqtt: vec![
                ("mqtt".into(), Arc::new(MqttStats::default())),
                ("scada".into(), Arc::new(MqttStats::default())),
            ],
            ..Sources::default()
        };
        sources.outbox.rows.store(12, Ordering::Relaxed);
        sources.outbox.oldest_ms.store(1_000, Ordering::Relaxed);
        let text = render(&sources, 61_000);
        assert!(
            text.contains("plantwatch_poll_cycles_total{device=\"main-meter\",result=\"ok\"} 7"),
            "{text}"
        );
        assert!(text.contains(
            "plantwatch_poll_duration_seconds_bucket{device=\"main-meter\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "plantwatch_poll_duration_seconds_bucket{device=\"main-meter\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "plantwatch_poll_duration_seconds_bucket{device=\"main-meter\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("plantwatch_outbox_rows 12"));
        assert!(text.contains("plantwatch_outbox_oldest_age_seconds 60"));
        sources.mqtt[1].1.connected.store(1, Ordering::Relaxed);
        let text = render(&sources, 61_000);
        assert!(text.contains("plantwatch_mqtt_connected{sink=\"mqtt\"} 0"));
        assert!(text.contains("plantwatch_mqtt_connected{sink=\"scada\"} 1"));
        // Every sample line belongs to a declared metric family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} has no TYPE line"
            );
        }
    }

    #[test]
    fn energy_events_are_counted_by_device_point_and_kind() {
        use crate::process::counter::EventKind;
        let sources = Sources::default();
        let text = render(&sources, 0);
        assert!(text.contains("# TYPE plantwatch_energy_events_total counter"));
        assert!(!text.contains("plantwatch_energy_events_total{"), "{text}");
        for kind in [EventKind::Wrap, EventKind::Reset, EventKind::Wrap] {
            sources.energy_events.count("main-meter", "ep_import", kind);
        }
        let text = render(&sources, 0);
        for line in [
            "plantwatch_energy_events_total{device=\"main-meter\",point=\"ep_import\",kind=\"reset\"} 1",
            "plantwatch_energy_events_total{device=\"main-meter\",point=\"ep_import\",kind=\"wrap\"} 2",
        ] {
            assert!(text.contains(line), "{text}");
        }
    }
}
