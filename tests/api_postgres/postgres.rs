//! What only PostgreSQL can show: several nodes on one database, migrations
//! racing, TLS, what the database holds, and `copy` between the stores.

use std::sync::Arc;
use std::sync::mpsc::channel;

use crate::cluster::{self, TLS_ONLY_DB, cluster, fresh_database, psql};
use crate::helpers::{
    TEST_ENV, TestServer, all_at_once, assert_clean_failure, command, count, spend_until_cut_off,
    stderr, use_database,
};

const PASSWORD: &str = "securepassword123";

/// A second node: another `serve` on the first one's database.
fn second_node(first: &TestServer) -> TestServer {
    TestServer::start_in(Arc::clone(&first.dir), &[], TEST_ENV)
}

/// `kaggleingest ARGS` in a fresh dir; its output.
fn run(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    command(dir.path()).args(args).output().unwrap()
}

#[test]
fn the_startup_line_names_backend_and_host_but_never_the_password() {
    let server = TestServer::start();
    let (_, log) = server.stop();
    let start = log
        .lines()
        .find(|l| l.contains("listening on"))
        .expect("a startup line");
    let port = cluster().port;
    assert!(start.contains(r#"backend="postgres""#), "{start}");
    assert!(
        start.contains(&format!("postgres://postgres@127.0.0.1:{port}/")),
        "{start}"
    );
    assert!(
        !log.contains(cluster::PASSWORD) && !log.contains("s3cr"),
        "the password is in the log:\n{log}"
    );
}

#[test]
fn an_account_made_on_one_node_works_on_the_other_at_once() {
    let first = TestServer::start();
    let second = second_node(&first);

    let key = first.signup_key("both@example.com");

    let me = second.get("/api/auth/me", Some(&key));
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["email"], "both@example.com");
    assert_eq!(second.signup("BOTH@example.com", PASSWORD).status, 409);
}

#[test]
fn the_same_email_racing_on_two_nodes_gives_one_200() {
    let first = TestServer::start();
    let second = second_node(&first);
    for round in 0..5 {
        let email = format!("race{round}@example.com");
        let statuses = all_at_once(16, |i| {
            let node = if i % 2 == 0 { &first } else { &second };
            node.signup(&email, PASSWORD).status
        });
        assert_eq!(count(&statuses, 200), 1, "{statuses:?}");
        assert_eq!(count(&statuses, 409), 15, "{statuses:?}");
    }
    assert_eq!(first.stored::<i64>("SELECT count(*) FROM accounts"), 5);
}

#[test]
fn a_rotation_on_one_node_kills_the_old_key_on_the_other_at_once() {
    let first = TestServer::start();
    let second = second_node(&first);
    let old = first.signup_key("rotate@example.com");
    assert_eq!(second.get("/api/auth/me", Some(&old)).status, 200);

    let body = serde_json::json!({"email": "rotate@example.com", "password": PASSWORD});
    let rotated = first.post_json("/api/auth/keys/rotate", &body.to_string());
    let new = rotated.issued_key(crate::contract::ROTATED);

    let me = second.get("/api/auth/me", Some(&old));
    assert_eq!(me.body, crate::contract::INVALID_KEY_BODY);
    let verify = second.get("/api/auth/verify", Some(&old));
    assert_eq!(verify.status, me.status, "{}", verify.body);
    assert_eq!(second.get("/api/auth/me", Some(&new)).status, 200);
}

#[test]
fn killing_one_node_mid_storm_loses_no_acknowledged_spend() {
    const START: i64 = 1_000_000;
    const CLIENTS: usize = 8; // per node
    let first = TestServer::start();
    let second = second_node(&first);
    let key = Arc::new(first.signup_key("storm@example.com"));
    first
        .execute(&format!("UPDATE accounts SET credits = {START}"))
        .unwrap();

    // Clients on both nodes spend until their connection dies (the killed
    // node's) or they are told to stop (the survivor's).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acked_tx, acked_rx) = channel();
    let clients: Vec<_> = (0..2 * CLIENTS)
        .map(|i| {
            let addr = if i % 2 == 0 { first.addr } else { second.addr };
            let (key, acked_tx, stop) = (Arc::clone(&key), acked_tx.clone(), Arc::clone(&stop));
            std::thread::spawn(move || spend_until_cut_off(addr, &key, &acked_tx, &stop))
        })
        .collect();
    drop(acked_tx);
    for _ in 0..1_000 {
        acked_rx.recv().expect("the storm is running");
    }

    first.stop_with(libc::SIGKILL);
    // The survivor keeps serving the same account.
    for _ in 0..200 {
        acked_rx.recv().expect("the second node keeps spending");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let acked: i64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let left = second.get("/api/auth/me", Some(&key)).json()["credits"]
        .as_i64()
        .unwrap();
    let spent = START - left;
    assert!(spent >= acked, "{acked} acknowledged, only {spent} stored");
    assert!(
        spent <= acked + CLIENTS as i64,
        "{spent} spent but only {acked} acknowledged and {CLIENTS} in flight on the killed node"
    );
}

#[test]
fn nodes_starting_together_migrate_once() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let url = crate::helpers::database_in(dir.path());
    let nodes = all_at_once(4, |_| TestServer::start_in(Arc::clone(&dir), &[], TEST_ENV));

    let key = nodes[0].signup_key("first@example.com");
    for node in &nodes {
        assert_eq!(node.get("/readyz", None).status, 200);
        assert_eq!(node.get("/api/auth/me", Some(&key)).status, 200);
    }
    assert_eq!(psql(&url, "SELECT count(*) FROM kaggleingest_schema"), "1");
    assert_eq!(psql(&url, "SELECT version FROM kaggleingest_schema"), "1");
}

#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    let server = TestServer::start();
    let url = server.db.clone();
    drop(server);
    psql(&url, "UPDATE kaggleingest_schema SET version = 99");

    let out = run(&["serve", "--bind", "127.0.0.1:0", "--db", &url]);

    assert_clean_failure(
        &out,
        "schema version 99 is newer than this release knows (1)",
    );
    assert!(!stderr(&out).contains("s3cr"), "no password");
}

