//! The HTTPS uplink against a local platform that implements the onboarding flow of
//! PLATFORM.md §1.2 (secret key, SM4 password, token, versions) over real TLS with a
//! certificate made for the test, and refuses wrong tokens, wrong ciphertexts and malformed
//! records.

use std::convert::Infallible;
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
                        let (status, text) = answer(
                            &mut platform.lock().unwrap(),
                            &path,
                            bearer.as_deref(),
                            &body,
                        );
                        let mut response = Response::new(Full::new(Bytes::from(text)));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
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

/// Three real-time records and one day record of a meter, from the real builder.
fn records() -> Vec<Record> {
    let plan = load_str(
        "p.toml",
        &platform_config(""),
        &EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let platform = plan.energy_platform.expect("[energy_platform]");
    let intervals = day_of_quarters();
    let all = Builder::new(&platform).build(&intervals, DAY + 86_400_000 + 60_000);
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
    assert!(platform.lock().unwrap().accepted.is_empty());
}

/// The config of `records()` plus `[energy_platform.https]`, a state file and its ledger.
async fn upload_setup(dir: &Path, url: &str, ca_pem: &[u8]) -> std::path::PathBuf {
    let state = dir.join("state.db");
    let store =
        plantwatch::store::Store::open(&state, plantwatch::store::OutboxLimits::default()).unwrap();
    store.save_intervals(day_of_quarters()).await.unwrap();
    drop(store);
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
