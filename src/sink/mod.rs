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

/// `err` followed by each of its sources, so a log line or reply says why, not only what:
/// `error sending request: client error (Connect): invalid peer certificate: UnknownIssuer`
/// instead of reqwest's bare `error sending request`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    use std::fmt::Write as _;
    let mut text = err.to_string();
    let mut source = err.source();
    // Bounded: a cycle in a hand-written `source` would otherwise loop forever.
    for _ in 0..16 {
        let Some(s) = source else { break };
        let part = s.to_string();
        // Some layers repeat their source's text in their own; say it once.
        if !text.ends_with(&part) {
            let _infallible = write!(text, ": {part}");
        }
        source = s.source();
    }
    text
}
