//! Email addresses as accounts use them: trimmed, validated, and reduced to
//! the key that decides whether two signups are one mailbox.

use std::borrow::Cow;

use email_address::{EmailAddress, Options};
use icu_casemap::CaseMapper;
use icu_normalizer::{ComposingNormalizerBorrowed, DecomposingNormalizerBorrowed};
use icu_properties::props::{
    BidiControl, DefaultIgnorableCodePoint, GeneralCategory, GeneralCategoryGroup,
};
use icu_properties::{CodePointMapData, CodePointSetData};

/// The longest address we accept, in bytes (RFC 5321's path limit less the
/// brackets).
pub const MAX_LEN: usize = 254;

/// A validated address: `display` as the user typed it (trimmed), and
/// `normalized`, which decides whether two signups are the same account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// As given, trimmed; what `/me` shows.
    pub display: String,
    /// The local part compatibility-caseless folded, `@`, the domain in its
    /// IDNA ASCII form; UNIQUE in the database.
    pub normalized: String,
}

impl Email {
    /// Parses user input; `None` when it is not an address we accept.
    pub fn parse(input: &str) -> Option<Email> {
        let display = input.trim();
        if display.is_empty() || display.len() > MAX_LEN {
            return None;
        }
        // Invisible, control and bidi characters name no mailbox: they only
        // make one address look like another (or like nothing at all).
        if display.chars().any(is_refused_char) {
            return None;
        }
        EmailAddress::parse_with_options(display, address_rules()).ok()?;
        let (local, domain) = display.rsplit_once('@')?;
        // A quoted local part ("a b"@x.io) is one more spelling of many
        // mailboxes that no mail provider hands out.
        if local.starts_with('"') {
            return None;
        }
        let domain = ascii_domain(domain)?;
        if ends_in_a_number(&domain) {
            return None;
        }
        let normalized = format!("{}@{domain}", fold(local));
        // NFKC can turn a lookalike into syntax ("＠" into "@", "．" into
        // ".", "¨" into a space): the key itself must still be an address.
        EmailAddress::parse_with_options(&normalized, address_rules()).ok()?;
        Some(Email {
            display: display.to_owned(),
            normalized,
        })
    }

    /// The domain in its IDNA ASCII form (the part of `normalized` after the
    /// last `@`), as `signup_email_domains` holds it.
    pub fn domain(&self) -> &str {
        self.normalized
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
    }
}

impl Email {
    /// An address to look an account up by, as an operator types it: what
    /// `parse` makes of it, or, for one today's rules refuse, the key an
    /// account stored by an earlier release under that spelling has (see
    /// `key_of_stored`), so such an account can still be managed. Never for
    /// creating accounts.
    pub fn of_stored(input: &str) -> Email {
        Email::parse(input).unwrap_or_else(|| Email {
            display: input.trim().to_owned(),
            normalized: key_of_stored(input),
        })
    }
}

/// The uniqueness key for an address an earlier release stored: its key
/// under today's rules, or, when those rules refuse it, the compatibility
/// caseless fold of the whole string.
///
/// Such an account keeps working with its API key, so it needs a key that is
/// deterministic and unique all the same; folding the whole string, rather
/// than keeping the old lowercase key, still makes its lookalikes among the
/// old rows meet (and be reported) instead of slipping past as strangers.
pub fn key_of_stored(stored: &str) -> String {
    match Email::parse(stored) {
        Some(email) => email.normalized,
        None => fold(stored.trim()),
    }
}

/// A domain as `signup_email_domains` and `Email::domain` hold it: UTS 46
/// ToASCII (lowercase, Punycode for non-ASCII labels) with the strict flags
/// (STD3 characters only, hyphens checked, DNS lengths verified); `None` when
/// it is not a valid domain name.
pub fn ascii_domain(domain: &str) -> Option<String> {
    idna::domain_to_ascii_strict(domain).ok()
}

