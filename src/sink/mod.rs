//! Sinks: the I/O shell for outputs. Each sink is its own task; a slow sink never slows
//! polling or another sink (docs/design.md §1).

pub(crate) mod backoff;
pub mod influx;
pub mod mqtt;
pub mod platform_http;
pub mod platform_queue;
pub mod sparkplug;
pub mod webhook;

/// Spawns a store round trip (a fetch or an ack) that a session runs beside its event loop and
/// awaits or aborts itself: part of the session's task, so not a supervised task of its own.
pub(crate) fn spawn_round_trip<F>(round_trip: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[expect(
        clippy::disallowed_methods,
        reason = "owned and joined by the session that spawns it"
    )]
    let handle = tokio::spawn(round_trip);
    handle
}
