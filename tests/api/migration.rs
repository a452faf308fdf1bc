//! A database written by the first release (schema step 1) opens in the
//! current one with every account and key working.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::helpers::{TEST_ENV, TestServer, db_value};

const SCHEMA: &str = include_str!("../../schema.sql");
const OLD_KEY: &str = "ki_OldReleaseKey0000000000000000000";

/// The database exactly as release 0.1 built it: step 1 only, version 1.
fn build_v1_database(path: &std::path::Path) {
    let step1 = SCHEMA
        .split("\n-- step 2")
        .next()
        .and_then(|s| s.split("\n-- step 1\n").nth(1))
        .expect("schema.sql has steps 1 and 2");
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(step1).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    let digest: [u8; 32] = Sha256::digest(OLD_KEY.as_bytes()).into();
    conn.execute(
        "INSERT INTO accounts (email, email_normalized, password_hash, key_digest, credits, created_at)
         VALUES ('Old@Example.com', 'old@example.com', ?1, ?2, 7, '2026-03-01T14:30:00.000Z')",
        rusqlite::params![bcrypt::hash("securepassword123", 4).unwrap(), &digest[..]],
    )
    .unwrap();
}

#[test]
fn a_version_1_database_keeps_every_account_and_key() {
    assert!(OLD_KEY.len() == 35);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    build_v1_database(&dir.path().join("kaggleingest.db"));

    let server = TestServer::start_in(Arc::clone(&dir), &[], TEST_ENV);

    let me = server.get("/api/auth/me", Some(OLD_KEY));
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(
        me.body,
        r#"{"email":"Old@Example.com","tier":"free","credits":7,"created_at":"2026-03-01T14:30:00.000Z"}"#
    );
    let spent = server.get("/api/auth/verify", Some(OLD_KEY));
    assert_eq!(spent.header("x-kaggleingest-credits-remaining"), Some("6"));
    assert_eq!(
        server.signup("old@example.com", "securepassword123").status,
        409
    );
    let rotated = server.post_json(
        "/api/auth/keys/rotate",
        r#"{"email":"old@example.com","password":"securepassword123"}"#,
    );
    assert_eq!(rotated.status, 200, "the old password hash still verifies");
    assert_eq!(server.get("/api/auth/me", Some(OLD_KEY)).status, 403);

    let (status, _) = server.stop();
    assert!(status.success());
    let db = dir.path().join("kaggleingest.db");
    assert_eq!(db_value::<i64>(&db, "PRAGMA user_version"), 2);
}

#[test]
fn a_database_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaggleingest.db");
    build_v1_database(&path);
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();

    let out = crate::helpers::command(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(&path)
        .output()
        .unwrap();

    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 99 is newer"), "{err}");
}
