//! The Sparkplug 3.0 topic namespace and the primary host's `STATE` payload.
//!
//! Edge node topics are `spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]`, where
//! the `D*` message types carry a device id and the `N*` ones never do; the host application's
//! topic is `spBv1.0/STATE/{host_id}` with a JSON payload `{"online":bool,"timestamp":ms}`.
//! Ids are non-empty UTF-8 without `/`, `+` or `#`, so that every id is exactly one topic level
//! and never a wildcard.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Name;

/// The first topic level of every Sparkplug B topic.
pub const NAMESPACE: &str = "spBv1.0";

/// Why a string cannot be a Sparkplug group, edge node, device or host id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid Sparkplug id: use one or more characters other than `/`, `+` and `#`"
)]
pub struct InvalidId(pub String);

/// A group, edge node, device or host id: one topic level, never a wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// Validates `s` and wraps it.
    ///
    /// # Errors
    /// [`InvalidId`] when `s` is empty or holds `/`, `+` or `#`.
    pub fn new(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() || s.contains(['/', '+', '#']) {
            Err(InvalidId(s.to_owned()))
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Name> for Id {
    /// Our names (`[a-z0-9_-]{1,64}`) are always valid ids.
    fn from(name: &Name) -> Self {
        Self(name.as_str().to_owned())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The message type level of an edge node's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Edge node birth certificate.
    NBirth,
    /// Edge node death certificate (the MQTT will).
    NDeath,
    /// Edge node data.
    NData,
    /// Command to the edge node.
    NCmd,
    /// Device birth certificate.
    DBirth,
    /// Device death certificate.
    DDeath,
    /// Device data.
    DData,
    /// Command to a device.
    DCmd,
}

impl MessageType {
    /// Every message type.
    pub const ALL: [MessageType; 8] = [
        MessageType::NBirth,
        MessageType::NDeath,
        MessageType::NData,
        MessageType::NCmd,
        MessageType::DBirth,
        MessageType::DDeath,
        MessageType::DData,
        MessageType::DCmd,
    ];

    /// The topic level, e.g. `NBIRTH`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::NData => "NDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::DData => "DDATA",
            MessageType::DCmd => "DCMD",
        }
    }

    /// The type written as `level`, if it is one.
    pub fn parse(level: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == level)
    }

    /// Whether topics of this type end in a device id.
    pub fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DDeath | MessageType::DData | MessageType::DCmd
        )
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a topic is not a Sparkplug B topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{topic}` is not a Sparkplug B topic: {reason}")]
pub struct TopicError {
    /// The topic as received.
    pub topic: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed Sparkplug B topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// An edge node's or one of its devices' topic.
    Edge {
        /// The group the edge node belongs to.
        group_id: Id,
        /// What the message is.
        message_type: MessageType,
        /// The edge node.
        edge_node_id: Id,
        /// The device, for the `D*` message types only.
        device_id: Option<Id>,
    },
    /// A host application's `STATE` topic.
    State {
        /// The host application.
        host_id: Id,
    },
}

impl Topic {
    /// The topic of an edge node message (`device_id` is ignored for `N*` types and required
    /// in spirit for `D*` ones; [`Topic::parse`] enforces both).
    pub fn edge(
        group_id: &Id,
        message_type: MessageType,
        edge_node_id: &Id,
        device_id: Option<&Id>,
    ) -> Self {
        Topic::Edge {
            group_id: group_id.clone(),
            message_type,
            edge_node_id: edge_node_id.clone(),
            device_id: device_id.filter(|_| message_type.is_device()).cloned(),
        }
    }

    /// Parses a topic as received from the broker.
    ///
    /// # Errors
    /// [`TopicError`] for another namespace, an unknown message type, a missing or extra
    /// device level, or an empty or wildcard level.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let fail = |reason| TopicError {
            topic: topic.to_owned(),
            reason,
        };
        let id =
            |level: &str| Id::new(level).map_err(|_| fail("an id level is empty or a wildcard"));
        let levels: Vec<&str> = topic.split('/').collect();
        match levels.as_slice() {
            [ns, ..] if *ns != NAMESPACE => Err(fail("the namespace is not spBv1.0")),
            [_, "STATE", host] => Ok(Topic::State { host_id: id(host)? }),
            [_, "STATE", ..] => Err(fail("STATE takes exactly one host id")),
            [_, group, kind, node, rest @ ..] => {
                let message_type =
                    MessageType::parse(kind).ok_or_else(|| fail("unknown message type"))?;
                let device_id = match (message_type.is_device(), rest) {
                    (true, [device]) => Some(id(device)?),
                    (false, []) => None,
                    (true, _) => return Err(fail("a device message needs exactly one device id")),
                    (false, _) => return Err(fail("an edge node message has no device id")),
                };
                Ok(Topic::Edge {
                    group_id: id(group)?,
                    message_type,
                    edge_node_id: id(node)?,
                    device_id,
                })
            }
            _ => Err(fail("too few levels")),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Edge {
                group_id,
                message_type,
                edge_node_id,
                device_id,
            } => {
                write!(f, "{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}")?;
                match device_id {
                    Some(device) => write!(f, "/{device}"),
                    None => Ok(()),
                }
            }
            Topic::State { host_id } => write!(f, "{NAMESPACE}/STATE/{host_id}"),
        }
    }
}

/// Why a `STATE` payload could not be read.
#[derive(Debug, thiserror::Error)]
#[error("STATE payload is not {{\"online\":bool,\"timestamp\":ms}}")]
pub struct StateError(#[source] pub serde_json::Error);

/// A host application's `STATE` payload (Sparkplug 3.0), published retained by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Whether the host is online.
    pub online: bool,
    /// When the host published it (ms since the epoch); an older one than already seen is stale.
    pub timestamp: u64,
}

impl HostState {
    /// Reads the JSON payload; unknown fields are ignored because hosts may add their own.
    ///
    /// # Errors
    /// [`StateError`] when it is not JSON or lacks `online` or `timestamp`.
    pub fn parse(payload: &[u8]) -> Result<Self, StateError> {
        serde_json::from_slice(payload).map_err(StateError)
    }

    /// `{"online":…,"timestamp":…}`.
    pub fn to_json(self) -> Vec<u8> {
        format!(
            "{{\"online\":{},\"timestamp\":{}}}",
            self.online, self.timestamp
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Id {
        Id::new(s).unwrap()
    }

    #[test]
    fn every_message_type_round_trips_through_its_topic() {
        for t in MessageType::ALL {
            let device = t.is_device().then(|| id("main-meter"));
            let topic = Topic::edge(&id("plant"), t, &id("gw-01"), device.as_ref());
            let text = topic.to_string();
            let want = match t.is_device() {
                true => format!("spBv1.0/plant/{t}/gw-01/main-meter"),
                false => format!("spBv1.0/plant/{t}/gw-01"),
            };
            assert_eq!(text, want);
            assert_eq!(Topic::parse(&text).unwrap(), topic);
        }
        let state = Topic::parse("spBv1.0/STATE/scada").unwrap();
        assert_eq!(
            state,
            Topic::State {
                host_id: id("scada")
            }
        );
        assert_eq!(state.to_string(), "spBv1.0/STATE/scada");
    }

    #[test]
    fn node_topics_never_carry_a_device() {
        let t = Topic::edge(&id("g"), MessageType::NData, &id("n"), Some(&id("d")));
        assert_eq!(t.to_string(), "spBv1.0/g/NDATA/n");
    }

    #[test]
    fn malformed_topics_are_rejected_with_a_reason() {
        for bad in [
            "spAv1.0/g/NBIRTH/n",
            "spBv1.0/g/NBIRTH",
            "spBv1.0/g/NBIRTH/n/d",
            "spBv1.0/g/DBIRTH/n",
            "spBv1.0/g/DBIRTH/n/d/x",
            "spBv1.0/g/NREBIRTH/n",
            "spBv1.0//NBIRTH/n",
            "spBv1.0/+/NBIRTH/n",
            "spBv1.0/STATE",
            "spBv1.0/STATE/a/b",
            "",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let err = Topic::parse("spBv1.0/g/DDATA/n").unwrap_err();
        assert!(err.to_string().contains("device"), "{err}");
    }

    #[test]
    fn ids_are_one_level_and_never_wildcards() {
        for bad in ["", "a/b", "+", "a#"] {
            assert!(Id::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Id::new("Plant 1 (Wuhan)").unwrap().as_str(),
            "Plant 1 (Wuhan)"
        );
    }

    #[test]
    fn state_payload_is_the_3_0_json_form() {
        let s = HostState {
            online: true,
            timestamp: 1_700_000_000_000,
        };
        assert_eq!(
            String::from_utf8(s.to_json()).unwrap(),
            r#"{"online":true,"timestamp":1700000000000}"#
        );
        assert_eq!(HostState::parse(&s.to_json()).unwrap(), s);
        let spaced = br#"{ "online" : false, "timestamp" : 5, "extra": 1 }"#;
        assert_eq!(
            HostState::parse(spaced).unwrap(),
            HostState {
                online: false,
                timestamp: 5
            }
        );
        // The 2.2 form (plain text) and a missing timestamp are not 3.0 STATE payloads.
        assert!(HostState::parse(b"ONLINE").is_err());
        assert!(HostState::parse(br#"{"online":true}"#).is_err());
    }
}
