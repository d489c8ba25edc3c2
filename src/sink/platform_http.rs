//! The HTTPS uplink to the provincial energy platform (docs/platform.md §1.2–1.3): JSON POSTs with
//! a bearer access token (AK) obtained as the platform's onboarding flow prescribes.
//!
//! The session: `enterpriseInfo/rwk` returns the secret key (SK); `requestAK` with the
//! enterprise code and the password SM4-encrypted under SK ([`crate::platform::sm4`]) returns
//! the token; `checkVersion` returns the registration and dictionary versions that every
//! upload carries. Records go one per `dataEnterpriseEnergy` POST (the platform has no batch
//! call). Every answer is the envelope `{"responseCode":…, "responseMessage":…, "data":…}`;
//! `responseCode` 401 means the token has expired, so the session is renewed once and the
//! record sent again. A record counts as delivered only on HTTP 2xx with `responseCode` 200;
//! everything else is an [`UplinkError`] that says whether a retry can help, so the caller
//! keeps the record and retries with backoff.
//!
//! The password is never logged; the token only as its length.

use std::time::Duration;

use reqwest::Url;
use serde_json::{Value, json};

use crate::platform::record::{Record, Versions};
use crate::platform::sm4::{Sm4Error, encrypt_password};

/// What an uplink needs to know.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// The platform's base URL, e.g. `https://host/YNEnergy/`; calls are joined to it.
    pub base_url: Url,
    /// The enterprise's 18-character code.
    pub enterprise_code: String,
    /// The enterprise's platform password (the PIN, at most 14 characters).
    pub password: String,
    /// PEM of the only CA trusted for the platform's certificate; `None` for the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// A failed HTTPS call, with its causes and, for a certificate the gateway does not trust,
/// where that trust is configured.
fn transport_error(call: &'static str, err: reqwest::Error) -> UplinkError {
    // The URL carries nothing secret here, but the log needs no query string either.
    let mut detail = super::error_chain(&err.without_url());
    if detail.contains("certificate") {
        detail.push_str(" (the platform's certificate is checked against [energy_platform.https] ca_file, or the system roots without it)");
    }
    UplinkError::Transport { call, detail }
}

/// Why a call to the platform failed.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The HTTP client could not be built (a bad CA file, say).
    #[error("energy platform uplink: cannot set up HTTPS: {0}")]
    Client(#[source] reqwest::Error),
    /// No answer: connection refused, TLS failure, timeout.
    #[error("energy platform `{call}`: no answer: {detail}")]
    Transport {
        /// The call.
        call: &'static str,
        /// What went wrong, with every cause (a TLS failure names the certificate problem).
        detail: String,
    },
    /// An HTTP status other than 2xx.
    #[error("energy platform `{call}`: HTTP {status}")]
    Status {
        /// The call.
        call: &'static str,
        /// The status.
        status: u16,
    },
    /// A body that is not the platform's JSON envelope, or lacks a field the flow needs.
    #[error("energy platform `{call}`: malformed answer: {detail}")]
    Malformed {
        /// The call.
        call: &'static str,
        /// What is missing or wrong.
        detail: String,
    },
    /// The platform answered with a `responseCode` other than 200.
    #[error("energy platform `{call}` refused: responseCode {code}: {message}")]
    Refused {
        /// The call.
        call: &'static str,
        /// `responseCode`.
        code: i64,
        /// `responseMessage`.
        message: String,
    },
    /// The password could not be encrypted (too long, or a short secret key).
    #[error("energy platform login: {0}")]
    Password(#[from] Sm4Error),
}

impl UplinkError {
    /// Whether sending the same record later may succeed (the link, the server or the
    /// session), as opposed to a record the platform refuses as it stands.
    ///
    /// A record refused with `responseCode` 401 even after a fresh login, or with a 5xx code
    /// (the platform's own failure, wrapped in its envelope), is worth sending again later;
    /// any other refusal of a record is about the record itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Client(_) | Self::Password(_) => false,
            Self::Transport { .. } | Self::Malformed { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 401 || *status == 429,
            Self::Refused { call, code, .. } => {
                *call != DATA_CALL || *code == EXPIRED || *code >= 500
            }
        }
    }

    /// Whether the platform refused this record as it stands: an answer to the upload call
    /// with a `responseCode` that a retry cannot change, or HTTP 400/422. Other HTTP errors
    /// of the upload call (404, 403, …) and every failure of the login calls are about the
    /// link or the setup, never the record, so the record must not be dropped for them.
    pub fn is_record_refused(&self) -> bool {
        match self {
            Self::Refused { call, .. } => *call == DATA_CALL && !self.is_retryable(),
            Self::Status { call, status } => *call == DATA_CALL && matches!(*status, 400 | 422),
            _ => false,
        }
    }

    /// Whether the platform refused the login itself (the enterprise code or the password),
    /// or the password cannot be used at all: an operator must fix the credentials, and
    /// retrying unchanged only repeats the refusal.
    pub fn is_login_refused(&self) -> bool {
        match self {
            Self::Password(_) => true,
            Self::Refused { call, code, .. } => {
                matches!(*call, "requestAK" | "enterpriseInfo/rwk") && *code < 500
            }
            _ => false,
        }
    }
}

