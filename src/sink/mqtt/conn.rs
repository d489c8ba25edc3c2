//! One broker connection, MQTT 3.1.1 or 5, behind one small face, so that the delivery logic
//! in [`super::Session`] and [`super::inflight::InFlight`] exists once, and so that the
//! Sparkplug sink ([`crate::sink::sparkplug`]) connects the same way with its own will.
//!
//! rumqttc has two parallel stacks, `rumqttc` (3.1.1) and `rumqttc::v5`, with distinct types but
//! the same shape: an `AsyncClient` that queues requests and an `EventLoop` that reports each
//! queued publish as `Outgoing::Publish(pkid)` in FIFO order, and each PUBACK as it arrives.
//! [`Client`] and [`Events`] are enums over the two, and [`Event`] is the part of either event
//! stream the session acts on. The two sessions are equally fresh: 3.1.1 connects with
//! `clean_session = true`, 5 with `clean_start = true` and no Session Expiry Interval (absent
//! means 0, MQTT 5 §3.1.2.11.2), so the broker keeps nothing across connections and the
//! outbox is the only memory.

use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use rumqttc::{Outgoing, QoS};
use tracing::debug;

use super::alias::Alias;
use super::spec::{Mqtt, Protocol};
use super::{MqttError, Secret, status_topic};
use crate::encode::json_v1;
use crate::model::Timestamp;

/// Largest packet either way: 1 MiB. Over MQTT 5 the CONNECT tells the broker, which then
/// drops larger messages for us instead of sending them.
pub(crate) const MAX_PACKET: u32 = 1 << 20;

/// The shortest keep-alive rumqttc's v5 options accept.
const MIN_V5_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the session acts on, from either protocol's event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The broker accepted the connection; the session on it is fresh.
    ConnAck {
        /// The Topic Alias Maximum of its CONNACK: how many topic aliases this connection may
        /// use (0 over MQTT 3.1.1, or when the broker grants none).
        topic_alias_max: u16,
    },
    /// The client wrote a PUBLISH with this packet id (0 for QoS 0).
    OutgoingPublish(u16),
    /// The broker accepted the publish with this packet id.
    PubAck(u16),
    /// The broker answered the publish with this packet id with an MQTT 5 error reason code:
    /// it did not take the message.
    PubRejected {
        /// Packet id.
        pkid: u16,
        /// The reason code, as rumqttc names it.
        reason: String,
    },
    /// The client wrote its DISCONNECT.
    OutgoingDisconnect,
    /// A message arrived on a topic we subscribed to (downlink commands).
    Message {
        /// Full topic.
        topic: String,
        /// Payload bytes.
        payload: Vec<u8>,
        /// The broker sent it with the retain flag: a stored message (3.1.1 flags those sent
        /// because we subscribed; MQTT 5 with Retain As Published flags every retained one).
        retained: bool,
    },
    /// Anything else (pings, acks of our own subscriptions): nothing to do.
    Other,
    /// The connection failed or dropped; polling again reconnects.
    Error(String),
    /// The broker sent a packet larger than [`MAX_PACKET`] and the connection was dropped for
    /// it; polling again reconnects. Only a subscription brings such packets, and the broker
    /// sends a retained one again after every resubscribe, so the caller must stop subscribing
    /// for a while or it reconnects in a loop.
    TooLarge(String),
}

/// The client's request channel is full (or its event loop is gone): try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused;

/// A publish the client did not take, handed back so that it can be tried again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Returned {
    /// The topic as given.
    pub(crate) topic: String,
    /// The payload as given.
    pub(crate) payload: Vec<u8>,
}

/// The request side of a connection.
pub(crate) enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// The event side of a connection; polling it drives the network and reconnects.
pub(crate) enum Events {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<v5::EventLoop>),
}

