//! `[[webhooks]]`: alarm notifications to group chats (WeCom, DingTalk, Feishu robots) or any
//! JSON endpoint, beside MQTT.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::daemon::PasswordSource;
use super::issue::Issues;
use super::rules::Severity;
use crate::sink::webhook::Format;

/// `[[webhooks]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Name used in logs and metrics (the URL may hold a key, so it is never logged).
    pub name: String,
    /// `generic`, `wecom`, `dingtalk` or `feishu`.
    pub format: Format,
    /// The robot's webhook URL.
    pub url: String,
    /// File holding the signing secret (DingTalk "加签", Feishu signature check).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// systemd credential holding the signing secret.
    #[serde(default)]
    pub secret_credential: Option<String>,
    /// Least severity notified.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Messages per minute at most (the robots allow 20).
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// More than this many waiting are sent as one digest.
    #[serde(default)]
    pub digest_after: Option<u32>,
    /// Retries of a failed send.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Per-request timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A resolved webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Name for logs.
    pub name: String,
    /// Body format and signing scheme.
    pub format: Format,
    /// Where to POST.
    pub url: String,
    /// Signing secret, read at start.
    pub secret: Option<PasswordSource>,
    /// Least severity notified.
    pub min_severity: Severity,
    /// Messages per minute.
    pub rate_per_minute: u32,
    /// Digest threshold.
    pub digest_after: u32,
    /// Retries.
    pub max_retries: u32,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Resolves `[[webhooks]]` entries (`key` is `webhooks[i]`).
pub fn resolve_webhooks(raw: Vec<(String, RawWebhook)>, issues: &mut Issues) -> Vec<Webhook> {
    let mut out: Vec<Webhook> = Vec::new();
    for (key, r) in raw {
        let before = issues.0.len();
        if r.name.is_empty() {
            issues.push(format!("{key}.name"), "must not be empty");
        }
        if out.iter().any(|w| w.name == r.name) {
            issues.push(
                format!("{key}.name"),
                format!(
                    "webhook `{}` is defined twice; names must be unique",
                    r.name
                ),
            );
        }
        if !(r.url.starts_with("https://") || r.url.starts_with("http://")) {
            issues.push(
                format!("{key}.url"),
                "must start with https:// (or http:// for a local endpoint)",
            );
        }
        let secret = super::daemon::password_source(
            &key,
            ("secret_file", r.secret_file.as_ref()),
            ("secret_credential", r.secret_credential.as_ref()),
            issues,
        );
        let signs = matches!(r.format, Format::Dingtalk | Format::Feishu);
        if secret.is_some() && !signs {
            issues.push(
                format!("{key}.secret_file"),
                "only `dingtalk` and `feishu` robots sign their messages; remove the secret",
            );
        }
        let rate = r.rate_per_minute.unwrap_or(18);
        if rate == 0 || rate > 600 {
            issues.push(format!("{key}.rate_per_minute"), "must be 1 to 600");
        }
        let timeout_ms = r.timeout_ms.unwrap_or(10_000);
        if !(100..=120_000).contains(&timeout_ms) {
            issues.push(format!("{key}.timeout_ms"), "must be 100 to 120000");
        }
        if issues.0.len() != before {
            continue;
        }
        out.push(Webhook {
            name: r.name,
            format: r.format,
            url: r.url,
            secret,
            min_severity: r.min_severity.unwrap_or(Severity::Low),
            rate_per_minute: rate,
            digest_after: r.digest_after.unwrap_or(3),
            max_retries: r.max_retries.unwrap_or(5),
            timeout: Duration::from_millis(timeout_ms),
        });
    }
    out
}
