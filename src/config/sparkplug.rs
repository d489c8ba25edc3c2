//! `[mqtt.sparkplug]`: who this gateway is in the Sparkplug B namespace, when the MQTT sink
//! speaks Sparkplug (`format = "sparkplug_b"`) instead of the JSON profile (docs/design.md §4).
//!
//! Ids follow the Sparkplug 3.0 topic rules ([`Id`]: one topic level, never a wildcard). The
//! group id may not be `STATE` either: `spBv1.0/STATE/…` is the host applications' namespace,
//! so the node's own NCMD topic would not parse as an edge node topic.

use serde::Deserialize;

use super::issue::Issues;
use super::plan::Device;
use crate::sparkplug::{DataMode, DeviceSpec, Id, NodeConfig, PointSpec, datatype_of};

/// `[mqtt.sparkplug]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSparkplug {
    /// The Sparkplug group this edge node belongs to.
    pub group_id: String,
    /// This edge node's id within the group; default: the gateway id.
    #[serde(default)]
    pub edge_node_id: Option<String>,
    /// The primary host application whose `STATE` gates births and data; none sends whenever
    /// connected.
    #[serde(default)]
    pub primary_host_id: Option<String>,
    /// `"exception"` (default: only metrics that changed) or `"every_poll"`.
    #[serde(default)]
    pub data: Option<String>,
    /// Carry out DCMD and NCMD metric writes to writable points, within their limits and
    /// audited (docs/remote-operations.md). Sparkplug commands are not signed, so whoever
    /// can publish on the node's command topics can write: default `false`.
    #[serde(default)]
    pub writes: bool,
}

/// Resolves `raw`, found at `section` (e.g. `mqtt.sparkplug`), for the gateway `gateway_id`;
/// `None` when an issue was pushed.
///
/// The node gets no in-memory buffer (`buffer_limit = 0`): the sink's persistent outbox queue
/// is the store-and-forward buffer.
pub fn resolve(
    raw: &RawSparkplug,
    gateway_id: &str,
    section: &str,
    issues: &mut Issues,
) -> Option<NodeConfig> {
    let before = issues.0.len();
    let mut id = |key: &str, value: &str| match Id::new(value) {
        Ok(_) if value.contains('\0') => {
            issues.push(
                format!("{section}.{key}"),
                "an MQTT topic cannot hold the NUL character",
            );
            None
        }
        Ok(id) => Some(id),
        Err(err) => {
            issues.push(format!("{section}.{key}"), err.to_string());
            None
        }
    };
    let group_id = id("group_id", &raw.group_id);
    let edge_node_id = id(
        "edge_node_id",
        raw.edge_node_id.as_deref().unwrap_or(gateway_id),
    );
    let primary_host_id = raw
        .primary_host_id
        .as_ref()
        .map(|host| id("primary_host_id", host));
    if raw.group_id == "STATE" {
        issues.push(
            format!("{section}.group_id"),
            "`STATE` is reserved for host applications (spBv1.0/STATE/{host_id}); use another group id",
        );
    }
    let data_mode = match raw.data.as_deref() {
        None | Some("exception") => Some(DataMode::ByException),
        Some("every_poll") => Some(DataMode::EveryPoll),
        Some(other) => {
            issues.push(
                format!("{section}.data"),
                format!("`{other}` is not a data mode; use \"exception\" or \"every_poll\""),
            );
            None
        }
    };
    if issues.0.len() > before {
        return None;
    }
    Some(NodeConfig {
        group_id: group_id?,
        edge_node_id: edge_node_id?,
        primary_host_id: primary_host_id.flatten(),
        data_mode: data_mode?,
        buffer_limit: 0,
        writes: raw.writes,
    })
}

