//! The `write` downlink command as the core carries it out: checked against the plan, its
//! intent audited, then handed to the link's task through the [`WriteHandle`] while the core
//! goes on with polls and other commands; its outcome (the value before, the value verified
//! after) is audited and answered when the link is done.
//!
//! Invariants:
//! - a write reaches a link only after its `intent` row is committed to the audit trail, so a
//!   crash between the frame and the outcome row still leaves evidence of the attempt;
//! - every write that got an `intent` row gets an outcome row: done, failed, refused by the
//!   link (over rate, offline, busy), or interrupted by a reload or shutdown;
//! - at most [`MAX_IN_FLIGHT`] writes wait at once; more are refused (`busy`), audited, with
//!   nothing written;
//! - the core never waits on a device: a write is a future polled beside the batches.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value as Json, json};

use crate::acquire::write::{WriteError, WriteHandle, WriteOutcome, admit};
use crate::config::Plan;
use crate::model::Value;

/// Writes that may wait for their links at once; beyond it a write is refused as `busy`.
pub(super) const MAX_IN_FLIGHT: usize = 32;

/// A write whose intent is audited and whose outcome is awaited.
#[derive(Debug, Clone)]
pub(super) struct Started {
    /// The command's `id`, for the reply.
    pub(super) id: Json,
    /// The sink it came from: the reply goes back there.
    pub(super) sink: String,
    /// The key that signed it.
    pub(super) key: Option<String>,
    /// The payload as it arrived, for the outcome row's hash.
    pub(super) payload: Vec<u8>,
    /// The device.
    pub(super) device: String,
    /// The point.
    pub(super) point: String,
    /// When the core took the command, for the write's timing line.
    pub(super) received: Instant,
    /// It came as a Sparkplug DCMD or NCMD metric (unsigned): audited as `sparkplug:{sink}`
    /// and answered with a DDATA, not a reply.
    pub(super) sparkplug: bool,
}

impl Started {
    /// The audit rows' source: `mqtt:{sink}`, or `sparkplug:{sink}`.
    pub(super) fn source(&self) -> String {
        let kind = if self.sparkplug { "sparkplug" } else { "mqtt" };
        format!("{kind}:{}", self.sink)
    }
}

/// Where a write's time went, logged at DEBUG when it is answered: the round trip is mostly
/// waiting (store commits, the link's queue), and this says which.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// The core took the command.
    pub(super) received: Instant,
    /// Its intent row was committed and the link was asked.
    pub(super) handed: Option<Instant>,
    /// The link answered.
    pub(super) answered: Option<Instant>,
}

/// A finished write: what was asked and what happened.
pub(super) struct Finished {
    /// What was asked.
    pub(super) started: Started,
    /// What happened; `None` when the core stopped before the link answered.
    pub(super) outcome: Option<WriteOutcome>,
    /// When it was handed to the link and when the link answered.
    pub(super) timing: Timing,
}

// `Sync` too: the core is borrowed across awaits, so everything it holds must be.
type Pending = Pin<Box<dyn Future<Output = (u64, WriteOutcome, Instant)> + Send + Sync>>;

/// The core's writes in flight.
pub(super) struct Writes {
    handle: WriteHandle,
    in_flight: FuturesUnordered<Pending>,
    started: HashMap<u64, (Started, Instant)>,
    next: u64,
}

impl Writes {
    /// No writes in flight; new ones go through `handle`.
    pub(super) fn new(handle: WriteHandle) -> Self {
        Self {
            handle,
            in_flight: FuturesUnordered::new(),
            started: HashMap::new(),
            next: 0,
        }
    }

    /// Whether no write is waiting.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether another write may start.
    pub(super) fn has_room(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT
    }

    /// Hands `value` to the link of `started.device`; its intent must be audited already.
    pub(super) fn start(&mut self, started: Started, value: Value) {
        let token = self.next;
        self.next += 1;
        let handle = self.handle.clone();
        let (device, point) = (started.device.clone(), started.point.clone());
        self.started
            .insert(token, (started, crate::clock::monotonic()));
        self.in_flight.push(Box::pin(async move {
            let outcome = handle.write(&device, &point, value).await;
            (token, outcome, crate::clock::monotonic())
        }));
    }

