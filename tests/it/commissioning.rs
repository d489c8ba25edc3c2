//! Issue 18: commissioning without a config. `read --host`/`--serial` and `scan` against the
//! simulator on a real TCP socket and a real pty, through the real binary.

use std::process::{Command, Stdio};

use crate::harness::Simulator;
use plantwatch::config::plan::Function;
use plantwatch::model::Timestamp;
use plantwatch::sim::device::SimDevice;
use plantwatch::sim::{Bind, Fault};

use crate::harness::{bin, plan};

/// Runs the binary off the runtime (the simulator serves on it): exit code, stdout, stderr.
async fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run plantwatch");
        crate::harness::finished(&out)
    })
    .await
    .unwrap()
}

/// Holds `point` of `device` at `value`: the simulator computes its first values on the first
/// read even when stuck, so that read comes first.
fn hold(device: &SimDevice, point: &str, value: f64) {
    device.read(Function::Holding, 0, 1, Timestamp(0));
    assert!(device.set_value(point, value));
    device.inject(Fault::Stuck);
}

/// A generic PLC (motor current: f32 at holding address 8) as unit 7 on the given link.
fn plc_on(link: &str) -> plantwatch::config::Plan {
    plan(&format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\n{link}\n\
         [[devices]]\nname = \"pump\"\nlink = \"l\"\nunit_id = 7\nprofile = \"generic-plc\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_host_shows_one_register_as_the_type_asked_and_the_probe_table_without_it() {
    let sim = Simulator::start(
        &plc_on("kind = \"tcp\"\nhost = \"127.0.0.1\""),
        Bind::LOOPBACK,
    )
    .await
    .unwrap();
    let pump = sim.device("pump").unwrap();
    hold(pump, "motor_current", 42.5);
    let current = 42.5_f32;
    let port = sim.endpoints[0].1.rsplit_once(':').unwrap().1.to_owned();

    let (code, out, err) = run(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "7",
        "--register",
        "40009",
        "--type",
        "f32",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("unit 7: register 40009 (fc03 address 8)"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == format!("f32 ABCD: {current}")),
        "{out}"
    );

    // The other word order of the same registers is a different number: the probe shows both.
    let (code, out, err) = run(&[
        "read",
        "--register",
        "40009",
        "--unit",
        "7",
        "--port",
        &port,
        "--host",
        "127.0.0.1",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let f32_row = out.lines().find(|l| l.starts_with("f32")).expect("f32 row");
    assert_eq!(
        f32_row.split_whitespace().nth(1),
        Some(current.to_string().as_str()),
        "{out}"
    );
    let widths: Vec<usize> = out
        .lines()
        .skip_while(|l| !l.starts_with("TYPE"))
        .take_while(|l| !l.starts_with("Pick"))
        .map(str::len)
        .collect();
    assert!(
        widths.len() > 5 && widths.iter().all(|&w| w == widths[0]),
        "{out}"
    );

    // A unit nobody answers for behind a TCP gateway: exception 0B, exit 69, said plainly.
    let (code, _, err) = run(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "9",
        "--register",
        "40001",
    ])
    .await;
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("exception 11 (gateway target device failed to respond)"),
        "{err}"
    );

    // Nothing to read named: a usage error that teaches.
    let (code, _, err) = run(&["read", "--host", "127.0.0.1", "--port", &port]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--register"), "{err}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_the_unit_on_a_tcp_gateway_and_exits_69_where_nobody_answers() {
    let sim = Simulator::start(
        &plc_on("kind = \"tcp\"\nhost = \"127.0.0.1\""),
        Bind::LOOPBACK,
    )
    .await
    .unwrap();
    let port = sim.endpoints[0].1.rsplit_once(':').unwrap().1.to_owned();
    let (code, out, err) = run(&[
        "scan",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--units",
        "1-10",
        "--timeout-ms",
        "200",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 unit(s) answered"), "{out}");
    assert!(out.contains("unit   7  127.0.0.1:"), "{out}");

    let (code, out, err) = run(&[
        "scan",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--units",
        "1-3",
        "--timeout-ms",
        "200",
    ])
    .await;
    assert_eq!(code, 69, "{err}");
    assert!(out.contains("no unit answered"), "{out}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_scan_reach_an_rtu_device_on_a_serial_port() {
    let sim = Simulator::start(
        &plc_on("kind = \"rtu\"\npath = \"/dev/null\"\nbaud = 9600"),
        Bind::LOOPBACK,
    )
    .await
    .unwrap();
    let pump = sim.device("pump").unwrap();
    hold(pump, "motor_temp", 61.3);
    let raw = 613;
    let pty = sim.endpoints[0].1.clone();

    // motor_temp: i16 in 0.1 °C at holding address 0.
    let (code, out, err) = run(&[
        "read",
        "--serial",
        &pty,
        "--baud",
        "9600",
        "--unit",
        "7",
        "--register",
        "40001",
        "--type",
        "i16",
        "--timeout-ms",
        "500",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l == format!("i16 ABCD: {raw}")),
        "{out}"
    );

    // On a bus a silent unit id is simply absent; the scan says which settings it tried.
    let (code, out, err) = run(&[
        "scan",
        "--serial",
        &pty,
        "--baud",
        "9600",
        "--parity",
        "none",
        "--units",
        "5-8",
        "--timeout-ms",
        "300",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 unit(s) answered"), "{out}");
    assert!(out.contains(&format!("unit   7  {pty} 9600 8N1")), "{out}");
    sim.shutdown().await;
}
