//! A compact, lossless binary form of one telemetry [`SampleBatch`], for outbox payloads.
//!
//! The outbox keeps what it stores small because gateways write to flash (docs/design.md §5, §8:
//! at most 32 bytes of disk per stored value); the JSON wire form is rendered from this at send
//! time. Pure: no I/O, no clock.
//!
//! Layout (format 1), all integers LEB128 varints, signed ones zigzagged first:
//!
//! ```text
//! u8 format = 1 | varint seq | str device | zigzag tick | varint count
//! count × ( str point | zigzag (ts - previous ts; the first is relative to tick)
//!         | u8 tag = kind | quality << 4 | [u8 exception code] | value bytes )
//! str = varint length + UTF-8 bytes
//! ```
//!
//! Value kinds, chosen by the encoder as the shortest form that gives back the *identical*
//! bits: absent; `false`/`true` (no bytes); i64 (zigzag); f64 that is an integer (zigzag); f64
//! that is a decimal count times `0.1`…`0.0001` or divided by `10`…`10000` (zigzag count; this
//! is how scaled registers are made, `raw * scale`); f64 that survives f32 (4 bytes); any
//! other f64 (8 bytes); string.
//!
//! Invariants: `decode_batch(&encode_batch(b, s)) == Ok((b, s))` bit for bit, for every batch
//! (including NaN payloads, `-0.0` and extreme timestamps); decoding untrusted bytes never
//! panics and never allocates more than the input can describe.

use crate::model::{
    BadReason, InvalidName, Name, PointSample, Quality, SampleBatch, Timestamp, UncertainReason,
    Value,
};

/// The format byte written first; decoding rejects any other.
pub const FORMAT: u8 = 1;

/// Why bytes could not be decoded as a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end inside a field.
    #[error("batch record: truncated at byte {at}")]
    Truncated {
        /// Offset where more bytes were needed.
        at: usize,
    },
    /// The format byte is not one this build reads.
    #[error("batch record: format {found} is not supported (expected {FORMAT})")]
    Format {
        /// The format byte found.
        found: u8,
    },
    /// A varint is longer than 64 bits.
    #[error("batch record: varint too long at byte {at}")]
    Varint {
        /// Offset of the varint.
        at: usize,
    },
    /// A tag byte names no known kind or quality.
    #[error("batch record: unknown tag {tag:#04x} at byte {at}")]
    Tag {
        /// The tag byte.
        tag: u8,
        /// Its offset.
        at: usize,
    },
    /// A string is not UTF-8.
    #[error("batch record: invalid UTF-8 at byte {at}")]
    Utf8 {
        /// Offset of the string.
        at: usize,
    },
    /// A device or point name is not a valid name.
    #[error("batch record: bad name at byte {at}")]
    Name {
        /// Offset of the name.
        at: usize,
        /// Why it was rejected.
        #[source]
        source: InvalidName,
    },
    /// Bytes follow the last sample.
    #[error("batch record: {extra} trailing bytes")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

// Value kinds (low nibble of the tag).
const K_ABSENT: u8 = 0;
const K_F64: u8 = 1;
const K_F32: u8 = 2;
const K_I64: u8 = 3;
const K_FALSE: u8 = 4;
const K_TRUE: u8 = 5;
const K_STR: u8 = 6;
/// `count * MUL[k]`, kinds 7..=10.
const K_MUL: u8 = 7;
/// `count / DIV[k]`, kinds 11..=14.
const K_DIV: u8 = 11;
/// An integral f64, stored as its integer.
const K_INTEGRAL: u8 = 15;

const MUL: [f64; 4] = [0.1, 0.01, 0.001, 0.0001];
const DIV: [f64; 4] = [10.0, 100.0, 1000.0, 10000.0];

// Qualities (high nibble of the tag).
const Q_GOOD: u8 = 0;
const Q_HELD: u8 = 1;
const Q_TIMEOUT: u8 = 2;
const Q_EXCEPTION: u8 = 3;
const Q_DECODE: u8 = 4;
const Q_COMM_LOST: u8 = 5;

