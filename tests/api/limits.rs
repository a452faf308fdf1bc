//! Under pressure: per-client signup limits, load shedding when hashing is
//! saturated, and connections that misbehave.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::contract::*;
use crate::helpers::TestServer;

fn signup_as(server: &TestServer, i: usize, forwarded_for: Option<&str>) -> crate::helpers::Reply {
    let body = format!(r#"{{"email":"u{i}@example.com","password":"securepassword123"}}"#);
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(forwarded_for.map(|v| ("X-Forwarded-For", v)));
    server.request("POST", "/api/auth/signup", &headers, &body)
}

#[test]
fn signups_over_the_per_client_limit_are_429_with_headers() {
    let server = TestServer::start_with(&["--signup-rate-limit", "3"]);

    let allowed: Vec<_> = (0..3).map(|i| signup_as(&server, i, None)).collect();
    let limited = signup_as(&server, 3, None);

    for (i, reply) in allowed.iter().enumerate() {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            reply.header("x-ratelimit-remaining"),
            Some((2 - i).to_string().as_str())
        );
        assert!(
            reply
                .header("x-ratelimit-reset")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1_700_000_000
        );
    }
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.header("connection"),
        Some("close"),
        "the unread body ends the connection, and the client is told"
    );
    assert_eq!(
        limited.body,
        r#"{"detail":"Rate limit exceeded: 3 per 1 minute"}"#
    );
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // Errors count too: a bad body is still an attempt.
    assert_eq!(server.post_json("/api/auth/signup", "{}").status, 429);
    // Other routes are not limited.
    assert_eq!(server.get("/api/auth/me", None).status, 401);
}

#[test]
fn every_signup_answer_carries_the_budget_headers() {
    let server = TestServer::start_with(&["--signup-rate-limit", "5"]);
    let not_json = server.request(
        "POST",
        "/api/auth/signup",
        &[("Content-Type", "text/plain")],
        "hi",
    );
    let bad_body = server.post_json("/api/auth/signup", "[]");
    let too_big = server.post_json("/api/auth/signup", &"x".repeat(20_000));

    for (reply, status) in [(&not_json, 415), (&bad_body, 400), (&too_big, 413)] {
        assert_eq!(reply.status, status);
        assert_eq!(reply.header("x-ratelimit-limit"), Some("5"), "{status}");
        assert!(reply.header("x-ratelimit-remaining").is_some(), "{status}");
    }
}

#[test]
fn a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let server = TestServer::start_with(&["--signup-rate-limit", "2"]);

    let statuses: Vec<u16> = (0..4)
        .map(|i| signup_as(&server, i, Some(&format!("198.51.100.{i}"))).status)
        .collect();

    assert_eq!(statuses, [200, 200, 429, 429]);
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let server = TestServer::start_with(&[
        "--signup-rate-limit",
        "2",
        "--trusted-proxies",
        "127.0.0.1,10.0.0.0/8",
    ]);

    // Two clients, two signups each: all allowed.
    let a = ["6.6.6.6, 198.51.100.1", "198.51.100.1, 10.0.0.5"];
    let b = ["198.51.100.2", "198.51.100.2"];
    let mut i = 0;
    for xff in a.iter().chain(&b) {
        assert_eq!(signup_as(&server, i, Some(xff)).status, 200, "{xff}");
        i += 1;
    }
    // The third from client A is refused, whatever it claims further left.
    assert_eq!(
        signup_as(&server, i, Some("7.7.7.7, 198.51.100.1")).status,
        429
    );
}

#[test]
fn a_full_hashing_queue_sheds_signups_with_503_and_me_stays_up() {
    // One hashing thread, one waiting slot, and a cost that takes a while.
    let server = Arc::new(TestServer::start_with(&[
        "--bcrypt-cost",
        "13",
        "--hash-workers",
        "1",
        "--hash-queue",
        "1",
    ]));
    let key = server.signup_key("first@example.com");
    let n = 6;
    let barrier = Arc::new(Barrier::new(n + 1));
    let flood: Vec<_> = (0..n)
        .map(|i| {
            let (server, barrier) = (Arc::clone(&server), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                signup_as(&server, 100 + i, None)
            })
        })
        .collect();
    barrier.wait();

    // While the pool is saturated, the key still authenticates.
    let me = server.get("/api/auth/me", Some(&key));
    assert_eq!(me.status, 200);

    let replies: Vec<_> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    let shed: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert!(!shed.is_empty(), "some signups are shed");
    assert!(ok >= 2, "one running and one queued signup complete");
    assert_eq!(ok + shed.len(), n, "only 200s and 503s");
    for reply in shed {
        assert_eq!(reply.body, BUSY_BODY);
        assert!(reply.header("retry-after").is_some());
    }
}

#[test]
fn a_known_email_is_409_before_any_hashing() {
    // One hashing thread and no queue: while it works, every new signup is 503.
    let server = Arc::new(TestServer::start_with(&[
        "--bcrypt-cost",
        "14",
        "--hash-workers",
        "1",
        "--hash-queue",
        "0",
    ]));
    assert_eq!(
        server.signup("dup@example.com", "securepassword123").status,
        200
    );
    let mut probes = Vec::new();
    // Keep the worker busy until a probe proves it is.
    let saturated = (0..50).any(|i| {
        let busy = Arc::clone(&server);
        probes.push(std::thread::spawn(move || signup_as(&busy, i, None).status));
        signup_as(&server, 1000 + i, None).status == 503
    });
    assert!(saturated, "the hashing thread never looked busy");

    let dup = server.signup("DUP@example.com", "securepassword123");

    assert_eq!(
        dup.status, 409,
        "answered from the database, not the busy pool"
    );
    for probe in probes {
        assert!(matches!(probe.join().unwrap(), 200 | 503));
    }
}

