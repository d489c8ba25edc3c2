//! Operator commands on alarms, from the MQTT downlink (`{prefix}/cmd/{name}`) and from
//! `plantwatch alarms` (through the state file's command queue), and the `upload` command of
//! the energy platform.
//!
//! `upload` (`{"id":…,"from":"2026-10-01","to":"2026-10-31","stat_type":[1,2]}`) re-queues the
//! platform records of a range of local dates. It is parsed and validated here like the others,
//! but carried out by the daemon's core, which owns the platform queue: the core matches
//! [`Command::Upload`] before calling [`apply`], builds the records with
//! [`crate::store::platform_source::records_for_range`], enqueues them and answers with [`upload_reply`].
//! [`apply`] answers an `upload` that reaches it with an error reply, so a caller that does
//! not handle it says so instead of staying silent.
//!
//! Every command is validated in full before anything changes, and every one gets exactly one
//! reply carrying the request's `id`: `{"v":1,"id":…,"ok":true,…}` or
//! `{"v":1,"id":…,"ok":false,"error":"…"}`. A malformed command changes nothing.

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::log_limit::{RepeatLimit, escape_and_cut, is_unsafe, peer_text};
use crate::config::rules::parse_duration;
use crate::detect::{AlarmEvent, Engine, MAX_SHELVE_MS};
use crate::platform::record::StatType;

/// The command names, for messages.
pub const NAMES: &[&str] = &[
    "ack", "shelve", "unshelve", "list", "serviced", "upload", "write", "config",
];

/// Longest range of days one `upload` command may re-queue (day, month and year records).
pub const MAX_UPLOAD_DAYS: i64 = 366;

/// Longest range when real-time records (`stat_type` 0) are included: 31 days of 15-minute
/// records is about 3000 rows per item, which the outbox takes in its stride; a year would be
/// 35 000 per item.
pub const MAX_REALTIME_UPLOAD_DAYS: i64 = 31;

/// Longest `id`, in characters: it is echoed in every reply.
pub const MAX_ID_CHARS: usize = 128;

/// Longest error message in a reply, in characters (the peer's parts are cut shorter).
const MAX_ERROR_CHARS: usize = 1_000;

/// A validated command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Acknowledge a raised alarm.
    Ack {
        /// Its id or `device/alarm`.
        alarm: String,
    },
    /// Hide a raised alarm for a while.
    Shelve {
        /// Its id or `device/alarm`.
        alarm: String,
        /// How long, ms.
        duration_ms: i64,
    },
    /// End a shelve early.
    Unshelve {
        /// Its id or `device/alarm`.
        alarm: String,
    },
    /// List the raised alarms.
    List,
    /// A device was serviced: its service intervals count again from now.
    Serviced {
        /// The device.
        device: String,
    },
    /// Re-queue the energy-platform records whose statDate falls in `from..=to` (local dates);
    /// carried out by the core (see the module docs), not by [`apply`].
    Upload {
        /// First day.
        from: NaiveDate,
        /// Last day, inclusive.
        to: NaiveDate,
        /// Only these statistic types; empty for every type each item produces.
        stat_types: Vec<StatType>,
    },
    /// Set a writable point of a device; carried out by the core's write path (it must be
    /// signed: see [`crate::auth::unsigned_allowed`]), not by [`apply`].
    Write {
        /// The device.
        device: String,
        /// The point.
        point: String,
        /// The value in engineering units, as JSON (a number, true/false or text).
        value: Json,
    },
    /// Replace the configuration file with `text` (docs/remote-operations.md); carried out
    /// by the core and the daemon, not by [`apply`].
    Config {
        /// The whole file.
        text: String,
    },
}

/// A command with the id its reply must carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The requester's id (any JSON scalar), echoed in the reply.
    pub id: Json,
    /// What to do.
    pub command: Command,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    id: Option<Json>,
    /// When a signed command was signed; checked by [`crate::auth`] before parsing.
    #[serde(rename = "ts")]
    _ts: Option<Json>,
    alarm: Option<String>,
    duration: Option<String>,
    device: Option<String>,
    from: Option<String>,
    to: Option<String>,
    stat_type: Option<Json>,
    point: Option<String>,
    value: Option<Json>,
    config: Option<String>,
}