/// Largest magnitude an f64 holds every integer up to (2^53).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Format byte of a message stored as its final wire bytes (alarms, health): small and rare,
/// so there is nothing to gain from a compact form.
pub const FORMAT_WIRE: u8 = 2;
/// The same, published with the MQTT retain flag.
pub const FORMAT_WIRE_RETAINED: u8 = 3;

/// Stores `payload` as wire bytes, to be published as is (retained if `retain`).
pub fn encode_wire(payload: &[u8], retain: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(if retain {
        FORMAT_WIRE_RETAINED
    } else {
        FORMAT_WIRE
    });
    out.extend_from_slice(payload);
    out
}

/// The wire bytes and retain flag of a row stored by [`encode_wire`]; `None` for other formats.
pub fn decode_wire(stored: &[u8]) -> Option<(&[u8], bool)> {
    match stored.split_first()? {
        (&FORMAT_WIRE, rest) => Some((rest, false)),
        (&FORMAT_WIRE_RETAINED, rest) => Some((rest, true)),
        _ => None,
    }
}

/// The stored payload of a platform `record`: its stored form
/// ([`Record::to_stored`](crate::platform::Record::to_stored)) wrapped as wire bytes, not
/// retained. The bytes depend only on the record, so a record built again from the same
/// intervals (a restart that repeats work, the `upload` command) stores as the same bytes and
/// reaches the platform under the same key (enterpriseCode, dataCode, statType, statDate), the
/// identity the platform keeps. What only the upload knows (versions, `uploadDate`) is added
/// when it is sent.
pub fn platform_payload(record: &crate::platform::Record) -> Vec<u8> {
    encode_wire(&record.to_stored(), false)
}

/// The outbox message that queues a platform `record` in `queue` under its stream
/// ([`crate::platform::outbox::stream`]) with sequence number `seq` (from a counter for that
/// stream, seeded with `StoreHandle::next_seq`), made at `created_ms`. The daemon's core,
/// which fills several queues, qualifies the key per queue.
pub fn platform_message(
    record: &crate::platform::Record,
    queue: super::QueueId,
    seq: u64,
    created_ms: i64,
) -> super::OutboxMessage {
    let key = crate::platform::outbox::stream(&record.key.data_code);
    super::OutboxMessage {
        queue,
        stream: key.clone(),
        key,
        seq,
        created_ms,
        payload: platform_payload(record),
    }
}

/// The platform record stored in a payload made by [`platform_payload`].
///
/// # Errors
/// [`StoredRecordError`](crate::platform::record::StoredRecordError) when the payload is not a
/// stored record.
pub fn platform_record(
    payload: &[u8],
) -> Result<crate::platform::Record, crate::platform::record::StoredRecordError> {
    let (body, _retain) = decode_wire(payload).ok_or_else(|| {
        crate::platform::record::StoredRecordError("not a stored wire message".into())
    })?;
    crate::platform::Record::from_stored(body)
}

/// Encodes `batch` and its `seq` in the compact form described in the module docs.
pub fn encode_batch(batch: &SampleBatch, seq: u64) -> Vec<u8> {
    // Most polls: ~3-8 bytes of name plus ~4 of value and tag per point.
    let mut out = Vec::with_capacity(16 + batch.device.as_str().len() + 12 * batch.samples.len());
    out.push(FORMAT);
    put_varint(&mut out, seq);
    put_str(&mut out, batch.device.as_str());
    put_varint(&mut out, zigzag(batch.tick.0));
    put_varint(&mut out, batch.samples.len() as u64);
    let mut prev = batch.tick.0;
    for s in &batch.samples {
        put_str(&mut out, s.point.as_str());
        // Wrapping keeps extreme timestamps lossless; decode wraps back.
        put_varint(&mut out, zigzag(s.ts.0.wrapping_sub(prev)));
        prev = s.ts.0;
        let (quality, code) = quality_code(s.quality);
        let tag_at = out.len();
        out.push(0);
        if let Some(code) = code {
            out.push(code);
        }
        let kind = put_value(&mut out, s.value.as_ref());
        out[tag_at] = kind | (quality << 4);
    }
    out
}

