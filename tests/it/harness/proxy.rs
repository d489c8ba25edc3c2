//! A TCP proxy on loopback that a test can cut and restore: a real network outage between
//! the daemon and a broker that cannot itself be stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy from a loopback port to `upstream`.
pub(crate) struct Proxy {
    /// Where clients connect.
    pub(crate) addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    /// While true, bytes from the upstream are held back (the connection stays open).
    held: watch::Sender<bool>,
    /// Bytes clients sent upstream, over every connection.
    sent: Arc<AtomicU64>,
}

impl Proxy {
    /// Starts forwarding to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let gen_tx = generation.clone();
        let (held, _) = watch::channel(false);
        let held_tx = held.clone();
        let up2 = up.clone();
        let sent = Arc::new(AtomicU64::new(0));
        let sent2 = sent.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = gen_tx.subscribe();
                let held = held_tx.subscribe();
                let sent = sent2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if server_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    };
                    let down = async move {
                        let mut held = held;
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match server_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if held.wait_for(|h| !*h).await.is_err() {
                                return;
                            }
                            if client_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
            held,
            sent,
        }
    }

    /// Bytes clients have sent upstream so far, over every connection.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Holds back what the upstream sends (PUBACKs, say) until [`Self::release`].
    pub(crate) fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Forwards what was held back, and everything after.
    pub(crate) fn release(&self) {
        self.held.send_replace(false);
    }

    /// Drops every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
