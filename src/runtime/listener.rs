//! The accept loop every listening socket of the daemon goes through (the metrics port now;
//! the web console and DTU listeners later), so that no peer can use up its descriptors.
//!
//! 1,100 idle connections to the metrics port once took every file descriptor under the
//! default limit of 1024: Modbus and MQTT reconnects failed with "Too many open files", and
//! the accept loop spun at 100 % CPU retrying the same error. Here:
//! - at most [`ListenerLimits::max_connections`] connections are served at once; one more is
//!   accepted and closed at once, so the kernel's backlog never fills with them either;
//! - a connection lives at most [`ListenerLimits::connection_timeout`]; the request header
//!   must arrive within [`ListenerLimits::header_timeout`] (the protocol layer applies it);
//! - a failed accept (out of descriptors, say) pauses the loop instead of retrying at once,
//!   and is logged at most once a minute with a count.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::log_limit::{REPEAT_WINDOW, RepeatLimit};

/// How long the loop pauses after a failed accept: the error (EMFILE) repeats at once until
/// a descriptor is freed, so retrying at once only burns CPU.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What one listener allows its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time for a request's header to arrive, on a new connection and between requests.
    pub header_timeout: Duration,
    /// The longest a connection lives, busy or idle.
    pub connection_timeout: Duration,
}

impl Default for ListenerLimits {
    /// 32 connections (a scraper needs one), 5 s for a header, 60 s per connection: far below
    /// the default limit of 1024 descriptors, far above what a scrape takes.
    fn default() -> Self {
        Self {
            max_connections: 32,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(60),
        }
    }
}

/// Accepts on `listener` until `cancel` fires, serving each connection with `serve` within
/// `limits`; `name` names the listener in log lines.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: ListenerLimits,
    cancel: CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let failures = RepeatLimit::new(REPEAT_WINDOW);
    let refusals = RepeatLimit::new(REPEAT_WINDOW);
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(err) => {
                if let Some(left_out) = failures.admit("", crate::clock::monotonic()) {
                    warn!(listener = name, error = %err, left_out,
                        "Cannot accept a connection; pausing before the next try.");
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(left_out) = refusals.admit("", crate::clock::monotonic()) {
                warn!(listener = name, peer = %peer, max_connections = limits.max_connections, left_out,
                    "Connection limit reached; closing new connections until some end.");
            }
            drop(stream);
            continue;
        };
        let connection = serve(stream, peer);
        let lifetime = limits.connection_timeout;
        #[expect(
            clippy::disallowed_methods,
            reason = "a connection's task: bounded by its lifetime, counted against the listener's cap"
        )]
        tokio::spawn(async move {
            if tokio::time::timeout(lifetime, connection).await.is_err() {
                debug!(listener = name, peer = %peer, "Connection closed at its time limit.");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a test spawns the peer or server it talks to"
)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Reads until the peer closes; true if it did within `limit`.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 64];
        tokio::time::timeout(limit, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once_and_the_rest_at_their_time_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ListenerLimits {
            max_connections: 3,
            header_timeout: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(2),
        };
        let cancel = CancellationToken::new();
        // A peer that never speaks: the connection just waits.
        let task = tokio::spawn(accept_loop(
            "test",
            listener,
            limits,
            cancel.clone(),
            |s, _| async move {
                let _held = s;
                std::future::pending::<()>().await;
            },
        ));
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut early = 0;
        for s in &mut idle {
            if closed_within(s, Duration::from_millis(100)).await {
                early += 1;
            }
        }
        assert_eq!(early, 7, "the seven over the cap are closed at once");
        for s in &mut idle {
            assert!(closed_within(s, Duration::from_secs(5)).await, "time limit");
        }
        cancel.cancel();
        task.await.unwrap();
    }
}
