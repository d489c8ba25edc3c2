//! Remote configuration (`{prefix}/cmd/config`): a whole config file signed by an engineer
//! key, checked by the resolver `plantwatch check` runs, written beside the running one and
//! applied as a reload, then watched for a health window and put back if the broker link is
//! lost or a device that was answering stops answering.
//!
//! The core validates and answers at once (`accepted`, or every problem found); the daemon
//! applies, watches and tells the core the outcome ([`Notice`]), which the core audits and
//! answers a second time on the same reply topic.
//!
//! Invariants:
//! - a file that does not resolve is never written, let alone applied;
//! - the previous file is kept beside (`{config}.previous`) before the new one replaces it,
//!   by rename, so the config file is at any instant one whole file or the other;
//! - one push is watched at a time; another arriving meanwhile is refused;
//! - every push ends in one outcome: applied and confirmed, or rolled back, with why.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::time::Instant;

use crate::acquire::AcquireStats;
use crate::config::{ConfigIssue, EnvOverrides, Plan};

/// Longest config text a push may carry.
pub(crate) const MAX_CONFIG_BYTES: usize = 1 << 20;

/// How long the broker may be unreachable after a push before it counts as lost: one
/// reconnect is expected when the `[mqtt]` section changed.
const BROKER_GRACE: Duration = Duration::from_secs(15);

/// Where the running configuration comes from, for the core to validate a push against and
/// the daemon to write it to.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The config file.
    pub(super) path: PathBuf,
    /// Extra profiles from the command line.
    pub(super) profiles_dir: Option<PathBuf>,
}

/// A validated push on its way from the core to the daemon.
#[derive(Debug, Clone)]
pub(super) struct Push {
    /// The file's text.
    pub(super) text: String,
    /// Its SHA-256, hex: the version the status and history name.
    pub(super) hash: String,
    /// Who it answers to.
    pub(super) origin: Origin,
}

/// The command a push or its outcome answers.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// The command's `id`.
    pub(super) id: Json,
    /// The sink it came from.
    pub(super) sink: String,
    /// The key that signed it.
    pub(super) key: Option<String>,
    /// The payload as it arrived, for the audit row's hash.
    pub(super) payload: Vec<u8>,
}

/// The outcome of a push, for the core to audit and answer.
#[derive(Debug, Clone)]
pub(super) struct Notice {
    /// What it answers.
    pub(super) origin: Origin,
    /// The reply.
    pub(super) reply: Vec<u8>,
    /// `rolled_back`, `not_applied` or `superseded` when the push did not end confirmed.
    pub(super) reason: Option<&'static str>,
}

/// Resolves `text` as the config file at `target` would be, and reads its keys, as
/// `plantwatch check` and a reload do.
///
/// # Errors
/// Every problem found, each with its key.
pub(super) fn validate(target: &Target, text: &str) -> Result<Plan, Vec<ConfigIssue>> {
    let base = target.path.parent().unwrap_or(Path::new("."));
    let plan = crate::config::load_str(
        &target.path.display().to_string(),
        text,
        &EnvOverrides::Process,
        base,
        target.profiles_dir.as_deref(),
    )
    .map_err(|e| e.issues)?;
    let _unchecked_credentials = crate::auth::keys::Keyring::check(&plan.commands)?;
    Ok(plan)
}

/// The reply refusing a push that does not resolve: every problem, with its key.
pub(super) fn invalid_reply(id: &Json, issues: &[ConfigIssue]) -> Vec<u8> {
    let list: Vec<Json> = issues
        .iter()
        .map(|i| json!({"key": i.key, "message": i.message}))
        .collect();
    let reply = super::commands::error_reply(
        id,
        &format!(
            "refused `config`: {} problem(s) in the file, nothing applied: {}",
            issues.len(),
            issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    match serde_json::from_slice::<Json>(&reply) {
        Ok(Json::Object(mut map)) => {
            map.insert("refused".into(), Json::from("invalid"));
            map.insert("issues".into(), Json::Array(list));
            Json::Object(map).to_string().into_bytes()
        }
        _ => reply,
    }
}

/// The file a push is written to before it replaces `path`.
fn pushed_path(path: &Path) -> PathBuf {
    with_suffix(path, ".pushed")
}

/// Where the file a push replaced is kept.
pub(super) fn previous_path(path: &Path) -> PathBuf {
    with_suffix(path, ".previous")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes `text` beside `path`, keeps the current file as `{path}.previous`, and renames the
/// new one over `path`.
///
/// # Errors
/// The file that could not be written, copied or renamed.
pub(super) fn install(path: &Path, text: &str) -> Result<(), String> {
    let pushed = pushed_path(path);
    std::fs::write(&pushed, text).map_err(|e| format!("cannot write {}: {e}", pushed.display()))?;
    let previous = previous_path(path);
    std::fs::copy(path, &previous).map_err(|e| {
        format!(
            "cannot keep {} as {}: {e}",
            path.display(),
            previous.display()
        )
    })?;
    std::fs::rename(&pushed, path).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            pushed.display(),
            path.display()
        )
    })
}

