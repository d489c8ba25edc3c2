//! Building blocks of the payloads an edge node publishes, and reading the commands it gets.
//!
//! Births carry every metric's name, alias, datatype, timestamp and value (or `is_null`); data
//! messages carry only the alias, timestamp and value, since the host resolves the rest from the
//! birth. `is_null`, `is_historical` and the other flags are written only when true.

use prost::Message as _;

use crate::model::Timestamp;

use super::datatype::Wire;
use super::proto::DataType;
use super::proto::Payload;
use super::proto::payload::Metric;
use super::proto::payload::metric::Value as ProtoValue;

/// The name of the birth/death sequence metric in NBIRTH and NDEATH.
pub const BD_SEQ: &str = "bdSeq";

/// The name of the boolean metric a host writes `true` to in an NCMD to ask for a rebirth.
pub const REBIRTH: &str = "Node Control/Rebirth";

/// Milliseconds since the epoch as the unsigned protobuf field (instants before 1970 are 0).
pub(crate) fn ms(ts: Timestamp) -> u64 {
    u64::try_from(ts.millis()).unwrap_or(0)
}

/// The `bdSeq` metric: Int64, as Sparkplug 3.0 requires for NBIRTH and NDEATH.
pub(crate) fn bd_seq_metric(bd_seq: u8, ts: Option<Timestamp>) -> Metric {
    Metric {
        name: Some(BD_SEQ.to_owned()),
        timestamp: ts.map(ms),
        datatype: Some(DataType::Int64 as u32),
        value: Some(ProtoValue::LongValue(u64::from(bd_seq))),
        ..Metric::default()
    }
}

/// The `Node Control/Rebirth` metric every NBIRTH declares, always `false`.
pub(crate) fn rebirth_metric(ts: Timestamp) -> Metric {
    Metric {
        name: Some(REBIRTH.to_owned()),
        timestamp: Some(ms(ts)),
        datatype: Some(DataType::Boolean as u32),
        value: Some(ProtoValue::BooleanValue(false)),
        ..Metric::default()
    }
}

/// A metric as declared in a birth: name, alias, datatype, when its value was read, and the
/// value or `is_null`.
pub(crate) fn birth_metric(
    name: &str,
    alias: u64,
    datatype: DataType,
    ts: Timestamp,
    wire: Option<&Wire>,
) -> Metric {
    Metric {
        name: Some(name.to_owned()),
        alias: Some(alias),
        timestamp: Some(ms(ts)),
        datatype: Some(datatype as u32),
        is_null: wire.is_none().then_some(true),
        value: wire.map(Wire::to_proto),
        ..Metric::default()
    }
}

/// A metric in a data message: alias only, the sample's own timestamp, the value or
/// `is_null`, and `is_historical` for store-and-forward replays.
pub(crate) fn data_metric(
    alias: u64,
    ts: Timestamp,
    wire: Option<&Wire>,
    historical: bool,
) -> Metric {
    Metric {
        alias: Some(alias),
        timestamp: Some(ms(ts)),
        is_historical: historical.then_some(true),
        is_null: wire.is_none().then_some(true),
        value: wire.map(Wire::to_proto),
        ..Metric::default()
    }
}

/// The NDEATH payload: the `bdSeq` metric and no `seq`. The will is built at CONNECT and sent
/// by the broker at an unknown later time, so it has no timestamp (`ts` is `None`); an NDEATH
/// the node publishes itself before a clean disconnect carries the time it was sent.
pub fn ndeath(bd_seq: u8, ts: Option<Timestamp>) -> Vec<u8> {
    Payload {
        timestamp: ts.map(ms),
        metrics: vec![bd_seq_metric(bd_seq, None)],
        ..Payload::default()
    }
    .encode_to_vec()
}

/// Whether an NCMD payload asks for a rebirth: a metric named `Node Control/Rebirth` holding
/// `true`. Hosts address it by name, since NBIRTH gives it no alias.
pub fn is_rebirth_request(ncmd: &Payload) -> bool {
    ncmd.metrics.iter().any(|m| {
        m.name.as_deref() == Some(REBIRTH) && m.value == Some(ProtoValue::BooleanValue(true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndeath_carries_only_the_bd_seq() {
        let p = Payload::decode(ndeath(42, None).as_slice()).unwrap();
        assert_eq!(p.timestamp, None);
        assert_eq!(p.seq, None, "NDEATH must not carry seq");
        assert_eq!(p.metrics.len(), 1);
        let m = &p.metrics[0];
        assert_eq!(m.name.as_deref(), Some("bdSeq"));
        assert_eq!(m.datatype, Some(DataType::Int64 as u32));
        assert_eq!(m.value, Some(ProtoValue::LongValue(42)));
        assert_eq!(m.alias, None);
        let sent = Payload::decode(ndeath(42, Some(Timestamp(9))).as_slice()).unwrap();
        assert_eq!(sent.timestamp, Some(9));
    }

    #[test]
    fn only_a_true_rebirth_metric_asks_for_a_rebirth() {
        let ncmd = |name: &str, value: ProtoValue| Payload {
            timestamp: Some(1),
            metrics: vec![Metric {
                name: Some(name.to_owned()),
                datatype: Some(DataType::Boolean as u32),
                value: Some(value),
                ..Metric::default()
            }],
            ..Payload::default()
        };
        assert!(is_rebirth_request(&ncmd(
            REBIRTH,
            ProtoValue::BooleanValue(true)
        )));
        assert!(!is_rebirth_request(&ncmd(
            REBIRTH,
            ProtoValue::BooleanValue(false)
        )));
        assert!(!is_rebirth_request(&ncmd(
            "Node Control/Reboot",
            ProtoValue::BooleanValue(true)
        )));
        assert!(!is_rebirth_request(&ncmd(REBIRTH, ProtoValue::IntValue(1))));
        assert!(!is_rebirth_request(&Payload::default()));
    }

    #[test]
    fn timestamps_before_the_epoch_clamp_to_zero() {
        assert_eq!(ms(Timestamp(-5)), 0);
        assert_eq!(ms(Timestamp(1_700_000_000_000)), 1_700_000_000_000);
    }
}