/// The syntax both the input and its key must pass: no display names ("Alice
/// <a@x.io>" would be a second account for one mailbox), no `[...]` literals,
/// and a domain with at least one dot.
fn address_rules() -> Options {
    Options {
        allow_display_text: false,
        allow_domain_literal: false,
        minimum_sub_domains: 2,
        ..Options::default()
    }
}

/// Unicode's compatibility caseless match (D146 in chapter 3 of the
/// standard): NFKD(fold(NFKD(fold(NFD(x))))), recomposed here with NFC
/// (NFKC is NFC after NFKD) so keys stay short and readable.
///
/// This is the standard's own definition, where the tempting
/// NFKC(fold(NFKC(x))) is not: folding after composing moves an accent that
/// follows U+0345 (the iota subscript) onto the iota it folds to, so "Α\u{345}\u{308}"
/// would meet "αϊ" instead of "α\u{308}ι". toNFKC_Casefold, the other
/// well-defined candidate, differs mainly by deleting default-ignorable
/// characters, which we refuse instead; and no maintained crate provides it.
fn fold(text: &str) -> String {
    let case = CaseMapper::new();
    let nfd = DecomposingNormalizerBorrowed::new_nfd().normalize(text);
    let folded = case.fold_string(&nfd);
    let nfkd = DecomposingNormalizerBorrowed::new_nfkd().normalize(&folded);
    let folded_again: Cow<'_, str> = case.fold_string(&nfkd);
    ComposingNormalizerBorrowed::new_nfkc()
        .normalize(&folded_again)
        .into_owned()
}

/// Characters no address may hold: every control, format, private-use,
/// surrogate and unassigned code point (general category C), every space and
/// line or paragraph separator (Z), every default-ignorable (invisible) code
/// point such as variation selectors, and the bidi controls (already Cf,
/// named for the reader).
///
/// Unassigned code points are refused too because Unicode keeps case folding
/// and normalization stable only for assigned characters: a key made of them
/// could change under a later Unicode version.
fn is_refused_char(c: char) -> bool {
    let category = CodePointMapData::<GeneralCategory>::new().get(c);
    GeneralCategoryGroup::Other.contains(category)
        || GeneralCategoryGroup::Separator.contains(category)
        || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || CodePointSetData::new::<BidiControl>().contains(c)
}

