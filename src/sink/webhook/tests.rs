//! The webhook sink against a loopback HTTP server: signatures, bodies, retries, digests.
#![allow(
    clippy::disallowed_methods,
    reason = "a test spawns the peer or server it talks to"
)]

use super::bucket::TokenBucket;
use super::classify::{Outcome, classify};
use super::encode::{LINE_BUDGET, TEXT_BUDGET, format_utc, line, text};
use super::sign::hmac_sha256;
use super::*;
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::time::Instant;

use reqwest::Url;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// Fixed clock: 2026-11-29 08:00:00 UTC.
const NOW_MS: i64 = 1_795_939_200_000;
const WAIT: Duration = Duration::from_secs(5);

/// One request as the test server saw it.
#[derive(Debug)]
struct Seen {
    path: String,
    raw_query: String,
    query: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

type Responder = Arc<dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync>;

/// Loopback HTTP/1 server on an ephemeral port; every request is
/// reported on the channel and answered by `responder(request, index)`.
async fn serve(responder: Responder) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, responder, count) = (tx.clone(), responder.clone(), count.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (tx, responder, count) = (tx.clone(), responder.clone(), count.clone());
                    async move {
                        let path = req.uri().path().to_owned();
                        let raw_query = req.uri().query().unwrap_or("").to_owned();
                        let bytes = req.into_body().collect().await.unwrap().to_bytes();
                        // Decoded with url's form decoder, independent of
                        // the encoder under test.
                        let query = Url::parse(&format!("http://x/?{raw_query}"))
                            .unwrap()
                            .query_pairs()
                            .into_owned()
                            .collect();
                        let seen = Seen {
                            path,
                            raw_query,
                            query,
                            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                        };
                        let idx = count.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = responder(&seen, idx);
                        let _receiver_gone = tx.send(seen);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _connection_ended = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a request")
        .expect("server gone")
}

/// All requests the server saw (call after `close`).
fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut v = Vec::new();
    while let Ok(s) = rx.try_recv() {
        v.push(s);
    }
    v
}

fn cfg(name: &str, url: String, format: Format) -> WebhookConfig {
    WebhookConfig {
        timeout: WAIT,
        max_retries: 3,
        // Retry tests stay fast; the doubling and the cap are the same.
        retry_base: Duration::from_millis(20),
        rate_per_minute: 6000,
        digest_after: 1000,
        ..WebhookConfig::new(name, url, format)
    }
}

fn notif(device: &str, severity: Severity, state: &str) -> Notification {
    Notification {
        device: device.to_owned(),
        rule: "bearing-hot".to_owned(),
        id: format!("{device}-a1"),
        state: state.to_owned(),
        severity,
        message: "bearing 92.3 °C above 90".to_owned(),
        value: Some(92.3),
        limit: Some(90.0),
        ts_ms: NOW_MS,
        site: "site-a".to_owned(),
        gateway: "gw-1".to_owned(),
    }
}

fn spawn(c: WebhookConfig) -> (NotifierHandle, Arc<WebhookStats>) {
    let stats = Arc::new(WebhookStats::default());
    let h = Notifier::spawn(c, stats.clone(), CancellationToken::new(), || NOW_MS).unwrap();
    (h, stats)
}

async fn close(h: NotifierHandle) {
    timeout(WAIT, h.close()).await.expect("close timed out");
}

fn counts(s: &WebhookStats) -> [u64; 4] {
    [
        s.sent.load(Ordering::SeqCst),
        s.failed.load(Ordering::SeqCst),
        s.dropped.load(Ordering::SeqCst),
        s.digests.load(Ordering::SeqCst),
    ]
}

fn reply(status: u16, body: &str) -> (u16, String) {
    (status, body.to_owned())
}

