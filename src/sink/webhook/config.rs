//! A webhook's settings and wire format, as the config resolves them.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::Severity;

/// Which wire format a webhook speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Plain JSON with every field, for in-house receivers.
    Generic,
    /// WeCom (企业微信) group robot.
    Wecom,
    /// DingTalk (钉钉) custom robot, optionally signed (加签).
    Dingtalk,
    /// Feishu/Lark (飞书) custom bot, optionally signed (签名校验).
    Feishu,
}

/// Configuration of one webhook.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Name used in logs instead of the URL (which may carry a key).
    pub name: String,
    /// Full webhook URL, query included (WeCom `key`, DingTalk `access_token`).
    pub url: String,
    /// Wire format.
    pub format: Format,
    /// Signing secret for DingTalk/Feishu; never logged, redacted in `Debug`.
    pub secret: Option<String>,
    /// Notifications below this severity are ignored.
    pub min_severity: Severity,
    /// Timeout of one HTTP request, response included.
    pub timeout: Duration,
    /// Retries after the first attempt for transient failures.
    pub max_retries: u32,
    /// First wait before a retry; doubled per attempt up to a minute.
    pub retry_base: Duration,
    /// Requests per minute (token bucket refill rate, capacity 1); ≥ 1.
    pub rate_per_minute: u32,
    /// When more than this many notifications wait, they go as one digest.
    pub digest_after: u32,
}

impl WebhookConfig {
    /// A config with defaults: no secret, all severities, 10 s timeout,
    /// 5 retries, 18 requests a minute (robots allow 20), digest after 3.
    pub fn new(name: impl Into<String>, url: impl Into<String>, format: Format) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            format,
            secret: None,
            min_severity: Severity::Low,
            timeout: Duration::from_secs(10),
            max_retries: 5,
            retry_base: Duration::from_secs(1),
            rate_per_minute: 18,
            digest_after: 3,
        }
    }
}

impl fmt::Debug for WebhookConfig {
    // Hand-written so neither the URL's key/token nor the secret can leak
    // through a `{:?}` in a log line; only the host is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &format_args!("<redacted, host {host}>"))
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("min_severity", &self.min_severity)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_base", &self.retry_base)
            .field("rate_per_minute", &self.rate_per_minute)
            .field("digest_after", &self.digest_after)
            .finish()
    }
}