impl Client {
    /// Queues a publish without waiting. A refused publish comes back whole (rumqttc returns
    /// the request inside its error), so the caller keeps it without copying every message;
    /// `None` only if rumqttc ever returned some other request.
    pub(crate) fn try_publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), Option<Returned>> {
        self.try_publish_aliased(topic, qos, retain, payload, Alias::None)
    }

    /// [`Self::try_publish`] naming the topic as `alias` says (MQTT 5; 3.1.1 always sends the
    /// topic). A refused publish comes back with the topic as given, even when only its alias
    /// was to be sent.
    pub(crate) fn try_publish_aliased(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        alias: Alias,
    ) -> Result<(), Option<Returned>> {
        use rumqttc::ClientError as E3;
        use rumqttc::v5::ClientError as E5;
        match self {
            Self::V311(c) => c
                .try_publish(topic, qos, retain, payload)
                .map_err(|e| match e {
                    E3::Request(rumqttc::Request::Publish(p))
                    | E3::TryRequest(rumqttc::Request::Publish(p)) => Some(Returned {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    }),
                    E3::Request(_) | E3::TryRequest(_) => None,
                }),
            Self::V5(c) => {
                // An alias used alone goes out with an empty topic; the topic is kept to be
                // handed back if the client refuses.
                let (sent, kept, properties) = match alias {
                    Alias::None => (topic, None, None),
                    Alias::Set(a) => (topic, None, Some(a)),
                    Alias::Use(a) => (String::new(), Some(topic), Some(a)),
                };
                let result = match properties {
                    None => c.try_publish(sent, v5_qos(qos), retain, payload),
                    Some(a) => c.try_publish_with_properties(
                        sent,
                        v5_qos(qos),
                        retain,
                        payload,
                        v5::mqttbytes::v5::PublishProperties {
                            topic_alias: Some(a),
                            ..Default::default()
                        },
                    ),
                };
                result.map_err(|e| match e {
                    E5::Request(v5::Request::Publish(p))
                    | E5::TryRequest(v5::Request::Publish(p)) => Some(Returned {
                        topic: kept
                            .unwrap_or_else(|| String::from_utf8_lossy(&p.topic).into_owned()),
                        payload: p.payload.to_vec(),
                    }),
                    E5::Request(_) | E5::TryRequest(_) => None,
                })
            }
        }
    }

    /// Queues a SUBSCRIBE without waiting.
    pub(crate) fn try_subscribe(&self, topic: String, qos: QoS) -> Result<(), Refused> {
        match self {
            Self::V311(c) => c.try_subscribe(topic, qos).map_err(|_| Refused),
            Self::V5(c) => c.try_subscribe(topic, v5_qos(qos)).map_err(|_| Refused),
        }
    }

    /// Queues the SUBSCRIBE for downlink commands on `topic`. Over MQTT 5 it asks the broker
    /// not to send retained messages at all (Retain Handling 2) and to keep the retain flag
    /// of live ones (Retain As Published), so that a retained command is never taken for a
    /// fresh one; 3.1.1 has no such options, and the caller refuses what arrives flagged.
    pub(crate) fn try_subscribe_commands(&self, topic: String) -> Result<(), Refused> {
        match self {
            Self::V311(c) => c
                .try_subscribe(topic, QoS::AtLeastOnce)
                .map_err(|_| Refused),
            Self::V5(c) => {
                let mut filter =
                    v5::mqttbytes::v5::Filter::new(topic, v5::mqttbytes::QoS::AtLeastOnce);
                filter.preserve_retain = true;
                filter.retain_forward_rule = v5::mqttbytes::v5::RetainForwardRule::Never;
                c.try_subscribe_many([filter]).map_err(|_| Refused)
            }
        }
    }

    /// Queues a DISCONNECT without waiting.
    pub(crate) fn try_disconnect(&self) -> Result<(), Refused> {
        match self {
            Self::V311(c) => c.try_disconnect().map_err(|_| Refused),
            Self::V5(c) => c.try_disconnect().map_err(|_| Refused),
        }
    }
}

impl Events {
    /// Replaces the Last Will sent with the next CONNECT. rumqttc reads its options afresh at
    /// every reconnect, so this takes effect on the next attempt; the current connection (if
    /// any) keeps the will it was opened with.
    pub(crate) fn set_will(&mut self, will: Will) {
        match self {
            Self::V311(l) => {
                l.mqtt_options.set_last_will(will.v311());
            }
            Self::V5(l) => {
                l.options.set_last_will(will.v5());
            }
        }
    }

    /// The next event; connects first when there is no connection.
    pub(crate) async fn poll(&mut self) -> Event {
        match self {
            Self::V311(l) => from_v311(l.poll().await),
            Self::V5(l) => from_v5(l.poll().await),
        }
    }
}

