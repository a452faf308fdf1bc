//! The real thing in front of a real API: nginx with `contrib/nginx.conf`
//! and Caddy with `contrib/Caddyfile`, asking `/api/auth/verify` about every
//! request, on loopback ports.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::contract::*;
use crate::helpers::{Reply, TestServer, client, free_port_addr, program_present, raw_request};

/// The examples' placeholder addresses, replaced by this test's ports.
const EXAMPLE_KAGGLEINGEST: &str = "127.0.0.1:8000";
const EXAMPLE_API: &str = "127.0.0.1:9000";
const EXAMPLE_LISTEN: &str = "127.0.0.1:8080";
const EXAMPLE_CADDY_SITE: &str = "api.example.com";
/// What the echoing upstream answers for a paid request of `signup_key`'s account.
const UPSTREAM_SAW: &str = "email=proxy@example.com tier=free key= cost= deny=";
/// The price line of each example, which a test may change.
const NGINX_PRICE: &str = "proxy_set_header X-KaggleIngest-Cost 1;";
const CADDY_PRICE: &str = "header_up X-KaggleIngest-Cost 1";
/// The flag that lets the proxy's cost header set the price.
const PRICED: &str = "--verify-cost-header";

/// A proxy in the foreground, stopped when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the proxy's port accepts (proxies announce nothing when ready).
fn wait_listening(mut proxy: Proxy, dir: &Path) -> Proxy {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(proxy.addr).is_err() {
        if let Ok(Some(status)) = proxy.child.try_wait() {
            let logs: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect();
            panic!("the proxy exited with {status}:\n{}", logs.join("\n"));
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy
}

/// An example file from contrib/ with its placeholder addresses swapped.
fn example(name: &str, swaps: &[(&str, String)]) -> String {
    let path = format!("{}/contrib/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in swaps {
        assert!(text.contains(from), "{name} no longer mentions {from}");
        text = text.replace(from, to);
    }
    text
}

/// nginx with the example site plus a tiny upstream that echoes what it was
/// told about the caller.
fn start_nginx(dir: &Path, kaggleingest: SocketAddr) -> Proxy {
    start_nginx_with(dir, kaggleingest, &[])
}

/// `start_nginx` with more swaps in the example site.
fn start_nginx_with(dir: &Path, kaggleingest: SocketAddr, more: &[(&str, String)]) -> Proxy {
    let (listen, api) = (free_port_addr(), free_port_addr());
    let mut swaps = vec![
        (EXAMPLE_KAGGLEINGEST, kaggleingest.to_string()),
        (EXAMPLE_API, api.to_string()),
        (EXAMPLE_LISTEN, listen.to_string()),
    ];
    swaps.extend(more.iter().cloned());
    let site = example("nginx.conf", &swaps);
    let d = dir.display();
    let main = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/site.conf;
    server {{
        listen {api};
        location / {{
            default_type text/plain;
            return 200 "email=$http_x_kaggleingest_email tier=$http_x_kaggleingest_tier key=$http_x_api_key cost=$http_x_kaggleingest_cost deny=$http_x_kaggleingest_deny";
        }}
    }}
}}
"#
    );
    std::fs::write(dir.join("site.conf"), site).unwrap();
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting nginx");
    wait_listening(
        Proxy {
            child,
            addr: listen,
        },
        dir,
    )
}

/// Caddy with the example site plus the same echoing upstream.
fn start_caddy(dir: &Path, kaggleingest: SocketAddr) -> Proxy {
    start_caddy_with(dir, kaggleingest, &[])
}

