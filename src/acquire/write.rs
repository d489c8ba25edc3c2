//! Writes to devices: what a writable point allows, the request a command handler sends to a
//! link's task, and the outcome it gets back.
//!
//! A point is written only when its config opted in ([`WriteSpec`]), only within its limits,
//! and only through the task that owns its link ([`WriteHandle`]), so a write never overlaps a
//! poll transaction on the same bus. The checks here are pure; `writer.rs` does the I/O.
//!
//! Invariants:
//! - a value outside the limits, of the wrong kind, or over the rate is refused before a frame
//!   is sent;
//! - a request that waited past its deadline is dropped, never applied late;
//! - every refusal names the device and the point.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::spec::{Function, Point};
use crate::decode::DataType;
use crate::model::Value;

/// What a writable point accepts (config: `writable = true` with its limits).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSpec {
    /// The values the point may be set to.
    pub limits: WriteLimits,
    /// Writes per minute at most; `None` for no limit.
    pub max_rate: Option<u32>,
    /// Read the point back after writing and compare (config `verify`, default on).
    pub verify: bool,
}

/// The values a writable point may be set to, in engineering units.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteLimits {
    /// Any number from `min` to `max`, inclusive.
    Range {
        /// Lowest value.
        min: f64,
        /// Highest value.
        max: f64,
    },
    /// One of these values (coils, bits, enumerations, text).
    Allowed(Vec<Value>),
}

impl std::fmt::Display for WriteLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteLimits::Range { min, max } => write!(f, "{min} to {max}"),
            WriteLimits::Allowed(values) => {
                let list: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                write!(f, "one of [{}]", list.join(", "))
            }
        }
    }
}

/// The Modbus function a write uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFunction {
    /// 05: one coil.
    SingleCoil,
    /// 06: one register.
    SingleRegister,
    /// 15: several coils.
    MultipleCoils,
    /// 16: several registers.
    MultipleRegisters,
}

impl WriteFunction {
    /// The function code on the wire.
    pub fn code(self) -> u8 {
        match self {
            WriteFunction::SingleCoil => 5,
            WriteFunction::SingleRegister => 6,
            WriteFunction::MultipleCoils => 15,
            WriteFunction::MultipleRegisters => 16,
        }
    }

    /// The function for writing `point`: coils take 05 (15 when the device only accepts the
    /// multiple form), registers 06 for one register and 16 for more or when the device only
    /// accepts 16. `None` for the read-only tables.
    pub fn for_point(point: &Point, write_multiple: bool) -> Option<Self> {
        match point.function {
            Function::Coil if write_multiple => Some(WriteFunction::MultipleCoils),
            Function::Coil => Some(WriteFunction::SingleCoil),
            Function::Holding if write_multiple || point.codec.registers() > 1 => {
                Some(WriteFunction::MultipleRegisters)
            }
            Function::Holding => Some(WriteFunction::SingleRegister),
            Function::DiscreteInput | Function::Input => None,
        }
    }
}

/// What a write changed, once the device accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The device.
    pub device: String,
    /// The point.
    pub point: String,
    /// The point's value read just before writing; `None` when the device refused that read.
    pub before: Option<Value>,
    /// The value sent, as the device will serve it (after encoding's rounding).
    pub written: Value,
    /// The value read back after writing; `None` when the point has `verify = false`.
    pub verified: Option<Value>,
    /// The function code used.
    pub function: u8,
}