fn v5_qos(qos: QoS) -> v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn outgoing(o: Outgoing) -> Event {
    match o {
        Outgoing::Publish(pkid) => Event::OutgoingPublish(pkid),
        Outgoing::Disconnect => Event::OutgoingDisconnect,
        other => {
            debug!(event = ?other, "MQTT outgoing event.");
            Event::Other
        }
    }
}

fn from_v311(polled: Result<rumqttc::Event, rumqttc::ConnectionError>) -> Event {
    use rumqttc::{Event as E, Packet};
    match polled {
        Ok(E::Incoming(Packet::ConnAck(_))) => Event::ConnAck { topic_alias_max: 0 },
        Ok(E::Incoming(Packet::PubAck(ack))) => Event::PubAck(ack.pkid),
        Ok(E::Incoming(Packet::Publish(p))) => Event::Message {
            topic: p.topic,
            payload: p.payload.to_vec(),
            retained: p.retain,
        },
        Ok(E::Outgoing(o)) => outgoing(o),
        Ok(other) => {
            debug!(event = ?other, "MQTT incoming event.");
            Event::Other
        }
        Err(
            err @ rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_),
            )),
        ) => Event::TooLarge(err.to_string()),
        Err(err) => Event::Error(err.to_string()),
    }
}

fn from_v5(polled: Result<v5::Event, v5::ConnectionError>) -> Event {
    use v5::Event as E;
    use v5::mqttbytes::v5::Packet;
    match polled {
        Ok(E::Incoming(Packet::ConnAck(ack))) => Event::ConnAck {
            topic_alias_max: ack.properties.and_then(|p| p.topic_alias_max).unwrap_or(0),
        },
        Ok(E::Incoming(Packet::PubAck(ack))) => match ack.reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Event::PubAck(ack.pkid),
            reason => Event::PubRejected {
                pkid: ack.pkid,
                reason: format!("{reason:?}"),
            },
        },
        Ok(E::Incoming(Packet::Publish(p))) => Event::Message {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
            retained: p.retain,
        },
        Ok(E::Outgoing(o)) => outgoing(o),
        Ok(other) => {
            debug!(event = ?other, "MQTT incoming event.");
            Event::Other
        }
        Err(
            err @ v5::ConnectionError::MqttState(v5::StateError::Deserialization(
                v5::mqttbytes::Error::PayloadSizeLimitExceeded { .. },
            )),
        ) => Event::TooLarge(err.to_string()),
        Err(err) => Event::Error(err.to_string()),
    }
}

/// A Last Will: what the broker publishes for us when the connection ends without a
/// DISCONNECT. The JSON profile's is the retained "offline" status; Sparkplug's is the NDEATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Will {
    /// Full topic.
    pub(crate) topic: String,
    /// Payload bytes.
    pub(crate) payload: Vec<u8>,
    /// QoS the broker publishes it at.
    pub(crate) qos: QoS,
    /// Whether the broker retains it.
    pub(crate) retain: bool,
}

impl Will {
    fn v311(self) -> rumqttc::LastWill {
        rumqttc::LastWill::new(self.topic, self.payload, self.qos, self.retain)
    }

    fn v5(self) -> v5::mqttbytes::v5::LastWill {
        v5::mqttbytes::v5::LastWill::new(
            self.topic,
            self.payload,
            v5_qos(self.qos),
            self.retain,
            None,
        )
    }
}

/// What both protocols' options share, read once from the plan and its files.
struct Common {
    credentials: Option<(String, Secret)>,
    transport: Option<rumqttc::Transport>,
    will: Will,
}

impl Common {
    fn new(plan: &Mqtt, will: Will) -> Result<Self, MqttError> {
        let credentials = match &plan.username {
            Some(user) => {
                let password = match &plan.password {
                    Some(source) => super::read_password(source)?,
                    None => Secret(String::new()),
                };
                Some((user.clone(), password))
            }
            None => None,
        };
        let transport = match &plan.tls {
            Some(tls) => Some(super::tls_transport(tls)?),
            None => None,
        };
        Ok(Self {
            credentials,
            transport,
            will,
        })
    }
}

