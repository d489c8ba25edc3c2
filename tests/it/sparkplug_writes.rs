//! Sparkplug B DCMD metric writes end to end (issue 17, slice 5): simulator → `plantwatch
//! run` with a Sparkplug sink → embedded broker → a host. With `[mqtt.sparkplug] writes =
//! true` a DCMD lands on the device and the DDATA carries the value read back; a write to a
//! point that is not writable, or out of range, is refused, audited and writes nothing; and by
//! default every DCMD write is refused and audited, nothing written.

use std::time::Duration;

use plantwatch::model::Value;
use plantwatch::sink::mqtt::broker::EmbeddedBroker;
use plantwatch::sparkplug::proto::Payload;
use plantwatch::sparkplug::proto::payload::Metric;
use plantwatch::sparkplug::proto::payload::metric::Value as PV;
use prost::Message as _;
use serde_json::Value as Json;

use crate::harness::commands::{audit_cli, audit_rows, held, serve};
use crate::harness::daemon::Daemon;
use crate::harness::eventually;
use crate::sparkplug_live::{Got, Host, count, kinds};

const WAIT: Duration = Duration::from_secs(20);

/// One PLC: `sp` writable within 0..=100, `ro` read only. Polled once a minute, so that the
/// polls (which report by exception too) send nothing after the first.
const PLANT: &str = "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\n\
    [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 60000\n\
    [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n\
    [devices.points.ro]\naddress = 10\ntype = \"u16\"\n";

struct Site {
    _broker: EmbeddedBroker,
    sim: crate::harness::Simulator,
    dir: tempfile::TempDir,
    host: Host,
    daemon: Daemon,
    /// The alias of each point, from the DBIRTH.
    aliases: Vec<(String, u64)>,
}

impl Site {
    /// The daemon with one Sparkplug sink (`writes` as given, or left out), born before the
    /// host.
    async fn start(writes: Option<bool>) -> Self {
        let broker = EmbeddedBroker::start().unwrap();
        let (sim, plant) = serve(PLANT).await;
        let dir = tempfile::tempdir().unwrap();
        let mut host = Host::start(broker.addr, "scada-writes").await;
        let writes = writes.map_or(String::new(), |w| format!("writes = {w}\n"));
        let config = format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n\n\
             [[mqtt]]\nname = \"scada\"\nformat = \"sparkplug_b\"\nhost = \"127.0.0.1\"\nport = {}\n\
             [mqtt.sparkplug]\ngroup_id = \"plant\"\nedge_node_id = \"gw\"\n{writes}\n\
             [store]\npath = \"{}\"\ncommit_window_ms = 20\n\n{plant}",
            broker.addr.port(),
            dir.path().join("state.db").display(),
        );
        let daemon = Daemon::spawn(dir.path(), &config);
        let got = host.collect(WAIT, |g| count(g, "DBIRTH") >= 1).await;
        let dbirth = got
            .iter()
            .find(|m| m.kind() == "DBIRTH")
            .unwrap_or_else(|| panic!("no DBIRTH: {:?}\n{}", kinds(&got), daemon.log()));
        let aliases = dbirth
            .decode()
            .metrics
            .iter()
            .filter_map(|m| Some((m.name.clone()?, m.alias?)))
            .collect();
        Self {
            _broker: broker,
            sim,
            dir,
            host,
            daemon,
            aliases,
        }
    }

    fn alias(&self, point: &str) -> u64 {
        self.aliases
            .iter()
            .find(|(name, _)| name == point)
            .map(|(_, alias)| *alias)
            .unwrap_or_else(|| panic!("{point} is not in the DBIRTH: {:?}", self.aliases))
    }

    /// A DCMD to `plc` setting the metric `name` to `value`.
    async fn dcmd(&self, name: &str, value: PV) {
        let payload = Payload {
            timestamp: Some(1),
            metrics: vec![Metric {
                name: Some(name.to_owned()),
                value: Some(value),
                ..Metric::default()
            }],
            ..Payload::default()
        };
        self.host
            .publish("spBv1.0/plant/DCMD/gw/plc", payload.encode_to_vec())
            .await;
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }

    /// Waits (bounded) until the audit trail holds `n` rows from the Sparkplug sink; they are
    /// returned.
    async fn sparkplug_rows(&self, n: usize) -> Vec<Json> {
        let state = self.state();
        eventually(WAIT, "Sparkplug audit rows", || {
            let rows: Vec<Json> = audit_rows(&state)
                .into_iter()
                .filter(|r| r["source"] == "sparkplug:scada")
                .collect();
            (rows.len() >= n).then_some(rows)
        })
        .await
    }

    async fn stop(mut self) {
        self.daemon.signal("TERM");
        assert_eq!(
            self.daemon.wait_exit(Duration::from_secs(15)),
            Some(0),
            "{}",
            self.daemon.log()
        );
        self.sim.shutdown().await;
    }
}