/// Puts `{path}.previous` back as `path`.
///
/// # Errors
/// The rename that failed.
pub(super) fn restore(path: &Path) -> Result<(), String> {
    let previous = previous_path(path);
    std::fs::copy(&previous, pushed_path(path))
        .and_then(|_| std::fs::rename(pushed_path(path), path))
        .map_err(|e| {
            format!(
                "cannot restore {} from {}: {e}",
                path.display(),
                previous.display()
            )
        })
}

/// Which devices answered lately: those whose good polls grew since the last look.
#[derive(Debug, Default)]
pub(super) struct Answering {
    last: HashMap<String, u64>,
    /// Devices with a good poll between the last two looks.
    pub(super) recent: HashSet<String>,
    /// [`Answering::recent`] of the look before.
    before: HashSet<String>,
}

impl Answering {
    /// Takes a look at `acquire`'s counters (a restarted link's counters start again at 0).
    pub(super) fn look(&mut self, acquire: &AcquireStats) {
        self.before = std::mem::take(&mut self.recent);
        let mut seen = HashMap::new();
        for (device, stats) in &acquire.devices {
            let ok = stats.polls_ok.load(Ordering::Relaxed);
            // A device the last look did not know (the first look, a reload that added it)
            // counts from 0: its good polls all came since, and a push right after the start
            // must still see it answering.
            if ok > self.last.get(device).copied().unwrap_or(0) {
                self.recent.insert(device.clone());
            }
            seen.insert(device.clone(), ok);
        }
        self.last = seen;
    }

    /// Devices with a good poll within the last two looks: those a push must not silence.
    pub(super) fn lately(&self) -> HashSet<String> {
        self.recent.union(&self.before).cloned().collect()
    }
}

/// What the health watch concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Still watching.
    Wait,
    /// The window passed with the broker and the devices as they were.
    Healthy,
    /// Roll back, because of this.
    Failed(String),
}

/// The health window after a push.
#[derive(Debug)]
pub(super) struct Watch {
    /// The push being watched.
    pub(super) push: Push,
    started: Instant,
    window: Duration,
    /// Whether a broker was connected before the push.
    broker_before: bool,
    broker_lost_since: Option<Instant>,
    /// The devices answering before the push, with when each last answered since, and how
    /// long each may stay silent.
    devices: HashMap<String, (Instant, Duration)>,
}

impl Watch {
    /// Starts watching `push`, applied at `now` over a configuration under which
    /// `answering` devices answered and `broker_connected` said whether a broker was up.
    pub(super) fn new(
        push: Push,
        now: Instant,
        window: Duration,
        broker_connected: bool,
        answering: &HashSet<String>,
        plan: &Plan,
    ) -> Self {
        let devices = answering
            .iter()
            .filter_map(|name| {
                // A device the new file removed is not expected to answer.
                let d = plan.devices.iter().find(|d| d.name.as_str() == name)?;
                let silence = (d.poll_interval * 3).max(Duration::from_secs(10));
                Some((name.clone(), (now, silence)))
            })
            .collect();
        Self {
            push,
            started: now,
            window,
            broker_before: broker_connected,
            broker_lost_since: None,
            devices,
        }
    }

    /// Judges at `now`, with the broker's state and the devices that answered lately.
    pub(super) fn judge(
        &mut self,
        now: Instant,
        broker_connected: bool,
        answering: &HashSet<String>,
    ) -> Verdict {
        if self.broker_before && !broker_connected {
            let since = *self.broker_lost_since.get_or_insert(now);
            if now.duration_since(since) >= BROKER_GRACE {
                return Verdict::Failed(format!(
                    "the broker link was lost for {} s after the push",
                    now.duration_since(since).as_secs()
                ));
            }
        } else {
            self.broker_lost_since = None;
        }
        let mut silent = Vec::new();
        for (device, (last, allowed)) in &mut self.devices {
            if answering.contains(device) {
                *last = now;
            } else if now.duration_since(*last) > *allowed {
                silent.push(device.clone());
            }
        }
        if !silent.is_empty() {
            silent.sort();
            return Verdict::Failed(format!(
                "devices that answered before the push stopped answering: {}",
                silent.join(", ")
            ));
        }
        if now.duration_since(self.started) >= self.window {
            Verdict::Healthy
        } else {
            Verdict::Wait
        }
    }
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// It passed its health window and stays.
    Confirmed,
    /// It could not be written or loaded; the running file stays.
    NotApplied,
    /// It failed its health window; the previous file runs again.
    RolledBack,
    /// A local reload ended its health window; the file on the gateway runs.
    Superseded,
}

