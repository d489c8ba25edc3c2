//! Sparkplug B (Eclipse Sparkplug 3.0, docs/design.md §4): the protobuf payloads, the topic
//! namespace, and a pure per-edge-node session state machine. No I/O and no clock: the MQTT
//! sink ([`crate::sink::sparkplug`]) carries out what [`EdgeNode`] returns.
//!
//! Delivery follows Sparkplug's rules, not the JSON profile's outbox: births and data at QoS 0
//! on a clean session, only the NDEATH (the will) at QoS 1, nothing retained; store-and-forward
//! is gated on the primary host's `STATE` (buffer while it is offline, then a fresh birth and
//! the backlog as `is_historical` data), not on PUBACKs.
//!
//! Mapping from the data model (docs/design.md §2):
//! - group id and edge node id come from the config; each device is a Sparkplug device of the
//!   same name, each point a metric of the same name in that device's DBIRTH;
//! - point types map to datatypes as [`datatype`] documents (scaled points are Double);
//! - quality: `good` and `uncertain` send the value; `bad` (any reason) sends `is_null = true`
//!   and no value, as does a value the datatype cannot hold. The reason is not carried: the
//!   core metric has no field for it;
//! - a metric's `timestamp` is when the sample's response arrived; a payload's `timestamp` is
//!   when it was built for sending (the `now` passed in).
//!
//! The schema is `proto/sparkplug_b.proto`, vendored from Eclipse Tahu under EPL-2.0, compiled
//! by protox and prost-build in `build.rs` because `protoc` is not available to the build.

pub mod command;
pub mod datatype;
pub mod node;
pub mod payload;
pub mod proto;
pub mod topic;

pub use datatype::datatype_of;
pub use node::{DataMode, DeviceSpec, EdgeNode, InboundError, Message, NodeConfig, PointSpec, Qos};
pub use topic::{HostState, Id, MessageType, NAMESPACE, Topic};
