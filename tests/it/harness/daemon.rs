//! The real `plantwatch run` binary in a temporary state directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::bin;

/// A running daemon process.
pub(crate) struct Daemon {
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// Its config file.
    pub(crate) config: PathBuf,
    /// Where `/metrics` is served.
    pub(crate) metrics: std::net::SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Writes `config` (with `[store] path` set to `dir`) and starts the daemon on it.
    pub(crate) fn spawn(dir: &Path, config: &str) -> Self {
        Self::spawn_with_env(dir, config, &[])
    }

    /// Like [`Daemon::spawn`], with extra environment variables (NOTIFY_SOCKET, …).
    pub(crate) fn spawn_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let path = dir.join("plantwatch.toml");
        std::fs::write(&path, config).unwrap();
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut d = Self {
            child: None,
            env,
            config: path,
            metrics,
        };
        d.start();
        d
    }

    /// Starts (again) on the same config and state.
    pub(crate) fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_extension("log"))
            .unwrap();
        let child = Command::new(bin())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args([
                "--metrics-listen",
                &self.metrics.to_string(),
                "--shutdown-grace-ms",
                "3000",
            ])
            .env("RUST_LOG", "info,rumqttc=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The process id, while running.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The daemon's log so far (for failure messages).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub(crate) fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`) with kill(1).
    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {pid}");
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let status = super::exited_within(self.child.as_mut()?, limit)?;
        self.child = None;
        status.code()
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// GET /metrics (bounded), or the empty string.
    pub(crate) async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let fetch = async {
            let mut s = tokio::net::TcpStream::connect(self.metrics).await.ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).await.ok()?;
            Some(body)
        };
        tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_hard();
    }
}
