//! Alarm webhook notifier: pushes alarm raise/clear notifications to a generic
//! JSON webhook or to WeCom (企业微信), DingTalk (钉钉) and Feishu/Lark (飞书)
//! group robots.
//!
//! One background task ([`Notifier`]) runs per configured webhook; producers
//! hold its [`NotifierHandle`] and call [`NotifierHandle::offer`].
//!
//! # Invariants
//! - `offer` never blocks or awaits: the queue holds at most [`QUEUE_CAP`]
//!   notifications; when it is full (or the task has ended) the notification
//!   is dropped and counted in [`WebhookStats::dropped`].
//! - Notifications below `min_severity` are ignored and counted nowhere.
//! - Once the task has ended, every accepted notification is counted in
//!   exactly one of `sent`, `failed`, `dropped` (leftovers at cancellation are
//!   `dropped`). `digests` counts digest messages delivered; their
//!   notifications are also in `sent`.
//! - Every HTTP request (first attempts and retries alike) takes a token from
//!   a bucket of capacity 1 refilled at `rate_per_minute / 60` per second, so
//!   requests are spaced at least `60 / rate_per_minute` s apart and any 60 s
//!   window carries at most `rate_per_minute + 1` of them. Robots allow 20 a
//!   minute, hence the default of 18.
//! - Whenever a token is available and more than `digest_after`
//!   notifications are waiting, they all leave as one digest (count + one
//!   line each, most severe first); otherwise the oldest leaves alone.
//!   Notifications only pile up while the bucket is empty or a delivery is
//!   being retried, so digests happen exactly when the robot limit (or a
//!   failing endpoint) holds messages back.
//! - Retries: network errors, HTTP 5xx, HTTP 429 and a robot's rate-limit
//!   errcode are retried with exponential backoff (1 s, 2 s, 4 s … capped at
//!   60 s, each drawn from the upper half of its step, at least `Retry-After`)
//!   up to `max_retries` times. Any other 4xx
//!   and any other nonzero robot errcode fail permanently: logged once with
//!   the webhook name and the robot's errmsg, counted in `failed`.
//! - Delivery is at-least-once: a request whose response was lost is retried.
//! - Secrets never reach logs: log lines name the webhook by `name` only. The
//!   URL (it carries the WeCom `key` / DingTalk `access_token`) and the
//!   signing secret are never logged, `Debug` redacts both, and reqwest errors
//!   are stripped of their URL (and scrubbed) before they are logged.
//! - Nothing here panics: errors are returned from [`Notifier::spawn`] or
//!   logged and counted by the task.
//!
//! # Wire formats (checked against the vendors' docs)
//! - WeCom group robot — <https://developer.work.weixin.qq.com/document/path/91770>
//!   (also served as <https://work.weixin.qq.com/api/doc/90000/90136/91770>):
//!   `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY`, body
//!   `{"msgtype":"markdown","markdown":{"content":…}}` (markdown content ≤
//!   4096 bytes, text only 2048, hence markdown), no signature, 20 messages a
//!   minute. Reply `{"errcode":0,"errmsg":"ok"}`; 45009 "api freq out of
//!   limit" is the rate-limit code, -1 "system busy" is transient.
//! - DingTalk custom robot with 加签 —
//!   <https://open.dingtalk.com/document/robots/customize-robot-security-settings>
//!   (English: <https://help.dingtalk.io/open/dingstart/customize-robot-security-settings>):
//!   `timestamp` in ms, string_to_sign = `"{timestamp}\n{secret}"`,
//!   sign = urlEncode(base64(HmacSHA256(key = secret, msg = string_to_sign))),
//!   appended as `&timestamp=…&sign=…` to the webhook URL. Body
//!   `{"msgtype":"markdown","markdown":{"title":…,"text":…}}`. Reply `errcode`
//!   0 = ok; 310000 = security check failed (sign not match, invalid
//!   timestamp, keywords not in content, ip not in whitelist) is permanent;
//!   130101 "send too fast, exceed 20 times per minute" is the rate limit
//!   (seen in <https://github.com/ccfos/nightingale/issues/369>).
//! - Feishu/Lark custom bot — <https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>:
//!   `timestamp` in **seconds**, string_to_sign = `"{timestamp}\n{secret}"`,
//!   sign = base64(HmacSHA256(key = string_to_sign, msg = empty)); the body
//!   carries `"timestamp"` (a string) and `"sign"` beside
//!   `"msg_type":"text","content":{"text":…}` (body ≤ 20 KB). Reply
//!   `{"code":0,"msg":"success",…}`, older deployments only
//!   `{"StatusCode":0,"StatusMessage":"success"}`; 19021 = sign match fail
//!   (permanent), 11232 = frequency limited (retried).
//! - Generic: `{"source":"plantwatch","digest":…,"count":…,"title":…,"text":…,
//!   "notifications":[…]}`, see [`render`]; any 2xx is success.

mod bucket;
mod classify;
mod config;
mod encode;
mod sign;
mod task;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use config::{Format, WebhookConfig};
pub use encode::render;
pub use sign::{dingtalk_sign, feishu_sign};
pub use task::{Notifier, NotifierHandle, QUEUE_CAP, WebhookError, WebhookStats};

pub use crate::detect::spec::Severity;

/// Robot errmsg / error text in logs is cut to this many bytes.
const MAX_REASON_BYTES: usize = 300;

/// One alarm state change to push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Device the alarm belongs to.
    pub device: String,
    /// Rule that raised the alarm.
    pub rule: String,
    /// Alarm instance id.
    pub id: String,
    /// "active" | "cleared" | other states (shown uppercased).
    pub state: String,
    /// Severity of the alarm.
    pub severity: Severity,
    /// Human-readable message.
    pub message: String,
    /// Measured value, if any.
    pub value: Option<f64>,
    /// Limit that was crossed, if any.
    pub limit: Option<f64>,
    /// Event time, ms since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// Site name.
    pub site: String,
    /// Gateway name.
    pub gateway: String,
}

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut.
fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.get(..end).unwrap_or_default().to_owned();
    out.push('…');
    out
}
