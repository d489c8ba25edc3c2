//! An in-process MQTT broker (rumqttd) on loopback, for `plantwatch demo` and `cargo test`;
//! only in builds with the `demo` feature (a default one).
//!
//! rumqttd binds the address it is given and cannot report an ephemeral port, so a free port
//! is found by binding port 0 first; the short window in which another process could take it
//! is covered by retrying with a new port when the broker does not come up.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
#[error("embedded MQTT broker: {0}")]
pub struct BrokerError(String);

/// A running embedded broker. rumqttd has no shutdown: it lives until the process exits.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// Where clients connect (MQTT 3.1.1).
    pub addr: SocketAddr,
    /// Where MQTT 5 clients connect.
    pub addr_v5: SocketAddr,
}

fn free_port() -> Result<u16, BrokerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BrokerError(format!("no free loopback port: {e}")))
}

fn server(name: &str, listen: SocketAddr) -> ServerSettings {
    ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            // Above the client's 1 MiB packet limit, so that tests can send what a real broker
            // might: a message the client must survive without taking.
            max_payload_size: 16 << 20,
            max_inflight_count: 1000,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

fn up(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

impl EmbeddedBroker {
    /// Starts a broker on 127.0.0.1 and waits (bounded) until it accepts connections.
    ///
    /// # Errors
    /// When no port could be found or the broker did not come up after a few tries.
    pub fn start() -> Result<Self, BrokerError> {
        for _attempt in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let addr_v5 = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let config = Config {
                id: 0,
                router: RouterConfig {
                    max_connections: 10_010,
                    max_outgoing_packet_count: 1000,
                    max_segment_size: 100 * 1024 * 1024,
                    max_segment_count: 10,
                    ..RouterConfig::default()
                },
                v4: Some(HashMap::from([("1".to_owned(), server("v4", addr))])),
                v5: Some(HashMap::from([("1".to_owned(), server("v5", addr_v5))])),
                ..Config::default()
            };
            let spawned = std::thread::Builder::new()
                .name("mqtt-broker".into())
                .spawn(move || {
                    let mut broker = rumqttd::Broker::new(config);
                    if let Err(err) = broker.start() {
                        tracing::error!(error = %err, "Embedded MQTT broker stopped.");
                    }
                });
            if let Err(e) = spawned {
                return Err(BrokerError(format!("cannot start its thread: {e}")));
            }
            for _ in 0..50 {
                if up(addr) && up(addr_v5) {
                    return Ok(Self { addr, addr_v5 });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(BrokerError(
            "did not accept connections on loopback after 5 tries".into(),
        ))
    }
}
