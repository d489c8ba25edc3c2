//! Operator commands on alarms, from the MQTT downlink (`{prefix}/cmd/{name}`) and from
//! `plantwatch alarms` (through the state file's command queue).
//!
//! Every command is validated in full before anything changes, and every one gets exactly one
//! reply carrying the request's `id`: `{"v":1,"id":…,"ok":true,…}` or
//! `{"v":1,"id":…,"ok":false,"error":"…"}`. A malformed command changes nothing.

use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::config::rules::parse_duration;
use crate::detect::{AlarmEvent, Engine, MAX_SHELVE_MS};

/// The command names, for messages.
pub const NAMES: &[&str] = &["ack", "shelve", "unshelve", "list", "serviced"];

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
    alarm: Option<String>,
    duration: Option<String>,
    device: Option<String>,
}

/// The error reply for a request that could not be carried out.
pub fn error_reply(id: &Json, message: &str) -> Vec<u8> {
    json!({"v": 1, "id": id, "ok": false, "error": message})
        .to_string()
        .into_bytes()
}

/// Parses and validates command `name` with JSON `payload`.
///
/// # Errors
/// The error reply (JSON bytes) naming what is wrong.
pub fn parse(name: &str, payload: &[u8]) -> Result<Request, Vec<u8>> {
    // Salvage the id from anything object-like, so even a bad command's reply can be matched.
    let loose: Option<Json> = serde_json::from_slice(payload).ok();
    let id = loose
        .as_ref()
        .and_then(|v| v.get("id"))
        .cloned()
        .unwrap_or(Json::Null);
    let fail = |m: String| Err(error_reply(&id, &m));
    if !NAMES.contains(&name) {
        return fail(format!(
            "unknown command `{name}`; commands: {}",
            NAMES.join(", ")
        ));
    }
    let body: Body = match serde_json::from_slice(payload) {
        Ok(b) => b,
        Err(e) => {
            return fail(format!(
                "malformed command: {e}; send e.g. {{\"id\":\"1\",\"alarm\":\"motor-1/bearing-hot\"}}"
            ));
        }
    };
    if matches!(body.id, None | Some(Json::Null)) {
        return fail("missing `id`: every command needs one, echoed in its reply".into());
    }
    if matches!(body.id, Some(Json::Array(_) | Json::Object(_))) {
        return fail("`id` must be a string or a number".into());
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
            let d = parse_duration(text)?;
            let duration_ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if !(1000..=MAX_SHELVE_MS).contains(&duration_ms) {
                return Err(format!("duration `{text}` is out of range: give 1s to 30d"));
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
