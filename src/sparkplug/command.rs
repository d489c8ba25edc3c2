//! Metric writes carried by DCMD and NCMD (issue 17): which device and point each metric of
//! a command names, and the value it carries, as the write path takes them. Pure: the sink
//! hands them to the core, which checks, audits and carries them out like a signed `write`.
//!
//! - A DCMD on `spBv1.0/{group}/DCMD/{node}/{device}` names the device's metrics by the alias
//!   its DBIRTH gave or by name.
//! - An NCMD names them by alias (aliases are unique across the node) or as
//!   `{device}/{point}`. Its `Node Control/…` metrics are the node's own (a rebirth,
//!   [`super::EdgeNode::on_message`]), never writes.
//! - Every other metric of a command for this node is a write, or a [`NotAWrite`] saying
//!   why not (unknown metric, null, a value of no writable shape), so that the core can audit
//!   each one.

use prost::Message as _;

use crate::model::{DeviceId, PointId, Value};

use super::datatype::from_proto;
use super::node::EdgeNode;
use super::proto::{DataType, Payload};
use super::topic::{MessageType, Topic};

/// The prefixes of the node's and the devices' own control metrics (a rebirth), never
/// writes.
const CONTROL: [&str; 2] = ["Node Control/", "Device Control/"];

/// One metric of a command, to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricWrite {
    /// The device.
    pub device: DeviceId,
    /// The point.
    pub point: PointId,
    /// The value, in engineering units.
    pub value: Value,
}

/// One metric of a command that cannot be a write, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAWrite {
    /// The metric as the command named it: its name, or `alias N`.
    pub metric: String,
    /// Why it is not written.
    pub why: String,
}

