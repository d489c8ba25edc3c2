//! Writes: writable points in the config, the write path through a link's task, against the
//! simulator over real TCP sockets and RS-485 ptys.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use plantwatch::acquire::write::{WriteError, WriteHandle, WriteLimits, WriteOutcome};
use plantwatch::acquire::{AcquireStats, spawn_links_with_writes};
use plantwatch::clock::{Clock, SystemClock};
use plantwatch::config::plan::Function;
use plantwatch::decode::{ByteOrder, Codec, DataType, decode, decode_bit};
use plantwatch::model::{Quality, SampleBatch, Value};
use plantwatch::sim::{Bind, Fault, Simulator};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::harness::{plan, within};

const GATEWAY: &str = "[gateway]\nsite = \"test\"\nid = \"gw\"\n";

/// The simulator, the link tasks serving writes, and where their batches go.
struct Rig {
    sim: Simulator,
    writes: WriteHandle,
    batches: mpsc::Receiver<SampleBatch>,
    stats: AcquireStats,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Rig {
    async fn start(config: &str) -> Self {
        let sim = Simulator::start(&plan(config), Bind::LOOPBACK)
            .await
            .unwrap();
        let writes = WriteHandle::new();
        let (tx, batches) = mpsc::channel(64);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let stats = spawn_links_with_writes(&sim.plan, &writes, &tx, &clock, &cancel, &mut tasks);
        Self {
            sim,
            writes,
            batches,
            stats,
            cancel,
            tasks,
        }
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
            .sim
            .plan
            .device(device)
            .unwrap()
            .points
            .iter()
            .find(|p| p.name.as_str() == point)
            .unwrap()
            .clone();
        let raw = self
            .sim
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
        self.sim.shutdown().await;
    }
}

/// A writable point of each type in each order, with a value inside its limits that the
/// type's default codec turns into something other than zero.
fn every_type_and_order() -> (String, Vec<(String, Value)>) {
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
    let sim = rig.sim.device("plc").unwrap().clone();
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
    let sim = rig.sim.device("plc").unwrap().clone();
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
    for (device, t) in &ticks {
        assert!(t.len() >= 12, "{device} polled {} times", t.len());
        // On the grid: every poll starts within a third of a period after its tick, counted
        // from the first one, however the writes fell.
        let late: Vec<i64> = t.iter().map(|x| (x - t[0]).rem_euclid(period)).collect();
        let worst = late.iter().map(|l| (*l).min(period - *l)).max().unwrap();
        assert!(
            worst < period / 3,
            "{device}: a poll {worst} ms off its grid: {late:?}"
        );
        let gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter()
                .all(|g| (period / 2..period * 3 / 2).contains(g)),
            "{device} gaps {gaps:?}"
        );
    }
    println!(
        "grid: {} polls of meter, {} of plc, 15 writes, worst offsets within {} ms",
        ticks["meter"].len(),
        ticks["plc"].len(),
        period / 3
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