/// A `YYYY-MM-DD` field of `upload`.
fn upload_date(field: &str, text: Option<&str>) -> Result<NaiveDate, String> {
    let text =
        text.ok_or_else(|| format!("missing `{field}`: a local date, e.g. \"2026-10-01\""))?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        format!(
            "`{field}` is `{}`, not a date as YYYY-MM-DD",
            peer_text(text)
        )
    })
}

/// `stat_type` of `upload`: one statType or a list, each as its code (0 to 3) or name.
fn upload_stat_types(value: Option<&Json>) -> Result<Vec<StatType>, String> {
    let one = |v: &Json| -> Result<StatType, String> {
        let found = match v {
            Json::Number(n) => n.as_u64().and_then(|c| StatType::from_code(&c.to_string())),
            Json::String(s) => StatType::ALL
                .into_iter()
                .find(|t| t.as_str() == s || t.code() == s),
            _ => None,
        };
        found.ok_or_else(|| {
            format!(
                "`stat_type` has `{}`; use 0 (real-time), 1 (day), 2 (month) or 3 (year), or \
                 their names",
                peer_text(&v.to_string())
            )
        })
    };
    let mut types = match value {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) if items.is_empty() => {
            return Err("`stat_type` is empty: leave it out for every type".into());
        }
        Some(Json::Array(items)) => items.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        Some(v) => vec![one(v)?],
    };
    types.sort_unstable();
    types.dedup();
    Ok(types)
}

/// Validates the fields of `upload`.
fn upload(body: &Body) -> Result<Command, String> {
    let from = upload_date("from", body.from.as_deref())?;
    let to = upload_date("to", body.to.as_deref())?;
    if to < from {
        return Err(format!("`to` ({to}) is before `from` ({from})"));
    }
    let stat_types = upload_stat_types(body.stat_type.as_ref())?;
    let days = (to - from).num_days() + 1;
    let realtime = stat_types.is_empty() || stat_types.contains(&StatType::Realtime);
    if realtime && days > MAX_REALTIME_UPLOAD_DAYS {
        return Err(format!(
            "`to`: {from}..{to} is {days} days; real-time records (stat_type 0, included when \
             `stat_type` is left out) go at most {MAX_REALTIME_UPLOAD_DAYS} days at a time"
        ));
    }
    if days > MAX_UPLOAD_DAYS {
        return Err(format!(
            "`to`: {from}..{to} is {days} days; at most {MAX_UPLOAD_DAYS} at a time"
        ));
    }
    Ok(Command::Upload {
        from,
        to,
        stat_types,
    })
}

/// Validates the fields of `write`: which point, and a value of a writable kind (the limits
/// are the write path's to check).
fn write(body: &Body) -> Result<Command, String> {
    let device = body
        .device
        .clone()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| "missing `device`: the device to write to".to_owned())?;
    let point = body
        .point
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "missing `point`: the writable point to set".to_owned())?;
    let value = body
        .value
        .clone()
        .ok_or_else(|| "missing `value`: a number, true/false or text".to_owned())?;
    if matches!(value, Json::Array(_) | Json::Object(_)) {
        return Err("`value` must be a number, true/false or text".into());
    }
    Ok(Command::Write {
        device,
        point,
        value,
    })
}

/// The reply to an `upload` the core carried out: how many records it queued, or why not.
pub fn upload_reply(id: &Json, queued: Result<usize, String>) -> Vec<u8> {
    match queued {
        Ok(n) => json!({"v": 1, "id": id, "ok": true, "queued": n})
            .to_string()
            .into_bytes(),
        Err(message) => error_reply(id, &message),
    }
}

/// The error reply for a request that could not be carried out. The message is escaped and
/// bounded (it may quote the peer), and so is a string id that is too long or unsafe to echo
/// as it came.
pub fn error_reply(id: &Json, message: &str) -> Vec<u8> {
    let id = match id {
        Json::String(s) if s.chars().count() > MAX_ID_CHARS || s.chars().any(is_unsafe) => {
            Json::String(escape_and_cut(s, MAX_ID_CHARS))
        }
        other => other.clone(),
    };
    let message = escape_and_cut(message, MAX_ERROR_CHARS);
    json!({"v": 1, "id": id, "ok": false, "error": message})
        .to_string()
        .into_bytes()
}

