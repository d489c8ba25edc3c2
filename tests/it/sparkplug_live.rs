//! The Sparkplug B sink against a real broker (the embedded rumqttd) on loopback, with a real
//! store on a temporary SQLite file as its queue, observed by an MQTT client that plays the
//! primary host: it decodes what actually arrived with prost and publishes `STATE` and NCMD.
//!
//! rumqttd keeps one log per subscription filter, so the host's single `spBv1.0/#` filter sees
//! the sink's messages in the order the sink sent them; `seq` can be checked across topics. It
//! forwards at the subscription's QoS, though, not at min(published, subscribed): the QoS of
//! births, data and the will is checked by the interop script on mosquitto (the ignored
//! `interop_script_judges_the_sink_on_mosquitto`), and the will's options in `sink::mqtt::conn`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use plantwatch::clock::SystemClock;
use plantwatch::config::daemon::{Mqtt, Protocol};
use plantwatch::model::{Name, PointSample, Quality, SampleBatch, Timestamp, Value};
use plantwatch::runtime::outbox::StoreOutbox;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;
use plantwatch::sink::mqtt::{MqttError, MqttStats};
use plantwatch::sink::sparkplug::{STATE_SCOPE, SparkplugSink};
use plantwatch::sparkplug::proto::payload::metric::Value as PV;
use plantwatch::sparkplug::proto::{DataType, Payload};
use plantwatch::sparkplug::{DataMode, DeviceSpec, HostState, Id, NodeConfig, PointSpec};
use plantwatch::store::outbox::OutboxMessage;
use plantwatch::store::{OutboxLimits, Store, StoreHandle, record};

use crate::harness::mosquitto::Mosquitto;
use crate::harness::proxy::Proxy;
use crate::harness::{eventually, eventually_async, within};

const T0: i64 = 1_700_000_000_000;
const WAIT: Duration = Duration::from_secs(20);

/// One message as the host received it.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

impl Got {
    /// The message type level (`NBIRTH`, `DDATA`, …), or `STATE`.
    pub(crate) fn kind(&self) -> &str {
        self.topic.split('/').nth(2).map_or("", |k| {
            if self.topic.starts_with("spBv1.0/STATE/") {
                "STATE"
            } else {
                k
            }
        })
    }
    pub(crate) fn decode(&self) -> Payload {
        Payload::decode(self.payload.as_slice()).unwrap()
    }
    fn seq(&self) -> u64 {
        self.decode().seq.unwrap()
    }
    /// The `bdSeq` of an NBIRTH or NDEATH.
    fn bd_seq(&self) -> u64 {
        let p = self.decode();
        let m = p
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("bdSeq"))
            .unwrap();
        match m.value {
            Some(PV::LongValue(v)) => v,
            ref other => panic!("bdSeq is {other:?}"),
        }
    }
}

/// An MQTT client on `spBv1.0/#` playing the primary host `scada`.
pub(crate) struct Host {
    client: AsyncClient,
    rx: mpsc::Receiver<Got>,
    task: JoinHandle<()>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Host {
    /// Connects, subscribes and waits for the SUBACK (bounded).
    pub(crate) async fn start(addr: SocketAddr, id: &str) -> Self {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        client
            .subscribe("spBv1.0/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(100_000);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            r.send(()).ok();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let got = Got {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                        };
                        if tx.send(got).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        within(Duration::from_secs(10), "host SUBACK", ready_rx)
            .await
            .unwrap();
        Self { client, rx, task }
    }

    /// Publishes the host's `STATE` as Sparkplug 3.0 hosts do: retained, QoS 1.
    pub(crate) async fn state(&self, online: bool, timestamp: u64) {
        let payload = HostState { online, timestamp }.to_json();
        self.client
            .publish("spBv1.0/STATE/scada", QoS::AtLeastOnce, true, payload)
            .await
            .unwrap();
    }

    /// Publishes `payload` on `topic` as the host (QoS 1, not retained): a command.
    pub(crate) async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// Asks `group/node` for a rebirth.
    async fn rebirth(&self, group: &str, node: &str) {
        let ncmd = Payload {
            timestamp: Some(1),
            metrics: vec![plantwatch::sparkplug::proto::payload::Metric {
                name: Some("Node Control/Rebirth".into()),
                datatype: Some(DataType::Boolean as u32),
                value: Some(PV::BooleanValue(true)),
                ..Default::default()
            }],
            ..Payload::default()
        };
        self.client
            .publish(
                format!("spBv1.0/{group}/NCMD/{node}"),
                QoS::AtLeastOnce,
                false,
                ncmd.encode_to_vec(),
            )
            .await
            .unwrap();
    }

    /// The edge node's messages (not `STATE` or commands) until `done` holds of them or `limit` passes.
    pub(crate) async fn collect(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[Got]) -> bool,
    ) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::new();
        // Bounded in count as well as time.
        for _ in 0..100_000 {
            if done(&got) {
                break;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                // The host's own messages.
                Ok(Some(m)) if matches!(m.kind(), "STATE" | "NCMD" | "DCMD") => {}
                Ok(Some(m)) => got.push(m),
                _ => break,
            }
        }
        got
    }