// Known answers computed with Python, independent of this code:
// python3 -c "import hmac,hashlib,base64,urllib.parse as u; s='this is secret'; t=1795939200000; print(u.quote_plus(base64.b64encode(hmac.new(s.encode(), f'{t}\n{s}'.encode(), hashlib.sha256).digest())))"
const DING_SECRET: &str = "this is secret";
const DING_SIGN: &str = "ynaZu0LXtnf%2BpPErk5DG%2F8BaAzR7bzNrV9zZMaOhtxA%3D";
// python3 -c "import hmac,hashlib,base64; s='this is secret'; t=1795939200; print(base64.b64encode(hmac.new(f'{t}\n{s}'.encode(), b'', hashlib.sha256).digest()).decode())"
const FEISHU_SECRET: &str = "this is secret";
const FEISHU_SIGN: &str = "vB7JGtgTu/FS8KjU3gfQkHikq7RlGK39gvQ54b5/zwI=";

#[test]
fn dingtalk_sign_known_answers() {
    assert_eq!(dingtalk_sign(DING_SECRET, NOW_MS), DING_SIGN);
    // python3 -c "...s='SEC000000000000000000000000000000000000000000000000000000000000test'; t=1764403200000 ..." (same formula)
    assert_eq!(
        dingtalk_sign(
            "SEC000000000000000000000000000000000000000000000000000000000000test",
            1_764_403_200_000
        ),
        "rZcYPA5aJ7XkrB%2BAuiDJQhBwzzuq81Q5HNs7KmBQg3w%3D"
    );
}

#[test]
fn feishu_sign_known_answers() {
    assert_eq!(feishu_sign(FEISHU_SECRET, NOW_MS / 1000), FEISHU_SIGN);
    // python3 -c "...s='feishu-secret-123'; t=1764403200 ..." (same formula)
    assert_eq!(
        feishu_sign("feishu-secret-123", 1_764_403_200),
        "MHdQwPcillks42vGm+0+ppU9+pBsFgq+CXykcV34F9o="
    );
}

#[test]
fn utc_formatting_known_answers() {
    // python3 -c "import datetime as d; print(d.datetime.fromtimestamp(1795939200, d.timezone.utc))"
    assert_eq!(format_utc(NOW_MS), "2026-11-29 08:00:00 UTC");
    assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
    assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
}

#[test]
fn severity_is_ordered() {
    assert!(Severity::Low < Severity::Medium);
    assert!(Severity::Medium < Severity::High);
    assert!(Severity::High < Severity::Critical);
}

#[test]
fn single_line_text() {
    let raise = line(&notif("motor-1", Severity::High, "active"));
    assert_eq!(
        raise,
        "【告警】[high] ACTIVE motor-1 bearing-hot: bearing 92.3 °C above 90 \
         (value 92.3, limit 90, site-a/gw-1, 2026-11-29 08:00:00 UTC, id motor-1-a1)"
    );
    let clear = line(&notif("motor-1", Severity::High, "cleared"));
    assert!(
        clear.starts_with("【恢复】[high] CLEARED motor-1 bearing-hot"),
        "{clear}"
    );
    let other = line(&notif("motor-1", Severity::Low, "acked"));
    assert!(other.starts_with("【通知】[low] ACKED motor-1"), "{other}");
}

#[test]
fn robot_bodies_have_documented_shape() {
    let one = [notif("motor-1", Severity::High, "active")];
    let w = render(Format::Wecom, &one);
    assert_eq!(w["msgtype"], "markdown");
    assert_eq!(w["markdown"]["content"], line(&one[0]));
    let d = render(Format::Dingtalk, &one);
    assert_eq!(d["msgtype"], "markdown");
    assert_eq!(d["markdown"]["title"], "【告警】motor-1 bearing-hot");
    assert_eq!(d["markdown"]["text"], line(&one[0]));
    let f = render(Format::Feishu, &one);
    assert_eq!(
        f,
        json!({"msg_type": "text", "content": {"text": line(&one[0])}})
    );
}

