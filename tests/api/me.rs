//! `GET /api/auth/me` and the key checks every authenticated route shares.

use crate::contract::*;
use crate::helpers::TestServer;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`
fn is_rfc3339_millis_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

#[test]
fn me_round_trip_shows_the_new_account() {
    let server = TestServer::start();
    let key = server.signup_key("  Bob@Example.com ");

    let reply = server.get("/api/auth/me", Some(&key));

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["email"], "Bob@Example.com");
    assert_eq!(body["tier"], "free");
    assert_eq!(body["credits"], 10);
    let created = body["created_at"].as_str().unwrap();
    assert!(is_rfc3339_millis_utc(created), "{created}");
    assert_eq!(body.as_object().unwrap().len(), 4);
}

#[test]
fn missing_key_is_the_documented_401() {
    let server = TestServer::start();

    let reply = server.get("/api/auth/me", None);

    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, MISSING_KEY_BODY);
}

#[test]
fn key_in_the_query_string_is_ignored() {
    let server = TestServer::start();
    let key = server.signup_key("q@example.com");

    let reply = server.get(&format!("/api/auth/me?api_key={key}&X-API-Key={key}"), None);

    assert_eq!(reply.status, 401);
}

#[test]
fn unknown_or_malformed_keys_are_the_documented_403() {
    let server = TestServer::start();
    let real = server.signup_key("k@example.com");
    let mut unknown = real.clone();
    unknown.replace_range(34..35, if real.ends_with('A') { "B" } else { "A" });

    for key in [
        unknown.as_str(),
        "ki_short",
        "nonsense",
        &real[..34],
        &format!("{real}x"),
    ] {
        let reply = server.get("/api/auth/me", Some(key));
        assert_eq!(reply.status, 403, "{key}");
        assert_eq!(reply.body, INVALID_KEY_BODY);
    }
    // Bytes that are not text at all.
    let raw = server.raw(b"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: ki_\xff\xfe\r\n\r\n");
    assert_eq!(raw.status, 403);
    assert_eq!(raw.body, INVALID_KEY_BODY);
}

#[test]
fn me_never_spends_credits() {
    let server = TestServer::start();
    let key = server.signup_key("c@example.com");

    for _ in 0..15 {
        assert_eq!(server.get("/api/auth/me", Some(&key)).status, 200);
    }

    assert_eq!(server.get("/api/auth/me", Some(&key)).json()["credits"], 10);
}

#[test]
fn unknown_paths_and_methods_are_json_errors() {
    let server = TestServer::start();

    let not_found = server.get("/nope", None);
    assert_eq!(
        (not_found.status, not_found.body.as_str()),
        (404, NOT_FOUND_BODY)
    );
    assert_eq!(not_found.header("content-type"), Some("application/json"));

    let wrong_method = server.request("DELETE", "/api/auth/me", &[], "");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.body, METHOD_NOT_ALLOWED_BODY);
    assert_eq!(
        wrong_method.header("content-type"),
        Some("application/json")
    );

    for method in ["POST", "DELETE", "PUT"] {
        let reply = server.request(method, "/nope", &[("Content-Length", "0")], "");
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (404, NOT_FOUND_BODY),
            "{method}"
        );
    }

    let get_signup = server.get("/api/auth/signup", None);
    assert_eq!(get_signup.status, 405);
    assert_eq!(get_signup.detail(), METHOD_NOT_ALLOWED);
}
