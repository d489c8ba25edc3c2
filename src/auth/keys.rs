//! Operator keys: reading them from files or systemd credentials, verifying with them, and
//! (for `plantwatch sign` and `keygen`) signing.
//!
//! File formats, one line each so that they travel through `LoadCredential=` and copy-paste:
//! - Ed25519 public key (`public_key_file`, the gateway's side): base64 of the 32 key bytes;
//! - Ed25519 private key (`plantwatch sign --key-file`, the operator's side): base64 of the
//!   32-byte seed;
//! - HMAC-SHA256 secret (`hmac_secret_file`, both sides): the first line, at least 32 bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::spec::{Algorithm, Commands, KeySpec, Role};
use crate::issue::ConfigIssue;
use crate::secret::PasswordSource;

/// Shortest HMAC secret accepted, in bytes: the tag's own strength.
pub const MIN_HMAC_SECRET: usize = 32;

/// What a key checks signatures with.
#[derive(Clone)]
enum Verifier {
    Ed25519(VerifyingKey),
    Hmac(Vec<u8>),
}

/// One operator key, read and ready to verify.
#[derive(Clone)]
pub struct Key {
    /// Its id.
    pub id: String,
    /// What it may do.
    pub role: Role,
    verifier: Verifier,
}

impl std::fmt::Debug for Key {
    // Never print the material: an HMAC secret is a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Whether `sig_b64` signs `message` with this key; compared in constant time.
    pub fn verify(&self, message: &[u8], sig_b64: &str) -> bool {
        let Ok(sig) = B64.decode(sig_b64.trim()) else {
            return false;
        };
        match &self.verifier {
            Verifier::Ed25519(key) => {
                Signature::from_slice(&sig).is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            Verifier::Hmac(secret) => {
                Hmac::<Sha256>::new_from_slice(secret).is_ok_and(|mut mac| {
                    mac.update(message);
                    mac.verify_slice(&sig).is_ok()
                })
            }
        }
    }
}

/// The configured keys, read.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// Reads every key of `[commands]`.
    ///
    /// # Errors
    /// One issue per key that cannot be read or parsed, naming the key id and the file.
    pub fn load(commands: &Commands) -> Result<Self, Vec<ConfigIssue>> {
        let mut keys = Vec::new();
        let mut issues = Vec::new();
        for (i, spec) in commands.keys.iter().enumerate() {
            match read_key(spec) {
                Ok(k) => keys.push(k),
                Err(message) => issues.push(ConfigIssue::new(
                    format!("commands.keys[{i}]"),
                    format!("key `{}`: {message}", spec.id),
                )),
            }
        }
        if issues.is_empty() {
            Ok(Self { keys })
        } else {
            Err(issues)
        }
    }

    /// Reads every key of `[commands]` that can be read here, as `check`, a start and a
    /// reload do: a key that cannot be read must stop them, not be found when the first
    /// command arrives. Keys in systemd credentials are left out when `$CREDENTIALS_DIRECTORY`
    /// is not set (a shell, not the service); their ids are returned.
    ///
    /// # Errors
    /// One issue per key that cannot be read or parsed, naming the key id and the file.
    pub fn check(commands: &Commands) -> Result<Vec<String>, Vec<ConfigIssue>> {
        let outside_service = std::env::var_os("CREDENTIALS_DIRECTORY").is_none();
        let mut skipped = Vec::new();
        let mut issues = Vec::new();
        for (i, spec) in commands.keys.iter().enumerate() {
            if outside_service && matches!(spec.source, PasswordSource::Credential(_)) {
                skipped.push(spec.id.clone());
            } else if let Err(message) = read_key(spec) {
                issues.push(ConfigIssue::new(
                    format!("commands.keys[{i}]"),
                    format!("key `{}`: {message}", spec.id),
                ));
            }
        }
        if issues.is_empty() {
            Ok(skipped)
        } else {
            Err(issues)
        }
    }

    /// A keyring of keys already in hand (tests, benches).
    pub fn from_keys(keys: Vec<Key>) -> Self {
        Self { keys }
    }

    /// Whether any key is configured: then every command must be signed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key called `id`.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }
}

fn read_key(spec: &KeySpec) -> Result<Key, String> {
    let line = spec
        .source
        .read_first_line()
        .map_err(|(place, why)| format!("cannot read {place}: {why}"))?;
    let verifier = match spec.algorithm {
        Algorithm::Ed25519 => Verifier::Ed25519(parse_public(&line)?),
        Algorithm::HmacSha256 => Verifier::Hmac(parse_hmac_secret(&line)?),
    };
    Ok(Key {
        id: spec.id.clone(),
        role: spec.role,
        verifier,
    })
}