#[test]
fn idle_connections_are_closed_after_the_client_timeout() {
    let server = TestServer::start_with(&["--client-timeout-secs", "1"]);

    let (_, closed) = read_after_sending(server.addr, b"GET /api/auth/me HTT");

    assert!(
        closed.is_ok(),
        "the server closed the connection: {closed:?}"
    );
    // And the server is fine.
    assert_eq!(server.get("/api/auth/me", None).status, 401);
}

/// Sends `request` on a new connection and reads until the server closes
/// it: what it answered, and how the read ended (after 20 s, a timeout: it
/// never closed).
fn read_after_sending(
    addr: std::net::SocketAddr,
    request: &[u8],
) -> (String, std::io::Result<usize>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let ended = stream.read_to_end(&mut answer);
    (String::from_utf8_lossy(&answer).into_owned(), ended)
}

/// What the server answered to `request` on a new connection of its own.
fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    read_after_sending(addr, request).0
}

#[test]
fn request_headers_over_16_kib_are_refused_without_being_buffered() {
    let server = TestServer::start();
    let key = server.signup_key("headers@example.com");
    let request = |padding: usize| {
        format!(
            "GET /api/auth/me HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "p".repeat(padding)
        )
    };

    let fits = exchange(server.addr, request(12 * 1024).as_bytes());
    let over = exchange(server.addr, request(17 * 1024).as_bytes());
    // Never finished: refused once 16 KiB are in, not held to the timeout.
    let unfinished = format!(
        "GET /api/auth/me HTTP/1.1\r\nX-Pad: {}",
        "p".repeat(64 * 1024)
    );
    let unfinished = exchange(server.addr, unfinished.as_bytes());

    assert!(fits.starts_with("HTTP/1.1 200"), "{fits:?}");
    assert!(over.starts_with("HTTP/1.1 431"), "{over:?}");
    assert!(unfinished.starts_with("HTTP/1.1 431"), "{unfinished:?}");
    assert_eq!(server.get("/api/auth/me", Some(&key)).status, 200);
}

#[test]
fn the_metrics_listener_times_out_idle_clients_and_holds_few_at_once() {
    let metrics = crate::helpers::free_port_addr();
    let server = TestServer::start_with(&[
        "--metrics-bind",
        &metrics.to_string(),
        "--client-timeout-secs",
        "1",
    ]);
    let scrape = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    // Half a request line, then nothing: closed at the client timeout.
    let (_, closed) = read_after_sending(metrics, b"GET /metr");
    assert!(closed.is_ok(), "the server closed it: {closed:?}");

    // Eight connections that send nothing fill the listener; a ninth
    // waits in the backlog until one of them is gone.
    let holders: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    let mut ninth = TcpStream::connect(metrics).unwrap();
    ninth.write_all(scrape).unwrap();
    ninth
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0; 1];
    let waited = ninth.read(&mut byte);
    assert!(waited.is_err(), "answered while 8 were held: {waited:?}");
    drop(holders);
    ninth
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    ninth.read_to_end(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));

    let unknown = exchange(
        metrics,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown:?}");
    assert!(
        unknown.ends_with(r#"{"detail":"Not Found"}"#),
        "{unknown:?}"
    );
    assert_eq!(server.get("/api/auth/me", None).status, 401);
}

#[test]
fn a_client_that_reads_no_answer_is_cut_off_after_the_client_timeout() {
    let server = TestServer::start_with(&["--client-timeout-secs", "1"]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut client = TcpStream::from(socket);
    // 29 KB answers: far more than the kernel buffers on both sides hold.
    const ASKED: usize = 2000;
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
    let writer = {
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..ASKED {
                if client.write_all(request).is_err() {
                    break; // cut off while asking
                }
            }
        })
    };

    // Not reading is the point: the server must give up on this client.
    std::thread::sleep(Duration::from_secs(4));
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answers = Vec::new();
    let _ = client.read_to_end(&mut answers);
    writer.join().unwrap();

    let answered = String::from_utf8_lossy(&answers)
        .matches("HTTP/1.1 200")
        .count();
    assert!(answered < ASKED, "all {ASKED} answered: never cut off");
    assert_eq!(server.get("/api/auth/me", None).status, 401);
}

#[test]
fn a_trickled_body_is_cut_off_with_408() {
    let server = TestServer::start_with(&["--client-timeout-secs", "1"]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(
        b"POST /api/auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\"",
    )
    .unwrap();

    let mut response = String::new();
    let _ = slow.read_to_string(&mut response);

    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(response.contains(r#"{"detail":"Request body not received in time"}"#));
}

#[test]
fn a_thousand_slow_connections_do_not_block_a_new_client() {
    raise_own_fd_limit(4096);
    let server = TestServer::start();
    let key = server.signup_key("busy@example.com");
    let slow: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            // Half of them idle, half of them mid-header (slow-loris).
            if i % 2 == 0 {
                s.write_all(b"GET /api/auth/me HTTP/1.1\r\nX-Slow: ")
                    .unwrap();
            }
            s
        })
        .collect();

    let me = server.get("/api/auth/me", Some(&key));

    assert_eq!(me.status, 200);
    drop(slow);
}

fn raise_own_fd_limit(wanted: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
