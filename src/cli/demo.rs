//! `plantwatch demo`: a simulated plant and the real acquisition engine, wired in-process.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::acquire::spawn_links;
use crate::clock::{Clock, SystemClock};
use crate::config::EnvOverrides;
use crate::model::{Quality, SampleBatch, Value};
use crate::sim::{Bind, Fault, Simulator};

/// The demo plant's config.
pub(super) const DEMO_CONFIG: &str = include_str!("../../configs/demo.toml");

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Don't script the pump PLC's communication failure.
    #[arg(long)]
    no_faults: bool,
}

fn line(batch: &SampleBatch) -> String {
    let good = batch
        .samples
        .iter()
        .filter(|s| s.quality == Quality::Good)
        .count();
    // The points an engineer looks at first; the rest are counted.
    const FIRST: [&str; 12] = [
        "ua",
        "ia",
        "p",
        "pf",
        "freq",
        "ep_import",
        "motor_temp",
        "bearing_temp",
        "vibration",
        "run_state",
        "motor_current",
        "running_hours",
    ];
    let mut shown = Vec::new();
    for s in batch
        .samples
        .iter()
        .filter(|s| FIRST.contains(&s.point.as_str()))
        .take(6)
    {
        shown.push(match &s.value {
            Some(Value::F64(v)) => format!("{}={v:.2}", s.point),
            Some(v) => format!("{}={v}", s.point),
            None => format!("{}={}", s.point, s.quality),
        });
    }
    let time = chrono::DateTime::from_timestamp_millis(batch.tick.0)
        .map(|t| {
            t.with_timezone(&chrono_tz::Asia::Shanghai)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "{time}  {:<17} {good:>2}/{:<2} good  {}{}",
        batch.device,
        batch.samples.len(),
        shown.join("  "),
        if batch.samples.len() > 6 { "  …" } else { "" }
    )
}

pub(super) async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let plan = crate::config::load_str(
        "demo.toml",
        DEMO_CONFIG,
        &EnvOverrides::Off,
        Path::new("."),
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sim = Simulator::start(&plan, Bind::LOOPBACK).await?;
    println!(
        "plantwatch demo: a simulated plant on loopback and a pty, polled by the real engine."
    );
    for (link, endpoint) in &sim.endpoints {
        println!("  simulated link {link:<12} on {endpoint}");
    }
    println!("  Ctrl-C to stop.\n");
    let (tx, mut rx) = mpsc::channel::<SampleBatch>(64);
    let cancel = CancellationToken::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut tasks = JoinSet::new();
    let _stats = spawn_links(&sim.plan, &tx, &clock, &cancel, &mut tasks);
    drop(tx);
    let start = tokio::time::Instant::now();
    let stop = async {
        match args.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    let mut fault_on = false;
    let mut fault_done = args.no_faults;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = &mut stop => break,
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                println!("{}", line(&batch));
            }
        }
        let elapsed = start.elapsed();
        if !fault_done && !fault_on && elapsed > Duration::from_secs(12) {
            if let Some(pump) = sim.device("pump-1") {
                pump.inject(Fault::NoAnswer);
                println!("\n>>> demo: pump-1's PLC stops answering (cable pulled) <<<\n");
                fault_on = true;
            }
        }
        if fault_on && elapsed > Duration::from_secs(24) {
            if let Some(pump) = sim.device("pump-1") {
                pump.clear_faults();
                println!("\n>>> demo: pump-1's PLC answers again <<<\n");
            }
            fault_on = false;
            fault_done = true;
        }
    }
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
