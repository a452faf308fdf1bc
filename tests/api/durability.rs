//! A 200 means the account is on disk: proved by killing the real server in
//! the middle of a signup flood and restarting it on the same database.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crate::helpers::{
    BACKEND, Backend, EXIT_TIMEOUT, Reply, STARTUP_TIMEOUT, TEST_ENV, TestServer, client, db_value,
    serve_command, sqlite_only, try_signup, wait_or_kill,
};

const THREADS: usize = 6;
/// Signups acknowledged before the signal is sent.
const ACKED_BEFORE_SIGNAL: usize = 60;

/// Floods signups, sends `signal` mid-flood, and returns every reply the
/// clients received (before and after the signal) plus the temp dir.
fn flood_and_signal(
    signal: libc::c_int,
) -> (Vec<Reply>, Arc<tempfile::TempDir>, std::process::ExitStatus) {
    let server = TestServer::start();
    let dir = Arc::clone(&server.dir);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked_tx, acked_rx) = channel::<()>();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, acked_tx) = (Arc::clone(&stop), acked_tx.clone());
            std::thread::spawn(move || {
                let agent = client();
                let mut replies = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let email = format!("t{t}-{i}@example.com");
                    match try_signup(&agent, addr, &email) {
                        Some(reply) => {
                            if reply.status == 200 {
                                let _ = acked_tx.send(());
                            }
                            replies.push(reply);
                        }
                        // Refused or cut: the server is gone or going.
                        None => {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                    }
                }
                replies
            })
        })
        .collect();
    for _ in 0..ACKED_BEFORE_SIGNAL {
        acked_rx.recv().expect("the flood gets 200s");
    }

    let (status, _log) = server.stop_with(signal);
    stop.store(true, Ordering::Relaxed);

    let replies = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    (replies, dir, status)
}

/// Every key that got a 200 works after a restart; nothing but 200 and
/// shed-load 503 was answered; the file passes SQLite's integrity check.
fn assert_every_ack_survived(replies: &[Reply], dir: Arc<tempfile::TempDir>) {
    let unexpected: Vec<_> = replies
        .iter()
        .filter(|r| r.status != 200 && r.status != 503)
        .map(|r| (r.status, r.body.clone()))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    let keys: Vec<String> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["api_key"].as_str().unwrap().to_owned())
        .collect();
    assert!(keys.len() >= ACKED_BEFORE_SIGNAL);

    let server = TestServer::start_in(Arc::clone(&dir), &[], TEST_ENV);
    for key in &keys {
        let me = server.get("/api/auth/me", Some(key));
        assert_eq!(me.status, 200, "an acknowledged signup was lost");
    }
    let (status, _) = server.stop();
    assert!(status.success());

    if BACKEND == Backend::Sqlite {
        let db = dir.path().join("kaggleingest.db");
        assert_eq!(db_value::<String>(&db, "PRAGMA integrity_check"), "ok");
    }
}

#[test]
fn sigkill_mid_flood_loses_no_acknowledged_signup() {
    let (replies, dir, status) = flood_and_signal(libc::SIGKILL);

    assert!(!status.success(), "killed, not exited");
    assert_every_ack_survived(&replies, dir);
}

#[test]
fn sigterm_mid_flood_drains_and_exits_zero() {
    let (replies, dir, status) = flood_and_signal(libc::SIGTERM);

    assert!(status.success(), "graceful exit: {status:?}");
    assert_every_ack_survived(&replies, dir);
}

/// A supervisor may signal as soon as the process runs, or as soon as it
/// reads the startup line. The server catches SIGINT and SIGTERM before it
/// opens the database, also when its parent left SIGTERM ignored (which it
/// must not inherit), and a signal during startup stops it there: here the
/// database is locked by another connection, so startup cannot finish.
#[test]
fn a_signal_during_startup_stops_the_server_cleanly() {
    if sqlite_only("a SQLite file locked by another connection") {
        return;
    }
    for (signal, parent_ignores_it) in [
        (libc::SIGTERM, false),
        (libc::SIGTERM, true),
        (libc::SIGINT, false),
    ] {
        let case = format!("signal {signal}, ignored by the parent: {parent_ignores_it}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaggleingest.db");
        let lock = rusqlite::Connection::open(&path).unwrap();
        lock.execute_batch("BEGIN EXCLUSIVE").unwrap();

        let mut cmd = serve_command(dir.path(), &path, TEST_ENV);
        if parent_ignores_it {
            // SAFETY: signal is async-signal-safe and touches no memory.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(signal, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log);
            log
        });
        let caught = wait_until_caught(&mut child, signal);
        let status = if caught {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            wait_or_kill(&mut child, EXIT_TIMEOUT)
        } else {
            child.try_wait().unwrap()
        };
        drop(lock);
        let log = log.join().unwrap();

        assert!(caught, "{case}: exited before catching the signal:\n{log}");
        let status = status.unwrap_or_else(|| panic!("{case}: still running:\n{log}"));
        assert!(status.success(), "{case}: {status:?}:\n{log}");
        assert!(!log.contains("listening on"), "{case}:\n{log}");
        assert!(
            log.trim_end().ends_with(": stopped before listening"),
            "{case}: no clean stop:\n{log}"
        );
    }
}

/// Waits until `child` catches `signal` (its `/proc` status says so), for
/// the startup timeout at most; false if it exits first.
fn wait_until_caught(child: &mut std::process::Child, signal: libc::c_int) -> bool {
    let status = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let caught = std::fs::read_to_string(&status)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signal - 1)) != 0);
        if caught {
            return true;
        }
        assert!(Instant::now() < deadline, "signal {signal} never caught");
        // Polls a state no event announces; it changes within milliseconds.
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_signup_cut_off_by_the_grace_period_gets_an_error_not_a_200() {
    // One slow hashing thread, no queue, and no grace at all.
    let server = TestServer::start_with(&[
        "--bcrypt-cost",
        "15",
        "--hash-workers",
        "1",
        "--hash-queue",
        "0",
        "--shutdown-grace-secs",
        "0",
    ]);
    let addr = server.addr;
    let (done_tx, done_rx) = channel();
    let racers: Vec<_> = (0..3)
        .map(|i| {
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                let reply = try_signup(&client(), addr, &format!("cut{i}@example.com"));
                let _ = done_tx.send(reply.as_ref().map(|r| r.status));
                reply
            })
        })
        .collect();
    // Only one racer fits in the pool; the other two are shed at once, and
    // then the one left is certainly mid-hash (it takes seconds).
    for _ in 0..2 {
        assert_eq!(done_rx.recv().unwrap(), Some(503));
    }

    let (status, _) = server.stop();

    assert!(status.success());
    let replies: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let cut = replies.iter().filter(|r| r.is_none()).count();
    let got: Vec<_> = replies
        .iter()
        .flatten()
        .map(|r| (r.status, r.body.clone()))
        .collect();
    assert_eq!(
        cut, 1,
        "the in-flight signup got a transport error, not a reply: {got:?}"
    );
}
