//! The authenticated command channel: who may send which downlink command, and proof that a
//! command is fresh and sent once (docs/remote-operations.md).
//!
//! Every command on `{prefix}/cmd/{name}` passes [`Gate::admit`] before it is parsed. Once
//! `[[commands.keys]]` are configured, a command must come in a signed [`envelope`] by a known
//! key whose [`Role`] covers the command, with a `ts` within the replay window of the gateway
//! clock and an `id` not accepted before within that window. Without keys, the commands that
//! existed before signing ([`unsigned_allowed`]) are taken unsigned as before; commands that
//! change the plant or the gateway's configuration never are.
//!
//! The gate is pure: the caller gives it the time, persists the ids it accepts
//! ([`Admitted::seen`]) and restores them after a restart with [`Gate::remember`].

pub mod envelope;
pub mod keys;
pub mod spec;

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value as Json;

use crate::store::SeenId;
use envelope::Payload;
use keys::Keyring;
pub use spec::Role;

/// Most (key, id) pairs remembered at once; beyond it, signed commands are refused until the
/// window moves on (only authenticated commands are remembered, so only a key holder fills it).
pub const MAX_SEEN: usize = 100_000;

/// The role a command needs; `None` for a name that is not a command (the parser refuses it).
pub fn required_role(name: &str) -> Option<Role> {
    match name {
        "list" => Some(Role::Read),
        "ack" | "shelve" | "unshelve" | "serviced" | "write" => Some(Role::Operate),
        "upload" | "config" => Some(Role::Engineer),
        _ => None,
    }
}

/// Whether a gateway without keys takes command `name` unsigned: the read and alarm commands
/// (and `upload`) that predate signing. Point writes and remote configuration never are.
pub fn unsigned_allowed(name: &str) -> bool {
    !matches!(name, "write" | "config")
}

/// Why a command was refused; nothing changed because of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Keys are configured and the command is not signed.
    Unsigned,
    /// The command may never be taken unsigned, and no keys are configured.
    NeedsKeys,
    /// The envelope or the signed command's `id`/`ts` is malformed.
    Malformed(String),
    /// No configured key has this id.
    UnknownKey,
    /// The signature does not verify with the key.
    BadSignature,
    /// The key's role does not cover the command.
    Role {
        /// What the key has.
        has: Role,
        /// What the command needs.
        needs: Role,
    },
    /// `ts` is older than the window.
    Stale {
        /// How far behind the gateway clock, ms.
        by_ms: i64,
    },
    /// `ts` is further ahead than the window.
    Future {
        /// How far ahead of the gateway clock, ms.
        by_ms: i64,
    },
    /// This key already sent this id within the window.
    Replayed,
    /// Too many ids within the window to remember another.
    Flooded,
    /// The gateway cannot read its keys: every command is refused until a reload.
    Unavailable(String),
}

impl Refusal {
    /// A short stable name for replies, audit rows and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::NeedsKeys => "needs_keys",
            Self::Malformed(_) => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Role { .. } => "role",
            Self::Stale { .. } => "stale",
            Self::Future { .. } => "future",
            Self::Replayed => "replayed",
            Self::Flooded => "flooded",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// What the reply says.
    pub fn message(&self, name: &str, key: Option<&str>, window_ms: i64) -> String {
        let key = key.map(crate::runtime::log_limit::peer_text);
        let key = key.as_deref().unwrap_or("?");
        let name = crate::runtime::log_limit::peer_text(name);
        let window_s = window_ms / 1000;
        match self {
            Self::Unsigned => format!(
                "refused `{name}`: unsigned; this gateway takes only signed commands \
                 ({{\"key\":…,\"sig\":…,\"cmd\":{{…}}}}, see `plantwatch sign`)"
            ),
            Self::NeedsKeys => format!(
                "refused `{name}`: it must be signed, and no [[commands.keys]] are configured"
            ),
            Self::Malformed(why) => format!("refused `{name}`: {why}"),
            Self::UnknownKey => format!("refused `{name}`: unknown key `{key}`"),
            Self::BadSignature => {
                format!("refused `{name}`: bad signature for key `{key}`")
            }
            Self::Role { has, needs } => format!(
                "refused `{name}`: key `{key}` has role `{}`; `{name}` needs `{}`",
                has.as_str(),
                needs.as_str()
            ),
            Self::Stale { by_ms } => format!(
                "refused `{name}`: stale `ts`, {by_ms} ms behind the gateway clock (window \
                 ±{window_s} s)"
            ),
            Self::Future { by_ms } => format!(
                "refused `{name}`: future `ts`, {by_ms} ms ahead of the gateway clock (window \
                 ±{window_s} s)"
            ),
            Self::Replayed => format!(
                "refused `{name}`: replayed: key `{key}` already sent this `id` within the last \
                 {window_s} s"
            ),
            Self::Flooded => {
                format!("refused `{name}`: more than {MAX_SEEN} commands within the replay window")
            }
            Self::Unavailable(why) => format!("refused `{name}`: {why}"),
        }
    }
}

