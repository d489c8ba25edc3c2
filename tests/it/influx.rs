//! The InfluxDB sink end to end: against VictoriaMetrics (a real `/api/v2/write` started by the
//! test), against a scripted HTTP stub (batching, retries, rejections, shutdown), and against a
//! database that never answers (the queue sheds and counts; `offer` never waits).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plantwatch::clock::{Clock, SystemClock};
use plantwatch::config::Issues;
use plantwatch::config::influx::{Influx, RawInflux, resolve_influx};
use plantwatch::model::{BadReason, Name, PointSample, Quality, SampleBatch, Timestamp, Value};
use plantwatch::runtime::metrics::InfluxStats;
use plantwatch::sink::influx::{InfluxHandle, InfluxSink};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::harness::{eventually, eventually_async, within};

const VM_BIN: &str = "/usr/bin/victoria-metrics";

/// Resolves an `[influxdb]` section for `url`, with `extra` keys appended.
fn plan(url: &str, extra: &str) -> Influx {
    let text = format!("url = '{url}'\norg = 'plant'\nbucket = 'raw'\n{extra}");
    let raw: RawInflux = toml::from_str(&text).unwrap();
    let mut issues = Issues::default();
    let plan = resolve_influx(&raw, &mut issues);
    assert!(issues.is_empty(), "{:?}", issues.0);
    plan.unwrap()
}

fn spawn(plan: Influx, cancel: &CancellationToken) -> (InfluxHandle, Arc<InfluxStats>) {
    let stats = Arc::new(InfluxStats::default());
    let handle = InfluxSink::spawn(
        plan,
        &Name::new("hq").unwrap(),
        &Name::new("gw-1").unwrap(),
        stats.clone(),
        cancel.clone(),
    )
    .unwrap();
    (handle, stats)
}

fn point(name: &str, ts: i64, value: Option<Value>, quality: Quality) -> PointSample {
    PointSample {
        point: Name::new(name).unwrap(),
        ts: Timestamp(ts),
        value,
        quality,
    }
}

fn poll(device: &str, ts: i64, samples: Vec<PointSample>) -> SampleBatch {
    SampleBatch {
        device: Name::new(device).unwrap(),
        tick: Timestamp(ts),
        samples,
    }
}

