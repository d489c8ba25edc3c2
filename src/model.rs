//! Plain data that crosses stage boundaries: names, timestamps, values, quality and samples.
//!
//! Invariants: a [`Name`] always matches `[a-z0-9_-]{1,64}`; a [`Timestamp`] is milliseconds
//! since the Unix epoch, UTC. Nothing here does I/O or reads the clock.

use std::fmt;
use std::sync::Arc;

/// Parses a duration as people write it in config files and commands (`"30s"`, `"5m"`,
/// `"6h"`, `"1h 30m"`, `"0"`); the error says what was written and what would do.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "`{s}` is negative; durations are 0 or more, e.g. \"30s\""
        ));
    }
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "`{s}` is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"5m\", \"6h\", \"2d\""
        )
    })
}

/// Why a string was rejected as a device, point or link name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid name: use 1 to 64 of a-z, 0-9, `_` and `-`")]
pub struct InvalidName(pub String);

/// A validated identifier (`[a-z0-9_-]{1,64}`) for a device, point or link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    /// Validates `s` and wraps it.
    ///
    /// # Errors
    /// [`InvalidName`] when `s` is empty, longer than 64 bytes or has other characters.
    pub fn new(s: &str) -> Result<Self, InvalidName> {
        Self::check(s)?;
        Ok(Self(Arc::from(s)))
    }

    /// Checks `s` as [`Name::new`] does, without allocating the name.
    ///
    /// # Errors
    /// [`InvalidName`] when `s` is empty, longer than 64 bytes or has other characters.
    pub fn check(s: &str) -> Result<(), InvalidName> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(InvalidName(s.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so names line up in tables.
        f.pad(&self.0)
    }
}

/// Identifies a device in the config.
pub type DeviceId = Name;
/// Identifies a point within its device.
pub type PointId = Name;
/// Identifies a link (a TCP endpoint or a serial bus).
pub type LinkId = Name;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus `ms` milliseconds.
    #[must_use]
    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "{}ms", self.0),
        }
    }
}

/// A decoded, scaled value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A floating point value, or any value that was scaled.
    F64(f64),
    /// An integer value read without scaling.
    I64(i64),
    /// A coil, discrete input or register bit.
    Bool(bool),
    /// Text read from a run of registers.
    Str(String),
}

impl Value {
    /// The value as a number, where it has one (`true` is 1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            #[expect(clippy::cast_precision_loss, reason = "plant values fit in 53 bits")]
            Value::I64(v) => Some(*v as f64),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Str(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::F64(v) => {
                // Trim float noise from scaling (0.1 * 2314 = 231.40000000000003).
                let rounded = (v * 1e6).round() / 1e6;
                write!(f, "{rounded}")
            }
            Value::I64(v) => write!(f, "{v}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Why a sample is bad (docs/design.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadReason {
    /// The device did not answer within the transaction timeout, or the cycle was skipped after one.
    Timeout,
    /// The device answered with this Modbus exception code.
    Exception(u8),
    /// The registers could not be decoded as the configured type.
    Decode,
    /// The device is offline or its link is down.
    CommLost,
}

/// Why a sample is uncertain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UncertainReason {
    /// The value is held from an earlier poll.
    Held,
}

/// How far a sample's value can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    /// Read and decoded in this poll.
    Good,
    /// Usable with care.
    Uncertain(UncertainReason),
    /// Not usable; the value is absent.
    Bad(BadReason),
}

impl Quality {
    /// Short form for payloads: `good`, `uncertain` or `bad`.
    pub fn label(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain(_) => "uncertain",
            Quality::Bad(_) => "bad",
        }
    }

    /// The reason as text (`timeout`, `exception:02`, `decode`, `comm_lost`, `held`), if any.
    pub fn reason(self) -> Option<String> {
        match self {
            Quality::Good => None,
            Quality::Uncertain(UncertainReason::Held) => Some("held".into()),
            Quality::Bad(BadReason::Timeout) => Some("timeout".into()),
            Quality::Bad(BadReason::Exception(code)) => Some(format!("exception:{code:02}")),
            Quality::Bad(BadReason::Decode) => Some("decode".into()),
            Quality::Bad(BadReason::CommLost) => Some("comm_lost".into()),
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            None => f.write_str(self.label()),
            Some(reason) => write!(f, "{}:{reason}", self.label()),
        }
    }
}

/// One point's reading within a [`SampleBatch`]. The outbox reads stored ones with the name
/// borrowed from the row (`PointSample<&str>`), so rendering them allocates no [`Name`].
#[derive(Debug, Clone, PartialEq)]
pub struct PointSample<N = PointId> {
    /// The point's name.
    pub point: N,
    /// When the response that carried it arrived.
    pub ts: Timestamp,
    /// The value; `None` when the quality is bad.
    pub value: Option<Value>,
    /// How far the value can be trusted.
    pub quality: Quality,
}

/// Every point of one device poll: the unit that crosses the acquire → core channel.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleBatch {
    /// The polled device.
    pub device: DeviceId,
    /// When this poll started (the clock's time as the link got to the device).
    pub tick: Timestamp,
    /// One entry per configured point, in config order.
    pub samples: Vec<PointSample>,
}

/// A single sample addressed `device/point` (docs/design.md §2).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The device.
    pub device: DeviceId,
    /// The point within it.
    pub point: PointId,
    /// When the response arrived.
    pub ts: Timestamp,
    /// The value; `None` when bad.
    pub value: Option<Value>,
    /// How far the value can be trusted.
    pub quality: Quality,
}

impl SampleBatch {
    /// The poll's time (ms): its last response, as its telemetry message carries it, or its
    /// tick when it has no samples. Rules, the ledger and the pipeline's clock all use it, so a
    /// replay of recorded telemetry sees the times the live daemon saw.
    pub fn time(&self) -> i64 {
        self.samples
            .iter()
            .map(|s| s.ts.0)
            .max()
            .unwrap_or(self.tick.0)
    }

    /// Flattens the batch into self-contained samples.
    pub fn into_samples(self) -> impl Iterator<Item = Sample> {
        let device = self.device;
        self.samples.into_iter().map(move |s| Sample {
            device: device.clone(),
            point: s.point,
            ts: s.ts,
            value: s.value,
            quality: s.quality,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet_only() {
        assert!(Name::new("main-meter_01").is_ok());
        for bad in ["", "Main", "a b", "ü", &"x".repeat(65)] {
            assert!(Name::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Name::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn quality_renders_reason_as_in_the_design() {
        assert_eq!(
            Quality::Bad(BadReason::Exception(2)).to_string(),
            "bad:exception:02"
        );
        assert_eq!(
            Quality::Bad(BadReason::CommLost).to_string(),
            "bad:comm_lost"
        );
        assert_eq!(Quality::Good.to_string(), "good");
    }

    #[test]
    fn scaled_floats_print_without_noise() {
        assert_eq!(Value::F64(2314.0 * 0.1).to_string(), "231.4");
    }
}
