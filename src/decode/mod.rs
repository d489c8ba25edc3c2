//! Registers and bits → typed, scaled values, and back (for writes and the simulator).
//!
//! Pure: no I/O, no clock. `decode` is called inside the link task so that what crosses the
//! first channel is already typed (docs/design.md §1); `encode` and `encode_bit` are its inverse,
//! used by the simulator and by writes, which the round-trip tests check for every type and
//! order; a value that does not fit its type after removing scale and offset is refused.
//!
//! Byte and word order use the four usual names for a 32-bit value whose big-endian bytes are
//! `A B C D`: `ABCD` is big-endian with the high word first (what almost every meter sends),
//! `CDAB` swaps the words, `BADC` swaps the bytes within each word, `DCBA` is little-endian.
//! The same two swaps extend to 64-bit values and to strings.

use serde::Deserialize;
use std::fmt;

use crate::model::Value;

/// The data type of a point, as written in the config (`type = "f32"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// A coil or discrete input (function 01/02).
    Bool,
    /// One bit of a 16-bit register; needs `bit`.
    Bit,
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit.
    I16,
    /// Unsigned 32-bit (2 registers).
    U32,
    /// Signed 32-bit (2 registers).
    I32,
    /// Unsigned 64-bit (4 registers).
    U64,
    /// Signed 64-bit (4 registers).
    I64,
    /// IEEE-754 single (2 registers).
    F32,
    /// IEEE-754 double (4 registers).
    F64,
    /// ASCII text, two characters a register; needs `length` (registers).
    String,
    /// Four BCD digits in one register.
    Bcd16,
    /// Eight BCD digits in two registers.
    Bcd32,
}

impl DataType {
    /// Every type, for the probe and for tests.
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Bit,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
        DataType::String,
        DataType::Bcd16,
        DataType::Bcd32,
    ];

    /// Registers the type occupies (`length` for strings; 0 for `bool`, which reads bits).
    pub fn registers(self, string_length: u16) -> u16 {
        match self {
            DataType::Bool => 0,
            DataType::Bit | DataType::U16 | DataType::I16 | DataType::Bcd16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 | DataType::Bcd32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => string_length,
        }
    }

    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Bit => "bit",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
            DataType::Bcd16 => "bcd16",
            DataType::Bcd32 => "bcd32",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte and word order of a multi-byte value (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum ByteOrder {
    /// Big-endian, high word first.
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Words swapped (low word first), bytes big-endian.
    #[serde(rename = "CDAB")]
    Cdab,
    /// High word first, bytes swapped within each word.
    #[serde(rename = "BADC")]
    Badc,
    /// Little-endian.
    #[serde(rename = "DCBA")]
    Dcba,
}

impl ByteOrder {
    /// All four orders.
    pub const ALL: [ByteOrder; 4] = [
        ByteOrder::Abcd,
        ByteOrder::Cdab,
        ByteOrder::Badc,
        ByteOrder::Dcba,
    ];

    fn swaps_words(self) -> bool {
        matches!(self, ByteOrder::Cdab | ByteOrder::Dcba)
    }

    fn swaps_bytes(self) -> bool {
        matches!(self, ByteOrder::Badc | ByteOrder::Dcba)
    }
}

impl fmt::Display for ByteOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ByteOrder::Abcd => "ABCD",
            ByteOrder::Cdab => "CDAB",
            ByteOrder::Badc => "BADC",
            ByteOrder::Dcba => "DCBA",
        })
    }
}

/// How one point's raw registers become a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Codec {
    /// The data type.
    pub data_type: DataType,
    /// Byte and word order.
    pub order: ByteOrder,
    /// Multiplier applied after decoding (includes any PT/CT ratio).
    pub scale: f64,
    /// Added after scaling.
    pub offset: f64,
    /// Bit number for `bit` (0 = least significant).
    pub bit: u8,
    /// Registers for `string`.
    pub length: u16,
    /// Decimals the engineering value is rounded to (the point's `decimals`); `None` lets the
    /// type and `scale` decide (see [`Precision`]).
    pub decimals: Option<u8>,
}

/// How many digits of a decoded number are real, so payloads never print more than the
/// device measured (`231.799`, not the f64 expansion of an f32, `231.7990264892578`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Every digit of the f64 counts (f64 registers, unscaled integers, text).
    Full,
    /// The shortest decimal that reads back as the same f32: what a single-precision register
    /// (scaled or not) can tell.
    Single,
    /// Exactly this many decimals (at most [`MAX_DECIMALS`]): what a scaled integer's `scale`
    /// and `offset` imply, or the point's `decimals`.
    Decimals(u8),
}

/// The most decimals a point can ask for; beyond it an f64 has no digits left to give.
pub const MAX_DECIMALS: u8 = 9;

/// The decimals needed to write every multiple of `step` exactly (0.1 → 1, 0.25 → 2, 20 → 0).
/// A step with no short decimal form (1/3) gets the decimals that still tell two neighbouring
/// counts apart.
pub fn decimals_of(step: f64) -> u8 {
    let step = step.abs();
    if !step.is_finite() || step == 0.0 {
        return 0;
    }
    let mut scaled = step;
    for n in 0..=MAX_DECIMALS {
        // Relative tolerance: 0.1 * 3 is 0.30000000000000004, and PT/CT ratios multiply such
        // steps before they get here.
        if (scaled - scaled.round()).abs() <= 1e-6 + scaled * 1e-12 {
            return n;
        }
        scaled *= 10.0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to 0..=MAX_DECIMALS first"
    )]
    let resolving = (-step.log10()).ceil().clamp(0.0, f64::from(MAX_DECIMALS)) as u8;
    resolving
}

