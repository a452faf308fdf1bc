//! Paths are exact: a route answers at its one spelling, and every other
//! spelling of it (trailing slash, `//`, `/./`, percent-encoding, case) is
//! the JSON 404 of an unknown path, whatever the request would have cost.

use crate::contract::*;
use crate::helpers::{Reply, TestServer};

const EMAIL: &str = "paths@example.com";

/// Every route, as `(method, path)`.
const ROUTES: [(&str, &str); 11] = [
    ("POST", "/api/auth/signup"),
    ("GET", "/api/auth/me"),
    ("POST", "/api/auth/keys/rotate"),
    ("DELETE", "/api/auth/key"),
    ("GET", "/api/auth/verify"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/static/app.js"),
    ("GET", "/static/style.css"),
    ("GET", "/static/icon.svg"),
];

/// Other spellings of `path` that a lenient router or proxy might take
/// for it.
fn respellings(path: &str) -> Vec<String> {
    let (parent, last) = path.rsplit_once('/').expect("paths start with /");
    let first = last.as_bytes()[0];
    vec![
        format!("{path}/"),
        format!("{path}//"),
        format!("{path}/?x=1"),
        format!("/{path}"),
        format!("{parent}//{last}"),
        format!("{parent}/./{last}"),
        format!("{parent}/x/../{last}"),
        format!("{parent}/%{first:02X}{}", &last[1..]),
        format!("{path}%2F"),
        path.to_uppercase(),
    ]
}

/// `method path` with what a served request would need: a valid key and a
/// well-formed body.
fn send(server: &TestServer, method: &str, path: &str, key: &str) -> Reply {
    let body = if method == "POST" {
        serde_json::json!({"email": EMAIL, "password": "securepassword123"}).to_string()
    } else {
        String::new()
    };
    let headers = [("X-API-Key", key), ("Content-Type", "application/json")];
    server.request(method, path, &headers, &body)
}

#[test]
fn every_other_spelling_of_every_route_is_a_json_404_that_does_nothing() {
    let server = TestServer::start();
    let key = server.signup_key(EMAIL);

    let replies: Vec<(String, Reply)> = ROUTES
        .iter()
        .flat_map(|(method, path)| {
            respellings(path)
                .into_iter()
                .map(move |spelled| (*method, spelled))
        })
        .map(|(method, spelled)| {
            let reply = send(&server, method, &spelled, &key);
            (format!("{method} {spelled}"), reply)
        })
        .collect();

    for (request, reply) in &replies {
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (404, NOT_FOUND_BODY),
            "{request}"
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{request}"
        );
    }
    let me = server.get("/api/auth/me", Some(&key));
    assert_eq!(me.status, 200, "not revoked, not rotated: {}", me.body);
    assert_eq!(me.json()["credits"], 10, "nothing was spent");
}

#[test]
fn exact_paths_keep_answering_and_wrong_methods_stay_405() {
    let server = TestServer::start();
    let key = server.signup_key(EMAIL);

    let served: Vec<(&str, u16)> = ROUTES
        .iter()
        .map(|(method, path)| (*path, send(&server, method, path, &key).status))
        .collect();
    let wrong_method = send(&server, "PUT", "/api/auth/verify", &key);
    let post_unknown = send(&server, "POST", "/api/auth/verify/", &key);

    for (path, status) in served {
        assert_ne!(status, 404, "{path} is served");
    }
    assert_eq!(
        (wrong_method.status, wrong_method.detail()),
        (405, METHOD_NOT_ALLOWED.to_owned())
    );
    assert_eq!(
        (post_unknown.status, post_unknown.body.as_str()),
        (404, NOT_FOUND_BODY)
    );
}
