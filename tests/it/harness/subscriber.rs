//! An MQTT subscriber that records what actually arrived at the broker.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// One received message.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) retain: bool,
}

impl Received {
    /// The payload as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// A subscription to `filter` on the broker at `addr`.
pub(crate) struct Subscriber {
    rx: mpsc::Receiver<Received>,
    client: AsyncClient,
}

impl Subscriber {
    /// Connects, subscribes and waits for the SUBACK (bounded).
    pub(crate) async fn start(addr: SocketAddr, filter: &str) -> Self {
        let id = format!("test-sub-{}", rand_suffix());
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let (tx, rx) = mpsc::channel(100_000);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            r.send(()).ok();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("SUBACK within 10 s")
            .unwrap();
        Self { rx, client }
    }

    /// Publishes `payload` to `topic` at QoS 1 (a downlink command, say).
    pub(crate) async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
    }

    /// Receives until `done` is satisfied by what arrived, or `limit` passes; returns all.
    pub(crate) async fn collect_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::new();
        // Bounded in count as well as time.
        for _ in 0..1_000_000 {
            if done(&got) {
                break;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => got.push(m),
                _ => break,
            }
        }
        got
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id())
}