impl Precision {
    /// `value` moved to the f64 nearest the decimal this precision writes, so that every
    /// shortest-round-trip formatter downstream (JSON, line protocol, CSV) prints that decimal.
    /// Values that this precision cannot represent (beyond f32 range, say) are left as they are.
    pub fn apply(self, value: f64) -> f64 {
        match self {
            Precision::Full => value,
            Precision::Single => {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "the point is the f32 rounding"
                )]
                let single = value as f32;
                if !single.is_finite() {
                    return value;
                }
                shortest_decimal(single).unwrap_or(value)
            }
            Precision::Decimals(n) => {
                let factor = POWERS_OF_TEN[usize::from(n.min(MAX_DECIMALS))];
                // Dividing an integral f64 by an exact power of ten rounds once, to the f64
                // nearest the decimal. `+ 0.0` turns a rounded -0.04 into 0, not "-0.0".
                let rounded = (value * factor).round() / factor + 0.0;
                if rounded.is_finite() { rounded } else { value }
            }
        }
    }
}

/// 10⁰ to 10⁹, each exact in an f64.
const POWERS_OF_TEN: [f64; MAX_DECIMALS as usize + 1] =
    [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The f64 nearest the shortest decimal that reads back as `single` (what ryu writes for it).
///
/// Decoding runs for every value of every poll, and ryu's text plus a parse cost several
/// times the rest of the decode. For the magnitudes meters show, the same decimal is the first
/// of `single` rounded to 0, 1, 2… decimals that reads back as `single`: at a fixed magnitude
/// fewer decimals are fewer digits, and the nearest decimal of a length is the one that can
/// read back. Elsewhere, and past 9 decimals, ryu decides.
fn shortest_decimal(single: f32) -> Option<f64> {
    let exact = f64::from(single);
    if exact == 0.0 {
        return Some(exact);
    }
    if (1e-3..1e7).contains(&exact.abs()) {
        for factor in POWERS_OF_TEN {
            // `exact * factor` is exact or one rounding from it (24 + 30 bits), and the
            // division rounds once, to the f64 nearest the decimal. A tie goes to the even
            // digit, as ryu breaks it (4.22265625 is 4.2226562).
            let rounded = (exact * factor).round_ties_even() / factor;
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the point is whether it reads back as the f32"
            )]
            if (rounded as f32).to_bits() == single.to_bits() {
                return Some(rounded);
            }
        }
    }
    ryu::Buffer::new().format_finite(single).parse().ok()
}

impl Codec {
    /// A codec with no scaling and the default order.
    pub fn plain(data_type: DataType) -> Self {
        Self {
            data_type,
            order: ByteOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            bit: 0,
            length: 1,
            decimals: None,
        }
    }

    /// The smallest step this codec's values take: one unit of the last decimal written, the
    /// unit a scaled float counts in, or 0 where any change is a real one.
    pub fn resolution(&self) -> f64 {
        match self.precision() {
            Precision::Decimals(n) => 10f64.powi(-i32::from(n)),
            Precision::Single if self.is_scaled() => self.scale.abs(),
            Precision::Single | Precision::Full => 0.0,
        }
    }

    /// What the decoded value is on the wire: `number`, `integer`, `bool` or `string`.
    pub fn wire_kind(&self) -> &'static str {
        match self.data_type {
            DataType::String => "string",
            DataType::F32 | DataType::F64 => "number",
            _ if self.is_scaled() => "number",
            DataType::Bool | DataType::Bit => "bool",
            _ => "integer",
        }
    }

    /// How many digits of this codec's numbers are real: the point's `decimals` if set, else
    /// what the register type and `scale`/`offset` imply.
    pub fn precision(&self) -> Precision {
        if let Some(n) = self.decimals {
            return Precision::Decimals(n.min(MAX_DECIMALS));
        }
        match self.data_type {
            DataType::F32 => Precision::Single,
            DataType::F64 | DataType::String => Precision::Full,
            _ if self.is_scaled() => {
                Precision::Decimals(decimals_of(self.scale).max(decimals_of(self.offset)))
            }
            _ => Precision::Full,
        }
    }

    /// Registers this codec reads.
    pub fn registers(&self) -> u16 {
        self.data_type.registers(self.length)
    }

    /// Whether `scale` or `offset` changes the value, which turns every non-text type into f64.
    pub(crate) fn is_scaled(&self) -> bool {
        #[expect(clippy::float_cmp, reason = "exact defaults, not computed values")]
        let unscaled = self.scale == 1.0 && self.offset == 0.0;
        !unscaled
    }
}

/// Why registers could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer registers arrived than the type needs.
    #[error("{data_type} needs {needed} registers, got {got}")]
    Short {
        /// The type being decoded.
        data_type: DataType,
        /// Registers needed.
        needed: usize,
        /// Registers available.
        got: usize,
    },
    /// A BCD nibble was above 9.
    #[error("register {0:#06x} is not valid BCD")]
    InvalidBcd(u32),
    /// A float decoded to NaN or infinity (a meter's "no value" marker).
    #[error("not a finite number")]
    NotFinite,
    /// A string was not ASCII.
    #[error("string is not ASCII")]
    NotAscii,
}