/// The reply to a push that reached its end; `why` says what happened when it did not stay
/// as confirmed.
pub(super) fn outcome_reply(push: &Push, ending: Ending, why: &str) -> Vec<u8> {
    let what = match ending {
        Ending::Confirmed => {
            return json!({"v": 1, "id": push.origin.id, "ok": true, "applied": true,
                          "confirmed": true, "hash": push.hash})
            .to_string()
            .into_bytes();
        }
        Ending::NotApplied => "not applied",
        Ending::RolledBack => "rolled back to the previous file",
        Ending::Superseded => "applied, then superseded",
    };
    let reply = super::commands::error_reply(&push.origin.id, &format!("`config` {what}: {why}"));
    match serde_json::from_slice::<Json>(&reply) {
        Ok(Json::Object(mut map)) => {
            map.insert(
                "rolled_back".into(),
                Json::Bool(ending == Ending::RolledBack),
            );
            map.insert("hash".into(), Json::from(push.hash.clone()));
            Json::Object(map).to_string().into_bytes()
        }
        _ => reply,
    }
}

/// One line of `plantwatch config history`.
pub(super) fn history_row(now_ms: i64, push: &Push, outcome: &str, why: Option<&str>) -> String {
    json!({"ts_ms": now_ms, "key": push.origin.key, "id": push.origin.id, "hash": push.hash,
           "outcome": outcome, "why": why})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> Push {
        Push {
            text: String::new(),
            hash: "h".into(),
            origin: Origin {
                id: json!("c1"),
                sink: "mqtt".into(),
                key: Some("eng1".into()),
                payload: Vec::new(),
            },
        }
    }

    fn plan() -> Plan {
        crate::config::load_str(
            "t.toml",
            "[gateway]\nsite = \"s\"\nid = \"g\"\n\n[[links]]\nname = \"bus\"\nkind = \"tcp\"\n\
             host = \"127.0.0.1\"\n\n[[devices]]\nname = \"m\"\nlink = \"bus\"\n\
             profile = \"chint-dtsu666\"\npoll_interval_ms = 1000\n",
            &EnvOverrides::Off,
            Path::new("."),
            None,
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_is_confirmed_after_its_window_or_failed_by_a_silent_device_or_a_lost_broker() {
        let t0 = Instant::now();
        let answering: HashSet<String> = ["m".to_owned(), "removed".to_owned()].into();
        let s = Duration::from_secs;
        let mut w = Watch::new(push(), t0, s(120), true, &answering, &plan());
        assert_eq!(w.judge(t0 + s(5), true, &answering), Verdict::Wait);
        assert_eq!(w.judge(t0 + s(120), true, &answering), Verdict::Healthy);

        let mut w = Watch::new(push(), t0, s(120), true, &answering, &plan());
        assert_eq!(w.judge(t0 + s(5), true, &HashSet::new()), Verdict::Wait);
        assert!(matches!(
            w.judge(t0 + s(11), true, &HashSet::new()),
            Verdict::Failed(why) if why.contains(": m")
        ));

        let mut w = Watch::new(push(), t0, s(120), true, &answering, &plan());
        assert_eq!(w.judge(t0 + s(5), false, &answering), Verdict::Wait);
        assert_eq!(w.judge(t0 + s(10), true, &answering), Verdict::Wait);
        assert_eq!(w.judge(t0 + s(20), false, &answering), Verdict::Wait);
        assert!(matches!(
            w.judge(t0 + s(35), false, &answering),
            Verdict::Failed(why) if why.contains("broker")
        ));
    }

    #[test]
    fn a_device_that_answered_before_the_first_look_counts_as_answering() {
        let stats = std::sync::Arc::new(crate::acquire::DeviceStats::default());
        let acquire = AcquireStats {
            devices: vec![("m".to_owned(), stats.clone())],
        };
        let mut answering = Answering::default();
        // A push a moment after the start: one good poll, no look taken before it.
        stats.polls_ok.store(1, Ordering::Relaxed);
        answering.look(&acquire);
        assert_eq!(answering.lately(), HashSet::from(["m".to_owned()]));
        // Silent over two looks: no longer answering.
        answering.look(&acquire);
        answering.look(&acquire);
        assert!(answering.lately().is_empty());
    }

    #[test]
    fn a_push_replaces_the_file_whole_and_the_previous_one_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plantwatch.toml");
        std::fs::write(&path, "old").unwrap();
        install(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::read_to_string(previous_path(&path)).unwrap(),
            "old"
        );
        restore(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    }
}
