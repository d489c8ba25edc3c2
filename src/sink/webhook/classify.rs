//! What a reply means: delivered, worth a retry, or a permanent failure, from the HTTP status
//! and the robot's own status code.

use std::time::Duration;

use serde_json::Value;

use super::{Format, MAX_REASON_BYTES, truncate_utf8};

/// Result of one HTTP attempt.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Delivered,
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Permanent(String),
}

/// The robot's own status code and message in a reply body, if any.
fn robot_status(format: Format, body: &[u8]) -> Option<(i64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match format {
        Format::Generic => None,
        Format::Wecom | Format::Dingtalk => {
            let code = v.get("errcode")?.as_i64()?;
            Some((code, text("errmsg").unwrap_or_default()))
        }
        // New replies carry `code`/`msg`; older ones only `StatusCode`/`StatusMessage`.
        Format::Feishu => {
            if let Some(code) = v.get("code").and_then(Value::as_i64) {
                Some((code, text("msg").unwrap_or_default()))
            } else {
                let code = v.get("StatusCode")?.as_i64()?;
                Some((code, text("StatusMessage").unwrap_or_default()))
            }
        }
    }
}

/// Robot codes that mean "slow down / try later" rather than "wrong request".
fn is_retryable_code(format: Format, code: i64) -> bool {
    match format {
        Format::Generic => false,
        // 45009: api freq out of limit; -1: system busy.
        Format::Wecom => matches!(code, 45009 | -1),
        // 130101: send too fast, exceed 20 times per minute; -1: system busy.
        Format::Dingtalk => matches!(code, 130101 | -1),
        // 11232: frequency limited.
        Format::Feishu => code == 11232,
    }
}

/// Decides delivered / retry / permanent from status and body.
pub(super) fn classify(
    format: Format,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Outcome {
    let robot = robot_status(format, body);
    let detail = robot
        .as_ref()
        .map(|(c, m)| format!(", errcode {c}: {}", truncate_utf8(m, MAX_REASON_BYTES)))
        .unwrap_or_default();
    if status == 429 || status >= 500 {
        return Outcome::Retry {
            reason: format!("HTTP {status}{detail}"),
            after: retry_after,
        };
    }
    let ok_status = (200..300).contains(&status);
    if format == Format::Generic {
        return if ok_status {
            Outcome::Delivered
        } else {
            Outcome::Permanent(format!("HTTP {status}"))
        };
    }
    match robot {
        Some((0, _)) if ok_status => Outcome::Delivered,
        // Checked before the status: Feishu answers some rate limits with 400.
        Some((code, _)) if is_retryable_code(format, code) => Outcome::Retry {
            reason: format!("rate limited: HTTP {status}{detail}"),
            after: retry_after,
        },
        Some(_) => Outcome::Permanent(format!("HTTP {status}{detail}")),
        None if ok_status => Outcome::Permanent(format!(
            "HTTP {status} without a robot status code in the reply"
        )),
        None => Outcome::Permanent(format!("HTTP {status}")),
    }
}
