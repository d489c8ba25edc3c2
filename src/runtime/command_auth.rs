//! The core's side of the authenticated command channel: the [`Gate`] with the ids it accepted
//! restored from the state file, the replies and log lines of refusals, and the audit row of
//! every command.

use serde_json::Value as Json;
use tracing::{error, warn};

use super::commands;
use super::log_limit::{RepeatLimit, escape_and_cut, peer_text};
use crate::auth::keys::Keyring;
use crate::auth::{Gate, Refused};
use crate::config::commands::Commands;
use crate::store::{AuditEntry, StoreHandle, audit::sha256_hex};

/// Longest reply kept in an audit row, in characters.
const MAX_AUDITED_REPLY: usize = 2_000;

/// Longest command id kept in an audit row, in characters.
const MAX_AUDITED_ID: usize = 200;

/// The gate and whether the ids of the last run are back in it.
#[derive(Debug)]
pub(super) struct CommandAuth {
    /// Decides on every downlink command.
    pub(super) gate: Gate,
    restored: bool,
}

impl CommandAuth {
    /// Reads the keys of `commands`. A key that cannot be read (it could at `check`) leaves a
    /// gate that refuses every command, logged at ERROR: failing closed, never open.
    pub(super) fn new(commands: &Commands) -> Self {
        let keys = Keyring::load(commands).map_err(|issues| {
            let why = issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            error!(error = %why, "Cannot read the command keys; every downlink command is refused until a reload.");
            format!("the gateway cannot read its command keys ({why})")
        });
        let window_ms = i64::try_from(commands.replay_window.as_millis()).unwrap_or(i64::MAX);
        Self {
            gate: Gate::new(keys, window_ms),
            restored: false,
        }
    }

    /// Puts back the ids accepted within the window before this core started (a restart or a
    /// reload), once. Until it has, signed commands wait for it: a read error refuses them.
    pub(super) async fn restore(&mut self, store: &StoreHandle, now_ms: i64) -> Result<(), String> {
        if self.restored {
            return Ok(());
        }
        let ids = store
            .seen_ids(now_ms - self.gate.window_ms())
            .await
            .map_err(|e| {
                error!(error = %e, "Cannot read the command ids of the replay window.");
                format!("the gateway cannot read its replay window ({e})")
            })?;
        self.gate.remember(ids);
        self.restored = true;
        Ok(())
    }
}

/// The reply to a refused command: the usual error reply plus `"refused"`, the reason's name.
pub(super) fn refusal_reply(refused: &Refused, name: &str, window_ms: i64) -> Vec<u8> {
    let message = refused
        .reason
        .message(name, refused.key.as_deref(), window_ms);
    mark_refused(
        commands::error_reply(&refused.id, &message),
        refused.reason.kind(),
    )
}

/// Adds `"refused":kind` to an error reply, so that every refusal names its reason the same
/// way.
pub(super) fn mark_refused(reply: Vec<u8>, kind: &str) -> Vec<u8> {
    match serde_json::from_slice::<Json>(&reply) {
        Ok(Json::Object(mut map)) => {
            map.insert("refused".into(), Json::from(kind));
            Json::Object(map).to_string().into_bytes()
        }
        _ => reply,
    }
}

/// Repeats of one command's refusal for one reason: one WARN a minute, with the count.
static REFUSALS: RepeatLimit = RepeatLimit::new(super::log_limit::REPEAT_WINDOW);

/// Logs a refusal once at WARN with its reason and key id; repeats are counted, not written
/// (the audit trail keeps every one).
pub(super) fn log_refusal(name: &str, refused: &Refused) {
    let name = peer_text(name);
    let kind = refused.reason.kind();
    let Some(left_out) = REFUSALS.admit(&format!("{name}/{kind}"), crate::clock::monotonic())
    else {
        return;
    };
    let key = refused.key.as_deref().map(peer_text).unwrap_or_default();
    if left_out == 0 {
        warn!(command = %name, key = %key, reason = kind, "Refused a downlink command.");
    } else {
        warn!(command = %name, key = %key, reason = kind, left_out,
            "Refused a downlink command; as many refusals like it since the last line were left out.");
    }
}

/// What the audit row of one command says, before it is chained.
pub(super) struct Audited<'a> {
    /// Gateway time, ms.
    pub(super) now_ms: i64,
    /// `mqtt:{sink}` or `local`.
    pub(super) source: String,
    /// The command name as it came.
    pub(super) name: &'a str,
    /// The key id it was signed with, or claimed.
    pub(super) key: Option<&'a str>,
    /// The refusal's name, when refused before it was carried out; with `outcome`, the
    /// reason recorded beside it (a write's `exception_02`, `timeout`, …).
    pub(super) refused: Option<&'static str>,
    /// The outcome to record instead of the one read from the reply: `intent` for a write
    /// about to be sent, a write's outcome ([`super::remote_write::verdict`]).
    pub(super) outcome: Option<&'static str>,
    /// The payload as it arrived.
    pub(super) payload: &'a [u8],
    /// The reply sent.
    pub(super) reply: &'a [u8],
}

impl Audited<'_> {
    /// The row: the outcome read from the reply, everything from the peer escaped and cut.
    pub(super) fn entry(&self) -> AuditEntry {
        let reply: Option<Json> = serde_json::from_slice(self.reply).ok();
        let ok = reply.as_ref().and_then(|r| r.get("ok")) == Some(&Json::Bool(true));
        let id = reply
            .as_ref()
            .and_then(|r| r.get("id"))
            .filter(|id| !id.is_null())
            .map(|id| escape_and_cut(&id.to_string(), MAX_AUDITED_ID));
        let outcome = match (self.outcome, self.refused, ok) {
            (Some(outcome), _, _) => outcome,
            (None, Some(_), _) => "refused",
            (None, None, true) => "done",
            (None, None, false) => "failed",
        };
        AuditEntry {
            ts_ms: self.now_ms,
            source: self.source.clone(),
            command: escape_and_cut(self.name, 64),
            key: self.key.map(|k| escape_and_cut(k, 64)),
            id,
            outcome: outcome.to_owned(),
            reason: self.refused.map(str::to_owned),
            reply: escape_and_cut(&String::from_utf8_lossy(self.reply), MAX_AUDITED_REPLY),
            payload_bytes: self.payload.len() as u64,
            payload_sha256: sha256_hex(self.payload),
        }
    }
}
