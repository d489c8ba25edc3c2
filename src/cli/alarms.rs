//! `plantwatch alarms`: list, acknowledge and shelve alarms from the gateway's shell.
//!
//! Commands go through the state file's command queue, so the running daemon applies them
//! exactly as it applies MQTT downlink commands (same validation, same reply, same retained
//! message); listing reads the saved alarms directly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::clock::{Clock, SystemClock};
use crate::detect::AlarmEvent;
use crate::runtime::core_task::QueuedCommand;
use crate::store::alarms::offline;

/// Arguments of `alarms`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
An ALARM is its id (`pump-1/motor-hot/1764374400000`) or `device/alarm` (`pump-1/motor-hot`).
ack, shelve and unshelve are carried out by the running daemon, which publishes the new state
on the alarm topic like a command from the platform; without a running daemon they wait in
the state file and are applied when it starts.

Examples:
  plantwatch alarms list
  plantwatch alarms list --config plant.toml --json
  plantwatch alarms ack pump-1/motor-hot
  plantwatch alarms shelve pump-1/offline 2h      hide it for two hours (1s to 30d)")]
pub(super) struct Args {
    /// The state file, instead of the one the config names (e.g. a copy). Global, so it may
    /// come before or after the action (`audit verify --state FILE`).
    #[arg(long, value_name = "FILE", global = true)]
    state: Option<PathBuf>,
    /// How long to wait for the daemon's reply, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    wait_ms: u64,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Show the raised alarms.
    List {
        /// One JSON object per line, as on the alarm topic.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge a raised alarm.
    Ack {
        /// Its id or `device/alarm`.
        alarm: String,
    },
    /// Hide a raised alarm for a while ("30m", "2h", up to "30d").
    Shelve {
        /// Its id or `device/alarm`.
        alarm: String,
        /// How long.
        duration: String,
    },
    /// End a shelve early.
    Unshelve {
        /// Its id or `device/alarm`.
        alarm: String,
    },
}

pub(super) fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let path = super::state_file(args.state.as_deref(), config, profiles_dir)?;
    super::diagnose_state_file(&path)?;
    let raised: Vec<AlarmEvent> = offline::raised(&path)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter_map(|r| serde_json::from_str(r.body.as_deref()?).ok())
        .collect();
    let (name, payload) = match &args.action {
        Action::List { json } => {
            list(&raised, *json);
            return Ok(ExitCode::SUCCESS);
        }
        Action::Ack { alarm } => ("ack", json!({"alarm": alarm})),
        Action::Unshelve { alarm } => ("unshelve", json!({"alarm": alarm})),
        Action::Shelve { alarm, duration } => {
            ("shelve", json!({"alarm": alarm, "duration": duration}))
        }
    };
    let target = payload["alarm"].as_str().unwrap_or_default().to_owned();
    let target = target.as_str();
    if !raised
        .iter()
        .any(|a| a.id == target || format!("{}/{}", a.device, a.alarm) == target)
    {
        eprintln!(
            "plantwatch: no raised alarm `{target}` in {}; `plantwatch alarms list` shows the raised ones",
            path.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let now = SystemClock.now().0;
    let mut payload = payload;
    payload["id"] = json!(format!("cli-{now}"));
    let body = serde_json::to_string(&QueuedCommand {
        name: name.to_owned(),
        payload,
    })?;
    let id = offline::queue(&path, &body, now).map_err(anyhow::Error::msg)?;
    let deadline = crate::clock::monotonic() + Duration::from_millis(args.wait_ms);
    // Bounded by the deadline; the daemon looks at the queue once a second.
    while crate::clock::monotonic() < deadline {
        if let Some(reply) = offline::reply(&path, id).map_err(anyhow::Error::msg)? {
            let reply: Json = serde_json::from_str(&reply).unwrap_or(Json::Null);
            if reply["ok"] == true {
                let a = &reply["alarm"];
                out!(
                    "{} is now {}",
                    a["id"].as_str().unwrap_or(target),
                    a["state"].as_str().unwrap_or("?")
                );
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "plantwatch: {}",
                reply["error"]
                    .as_str()
                    .unwrap_or("the daemon refused the command")
            );
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    out!(
        "Queued in {}; no daemon answered within {} ms. It is applied when `plantwatch run` next starts.",
        path.display(),
        args.wait_ms
    );
    Ok(ExitCode::SUCCESS)
}

fn list(raised: &[AlarmEvent], as_json: bool) {
    if as_json {
        for a in raised {
            out!(
                "{}",
                String::from_utf8_lossy(&crate::encode::json_v1::alarm(a))
            );
        }
        return;
    }
    if raised.is_empty() {
        out!("No raised alarms.");
        return;
    }
    out!(
        "{:<44} {:<8} {:<9} {:<20} MESSAGE",
        "ALARM",
        "STATE",
        "SEVERITY",
        "RAISED (UTC)"
    );
    for a in raised {
        let when = chrono::DateTime::from_timestamp_millis(a.raised)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        out!(
            "{:<44} {:<8} {:<9} {:<20} {}",
            format!("{}/{}", a.device, a.alarm),
            a.state.as_str(),
            a.severity.as_str(),
            when,
            a.message
        );
    }
}
