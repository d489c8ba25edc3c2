//! Writes: writable points in the config, the write path through a link's task, against the
//! simulator over real TCP sockets and RS-485 ptys.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::Simulator;
use plantwatch::acquire::write::{WriteError, WriteHandle, WriteLimits, WriteOutcome};
use plantwatch::acquire::{AcquireStats, spawn_links_with_writes};
use plantwatch::clock::{Clock, SystemClock};
use plantwatch::config::plan::Function;
use plantwatch::decode::{ByteOrder, Codec, DataType, decode, decode_bit};
use plantwatch::model::{Quality, SampleBatch, Value};
use plantwatch::sim::{Bind, Fault};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::harness::{plan, within};

const GATEWAY: &str = "[gateway]\nsite = \"test\"\nid = \"gw\"\n";

/// The simulator, the link tasks serving writes, and where their batches go.
struct Rig {
    /// `None` when the links go to an outside peer.
    sim: Option<Simulator>,
    writes: WriteHandle,
    batches: mpsc::Receiver<SampleBatch>,
    stats: AcquireStats,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Rig {
    /// Serves `config`'s devices from the simulator and polls them there.
    async fn start(config: &str) -> Self {
        let sim = Simulator::start(&plan(config), Bind::LOOPBACK)
            .await
            .unwrap();
        let plan = sim.plan.clone();
        Self::run(&plan, Some(sim))
    }

    /// Polls `config`'s devices where it says, with no simulator.
    fn connect(config: &str) -> Self {
        Self::run(&plan(config), None)
    }

    fn run(plan: &plantwatch::config::Plan, sim: Option<Simulator>) -> Self {
        let writes = WriteHandle::new();
        let (tx, batches) = mpsc::channel(64);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let stats =
            spawn_links_with_writes(plan.fleet(), &writes, &tx, &clock, &cancel, &mut tasks);
        Self {
            sim,
            writes,
            batches,
            stats,
            cancel,
            tasks,
        }
    }

    fn sim(&self) -> &Simulator {
        self.sim.as_ref().unwrap()
    }

    async fn write(&self, device: &str, point: &str, value: Value) -> WriteOutcome {
        within(
            Duration::from_secs(10),
            "write",
            self.writes.write(device, point, value),
        )
        .await
    }

    /// What the simulator holds for `device`/`point`, decoded as a client would.
    fn held(&self, device: &str, point: &str) -> Value {
        let p = self
            .sim()
            .plan
            .device(device)
            .unwrap()
            .points
            .iter()
            .find(|p| p.name.as_str() == point)
            .unwrap()
            .clone();
        let raw = self
            .sim()
            .device(device)
            .unwrap()
            .registers(p.function, p.address, p.width());
        if p.function.is_bits() {
            decode_bit(raw[0] != 0, &p.codec)
        } else {
            decode(&raw, &p.codec).unwrap()
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
    }
}

/// A writable point of each type in each order, with a value inside its limits that the
/// type's default codec turns into something other than zero.
pub(crate) fn every_type_and_order() -> (String, Vec<(String, Value)>) {
    let mut text = String::new();
    let mut values = Vec::new();
    let mut address = 0u32;
    for data_type in DataType::ALL {
        for order in ByteOrder::ALL {
            let name = format!("{}_{}", data_type.name(), order.to_string().to_lowercase());
            let (keys, value) = match data_type {
                DataType::Bool => (
                    format!("function = \"coil\"\naddress = {address}\nallowed = [false, true]\n"),
                    Value::Bool(true),
                ),
                DataType::Bit => (
                    format!(
                        "address = {address}\ntype = \"bit\"\nbit = 9\norder = \"{order}\"\nallowed = [0, 1]\n"
                    ),
                    Value::Bool(true),
                ),
                DataType::String => (
                    format!(
                        "address = {address}\ntype = \"string\"\nlength = 3\norder = \"{order}\"\nallowed = [\"AUTO\", \"HAND\"]\n"
                    ),
                    Value::Str("HAND".into()),
                ),
                DataType::F32 | DataType::F64 => (
                    format!(
                        "address = {address}\ntype = \"{data_type}\"\norder = \"{order}\"\nmin = -100.0\nmax = 100.0\n"
                    ),
                    Value::F64(-12.25),
                ),
                DataType::I16 | DataType::I32 | DataType::I64 => (
                    format!(
                        "address = {address}\ntype = \"{data_type}\"\norder = \"{order}\"\nmin = -30000\nmax = 30000\n"
                    ),
                    Value::I64(-4660),
                ),
                _ => (
                    format!(
                        "address = {address}\ntype = \"{data_type}\"\norder = \"{order}\"\nscale = 0.1\nmin = 0\nmax = 999\n"
                    ),
                    Value::F64(123.4),
                ),
            };
            text.push_str(&format!("[devices.points.{name}]\n{keys}writable = true\n"));
            values.push((name, value));
            address += 10;
        }
    }
    (text, values)
}

async fn every_type_and_order_lands_on(link: &str, device_keys: &str) {
    let (points, values) = every_type_and_order();
    let rig = Rig::start(&format!(
        "{GATEWAY}{link}[[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 3\n\
         poll_interval_ms = 60000\n{device_keys}{points}"
    ))
    .await;
    assert_eq!(values.len(), 52);
    for (point, value) in &values {
        let written = rig.write("plc", point, value.clone()).await;
        let written = written.unwrap_or_else(|err| panic!("{point}: {err}"));
        let held = rig.held("plc", point);
        let same = match (&held, value) {
            (Value::F64(h), v) => (h - v.as_f64().unwrap()).abs() < 1e-9,
            (h, v) => h == v,
        };
        assert!(same, "{point}: wrote {value}, device holds {held}");
        assert_eq!(written.verified.as_ref(), Some(&written.written), "{point}");
        assert_eq!(written.written, held, "{point}");
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_write_lands_and_reads_back_in_every_type_and_order_over_tcp() {
    every_type_and_order_lands_on(
        "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n",
        "",
    )
    .await;
}

#[tokio::test]
async fn a_write_lands_and_reads_back_in_every_type_and_order_over_rtu() {
    every_type_and_order_lands_on(
        "[[links]]\nname = \"l\"\nkind = \"rtu\"\npath = \"/dev/null\"\nbaud = 115200\n",
        "write_multiple = true\n",
    )
    .await;
}

const SETPOINTS: &str = "[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
    [[devices]]\nname = \"plc\"\nlink = \"l\"\npoll_interval_ms = 60000\n\
    timeout_ms = 200\noffline_after_failures = 1\noffline_retry_ms = 60000\n\
    [devices.points.sp]\naddress = 0\ntype = \"u16\"\nscale = 0.1\nwritable = true\nmin = 10.0\nmax = 90.0\nmax_rate = 2\n\
    [devices.points.mode]\naddress = 1\nwritable = true\nallowed = [0, 2]\n\
    [devices.points.fixed]\naddress = 2\n\
    [devices.points.temp]\nfunction = \"input\"\naddress = 0\n\
    [devices.points.run]\nfunction = \"coil\"\naddress = 0\nwritable = true\nallowed = [true, false]\nverify = false\n";

#[tokio::test]
async fn function_codes_follow_the_type_and_write_multiple() {
    let rig = Rig::start(&format!("{GATEWAY}{SETPOINTS}")).await;
    let sp = rig.write("plc", "sp", Value::F64(50.0)).await.unwrap();
    assert_eq!((sp.function, &sp.written), (6, &Value::F64(50.0)));
    let run = rig.write("plc", "run", Value::Bool(true)).await.unwrap();
    assert_eq!((run.function, run.verified), (5, None), "verify = false");
    assert_eq!(rig.held("plc", "run"), Value::Bool(true));
    rig.stop().await;
    let multiple = SETPOINTS.replace(
        "poll_interval_ms = 60000\n",
        "poll_interval_ms = 60000\nwrite_multiple = true\n",
    );
    let rig = Rig::start(&format!("{GATEWAY}{multiple}")).await;
    let sp = rig.write("plc", "sp", Value::F64(50.0)).await.unwrap();
    assert_eq!(sp.function, 16);
    assert_eq!(
        rig.write("plc", "run", Value::I64(1))
            .await
            .unwrap()
            .function,
        15
    );
    rig.stop().await;
}

#[tokio::test]
async fn every_refusal_names_the_device_and_point_and_writes_nothing() {
    let rig = Rig::start(&format!("{GATEWAY}{SETPOINTS}")).await;
    let sim = rig.sim().device("plc").unwrap().clone();
    let before = sim.registers(Function::Holding, 0, 3);
    let refusals: [(&str, Value, &str); 7] = [
        ("fixed", Value::I64(1), "plc/fixed: not writable"),
        ("temp", Value::I64(1), "plc/temp: not writable"),
        ("nope", Value::I64(1), "plc/nope: no such point"),
        (
            "sp",
            Value::F64(90.5),
            "plc/sp: 90.5 is out of range (10 to 90)",
        ),
        (
            "sp",
            Value::Str("50".into()),
            "plc/sp: Str(\"50\") is not a number",
        ),
        ("mode", Value::I64(1), "plc/mode: 1 is out of range (one of"),
        ("run", Value::I64(3), "plc/run: I64(3) is not a bool"),
    ];
    for (point, value, message) in refusals {
        let err = rig.write("plc", point, value).await.unwrap_err();
        assert!(err.to_string().starts_with(message), "{err}");
    }
    let err = rig.write("boiler", "sp", Value::I64(20)).await.unwrap_err();
    assert_eq!(err.to_string(), "device `boiler`: no such device");
    assert_eq!(
        sim.registers(Function::Holding, 0, 3),
        before,
        "nothing written"
    );

    // Over rate: two writes a minute, the third is refused and not sent.
    rig.write("plc", "sp", Value::F64(20.0)).await.unwrap();
    rig.write("plc", "sp", Value::F64(30.0)).await.unwrap();
    let err = rig.write("plc", "sp", Value::F64(40.0)).await.unwrap_err();
    assert!(
        matches!(err, WriteError::OverRate { max_rate: 2, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "plc/sp: over its rate of 2 writes a minute"
    );
    assert_eq!(rig.held("plc", "sp"), Value::F64(30.0));

    // The device's own refusals: exceptions 01 to 04, then no answer at all.
    for code in 1..=4u8 {
        sim.inject(Fault::WriteException(code));
        let err = rig.write("plc", "mode", Value::I64(2)).await.unwrap_err();
        assert_eq!(
            err,
            WriteError::Exception {
                device: "plc".into(),
                point: "mode".into(),
                code
            }
        );
        assert_eq!(
            err.to_string(),
            format!("plc/mode: Modbus exception {code:02}")
        );
        sim.clear_faults();
    }
    assert_eq!(rig.held("plc", "mode"), Value::I64(0));
    sim.inject(Fault::WriteNoAnswer);
    let err = rig.write("plc", "mode", Value::I64(2)).await.unwrap_err();
    assert_eq!(err.to_string(), "plc/mode: timeout");
    assert_eq!(rig.held("plc", "mode"), Value::I64(0));
    rig.stop().await;
}

#[tokio::test]
async fn a_write_to_an_offline_device_is_refused_without_a_frame() {
    let config = format!("{GATEWAY}{SETPOINTS}")
        .replace("poll_interval_ms = 60000\n", "poll_interval_ms = 100\n");
    let mut rig = Rig::start(&config).await;
    let sim = rig.sim().device("plc").unwrap().clone();
    sim.inject(Fault::NoAnswer);
    // One silent cycle marks it offline (offline_after_failures = 1): wait for a comm_lost batch.
    within(Duration::from_secs(5), "offline", async {
        loop {
            let batch = rig.batches.recv().await.unwrap();
            if batch.samples[0].quality.to_string() == "bad:comm_lost" {
                break;
            }
        }
    })
    .await;
    let stats = &rig.stats.devices[0].1;
    let requests = stats.requests.load(Ordering::Relaxed);
    let err = rig.write("plc", "sp", Value::F64(20.0)).await.unwrap_err();
    assert_eq!(err.to_string(), "plc/sp: device offline");
    assert_eq!(
        stats.requests.load(Ordering::Relaxed),
        requests,
        "no frame sent"
    );
    rig.stop().await;
}

#[tokio::test]
async fn writes_during_polling_on_a_shared_rs485_bus_keep_the_poll_grid() {
    // Two devices on one pty bus, each polled every 200 ms, while a write a poll period goes
    // to one of them: every write lands, every poll is good, and no tick is missed or moved.
    let period = 200i64;
    let mut rig = Rig::start(&format!(
        "{GATEWAY}[[links]]\nname = \"bus\"\nkind = \"rtu\"\npath = \"/dev/null\"\nbaud = 38400\n\
         [[devices]]\nname = \"meter\"\nlink = \"bus\"\nunit_id = 1\nprofile = \"eastron-sdm630\"\npoll_interval_ms = {period}\n\
         [[devices]]\nname = \"plc\"\nlink = \"bus\"\nunit_id = 2\npoll_interval_ms = {period}\n\
         [devices.points.sp]\naddress = 0\ntype = \"f32\"\nwritable = true\nmin = 0\nmax = 100\n\
         [devices.points.state]\naddress = 10\n"
    ))
    .await;
    let writes = rig.writes.clone();
    let writer = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for i in 0..15u32 {
            outcomes.push(writes.write("plc", "sp", Value::F64(f64::from(i))).await);
            tokio::time::sleep(Duration::from_millis(130)).await;
        }
        outcomes
    });
    let mut ticks: std::collections::HashMap<String, Vec<i64>> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for _ in 0..200 {
        let Ok(Some(batch)) = tokio::time::timeout_at(deadline, rig.batches.recv()).await else {
            break;
        };
        for s in &batch.samples {
            assert_eq!(s.quality, Quality::Good, "{}/{}", batch.device, s.point);
        }
        ticks
            .entry(batch.device.to_string())
            .or_default()
            .push(batch.tick.0);
        if writer.is_finished() && ticks.values().all(|t| t.len() >= 12) {
            break;
        }
    }
    let outcomes = within(Duration::from_secs(10), "writes", writer)
        .await
        .unwrap();
    for (i, outcome) in (0u32..).zip(&outcomes) {
        let written = outcome
            .as_ref()
            .unwrap_or_else(|err| panic!("write {i}: {err}"));
        assert_eq!(written.verified, Some(Value::F64(f64::from(i))));
    }
    for (device, stats) in &rig.stats.devices {
        assert_eq!(
            stats.missed_ticks.load(Ordering::Relaxed),
            0,
            "{device} missed ticks"
        );
    }
    let mut worst = 0;
    for (device, t) in &ticks {
        assert!(t.len() >= 12, "{device} polled {} times", t.len());
        // On the grid: poll i starts within one period of its slot, i periods after the first
        // poll (each start is late by less than a period, from bus traffic and scheduling). A
        // skipped or bunched tick, or drift, puts a poll a whole period off.
        let off: Vec<i64> = (0i64..)
            .zip(t)
            .map(|(i, x)| x - t[0] - i * period)
            .collect();
        assert!(
            off.iter().all(|o| o.abs() < period),
            "{device}: polls off their grid slots (ms): {off:?}"
        );
        worst = worst.max(off.iter().map(|o| o.abs()).max().unwrap());
    }
    println!(
        "grid: {} polls of meter, {} of plc, 15 writes, 0 missed ticks, largest offset from \
         the slot {worst} ms (period {period} ms)",
        ticks["meter"].len(),
        ticks["plc"].len(),
    );
    rig.stop().await;
}

#[test]
fn writable_points_resolve_to_their_limits() {
    let plan = plan(&format!("{GATEWAY}{SETPOINTS}"));
    let device = plan.device("plc").unwrap();
    assert!(!device.write_multiple);
    let point = |n: &str| device.points.iter().find(|p| p.name.as_str() == n).unwrap();
    let sp = point("sp").write.clone().unwrap();
    assert_eq!(
        sp.limits,
        WriteLimits::Range {
            min: 10.0,
            max: 90.0
        }
    );
    assert_eq!((sp.max_rate, sp.verify), (Some(2), true));
    let run = point("run").write.clone().unwrap();
    assert_eq!(
        run.limits,
        WriteLimits::Allowed(vec![Value::Bool(true), Value::Bool(false)])
    );
    assert!(!run.verify);
    assert!(
        point("fixed").write.is_none(),
        "read-only unless it says so"
    );
    assert!(point("temp").write.is_none());
    // The codec is the one reads use: writes go through the same scale.
    assert_eq!(
        point("sp").codec,
        Codec {
            scale: 0.1,
            ..Codec::plain(DataType::U16)
        }
    );
}

/// The pymodbus peer of tests/interop, killed when dropped.
struct Pymodbus(std::process::Child);

impl Drop for Pymodbus {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts tests/interop/pymodbus_server.py on two free ports (Modbus TCP, RTU over TCP);
/// `None` (skipped, or failed under CI) without pymodbus.
async fn pymodbus() -> Option<(Pymodbus, u16, u16)> {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let present = Command::new("python3")
        .args(["-c", "import pymodbus"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        crate::harness::skip_without("pymodbus", "pip install pymodbus; .ci/run installs it");
        return None;
    }
    let (tcp, rtu) = (free_port(), free_port());
    let mut child = Command::new("python3")
        .arg(crate::harness::repo().join("tests/interop/pymodbus_server.py"))
        .args([
            "--tcp",
            &tcp.to_string(),
            "--rtu-over-tcp",
            &rtu.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let peer = Pymodbus(child);
    let ready = within(
        Duration::from_secs(30),
        "pymodbus READY",
        tokio::task::spawn_blocking(move || {
            std::io::BufReader::new(stdout)
                .lines()
                .take(100)
                .map_while(Result::ok)
                .find(|l| l.starts_with("READY"))
        }),
    )
    .await
    .unwrap();
    assert!(ready.is_some(), "pymodbus peer exited before READY");
    Some((peer, tcp, rtu))
}

#[tokio::test]
async fn pymodbus_takes_function_05_06_15_and_16_writes_in_every_order() {
    let Some((_peer, tcp, rtu)) = pymodbus().await else {
        return;
    };
    // Holding 0..219 and coils 0..40 are mapped in the peer (tests/interop/regmap.py).
    let mut points = String::new();
    let mut plan: Vec<(String, serde_json::Value, Value)> = Vec::new();
    let mut address = 0u16;
    let types: [(&str, &str, Value); 11] = [
        ("u16", "", Value::I64(51_234)),
        ("i16", "", Value::I64(-1234)),
        ("u32", "", Value::I64(3_000_000_123)),
        ("i32", "", Value::I64(-2_000_000_123)),
        ("u64", "", Value::I64(1_234_567_890_123)),
        ("i64", "", Value::I64(-1_234_567_890_123)),
        ("f32", "", Value::F64(-12.25)),
        ("f64", "", Value::F64(1.0e-7)),
        ("bcd32", "", Value::I64(12_345_678)),
        ("u16", "scale = 0.1\n", Value::F64(123.4)),
        ("string", "length = 3\n", Value::Str("HAND".into())),
    ];
    for order in ByteOrder::ALL {
        for (ty, extra, value) in &types {
            let name = format!("{ty}_{}_{address}", order.to_string().to_lowercase());
            let (limits, json) = match value {
                Value::Str(s) => (format!("allowed = [\"{s}\"]\n"), serde_json::json!(s)),
                // The value is its own range: what matters here is the wire.
                Value::I64(v) => (format!("min = {v}\nmax = {v}\n"), serde_json::json!(v)),
                v => {
                    let f = v.as_f64().unwrap();
                    (format!("min = {f:?}\nmax = {f:?}\n"), serde_json::json!(f))
                }
            };
            points.push_str(&format!(
                "[devices.points.{name}]\naddress = {address}\ntype = \"{ty}\"\norder = \"{order}\"\n\
                 {extra}writable = true\n{limits}"
            ));
            let length = if *ty == "string" { 3 } else { 0 };
            let scale = if extra.contains("scale") { 0.1 } else { 1.0 };
            plan.push((
                name,
                serde_json::json!({"function": "holding", "address": address, "type": ty,
                    "order": order.to_string(), "value": json, "length": length, "scale": scale}),
                value.clone(),
            ));
            address += DataType::ALL
                .iter()
                .find(|d| d.name() == *ty)
                .unwrap()
                .registers(3);
        }
        let name = format!("bit_{}", order.to_string().to_lowercase());
        points.push_str(&format!(
            "[devices.points.{name}]\naddress = {address}\ntype = \"bit\"\nbit = 10\norder = \"{order}\"\n\
             writable = true\nallowed = [true, false]\n"
        ));
        plan.push((
            name,
            serde_json::json!({"function": "holding", "address": address, "type": "bit",
                "order": order.to_string(), "value": true, "bit": 10}),
            Value::Bool(true),
        ));
        address += 1;
    }
    assert!(
        address <= 219,
        "{address} registers: beyond the peer's mapped block"
    );
    for coil in 0..4u16 {
        points.push_str(&format!(
            "[devices.points.coil_{coil}]\nfunction = \"coil\"\naddress = {coil}\n\
             writable = true\nallowed = [true, false]\n"
        ));
        let on = coil % 2 == 0;
        plan.push((
            format!("coil_{coil}"),
            serde_json::json!({"function": "coil", "address": coil, "type": "bool", "value": on}),
            Value::Bool(on),
        ));
    }
    let mut functions = std::collections::BTreeSet::new();
    // Modbus TCP (our own client: 05, 06, 16) and RTU over TCP (tokio-modbus, with
    // write_multiple: 15, 16) write the same block, one after the other.
    for (kind, port, multiple) in [
        ("tcp", tcp, ""),
        ("rtu_over_tcp", rtu, "write_multiple = true\n"),
    ] {
        let rig = Rig::connect(&format!(
            "{GATEWAY}[[links]]\nname = \"l\"\nkind = \"{kind}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             [[devices]]\nname = \"peer\"\nlink = \"l\"\nunit_id = 1\npoll_interval_ms = 60000\n{multiple}{points}"
        ));
        for (name, _, value) in &plan {
            let written = rig
                .write("peer", name, value.clone())
                .await
                .unwrap_or_else(|err| panic!("{kind}: {err}"));
            assert_eq!(
                written.verified.as_ref(),
                Some(&written.written),
                "{kind} {name}"
            );
            functions.insert(written.function);
        }
        rig.stop().await;
        let expectations: Vec<serde_json::Value> = plan
            .iter()
            .map(|(name, e, _)| {
                let mut e = e.clone();
                e["name"] = serde_json::json!(name);
                e
            })
            .collect();
        let mut check = std::process::Command::new("python3")
            .arg(crate::harness::repo().join("tests/interop/write_check.py"))
            .arg(tcp.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut stdin = check.stdin.take().unwrap();
            stdin
                .write_all(serde_json::to_string(&expectations).unwrap().as_bytes())
                .unwrap();
        }
        let out = within(
            Duration::from_secs(60),
            "write_check.py",
            tokio::task::spawn_blocking(move || check.wait_with_output()),
        )
        .await
        .unwrap()
        .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{kind}: the peer disagrees:\n{report}"
        );
        println!(
            "{kind}: {} points checked by write_check.py",
            expectations.len()
        );
    }
    assert_eq!(functions.into_iter().collect::<Vec<_>>(), [5, 6, 15, 16]);
}

const PLC_PROFILE: &str = r#"
[profile]
name = "my-plc"
manufacturer = "ACME"
model = "P1"
description = "test controller"
source = "test"

[points.sp]
address = 0
writable = true
min = 0
max = 10

[points.mode]
address = 1
"#;

#[test]
fn writes_are_allow_listed_per_device_never_by_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("my-plc.toml"), PLC_PROFILE).unwrap();
    let load = |points: &str| {
        plantwatch::config::load_str(
            "t.toml",
            &format!(
                "{GATEWAY}[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
                 [[devices]]\nname = \"plc\"\nlink = \"l\"\nprofile = \"my-plc\"\n{points}"
            ),
            &plantwatch::config::EnvOverrides::Off,
            std::path::Path::new("."),
            Some(dir.path()),
        )
    };
    let errors = load("").unwrap_err();
    let keys: Vec<&str> = errors.issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "devices[0].points.sp (from profile my-plc).writable",
            "devices[0].points.sp (from profile my-plc).min",
            "devices[0].points.sp (from profile my-plc).max",
        ],
        "{errors}"
    );
    assert!(
        errors.issues[0].message.contains("never in a profile"),
        "{errors}"
    );
    // The device's own config may open a profile point for writes.
    let plan = load("[devices.points.mode]\nwritable = true\nallowed = [0, 1]\n")
        .map_err(|e| e.to_string());
    assert!(plan.is_err(), "the profile's sp is still refused");
    let fixed = PLC_PROFILE.replace("writable = true\nmin = 0\nmax = 10\n", "");
    std::fs::write(dir.path().join("my-plc.toml"), fixed).unwrap();
    let plan = load("[devices.points.mode]\nwritable = true\nallowed = [0, 1]\n").unwrap();
    let device = plan.device("plc").unwrap();
    assert!(device.points[0].write.is_none(), "sp stays read-only");
    assert_eq!(
        device.points[1].write.as_ref().map(|w| w.limits.clone()),
        Some(WriteLimits::Allowed(vec![Value::I64(0), Value::I64(1)]))
    );
}

#[tokio::test]
async fn a_write_that_waited_past_its_deadline_is_dropped_unapplied() {
    let config = format!("{GATEWAY}{SETPOINTS}")
        .replace("poll_interval_ms = 60000\n", "poll_interval_ms = 100\n")
        .replace("timeout_ms = 200\n", "timeout_ms = 2000\n");
    let mut rig = Rig::start(&config).await;
    let sim = rig.sim().device("plc").unwrap().clone();
    // Three requests a cycle at 400 ms each: the link is busy for 1.2 s at a time.
    sim.inject(Fault::Slow(Duration::from_millis(400)));
    within(Duration::from_secs(10), "a batch", rig.batches.recv()).await;
    let stats = rig.stats.devices[0].1.clone();
    let sent = stats.requests.load(Ordering::Relaxed);
    // The next cycle has sent its first request: the link is busy for a while now.
    crate::harness::eventually(Duration::from_secs(5), "next cycle", || {
        (stats.requests.load(Ordering::Relaxed) > sent).then_some(())
    })
    .await;
    let err = within(
        Duration::from_secs(10),
        "expired write",
        rig.writes
            .write_within("plc", "sp", Value::F64(20.0), Duration::from_millis(50)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plc/sp: not served in time (link busy), nothing written"
    );
    assert_eq!(
        sim.registers(Function::Holding, 0, 1),
        [0],
        "nothing written"
    );
    rig.stop().await;
}
