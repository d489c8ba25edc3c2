//! One edge node's Sparkplug session as a pure state machine: connection events, polls and
//! inbound messages go in (with the time), the messages to publish come out. No I/O, no clock.
//!
//! The life of a session:
//! 1. [`EdgeNode::connecting`] takes the next bdSeq and returns the NDEATH to set as the MQTT
//!    will; the caller persists [`EdgeNode::next_bd_seq`] before sending CONNECT, so a restart
//!    never reuses a bdSeq the broker may still hold a will for.
//! 2. [`EdgeNode::on_connected`] (after CONNACK and the [`EdgeNode::subscriptions`]) births at
//!    once, or, with a primary host configured, when its `STATE` says online.
//! 3. Births are NBIRTH (seq 0, `bdSeq`, `Node Control/Rebirth`) and one DBIRTH per device
//!    with every point's name, alias, datatype and latest value; then whatever was buffered
//!    goes out as DDATA with `is_historical` and the samples' own timestamps, oldest first;
//!    then live DDATA.
//! 4. While not born (broker down, or primary host offline or not yet heard from) polls are
//!    buffered, at most `buffer_limit` of them; the oldest is dropped and counted beyond that.
//!    Delivery is gated on the host's `STATE`, never on PUBACKs: births and data are QoS 0.
//! 5. An NCMD `Node Control/Rebirth` = true births again (same bdSeq, seq back to 0).
//!
//! `seq` runs 0–255 and wraps, counting every NBIRTH, DBIRTH and DDATA of the node.
//!
//! Two ways to feed it polls:
//! - in memory: [`EdgeNode::on_poll`] at any time; while not born, polls wait in the node's
//!   bounded buffer (`buffer_limit`) and go out as history after the next birth;
//! - from a persistent queue (what [`crate::sink::sparkplug`] does, with `buffer_limit = 0`):
//!   the caller reads polls only while [`EdgeNode::is_born`], hands those stored before the
//!   current birth to [`EdgeNode::on_historical`] and the rest to [`EdgeNode::on_poll`], and
//!   may [`EdgeNode::prime`] the node with the newest stored polls just before a birth so that
//!   the births declare current values rather than those from before an outage.
//!
//! Per point the node keeps three views: `current` (the newest reading, which a birth
//! declares), `reported` (what the host holds as current: the birth and live data; by exception
//! compares live polls against it) and `history` (the last value sent as history, which
//! historical polls are compared against). History never changes `reported`, so a value that
//! changed during an outage and then held still is still sent live once the outage is over.

use std::collections::{HashMap, VecDeque};

use prost::Message as _;

use crate::model::{DeviceId, PointId, Quality, SampleBatch, Timestamp};

use super::datatype::{Wire, to_wire};
use super::payload::{self, bd_seq_metric, birth_metric, data_metric, ms, rebirth_metric};
use super::proto::{DataType, Payload};
use super::topic::{HostState, Id, MessageType, StateError, Topic, TopicError};

/// How a device's polls become DDATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataMode {
    /// Only the metrics whose wire value (or null-ness) differs from what was last reported.
    #[default]
    ByException,
    /// Every metric of every poll.
    EveryPoll,
}

/// The MQTT QoS of an outgoing message (the sink maps it onto its client's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: births and data, which Sparkplug sends without broker acknowledgement.
    AtMostOnce,
    /// QoS 1: the NDEATH, and every subscription.
    AtLeastOnce,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its Sparkplug message type.
    pub kind: MessageType,
    /// The full topic.
    pub topic: String,
    /// The QoS to publish at.
    pub qos: Qos,
    /// Whether the broker should retain it (never, for an edge node in Sparkplug 3.0).
    pub retain: bool,
    /// The encoded protobuf payload.
    pub payload: Vec<u8>,
}

/// Who the edge node is and how it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The Sparkplug group.
    pub group_id: Id,
    /// This edge node's id within the group.
    pub edge_node_id: Id,
    /// The primary host application whose `STATE` gates births and data; `None` sends
    /// whenever connected.
    pub primary_host_id: Option<Id>,
    /// By exception or every poll.
    pub data_mode: DataMode,
    /// Polls kept while the data cannot be sent; the oldest is dropped beyond this.
    pub buffer_limit: usize,
    /// Whether DCMD and NCMD metric writes are carried out (`[mqtt.sparkplug] writes`).
    /// Sparkplug commands carry no signature: anyone who can publish on the node's command
    /// topics could write, so it is off unless the config says so.
    pub writes: bool,
}

/// A point as the birth declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    /// The metric name.
    pub name: PointId,
    /// Its Sparkplug datatype.
    pub datatype: DataType,
}

/// A device and its points, in config order.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// The device, also its Sparkplug device id.
    pub name: DeviceId,
    /// Its points; the DBIRTH lists them in this order.
    pub points: Vec<PointSpec>,
}

/// Why an inbound message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The topic is not a Sparkplug B topic.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The primary host's `STATE` payload is not the 3.0 JSON.
    #[error(transparent)]
    State(#[from] StateError),
    /// An NCMD payload is not a Sparkplug B protobuf.
    #[error("NCMD payload is not a Sparkplug B payload")]
    Payload(#[source] prost::DecodeError),
    /// The primary host's `STATE` carries a timestamp too far ahead of this gateway's clock
    /// to be real: taking it would make every later, true `STATE` look stale.
    #[error(
        "STATE timestamp {timestamp} is {lead_ms} ms ahead of this gateway's clock (at most \
         {MAX_STATE_LEAD_MS} allowed); ignored. If the host is genuine, check both clocks"
    )]
    FutureState {
        /// The timestamp as sent.
        timestamp: u64,
        /// How far ahead of `now` it is, ms.
        lead_ms: u64,
    },
}

/// How far ahead of the gateway's clock a `STATE` timestamp may be (10 minutes): room for
/// clocks that disagree a little, and no more, so that a spoofed far-future `STATE` cannot
/// make the host's real ones stale.
pub const MAX_STATE_LEAD_MS: u64 = 10 * 60 * 1000;

/// The shortest time between two births on request (5 s): a host asks when it saw a gap,
/// and one birth answers every request made within the interval after it; 300 requests once
/// made 288 births in 10 s.
pub const MIN_REBIRTH_INTERVAL_MS: i64 = 5_000;

#[derive(Debug, Clone)]
struct Reading {
    ts: Timestamp,
    wire: Option<Wire>,
}

#[derive(Debug)]
struct PointState {
    spec: PointSpec,
    alias: u64,
    /// The latest sample, which the next DBIRTH declares.
    current: Option<Reading>,
    /// What the host has last been given (live or buffered); `Some(None)` is a reported null.
    reported: Option<Option<Wire>>,
    /// What the host has last been given as history since the last birth (seeded with what it
    /// held before that birth); compared against by [`EdgeNode::on_historical`].
    history: Option<Option<Wire>>,
}

#[derive(Debug)]
struct DeviceState {
    name: DeviceId,
    topic_id: Id,
    points: Vec<PointState>,
    index: HashMap<PointId, usize>,
}

/// One poll's reported metrics, kept while they cannot be sent.
#[derive(Debug)]
struct Buffered {
    device: usize,
    readings: Vec<(usize, Reading)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    Connecting { bd_seq: u8 },
    Up { bd_seq: u8 },
}

/// One edge node's Sparkplug B session (see the module docs).
#[derive(Debug)]
pub struct EdgeNode {
    config: NodeConfig,
    devices: Vec<DeviceState>,
    by_name: HashMap<DeviceId, usize>,
    next_bd_seq: u8,
    link: Link,
    /// The primary host's last `online`; `None` until heard on this connection.
    host_online: Option<bool>,
    /// The newest `STATE` timestamp seen, kept across reconnects to reject stale ones.
    host_seen: Option<u64>,
    born: bool,
    /// When the last birth on request was made, to rate-limit rebirth requests.
    last_rebirth: Option<Timestamp>,
    seq: u8,
    backlog: VecDeque<Buffered>,
    dropped: u64,
}

