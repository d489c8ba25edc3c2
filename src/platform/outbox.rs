//! Where a platform record queues: its stream, which is also its sequence key.
//!
//! Stream and sequence key are both `energy_platform/{dataCode}`: `seq` counts per data item,
//! like telemetry counts per device. The seq orders rows and lets the store refuse a reused
//! number; it is not the record's identity. The record's bytes are its stored form
//! ([`Record::to_stored`](super::record::Record::to_stored)); the store wraps them as an outbox
//! row ([`crate::store::record::platform_message`]).

/// The prefix of the stream and sequence key of every platform record.
pub const STREAM_PREFIX: &str = "energy_platform/";

/// The stream, which is also the sequence key, of `data_code`'s records.
pub fn stream(data_code: &str) -> String {
    format!("{STREAM_PREFIX}{data_code}")
}
