//! Test harness: bounded waiting, configs on loopback, the real binary.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plantwatch::config::{EnvOverrides, Plan, load_str};

#[cfg(feature = "demo")]
pub(crate) mod commands;
pub(crate) mod daemon;
pub(crate) mod mosquitto;
pub(crate) mod proxy;
pub(crate) mod subscriber;

/// Resolves `text` as a config, panicking with every issue if it is invalid.
pub(crate) fn plan(text: &str) -> Plan {
    match load_str("test.toml", text, &EnvOverrides::Off, Path::new("."), None) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub(crate) async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// What a check given to [`eventually`] answers: the awaited value once the state holds, or
/// else what it saw instead (put in the failure message; empty when there is nothing to say).
/// `bool` and `Option` say only "not yet"; a `Result`'s error says what was seen.
pub(crate) trait Seen {
    /// What the wait gives back once the state holds.
    type Value;
    /// The value, or what was seen instead.
    fn seen(self) -> Result<Self::Value, String>;
}

impl Seen for bool {
    type Value = ();
    fn seen(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Seen for Option<T> {
    type Value = T;
    fn seen(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: std::fmt::Display> Seen for Result<T, E> {
    type Value = T;
    fn seen(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// The shortest pause between two checks, and at most how many checks a wait makes.
const EVERY: Duration = Duration::from_millis(50);
const MAX_CHECKS: u32 = 72_000;

/// The pause after a check that took `took`: [`EVERY`], or four times as long as the check if
/// that is longer, so that a heavy check (a scrape, a CLI run, a command and its reply) keeps
/// to a fifth of the time and does not starve the daemon it watches; at most a second, so that
/// a check that timed out waiting is soon tried again.
fn pause_after(took: Duration) -> Duration {
    EVERY.max(took * 4).min(Duration::from_secs(1))
}

/// The failure of a wait: `what`, the limit, and the last thing the check saw.
fn not_seen(what: &str, limit: Duration, last: &str) -> ! {
    if last.is_empty() {
        panic!("{what}: not seen within {limit:?}")
    }
    panic!("{what}: not seen within {limit:?}; last seen: {last}")
}

/// Checks `check` (at least 50 ms apart) until it holds, failing the test after `limit` with
/// the last thing it saw: the one way a test waits for a state it cannot be told about (a file,
/// a row, a counter), bounded in time and count.
pub(crate) async fn eventually<S: Seen>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> S,
) -> S::Value {
    eventually_async(limit, what, async || check()).await
}

/// [`eventually`] for a check that has to await its answer (a store query, a scrape, a
/// command's reply); it may borrow what it uses mutably.
pub(crate) async fn eventually_async<S: Seen>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> S,
) -> S::Value {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = String::new();
    for _ in 0..MAX_CHECKS {
        let started = tokio::time::Instant::now();
        match check().await.seen() {
            Ok(v) => return v,
            Err(seen) => last = seen,
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(pause_after(now - started)).await;
    }
    not_seen(what, limit, &last)
}

/// [`eventually`] for a test that runs on a plain thread (no runtime): blocks between checks.
pub(crate) fn eventually_blocking<S: Seen>(
    limit: Duration,
    what: &str,
    check: impl FnMut() -> S,
) -> S::Value {
    match poll_blocking(limit, check) {
        Ok(v) => v,
        Err(last) => not_seen(what, limit, &last),
    }
}

/// Waits (bounded) for `child` to exit: its status, or `None` if it still runs after `limit`
/// (the caller decides whether that fails the test, and kills it).
pub(crate) fn exited_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    poll_blocking(limit, || child.try_wait().unwrap()).ok()
}

/// The blocking loop behind [`eventually_blocking`] and [`exited_within`]: the value, or the
/// last thing the check saw once `limit` has passed.
fn poll_blocking<S: Seen>(
    limit: Duration,
    mut check: impl FnMut() -> S,
) -> Result<S::Value, String> {
    let deadline = std::time::Instant::now() + limit;
    let mut last = String::new();
    for _ in 0..MAX_CHECKS {
        let started = std::time::Instant::now();
        match check().seen() {
            Ok(v) => return Ok(v),
            Err(seen) => last = seen,
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(pause_after(now - started));
    }
    Err(last)
}

/// The plantwatch binary under test.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plantwatch"))
}

/// A finished run of the binary as a test reads it: exit code (-1 when killed), stdout, stderr.
pub(crate) fn finished(out: &std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skips a test whose outside peer is missing on a developer's machine, but fails it under
/// CI (`CI=true`), where `.ci/run` installs every peer: a skip there would hide a missing
/// install step.
pub(crate) fn skip_without(tool: &str, why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{tool} is missing under CI: {why}"
    );
    println!("skipped: {tool} not installed ({why})");
}

/// The simulator serving a plan's devices, with the plan pointed at where it serves them:
/// what the tests poll and run the daemon against. Derefs to the simulator.
pub(crate) struct Simulator {
    sim: plantwatch::sim::Simulator,
    /// The plan, its links rewritten to reach the simulator.
    pub(crate) plan: Plan,
}

impl Simulator {
    /// Serves every device of `plan` as `bind` says.
    pub(crate) async fn start(plan: &Plan, bind: plantwatch::sim::Bind) -> std::io::Result<Self> {
        let sim =
            plantwatch::sim::Simulator::start(plan.fleet(), plan.gateway.timezone, bind).await?;
        let plan = plan.with_links(&sim.links);
        Ok(Self { sim, plan })
    }

    /// Stops serving and waits for the servers to end.
    pub(crate) async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

impl std::ops::Deref for Simulator {
    type Target = plantwatch::sim::Simulator;

    fn deref(&self) -> &Self::Target {
        &self.sim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_gives_the_value_once_the_check_holds() {
        let mut checks = 0;
        let v = eventually(Duration::from_secs(5), "the third check", || {
            checks += 1;
            (checks == 3).then_some(checks * 10)
        })
        .await;
        assert_eq!((v, checks), (30, 3));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "a state that never holds: not seen within 1s; last seen: count = ")]
    async fn eventually_fails_naming_what_it_waited_for_and_what_it_saw_last() {
        let mut n = 0;
        eventually(Duration::from_secs(1), "a state that never holds", || {
            n += 1;
            Err::<(), _>(format!("count = {n}"))
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_async_check_may_borrow_mutably() {
        let mut seen = Vec::new();
        eventually_async(Duration::from_secs(5), "three checks", async || {
            tokio::task::yield_now().await;
            seen.push(seen.len());
            seen.len() == 3
        })
        .await;
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    #[should_panic(expected = "a file that never comes: not seen within 200ms")]
    fn eventually_blocking_fails_after_its_limit() {
        eventually_blocking(
            Duration::from_millis(200),
            "a file that never comes",
            || Path::new("/nonexistent/plantwatch-test").exists(),
        );
    }

    #[test]
    fn exited_within_gives_the_status_or_none_while_it_runs() {
        let mut done = std::process::Command::new("true").spawn().unwrap();
        let status = exited_within(&mut done, Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        let mut running = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let status = exited_within(&mut running, Duration::from_millis(200));
        running.kill().unwrap();
        running.wait().unwrap();
        assert!(status.is_none(), "{status:?}");
    }
}
