//! The loopback HTTP endpoint for `/metrics` (hyper, HTTP/1.1 only), behind the
//! [`super::listener`] limits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::listener::{ListenerLimits, accept_loop};
use super::metrics::{Sources, render};
use crate::clock::Clock;

/// Serves `GET /metrics` on `listener` until cancelled, within the default
/// [`ListenerLimits`]; `sources` is a watch so that a reload can swap in the new
/// generation's counters.
pub async fn serve(
    listener: TcpListener,
    sources: tokio::sync::watch::Receiver<Sources>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    serve_with_limits(listener, ListenerLimits::default(), sources, clock, cancel).await;
}

/// As [`serve`], within `limits`.
pub async fn serve_with_limits(
    listener: TcpListener,
    limits: ListenerLimits,
    sources: tokio::sync::watch::Receiver<Sources>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    accept_loop("metrics", listener, limits, cancel, move |stream, peer| {
        let sources = sources.clone();
        let clock = clock.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let body = if req.uri().path() == "/metrics" {
                Ok(render(&sources.borrow(), clock.now().0))
            } else {
                Err(())
            };
            async move {
                Ok::<_, Infallible>(match body {
                    Ok(text) => Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(Bytes::from(text)))
                        .unwrap_or_default(),
                    Err(()) => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(
                            b"plantwatch serves /metrics\n",
                        )))
                        .unwrap_or_default(),
                })
            }
        });
        async move {
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(peer = %peer, error = %err, "Metrics connection ended with an error.");
            }
        }
    })
    .await;
}

/// Binds the metrics address; only loopback is accepted by config validation.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a test spawns the peer or server it talks to"
)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// One `GET /metrics` on a new connection: the status line, or `None` if the connection
    /// was closed or did not answer within a second.
    async fn scrape(addr: SocketAddr) -> Option<String> {
        let attempt = async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).await.ok()?;
            text.lines().next().map(str::to_owned)
        };
        tokio::time::timeout(Duration::from_secs(1), attempt)
            .await
            .ok()
            .flatten()
    }

    /// Issue 20, defect 6: idle connections beyond the cap no longer hold descriptors, the
    /// ones within it are closed when no header comes, and a scrape is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue_20_idle_connections_over_the_cap_do_not_keep_metrics_from_answering() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ListenerLimits {
            max_connections: 8,
            header_timeout: Duration::from_millis(300),
            connection_timeout: Duration::from_secs(60),
        };
        let (_tx, sources) = tokio::sync::watch::channel(Sources::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve_with_limits(
            listener,
            limits,
            sources,
            Arc::new(crate::clock::SystemClock),
            cancel.clone(),
        ));
        let mut idle = Vec::new();
        for _ in 0..40 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Every idle connection is closed by the server: over the cap at once, the rest
        // when their header does not come.
        for s in &mut idle {
            let mut buf = [0u8; 16];
            let closed = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
            assert!(
                matches!(closed, Ok(Ok(0) | Err(_))),
                "an idle connection stayed open: {closed:?}"
            );
        }
        let mut answered = None;
        for _ in 0..20 {
            answered = scrape(addr).await;
            if answered.is_some() {
                break;
            }
        }
        assert_eq!(answered.as_deref(), Some("HTTP/1.1 200 OK"));
        cancel.cancel();
        task.await.unwrap();
    }
}
