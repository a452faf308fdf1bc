//! What a hostile client or an unlucky operator tried, each through the real
//! binary: backups over the live database, world-readable files, unbounded
//! metric labels, absurd settings, NUL in passwords, a mistyped database
//! path for the admin CLI, one address holding every connection, HEAD, and
//! repeated JSON keys.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::{
    TEST_ENV, TestServer, assert_clean_failure, assert_head_like_get, command, db_value,
    free_port_addr, metrics_text, sqlite_only, stderr,
};

const PASSWORD: &str = "securepassword123";

/// `kaggleingest backup DEST [more]` on the server's database.
fn backup(server: &TestServer, dest: &str, more: &[&str]) -> Output {
    command(server.dir.path())
        .args(["backup", dest, "--db", "kaggleingest.db"])
        .args(more)
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_backup_onto_the_live_database_or_its_companions_is_refused() {
    if sqlite_only("backups of a SQLite file") {
        return;
    }
    let server = TestServer::start();
    server.signup_key("before@example.com");
    let dir = server.dir.path();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink(dir.join("kaggleingest.db"), dir.join("link.db")).unwrap();
    std::fs::hard_link(dir.join("kaggleingest.db"), dir.join("hard.db")).unwrap();
    std::os::unix::fs::symlink(dir, dir.join("same-dir")).unwrap();
    assert!(
        dir.join("kaggleingest.db-wal").exists(),
        "the server runs in WAL"
    );

    for dest in [
        "kaggleingest.db",
        "./kaggleingest.db",
        "sub/../kaggleingest.db",
        "same-dir/kaggleingest.db",
        "link.db",
        "hard.db",
        "kaggleingest.db-wal",
        "./same-dir/kaggleingest.db-wal",
        "kaggleingest.db-shm",
        "kaggleingest.db-journal",
    ] {
        let out = backup(&server, dest, &[]);
        assert_clean_failure(&out, "refusing to write the backup over");
        assert_eq!(stderr(&out).lines().count(), 1, "{dest}: one line");
    }
    server.signup_key("after@example.com");
    let dir = Arc::clone(&server.dir);
    server.stop_with(libc::SIGKILL);

    let restarted = TestServer::start_in(Arc::clone(&dir), &[], crate::helpers::TEST_ENV);
    let accounts: i64 = db_value(&restarted.db_path(), "SELECT count(*) FROM accounts");
    assert_eq!(accounts, 2, "both accounts survive the refused backups");
    let ok = backup_to_new_file(dir.path());
    assert!(ok.status.success(), "{}", stderr(&ok));
}

#[test]
fn a_backup_never_lands_beside_another_databases_wal_or_journal() {
    if sqlite_only("backups of a SQLite file") {
        return;
    }
    let server = TestServer::start();
    server.signup_key("source@example.com");
    let dir = server.dir.path();
    // Another database in use: its WAL holds a commit not yet in old.db.
    let other = rusqlite::Connection::open(dir.join("old.db")).unwrap();
    other
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; \
             CREATE TABLE t(x); INSERT INTO t VALUES (42);",
        )
        .unwrap();
    std::fs::write(dir.join("crashed.db"), b"").unwrap();
    std::fs::write(dir.join("crashed.db-journal"), b"hot journal").unwrap();

    for dest in ["old.db", "crashed.db"] {
        let out = backup(&server, dest, &[]);
        assert_clean_failure(&out, "exists beside it");
        assert_eq!(stderr(&out).lines().count(), 1, "{dest}: one line");
    }

    let kept: i64 = other
        .query_row("SELECT x FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 42, "the other database is untouched");
    assert_eq!(
        std::fs::read(dir.join("crashed.db-journal")).unwrap(),
        b"hot journal"
    );
    drop(other);
    std::fs::remove_file(dir.join("crashed.db-journal")).unwrap();
    let out = backup(&server, "crashed.db", &["--overwrite"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_backup_never_replaces_an_existing_file_unless_told_to() {
    if sqlite_only("backups of a SQLite file") {
        return;
    }
    let server = TestServer::start();
    server.signup_key("keep@example.com");
    let notes = server.dir.path().join("notes.txt");
    std::fs::write(&notes, "important notes").unwrap();

    let refused = backup(&server, "notes.txt", &[]);
    let replaced = backup(&server, "notes.txt", &["--overwrite"]);

    assert_clean_failure(&refused, "notes.txt exists: pass --overwrite");
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    let accounts: i64 = db_value(&notes, "SELECT count(*) FROM accounts");
    assert_eq!(accounts, 1, "--overwrite put the copy in its place");
}

#[test]
fn an_empty_file_is_no_database_to_the_admin_commands() {
    if sqlite_only("SQLite files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.db"), "").unwrap();

    let out = command(dir.path())
        .args(["user", "list", "--db", "empty.db"])
        .output()
        .unwrap();

    assert_clean_failure(&out, "empty.db is an empty file, not a database");
    assert_eq!(
        std::fs::metadata(dir.path().join("empty.db"))
            .unwrap()
            .len(),
        0
    );
    assert!(!dir.path().join("empty.db-wal").exists());
}

#[test]
fn a_database_others_can_read_is_warned_about_at_every_start() {
    if sqlite_only("the SQLite file's mode") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let path = dir.path().join("kaggleingest.db");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let server = TestServer::start_in(Arc::clone(&dir), &[], TEST_ENV);
    let (_, log) = server.stop();

    assert!(
        log.contains("readable by other users; chmod 600 it"),
        "{log}"
    );
}

#[test]
fn an_email_domain_no_address_can_have_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    for domain in ["*.example.com", "example.com.", "<b>x</b>.com"] {
        let out = command(dir.path())
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--signup-email-domains",
                domain,
            ])
            .output()
            .unwrap();

        assert_clean_failure(
            &out,
            &format!("signup_email_domains: {domain:?} is not a domain"),
        );
    }
}