fn decode_32(line: &str, what: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(line.trim())
        .map_err(|e| format!("not base64 ({e}); the {what} file holds one line of base64"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "{} bytes where an Ed25519 {what} has 32 (one line of base64, as `plantwatch keygen` \
             writes)",
            bytes.len()
        )
    })
}

/// An Ed25519 public key from its one-line file form.
///
/// # Errors
/// Why the line is not one.
pub fn parse_public(line: &str) -> Result<VerifyingKey, String> {
    VerifyingKey::from_bytes(&decode_32(line, "public key")?)
        .map_err(|_| "not a valid Ed25519 public key (not a curve point)".to_owned())
}

/// An HMAC secret from its file form.
///
/// # Errors
/// When it is too short to be a secret.
pub fn parse_hmac_secret(line: &str) -> Result<Vec<u8>, String> {
    let secret = line.trim_end_matches(['\r', '\n']).as_bytes().to_vec();
    if secret.len() < MIN_HMAC_SECRET {
        return Err(format!(
            "the HMAC secret has {} bytes; give at least {MIN_HMAC_SECRET} (e.g. `openssl rand \
             -base64 48`)",
            secret.len()
        ));
    }
    Ok(secret)
}

/// A key for signing, on the operator's side.
pub enum SigningSecret {
    /// An Ed25519 private key.
    Ed25519(SigningKey),
    /// An HMAC-SHA256 shared secret.
    Hmac(Vec<u8>),
}

impl SigningSecret {
    /// Reads a key file: an Ed25519 seed, or with `hmac` an HMAC secret.
    ///
    /// # Errors
    /// Why the text is not such a key.
    pub fn parse(text: &str, hmac: bool) -> Result<Self, String> {
        let line = text.lines().next().unwrap_or_default();
        if hmac {
            parse_hmac_secret(line).map(Self::Hmac)
        } else {
            Ok(Self::Ed25519(SigningKey::from_bytes(&decode_32(
                line,
                "private key",
            )?)))
        }
    }

    /// The base64 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        match self {
            Self::Ed25519(key) => B64.encode(key.sign(message).to_bytes()),
            Self::Hmac(secret) => {
                // `new_from_slice` takes a key of any length for HMAC; the error is unreachable.
                let tag = Hmac::<Sha256>::new_from_slice(secret)
                    .map(|mut mac| {
                        mac.update(message);
                        mac.finalize().into_bytes().to_vec()
                    })
                    .unwrap_or_default();
                B64.encode(tag)
            }
        }
    }

    /// The verifying half, as a gateway key with `id` and `role`.
    pub fn to_key(&self, id: &str, role: Role) -> Key {
        let verifier = match self {
            Self::Ed25519(k) => Verifier::Ed25519(k.verifying_key()),
            Self::Hmac(s) => Verifier::Hmac(s.clone()),
        };
        Key {
            id: id.to_owned(),
            role,
            verifier,
        }
    }
}

/// A new Ed25519 key pair from the OS's random source, in file form: (private, public).
///
/// # Errors
/// When the OS has no randomness to give.
pub fn generate() -> Result<(String, String), String> {
    use rand::TryRngCore as _;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(key_pair_from_seed(&seed))
}

/// The file forms (private, public) of the key pair with `seed`.
pub fn key_pair_from_seed(seed: &[u8; 32]) -> (String, String) {
    let key = SigningKey::from_bytes(seed);
    (B64.encode(seed), B64.encode(key.verifying_key().to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let (private, public) = key_pair_from_seed(&[7; 32]);
        let signer = SigningSecret::parse(&private, false).unwrap();
        let key = Key {
            id: "k".into(),
            role: Role::Read,
            verifier: Verifier::Ed25519(parse_public(&public).unwrap()),
        };
        let sig = signer.sign(b"hello");
        assert!(key.verify(b"hello", &sig));
        assert!(!key.verify(b"hellO", &sig));
        assert!(!key.verify(b"hello", "not base64!"));
        let other = SigningSecret::parse(&key_pair_from_seed(&[8; 32]).0, false).unwrap();
        assert!(!key.verify(b"hello", &other.sign(b"hello")));
    }

    #[test]
    fn an_hmac_tag_verifies_and_short_secrets_are_refused() {
        let secret = "s".repeat(40);
        let signer = SigningSecret::parse(&secret, true).unwrap();
        let key = signer.to_key("h", Role::Operate);
        assert!(key.verify(b"m", &signer.sign(b"m")));
        assert!(!key.verify(b"n", &signer.sign(b"m")));
        assert!(
            SigningSecret::parse("short", true)
                .err()
                .unwrap()
                .contains("at least 32")
        );
        assert!(
            parse_public("AAAA").unwrap_err().contains("3 bytes"),
            "a short key names its length"
        );
    }
}