impl EdgeNode {
    /// A node for `devices`, whose next connection will use bdSeq `next_bd_seq` (as persisted
    /// by the last run; 0 on first start).
    ///
    /// Aliases are numbered from 1 in config order (device by device, point by point), so the
    /// same config gives every `(device, point)` the same alias in every session and run; 0 is
    /// avoided because decoders that treat the schema as proto3 read it as "no alias".
    pub fn new(config: NodeConfig, devices: &[DeviceSpec], next_bd_seq: u8) -> Self {
        let mut alias = 0u64;
        let devices: Vec<DeviceState> = devices
            .iter()
            .map(|d| DeviceState {
                name: d.name.clone(),
                topic_id: Id::from(&d.name),
                index: d
                    .points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.name.clone(), i))
                    .collect(),
                points: d
                    .points
                    .iter()
                    .map(|p| {
                        alias += 1;
                        PointState {
                            spec: p.clone(),
                            alias,
                            current: None,
                            reported: None,
                            history: None,
                        }
                    })
                    .collect(),
            })
            .collect();
        let by_name = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        Self {
            config,
            devices,
            by_name,
            next_bd_seq,
            link: Link::Down,
            host_online: None,
            host_seen: None,
            born: false,
            last_rebirth: None,
            seq: 0,
            backlog: VecDeque::new(),
            dropped: 0,
        }
    }

    /// The bdSeq the next connection will use: persist it after [`EdgeNode::connecting`].
    pub fn next_bd_seq(&self) -> u8 {
        self.next_bd_seq
    }

    /// The bdSeq of the current (or pending) connection.
    pub fn bd_seq(&self) -> Option<u8> {
        match self.link {
            Link::Down => None,
            Link::Connecting { bd_seq } | Link::Up { bd_seq } => Some(bd_seq),
        }
    }

    /// Whether births have gone out on this connection and data is sent live.
    pub fn is_born(&self) -> bool {
        self.born
    }

    /// Polls waiting for the next birth.
    pub fn buffered(&self) -> usize {
        self.backlog.len()
    }

    /// Buffered polls dropped (oldest first) because the buffer was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The alias of `device/point`, if the node has it.
    pub fn alias(&self, device: &str, point: &str) -> Option<u64> {
        let d = self.devices.iter().find(|d| d.name.as_str() == device)?;
        d.points
            .iter()
            .find(|p| p.spec.name.as_str() == point)
            .map(|p| p.alias)
    }

    /// Who the node is and how it reports.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The device, point and declared datatype a command metric names: by `alias` (unique
    /// across the node; within `device` when given), else by `name` within `device` (a DCMD)
    /// or as `{device}/{point}` (an NCMD, `device` is `None`).
    pub(super) fn command_target(
        &self,
        device: Option<&Id>,
        name: Option<&str>,
        alias: Option<u64>,
    ) -> Option<(DeviceId, PointId, DataType)> {
        let devices = self
            .devices
            .iter()
            .filter(|d| device.is_none_or(|id| *id == d.topic_id));
        let found = |d: &DeviceState, p: &PointState| {
            Some((d.name.clone(), p.spec.name.clone(), p.spec.datatype))
        };
        if let Some(alias) = alias {
            for d in devices {
                if let Some(p) = d.points.iter().find(|p| p.alias == alias) {
                    return found(d, p);
                }
            }
            return None;
        }
        let name = name?;
        for d in devices {
            let point = match device {
                Some(_) => name,
                None => match name
                    .strip_prefix(d.name.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                {
                    Some(point) => point,
                    None => continue,
                },
            };
            if let Some(p) = d.points.iter().find(|p| p.spec.name.as_str() == point) {
                return found(d, p);
            }
        }
        None
    }

    /// The topics to subscribe to (all at QoS 1, as Sparkplug requires) after CONNACK:
    /// this node's NCMD, its devices' DCMD, and the primary host's `STATE`.
    pub fn subscriptions(&self) -> Vec<(String, Qos)> {
        let c = &self.config;
        let mut out = vec![
            (
                self.topic(MessageType::NCmd, None).to_string(),
                Qos::AtLeastOnce,
            ),
            (
                format!(
                    "{}/+",
                    Topic::edge(&c.group_id, MessageType::DCmd, &c.edge_node_id, None)
                ),
                Qos::AtLeastOnce,
            ),
        ];
        if let Some(host) = &c.primary_host_id {
            out.push((
                Topic::State {
                    host_id: host.clone(),
                }
                .to_string(),
                Qos::AtLeastOnce,
            ));
        }
        out
    }

    /// A new MQTT connection is about to be made: takes the next bdSeq and returns the NDEATH
    /// to set as its will (QoS 1, not retained), carrying the bdSeq its NBIRTH will carry.
    pub fn connecting(&mut self) -> Message {
        let bd_seq = self.take_bd_seq();
        self.link = Link::Connecting { bd_seq };
        self.born = false;
        self.host_online = None;
        self.ndeath(bd_seq, None)
    }

    /// The broker accepted the connection (and the subscriptions are in place): births now,
    /// unless a primary host must first be seen online.
    pub fn on_connected(&mut self, now: Timestamp) -> Vec<Message> {
        let bd_seq = match self.link {
            Link::Connecting { bd_seq } | Link::Up { bd_seq } => bd_seq,
            // Connected without a will: still give the session a fresh bdSeq.
            Link::Down => self.take_bd_seq(),
        };
        self.link = Link::Up { bd_seq };
        if self.gate_open() {
            self.birth(now)
        } else {
            Vec::new()
        }
    }

    /// The connection is gone: from now on polls are buffered until the next birth.
    pub fn on_connection_lost(&mut self) {
        self.link = Link::Down;
        self.born = false;
        self.host_online = None;
    }

    /// A clean shutdown: the NDEATH to publish (QoS 1, with its send time) before
    /// disconnecting, if connected.
    pub fn shutdown(&mut self, now: Timestamp) -> Option<Message> {
        let Link::Up { bd_seq } = self.link else {
            self.on_connection_lost();
            return None;
        };
        self.on_connection_lost();
        Some(self.ndeath(bd_seq, Some(now)))
    }

    /// One device poll: a DDATA when born and something is to be reported, otherwise the
    /// poll is buffered. Samples of unknown devices or points are ignored (the birth did not
    /// declare them).
    ///
    /// Quality: a bad sample is sent as `is_null` with no value; good and uncertain samples
    /// send their value (Sparkplug's metric has no field for "held from an earlier poll").
    pub fn on_poll(&mut self, batch: &SampleBatch, now: Timestamp) -> Vec<Message> {
        let Some(&d) = self.by_name.get(&batch.device) else {
            return Vec::new();
        };
        let every_poll = self.config.data_mode == DataMode::EveryPoll;
        let device = &mut self.devices[d];
        let mut readings = Vec::with_capacity(batch.samples.len());
        for sample in &batch.samples {
            let Some(&p) = device.index.get(&sample.point) else {
                continue;
            };
            let point = &mut device.points[p];
            let reading = reading(point, sample);
            point.current = Some(reading.clone());
            if every_poll || point.reported.as_ref() != Some(&reading.wire) {
                point.reported = Some(reading.wire.clone());
                readings.push((p, reading));
            }
        }
        if readings.is_empty() {
            return Vec::new();
        }
        if self.born {
            vec![self.ddata(d, &readings, false, now)]
        } else {
            if self.config.buffer_limit == 0 {
                self.dropped += 1;
                return Vec::new();
            }
            if self.backlog.len() >= self.config.buffer_limit {
                self.backlog.pop_front();
                self.dropped += 1;
            }
            self.backlog.push_back(Buffered {
                device: d,
                readings,
            });
            Vec::new()
        }
    }

    /// The value a command wrote, as read back: a DDATA carrying it whether or not it differs
    /// from what the host holds (the host that wrote waits for it), and the value the next
    /// birth declares. `None` when not born (the next birth declares it) or for an unknown
    /// device.
    pub fn on_written(&mut self, batch: &SampleBatch, now: Timestamp) -> Option<Message> {
        let &d = self.by_name.get(&batch.device)?;
        let born = self.born;
        let device = &mut self.devices[d];
        let mut readings = Vec::with_capacity(batch.samples.len());
        for sample in &batch.samples {
            let Some(&p) = device.index.get(&sample.point) else {
                continue;
            };
            let point = &mut device.points[p];
            let reading = reading(point, sample);
            point.current = Some(reading.clone());
            if born {
                point.reported = Some(reading.wire.clone());
            }
            readings.push((p, reading));
        }
        if readings.is_empty() || !born {
            return None;
        }
        Some(self.ddata(d, &readings, false, now))
    }

    /// A poll taken from a persistent queue that was stored before the current birth: a DDATA
    /// whose metrics carry `is_historical` and the samples' own timestamps, or `None` when
    /// nothing is to be sent (not born, unknown device, or by exception nothing changed since
    /// the last history sent). It updates the value the next birth declares only if it is
    /// newer than what the node already has, and never what the host holds as current, so
    /// live polls are still compared against the birth.
    pub fn on_historical(&mut self, batch: &SampleBatch, now: Timestamp) -> Option<Message> {
        if !self.born {
            return None;
        }
        let &d = self.by_name.get(&batch.device)?;
        let every_poll = self.config.data_mode == DataMode::EveryPoll;
        let device = &mut self.devices[d];
        let mut readings = Vec::with_capacity(batch.samples.len());
        for sample in &batch.samples {
            let Some(&p) = device.index.get(&sample.point) else {
                continue;
            };
            let point = &mut device.points[p];
            let reading = reading(point, sample);
            if point.current.as_ref().is_none_or(|c| c.ts <= reading.ts) {
                point.current = Some(reading.clone());
            }
            if every_poll || point.history.as_ref() != Some(&reading.wire) {
                point.history = Some(reading.wire.clone());
                readings.push((p, reading));
            }
        }
        if readings.is_empty() {
            return None;
        }
        Some(self.ddata(d, &readings, true, now))
    }

    /// Records a stored poll as the latest value of its points without sending anything, so
    /// that the next birth declares it. Feed polls oldest first: the last one wins.
    pub fn prime(&mut self, batch: &SampleBatch) {
        let Some(&d) = self.by_name.get(&batch.device) else {
            return;
        };
        let device = &mut self.devices[d];
        for sample in &batch.samples {
            if let Some(&p) = device.index.get(&sample.point) {
                let point = &mut device.points[p];
                point.current = Some(reading(point, sample));
            }
        }
    }

    /// A message on one of the [`EdgeNode::subscriptions`]: the primary host's `STATE` or an
    /// NCMD. Anything else (another host's `STATE`, a DCMD, another node's topics) is ignored.
    ///
    /// # Errors
    /// [`InboundError`] when the topic or a payload we act on cannot be read; the session is
    /// unchanged then.
    pub fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
    ) -> Result<Vec<Message>, InboundError> {
        match Topic::parse(topic)? {
            Topic::State { host_id } if Some(&host_id) == self.config.primary_host_id.as_ref() => {
                let state = HostState::parse(payload)?;
                let lead_ms = state.timestamp.saturating_sub(ms(now));
                if lead_ms > MAX_STATE_LEAD_MS {
                    return Err(InboundError::FutureState {
                        timestamp: state.timestamp,
                        lead_ms,
                    });
                }
                Ok(self.on_host_state(state, now))
            }
            Topic::Edge {
                group_id,
                message_type: MessageType::NCmd,
                edge_node_id,
                ..
            } if group_id == self.config.group_id && edge_node_id == self.config.edge_node_id => {
                let ncmd = Payload::decode(payload).map_err(InboundError::Payload)?;
                // A rebirth while the gate is shut would be premature: the birth follows the
                // primary host's return anyway.
                // One birth answers every request made within the interval after it.
                let recent = self
                    .last_rebirth
                    .is_some_and(|at| now.0.saturating_sub(at.0) < MIN_REBIRTH_INTERVAL_MS);
                if payload::is_rebirth_request(&ncmd) && self.born && !recent {
                    self.last_rebirth = Some(now);
                    Ok(self.birth(now))
                } else {
                    Ok(Vec::new())
                }
            }
            Topic::State { .. } | Topic::Edge { .. } => Ok(Vec::new()),
        }
    }

    /// The primary host's state as last heard on this connection: `None` before its first
    /// `STATE` (or without a primary host configured).
    pub fn host_online(&self) -> Option<bool> {
        self.host_online
    }

    fn on_host_state(&mut self, state: HostState, now: Timestamp) -> Vec<Message> {
        if self.host_seen.is_some_and(|seen| state.timestamp < seen) {
            // A retained or delayed STATE older than one already seen says nothing current.
            return Vec::new();
        }
        self.host_seen = Some(state.timestamp);
        self.host_online = Some(state.online);
        if !state.online {
            self.born = false;
            return Vec::new();
        }
        if matches!(self.link, Link::Up { .. }) && !self.born {
            self.birth(now)
        } else {
            Vec::new()
        }
    }

    fn take_bd_seq(&mut self) -> u8 {
        let bd_seq = self.next_bd_seq;
        self.next_bd_seq = bd_seq.wrapping_add(1);
        bd_seq
    }

    /// The NDEATH: QoS 1 because a host must not miss a death, not retained (Sparkplug 3.0).
    fn ndeath(&self, bd_seq: u8, ts: Option<Timestamp>) -> Message {
        Message {
            kind: MessageType::NDeath,
            topic: self.topic(MessageType::NDeath, None).to_string(),
            qos: Qos::AtLeastOnce,
            retain: false,
            payload: payload::ndeath(bd_seq, ts),
        }
    }

    fn gate_open(&self) -> bool {
        self.config.primary_host_id.is_none() || self.host_online == Some(true)
    }

    fn topic(&self, kind: MessageType, device: Option<&Id>) -> Topic {
        Topic::edge(
            &self.config.group_id,
            kind,
            &self.config.edge_node_id,
            device,
        )
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        u64::from(seq)
    }

    fn message(&self, kind: MessageType, device: Option<&Id>, payload: &Payload) -> Message {
        Message {
            kind,
            topic: self.topic(kind, device).to_string(),
            qos: Qos::AtMostOnce,
            retain: false,
            payload: payload.encode_to_vec(),
        }
    }

    /// NBIRTH, every DBIRTH, then the backlog as historical DDATA.
    fn birth(&mut self, now: Timestamp) -> Vec<Message> {
        let Link::Up { bd_seq } = self.link else {
            return Vec::new();
        };
        self.seq = 0;
        let mut out = Vec::with_capacity(1 + self.devices.len() + self.backlog.len());
        let nbirth = Payload {
            timestamp: Some(ms(now)),
            seq: Some(self.next_seq()),
            metrics: vec![bd_seq_metric(bd_seq, Some(now)), rebirth_metric(now)],
            ..Payload::default()
        };
        out.push(self.message(MessageType::NBirth, None, &nbirth));
        for d in 0..self.devices.len() {
            let seq = self.next_seq();
            let device = &mut self.devices[d];
            let metrics = device
                .points
                .iter_mut()
                .map(|p| {
                    let wire = p.current.as_ref().and_then(|r| r.wire.clone());
                    let ts = p.current.as_ref().map_or(now, |r| r.ts);
                    // What the host held before this birth is where its history resumes.
                    p.history = p.reported.replace(wire.clone());
                    birth_metric(
                        p.spec.name.as_str(),
                        p.alias,
                        p.spec.datatype,
                        ts,
                        wire.as_ref(),
                    )
                })
                .collect();
            let dbirth = Payload {
                timestamp: Some(ms(now)),
                seq: Some(seq),
                metrics,
                ..Payload::default()
            };
            let topic_id = self.devices[d].topic_id.clone();
            out.push(self.message(MessageType::DBirth, Some(&topic_id), &dbirth));
        }
        self.born = true;
        while let Some(b) = self.backlog.pop_front() {
            out.push(self.ddata(b.device, &b.readings, true, now));
        }
        out
    }

    fn ddata(
        &mut self,
        d: usize,
        readings: &[(usize, Reading)],
        historical: bool,
        now: Timestamp,
    ) -> Message {
        let seq = self.next_seq();
        let device = &self.devices[d];
        let metrics = readings
            .iter()
            .map(|(p, r)| data_metric(device.points[*p].alias, r.ts, r.wire.as_ref(), historical))
            .collect();
        let ddata = Payload {
            timestamp: Some(ms(now)),
            seq: Some(seq),
            metrics,
            ..Payload::default()
        };
        self.message(MessageType::DData, Some(&device.topic_id), &ddata)
    }
}