#[test]
fn the_admin_cli_refuses_a_database_without_our_tables() {
    let url = fresh_database("disable");

    let out = run(&["user", "list", "--db", &url]);

    assert_clean_failure(&out, "it has no kaggleingest tables yet");
    assert_eq!(psql(&url, "SELECT to_regclass('accounts') IS NULL"), "t");
    let created = run(&[
        "user",
        "create",
        "a@example.com",
        "--create-db",
        "--db",
        &url,
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert_eq!(psql(&url, "SELECT count(*) FROM accounts"), "1");
}

#[test]
fn backup_on_postgres_points_to_pg_dump() {
    let server = TestServer::start();

    let out = run(&["backup", "copy.db", "--db", &server.db]);

    assert_eq!(out.status.code(), Some(1));
    assert_clean_failure(&out, "is PostgreSQL: back it up with pg_dump");
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn a_dump_of_the_database_holds_neither_key_nor_password() {
    let server = TestServer::start();
    let password = "correct horse battery staple";
    let key = server.signup("secret@example.com", password).json()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = serde_json::json!({"email": "secret@example.com", "password": password});
    let rotated = server
        .post_json("/api/auth/keys/rotate", &body.to_string())
        .issued_key(crate::contract::ROTATED);

    let dump = std::process::Command::new(cluster().bin.join("pg_dump"))
        .arg(&server.db)
        .output()
        .unwrap();

    assert!(dump.status.success(), "{}", stderr(&dump));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("secret@example.com"), "the account is stored");
    for secret in [&key, &rotated, password] {
        assert!(!dump.contains(secret), "{secret} is in the dump");
    }
}

/// A server whose `--db` is `url`.
fn serve_on(url: &str) -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    use_database(dir.path(), url);
    TestServer::start_in(dir, &[], TEST_ENV)
}

#[test]
fn tls_is_used_and_checked_as_sslmode_says() {
    let c = cluster();
    let port = c.port;
    let ca = c.ca.display().to_string();
    let other = c.other_ca.display().to_string();
    // The certificate names localhost, not 127.0.0.1; `hostaddr` keeps the
    // connection on 127.0.0.1 while TLS checks the name `localhost`.
    let by_name = |query: &str| {
        c.url_to(
            &format!("localhost:{port}"),
            TLS_ONLY_DB,
            &format!("hostaddr=127.0.0.1&{query}"),
        )
    };
    let by_ip = |query: &str| c.url_to(&format!("127.0.0.1:{port}"), TLS_ONLY_DB, query);

    let accepted = [
        by_ip("sslmode=prefer"),
        by_ip("sslmode=require"),
        by_ip(&format!("sslmode=verify-ca&sslrootcert={ca}")),
        by_name(&format!("sslmode=verify-full&sslrootcert={ca}")),
    ];
    for (i, url) in accepted.iter().enumerate() {
        let server = serve_on(url);
        let key = server.signup_key(&format!("tls{i}@example.com"));
        assert_eq!(server.get("/api/auth/me", Some(&key)).status, 200, "{url}");
        assert_eq!(server.get("/readyz", None).status, 200, "{url}");
    }

    // The admin CLI connects as `serve` does, and exits where `serve`
    // would keep running.
    for (url, why) in [
        // The database takes TLS connections only (see `cluster`).
        (by_ip("sslmode=disable"), "no encryption"),
        (
            by_ip(&format!("sslmode=verify-full&sslrootcert={ca}")),
            "not valid for name",
        ),
        (
            by_name(&format!("sslmode=verify-full&sslrootcert={other}")),
            "UnknownIssuer",
        ),
        (
            by_ip(&format!("sslmode=verify-ca&sslrootcert={other}")),
            "UnknownIssuer",
        ),
        (
            by_ip(&format!("sslmode=require&sslrootcert={other}")),
            "UnknownIssuer",
        ),
        (
            by_name("sslmode=verify-full&sslrootcert=/nonexistent.pem"),
            "cannot read sslrootcert",
        ),
    ] {
        let out = run(&["user", "list", "--db", &url]);
        assert_clean_failure(&out, "cannot open database postgres://postgres@");
        assert!(stderr(&out).contains(why), "{url}: {}", stderr(&out));
    }
    let listed = run(&["user", "list", "--db", &accepted[3]]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().last(),
        Some("4 account(s)")
    );
}

/// `kaggleingest user list --json` on `db`.
fn listed(db: &str) -> serde_json::Value {
    let out = run(&["user", "list", "--json", "--db", db]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `kaggleingest copy --from FROM --to TO [more]`; its one line of output.
fn copy(from: &str, to: &str, more: &[&str]) -> String {
    let out = run(&[&["copy", "--from", from, "--to", to], more].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn copy_moves_a_sqlite_database_to_postgres_and_back_unchanged() {
    // A SQLite server in the PostgreSQL suite: its dir names a file.
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let file = dir.path().join("k.db").display().to_string();
    use_database(dir.path(), &file);
    let sqlite = TestServer::start_in(Arc::clone(&dir), &[], TEST_ENV);
    let keys: Vec<String> = (0..5)
        .map(|i| sqlite.signup_key(&format!("Move{i}@Example.com")))
        .collect();
    for _ in 0..3 {
        assert_eq!(sqlite.get("/api/auth/verify", Some(&keys[0])).status, 200);
    }
    let body = serde_json::json!({"email": "move1@example.com", "password": PASSWORD});
    let rotated = sqlite
        .post_json("/api/auth/keys/rotate", &body.to_string())
        .issued_key(crate::contract::ROTATED);
    for change in [
        &["tier", "move2@example.com", "pro"][..],
        &["credits", "move3@example.com", "=1234"],
        &["revoke-key", "move4@example.com"],
    ] {
        let out = run(&[&["user"], change, &["--db", &file]].concat());
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let before = listed(&file);
    let me_before = sqlite.get("/api/auth/me", Some(&keys[0])).body;
    drop(sqlite);
    let url = fresh_database("disable");

    let first = copy(&file, &url, &[]);
    let again = copy(&file, &url, &[]);

    assert!(
        first.contains("copied 5 account(s)") && first.contains("5 new"),
        "{first}"
    );
    assert!(
        again.contains("0 new, 0 updated, 5 already identical"),
        "{again}"
    );
    assert!(!first.contains("s3cr"), "no password in {first}");
    assert_eq!(listed(&url), before);
    // Hashes and digests came along: old keys and the password work there.
    let postgres = serve_on(&url);
    assert_eq!(postgres.get("/api/auth/me", Some(&keys[0])).body, me_before);
    assert_eq!(postgres.get("/api/auth/me", Some(&rotated)).status, 200);
    for gone in [&keys[1], &keys[4]] {
        assert_eq!(
            postgres.get("/api/auth/me", Some(gone)).body,
            crate::contract::INVALID_KEY_BODY
        );
    }
    assert_eq!(postgres.get("/api/auth/verify", Some(&keys[0])).status, 200);
    let moved = postgres
        .post_json("/api/auth/keys/rotate", &body.to_string())
        .issued_key(crate::contract::ROTATED);
    let after = listed(&url);

    // And back, into a new file, and again after one more change there.
    let back = dir.path().join("back.db").display().to_string();
    let returned = copy(&url, &back, &[]);
    assert!(returned.contains("5 new"), "{returned}");
    assert_eq!(listed(&back), after);
    // A change at the source after a copy: named, left alone, unless told.
    assert_eq!(postgres.get("/api/auth/verify", Some(&keys[0])).status, 200);
    let refused = run(&["copy", "--from", &url, "--to", &back]);
    assert_clean_failure(&refused, "1 account(s) in");
    assert!(
        stderr(&refused).contains("(Move0@Example.com)"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(listed(&back), after, "nothing was overwritten");
    let updated = copy(&url, &back, &["--overwrite"]);
    assert!(
        updated.contains("0 new, 1 updated, 4 already identical"),
        "{updated}"
    );
    use_database(dir.path(), &back);
    let sqlite_again = TestServer::start_in(dir, &[], TEST_ENV);
    assert_eq!(sqlite_again.get("/api/auth/me", Some(&moved)).status, 200);
    assert_eq!(
        sqlite_again.get("/api/auth/me", Some(&keys[0])).json()["credits"],
        5
    );
}

#[test]
fn copy_refuses_one_database_as_both_ends_and_a_missing_source() {
    let url = fresh_database("disable");
    let same = run(&["copy", "--from", &url, "--to", &url]);
    assert_clean_failure(&same, "--from and --to are the same database");

    let missing = run(&["copy", "--from", "nothing-here.db", "--to", &url]);
    assert_clean_failure(
        &missing,
        "source nothing-here.db: no database at nothing-here.db",
    );
    assert_eq!(
        psql(&url, "SELECT to_regclass('accounts') IS NULL"),
        "t",
        "nothing was created"
    );
}

#[test]
fn of_two_rotations_racing_on_two_nodes_only_one_gets_a_key_and_it_works() {
    let first = TestServer::start();
    let second = second_node(&first);
    let old = first.signup_key("twice@example.com");
    // Reads go on, writes wait: both rotations read the account and check
    // the password, then queue their UPDATE behind the lock.
    let lock = cluster::Session::holding(&first.db, "LOCK TABLE accounts IN EXCLUSIVE MODE");
    let body = serde_json::json!({"email": "twice@example.com", "password": PASSWORD}).to_string();
    let replies = std::thread::scope(|s| {
        let racing: Vec<_> = [&first, &second]
            .map(|node| s.spawn(|| node.post_json("/api/auth/keys/rotate", &body)))
            .into_iter()
            .collect();
        // Both UPDATEs are waiting for the lock before it goes.
        let waiting = "SELECT count(*) FROM pg_stat_activity \
                       WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE accounts%'";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while psql(&first.db, waiting) != "2" {
            assert!(
                std::time::Instant::now() < deadline,
                "the rotations never queued"
            );
            std::thread::yield_now();
        }
        lock.commit();
        racing
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });

    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(count(&statuses, 200), 1, "{statuses:?}");
    assert_eq!(count(&statuses, 401), 1, "{statuses:?}");
    let winner = replies.iter().find(|r| r.status == 200).unwrap();
    let key = winner.issued_key(crate::contract::ROTATED);
    assert_eq!(first.get("/api/auth/me", Some(&key)).status, 200);
    assert_eq!(
        second.get("/api/auth/me", Some(&old)).body,
        crate::contract::INVALID_KEY_BODY
    );
}
