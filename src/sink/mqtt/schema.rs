//! The compact profile's schema message (docs/payload.md) of a configured device: the bridge
//! from the resolved config to the pure encoder, which knows nothing of the config.

use crate::config::plan::Device;
use crate::encode::json_compact::{SchemaPoint, schema};
use crate::model::Timestamp;

/// `{prefix}/schema/{device}`'s payload: every configured point in config order with its unit
/// and the type of its value on the wire.
pub fn device_schema(device: &Device, ts: Timestamp) -> Vec<u8> {
    let points: Vec<SchemaPoint<'_>> = device
        .points
        .iter()
        .map(|p| SchemaPoint {
            name: p.name.as_str(),
            unit: &p.unit,
            kind: p.codec.wire_kind(),
        })
        .collect();
    schema(device.name.as_str(), &points, ts)
}
