//! The acquisition engine against the simulator over real TCP sockets and ptys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::Simulator;
use plantwatch::acquire::link::Connection;
use plantwatch::acquire::{DeviceStats, poll_device, poll_once, spawn_links};
use plantwatch::clock::{Clock, SystemClock};
use plantwatch::model::{BadReason, Quality, SampleBatch, Value};
use plantwatch::sim::{Bind, Fault};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::harness::{plan, within};

const GATEWAY: &str = "[gateway]\nsite = \"test\"\nid = \"gw\"\n";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Asserts every point of `batch` is good and equals the simulator's own value.
fn assert_matches_sim(batch: &SampleBatch, sim: &Simulator) {
    let device = sim.device(batch.device.as_str()).expect("simulated device");
    for s in &batch.samples {
        assert_eq!(s.quality, Quality::Good, "{}/{}", batch.device, s.point);
        let expected = device.value(s.point.as_str()).expect("point in sim");
        let got = s
            .value
            .as_ref()
            .and_then(Value::as_f64)
            .expect("numeric value");
        assert!(
            close(got, expected),
            "{}/{}: polled {got}, simulator has {expected}",
            batch.device,
            s.point
        );
    }
}

#[tokio::test]
async fn tcp_poll_decodes_every_point_to_the_simulators_value() {
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"meter\"\nlink = \"l\"\nprofile = \"chint-dtsu666\"\n\
         [[devices]]\nname = \"plc\"\nlink = \"l\"\nunit_id = 7\nprofile = \"generic-plc\"\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    for d in sim.devices() {
        d.inject(Fault::Stuck);
    }
    for name in ["meter", "plc"] {
        let device = sim.plan.device(name).unwrap();
        let polled = within(
            Duration::from_secs(5),
            "poll",
            poll_once(sim.plan.fleet(), device, &SystemClock),
        )
        .await;
        assert!(polled.answered, "{name}: {:?}", polled.error);
        assert_eq!(polled.batch.samples.len(), device.points.len());
        assert_matches_sim(&polled.batch, &sim);
    }
    // Voltages are plausible plant values, not zeros: the simulator behaves like a plant.
    let ua = sim.device("meter").unwrap().value("ua").unwrap();
    assert!((220.0..240.0).contains(&ua), "ua = {ua}");
    sim.shutdown().await;
}

