//! The HTTPS uplink against a local platform that implements the onboarding flow of
//! docs/platform.md §1.2 (secret key, SM4 password, token, versions) over real TLS with a
//! certificate made for the test, and refuses wrong tokens, wrong ciphertexts and malformed
//! records. It can also fail on cue (HTTP 500, garbage, a stopped server, an expired token),
//! which the continuous uploader (`sink::platform_queue`) must ride out without losing or
//! reordering a record.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use plantwatch::config::{EnvOverrides, load_str};
use plantwatch::platform::Builder;
use plantwatch::platform::record::Record;
use plantwatch::platform::sm4::decrypt_password;
use plantwatch::process::counter::{Flags, IntervalQuality};
use plantwatch::process::ledger::LedgerInterval;
use plantwatch::sink::platform_http::{Uplink, UplinkConfig, UplinkError};
use serde_json::{Value, json};

/// A valid unified social credit code (check character computed per GB 32100).
const CODE: &str = "91350100M000100Y43";
const SECRET_KEY: &str = "GP0W8AIF8uuf7Go4-issued";
const PASSWORD: &str = "123456";

/// What the fake platform does and has seen.
#[derive(Debug, Default)]
struct Platform {
    tokens_issued: u32,
    /// The token currently valid.
    token: Option<String>,
    /// Answer the next data uploads with HTTP 500.
    fail_next: u32,
    /// Answer the next data upload with a body that is not JSON.
    garbage_next: bool,
    /// Accepted uploads, in order.
    accepted: Vec<Value>,
    /// Refusals, as (call, reason).
    refused: Vec<(String, String)>,
    /// The key (dataCode/statType/statDate) of every data upload that reached the service,
    /// failed or not, in order.
    attempts: Vec<String>,
    /// Faults by data-upload attempt index (0-based, counting `attempts`).
    faults: BTreeMap<usize, Fault>,
    /// New connections still to be cut at once (the server is "stopped").
    down_connections: u32,
    /// Faults actually served: 500s, garbage, cut requests and cut connections.
    faults_served: u32,
    /// Forget the token after this many accepted uploads (it "expires" mid-stream).
    expire_after: Option<usize>,
}

/// A failure the fake platform serves on cue.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// HTTP 500.
    Status500,
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// The server stops: this request's connection is cut, and so are the next `n` new
    /// connections.
    Stop(u32),
}

/// What the service does with a request: answer it, or cut its connection.
enum Reply {
    Answer(u16, String),
    Cut,
}

fn envelope(code: i64, message: &str, data: &Value) -> (u16, String) {
    let body = json!({"responseCode": code, "responseMessage": message, "data": data});
    (200, body.to_string())
}

/// The fields every `dataEnterpriseEnergy` body must carry, all as strings.
const FIELDS: [&str; 12] = [
    "enterpriseCode",
    "regVersion",
    "dicVersion",
    "dataCode",
    "dataValue",
    "convertRation",
    "valid",
    "scope",
    "inputType",
    "statType",
    "statDate",
    "uploadDate",
];

fn answer(p: &mut Platform, path: &str, bearer: Option<&str>, body: &[u8]) -> (u16, String) {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        p.refused.push((path.into(), "body is not JSON".into()));
        return envelope(400, "body is not JSON", &Value::Null);
    };
    let authorised = bearer.is_some() && bearer == p.token.as_deref();
    match path {
        "/YNEnergy/enterpriseInfo/rwk" if body["enterpriseCode"] == CODE => {
            envelope(200, "ok", &json!({"secretKey": SECRET_KEY}))
        }
        "/YNEnergy/requestAK" => {
            let hex = body["password"].as_str().unwrap_or_default();
            match decrypt_password(SECRET_KEY, CODE, hex) {
                Ok(pin) if pin == PASSWORD && body["enterpriseCode"] == CODE => {
                    p.tokens_issued += 1;
                    let token = format!("ak-{}", p.tokens_issued);
                    p.token = Some(token.clone());
                    envelope(
                        200,
                        "ok",
                        &json!({"token": token, "enterpriseUploadTime": "01:00:00"}),
                    )
                }
                _ => {
                    p.refused.push((path.into(), "wrong password".into()));
                    envelope(403, "enterprise code or password wrong", &Value::Null)
                }
            }
        }
        "/YNEnergy/checkVersion" if authorised => {
            envelope(200, "ok", &json!({"regVersion": "3", "dicVersion": "12"}))
        }
        "/YNEnergy/dataEnterpriseEnergy" => {
            if p.expire_after.is_some_and(|n| p.accepted.len() >= n) {
                p.expire_after = None;
                p.token = None;
            }
            if p.fail_next > 0 {
                p.fail_next -= 1;
                return (500, "internal error".into());
            }
            if std::mem::take(&mut p.garbage_next) {
                return (200, "<html>gateway timeout</html>".into());
            }
            if !authorised {
                p.refused.push((path.into(), "token".into()));
                return envelope(401, "AK expired", &Value::Null);
            }
            let missing: Vec<&str> = FIELDS
                .iter()
                .copied()
                .filter(|f| !body[*f].is_string())
                .collect();
            let versions_ok = body["regVersion"] == "3" && body["dicVersion"] == "12";
            // Only the registered data item is known to this platform.
            let known = body["dataCode"] == "E001-0101-00";
            if !missing.is_empty() || !versions_ok || !known || body["enterpriseCode"] != CODE {
                p.refused
                    .push((path.into(), format!("malformed: {missing:?}")));
                return envelope(400, "malformed record", &Value::Null);
            }
            p.accepted.push(body);
            envelope(200, "ok", &json!({"platformTime": "2026-10-06 00:05:00"}))
        }
        _ => envelope(404, "unknown call or enterprise", &Value::Null),
    }
}