/// `start_caddy` with more swaps in the example site.
fn start_caddy_with(dir: &Path, kaggleingest: SocketAddr, more: &[(&str, String)]) -> Proxy {
    let (listen, api) = (free_port_addr(), free_port_addr());
    let mut swaps = vec![
        (EXAMPLE_KAGGLEINGEST, kaggleingest.to_string()),
        (EXAMPLE_API, api.to_string()),
        (EXAMPLE_CADDY_SITE, format!("http://{listen}")),
    ];
    swaps.extend(more.iter().cloned());
    let site = example("Caddyfile", &swaps);
    let caddyfile = format!(
        "{{\n\tadmin off\n}}\n\n{site}\n\
         http://{api} {{\n\trespond \"email={{header.X-KaggleIngest-Email}} tier={{header.X-KaggleIngest-Tier}} key={{header.X-API-Key}} cost={{header.X-KaggleIngest-Cost}} deny={{header.X-KaggleIngest-Deny}}\" 200\n}}\n"
    );
    std::fs::write(dir.join("Caddyfile"), caddyfile).unwrap();
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.join("Caddyfile"))
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("caddy.log")).unwrap())
        .spawn()
        .expect("starting caddy");
    wait_listening(
        Proxy {
            child,
            addr: listen,
        },
        dir,
    )
}

fn get(agent: &ureq::Agent, addr: SocketAddr, path: &str, key: Option<&str>) -> Reply {
    let mut request = agent.get(format!("http://{addr}{path}"));
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    let mut response = request.call().expect("the proxy answers");
    Reply {
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: response.body_mut().read_to_string().unwrap(),
    }
}

/// Signs up `proxy@example.com` through the proxy and returns the key.
fn signup_key(agent: &ureq::Agent, proxy: SocketAddr) -> String {
    let signup = agent
        .post(format!("http://{proxy}/api/auth/signup"))
        .header("Content-Type", "application/json")
        .send(r#"{"email":"proxy@example.com","password":"securepassword123"}"#)
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&signup).unwrap()["api_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {signup}"))
        .to_owned()
}

/// The account's balance, asked through the proxy (`/me` spends nothing).
fn credits(agent: &ureq::Agent, proxy: SocketAddr, key: &str) -> i64 {
    let me = get(agent, proxy, "/api/auth/me", Some(key));
    me.json()["credits"]
        .as_i64()
        .unwrap_or_else(|| panic!("no credits in {}", me.body))
}

/// `GET path` through the proxy exactly as spelled (no client library
/// tidying it), with the key and extra header lines.
fn send(proxy: SocketAddr, path: &str, key: &str, headers: &[&str]) -> Reply {
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    raw_request(
        proxy,
        format!(
            "GET {path} HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\nX-API-Key: {key}\r\n{headers}\r\n"
        )
        .as_bytes(),
    )
}

