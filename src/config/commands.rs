//! `[commands]`: who may send downlink commands. Each `[[commands.keys]]` names an operator's
//! key, where the gateway finds it (a file or a systemd credential, never the config text) and
//! the role it holds. The keys themselves are read by [`crate::auth::keys`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::issue::Issues;
use super::rules::parse_duration;
pub use crate::auth::spec::{
    Algorithm, Commands, DEFAULT_CONFIG_HEALTH_WINDOW, DEFAULT_REPLAY_WINDOW, KeySpec, Role,
};
use crate::secret::PasswordSource;

/// The widest replay window accepted: every id seen within it is kept in the state file.
const MAX_REPLAY_WINDOW: Duration = Duration::from_secs(3600);

/// Longest key id, in characters: it is echoed in replies and audit rows.
pub const MAX_KEY_ID_CHARS: usize = 64;

/// `[commands]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommands {
    /// How far `ts` may be from the gateway clock, e.g. `"60s"`.
    #[serde(default)]
    pub replay_window: Option<String>,
    /// How long a pushed configuration is watched before it stays, e.g. `"120s"`.
    #[serde(default)]
    pub config_health_window: Option<String>,
    /// The operators' keys.
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

/// `[[commands.keys]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// The key id commands name in their `key` field.
    pub id: String,
    /// `read`, `operate` or `engineer`.
    pub role: String,
    /// An Ed25519 public key: one line of base64 of its 32 bytes.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// An HMAC-SHA256 shared secret: the file's first line, at least 32 bytes.
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// A systemd credential (`LoadCredential=`) holding the key, in the format of `algorithm`.
    #[serde(default)]
    pub credential: Option<String>,
    /// With `credential`: `"ed25519"` (default) or `"hmac-sha256"`.
    #[serde(default)]
    pub algorithm: Option<String>,
}

/// Whether `id` is usable as a key id: it is echoed in replies, logs and audit rows.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_KEY_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// Resolves `[commands]`.
pub fn resolve_commands(raw: Option<RawCommands>, issues: &mut Issues) -> Commands {
    let mut out = Commands::default();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(text) = &raw.replay_window {
        match parse_duration(text) {
            Ok(d) if (Duration::from_secs(1)..=MAX_REPLAY_WINDOW).contains(&d) => {
                out.replay_window = d;
            }
            Ok(_) => issues.push(
                "commands.replay_window",
                format!("`{text}` is out of range: give 1s to 1h"),
            ),
            Err(e) => issues.push("commands.replay_window", e),
        }
    }
    if let Some(text) = &raw.config_health_window {
        match parse_duration(text) {
            Ok(d) if (Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&d) => {
                out.config_health_window = d;
            }
            Ok(_) => issues.push(
                "commands.config_health_window",
                format!("`{text}` is out of range: give 5s to 1h"),
            ),
            Err(e) => issues.push("commands.config_health_window", e),
        }
    }
    for (i, k) in raw.keys.iter().enumerate() {
        let key = format!("commands.keys[{i}]");
        if let Some(spec) = resolve_key(&key, k, issues) {
            if let Some(first) = out.keys.iter().position(|s| s.id == spec.id) {
                issues.push(
                    format!("{key}.id"),
                    format!(
                        "key id `{}` is already used by commands.keys[{first}]; ids must be unique",
                        spec.id
                    ),
                );
                continue;
            }
            out.keys.push(spec);
        }
    }
    out
}

