//! `kaggleingest user ...` against the database of a running server.

use std::process::Output;

use crate::helpers::{TestServer, command};

fn user(server: &TestServer, args: &[&str]) -> Output {
    command(server.dir.path())
        .arg("user")
        .args(args)
        .arg("--db")
        .arg(&server.db)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap()
}

#[test]
fn list_and_show_read_the_live_database() {
    let server = TestServer::start();
    server.signup_key("one@example.com");
    server.signup_key("Two@Example.com");

    let table = stdout(&user(&server, &["list"]));
    let listed = json(&user(&server, &["list", "--json"]));
    let shown = json(&user(&server, &["show", "two@example.com", "--json"]));

    assert!(table.starts_with("EMAIL"), "{table}");
    assert!(table.contains("one@example.com") && table.contains("Two@Example.com"));
    assert!(table.contains("2 account(s)"));
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(shown["email"], "Two@Example.com");
    assert_eq!(shown["credits"], 10);
    assert_eq!(shown["key_active"], true);
}

#[test]
fn credits_and_tier_changes_show_through_the_api() {
    let server = TestServer::start();
    let key = server.signup_key("bal@example.com");

    assert_eq!(
        json(&user(
            &server,
            &["credits", "bal@example.com", "+5", "--json"]
        ))["credits"],
        15
    );
    assert_eq!(
        json(&user(
            &server,
            &["credits", "bal@example.com", "-3", "--json"]
        ))["credits"],
        12
    );
    assert_eq!(
        json(&user(
            &server,
            &["credits", "bal@example.com", "=40", "--json"]
        ))["credits"],
        40
    );
    let negative = user(&server, &["credits", "bal@example.com", "-41"]);
    assert_eq!(negative.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&negative.stderr).contains("credits >= 0"));
    stdout(&user(&server, &["tier", "bal@example.com", "enterprise"]));

    let me = server.get("/api/auth/me", Some(&key)).json();
    assert_eq!(
        (me["credits"].as_i64(), me["tier"].as_str()),
        (Some(40), Some("enterprise"))
    );
    assert!(
        !user(&server, &["tier", "bal@example.com", "gold"])
            .status
            .success()
    );
}

#[test]
fn revoke_rotate_and_delete_take_effect_at_once() {
    let server = TestServer::start();
    let key = server.signup_key("keys@example.com");

    stdout(&user(&server, &["revoke-key", "keys@example.com"]));
    assert_eq!(server.get("/api/auth/me", Some(&key)).status, 403);
    assert_eq!(
        json(&user(&server, &["show", "keys@example.com", "--json"]))["key_active"],
        false
    );

    let rotated = json(&user(
        &server,
        &["rotate-key", "keys@example.com", "--json"],
    ));
    let new_key = rotated["api_key"].as_str().unwrap();
    assert_eq!(server.get("/api/auth/me", Some(new_key)).status, 200);

    stdout(&user(&server, &["delete", "keys@example.com"]));
    assert_eq!(server.get("/api/auth/me", Some(new_key)).status, 403);
    assert_eq!(
        server
            .signup("keys@example.com", "securepassword123")
            .status,
        200,
        "the email is free again"
    );
}

#[test]
fn an_unknown_email_exits_1_with_one_clear_line() {
    let server = TestServer::start();

    for args in [
        &["show", "ghost@example.com"][..],
        &["credits", "ghost@example.com", "+1"],
        &["delete", "ghost@example.com"],
        &["rotate-key", "ghost@example.com"],
    ] {
        let out = user(&server, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            err.trim(),
            "kaggleingest: error: no account with email ghost@example.com",
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "no key printed for {args:?}");
    }
}
