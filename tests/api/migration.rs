//! A database written by the first release (schema step 1) opens in the
//! current one with every account and key working.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::helpers::{TEST_ENV, TestServer, db_value, wait_or_kill};

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
    assert_eq!(db_value::<i64>(&db, "PRAGMA user_version"), 3);
}

#[test]
fn an_old_account_whose_address_todays_rules_refuse_stays_manageable() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let db = dir.path().join("kaggleingest.db");
    build_v1_database(&db);
    let legacy = "Zero\u{200B}Width@Example.com";
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO accounts (email, email_normalized, password_hash, key_digest, credits, created_at)
             VALUES (?1, lower(?1), 'x', zeroblob(32), 3, '2026-03-01T14:30:00.000Z')",
            [legacy],
        )
        .unwrap();
    let user = |args: &[&str]| {
        crate::helpers::command(dir.path())
            .arg("user")
            .args(args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap()
    };
    assert!(user(&["list"]).status.success(), "the file is migrated");

    let shown = user(&["show", legacy, "--json"]);
    let credited = user(&["credits", legacy, "+5", "--json"]);
    let deleted = user(&["delete", legacy]);

    for out in [&shown, &credited, &deleted] {
        assert!(out.status.success(), "{}", crate::helpers::stderr(out));
    }
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["email"], legacy);
    let credited: serde_json::Value = serde_json::from_slice(&credited.stdout).unwrap();
    assert_eq!(credited["credits"], 8);
    assert_eq!(db_value::<i64>(&db, "SELECT count(*) FROM accounts"), 1);
    let create = user(&["create", legacy]);
    assert!(
        !create.status.success(),
        "new accounts follow today's rules"
    );
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

/// The database as release 0.2 built it (steps 1 and 2, version 2), holding
/// accounts `(email, email_normalized)` keyed the old way; account `i` has
/// the key `old_key(i)`.
fn build_v2_database(path: &std::path::Path, accounts: &[(&str, &str)]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    for (version, chunk) in SCHEMA.split("\n-- step ").skip(1).take(2).enumerate() {
        let (_, sql) = chunk.split_once('\n').expect("a step header line");
        conn.execute_batch(sql).unwrap();
        conn.pragma_update(None, "user_version", version as i64 + 1)
            .unwrap();
    }
    for (i, (email, normalized)) in accounts.iter().enumerate() {
        let digest: [u8; 32] = Sha256::digest(old_key(i).as_bytes()).into();
        conn.execute(
            "INSERT INTO accounts (email, email_normalized, password_hash, key_digest)
             VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                email,
                normalized,
                bcrypt::hash("securepassword123", 4).unwrap(),
                &digest[..]
            ],
        )
        .unwrap();
    }
}

/// A key of the old release's format, distinct per `i` < 10.
fn old_key(i: usize) -> String {
    format!("{}{i}", &OLD_KEY[..OLD_KEY.len() - 1])
}

/// Runs the command to its exit, killing it (and failing) after 30 s: a
/// server that starts instead of refusing would otherwise hang the test.
fn run_to_exit(mut cmd: std::process::Command) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if wait_or_kill(&mut child, std::time::Duration::from_secs(30)).is_none() {
        panic!("the command did not exit");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_version_2_database_gets_unicode_keys_so_lookalikes_are_409() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    build_v2_database(
        &dir.path().join("kaggleingest.db"),
        &[
            ("Äbc@Bücher.de", "äbc@bücher.de"),
            ("ＦＵＬＬ@x.io", "ｆｕｌｌ@x.io"),
        ],
    );

    let server = TestServer::start_in(Arc::clone(&dir), &[], TEST_ENV);

    for lookalike in ["a\u{308}bc@xn--bcher-kva.de", "full@x.io"] {
        let reply = server.signup(lookalike, "securepassword123");
        assert_eq!(reply.status, 409, "{lookalike:?}: {}", reply.body);
    }
    let me = server.get("/api/auth/me", Some(&old_key(0)));
    assert_eq!(me.json()["email"], "Äbc@Bücher.de", "shown as typed");
    let (status, _) = server.stop();
    assert!(status.success());
    let db = dir.path().join("kaggleingest.db");
    assert_eq!(db_value::<i64>(&db, "PRAGMA user_version"), 3);
    assert_eq!(
        db_value::<String>(&db, "SELECT email_normalized FROM accounts WHERE id = 1"),
        "äbc@xn--bcher-kva.de"
    );
}

#[test]
fn colliding_accounts_stop_the_server_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaggleingest.db");
    build_v2_database(
        &path,
        &[
            ("alice@example.com", "alice@example.com"),
            ("Straße@x.io", "straße@x.io"),
            ("STRASSE@x.io", "strasse@x.io"),
        ],
    );
    let mut cmd = crate::helpers::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(&path);

    let (status, stderr) = run_to_exit(cmd);

    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(r#"accounts 2 ("Straße@x.io") and 3 ("STRASSE@x.io")"#),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "sqlite3 {} \"DELETE FROM accounts WHERE id = 3\"",
            path.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("kaggleingest user delete"), "{stderr}");
    // Nothing changed: the previous release still opens the file.
    assert_eq!(db_value::<i64>(&path, "PRAGMA user_version"), 2);
    assert_eq!(
        db_value::<String>(&path, "SELECT email_normalized FROM accounts WHERE id = 2"),
        "straße@x.io"
    );
}
