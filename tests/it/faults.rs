//! The state file under faults, with the real daemon binary: writes that fail, a full file
//! system, a lost write-ahead log and a corrupt file (issue 20). A tmpfs disk-full run needs
//! root and is in `tests/soak/disk_full.sh`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::daemon::{config, plant};
use crate::harness::daemon::Daemon;

/// Upper bound for anything a test here waits on.
const LIMIT: Duration = Duration::from_secs(60);

/// A port nothing listens on: no broker, so every message stays in the outbox.
fn no_broker() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `/metrics` sample value.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrapes `/metrics` until `done` holds for `name` (bounded); its last value.
async fn metric_until(daemon: &Daemon, name: &str, done: impl Fn(u64) -> bool) -> Option<u64> {
    let deadline = Instant::now() + LIMIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = metric(&daemon.metrics().await, name);
        if last.is_some_and(&done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// Receives datagrams until a `STATUS=` line satisfies `want` (bounded); that line, or every
/// status line seen.
fn status_until(sock: &UnixDatagram, want: impl Fn(&str) -> bool) -> Result<String, Vec<String>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else { break };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        for line in msg.lines().filter(|l| l.starts_with("STATUS=")) {
            if want(line) {
                return Ok(line.to_owned());
            }
            seen.push(line.to_owned());
        }
    }
    Err(seen)
}

/// A notify socket in `dir`, read with a timeout.
fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (sock, path.to_str().unwrap().to_owned())
}

/// Another process holding the state file's write lock (what a stuck `plantwatch export` or
/// a read-only file amounts to for the daemon): every write fails after the busy timeout. The
/// failures are counted in `/metrics`, shown in `STATUS=`, logged at ERROR once, and the
/// daemon says so when writes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_are_counted_shown_in_the_status_and_logged_once() {
    let (_sim, plant) = plant(1, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let (sock, sock_path) = notify_socket(dir.path());
    let daemon = Daemon::spawn_with_env(
        dir.path(),
        &config("f1", no_broker(), dir.path(), &plant, ""),
        // A 2 s watchdog makes the daemon refresh its status every second.
        &[
            ("NOTIFY_SOCKET", sock_path.as_str()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let enqueued = metric_until(&daemon, "plantwatch_outbox_enqueued_total", |v| v > 0).await;
    assert!(enqueued > Some(0), "polls are stored\n{}", daemon.log());
    assert_eq!(
        metric(
            &daemon.metrics().await,
            "plantwatch_store_write_failures_total"
        ),
        Some(0)
    );

    let lock = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let failures = metric_until(&daemon, "plantwatch_store_write_failures_total", |v| v >= 2).await;
    assert!(
        failures >= Some(2),
        "failed writes are counted: {failures:?}\n{}",
        daemon.log()
    );
    let status = status_until(&sock, |s| s.contains("store failing: writes failing for"));
    assert!(status.is_ok(), "{status:?}\n{}", daemon.log());
    assert_eq!(
        metric(&daemon.metrics().await, "plantwatch_store_degraded"),
        Some(0),
        "not yet degraded"
    );

    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let deadline = Instant::now() + LIMIT;
    while !daemon.log().contains("Store writes succeed again") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = daemon.log();
    assert!(log.contains("Store writes succeed again"), "{log}");
    assert_eq!(
        log.matches("Store writes fail;").count(),
        1,
        "one ERROR for the whole run of failures\n{log}"
    );
    let status = status_until(&sock, |s| !s.contains("store failing"));
    assert!(status.is_ok(), "the status is clear again: {status:?}");
}