/// The platform's identity of an uploaded body.
fn key_of(body: &Value) -> String {
    format!(
        "{}/{}/{}",
        body["dataCode"].as_str().unwrap_or("?"),
        body["statType"].as_str().unwrap_or("?"),
        body["statDate"].as_str().unwrap_or("?")
    )
}

/// [`answer`], after the scripted fault of this attempt, if any.
fn serve_request(p: &mut Platform, path: &str, bearer: Option<&str>, body: &[u8]) -> Reply {
    if path == "/YNEnergy/dataEnterpriseEnergy" {
        let attempt = p.attempts.len();
        let key = serde_json::from_slice::<Value>(body).map_or_else(|_| "?".into(), |b| key_of(&b));
        p.attempts.push(key);
        if let Some(fault) = p.faults.remove(&attempt) {
            p.faults_served += 1;
            return match fault {
                Fault::Status500 => Reply::Answer(500, "internal error".into()),
                Fault::Garbage => Reply::Answer(200, "<html>bad gateway</html>".into()),
                Fault::Stop(n) => {
                    p.down_connections = n;
                    Reply::Cut
                }
            };
        }
    }
    let (status, text) = answer(p, path, bearer, body);
    Reply::Answer(status, text)
}

/// Serves the fake platform over TLS on 127.0.0.1; returns its base URL and the CA PEM.
async fn serve(platform: Arc<Mutex<Platform>>) -> (String, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca_pem = cert.cert.pem().into_bytes();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let _first_install = rustls::crypto::ring::default_provider().install_default();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Bounded: a test makes a few dozen connections at most.
        for _ in 0..1000 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            {
                let mut p = platform.lock().unwrap();
                if p.down_connections > 0 {
                    // Stopped: the connection closes before TLS.
                    p.down_connections -= 1;
                    p.faults_served += 1;
                    drop(tcp);
                    continue;
                }
            }
            let acceptor = acceptor.clone();
            let platform = platform.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let platform = platform.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let bearer = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .map(str::to_owned);
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let reply = serve_request(
                            &mut platform.lock().unwrap(),
                            &path,
                            bearer.as_deref(),
                            &body,
                        );
                        let (status, text) = match reply {
                            Reply::Answer(status, text) => (status, text),
                            // An error from the service makes hyper drop the connection.
                            Reply::Cut => return Err(std::io::Error::other("stopped")),
                        };
                        let mut response = Response::new(Full::new(Bytes::from(text)));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::io::Error>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _closed = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (
        format!("https://127.0.0.1:{}/YNEnergy/", addr.port()),
        ca_pem,
    )
}

/// 2026-10-05 00:00 +08:00.
const DAY: i64 = 1_791_129_600_000;

/// A whole day of 15-minute intervals of 2.5 kWh of `incomer`, from [`DAY`].
fn day_of_quarters() -> Vec<LedgerInterval> {
    (0..96)
        .map(|q| LedgerInterval {
            meter: "incomer".into(),
            kind: "electricity".into(),
            unit: "kWh".into(),
            start_ms: DAY + q * 900_000,
            end_ms: DAY + (q + 1) * 900_000,
            delta: 2.5,
            quality: IntervalQuality::Good,
            flags: Flags::EMPTY,
            tou: [0.0, 0.0, 2.5, 0.0],
            kgce: None,
        })
        .collect()
}