/// A stored batch read in place: what rendering it for the wire needs, without a [`Name`]
/// allocated per point (replay renders tens of thousands of these a second).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBatch<'a> {
    /// The device's seq for this batch.
    pub seq: u64,
    /// The device's name, already checked as a [`Name`].
    pub device: &'a str,
    /// The poll's tick.
    pub tick: Timestamp,
    /// The samples, in stored order, each name borrowed and already checked as a [`Name`].
    pub samples: Vec<PointSample<&'a str>>,
}

/// Reads bytes written by [`encode_batch`] in place.
///
/// # Errors
/// [`RecordError`] when the bytes are truncated, of another format, or malformed.
pub fn read_batch(bytes: &[u8]) -> Result<StoredBatch<'_>, RecordError> {
    let mut r = Reader { bytes, at: 0 };
    let format = r.byte()?;
    if format != FORMAT {
        return Err(RecordError::Format { found: format });
    }
    let seq = r.varint()?;
    let device = r.name()?;
    let tick = unzigzag(r.varint()?);
    let count = r.varint()?;
    // Every sample takes at least 3 bytes, so a corrupt count cannot make us over-allocate.
    let cap = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(r.remaining() / 3);
    let mut samples = Vec::with_capacity(cap);
    let mut prev = tick;
    for _ in 0..count {
        let point = r.name()?;
        let ts = prev.wrapping_add(unzigzag(r.varint()?));
        prev = ts;
        let tag_at = r.at;
        let tag = r.byte()?;
        let quality = match tag >> 4 {
            Q_GOOD => Quality::Good,
            Q_HELD => Quality::Uncertain(UncertainReason::Held),
            Q_TIMEOUT => Quality::Bad(BadReason::Timeout),
            Q_EXCEPTION => Quality::Bad(BadReason::Exception(r.byte()?)),
            Q_DECODE => Quality::Bad(BadReason::Decode),
            Q_COMM_LOST => Quality::Bad(BadReason::CommLost),
            _ => return Err(RecordError::Tag { tag, at: tag_at }),
        };
        let value = r.value(tag & 0x0f)?;
        samples.push(PointSample {
            point,
            ts: Timestamp(ts),
            value,
            quality,
        });
    }
    if r.remaining() > 0 {
        return Err(RecordError::Trailing {
            extra: r.remaining(),
        });
    }
    Ok(StoredBatch {
        seq,
        device,
        tick: Timestamp(tick),
        samples,
    })
}

/// Decodes bytes written by [`encode_batch`] into the batch and its seq.
///
/// # Errors
/// [`RecordError`] when the bytes are truncated, of another format, or malformed.
pub fn decode_batch(bytes: &[u8]) -> Result<(SampleBatch, u64), RecordError> {
    let stored = read_batch(bytes)?;
    // `read_batch` checked every name, so these cannot fail.
    let name = |s: &str| Name::new(s).map_err(|source| RecordError::Name { at: 0, source });
    let samples = stored
        .samples
        .into_iter()
        .map(|s| {
            Ok(PointSample {
                point: name(s.point)?,
                ts: s.ts,
                value: s.value,
                quality: s.quality,
            })
        })
        .collect::<Result<_, RecordError>>()?;
    let batch = SampleBatch {
        device: name(stored.device)?,
        tick: stored.tick,
        samples,
    };
    Ok((batch, stored.seq))
}

fn quality_code(q: Quality) -> (u8, Option<u8>) {
    match q {
        Quality::Good => (Q_GOOD, None),
        Quality::Uncertain(UncertainReason::Held) => (Q_HELD, None),
        Quality::Bad(BadReason::Timeout) => (Q_TIMEOUT, None),
        Quality::Bad(BadReason::Exception(code)) => (Q_EXCEPTION, Some(code)),
        Quality::Bad(BadReason::Decode) => (Q_DECODE, None),
        Quality::Bad(BadReason::CommLost) => (Q_COMM_LOST, None),
    }
}

