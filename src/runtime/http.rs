//! The loopback HTTP endpoint for `/metrics` (hyper, HTTP/1.1 only).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::metrics::{Sources, render};
use crate::clock::Clock;

/// Serves `GET /metrics` on `listener` until cancelled; `sources` is a watch so that a reload
/// can swap in the new generation's counters.
pub async fn serve(
    listener: TcpListener,
    sources: tokio::sync::watch::Receiver<Sources>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    debug!(error = %err, "Metrics accept failed.");
                    continue;
                }
            },
        };
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
        tokio::spawn(async move {
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(peer = %peer, error = %err, "Metrics connection ended with an error.");
            }
        });
    }
}

/// Binds the metrics address; only loopback is accepted by config validation.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
