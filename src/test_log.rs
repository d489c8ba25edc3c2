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

/// Formatted log lines captured by [`capture`], for asserting on.
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How many times `needle` was logged so far.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

/// Runs `f` with this thread's log lines captured (the interest pinned, so a sibling test
/// cannot blind the capture); `f` may look at what is captured while it runs.
pub(crate) fn capture<T>(f: impl FnOnce(&Captured) -> T) -> (T, Captured) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _pin = pin_interest();
    let out = tracing::subscriber::with_default(subscriber, || f(&logs));
    (out, logs)
}
