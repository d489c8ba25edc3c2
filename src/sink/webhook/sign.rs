//! The robots' request signatures: DingTalk 加签 and Feishu 签名校验.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// DingTalk 加签: `urlencode(base64(HmacSHA256(secret, "{timestamp_ms}\n{secret}")))`.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let string_to_sign = format!("{timestamp_ms}\n{secret}");
    let b64 = BASE64.encode(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()));
    // Base64 output only holds [A-Za-z0-9+/=]; of those only '+', '/' and '='
    // need escaping in a query, so this is a complete URL encoding of it
    // (identical to Python's quote_plus in DingTalk's sample) without a crate.
    let mut out = String::with_capacity(b64.len() + 8);
    for c in b64.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// Feishu 签名校验: `base64(HmacSHA256(key = "{timestamp_s}\n{secret}", msg = ""))`.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    // Feishu keys the HMAC with the string to sign and hashes nothing,
    // unlike DingTalk; that is what its samples do.
    let string_to_sign = format!("{timestamp_s}\n{secret}");
    BASE64.encode(hmac_sha256(string_to_sign.as_bytes(), b""))
}

pub(super) fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the
    // fallback only exists to keep this path free of unwrap.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(msg);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}
