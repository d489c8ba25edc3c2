//! Test support for asserting on log lines.
//!
//! tracing caches each callsite's interest for the whole process, computed
//! by whichever thread reaches it first. While only one dispatcher is
//! registered, tracing-core computes it from that thread's own default
//! subscriber, so a sibling test with none caches "never" and a scoped
//! capture installed with `set_default` goes blind to that event. With two
//! dispatchers alive it asks every registered one, the capture included.
//! (tracing-core 0.1.36 `callsite.rs`, `Rebuilder::JustOne`; the CI failure of stop 11.)

/// Keeps a second dispatcher registered while alive; create it before the
/// capturing subscriber and hold it until the assertions are done.
#[must_use = "the pin works only while it is held"]
pub(crate) struct InterestPin {
    _second: tracing::Dispatch,
}

/// Registers a do-nothing dispatcher so callsite interest is computed from
/// all registered subscribers, not from the registering thread's default.
pub(crate) fn pin_interest() -> InterestPin {
    InterestPin {
        _second: tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
    }
}
