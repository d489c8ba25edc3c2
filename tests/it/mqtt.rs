//! The MQTT session against a real broker (the embedded rumqttd) on loopback, with a TCP
//! proxy in between so that tests can cut the network. Each scenario runs over MQTT 3.1.1 and
//! over MQTT 5; the subscriber always speaks 3.1.1, so the v5 runs also cross protocols.
//! MQTT 5 topic aliases run against mosquitto, which forwards them soundly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plantwatch::clock::{Clock, SystemClock};
use plantwatch::config::daemon::{Mqtt, Protocol};
use plantwatch::model::Timestamp;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;
use plantwatch::sink::mqtt::inflight::RowId;
use plantwatch::sink::mqtt::{MqttStats, Outbox, OutboxError, OutboxItem, Rendered, Session};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::harness::eventually;
use crate::harness::mosquitto::Mosquitto;
use crate::harness::proxy::Proxy;
use crate::harness::subscriber::Subscriber;

/// An in-memory outbox: enough to test the session's delivery logic in isolation.
#[derive(Default)]
struct MemOutbox {
    rows: Mutex<BTreeMap<RowId, OutboxItem>>,
    next: Mutex<RowId>,
    /// What `newest` reports instead of the real newest row, to stand for rows stored just
    /// after the session connected without racing it.
    newest_override: Mutex<Option<RowId>>,
}

impl MemOutbox {
    fn push(&self, topic: &str, body: String) {
        self.push_at(topic, body, SystemClock.now());
    }
    fn push_at(&self, topic: &str, body: String, created: Timestamp) {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let item = OutboxItem {
            id: *next,
            topic: topic.into(),
            created,
            payload: body.into_bytes(),
        };
        self.rows.lock().unwrap().insert(*next, item);
    }
    fn len(&self) -> usize {
        self.rows.lock().unwrap().len()
    }
}