    /// The next write to finish; pends forever when none is in flight (guard with
    /// [`Writes::is_idle`]).
    pub(super) async fn next(&mut self) -> Option<Finished> {
        let (token, outcome, answered) = self.in_flight.next().await?;
        let (started, handed) = self.started.remove(&token)?;
        let timing = Timing {
            received: started.received,
            handed: Some(handed),
            answered: Some(answered),
        };
        Some(Finished {
            started,
            outcome: Some(outcome),
            timing,
        })
    }

    /// Gives up on the writes still in flight (the core is stopping): each as interrupted.
    pub(super) fn abandon(&mut self) -> Vec<Finished> {
        self.in_flight = FuturesUnordered::new();
        self.started
            .drain()
            .map(|(_, (started, handed))| Finished {
                timing: Timing {
                    received: started.received,
                    handed: Some(handed),
                    answered: None,
                },
                started,
                outcome: None,
            })
            .collect()
    }
}

/// Logs at DEBUG where the time of one write went, in ms: until its intent was committed
/// and the link asked, in the link, waiting for the core after the link answered, committing
/// the outcome, and storing the reply.
pub(super) fn log_timing(finished: &Finished, taken: Instant, audited: Instant, stored: Instant) {
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
    let t = finished.timing;
    let handed = t.handed.unwrap_or(taken);
    let answered = t.answered.unwrap_or(taken);
    tracing::debug!(
        device = %finished.started.device,
        point = %finished.started.point,
        intent_ms = ms(t.received, handed),
        link_ms = ms(handed, answered),
        core_wait_ms = ms(answered, taken),
        outcome_ms = ms(taken, audited),
        reply_ms = ms(audited, stored),
        total_ms = ms(t.received, stored),
        "Write answered; where its time went."
    );
}

/// The value of a `write` command as the write path takes it.
///
/// # Errors
/// What the field should have been.
pub(super) fn value_of(json: &Json) -> Result<Value, String> {
    match json {
        Json::Bool(b) => Ok(Value::Bool(*b)),
        Json::String(s) => Ok(Value::Str(s.clone())),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Value::I64(i)),
            (None, Some(f)) => Ok(Value::F64(f)),
            (None, None) => Err(format!(
                "`value` {n} is not a number this gateway can write"
            )),
        },
        Json::Null | Json::Array(_) | Json::Object(_) => Err(
            "`value` must be a number, true/false or text (the point's engineering value)".into(),
        ),
    }
}

/// `value` as JSON for a reply.
pub(super) fn json_of(value: &Value) -> Json {
    match value {
        Value::F64(v) => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
        Value::I64(v) => Json::from(*v),
        Value::Bool(b) => Json::Bool(*b),
        Value::Str(s) => Json::String(s.clone()),
    }
}

/// Checks a write against the plan before anything is audited as intent: the device and the
/// point exist, the point is writable, the value is of its kind and within its limits.
///
/// # Errors
/// The refusal, naming the device and the point.
pub(super) fn check(
    plan: &Plan,
    device: &str,
    point: &str,
    value: &Value,
) -> Result<Value, WriteError> {
    let Some(dev) = plan.devices.iter().find(|d| d.name.as_str() == device) else {
        return Err(WriteError::UnknownDevice {
            device: device.to_owned(),
        });
    };
    let Some(p) = dev.points.iter().find(|p| p.name.as_str() == point) else {
        return Err(WriteError::UnknownPoint {
            device: device.to_owned(),
            point: point.to_owned(),
        });
    };
    admit(device, p, value)
}

/// The refusal kind of a write that left nothing written, as replies and audit rows name it;
/// `None` for a failure where the device was reached (an exception, a timeout, a read-back
/// that differs), which the reply names with `"failed"` instead.
pub(super) fn refusal_kind(err: &WriteError) -> Option<&'static str> {
    match err {
        WriteError::UnknownDevice { .. } => Some("unknown_device"),
        WriteError::UnknownPoint { .. } => Some("unknown_point"),
        WriteError::NotWritable { .. } => Some("not_writable"),
        WriteError::WrongKind { .. } => Some("wrong_kind"),
        WriteError::OutOfRange { .. } => Some("out_of_range"),
        WriteError::OverRate { .. } => Some("over_rate"),
        WriteError::Offline { .. } => Some("offline"),
        WriteError::LinkBusy { .. } | WriteError::Expired { .. } => Some("busy"),
        WriteError::Exception { .. }
        | WriteError::Timeout { .. }
        | WriteError::Failed { .. }
        | WriteError::NotVerified { .. } => None,
    }
}