/// Appends the value's bytes and returns its kind.
fn put_value(out: &mut Vec<u8>, value: Option<&Value>) -> u8 {
    match value {
        None => K_ABSENT,
        Some(Value::Bool(false)) => K_FALSE,
        Some(Value::Bool(true)) => K_TRUE,
        Some(Value::I64(v)) => {
            put_varint(out, zigzag(*v));
            K_I64
        }
        Some(Value::Str(s)) => {
            put_str(out, s);
            K_STR
        }
        Some(Value::F64(v)) => put_f64(out, *v),
    }
}

fn put_f64(out: &mut Vec<u8>, v: f64) -> u8 {
    let bits = v.to_bits();
    if let Some(m) = exact_int(v)
        && (m as f64).to_bits() == bits
    {
        put_varint(out, zigzag(m));
        return K_INTEGRAL;
    }
    // A scaled register is `raw * scale` with a decimal scale; find the raw count back.
    let mut k = 0u8;
    let mut pow = 10.0_f64;
    while usize::from(k) < MUL.len() {
        if let Some(m) = exact_int((v * pow).round()) {
            let i = usize::from(k);
            if (m as f64 * MUL[i]).to_bits() == bits {
                put_varint(out, zigzag(m));
                return K_MUL + k;
            }
            if (m as f64 / DIV[i]).to_bits() == bits {
                put_varint(out, zigzag(m));
                return K_DIV + k;
            }
        }
        k += 1;
        pow *= 10.0;
    }
    // Narrowing is kept only if it widens back to the same bits.
    let narrow = v as f32;
    if f64::from(narrow).to_bits() == bits {
        out.extend_from_slice(&narrow.to_le_bytes());
        return K_F32;
    }
    out.extend_from_slice(&v.to_le_bytes());
    K_F64
}