/// Orders registers into big-endian bytes according to `order`.
fn to_be_bytes(words: &[u16], order: ByteOrder, out: &mut [u8]) {
    let n = words.len();
    for (i, slot) in out.chunks_exact_mut(2).enumerate().take(n) {
        let word = if order.swaps_words() {
            words[n - 1 - i]
        } else {
            words[i]
        };
        let word = if order.swaps_bytes() {
            word.swap_bytes()
        } else {
            word
        };
        slot.copy_from_slice(&word.to_be_bytes());
    }
}

/// Inverse of [`to_be_bytes`].
fn from_be_bytes(bytes: &[u8], order: ByteOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let hi = c[0];
            let lo = c.get(1).copied().unwrap_or(0);
            let word = u16::from_be_bytes([hi, lo]);
            if order.swaps_bytes() {
                word.swap_bytes()
            } else {
                word
            }
        })
        .collect();
    if order.swaps_words() {
        words.reverse();
    }
    words
}

fn bcd(mut raw: u32, digits: u32) -> Result<i64, DecodeError> {
    let original = raw;
    let mut value: i64 = 0;
    let mut place: i64 = 1;
    for _ in 0..digits {
        let nibble = raw & 0xF;
        if nibble > 9 {
            return Err(DecodeError::InvalidBcd(original));
        }
        value += i64::from(nibble) * place;
        place *= 10;
        raw >>= 4;
    }
    Ok(value)
}

/// Decodes a bit read with function 01 or 02.
pub fn decode_bit(bit: bool, codec: &Codec) -> Value {
    if codec.is_scaled() {
        Value::F64(
            codec
                .precision()
                .apply(f64::from(u8::from(bit)) * codec.scale + codec.offset),
        )
    } else {
        Value::Bool(bit)
    }
}

/// Decodes the registers of one point (exactly `codec.registers()` of them, or more).
///
/// # Errors
/// [`DecodeError`] when too few registers arrived or their content is not valid for the type.
pub fn decode(words: &[u16], codec: &Codec) -> Result<Value, DecodeError> {
    let needed = usize::from(codec.registers());
    if words.len() < needed || (needed == 0 && codec.data_type != DataType::Bool) {
        return Err(DecodeError::Short {
            data_type: codec.data_type,
            needed: needed.max(1),
            got: words.len(),
        });
    }
    let words = &words[..needed];
    let mut buf = [0u8; 8];
    if needed <= 4 {
        to_be_bytes(words, codec.order, &mut buf[..needed * 2]);
    }
    let raw = match codec.data_type {
        DataType::Bool => {
            return Err(DecodeError::Short {
                data_type: DataType::Bool,
                needed: 1,
                got: 0,
            });
        }
        DataType::Bit => {
            // One register: the order only decides whether its two bytes are swapped.
            let word = u16::from_be_bytes([buf[0], buf[1]]);
            return Ok(decode_bit((word >> codec.bit) & 1 == 1, codec));
        }
        DataType::U16 => Raw::Int(i64::from(u16::from_be_bytes([buf[0], buf[1]]))),
        DataType::I16 => Raw::Int(i64::from(i16::from_be_bytes([buf[0], buf[1]]))),
        DataType::U32 => Raw::Int(i64::from(u32::from_be_bytes([
            buf[0], buf[1], buf[2], buf[3],
        ]))),
        DataType::I32 => Raw::Int(i64::from(i32::from_be_bytes([
            buf[0], buf[1], buf[2], buf[3],
        ]))),
        DataType::U64 => {
            let v = u64::from_be_bytes(buf);
            match i64::try_from(v) {
                Ok(v) => Raw::Int(v),
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "beyond i64 only f64 can hold it"
                )]
                Err(_) => Raw::Float(v as f64),
            }
        }
        DataType::I64 => Raw::Int(i64::from_be_bytes(buf)),
        DataType::F32 => Raw::Float(f64::from(f32::from_be_bytes([
            buf[0], buf[1], buf[2], buf[3],
        ]))),
        DataType::F64 => Raw::Float(f64::from_be_bytes(buf)),
        DataType::Bcd16 => Raw::Int(bcd(u32::from(u16::from_be_bytes([buf[0], buf[1]])), 4)?),
        DataType::Bcd32 => Raw::Int(bcd(
            u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
            8,
        )?),
        DataType::String => {
            let mut bytes = vec![0u8; needed * 2];
            to_be_bytes(words, codec.order, &mut bytes);
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let text = &bytes[..end];
            if !text.is_ascii() {
                return Err(DecodeError::NotAscii);
            }
            return Ok(Value::Str(
                String::from_utf8_lossy(text).trim_end().to_owned(),
            ));
        }
    };
    let precision = codec.precision();
    match raw {
        Raw::Float(v) if !v.is_finite() => Err(DecodeError::NotFinite),
        // Unscaled floats skip the arithmetic: `-0.0 + 0.0` would lose the sign of zero.
        Raw::Float(v) if !codec.is_scaled() => Ok(Value::F64(precision.apply(v))),
        Raw::Float(v) => Ok(Value::F64(precision.apply(v * codec.scale + codec.offset))),
        #[expect(
            clippy::cast_precision_loss,
            reason = "scaled values are f64 by design"
        )]
        Raw::Int(v) if codec.is_scaled() => Ok(Value::F64(
            precision.apply(v as f64 * codec.scale + codec.offset),
        )),
        Raw::Int(v) => Ok(Value::I64(v)),
    }
}

enum Raw {
    Int(i64),
    Float(f64),
}

