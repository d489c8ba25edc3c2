//! The command channel's spec: the keys `[commands]` names, the roles they hold and the
//! windows of the channel. `auth` owns these types; `config` assembles them from the file.

use std::time::Duration;

use crate::secret::PasswordSource;

/// How far a command's `ts` may be from the gateway clock, and how long its `id` is
/// remembered, by default.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(60);

/// How long a pushed configuration is watched by default.
pub const DEFAULT_CONFIG_HEALTH_WINDOW: Duration = Duration::from_secs(120);

/// What a key may do. Ordered: each role holds every right of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Look only: `list`.
    Read,
    /// Act on the plant within its limits: `ack`, `shelve`, `unshelve`, `serviced` (and
    /// point writes).
    Operate,
    /// Change what the gateway does: `upload` (and remote configuration).
    Engineer,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Self; 3] = [Self::Read, Self::Operate, Self::Engineer];

    /// The name used in the config and in replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::Engineer => "engineer",
        }
    }

    /// The role called `text` in the config, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// How a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519: the gateway holds only the public key.
    Ed25519,
    /// HMAC-SHA256 with a secret shared by the platform and the gateway.
    HmacSha256,
}

impl Algorithm {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::HmacSha256 => "hmac-sha256",
        }
    }
}

/// One operator key, resolved (not yet read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Its id.
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// How it signs.
    pub algorithm: Algorithm,
    /// Where its material is.
    pub source: PasswordSource,
}

/// `[commands]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    /// How far `ts` may be from the gateway clock; ids are remembered this long.
    pub replay_window: Duration,
    /// How long a pushed configuration is watched (broker link, answering devices) before it
    /// stays; a failure within it puts the previous file back.
    pub config_health_window: Duration,
    /// The keys; none keeps the unsigned channel for read and alarm commands.
    pub keys: Vec<KeySpec>,
}

impl Default for Commands {
    fn default() -> Self {
        Self {
            replay_window: DEFAULT_REPLAY_WINDOW,
            config_health_window: DEFAULT_CONFIG_HEALTH_WINDOW,
            keys: Vec::new(),
        }
    }
}