    /// Collects until `n` messages of `kind` arrived, failing the test otherwise.
    async fn expect(&mut self, what: &str, kind: &str, n: usize) -> Vec<Got> {
        let got = self.collect(WAIT, |g| count(g, kind) >= n).await;
        assert!(
            count(&got, kind) >= n,
            "{what}: {n} {kind} expected, got {:?}",
            kinds(&got)
        );
        got
    }
}

pub(crate) fn count(got: &[Got], kind: &str) -> usize {
    got.iter().filter(|m| m.kind() == kind).count()
}

pub(crate) fn kinds(got: &[Got]) -> Vec<&str> {
    got.iter().map(Got::kind).collect()
}

/// `seq` as Sparkplug requires: 0 on each NBIRTH, then one more per message, mod 256.
fn assert_seq_runs_on(got: &[Got]) {
    let mut expected: Option<u64> = None;
    for (i, m) in got.iter().enumerate() {
        if m.kind() == "NDEATH" {
            assert_eq!(m.decode().seq, None, "NDEATH carries no seq");
            continue;
        }
        let seq = m.seq();
        if m.kind() == "NBIRTH" {
            assert_eq!(seq, 0, "message {i}: NBIRTH");
        } else {
            assert_eq!(Some(seq), expected, "message {i}: {}", m.kind());
        }
        expected = Some((seq + 1) % 256);
    }
}

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn id(s: &str) -> Id {
    Id::new(s).unwrap()
}

/// `meter`: ua (Double, alias 1), run (Boolean, 2), ep (UInt32, 3).
pub(crate) fn meter() -> DeviceSpec {
    DeviceSpec {
        name: n("meter"),
        points: vec![
            PointSpec {
                name: n("ua"),
                datatype: DataType::Double,
            },
            PointSpec {
                name: n("run"),
                datatype: DataType::Boolean,
            },
            PointSpec {
                name: n("ep"),
                datatype: DataType::UInt32,
            },
        ],
    }
}

/// `pump`: speed (Float, alias 4).
fn pump() -> DeviceSpec {
    DeviceSpec {
        name: n("pump"),
        points: vec![PointSpec {
            name: n("speed"),
            datatype: DataType::Float,
        }],
    }
}

/// A poll of `meter` at `ts` in which every point reads something new for each `i`.
pub(crate) fn meter_poll(i: i64, ts: i64) -> SampleBatch {
    let good = |point: &str, value: Value| PointSample {
        point: n(point),
        ts: Timestamp(ts),
        value: Some(value),
        quality: Quality::Good,
    };
    SampleBatch {
        device: n("meter"),
        tick: Timestamp(ts),
        samples: vec![
            good("ua", Value::F64(i as f64)),
            good("run", Value::Bool(i % 2 == 0)),
            good("ep", Value::I64(i)),
        ],
    }
}

pub(crate) fn node_config(primary: Option<&str>) -> NodeConfig {
    NodeConfig {
        group_id: id("plant"),
        edge_node_id: id("gw-01"),
        primary_host_id: primary.map(id),
        data_mode: DataMode::ByException,
        buffer_limit: 0,
        writes: false,
    }
}

pub(crate) fn plan(port: u16, protocol: Protocol, client_id: &str) -> Mqtt {
    Mqtt {
        name: plantwatch::model::Name::new("spb").unwrap(),
        format: plantwatch::config::daemon::Format::Json,
        sparkplug: None,
        host: "127.0.0.1".into(),
        port,
        client_id: client_id.into(),
        topic_prefix: "unused".into(),
        qos: 0,
        keep_alive: Duration::from_secs(5),
        max_inflight: 16,
        reconnect: (Duration::from_millis(50), Duration::from_millis(400)),
        backfill_per_live: 1,
        username: None,
        password: None,
        tls: None,
        protocol,
        topic_aliases: false,
    }
}

