//! Our point types → Sparkplug datatypes, and our values → the `value` field on the wire.
//!
//! | point type (unscaled)  | Sparkplug datatype | protobuf field |
//! | ---------------------- | ------------------ | -------------- |
//! | `bool`, `bit`          | Boolean (11)       | `boolean_value` |
//! | `i16`                  | Int16 (2)          | `int_value`    |
//! | `i32`                  | Int32 (3)          | `int_value`    |
//! | `i64`                  | Int64 (4)          | `long_value`   |
//! | `u16`, `bcd16`         | UInt16 (6)         | `int_value`    |
//! | `u32`, `bcd32`         | UInt32 (7)         | `int_value`    |
//! | `u64`                  | UInt64 (8)         | `long_value`   |
//! | `f32`                  | Float (9)          | `float_value`  |
//! | `f64`                  | Double (10)        | `double_value` |
//! | `string`               | String (12)        | `string_value` |
//! | any but `string`, with `scale` or `offset` | Double (10) | `double_value` |
//!
//! A scaled point is Double whatever its registers hold, because decode hands it on as an f64
//! (0.1 × a u16 is not a u16). BCD is a decimal encoding of an unsigned integer: 4 digits fit
//! UInt16 and 8 digits fit UInt32.
//!
//! Signed integers narrower than 64 bits travel in the unsigned `int_value` as two's complement
//! *of their own width* (Int16 −12 is 0xFFF4, not 0xFFFFFFF4). Tahu's Python library and
//! pysparkplug encode so and reject the sign-extended form; Tahu's Java library truncates to
//! the width when decoding, so it reads this form too. Int64 uses all 64 bits of `long_value`.

use crate::decode::{Codec, DataType as PointType};
use crate::model::Value;

use super::proto::DataType;
use super::proto::payload::metric::Value as ProtoValue;

/// The Sparkplug datatype that carries the values of a point decoded with `codec`.
pub fn datatype_of(codec: &Codec) -> DataType {
    if codec.data_type == PointType::String {
        // Text is never scaled: decode returns it before scale and offset apply.
        return DataType::String;
    }
    if codec.is_scaled() {
        return DataType::Double;
    }
    match codec.data_type {
        PointType::Bool | PointType::Bit => DataType::Boolean,
        PointType::I16 => DataType::Int16,
        PointType::I32 => DataType::Int32,
        PointType::I64 => DataType::Int64,
        PointType::U16 | PointType::Bcd16 => DataType::UInt16,
        PointType::U32 | PointType::Bcd32 => DataType::UInt32,
        PointType::U64 => DataType::UInt64,
        PointType::F32 => DataType::Float,
        PointType::F64 => DataType::Double,
        PointType::String => DataType::String,
    }
}

/// A metric's value as it goes on the wire, comparable exactly (floats by their bits, so that
/// by-exception reporting neither trips `float_cmp` nor reports an unchanged NaN forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wire {
    /// `int_value`.
    Int(u32),
    /// `long_value`.
    Long(u64),
    /// `float_value`, as bits.
    Float(u32),
    /// `double_value`, as bits.
    Double(u64),
    /// `boolean_value`.
    Bool(bool),
    /// `string_value`.
    Str(String),
}

impl Wire {
    /// The protobuf oneof.
    pub(crate) fn to_proto(&self) -> ProtoValue {
        match self {
            Wire::Int(v) => ProtoValue::IntValue(*v),
            Wire::Long(v) => ProtoValue::LongValue(*v),
            Wire::Float(bits) => ProtoValue::FloatValue(f32::from_bits(*bits)),
            Wire::Double(bits) => ProtoValue::DoubleValue(f64::from_bits(*bits)),
            Wire::Bool(b) => ProtoValue::BooleanValue(*b),
            Wire::Str(s) => ProtoValue::StringValue(s.clone()),
        }
    }
}