fn backup_to_new_file(dir: &Path) -> Output {
    command(dir)
        .args(["backup", "copy.db", "--db", "kaggleingest.db"])
        .output()
        .unwrap()
}

#[test]
fn the_database_its_wal_and_every_backup_are_private_to_their_owner() {
    if sqlite_only("the SQLite files' modes") {
        return;
    }
    let server = TestServer::start();
    server.signup_key("private@example.com");
    let dir = server.dir.path();

    let out = backup_to_new_file(dir);

    assert!(out.status.success(), "{}", stderr(&out));
    for file in [
        "kaggleingest.db",
        "kaggleingest.db-wal",
        "kaggleingest.db-shm",
        "copy.db",
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
}

/// Sends `n` requests with invented methods on one keep-alive connection and
/// reads every answer (a thread writes while this one reads, so neither side
/// stalls on a full socket buffer).
fn invented_methods(addr: SocketAddr, from: usize, n: usize) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for i in from..from + n {
            let close = if i + 1 == from + n {
                "Connection: close\r\n"
            } else {
                ""
            };
            let request = format!("M{i} /healthz HTTP/1.1\r\nHost: x\r\n{close}\r\n");
            writer.write_all(request.as_bytes()).unwrap();
        }
    });
    let mut answers = String::new();
    stream.read_to_string(&mut answers).unwrap();
    sender.join().unwrap();
    assert_eq!(answers.matches("HTTP/1.1 405").count(), n);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn invented_methods_leave_metrics_and_memory_flat() {
    let metrics = free_port_addr();
    let server = TestServer::start_with(&["--metrics-bind", &metrics.to_string()]);
    let page = || metrics_text(metrics);
    invented_methods(server.addr, 0, 500);
    let (page_before, rss_before) = (page(), rss_kib(server.pid()));

    invented_methods(server.addr, 500, 5000);
    let (page_after, rss_after) = (page(), rss_kib(server.pid()));

    assert!(
        page_after.contains(r#"method="other",route="/healthz",status="405"} 5500"#),
        "{page_after}"
    );
    assert!(!page_after.contains("M4999"));
    // Only numbers changed (counts, sums): no series was added.
    assert!(
        page_after.len() < page_before.len() + 100,
        "the page grew from {} to {} bytes",
        page_before.len(),
        page_after.len()
    );
    assert!(
        rss_after < rss_before + 4 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn out_of_range_settings_stop_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--client-timeout-secs", "18446744073709551615"),
        ("--client-timeout-secs", "0"),
        ("--shutdown-grace-secs", "86400"),
        ("--max-connections", "0"),
        ("--max-connections-per-ip", "2000000"),
        ("--hash-workers", "1025"),
        ("--hash-queue", "99999999"),
        ("--signup-rate-limit", "4000000000"),
    ] {
        let out = command(dir.path())
            .args(["serve", "--bind", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();

        let key = flag.trim_start_matches("--").replace('-', "_");
        assert_clean_failure(&out, &format!("{key} = {value} is out of range"));
        assert_eq!(stderr(&out).lines().count(), 1);
    }
    assert!(
        !dir.path().join("kaggleingest.db").exists(),
        "nothing was started"
    );
}

#[test]
fn a_password_with_nul_is_refused_and_never_matches_a_stored_one() {
    let server = TestServer::start();
    server.signup_key("nul@example.com");
    let body = |password: &str| {
        serde_json::json!({"email": "nul@example.com", "password": password}).to_string()
    };
    let signup = server.post_json(
        "/api/auth/signup",
        &serde_json::json!({"email": "nul2@example.com", "password": "password\u{0}password"})
            .to_string(),
    );
    // The account's password is PASSWORD; bcrypt alone would also accept
    // PASSWORD + NUL + PASSWORD, its own way of filling 72 bytes.
    let rotated_with_nul = server.post_json(
        "/api/auth/keys/rotate",
        &body(&format!("{PASSWORD}\u{0}{PASSWORD}")),
    );
    let rotated = server.post_json("/api/auth/keys/rotate", &body(PASSWORD));

    assert_eq!(signup.status, 400);
    assert_eq!(signup.detail(), "Password must not contain NUL characters");
    assert_eq!(rotated_with_nul.status, 401, "{}", rotated_with_nul.body);
    assert_eq!(rotated.status, 200);
}

#[test]
fn admin_commands_refuse_a_database_that_does_not_exist() {
    if sqlite_only("SQLite files (postgres::the_admin_cli_refuses_a_database_without_our_tables)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let admin = |args: &[&str]| {
        command(dir.path())
            .arg("user")
            .args(args)
            .args(["--db", "typo.db"])
            .output()
            .unwrap()
    };

    for args in [
        &["list"][..],
        &["show", "a@example.com"],
        &["create", "a@example.com"],
        &["credits", "a@example.com", "+5"],
        &["tier", "a@example.com", "pro"],
        &["revoke-key", "a@example.com"],
        &["rotate-key", "a@example.com"],
        &["delete", "a@example.com"],
    ] {
        let out = admin(args);
        assert_clean_failure(&out, "no database at typo.db");
        assert_eq!(out.status.code(), Some(1));
        assert!(!dir.path().join("typo.db").exists(), "{args:?} made a file");
    }
    let created = admin(&["create", "a@example.com", "--create-db"]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert_eq!(mode(&dir.path().join("typo.db")), 0o600);
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("binding a loopback source address");
    socket.connect(&to.into()).unwrap();
    socket.into()
}

#[test]
fn one_address_cannot_take_every_connection() {
    let server =
        TestServer::start_with(&["--max-connections", "8", "--max-connections-per-ip", "4"]);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from([127, 0, 0, 1], server.addr))
        .collect();

    // Past the cap, the same address is told why and closed at once (in
    // accept order, so the four above are held by the time these answer).
    for _ in 0..8 {
        let mut extra = connect_from([127, 0, 0, 1], server.addr);
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        extra.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.ends_with(r#"{"detail":"Too many open connections from this address"}"#));
    }
    let started = Instant::now();
    let mut other = connect_from([127, 0, 0, 2], server.addr);
    other
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).unwrap();

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(held);
}

#[test]
fn head_answers_every_get_route_like_get_without_a_body() {
    let server = TestServer::start();
    let key = server.signup_key("head@example.com");
    let request =
        |method: &str, path: &str| server.request(method, path, &[("X-API-Key", &key)], "");

    for path in ["/healthz", "/readyz", "/openapi.json", "/api/auth/me"] {
        let get = request("GET", path);
        let head = request("HEAD", path);

        assert_head_like_get(path, &get, &head);
    }
}

#[test]
fn a_json_body_naming_a_field_twice_is_400() {
    let server = TestServer::start();

    let signup = server.post_json(
        "/api/auth/signup",
        r#"{"email":"first@example.com","password":"securepassword123","email":"second@example.com"}"#,
    );
    let rotate = server.post_json(
        "/api/auth/keys/rotate",
        r#"{"email":"a@example.com","password":"x","password":"securepassword123"}"#,
    );

    assert_eq!(signup.status, 400);
    assert_eq!(signup.detail(), "Field 'email' must appear only once");
    assert_eq!(rotate.status, 400);
    assert_eq!(rotate.detail(), "Field 'password' must appear only once");
    let accounts: i64 = server.stored("SELECT count(*) FROM accounts");
    assert_eq!(accounts, 0);
}
