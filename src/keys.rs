//! API keys: generation (`ki_` + 32 uniformly random alphanumerics) and the
//! SHA-256 digest that is the only form we ever store.

use std::fmt;

use sha2::{Digest, Sha256};

/// Every key starts with this.
pub const PREFIX: &str = "ki_";
/// Random characters after the prefix.
pub const RANDOM_LEN: usize = 32;
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// The largest multiple of 62 that fits a byte: bytes at or above it are
/// thrown away so every character is equally likely (no modulo bias).
const ACCEPT_BELOW: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8;

/// A plaintext API key. It exists only between generation and the 200 body
/// that shows it once; `Debug` is redacted so it cannot reach a log by accident.
pub struct ApiKey(String);

impl ApiKey {
    /// Draws a fresh key from the OS random source.
    pub fn generate() -> Result<ApiKey, getrandom::Error> {
        let mut key = String::with_capacity(PREFIX.len() + RANDOM_LEN);
        key.push_str(PREFIX);
        let mut buf = [0u8; 64];
        while key.len() < PREFIX.len() + RANDOM_LEN {
            getrandom::fill(&mut buf)?;
            for &b in buf.iter().filter(|&&b| b < ACCEPT_BELOW) {
                if key.len() == PREFIX.len() + RANDOM_LEN {
                    break;
                }
                key.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
        Ok(ApiKey(key))
    }

    /// The plaintext, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest to store.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// SHA-256 of a key. A plain hash is enough (unlike passwords): keys carry
/// 190 bits of entropy, so there is nothing to brute-force.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// Digest of a presented key.
    pub fn of(key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(<redacted>)")
    }
}

/// Whether `s` has the shape of one of our keys. Anything else is answered
/// 403 without touching the database.
pub fn is_well_formed(s: &str) -> bool {
    s.len() == PREFIX.len() + RANDOM_LEN
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let keys: HashSet<String> = (0..1000)
            .map(|_| ApiKey::generate().unwrap().expose().to_owned())
            .collect();
        assert_eq!(keys.len(), 1000);
        assert!(keys.iter().all(|k| is_well_formed(k)));
    }

    #[test]
    fn every_alphabet_character_is_about_equally_likely() {
        // 2,000 keys = 64,000 characters, ~1,032 per symbol. A modulo-biased
        // generator would give the first 8 symbols ~1,290 each.
        let mut counts: HashMap<char, usize> = HashMap::new();
        for _ in 0..2000 {
            let key = ApiKey::generate().unwrap();
            for c in key.expose()[PREFIX.len()..].chars() {
                *counts.entry(c).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 62);
        let expected = 64_000.0 / 62.0;
        for (c, n) in counts {
            let ratio = n as f64 / expected;
            assert!((0.85..1.15).contains(&ratio), "{c} seen {n} times");
        }
    }

    #[test]
    fn shape_check_rejects_near_misses() {
        assert!(is_well_formed("ki_Xk2pL9mN4vQ7rT8sW1yZ3bC5dE6fG0hJ"));
        assert!(!is_well_formed("ki_Xk2pL9mN4vQ7rT8sW1yZ3bC5dE6fG0h"));
        assert!(!is_well_formed("KI_Xk2pL9mN4vQ7rT8sW1yZ3bC5dE6fG0hJ"));
        assert!(!is_well_formed("ki_Xk2pL9mN4vQ7rT8sW1yZ3bC5dE6fG0h-"));
        assert!(!is_well_formed("ki_Xk2pL9mN4vQ7rT8sW1yZ3bC5dE6fG0hé"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::generate().unwrap();
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