/// A config with one meter uploaded as data item `E001-0101-00`, then `extra`.
fn platform_config(extra: &str) -> String {
    format!(
        r#"
[gateway]
site = "s"
id = "g"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "meter-1"
link = "bus"
profile = "chint-dtsu666"

[[meters]]
name = "incomer"
device = "meter-1"
point = "ep_import"
kind = "electricity"

[energy_platform]
enterprise_code = "{CODE}"
scope = "1"
input_type = "1"

[[energy_platform.items]]
meter = "incomer"
data_code = "E001-0101-00"
{extra}"#
    )
}

/// The `[energy_platform]` of [`platform_config`].
fn energy_platform() -> plantwatch::config::platform::EnergyPlatform {
    let plan = load_str(
        "p.toml",
        &platform_config(""),
        &EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    plan.energy_platform.expect("[energy_platform]")
}

/// Three real-time records and one day record of a meter, from the real builder.
fn records() -> Vec<Record> {
    let platform = energy_platform();
    let intervals = day_of_quarters();
    let all = Builder::new(&platform.spec).build(&intervals, DAY + 86_400_000 + 60_000);
    let mut picked: Vec<Record> = all.iter().take(3).cloned().collect();
    picked.extend(all.iter().find(|r| r.key.stat_type.code() == "1").cloned());
    assert_eq!(picked.len(), 4, "{all:?}");
    picked
}

fn uploaded() -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2026, 10, 6)
        .unwrap()
        .and_hms_opt(0, 5, 0)
        .unwrap()
}

