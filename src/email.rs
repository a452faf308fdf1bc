//! Email addresses as accounts use them: trimmed, validated, and normalized
//! (lowercased) for the uniqueness check.

use email_address::{EmailAddress, Options};

/// The longest address we accept, in bytes (RFC 5321's path limit less the
/// brackets).
pub const MAX_LEN: usize = 254;

/// A validated address: `display` as the user typed it (trimmed), and
/// `normalized`, which decides whether two signups are the same account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// As given, trimmed; what `/me` shows.
    pub display: String,
    /// Lowercased; UNIQUE in the database.
    pub normalized: String,
}

impl Email {
    /// Parses user input; `None` when it is not an address we accept.
    pub fn parse(input: &str) -> Option<Email> {
        let display = input.trim();
        if display.is_empty() || display.len() > MAX_LEN {
            return None;
        }
        // Stricter than the crate's defaults: no display names ("Alice
        // <a@x.io>" would be a second account for one mailbox), no IP
        // literals, and a domain with at least one dot.
        let options = Options {
            allow_display_text: false,
            allow_domain_literal: false,
            minimum_sub_domains: 2,
            ..Options::default()
        };
        EmailAddress::parse_with_options(display, options).ok()?;
        Some(Email {
            display: display.to_owned(),
            normalized: display.to_lowercase(),
        })
    }

    /// The normalized part after the last `@`.
    pub fn domain(&self) -> &str {
        self.normalized
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases() {
        let e = Email::parse("  Alice@Example.COM \n").unwrap();
        assert_eq!(e.display, "Alice@Example.COM");
        assert_eq!(e.normalized, "alice@example.com");
    }

    #[test]
    fn rejects_non_addresses() {
        for bad in [
            "",
            "   ",
            "alice",
            "alice@",
            "@example.com",
            "a b@example.com",
            "a@@b.com",
        ] {
            assert_eq!(Email::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn enforces_the_length_limit() {
        let address = |first_label: usize| {
            let label = |n: usize| "b".repeat(n);
            format!(
                "{}@{}.{}.{}.com",
                "a".repeat(64),
                label(first_label),
                label(61),
                label(61)
            )
        };
        assert_eq!(address(61).len(), MAX_LEN);
        assert!(Email::parse(&address(61)).is_some());
        assert_eq!(Email::parse(&address(62)), None);
    }
}