/// The failure kind of a write that reached the device and did not succeed.
fn failure_kind(err: &WriteError) -> &'static str {
    match err {
        WriteError::Exception { .. } => "exception",
        WriteError::Timeout { .. } => "timeout",
        WriteError::NotVerified { .. } => "not_verified",
        _ => "link",
    }
}

/// Whether a Modbus exception `code` in answer to a write means the device refused it before
/// doing anything: 01 illegal function, 02 illegal data address, 03 illegal data value. Other
/// codes (04 server device failure, …) come from a device that tried: the write may have
/// landed in part.
fn refused_by_device(code: u8) -> bool {
    matches!(code, 1..=3)
}

/// The audit row's reason for a write exception.
fn exception_reason(code: u8) -> &'static str {
    match code {
        1 => "exception_01",
        2 => "exception_02",
        3 => "exception_03",
        4 => "exception_04",
        5 => "exception_05",
        6 => "exception_06",
        8 => "exception_08",
        10 => "exception_0a",
        11 => "exception_0b",
        _ => "exception",
    }
}

/// What the outcome row of a finished write says, beyond its reply: `(outcome, reason)`.
///
/// - `done`: written (and read back, with `verify`);
/// - `refused` (with the refusal's kind): refused by the gateway or the link, nothing sent;
/// - `rejected` (reason `exception_01`–`_03`): the device answered the write with an
///   exception that means it did not carry it out: nothing written;
/// - `unknown` (reason `timeout`, `link`, or another `exception_…`): no answer, a broken
///   link, or a device failure: the write may have landed;
/// - `failed` (reason `not_verified`): written, but the device serves another value;
/// - `interrupted`: the core stopped before the link answered: the write may have landed.
pub(super) fn verdict(outcome: Option<&WriteOutcome>) -> (&'static str, Option<&'static str>) {
    match outcome {
        None => ("interrupted", None),
        Some(Ok(_)) => ("done", None),
        Some(Err(err)) => match (refusal_kind(err), err) {
            (Some(kind), _) => ("refused", Some(kind)),
            (None, WriteError::Exception { code, .. }) if refused_by_device(*code) => {
                ("rejected", Some(exception_reason(*code)))
            }
            (None, WriteError::Exception { code, .. }) => {
                ("unknown", Some(exception_reason(*code)))
            }
            (None, WriteError::NotVerified { .. }) => ("failed", Some("not_verified")),
            (None, WriteError::Timeout { .. }) => ("unknown", Some("timeout")),
            (None, _) => ("unknown", Some("link")),
        },
    }
}

/// The reply to a finished write, and the refusal kind for its audit row (when nothing was
/// written).
pub(super) fn reply(finished: &Finished) -> (Vec<u8>, Option<&'static str>) {
    let s = &finished.started;
    match &finished.outcome {
        Some(Ok(w)) => (
            json!({
                "v": 1,
                "id": s.id,
                "ok": true,
                "device": w.device,
                "point": w.point,
                "before": w.before.as_ref().map_or(Json::Null, json_of),
                "value": json_of(w.verified.as_ref().unwrap_or(&w.written)),
                "verified": w.verified.is_some(),
                "function": w.function,
            })
            .to_string()
            .into_bytes(),
            None,
        ),
        Some(Err(err)) => refused_or_failed(&s.id, err),
        None => (
            super::commands::error_reply(
                &s.id,
                &format!(
                    "{}/{}: interrupted by a reload or shutdown before the device answered; \
                     the write may have landed: read the point before writing again",
                    s.device, s.point
                ),
            ),
            None,
        ),
    }
}

/// The reply to a write that failed with `err`: `"refused"` when nothing was written,
/// `"failed"` otherwise.
pub(super) fn refused_or_failed(id: &Json, err: &WriteError) -> (Vec<u8>, Option<&'static str>) {
    let mut message = format!("refused `write`: {err}");
    match err {
        WriteError::Timeout { .. } => {
            message = format!(
                "`write` {err}: the device did not answer, the write may have landed; read the \
                 point before writing again"
            );
        }
        WriteError::Exception { code, .. } if refused_by_device(*code) => {
            let reply = super::commands::error_reply(
                id,
                &format!("`write` refused by the device: {err}; nothing was written"),
            );
            let reply = super::command_auth::mark_refused(reply, "device_exception");
            return (mark(reply, "exception", Json::from(*code)), None);
        }
        WriteError::Exception { .. } => {
            message = format!(
                "`write` failed: {err} (the device failed while writing): the write may have \
                 landed in part; read the point before writing again"
            );
        }
        _ if refusal_kind(err).is_none() => message = format!("`write` failed: {err}"),
        _ => {}
    }
    let reply = super::commands::error_reply(id, &message);
    match refusal_kind(err) {
        Some(kind) => (super::command_auth::mark_refused(reply, kind), Some(kind)),
        None => (mark(reply, "failed", Json::from(failure_kind(err))), None),
    }
}

