//! `plantwatch simulate`: serve simulated devices for tests, demos and commissioning practice.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{EnvOverrides, Plan};
use crate::sim::{Bind, Fault, Simulator};

/// Arguments of `simulate`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Faults (--fault DEVICE=FAULT, or on stdin `fault DEVICE FAULT` / `clear DEVICE`):
  no_answer  slow:MS  exception:CODE  stuck  rollover  reset  spike:N  strict_addresses
Other stdin commands: `value DEVICE POINT`, `devices`.

Examples:
  plantwatch simulate --profile chint-dtsu666 --listen 127.0.0.1:5020
  plantwatch simulate --profile generic-plc --count 3 --rtu-pty --write-config plc.toml
  plantwatch simulate -c plantwatch.toml --loopback --fault meter-1=no_answer

With --config (or PLANTWATCH_CONFIG) it serves that config's devices at its links' addresses;
--profile serves simulated devices of one profile instead. Ctrl-C or SIGTERM stops it.")]
pub(super) struct Args {
    /// Deprecated: the config as a positional argument (use --config).
    #[arg(hide = true, value_name = "CONFIG")]
    pub(super) positional_config: Option<PathBuf>,
    /// Serve simulated devices of this profile instead of a config's.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// How many devices of --profile.
    #[arg(long, default_value_t = 1, requires = "profile")]
    count: u16,
    /// With --profile: first TCP address; device k listens on port + k (port 0: free ports).
    #[arg(long, default_value = "127.0.0.1:5020")]
    listen: String,
    /// With --profile: unit id of the devices on TCP (RTU buses number them 1, 2, …).
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// Serve on RTU pseudo-terminals (one bus) instead of TCP; prints the path to open.
    #[arg(long)]
    rtu_pty: bool,
    /// With a config: serve TCP links on free loopback ports and RTU links on new ptys.
    #[arg(long)]
    loopback: bool,
    /// Inject a fault at start: DEVICE=FAULT (repeatable).
    #[arg(long = "fault", value_name = "DEVICE=FAULT")]
    faults: Vec<String>,
    /// Write a plantwatch config that polls the simulated devices.
    #[arg(long, value_name = "FILE")]
    write_config: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
}

fn profile_config(
    args: &Args,
    profile: &str,
    endpoints: Option<&[(String, String)]>,
) -> anyhow::Result<String> {
    let (host, port) = args
        .listen
        .rsplit_once(':')
        .with_context(|| format!("--listen `{}`: expected HOST:PORT", args.listen))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .with_context(|| format!("--listen `{}`: bad port", args.listen))?;
    let mut out = String::from(
        "# Written by `plantwatch simulate`: polls the simulated devices.\n[gateway]\nsite = \"sim\"\nid = \"sim-gw\"\n\n",
    );
    let endpoint_of = |link: &str| -> Option<String> {
        endpoints?
            .iter()
            .find(|(l, _)| l == link)
            .map(|(_, e)| e.clone())
    };
    if args.rtu_pty {
        let path = endpoint_of("sim-bus").unwrap_or_else(|| "/dev/null".into());
        writeln!(
            out,
            "[[links]]\nname = \"sim-bus\"\nkind = \"rtu\"\npath = \"{path}\"\nbaud = 19200\n"
        )?;
    } else {
        for k in 0..args.count {
            let link = format!("sim-{}", k + 1);
            let (h, p) = match endpoint_of(&link).and_then(|e| {
                e.rsplit_once(':')
                    .map(|(h, p)| (h.to_owned(), p.to_owned()))
            }) {
                Some((h, p)) => (
                    h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    p,
                ),
                None => (
                    host.to_owned(),
                    if port == 0 {
                        "502".into() // placeholder: an ephemeral port is bound instead
                    } else {
                        (u32::from(port) + u32::from(k)).to_string()
                    },
                ),
            };
            writeln!(
                out,
                "[[links]]\nname = \"{link}\"\nkind = \"tcp\"\nhost = \"{h}\"\nport = {p}\n"
            )?;
        }
    }
    for k in 0..args.count {
        let (link, unit) = if args.rtu_pty {
            ("sim-bus".to_owned(), u32::from(k) + 1)
        } else {
            (format!("sim-{}", k + 1), u32::from(args.unit))
        };
        writeln!(
            out,
            "[[devices]]\nname = \"{profile}-{}\"\nlink = \"{link}\"\nunit_id = {unit}\nprofile = \"{profile}\"\n",
            k + 1
        )?;
    }
    Ok(out)
}