/// Why a write was refused or failed; every variant names the device and the point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// No device of that name is polled.
    #[error("device `{device}`: no such device")]
    UnknownDevice {
        /// The device.
        device: String,
    },
    /// The device has no point of that name.
    #[error("{device}/{point}: no such point")]
    UnknownPoint {
        /// The device.
        device: String,
        /// The point.
        point: String,
    },
    /// The point's config does not say `writable = true`.
    #[error("{device}/{point}: not writable")]
    NotWritable {
        /// The device.
        device: String,
        /// The point.
        point: String,
    },
    /// The value is not of the point's kind (text to a number, a number to a coil, …).
    #[error("{device}/{point}: {value:?} is not a {expected}")]
    WrongKind {
        /// The device.
        device: String,
        /// The point.
        point: String,
        /// The value given.
        value: Value,
        /// What the point takes.
        expected: &'static str,
    },
    /// The value is outside the point's limits, or does not fit its register type.
    #[error("{device}/{point}: {value} is out of range ({limits})")]
    OutOfRange {
        /// The device.
        device: String,
        /// The point.
        point: String,
        /// The value given.
        value: Value,
        /// The limits, for people.
        limits: String,
    },
    /// The point was written `max_rate` times in the last minute already.
    #[error("{device}/{point}: over its rate of {max_rate} writes a minute")]
    OverRate {
        /// The device.
        device: String,
        /// The point.
        point: String,
        /// The configured rate.
        max_rate: u32,
    },
    /// The device is marked offline; nothing was sent.
    #[error("{device}/{point}: device offline")]
    Offline {
        /// The device.
        device: String,
        /// The point.
        point: String,
    },
    /// The device answered with a Modbus exception.
    #[error("{device}/{point}: Modbus exception {code:02}")]
    Exception {
        /// The device.
        device: String,
        /// The point.
        point: String,
        /// The exception code.
        code: u8,
    },
    /// The device did not answer within its timeout; the write may or may not have landed.
    #[error("{device}/{point}: timeout")]
    Timeout {
        /// The device.
        device: String,
        /// The point.
        point: String,
    },
    /// The link failed (cannot connect, reset, garbage answer).
    #[error("{device}/{point}: link failed: {reason}")]
    Failed {
        /// The device.
        device: String,
        /// The point.
        point: String,
        /// Why.
        reason: String,
    },
    /// The device accepted the write but serves another value.
    #[error("{device}/{point}: wrote {written} but read back {read_back}")]
    NotVerified {
        /// The device.
        device: String,
        /// The point.
        point: String,
        /// What was written.
        written: Value,
        /// What the device serves.
        read_back: Value,
    },
    /// The link's task has too many writes queued, or stopped (shutdown, reload).
    #[error("{device}/{point}: link busy or stopped, nothing written")]
    LinkBusy {
        /// The device.
        device: String,
        /// The point.
        point: String,
    },
    /// The request waited past its deadline and was dropped unapplied.
    #[error("{device}/{point}: not served in time (link busy), nothing written")]
    Expired {
        /// The device.
        device: String,
        /// The point.
        point: String,
    },
}

/// A write's result, as its reply carries it.
pub type WriteOutcome = Result<Written, WriteError>;

/// A write on its way to a link's task.
#[derive(Debug)]
pub struct WriteRequest {
    /// The device.
    pub device: String,
    /// The point.
    pub point: String,
    /// The value, in engineering units.
    pub value: Value,
    /// Dropped unapplied when the task reaches it after this.
    pub not_after: Instant,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<WriteOutcome>,
}

/// Writes a link's task may hold queued; more are refused as busy rather than applied late.
pub const WRITE_QUEUE: usize = 8;

/// How long [`WriteHandle::write`] waits for a link's task to serve a write.
pub const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Sends writes to the tasks of the links that own the devices. Cheap to clone; link tasks
/// register their devices as they start (a reloaded link replaces its entries).
#[derive(Debug, Clone, Default)]
pub struct WriteHandle {
    routes: Arc<RwLock<HashMap<String, Route>>>,
}

/// Where a device's writes go, and how long serving one can take once it has started.
#[derive(Debug, Clone)]
struct Route {
    tx: mpsc::Sender<WriteRequest>,
    longest: Duration,
}

impl WriteHandle {
    /// An empty handle; link tasks made with it register their devices.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes writes for `device` to `tx`; `longest` bounds one write once the link has
    /// started it (connecting, reading before, writing, reading back).
    pub(crate) fn register(&self, device: &str, tx: mpsc::Sender<WriteRequest>, longest: Duration) {
        // A poisoned lock only means a writer panicked mid-insert of a whole entry.
        let mut routes = self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.insert(device.to_owned(), Route { tx, longest });
    }

