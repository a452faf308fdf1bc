//! Keys that live: rotate, revoke, and verify with atomic metering.

use crate::contract::*;
use crate::helpers::{Reply, TestServer, all_at_once, count, free_port_addr, metrics_text};

const PASSWORD: &str = "securepassword123";

fn rotate(server: &TestServer, email: &str, password: &str) -> Reply {
    let body = serde_json::json!({"email": email, "password": password}).to_string();
    server.post_json("/api/auth/keys/rotate", &body)
}

fn verify(server: &TestServer, key: &str, query: &str) -> Reply {
    server.get(&format!("/api/auth/verify{query}"), Some(key))
}

/// `GET /api/auth/verify` with these `X-KaggleIngest-Cost` lines, sent
/// verbatim (repeated, spaced, signed: what a client library would tidy).
fn verify_costing(server: &TestServer, key: &str, costs: &[&str]) -> Reply {
    let mut headers = vec![("X-API-Key", key)];
    headers.extend(costs.iter().map(|c| ("X-KaggleIngest-Cost", *c)));
    server.request("GET", "/api/auth/verify", &headers, "")
}

/// The setting that lets `X-KaggleIngest-Cost` set the price.
const PRICED: &[&str] = &["--verify-cost-header", "true"];

fn credits(server: &TestServer, key: &str) -> i64 {
    server.get("/api/auth/me", Some(key)).json()["credits"]
        .as_i64()
        .unwrap()
}

#[test]
fn rotate_issues_a_new_key_and_the_old_one_stops_at_once() {
    let server = TestServer::start();
    let old = server.signup_key("rot@example.com");

    let reply = rotate(&server, "ROT@example.com", PASSWORD);

    let new = reply.issued_key(ROTATED);
    assert_ne!(new, old);
    assert_eq!(
        server.get("/api/auth/me", Some(&old)).body,
        INVALID_KEY_BODY
    );
    assert_eq!(server.get("/api/auth/me", Some(&new)).status, 200);
}

#[test]
fn wrong_password_and_unknown_email_get_the_same_401() {
    let server = TestServer::start();
    server.signup_key("who@example.com");

    let wrong_password = rotate(&server, "who@example.com", "not-the-password");
    let unknown_email = rotate(&server, "nobody@example.com", PASSWORD);
    let not_an_email = rotate(&server, "nobody", PASSWORD);
    let too_long = rotate(
        &server,
        "who@example.com",
        &format!("{PASSWORD}{}", "x".repeat(70)),
    );

    for reply in [&wrong_password, &unknown_email, &not_an_email, &too_long] {
        assert_eq!(reply.status, 401);
        assert_eq!(reply.body, BAD_CREDENTIALS_BODY);
    }
    assert_eq!(server.post_json("/api/auth/keys/rotate", "{}").status, 400);
}