/// A four-point poll (all good).
fn meter(device: &str, ts: i64, ua: f64) -> SampleBatch {
    poll(
        device,
        ts,
        vec![
            point("ua", ts, Some(Value::F64(ua)), Quality::Good),
            point("ub", ts, Some(Value::F64(ua + 1.0)), Quality::Good),
            point("starts", ts, Some(Value::I64(7)), Quality::Good),
            point("run", ts, Some(Value::Bool(true)), Quality::Good),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// VictoriaMetrics

/// A VictoriaMetrics process on a loopback port, killed on drop.
struct Vm {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Vm {
    /// Starts VictoriaMetrics and waits for `/health`; `None` when it is not installed.
    async fn start() -> Option<Vm> {
        if !Path::new(VM_BIN).exists() {
            return None;
        }
        // reqwest is built without a default TLS provider: ours is rustls with ring.
        let _first_install = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        // A port picked by binding :0 can be taken before VM binds it; then VM exits and we try
        // another one (bounded).
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let child = Command::new(VM_BIN)
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-storageDataPath={}", dir.path().display()))
                .arg("-retentionPeriod=1d")
                .arg("-loggerLevel=ERROR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut vm = Vm {
                child,
                base: format!("http://127.0.0.1:{port}"),
                _dir: dir,
            };
            // Healthy (true), or exited (false): the port was taken, try another.
            let healthy =
                eventually_async(Duration::from_secs(45), "victoria-metrics /health", || {
                    let exited = vm.child.try_wait().unwrap().is_some();
                    let health = http.get(format!("{}/health", vm.base)).send();
                    async move {
                        if exited {
                            return Ok(false);
                        }
                        match health.await {
                            Ok(r) if r.status().is_success() => Ok(true),
                            Ok(r) => Err(format!("/health answers {}", r.status())),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                })
                .await;
            if healthy {
                return Some(vm);
            }
        }
        panic!("victoria-metrics exited on start 3 times");
    }

    /// Every series whose name starts with `plantwatch_`, keyed by (name, device), after
    /// flushing VM's in-memory buffers so that fresh samples are searchable.
    async fn export(&self) -> BTreeMap<(String, String), serde_json::Value> {
        let http = reqwest::Client::new();
        http.get(format!("{}/internal/force_flush", self.base))
            .send()
            .await
            .unwrap();
        let text = http
            .get(
                reqwest::Url::parse_with_params(
                    &format!("{}/api/v1/export", self.base),
                    [("match[]", r#"{__name__=~"plantwatch_.*"}"#)],
                )
                .unwrap(),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|s| {
                let m = &s["metric"];
                (
                    (
                        m["__name__"].as_str().unwrap().to_owned(),
                        m["device"].as_str().unwrap_or_default().to_owned(),
                    ),
                    s,
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn samples_land_in_victoria_metrics_with_tags_and_timestamps() {
    let Some(vm) = Vm::start().await else {
        crate::harness::skip_without("victoria-metrics", ".ci/run installs it");
        return;
    };
    let cancel = CancellationToken::new();
    // batch_size 2: three polls go out as two requests (one by size, one by time).
    let (handle, stats) = spawn(
        plan(&vm.base, "batch_size = 2\nbatch_interval_ms = 50\n"),
        &cancel,
    );
    // Within VM's 1-day retention; whole milliseconds survive the round trip.
    let t0 = SystemClock.now().millis() - 60_000;
    let mut a1 = meter("meter-a", t0, 231.4);
    a1.samples
        .push(point("ep", t0, None, Quality::Bad(BadReason::Exception(2))));
    handle.offer(&a1);
    handle.offer(&meter("meter-b", t0 + 5, 229.9));
    handle.offer(&meter("meter-a", t0 + 1000, 231.6));
    eventually(Duration::from_secs(10), "12 points written", || {
        stats.written.load(Ordering::Relaxed) == 12
    })
    .await;
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);

    let series = eventually_async(Duration::from_secs(10), "8 series in VM", || async {
        let series = vm.export().await;
        if series.len() == 8 {
            Ok(series)
        } else {
            Err(format!("{:?}", series.keys().collect::<Vec<_>>()))
        }
    })
    .await;
    println!("victoria-metrics holds: {series:#?}");
    let keys: Vec<_> = series.keys().cloned().collect();
    let expected: Vec<(String, String)> = [
        ("plantwatch_run", "meter-a"),
        ("plantwatch_run", "meter-b"),
        ("plantwatch_starts", "meter-a"),
        ("plantwatch_starts", "meter-b"),
        ("plantwatch_ua", "meter-a"),
        ("plantwatch_ua", "meter-b"),
        ("plantwatch_ub", "meter-a"),
        ("plantwatch_ub", "meter-b"),
    ]
    .iter()
    .map(|(n, d)| ((*n).to_owned(), (*d).to_owned()))
    .collect();
    // The bad point `ep` was never written.
    assert_eq!(keys, expected);
    for s in series.values() {
        assert_eq!(s["metric"]["site"], "hq");
        assert_eq!(s["metric"]["gateway"], "gw-1");
    }
    let ua_a = &series[&("plantwatch_ua".to_owned(), "meter-a".to_owned())];
    assert_eq!(ua_a["values"], serde_json::json!([231.4, 231.6]));
    assert_eq!(ua_a["timestamps"], serde_json::json!([t0, t0 + 1000]));
    let ua_b = &series[&("plantwatch_ua".to_owned(), "meter-b".to_owned())];
    assert_eq!(ua_b["values"], serde_json::json!([229.9]));
    assert_eq!(ua_b["timestamps"], serde_json::json!([t0 + 5]));
    let starts = &series[&("plantwatch_starts".to_owned(), "meter-b".to_owned())];
    assert_eq!(starts["values"], serde_json::json!([7]));
    let run = &series[&("plantwatch_run".to_owned(), "meter-a".to_owned())];
    assert_eq!(run["values"], serde_json::json!([1, 1]));

    cancel.cancel();
    within(Duration::from_secs(5), "sink stops", handle.stopped()).await;
}

// ---------------------------------------------------------------------------------------------
// A scripted HTTP server

/// One request as received.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Answers each request with the next status of `script` (then `fallback`), forwarding what
/// it received.
async fn stub(script: Vec<u16>, fallback: u16) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(stream, tx.clone(), script.clone(), fallback));
        }
    });
    (addr, rx)
}

async fn serve(
    mut stream: TcpStream,
    tx: mpsc::UnboundedSender<Received>,
    script: Arc<Mutex<VecDeque<u16>>>,
    fallback: u16,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request: head up to the blank line, then Content-Length bytes.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let received = Received {
            head,
            body: String::new(),
        };
        let len: usize = received
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap());
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap();
        buf.drain(..head_end + len);
        let status = script.lock().unwrap().pop_front().unwrap_or(fallback);
        let _gone = tx.send(Received { body, ..received });
        let reply = if status == 204 {
            "HTTP/1.1 204 No Content\r\n\r\n".to_owned()
        } else {
            let text = r#"{"code":"scripted","message":"scripted failure"}"#;
            format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{text}",
                text.len()
            )
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    within(Duration::from_secs(10), "a request", rx.recv())
        .await
        .unwrap()
}

const FAST_RETRY: &str = "retry_min_ms = 20\nretry_max_ms = 80\ntimeout_ms = 2000\n";

#[tokio::test]
async fn requests_carry_the_token_the_query_and_line_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("influx-token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let (addr, mut rx) = stub(vec![], 204).await;
    let cancel = CancellationToken::new();
    let (handle, stats) = spawn(
        plan(
            &format!("http://{addr}/influx"),
            &format!(
                "token_file = '{}'\nmeasurement = 'plant power'\nbatch_interval_ms = 20\n",
                token.display()
            ),
        ),
        &cancel,
    );
    handle.offer(&poll(
        "meter-a",
        1_700_000_000_000,
        vec![
            point(
                "ua",
                1_700_000_000_003,
                Some(Value::F64(231.4)),
                Quality::Good,
            ),
            point(
                "model",
                1_700_000_000_001,
                Some(Value::Str("DTSU \"666\"".into())),
                Quality::Good,
            ),
            point(
                "ep",
                1_700_000_000_002,
                None,
                Quality::Bad(BadReason::Timeout),
            ),
        ],
    ));
    let r = next(&mut rx).await;
    assert!(
        r.head.starts_with(
            "POST /influx/api/v2/write?org=plant&bucket=raw&precision=ms HTTP/1.1\r\n"
        ),
        "{}",
        r.head
    );
    assert_eq!(r.header("authorization"), Some("Token s3cret-token"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        r.body,
        "plant\\ power,device=meter-a,gateway=gw-1,site=hq \
         ua=231.4,model=\"DTSU \\\"666\\\"\" 1700000000003\n"
    );
    eventually(Duration::from_secs(5), "2 points written", || {
        stats.written.load(Ordering::Relaxed) == 2
    })
    .await;
    cancel.cancel();
    within(Duration::from_secs(5), "sink stops", handle.stopped()).await;
}

#[tokio::test]
async fn batches_are_cut_by_size_and_by_time() {
    let (addr, mut rx) = stub(vec![], 204).await;
    let cancel = CancellationToken::new();
    let (handle, stats) = spawn(
        plan(
            &format!("http://{addr}"),
            "batch_size = 3\nbatch_interval_ms = 300\n",
        ),
        &cancel,
    );
    for i in 0..7 {
        handle.offer(&meter(&format!("m{i}"), 1_700_000_000_000 + i, 230.0));
    }
    let mut sizes = Vec::new();
    for _ in 0..3 {
        sizes.push(next(&mut rx).await.body.lines().count());
    }
    // Two full batches at once, the rest when the interval is up.
    assert_eq!(sizes, [3, 3, 1]);
    eventually(Duration::from_secs(5), "28 points written", || {
        stats.written.load(Ordering::Relaxed) == 28
    })
    .await;
    cancel.cancel();
    within(Duration::from_secs(5), "sink stops", handle.stopped()).await;
}

#[tokio::test]
async fn failed_writes_are_retried_until_one_succeeds() {
    let (addr, mut rx) = stub(vec![503, 500, 429], 204).await;
    let cancel = CancellationToken::new();
    let (handle, stats) = spawn(
        plan(
            &format!("http://{addr}"),
            &format!("{FAST_RETRY}batch_interval_ms = 20\n"),
        ),
        &cancel,
    );
    handle.offer(&meter("meter-a", 1_700_000_000_000, 231.4));
    let first = next(&mut rx).await;
    for _ in 0..3 {
        assert_eq!(next(&mut rx).await.body, first.body, "the same batch again");
    }
    eventually(Duration::from_secs(5), "4 points written", || {
        stats.written.load(Ordering::Relaxed) == 4
    })
    .await;
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    cancel.cancel();
    within(Duration::from_secs(5), "sink stops", handle.stopped()).await;
}

#[tokio::test]
async fn retries_are_bounded_then_the_points_count_as_dropped() {
    let (addr, mut rx) = stub(vec![], 500).await;
    let cancel = CancellationToken::new();
    let (handle, stats) = spawn(
        plan(
            &format!("http://{addr}"),
            &format!("{FAST_RETRY}batch_interval_ms = 20\nmax_attempts = 3\n"),
        ),
        &cancel,
    );
    handle.offer(&meter("meter-a", 1_700_000_000_000, 231.4));
    eventually(Duration::from_secs(5), "4 points dropped", || {
        stats.dropped.load(Ordering::Relaxed) == 4
    })
    .await;
    let mut attempts = 0;
    while rx.try_recv().is_ok() {
        attempts += 1;
    }
    assert_eq!(attempts, 3);
    assert_eq!(stats.written.load(Ordering::Relaxed), 0);
    cancel.cancel();
    within(Duration::from_secs(5), "sink stops", handle.stopped()).await;
}

#[tokio::test]
async fn a_rejected_batch_is_dropped_without_retrying() {
    let (addr, mut rx) = stub(vec![400], 204).await;
    let cancel = CancellationToken::new();
    let (handle, stats) = spawn(
        plan(
            &format!("http://{addr}"),
            &format!("{FAST_RETRY}batch_interval_ms = 20\n"),
        ),
        &cancel,
    );
    handle.offer(&meter("meter-a", 1_700_000_000_000, 231.4));
    eventually(Duration::from_secs(5), "4 points dropped", || {
        stats.dropped.load(Ordering::Relaxed) == 4
    })
    .await;
    next(&mut rx).await;
    // The next batch goes through: a rejection is not an outage of the database.
    handle.offer(&meter("meter-a", 1_700_000_001_000, 231.5));
    next(&mut rx).await;
    eventually(Duration::from_secs(5), "4 points written", || {
        stats.written.load(Ordering::Relaxed) == 4
    })
    .await;
    assert!(rx.try_recv().is_err(), "no retry of the rejected batch");
    cancel.cancel();
    within(Duration::from_secs(5), "sink stops", handle.stopped()).await;
}

#[tokio::test]
async fn dropping_every_handle_flushes_what_is_queued_and_stops() {
    let (addr, mut rx) = stub(vec![], 204).await;
    let cancel = CancellationToken::new();
    // The interval alone would hold these lines for a minute.
    let (handle, stats) = spawn(
        plan(&format!("http://{addr}"), "batch_interval_ms = 60000\n"),
        &cancel,
    );
    handle.offer(&meter("meter-a", 1_700_000_000_000, 231.4));
    handle.offer(&meter("meter-b", 1_700_000_000_000, 231.4));
    let stopped = handle.stopped();
    drop(handle);
    within(Duration::from_secs(5), "sink stops", stopped).await;
    assert_eq!(next(&mut rx).await.body.lines().count(), 2);
    assert_eq!(stats.written.load(Ordering::Relaxed), 8);
}

#[tokio::test]
async fn a_dead_database_never_blocks_offer_and_drops_are_counted() {
    // Accepts connections and never answers: the worst kind of dead.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let cancel = CancellationToken::new();
    let (handle, stats) = spawn(
        plan(
            &format!("http://{addr}"),
            "queue_capacity = 100\nbatch_size = 5\nbatch_interval_ms = 10\n\
             retry_min_ms = 10\nretry_max_ms = 10\nmax_attempts = 2\ntimeout_ms = 100\n",
        ),
        &cancel,
    );
    // `offer` is synchronous: on this single-threaded runtime the sink task cannot run until
    // the loop is over, so the queue takes exactly 100 points (25 polls) and sheds the rest.
    for i in 0..1000 {
        handle.offer(&meter("meter-a", 1_700_000_000_000 + i, 230.0));
    }
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 4000 - 100);
    assert_eq!(stats.written.load(Ordering::Relaxed), 0);
    // The queued 25 polls time out twice per batch of 5 and are dropped too.
    eventually(Duration::from_secs(20), "every point accounted for", || {
        stats.dropped.load(Ordering::Relaxed) == 4000
    })
    .await;
    assert_eq!(stats.written.load(Ordering::Relaxed), 0);
    // Once drained, the queue takes points again.
    handle.offer(&meter("meter-a", 1_700_000_002_000, 230.0));
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 4000);
    cancel.cancel();
    // Stopping while the database is down does not wait for it.
    within(Duration::from_secs(5), "sink stops", handle.stopped()).await;
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 4004);
    assert!(
        !held.lock().unwrap().is_empty(),
        "the sink did try to connect"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_failure_too() {
    let port = free_port();
    let cancel = CancellationToken::new();
    let (handle, stats) = spawn(
        plan(
            &format!("http://127.0.0.1:{port}"),
            "batch_interval_ms = 10\nretry_min_ms = 10\nretry_max_ms = 20\nmax_attempts = 3\n",
        ),
        &cancel,
    );
    handle.offer(&meter("meter-a", 1_700_000_000_000, 230.0));
    eventually(Duration::from_secs(10), "4 points dropped", || {
        stats.dropped.load(Ordering::Relaxed) == 4
    })
    .await;
    cancel.cancel();
    within(Duration::from_secs(5), "sink stops", handle.stopped()).await;
}

// Its plant comes from the `daemon` module, which is built with the `demo` feature.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_writes_every_poll_to_victoria_metrics() {
    let Some(vm) = Vm::start().await else {
        crate::harness::skip_without("victoria-metrics", ".ci/run installs it");
        return;
    };
    let (_sim, plant) = crate::daemon::plant(2, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[gateway]\nsite = \"hq\"\nid = \"gw-1\"\n\n[influxdb]\nurl = \"{}\"\norg = \"plant\"\nbucket = \"telemetry\"\nbatch_interval_ms = 200\n\n\
         [store]\npath = \"{}\"\n\n{plant}",
        vm.base,
        dir.path().join("state.db").display()
    );
    let daemon = crate::harness::daemon::Daemon::spawn(dir.path(), &config);
    let series = eventually_async(
        Duration::from_secs(30),
        "5 motor_temp samples of each PLC in VM",
        || async {
            let series = vm.export().await;
            let samples = |d: &str| {
                series
                    .get(&("plantwatch_motor_temp".to_owned(), d.to_owned()))
                    .and_then(|s| s["values"].as_array().map(Vec::len))
            };
            if samples("plc-1").unwrap_or(0) >= 5 && samples("plc-2").unwrap_or(0) >= 5 {
                Ok(series)
            } else {
                Err(format!(
                    "{:?} samples of plc-1, {:?} of plc-2\n{}",
                    samples("plc-1"),
                    samples("plc-2"),
                    daemon.log()
                ))
            }
        },
    )
    .await;
    let s = series
        .get(&("plantwatch_motor_temp".to_owned(), "plc-1".to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "motor_temp of plc-1 landed: {:?}\n{}",
                series.keys().collect::<Vec<_>>(),
                daemon.log()
            )
        });
    assert_eq!(s["metric"]["site"], "hq");
    assert_eq!(s["metric"]["gateway"], "gw-1");
    let values = s["values"].as_array().unwrap();
    assert!(values.len() >= 5, "every poll is written: {}", values.len());
    assert!(
        values
            .iter()
            .all(|v| (20.0..120.0).contains(&v.as_f64().unwrap())),
        "plausible temperatures: {values:?}"
    );
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("plantwatch_influx_written_total"),
        "{metrics}"
    );
}