impl Outbox for MemOutbox {
    async fn fetch(
        &self,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, OutboxError> {
        let rows = self.rows.lock().unwrap();
        let from = after.map_or(RowId::MIN, |a| a + 1);
        Ok(rows
            .range(from..)
            .take(limit)
            .map(|(_, v)| v.clone())
            .collect())
    }
    async fn ack(&self, ids: Vec<RowId>) -> Result<(), OutboxError> {
        let mut rows = self.rows.lock().unwrap();
        for id in ids {
            rows.remove(&id);
        }
        Ok(())
    }
    async fn newest(&self) -> Result<Option<RowId>, OutboxError> {
        if let Some(newest) = *self.newest_override.lock().unwrap() {
            return Ok(Some(newest));
        }
        Ok(self.rows.lock().unwrap().keys().next_back().copied())
    }
    fn render(&self, item: &OutboxItem, backfill: bool) -> Option<Rendered> {
        let body = String::from_utf8(item.payload.clone()).ok()?;
        Some(Rendered {
            payload: format!("{{\"n\":{body},\"backfill\":{backfill}}}").into_bytes(),
            retain: false,
        })
    }
}

fn plan(port: u16, protocol: Protocol) -> Mqtt {
    Mqtt {
        name: plantwatch::model::Name::new("mqtt").unwrap(),
        format: plantwatch::config::daemon::Format::Json,
        sparkplug: None,
        host: "127.0.0.1".into(),
        port,
        client_id: format!("plantwatch-test-{protocol}-{port}"),
        topic_prefix: "pw/test".into(),
        qos: 1,
        keep_alive: Duration::from_secs(5),
        max_inflight: 16,
        reconnect: (Duration::from_millis(50), Duration::from_millis(400)),
        backfill_per_live: 4,
        username: None,
        password: None,
        tls: None,
        protocol,
        topic_aliases: false,
    }
}

/// The broker's listener for `protocol`.
fn listener(broker: &EmbeddedBroker, protocol: Protocol) -> SocketAddr {
    match protocol {
        Protocol::V311 => broker.addr,
        Protocol::V5 => broker.addr_v5,
    }
}

/// Waits (bounded) until the session's connected gauge shows `state`.
async fn wait_connected(stats: &MqttStats, state: u64) {
    eventually(
        Duration::from_secs(10),
        &format!("connected = {state}"),
        || {
            let now = stats.connected.load(std::sync::atomic::Ordering::Relaxed);
            if now == state {
                Ok(())
            } else {
                Err(format!("connected = {now}"))
            }
        },
    )
    .await;
}

/// Waits (bounded) until every row has been acknowledged and deleted, failing with `what`.
async fn wait_empty(outbox: &MemOutbox, what: &str) {
    eventually(Duration::from_secs(10), what, || match outbox.len() {
        0 => Ok(()),
        n => Err(format!("{n} rows left")),
    })
    .await;
}

fn numbers(got: &[crate::harness::subscriber::Received]) -> Vec<i64> {
    got.iter()
        .filter(|m| m.topic.starts_with("pw/test/telemetry"))
        .map(|m| m.json()["n"].as_i64().unwrap())
        .collect()
}

/// [`numbers`] in order, each once: what arrived, duplicates of a redelivery aside.
fn distinct_numbers(got: &[crate::harness::subscriber::Received]) -> Vec<i64> {
    let mut n = numbers(got);
    n.sort_unstable();
    n.dedup();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_once_in_order_and_leaves_the_outbox_on_its_puback() {
    every_row_arrives_once_in_order(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_every_row_arrives_once_in_order_and_leaves_the_outbox_on_its_puback() {
    every_row_arrives_once_in_order(Protocol::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stored_during_an_outage_arrive_afterwards_marked_backfill() {
    outage_is_replayed_as_backfill(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_rows_stored_during_an_outage_arrive_afterwards_marked_backfill() {
    outage_is_replayed_as_backfill(Protocol::V5).await;
}

/// Rows stored after the connection came up are live: they go out interleaved with the backlog,
/// one per `backfill_per_live` (4) backlog rows, instead of queueing behind all of it, and
/// unmarked; each kind keeps its own order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rows_interleave_with_a_long_backlog_instead_of_waiting_behind_it() {
    let broker = EmbeddedBroker::start().unwrap();
    let mut sub = Subscriber::start(broker.addr, "pw/test/#").await;
    let outbox = Arc::new(MemOutbox::default());
    // One topic, so that the broker's delivery order is the session's sending order.
    for n in 1..=400 {
        outbox.push_at("telemetry/d1", n.to_string(), Timestamp(1));
    }
    // Rows 401..=420 stand for rows stored right after the connection came up: the session
    // finds 400 as the newest row when it connects, and they were made after it started.
    *outbox.newest_override.lock().unwrap() = Some(400);
    for n in 401..=420 {
        outbox.push_at("telemetry/d1", n.to_string(), Timestamp(i64::MAX / 2));
    }
    let stats = Arc::new(MqttStats::default());
    let session = Session::new(
        plan(broker.addr.port(), Protocol::V311),
        outbox.clone(),
        Arc::new(Notify::new()),
        Arc::new(SystemClock),
        stats.clone(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(session.run(cancel.clone()));
    let got = sub
        .collect_until(Duration::from_secs(20), |g| numbers(g).len() >= 420)
        .await;
    let expected: Vec<i64> = (0..20)
        .flat_map(|i| std::iter::once(401 + i).chain((1..=4).map(move |k| 4 * i + k)))
        .chain(81..=400)
        .collect();
    assert_eq!(numbers(&got), expected);
    for m in got
        .iter()
        .filter(|m| m.topic.starts_with("pw/test/telemetry"))
    {
        let live = m.json()["n"].as_i64().unwrap() > 400;
        assert_eq!(m.json()["backfill"], !live, "{:?}", m.json());
    }
    wait_empty(&outbox, "every row acknowledged and deleted").await;
    cancel.cancel();
    task.await.unwrap().unwrap();
}

async fn every_row_arrives_once_in_order(protocol: Protocol) {
    let broker = EmbeddedBroker::start().unwrap();
    let mut sub = Subscriber::start(broker.addr, "pw/test/#").await;
    let outbox = Arc::new(MemOutbox::default());
    for n in 1..=200 {
        outbox.push("telemetry/d1", n.to_string());
    }
    let wake = Arc::new(Notify::new());
    let stats = Arc::new(MqttStats::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let session = Session::new(
        plan(listener(&broker, protocol).port(), protocol),
        outbox.clone(),
        wake.clone(),
        clock,
        stats.clone(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(session.run(cancel.clone()));
    let got = sub
        .collect_until(Duration::from_secs(20), |g| numbers(g).len() >= 200)
        .await;
    assert_eq!(numbers(&got), (1..=200).collect::<Vec<_>>(), "{protocol}");
    let status = got
        .iter()
        .find(|m| m.topic == "pw/test/status")
        .expect("status published");
    assert_eq!(status.json()["state"], "online");
    // Acks are processed after arrival; wait (bounded) for the outbox to empty.
    wait_empty(
        &outbox,
        &format!("{protocol}: every PUBACK deleted its row"),
    )
    .await;
    assert_eq!(stats.acked.load(std::sync::atomic::Ordering::Relaxed), 200);
    cancel.cancel();
    task.await.unwrap().unwrap();
    let offline = sub
        .collect_until(Duration::from_secs(5), |g| {
            g.iter().any(|m| m.topic == "pw/test/status")
        })
        .await;
    assert_eq!(
        offline.last().unwrap().json()["state"],
        "offline",
        "clean stop says offline"
    );
}

async fn outage_is_replayed_as_backfill(protocol: Protocol) {
    let broker = EmbeddedBroker::start().unwrap();
    let proxy = Proxy::start(listener(&broker, protocol)).await;
    let mut sub = Subscriber::start(broker.addr, "pw/test/#").await;
    let outbox = Arc::new(MemOutbox::default());
    let wake = Arc::new(Notify::new());
    let stats = Arc::new(MqttStats::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let session = Session::new(
        plan(proxy.addr.port(), protocol),
        outbox.clone(),
        wake.clone(),
        clock,
        stats.clone(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(session.run(cancel.clone()));
    wait_connected(&stats, 1).await;
    for n in 1..=20 {
        outbox.push("telemetry/d1", n.to_string());
        wake.notify_one();
    }
    let got = sub
        .collect_until(Duration::from_secs(20), |g| numbers(g).len() >= 20)
        .await;
    assert_eq!(numbers(&got), (1..=20).collect::<Vec<_>>());
    assert!(
        got.iter()
            .filter(|m| m.topic.contains("telemetry"))
            .all(|m| m.json()["backfill"] == false)
    );
    // The PUBACKs of rows 1..=20 may still be on their way; a row cut off before its PUBACK is
    // (rightly) sent again, so let them land first: this test is about rows stored meanwhile.
    wait_empty(
        &outbox,
        &format!("{protocol}: rows 1..=20 acknowledged before the cut"),
    )
    .await;

    proxy.cut();
    // Wait until the session noticed, then store rows while it is down.
    wait_connected(&stats, 0).await;
    for n in 21..=120 {
        outbox.push("telemetry/d1", n.to_string());
        wake.notify_one();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let got = sub
        .collect_until(Duration::from_secs(30), |g| {
            numbers(g).contains(&120) && distinct_numbers(g).len() >= 100
        })
        .await;
    let in_order = numbers(&got);
    let arrived = distinct_numbers(&got);
    assert_eq!(
        arrived,
        (21..=120).collect::<Vec<_>>(),
        "{protocol}: nothing lost"
    );
    let mut sorted = in_order.clone();
    sorted.sort_unstable();
    assert_eq!(
        in_order, sorted,
        "{protocol}: one device's rows arrive in order"
    );
    for m in got.iter().filter(|m| m.topic.contains("telemetry")) {
        assert_eq!(
            m.json()["backfill"],
            true,
            "{protocol}: stored during the outage: {:?}",
            m.json()
        );
    }
    // Every replayed row was acknowledged and left the outbox.
    wait_empty(&outbox, &format!("{protocol}: replayed rows acknowledged")).await;
    assert!(
        stats.connects.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "{protocol}: reconnected after the outage"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_pem_ca_stops_the_sink_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut p = plan(1, protocol);
        p.tls = Some(plantwatch::config::daemon::Tls {
            ca_file: ca.clone(),
            client_auth: None,
        });
        let session = Session::new(
            p,
            Arc::new(MemOutbox::default()),
            Arc::new(Notify::new()),
            Arc::new(SystemClock),
            Arc::new(MqttStats::default()),
        );
        let err = session.run(CancellationToken::new()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("mqtt.tls.ca_file: "), "{text}");
        assert!(text.contains("ca.pem"), "{text}");
    }
}

#[test]
fn the_embedded_broker_listens_on_loopback_only() {
    let broker = EmbeddedBroker::start().unwrap();
    assert!(broker.addr.ip().is_loopback());
    assert!(broker.addr_v5.ip().is_loopback());
    let _ = Timestamp(0);
}

/// Publishes `payload` retained at QoS 1 and waits (bounded) for the broker's PUBACK, from a
/// client allowed packets far larger than the session's 1 MiB.
async fn publish_retained(addr: SocketAddr, topic: &str, payload: Vec<u8>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(
        format!("retainer-{}", addr.port()),
        "127.0.0.1",
        addr.port(),
    );
    opts.set_max_packet_size(32 << 20, 32 << 20);
    let (client, mut events) = AsyncClient::new(opts, 10);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload)
        .await
        .unwrap();
    crate::harness::within(
        Duration::from_secs(10),
        "the retained publish's PUBACK",
        async {
            loop {
                if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                    break;
                }
            }
        },
    )
    .await;
    client.disconnect().await.unwrap();
    let _disconnected = tokio::time::timeout(Duration::from_secs(2), async {
        while events.poll().await.is_ok() {}
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_a_retained_oversized_command_costs_one_reconnect_and_telemetry_keeps_flowing() {
    oversized_retained_command(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_mqtt5_a_retained_oversized_command_costs_one_reconnect_and_telemetry_keeps_flowing()
 {
    oversized_retained_command(Protocol::V5).await;
}

/// Issue 20, defect 2: a retained command over the client's packet limit dropped the
/// connection, and the broker sent it again after every resubscribe: a reconnect loop that
/// held up telemetry. Now it costs one reconnect, after which commands stay off for a
/// cool-down, and rows stored meanwhile all arrive.
async fn oversized_retained_command(protocol: Protocol) {
    let broker = EmbeddedBroker::start().unwrap();
    publish_retained(broker.addr, "pw/test/cmd/list", vec![b'x'; 2 << 20]).await;
    let mut sub = Subscriber::start(broker.addr, "pw/test/telemetry/#").await;
    let outbox = Arc::new(MemOutbox::default());
    let wake = Arc::new(Notify::new());
    let stats = Arc::new(MqttStats::default());
    let (tx, mut commands) = tokio::sync::mpsc::channel(64);
    let session = Session::new(
        plan(listener(&broker, protocol).port(), protocol),
        outbox.clone(),
        wake.clone(),
        Arc::new(SystemClock),
        stats.clone(),
    )
    .with_downlink(tx);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(session.run(cancel.clone()));
    wait_connected(&stats, 1).await;
    // A poll every 50 ms for 3 s: long enough for a loop to show (the reconnect backoff is
    // 50 to 400 ms).
    for n in 1..=60 {
        outbox.push("telemetry/d1", n.to_string());
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = sub
        .collect_until(Duration::from_secs(20), |g| distinct_numbers(g).len() >= 60)
        .await;
    let arrived = distinct_numbers(&got);
    assert_eq!(
        arrived,
        (1..=60).collect::<Vec<_>>(),
        "{protocol}: every row arrived"
    );
    let connects = stats.connects.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        connects <= 2,
        "{protocol}: {connects} connections; the oversized command may cost one reconnect"
    );
    assert!(
        commands.try_recv().is_err(),
        "{protocol}: the oversized command never arrived"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// Issue 20, defect 2: a retained command reaches the core flagged, so that it is refused;
/// a live one is not flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_a_retained_command_is_handed_over_flagged_and_a_live_one_is_not() {
    let broker = EmbeddedBroker::start().unwrap();
    publish_retained(
        broker.addr,
        "pw/test/cmd/serviced",
        br#"{"id":"r1","device":"m"}"#.to_vec(),
    )
    .await;
    let sub = Subscriber::start(broker.addr, "pw/test/nothing").await;
    let stats = Arc::new(MqttStats::default());
    let (tx, mut commands) = tokio::sync::mpsc::channel(64);
    let session = Session::new(
        plan(broker.addr.port(), Protocol::V311),
        Arc::new(MemOutbox::default()),
        Arc::new(Notify::new()),
        Arc::new(SystemClock),
        stats.clone(),
    )
    .with_downlink(tx);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(session.run(cancel.clone()));
    let first = crate::harness::within(
        Duration::from_secs(10),
        "the retained command",
        commands.recv(),
    )
    .await
    .unwrap();
    assert_eq!((first.name.as_str(), first.retained), ("serviced", true));
    sub.publish("pw/test/cmd/serviced", br#"{"id":"l1","device":"m"}"#)
        .await;
    let live = crate::harness::within(Duration::from_secs(10), "the live command", commands.recv())
        .await
        .unwrap();
    assert_eq!(
        (live.payload.as_slice(), live.retained),
        (&br#"{"id":"l1","device":"m"}"#[..], false)
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_pubacks_arriving_while_stopping_delete_their_rows() {
    pubacks_while_stopping(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_mqtt5_pubacks_arriving_while_stopping_delete_their_rows() {
    pubacks_while_stopping(Protocol::V5).await;
}

/// Issue 20, defect 7: PUBACKs that arrived during shutdown were ignored, so delivered rows
/// stayed in the outbox and were sent again at the next start. The proxy holds the broker's
/// PUBACKs back until the session has been told to stop.
async fn pubacks_while_stopping(protocol: Protocol) {
    let broker = EmbeddedBroker::start().unwrap();
    let proxy = Proxy::start(listener(&broker, protocol)).await;
    let mut sub = Subscriber::start(broker.addr, "pw/test/telemetry/#").await;
    let outbox = Arc::new(MemOutbox::default());
    let wake = Arc::new(Notify::new());
    let stats = Arc::new(MqttStats::default());
    let session = Session::new(
        plan(proxy.addr.port(), protocol),
        outbox.clone(),
        wake.clone(),
        Arc::new(SystemClock),
        stats.clone(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(session.run(cancel.clone()));
    wait_connected(&stats, 1).await;
    proxy.hold();
    for n in 1..=12 {
        outbox.push("telemetry/d1", n.to_string());
        wake.notify_one();
    }
    // The broker has them all, so it has sent every PUBACK; the proxy holds them.
    let got = sub
        .collect_until(Duration::from_secs(20), |g| numbers(g).len() >= 12)
        .await;
    assert_eq!(numbers(&got), (1..=12).collect::<Vec<_>>(), "{protocol}");
    assert_eq!(
        outbox.len(),
        12,
        "{protocol}: no PUBACK reached the session yet"
    );
    cancel.cancel();
    proxy.release();
    crate::harness::within(Duration::from_secs(5), "the session's stop", task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outbox.len(),
        0,
        "{protocol}: every row the broker acknowledged is deleted, not resent at the next start"
    );
}

/// The first arrival of each row, in arrival order, split by the `backfill` flag.
fn streams(got: &[crate::harness::subscriber::Received]) -> (Vec<i64>, Vec<i64>) {
    let mut seen = std::collections::HashSet::new();
    let (mut backfill, mut live) = (Vec::new(), Vec::new());
    for m in got
        .iter()
        .filter(|m| m.topic.starts_with("pw/test/telemetry"))
    {
        let json = m.json();
        let n = json["n"].as_i64().unwrap();
        if seen.insert(n) {
            if json["backfill"] == true {
                backfill.push(n);
            } else {
                live.push(n);
            }
        }
    }
    (backfill, live)
}

/// Issue 20, defect 11, the ordering contract as the README states it: per device, order
/// holds within the live stream and within the backfill stream (`"backfill":true`); the two
/// interleave after an outage, so consumers order by `ts` or `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_after_an_outage_each_stream_keeps_its_order() {
    let broker = EmbeddedBroker::start().unwrap();
    let proxy = Proxy::start(broker.addr).await;
    let mut sub = Subscriber::start(broker.addr, "pw/test/#").await;
    let outbox = Arc::new(MemOutbox::default());
    let wake = Arc::new(Notify::new());
    let stats = Arc::new(MqttStats::default());
    let session = Session::new(
        plan(proxy.addr.port(), Protocol::V311),
        outbox.clone(),
        wake.clone(),
        Arc::new(SystemClock),
        stats.clone(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(session.run(cancel.clone()));
    wait_connected(&stats, 1).await;
    proxy.cut();
    wait_connected(&stats, 0).await;
    // Polls stored during the outage: one device, one topic.
    for n in 1..=600 {
        outbox.push("telemetry/d1", n.to_string());
    }
    proxy.restore();
    wait_connected(&stats, 1).await;
    // Polls stored after the connection came back are live.
    for n in 601..=660 {
        outbox.push("telemetry/d1", n.to_string());
        wake.notify_one();
        tokio::task::yield_now().await;
    }
    let got = sub
        .collect_until(Duration::from_secs(30), |g| {
            let (b, l) = streams(g);
            b.len() + l.len() >= 660
        })
        .await;
    let (backfill, live) = streams(&got);
    let mut all: Vec<i64> = backfill.iter().chain(&live).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=660).collect::<Vec<_>>(), "nothing lost");
    assert!(
        backfill.is_sorted(),
        "the backfill stream is in order: {backfill:?}"
    );
    assert!(live.is_sorted(), "the live stream is in order: {live:?}");
    assert!(
        backfill.iter().all(|&n| n <= 600) && live.iter().all(|&n| n > 600),
        "what was stored during the outage is backfill, the rest live"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// Issue 19: one run of MQTT 5 telemetry on two topics against mosquitto through a proxy,
/// across a reconnect; returns the bytes the session sent on the link.
async fn two_topics_across_a_reconnect(broker: &Mosquitto, topic_aliases: bool) -> u64 {
    let addr = SocketAddr::from(([127, 0, 0, 1], broker.port));
    let proxy = Proxy::start(addr).await;
    let mut sub = Subscriber::start(addr, "pw/test/telemetry/#").await;
    let outbox = Arc::new(MemOutbox::default());
    let wake = Arc::new(Notify::new());
    let stats = Arc::new(MqttStats::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let session = Session::new(
        Mqtt {
            topic_aliases,
            ..plan(proxy.addr.port(), Protocol::V5)
        },
        outbox.clone(),
        wake.clone(),
        clock,
        stats.clone(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(session.run(cancel.clone()));
    let topic = |n: i64| format!("telemetry/incomer-meter-{}", n % 2);
    // Each message must arrive under its own full topic, whatever named it on the link.
    let check = |got: &[crate::harness::subscriber::Received], from: i64, to: i64| {
        let mut seen: Vec<i64> = Vec::new();
        for m in got {
            let n = m.json()["n"].as_i64().unwrap();
            assert_eq!(m.topic, format!("pw/test/{}", topic(n)), "row {n}");
            seen.push(n);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen,
            (from..=to).collect::<Vec<_>>(),
            "aliases {topic_aliases}"
        );
    };
    wait_connected(&stats, 1).await;
    for n in 1..=40 {
        outbox.push(&topic(n), n.to_string());
        wake.notify_one();
    }
    let got = sub
        .collect_until(Duration::from_secs(20), |g| numbers(g).len() >= 40)
        .await;
    check(&got, 1, 40);
    wait_empty(&outbox, "rows 1-40 acknowledged").await;
    // A new connection: the aliases of the old one must not be used on it.
    proxy.cut();
    wait_connected(&stats, 0).await;
    for n in 41..=80 {
        outbox.push(&topic(n), n.to_string());
        wake.notify_one();
    }
    proxy.restore();
    wait_connected(&stats, 1).await;
    for n in 81..=120 {
        outbox.push(&topic(n), n.to_string());
        wake.notify_one();
    }
    let got = sub
        .collect_until(Duration::from_secs(30), |g| distinct_numbers(g).len() >= 80)
        .await;
    check(&got, 41, 120);
    wait_empty(&outbox, "rows 41-120 acknowledged after the reconnect").await;
    assert_eq!(
        stats.connects.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "no protocol error forced another reconnect"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
    proxy.sent()
}

/// Issue 19: with `topic_aliases`, an MQTT 5 sink names a topic it publishes often by the
/// alias the broker granted, set again on every connection: mosquitto (rumqttd 0.20 cannot
/// forward an aliased publish to a 3.1.1 subscriber) delivers every row under its full topic
/// before and after a reconnect, and the link carries about a topic less per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_19_mqtt5_topic_aliases_deliver_every_row_under_its_topic_across_a_reconnect() {
    let broker = Mosquitto::start();
    let plain = two_topics_across_a_reconnect(&broker, false).await;
    let aliased = two_topics_across_a_reconnect(&broker, true).await;
    // 120 publishes on a 33-byte topic; at most 4 name it in full (two topics, two
    // connections) and 4 more set an alias, the rest carry 3 property bytes instead of it.
    assert!(
        aliased + 100 * 25 < plain,
        "{aliased} bytes with aliases, {plain} without"
    );
}