/// SIGINT and SIGTERM, caught from the moment this is made: made before the "ready" line, so
/// that a signal sent as soon as it is seen stops the simulator instead of killing it.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    /// Until the first SIGINT or SIGTERM, or `duration` seconds.
    async fn wait(&mut self, duration: Option<u64>) {
        let timer = async {
            match duration {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            () = timer => {}
        }
    }
}

fn apply_fault(sim: &Simulator, spec: &str) -> Result<(), String> {
    let (device, fault) = spec
        .split_once('=')
        .ok_or_else(|| format!("`{spec}`: expected DEVICE=FAULT"))?;
    let d = sim
        .device(device)
        .ok_or_else(|| format!("no simulated device `{device}`"))?;
    d.inject(Fault::parse(fault)?);
    Ok(())
}

fn control(sim: &Simulator, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["fault", device, fault] => match apply_fault(sim, &format!("{device}={fault}")) {
            Ok(()) => format!("ok: {device} {fault}"),
            Err(e) => format!("error: {e}"),
        },
        ["clear", device] => match sim.device(device) {
            Some(d) => {
                d.clear_faults();
                format!("ok: {device} cleared")
            }
            None => format!("error: no simulated device `{device}`"),
        },
        ["value", device, point] => match sim.device(device).and_then(|d| d.value(point)) {
            Some(v) => format!("{device}/{point} = {v}"),
            None => format!("error: no point `{device}/{point}`"),
        },
        ["devices"] => {
            let mut names: Vec<String> = sim.devices().map(|d| format!("{} (unit {})", d.name(), d.unit_id())).collect();
            names.sort();
            names.join("\n")
        }
        [] => String::new(),
        _ => "error: commands are `fault DEVICE FAULT`, `clear DEVICE`, `value DEVICE POINT`, `devices`".into(),
    }
}

/// Lines typed on stdin, read on a thread of their own. A blocking read cannot be cancelled:
/// read through tokio's stdin, it held the runtime's shutdown after Ctrl-C or SIGTERM until
/// Enter was pressed (issue 18). This thread is left behind and ends with the process.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let reader = std::thread::Builder::new()
        .name("simulate-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = reader {
        eprintln!("plantwatch: stdin commands are off: cannot start their thread: {e}");
    }
    rx
}

/// Serves the devices of `config` (the `--config` given, if any) or of `--profile`.
pub(super) async fn run(
    args: Args,
    config: Option<PathBuf>,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    // --profile wins over a config that only came from the environment.
    let config = config.filter(|_| args.profile.is_none());
    let (plan, bind, generated): (Plan, Bind, bool) = match (&config, &args.profile) {
        (Some(path), _) => {
            let plan = match super::load(path, profiles_dir) {
                Ok(p) => p,
                Err(errors) => return Ok(super::config_failed(&errors)),
            };
            (
                plan,
                if args.loopback {
                    Bind::LOOPBACK
                } else {
                    Bind::AS_CONFIGURED
                },
                false,
            )
        }
        (None, Some(profile)) => {
            let text = profile_config(&args, profile, None)?;
            let plan = crate::config::load_str(
                "simulate",
                &text,
                &EnvOverrides::Off,
                Path::new("."),
                profiles_dir,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let ephemeral = args.listen.ends_with(":0");
            (
                plan,
                Bind {
                    tcp_ephemeral: ephemeral,
                    rtu_pty: args.rtu_pty,
                },
                true,
            )
        }
        (None, None) => {
            return Err(super::usage(
                "give --config FILE to serve its devices, or --profile NAME (see --help)",
            ));
        }
    };
    let mut signals = StopSignals::new()?;
    let sim = Simulator::start(plan.fleet(), plan.gateway.timezone, bind).await?;
    for spec in &args.faults {
        apply_fault(&sim, spec).map_err(|e| anyhow::anyhow!("--fault {e}"))?;
    }
    for (link, endpoint) in &sim.endpoints {
        out!("serving link {link} on {endpoint}");
    }
    if let Some(path) = &args.write_config {
        if !generated {
            return Err(super::usage("--write-config needs --profile"));
        }
        let text = profile_config(
            &args,
            args.profile.as_deref().unwrap_or_default(),
            Some(&sim.endpoints),
        )?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(super::io_failed)?;
        out!("wrote {}", path.display());
    }
    out!(
        "{} simulated device(s) ready; Ctrl-C to stop",
        plan.devices.len()
    );
    let mut lines = stdin_lines();
    let stdin_commands = async {
        while let Some(line) = lines.recv().await {
            let reply = control(&sim, &line);
            if !reply.is_empty() {
                out!("{reply}");
            }
        }
        // stdin closed (CI, systemd): keep serving until stopped.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = signals.wait(args.duration) => {}
        () = stdin_commands => {}
    }
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