async fn uplink(password: &str) -> (Uplink, Arc<Mutex<Platform>>) {
    let platform = Arc::new(Mutex::new(Platform::default()));
    let (url, ca_pem) = serve(platform.clone()).await;
    let uplink = Uplink::new(UplinkConfig {
        base_url: url.parse().unwrap(),
        enterprise_code: CODE.into(),
        password: password.into(),
        ca_pem: Some(ca_pem),
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    (uplink, platform)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_uploaded_after_the_sm4_login_and_the_token_is_renewed_when_it_expires() {
    let (mut up, platform) = uplink(PASSWORD).await;
    let records = records();
    for r in &records[..2] {
        up.send(r, uploaded()).await.unwrap();
    }
    assert_eq!(up.logins(), 1);
    // The platform lets the token expire: the next upload renews it once and goes through.
    platform.lock().unwrap().token = Some("expired-elsewhere".into());
    for r in &records[2..] {
        up.send(r, uploaded()).await.unwrap();
    }
    assert_eq!(up.logins(), 2);
    let p = platform.lock().unwrap();
    assert_eq!(p.accepted.len(), 4, "{:?}", p.refused);
    assert_eq!(
        p.refused,
        [("/YNEnergy/dataEnterpriseEnergy".into(), "token".into())]
    );
    let first = &p.accepted[0];
    assert_eq!(first["dataCode"], "E001-0101-00");
    assert_eq!(first["dataValue"], "2.50");
    assert_eq!(first["statType"], "0");
    assert_eq!(first["statDate"], "2026-10-05 00:00:00");
    assert_eq!(first["convertRation"], "0.1229");
    assert_eq!(first["uploadDate"], "2026-10-06 00:05:00");
    let day = &p.accepted[3];
    assert_eq!(day["statType"], "1");
    assert_eq!(day["dataValue"], "240.00");
    assert_eq!(day["valid"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_with_a_clear_error_and_nothing_is_uploaded() {
    let (mut up, platform) = uplink("654321").await;
    let err = up.send(&records()[0], uploaded()).await.unwrap_err();
    assert!(
        matches!(
            err,
            UplinkError::Refused {
                call: "requestAK",
                code: 403,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("requestAK") && err.to_string().contains("password wrong"));
    let p = platform.lock().unwrap();
    assert!(p.accepted.is_empty());
    assert_eq!(
        p.refused,
        [("/YNEnergy/requestAK".into(), "wrong password".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_or_a_garbled_answer_is_retryable_and_the_retry_lands_once() {
    let (mut up, platform) = uplink(PASSWORD).await;
    let record = &records()[0];
    platform.lock().unwrap().fail_next = 1;
    let err = up.send(record, uploaded()).await.unwrap_err();
    assert!(
        matches!(err, UplinkError::Status { status: 500, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    platform.lock().unwrap().garbage_next = true;
    let err = up.send(record, uploaded()).await.unwrap_err();
    assert!(matches!(err, UplinkError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("not JSON"), "{err}");
    assert!(err.is_retryable());
    up.send(record, uploaded()).await.unwrap();
    let p = platform.lock().unwrap();
    assert_eq!(p.accepted.len(), 1);
    assert_eq!(up.logins(), 1, "a server error does not cost a new session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_platform_refuses_is_not_retryable_and_an_unreachable_or_untrusted_platform_is()
 {
    let (mut up, platform) = uplink(PASSWORD).await;
    let mut record = records()[0].clone();
    record.key.data_code = "E999-unregistered".into();
    let err = up.send(&record, uploaded()).await.unwrap_err();
    assert!(
        matches!(
            err,
            UplinkError::Refused {
                call: "dataEnterpriseEnergy",
                code: 400,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !err.is_retryable(),
        "sending it again unchanged cannot help"
    );
    assert!(platform.lock().unwrap().accepted.is_empty());

    // Nothing listening: no answer, worth a retry.
    let mut nowhere = Uplink::new(UplinkConfig {
        base_url: "https://127.0.0.1:1/YNEnergy/".parse().unwrap(),
        enterprise_code: CODE.into(),
        password: PASSWORD.into(),
        ca_pem: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let err = nowhere.send(&records()[0], uploaded()).await.unwrap_err();
    assert!(matches!(err, UplinkError::Transport { .. }), "{err}");
    assert!(err.is_retryable());

    // A CA that did not sign the server's certificate: the TLS handshake fails.
    let (url, _) = serve(platform.clone()).await;
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let mut wrong_ca = Uplink::new(UplinkConfig {
        base_url: url.parse().unwrap(),
        enterprise_code: CODE.into(),
        password: PASSWORD.into(),
        ca_pem: Some(stranger.cert.pem().into_bytes()),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let err = wrong_ca.send(&records()[0], uploaded()).await.unwrap_err();
    assert!(
        matches!(
            err,
            UplinkError::Transport {
                call: "enterpriseInfo/rwk",
                ..
            }
        ),
        "{err}"
    );
    // Issue 18: it said only `error sending request`; now it names the certificate problem.
    let text = err.to_string();
    assert!(
        text.contains("certificate") && text.contains("ca_file"),
        "{text}"
    );
    assert!(platform.lock().unwrap().accepted.is_empty());
}

/// The config of `records()` plus `[energy_platform.https]`, a state file and its ledger.
async fn upload_setup(dir: &Path, url: &str, ca_pem: &[u8]) -> std::path::PathBuf {
    let state = dir.join("state.db");
    let store =
        plantwatch::store::Store::open(&state, plantwatch::store::OutboxLimits::default()).unwrap();
    store.save_intervals(day_of_quarters()).await.unwrap();
    // The store lets go of its lock when its thread ends: wait for that before the
    // next opener.
    let closed = store.closed();
    drop(store);
    closed.await;
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.join("password"), format!("{PASSWORD}\n")).unwrap();
    let config = platform_config(&format!(
        "\n[energy_platform.https]\nurl = \"{url}\"\nca_file = \"{}\"\npassword_file = \"{}\"\n\
         timeout = \"10s\"\n\n[store]\npath = \"{}\"\n",
        dir.join("ca.pem").display(),
        dir.join("password").display(),
        state.display(),
    ));
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `plantwatch upload --config CONFIG ARGS…` off the runtime (the platform serves on it).
async fn upload(config: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(crate::harness::bin());
    cmd.arg("upload").arg("--config").arg(config).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plantwatch_upload_sends_a_days_records_and_a_resend_carries_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let platform = Arc::new(Mutex::new(Platform::default()));
    let (url, ca_pem) = serve(platform.clone()).await;
    let config = upload_setup(dir.path(), &url, &ca_pem).await;
    let range = ["--from", "2026-10-05", "--to", "2026-10-05"];

    let (ok, stdout, err) = upload(&config, &[&range[..], &["--dry-run"]].concat()).await;
    assert!(ok, "{err}");
    assert_eq!(
        stdout.lines().count(),
        97,
        "96 quarters and the day:\n{stdout}"
    );
    assert!(
        platform.lock().unwrap().accepted.is_empty(),
        "--dry-run sends nothing"
    );

    let (ok, _, err) = upload(&config, &range).await;
    assert!(ok, "{err}");
    assert!(err.contains("97 records sent, 0 refused"), "{err}");
    let (ok, _, err) = upload(&config, &[&range[..], &["--stat-type", "day"]].concat()).await;
    assert!(ok, "{err}");
    assert!(err.contains("1 records sent"), "{err}");

    let p = platform.lock().unwrap();
    assert_eq!(p.accepted.len(), 98, "{:?}", p.refused);
    let key = |v: &Value| format!("{}/{}/{}", v["dataCode"], v["statType"], v["statDate"]);
    let day: Vec<&Value> = p.accepted.iter().filter(|v| v["statType"] == "1").collect();
    assert_eq!(day.len(), 2);
    assert_eq!(key(day[0]), key(day[1]), "the resend carries the same key");
    assert_eq!(day[1]["dataValue"], "240.00");
    let total: f64 = p
        .accepted
        .iter()
        .filter(|v| v["statType"] == "0")
        .map(|v| v["dataValue"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        (total - 240.0).abs() < 1e-9,
        "the day equals the sum of its quarters: {total}"
    );
}

// ---- The continuous uploader: a real store's outbox drained through the uplink. ----

use plantwatch::runtime::outbox::StoreOutbox;
use plantwatch::sink::platform_queue::{PlatformQueue, PlatformUploadStats};
use plantwatch::store::record::platform_message;
use plantwatch::store::{OutboxLimits, Store, StoreHandle};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::harness::{eventually, eventually_async};

/// A running uploader against a fake platform, over a temporary state file.
struct Rig {
    _dir: tempfile::TempDir,
    password_file: std::path::PathBuf,
    platform: Arc<Mutex<Platform>>,
    store: StoreHandle,
    stats: Arc<PlatformUploadStats>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), plantwatch::sink::platform_queue::PlatformQueueError>>,
    next_seq: BTreeMap<String, u64>,
}

impl Rig {
    /// Starts the platform (with `setup` applied first) and the uploader; `password` goes in
    /// the password file.
    async fn start(password: &str, setup: impl FnOnce(&mut Platform)) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut fake = Platform::default();
        setup(&mut fake);
        let platform = Arc::new(Mutex::new(fake));
        let (url, ca_pem) = serve(platform.clone()).await;
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        let config = platform_config(&format!(
            "\n[energy_platform.https]\nurl = \"{url}\"\nca_file = \"{}\"\npassword_file = \"{}\"\n\
             timeout = \"5s\"\nretry_min_ms = 10\nretry_max_ms = 80\n",
            dir.path().join("ca.pem").display(),
            password_file.display(),
        ));
        let plan = load_str("q.toml", &config, &EnvOverrides::Off, Path::new("."), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let energy_platform = plan.energy_platform.expect("[energy_platform]");
        let store = Store::open(&dir.path().join("state.db"), OutboxLimits::default()).unwrap();
        let stats = Arc::new(PlatformUploadStats::default());
        let wake = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let queue = PlatformQueue::new(
            &energy_platform.spec,
            energy_platform.https.as_ref(),
            Arc::new(StoreOutbox::default_queue(store.clone())),
            wake.clone(),
            Arc::new(plantwatch::clock::ManualClock::new(
                plantwatch::model::Timestamp(DAY + 86_400_000 + 300_000),
            )),
            stats.clone(),
        )
        .unwrap();
        let task = tokio::spawn(queue.run(cancel.clone()));
        Rig {
            _dir: dir,
            password_file,
            platform,
            store,
            stats,
            wake,
            cancel,
            task,
            next_seq: BTreeMap::new(),
        }
    }

    /// Queues `records` as the core does, and wakes the uploader.
    async fn enqueue(&mut self, records: &[Record]) {
        let messages = records
            .iter()
            .map(|r| {
                let key = plantwatch::platform::outbox::stream(&r.key.data_code);
                let seq = self.next_seq.entry(key).or_insert(0);
                *seq += 1;
                platform_message(r, plantwatch::store::DEFAULT_QUEUE, *seq, 0)
            })
            .collect();
        self.store.enqueue(messages).await.unwrap();
        self.wake.notify_one();
    }

    async fn rows(&self) -> u64 {
        self.store.stats().await.unwrap().rows
    }

    fn stat(&self, f: impl Fn(&PlatformUploadStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the platform has accepted `n` records and the queue is empty.
    async fn drained(&self, n: usize) {
        eventually_async(Duration::from_secs(30), "the queue drains", || async {
            self.platform.lock().unwrap().accepted.len() >= n && self.rows().await == 0
        })
        .await;
    }

    async fn stop(self) {
        self.cancel.cancel();
        crate::harness::within(Duration::from_secs(10), "the uploader stops", self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The platform's key of each record, as it would be uploaded.
fn keys(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let body = serde_json::to_value(r.payload(&Default::default(), uploaded())).unwrap();
            key_of(&body)
        })
        .collect()
}

/// `n` records of a day: its quarters, in time order (the day record last, when `n` is 97).
fn day_records(n: usize) -> Vec<Record> {
    let platform = energy_platform();
    let all = Builder::new(&platform.spec).build(&day_of_quarters(), DAY + 86_400_000);
    assert!(all.len() >= n);
    all.into_iter().take(n).collect()
}

fn accepted_keys(platform: &Mutex<Platform>) -> Vec<String> {
    platform
        .lock()
        .unwrap()
        .accepted
        .iter()
        .map(key_of)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_drains_its_queue_once_each_in_order_and_deletes_the_rows() {
    let mut rig = Rig::start(PASSWORD, |_| {}).await;
    let records = day_records(97);
    rig.enqueue(&records[..60]).await;
    rig.drained(60).await;
    // More rows later: the wake-up brings the idle uploader back.
    rig.enqueue(&records[60..]).await;
    rig.drained(97).await;
    assert_eq!(accepted_keys(&rig.platform), keys(&records));
    let day = rig.platform.lock().unwrap().accepted[96].clone();
    assert_eq!(
        (day["statType"].as_str(), day["dataValue"].as_str()),
        (Some("1"), Some("240.00"))
    );
    assert_eq!(
        day["uploadDate"], "2026-10-06 00:05:00",
        "stamped from the uploader's clock"
    );
    assert_eq!(rig.rows().await, 0);
    assert_eq!(rig.stat(|s| &s.acked), 97);
    assert_eq!(rig.stat(|s| &s.sent), 97);
    assert_eq!(rig.stat(|s| &s.retried), 0);
    assert_eq!(rig.stat(|s| &s.rejected), 0);
    assert_eq!(rig.stat(|s| &s.logins), 1);
    assert_eq!(rig.stats.problem(), None);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_500s_garbage_and_a_stopped_server_loses_and_reorders_nothing() {
    let mut rig = Rig::start(PASSWORD, |p| {
        p.faults.insert(3, Fault::Status500);
        p.faults.insert(4, Fault::Status500);
        p.faults.insert(5, Fault::Status500);
        p.faults.insert(9, Fault::Garbage);
        // Stopped: this request and the next four connections are cut.
        p.faults.insert(14, Fault::Stop(4));
        p.faults.insert(15, Fault::Garbage);
    })
    .await;
    let records = day_records(30);
    rig.enqueue(&records).await;
    rig.drained(30).await;
    let expected = keys(&records);
    assert_eq!(
        accepted_keys(&rig.platform),
        expected,
        "each once, in order"
    );
    let (attempts, served) = {
        let p = rig.platform.lock().unwrap();
        assert!(
            p.faults.is_empty(),
            "every fault was served: {:?}",
            p.faults
        );
        (p.attempts.clone(), u64::from(p.faults_served))
    };
    // Every attempt that reached the server carried the key of the record at the head of the
    // queue: a resend is the same record, never a rebuilt or skipped one.
    let mut attempted = attempts.clone();
    attempted.dedup();
    assert_eq!(attempted, expected);
    assert_eq!(
        attempts.len(),
        30 + 3 + 1 + 1 + 1,
        "one more attempt per fault that reached it"
    );
    assert_eq!(served, 3 + 1 + 1 + 4 + 1);
    assert_eq!(
        rig.stat(|s| &s.retried),
        served,
        "each failure counted once"
    );
    assert_eq!(rig.stat(|s| &s.sent), 30 + served);
    assert_eq!(rig.stat(|s| &s.acked), 30);
    assert_eq!(
        rig.stat(|s| &s.logins),
        1,
        "the outage did not cost the session"
    );
    assert_eq!(rig.stats.problem(), None, "recovered");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_stream_is_renewed_and_nothing_is_lost() {
    let mut rig = Rig::start(PASSWORD, |p| p.expire_after = Some(7)).await;
    let records = day_records(20);
    rig.enqueue(&records).await;
    rig.drained(20).await;
    assert_eq!(accepted_keys(&rig.platform), keys(&records));
    assert_eq!(
        rig.stat(|s| &s.logins),
        2,
        "the first login and one renewal"
    );
    assert_eq!(
        rig.stat(|s| &s.retried),
        0,
        "the renewal happens inside one attempt"
    );
    {
        let p = rig.platform.lock().unwrap();
        assert_eq!(p.tokens_issued, 2);
        assert_eq!(
            p.refused,
            [("/YNEnergy/dataEnterpriseEnergy".into(), "token".into())]
        );
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_every_row_names_the_key_and_recovers_once_the_file_is_fixed() {
    let mut rig = Rig::start("654321", |_| {}).await;
    let records = day_records(10);
    rig.enqueue(&records).await;
    eventually(
        Duration::from_secs(30),
        "the login is refused a few times",
        || (rig.stat(|s| &s.retried) >= 3).then_some(()),
    )
    .await;
    let problem = rig.stats.problem().expect("a problem is reported");
    assert!(
        problem.contains("energy_platform.https.password_file"),
        "{problem}"
    );
    assert!(problem.contains("requestAK"), "{problem}");
    assert!(
        !problem.contains("654321"),
        "the password is never shown: {problem}"
    );
    assert_eq!(rig.rows().await, 10, "nothing deleted");
    assert_eq!(rig.stat(|s| &s.acked), 0);
    assert_eq!(rig.stat(|s| &s.rejected), 0);
    assert!(rig.platform.lock().unwrap().accepted.is_empty());
    // The operator fixes the file; the next login reads it.
    std::fs::write(&rig.password_file, format!("{PASSWORD}\n")).unwrap();
    rig.drained(10).await;
    assert_eq!(accepted_keys(&rig.platform), keys(&records));
    assert_eq!(rig.stats.problem(), None);
    assert_eq!(rig.stat(|s| &s.logins), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_platform_refuses_is_counted_and_moved_aside_and_the_rest_still_flow() {
    let mut rig = Rig::start(PASSWORD, |_| {}).await;
    let mut records = day_records(8);
    let mut unregistered = records[3].clone();
    unregistered.key.data_code = "E999-unregistered".into();
    records.insert(4, unregistered);
    rig.enqueue(&records).await;
    rig.drained(8).await;
    let mut expected = keys(&records);
    expected.remove(4);
    assert_eq!(accepted_keys(&rig.platform), expected);
    assert_eq!(
        rig.rows().await,
        0,
        "the refused row does not block the queue"
    );
    assert_eq!(rig.stat(|s| &s.rejected), 1);
    assert_eq!(rig.stat(|s| &s.acked), 8);
    assert_eq!(
        rig.stat(|s| &s.retried),
        0,
        "a refused record is not retried"
    );
    {
        let p = rig.platform.lock().unwrap();
        assert_eq!(p.refused.len(), 1);
        assert!(p.refused[0].1.starts_with("malformed"), "{:?}", p.refused);
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_recorder_closes_a_day_from_the_state_file_and_its_records_reach_the_platform() {
    use plantwatch::platform::{Recorder, RecorderState};
    use plantwatch::store::platform_source::close_due;

    let mut rig = Rig::start(PASSWORD, |_| {}).await;
    let platform = energy_platform();
    let intervals = day_of_quarters();
    let mut recorder = Recorder::new(&platform.spec, RecorderState::default(), DAY);
    let mut records = Vec::new();
    // As the core does: save each closed interval, then record it, then close what is due.
    for chunk in intervals.chunks(16) {
        rig.store.save_intervals(chunk.to_vec()).await.unwrap();
        records.extend(recorder.record(chunk));
        let now = chunk.last().unwrap().end_ms + 1_000;
        let (closed, _) = close_due(&mut recorder, rig.store.path(), now)
            .await
            .unwrap();
        records.extend(closed);
    }
    assert_eq!(records.len(), 97, "96 quarters and the day once it ended");
    assert_eq!(records[96].value.to_string(), "240.00");
    assert!(records[96].valid);
    // The state the core saves brings a restarted recorder back without repeats.
    rig.store
        .save_state(
            plantwatch::platform::live::STATE_SCOPE,
            recorder.state().to_rows(),
        )
        .await
        .unwrap();
    let rows = rig
        .store
        .load_state(plantwatch::platform::live::STATE_SCOPE)
        .await
        .unwrap();
    let mut again = Recorder::new(
        &platform.spec,
        RecorderState::from_rows(&rows).unwrap(),
        DAY + 86_400_000 + 5_000,
    );
    let (repeat, _) = close_due(&mut again, rig.store.path(), DAY + 86_400_000 + 5_000)
        .await
        .unwrap();
    assert!(repeat.is_empty(), "{repeat:?}");

    rig.enqueue(&records).await;
    rig.drained(97).await;
    assert_eq!(accepted_keys(&rig.platform), keys(&records));
    rig.stop().await;
}

// ---- The daemon: the `upload` command → both energy-platform sinks. ----

/// `plantwatch run` with a JSON sink (commands), an `energy_platform` MQTT sink and the HTTPS
/// uplink: an `upload` command re-queues a day's records from the ledger, and every record
/// reaches both the platform and the MQTT sink, in the platform's body, once; a second
/// command re-sends the day under the same key.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_command_sends_records_to_the_https_platform_and_the_energy_platform_sink() {
    use crate::harness::daemon::Daemon;
    use crate::harness::subscriber::{Received, Subscriber};
    use plantwatch::sink::mqtt::broker::EmbeddedBroker;

    let dir = tempfile::tempdir().unwrap();
    let platform = Arc::new(Mutex::new(Platform::default()));
    let (url, ca_pem) = serve(platform.clone()).await;
    let config = upload_setup(dir.path(), &url, &ca_pem).await;
    let broker = EmbeddedBroker::start().unwrap();
    let mut sub = Subscriber::start(broker.addr, "tp/#").await;
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[mqtt]]\nname = \"plant\"\nhost = \"127.0.0.1\"\nport = {p}\ntopic_prefix = \"tp/plant\"\n\
         reconnect_min_ms = 100\n\n[[mqtt]]\nname = \"province\"\nformat = \"energy_platform\"\n\
         host = \"127.0.0.1\"\nport = {p}\ntopic_prefix = \"tp/province\"\nreconnect_min_ms = 100\n",
        p = broker.addr.port()
    ));
    let daemon = Daemon::spawn(dir.path(), &text);
    let mut all: Vec<Received> = sub
        .collect_until(Duration::from_secs(30), |g| {
            g.iter().any(|m| m.topic == "tp/plant/status")
        })
        .await;
    assert!(
        all.iter().any(|m| m.topic == "tp/plant/status"),
        "{}",
        daemon.log()
    );
    // The command subscription follows the connection's first acknowledged publish, so it
    // may trail the status: probe with `list`, which changes nothing, until it answers.
    let mut subscribed = false;
    for n in 0..50 {
        sub.publish(
            "tp/plant/cmd/list",
            format!(r#"{{"id":"probe-{n}"}}"#).as_bytes(),
        )
        .await;
        let got = sub
            .collect_until(Duration::from_millis(200), |g| {
                g.iter().any(|m| m.topic == "tp/plant/cmd/list/reply")
            })
            .await;
        subscribed = got.iter().any(|m| m.topic == "tp/plant/cmd/list/reply");
        all.extend(got);
        if subscribed {
            break;
        }
    }
    assert!(subscribed, "the daemon answers commands\n{}", daemon.log());
    sub.publish(
        "tp/plant/cmd/upload",
        br#"{"id":"u1","from":"2026-10-05","to":"2026-10-05"}"#,
    )
    .await;
    let records = |g: &[Received]| -> Vec<Value> {
        g.iter()
            .filter(|m| m.topic == "tp/province/energy_platform/E001-0101-00")
            .map(Received::json)
            .collect()
    };
    all.extend(
        sub.collect_until(Duration::from_secs(30), |g| {
            records(g).len() >= 97 && g.iter().any(|m| m.topic == "tp/plant/cmd/upload/reply")
        })
        .await,
    );
    let reply = all
        .iter()
        .find(|m| m.topic == "tp/plant/cmd/upload/reply")
        .unwrap_or_else(|| panic!("a reply\n{}", daemon.log()))
        .json();
    assert_eq!(reply["id"], "u1");
    assert_eq!(reply["queued"], 97, "{reply}");
    assert!(
        !all.iter().any(|m| m.topic.starts_with("tp/province/cmd/")),
        "the reply goes only to the sink the command came from"
    );
    let published = records(&all);
    assert_eq!(published.len(), 97, "96 quarters and the day, once each");
    for r in &published {
        assert_eq!(r["enterpriseCode"], CODE);
        assert!(
            r["uploadDate"].as_str().is_some_and(|d| d.len() == 19),
            "{r}"
        );
    }
    let quarters: f64 = published
        .iter()
        .filter(|r| r["statType"] == "0")
        .map(|r| r["dataValue"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    let day: Vec<&Value> = published.iter().filter(|r| r["statType"] == "1").collect();
    assert_eq!(day.len(), 1);
    assert_eq!(day[0]["dataValue"], "240.00");
    assert!((quarters - 240.0).abs() < 1e-9, "{quarters}");

    eventually(
        Duration::from_secs(30),
        "the HTTPS platform has all 97",
        || (platform.lock().unwrap().accepted.len() == 97).then_some(()),
    )
    .await;
    sub.publish(
        "tp/plant/cmd/upload",
        br#"{"id":"u2","from":"2026-10-05","to":"2026-10-05","stat_type":[1]}"#,
    )
    .await;
    eventually(Duration::from_secs(30), "the day is re-sent", || {
        (platform.lock().unwrap().accepted.len() == 98).then_some(())
    })
    .await;
    let p = platform.lock().unwrap();
    let key = |v: &Value| format!("{}/{}/{}", v["dataCode"], v["statType"], v["statDate"]);
    let days: Vec<String> = p
        .accepted
        .iter()
        .filter(|v| v["statType"] == "1")
        .map(key)
        .collect();
    assert_eq!(days.len(), 2);
    assert_eq!(days[0], days[1], "the resend carries the same key");
}
