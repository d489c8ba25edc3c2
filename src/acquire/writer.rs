//! Carries out one admitted write on a link's open connection, inside the link's task: read
//! the point as it is, encode the new value through the point's codec, write it with the
//! function its type calls for, and read it back.
//!
//! Invariants:
//! - nothing is sent for a refused write (see `write.rs`), nor to a device marked offline;
//! - a `bit` point is written by reading its register and changing only that bit;
//! - writes are never retried: a timeout leaves it unknown whether the write landed, and the
//!   caller is told so.

use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tracing::{debug, info};

use super::DeviceStats;
use super::link::{Connection, ModbusWrite, ReadResult, WriteData, WriteResult};
use super::spec::{Device, Point};
use super::write::{RateLimiter, WriteError, WriteFunction, WriteOutcome, Written, admit};
use crate::decode::{DataType, decode, decode_bit, encode, encode_bit, merge_bit};
use crate::model::Value;

/// A point's raw content as read: its registers or its coil.
enum Raw {
    Words(Vec<u16>),
    Bit(bool),
}

/// What the device holds for `point`: `Ok(None)` when it answered with an exception.
async fn read_raw(
    conn: &mut Connection,
    device: &Device,
    point: &Point,
    stats: &DeviceStats,
    fail: &impl Fn(Failure) -> WriteError,
) -> Result<Option<Raw>, WriteError> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let result = conn
        .read(
            device.unit_id,
            point.function,
            point.address,
            point.width(),
            device.timeout,
        )
        .await;
    match result {
        ReadResult::Words(words) => Ok(Some(Raw::Words(words))),
        ReadResult::Bits(bits) => Ok(bits.first().map(|b| Raw::Bit(*b))),
        ReadResult::Exception(_) => {
            stats.exceptions.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
        ReadResult::Timeout => {
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            Err(fail(Failure::Timeout))
        }
        ReadResult::Failed(reason) => Err(fail(Failure::Link(reason))),
    }
}

/// A transaction that got no usable answer.
enum Failure {
    Timeout,
    Link(String),
}

fn value_of(raw: &Raw, point: &Point) -> Option<Value> {
    match raw {
        Raw::Bit(b) => Some(decode_bit(*b, &point.codec)),
        Raw::Words(words) => decode(words, &point.codec).ok(),
    }
}

/// Writes `value` to `point_name` of `device` over `conn`; `offline` is the device's health.
pub(crate) async fn serve(
    conn: &mut Connection,
    device: &Device,
    offline: bool,
    limiter: &mut RateLimiter,
    stats: &DeviceStats,
    point_name: &str,
    value: &Value,
) -> WriteOutcome {
    let dev = device.name.as_str();
    let Some(point) = device.points.iter().find(|p| p.name.as_str() == point_name) else {
        return Err(WriteError::UnknownPoint {
            device: dev.to_owned(),
            point: point_name.to_owned(),
        });
    };
    let admitted = admit(dev, point, value)?;
    let named = || (dev.to_owned(), point_name.to_owned());
    let (Some(spec), Some(function)) = (
        point.write.as_ref(),
        WriteFunction::for_point(point, device.write_multiple),
    ) else {
        let (device, point) = named();
        return Err(WriteError::NotWritable { device, point });
    };
    if offline {
        let (device, point) = named();
        return Err(WriteError::Offline { device, point });
    }
    if let Some(max_rate) = spec.max_rate {
        if !limiter.allow(point_name, max_rate, Instant::now()) {
            let (device, point) = named();
            return Err(WriteError::OverRate {
                device,
                point,
                max_rate,
            });
        }
    }
    if let Err(err) = conn.ensure_open().await {
        let (device, point) = named();
        return Err(WriteError::Failed {
            device,
            point,
            reason: err.to_string(),
        });
    }
    let fail = |f: Failure| {
        let (device, point) = named();
        match f {
            Failure::Timeout => WriteError::Timeout { device, point },
            Failure::Link(reason) => WriteError::Failed {
                device,
                point,
                reason,
            },
        }
    };
    let before = read_raw(conn, device, point, stats, &fail).await?;
    let out_of_range = |why: String| {
        let (device, point) = named();
        WriteError::OutOfRange {
            device,
            point,
            value: value.clone(),
            limits: why,
        }
    };
    let data = if point.function.is_bits() {
        WriteData::Bits(vec![
            encode_bit(&admitted, &point.codec).map_err(|e| out_of_range(e.to_string()))?,
        ])
    } else if point.codec.data_type == DataType::Bit {
        // The other 15 bits of the register belong to other signals: keep them as they are.
        let Some(Raw::Words(words)) = &before else {
            let (device, point) = named();
            return Err(WriteError::Failed {
                device,
                point,
                reason: "cannot read the register to change one bit of it".into(),
            });
        };
        let on = encode_bit(&admitted, &point.codec).map_err(|e| out_of_range(e.to_string()))?;
        WriteData::Words(vec![merge_bit(
            words.first().copied().unwrap_or(0),
            &point.codec,
            on,
        )])
    } else {
        WriteData::Words(encode(&admitted, &point.codec).map_err(|e| out_of_range(e.to_string()))?)
    };
    let written_raw = match &data {
        WriteData::Bits(bits) => Raw::Bit(bits.first().copied().unwrap_or(false)),
        WriteData::Words(words) => Raw::Words(words.clone()),
    };
    let Some(written) = value_of(&written_raw, point) else {
        return Err(out_of_range("does not decode back".into()));
    };
    let request = ModbusWrite {
        function,
        address: point.address,
        data,
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    match conn.write(device.unit_id, &request, device.timeout).await {
        WriteResult::Done => {}
        WriteResult::Exception(code) => {
            stats.exceptions.fetch_add(1, Ordering::Relaxed);
            let (device, point) = named();
            debug!(device = %device, point = %point, code, "Write refused with an exception.");
            return Err(WriteError::Exception {
                device,
                point,
                code,
            });
        }
        WriteResult::Timeout => {
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(fail(Failure::Timeout));
        }
        WriteResult::Failed(reason) => return Err(fail(Failure::Link(reason))),
    }
    let verified = if spec.verify {
        let read_back = read_raw(conn, device, point, stats, &fail)
            .await?
            .and_then(|raw| value_of(&raw, point));
        if read_back.as_ref() != Some(&written) {
            let (device, point) = named();
            return Err(WriteError::NotVerified {
                device,
                point,
                written,
                read_back: read_back.unwrap_or(Value::Str("no value".into())),
            });
        }
        read_back
    } else {
        None
    };
    let before = before.and_then(|raw| value_of(&raw, point));
    info!(device = %dev, point = %point_name, function = function.code(),
          before = ?before, written = %written, verified = verified.is_some(), "Point written.");
    Ok(Written {
        device: dev.to_owned(),
        point: point_name.to_owned(),
        before,
        written,
        verified,
        function: function.code(),
    })
}