/// The writes in a command for `node`: `None` when `topic` is not this node's NCMD or one of
/// its DCMDs; otherwise one entry per metric that is not a `Node Control/…` one.
///
/// # Errors
/// The payload is not a Sparkplug B payload (the whole command is refused).
pub fn writes(
    node: &EdgeNode,
    topic: &str,
    payload: &[u8],
) -> Option<Result<Vec<Result<MetricWrite, NotAWrite>>, prost::DecodeError>> {
    let Ok(Topic::Edge {
        group_id,
        message_type,
        edge_node_id,
        device_id,
    }) = Topic::parse(topic)
    else {
        return None;
    };
    let config = node.config();
    if group_id != config.group_id || edge_node_id != config.edge_node_id {
        return None;
    }
    let device = match message_type {
        MessageType::DCmd => Some(device_id?),
        MessageType::NCmd => None,
        _ => return None,
    };
    let command = match Payload::decode(payload) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    let out = command
        .metrics
        .iter()
        .filter(|m| {
            !m.name
                .as_deref()
                .is_some_and(|n| CONTROL.iter().any(|c| n.starts_with(c)))
        })
        .map(|m| {
            let metric = match (&m.name, m.alias) {
                (Some(name), _) => name.clone(),
                (None, Some(alias)) => format!("alias {alias}"),
                (None, None) => "a metric with neither name nor alias".to_owned(),
            };
            let refuse = |why: String| NotAWrite {
                metric: metric.clone(),
                why,
            };
            // An alias wins over a name, as in data messages.
            let (dev, point, declared) = node
                .command_target(device.as_ref(), m.name.as_deref(), m.alias)
                .ok_or_else(|| {
                    refuse(match &device {
                        Some(d) => format!("device `{d}` has no such metric in its DBIRTH"),
                        None => "no such metric: name it `{device}/{point}` or by the alias \
                                 of its DBIRTH"
                            .to_owned(),
                    })
                })?;
            if m.is_null == Some(true) {
                return Err(refuse("a null value cannot be written".into()));
            }
            let Some(value) = &m.value else {
                return Err(refuse("the metric carries no value".into()));
            };
            let datatype = m
                .datatype
                .and_then(|d| DataType::try_from(i32::try_from(d).ok()?).ok())
                .unwrap_or(declared);
            let value = from_proto(datatype, value).map_err(refuse)?;
            Ok(MetricWrite {
                device: dev,
                point,
                value,
            })
        })
        .collect();
    Some(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Name;
    use crate::sparkplug::proto::payload::Metric;
    use crate::sparkplug::proto::payload::metric::Value as PV;
    use crate::sparkplug::{DataMode, DeviceSpec, Id, NodeConfig, PointSpec};

    fn node() -> EdgeNode {
        let config = NodeConfig {
            group_id: Id::new("plant").unwrap(),
            edge_node_id: Id::new("gw").unwrap(),
            primary_host_id: None,
            data_mode: DataMode::ByException,
            buffer_limit: 0,
            writes: true,
        };
        let device = |name: &str, points: &[(&str, DataType)]| DeviceSpec {
            name: Name::new(name).unwrap(),
            points: points
                .iter()
                .map(|(p, datatype)| PointSpec {
                    name: Name::new(p).unwrap(),
                    datatype: *datatype,
                })
                .collect(),
        };
        EdgeNode::new(
            config,
            &[
                device("plc", &[("sp", DataType::Float), ("bias", DataType::Int16)]),
                device("pump", &[("run", DataType::Boolean)]),
            ],
            0,
        )
    }

    fn metric(name: Option<&str>, alias: Option<u64>, value: Option<PV>) -> Metric {
        Metric {
            name: name.map(str::to_owned),
            alias,
            value,
            ..Metric::default()
        }
    }

    fn command(metrics: Vec<Metric>) -> Vec<u8> {
        Payload {
            timestamp: Some(1),
            metrics,
            ..Payload::default()
        }
        .encode_to_vec()
    }

    fn write(device: &str, point: &str, value: Value) -> Result<MetricWrite, NotAWrite> {
        Ok(MetricWrite {
            device: Name::new(device).unwrap(),
            point: Name::new(point).unwrap(),
            value,
        })
    }

    #[test]
    fn a_dcmd_names_its_device_metrics_by_alias_or_name() {
        let n = node();
        let got = writes(
            &n,
            "spBv1.0/plant/DCMD/gw/plc",
            &command(vec![
                metric(Some("sp"), None, Some(PV::FloatValue(42.5))),
                // Aliases are numbered from 1 in config order: plc/bias is 2.
                metric(None, Some(2), Some(PV::IntValue(0xFFF4))),
                metric(Some("run"), None, Some(PV::BooleanValue(true))),
                metric(Some("sp"), None, None),
            ]),
        );
        let got = got.unwrap().unwrap();
        assert_eq!(got[0], write("plc", "sp", Value::F64(42.5)));
        assert_eq!(got[1], write("plc", "bias", Value::I64(-12)));
        // `run` is pump's, not plc's.
        assert!(
            got[2].as_ref().unwrap_err().why.contains("no such metric"),
            "{got:?}"
        );
        assert!(
            got[3].as_ref().unwrap_err().why.contains("no value"),
            "{got:?}"
        );
    }

    #[test]
    fn an_ncmd_names_device_slash_point_and_leaves_node_control_alone() {
        let n = node();
        let got = writes(
            &n,
            "spBv1.0/plant/NCMD/gw",
            &command(vec![
                metric(
                    Some("Node Control/Rebirth"),
                    None,
                    Some(PV::BooleanValue(true)),
                ),
                metric(Some("pump/run"), None, Some(PV::BooleanValue(false))),
                metric(None, Some(3), Some(PV::BooleanValue(true))),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            [
                write("pump", "run", Value::Bool(false)),
                write("pump", "run", Value::Bool(true))
            ]
        );
        let rebirth_only = writes(
            &n,
            "spBv1.0/plant/NCMD/gw",
            &command(vec![metric(
                Some("Node Control/Rebirth"),
                None,
                Some(PV::BooleanValue(true)),
            )]),
        );
        assert_eq!(rebirth_only.unwrap().unwrap(), []);
    }

    #[test]
    fn only_this_nodes_commands_are_read() {
        let n = node();
        let body = command(vec![metric(Some("sp"), None, Some(PV::FloatValue(1.0)))]);
        assert!(writes(&n, "spBv1.0/plant/DCMD/other/plc", &body).is_none());
        assert!(writes(&n, "spBv1.0/other/DCMD/gw/plc", &body).is_none());
        assert!(writes(&n, "spBv1.0/plant/DDATA/gw/plc", &body).is_none());
        assert!(writes(&n, "spBv1.0/STATE/host", &body).is_none());
        assert!(matches!(
            writes(&n, "spBv1.0/plant/DCMD/gw/plc", b"\xff\xff\xff"),
            Some(Err(_))
        ));
    }
}