    /// Forgets the routes of devices `keep` says no to, so that a device a reload removed
    /// is refused as unknown instead of reaching a stopped link.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|device, _| keep(device));
    }

    /// Whether writes to `device` currently reach a running link task.
    pub fn routes_to(&self, device: &str) -> bool {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(device)
            .is_some_and(|r| !r.tx.is_closed())
    }

    /// Writes `value` to `device`/`point`, waiting at most [`WRITE_WAIT`].
    pub async fn write(&self, device: &str, point: &str, value: Value) -> WriteOutcome {
        self.write_within(device, point, value, WRITE_WAIT).await
    }

    /// Writes `value` to `device`/`point`; a request not served within `wait` is dropped
    /// by the link unapplied and reported [`WriteError::Expired`].
    pub async fn write_within(
        &self,
        device: &str,
        point: &str,
        value: Value,
        wait: Duration,
    ) -> WriteOutcome {
        let route = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(device)
            .cloned();
        let Some(Route { tx, longest }) = route else {
            return Err(WriteError::UnknownDevice {
                device: device.to_owned(),
            });
        };
        let busy = || WriteError::LinkBusy {
            device: device.to_owned(),
            point: point.to_owned(),
        };
        let (reply, answer) = oneshot::channel();
        let not_after = Instant::now() + wait;
        let request = WriteRequest {
            device: device.to_owned(),
            point: point.to_owned(),
            value,
            not_after,
            reply,
        };
        if tx.try_send(request).is_err() {
            return Err(busy());
        }
        // The link answers expired requests itself, and a write it started before the deadline
        // ends within `longest`: waiting that long too, the reply never says "expired" for a
        // write that landed.
        match tokio::time::timeout_at(not_after + longest, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(busy()),
            Err(_) => Err(WriteError::Expired {
                device: device.to_owned(),
                point: point.to_owned(),
            }),
        }
    }
}

/// Checks `value` against `point`'s kind and limits; returns it in the form the codec takes.
///
/// # Errors
/// [`WriteError::NotWritable`], [`WriteError::WrongKind`] or [`WriteError::OutOfRange`].
#[expect(
    clippy::float_cmp,
    reason = "0 and 1 given for a coil are exact, not computed"
)]
pub fn admit(device: &str, point: &Point, value: &Value) -> Result<Value, WriteError> {
    let name = point.name.as_str();
    let Some(spec) = &point.write else {
        return Err(WriteError::NotWritable {
            device: device.to_owned(),
            point: name.to_owned(),
        });
    };
    let wrong = |expected| WriteError::WrongKind {
        device: device.to_owned(),
        point: name.to_owned(),
        value: value.clone(),
        expected,
    };
    let out_of_range = || WriteError::OutOfRange {
        device: device.to_owned(),
        point: name.to_owned(),
        value: value.clone(),
        limits: spec.limits.to_string(),
    };
    let is_switch = point.function.is_bits() || point.codec.data_type == DataType::Bit;
    let admitted = if is_switch && !point.codec.is_scaled() {
        match value {
            Value::Bool(b) => Value::Bool(*b),
            Value::I64(0) => Value::Bool(false),
            Value::I64(1) => Value::Bool(true),
            Value::F64(v) if *v == 0.0 => Value::Bool(false),
            Value::F64(v) if *v == 1.0 => Value::Bool(true),
            _ => return Err(wrong("bool (true/false or 1/0)")),
        }
    } else if point.codec.data_type == DataType::String {
        match value {
            Value::Str(s) => Value::Str(s.clone()),
            _ => return Err(wrong("text")),
        }
    } else {
        match value {
            Value::F64(v) if v.is_finite() => Value::F64(*v),
            Value::I64(v) => Value::I64(*v),
            _ => return Err(wrong("number")),
        }
    };
    let inside = match &spec.limits {
        WriteLimits::Range { min, max } => admitted
            .as_f64()
            .is_some_and(|v| (*min..=*max).contains(&v)),
        WriteLimits::Allowed(values) => values.iter().any(|a| same(a, &admitted)),
    };
    if inside {
        Ok(admitted)
    } else {
        Err(out_of_range())
    }
}

/// Whether an allowed value and a given one are the same: numbers by value, whatever their
/// integer or float form.
fn same(allowed: &Value, given: &Value) -> bool {
    match (allowed, given) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Str(_), _) | (_, Value::Str(_)) => false,
        // Exact: allowed values are codes, compared as written.
        (a, b) => a.as_f64() == b.as_f64(),
    }
}