/// A client and its event loop for `plan.protocol`: fresh session, Last Will "offline",
/// credentials and TLS from the plan.
///
/// # Errors
/// [`MqttError`] when a password or TLS file cannot be read.
pub(crate) fn connect(plan: &Mqtt, now: Timestamp) -> Result<(Client, Events), MqttError> {
    let will = Will {
        topic: status_topic(plan),
        payload: json_v1::status(false, now),
        qos: QoS::AtLeastOnce,
        retain: true,
    };
    connect_with_will(plan, will)
}

/// As [`connect`], with the caller's Last Will (replace it before a reconnect with
/// [`Events::set_will`]).
///
/// The socket has `TCP_NODELAY` set. A command's PUBACK, its intent's audit row and its reply
/// are small writes a few milliseconds apart; with Nagle's algorithm each waited for the
/// broker's delayed ACK of the one before (40 ms on Linux), which was most of a write's round
/// trip. The outbox already batches a replay's publishes into one write.
///
/// # Errors
/// [`MqttError`] when a password or TLS file cannot be read.
pub(crate) fn connect_with_will(plan: &Mqtt, will: Will) -> Result<(Client, Events), MqttError> {
    let common = Common::new(plan, will)?;
    // A small request channel: the outbox, not rumqttc, holds the backlog.
    let cap = usize::from(plan.max_inflight) + 4;
    Ok(match plan.protocol {
        Protocol::V311 => {
            let (c, mut l) = rumqttc::AsyncClient::new(v311_options(plan, common), cap);
            // 3.1.1 keeps its socket options on the event loop, 5 on its MQTT options.
            let mut network = l.network_options();
            network.set_tcp_nodelay(true);
            l.set_network_options(network);
            (Client::V311(c), Events::V311(Box::new(l)))
        }
        Protocol::V5 => {
            let (c, l) = v5::AsyncClient::new(v5_options(plan, common), cap);
            (Client::V5(c), Events::V5(Box::new(l)))
        }
    })
}

fn v311_options(plan: &Mqtt, common: Common) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(&plan.client_id, &plan.host, plan.port);
    o.set_clean_session(true)
        .set_keep_alive(plan.keep_alive)
        .set_inflight(plan.max_inflight.max(1))
        .set_max_packet_size(MAX_PACKET as usize, MAX_PACKET as usize)
        .set_last_will(common.will.v311());
    if let Some((user, password)) = common.credentials {
        o.set_credentials(user, password.0);
    }
    if let Some(transport) = common.transport {
        o.set_transport(transport);
    }
    o
}