/// Repeats of a refusal of the same command name: one WARN a minute, with the count.
static REFUSALS: RepeatLimit = RepeatLimit::new(super::log_limit::REPEAT_WINDOW);

/// Logs that command `name` was refused with `reply`: the name escaped and cut (it is the
/// peer's topic segment), the reply as built by [`error_reply`], and repeats of the same
/// command's refusal counted instead of written.
pub fn log_refused(name: &str, reply: &[u8]) {
    let name = peer_text(name);
    let Some(left_out) = REFUSALS.admit(&name, crate::clock::monotonic()) else {
        return;
    };
    let reply = String::from_utf8_lossy(reply);
    if left_out == 0 {
        tracing::warn!(command = %name, reply = %reply, "Refused a downlink command.");
    } else {
        tracing::warn!(command = %name, reply = %reply, left_out,
            "Refused a downlink command; as many refusals of it since the last line were left out.");
    }
}

/// Salvages the id from anything object-like, so that even a bad command's reply can be
/// matched.
fn loose_id(payload: &[u8]) -> Json {
    serde_json::from_slice::<Json>(payload)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(Json::Null)
}

/// Parses and validates a command that arrived over MQTT. One that arrived with the retain
/// flag is refused whatever it says: the broker hands a retained message to every new
/// subscription, so carrying it out would repeat it on every reconnect and restart.
///
/// # Errors
/// The error reply (JSON bytes) naming what is wrong.
pub fn parse_downlink(name: &str, payload: &[u8], retained: bool) -> Result<Request, Vec<u8>> {
    if retained {
        return Err(error_reply(
            &loose_id(payload),
            &format!(
                "refused `{name}`: it arrived retained, and retained commands are never carried \
                 out; send it without the retain flag, and clear the retained message (an \
                 empty retained message on the same topic)"
            ),
        ));
    }
    parse(name, payload)
}

/// Parses and validates command `name` with JSON `payload`.
///
/// # Errors
/// The error reply (JSON bytes) naming what is wrong.
pub fn parse(name: &str, payload: &[u8]) -> Result<Request, Vec<u8>> {
    let id = loose_id(payload);
    let fail = |m: String| Err(error_reply(&id, &m));
    if !NAMES.contains(&name) {
        return fail(format!(
            "unknown command `{}`; commands: {}",
            peer_text(name),
            NAMES.join(", ")
        ));
    }
    let body: Body = match serde_json::from_slice(payload) {
        Ok(b) => b,
        Err(e) => {
            return fail(format!(
                "malformed command: {}; send e.g. {{\"id\":\"1\",\"alarm\":\"motor-1/bearing-hot\"}}",
                peer_text(&e.to_string())
            ));
        }
    };
    if matches!(body.id, None | Some(Json::Null)) {
        return fail("missing `id`: every command needs one, echoed in its reply".into());
    }
    if matches!(body.id, Some(Json::Array(_) | Json::Object(_))) {
        return fail("`id` must be a string or a number".into());
    }
    if let Some(Json::String(id)) = &body.id {
        if id.chars().count() > MAX_ID_CHARS {
            return fail(format!("`id` is longer than {MAX_ID_CHARS} characters"));
        }
        if id.chars().any(is_unsafe) {
            return fail("`id` holds control or bidirectional-override characters".into());
        }
    }
    let alarm = || {
        body.alarm
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| "missing `alarm`: give its id or `device/alarm`".to_owned())
    };
    let command = match name {
        "ack" => alarm().map(|alarm| Command::Ack { alarm }),
        "unshelve" => alarm().map(|alarm| Command::Unshelve { alarm }),
        "list" => Ok(Command::List),
        "upload" => upload(&body),
        "write" => write(&body),
        "config" => match &body.config {
            None => Err("missing `config`: the whole configuration file, as a string".into()),
            Some(text) if text.len() > crate::runtime::remote_config::MAX_CONFIG_BYTES => {
                Err(format!(
                    "`config` is {} bytes; at most {}",
                    text.len(),
                    crate::runtime::remote_config::MAX_CONFIG_BYTES
                ))
            }
            Some(text) => Ok(Command::Config { text: text.clone() }),
        },
        "serviced" => body
            .device
            .clone()
            .filter(|d| !d.is_empty())
            .map(|device| Command::Serviced { device })
            .ok_or_else(|| "missing `device`: the device that was serviced".to_owned()),
        _ => alarm().and_then(|alarm| {
            let text = body
                .duration
                .as_deref()
                .ok_or_else(|| "missing `duration`, e.g. \"2h\"".to_owned())?;
            let d = parse_duration(text).map_err(|e| peer_text(&e))?;
            let duration_ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if !(1000..=MAX_SHELVE_MS).contains(&duration_ms) {
                return Err(format!(
                    "duration `{}` is out of range: give 1s to 30d",
                    peer_text(text)
                ));
            }
            Ok(Command::Shelve { alarm, duration_ms })
        }),
    };
    match command {
        Ok(command) => Ok(Request {
            id: body.id.unwrap_or(Json::Null),
            command,
        }),
        Err(m) => fail(m),
    }
}