/// 2^64 as an f64 (exact).
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// `value` as an integer, if it is one (an f64 with no fraction counts: u64 values beyond
/// `i64::MAX` arrive as f64).
fn integer(value: &Value) -> Option<i128> {
    match value {
        Value::I64(v) => Some(i128::from(*v)),
        Value::Bool(b) => Some(i128::from(u8::from(*b))),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "range-checked against [-2^63, 2^64] just before"
        )]
        Value::F64(v) if v.fract() == 0.0 && (-TWO_POW_64 / 2.0..=TWO_POW_64).contains(v) => {
            Some(*v as i128)
        }
        Value::F64(_) | Value::Str(_) => None,
    }
}

/// Two's complement of `v` in `bits` bits, if it fits a signed integer of that width.
fn signed(v: i128, bits: u32) -> Option<u64> {
    let half = 1i128 << (bits - 1);
    if !(-half..half).contains(&v) {
        return None;
    }
    let modulus = 1i128 << bits;
    u64::try_from(v.rem_euclid(modulus)).ok()
}

/// `v` if it fits an unsigned integer of `bits` bits.
fn unsigned(v: i128, bits: u32) -> Option<u64> {
    if v >= 0 && v < (1i128 << bits) {
        u64::try_from(v).ok()
    } else {
        None
    }
}

/// The wire form of `value` for a metric of `datatype`; `None` when the value cannot be
/// represented (it is then sent as `is_null`, like a bad sample).
pub(crate) fn to_wire(datatype: DataType, value: &Value) -> Option<Wire> {
    let int32 = |v: Option<u64>| v.and_then(|v| u32::try_from(v).ok()).map(Wire::Int);
    match datatype {
        DataType::Boolean => match value {
            Value::Bool(b) => Some(Wire::Bool(*b)),
            Value::I64(v) => Some(Wire::Bool(*v != 0)),
            Value::F64(_) | Value::Str(_) => None,
        },
        DataType::Int8 => int32(integer(value).and_then(|v| signed(v, 8))),
        DataType::Int16 => int32(integer(value).and_then(|v| signed(v, 16))),
        DataType::Int32 => int32(integer(value).and_then(|v| signed(v, 32))),
        DataType::Int64 => integer(value).and_then(|v| signed(v, 64)).map(Wire::Long),
        DataType::UInt8 => int32(integer(value).and_then(|v| unsigned(v, 8))),
        DataType::UInt16 => int32(integer(value).and_then(|v| unsigned(v, 16))),
        DataType::UInt32 => int32(integer(value).and_then(|v| unsigned(v, 32))),
        // A u64 near u64::MAX widens to exactly 2^64 in decode's f64: saturate it back.
        DataType::UInt64 => integer(value)
            .and_then(|v| unsigned(v.min(i128::from(u64::MAX)), 64))
            .map(Wire::Long),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "an f32 point's value is an f32 widened by decode; narrowing is exact"
        )]
        DataType::Float => value.as_f64().map(|v| Wire::Float((v as f32).to_bits())),
        DataType::Double => value.as_f64().map(|v| Wire::Double(v.to_bits())),
        DataType::String | DataType::Text => Some(Wire::Str(match value {
            Value::Str(s) => s.clone(),
            other => other.to_string(),
        })),
        // Never chosen by `datatype_of`; nothing of ours has these shapes.
        DataType::Unknown
        | DataType::DateTime
        | DataType::Uuid
        | DataType::DataSet
        | DataType::Bytes
        | DataType::File
        | DataType::Template
        | DataType::PropertySet
        | DataType::PropertySetList
        | DataType::Int8Array
        | DataType::Int16Array
        | DataType::Int32Array
        | DataType::Int64Array
        | DataType::UInt8Array
        | DataType::UInt16Array
        | DataType::UInt32Array
        | DataType::UInt64Array
        | DataType::FloatArray
        | DataType::DoubleArray
        | DataType::BooleanArray
        | DataType::StringArray
        | DataType::DateTimeArray => None,
    }
}

