//! A mosquitto of our own, for what the embedded broker cannot show (QoS downgrades, MQTT 5
//! topic aliases forwarded to a 3.1.1 subscriber).

use std::net::SocketAddr;
use std::time::Duration;

/// A mosquitto of our own on a free loopback port, stopped (by its pid) when dropped.
pub(crate) struct Mosquitto {
    child: std::process::Child,
    /// Its loopback port.
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts one; `MOSQUITTO` overrides /usr/sbin/mosquitto. Panics if it does not listen.
    pub(crate) fn start() -> Self {
        let bin = std::env::var("MOSQUITTO").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        // Owned by `Self` at once, so that every path (a panic too) stops it on drop.
        let broker = Self {
            child: std::process::Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
            port,
            _dir: dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        super::eventually_blocking(
            Duration::from_secs(15),
            &format!("mosquitto listening on {addr}"),
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)),
        );
        broker
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}
