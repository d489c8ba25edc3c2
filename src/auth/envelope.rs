//! The signed command envelope and the exact bytes a signature covers.
//!
//! ```text
//! {"key":"ops1","sig":"<base64>","cmd":{"id":"…","ts":1765000000000,"alarm":"…"}}
//! ```
//!
//! `cmd` is taken as the raw bytes that arrived ([`serde_json::value::RawValue`]), so neither
//! side has to canonicalize JSON: the signer signs the text it sends. The signature covers
//! [`signed_bytes`]: a version tag, the gateway's topic prefix and the command name, then
//! those bytes, so a command signed for one gateway or one command cannot be replayed on
//! another.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The first line of every signed message; a new format gets a new tag.
pub const DOMAIN: &str = "plantwatch-cmd-v1";

/// A command with its signature, as it arrived.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<'a> {
    /// The key id, as in `[[commands.keys]]`.
    pub key: String,
    /// Base64 of the Ed25519 signature or HMAC-SHA256 tag.
    pub sig: String,
    /// The command, exactly as it arrived.
    #[serde(borrow)]
    pub cmd: &'a RawValue,
}

/// The `id` and `ts` every signed command carries.
#[derive(Debug, Deserialize)]
pub struct Stamp {
    /// The command's id, echoed in its reply.
    #[serde(default)]
    pub id: serde_json::Value,
    /// When it was signed, ms since the Unix epoch.
    #[serde(default)]
    pub ts: Option<serde_json::Value>,
}

/// What the payload is: a signed envelope, or a bare command (the unsigned channel).
#[derive(Debug)]
pub enum Payload<'a> {
    /// `{"key":…,"sig":…,"cmd":{…}}`.
    Signed(Envelope<'a>),
    /// Anything else; the command parser judges it.
    Unsigned,
    /// An object with an envelope's fields that is not a valid envelope.
    BadEnvelope(String),
}

/// Tells a signed envelope from a bare command. A bare command never has `key`, `sig` or
/// `cmd` (the command parser refuses unknown fields), so their presence decides.
pub fn classify(payload: &[u8]) -> Payload<'_> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        key: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        sig: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        cmd: Option<serde::de::IgnoredAny>,
    }
    let Ok(probe) = serde_json::from_slice::<Probe>(payload) else {
        return Payload::Unsigned;
    };
    if probe.key.is_none() && probe.sig.is_none() && probe.cmd.is_none() {
        return Payload::Unsigned;
    }
    match serde_json::from_slice::<Envelope<'_>>(payload) {
        Ok(e) if e.cmd.get().starts_with('{') => Payload::Signed(e),
        Ok(_) => Payload::BadEnvelope("`cmd` must be a JSON object".into()),
        Err(e) => Payload::BadEnvelope(format!(
            "malformed signed command: {e}; send {{\"key\":…,\"sig\":…,\"cmd\":{{…}}}}"
        )),
    }
}

/// The bytes a command's signature covers.
pub fn signed_bytes(prefix: &str, name: &str, cmd: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + prefix.len() + name.len() + cmd.len() + 3);
    out.extend_from_slice(DOMAIN.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(cmd);
    out
}

/// The envelope around `cmd` (which must be the exact text that was signed).
pub fn wrap(key: &str, sig_b64: &str, cmd: &str) -> String {
    let key = serde_json::Value::String(key.to_owned());
    let sig = serde_json::Value::String(sig_b64.to_owned());
    format!(r#"{{"key":{key},"sig":{sig},"cmd":{cmd}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_bytes_are_taken_exactly_as_sent() {
        let text = r#"{"key":"k","sig":"AA==","cmd":{ "id" : "1",  "ts":5 }}"#;
        let Payload::Signed(e) = classify(text.as_bytes()) else {
            panic!("not an envelope")
        };
        assert_eq!(e.cmd.get(), r#"{ "id" : "1",  "ts":5 }"#);
        assert_eq!(
            signed_bytes("p/q", "ack", e.cmd.get().as_bytes()),
            b"plantwatch-cmd-v1\np/q\nack\n{ \"id\" : \"1\",  \"ts\":5 }".to_vec()
        );
    }

    #[test]
    fn bare_commands_and_broken_envelopes_are_told_apart() {
        assert!(matches!(
            classify(br#"{"id":"1","alarm":"a"}"#),
            Payload::Unsigned
        ));
        assert!(matches!(classify(b"{not json"), Payload::Unsigned));
        assert!(matches!(
            classify(br#"{"key":"k","cmd":{}}"#),
            Payload::BadEnvelope(_)
        ));
        assert!(matches!(
            classify(br#"{"key":"k","sig":"x","cmd":[1]}"#),
            Payload::BadEnvelope(_)
        ));
        assert!(matches!(
            classify(br#"{"key":"k","sig":"x","cmd":{},"extra":1}"#),
            Payload::BadEnvelope(_)
        ));
    }
}