/// A command that may be parsed and carried out.
#[derive(Debug)]
pub struct Admitted<'a> {
    /// The key that signed it and its role; `None` on the unsigned channel.
    pub key: Option<(String, Role)>,
    /// The command's JSON: the signed `cmd`, or the whole payload when unsigned.
    pub command: Cow<'a, [u8]>,
    /// The id to persist so that a restart still refuses it; `None` when unsigned.
    pub seen: Option<SeenId>,
}

/// A refused command, with what the reply and the audit row need.
#[derive(Debug)]
pub struct Refused {
    /// The command's id for the reply (salvaged), `Null` when none could be read.
    pub id: Json,
    /// The key id it claimed, if any.
    pub key: Option<String>,
    /// Why.
    pub reason: Refusal,
}

/// The command channel's gatekeeper: the keys, the replay window and the ids seen within it.
#[derive(Debug)]
pub struct Gate {
    /// The keys, or why they could not be read (then every command is refused).
    keys: Result<Keyring, String>,
    window_ms: i64,
    /// Each accepted (key, id) with its `ts`.
    seen: HashMap<(String, String), i64>,
    /// Gateway time of the last pruning of `seen`.
    pruned_at_ms: i64,
}

impl Gate {
    /// A gate with `keys` and a replay window of `window_ms`.
    pub fn new(keys: Result<Keyring, String>, window_ms: i64) -> Self {
        Self {
            keys,
            window_ms,
            seen: HashMap::new(),
            pruned_at_ms: i64::MIN,
        }
    }

    /// The replay window, ms.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Whether keys are configured (or meant to be): then unsigned commands are refused.
    pub fn signing_required(&self) -> bool {
        self.keys.as_ref().map_or(true, |k| !k.is_empty())
    }

    /// Restores ids accepted before a restart.
    pub fn remember(&mut self, ids: impl IntoIterator<Item = SeenId>) {
        for s in ids {
            self.seen.insert((s.key, s.id), s.ts_ms);
        }
    }

