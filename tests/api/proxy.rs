//! The real thing in front of a real API: nginx with `contrib/nginx.conf`,
//! asking `/api/auth/verify` about every request, on loopback ports.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::helpers::{Reply, TestServer, client, free_port_addr};

/// The example's placeholder addresses, replaced by this test's ports.
const EXAMPLE_KAGGLEINGEST: &str = "127.0.0.1:8000";
const EXAMPLE_API: &str = "127.0.0.1:9000";
const EXAMPLE_LISTEN: &str = "127.0.0.1:8080";

/// nginx from Debian, installed once if this machine lacks it.
fn nginx_binary() -> &'static str {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if Command::new("nginx").arg("-v").output().is_ok() {
            return;
        }
        let installed = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light"])
            .status();
        assert!(
            matches!(installed, Ok(s) if s.success()),
            "nginx is needed for this test and could not be installed: run `apt-get install nginx-light` as root"
        );
    });
    "nginx"
}

/// nginx in the foreground, stopped when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nginx with the example site (ports swapped) plus a tiny upstream
/// that echoes what it was told about the caller.
fn start_nginx(dir: &Path, kaggleingest: SocketAddr) -> Nginx {
    let listen = free_port_addr();
    let api = free_port_addr();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/nginx.conf"))
            .unwrap();
    assert!(
        example.contains(EXAMPLE_KAGGLEINGEST)
            && example.contains(EXAMPLE_API)
            && example.contains(EXAMPLE_LISTEN)
    );
    let site = example
        .replace(EXAMPLE_KAGGLEINGEST, &kaggleingest.to_string())
        .replace(EXAMPLE_API, &api.to_string())
        .replace(EXAMPLE_LISTEN, &listen.to_string());
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
            return 200 "email=$http_x_kaggleingest_email tier=$http_x_kaggleingest_tier key=$http_x_api_key";
        }}
    }}
}}
"#
    );
    std::fs::write(dir.join("site.conf"), site).unwrap();
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting nginx");
    let mut nginx = Nginx {
        child,
        addr: listen,
    };
    // nginx announces nothing when ready: wait until its port accepts.
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(listen).is_err() {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            panic!("nginx exited with {status}; see {d}/error.log");
        }
        assert!(Instant::now() < deadline, "nginx did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx.addr = listen;
    nginx
}

fn get(agent: &ureq::Agent, addr: SocketAddr, key: Option<&str>) -> Reply {
    let mut request = agent.get(format!("http://{addr}/models/list"));
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    let mut response = request.call().expect("nginx answers");
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

#[test]
fn nginx_auth_request_lets_ten_paid_requests_through_and_refuses_the_eleventh() {
    let server = TestServer::start_with(&[
        "--verify-deny-status",
        "403",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let nginx = start_nginx(dir.path(), server.addr);
    let agent = client();
    // Signup through nginx, like a client would.
    let signup = agent
        .post(format!("http://{}/api/auth/signup", nginx.addr))
        .header("Content-Type", "application/json")
        .send(r#"{"email":"proxy@example.com","password":"securepassword123"}"#)
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let key = serde_json::from_str::<serde_json::Value>(&signup).unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();

    let no_key = get(&agent, nginx.addr, None);
    let bad_key = get(
        &agent,
        nginx.addr,
        Some("ki_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    );
    let paid: Vec<Reply> = (0..10)
        .map(|_| get(&agent, nginx.addr, Some(&key)))
        .collect();
    let eleventh = get(&agent, nginx.addr, Some(&key));

    assert_eq!(no_key.status, 401);
    assert_eq!(
        no_key.detail(),
        "Missing X-API-Key header. Get your key at https://kaggleingest.com/dashboard"
    );
    assert_eq!(bad_key.status, 403);
    assert_eq!(bad_key.detail(), "Invalid API key");
    for (i, reply) in paid.iter().enumerate() {
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        assert_eq!(
            reply.body, "email=proxy@example.com tier=free key=",
            "the upstream never sees the key"
        );
        assert_eq!(
            reply.header("x-kaggleingest-credits-remaining"),
            Some((9 - i).to_string().as_str())
        );
    }
    assert_eq!(
        eleventh.status, 403,
        "refused, never a 500: {}",
        eleventh.body
    );
    assert_eq!(eleventh.detail(), "Insufficient credits");
    assert_eq!(eleventh.header("x-kaggleingest-deny"), Some("credits"));
    // Verification is not reachable from outside.
    let direct = agent
        .get(format!("http://{}/api/auth/verify", nginx.addr))
        .header("X-API-Key", &key)
        .call()
        .unwrap();
    assert_eq!(direct.status(), 404);
    drop(nginx);
}
