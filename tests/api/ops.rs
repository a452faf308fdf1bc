//! What operators rely on: health and readiness, metrics, the OpenAPI
//! document, request logs and ids, backups, the signup toggle, config tools.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::contract::*;
use crate::helpers::{
    Reply, TestServer, command, db_value, free_port_addr, sqlite_only, wait_or_kill,
};

#[test]
fn healthz_and_readyz_answer_and_are_not_rate_limited_or_logged_at_info() {
    let server = TestServer::start_with(&["--signup-rate-limit", "1"]);

    for _ in 0..20 {
        let health = server.get("/healthz", None);
        assert_eq!(
            (health.status, health.body.as_str()),
            (200, r#"{"status":"ok"}"#)
        );
        assert_eq!(server.get("/readyz", None).status, 200);
    }
    assert_eq!(server.get("/api/auth/me", None).status, 401);

    let (_, log) = server.stop();
    assert!(
        !log.contains("/healthz") && !log.contains("/readyz"),
        "{log}"
    );
    assert!(
        log.contains(r#"route="/api/auth/me""#),
        "other requests are logged: {log}"
    );
}

#[test]
fn readyz_is_503_while_the_database_is_stuck() {
    let server = Arc::new(TestServer::start_with(&["--verify-cost-header", "true"]));
    let key = Arc::new(server.signup_key("stuck@example.com"));
    // Another process holds the write lock; spends queue up behind it (in
    // the writer, on SQLite), and readiness waits behind them.
    let blocker = server.block_writes();
    let stuck: Vec<_> = (0..24)
        .map(|_| {
            let (server, key) = (Arc::clone(&server), Arc::clone(&key));
            // Free checks, so all 24 succeed once the lock is gone.
            std::thread::spawn(move || {
                let headers = [("X-API-Key", key.as_str()), ("X-KaggleIngest-Cost", "0")];
                server
                    .request("GET", "/api/auth/verify", &headers, "")
                    .status
            })
        })
        .collect();

    // The spends reach the writer as they arrive: ask until they have.
    // (Bounded by time, not tries: on a loaded machine the threads start late.)
    let not_ready = readiness_changes_from(&server, 200);

    assert_eq!(not_ready.status, 503);
    assert!(
        not_ready.detail().starts_with("Database"),
        "{}",
        not_ready.body
    );
    assert_eq!(
        server.get("/healthz", None).status,
        200,
        "liveness does not touch the database"
    );
    blocker.release();
    for spend in stuck {
        assert_eq!(spend.join().unwrap(), 200, "the waiting requests complete");
    }
    assert_eq!(server.get("/readyz", None).status, 200);
}

/// The first `/readyz` status other than `previous`, asked back to back: a
/// probe's outcome answers for a second.
fn readiness_changes_from(server: &TestServer, previous: u16) -> Reply {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    std::iter::repeat_with(|| server.get("/readyz", None))
        .take_while(|_| std::time::Instant::now() < deadline)
        .find(|r| r.status != previous)
        .unwrap_or_else(|| panic!("/readyz stayed {previous} for 20 s"))
}

#[test]
fn readyz_is_503_while_writes_fail_and_200_once_they_work_again() {
    let server = TestServer::start();
    let key = server.signup_key("full@example.com");
    assert_eq!(server.get("/readyz", None).status, 200);

    server.refuse_writes(true);
    let spend = server.get("/api/auth/verify", Some(&key));
    assert_eq!(
        (spend.status, spend.detail().as_str()),
        (500, "Internal server error")
    );
    let not_ready = readiness_changes_from(&server, 200);
    assert_eq!(
        (not_ready.status, not_ready.detail().as_str()),
        (503, "Database unavailable")
    );
    assert_eq!(server.get("/healthz", None).status, 200);

    server.refuse_writes(false);
    assert_eq!(readiness_changes_from(&server, 503).status, 200);
    let spend = server.get("/api/auth/verify", Some(&key));
    assert_eq!(spend.status, 200, "{}", spend.body);
    assert_eq!(
        spend.header("x-kaggleingest-credits-remaining"),
        Some("9"),
        "the failed spend spent nothing"
    );
}

#[test]
fn readiness_checks_in_a_loop_commit_at_most_once_a_second() {
    if sqlite_only("counting commits to a SQLite file") {
        return;
    }
    let server = TestServer::start();
    // `data_version` moves when another connection has committed since this
    // one last asked.
    let conn = rusqlite::Connection::open(server.db_path()).unwrap();
    let version = || -> i64 {
        conn.query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    let started = std::time::Instant::now();
    let mut last = version();
    let mut commits = 0;
    for _ in 0..300 {
        assert_eq!(server.get("/readyz", None).status, 200);
        let now = version();
        commits += u64::from(now != last);
        last = now;
    }
    let seconds = started.elapsed().as_secs();
    assert!(
        (1..=seconds + 1).contains(&commits),
        "{commits} of 300 checks committed in {seconds} s"
    );
}

#[test]
fn the_healthcheck_subcommand_exits_0_when_ready_and_1_when_down() {
    let server = TestServer::start();
    let url = server.url("/readyz");

    let up = command(server.dir.path())
        .args(["healthcheck", "--url", &url])
        .output()
        .unwrap();
    drop(server);
    let down = command(std::path::Path::new("/"))
        .args(["healthcheck", "--url", &url])
        .output()
        .unwrap();

    assert_eq!(up.status.code(), Some(0));
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("readyz"));
}

#[test]
fn metrics_count_requests_by_route_and_never_name_an_account() {
    let metrics = free_port_addr();
    let server = TestServer::start_with(&["--metrics-bind", &metrics.to_string()]);
    let key = server.signup_key("metrics@example.com");
    server.get("/api/auth/me", Some(&key));
    server.get("/api/auth/me", Some("ki_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    server.get("/api/auth/me", None);
    server.get("/no/such/path/metrics@example.com", None);

    let text = crate::helpers::metrics_text(metrics);

    for expected in [
        r#"kaggleingest_http_requests_total{method="GET",route="/api/auth/me",status="200"} 1"#,
        r#"kaggleingest_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"kaggleingest_auth_failures_total{reason="invalid_key"} 1"#,
        r#"kaggleingest_auth_failures_total{reason="missing_key"} 1"#,
        "kaggleingest_signups_total 1",
        "kaggleingest_accounts 1",
        "kaggleingest_hash_in_flight 0",
        "kaggleingest_bcrypt_seconds_count",
        "kaggleingest_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(!text.contains("metrics@example.com") && !text.contains(&key));
}

#[test]
fn the_openapi_document_describes_every_route() {
    let server = TestServer::start();

    let reply = server.get("/openapi.json", None);

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let scheme = &doc["components"]["securitySchemes"]["ApiKey"];
    assert_eq!(
        (
            scheme["type"].as_str(),
            scheme["in"].as_str(),
            scheme["name"].as_str()
        ),
        (Some("apiKey"), Some("header"), Some("X-API-Key"))
    );
    let documented = |path: &str, method: &str| doc["paths"][path][method].is_object();
    for (path, method) in [
        ("/api/auth/signup", "post"),
        ("/api/auth/me", "get"),
        ("/api/auth/me", "head"),
        ("/api/auth/keys/rotate", "post"),
        ("/api/auth/key", "delete"),
        ("/api/auth/verify", "get"),
        ("/api/auth/verify", "head"),
        ("/healthz", "get"),
        ("/healthz", "head"),
        ("/readyz", "get"),
        ("/readyz", "head"),
        ("/openapi.json", "get"),
        ("/openapi.json", "head"),
        ("/", "get"),
        ("/", "head"),
        ("/static/app.js", "get"),
        ("/static/app.js", "head"),
        ("/static/style.css", "get"),
        ("/static/style.css", "head"),
        ("/static/icon.svg", "get"),
        ("/static/icon.svg", "head"),
    ] {
        assert!(
            documented(path, method),
            "{method} {path} is not documented"
        );
        assert!(
            server.request(&method.to_uppercase(), path, &[], "").status != 404,
            "{path} is served"
        );
    }
    let signup = &doc["paths"]["/api/auth/signup"]["post"]["responses"];
    for status in ["200", "400", "409", "413", "415", "429", "500", "503"] {
        assert!(signup[status].is_object(), "signup {status}");
    }
}

#[test]
fn json_logs_carry_one_line_per_request_with_an_id_the_client_sees() {
    let server = TestServer::start_with(&["--log-format", "json"]);

    let mine = server.request(
        "GET",
        "/api/auth/me",
        &[("X-Request-Id", "trace-abc.123")],
        "",
    );
    let fresh = server.get("/api/auth/me", None);

    assert_eq!(mine.header("x-request-id"), Some("trace-abc.123"));
    let fresh_id = fresh.header("x-request-id").unwrap().to_owned();
    assert_eq!(fresh_id.len(), 16);
    let (_, log) = server.stop();
    let requests: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|_| panic!("not JSON: {l}"))
        })
        .filter(|l| l["message"] == "request")
        .collect();
    assert_eq!(requests.len(), 2, "{log}");
    let line = requests
        .iter()
        .find(|l| l["request_id"] == fresh_id.as_str())
        .unwrap();
    assert_eq!(
        (
            line["method"].as_str(),
            line["route"].as_str(),
            line["status"].as_u64()
        ),
        (Some("GET"), Some("/api/auth/me"), Some(401))
    );
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["micros"].is_u64());
}

#[test]
fn every_endpoint_at_trace_level_logs_no_secret() {
    let server = TestServer::start_with(&["--log-level", "trace"]);
    let password = "hunter2-is-not-a-password";
    let signup = server.signup("leak@example.com", password).json();
    let key = signup["api_key"].as_str().unwrap().to_owned();
    let body = serde_json::json!({"email": "leak@example.com", "password": password}).to_string();
    server.get("/api/auth/me", Some(&key));
    server.request(
        "GET",
        "/api/auth/verify",
        &[("X-API-Key", &key), ("X-KaggleIngest-Cost", "2")],
        "",
    );
    let rotated = server.post_json("/api/auth/keys/rotate", &body).json();
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    server.post_json("/api/auth/keys/rotate", &body.replace("hunter2", "wrong"));
    server.request("DELETE", "/api/auth/key", &[("X-API-Key", &new_key)], "");
    server.get("/api/auth/me", Some(&new_key));
    server.signup("leak@example.com", password);
    server.get("/healthz", None);
    server.get("/readyz", None);
    server.get("/openapi.json", None);

    let (_, log) = server.stop();

    assert!(
        log.contains(r#"route="/api/auth/keys/rotate""#),
        "the endpoints were driven:\n{log}"
    );
    for key in [&key, &new_key] {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        for secret in [key.as_str(), &key[3..], &hex, &hex.to_uppercase()] {
            assert!(!log.contains(secret), "{secret} in the log");
        }
        let debug_bytes = format!("{:?}", digest.as_slice());
        assert!(
            !log.contains(&debug_bytes[1..debug_bytes.len() - 1]),
            "digest bytes in the log"
        );
    }
    assert!(
        !log.contains(password) && !log.contains("hunter2"),
        "password in the log"
    );
}

#[test]
fn a_backup_taken_during_signups_holds_every_account_committed_before_it() {
    if sqlite_only("backups of a SQLite file") {
        return;
    }
    let server = Arc::new(TestServer::start());
    for i in 0..50 {
        server.signup_key(&format!("before{i}@example.com"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(
                    server
                        .signup(&format!("during{i}@example.com"), "securepassword123")
                        .status,
                    200
                );
                i += 1;
            }
            i
        })
    };
    let dest = server.dir.path().join("copy.db");

    let out = command(server.dir.path())
        .arg("backup")
        .arg(&dest)
        .arg("--db")
        .arg(server.db_path())
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let written_during = writer.join().unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("integrity_check: ok"), "{said}");
    assert_eq!(db_value::<String>(&dest, "PRAGMA integrity_check"), "ok");
    let before: i64 = db_value(
        &dest,
        "SELECT count(*) FROM accounts WHERE email LIKE 'before%'",
    );
    assert_eq!(before, 50);
    let total: i64 = db_value(&dest, "SELECT count(*) FROM accounts");
    assert!(
        said.contains(&format!("backed up {total} account(s)")),
        "{said}"
    );
    assert!(total <= 50 + written_during as i64);
    let leftovers: Vec<_> = std::fs::read_dir(server.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file is left behind");
}

#[test]
fn closed_signups_are_403_but_admins_can_still_create_accounts() {
    let server = TestServer::start_with(&["--signups", "closed"]);

    let refused = server.signup("public@example.com", "securepassword123");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, SIGNUPS_CLOSED_BODY);

    let mut create = command(server.dir.path())
        .args([
            "user",
            "create",
            "admin-made@example.com",
            "--password-stdin",
            "--json",
            "--db",
        ])
        .arg(&server.db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    create
        .stdin
        .take()
        .unwrap()
        .write_all(b"chosen password 1\n")
        .unwrap();
    let out = create.wait_with_output().unwrap();
    assert!(out.status.success());
    let key = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server.get("/api/auth/me", Some(&key)).json()["email"],
        "admin-made@example.com"
    );
    let rotate = server.post_json(
        "/api/auth/keys/rotate",
        r#"{"email":"admin-made@example.com","password":"chosen password 1"}"#,
    );
    assert_eq!(
        rotate.status, 200,
        "the password from stdin is the account's"
    );
}