    /// Decides whether command `name`, which arrived as `payload` on the gateway with topic
    /// prefix `prefix`, may go on, at gateway time `now_ms`. An admitted signed command's id
    /// is remembered at once.
    ///
    /// # Errors
    /// [`Refused`] saying why, with the id and key for the reply.
    pub fn admit<'a>(
        &mut self,
        prefix: &str,
        name: &str,
        payload: &'a [u8],
        now_ms: i64,
    ) -> Result<Admitted<'a>, Refused> {
        let envelope = match envelope::classify(payload) {
            Payload::Unsigned => return self.unsigned(name, payload),
            Payload::BadEnvelope(why) => {
                return Err(Refused {
                    id: loose_id(payload),
                    key: None,
                    reason: Refusal::Malformed(why),
                });
            }
            Payload::Signed(e) => e,
        };
        let cmd = envelope.cmd.get().as_bytes();
        let stamp = serde_json::from_slice::<envelope::Stamp>(cmd).ok();
        let refuse = |reason| Refused {
            id: stamp.as_ref().map_or(Json::Null, |s| s.id.clone()),
            key: Some(envelope.key.clone()),
            reason,
        };
        let keys = match &self.keys {
            Ok(k) => k,
            Err(why) => return Err(refuse(Refusal::Unavailable(why.clone()))),
        };
        let Some(key) = keys.get(&envelope.key) else {
            return Err(refuse(Refusal::UnknownKey));
        };
        if !key.verify(&envelope::signed_bytes(prefix, name, cmd), &envelope.sig) {
            return Err(refuse(Refusal::BadSignature));
        }
        let Some(stamp) = &stamp else {
            return Err(refuse(Refusal::Malformed(
                "the signed `cmd` is not a JSON object".into(),
            )));
        };
        let id = match &stamp.id {
            Json::String(s) if !s.is_empty() => stamp.id.to_string(),
            Json::Number(_) => stamp.id.to_string(),
            _ => {
                return Err(refuse(Refusal::Malformed(
                    "a signed command needs an `id` (a non-empty string or a number), unique \
                     within the replay window"
                        .into(),
                )));
            }
        };
        let Some(ts) = stamp.ts.as_ref().and_then(Json::as_i64) else {
            return Err(refuse(Refusal::Malformed(
                "a signed command needs `ts`: when it was signed, in ms since the Unix epoch \
                 (an integer)"
                    .into(),
            )));
        };
        if ts < now_ms - self.window_ms {
            return Err(refuse(Refusal::Stale { by_ms: now_ms - ts }));
        }
        if ts > now_ms + self.window_ms {
            return Err(refuse(Refusal::Future { by_ms: ts - now_ms }));
        }
        if let Some(needs) = required_role(name)
            && key.role < needs
        {
            return Err(refuse(Refusal::Role {
                has: key.role,
                needs,
            }));
        }
        // An id signed before the window can go: a replay of it is stale anyway. Pruning at
        // most once a second keeps a burst of commands linear.
        if now_ms.saturating_sub(self.pruned_at_ms) >= 1000 || self.seen.len() >= MAX_SEEN {
            let oldest = now_ms - self.window_ms;
            self.seen.retain(|_, ts| *ts >= oldest);
            self.pruned_at_ms = now_ms;
        }
        let slot = (key.id.clone(), id);
        if self.seen.contains_key(&slot) {
            return Err(refuse(Refusal::Replayed));
        }
        if self.seen.len() >= MAX_SEEN {
            return Err(refuse(Refusal::Flooded));
        }
        self.seen.insert(slot.clone(), ts);
        Ok(Admitted {
            key: Some((key.id.clone(), key.role)),
            command: Cow::Borrowed(cmd),
            seen: Some(SeenId {
                key: slot.0,
                id: slot.1,
                ts_ms: ts,
            }),
        })
    }

    fn unsigned<'a>(&self, name: &str, payload: &'a [u8]) -> Result<Admitted<'a>, Refused> {
        let reason = if self.signing_required() {
            Refusal::Unsigned
        } else if !unsigned_allowed(name) {
            Refusal::NeedsKeys
        } else {
            return Ok(Admitted {
                key: None,
                command: Cow::Borrowed(payload),
                seen: None,
            });
        };
        Err(Refused {
            id: loose_id(payload),
            key: None,
            reason,
        })
    }
}

/// The `id` of anything object-like, so that even a refused command's reply can be matched.
fn loose_id(payload: &[u8]) -> Json {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        id: Json,
    }
    serde_json::from_slice::<Id>(payload).map_or(Json::Null, |i| i.id)
}

#[cfg(test)]
mod tests {
    use super::keys::{SigningSecret, key_pair_from_seed};
    use super::*;

    const NOW: i64 = 1_765_000_000_000;

    fn signer(seed: u8) -> SigningSecret {
        SigningSecret::parse(&key_pair_from_seed(&[seed; 32]).0, false).unwrap()
    }

    fn gate() -> Gate {
        let keys = Keyring::from_keys(vec![
            signer(1).to_key("ops1", Role::Operate),
            signer(2).to_key("viewer", Role::Read),
        ]);
        Gate::new(Ok(keys), 60_000)
    }

    fn signed(s: &SigningSecret, key: &str, name: &str, cmd: &str) -> String {
        let sig = s.sign(&envelope::signed_bytes("p", name, cmd.as_bytes()));
        envelope::wrap(key, &sig, cmd)
    }