#[test]
fn an_unknown_email_still_pays_for_a_bcrypt_verification() {
    // Counted, not timed: the hashing pool's histogram records every bcrypt
    // run, so this holds on a loaded machine and at the test's low cost.
    // (The dummy hash's cost is the configured one: a unit test in hasher.)
    let metrics = free_port_addr();
    let server = TestServer::start_with(&["--metrics-bind", &metrics.to_string()]);
    server.signup_key("who@example.com");
    let bcrypt_runs = || {
        metrics_text(metrics)
            .lines()
            .find_map(|l| l.strip_prefix("kaggleingest_bcrypt_seconds_count "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = bcrypt_runs();

    let unknown = rotate(&server, "ghost@example.com", PASSWORD);
    let after_unknown = bcrypt_runs();
    let wrong = rotate(&server, "who@example.com", "not-the-password");
    let after_wrong = bcrypt_runs();

    assert_eq!((unknown.status, wrong.status), (401, 401));
    assert_eq!(
        after_unknown - before,
        1,
        "an unknown email is verified once"
    );
    assert_eq!(after_wrong - after_unknown, 1, "as a wrong password is");
}

#[test]
fn rotation_attempts_are_rate_limited_per_client() {
    // Its own budget: signups stay unlimited (the test default).
    let server = TestServer::start_with(&["--rotate-rate-limit", "2"]);
    server.signup_key("limited@example.com");

    let statuses: Vec<u16> = (0..3)
        .map(|_| rotate(&server, "limited@example.com", "wrong-guess").status)
        .collect();

    assert_eq!(statuses, [401, 401, 429]);
}

#[test]
fn a_revoked_key_is_403_everywhere_until_a_rotation() {
    let server = TestServer::start();
    let key = server.signup_key("rev@example.com");
    let delete = |key: Option<&str>| {
        let headers: Vec<_> = key.map(|k| ("X-API-Key", k)).into_iter().collect();
        server.request("DELETE", "/api/auth/key", &headers, "")
    };

    let revoked = delete(Some(&key));

    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.body, r#"{"message":"API key revoked"}"#);
    assert_eq!(
        server.get("/api/auth/me", Some(&key)).body,
        INVALID_KEY_BODY
    );
    assert_eq!(verify(&server, &key, "").body, INVALID_KEY_BODY);
    assert_eq!(delete(Some(&key)).body, INVALID_KEY_BODY);
    assert_eq!(delete(None).body, MISSING_KEY_BODY);
    let fresh = rotate(&server, "rev@example.com", PASSWORD).json()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.get("/api/auth/me", Some(&fresh)).status, 200);
}

#[test]
fn verify_spends_credits_and_names_the_account() {
    let server = TestServer::start_with(PRICED);
    let key = server.signup_key("Meter@Example.com");

    let one = verify(&server, &key, "");
    let three = verify_costing(&server, &key, &["3"]);
    let free = verify_costing(&server, &key, &["0"]);
    let head = server.request("HEAD", "/api/auth/verify", &[("X-API-Key", &key)], "");

    assert_eq!((one.status, one.body.as_str()), (200, ""));
    assert_eq!(
        one.header("x-kaggleingest-email"),
        Some("Meter@Example.com")
    );
    assert_eq!(one.header("x-kaggleingest-tier"), Some("free"));
    assert_eq!(one.header("x-kaggleingest-credits-remaining"), Some("9"));
    assert_eq!(three.header("x-kaggleingest-credits-remaining"), Some("6"));
    assert_eq!(free.header("x-kaggleingest-credits-remaining"), Some("6"));
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-kaggleingest-credits-remaining"), Some("5"));
    assert_eq!(credits(&server, &key), 5, "and /me spends nothing");
}

#[test]
fn verify_refusals_use_the_documented_bodies() {
    let server = TestServer::start_with(PRICED);
    let key = server.signup_key("deny@example.com");

    assert_eq!(server.get("/api/auth/verify", None).body, MISSING_KEY_BODY);
    assert_eq!(
        verify(&server, "ki_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "").body,
        INVALID_KEY_BODY
    );
    let broke = verify_costing(&server, &key, &["11"]);
    assert_eq!(broke.status, 402);
    assert_eq!(broke.body, INSUFFICIENT_CREDITS_BODY);
    assert_eq!(
        credits(&server, &key),
        10,
        "a refused spend changes nothing"
    );
}

#[test]
fn verify_can_deny_with_403_for_nginx() {
    let server = TestServer::start_with(&["--verify-deny-status", "403", PRICED[0], PRICED[1]]);
    let key = server.signup_key("nginx@example.com");

    let broke = verify_costing(&server, &key, &["11"]);

    assert_eq!(broke.status, 403);
    assert_eq!(broke.body, INSUFFICIENT_CREDITS_BODY);
    assert_eq!(broke.header("x-kaggleingest-deny"), Some("credits"));
    let bad = verify(&server, "ki_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "");
    assert_eq!((bad.status, bad.header("x-kaggleingest-deny")), (403, None));
}

#[test]
fn verify_ignores_the_query_string_even_a_cost_in_it() {
    let server = TestServer::start();
    let key = server.signup_key("query@example.com");

    let replies: Vec<Reply> = [
        "?cost=0",
        "?cost=1&cost=0",
        "?cost=01",
        "?cost=%2B1",
        "?cost=-1",
        "?%zz&cost",
    ]
    .into_iter()
    .map(|query| verify(&server, &key, query))
    .collect();

    for (reply, remaining) in replies.iter().zip((4..10).rev()) {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.header("x-kaggleingest-credits-remaining"),
            Some(remaining.to_string().as_str()),
            "a query never sets the price: one credit each"
        );
    }
    assert_eq!(credits(&server, &key), 4);
}

#[test]
fn the_cost_header_sets_the_price_and_zero_only_checks_the_key() {
    let server = TestServer::start_with(PRICED);
    let key = server.signup_key("price@example.com");

    let free = verify_costing(&server, &key, &["0"]);
    let five = verify_costing(&server, &key, &["5"]);
    let default = verify_costing(&server, &key, &[]);
    let too_dear = verify_costing(&server, &key, &["5"]);
    let bad_key = verify_costing(&server, "ki_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &["0"]);

    assert_eq!(free.status, 200);
    assert_eq!(free.header("x-kaggleingest-credits-remaining"), Some("10"));
    assert_eq!(five.header("x-kaggleingest-credits-remaining"), Some("5"));
    assert_eq!(
        default.header("x-kaggleingest-credits-remaining"),
        Some("4")
    );
    assert_eq!(too_dear.status, 402);
    assert_eq!(
        (bad_key.status, bad_key.body.as_str()),
        (403, INVALID_KEY_BODY),
        "a free check still checks the key"
    );
    assert_eq!(credits(&server, &key), 4);
}

#[test]
fn a_malformed_or_repeated_cost_header_is_400_and_spends_nothing() {
    let server = TestServer::start_with(PRICED);
    let key = server.signup_key("strict@example.com");
    let malformed: &[&[&str]] = &[
        &["01"],
        &["00"],
        &["+1"],
        &["-1"],
        &["1.0"],
        &["1e3"],
        &["0x1"],
        &["1 0"],
        &["abc"],
        &["\u{661}"],
        &[""],
        &["4294967296"],
        &["99999999999999999999999"],
    ];
    let repeated: &[&[&str]] = &[&["1", "1"], &["0", "1"], &["1, 1"]];

    let replies: Vec<(&[&str], Reply)> = malformed
        .iter()
        .chain(repeated)
        .map(|costs| (*costs, verify_costing(&server, &key, costs)))
        .collect();

    for (costs, reply) in &replies {
        assert_eq!(reply.status, 400, "{costs:?}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert!(
            reply.detail().starts_with("X-KaggleIngest-Cost must be"),
            "{costs:?}: {}",
            reply.body
        );
    }
    assert_eq!(credits(&server, &key), 10, "nothing was spent");
    assert_eq!(
        verify_costing(&server, &key, &["4294967295"]).status,
        402,
        "the largest price parses, and is too dear"
    );
}

#[test]
fn by_default_a_cost_header_is_ignored_and_every_verify_costs_one() {
    // What a proxy config written before the header existed forwards: the
    // client's own header, whatever it says.
    let server = TestServer::start();
    let key = server.signup_key("unpriced@example.com");

    let replies: Vec<Reply> = [&["0"][..], &["0", "0"], &["abc"], &["5"], &[]]
        .iter()
        .map(|costs| verify_costing(&server, &key, costs))
        .collect();

    let remaining: Vec<_> = replies
        .iter()
        .map(|r| (r.status, r.header("x-kaggleingest-credits-remaining")))
        .collect();
    assert_eq!(
        remaining,
        [
            (200, Some("9")),
            (200, Some("8")),
            (200, Some("7")),
            (200, Some("6")),
            (200, Some("5"))
        ]
    );
    let (_, log) = server.stop();
    assert_eq!(
        log.matches("X-KaggleIngest-Cost ignored").count(),
        1,
        "the operator learns once why prices do not apply: {log}"
    );
}

#[test]
fn fifty_concurrent_verifies_spend_exactly_the_ten_credits() {
    let server = TestServer::start();
    let key = server.signup_key("race@example.com");

    let statuses = all_at_once(50, |_| verify(&server, &key, "").status);

    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 402), 40, "{statuses:?}");
    assert_eq!(credits(&server, &key), 0);
}

#[test]
fn verify_percent_encodes_a_non_ascii_email_header() {
    let server = TestServer::start();
    let key = server.signup_key("Zoë.100%@Bücher.de");

    let reply = verify(&server, &key, "");

    let header = reply.header("x-kaggleingest-email").unwrap();
    assert_eq!(header, "Zo%C3%AB.100%25@B%C3%BCcher.de");
    let decoded = percent_encoding::percent_decode_str(header)
        .decode_utf8()
        .unwrap();
    assert_eq!(decoded, "Zoë.100%@Bücher.de");
}
