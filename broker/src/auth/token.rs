//! Bearer tokens: only their SHA-256 hashes are kept (a leaked auth file gives no token away),
//! and a presented token is compared with every known hash in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token's SHA-256, as stored in the auth file (64 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Reads 64 hex digits (either case).
    pub fn parse(hex: &str) -> Result<Self, String> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a sha256 must be 64 hex digits (from `myqueue-broker hash-token`), not {} characters",
                hex.len()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(TokenHash(bytes))
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant time: how much of the hash matches is not observable from the timing.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A new token: `mq_` and 64 hex digits of the operating system's randomness (256 bits).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("mq_{}", TokenHash(bytes).to_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_in_hex() {
        // sha256("abc"), the FIPS 180-2 test vector.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(TokenHash::of("abc").to_hex(), abc);
        assert_eq!(TokenHash::parse(abc).unwrap(), TokenHash::of("abc"));
        assert_eq!(
            TokenHash::parse(&abc.to_uppercase()).unwrap(),
            TokenHash::of("abc")
        );
        assert!(TokenHash::parse("abc").is_err());
        assert!(TokenHash::parse(&"g".repeat(64)).is_err());
        assert!(TokenHash::of("abc").matches(&TokenHash::of("abc")));
        assert!(!TokenHash::of("abc").matches(&TokenHash::of("abd")));
    }

    #[test]
    fn generated_tokens_differ_and_are_long() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert!(a.starts_with("mq_"));
    }
}
