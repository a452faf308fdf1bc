//! Passwords: the length rules of the contract and bcrypt, which refuses to
//! truncate silently.

use std::fmt;

/// Fewest characters (Unicode code points) a password may have.
pub const MIN_CHARS: usize = 8;
/// Most UTF-8 bytes: bcrypt reads only the first 72, so a longer password
/// would be silently cut. We refuse it instead.
pub const MAX_BYTES: usize = 72;
/// bcrypt cost when nothing else is configured.
pub const DEFAULT_COST: u32 = 12;
/// The range bcrypt accepts.
pub const MIN_COST: u32 = 4;
/// The range bcrypt accepts.
pub const MAX_COST: u32 = 31;

/// Why a candidate password is refused. The messages are the API's
/// `detail` strings, and what the admin CLI prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordError {
    /// Fewer than `MIN_CHARS` characters.
    TooShort,
    /// More than bcrypt's `MAX_BYTES`; we refuse rather than truncate.
    TooLong,
    /// A NUL character, which bcrypt would treat as the end of the password
    /// (and repeat).
    HasNul,
}

impl fmt::Display for PasswordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordError::TooShort => "Password must be at least 8 characters",
            PasswordError::TooLong => "Password must be at most 72 bytes",
            PasswordError::HasNul => "Password must not contain NUL characters",
        })
    }
}

impl std::error::Error for PasswordError {}

/// A password that passed the length rules, kept exactly as received (no
/// trimming, no case change). `Debug` is redacted.
pub struct Password(String);

impl Password {
    /// Applies the contract's rules to a candidate password.
    pub fn parse(input: String) -> Result<Password, PasswordError> {
        if input.chars().count() < MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if input.len() > MAX_BYTES {
            return Err(PasswordError::TooLong);
        }
        // bcrypt reads the key as a C string and repeats it, NUL included, to
        // fill 72 bytes: `pw` and `pw\0pw` would hash alike.
        if input.contains('\0') {
            return Err(PasswordError::HasNul);
        }
        Ok(Password(input))
    }

    /// bcrypt hash at `cost`. CPU-heavy: call it from the hashing pool only.
    /// `parse` guaranteed at most 72 bytes, so bcrypt sees every byte.
    pub fn hash(&self, cost: u32) -> Result<String, bcrypt::BcryptError> {
        bcrypt::hash(self.0.as_bytes(), cost)
    }
}

/// Whether `candidate` is the password behind `hash`. CPU-heavy: call it from
/// the hashing pool only. A candidate signup would have refused (over 72
/// bytes, or holding a NUL) never matches, but is still hashed so it takes
/// the usual time.
pub fn verify(candidate: &str, hash: &str) -> bool {
    let matches = bcrypt::verify(candidate.as_bytes(), hash).unwrap_or(false);
    matches && candidate.len() <= MAX_BYTES && !candidate.contains('\0')
}

/// A hash to verify against when the account does not exist, so that answer
/// takes as long as a wrong password. What it matches is irrelevant: the
/// caller refuses whatever the verification says.
pub fn dummy_hash(cost: u32) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash("no account has this password", cost)
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_characters_not_bytes_for_the_minimum() {
        // 7 euro signs are 21 bytes but only 7 characters.
        assert!(matches!(
            Password::parse("€".repeat(7)),
            Err(PasswordError::TooShort)
        ));
        assert!(Password::parse("€".repeat(8)).is_ok());
    }

    #[test]
    fn accepts_exactly_72_bytes_and_refuses_73() {
        assert!(Password::parse("€".repeat(24)).is_ok());
        assert!(Password::parse("a".repeat(72)).is_ok());
        assert!(matches!(
            Password::parse("a".repeat(73)),
            Err(PasswordError::TooLong)
        ));
        assert!(matches!(
            Password::parse(format!("{}a", "€".repeat(24))),
            Err(PasswordError::TooLong)
        ));
    }

    #[test]
    fn keeps_the_password_as_received() {
        let p = Password::parse("  Secret Pass  ".into()).unwrap();
        let hash = p.hash(4).unwrap();
        assert!(bcrypt::verify("  Secret Pass  ", &hash).unwrap());
        assert!(!bcrypt::verify("Secret Pass", &hash).unwrap());
    }

    #[test]
    fn the_72nd_byte_counts() {
        let a = Password::parse("a".repeat(72)).unwrap().hash(4).unwrap();
        assert!(!bcrypt::verify(format!("{}b", "a".repeat(71)), &a).unwrap());
    }

    #[test]
    fn verify_refuses_what_signup_would_have_refused() {
        let hash = bcrypt::hash("a".repeat(72), 4).unwrap();
        assert!(verify(&"a".repeat(72), &hash));
        // bcrypt alone would say yes: it reads only 72 bytes.
        assert!(!verify(&"a".repeat(73), &hash));
        assert!(!verify("wrong", &hash));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn nul_is_refused_and_never_matches() {
        assert!(matches!(
            Password::parse("password\0password".into()),
            Err(PasswordError::HasNul)
        ));
        let hash = bcrypt::hash("password", 4).unwrap();
        // bcrypt alone would say yes: it repeats the key with its NUL.
        assert!(bcrypt::verify("password\0password", &hash).unwrap());
        assert!(!verify("password\0password", &hash));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let p = Password::parse("hunter22hunter22".into()).unwrap();
        assert!(!format!("{p:?}").contains("hunter22"));
    }
}