#[test]
fn an_email_domain_allowlist_limits_public_signups() {
    let server = TestServer::start_with(&["--signup-email-domains", "example.com,@Corp.Example"]);

    assert_eq!(
        server.signup("a@example.com", "securepassword123").status,
        200
    );
    assert_eq!(
        server.signup("b@CORP.example", "securepassword123").status,
        200
    );
    let other = server.signup("c@elsewhere.org", "securepassword123");
    assert_eq!(other.status, 403);
    assert_eq!(other.detail(), "Signups are not open to this email domain");
    assert_eq!(
        server
            .signup("d@sub.example.com", "securepassword123")
            .status,
        403,
        "exact domains only"
    );
}

#[test]
fn config_show_names_each_source_and_example_is_the_shipped_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kaggleingest.toml"), "hash_queue = 9\n").unwrap();

    let show = command(dir.path())
        .args(["config", "show", "--bcrypt-cost", "11"])
        .env("KAGGLEINGEST_SIGNUP_RATE_LIMIT", "3")
        .output()
        .unwrap();
    let example = command(dir.path())
        .args(["config", "example"])
        .output()
        .unwrap();

    let show = String::from_utf8_lossy(&show.stdout);
    let line = |key: &str| {
        show.lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("bcrypt_cost").ends_with("# flag --bcrypt-cost"),
        "{show}"
    );
    assert!(
        line("signup_rate_limit").ends_with("# env KAGGLEINGEST_SIGNUP_RATE_LIMIT"),
        "{show}"
    );
    assert!(
        line("hash_queue").contains("= 9") && line("hash_queue").ends_with("# config file"),
        "{show}"
    );
    assert!(line("bind").ends_with("# default"), "{show}");
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kaggleingest.toml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&example.stdout), shipped);
}

#[test]
fn a_stderr_nobody_reads_never_stalls_a_request() {
    // The pipe holds 64 KiB; 5,000 request lines are several times that.
    // A server that wrote its log in the request path would block on the
    // full pipe; ours drops lines past its buffer instead.
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .envs(crate::helpers::TEST_ENV.iter().copied())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        if let Some(addr) = crate::helpers::listening_addr(&line) {
            break addr;
        }
    };
    // From here on nobody reads the pipe.
    let agent = crate::helpers::client();

    let started = std::time::Instant::now();
    let ok = (0..5000)
        .filter(|_| {
            agent
                .get(format!("http://{addr}/api/auth/me"))
                .call()
                .is_ok_and(|r| r.status() == 401)
        })
        .count();

    assert_eq!(ok, 5000, "every request answered");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    // A clean stop must not wait forever on the full pipe either.
    // SAFETY: kill has no memory-safety preconditions; the pid is our child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_or_kill(&mut child, std::time::Duration::from_secs(20));
    drop(stderr);
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM with a stderr nobody reads: {status:?}"
    );
}