/// `v` as an i64 when it is a whole number within ±2^53.
fn exact_int(v: f64) -> Option<i64> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() <= EXACT_INT {
        // Whole and within ±2^53, so the cast is exact.
        Some(v as i64)
    } else {
        None
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(RecordError::Truncated { at: self.at })?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(RecordError::Truncated { at: self.at })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            // The tenth byte may carry only the top bit.
            if shift == 63 && part > 1 {
                return Err(RecordError::Varint { at: start });
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Varint { at: start })
    }

    fn str(&mut self) -> Result<&'a str, RecordError> {
        let len = self.varint()?;
        let at = self.at;
        let len = usize::try_from(len).map_err(|_| RecordError::Truncated { at })?;
        std::str::from_utf8(self.take(len)?).map_err(|_| RecordError::Utf8 { at })
    }

    /// A string checked as a [`Name`], borrowed from the bytes.
    fn name(&mut self) -> Result<&'a str, RecordError> {
        let at = self.at;
        let s = self.str()?;
        Name::check(s).map_err(|source| RecordError::Name { at, source })?;
        Ok(s)
    }

    fn value(&mut self, kind: u8) -> Result<Option<Value>, RecordError> {
        let v = match kind {
            K_ABSENT => return Ok(None),
            K_FALSE => Value::Bool(false),
            K_TRUE => Value::Bool(true),
            K_I64 => Value::I64(unzigzag(self.varint()?)),
            K_STR => Value::Str(self.str()?.to_owned()),
            K_INTEGRAL => Value::F64(unzigzag(self.varint()?) as f64),
            K_F32 => {
                let b = self.take(4)?;
                Value::F64(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            K_F64 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::F64(f64::from_le_bytes(a))
            }
            k if (K_MUL..K_MUL + 4).contains(&k) => {
                let m = unzigzag(self.varint()?) as f64;
                Value::F64(m * MUL[usize::from(k - K_MUL)])
            }
            k if (K_DIV..K_DIV + 4).contains(&k) => {
                let m = unzigzag(self.varint()?) as f64;
                Value::F64(m / DIV[usize::from(k - K_DIV)])
            }
            _ => {
                return Err(RecordError::Tag {
                    tag: kind,
                    at: self.at.saturating_sub(1),
                });
            }
        };
        Ok(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn platform_record_of(value: &str) -> crate::platform::Record {
        use chrono::NaiveDate;

        use crate::platform::record::{Record, RecordKey, StatType};
        use crate::platform::uscc::Uscc;

        Record {
            key: RecordKey {
                enterprise_code: Uscc::parse("91350100M000100Y43").unwrap(),
                data_code: "E001-0101-00".into(),
                stat_type: StatType::Day,
                stat_date: NaiveDate::from_ymd_opt(2026, 10, 5)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap(),
            },
            meter: "incomer".into(),
            span_ms: (1_791_129_600_000, 1_791_216_000_000),
            value: value.parse().unwrap(),
            convert_ratio: 0.1229,
            valid: true,
            scope: "1".into(),
            input_type: "1".into(),
        }
    }

    #[test]
    fn a_platform_record_queues_under_its_data_code_and_a_rebuilt_one_stores_the_same_bytes() {
        let first = platform_message(&platform_record_of("240.00"), 0, 7, 1_000);
        assert_eq!(first.stream, "energy_platform/E001-0101-00");
        assert_eq!(first.key, first.stream);
        assert_eq!(first.seq, 7);
        let again = platform_message(&platform_record_of("240.00"), 0, 8, 2_000);
        assert_eq!(again.payload, first.payload, "same record, same bytes");
        assert_eq!(
            platform_record(&first.payload).unwrap(),
            platform_record_of("240.00")
        );
        assert!(platform_record(b"\x01batch").is_err());
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    /// Equality that compares floats by bits, so NaN payloads and -0.0 count.
    fn same(a: &SampleBatch, b: &SampleBatch) -> bool {
        a.device == b.device
            && a.tick == b.tick
            && a.samples.len() == b.samples.len()
            && a.samples.iter().zip(&b.samples).all(|(x, y)| {
                x.point == y.point
                    && x.ts == y.ts
                    && x.quality == y.quality
                    && match (&x.value, &y.value) {
                        (Some(Value::F64(p)), Some(Value::F64(q))) => p.to_bits() == q.to_bits(),
                        (p, q) => p == q,
                    }
            })
    }

    fn one(value: Value) -> SampleBatch {
        SampleBatch {
            device: name("m"),
            tick: Timestamp(1_700_000_000_000),
            samples: vec![PointSample {
                point: name("p"),
                ts: Timestamp(1_700_000_000_015),
                value: Some(value),
                quality: Quality::Good,
            }],
        }
    }

    fn kind_of(value: f64) -> u8 {
        put_f64(&mut Vec::new(), value)
    }

    #[test]
    fn scaled_register_values_are_stored_as_their_count() {
        assert_eq!(kind_of(2314.0 * 0.1), K_MUL);
        assert_eq!(kind_of(5012.0 * 0.01), K_MUL + 1);
        // 3 * 0.1 is 0.30000000000000004, so the literal 0.3 needs the division form.
        assert_eq!(kind_of(0.3), K_DIV);
        assert_eq!(kind_of(1500.0), K_INTEGRAL);
        assert_eq!(kind_of(f64::from(231.37_f32)), K_F32);
        assert_eq!(kind_of(std::f64::consts::PI), K_F64);
        assert_eq!(kind_of(-0.0), K_F32);
    }

    #[test]
    fn a_typical_meter_value_costs_a_handful_of_bytes() {
        let batch = SampleBatch {
            device: name("meter-001"),
            tick: Timestamp(1_700_000_000_000),
            samples: (0..22)
                .map(|i| PointSample {
                    point: name(&format!("p{i}")),
                    ts: Timestamp(1_700_000_000_020),
                    value: Some(Value::F64(f64::from(2300 + i) * 0.1)),
                    quality: Quality::Good,
                })
                .collect(),
        };
        let bytes = encode_batch(&batch, 12_345);
        // name (3-4) + ts delta (1) + tag (1) + count (2) per value, plus a small header.
        assert!(bytes.len() <= 22 * 8 + 24, "{} bytes", bytes.len());
        let (back, seq) = decode_batch(&bytes).unwrap();
        assert_eq!(seq, 12_345);
        assert!(same(&back, &batch));
    }

    #[test]
    fn other_formats_and_trailing_bytes_are_rejected() {
        let mut bytes = encode_batch(&one(Value::Bool(true)), 1);
        bytes[0] = 2;
        assert_eq!(
            decode_batch(&bytes).unwrap_err(),
            RecordError::Format { found: 2 }
        );
        let mut bytes = encode_batch(&one(Value::Bool(true)), 1);
        bytes.push(0);
        assert_eq!(
            decode_batch(&bytes).unwrap_err(),
            RecordError::Trailing { extra: 1 }
        );
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader { bytes: &out, at: 0 };
            assert_eq!(r.varint().unwrap(), v);
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        let eleven = [0xff; 11];
        let mut r = Reader {
            bytes: &eleven,
            at: 0,
        };
        assert_eq!(r.varint().unwrap_err(), RecordError::Varint { at: 0 });
    }

    fn any_name() -> impl Strategy<Value = Name> {
        "[a-z0-9_-]{1,12}".prop_map(|s| Name::new(&s).unwrap())
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            any::<u64>().prop_map(f64::from_bits),
            (any::<i32>(), 0usize..4).prop_map(|(m, k)| f64::from(m) * MUL[k]),
            (any::<i32>(), 0usize..4).prop_map(|(m, k)| f64::from(m) / DIV[k]),
            any::<f32>().prop_map(f64::from),
            Just(-0.0),
            Just(f64::NAN),
        ]
    }

    fn any_value() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            any_f64().prop_map(|v| Some(Value::F64(v))),
            any::<i64>().prop_map(|v| Some(Value::I64(v))),
            any::<bool>().prop_map(|v| Some(Value::Bool(v))),
            ".{0,20}".prop_map(|v| Some(Value::Str(v))),
        ]
    }

    fn any_quality() -> impl Strategy<Value = Quality> {
        prop_oneof![
            Just(Quality::Good),
            Just(Quality::Uncertain(UncertainReason::Held)),
            Just(Quality::Bad(BadReason::Timeout)),
            any::<u8>().prop_map(|c| Quality::Bad(BadReason::Exception(c))),
            Just(Quality::Bad(BadReason::Decode)),
            Just(Quality::Bad(BadReason::CommLost)),
        ]
    }

    fn any_ts(tick: i64) -> impl Strategy<Value = i64> {
        prop_oneof![
            (0i64..5_000).prop_map(move |d| tick.wrapping_add(d)),
            any::<i64>()
        ]
    }

    fn any_batch() -> impl Strategy<Value = SampleBatch> {
        (any_name(), any::<i64>()).prop_flat_map(|(device, tick)| {
            proptest::collection::vec(
                (any_name(), any_ts(tick), any_value(), any_quality()),
                0..30,
            )
            .prop_map(move |samples| SampleBatch {
                device: device.clone(),
                tick: Timestamp(tick),
                samples: samples
                    .into_iter()
                    .map(|(point, ts, value, quality)| PointSample {
                        point,
                        ts: Timestamp(ts),
                        value,
                        quality,
                    })
                    .collect(),
            })
        })
    }

    proptest! {
        #[test]
        fn every_batch_round_trips_bit_for_bit(batch in any_batch(), seq in any::<u64>()) {
            let bytes = encode_batch(&batch, seq);
            let (back, back_seq) = decode_batch(&bytes).unwrap();
            prop_assert_eq!(back_seq, seq);
            prop_assert!(same(&back, &batch), "{:?} != {:?}", back, batch);
        }

        #[test]
        fn a_batch_read_in_place_renders_as_the_live_one(batch in any_batch(), seq in any::<u64>(), backfill in any::<bool>()) {
            let bytes = encode_batch(&batch, seq);
            let stored = read_batch(&bytes).unwrap();
            let rendered = crate::encode::json_v1::telemetry_of(stored.device, stored.tick, &stored.samples, stored.seq, backfill);
            prop_assert_eq!(rendered, crate::encode::json_v1::telemetry(&batch, seq, backfill));
        }

        #[test]
        fn every_strict_prefix_is_rejected(batch in any_batch(), seq in any::<u64>()) {
            let bytes = encode_batch(&batch, seq);
            for cut in 0..bytes.len() {
                prop_assert!(decode_batch(&bytes[..cut]).is_err(), "prefix of {} accepted", cut);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ignored = decode_batch(&bytes);
        }
    }
}