fn v5_options(plan: &Mqtt, common: Common) -> v5::MqttOptions {
    let mut o = v5::MqttOptions::new(&plan.client_id, &plan.host, plan.port);
    // No Session Expiry Interval: the broker drops the session when the connection ends.
    // rumqttc's v5 options assert a keep-alive of at least 5 s; the config enforces it too.
    o.set_clean_start(true)
        .set_keep_alive(plan.keep_alive.max(MIN_V5_KEEP_ALIVE))
        .set_outgoing_inflight_upper_limit(plan.max_inflight.max(1))
        .set_max_packet_size(Some(MAX_PACKET))
        .set_last_will(common.will.v5());
    let mut network = o.network_options();
    network.set_tcp_nodelay(true);
    o.set_network_options(network);
    if let Some((user, password)) = common.credentials {
        o.set_credentials(user, password.0);
    }
    if let Some(transport) = common.transport {
        o.set_transport(transport);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5 as p5;

    #[test]
    fn both_protocols_map_to_the_same_events() {
        let v4 = [
            from_v311(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(
                rumqttc::ConnAck::new(rumqttc::ConnectReturnCode::Success, false),
            )))),
            from_v311(Ok(rumqttc::Event::Outgoing(Outgoing::Publish(7)))),
            from_v311(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(
                rumqttc::PubAck::new(7),
            )))),
            from_v311(Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect))),
            from_v311(Ok(rumqttc::Event::Outgoing(Outgoing::PingReq))),
        ];
        let v5 = [
            from_v5(Ok(v5::Event::Incoming(p5::Packet::ConnAck(p5::ConnAck {
                session_present: false,
                code: p5::ConnectReturnCode::Success,
                properties: None,
            })))),
            from_v5(Ok(v5::Event::Outgoing(Outgoing::Publish(7)))),
            from_v5(Ok(v5::Event::Incoming(p5::Packet::PubAck(
                p5::PubAck::new(7, None),
            )))),
            from_v5(Ok(v5::Event::Outgoing(Outgoing::Disconnect))),
            from_v5(Ok(v5::Event::Outgoing(Outgoing::PingReq))),
        ];
        let expected = [
            Event::ConnAck { topic_alias_max: 0 },
            Event::OutgoingPublish(7),
            Event::PubAck(7),
            Event::OutgoingDisconnect,
            Event::Other,
        ];
        assert_eq!(v4, expected);
        assert_eq!(v5, expected);
    }

    #[test]
    fn an_mqtt5_connack_grants_the_topic_aliases_it_names() {
        let granted = from_v5(Ok(v5::Event::Incoming(p5::Packet::ConnAck(p5::ConnAck {
            session_present: false,
            code: p5::ConnectReturnCode::Success,
            properties: Some(p5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max: None,
                max_qos: None,
                retain_available: None,
                max_packet_size: None,
                assigned_client_identifier: None,
                topic_alias_max: Some(10),
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: None,
                shared_subscription_available: None,
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }))));
        assert_eq!(
            granted,
            Event::ConnAck {
                topic_alias_max: 10
            }
        );
    }

    #[test]
    fn an_mqtt5_puback_with_an_error_reason_is_not_a_delivery() {
        let mut ack = p5::PubAck::new(3, None);
        ack.reason = PubAckReason::NotAuthorized;
        assert_eq!(
            from_v5(Ok(v5::Event::Incoming(p5::Packet::PubAck(ack)))),
            Event::PubRejected {
                pkid: 3,
                reason: "NotAuthorized".into()
            }
        );
        let mut ack = p5::PubAck::new(4, None);
        ack.reason = PubAckReason::NoMatchingSubscribers;
        assert_eq!(
            from_v5(Ok(v5::Event::Incoming(p5::Packet::PubAck(ack)))),
            Event::PubAck(4),
            "no subscribers is still a delivery to the broker"
        );
    }

    fn plan(protocol: Protocol) -> Mqtt {
        Mqtt {
            name: crate::model::Name::new("mqtt").unwrap(),
            format: crate::sink::mqtt::spec::Format::Json,
            sparkplug: None,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "c".into(),
            topic_prefix: "p".into(),
            qos: 1,
            keep_alive: std::time::Duration::from_secs(30),
            max_inflight: 8,
            reconnect: (
                std::time::Duration::from_millis(1),
                std::time::Duration::from_millis(2),
            ),
            backfill_per_live: 1,
            username: None,
            password: None,
            tls: None,
            protocol,
            topic_aliases: false,
        }
    }

    fn will(payload: &[u8]) -> Will {
        Will {
            topic: "spBv1.0/g/NDEATH/n".into(),
            payload: payload.to_vec(),
            qos: QoS::AtLeastOnce,
            retain: false,
        }
    }

    #[test]
    fn the_callers_will_is_set_and_can_be_replaced_before_a_reconnect() {
        let (_c, mut events) = connect_with_will(&plan(Protocol::V311), will(b"1")).unwrap();
        let Events::V311(l) = &events else {
            panic!("3.1.1 asked for")
        };
        let w = l.mqtt_options.last_will().unwrap();
        assert_eq!(
            (w.topic.as_str(), &w.message[..], w.qos, w.retain),
            ("spBv1.0/g/NDEATH/n", &b"1"[..], QoS::AtLeastOnce, false)
        );
        events.set_will(will(b"2"));
        let Events::V311(l) = &events else {
            panic!("3.1.1 asked for")
        };
        assert_eq!(&l.mqtt_options.last_will().unwrap().message[..], b"2");

        let (_c, mut events) = connect_with_will(&plan(Protocol::V5), will(b"1")).unwrap();
        events.set_will(will(b"3"));
        let Events::V5(l) = &events else {
            panic!("5 asked for")
        };
        let w = l.options.last_will().unwrap();
        assert_eq!(
            (&w.message[..], w.qos, w.retain),
            (&b"3"[..], v5::mqttbytes::QoS::AtLeastOnce, false)
        );
    }

    #[test]
    fn a_connection_error_keeps_its_message() {
        let err = rumqttc::ConnectionError::Io(std::io::Error::other("refused"));
        assert_eq!(from_v311(Err(err)), Event::Error("I/O: refused".into()));
    }
}
