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

/// Checks `check` every 50 ms until it gives `Some`, failing the test after `limit`: the one
/// way a test waits for a state it cannot be told about (a file, a row, a counter), bounded in
/// time and count.
pub(crate) async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    // Bounded in count as well: 20 checks a second for at most an hour.
    for _ in 0..72_000 {
        if let Some(v) = check() {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not seen within {limit:?}")
}

/// [`eventually`] for a check that has to await its answer (a store query): polled every 50 ms
/// until it holds, failing the test after `limit`.
pub(crate) async fn eventually_async<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    for _ in 0..72_000 {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not seen within {limit:?}")
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
