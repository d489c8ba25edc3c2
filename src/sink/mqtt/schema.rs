//! The compact profile's schema message (docs/payload.md) of a configured device, the bridge
//! from the device's acquisition spec to the pure encoder; and which schema a link's consumers
//! hold, so that telemetry is written positionally only against a schema they have.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::inflight::RowId;
use crate::acquire::spec::Device;
use crate::encode::json_compact::{Layout, SchemaPoint, schema};
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

/// The schemas an MQTT link's consumers are known to hold: per device, the layout of the last
/// schema message the broker acknowledged, when no newer one is on its way. Rows go out in the
/// order they are rendered, so telemetry rendered after that PUBACK is published after the
/// schema, and a consumer (or a late subscriber, from the retained copy) holds it before any
/// message written against it; while a newer schema is unacknowledged, telemetry is named, so a
/// consumer that keeps only the latest schema never meets an older `sc`. Shared by the clones
/// of one outbox; empty after a restart, which only means the named form until the start's
/// schema is acknowledged.
#[derive(Debug, Default, Clone)]
pub struct HeldSchemas {
    inner: Arc<Mutex<Held>>,
}

#[derive(Debug, Default)]
struct Held {
    /// The newest schema row rendered and not yet acknowledged, per device.
    pending: HashMap<String, (RowId, Arc<Layout>)>,
    /// The acknowledged layout of each device.
    acked: HashMap<String, Arc<Layout>>,
}

impl HeldSchemas {
    /// Notes that row `row`, the schema message `payload` of topic `schema/{device}`, is
    /// going out; it counts once acknowledged ([`Self::acked`]).
    pub fn sending(&self, row: RowId, topic: &str, payload: &[u8]) {
        let (Some(device), Some(layout)) =
            (topic.strip_prefix("schema/"), Layout::of_schema(payload))
        else {
            return;
        };
        let mut held = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        held.pending
            .insert(device.to_owned(), (row, Arc::new(layout)));
    }

    /// Rows the broker acknowledged: a device's pending schema among them is now what its
    /// consumers hold.
    pub fn acked(&self, rows: &[RowId]) {
        let mut held = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let done: Vec<String> = held
            .pending
            .iter()
            .filter(|(_, (row, _))| rows.contains(row))
            .map(|(device, _)| device.clone())
            .collect();
        for device in done {
            if let Some((_, layout)) = held.pending.remove(&device) {
                held.acked.insert(device, layout);
            }
        }
    }

    /// The layout `device`'s consumers hold, if the broker acknowledged one and no newer one
    /// is on its way.
    pub fn layout(&self, device: &str) -> Option<Arc<Layout>> {
        let held = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if held.pending.contains_key(device) {
            return None;
        }
        held.acked.get(device).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::json_compact::{SchemaPoint, schema};
    use crate::model::Timestamp;

    fn schema_of(names: &[&str]) -> Vec<u8> {
        let points: Vec<SchemaPoint<'_>> = names
            .iter()
            .map(|name| SchemaPoint {
                name,
                unit: "",
                kind: "number",
            })
            .collect();
        schema("m", &points, Timestamp(0))
    }

    #[test]
    fn a_schema_counts_once_acknowledged_and_not_while_a_newer_one_is_on_its_way() {
        let held = HeldSchemas::default();
        assert!(held.layout("m").is_none());
        held.sending(7, "schema/m", &schema_of(&["a", "b"]));
        assert!(held.layout("m").is_none(), "sent is not held");
        held.acked(&[3, 7]);
        let first = held.layout("m").unwrap();
        assert!(held.layout("other").is_none());
        held.sending(9, "schema/m", &schema_of(&["b", "a"]));
        assert!(held.layout("m").is_none(), "a newer schema is on its way");
        // The connection drops: the row is sent again on the next one, under the same id.
        held.sending(9, "schema/m", &schema_of(&["b", "a"]));
        held.acked(&[8]);
        assert!(held.layout("m").is_none());
        held.acked(&[9]);
        let second = held.layout("m").unwrap();
        assert_ne!(first.id(), second.id(), "order changes the id");
        // Anything else on the topic is not a schema.
        held.sending(10, "schema/m", b"");
        held.sending(11, "status", &schema_of(&["x"]));
        assert_eq!(held.layout("m"), Some(second));
    }
}