/// A store on a temporary file, its queue, and what the sink shares with the daemon.
pub(crate) struct Rig {
    _dir: tempfile::TempDir,
    pub(crate) store: StoreHandle,
    pub(crate) outbox: Arc<StoreOutbox>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) stats: Arc<MqttStats>,
    seqs: HashMap<String, u64>,
}

type SinkTask = (CancellationToken, JoinHandle<Result<(), MqttError>>);

impl Rig {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let limits = OutboxLimits {
            commit_window: Duration::from_millis(5),
            ..OutboxLimits::default()
        };
        let store = Store::open(&dir.path().join("state.db"), limits).unwrap();
        Self {
            _dir: dir,
            outbox: Arc::new(StoreOutbox::default_queue(store.clone())),
            store,
            wake: Arc::new(Notify::new()),
            stats: Arc::new(MqttStats::default()),
            seqs: HashMap::new(),
        }
    }

    /// Starts a sink task over this rig's store.
    pub(crate) fn sink(&self, plan: Mqtt, node: NodeConfig, devices: Vec<DeviceSpec>) -> SinkTask {
        let sink = SparkplugSink::new(
            plan,
            node,
            devices,
            self.outbox.clone(),
            self.wake.clone(),
            self.store.clone(),
            Arc::new(SystemClock),
            self.stats.clone(),
        );
        let cancel = CancellationToken::new();
        (cancel.clone(), tokio::spawn(sink.run(cancel)))
    }

    /// Stores one poll as the daemon does (one row, encoded batch) and wakes the sink.
    pub(crate) async fn store_poll(&mut self, batch: &SampleBatch) {
        let key = batch.device.as_str().to_owned();
        let seq = *self.seqs.entry(key.clone()).or_default();
        self.seqs.insert(key.clone(), seq + 1);
        self.store
            .enqueue(vec![OutboxMessage {
                queue: plantwatch::store::DEFAULT_QUEUE,
                stream: format!("sparkplug/{key}"),
                key,
                seq,
                created_ms: batch.tick.0,
                payload: record::encode_batch(batch, seq),
            }])
            .await
            .unwrap();
        self.wake.notify_one();
    }

    pub(crate) async fn rows(&self) -> u64 {
        self.store.stats().await.unwrap().rows
    }

    /// Waits (bounded) until the queue holds `n` rows.
    pub(crate) async fn wait_rows(&self, n: u64) {
        eventually_async(
            Duration::from_secs(20),
            &format!("the queue holding {n} rows"),
            || async {
                match self.rows().await {
                    rows if rows == n => Ok(()),
                    rows => Err(format!("holds {rows}")),
                }
            },
        )
        .await;
    }

    /// Waits (bounded) until the sink has connected `n` times in all.
    async fn wait_connects(&self, n: u64) {
        eventually(
            Duration::from_secs(20),
            &format!("the sink connecting {n} times"),
            || match self.stats.connects.load(Ordering::Relaxed) {
                c if c >= n => Ok(()),
                c => Err(format!("{c} times")),
            },
        )
        .await;
    }

    async fn wait_disconnected(&self) {
        eventually(
            Duration::from_secs(20),
            "the sink noticing the outage",
            || self.stats.connected.load(Ordering::Relaxed) == 0,
        )
        .await;
    }

    /// The persisted next bdSeq of `plant/gw-01`.
    async fn saved_bd_seq(&self) -> String {
        let rows = self.store.load_state(STATE_SCOPE).await.unwrap();
        let (key, value) = rows.into_iter().next().unwrap();
        assert_eq!(key, "plant/gw-01");
        value
    }
}

/// The alias and value of each metric of a data message.
fn values(m: &Got) -> Vec<(u64, Option<PV>)> {
    m.decode()
        .metrics
        .iter()
        .map(|x| (x.alias.unwrap(), x.value.clone()))
        .collect()
}

fn listener(broker: &EmbeddedBroker, protocol: Protocol) -> SocketAddr {
    match protocol {
        Protocol::V311 => broker.addr,
        Protocol::V5 => broker.addr_v5,
    }
}