/// A token and the versions that go with it.
#[derive(Debug, Clone)]
struct Session {
    token: String,
    versions: Versions,
}

/// An HTTPS client of one platform, holding its session.
#[derive(Debug)]
pub struct Uplink {
    client: reqwest::Client,
    config: UplinkConfig,
    session: Option<Session>,
    logins: u64,
}

/// The `responseCode` that means the token has expired.
const EXPIRED: i64 = 401;

/// The upload call.
const DATA_CALL: &str = "dataEnterpriseEnergy";

impl Uplink {
    /// A client for `config` (nothing is sent yet).
    ///
    /// # Errors
    /// [`UplinkError::Client`] when the CA is not PEM or the client cannot be built.
    pub fn new(config: UplinkConfig) -> Result<Self, UplinkError> {
        // One TLS stack: rustls with ring, installed as the process default (a second install
        // is a harmless no-op).
        let _first_install = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("plantwatch/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).map_err(UplinkError::Client)?;
            builder = builder.tls_certs_only([ca]);
        }
        if config
            .base_url
            .host_str()
            .is_some_and(|h| h == "localhost" || h.starts_with("127."))
        {
            // A proxy from the environment makes no sense for a local platform (tests).
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(UplinkError::Client)?;
        Ok(Self {
            client,
            config,
            session: None,
            logins: 0,
        })
    }

    /// How many times a session was opened (the first login and every renewal).
    pub fn logins(&self) -> u64 {
        self.logins
    }

    /// Whether a session is open (the next send does not log in first).
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Replaces the password used by the next login (the daemon re-reads its password file
    /// before each login, so fixing the file is enough); the open session, if any, stays.
    pub fn set_password(&mut self, password: String) {
        self.config.password = password;
    }

    /// Posts `body` to `call` and returns the envelope's `data` when `responseCode` is 200.
    async fn call(
        &self,
        call: &'static str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, UplinkError> {
        let url = self
            .config
            .base_url
            .join(call)
            .map_err(|e| UplinkError::Malformed {
                call,
                detail: format!("cannot join the base URL: {e}"),
            })?;
        // reqwest is built without its `json` feature: serialise here.
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| transport_error(call, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(UplinkError::Status {
                call,
                status: status.as_u16(),
            });
        }
        let text = response
            .text()
            .await
            .map_err(|e| transport_error(call, e))?;
        let envelope: Value = serde_json::from_str(&text).map_err(|e| UplinkError::Malformed {
            call,
            detail: format!(
                "not JSON ({e}): {}",
                text.chars().take(120).collect::<String>()
            ),
        })?;
        let code = envelope
            .get("responseCode")
            .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()))
            .ok_or_else(|| UplinkError::Malformed {
                call,
                detail: "no responseCode".into(),
            })?;
        if code != 200 {
            return Err(UplinkError::Refused {
                call,
                code,
                message: envelope
                    .get("responseMessage")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(envelope.get("data").cloned().unwrap_or(Value::Null))
    }

    /// A string field of `data`, or a malformed-answer error naming it.
    fn field(call: &'static str, data: &Value, name: &str) -> Result<String, UplinkError> {
        data.get(name)
            .and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| UplinkError::Malformed {
                call,
                detail: format!("no `data.{name}`"),
            })
    }

    /// Opens a session: secret key, token, versions.
    ///
    /// # Errors
    /// The first call that failed.
    pub async fn login(&mut self) -> Result<(), UplinkError> {
        self.session = None;
        let code = self.config.enterprise_code.clone();
        let data = self
            .call(
                "enterpriseInfo/rwk",
                &json!({ "enterpriseCode": code }),
                None,
            )
            .await?;
        let secret_key = Self::field("enterpriseInfo/rwk", &data, "secretKey")?;
        let password = encrypt_password(&secret_key, &code, &self.config.password)?;
        let data = self
            .call(
                "requestAK",
                &json!({ "enterpriseCode": code, "password": password }),
                None,
            )
            .await?;
        let token = Self::field("requestAK", &data, "token")?;
        let data = self
            .call(
                "checkVersion",
                &json!({ "enterpriseCode": code }),
                Some(&token),
            )
            .await?;
        let versions = Versions {
            reg_version: Self::field("checkVersion", &data, "regVersion")?,
            dic_version: Self::field("checkVersion", &data, "dicVersion")?,
        };
        tracing::info!(
            token_len = token.len(),
            reg_version = %versions.reg_version,
            dic_version = %versions.dic_version,
            "energy platform: session opened"
        );
        self.logins += 1;
        self.session = Some(Session { token, versions });
        Ok(())
    }

    /// Uploads `record`, stamped `uploaded` (local time), opening or renewing the session as
    /// needed; `Ok` only when the platform accepted it.
    ///
    /// # Errors
    /// See [`UplinkError::is_retryable`] for which are worth a retry.
    pub async fn send(
        &mut self,
        record: &Record,
        uploaded: chrono::NaiveDateTime,
    ) -> Result<(), UplinkError> {
        for attempt in 0..2 {
            if self.session.is_none() {
                self.login().await?;
            }
            let Some(session) = self.session.clone() else {
                continue;
            };
            let body =
                serde_json::to_value(record.payload(&session.versions, uploaded)).map_err(|e| {
                    UplinkError::Malformed {
                        call: DATA_CALL,
                        detail: e.to_string(),
                    }
                })?;
            match self.call(DATA_CALL, &body, Some(&session.token)).await {
                Ok(_) => return Ok(()),
                // An expired token: renew once and send again.
                Err(
                    UplinkError::Refused { code: EXPIRED, .. }
                    | UplinkError::Status { status: 401, .. },
                ) if attempt == 0 => {
                    tracing::info!("energy platform: token expired; renewing");
                    self.session = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(UplinkError::Refused {
            call: DATA_CALL,
            code: EXPIRED,
            message: "the token was refused again right after renewal".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(call: &'static str, code: i64) -> UplinkError {
        UplinkError::Refused {
            call,
            code,
            message: "no".into(),
        }
    }

    #[test]
    fn only_the_upload_calls_own_refusals_are_about_the_record() {
        let status = |call, status| UplinkError::Status { call, status };
        assert!(refused(DATA_CALL, 400).is_record_refused());
        assert!(status(DATA_CALL, 400).is_record_refused());
        // A token still refused, or the platform's own failure: retry, never drop.
        for e in [refused(DATA_CALL, 401), refused(DATA_CALL, 503)] {
            assert!(e.is_retryable() && !e.is_record_refused(), "{e}");
        }
        // A wrong path or a refused login is never the record's fault.
        for e in [
            status(DATA_CALL, 404),
            status("enterpriseInfo/rwk", 404),
            refused("requestAK", 403),
        ] {
            assert!(!e.is_record_refused(), "{e}");
        }
        assert!(refused("requestAK", 403).is_login_refused());
        assert!(refused("enterpriseInfo/rwk", 404).is_login_refused());
        assert!(!refused("requestAK", 500).is_login_refused());
        assert!(!refused(DATA_CALL, 400).is_login_refused());
    }
}