fn alarm_json(e: &AlarmEvent) -> Json {
    serde_json::from_slice(&crate::encode::json_v1::alarm(e)).unwrap_or(Json::Null)
}

/// Carries out `req` on `engine` at `now`: the reply, and the alarm change to publish if any.
pub fn apply(engine: &mut Engine, req: &Request, now: i64) -> (Vec<u8>, Option<AlarmEvent>) {
    let result = match &req.command {
        Command::List => {
            let alarms: Vec<Json> = engine.raised().iter().map(alarm_json).collect();
            return (
                json!({"v": 1, "id": req.id, "ok": true, "alarms": alarms})
                    .to_string()
                    .into_bytes(),
                None,
            );
        }
        Command::Serviced { device } => {
            return match engine.serviced(device) {
                Ok((hours, starts)) => (
                    json!({"v": 1, "id": req.id, "ok": true, "device": device,
                           "running_hours": hours, "starts": starts})
                    .to_string()
                    .into_bytes(),
                    None,
                ),
                Err(e) => (error_reply(&req.id, &e.to_string()), None),
            };
        }
        Command::Upload { .. } => {
            return (
                error_reply(
                    &req.id,
                    "`upload` is carried out by the daemon's energy-platform queue, which is not \
                     running here",
                ),
                None,
            );
        }
        Command::Config { .. } => {
            return (
                error_reply(
                    &req.id,
                    "refused `config`: a configuration is taken only signed, over the MQTT \
                     downlink",
                ),
                None,
            );
        }
        Command::Write { .. } => {
            return (
                error_reply(
                    &req.id,
                    "refused `write`: a write is taken only signed, over the MQTT downlink",
                ),
                None,
            );
        }
        Command::Ack { alarm } => engine.ack(alarm, now),
        Command::Shelve { alarm, duration_ms } => engine.shelve(alarm, *duration_ms, now),
        Command::Unshelve { alarm } => engine.shelve(alarm, 0, now),
    };
    match result {
        Ok(event) => (
            json!({"v": 1, "id": req.id, "ok": true, "alarm": alarm_json(&event)})
                .to_string()
                .into_bytes(),
            Some(event),
        ),
        Err(e) => (error_reply(&req.id, &e.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(name: &str, payload: &str) -> String {
        match parse(name, payload.as_bytes()) {
            Ok(r) => format!("accepted: {r:?}"),
            Err(reply) => String::from_utf8_lossy(&reply).into_owned(),
        }
    }

    #[test]
    fn every_malformed_command_gets_a_reply_that_says_why() {
        assert!(err("reboot", r#"{"id":1}"#).contains("unknown command `reboot`"));
        assert!(err("ack", "{not json").contains("malformed command"));
        assert!(err("ack", r#"{"alarm":"a/b"}"#).contains("missing `id`"));
        assert!(err("ack", r#"{"id":"7"}"#).contains("missing `alarm`"));
        assert!(err("ack", r#"{"id":"7","alarm":"a/b","colour":1}"#).contains("unknown field"));
        assert!(err("shelve", r#"{"id":"7","alarm":"a/b"}"#).contains("missing `duration`"));
        assert!(
            err("shelve", r#"{"id":"7","alarm":"a/b","duration":"soon"}"#)
                .contains("not a duration")
        );
        assert!(
            err("shelve", r#"{"id":"7","alarm":"a/b","duration":"90d"}"#).contains("out of range")
        );
        assert!(err("shelve", r#"{"id":"7","alarm":"a/b","duration":"-1h"}"#).contains("negative"));
        // The id is echoed even when the command is bad.
        assert!(err("ack", r#"{"id":"7"}"#).contains(r#""id":"7""#));
    }

    #[test]
    fn an_upload_is_validated_field_by_field() {
        let ok = |payload: &str| parse("upload", payload.as_bytes()).map(|r| r.command);
        let date = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        assert_eq!(
            ok(r#"{"id":"u1","from":"2026-10-01","to":"2026-10-31","stat_type":[2,1,"day"]}"#),
            Ok(Command::Upload {
                from: date("2026-10-01"),
                to: date("2026-10-31"),
                stat_types: vec![StatType::Day, StatType::Month],
            })
        );
        assert_eq!(
            ok(r#"{"id":2,"from":"2026-10-05","to":"2026-10-05"}"#),
            Ok(Command::Upload {
                from: date("2026-10-05"),
                to: date("2026-10-05"),
                stat_types: vec![],
            })
        );
        assert_eq!(
            ok(r#"{"id":2,"from":"2026-01-01","to":"2026-12-31","stat_type":"month"}"#).map(|_| ()),
            Ok(())
        );
        let u = |payload: &str| err("upload", payload);
        assert!(u(r#"{"id":"u","to":"2026-10-31"}"#).contains("missing `from`"));
        assert!(u(r#"{"id":"u","from":"2026-10-01"}"#).contains("missing `to`"));
        assert!(
            u(r#"{"id":"u","from":"1.10.2026","to":"2026-10-31"}"#)
                .contains("`from` is `1.10.2026`")
        );
        assert!(
            u(r#"{"id":"u","from":"2026-10-31","to":"2026-10-01"}"#)
                .contains("`to` (2026-10-01) is before")
        );
        assert!(
            u(r#"{"id":"u","from":"2026-10-01","to":"2026-10-31","stat_type":[7]}"#)
                .contains("`stat_type` has `7`")
        );
        assert!(
            u(r#"{"id":"u","from":"2026-10-01","to":"2026-10-31","stat_type":[]}"#)
                .contains("`stat_type` is empty")
        );
        assert!(
            u(r#"{"id":"u","from":"2026-01-01","to":"2026-03-31"}"#).contains("at most 31 days"),
            "real-time records are bounded"
        );
        assert!(
            u(r#"{"id":"u","from":"2025-01-01","to":"2026-03-31","stat_type":[1]}"#)
                .contains("at most 366")
        );
        assert!(u(r#"{"id":"u9","to":"x"}"#).contains(r#""id":"u9""#));
    }

    #[test]
    fn an_upload_reaching_the_alarm_engine_says_who_carries_it_out() {
        let req = parse(
            "upload",
            br#"{"id":"u","from":"2026-10-01","to":"2026-10-01"}"#,
        )
        .unwrap();
        let plan = crate::config::load_str(
            "t.toml",
            "[gateway]\nsite = \"s\"\nid = \"g\"\n\n[[links]]\nname = \"bus\"\nkind = \"tcp\"\n\
             host = \"127.0.0.1\"\n\n[[devices]]\nname = \"m\"\nlink = \"bus\"\n\
             profile = \"chint-dtsu666\"\n",
            &crate::config::EnvOverrides::Off,
            std::path::Path::new("."),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut engine = Engine::from_spec(&plan.engine_spec());
        let (reply, event) = apply(&mut engine, &req, 0);
        let reply = String::from_utf8(reply).unwrap();
        assert!(
            reply.contains(r#""ok":false"#) && reply.contains("energy-platform queue"),
            "{reply}"
        );
        assert!(event.is_none());
        let done = String::from_utf8(upload_reply(&json!("u"), Ok(97))).unwrap();
        assert_eq!(done, r#"{"id":"u","ok":true,"queued":97,"v":1}"#);
    }

    #[test]
    fn issue_20_a_retained_command_is_refused_with_its_id_whatever_it_says() {
        let reply = match parse_downlink("serviced", br#"{"id":"r1","device":"m"}"#, true) {
            Ok(r) => panic!("a retained command was accepted: {r:?}"),
            Err(reply) => String::from_utf8(reply).unwrap(),
        };
        assert!(reply.contains(r#""id":"r1""#), "{reply}");
        assert!(reply.contains(r#""ok":false"#), "{reply}");
        assert!(reply.contains("retained"), "{reply}");
        assert!(parse_downlink("serviced", br#"{"id":"r1","device":"m"}"#, false).is_ok());
    }

    #[test]
    fn issue_20_a_hostile_command_is_answered_and_logged_cut_and_escaped() {
        let huge = "x".repeat(120_000);
        let bidi = "\u{202e}gpj.exe";
        for (name, payload) in [
            ("ack", format!(r#"{{"id":"q","{huge}":1}}"#)),
            ("ack", format!(r#"{{"id":"q","alarm":"a","{bidi}":1}}"#)),
            (bidi, r#"{"id":"q"}"#.to_owned()),
            (
                "shelve",
                format!(r#"{{"id":"q","alarm":"a","duration":"{huge}"}}"#),
            ),
            (
                "upload",
                format!(r#"{{"id":"q","from":"{bidi}","to":"2026-01-01"}}"#),
            ),
            ("ack", format!(r#"{{"id":"{huge}","alarm":"a"}}"#)),
            ("ack", format!(r#"{{"id":"{bidi}","alarm":"a"}}"#)),
        ] {
            let reply = match parse(name, payload.as_bytes()) {
                Ok(r) => panic!("accepted: {r:?}"),
                Err(reply) => String::from_utf8(reply).unwrap(),
            };
            assert!(reply.len() < 2_000, "{name}: a {} byte reply", reply.len());
            assert!(!reply.contains('\u{202e}'), "{name}: raw U+202E in {reply}");
            let json: Json = serde_json::from_str(&reply).unwrap();
            assert_eq!(json["ok"], false, "{reply}");
        }
        let reply = parse(bidi, br#"{"id":"q"}"#).unwrap_err();
        assert!(
            String::from_utf8(reply)
                .unwrap()
                .contains("\\u{202e}gpj.exe")
        );
    }

    #[test]
    fn issue_20_a_flood_of_refused_commands_logs_one_line_per_minute() {
        // A name no other test refuses, since the limit is process-wide.
        let name = "flood-\u{202e}test";
        let ((), logs) = crate::test_log::capture(|_| {
            for i in 0..5_000 {
                let reply = error_reply(&json!(i), "unknown command");
                log_refused(name, &reply);
            }
        });
        let text = logs.text();
        assert_eq!(
            text.matches("Refused a downlink command").count(),
            1,
            "{text}"
        );
        assert!(!text.contains('\u{202e}'), "{text}");
        assert!(text.contains("flood-\\u{202e}test"), "{text}");
    }

    #[test]
    fn a_write_is_validated_field_by_field() {
        assert_eq!(
            parse(
                "write",
                br#"{"id":"w","ts":1,"device":"plc","point":"sp","value":12.5}"#
            )
            .map(|r| r.command),
            Ok(Command::Write {
                device: "plc".into(),
                point: "sp".into(),
                value: json!(12.5)
            })
        );
        let w = |payload: &str| err("write", payload);
        assert!(w(r#"{"id":"w","point":"sp","value":1}"#).contains("missing `device`"));
        assert!(w(r#"{"id":"w","device":"plc","value":1}"#).contains("missing `point`"));
        assert!(w(r#"{"id":"w","device":"plc","point":"sp"}"#).contains("missing `value`"));
        assert!(
            w(r#"{"id":"w","device":"plc","point":"sp","value":[1]}"#).contains("must be a number")
        );
        assert!(
            w(r#"{"id":"w","device":"plc","point":"sp","value":1,"unit":"x"}"#)
                .contains("unknown field")
        );
    }

    #[test]
    fn valid_commands_parse() {
        assert_eq!(
            parse("shelve", br#"{"id":"x","alarm":"m/r","duration":"2h"}"#).map(|r| r.command),
            Ok(Command::Shelve {
                alarm: "m/r".into(),
                duration_ms: 7_200_000
            })
        );
        assert_eq!(
            parse("list", br#"{"id":3}"#).map(|r| r.command),
            Ok(Command::List)
        );
    }
}