/// The Sparkplug node's spec of `device` as configured, each point typed by [`datatype_of`].
pub fn device_spec(device: &Device) -> DeviceSpec {
    DeviceSpec {
        name: device.name.clone(),
        points: device
            .points
            .iter()
            .map(|p| PointSpec {
                name: p.name.clone(),
                datatype: datatype_of(&p.codec),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawSparkplug {
        toml::from_str(toml_text).unwrap()
    }

    fn resolved(toml_text: &str) -> Result<NodeConfig, Vec<(String, String)>> {
        let mut issues = Issues::default();
        let node = resolve(&raw(toml_text), "gw-01", "mqtt.sparkplug", &mut issues);
        match node {
            Some(n) if issues.is_empty() => Ok(n),
            _ => Err(issues.0.into_iter().map(|i| (i.key, i.message)).collect()),
        }
    }

    fn id(s: &str) -> Id {
        Id::new(s).unwrap()
    }

    #[test]
    fn writes_are_off_unless_the_table_turns_them_on() {
        assert!(!resolved(r#"group_id = "plant""#).unwrap().writes);
        assert!(
            resolved("group_id = \"plant\"\nwrites = true")
                .unwrap()
                .writes
        );
        assert!(
            toml::from_str::<RawSparkplug>("group_id = \"plant\"\nwrites = \"yes\"").is_err(),
            "a string is not a switch"
        );
    }

    #[test]
    fn defaults_are_the_gateway_id_no_primary_host_and_by_exception() {
        assert_eq!(
            resolved(r#"group_id = "plant""#).unwrap(),
            NodeConfig {
                group_id: id("plant"),
                edge_node_id: id("gw-01"),
                primary_host_id: None,
                data_mode: DataMode::ByException,
                buffer_limit: 0,
                writes: false,
            }
        );
    }

    #[test]
    fn every_key_is_taken_as_written() {
        let node = resolved(
            r#"
            group_id = "Plant A"
            edge_node_id = "Line.3"
            primary_host_id = "scada-1"
            data = "every_poll"
            "#,
        )
        .unwrap();
        assert_eq!(node.group_id, id("Plant A"), "spaces and case are allowed");
        assert_eq!(node.edge_node_id, id("Line.3"));
        assert_eq!(node.primary_host_id, Some(id("scada-1")));
        assert_eq!(node.data_mode, DataMode::EveryPoll);
        assert_eq!(
            resolved(
                r#"group_id = "p"
data = "exception""#
            )
            .unwrap()
            .data_mode,
            DataMode::ByException
        );
    }

    #[test]
    fn every_bad_id_is_reported_under_its_own_key() {
        let issues = resolved(
            r##"
            group_id = "plant/a"
            edge_node_id = "gw+"
            primary_host_id = "#"
            data = "sometimes"
            "##,
        )
        .unwrap_err();
        let keys: Vec<&str> = issues.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "mqtt.sparkplug.group_id",
                "mqtt.sparkplug.edge_node_id",
                "mqtt.sparkplug.primary_host_id",
                "mqtt.sparkplug.data"
            ]
        );
        assert!(
            issues[0]
                .1
                .contains("`plant/a` is not a valid Sparkplug id")
        );
        assert!(issues[3].1.contains("\"every_poll\""), "{}", issues[3].1);
    }

    #[test]
    fn empty_reserved_and_nul_ids_are_refused() {
        let issues = resolved(r#"group_id = """#).unwrap_err();
        assert_eq!(issues[0].0, "mqtt.sparkplug.group_id");
        let issues = resolved(r#"group_id = "STATE""#).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert!(issues[0].1.contains("reserved"), "{}", issues[0].1);
        let issues = resolved(
            r#"group_id = "p"
primary_host_id = "a\u0000b""#,
        )
        .unwrap_err();
        assert_eq!(issues[0].0, "mqtt.sparkplug.primary_host_id");
        let issues = resolved(
            r#"group_id = "p"
edge_node_id = """#,
        )
        .unwrap_err();
        assert_eq!(issues[0].0, "mqtt.sparkplug.edge_node_id");
    }

    #[test]
    fn unknown_and_missing_keys_are_refused_by_the_file_shape() {
        let err = toml::from_str::<RawSparkplug>("group_id = \"p\"\nbd_seq = 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `bd_seq`"), "{err}");
        let err = toml::from_str::<RawSparkplug>("edge_node_id = \"n\"\n").unwrap_err();
        assert!(
            err.to_string().contains("missing field `group_id`"),
            "{err}"
        );
    }

    #[test]
    fn device_spec_types_points_by_their_codec() {
        let plan = crate::config::load_str(
            "t.toml",
            include_str!("../../configs/demo.toml"),
            &crate::config::EnvOverrides::Off,
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .as_path(),
            None,
        )
        .unwrap();
        for device in &plan.devices {
            let spec = device_spec(device);
            assert_eq!(spec.points.len(), device.points.len());
            for (s, p) in spec.points.iter().zip(device.points.iter()) {
                assert_eq!(s.name, p.name);
                assert_eq!(s.datatype, datatype_of(&p.codec));
            }
        }
    }
}
