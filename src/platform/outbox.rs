//! A platform record as an outbox message, and back.
//!
//! The record is stored as its stored form ([`Record::to_stored`]) wrapped by
//! [`crate::store::record::encode_wire`] (not retained): the bytes depend only on the record,
//! so a record built again from the same intervals (a restart that repeats work, the `upload`
//! command) stores as the same bytes and reaches the platform under the same key
//! (enterpriseCode, dataCode, statType, statDate), which is the identity the platform keeps.
//! What only the upload knows (versions, `uploadDate`) is added when it is sent.
//!
//! Stream and sequence key are both `energy_platform/{dataCode}`: `seq` counts per data item,
//! like telemetry counts per device. The seq orders rows and lets the store refuse a reused
//! number; it is not the record's identity.

use super::record::{Record, StoredRecordError};
use crate::store::{OutboxMessage, QueueId};

/// The prefix of the stream and sequence key of every platform record.
pub const STREAM_PREFIX: &str = "energy_platform/";

/// The stream, which is also the sequence key, of `data_code`'s records.
pub fn stream(data_code: &str) -> String {
    format!("{STREAM_PREFIX}{data_code}")
}

/// The stored payload of `record`: the same bytes whenever the record is built again.
pub fn payload(record: &Record) -> Vec<u8> {
    crate::store::record::encode_wire(&record.to_stored(), false)
}

/// The outbox message that queues `record` in `queue` with sequence number `seq` (from a
/// counter for [`stream`]`(data_code)`, seeded with `StoreHandle::next_seq`), made at
/// `created_ms`. The daemon's core, which fills several queues, qualifies the key per queue.
pub fn outbox_message(record: &Record, queue: QueueId, seq: u64, created_ms: i64) -> OutboxMessage {
    let key = stream(&record.key.data_code);
    OutboxMessage {
        queue,
        stream: key.clone(),
        key,
        seq,
        created_ms,
        payload: payload(record),
    }
}

/// The record stored in an outbox payload made by [`outbox_message`].
///
/// # Errors
/// [`StoredRecordError`] when the payload is not a stored record.
pub fn decode(payload: &[u8]) -> Result<Record, StoredRecordError> {
    let (body, _retain) = crate::store::record::decode_wire(payload)
        .ok_or_else(|| StoredRecordError("not a stored wire message".into()))?;
    Record::from_stored(body)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::platform::record::{RecordKey, StatType};
    use crate::platform::uscc::Uscc;

    fn record(value: &str) -> Record {
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
    fn a_record_queues_under_its_data_code_and_a_rebuilt_one_stores_the_same_bytes() {
        let first = outbox_message(&record("240.00"), 0, 7, 1_000);
        assert_eq!(first.stream, "energy_platform/E001-0101-00");
        assert_eq!(first.key, first.stream);
        assert_eq!(first.seq, 7);
        let again = outbox_message(&record("240.00"), 0, 8, 2_000);
        assert_eq!(again.payload, first.payload, "same record, same bytes");
        assert_eq!(decode(&first.payload).unwrap(), record("240.00"));
        assert!(decode(b"\x01batch").is_err());
    }
}