#[tokio::test]
async fn rtu_over_a_pty_serves_two_units_on_one_bus() {
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"bus\"\nkind = \"rtu\"\npath = \"/dev/null\"\nbaud = 19200\nparity = \"even\"\n\
         [[devices]]\nname = \"sdm\"\nlink = \"bus\"\nunit_id = 1\nprofile = \"eastron-sdm630\"\n\
         [[devices]]\nname = \"acrel\"\nlink = \"bus\"\nunit_id = 2\nprofile = \"acrel-adl400\"\nct_ratio = 40.0\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    assert!(
        sim.endpoints[0].1.starts_with("/dev/"),
        "served on a pty: {:?}",
        sim.endpoints
    );
    for d in sim.devices() {
        d.inject(Fault::Stuck);
    }
    for name in ["sdm", "acrel"] {
        let device = sim.plan.device(name).unwrap();
        let polled = within(
            Duration::from_secs(5),
            "poll",
            poll_once(sim.plan.fleet(), device, &SystemClock),
        )
        .await;
        assert!(polled.answered, "{name}: {:?}", polled.error);
        assert_matches_sim(&polled.batch, &sim);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn rtu_over_tcp_reads_like_tcp() {
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"gw\"\nkind = \"rtu_over_tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"plc\"\nlink = \"gw\"\nunit_id = 3\nprofile = \"generic-plc\"\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    sim.device("plc").unwrap().inject(Fault::Stuck);
    let device = sim.plan.device("plc").unwrap();
    let polled = within(
        Duration::from_secs(5),
        "poll",
        poll_once(sim.plan.fleet(), device, &SystemClock),
    )
    .await;
    assert!(polled.answered, "{:?}", polled.error);
    assert_matches_sim(&polled.batch, &sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn exception_responses_mark_the_points_with_the_code() {
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"plc\"\nlink = \"l\"\nprofile = \"generic-plc\"\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    sim.device("plc").unwrap().inject(Fault::Exception(4));
    let device = sim.plan.device("plc").unwrap();
    let polled = poll_once(sim.plan.fleet(), device, &SystemClock).await;
    assert!(polled.answered, "an exception is an answer");
    for s in &polled.batch.samples {
        assert_eq!(
            s.quality,
            Quality::Bad(BadReason::Exception(4)),
            "{}",
            s.point
        );
        assert_eq!(s.quality.to_string(), "bad:exception:04");
        assert!(s.value.is_none());
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn an_illegal_address_splits_the_bridged_request_and_the_split_is_kept() {
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"d\"\nlink = \"l\"\nmax_gap_registers = 20\n\
         [devices.points.a]\naddress = 0\n[devices.points.b]\naddress = 1\n\
         [devices.points.c]\naddress = 10\ntype = \"f32\"\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    let sim_device = sim.device("d").unwrap();
    sim_device.inject(Fault::StrictAddresses);
    let mut device = sim.plan.device("d").unwrap().clone();
    assert_eq!(
        device.read_plan.requests.len(),
        1,
        "a, b and c bridged into one request"
    );
    let mut conn = Connection::new(sim.plan.links[0].clone());
    let stats = DeviceStats::default();
    let polled = poll_device(&mut conn, &mut device, &SystemClock, &stats).await;
    for s in &polled.batch.samples {
        assert_eq!(s.quality, Quality::Good, "{} after the split", s.point);
    }
    assert_eq!(
        device.read_plan.requests.len(),
        2,
        "split into the gap-free runs"
    );
    // The split is remembered: the next cycle sends two requests and no exception.
    let before = stats.exceptions.load(std::sync::atomic::Ordering::Relaxed);
    let polled = poll_device(&mut conn, &mut device, &SystemClock, &stats).await;
    assert!(
        polled
            .batch
            .samples
            .iter()
            .all(|s| s.quality == Quality::Good)
    );
    assert_eq!(
        stats.exceptions.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_slow_answer_within_the_timeout_is_good_and_beyond_it_is_a_timeout() {
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"plc\"\nlink = \"l\"\nprofile = \"generic-plc\"\ntimeout_ms = 300\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    let device = sim.plan.device("plc").unwrap();
    sim.device("plc")
        .unwrap()
        .inject(Fault::Slow(Duration::from_millis(50)));
    let polled = poll_once(sim.plan.fleet(), device, &SystemClock).await;
    assert!(
        polled
            .batch
            .samples
            .iter()
            .all(|s| s.quality == Quality::Good)
    );
    sim.device("plc")
        .unwrap()
        .inject(Fault::Slow(Duration::from_millis(600)));
    let polled = poll_once(sim.plan.fleet(), device, &SystemClock).await;
    assert!(!polled.answered);
    assert!(
        polled
            .batch
            .samples
            .iter()
            .all(|s| s.quality == Quality::Bad(BadReason::Timeout)),
        "every point times out or is skipped after the first timeout: {:?}",
        polled
            .batch
            .samples
            .iter()
            .map(|s| s.quality)
            .collect::<Vec<_>>()
    );
    sim.shutdown().await;
}

/// Collects batches per device until `done` says so or the deadline passes.
async fn collect_until(
    rx: &mut mpsc::Receiver<SampleBatch>,
    limit: Duration,
    max_batches: usize,
    mut done: impl FnMut(&HashMap<String, Vec<SampleBatch>>) -> bool,
) -> HashMap<String, Vec<SampleBatch>> {
    let mut seen: HashMap<String, Vec<SampleBatch>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    for _ in 0..max_batches {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(b)) => seen.entry(b.device.to_string()).or_default().push(b),
            _ => break,
        }
        if done(&seen) {
            break;
        }
    }
    seen
}

#[tokio::test]
async fn a_dead_slave_goes_offline_without_starving_its_bus_and_comes_back() {
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"bus\"\nkind = \"rtu\"\npath = \"/dev/null\"\nbaud = 38400\n\
         [[devices]]\nname = \"dead\"\nlink = \"bus\"\nunit_id = 1\nprofile = \"generic-plc\"\n\
         poll_interval_ms = 200\ntimeout_ms = 80\noffline_after_failures = 2\noffline_retry_ms = 600\n\
         [[devices]]\nname = \"alive\"\nlink = \"bus\"\nunit_id = 2\nprofile = \"eastron-sdm630\"\npoll_interval_ms = 200\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    sim.device("dead").unwrap().inject(Fault::NoAnswer);
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut tasks = JoinSet::new();
    let stats = spawn_links(sim.plan.fleet(), &tx, &clock, &cancel, &mut tasks);

    // Phase 1: the dead slave times out, then goes offline; its neighbour keeps its pace.
    let seen = collect_until(&mut rx, Duration::from_secs(10), 200, |s| {
        s.get("dead").is_some_and(|b| {
            b.iter().any(|b| {
                b.samples
                    .iter()
                    .all(|s| s.quality == Quality::Bad(BadReason::CommLost))
            })
        }) && s.get("alive").is_some_and(|b| b.len() >= 10)
    })
    .await;
    let dead = &seen["dead"];
    assert_eq!(dead[0].samples[0].quality, Quality::Bad(BadReason::Timeout));
    assert!(
        dead.iter()
            .flat_map(|b| &b.samples)
            .all(|s| s.value.is_none())
    );
    assert!(
        dead.iter().any(|b| b
            .samples
            .iter()
            .all(|s| s.quality == Quality::Bad(BadReason::CommLost))),
        "after 2 silent cycles the device is offline: comm_lost"
    );
    let alive = &seen["alive"];
    assert!(alive.len() >= 10, "neighbour polled {} times", alive.len());
    assert!(
        alive
            .iter()
            .flat_map(|b| &b.samples)
            .all(|s| s.quality == Quality::Good)
    );
    // Its period stays near 200 ms although the dead slave eats a timeout on the same bus. A
    // starved neighbour would miss every other tick (gaps of 400 ms throughout); one late
    // tick on a machine busy with other builds is not starvation, so the test counts them.
    let ticks: Vec<i64> = alive.iter().map(|b| b.tick.0).collect();
    let gaps: Vec<i64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
    let late = gaps.iter().filter(|&&g| g > 250).count();
    assert!(
        late * 5 <= gaps.len(),
        "neighbour missed its 200 ms tick in {late} of {} gaps: {gaps:?}",
        gaps.len()
    );
    assert!(
        gaps.iter().all(|&g| g < 1000),
        "neighbour's poll gaps {gaps:?}"
    );
    let dead_stats = &stats.devices.iter().find(|(n, _)| n == "dead").unwrap().1;
    let timeouts = dead_stats
        .timeouts
        .load(std::sync::atomic::Ordering::Relaxed);
    let requests = dead_stats
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        timeouts, requests,
        "one timeout per cycle: the rest of the cycle is skipped"
    );

    // Phase 2: it answers again and is polled back to good on the slow schedule's next try.
    sim.device("dead").unwrap().clear_faults();
    let seen = collect_until(&mut rx, Duration::from_secs(10), 500, |s| {
        s.get("dead").is_some_and(|b| {
            b.iter()
                .any(|b| b.samples.iter().all(|s| s.quality == Quality::Good))
        })
    })
    .await;
    assert!(
        seen.get("dead").is_some_and(|b| b
            .iter()
            .any(|b| b.samples.iter().all(|s| s.quality == Quality::Good))),
        "device came back"
    );
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    sim.shutdown().await;
}

#[tokio::test]
async fn a_stuck_device_keeps_serving_the_same_values_and_counters_only_rise() {
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"meter\"\nlink = \"l\"\nprofile = \"eastron-sdm630\"\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    let device = sim.plan.device("meter").unwrap();
    let first = poll_once(sim.plan.fleet(), device, &SystemClock)
        .await
        .batch;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = poll_once(sim.plan.fleet(), device, &SystemClock)
        .await
        .batch;
    let value = |b: &SampleBatch, p: &str| {
        b.samples
            .iter()
            .find(|s| s.point.as_str() == p)
            .unwrap()
            .value
            .clone()
    };
    let e1 = value(&first, "ep_import").and_then(|v| v.as_f64()).unwrap();
    let e2 = value(&second, "ep_import")
        .and_then(|v| v.as_f64())
        .unwrap();
    assert!(e2 >= e1, "energy counter went down: {e1} -> {e2}");
    assert_ne!(
        value(&first, "ua"),
        value(&second, "ua"),
        "live voltages have noise"
    );
    sim.device("meter").unwrap().inject(Fault::Stuck);
    let a = poll_once(sim.plan.fleet(), device, &SystemClock)
        .await
        .batch;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let b = poll_once(sim.plan.fleet(), device, &SystemClock)
        .await
        .batch;
    assert_eq!(value(&a, "ua"), value(&b, "ua"), "stuck values do not move");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_serial_bus_keeps_the_inter_frame_silence_between_transactions() {
    // Three points far apart: three requests, so two silences of at least 60 ms each.
    let plan = plan(&format!(
        "{GATEWAY}[[links]]\nname = \"bus\"\nkind = \"rtu\"\npath = \"/dev/null\"\ninter_frame_delay_ms = 60\n\
         [[devices]]\nname = \"d\"\nlink = \"bus\"\nmax_gap_registers = 0\n\
         [devices.points.a]\naddress = 0\n[devices.points.b]\naddress = 100\n[devices.points.c]\naddress = 200\n"
    ));
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await.unwrap();
    let device = sim.plan.device("d").unwrap();
    assert_eq!(device.read_plan.requests.len(), 3);
    let started = tokio::time::Instant::now();
    let polled = poll_once(sim.plan.fleet(), device, &SystemClock).await;
    let took = started.elapsed();
    assert!(
        polled
            .batch
            .samples
            .iter()
            .all(|s| s.quality == Quality::Good)
    );
    assert!(
        took >= Duration::from_millis(120),
        "three frames in {took:?}: the silence was not kept"
    );
    sim.shutdown().await;
}