/// The intent row's text: what is about to be written, before the link is asked.
pub(super) fn intent(s: &Started, value: &Value) -> Vec<u8> {
    json!({"v": 1, "id": s.id, "intent": "write", "device": s.device, "point": s.point,
           "value": json_of(value)})
    .to_string()
    .into_bytes()
}

/// Adds `field: value` to a JSON reply.
fn mark(reply: Vec<u8>, field: &str, value: Json) -> Vec<u8> {
    match serde_json::from_slice::<Json>(&reply) {
        Ok(Json::Object(mut map)) => {
            map.insert(field.into(), value);
            Json::Object(map).to_string().into_bytes()
        }
        _ => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_values_map_onto_the_write_path_kinds() {
        assert_eq!(value_of(&json!(12)), Ok(Value::I64(12)));
        assert_eq!(value_of(&json!(-1.5)), Ok(Value::F64(-1.5)));
        assert_eq!(value_of(&json!(true)), Ok(Value::Bool(true)));
        assert_eq!(value_of(&json!("AUTO")), Ok(Value::Str("AUTO".into())));
        assert!(value_of(&json!(null)).is_err());
        assert!(value_of(&json!([1])).is_err());
        assert_eq!(json_of(&Value::F64(f64::NAN)), Json::Null);
        assert_eq!(json_of(&Value::I64(-4660)), json!(-4660));
    }

    #[test]
    fn a_refusal_says_nothing_was_written_and_a_failure_says_what_the_device_did() {
        let id = json!("w1");
        let (reply, kind) = refused_or_failed(
            &id,
            &WriteError::OverRate {
                device: "plc".into(),
                point: "sp".into(),
                max_rate: 2,
            },
        );
        let r: Json = serde_json::from_slice(&reply).unwrap();
        assert_eq!(kind, Some("over_rate"));
        assert_eq!(r["refused"], "over_rate", "{r}");
        assert_eq!(r["id"], "w1");
        let exception = |code| WriteError::Exception {
            device: "plc".into(),
            point: "sp".into(),
            code,
        };
        let (reply, kind) = refused_or_failed(&id, &exception(2));
        let r: Json = serde_json::from_slice(&reply).unwrap();
        assert_eq!(kind, None);
        assert_eq!(r["refused"], "device_exception", "{r}");
        assert_eq!(r["exception"], 2, "{r}");
        assert!(r["error"].as_str().unwrap().contains("plc/sp"), "{r}");
        assert!(
            r["error"].as_str().unwrap().contains("nothing was written"),
            "{r}"
        );
        let (reply, _) = refused_or_failed(&id, &exception(4));
        let r: Json = serde_json::from_slice(&reply).unwrap();
        assert_eq!(r["failed"], "exception", "{r}");
        assert!(
            r["error"].as_str().unwrap().contains("may have landed"),
            "{r}"
        );
    }

    #[test]
    fn the_outcome_row_tells_a_device_refusal_from_a_write_that_may_have_landed() {
        let err = |e: WriteError| Some(Err(e));
        let (device, point) = (String::from("plc"), String::from("sp"));
        let exception = |code| WriteError::Exception {
            device: device.clone(),
            point: point.clone(),
            code,
        };
        assert_eq!(
            verdict(err(exception(2)).as_ref()),
            ("rejected", Some("exception_02"))
        );
        assert_eq!(
            verdict(err(exception(4)).as_ref()),
            ("unknown", Some("exception_04"))
        );
        let timeout = WriteError::Timeout {
            device: device.clone(),
            point: point.clone(),
        };
        assert_eq!(verdict(err(timeout).as_ref()), ("unknown", Some("timeout")));
        let over = WriteError::OverRate {
            device: device.clone(),
            point: point.clone(),
            max_rate: 1,
        };
        assert_eq!(verdict(err(over).as_ref()), ("refused", Some("over_rate")));
        assert_eq!(verdict(None), ("interrupted", None));
    }
}
