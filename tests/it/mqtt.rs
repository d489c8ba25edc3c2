//! The MQTT session against a real broker (the embedded rumqttd) on loopback, with a TCP
//! proxy in between so that tests can cut the network.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plantwatch::clock::{Clock, SystemClock};
use plantwatch::config::daemon::Mqtt;
use plantwatch::model::Timestamp;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;
use plantwatch::sink::mqtt::inflight::RowId;
use plantwatch::sink::mqtt::{MqttStats, Outbox, OutboxError, OutboxItem, Session};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::harness::proxy::Proxy;
use crate::harness::subscriber::Subscriber;

/// An in-memory outbox: enough to test the session's delivery logic in isolation.
#[derive(Default)]
struct MemOutbox {
    rows: Mutex<BTreeMap<RowId, OutboxItem>>,
    next: Mutex<RowId>,
}

impl MemOutbox {
    fn push(&self, topic: &str, body: String) {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let item = OutboxItem {
            id: *next,
            topic: topic.into(),
            created: SystemClock.now(),
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
        Ok(self.rows.lock().unwrap().keys().next_back().copied())
    }
    fn render(&self, item: &OutboxItem, backfill: bool) -> Option<Vec<u8>> {
        let body = String::from_utf8(item.payload.clone()).ok()?;
        Some(format!("{{\"n\":{body},\"backfill\":{backfill}}}").into_bytes())
    }
}

fn plan(port: u16) -> Mqtt {
    Mqtt {
        host: "127.0.0.1".into(),
        port,
        client_id: format!("plantwatch-test-{port}"),
        topic_prefix: "pw/test".into(),
        qos: 1,
        keep_alive: Duration::from_secs(5),
        max_inflight: 16,
        reconnect: (Duration::from_millis(50), Duration::from_millis(400)),
        backfill_per_live: 4,
        username: None,
        password: None,
        tls: None,
    }
}

/// Waits (bounded) until the session's connected gauge shows `state`.
async fn wait_connected(stats: &MqttStats, state: u64) {
    for _ in 0..200 {
        if stats.connected.load(std::sync::atomic::Ordering::Relaxed) == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("connected never became {state}");
}

fn numbers(got: &[crate::harness::subscriber::Received]) -> Vec<i64> {
    got.iter()
        .filter(|m| m.topic.starts_with("pw/test/telemetry"))
        .map(|m| m.json()["n"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_once_in_order_and_leaves_the_outbox_on_its_puback() {
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
        plan(broker.addr.port()),
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
    assert_eq!(numbers(&got), (1..=200).collect::<Vec<_>>());
    let status = got
        .iter()
        .find(|m| m.topic == "pw/test/status")
        .expect("status published");
    assert_eq!(status.json()["state"], "online");
    // Acks are processed after arrival; wait (bounded) for the outbox to empty.
    for _ in 0..100 {
        if outbox.len() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(outbox.len(), 0, "every PUBACK deleted its row");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stored_during_an_outage_arrive_afterwards_marked_backfill() {
    let broker = EmbeddedBroker::start().unwrap();
    let proxy = Proxy::start(broker.addr).await;
    let mut sub = Subscriber::start(broker.addr, "pw/test/#").await;
    let outbox = Arc::new(MemOutbox::default());
    let wake = Arc::new(Notify::new());
    let stats = Arc::new(MqttStats::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let session = Session::new(
        plan(proxy.addr.port()),
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
            numbers(g).contains(&120) && {
                let mut n = numbers(g);
                n.sort_unstable();
                n.dedup();
                n.len() >= 100
            }
        })
        .await;
    let mut arrived = numbers(&got);
    let in_order = arrived.clone();
    arrived.sort_unstable();
    arrived.dedup();
    assert_eq!(arrived, (21..=120).collect::<Vec<_>>(), "nothing lost");
    let mut sorted = in_order.clone();
    sorted.sort_unstable();
    assert_eq!(in_order, sorted, "one device's rows arrive in order");
    for m in got.iter().filter(|m| m.topic.contains("telemetry")) {
        assert_eq!(
            m.json()["backfill"],
            true,
            "stored during the outage: {:?}",
            m.json()
        );
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[test]
fn the_embedded_broker_listens_on_loopback_only() {
    let broker = EmbeddedBroker::start().unwrap();
    assert!(broker.addr.ip().is_loopback());
    let _ = Timestamp(0);
}
