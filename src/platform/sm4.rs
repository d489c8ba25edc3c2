//! The password an enterprise sends to the provincial platform, SM4-CBC encrypted as the
//! platform's onboarding flow prescribes (docs/platform.md §1.2):
//! - key: the first 16 characters of the platform-issued `secretKey`;
//! - IV: the first 16 characters of the 18-character enterprise code;
//! - plaintext: a PIN block, 2-digit length + PIN + `F` fill to 16 characters (PIN ≤ 14);
//! - no padding (the block is exactly one SM4 block); output in lowercase hex.
//!
//! The cipher is RustCrypto's `sm4` in `cbc` mode, never a hand-rolled one.

use cbc::cipher::{BlockModeDecrypt as _, BlockModeEncrypt as _, KeyIvInit as _};

/// Why a password cannot be encrypted or a ciphertext read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Sm4Error {
    /// The PIN block holds 1 to 14 ASCII characters.
    #[error("the platform password must be 1 to 14 ASCII characters, not {0}")]
    PasswordLength(usize),
    /// The secret key issued by the platform is shorter than 16 ASCII characters.
    #[error("the platform's secretKey must have at least 16 ASCII characters, it has {0}")]
    SecretKey(usize),
    /// The enterprise code is shorter than 16 ASCII characters.
    #[error("the enterprise code must have at least 16 ASCII characters, it has {0}")]
    EnterpriseCode(usize),
    /// A ciphertext is not 32 hex digits, or does not decrypt to a PIN block.
    #[error("not an encrypted PIN block: {0}")]
    Ciphertext(String),
}

type Encryptor = cbc::Encryptor<sm4::Sm4>;
type Decryptor = cbc::Decryptor<sm4::Sm4>;

/// The first 16 bytes of an ASCII `text`, or `None`.
fn first16(text: &str) -> Option<[u8; 16]> {
    if !text.is_ascii() {
        return None;
    }
    text.as_bytes().get(..16)?.try_into().ok()
}

/// `password` as the platform's PIN block: `06123456FFFFFFFF` for `123456`.
pub fn pin_block(password: &str) -> Result<[u8; 16], Sm4Error> {
    let n = password.len();
    if !password.is_ascii() || !(1..=14).contains(&n) {
        return Err(Sm4Error::PasswordLength(password.chars().count()));
    }
    let text = format!("{n:02}{password}{}", "F".repeat(14 - n));
    first16(&text).ok_or(Sm4Error::PasswordLength(n))
}

fn key_iv(secret_key: &str, enterprise_code: &str) -> Result<([u8; 16], [u8; 16]), Sm4Error> {
    let key = first16(secret_key).ok_or(Sm4Error::SecretKey(secret_key.len()))?;
    let iv = first16(enterprise_code).ok_or(Sm4Error::EnterpriseCode(enterprise_code.len()))?;
    Ok((key, iv))
}

/// The `password` field of `requestAK`: `password` encrypted for `secret_key` and
/// `enterprise_code`, as 32 lowercase hex digits.
pub fn encrypt_password(
    secret_key: &str,
    enterprise_code: &str,
    password: &str,
) -> Result<String, Sm4Error> {
    let (key, iv) = key_iv(secret_key, enterprise_code)?;
    let mut block = pin_block(password)?.into();
    Encryptor::new(&key.into(), &iv.into()).encrypt_block(&mut block);
    Ok(block.iter().map(|b| format!("{b:02x}")).collect())
}

/// The password inside a `requestAK` ciphertext: what the platform does, for test servers.
pub fn decrypt_password(
    secret_key: &str,
    enterprise_code: &str,
    hex: &str,
) -> Result<String, Sm4Error> {
    let bad = || Sm4Error::Ciphertext(hex.chars().take(40).collect());
    let (key, iv) = key_iv(secret_key, enterprise_code)?;
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    let mut block = bytes.into();
    Decryptor::new(&key.into(), &iv.into()).decrypt_block(&mut block);
    let text = std::str::from_utf8(&block).map_err(|_| bad())?;
    let n: usize = text.get(..2).and_then(|l| l.parse().ok()).ok_or_else(bad)?;
    let pin = text.get(2..2 + n).filter(|_| n <= 14).ok_or_else(bad)?;
    if text[2 + n..].bytes().any(|b| b != b'F') {
        return Err(bad());
    }
    Ok(pin.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness values of an existing platform client (docs/platform.md §1.2), whose
    /// ciphertext was computed independently with Python's `cryptography` SM4-CBC.
    #[test]
    fn the_reference_pin_block_encrypts_to_the_independently_computed_ciphertext() {
        assert_eq!(&pin_block("123456").unwrap(), b"06123456FFFFFFFF");
        let hex = encrypt_password("GP0W8AIF8uuf7Go4", "12345678b0123456", "123456").unwrap();
        assert_eq!(hex, "07f2ba74745882335f8d2ba640adb75b");
        assert_eq!(
            decrypt_password("GP0W8AIF8uuf7Go4", "12345678b0123456", &hex).unwrap(),
            "123456"
        );
    }

    #[test]
    fn only_the_first_16_characters_of_key_and_code_count() {
        let a = encrypt_password("GP0W8AIF8uuf7Go4-more", "91350100M000100Y43", "pw").unwrap();
        let b = encrypt_password("GP0W8AIF8uuf7Go4", "91350100M000100Y", "pw").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_inputs_are_refused_with_what_is_wrong() {
        assert_eq!(pin_block(""), Err(Sm4Error::PasswordLength(0)));
        assert_eq!(
            pin_block("fifteen-chars!!"),
            Err(Sm4Error::PasswordLength(15))
        );
        assert_eq!(
            encrypt_password("short", "91350100M000100Y43", "pw"),
            Err(Sm4Error::SecretKey(5))
        );
        assert!(matches!(
            decrypt_password("GP0W8AIF8uuf7Go4", "12345678b0123456", "00"),
            Err(Sm4Error::Ciphertext(_))
        ));
        // A ciphertext made with another key decrypts to garbage, not to a PIN block.
        let other = encrypt_password("AAAAAAAAAAAAAAAA", "12345678b0123456", "123456").unwrap();
        assert!(decrypt_password("GP0W8AIF8uuf7Go4", "12345678b0123456", &other).is_err());
    }
}
