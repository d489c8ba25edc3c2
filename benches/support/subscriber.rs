//! The benches' MQTT subscriber: one client on the bench's runtime that hands every PUBLISH it
//! receives to a callback. The e2e bench counts telemetry with it, and its wire measurement
//! (`wire.rs`) counts bytes per message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Subscribes `client_id` to `filter` at `qos` on `broker` and calls `on_publish` with every
/// message, from a task on `rt`. Returns once the broker has acknowledged the subscription, or
/// after 5 s (the bench then reports what arrived, which shows the problem).
pub(crate) fn start(
    rt: &Runtime,
    broker: SocketAddr,
    client_id: &str,
    filter: &str,
    qos: QoS,
    mut on_publish: impl FnMut(&Publish) + Send + 'static,
) -> JoinHandle<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let mut o = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    o.set_max_packet_size(1 << 20, 1 << 20)
        .set_keep_alive(Duration::from_secs(30));
    let filter = filter.to_owned();
    let task = {
        let ready = ready.clone();
        rt.spawn(async move {
            let (client, mut ev) = AsyncClient::new(o, 100);
            client.subscribe(filter, qos).await.unwrap();
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => ready.store(true, Ordering::SeqCst),
                    Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&p),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    };
    for _ in 0..100 {
        if ready.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    task
}