/// Counts a point's writes over the last minute, for `max_rate`.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    recent: HashMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    /// Counts a write of `point` at `now` unless `max_rate` writes fell in the minute before;
    /// returns whether it may go.
    pub(crate) fn allow(&mut self, point: &str, max_rate: u32, now: Instant) -> bool {
        let window = self.recent.entry(point.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            window.pop_front();
        }
        if window.len() >= usize::try_from(max_rate).unwrap_or(usize::MAX) {
            return false;
        }
        window.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Codec;
    use crate::model::PointId;

    fn point(function: Function, data_type: DataType, write: Option<WriteSpec>) -> Point {
        Point {
            name: PointId::new("sp").unwrap(),
            function,
            address: 0,
            codec: Codec::plain(data_type),
            unit: String::new(),
            description: String::new(),
            report: crate::process::report::Report::default(),
            write,
        }
    }

    fn range(min: f64, max: f64) -> Option<WriteSpec> {
        Some(WriteSpec {
            limits: WriteLimits::Range { min, max },
            max_rate: None,
            verify: true,
        })
    }

    #[test]
    fn function_codes_follow_the_type_and_the_device() {
        let coil = point(Function::Coil, DataType::Bool, None);
        let one = point(Function::Holding, DataType::U16, None);
        let two = point(Function::Holding, DataType::F32, None);
        let input = point(Function::Input, DataType::U16, None);
        let di = point(Function::DiscreteInput, DataType::Bool, None);
        let cases = [
            (&coil, false, Some(5)),
            (&coil, true, Some(15)),
            (&one, false, Some(6)),
            (&one, true, Some(16)),
            (&two, false, Some(16)),
            (&two, true, Some(16)),
            (&input, false, None),
            (&di, true, None),
        ];
        for (p, multiple, code) in cases {
            assert_eq!(
                WriteFunction::for_point(p, multiple).map(WriteFunction::code),
                code,
                "{:?} {} write_multiple={multiple}",
                p.function,
                p.codec.data_type
            );
        }
    }

    #[test]
    fn values_are_admitted_only_within_limits_and_of_the_right_kind() {
        let sp = point(Function::Holding, DataType::U16, range(10.0, 20.0));
        assert_eq!(admit("d", &sp, &Value::I64(15)), Ok(Value::I64(15)));
        assert_eq!(admit("d", &sp, &Value::F64(20.0)), Ok(Value::F64(20.0)));
        let err = admit("d", &sp, &Value::F64(20.5)).unwrap_err();
        assert_eq!(err.to_string(), "d/sp: 20.5 is out of range (10 to 20)");
        assert!(matches!(
            admit("d", &sp, &Value::Str("15".into())),
            Err(WriteError::WrongKind { .. })
        ));
        assert!(matches!(
            admit("d", &sp, &Value::F64(f64::NAN)),
            Err(WriteError::WrongKind { .. })
        ));
        let ro = point(Function::Holding, DataType::U16, None);
        assert_eq!(
            admit("d", &ro, &Value::I64(1)).unwrap_err().to_string(),
            "d/sp: not writable"
        );
    }

    #[test]
    fn coils_take_booleans_or_one_and_zero_from_their_allowed_set() {
        let coil = point(
            Function::Coil,
            DataType::Bool,
            Some(WriteSpec {
                limits: WriteLimits::Allowed(vec![Value::Bool(true)]),
                max_rate: None,
                verify: true,
            }),
        );
        assert_eq!(admit("d", &coil, &Value::I64(1)), Ok(Value::Bool(true)));
        assert!(matches!(
            admit("d", &coil, &Value::Bool(false)),
            Err(WriteError::OutOfRange { .. })
        ));
        assert!(matches!(
            admit("d", &coil, &Value::I64(2)),
            Err(WriteError::WrongKind { .. })
        ));
    }

    #[test]
    fn enumerations_accept_their_codes_as_integers_or_floats() {
        let mode = point(
            Function::Holding,
            DataType::U16,
            Some(WriteSpec {
                limits: WriteLimits::Allowed(vec![Value::F64(0.0), Value::F64(2.0)]),
                max_rate: None,
                verify: true,
            }),
        );
        assert!(admit("d", &mode, &Value::I64(2)).is_ok());
        assert!(admit("d", &mode, &Value::F64(0.0)).is_ok());
        assert!(admit("d", &mode, &Value::I64(1)).is_err());
    }

    #[test]
    fn the_rate_limit_counts_writes_over_a_sliding_minute() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.allow("sp", 2, t0));
        assert!(limiter.allow("sp", 2, t0 + Duration::from_secs(10)));
        assert!(!limiter.allow("sp", 2, t0 + Duration::from_secs(59)));
        assert!(limiter.allow("other", 2, t0 + Duration::from_secs(59)));
        // The first write left the window; the refused one did not count.
        assert!(limiter.allow("sp", 2, t0 + Duration::from_secs(60)));
        assert!(!limiter.allow("sp", 2, t0 + Duration::from_secs(61)));
    }
}