/// Why a value could not be encoded into registers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The value does not fit the type after removing scale and offset.
    #[error("{value} does not fit {data_type}")]
    OutOfRange {
        /// The value, as text.
        value: String,
        /// The target type.
        data_type: DataType,
    },
    /// Coils are written as bits, not registers.
    #[error("bool points are bits, not registers")]
    NotARegister,
}

fn to_bcd(mut v: u64, digits: u32) -> Option<u32> {
    let mut out: u32 = 0;
    for i in 0..digits {
        let digit = u32::try_from(v % 10).ok()?;
        out |= digit << (4 * i);
        v /= 10;
    }
    (v == 0).then_some(out)
}

/// Encodes an engineering value into a coil: the inverse of [`decode_bit`]. With scale or
/// offset, the value must map back to raw 0 or 1.
///
/// # Errors
/// [`EncodeError::OutOfRange`] for anything but a value that maps to 0 or 1.
#[expect(
    clippy::float_cmp,
    reason = "a rounded value compared with exact 0 and 1"
)]
pub fn encode_bit(value: &Value, codec: &Codec) -> Result<bool, EncodeError> {
    let out_of_range = || EncodeError::OutOfRange {
        value: value.to_string(),
        data_type: codec.data_type,
    };
    let raw = match value {
        Value::Bool(b) if !codec.is_scaled() => return Ok(*b),
        Value::Str(_) => return Err(out_of_range()),
        other => other.as_f64().map(|v| (v - codec.offset) / codec.scale),
    };
    let raw = raw.map(f64::round).ok_or_else(out_of_range)?;
    if raw == 0.0 {
        Ok(false)
    } else if raw == 1.0 {
        Ok(true)
    } else {
        Err(out_of_range())
    }
}

/// Sets or clears the bit of a `bit` point in `word`, its register as read, leaving the other
/// bits as they are: the write-side twin of [`decode`] for `bit`, byte order included.
pub fn merge_bit(word: u16, codec: &Codec, on: bool) -> u16 {
    let mask = 1u16 << (codec.bit & 15);
    // decode reads the bit after the byte swap of the order; undo it around the change.
    let mask = if codec.order.swaps_bytes() {
        mask.swap_bytes()
    } else {
        mask
    };
    if on { word | mask } else { word & !mask }
}

/// Encodes an engineering value into registers: the inverse of [`decode`].
///
/// Integer types round `(value - offset) / scale` to the nearest integer. A `bit` point encodes
/// into a whole register with only that bit set (the simulator merges bits itself).
///
/// # Errors
/// [`EncodeError`] when the value does not fit the type.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "every cast is range-checked first"
)]
pub fn encode(value: &Value, codec: &Codec) -> Result<Vec<u16>, EncodeError> {
    let out_of_range = || EncodeError::OutOfRange {
        value: value.to_string(),
        data_type: codec.data_type,
    };
    if codec.data_type == DataType::String {
        let text = match value {
            Value::Str(s) => s.clone(),
            other => other.to_string(),
        };
        let mut bytes = text.into_bytes();
        let len = usize::from(codec.length) * 2;
        // decode reads ASCII only and stops at the first NUL: anything else would not read back.
        if bytes.len() > len || !bytes.is_ascii() || bytes.contains(&0) {
            return Err(out_of_range());
        }
        bytes.resize(len, 0);
        return Ok(from_be_bytes(&bytes, codec.order));
    }
    let engineering = value.as_f64().ok_or_else(out_of_range)?;
    let raw = (engineering - codec.offset) / codec.scale;
    let int = |lo: f64, hi: f64| -> Result<i128, EncodeError> {
        let r = raw.round();
        if r.is_finite() && r >= lo && r <= hi {
            Ok(r as i128)
        } else {
            Err(out_of_range())
        }
    };
    let bytes: Vec<u8> = match codec.data_type {
        DataType::Bool => return Err(EncodeError::NotARegister),
        DataType::Bit => {
            let on = int(0.0, 1.0)? == 1;
            let word: u16 = if on { 1 << codec.bit } else { 0 };
            word.to_be_bytes().to_vec()
        }
        DataType::U16 => (int(0.0, f64::from(u16::MAX))? as u16)
            .to_be_bytes()
            .to_vec(),
        DataType::I16 => (int(f64::from(i16::MIN), f64::from(i16::MAX))? as i16)
            .to_be_bytes()
            .to_vec(),
        DataType::U32 => (int(0.0, f64::from(u32::MAX))? as u32)
            .to_be_bytes()
            .to_vec(),
        DataType::I32 => (int(f64::from(i32::MIN), f64::from(i32::MAX))? as i32)
            .to_be_bytes()
            .to_vec(),
        DataType::U64 => match value {
            Value::I64(v) if !codec.is_scaled() && *v >= 0 => (*v as u64).to_be_bytes().to_vec(),
            _ => (int(0.0, 1.8e19)? as u64).to_be_bytes().to_vec(),
        },
        DataType::I64 => match value {
            Value::I64(v) if !codec.is_scaled() => v.to_be_bytes().to_vec(),
            _ => (int(-9.2e18, 9.2e18)? as i64).to_be_bytes().to_vec(),
        },
        // A float beyond f32 would be sent as infinity, which decode refuses as "no value".
        DataType::F32 if raw.is_finite() && raw.abs() <= f64::from(f32::MAX) => {
            (raw as f32).to_be_bytes().to_vec()
        }
        DataType::F64 if raw.is_finite() => raw.to_be_bytes().to_vec(),
        DataType::F32 | DataType::F64 => return Err(out_of_range()),
        DataType::Bcd16 => {
            let v = int(0.0, 9999.0)? as u64;
            (to_bcd(v, 4).ok_or_else(out_of_range)? as u16)
                .to_be_bytes()
                .to_vec()
        }
        DataType::Bcd32 => {
            let v = int(0.0, 99_999_999.0)? as u64;
            to_bcd(v, 8)
                .ok_or_else(out_of_range)?
                .to_be_bytes()
                .to_vec()
        }
        DataType::String => unreachable_string(),
    };
    Ok(from_be_bytes(&bytes, codec.order))
}

