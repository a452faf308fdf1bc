//! Accounts as the product knows them: the tier, what an account shows, and
//! a new account with its freshly drawn key. Nothing here knows of HTTP or
//! SQL: storage stores these types, handlers answer with them.

use std::fmt;
use std::str::FromStr;

use crate::email::Email;
use crate::keys::{ApiKey, KeyDigest};

/// What an account pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Tier {
    /// The signup tier.
    #[default]
    Free,
    /// Paid.
    Pro,
    /// Paid, larger.
    Enterprise,
}

impl Tier {
    /// Every tier, cheapest first.
    pub const ALL: [Tier; 3] = [Tier::Free, Tier::Pro, Tier::Enterprise];

    /// Its name: in the API, the `X-KaggleIngest-Tier` header and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTier(pub String);

impl fmt::Display for UnknownTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a tier (free, pro or enterprise)", self.0)
    }
}

impl std::error::Error for UnknownTier {}

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Tier, UnknownTier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTier(s.to_owned()))
    }
}

impl serde::Serialize for Tier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An account as its owner may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Email as given at signup.
    pub email: String,
    /// What the account pays for.
    pub tier: Tier,
    /// Remaining credits, never negative.
    pub credits: i64,
    /// RFC 3339 UTC with milliseconds.
    pub created_at: String,
}

/// An account as an admin sees it: the account and the state of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// What the owner sees.
    pub account: Account,
    /// Whether a key is set (false after a revocation).
    pub key_active: bool,
    /// When the current (or last) key was issued.
    pub key_created_at: String,
}

/// An admin's change to a balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditChange {
    /// `+N`
    Add(i64),
    /// `-N`
    Subtract(i64),
    /// `=N`
    Set(i64),
}

/// An account about to be stored: its key is already a digest.
pub struct NewAccount {
    /// Validated email.
    pub email: Email,
    /// bcrypt hash of the password.
    pub password_hash: String,
    /// SHA-256 of the API key.
    pub key_digest: KeyDigest,
}

impl NewAccount {
    /// The account for a new signup with a freshly drawn key, and that key:
    /// the caller shows it once if storing the account succeeds.
    pub fn issue(
        email: Email,
        password_hash: String,
    ) -> Result<(NewAccount, ApiKey), getrandom::Error> {
        let key = ApiKey::generate()?;
        let account = NewAccount {
            email,
            password_hash,
            key_digest: key.digest(),
        };
        Ok((account, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_round_trip_through_their_names() {
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse(), Ok(tier));
        }
        assert!("Free".parse::<Tier>().is_err());
        assert!("gold".parse::<Tier>().is_err());
    }
}
