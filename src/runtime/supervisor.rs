//! Where the daemon's long-lived tasks are spawned: each is tracked (so shutdown can wait for
//! it, bounded) and named (so its end is logged); a sink is restarted with backoff when it
//! fails or panics, and its restarts are counted for `/metrics`.
//!
//! Invariants:
//! - a task spawned here is either running or has been waited for: nothing is detached;
//! - a restarting task stops for good only when its token is cancelled, never because it
//!   failed: a sink whose broker refuses it keeps its messages in the outbox and tries again;
//! - one failure is logged at ERROR; the repeats of the same failure are counted, not logged,
//!   until the task has run cleanly for a while again.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::sink::backoff::Backoff;

/// How long a restarted task must run before its next failure counts as new (logged again,
/// backoff from the start).
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Restarts of one task, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct Restarts {
    /// Times the task ended with an error or a panic and was started again.
    pub total: AtomicU64,
}

/// The set of tasks of one part of the daemon, with the token that stops them.
#[derive(Debug, Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new(CancellationToken::new())
    }
}

impl Supervisor {
    /// Tasks stopped by `cancel` (or by a parent of it).
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            cancel,
        }
    }

    /// A supervisor for a part that stops with this one, or on its own.
    pub fn child(&self) -> Self {
        Self::new(self.cancel.child_token())
    }

    /// The token that stops this part's tasks.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The tracker, for a component that spawns its own task (it is then waited for like
    /// any task spawned here).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Runs `task` until it returns; its end is logged if it panicked.
    pub fn spawn<F>(&self, name: &str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.to_owned();
        let inner = self.tracker.spawn(task);
        self.tracker.spawn(async move {
            if let Err(err) = inner.await
                && err.is_panic()
            {
                error!(task = %name, "Task panicked; it is not restarted.");
            }
        });
    }

    /// Runs the task that `make` builds, again and again with backoff (`min` doubling to
    /// `max`) whenever it fails or panics, until this supervisor's token is cancelled. `make`
    /// gets the token the task must stop on.
    pub fn spawn_restarting<M, F, E>(
        &self,
        name: &str,
        (min, max): (Duration, Duration),
        restarts: Arc<Restarts>,
        mut make: M,
    ) where
        M: FnMut(CancellationToken) -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let name = name.to_owned();
        let cancel = self.cancel.clone();
        let tracker = self.tracker.clone();
        self.tracker.spawn(async move {
            let mut backoff = Backoff::new(min, max);
            let mut failing = false;
            loop {
                let started = tokio::time::Instant::now();
                let run = tracker.spawn(make(cancel.clone()));
                let why = match run.await {
                    Ok(Ok(())) if cancel.is_cancelled() => return,
                    Ok(Ok(())) => "it stopped on its own".to_owned(),
                    Ok(Err(err)) => err.to_string(),
                    Err(err) if err.is_panic() => "it panicked".to_owned(),
                    Err(_) => return,
                };
                if cancel.is_cancelled() {
                    return;
                }
                if started.elapsed() >= HEALTHY_AFTER {
                    failing = false;
                    backoff.reset();
                }
                restarts.total.fetch_add(1, Ordering::Relaxed);
                let wait = backoff.next();
                if failing {
                    // Counted in plantwatch_task_restarts_total; the first one was logged.
                    tracing::debug!(task = %name, error = %why, "Task failed again; restarting.");
                } else {
                    error!(task = %name, error = %why, retry_in_ms = wait.as_millis(), "Task failed; restarting it (repeats are counted in plantwatch_task_restarts_total, not logged).");
                    failing = true;
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                info!(task = %name, "Task restarted.");
            }
        });
    }

    /// Stops taking tasks and waits up to `grace` for the running ones to return by
    /// themselves (their inputs closed). Returns whether they all did.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Cancels every task, then waits up to `grace` for them to return. Returns whether they
    /// all did; those that did not are left to the process exit, and logged.
    pub async fn stop(&self, what: &str, grace: Duration) -> bool {
        self.cancel.cancel();
        let done = self.drain(grace).await;
        if !done {
            warn!(
                part = what,
                grace_ms = grace.as_millis(),
                "Tasks did not stop within their grace period."
            );
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_is_restarted_with_backoff_until_cancelled() {
        let sup = Supervisor::default();
        let restarts = Arc::new(Restarts::default());
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        sup.spawn_restarting(
            "flaky",
            (Duration::from_secs(1), Duration::from_secs(8)),
            restarts.clone(),
            move |_cancel| {
                let runs = counted.clone();
                async move {
                    runs.fetch_add(1, Ordering::Relaxed);
                    Err::<(), _>("broker refused")
                }
            },
        );
        // Waits of at most 1, 2, 4 and 8 s: five runs fit in 16 s of paused time.
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert!(runs.load(Ordering::Relaxed) >= 5, "{runs:?}");
        assert_eq!(
            restarts.total.load(Ordering::Relaxed),
            runs.load(Ordering::Relaxed)
        );
        assert!(sup.stop("test", Duration::from_secs(1)).await);
        let after = runs.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::Relaxed), after, "no run after the stop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_too() {
        let sup = Supervisor::default();
        let restarts = Arc::new(Restarts::default());
        sup.spawn_restarting(
            "panicky",
            (Duration::from_millis(100), Duration::from_millis(100)),
            restarts.clone(),
            |_cancel| async move { Err::<(), String>("boom".into()).map_err(|e| panic!("{e}")) },
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(restarts.total.load(Ordering::Relaxed) >= 3);
        assert!(sup.stop("test", Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_on_its_token_is_not_restarted() {
        let sup = Supervisor::default();
        let restarts = Arc::new(Restarts::default());
        sup.spawn_restarting(
            "sink",
            (Duration::from_millis(100), Duration::from_secs(1)),
            restarts.clone(),
            |cancel: CancellationToken| async move {
                cancel.cancelled().await;
                Ok::<(), String>(())
            },
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(sup.stop("test", Duration::from_secs(1)).await);
        assert_eq!(restarts.total.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tasks_that_end_by_themselves_and_is_bounded() {
        let sup = Supervisor::default();
        sup.spawn("quick", tokio::time::sleep(Duration::from_secs(2)));
        assert!(sup.drain(Duration::from_secs(3)).await);
        let stuck = Supervisor::default();
        stuck.spawn("stuck", std::future::pending());
        let started = tokio::time::Instant::now();
        assert!(!stuck.drain(Duration::from_secs(3)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
