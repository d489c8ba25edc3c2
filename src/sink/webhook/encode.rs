//! One encoder per vendor: a notification or a digest as the generic JSON, WeCom, DingTalk
//! or Feishu body, with text bounded to what the robots accept.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Format, Notification, truncate_utf8};

/// Text budget in bytes for one message: WeCom markdown allows 4096 bytes,
/// DingTalk and Feishu more, so one budget below the tightest keeps it simple.
pub(super) const TEXT_BUDGET: usize = 4000;

/// One notification line is cut to this many bytes so a single long message
/// cannot crowd every other line out of a digest.
pub(super) const LINE_BUDGET: usize = 500;

/// Room kept at the end of a digest for the "… and N more" line.
const MORE_RESERVE: usize = 64;

/// Body for `format`: one notification's message, or a digest of `batch`.
///
/// A batch of one renders as a single message; more render as a digest
/// (count, then one line each, most severe first, oldest first within a
/// severity). Text is cut to about 4000 bytes with a "… and N more" line.
/// Signing fields (Feishu `timestamp`/`sign`) are added at send time, not here.
pub fn render(format: Format, batch: &[Notification]) -> Value {
    let title = title(batch);
    match format {
        Format::Generic => json!({
            "source": "plantwatch",
            "digest": batch.len() > 1,
            "count": batch.len(),
            "title": title,
            "text": text(batch, "\n"),
            "notifications": sorted(batch),
        }),
        Format::Wecom => json!({
            "msgtype": "markdown",
            "markdown": { "content": text(batch, "\n") },
        }),
        // DingTalk markdown joins single newlines, so lines are paragraphs.
        Format::Dingtalk => json!({
            "msgtype": "markdown",
            "markdown": { "title": title, "text": text(batch, "\n\n") },
        }),
        Format::Feishu => json!({
            "msg_type": "text",
            "content": { "text": text(batch, "\n") },
        }),
    }
}

/// Chinese tag and English state word for a notification state.
fn state_words(state: &str) -> (&'static str, String) {
    match state.to_ascii_lowercase().as_str() {
        "active" | "raised" | "raise" | "firing" => ("【告警】", "ACTIVE".to_owned()),
        "cleared" | "clear" | "resolved" | "ok" => ("【恢复】", "CLEARED".to_owned()),
        _ => ("【通知】", state.to_uppercase()),
    }
}

/// `【告警】[high] ACTIVE motor-1 bearing-hot: msg (value 92.3, limit 90, site/gw, 2026-11-29 08:00:00 UTC, id a-1)`
pub(super) fn line(n: &Notification) -> String {
    let (tag, word) = state_words(&n.state);
    let mut extras = String::new();
    if let Some(v) = n.value {
        let _infallible = write!(extras, "value {v}, ");
    }
    if let Some(l) = n.limit {
        let _infallible = write!(extras, "limit {l}, ");
    }
    let s = format!(
        "{tag}[{sev}] {word} {dev} {rule}: {msg} ({extras}{site}/{gw}, {time}, id {id})",
        sev = n.severity,
        dev = n.device,
        rule = n.rule,
        msg = n.message,
        site = n.site,
        gw = n.gateway,
        time = format_utc(n.ts_ms),
        id = n.id,
    );
    truncate_utf8(&s, LINE_BUDGET)
}

fn title(batch: &[Notification]) -> String {
    match batch {
        [n] => {
            let (tag, _) = state_words(&n.state);
            format!("{tag}{} {}", n.device, n.rule)
        }
        _ => format!("【告警汇总】{} notifications", batch.len()),
    }
}

/// Most severe first; stable, so equal severities stay oldest first after
/// the time sort.
fn sorted(batch: &[Notification]) -> Vec<&Notification> {
    let mut v: Vec<&Notification> = batch.iter().collect();
    v.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.ts_ms.cmp(&b.ts_ms)));
    v
}

pub(super) fn text(batch: &[Notification], sep: &str) -> String {
    if let [n] = batch {
        return line(n);
    }
    let (mut active, mut cleared) = (0usize, 0usize);
    for n in batch {
        match state_words(&n.state).1.as_str() {
            "ACTIVE" => active += 1,
            "CLEARED" => cleared += 1,
            _ => {}
        }
    }
    let other = batch.len() - active - cleared;
    let total = batch.len();
    let mut out = format!(
        "【告警汇总】{total} 条通知 / {total} notifications ({active} ACTIVE, {cleared} CLEARED{}), 按严重程度排序 / most severe first:",
        if other > 0 {
            format!(", {other} OTHER")
        } else {
            String::new()
        }
    );
    let list = sorted(batch);
    for (i, n) in list.iter().enumerate() {
        let entry = format!("{sep}{}. {}", i + 1, line(n));
        if out.len() + entry.len() + MORE_RESERVE > TEXT_BUDGET {
            let rest = list.len() - i;
            let _infallible = write!(out, "{sep}…另有 {rest} 条 / and {rest} more");
            break;
        }
        out.push_str(&entry);
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS UTC`; an instant chrono cannot represent prints as its ms.
pub(super) fn format_utc(ts_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ts_ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{ts_ms} ms UTC"),
    }
}