/// The value of the metric with `alias` in a DDATA, if it carries it.
fn value_of(m: &Got, alias: u64) -> Option<PV> {
    m.decode()
        .metrics
        .into_iter()
        .find(|x| x.alias == Some(alias))
        .and_then(|x| x.value)
}

/// `outcome` or `outcome:reason` of each row, in order.
fn outcomes(rows: &[Json]) -> Vec<String> {
    rows.iter()
        .map(|r| match r["reason"].as_str() {
            Some(reason) => format!("{}:{reason}", r["outcome"].as_str().unwrap()),
            None => r["outcome"].as_str().unwrap().to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_dcmd_write_lands_and_ddata_carries_the_value_read_back() {
    let mut site = Site::start(Some(true)).await;
    let sp = site.alias("sp");
    assert_ne!(held(&site.sim, "plc", "sp"), Value::F64(42.5));
    site.dcmd("sp", PV::FloatValue(42.5)).await;
    let written = |m: &Got| m.kind() == "DDATA" && value_of(m, sp) == Some(PV::FloatValue(42.5));
    let got = site.host.collect(WAIT, |g| g.iter().any(written)).await;
    let ddata = got.iter().find(|m| written(m)).unwrap_or_else(|| {
        panic!(
            "no DDATA of sp = 42.5: {:?}\n{}",
            kinds(&got),
            site.daemon.log()
        )
    });
    assert_eq!(ddata.topic, "spBv1.0/plant/DDATA/gw/plc");
    assert_eq!(held(&site.sim, "plc", "sp"), Value::F64(42.5));

    // Refused, audited, nothing written: a point that is not writable, a value out of range,
    // a metric the DBIRTH never declared.
    let before_ro = held(&site.sim, "plc", "ro");
    site.dcmd("ro", PV::IntValue(7)).await;
    site.dcmd("sp", PV::FloatValue(500.0)).await;
    site.dcmd("nope", PV::FloatValue(1.0)).await;
    let rows = site.sparkplug_rows(5).await;
    assert_eq!(
        outcomes(&rows),
        [
            "intent",
            "done",
            "refused:not_writable",
            "refused:out_of_range",
            "refused:malformed"
        ],
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r["key"].is_null()), "{rows:?}");
    assert_eq!(rows[0]["command"], "write");
    assert_eq!(rows[0]["id"], "\"DCMD plc/sp\"");
    assert!(
        rows[1]["reply"].as_str().unwrap().contains("42.5"),
        "{rows:?}"
    );
    assert_eq!(held(&site.sim, "plc", "sp"), Value::F64(42.5));
    assert_eq!(held(&site.sim, "plc", "ro"), before_ro);
    // No answer to a refusal: the host holds what was there.
    let more = site
        .host
        .collect(Duration::from_millis(700), |_| false)
        .await;
    assert!(
        more.iter()
            .all(|m| value_of(m, sp) != Some(PV::FloatValue(500.0))),
        "a refused write was answered: {:?}",
        kinds(&more)
    );
    let (ok, text) = audit_cli(&site.state(), &["verify"]);
    assert!(ok, "{text}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_sparkplug_writes_are_off_unless_the_config_turns_them_on() {
    let mut site = Site::start(None).await;
    let sp = site.alias("sp");
    let before = held(&site.sim, "plc", "sp");
    site.dcmd("sp", PV::FloatValue(42.5)).await;
    let rows = site.sparkplug_rows(1).await;
    assert_eq!(outcomes(&rows), ["refused:disabled"], "{rows:?}");
    assert!(
        rows[0]["reply"].as_str().unwrap().contains("writes = true"),
        "the refusal names the key that turns writes on: {rows:?}"
    );
    assert_eq!(held(&site.sim, "plc", "sp"), before);
    let more = site
        .host
        .collect(Duration::from_millis(700), |_| false)
        .await;
    assert!(
        more.iter()
            .all(|m| value_of(m, sp) != Some(PV::FloatValue(42.5))),
        "{:?}",
        kinds(&more)
    );
    site.stop().await;
}