    fn reason(g: &mut Gate, name: &str, payload: &str) -> &'static str {
        match g.admit("p", name, payload.as_bytes(), NOW) {
            Ok(_) => "admitted",
            Err(r) => r.reason.kind(),
        }
    }

    #[test]
    fn a_signed_command_is_admitted_once_and_each_fault_has_its_reason() {
        let mut g = gate();
        let ack = format!(r#"{{"id":"c1","ts":{NOW},"alarm":"m/r"}}"#);
        assert_eq!(
            reason(&mut g, "ack", &signed(&signer(1), "ops1", "ack", &ack)),
            "admitted"
        );
        assert_eq!(
            reason(&mut g, "ack", &signed(&signer(1), "ops1", "ack", &ack)),
            "replayed"
        );
        // Signed for `ack`, sent as `shelve`; signed for another gateway.
        let c2 = format!(r#"{{"id":"c2","ts":{NOW},"alarm":"m/r"}}"#);
        assert_eq!(
            reason(&mut g, "shelve", &signed(&signer(1), "ops1", "ack", &c2)),
            "bad_signature"
        );
        let other_gateway = envelope::wrap(
            "ops1",
            &signer(1).sign(&envelope::signed_bytes("q", "ack", c2.as_bytes())),
            &c2,
        );
        assert_eq!(reason(&mut g, "ack", &other_gateway), "bad_signature");
        assert_eq!(
            reason(&mut g, "ack", &signed(&signer(3), "ops1", "ack", &c2)),
            "bad_signature"
        );
        assert_eq!(
            reason(&mut g, "ack", &signed(&signer(1), "nobody", "ack", &c2)),
            "unknown_key"
        );
        assert_eq!(
            reason(&mut g, "ack", &signed(&signer(2), "viewer", "ack", &c2)),
            "role"
        );
        assert_eq!(
            reason(&mut g, "list", &signed(&signer(2), "viewer", "list", &c2)),
            "admitted"
        );
        let stale = format!(r#"{{"id":"c3","ts":{}}}"#, NOW - 60_001);
        assert_eq!(
            reason(&mut g, "list", &signed(&signer(1), "ops1", "list", &stale)),
            "stale"
        );
        let future = format!(r#"{{"id":"c4","ts":{}}}"#, NOW + 60_001);
        assert_eq!(
            reason(&mut g, "list", &signed(&signer(1), "ops1", "list", &future)),
            "future"
        );
        let no_ts = r#"{"id":"c5"}"#;
        assert_eq!(
            reason(&mut g, "list", &signed(&signer(1), "ops1", "list", no_ts)),
            "malformed"
        );
        assert_eq!(
            reason(&mut g, "ack", r#"{"id":"u","alarm":"m/r"}"#),
            "unsigned"
        );
        // A restart restores what was seen.
        let mut again = gate();
        again.remember([SeenId {
            key: "ops1".into(),
            id: "\"c1\"".into(),
            ts_ms: NOW,
        }]);
        assert_eq!(
            reason(&mut again, "ack", &signed(&signer(1), "ops1", "ack", &ack)),
            "replayed"
        );
    }

    #[test]
    fn without_keys_the_old_commands_stay_unsigned_and_writes_never_are() {
        let mut g = Gate::new(Ok(Keyring::default()), 60_000);
        assert_eq!(
            reason(&mut g, "ack", r#"{"id":"u","alarm":"m/r"}"#),
            "admitted"
        );
        assert_eq!(reason(&mut g, "write", r#"{"id":"u"}"#), "needs_keys");
        assert_eq!(reason(&mut g, "config", r#"{"id":"u"}"#), "needs_keys");
        let broken = &mut Gate::new(Err("key `k`: unreadable".into()), 60_000);
        assert_eq!(reason(broken, "list", r#"{"id":"u"}"#), "unsigned");
    }

    #[test]
    fn roles_are_ordered_for_every_command() {
        for (name, needs) in [
            ("list", Role::Read),
            ("ack", Role::Operate),
            ("shelve", Role::Operate),
            ("unshelve", Role::Operate),
            ("serviced", Role::Operate),
            ("write", Role::Operate),
            ("upload", Role::Engineer),
            ("config", Role::Engineer),
        ] {
            assert_eq!(required_role(name), Some(needs), "{name}");
        }
        for name in crate::runtime::commands::NAMES {
            assert!(required_role(name).is_some(), "`{name}` has no role");
        }
    }
}
