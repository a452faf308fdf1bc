//! What reaches the disk and the log: the schema, persistence, and the
//! absence of every secret.

use std::sync::Arc;

use crate::contract::*;
use crate::helpers::{BACKEND, Backend, TEST_ENV, TestServer, db_value, sqlite_only};

const PASSWORD: &str = "correct horse battery staple";

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn database_files_hold_neither_key_nor_password() {
    if sqlite_only(
        "the SQLite file's bytes (postgres::a_dump_of_the_database_holds_neither_key_nor_password)",
    ) {
        return;
    }
    let server = TestServer::start();
    let reply = server.signup("secret@example.com", PASSWORD);
    let key = reply.json()["api_key"].as_str().unwrap().to_owned();
    let db = server.db_path();
    let wal = db.with_extension("db-wal");
    // Keeps the temp dir alive past the server.
    let _dir = Arc::clone(&server.dir);

    // While running, the new row sits in the WAL.
    let running = [file_bytes(&db), file_bytes(&wal)].concat();
    assert!(
        contains(&running, "secret@example.com"),
        "the account is on disk"
    );
    assert!(!contains(&running, &key));
    assert!(!contains(&running, PASSWORD));

    let (status, log) = server.stop();
    assert!(status.success());
    let stopped = [file_bytes(&db), file_bytes(&wal)].concat();
    assert!(contains(&stopped, "secret@example.com"), "{log}");
    assert_eq!(
        file_bytes(&wal).len(),
        0,
        "clean shutdown checkpoints the WAL"
    );
    assert!(!contains(&stopped, &key));
    assert!(!contains(&stopped, PASSWORD));
}

/// Threads that served reads may hold read snapshots (src/db/sqlite/reader.rs);
/// they must not keep the clean shutdown from folding the WAL back in.
#[test]
fn clean_shutdown_folds_the_wal_back_after_reads() {
    if sqlite_only("the SQLite WAL file") {
        return;
    }
    let server = TestServer::start();
    let key = server.signup_key("reader@example.com");
    for _ in 0..50 {
        assert_eq!(server.get("/api/auth/me", Some(&key)).status, 200);
    }
    let wal = server.db_path().with_extension("db-wal");
    let _dir = Arc::clone(&server.dir);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("checkpoint failed"), "{log}");
    assert_eq!(
        file_bytes(&wal).len(),
        0,
        "clean shutdown checkpoints the WAL: {log}"
    );
}

#[test]
fn the_log_never_shows_a_key_or_password_even_at_debug() {
    let server = TestServer::start_with(&["--log-level", "trace"]);
    let key = server.signup("log@example.com", PASSWORD).json()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.get("/api/auth/me", Some(&key)).status, 200);
    server.signup("log@example.com", PASSWORD);
    server.get("/api/auth/me", Some("ki_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    server.post_json(
        "/api/auth/signup",
        &format!(r#"{{"email":"x","password":"{PASSWORD}"}}"#),
    );

    let (_, log) = server.stop();

    assert!(log.contains("status=200"), "requests are logged:\n{log}");
    assert!(!log.contains(&key), "key in log");
    assert!(!log.contains(PASSWORD), "password in log");
    assert!(!log.contains(&key[3..]), "key body in log");
}

#[test]
fn accounts_survive_a_restart_on_the_same_database() {
    let server = TestServer::start();
    let key = server.signup_key("persist@example.com");
    let dir = Arc::clone(&server.dir);
    let (status, _) = server.stop();
    assert!(status.success());

    let server = TestServer::start_in(dir, &[], TEST_ENV);

    let me = server.get("/api/auth/me", Some(&key));
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["email"], "persist@example.com");
    assert_eq!(server.signup("PERSIST@example.com", PASSWORD).status, 409);
}

#[test]
fn the_schema_is_versioned_and_constrained() {
    let server = TestServer::start();
    server.signup_key("schema@example.com");
    let version = match BACKEND {
        Backend::Sqlite => {
            let db = server.db_path();
            assert_eq!(db_value::<String>(&db, "PRAGMA journal_mode"), "wal");
            "PRAGMA user_version"
        }
        Backend::Postgres => "SELECT version FROM kaggleingest_schema",
    };
    assert!(server.stored::<i64>(version) >= 1);
    // The constraints hold even against direct writes.
    for refused in [
        "UPDATE accounts SET credits = -1",
        "UPDATE accounts SET tier = 'gold'",
        "INSERT INTO accounts (email, email_normalized, password_hash, key_digest) \
         SELECT email, email_normalized, password_hash, key_digest FROM accounts",
    ] {
        assert!(server.execute(refused).is_err(), "{refused}");
    }
    let digest_len: i64 = server.stored("SELECT length(key_digest) FROM accounts");
    assert_eq!(digest_len, 32);
}

#[test]
fn a_storage_failure_is_one_error_line_carrying_the_request_id_the_client_got() {
    let server = TestServer::start();
    let key = server.signup_key("broken@example.com");
    // Break storage from outside, deterministically: every statement on
    // the accounts table now fails with "no such table".
    server
        .execute("ALTER TABLE accounts RENAME TO accounts_gone")
        .unwrap();
    let cause = match BACKEND {
        Backend::Sqlite => "no such table: accounts",
        Backend::Postgres => "does not exist",
    };

    let me = server.get("/api/auth/me", Some(&key));
    let signup = server.signup("second@example.com", PASSWORD);

    assert_eq!(
        (me.status, me.detail()),
        (500, "Internal server error".into())
    );
    assert_eq!(
        (signup.status, signup.detail()),
        (500, SIGNUP_FAILED.into())
    );
    let (_, log) = server.stop();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 2, "one ERROR line per failed request:\n{log}");
    for (reply, line) in [&me, &signup].into_iter().zip(&errors) {
        let id = reply
            .header("x-request-id")
            .expect("every answer has an id");
        assert!(line.contains(id), "{line:?} lacks the request id {id}");
        assert!(line.contains(cause), "the cause: {line}");
        assert!(!line.contains(&key) && !line.contains(PASSWORD), "{line}");
    }
}