#[test]
fn digest_is_counted_and_most_severe_first() {
    let batch = [
        notif("m1", Severity::Low, "active"),
        notif("m2", Severity::Critical, "active"),
        notif("m3", Severity::Medium, "cleared"),
        notif("m4", Severity::High, "active"),
    ];
    let t = text(&batch, "\n");
    assert!(
        t.starts_with("【告警汇总】4 条通知 / 4 notifications (3 ACTIVE, 1 CLEARED)"),
        "{t}"
    );
    let order: Vec<usize> = ["[critical]", "[high]", "[medium]", "[low]"]
        .iter()
        .map(|s| t.find(s).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{t}");
    assert!(t.contains("\n1. 【告警】[critical] ACTIVE m2"), "{t}");
    // DingTalk separates lines as paragraphs.
    let d = render(Format::Dingtalk, &batch);
    assert!(d["markdown"]["text"].as_str().unwrap().contains("\n\n1. "));
    assert_eq!(d["markdown"]["title"], "【告警汇总】4 notifications");
}

#[test]
fn digest_text_is_bounded() {
    let batch: Vec<Notification> = (0..300)
        .map(|i| notif(&format!("m{i}"), Severity::Low, "active"))
        .collect();
    let t = text(&batch, "\n");
    assert!(t.len() <= TEXT_BUDGET, "{}", t.len());
    assert!(t.starts_with("【告警汇总】300 条通知"));
    assert!(t.contains(" more"), "{t}");
    let long = Notification {
        message: "é".repeat(5000),
        ..notif("m", Severity::Low, "active")
    };
    assert!(line(&long).len() <= LINE_BUDGET);
}

#[test]
fn classification() {
    use Format::*;
    let ok = |f, s, b: &str| classify(f, s, b.as_bytes(), None);
    assert_eq!(
        ok(Wecom, 200, r#"{"errcode":0,"errmsg":"ok"}"#),
        Outcome::Delivered
    );
    assert!(matches!(
        ok(
            Wecom,
            200,
            r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
        ),
        Outcome::Retry { .. }
    ));
    assert!(
        matches!(ok(Wecom, 200, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#), Outcome::Permanent(m) if m.contains("invalid webhook url"))
    );
    assert!(matches!(
        ok(
            Dingtalk,
            200,
            r#"{"errcode":130101,"errmsg":"send too fast"}"#
        ),
        Outcome::Retry { .. }
    ));
    assert!(matches!(
        ok(
            Dingtalk,
            200,
            r#"{"errcode":310000,"errmsg":"sign not match"}"#
        ),
        Outcome::Permanent(_)
    ));
    assert_eq!(
        ok(Feishu, 200, r#"{"code":0,"msg":"success","StatusCode":0}"#),
        Outcome::Delivered
    );
    assert_eq!(
        ok(Feishu, 200, r#"{"StatusCode":0,"StatusMessage":"success"}"#),
        Outcome::Delivered
    );
    assert!(matches!(
        ok(Feishu, 400, r#"{"code":11232,"msg":"frequency limited"}"#),
        Outcome::Retry { .. }
    ));
    assert!(matches!(
        ok(Feishu, 200, r#"{"code":19021,"msg":"sign match fail"}"#),
        Outcome::Permanent(_)
    ));
    assert!(matches!(ok(Feishu, 200, "<html>"), Outcome::Permanent(_)));
    assert_eq!(ok(Generic, 204, ""), Outcome::Delivered);
    assert!(matches!(ok(Generic, 404, ""), Outcome::Permanent(_)));
    assert!(matches!(ok(Generic, 502, ""), Outcome::Retry { .. }));
    assert_eq!(
        classify(Generic, 429, b"", Some(Duration::from_secs(7))),
        Outcome::Retry {
            reason: "HTTP 429".to_owned(),
            after: Some(Duration::from_secs(7))
        }
    );
}

#[test]
fn token_bucket_spaces_requests() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(60, t0);
    assert_eq!(b.try_take(t0), Ok(()));
    let wait = b.try_take(t0).unwrap_err();
    assert!(
        wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert_eq!(b.try_take(t0 + Duration::from_secs(1)), Ok(()));
    // Capacity 1: a long idle period does not allow a burst.
    let later = t0 + Duration::from_secs(100);
    assert_eq!(b.try_take(later), Ok(()));
    assert!(b.try_take(later).is_err());
}

#[test]
fn config_is_validated_without_echoing_the_url() {
    let secret_url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRETKEY";
    let bad = |c: WebhookConfig| {
        // A current-thread runtime exists so only the config is judged.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _g = rt.enter();
        let e = Notifier::spawn(c, Arc::default(), CancellationToken::new(), || 0).unwrap_err();
        let s = e.to_string();
        assert!(!s.contains("SECRETKEY"), "{s}");
        s
    };
    let base = WebhookConfig::new("w", secret_url, Format::Wecom);
    assert!(
        bad(WebhookConfig {
            rate_per_minute: 0,
            ..base.clone()
        })
        .contains("rate_per_minute")
    );
    assert!(
        bad(WebhookConfig {
            secret: Some("x".into()),
            ..base.clone()
        })
        .contains("secret")
    );
    assert!(
        bad(WebhookConfig {
            url: "ftp://h/?key=SECRETKEY".into(),
            ..base.clone()
        })
        .contains("http")
    );
    assert!(
        bad(WebhookConfig {
            url: "not a url SECRETKEY".into(),
            ..base.clone()
        })
        .contains("url")
    );
    let e = Notifier::spawn(base, Arc::default(), CancellationToken::new(), || 0).unwrap_err();
    assert!(matches!(e, WebhookError::NoRuntime { .. }));
}

#[test]
fn debug_redacts_url_and_secret() {
    let c = WebhookConfig {
        secret: Some("SECsupersecret".into()),
        ..WebhookConfig::new(
            "ding",
            "https://oapi.dingtalk.com/robot/send?access_token=TOKEN123",
            Format::Dingtalk,
        )
    };
    let d = format!("{c:?}");
    assert!(
        !d.contains("TOKEN123") && !d.contains("SECsupersecret"),
        "{d}"
    );
    assert!(d.contains("oapi.dingtalk.com") && d.contains("ding"), "{d}");
}

#[tokio::test]
async fn dingtalk_signed_request_passes_and_wrong_secret_fails_permanently() {
    // The server recomputes the signature from the timestamp it received,
    // like DingTalk does, and answers 310000 when it does not match.
    let responder: Responder = Arc::new(|s: &Seen, _| {
        let ts: i64 = s.param("timestamp").unwrap_or("0").parse().unwrap_or(0);
        let expect = BASE64.encode(hmac_sha256(
            DING_SECRET.as_bytes(),
            format!("{ts}\n{DING_SECRET}").as_bytes(),
        ));
        if s.param("sign") == Some(expect.as_str()) && s.param("access_token") == Some("tok") {
            reply(200, r#"{"errcode":0,"errmsg":"ok"}"#)
        } else {
            reply(
                200,
                r#"{"errcode":310000,"errmsg":"sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}"#,
            )
        }
    });
    let (base, mut rx) = serve(responder).await;
    let url = format!("{base}/robot/send?access_token=tok");

    let good = WebhookConfig {
        secret: Some(DING_SECRET.into()),
        ..cfg("ding-ok", url.clone(), Format::Dingtalk)
    };
    let (h, stats) = spawn(good);
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    let seen = drain(&mut rx);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/robot/send");
    assert_eq!(seen[0].param("timestamp"), Some("1795939200000"));
    // Encoded exactly once on the wire (Python's quote_plus result).
    assert!(
        seen[0].raw_query.ends_with(&format!("&sign={DING_SIGN}")),
        "{}",
        seen[0].raw_query
    );
    assert_eq!(seen[0].body["msgtype"], "markdown");
    assert_eq!(
        seen[0].body["markdown"]["title"],
        "【告警】motor-1 bearing-hot"
    );
    assert_eq!(counts(&stats), [1, 0, 0, 0]);

    let wrong = WebhookConfig {
        secret: Some("SECwrong".into()),
        ..cfg("ding-bad", url, Format::Dingtalk)
    };
    let (h, stats) = spawn(wrong);
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    assert_eq!(
        drain(&mut rx).len(),
        1,
        "a permanent failure is not retried"
    );
    assert_eq!(counts(&stats), [0, 1, 0, 0]);
}

#[tokio::test]
async fn feishu_signed_body_passes_and_wrong_secret_fails_permanently() {
    let responder: Responder = Arc::new(|s: &Seen, _| {
        let ts = s.body["timestamp"].as_str().unwrap_or("");
        let expect = BASE64.encode(hmac_sha256(
            format!("{ts}\n{FEISHU_SECRET}").as_bytes(),
            b"",
        ));
        if s.body["sign"].as_str() == Some(expect.as_str()) {
            reply(
                200,
                r#"{"code":0,"msg":"success","data":{},"Extra":null,"StatusCode":0,"StatusMessage":"success"}"#,
            )
        } else {
            reply(
                200,
                r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time","data":{}}"#,
            )
        }
    });
    let (base, mut rx) = serve(responder).await;
    let url = format!("{base}/open-apis/bot/v2/hook/abc");

    let good = WebhookConfig {
        secret: Some(FEISHU_SECRET.into()),
        ..cfg("fs-ok", url.clone(), Format::Feishu)
    };
    let (h, stats) = spawn(good);
    h.offer(notif("motor-1", Severity::Critical, "cleared"));
    close(h).await;
    let seen = drain(&mut rx);
    assert_eq!(seen.len(), 1);
    let b = &seen[0].body;
    assert_eq!(b["timestamp"], "1795939200", "seconds, as a string");
    assert_eq!(b["sign"], FEISHU_SIGN);
    assert_eq!(b["msg_type"], "text");
    assert!(
        b["content"]["text"]
            .as_str()
            .unwrap()
            .starts_with("【恢复】[critical] CLEARED motor-1")
    );
    assert_eq!(counts(&stats), [1, 0, 0, 0]);

    let wrong = WebhookConfig {
        secret: Some("nope".into()),
        ..cfg("fs-bad", url, Format::Feishu)
    };
    let (h, stats) = spawn(wrong);
    h.offer(notif("motor-1", Severity::Critical, "active"));
    close(h).await;
    assert_eq!(
        drain(&mut rx).len(),
        1,
        "a permanent failure is not retried"
    );
    assert_eq!(counts(&stats), [0, 1, 0, 0]);
}

#[tokio::test]
async fn wecom_rate_limit_errcode_is_retried_then_delivered() {
    let responder: Responder = Arc::new(|_: &Seen, i| match i {
        0 => reply(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
        _ => reply(200, r#"{"errcode":0,"errmsg":"ok"}"#),
    });
    let (base, mut rx) = serve(responder).await;
    let (h, stats) = spawn(cfg(
        "wecom",
        format!("{base}/cgi-bin/webhook/send?key=K-1"),
        Format::Wecom,
    ));
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    let seen = drain(&mut rx);
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.path, "/cgi-bin/webhook/send");
        assert_eq!(s.param("key"), Some("K-1"));
        assert_eq!(
            s.body,
            json!({"msgtype": "markdown", "markdown": {"content": line(&notif("motor-1", Severity::High, "active"))}})
        );
    }
    assert_eq!(counts(&stats), [1, 0, 0, 0]);
}

/// Captures events of this module (not of reqwest/hyper) as text.
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn fmt::Debug) {
        let _infallible = write!(self.0, "{}={:?} ", f.name(), v);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        let module = module_path!().trim_end_matches("::tests");
        m.target().starts_with(module)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        e.record(&mut f);
        self.0.lock().unwrap().push((*e.metadata().level(), f.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn permanent_robot_error_is_logged_once_by_name_without_the_key() {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let _pin = crate::test_log::pin_interest();
    // Current-thread test runtime: the notifier task runs on this thread.
    let _guard = tracing::subscriber::set_default(Capture(logs.clone()));
    let responder: Responder = Arc::new(|_: &Seen, _| {
        reply(
            200,
            r#"{"errcode":93000,"errmsg":"invalid webhook url, hint: [1700000000_abc]"}"#,
        )
    });
    let (base, mut rx) = serve(responder).await;
    let (h, stats) = spawn(cfg(
        "wecom-maint",
        format!("{base}/cgi-bin/webhook/send?key=SECRETKEY42"),
        Format::Wecom,
    ));
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    assert_eq!(drain(&mut rx).len(), 1);
    assert_eq!(counts(&stats), [0, 1, 0, 0]);

    // Also a connect error, whose reqwest error would carry the URL.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let (h, stats) = spawn(WebhookConfig {
        max_retries: 1,
        ..cfg(
            "wecom-dead",
            format!("http://127.0.0.1:{port}/send?key=SECRETKEY42"),
            Format::Wecom,
        )
    });
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    assert_eq!(counts(&stats), [0, 1, 0, 0]);

    let logs = logs.lock().unwrap();
    assert!(!logs.is_empty());
    for (_, l) in logs.iter() {
        assert!(
            !l.contains("SECRETKEY42"),
            "key leaked into a log line: {l}"
        );
    }
    let warns: Vec<&String> = logs
        .iter()
        .filter(|(lvl, _)| *lvl <= tracing::Level::WARN)
        .map(|(_, l)| l)
        .collect();
    assert_eq!(warns.len(), 2, "{warns:?}");
    assert!(
        warns[0].contains("wecom-maint") && warns[0].contains("invalid webhook url"),
        "{}",
        warns[0]
    );
    assert!(
        warns[1].contains("wecom-dead") && warns[1].contains("connect"),
        "{}",
        warns[1]
    );
}

#[tokio::test]
async fn generic_body_has_exact_fields() {
    let (base, mut rx) = serve(Arc::new(|_: &Seen, _| reply(204, ""))).await;
    let (h, stats) = spawn(cfg("generic", format!("{base}/hook"), Format::Generic));
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    let seen = drain(&mut rx);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body,
        json!({
            "source": "plantwatch",
            "digest": false,
            "count": 1,
            "title": "【告警】motor-1 bearing-hot",
            "text": "【告警】[high] ACTIVE motor-1 bearing-hot: bearing 92.3 °C above 90 (value 92.3, limit 90, site-a/gw-1, 2026-11-29 08:00:00 UTC, id motor-1-a1)",
            "notifications": [{
                "device": "motor-1",
                "rule": "bearing-hot",
                "id": "motor-1-a1",
                "state": "active",
                "severity": "high",
                "message": "bearing 92.3 °C above 90",
                "value": 92.3,
                "limit": 90.0,
                "ts_ms": NOW_MS,
                "site": "site-a",
                "gateway": "gw-1",
            }],
        })
    );
    assert_eq!(counts(&stats), [1, 0, 0, 0]);
}

#[tokio::test]
async fn server_error_is_retried_and_delivered_once() {
    let responder: Responder = Arc::new(|_: &Seen, i| {
        if i == 0 {
            reply(500, "")
        } else {
            reply(200, "{}")
        }
    });
    let (base, mut rx) = serve(responder).await;
    let (h, stats) = spawn(cfg("g500", format!("{base}/hook"), Format::Generic));
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    assert_eq!(drain(&mut rx).len(), 2);
    assert_eq!(counts(&stats), [1, 0, 0, 0]);
}

#[tokio::test]
async fn retries_stop_at_max_and_client_errors_are_not_retried() {
    let (base, mut rx) = serve(Arc::new(|s: &Seen, _| {
        if s.path == "/busy" {
            reply(503, "")
        } else {
            reply(400, "")
        }
    }))
    .await;
    let (h, stats) = spawn(WebhookConfig {
        max_retries: 2,
        ..cfg("busy", format!("{base}/busy"), Format::Generic)
    });
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    assert_eq!(drain(&mut rx).len(), 3, "first attempt + 2 retries");
    assert_eq!(counts(&stats), [0, 1, 0, 0]);

    let (h, stats) = spawn(cfg("bad", format!("{base}/bad"), Format::Generic));
    h.offer(notif("motor-1", Severity::High, "active"));
    close(h).await;
    assert_eq!(drain(&mut rx).len(), 1);
    assert_eq!(counts(&stats), [0, 1, 0, 0]);
}

#[tokio::test]
async fn waiting_notifications_become_one_digest_most_severe_first() {
    let (base, mut rx) = serve(Arc::new(|_: &Seen, _| {
        reply(200, r#"{"errcode":0,"errmsg":"ok"}"#)
    }))
    .await;
    // 120/min: after the first message the next token is 0.5 s away.
    let (h, stats) = spawn(WebhookConfig {
        rate_per_minute: 120,
        digest_after: 5,
        ..cfg("digest", format!("{base}/send?key=k"), Format::Wecom)
    });
    let started = crate::clock::monotonic();
    h.offer(notif("first", Severity::Low, "active"));
    let first = next(&mut rx).await;
    assert!(
        first.body["markdown"]["content"]
            .as_str()
            .unwrap()
            .starts_with("【告警】[low] ACTIVE first")
    );
    // The bucket is empty now, so these 29 wait and merge.
    for i in 0..29 {
        let sev = match i {
            17 => Severity::Critical,
            i if i % 3 == 0 => Severity::High,
            i if i % 3 == 1 => Severity::Medium,
            _ => Severity::Low,
        };
        let state = if i % 2 == 0 { "active" } else { "cleared" };
        // Short lines so all 29 fit the 4000-byte text budget.
        h.offer(Notification {
            message: "hot".to_owned(),
            value: None,
            limit: None,
            ..notif(&format!("m{i:02}"), sev, state)
        });
    }
    let digest = next(&mut rx).await;
    let elapsed = started.elapsed();
    close(h).await;
    assert!(drain(&mut rx).is_empty(), "exactly two messages");
    let t = digest.body["markdown"]["content"].as_str().unwrap();
    assert!(
        t.starts_with("【告警汇总】29 条通知 / 29 notifications (15 ACTIVE, 14 CLEARED)"),
        "{t}"
    );
    assert!(
        t.contains("\n1. 【恢复】[critical] CLEARED m17 "),
        "most severe first: {t}"
    );
    let lines: Vec<&str> = t.lines().skip(1).collect();
    assert_eq!(lines.len(), 29, "{t}");
    assert!(
        lines
            .iter()
            .take(1 + 10)
            .skip(1)
            .all(|l| l.contains("[high]")),
        "{t}"
    );
    // The rate limit held the digest back until the next token (0.5 s); no upper bound,
    // which would only measure how busy the machine is.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert_eq!(counts(&stats), [30, 0, 0, 1]);
}

#[tokio::test]
async fn severity_filter_ignores_low_notifications() {
    let (base, mut rx) = serve(Arc::new(|_: &Seen, _| reply(200, "{}"))).await;
    let (h, stats) = spawn(WebhookConfig {
        min_severity: Severity::High,
        ..cfg("filter", format!("{base}/h"), Format::Generic)
    });
    for sev in [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ] {
        h.offer(notif("m", sev, "active"));
    }
    close(h).await;
    let sevs: Vec<Value> = drain(&mut rx)
        .iter()
        .map(|s| s.body["notifications"][0]["severity"].clone())
        .collect();
    assert_eq!(sevs, [json!("high"), json!("critical")]);
    assert_eq!(counts(&stats), [2, 0, 0, 0]);
}

#[tokio::test]
async fn full_queue_drops_and_cancel_counts_leftovers() {
    let (base, _rx) = serve(Arc::new(|_: &Seen, _| reply(200, "{}"))).await;
    let stats = Arc::new(WebhookStats::default());
    let cancel = CancellationToken::new();
    let h = Notifier::spawn(
        cfg("full", format!("{base}/h"), Format::Generic),
        stats.clone(),
        cancel.clone(),
        || NOW_MS,
    )
    .unwrap();
    // The current-thread runtime has not polled the task yet, so the
    // queue fills up: 256 queued, 44 dropped, and offer never waits.
    for i in 0..300 {
        h.offer(notif(&format!("m{i}"), Severity::High, "active"));
    }
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 44);
    cancel.cancel();
    close(h).await;
    assert_eq!(counts(&stats), [0, 0, 300, 0], "every offer accounted for");
}