async fn births_data_and_wills_agree(protocol: Protocol) {
    let broker = EmbeddedBroker::start().unwrap();
    let mut host = Host::start(broker.addr, &format!("host-a-{protocol}")).await;
    let mut rig = Rig::new();
    let port = listener(&broker, protocol).port();
    let client_id = format!("pw-spb-a-{protocol}");
    let (_cancel, task) = rig.sink(
        plan(port, protocol, &client_id),
        node_config(None),
        vec![meter(), pump()],
    );

    // Births: NBIRTH with bdSeq 0 and the rebirth control, one DBIRTH per device.
    let births = host.expect("births", "DBIRTH", 2).await;
    assert_eq!(kinds(&births), ["NBIRTH", "DBIRTH", "DBIRTH"]);
    assert_eq!(births[0].topic, "spBv1.0/plant/NBIRTH/gw-01");
    assert_eq!(births[0].bd_seq(), 0);
    let nbirth = births[0].decode();
    let rebirth = nbirth
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("Node Control/Rebirth"))
        .unwrap();
    assert_eq!(
        (rebirth.datatype, &rebirth.value),
        (
            Some(DataType::Boolean as u32),
            &Some(PV::BooleanValue(false))
        )
    );
    assert_eq!(births[1].topic, "spBv1.0/plant/DBIRTH/gw-01/meter");
    assert_eq!(births[2].topic, "spBv1.0/plant/DBIRTH/gw-01/pump");
    let declared = |m: &Got| -> Vec<(String, u64, u32)> {
        m.decode()
            .metrics
            .iter()
            .map(|x| {
                (
                    x.name.clone().unwrap(),
                    x.alias.unwrap(),
                    x.datatype.unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        declared(&births[1]),
        [
            ("ua".to_owned(), 1, DataType::Double as u32),
            ("run".to_owned(), 2, DataType::Boolean as u32),
            ("ep".to_owned(), 3, DataType::UInt32 as u32)
        ]
    );
    assert_eq!(
        declared(&births[2]),
        [("speed".to_owned(), 4, DataType::Float as u32)]
    );
    assert_eq!(rig.saved_bd_seq().await, r#"{"next_bd_seq":1}"#);

    // 300 polls: DDATA by alias only, seq wrapping past 255 without a gap.
    for i in 0..300 {
        rig.store_poll(&meter_poll(i, T0 + i * 1_000)).await;
    }
    let data = host.expect("data", "DDATA", 300).await;
    assert_eq!(count(&data, "DDATA"), data.len(), "{:?}", kinds(&data));
    let mut all = births.clone();
    all.extend(data.iter().cloned());
    assert_seq_runs_on(&all);
    assert_eq!(all[258].seq(), 2, "wrapped");
    for (i, m) in data.iter().enumerate() {
        let p = m.decode();
        assert!(
            p.metrics
                .iter()
                .all(|x| x.name.is_none() && x.datatype.is_none() && x.is_historical.is_none()),
            "data by alias, live"
        );
        let i = i as i64;
        assert_eq!(p.metrics[0].alias, Some(1));
        assert_eq!(p.metrics[0].value, Some(PV::DoubleValue(i as f64)));
        assert_eq!(p.metrics[0].timestamp, Some((T0 + i * 1_000) as u64));
    }
    rig.wait_rows(0).await;

    // Killed without DISCONNECT: the broker publishes the will, the NDEATH of bdSeq 0.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let death = host.expect("will", "NDEATH", 1).await;
    let death = death.iter().find(|m| m.kind() == "NDEATH").unwrap();
    assert_eq!(death.topic, "spBv1.0/plant/NDEATH/gw-01");
    assert_eq!(death.bd_seq(), 0);
    assert_eq!(death.decode().seq, None);

    // Restarted on the same store: bdSeq 1, persisted as next 2; a clean stop says NDEATH 1.
    let (cancel, task) = rig.sink(
        plan(port, protocol, &client_id),
        node_config(None),
        vec![meter(), pump()],
    );
    let births = host.expect("births after restart", "DBIRTH", 2).await;
    assert_eq!(births[0].kind(), "NBIRTH");
    assert_eq!(births[0].bd_seq(), 1);
    assert_eq!(rig.saved_bd_seq().await, r#"{"next_bd_seq":2}"#);
    // The births declare what the node knows after a restart with an empty queue: nothing.
    assert!(
        births[1]
            .decode()
            .metrics
            .iter()
            .all(|m| m.is_null == Some(true))
    );
    cancel.cancel();
    within(WAIT, "clean stop", task).await.unwrap().unwrap();
    let death = host.expect("clean stop", "NDEATH", 1).await;
    let death = death.iter().find(|m| m.kind() == "NDEATH").unwrap();
    assert_eq!(death.bd_seq(), 1);
    assert!(
        death.decode().timestamp.is_some(),
        "published by the node, with its time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn births_data_and_the_will_agree_on_bd_seq_across_a_kill_and_a_restart() {
    births_data_and_wills_agree(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_births_data_and_the_will_agree_on_bd_seq_across_a_kill_and_a_restart() {
    births_data_and_wills_agree(Protocol::V5).await;
}

/// How long to watch for messages that must not come. Only a negative check waits this long;
/// every positive one ends as soon as what it waits for has arrived.
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_host_gates_births_and_the_queue_replays_as_history_also_over_a_restart() {
    let broker = EmbeddedBroker::start().unwrap();
    let mut host = Host::start(broker.addr, "host-b").await;
    let mut rig = Rig::new();
    let port = broker.addr.port();
    let start = |rig: &Rig| {
        rig.sink(
            plan(port, Protocol::V311, "pw-spb-b"),
            node_config(Some("scada")),
            vec![meter()],
        )
    };
    host.state(false, 1).await;
    let (cancel, task) = start(&rig);
    rig.wait_connects(1).await;
    for i in 1..=3 {
        rig.store_poll(&meter_poll(i, T0 + i * 1_000)).await;
    }
    let nothing = host.collect(QUIET, |_| false).await;
    assert_eq!(
        kinds(&nothing),
        Vec::<&str>::new(),
        "host offline: no births"
    );
    assert_eq!(rig.rows().await, 3, "rows stay in the queue");

    // The host comes online: births (declaring the newest stored values), then the three
    // stored polls as history, oldest first, with their own timestamps.
    host.state(true, 2).await;
    let got = host.expect("births and history", "DDATA", 3).await;
    assert_eq!(kinds(&got), ["NBIRTH", "DBIRTH", "DDATA", "DDATA", "DDATA"]);
    assert_seq_runs_on(&got);
    assert_eq!(got[0].bd_seq(), 0);
    let dbirth = got[1].decode();
    assert_eq!(dbirth.metrics[0].value, Some(PV::DoubleValue(3.0)));
    assert_eq!(dbirth.metrics[0].timestamp, Some((T0 + 3_000) as u64));
    for (k, m) in got[2..].iter().enumerate() {
        let i = k as i64 + 1;
        let p = m.decode();
        assert!(
            p.metrics.iter().all(|x| x.is_historical == Some(true)),
            "poll {i} is history"
        );
        assert!(
            p.metrics
                .iter()
                .all(|x| x.timestamp == Some((T0 + i * 1_000) as u64)),
            "poll {i} keeps its time"
        );
        assert_eq!(values(m)[0], (1, Some(PV::DoubleValue(i as f64))));
    }
    rig.wait_rows(0).await;

    // Then live.
    rig.store_poll(&meter_poll(4, T0 + 4_000)).await;
    let live = host.expect("live", "DDATA", 1).await;
    let p = live[0].decode();
    assert_eq!(p.seq, Some(5));
    assert!(p.metrics.iter().all(|x| x.is_historical.is_none()));
    assert_eq!(values(&live[0])[0], (1, Some(PV::DoubleValue(4.0))));
    rig.wait_rows(0).await;

    // The host goes away while the node is born. A poll the sink took before it saw the
    // STATE may still go out live; one it had not written yet stays and becomes history. Either
    // way it arrives.
    host.state(false, 3).await;
    rig.store_poll(&meter_poll(5, T0 + 5_000)).await;
    let early = host.collect(QUIET, |_| false).await;
    assert!(
        early.iter().all(|m| m.kind() == "DDATA"),
        "host offline: no births: {:?}",
        kinds(&early)
    );

    // A restart during the outage: clean stop (NDEATH 0); a poll stored while stopped; a new
    // task on the same store, which hears the retained offline STATE and stays silent.
    cancel.cancel();
    within(WAIT, "clean stop", task).await.unwrap().unwrap();
    let death = host.expect("clean stop", "NDEATH", 1).await;
    assert_eq!(death.last().unwrap().bd_seq(), 0);
    rig.store_poll(&meter_poll(6, T0 + 6_000)).await;
    let queued = rig.rows().await;
    assert!((1..=2).contains(&queued), "{queued} rows");
    let (cancel, task) = start(&rig);
    rig.wait_connects(2).await;
    let nothing = host.collect(QUIET, |_| false).await;
    assert!(nothing.is_empty(), "the retained STATE says offline");
    assert_eq!(rig.rows().await, queued, "the queue survives the restart");

    // Back online: bdSeq 1, births primed from the queue, the outage's polls as history.
    host.state(true, 4).await;
    let got = host
        .expect("births and history after restart", "DDATA", queued as usize)
        .await;
    assert_eq!(&kinds(&got)[..2], ["NBIRTH", "DBIRTH"]);
    assert_eq!(count(&got, "DDATA"), queued as usize);
    assert_seq_runs_on(&got);
    assert_eq!(got[0].bd_seq(), 1);
    assert_eq!(
        got[1].decode().metrics[0].value,
        Some(PV::DoubleValue(6.0)),
        "primed from the queue"
    );
    for m in &got[2..] {
        assert!(
            m.decode()
                .metrics
                .iter()
                .all(|x| x.is_historical == Some(true))
        );
    }
    let mut arrived: Vec<_> = early
        .iter()
        .chain(&got[2..])
        .map(|m| values(m)[0].clone())
        .collect();
    arrived.dedup();
    assert_eq!(
        arrived,
        [
            (1, Some(PV::DoubleValue(5.0))),
            (1, Some(PV::DoubleValue(6.0)))
        ],
        "nothing lost, in order"
    );
    rig.wait_rows(0).await;

    // NCMD rebirth: fresh births, same bdSeq, seq from 0; then data continues from there.
    host.rebirth("plant", "gw-01").await;
    let births = host.expect("rebirth", "DBIRTH", 1).await;
    assert_eq!(kinds(&births), ["NBIRTH", "DBIRTH"]);
    assert_eq!(births[0].bd_seq(), 1);
    assert_seq_runs_on(&births);
    rig.store_poll(&meter_poll(7, T0 + 7_000)).await;
    let live = host.expect("live after rebirth", "DDATA", 1).await;
    assert_eq!(live[0].seq(), 2);
    // A command for a device is ignored, and nothing breaks.
    host.client
        .publish(
            "spBv1.0/plant/DCMD/gw-01/meter",
            QoS::AtLeastOnce,
            false,
            Payload::default().encode_to_vec(),
        )
        .await
        .unwrap();
    rig.store_poll(&meter_poll(8, T0 + 8_000)).await;
    let live = host.expect("live after a DCMD", "DDATA", 1).await;
    assert_eq!(live[0].seq(), 3);

    cancel.cancel();
    within(WAIT, "clean stop", task).await.unwrap().unwrap();
    assert_eq!(rig.rows().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_fires_the_will_and_rows_stored_meanwhile_come_back_as_history() {
    let broker = EmbeddedBroker::start().unwrap();
    let proxy = Proxy::start(broker.addr).await;
    let mut host = Host::start(broker.addr, "host-c").await;
    let mut rig = Rig::new();
    let (cancel, task) = rig.sink(
        plan(proxy.addr.port(), Protocol::V311, "pw-spb-c"),
        node_config(None),
        vec![meter()],
    );
    let births = host.expect("births", "DBIRTH", 1).await;
    assert_eq!(births[0].bd_seq(), 0);
    rig.store_poll(&meter_poll(1, T0 + 1_000)).await;
    host.expect("live", "DDATA", 1).await;
    rig.wait_rows(0).await;

    // The bdSeq of the current connection's NBIRTH; its will must carry the same.
    let mut connection_bd = births[0].bd_seq();
    for outage in 0..2 {
        proxy.cut();
        let death = host.expect("will", "NDEATH", 1).await;
        let death = death.iter().find(|m| m.kind() == "NDEATH").unwrap();
        assert_eq!(
            death.bd_seq(),
            connection_bd,
            "outage {outage}: the will is the NDEATH of this connection's bdSeq"
        );
        rig.wait_disconnected().await;
        let i = 2 + 2 * outage;
        rig.store_poll(&meter_poll(i, T0 + i * 1_000)).await;
        rig.store_poll(&meter_poll(i + 1, T0 + (i + 1) * 1_000))
            .await;
        assert_eq!(rig.rows().await, 2);
        proxy.restore();
        let got = host.expect("births and history", "DDATA", 2).await;
        assert_eq!(kinds(&got), ["NBIRTH", "DBIRTH", "DDATA", "DDATA"]);
        assert_seq_runs_on(&got);
        // Every failed attempt during the outage took a bdSeq; the one saved is the next.
        let bd = got[0].bd_seq();
        assert!(bd > connection_bd, "a new connection, a new bdSeq");
        assert_eq!(
            rig.saved_bd_seq().await,
            format!(r#"{{"next_bd_seq":{}}}"#, bd + 1)
        );
        for (m, v) in got[2..].iter().zip([i, i + 1]) {
            assert!(
                m.decode()
                    .metrics
                    .iter()
                    .all(|x| x.is_historical == Some(true))
            );
            assert_eq!(values(m)[0], (1, Some(PV::DoubleValue(v as f64))));
        }
        rig.wait_rows(0).await;
        connection_bd = bd;
    }
    cancel.cancel();
    within(WAIT, "clean stop", task).await.unwrap().unwrap();
}

/// Whether the interop script's Python dependencies are importable.
fn python_deps() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import pysparkplug, paho.mqtt.client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `tests/interop/sparkplug_live.py` as the primary host on the broker at `broker_port`
/// while this test runs the sink and stores two polls a second, as a daemon would; when the
/// script asks for the NDEATH, the sink task is killed so that the broker publishes the will.
/// Fails the test with the script's output unless every check passed.
async fn run_interop(broker_port: u16, qos_check: bool) {
    let mut rig = Rig::new();
    let mut command = std::process::Command::new("timeout");
    command
        .arg("90")
        .arg("python3")
        .arg(crate::harness::repo().join("tests/interop/sparkplug_live.py"))
        .args(["--port", &broker_port.to_string()])
        .args(["--group", "plant", "--node", "gw-01", "--host-id", "scada"])
        .args([
            "--min-ddata",
            "6",
            "--timeout",
            "60",
            "--await-ndeath-s",
            "10",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if !qos_check {
        command.arg("--no-qos-check");
    }
    // tokio's `process` feature is off: the script runs on a blocking thread, which passes its
    // stdout on line by line.
    let (lines_tx, mut lines) = mpsc::channel::<String>(1024);
    let script = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            lines_tx.blocking_send(line.clone()).ok();
            all.push_str(&line);
            all.push('\n');
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            all,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    let (_cancel, mut task) = rig.sink(
        plan(broker_port, Protocol::V311, "pw-spb-interop"),
        node_config(Some("scada")),
        vec![meter(), pump()],
    );
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // Bounded: 90 s of polls at most, as long as the script may run.
    for i in 0..360 {
        tokio::select! {
            line = lines.recv() => match line {
                Some(l) if l.contains("awaiting NDEATH") => task.abort(),
                Some(_) => {}
                None => break,
            },
            _ = tick.tick() => rig.store_poll(&meter_poll(i, T0 + i * 500)).await,
        }
    }
    let (status, stdout, stderr) = within(WAIT, "the script's exit", script).await.unwrap();
    task.abort();
    let _ended = (&mut task).await;
    println!("{stdout}");
    assert!(
        status.success(),
        "sparkplug_live.py failed ({status}):\n{stdout}\n{stderr}"
    );
}

/// The interop script against the embedded broker. Ignored by default: it needs paho-mqtt and
/// pysparkplug and takes about 10 s; `cargo test --test it sparkplug_live -- --ignored`.
/// rumqttd forwards at the subscription's QoS, so the QoS check is left to mosquitto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with paho-mqtt 1.6 and pysparkplug; slow"]
async fn interop_script_judges_the_sink_on_the_embedded_broker() {
    assert!(python_deps(), "pip install paho-mqtt==1.6.1 pysparkplug");
    let broker = EmbeddedBroker::start().unwrap();
    run_interop(broker.addr.port(), false).await;
}

/// The same against mosquitto, the reference broker: it forwards at min(published, subscribed)
/// QoS, so the script also checks births and data at QoS 0 and the will at QoS 1. Ignored by
/// default: it needs mosquitto (`MOSQUITTO` overrides /usr/sbin/mosquitto) and the packages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and python3 with paho-mqtt 1.6 and pysparkplug; slow"]
async fn interop_script_judges_the_sink_on_mosquitto() {
    assert!(python_deps(), "pip install paho-mqtt==1.6.1 pysparkplug");
    let broker = Mosquitto::start();
    run_interop(broker.port, true).await;
}

/// `plantwatch run` with a JSON sink and a Sparkplug sink on one broker: the node births with
/// every simulated device, sends DDATA by alias, and the JSON sink keeps its own topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_a_sparkplug_sink_beside_a_json_sink() {
    use crate::harness::daemon::Daemon;
    use crate::harness::subscriber::Subscriber;

    let broker = EmbeddedBroker::start().unwrap();
    let (_sim, plant) = crate::daemon::plant(2, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start(broker.addr, "spb-watch").await;
    let mut json = Subscriber::start(broker.addr, "tsj/telemetry/#").await;
    let config = format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n\
         [[mqtt]]\nname = \"plant\"\nhost = \"127.0.0.1\"\nport = {p}\ntopic_prefix = \"tsj\"\n\n\
         [[mqtt]]\nname = \"scada\"\nformat = \"sparkplug_b\"\nhost = \"127.0.0.1\"\nport = {p}\n\
         [mqtt.sparkplug]\ngroup_id = \"plant\"\nedge_node_id = \"gw-9\"\n\n\
         [store]\npath = \"{}\"\ncommit_window_ms = 20\n\n{plant}",
        dir.path().join("state.db").display(),
        p = broker.addr.port()
    );
    let daemon = Daemon::spawn(dir.path(), &config);
    let got = host
        .collect(WAIT, |g| count(g, "DBIRTH") >= 2 && count(g, "DDATA") >= 6)
        .await;
    assert!(
        count(&got, "NBIRTH") >= 1 && count(&got, "DBIRTH") >= 2 && count(&got, "DDATA") >= 6,
        "births and data from the daemon: {:?}\n{}",
        kinds(&got),
        daemon.log()
    );
    assert!(got.iter().all(|m| m.topic.starts_with("spBv1.0/plant/")));
    let nbirth = got.iter().find(|m| m.kind() == "NBIRTH").unwrap();
    assert_eq!(nbirth.topic, "spBv1.0/plant/NBIRTH/gw-9");
    let dbirth = got.iter().find(|m| m.kind() == "DBIRTH").unwrap().decode();
    assert!(
        dbirth
            .metrics
            .iter()
            .any(|m| m.name.as_deref() == Some("motor_temp") && m.alias.is_some()),
        "the birth names the profile's points with aliases: {dbirth:?}"
    );
    for m in got.iter().filter(|m| m.kind() == "DDATA") {
        assert!(
            m.decode()
                .metrics
                .iter()
                .all(|x| x.name.is_none() && x.alias.is_some()),
            "data by alias only"
        );
    }
    let telemetry = json.collect_until(WAIT, |g| g.len() >= 4).await;
    assert!(
        telemetry.len() >= 4 && telemetry.iter().all(|m| m.json()["v"] == 1),
        "the JSON sink delivers beside it\n{}",
        daemon.log()
    );
}

/// Issue 20, defect 5: one spoofed `STATE` `{"online":false,"timestamp":u64::MAX}` stopped
/// all DDATA, and the real host's later STATEs were ignored as stale until a restart. Now a
/// far-future STATE is refused, and data keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_a_spoofed_far_future_state_does_not_silence_the_node() {
    let broker = EmbeddedBroker::start().unwrap();
    let mut host = Host::start(broker.addr, "host-spoof").await;
    let mut rig = Rig::new();
    host.state(true, 2).await;
    let (cancel, task) = rig.sink(
        plan(broker.addr.port(), Protocol::V311, "pw-spb-spoof"),
        node_config(Some("scada")),
        vec![meter()],
    );
    rig.wait_connects(1).await;
    host.expect("births", "DBIRTH", 1).await;
    // The spoof, as anyone with publish rights on the broker could send it.
    host.state(false, u64::MAX).await;
    rig.store_poll(&meter_poll(1, T0 + 1_000)).await;
    let got = host.expect("data after the spoof", "DDATA", 1).await;
    assert_eq!(
        values(got.last().unwrap())[0],
        (1, Some(PV::DoubleValue(1.0)))
    );
    cancel.cancel();
    within(WAIT, "clean stop", task).await.unwrap().unwrap();
}