/// A sample as the wire sees it: bad quality, and values the datatype cannot hold, are null.
fn reading(point: &PointState, sample: &crate::model::PointSample) -> Reading {
    let wire = match sample.quality {
        Quality::Bad(_) => None,
        Quality::Good | Quality::Uncertain(_) => sample
            .value
            .as_ref()
            .and_then(|v| to_wire(point.spec.datatype, v)),
    };
    Reading {
        ts: sample.ts,
        wire,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Codec, DataType as PointType};
    use crate::model::{BadReason, Name, PointSample, UncertainReason, Value};
    use crate::sparkplug::datatype_of;
    use crate::sparkplug::proto::payload::Metric;
    use crate::sparkplug::proto::payload::metric::Value as PV;

    const T0: i64 = 1_700_000_000_000;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn id(s: &str) -> Id {
        Id::new(s).unwrap()
    }

    fn config(primary: Option<&str>, mode: DataMode, limit: usize) -> NodeConfig {
        NodeConfig {
            group_id: id("plant"),
            edge_node_id: id("gw-01"),
            primary_host_id: primary.map(id),
            data_mode: mode,
            buffer_limit: limit,
            writes: false,
        }
    }

    /// The golden device: one point of each shape worth telling apart on the wire.
    fn meter() -> DeviceSpec {
        let point = |name: &str, codec: Codec| PointSpec {
            name: n(name),
            datatype: datatype_of(&codec),
        };
        DeviceSpec {
            name: n("main-meter"),
            points: vec![
                point(
                    "ua",
                    Codec {
                        scale: 0.1,
                        ..Codec::plain(PointType::U16)
                    },
                ),
                point("run", Codec::plain(PointType::Bool)),
                point("ep", Codec::plain(PointType::U32)),
                point("temp", Codec::plain(PointType::I16)),
                point("pf", Codec::plain(PointType::F32)),
                point("model", Codec::plain(PointType::String)),
                point("fault", Codec::plain(PointType::U16)),
            ],
        }
    }

    fn sample(point: &str, ts: i64, value: Option<Value>, quality: Quality) -> PointSample {
        PointSample {
            point: n(point),
            ts: Timestamp(ts),
            value,
            quality,
        }
    }

    fn good(point: &str, ts: i64, value: Value) -> PointSample {
        sample(point, ts, Some(value), Quality::Good)
    }

    fn batch(device: &str, tick: i64, samples: Vec<PointSample>) -> SampleBatch {
        SampleBatch {
            device: n(device),
            tick: Timestamp(tick),
            samples,
        }
    }

    fn poll1() -> SampleBatch {
        let t = T0 + 1_000;
        batch(
            "main-meter",
            t,
            vec![
                good("ua", t + 12, Value::F64(231.4)),
                good("run", t + 12, Value::Bool(true)),
                good("ep", t + 15, Value::I64(123_456)),
                good("temp", t + 15, Value::I64(-12)),
                good("pf", t + 15, Value::F64(f64::from(0.95f32))),
                good("model", t + 18, Value::Str("DTSU666".into())),
                sample("fault", t + 18, None, Quality::Bad(BadReason::Timeout)),
            ],
        )
    }

    fn poll2() -> SampleBatch {
        let t = T0 + 3_000;
        batch(
            "main-meter",
            t,
            vec![
                good("ua", t + 11, Value::F64(231.9)),
                good("run", t + 11, Value::Bool(true)),
                good("ep", t + 14, Value::I64(123_457)),
                good("temp", t + 14, Value::I64(-12)),
                good("pf", t + 14, Value::F64(f64::from(0.95f32))),
                good("model", t + 17, Value::Str("DTSU666".into())),
                sample("fault", t + 17, None, Quality::Bad(BadReason::Timeout)),
            ],
        )
    }

    fn decode(m: &Message) -> Payload {
        Payload::decode(m.payload.as_slice()).unwrap()
    }

    fn seqs(out: &[Message]) -> Vec<u64> {
        out.iter().map(|m| decode(m).seq.unwrap()).collect()
    }

    fn kinds(out: &[Message]) -> Vec<MessageType> {
        out.iter().map(|m| m.kind).collect()
    }

    fn ncmd_rebirth() -> Vec<u8> {
        Payload {
            timestamp: Some(1),
            metrics: vec![Metric {
                name: Some(payload::REBIRTH.into()),
                datatype: Some(DataType::Boolean as u32),
                value: Some(PV::BooleanValue(true)),
                ..Metric::default()
            }],
            ..Payload::default()
        }
        .encode_to_vec()
    }

    fn state(online: bool, ts: u64) -> Vec<u8> {
        HostState {
            online,
            timestamp: ts,
        }
        .to_json()
    }

    /// The golden session: connect, poll, rebirth, poll. Returns the NBIRTH and DBIRTH of the
    /// rebirth and the DDATA of the second poll.
    fn golden_session() -> (Message, Message, Message) {
        let mut node = EdgeNode::new(config(None, DataMode::ByException, 16), &[meter()], 7);
        node.connecting();
        assert_eq!(
            kinds(&node.on_connected(Timestamp(T0))),
            [MessageType::NBirth, MessageType::DBirth]
        );
        assert_eq!(node.on_poll(&poll1(), Timestamp(T0 + 1_020)).len(), 1);
        let births = node
            .on_message(
                "spBv1.0/plant/NCMD/gw-01",
                &ncmd_rebirth(),
                Timestamp(T0 + 2_000),
            )
            .unwrap();
        let [nbirth, dbirth] = <[Message; 2]>::try_from(births).unwrap();
        let [ddata] =
            <[Message; 1]>::try_from(node.on_poll(&poll2(), Timestamp(T0 + 3_020))).unwrap();
        (nbirth, dbirth, ddata)
    }

    #[test]
    fn nbirth_declares_bd_seq_and_the_rebirth_control_at_seq_0() {
        let (nbirth, _, _) = golden_session();
        assert_eq!(nbirth.topic, "spBv1.0/plant/NBIRTH/gw-01");
        assert_eq!((nbirth.qos, nbirth.retain), (Qos::AtMostOnce, false));
        let t = T0 as u64 + 2_000;
        let p = decode(&nbirth);
        assert_eq!(
            p,
            Payload {
                timestamp: Some(t),
                seq: Some(0),
                metrics: vec![
                    Metric {
                        name: Some("bdSeq".into()),
                        timestamp: Some(t),
                        datatype: Some(4),
                        value: Some(PV::LongValue(7)),
                        ..Metric::default()
                    },
                    Metric {
                        name: Some("Node Control/Rebirth".into()),
                        timestamp: Some(t),
                        datatype: Some(11),
                        value: Some(PV::BooleanValue(false)),
                        ..Metric::default()
                    },
                ],
                uuid: None,
                body: None,
            }
        );
    }

    #[test]
    fn dbirth_declares_every_point_with_alias_datatype_and_latest_value() {
        let (_, dbirth, _) = golden_session();
        assert_eq!(dbirth.topic, "spBv1.0/plant/DBIRTH/gw-01/main-meter");
        assert_eq!((dbirth.qos, dbirth.retain), (Qos::AtMostOnce, false));
        let t = T0 as u64 + 1_000;
        let m = |name: &str, alias, ts: u64, datatype: DataType, value: Option<PV>| Metric {
            name: Some(name.into()),
            alias: Some(alias),
            timestamp: Some(ts),
            datatype: Some(datatype as u32),
            is_null: value.is_none().then_some(true),
            value,
            ..Metric::default()
        };
        assert_eq!(
            decode(&dbirth),
            Payload {
                timestamp: Some(T0 as u64 + 2_000),
                seq: Some(1),
                metrics: vec![
                    m(
                        "ua",
                        1,
                        t + 12,
                        DataType::Double,
                        Some(PV::DoubleValue(231.4))
                    ),
                    m(
                        "run",
                        2,
                        t + 12,
                        DataType::Boolean,
                        Some(PV::BooleanValue(true))
                    ),
                    m(
                        "ep",
                        3,
                        t + 15,
                        DataType::UInt32,
                        Some(PV::IntValue(123_456))
                    ),
                    m(
                        "temp",
                        4,
                        t + 15,
                        DataType::Int16,
                        Some(PV::IntValue(0xFFF4))
                    ),
                    m("pf", 5, t + 15, DataType::Float, Some(PV::FloatValue(0.95))),
                    m(
                        "model",
                        6,
                        t + 18,
                        DataType::String,
                        Some(PV::StringValue("DTSU666".into()))
                    ),
                    m("fault", 7, t + 18, DataType::UInt16, None),
                ],
                uuid: None,
                body: None,
            }
        );
    }

    #[test]
    fn ddata_by_exception_carries_only_changed_metrics_by_alias() {
        let (_, _, ddata) = golden_session();
        assert_eq!(ddata.topic, "spBv1.0/plant/DDATA/gw-01/main-meter");
        assert_eq!((ddata.qos, ddata.retain), (Qos::AtMostOnce, false));
        let t = T0 as u64 + 3_000;
        let m = |alias, ts, value| Metric {
            alias: Some(alias),
            timestamp: Some(ts),
            value: Some(value),
            ..Metric::default()
        };
        assert_eq!(
            decode(&ddata),
            Payload {
                timestamp: Some(t + 20),
                seq: Some(2),
                metrics: vec![
                    m(1, t + 11, PV::DoubleValue(231.9)),
                    m(3, t + 14, PV::IntValue(123_457)),
                ],
                uuid: None,
                body: None,
            }
        );
    }

    /// The golden payloads as hex, one line each; `BLESS=1` rewrites them from this code (then
    /// review the diff, and `tests/fixtures/sparkplug/manifest.json`, by hand).
    #[test]
    fn payloads_match_their_hex_goldens() {
        let (nbirth, dbirth, ddata) = golden_session();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sparkplug");
        for (name, m) in [("nbirth", nbirth), ("dbirth", dbirth), ("ddata", ddata)] {
            let hex: String = m.payload.iter().map(|b| format!("{b:02x}")).collect();
            let path = dir.join(format!("{name}.hex"));
            if std::env::var_os("BLESS").is_some() {
                std::fs::write(&path, format!("{hex}\n")).unwrap();
            }
            let golden = std::fs::read_to_string(&path).unwrap();
            assert_eq!(hex, golden.trim_end(), "{name}");
        }
    }

    #[test]
    fn the_will_is_an_ndeath_at_qos_1_with_the_bd_seq_of_the_next_nbirth() {
        let mut node = EdgeNode::new(config(None, DataMode::ByException, 16), &[meter()], 41);
        let will = node.connecting();
        assert_eq!(will.kind, MessageType::NDeath);
        assert_eq!(will.topic, "spBv1.0/plant/NDEATH/gw-01");
        assert_eq!((will.qos, will.retain), (Qos::AtLeastOnce, false));
        let death = decode(&will);
        assert_eq!(death.seq, None);
        assert_eq!(death.metrics[0].value, Some(PV::LongValue(41)));
        assert_eq!(node.next_bd_seq(), 42, "persist this before CONNECT");
        let out = node.on_connected(Timestamp(T0));
        assert_eq!(decode(&out[0]).metrics[0].value, Some(PV::LongValue(41)));
        assert!(
            out.iter()
                .all(|m| (m.qos, m.retain) == (Qos::AtMostOnce, false))
        );
    }

    #[test]
    fn bd_seq_continues_over_a_restart_and_wraps_after_255() {
        let bd_of = |m: &Message| decode(m).metrics[0].value.clone();
        // First run: two connections, then the process dies; what it persisted survives.
        let mut first = EdgeNode::new(config(None, DataMode::ByException, 16), &[meter()], 254);
        assert_eq!(bd_of(&first.connecting()), Some(PV::LongValue(254)));
        first.on_connected(Timestamp(T0));
        first.on_connection_lost();
        assert_eq!(bd_of(&first.connecting()), Some(PV::LongValue(255)));
        let births = first.on_connected(Timestamp(T0 + 1));
        assert_eq!(bd_of(&births[0]), Some(PV::LongValue(255)));
        let persisted = first.next_bd_seq();
        assert_eq!(persisted, 0, "bdSeq wraps 255 -> 0");
        drop(first);
        // Second run, from the persisted value: will and NBIRTH agree and continue the count.
        let mut second = EdgeNode::new(
            config(None, DataMode::ByException, 16),
            &[meter()],
            persisted,
        );
        assert_eq!(bd_of(&second.connecting()), Some(PV::LongValue(0)));
        let births = second.on_connected(Timestamp(T0 + 2));
        assert_eq!(bd_of(&births[0]), Some(PV::LongValue(0)));
        assert_eq!(second.bd_seq(), Some(0));
        // A clean shutdown publishes the same bdSeq itself, with its send time.
        let death = second.shutdown(Timestamp(T0 + 3)).unwrap();
        assert_eq!(
            (death.kind, death.qos),
            (MessageType::NDeath, Qos::AtLeastOnce)
        );
        assert_eq!(bd_of(&death), Some(PV::LongValue(0)));
        assert_eq!(decode(&death).timestamp, Some(T0 as u64 + 3));
        assert_eq!(second.shutdown(Timestamp(T0 + 4)), None, "already down");
    }

    #[test]
    fn seq_counts_every_birth_and_data_message_and_wraps_at_255() {
        let mut node = EdgeNode::new(config(None, DataMode::EveryPoll, 16), &[meter()], 0);
        node.connecting();
        let mut all = node.on_connected(Timestamp(T0));
        for i in 0..300 {
            all.extend(node.on_poll(&poll1(), Timestamp(T0 + i)));
        }
        let seqs = seqs(&all);
        assert_eq!(seqs.len(), 302);
        let expected: Vec<u64> = (0..302u64).map(|i| i % 256).collect();
        assert_eq!(seqs, expected);
        assert_eq!(decode(&all[255]).seq, Some(255));
        assert_eq!(decode(&all[256]).seq, Some(0));
        assert_eq!(all[256].kind, MessageType::DData, "the wrap is not a birth");
    }

    #[test]
    fn issue_20_a_flood_of_rebirth_requests_makes_one_birth_per_interval() {
        let mut node = EdgeNode::new(config(None, DataMode::ByException, 16), &[meter()], 3);
        node.connecting();
        node.on_connected(Timestamp(T0));
        let ncmd = "spBv1.0/plant/NCMD/gw-01";
        // 300 requests over 10 s.
        let births = (0..300)
            .map(|i| {
                let out = node
                    .on_message(ncmd, &ncmd_rebirth(), Timestamp(T0 + 1 + i * 33))
                    .unwrap();
                out.iter().filter(|m| m.kind == MessageType::NBirth).count()
            })
            .sum::<usize>();
        assert_eq!(births, 2, "one at the first request, one 5 s later");
    }

    #[test]
    fn issue_20_a_far_future_state_is_refused_and_the_real_host_still_counts() {
        let mut node = EdgeNode::new(
            config(Some("scada"), DataMode::EveryPoll, 16),
            &[meter()],
            0,
        );
        let topic = "spBv1.0/STATE/scada";
        node.connecting();
        assert!(
            node.on_connected(Timestamp(T0)).is_empty(),
            "gated on the host"
        );
        let now = Timestamp(T0 + 1_000);
        let births = node
            .on_message(topic, &state(true, T0 as u64), now)
            .unwrap();
        assert_eq!(kinds(&births), [MessageType::NBirth, MessageType::DBirth]);
        // The spoof: offline, stamped at the end of time.
        let spoof = node.on_message(topic, &state(false, u64::MAX), now);
        assert!(
            matches!(spoof, Err(InboundError::FutureState { .. })),
            "{spoof:?}"
        );
        assert_eq!(node.host_online(), Some(true), "the spoof changed nothing");
        assert_eq!(
            node.on_poll(&poll1(), Timestamp(T0 + 2_000)).len(),
            1,
            "data flows"
        );
        // Just inside the allowed lead is a real STATE.
        let lead = MAX_STATE_LEAD_MS - 1;
        node.on_message(
            topic,
            &state(false, T0 as u64 + 2_000 + lead),
            Timestamp(T0 + 2_000),
        )
        .unwrap();
        assert_eq!(node.host_online(), Some(false));
        let text = InboundError::FutureState {
            timestamp: u64::MAX,
            lead_ms: 1,
        }
        .to_string();
        assert!(text.contains("ahead of this gateway's clock"), "{text}");
    }

    #[test]
    fn a_rebirth_command_restarts_seq_at_0_with_the_same_bd_seq() {
        let mut node = EdgeNode::new(config(None, DataMode::ByException, 16), &[meter()], 3);
        node.connecting();
        node.on_connected(Timestamp(T0));
        node.on_poll(&poll1(), Timestamp(T0 + 1_020));
        let ncmd = "spBv1.0/plant/NCMD/gw-01";
        let births = node
            .on_message(ncmd, &ncmd_rebirth(), Timestamp(T0 + 2_000))
            .unwrap();
        assert_eq!(kinds(&births), [MessageType::NBirth, MessageType::DBirth]);
        assert_eq!(seqs(&births), [0, 1]);
        assert_eq!(decode(&births[0]).metrics[0].value, Some(PV::LongValue(3)));
        // The next data continues from the rebirth.
        assert_eq!(seqs(&node.on_poll(&poll2(), Timestamp(T0 + 3_000))), [2]);
        // Not for us, not a rebirth, or not a Sparkplug payload.
        assert!(
            node.on_message("spBv1.0/plant/NCMD/gw-02", &ncmd_rebirth(), Timestamp(T0))
                .unwrap()
                .is_empty()
        );
        assert!(
            node.on_message("spBv1.0/other/NCMD/gw-01", &ncmd_rebirth(), Timestamp(T0))
                .unwrap()
                .is_empty()
        );
        assert!(
            node.on_message(
                "spBv1.0/plant/DCMD/gw-01/main-meter",
                &ncmd_rebirth(),
                Timestamp(T0)
            )
            .unwrap()
            .is_empty()
        );
        let no = Payload {
            timestamp: Some(1),
            ..Payload::default()
        }
        .encode_to_vec();
        assert!(
            node.on_message(ncmd, &no, Timestamp(T0))
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            node.on_message(ncmd, b"\xff\xff", Timestamp(T0)),
            Err(InboundError::Payload(_))
        ));
        assert!(matches!(
            node.on_message("plantwatch/x", b"", Timestamp(T0)),
            Err(InboundError::Topic(_))
        ));
    }

    #[test]
    fn by_exception_suppresses_unchanged_values_and_reports_quality_flips() {
        let mut node = EdgeNode::new(config(None, DataMode::ByException, 16), &[meter()], 0);
        node.connecting();
        node.on_connected(Timestamp(T0));
        // All but `fault`, which the birth already declared null.
        assert_eq!(
            decode(&node.on_poll(&poll1(), Timestamp(T0))[0])
                .metrics
                .len(),
            6
        );
        assert!(
            node.on_poll(&poll1(), Timestamp(T0)).is_empty(),
            "nothing changed: no message"
        );
        // Uncertain with the same value is the same on the wire.
        let mut held = poll1();
        held.samples[0].quality = Quality::Uncertain(UncertainReason::Held);
        assert!(node.on_poll(&held, Timestamp(T0)).is_empty());
        // good -> bad and bad -> good are both reported; a NaN that stays NaN is not.
        let t = T0 + 5_000;
        let flip = batch(
            "main-meter",
            t,
            vec![
                sample("ua", t, None, Quality::Bad(BadReason::CommLost)),
                good("fault", t, Value::I64(3)),
                good("pf", t, Value::F64(f64::NAN)),
            ],
        );
        let out = node.on_poll(&flip, Timestamp(t));
        let metrics = decode(&out[0]).metrics;
        assert_eq!(metrics.len(), 3);
        assert_eq!(
            (metrics[0].alias, metrics[0].is_null, &metrics[0].value),
            (Some(1), Some(true), &None)
        );
        assert_eq!(
            (metrics[1].alias, metrics[1].is_null, &metrics[1].value),
            (Some(7), None, &Some(PV::IntValue(3)))
        );
        assert_eq!(metrics[2].alias, Some(5));
        assert!(
            node.on_poll(&flip, Timestamp(t + 1)).is_empty(),
            "NaN compared by bits"
        );
    }

    #[test]
    fn every_poll_mode_sends_every_metric_every_time() {
        let mut node = EdgeNode::new(config(None, DataMode::EveryPoll, 16), &[meter()], 0);
        node.connecting();
        node.on_connected(Timestamp(T0));
        for _ in 0..3 {
            let out = node.on_poll(&poll1(), Timestamp(T0));
            assert_eq!(decode(&out[0]).metrics.len(), 7);
        }
    }

    #[test]
    fn host_offline_buffers_then_births_and_replays_history_in_order() {
        let mut node = EdgeNode::new(
            config(Some("scada"), DataMode::ByException, 16),
            &[meter()],
            0,
        );
        let state_topic = "spBv1.0/STATE/scada";
        node.connecting();
        assert!(
            node.on_connected(Timestamp(T0)).is_empty(),
            "waits for the primary host"
        );
        assert!(
            node.subscriptions()
                .contains(&(state_topic.to_owned(), Qos::AtLeastOnce))
        );
        let births = node
            .on_message(state_topic, &state(true, 10), Timestamp(T0 + 500))
            .unwrap();
        assert_eq!(kinds(&births), [MessageType::NBirth, MessageType::DBirth]);
        assert_eq!(node.on_poll(&poll1(), Timestamp(T0 + 1_020)).len(), 1);

        // Host goes away: nothing is sent, polls are kept.
        assert!(
            node.on_message(state_topic, &state(false, 20), Timestamp(T0 + 1_500))
                .unwrap()
                .is_empty()
        );
        assert!(!node.is_born());
        assert!(node.on_poll(&poll2(), Timestamp(T0 + 3_020)).is_empty());
        let t = T0 + 4_000;
        let third = batch("main-meter", t, vec![good("ua", t + 9, Value::F64(232.5))]);
        assert!(node.on_poll(&third, Timestamp(t + 20)).is_empty());
        assert!(
            node.on_poll(&third, Timestamp(t + 1_020)).is_empty(),
            "unchanged: not even buffered"
        );
        assert_eq!(node.buffered(), 2);
        // A rebirth request while the gate is shut does not open it.
        assert!(
            node.on_message("spBv1.0/plant/NCMD/gw-01", &ncmd_rebirth(), Timestamp(t))
                .unwrap()
                .is_empty()
        );

        // Host is back: fresh births with the latest values, then history, oldest first.
        let back = Timestamp(T0 + 9_000);
        let out = node
            .on_message(state_topic, &state(true, 30), back)
            .unwrap();
        assert_eq!(
            kinds(&out),
            [
                MessageType::NBirth,
                MessageType::DBirth,
                MessageType::DData,
                MessageType::DData
            ]
        );
        assert_eq!(seqs(&out), [0, 1, 2, 3]);
        let dbirth = decode(&out[1]);
        assert_eq!(dbirth.metrics[0].value, Some(PV::DoubleValue(232.5)));
        assert_eq!(dbirth.metrics[0].timestamp, Some(t as u64 + 9));
        let h1 = decode(&out[2]);
        assert_eq!(h1.timestamp, Some(back.0 as u64), "sent now");
        let aliases_ts: Vec<_> = h1
            .metrics
            .iter()
            .map(|m| (m.alias.unwrap(), m.timestamp.unwrap()))
            .collect();
        assert_eq!(
            aliases_ts,
            [(1, T0 as u64 + 3_011), (3, T0 as u64 + 3_014)],
            "original timestamps"
        );
        let h2 = decode(&out[3]);
        assert_eq!(h2.metrics.len(), 1);
        assert_eq!(h2.metrics[0].value, Some(PV::DoubleValue(232.5)));
        for m in h1.metrics.iter().chain(&h2.metrics) {
            assert_eq!(m.is_historical, Some(true));
        }
        assert_eq!(node.buffered(), 0);

        // Then live again, not historical, and by exception against the birth.
        let t = T0 + 10_000;
        let live = node.on_poll(
            &batch(
                "main-meter",
                t,
                vec![
                    good("ua", t, Value::F64(232.5)),
                    good("ep", t, Value::I64(9)),
                ],
            ),
            Timestamp(t),
        );
        let live = decode(&live[0]);
        assert_eq!(live.seq, Some(4));
        assert_eq!(live.metrics.len(), 1);
        assert_eq!(
            (live.metrics[0].alias, live.metrics[0].is_historical),
            (Some(3), None)
        );
    }

    #[test]
    fn a_stale_or_foreign_state_is_ignored() {
        let mut node = EdgeNode::new(
            config(Some("scada"), DataMode::ByException, 16),
            &[meter()],
            0,
        );
        node.connecting();
        node.on_connected(Timestamp(T0));
        let topic = "spBv1.0/STATE/scada";
        assert_eq!(
            node.on_message(topic, &state(true, 100), Timestamp(T0))
                .unwrap()
                .len(),
            2
        );
        // An older "offline" (a will delivered late) does not stop the data.
        assert!(
            node.on_message(topic, &state(false, 99), Timestamp(T0))
                .unwrap()
                .is_empty()
        );
        assert!(node.is_born());
        assert!(
            node.on_message("spBv1.0/STATE/backup", &state(false, 200), Timestamp(T0))
                .unwrap()
                .is_empty()
        );
        assert!(node.is_born());
        assert!(matches!(
            node.on_message(topic, b"OFFLINE", Timestamp(T0)),
            Err(InboundError::State(_))
        ));
        assert!(node.is_born());
    }

    #[test]
    fn a_broker_outage_buffers_and_the_reconnect_replays_history() {
        let mut node = EdgeNode::new(config(None, DataMode::ByException, 16), &[meter()], 0);
        node.connecting();
        node.on_connected(Timestamp(T0));
        node.on_connection_lost();
        assert!(node.on_poll(&poll1(), Timestamp(T0 + 1_020)).is_empty());
        node.connecting();
        let out = node.on_connected(Timestamp(T0 + 5_000));
        assert_eq!(
            kinds(&out),
            [MessageType::NBirth, MessageType::DBirth, MessageType::DData]
        );
        assert_eq!(
            decode(&out[0]).metrics[0].value,
            Some(PV::LongValue(1)),
            "a new connection, a new bdSeq"
        );
        let history = decode(&out[2]);
        assert_eq!(
            history.metrics.len(),
            6,
            "`fault` stayed null, as first declared"
        );
        assert!(
            history
                .metrics
                .iter()
                .all(|m| m.is_historical == Some(true))
        );
    }

    #[test]
    fn history_from_a_queue_is_marked_historical_and_live_data_is_still_compared_to_the_birth() {
        let mut node = EdgeNode::new(config(None, DataMode::ByException, 0), &[meter()], 0);
        assert_eq!(
            node.on_historical(&poll2(), Timestamp(T0)),
            None,
            "history only goes out after a birth"
        );
        node.connecting();
        node.on_connected(Timestamp(T0));
        assert_eq!(node.on_poll(&poll1(), Timestamp(T0 + 1_020)).len(), 1);
        node.on_connection_lost();
        assert_eq!(
            node.on_historical(&poll2(), Timestamp(T0)),
            None,
            "nor while down"
        );
        // poll2 stays in the queue; the births still declare poll1's values.
        node.connecting();
        let now = Timestamp(T0 + 9_000);
        let births = node.on_connected(now);
        assert_eq!(
            decode(&births[1]).metrics[0].value,
            Some(PV::DoubleValue(231.4))
        );
        let h = node.on_historical(&poll2(), now).unwrap();
        assert_eq!(h.kind, MessageType::DData);
        let p = decode(&h);
        assert_eq!(p.seq, Some(2));
        assert_eq!(p.timestamp, Some(now.0 as u64), "sent now");
        let sent: Vec<_> = p
            .metrics
            .iter()
            .map(|m| (m.alias.unwrap(), m.timestamp.unwrap(), m.is_historical))
            .collect();
        assert_eq!(
            sent,
            [
                (1, T0 as u64 + 3_011, Some(true)),
                (3, T0 as u64 + 3_014, Some(true))
            ],
            "changes since what the host held before the birth, at their own time"
        );
        assert_eq!(
            node.on_historical(&poll2(), now),
            None,
            "by exception within history too"
        );
        // The same values live: the host's current values are still the birth's, so they go.
        let live = node.on_poll(&poll2(), now).pop().unwrap();
        let p = decode(&live);
        assert_eq!(p.seq, Some(3));
        assert_eq!(p.metrics.len(), 2);
        assert!(p.metrics.iter().all(|m| m.is_historical.is_none()));
        // History older than what the node has does not become the declared value.
        node.on_historical(&poll1(), now);
        let rebirth = node
            .on_message("spBv1.0/plant/NCMD/gw-01", &ncmd_rebirth(), now)
            .unwrap();
        assert_eq!(
            decode(&rebirth[1]).metrics[0].value,
            Some(PV::DoubleValue(231.9))
        );
    }

    #[test]
    fn priming_makes_the_birth_declare_the_newest_stored_values() {
        let mut node = EdgeNode::new(config(None, DataMode::EveryPoll, 0), &[meter()], 0);
        node.prime(&poll1());
        node.prime(&poll2());
        node.prime(&batch("nope", T0, vec![good("ua", T0, Value::F64(1.0))]));
        node.connecting();
        let births = node.on_connected(Timestamp(T0 + 9_000));
        let dbirth = decode(&births[1]);
        assert_eq!(dbirth.metrics[0].value, Some(PV::DoubleValue(231.9)));
        assert_eq!(dbirth.metrics[0].timestamp, Some(T0 as u64 + 3_011));
        assert_eq!(dbirth.metrics[6].is_null, Some(true));
        // Every-poll history sends every metric, even those the birth already holds.
        let h = node.on_historical(&poll2(), Timestamp(T0 + 9_001)).unwrap();
        assert_eq!(decode(&h).metrics.len(), 7);
        assert_eq!(
            node.on_historical(&batch("nope", T0, Vec::new()), Timestamp(T0)),
            None
        );
    }

    #[test]
    fn the_buffer_is_bounded_and_drops_the_oldest_polls() {
        let mut node = EdgeNode::new(config(Some("scada"), DataMode::EveryPoll, 3), &[meter()], 0);
        node.connecting();
        node.on_connected(Timestamp(T0));
        for i in 0..5 {
            let t = T0 + i * 1_000;
            node.on_poll(
                &batch("main-meter", t, vec![good("ep", t, Value::I64(i))]),
                Timestamp(t),
            );
        }
        assert_eq!((node.buffered(), node.dropped()), (3, 2));
        let out = node
            .on_message(
                "spBv1.0/STATE/scada",
                &state(true, 1),
                Timestamp(T0 + 9_000),
            )
            .unwrap();
        let replayed: Vec<_> = out[2..]
            .iter()
            .map(|m| decode(m).metrics[0].value.clone())
            .collect();
        assert_eq!(
            replayed,
            [
                Some(PV::IntValue(2)),
                Some(PV::IntValue(3)),
                Some(PV::IntValue(4))
            ]
        );

        let mut none = EdgeNode::new(config(Some("scada"), DataMode::EveryPoll, 0), &[meter()], 0);
        none.on_poll(&poll1(), Timestamp(T0));
        assert_eq!((none.buffered(), none.dropped()), (0, 1));
    }

    #[test]
    fn aliases_are_stable_per_device_and_point_and_unique_across_devices() {
        let second = DeviceSpec {
            name: n("pump-2"),
            points: vec![PointSpec {
                name: n("ua"),
                datatype: DataType::Double,
            }],
        };
        let devices = [meter(), second];
        let a = EdgeNode::new(config(None, DataMode::ByException, 16), &devices, 0);
        let b = EdgeNode::new(config(None, DataMode::ByException, 16), &devices, 9);
        assert_eq!(a.alias("main-meter", "ua"), Some(1));
        assert_eq!(a.alias("main-meter", "fault"), Some(7));
        assert_eq!(a.alias("pump-2", "ua"), Some(8));
        assert_eq!(a.alias("pump-2", "nope"), None);
        for (d, p) in [("main-meter", "ua"), ("main-meter", "pf"), ("pump-2", "ua")] {
            assert_eq!(a.alias(d, p), b.alias(d, p));
        }
        // And the births say so, each device on its own topic.
        let mut node = EdgeNode::new(config(None, DataMode::ByException, 16), &devices, 0);
        node.connecting();
        let out = node.on_connected(Timestamp(T0));
        assert_eq!(out[2].topic, "spBv1.0/plant/DBIRTH/gw-01/pump-2");
        let pump = decode(&out[2]);
        assert_eq!(
            (pump.metrics[0].name.as_deref(), pump.metrics[0].alias),
            (Some("ua"), Some(8))
        );
        assert_eq!(
            pump.metrics[0].is_null,
            Some(true),
            "never polled: declared null"
        );
        assert_eq!(pump.metrics[0].timestamp, Some(T0 as u64));
    }

    #[test]
    fn births_declare_every_point_type_with_its_datatype() {
        let points: Vec<PointSpec> = PointType::ALL
            .iter()
            .map(|t| PointSpec {
                name: n(t.name()),
                datatype: datatype_of(&Codec::plain(*t)),
            })
            .collect();
        let device = DeviceSpec {
            name: n("all-types"),
            points,
        };
        let mut node = EdgeNode::new(
            config(None, DataMode::ByException, 16),
            std::slice::from_ref(&device),
            0,
        );
        node.connecting();
        let out = node.on_connected(Timestamp(T0));
        let declared: Vec<(String, u32)> = decode(&out[1])
            .metrics
            .iter()
            .map(|m| (m.name.clone().unwrap(), m.datatype.unwrap()))
            .collect();
        let want: Vec<(String, u32)> = [
            ("bool", 11),
            ("bit", 11),
            ("u16", 6),
            ("i16", 2),
            ("u32", 7),
            ("i32", 3),
            ("u64", 8),
            ("i64", 4),
            ("f32", 9),
            ("f64", 10),
            ("string", 12),
            ("bcd16", 6),
            ("bcd32", 7),
        ]
        .iter()
        .map(|(n, d)| ((*n).to_owned(), *d))
        .collect();
        assert_eq!(declared, want);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any sequence of connection, host, command and poll events keeps the session rules:
        /// seq restarts at 0 on NBIRTH and otherwise counts by one mod 256; nothing but an
        /// NBIRTH opens a session; historical data only straight after births; the buffer
        /// stays within its bound.
        #[test]
        fn any_event_sequence_keeps_the_session_rules(ops in proptest::collection::vec(0u8..7, 1..120)) {
            let mut node = EdgeNode::new(config(Some("scada"), DataMode::ByException, 4), &[meter()], 250);
            let mut expected_seq: Option<u64> = None;
            let mut host_ts = 0u64;
            let mut after_birth = false;
            for (i, op) in ops.iter().enumerate() {
                let now = Timestamp(T0 + i64::try_from(i).unwrap() * 100);
                let out = match op {
                    0 => { node.connecting(); Vec::new() }
                    1 => node.on_connected(now),
                    2 => { node.on_connection_lost(); Vec::new() }
                    3 | 4 => { host_ts += 1; node.on_message("spBv1.0/STATE/scada", &state(*op == 3, host_ts), now).unwrap() }
                    5 => node.on_message("spBv1.0/plant/NCMD/gw-01", &ncmd_rebirth(), now).unwrap(),
                    _ => {
                        let v = i64::try_from(i % 3).unwrap();
                        node.on_poll(&batch("main-meter", now.0, vec![good("ep", now.0, Value::I64(v))]), now)
                    }
                };
                proptest::prop_assert!(node.buffered() <= 4);
                for m in &out {
                    let p = decode(m);
                    let seq = p.seq.unwrap();
                    match m.kind {
                        MessageType::NBirth => {
                            proptest::prop_assert_eq!(seq, 0);
                            proptest::prop_assert_eq!(p.metrics[0].value.clone(), Some(PV::LongValue(u64::from(node.bd_seq().unwrap()))));
                            after_birth = true;
                        }
                        MessageType::DBirth => proptest::prop_assert!(after_birth),
                        MessageType::DData => {
                            let historical = p.metrics.iter().all(|m| m.is_historical == Some(true));
                            if historical { proptest::prop_assert!(after_birth, "history only right after births"); }
                            else { after_birth = false; }
                            proptest::prop_assert_eq!(Some(seq), expected_seq);
                        }
                        other => proptest::prop_assert!(false, "unexpected {:?}", other),
                    }
                    if m.kind != MessageType::NBirth {
                        proptest::prop_assert_eq!(Some(seq), expected_seq);
                    }
                    expected_seq = Some((seq + 1) % 256);
                    proptest::prop_assert!(node.is_born());
                }
            }
        }
    }
}