/// The value a command metric carries, as the write path takes it (the inverse of
/// [`to_wire`]): integers by `datatype` (the metric's own, else the point's), narrow signed
/// ones as the two's complement of their own width or sign-extended to 32 bits; floats as
/// f64; text as text. The write path then checks the value against the point's kind and
/// limits.
///
/// # Errors
/// What the value is and why it cannot be written.
pub(crate) fn from_proto(datatype: DataType, value: &ProtoValue) -> Result<Value, String> {
    let narrow = |v: u32, bits: u32| -> Result<Value, String> {
        let (modulus, half) = (1i64 << bits, 1i64 << (bits - 1));
        let own = i64::from(v);
        // Sign-extended to 32 bits, as some hosts send it.
        let extended = i64::from(i32::from_ne_bytes(v.to_ne_bytes()));
        if own < modulus {
            Ok(Value::I64(if own >= half { own - modulus } else { own }))
        } else if (-half..half).contains(&extended) {
            Ok(Value::I64(extended))
        } else {
            Err(format!("{v} does not fit {datatype:?}"))
        }
    };
    match (datatype, value) {
        (DataType::Int8, ProtoValue::IntValue(v)) => narrow(*v, 8),
        (DataType::Int16, ProtoValue::IntValue(v)) => narrow(*v, 16),
        (DataType::Int32, ProtoValue::IntValue(v)) => {
            Ok(Value::I64(i64::from(i32::from_ne_bytes(v.to_ne_bytes()))))
        }
        (_, ProtoValue::IntValue(v)) => Ok(Value::I64(i64::from(*v))),
        (DataType::Int64, ProtoValue::LongValue(v)) => {
            Ok(Value::I64(i64::from_ne_bytes(v.to_ne_bytes())))
        }
        // Beyond i64::MAX a u64 goes on as f64, as decode hands such values on.
        #[expect(
            clippy::cast_precision_loss,
            reason = "only values beyond i64::MAX, which decode also widens"
        )]
        (_, ProtoValue::LongValue(v)) => {
            Ok(i64::try_from(*v).map_or(Value::F64(*v as f64), Value::I64))
        }
        (_, ProtoValue::FloatValue(v)) => Ok(Value::F64(f64::from(*v))),
        (_, ProtoValue::DoubleValue(v)) => Ok(Value::F64(*v)),
        (_, ProtoValue::BooleanValue(b)) => Ok(Value::Bool(*b)),
        (_, ProtoValue::StringValue(s)) => Ok(Value::Str(s.clone())),
        (
            _,
            ProtoValue::BytesValue(_)
            | ProtoValue::DatasetValue(_)
            | ProtoValue::TemplateValue(_)
            | ProtoValue::ExtensionValue(_),
        ) => Err(
            "a bytes, dataset, template or extension value; write a number, a boolean or text"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{self, ByteOrder};

    #[test]
    fn every_point_type_maps_to_the_documented_datatype() {
        let expected = |t: PointType| match t {
            PointType::Bool | PointType::Bit => DataType::Boolean,
            PointType::U16 | PointType::Bcd16 => DataType::UInt16,
            PointType::I16 => DataType::Int16,
            PointType::U32 | PointType::Bcd32 => DataType::UInt32,
            PointType::I32 => DataType::Int32,
            PointType::U64 => DataType::UInt64,
            PointType::I64 => DataType::Int64,
            PointType::F32 => DataType::Float,
            PointType::F64 => DataType::Double,
            PointType::String => DataType::String,
        };
        for t in PointType::ALL {
            assert_eq!(datatype_of(&Codec::plain(t)), expected(t), "{t}");
            let scaled = Codec {
                scale: 0.1,
                ..Codec::plain(t)
            };
            let want = if t == PointType::String {
                DataType::String
            } else {
                DataType::Double
            };
            assert_eq!(datatype_of(&scaled), want, "{t} scaled");
            let offset = Codec {
                offset: -40.0,
                ..Codec::plain(t)
            };
            assert_eq!(datatype_of(&offset), want, "{t} with offset");
        }
    }

    /// Decodes registers as each type and checks that the value fits the mapped datatype,
    /// at the extremes of every type.
    #[test]
    fn decoded_extremes_of_every_type_fit_their_datatype() {
        let cases: &[(PointType, &[u16], Wire)] = &[
            (PointType::Bit, &[0x0001], Wire::Bool(true)),
            (PointType::U16, &[0xFFFF], Wire::Int(0xFFFF)),
            (PointType::I16, &[0x8000], Wire::Int(0x8000)),
            (PointType::I16, &[0xFFF4], Wire::Int(0xFFF4)),
            (PointType::U32, &[0xFFFF, 0xFFFF], Wire::Int(u32::MAX)),
            (PointType::I32, &[0xFFFF, 0xFFFF], Wire::Int(u32::MAX)),
            (PointType::I32, &[0x7FFF, 0xFFFF], Wire::Int(0x7FFF_FFFF)),
            (PointType::U64, &[0xFFFF; 4], Wire::Long(u64::MAX)),
            (
                PointType::U64,
                &[0xFFFF, 0xFFFF, 0xFFFF, 0xF800],
                Wire::Long(0xFFFF_FFFF_FFFF_F800),
            ),
            (
                PointType::U64,
                &[0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF],
                Wire::Long(i64::MAX as u64),
            ),
            (PointType::I64, &[0x8000, 0, 0, 0], Wire::Long(1 << 63)),
            (
                PointType::F32,
                &[0x4248, 0x0000],
                Wire::Float(50.0f32.to_bits()),
            ),
            (
                PointType::F64,
                &[0x4049, 0, 0, 0],
                Wire::Double(50.0f64.to_bits()),
            ),
            (PointType::Bcd16, &[0x9999], Wire::Int(9999)),
            (PointType::Bcd32, &[0x9999, 0x9999], Wire::Int(99_999_999)),
        ];
        for (t, words, want) in cases {
            let codec = Codec {
                order: ByteOrder::Abcd,
                ..Codec::plain(*t)
            };
            let value = decode::decode(words, &codec).unwrap();
            assert_eq!(
                to_wire(datatype_of(&codec), &value).as_ref(),
                Some(want),
                "{t} {words:04x?} decoded as {value:?}"
            );
        }
        let text = Codec {
            length: 2,
            ..Codec::plain(PointType::String)
        };
        let value = decode::decode(&[0x4142, 0x4300], &text).unwrap();
        assert_eq!(
            to_wire(datatype_of(&text), &value),
            Some(Wire::Str("ABC".into()))
        );
        let coil = Codec::plain(PointType::Bool);
        let value = decode::decode_bit(false, &coil);
        assert_eq!(to_wire(datatype_of(&coil), &value), Some(Wire::Bool(false)));
    }

    #[test]
    fn values_that_do_not_fit_become_null() {
        assert_eq!(to_wire(DataType::Int16, &Value::I64(40_000)), None);
        assert_eq!(to_wire(DataType::UInt16, &Value::I64(-1)), None);
        assert_eq!(to_wire(DataType::UInt32, &Value::F64(1.5)), None);
        assert_eq!(to_wire(DataType::Int64, &Value::Str("x".into())), None);
        assert_eq!(to_wire(DataType::Double, &Value::Str("x".into())), None);
        assert_eq!(to_wire(DataType::Boolean, &Value::F64(1.0)), None);
        assert_eq!(to_wire(DataType::Bytes, &Value::I64(1)), None);
        assert_eq!(
            to_wire(DataType::Int8, &Value::I64(-1)),
            Some(Wire::Int(0xFF))
        );
        assert_eq!(to_wire(DataType::UInt8, &Value::I64(256)), None);
    }

    #[test]
    fn numbers_on_string_metrics_are_written_as_text() {
        assert_eq!(
            to_wire(DataType::String, &Value::F64(231.4)),
            Some(Wire::Str("231.4".into()))
        );
    }
}