fn resolve_key(key: &str, raw: &RawKey, issues: &mut Issues) -> Option<KeySpec> {
    let before = issues.0.len();
    if !valid_key_id(&raw.id) {
        issues.push(
            format!("{key}.id"),
            format!(
                "`{}` is not a key id: 1 to {MAX_KEY_ID_CHARS} letters, digits, `-`, `_`, `.` \
                 or `@`",
                raw.id
            ),
        );
    }
    let role = Role::parse(&raw.role);
    if role.is_none() {
        issues.push(
            format!("{key}.role"),
            format!(
                "`{}` is not a role; roles: read, operate, engineer",
                raw.role
            ),
        );
    }
    let algorithm = match raw.algorithm.as_deref() {
        None | Some("ed25519") => Some(Algorithm::Ed25519),
        Some("hmac-sha256") => Some(Algorithm::HmacSha256),
        Some(other) => {
            issues.push(
                format!("{key}.algorithm"),
                format!("`{other}` is not an algorithm; give \"ed25519\" or \"hmac-sha256\""),
            );
            None
        }
    };
    let given = [
        raw.public_key_file.is_some(),
        raw.hmac_secret_file.is_some(),
        raw.credential.is_some(),
    ]
    .into_iter()
    .filter(|g| *g)
    .count();
    if given != 1 {
        issues.push(
            key.to_owned(),
            format!(
                "key `{}`: give exactly one of `public_key_file`, `hmac_secret_file` or \
                 `credential`",
                raw.id
            ),
        );
        return None;
    }
    if raw.algorithm.is_some() && raw.credential.is_none() {
        issues.push(
            format!("{key}.algorithm"),
            "`algorithm` goes with `credential`; a file key's algorithm is its key name",
        );
    }
    let (algorithm, source) = if let Some(f) = &raw.public_key_file {
        (Algorithm::Ed25519, PasswordSource::File(f.clone()))
    } else if let Some(f) = &raw.hmac_secret_file {
        (Algorithm::HmacSha256, PasswordSource::File(f.clone()))
    } else {
        let source = super::daemon::password_source(
            key,
            ("public_key_file", None),
            ("credential", raw.credential.as_ref()),
            issues,
        )?;
        (algorithm?, source)
    };
    if issues.0.len() > before {
        return None;
    }
    Some(KeySpec {
        id: raw.id.clone(),
        role: role?,
        algorithm,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawCommands {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn keys_resolve_with_their_roles_and_sources() {
        let mut issues = Issues::default();
        let c = resolve_commands(
            Some(raw(r#"
                replay_window = "30s"
                [[keys]]
                id = "ops1"
                role = "operate"
                public_key_file = "/etc/plantwatch/ops1.pub"
                [[keys]]
                id = "scada"
                role = "engineer"
                credential = "scada-hmac"
                algorithm = "hmac-sha256"
            "#)),
            &mut issues,
        );
        assert!(issues.is_empty(), "{:?}", issues.0);
        assert_eq!(c.replay_window, Duration::from_secs(30));
        assert_eq!(c.keys[0].role, Role::Operate);
        assert_eq!(c.keys[0].algorithm, Algorithm::Ed25519);
        assert_eq!(c.keys[1].algorithm, Algorithm::HmacSha256);
        assert_eq!(
            c.keys[1].source,
            PasswordSource::Credential("scada-hmac".into())
        );
        assert!(Role::Engineer > Role::Operate && Role::Operate > Role::Read);
    }

    #[test]
    fn every_bad_key_is_named_by_its_path() {
        let mut issues = Issues::default();
        resolve_commands(
            Some(raw(r#"
                replay_window = "2h"
                [[keys]]
                id = "a b"
                role = "admin"
                public_key_file = "k"
                [[keys]]
                id = "x"
                role = "read"
                [[keys]]
                id = "y"
                role = "read"
                public_key_file = "k"
                [[keys]]
                id = "y"
                role = "read"
                hmac_secret_file = "s"
                [[keys]]
                id = "z"
                role = "read"
                credential = "c"
                algorithm = "rsa"
            "#)),
            &mut issues,
        );
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "commands.replay_window",
                "commands.keys[0].id",
                "commands.keys[0].role",
                "commands.keys[1]",
                "commands.keys[3].id",
                "commands.keys[4].algorithm",
            ],
            "{:?}",
            issues.0
        );
    }
}