/// The URL standard's "ends in a number" test: a last label of digits, or of
/// `0x` and hex digits, makes a browser or resolver read the host as an IPv4
/// address (`127.1`, `0x7f.1`), never as a name; and no top-level domain is
/// numeric.
fn ends_in_a_number(ascii_domain: &str) -> bool {
    let last = ascii_domain.rsplit('.').next().unwrap_or(ascii_domain);
    let all = |s: &str, f: fn(&u8) -> bool| s.bytes().all(|b| f(&b));
    !last.is_empty()
        && (all(last, u8::is_ascii_digit)
            || last
                .strip_prefix("0x")
                .is_some_and(|hex| all(hex, u8::is_ascii_hexdigit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(input: &str) -> String {
        Email::parse(input)
            .unwrap_or_else(|| panic!("{input:?} should parse"))
            .normalized
    }

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

    #[test]
    fn lookalike_spellings_of_one_mailbox_share_a_key() {
        for (one, other) in [
            ("äbc@x.io", "a\u{308}bc@x.io"),
            ("ＡＢＣ@x.io", "abc@x.io"),
            ("ﬁle@x.io", "file@x.io"),
            ("straße@x.io", "STRASSE@x.io"),
            ("user@bücher.de", "user@xn--bcher-kva.de"),
            ("user@BÜCHER.DE", "user@bücher.de"),
            ("user@ｘ.io", "user@x.io"),
        ] {
            assert_eq!(key(one), key(other), "{one:?} vs {other:?}");
            // A key is its own key: stored keys and fresh ones compare alike.
            assert_eq!(key(&key(one)), key(one), "{one:?}");
        }
        assert_eq!(key("Straße@Bücher.de"), "strasse@xn--bcher-kva.de");
        // Domains use non-transitional IDNA: straße.de is not strasse.de.
        assert_ne!(key("a@straße.de"), key("a@strasse.de"));
    }

    #[test]
    fn display_keeps_what_was_typed() {
        let e = Email::parse(" A\u{308}bc@Bücher.de ").unwrap();
        assert_eq!(e.display, "A\u{308}bc@Bücher.de");
        assert_eq!(e.normalized, "äbc@xn--bcher-kva.de");
    }

    #[test]
    fn folds_by_the_standards_compatibility_caseless_match() {
        // D146 keeps the diaeresis on the alpha, before the folded iota.
        assert_eq!(key("\u{391}\u{345}\u{308}@x.io"), key("α\u{308}ι@x.io"));
        assert_ne!(key("\u{391}\u{345}\u{308}@x.io"), key("αϊ@x.io"));
    }

    #[test]
    fn refuses_invisible_control_and_bidi_characters() {
        for bad in [
            "a\u{200B}b@x.io",   // zero-width space
            "\u{FEFF}ab@x.io",   // BOM
            "ab@x\u{AD}y.io",    // soft hyphen, which IDNA would drop
            "ab\u{AD}@x.io",     // soft hyphen in the local part
            "a\u{202E}b@x.io",   // right-to-left override
            "a\u{202D}b@x.io",   // left-to-right override
            "a\u{200F}b@x.io",   // right-to-left mark
            "a\u{2066}b@x.io",   // left-to-right isolate
            "a\u{61C}b@x.io",    // Arabic letter mark
            "a\u{200D}b@x.io",   // zero-width joiner
            "a\u{FE0F}b@x.io",   // variation selector (Mn, but invisible)
            "a\u{2028}b@x.io",   // line separator
            "a\u{2029}b@x.io",   // paragraph separator
            "a\u{85}b@x.io",     // NEL, a C1 control
            "a\u{7F}b@x.io",     // DEL
            "a\u{3000}b@x.io",   // ideographic space
            "a\u{A0}b@x.io",     // no-break space
            "a\u{E000}b@x.io",   // private use
            "a\u{10FFFF}b@x.io", // noncharacter
        ] {
            assert_eq!(Email::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_quoted_local_parts_and_ip_literals() {
        for bad in [
            "\"a b\"@x.io",
            "\"ab\"@x.io",
            "a@[1.2.3.4]",
            "a@[IPv6:::1]",
            "a@127.0.0.1",
            "a@1.2.3.4",
            "a@127.1",
            "a@0x7f.0x1",
            "a@x.123",
        ] {
            assert_eq!(Email::parse(bad), None, "{bad:?}");
        }
        // A digit inside a name is fine.
        assert!(Email::parse("a@1x.io").is_some());
        assert!(Email::parse("a@x.io1").is_some());
    }

    #[test]
    fn refuses_domains_idna_refuses() {
        for bad in [
            "a@x..io",
            "a@x_y.io",
            "a@-x.io",
            "a@x.io.",
            "a@xn--zz.io",
            "a@x.xn--",
        ] {
            assert_eq!(Email::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_lookalikes_that_fold_into_syntax() {
        for bad in ["a＠b@x.io", "a．．b@x.io", "a¨b@x.io"] {
            assert_eq!(Email::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ascii_domain_is_the_idna_form() {
        assert_eq!(
            ascii_domain("Bücher.DE").as_deref(),
            Some("xn--bcher-kva.de")
        );
        assert_eq!(ascii_domain("example.com").as_deref(), Some("example.com"));
        assert_eq!(ascii_domain("x..io"), None);
    }

    #[test]
    fn stored_addresses_the_rules_now_refuse_keep_a_folded_key() {
        assert_eq!(key_of_stored(" Äbc@Bücher.de "), "äbc@xn--bcher-kva.de");
        assert_eq!(key_of_stored("ＡＢ@127.0.0.1"), "ab@127.0.0.1");
        assert_eq!(key_of_stored("a\u{200B}b@x.io"), "a\u{200B}b@x.io");
    }
}