/// Signs up through the proxy, then: no key, a bad key, ten paid requests
/// that reach the upstream without the key, and the eleventh. Returns the
/// eleventh reply for the proxy-specific checks.
fn ten_paid_requests_then_refused(proxy: SocketAddr) -> Reply {
    let agent = client();
    let key = signup_key(&agent, proxy);

    let no_key = get(&agent, proxy, "/models/list", None);
    let bad_key = get(
        &agent,
        proxy,
        "/models/list",
        Some("ki_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    );
    let paid: Vec<Reply> = (0..10)
        .map(|_| get(&agent, proxy, "/models/list", Some(&key)))
        .collect();
    let eleventh = get(&agent, proxy, "/models/list", Some(&key));
    let direct = get(&agent, proxy, "/api/auth/verify", Some(&key));

    assert_eq!(
        (no_key.status, no_key.detail()),
        (401, MISSING_KEY.to_owned())
    );
    assert_eq!(
        (bad_key.status, bad_key.detail()),
        (403, INVALID_KEY.to_owned())
    );
    for (i, reply) in paid.iter().enumerate() {
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        assert_eq!(reply.body, UPSTREAM_SAW, "the upstream never sees the key");
    }
    assert_eq!(
        eleventh.detail(),
        INSUFFICIENT_CREDITS,
        "refused, never a 500: {}",
        eleventh.body
    );
    assert_eq!(
        direct.status, 404,
        "verification is not reachable from outside"
    );
    eleventh
}

#[test]
fn nginx_auth_request_lets_ten_paid_requests_through_and_refuses_the_eleventh() {
    if !program_present("nginx", "nginx-light") {
        return;
    }
    // nginx turns any auth answer but 401/403 into a 500: deny with 403.
    let server = TestServer::start_with(&[
        "--verify-deny-status",
        "403",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let nginx = start_nginx(dir.path(), server.addr);

    let eleventh = ten_paid_requests_then_refused(nginx.addr);

    assert_eq!(eleventh.status, 403);
    assert_eq!(eleventh.header("x-kaggleingest-deny"), Some("credits"));
}

#[test]
fn caddy_forward_auth_lets_ten_paid_requests_through_and_refuses_the_eleventh() {
    if !program_present("caddy", "caddy") {
        return;
    }
    // forward_auth passes the auth answer through: the default 402 arrives.
    let server = TestServer::start_with(&["--trusted-proxies", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let caddy = start_caddy(dir.path(), server.addr);

    let eleventh = ten_paid_requests_then_refused(caddy.addr);

    assert_eq!(eleventh.status, 402);
}

/// Every way a client might pick its own price (a query, its own cost
/// header, once or twice) still spends exactly one credit per upstream
/// request; every spelling of the verify path is the proxy's JSON 404 and
/// spends nothing. `more_spellings` are the proxy's own extras.
fn no_client_chooses_the_price(proxy: SocketAddr, more_spellings: &[&str]) {
    let agent = client();
    let key = signup_key(&agent, proxy);
    let priced: [(&str, &[&str]); 8] = [
        ("/models/list?cost=0", &[]),
        ("/models/list?cost=1&cost=0", &[]),
        ("/models/list?cost=01", &[]),
        ("/models/list", &["X-KaggleIngest-Cost: 0"]),
        (
            "/models/list",
            &["X-KaggleIngest-Cost: 0", "X-KaggleIngest-Cost: 0"],
        ),
        ("/models/list", &["x-kaggleingest-cost: 5"]),
        ("/models/list?cost=0", &["X-KaggleIngest-Cost: 0"]),
        // Forged answers of verify: the upstream sees kaggleingest's own.
        (
            "/models/list",
            &[
                "X-KaggleIngest-Email: admin@example.com",
                "X-KaggleIngest-Tier: enterprise",
                "X-KaggleIngest-Deny: none",
            ],
        ),
    ];
    let spellings = [
        "/api/auth/verify",
        "/api/auth/verify/",
        "/api/auth//verify",
        "/api/auth/./verify",
        "/api/auth/me/../verify",
        "/api/auth/%76erify",
        "/api/auth/verify%2F",
        "/API/AUTH/VERIFY",
        "/api/auth/verify?cost=0",
    ];

    let mut expected = 10;
    for (path, headers) in priced {
        let reply = send(proxy, path, &key, headers);
        expected -= 1;

        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, UPSTREAM_SAW),
            "{path} {headers:?} reaches the upstream"
        );
        assert_eq!(
            credits(&agent, proxy, &key),
            expected,
            "{path} {headers:?} costs exactly one credit"
        );
    }
    for path in spellings.iter().chain(more_spellings) {
        let reply = send(proxy, path, &key, &["X-KaggleIngest-Cost: 0"]);

        assert_eq!(
            (reply.status, reply.body.as_str()),
            (404, NOT_FOUND_BODY),
            "{path} is not reachable from outside"
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{path}"
        );
        assert!(
            reply.header("x-request-id").is_none(),
            "{path} is answered by the proxy itself, never passed to kaggleingest"
        );
    }
    assert_eq!(credits(&agent, proxy, &key), expected, "nothing more spent");
}

/// The price set in the example's one price line is what each request
/// costs, whatever the client sends.
fn the_configured_price_is_spent(proxy: SocketAddr) {
    let agent = client();
    let key = signup_key(&agent, proxy);

    let first = send(
        proxy,
        "/models/list?cost=0",
        &key,
        &["X-KaggleIngest-Cost: 0"],
    );
    let second = send(proxy, "/models/list", &key, &["X-KaggleIngest-Cost: 1"]);
    let third = send(proxy, "/models/list", &key, &[]);

    assert_eq!((first.status, first.body.as_str()), (200, UPSTREAM_SAW));
    assert_eq!((second.status, second.body.as_str()), (200, UPSTREAM_SAW));
    assert_ne!(third.status, 200, "{}", third.body);
    assert_eq!(third.detail(), INSUFFICIENT_CREDITS);
    assert_eq!(
        credits(&agent, proxy, &key),
        0,
        "5 and 5 spent, then refused"
    );
}

#[test]
fn nginx_lets_no_client_choose_the_price_or_reach_verify() {
    if !program_present("nginx", "nginx-light") {
        return;
    }
    let server = TestServer::start_with(&["--verify-deny-status", "403", PRICED, "true"]);
    let dir = tempfile::tempdir().unwrap();
    let nginx = start_nginx(dir.path(), server.addr);

    no_client_chooses_the_price(nginx.addr, &["/_kaggleingest_verify"]);
}

#[test]
fn caddy_lets_no_client_choose_the_price_or_reach_verify() {
    if !program_present("caddy", "caddy") {
        return;
    }
    let server = TestServer::start_with(&[PRICED, "true"]);
    let dir = tempfile::tempdir().unwrap();
    let caddy = start_caddy(dir.path(), server.addr);

    no_client_chooses_the_price(caddy.addr, &[]);
}

#[test]
fn nginx_spends_the_price_its_config_sets() {
    if !program_present("nginx", "nginx-light") {
        return;
    }
    let server = TestServer::start_with(&["--verify-deny-status", "403", PRICED, "true"]);
    let dir = tempfile::tempdir().unwrap();
    let priced = NGINX_PRICE.replace(" 1;", " 5;");
    let nginx = start_nginx_with(dir.path(), server.addr, &[(NGINX_PRICE, priced)]);

    the_configured_price_is_spent(nginx.addr);
}

#[test]
fn caddy_spends_the_price_its_config_sets() {
    if !program_present("caddy", "caddy") {
        return;
    }
    let server = TestServer::start_with(&[PRICED, "true"]);
    let dir = tempfile::tempdir().unwrap();
    let priced = CADDY_PRICE.replace(" 1", " 5");
    let caddy = start_caddy_with(dir.path(), server.addr, &[(CADDY_PRICE, priced)]);

    the_configured_price_is_spent(caddy.addr);
}

/// A config from before the cost header existed forwards the client's own
/// header to verify; with `verify_cost_header` at its default the server
/// ignores it, so the client still pays one credit a request.
fn an_old_config_still_charges_one_credit(proxy: SocketAddr) {
    let agent = client();
    let key = signup_key(&agent, proxy);

    let tries: [(&str, &[&str]); 2] = [
        ("/models/list", &["X-KaggleIngest-Cost: 0"]),
        (
            "/models/list?cost=0",
            &["X-KaggleIngest-Cost: 0", "X-KaggleIngest-Cost: 0"],
        ),
    ];
    for (path, costs) in tries {
        let reply = send(proxy, path, &key, costs);
        assert_eq!((reply.status, reply.body.as_str()), (200, UPSTREAM_SAW));
    }
    assert_eq!(credits(&agent, proxy, &key), 8, "one credit each");
}

#[test]
fn nginx_with_a_config_that_passes_the_client_cost_still_charges_one() {
    if !program_present("nginx", "nginx-light") {
        return;
    }
    let server = TestServer::start_with(&["--verify-deny-status", "403"]);
    let dir = tempfile::tempdir().unwrap();
    let nginx = start_nginx_with(dir.path(), server.addr, &[(NGINX_PRICE, String::new())]);

    an_old_config_still_charges_one_credit(nginx.addr);
}

#[test]
fn caddy_with_a_config_that_passes_the_client_cost_still_charges_one() {
    if !program_present("caddy", "caddy") {
        return;
    }
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let caddy = start_caddy_with(dir.path(), server.addr, &[(CADDY_PRICE, String::new())]);

    an_old_config_still_charges_one_credit(caddy.addr);
}