// Strings return early above; this keeps the match exhaustive without a panic.
fn unreachable_string() -> Vec<u8> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codec(data_type: DataType, order: ByteOrder) -> Codec {
        Codec {
            order,
            ..Codec::plain(data_type)
        }
    }

    // 0x41 0x20 0x00 0x00 is 10.0f32; 0x1234_5678 is 305419896.
    #[test]
    fn f32_in_all_four_orders_matches_hand_computed_registers() {
        let cases = [
            (ByteOrder::Abcd, [0x4120, 0x0000]),
            (ByteOrder::Cdab, [0x0000, 0x4120]),
            (ByteOrder::Badc, [0x2041, 0x0000]),
            (ByteOrder::Dcba, [0x0000, 0x2041]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode(&words, &codec(DataType::F32, order)),
                Ok(Value::F64(10.0)),
                "{order}"
            );
        }
    }

    #[test]
    fn u32_and_i32_in_all_four_orders() {
        let cases = [
            (ByteOrder::Abcd, [0x1234, 0x5678]),
            (ByteOrder::Cdab, [0x5678, 0x1234]),
            (ByteOrder::Badc, [0x3412, 0x7856]),
            (ByteOrder::Dcba, [0x7856, 0x3412]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode(&words, &codec(DataType::U32, order)),
                Ok(Value::I64(0x1234_5678)),
                "{order}"
            );
        }
        // -2 as i32 is 0xFFFF_FFFE.
        assert_eq!(
            decode(&[0xFFFE, 0xFFFF], &codec(DataType::I32, ByteOrder::Cdab)),
            Ok(Value::I64(-2))
        );
    }

    #[test]
    fn sixty_four_bit_types_reverse_all_four_words_for_cdab() {
        let words = [0x0001, 0x0203, 0x0405, 0x0607];
        assert_eq!(
            decode(&words, &codec(DataType::U64, ByteOrder::Abcd)),
            Ok(Value::I64(0x0001_0203_0405_0607))
        );
        let reversed = [0x0607, 0x0405, 0x0203, 0x0001];
        assert_eq!(
            decode(&reversed, &codec(DataType::U64, ByteOrder::Cdab)),
            Ok(Value::I64(0x0001_0203_0405_0607))
        );
        // 1.5f64 = 0x3FF8_0000_0000_0000, little-endian bytes.
        assert_eq!(
            decode(&[0, 0, 0, 0xF83F], &codec(DataType::F64, ByteOrder::Dcba)),
            Ok(Value::F64(1.5))
        );
        assert_eq!(
            decode(&[0xFFFF; 4], &codec(DataType::I64, ByteOrder::Abcd)),
            Ok(Value::I64(-1))
        );
    }

    #[test]
    fn sixteen_bit_types_only_care_about_byte_swap() {
        assert_eq!(
            decode(&[0xFF38], &codec(DataType::I16, ByteOrder::Abcd)),
            Ok(Value::I64(-200))
        );
        assert_eq!(
            decode(&[0x38FF], &codec(DataType::I16, ByteOrder::Dcba)),
            Ok(Value::I64(-200))
        );
        assert_eq!(
            decode(&[0x38FF], &codec(DataType::U16, ByteOrder::Cdab)),
            Ok(Value::I64(0x38FF))
        );
    }

    #[test]
    fn scale_and_offset_turn_raw_counts_into_engineering_units() {
        // DTSU666 phase voltage: float in 0.1 V.
        let dtsu = Codec {
            scale: 0.1,
            ..Codec::plain(DataType::F32)
        };
        let words = encode(&Value::F64(2314.0), &Codec::plain(DataType::F32)).unwrap();
        let Value::F64(v) = decode(&words, &dtsu).unwrap() else {
            panic!("float expected")
        };
        assert!((v - 231.4).abs() < 1e-9);
        // A 4-20 mA transmitter scaled to -50..150 °C: raw 0..10000.
        let temp = Codec {
            scale: 0.02,
            offset: -50.0,
            ..Codec::plain(DataType::U16)
        };
        assert_eq!(decode(&[5000], &temp), Ok(Value::F64(50.0)));
    }

    #[test]
    fn bits_of_a_register_follow_the_bit_number() {
        let mut c = Codec::plain(DataType::Bit);
        c.bit = 3;
        assert_eq!(decode(&[0b1000], &c), Ok(Value::Bool(true)));
        c.bit = 2;
        assert_eq!(decode(&[0b1000], &c), Ok(Value::Bool(false)));
        c.bit = 11;
        c.order = ByteOrder::Badc;
        assert_eq!(decode(&[0x0008], &c), Ok(Value::Bool(true)));
    }

    #[test]
    fn bcd_reads_digits_and_rejects_bad_nibbles() {
        assert_eq!(
            decode(&[0x1234], &Codec::plain(DataType::Bcd16)),
            Ok(Value::I64(1234))
        );
        assert_eq!(
            decode(&[0x0012, 0x3456], &Codec::plain(DataType::Bcd32)),
            Ok(Value::I64(123_456))
        );
        assert_eq!(
            decode(&[0x12A4], &Codec::plain(DataType::Bcd16)),
            Err(DecodeError::InvalidBcd(0x12A4))
        );
    }

    #[test]
    fn strings_stop_at_nul_and_respect_byte_swap() {
        let mut c = Codec::plain(DataType::String);
        c.length = 3;
        assert_eq!(
            decode(&[0x4454, 0x5355, 0x0000], &c),
            Ok(Value::Str("DTSU".into()))
        );
        c.order = ByteOrder::Badc;
        assert_eq!(
            decode(&[0x5444, 0x5553, 0x0000], &c),
            Ok(Value::Str("DTSU".into()))
        );
    }

    #[test]
    fn short_reads_and_nan_are_decode_errors() {
        assert!(matches!(
            decode(&[1], &Codec::plain(DataType::F32)),
            Err(DecodeError::Short { .. })
        ));
        assert_eq!(
            decode(&[0x7FC0, 0], &Codec::plain(DataType::F32)),
            Err(DecodeError::NotFinite)
        );
    }

    /// A value of each type, and the value decode gives back for it.
    fn sample(data_type: DataType) -> (Value, Value) {
        match data_type {
            DataType::Bool | DataType::Bit => (Value::Bool(true), Value::Bool(true)),
            DataType::U16 => (Value::I64(0xBEEF), Value::I64(0xBEEF)),
            DataType::I16 => (Value::I64(-1234), Value::I64(-1234)),
            DataType::U32 => (Value::I64(0xDEAD_BEEF), Value::I64(0xDEAD_BEEF)),
            DataType::I32 => (Value::I64(-123_456_789), Value::I64(-123_456_789)),
            DataType::U64 => (
                Value::I64(0x0102_0304_0506_0708),
                Value::I64(0x0102_0304_0506_0708),
            ),
            DataType::I64 => (
                Value::I64(-0x0102_0304_0506_0708),
                Value::I64(-0x0102_0304_0506_0708),
            ),
            DataType::F32 => (Value::F64(-12.5), Value::F64(-12.5)),
            DataType::F64 => (Value::F64(1.0e-7), Value::F64(1.0e-7)),
            DataType::String => (Value::Str("AUTO".into()), Value::Str("AUTO".into())),
            DataType::Bcd16 => (Value::I64(9876), Value::I64(9876)),
            DataType::Bcd32 => (Value::I64(12_345_678), Value::I64(12_345_678)),
        }
    }

    #[test]
    fn every_type_in_every_order_round_trips_through_encode_and_decode() {
        for data_type in DataType::ALL {
            for order in ByteOrder::ALL {
                let mut c = codec(data_type, order);
                c.length = 3;
                c.bit = 9;
                let (value, expected) = sample(data_type);
                let back = if data_type == DataType::Bool {
                    encode_bit(&value, &c).map(|b| decode_bit(b, &c))
                } else {
                    let words = encode(&value, &c).unwrap();
                    assert_eq!(
                        words.len(),
                        usize::from(c.registers()),
                        "{data_type} {order}"
                    );
                    Ok(decode(&words, &c).unwrap())
                };
                assert_eq!(back, Ok(expected), "{data_type} {order}");
            }
        }
    }

    #[test]
    fn scaled_values_of_every_type_round_trip_in_engineering_units() {
        for data_type in DataType::ALL {
            if data_type == DataType::String {
                continue;
            }
            let c = Codec {
                scale: 0.5,
                offset: -10.0,
                bit: 4,
                ..Codec::plain(data_type)
            };
            // Raw 1 is -9.5: a value every type, including bits and BCD, can hold.
            let value = Value::F64(-9.5);
            let back = if data_type == DataType::Bool {
                encode_bit(&value, &c).map(|b| decode_bit(b, &c))
            } else {
                encode(&value, &c).map(|w| decode(&w, &c).unwrap())
            };
            assert_eq!(back, Ok(value), "{data_type}");
        }
    }

    #[test]
    fn values_beyond_a_type_are_refused_not_wrapped_or_made_infinite() {
        let refused = [
            (DataType::F32, Value::F64(1.0e39)),
            (DataType::F32, Value::F64(f64::NAN)),
            (DataType::F64, Value::F64(f64::INFINITY)),
            (DataType::U16, Value::I64(65_536)),
            (DataType::I16, Value::I64(-32_769)),
            (DataType::Bcd16, Value::I64(10_000)),
            (DataType::Bit, Value::I64(2)),
        ];
        for (data_type, value) in refused {
            assert!(
                matches!(
                    encode(&value, &Codec::plain(data_type)),
                    Err(EncodeError::OutOfRange { .. })
                ),
                "{value} as {data_type}"
            );
        }
        let mut text = Codec::plain(DataType::String);
        text.length = 1;
        assert!(
            encode(&Value::Str("abc".into()), &text).is_err(),
            "3 chars in 1 register"
        );
        assert!(encode_bit(&Value::I64(2), &Codec::plain(DataType::Bool)).is_err());
    }

    #[test]
    fn merge_bit_changes_only_its_own_bit_in_every_order() {
        for order in ByteOrder::ALL {
            for bit in 0..16 {
                let c = Codec {
                    order,
                    bit,
                    ..Codec::plain(DataType::Bit)
                };
                for (word, on) in [(0xA5A5, true), (0xA5A5, false), (0, true), (0xFFFF, false)] {
                    let merged = merge_bit(word, &c, on);
                    assert_eq!(
                        decode(&[merged], &c),
                        Ok(Value::Bool(on)),
                        "{order} bit {bit}"
                    );
                    assert!((merged ^ word).count_ones() <= 1, "{order} bit {bit}");
                }
            }
        }
    }

    /// How a decoded value is written: the shortest text that reads back as the same f64, as
    /// serde_json, the line protocol and replay write it.
    fn written(v: &Result<Value, DecodeError>) -> String {
        match v {
            Ok(Value::F64(f)) => ryu::Buffer::new().format(*f).to_owned(),
            other => format!("{other:?}"),
        }
    }

    fn f32_words(x: f32) -> [u16; 2] {
        let bits = x.to_bits();
        [(bits >> 16) as u16, bits as u16]
    }

    #[test]
    fn the_fixed_point_search_agrees_with_ryu_across_its_range() {
        // Every 1021st f32 from 1e-3 to 1e7 (about 270 000), and the f32s on either side of
        // decimals a meter shows, where a tie or a one-bit miss would show.
        let mut checked = 0_u32;
        let mut check = |x: f32| {
            let ryus: f64 = ryu::Buffer::new().format(x).parse().unwrap();
            assert_eq!(
                shortest_decimal(x).map(f64::to_bits),
                Some(ryus.to_bits()),
                "{x:e} ({:#x})",
                x.to_bits()
            );
            checked += 1;
        };
        for bits in (0x3a83_126f_u32..0x4b18_9680).step_by(1021) {
            check(f32::from_bits(bits));
        }
        for k in 0..20_000_u32 {
            #[expect(clippy::cast_precision_loss, reason = "k is small")]
            let decimal = 231.0 + k as f32 * 0.001;
            for bits in [
                decimal.to_bits() - 1,
                decimal.to_bits(),
                decimal.to_bits() + 1,
            ] {
                check(f32::from_bits(bits));
            }
        }
        assert!(checked > 300_000, "{checked}");
    }

    #[test]
    fn f32_registers_are_written_as_the_shortest_decimal_of_the_f32() {
        let plain = Codec::plain(DataType::F32);
        let classes: [(&str, f32); 8] = [
            ("meter reading", 231.799),
            ("smallest subnormal", f32::from_bits(1)),
            ("largest subnormal", f32::from_bits(0x007F_FFFF)),
            ("smallest normal", f32::MIN_POSITIVE),
            ("largest", f32::MAX),
            ("most negative", f32::MIN),
            ("negative zero", -0.0),
            ("energy counter", 123_456.78),
        ];
        for (class, x) in classes {
            let text = written(&decode(&f32_words(x), &plain));
            let back: f32 = text.parse().unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{class}: {text}");
        }
        assert_eq!(written(&decode(&f32_words(231.799), &plain)), "231.799");
        assert_eq!(written(&decode(&f32_words(-0.0), &plain)), "-0.0");
        assert_eq!(
            written(&decode(&f32_words(f32::MAX), &plain)),
            "3.4028235e38"
        );
        assert_eq!(
            written(&decode(&f32_words(f32::from_bits(1)), &plain)),
            "1e-45"
        );
        // NaN and infinity are a meter's "no value": a decode error, which acquisition turns
        // into a bad quality and the payloads into `null`.
        for marker in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(
                decode(&f32_words(marker), &plain),
                Err(DecodeError::NotFinite)
            );
        }
    }

    #[test]
    fn a_scaled_integer_has_the_decimals_its_scale_implies() {
        let scaled = |data_type, scale, offset| Codec {
            scale,
            offset,
            ..Codec::plain(data_type)
        };
        // 2314 × 0.1 is 231.40000000000003 in f64.
        assert_eq!(
            written(&decode(&[2314], &scaled(DataType::U16, 0.1, 0.0))),
            "231.4"
        );
        assert_eq!(
            written(&decode(&[2310], &scaled(DataType::U16, 0.1, 0.0))),
            "231.0"
        );
        assert_eq!(
            written(&decode(&[7], &scaled(DataType::U16, 0.01, -40.0))),
            "-39.93"
        );
        assert_eq!(
            written(&decode(&[3], &scaled(DataType::I16, 0.25, 0.0))),
            "0.75"
        );
        // A PT ratio of 100 on 0.1 V steps: whole volts.
        assert_eq!(
            written(&decode(&[2314], &scaled(DataType::U16, 0.1 * 100.0, 0.0))),
            "23140.0"
        );
        assert_eq!(decimals_of(0.1), 1);
        assert_eq!(decimals_of(0.001), 3);
        assert_eq!(decimals_of(0.1 * 3.0), 1);
        assert_eq!(decimals_of(20.000_000_000_000_004), 0);
        assert_eq!(decimals_of(1.0 / 3.0), 1);
        assert_eq!(decimals_of(0.0), 0);
        // A scaled f32 keeps the f32's own digits: 12345678 Wh in kWh.
        let kwh = scaled(DataType::F32, 0.001, 0.0);
        assert_eq!(
            written(&decode(&f32_words(12_345_678.0), &kwh)),
            "12345.678"
        );
    }

    #[test]
    fn a_points_decimals_override_type_and_scale() {
        let f32_one = Codec {
            decimals: Some(1),
            ..Codec::plain(DataType::F32)
        };
        assert_eq!(written(&decode(&f32_words(231.799), &f32_one)), "231.8");
        let whole = Codec {
            scale: 0.1,
            decimals: Some(0),
            ..Codec::plain(DataType::U16)
        };
        assert_eq!(written(&decode(&[2316], &whole)), "232.0");
        let finer = Codec {
            scale: 0.5,
            decimals: Some(3),
            ..Codec::plain(DataType::U16)
        };
        assert_eq!(written(&decode(&[3], &finer)), "1.5");
        // Rounding a small negative to no decimals gives 0, not "-0".
        let signed = Codec {
            scale: 0.01,
            decimals: Some(1),
            ..Codec::plain(DataType::I16)
        };
        assert_eq!(written(&decode(&[(-4i16) as u16], &signed)), "0.0");
        let f64_two = Codec {
            decimals: Some(2),
            ..Codec::plain(DataType::F64)
        };
        let pi = std::f64::consts::PI.to_bits();
        let words = [
            (pi >> 48) as u16,
            (pi >> 32) as u16,
            (pi >> 16) as u16,
            pi as u16,
        ];
        assert_eq!(written(&decode(&words, &f64_two)), "3.14");
        // A scaled bit read as a coil follows the same rule.
        let coil = Codec {
            scale: 0.1,
            ..Codec::plain(DataType::Bool)
        };
        assert_eq!(decode_bit(true, &coil), Value::F64(0.1));
    }

    fn any_order() -> impl Strategy<Value = ByteOrder> {
        prop::sample::select(ByteOrder::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn integers_round_trip_in_every_order(v in any::<i32>(), u in any::<u32>(), order in any_order()) {
            for (value, ty) in [(i64::from(v), DataType::I32), (i64::from(u), DataType::U32),
                                (i64::from(v as i16), DataType::I16), (i64::from(u as u16), DataType::U16),
                                (i64::from(v) * 1_000_003, DataType::I64)] {
                let c = codec(ty, order);
                let words = encode(&Value::I64(value), &c).unwrap();
                prop_assert_eq!(words.len(), usize::from(c.registers()));
                prop_assert_eq!(decode(&words, &c), Ok(Value::I64(value)));
            }
        }

        #[test]
        fn floats_round_trip_in_every_order(v in -1.0e30f32..1.0e30f32, d in -1.0e300f64..1.0e300, order in any_order()) {
            let c = codec(DataType::F32, order);
            let Ok(Value::F64(back)) = decode(&encode(&Value::F64(f64::from(v)), &c).unwrap(), &c) else {
                panic!("f32 decodes to a float")
            };
            prop_assert_eq!((back as f32).to_bits(), v.to_bits());
            let c = codec(DataType::F64, order);
            prop_assert_eq!(decode(&encode(&Value::F64(d), &c).unwrap(), &c), Ok(Value::F64(d)));
        }

        #[test]
        fn the_fixed_point_search_gives_ryus_decimal(bits in 0x3a83_126fu32..0x4b18_9680) {
            // 1e-3 to 1e7, where the search runs instead of ryu.
            let x = f32::from_bits(bits);
            let ryus: f64 = ryu::Buffer::new().format(x).parse().unwrap();
            prop_assert_eq!(shortest_decimal(x).map(f64::to_bits), Some(ryus.to_bits()));
            prop_assert_eq!(shortest_decimal(-x).map(f64::to_bits), Some((-ryus).to_bits()));
        }

        #[test]
        fn every_finite_f32_decodes_to_its_shortest_decimal(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            prop_assume!(x.is_finite());
            let words = [(bits >> 16) as u16, bits as u16];
            let Ok(Value::F64(v)) = decode(&words, &Codec::plain(DataType::F32)) else {
                panic!("a finite f32 decodes")
            };
            let written = ryu::Buffer::new().format(v).to_owned();
            prop_assert_eq!(written.parse::<f32>().map(f32::to_bits), Ok(bits), "{}", written);
            prop_assert_eq!((v as f32).to_bits(), bits);
            // The same decimal as the f32's own shortest text (ryu switches to exponent form at
            // different magnitudes for f32 and f64, so the texts may differ in form).
            let shortest: f64 = ryu::Buffer::new().format(x).parse().unwrap();
            prop_assert_eq!(v.to_bits(), shortest.to_bits(), "{}", written);
        }

        #[test]
        fn scaled_integers_round_trip_to_the_nearest_step(raw in 0u16..=u16::MAX, order in any_order()) {
            let c = Codec { scale: 0.01, offset: -40.0, ..codec(DataType::U16, order) };
            let engineering = f64::from(raw) * 0.01 - 40.0;
            let words = encode(&Value::F64(engineering), &c).unwrap();
            prop_assert_eq!(words, encode(&Value::I64(i64::from(raw)), &codec(DataType::U16, order)).unwrap());
        }

        #[test]
        fn bcd_round_trips(v in 0i64..=99_999_999, order in any_order()) {
            let c = codec(DataType::Bcd32, order);
            prop_assert_eq!(decode(&encode(&Value::I64(v), &c).unwrap(), &c), Ok(Value::I64(v)));
        }

        #[test]
        fn decode_never_panics_on_any_registers(words in prop::collection::vec(any::<u16>(), 0..6), ty in prop::sample::select(DataType::ALL.to_vec()), order in any_order()) {
            let mut c = codec(ty, order);
            c.length = 3;
            // Any result is fine; the property is that it returns at all.
            drop(decode(&words, &c));
        }
    }
}
