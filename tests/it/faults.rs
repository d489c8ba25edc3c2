//! The state file under faults, with the real daemon binary: writes that fail, a lost
//! write-ahead log, a corrupt file and a clean stop (issue 20). A real full disk needs root
//! and a tmpfs: `tests/soak/disk_full.sh`.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use plantwatch::sink::mqtt::broker::EmbeddedBroker;

use crate::daemon::{config, plant};
use crate::harness::daemon::Daemon;
use crate::harness::subscriber::{Received, Subscriber};
use crate::harness::{eventually, eventually_async};

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

/// Scrapes `/metrics` until `done` holds for `name`, failing the test with `what` and the
/// daemon's log after [`LIMIT`]; the value.
async fn metric_until(daemon: &Daemon, name: &str, done: impl Fn(u64) -> bool, what: &str) -> u64 {
    eventually_async(LIMIT, what, async || {
        match metric(&daemon.metrics().await, name) {
            Some(v) if done(v) => Ok(v),
            last => Err(format!("{name} = {last:?}\n{}", daemon.log())),
        }
    })
    .await
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
    metric_until(
        &daemon,
        "plantwatch_outbox_enqueued_total",
        |v| v > 0,
        "polls are stored",
    )
    .await;
    assert_eq!(
        metric_until(
            &daemon,
            "plantwatch_store_write_failures_total",
            |_| true,
            "the failure count"
        )
        .await,
        0
    );

    let lock = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    metric_until(
        &daemon,
        "plantwatch_store_write_failures_total",
        |v| v >= 2,
        "failed writes are counted",
    )
    .await;
    let status = status_until(&sock, |s| s.contains("store failing: writes failing for"));
    assert!(status.is_ok(), "{status:?}\n{}", daemon.log());
    assert_eq!(
        metric_until(
            &daemon,
            "plantwatch_store_degraded",
            |_| true,
            "the degraded gauge"
        )
        .await,
        0,
        "not yet degraded\n{}",
        daemon.log()
    );

    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let log = eventually(LIMIT, "`Store writes succeed again` logged", || {
        let log = daemon.log();
        if log.contains("Store writes succeed again") {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await;
    assert_eq!(
        log.matches("Store writes fail;").count(),
        1,
        "one ERROR for the whole run of failures\n{log}"
    );
    let status = status_until(&sock, |s| !s.contains("store failing"));
    assert!(status.is_ok(), "the status is clear again: {status:?}");
}

/// `(device, seq)` → `ts` of every telemetry message; a pair seen with two different `ts` is a
/// seq used twice (a redelivery of the same message keeps its `ts`).
fn reused_seqs(got: &[Received]) -> Vec<String> {
    let mut first: HashMap<(String, u64), i64> = HashMap::new();
    let mut reused = Vec::new();
    for m in got.iter().filter(|m| m.topic.contains("/telemetry/")) {
        let j = m.json();
        let key = (
            j["device"].as_str().unwrap_or_default().to_owned(),
            j["seq"].as_u64().unwrap(),
        );
        let ts = j["ts"].as_i64().unwrap();
        if let Some(&was) = first.get(&key)
            && was != ts
        {
            reused.push(format!("{} seq {} at ts {was} and {ts}", key.0, key.1));
        }
        first.entry(key).or_insert(ts);
    }
    reused
}

/// Telemetry messages per device.
fn per_device(got: &[Received]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in got.iter().filter(|m| m.topic.contains("/telemetry/")) {
        let device = m.json()["device"].as_str().unwrap_or_default().to_owned();
        *out.entry(device).or_default() += 1;
    }
    out
}

/// Something done to a file.
type Damage = fn(&Path);

/// `kill -9`, then the WAL removed (what `cp state.db` alone amounts to), zeroed, or cut short,
/// then a restart: no seq the broker already has is used again for another message, and each
/// loss is logged at ERROR once and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_damaged_wal_never_lets_a_seq_be_used_twice() {
    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = plant(2, 50).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sub = Subscriber::start(broker.addr, "f2/#").await;
    let mut daemon = Daemon::spawn(
        dir.path(),
        &config("f2", broker.addr.port(), dir.path(), &plant, ""),
    );
    let wal = dir.path().join("state.db-wal");
    let damages: [(&str, Damage); 3] = [
        ("removed", |p| {
            let _gone = std::fs::remove_file(p);
        }),
        ("zeroed", |p| {
            let len = std::fs::metadata(p).map_or(0, |m| m.len());
            std::fs::write(p, vec![0u8; len as usize]).unwrap();
        }),
        ("cut short", |p| {
            let len = std::fs::metadata(p).map_or(0, |m| m.len());
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len / 2 + 100).unwrap();
        }),
    ];
    let mut all = Vec::new();
    for (round, (what, damage)) in damages.iter().enumerate() {
        let want = 10 * (round + 1);
        let got = sub
            .collect_until(LIMIT, |g| {
                let n = per_device(&[all.as_slice(), g].concat());
                n.len() == 2 && n.values().all(|&c| c >= want)
            })
            .await;
        all.extend(got);
        daemon.kill_hard();
        if wal.exists() {
            damage(&wal);
        }
        println!("round {round}: WAL {what}");
        daemon.start();
    }
    let got = sub
        .collect_until(LIMIT, |g| {
            let n = per_device(&[all.as_slice(), g].concat());
            n.len() == 2 && n.values().all(|&c| c >= 40)
        })
        .await;
    all.extend(got);
    let reused = reused_seqs(&all);
    assert!(
        reused.is_empty(),
        "seqs used twice: {reused:?}\n{}",
        daemon.log()
    );
    assert_eq!(
        per_device(&all).len(),
        2,
        "both devices kept delivering\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert_eq!(log.matches("State lost:").count(), 3, "{log}");
    metric_until(
        &daemon,
        "plantwatch_store_losses_total",
        |v| v == 3,
        "3 losses counted",
    )
    .await;
}

/// A main file that is not a database any more is moved aside after an ERROR and a fresh one
/// started, the loss is counted and in `STATUS=`; with `on_corrupt = "refuse"` the start fails
/// and the file stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_moved_aside_unless_refused() {
    let (_sim, plant) = plant(1, 50).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let (sock, sock_path) = notify_socket(dir.path());
    let mut daemon = Daemon::spawn_with_env(
        dir.path(),
        &config("f3", no_broker(), dir.path(), &plant, ""),
        &[
            ("NOTIFY_SOCKET", sock_path.as_str()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    metric_until(
        &daemon,
        "plantwatch_outbox_enqueued_total",
        |v| v > 0,
        "polls are stored",
    )
    .await;
    daemon.kill_hard();
    // Without its WAL, which could otherwise hold a good copy of the first page.
    let _gone = std::fs::remove_file(dir.path().join("state.db-wal"));
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..100].copy_from_slice(&[0x5a; 100]);
    std::fs::write(&db, &bytes).unwrap();
    daemon.start();
    metric_until(
        &daemon,
        "plantwatch_outbox_enqueued_total",
        |v| v > 0,
        "stores again",
    )
    .await;
    metric_until(
        &daemon,
        "plantwatch_store_losses_total",
        |v| v == 1,
        "1 loss counted",
    )
    .await;
    let status = status_until(&sock, |s| s.contains("state lost at start"));
    assert!(status.is_ok(), "{status:?}");
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("state.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let log = daemon.log();
    assert!(log.contains("moving it aside"), "{log}");

    // The same damage with `refuse`: the daemon does not start and moves nothing.
    daemon.kill_hard();
    let refuse_dir = tempfile::tempdir().unwrap();
    let copy = refuse_dir.path().join("state.db");
    std::fs::write(&copy, &bytes).unwrap();
    let mut refused = Daemon::spawn(
        refuse_dir.path(),
        &config(
            "f3r",
            no_broker(),
            refuse_dir.path(),
            &plant,
            "on_corrupt = \"refuse\"",
        ),
    );
    let code = refused.wait_exit(LIMIT);
    assert!(
        matches!(code, Some(c) if c != 0),
        "{code:?}\n{}",
        refused.log()
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        bytes,
        "the file is left alone"
    );
}

/// SIGTERM checkpoints: the main file holds everything and the WAL is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_everything_in_the_main_file() {
    let (_sim, plant) = plant(1, 50).await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(
        dir.path(),
        &config("f4", no_broker(), dir.path(), &plant, ""),
    );
    metric_until(
        &daemon,
        "plantwatch_outbox_enqueued_total",
        |v| v >= 20,
        "20 polls stored",
    )
    .await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    let db = dir.path().join("state.db");
    let wal = dir.path().join("state.db-wal");
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_len, 0, "the WAL was checkpointed\n{}", daemon.log());
    // Read the main file alone: nothing of the WAL may be needed.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let rows: u64 = conn
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(rows >= 20, "{rows} rows in the main file");
}
