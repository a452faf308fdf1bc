//! `TestServer`: the real binary on 127.0.0.1:0 with a fresh database in a
//! temp dir, plus a small HTTP client for talking to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::cluster;
use crate::contract::INSTRUCTIONS;

/// The store a suite's servers use: `tests/api` runs on SQLite files,
/// `tests/api_postgres` runs the same HTTP tests on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // each suite constructs one of them
pub enum Backend {
    Sqlite,
    Postgres,
}

/// This suite's store (each suite's `main.rs` says).
pub const BACKEND: Backend = crate::BACKEND;

/// True, with one line saying so, when this suite is not on SQLite: for
/// the tests about the SQLite file itself (its bytes, modes, WAL, backups,
/// migrations). Their PostgreSQL counterparts are in `postgres.rs`.
pub fn sqlite_only(about: &str) -> bool {
    if BACKEND == Backend::Sqlite {
        return false;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test} on {BACKEND:?}: it is about {about}"
    );
    true
}

/// The SQLite file of a test dir's servers.
const SQLITE_FILE: &str = "kaggleingest.db";
/// The file in a test dir that names its servers' `--db` (`use_database`).
const CHOSEN_DATABASE: &str = "database-url";

/// The `--db` of servers in `dir`: the one `use_database` chose, else its
/// SQLite file, or on PostgreSQL a database made for `dir` and chosen, so
/// that a server restarted in the same dir finds the same accounts.
pub fn database_in(dir: &Path) -> String {
    if let Ok(db) = std::fs::read_to_string(dir.join(CHOSEN_DATABASE)) {
        return db;
    }
    match BACKEND {
        Backend::Sqlite => dir
            .join(SQLITE_FILE)
            .to_str()
            .expect("temp dirs have UTF-8 paths")
            .to_owned(),
        Backend::Postgres => {
            let url = cluster::fresh_database("prefer");
            use_database(dir, &url);
            url
        }
    }
}

/// Makes `db` (a SQLite path or a PostgreSQL URL) the `--db` of every
/// server started in `dir` from now on.
pub fn use_database(dir: &Path, db: &str) {
    std::fs::write(dir.join(CHOSEN_DATABASE), db).expect("writing the chosen database");
}

/// Settings for tests, as environment so that flags can still override them:
/// the minimum bcrypt cost, so hundreds of signups take no time, and no
/// per-client limit, since every test client is 127.0.0.1.
pub const TEST_ENV: &[(&str, &str)] = &[
    ("KAGGLEINGEST_BCRYPT_COST", "4"),
    ("KAGGLEINGEST_SIGNUP_RATE_LIMIT", "0"),
    ("KAGGLEINGEST_ROTATE_RATE_LIMIT", "0"),
];
/// How long a server may take to print its address before a test fails.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after a signal before a test fails
/// (the grace period is 10 s by default).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `kaggleingest serve`, killed when dropped.
pub struct TestServer {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Temp dir holding the database; it is also the server's working dir.
    pub dir: Arc<tempfile::TempDir>,
    /// Its `--db`: the SQLite file's path or the PostgreSQL URL.
    pub db: String,
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    agent: ureq::Agent,
}

/// A response, fully read.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON; panics (failing the test) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts this is the 200 that shows a key once (documented body,
    /// `no-store`) and returns the key.
    pub fn issued_key(&self, message: &str) -> String {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        let body = self.json();
        assert_eq!(body["message"], message);
        assert_eq!(body["instructions"], INSTRUCTIONS);
        assert_eq!(body.as_object().unwrap().len(), 3, "no extra fields");
        let key = body["api_key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("ki_") && key.len() == 35, "{key}");
        assert!(key[3..].bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
        key
    }

    /// The `detail` string of an error body.
    pub fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail in {:?}", self.body))
            .to_owned()
    }
}

/// Names another `kaggleingest` binary to test instead of the one cargo
/// built with the tests, e.g. `target/release/kaggleingest`.
pub const TEST_BINARY: &str = "KAGGLEINGEST_TEST_BINARY";

/// A `kaggleingest` command with no inherited `KAGGLEINGEST_*` settings,
/// under the common umask 022: a runner's stricter umask must not make the
/// file-mode tests pass by itself.
pub fn command(dir: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    // Absolute: the command runs in `dir`, which would change what a
    // relative path names.
    let binary = std::env::var_os(TEST_BINARY).map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_kaggleingest")),
        |path| std::path::absolute(path).expect("the current directory is readable"),
    );
    let mut cmd = Command::new(binary);
    cmd.current_dir(dir);
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("KAGGLEINGEST_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `kaggleingest serve` in `dir` on `db`, on a free loopback port, with
/// `env`, its stderr piped (the log) and no stdin or stdout.
pub fn serve_command(dir: &Path, db: impl AsRef<std::ffi::OsStr>, env: &[(&str, &str)]) -> Command {
    let mut cmd = command(dir);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(db)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl TestServer {
    /// A server with the test settings on a fresh database.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// A server with the test settings and extra `serve` flags on a fresh database.
    pub fn start_with(extra: &[&str]) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("creating a temp dir"));
        Self::start_in(dir, extra, TEST_ENV)
    }

    /// A server in `dir` (reusing its database), with flags and env vars.
    pub fn start_in(
        dir: Arc<tempfile::TempDir>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        let db = database_in(dir.path());
        let mut cmd = serve_command(dir.path(), &db, env);
        cmd.args(extra);
        let mut child = cmd.spawn().expect("starting the server binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = channel();
        let reader = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = listening_addr(&line) {
                        let _ = ready_tx.send(addr);
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        };
        let addr = wait_for_address(&ready_rx, &mut child, &log);
        let agent = client();
        TestServer {
            addr,
            dir,
            db,
            child,
            log,
            reader: Some(reader),
            agent,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The SQLite file (see `sqlite_only`; `db` names either store).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join(SQLITE_FILE)
    }

    /// One value read straight from the database, as an operator's
    /// `sqlite3` or `psql` would: `sql` must mean the same on both.
    pub fn stored<T: std::str::FromStr>(&self, sql: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        let text = match BACKEND {
            Backend::Sqlite => {
                use rusqlite::types::Value;
                match db_value::<Value>(&self.db_path(), sql) {
                    Value::Integer(n) => n.to_string(),
                    Value::Real(x) => x.to_string(),
                    Value::Text(text) => text,
                    Value::Null => String::new(),
                    Value::Blob(bytes) => panic!("{sql} gave a blob ({} bytes)", bytes.len()),
                }
            }
            Backend::Postgres => cluster::psql(&self.db, sql),
        };
        text.parse()
            .unwrap_or_else(|e| panic!("{sql} gave {text:?}, not the type asked for: {e:?}"))
    }

    /// Another client holding the database's write lock (on PostgreSQL, a
    /// lock on the accounts table) until `release`.
    pub fn block_writes(&self) -> Blocker {
        match BACKEND {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(self.db_path()).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                Blocker::Sqlite(conn)
            }
            Backend::Postgres => Blocker::Postgres(cluster::Session::holding(
                &self.db,
                "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE",
            )),
        }
    }

    /// Makes every write the server tries fail, as on a full disk, or (with
    /// `refuse` false) work again. SQLite: the server's file-size limit at
    /// 0, so each write to its files fails (EFBIG). PostgreSQL: the database
    /// read-only by default, and the server's sessions ended so its pool
    /// reconnects under that default.
    pub fn refuse_writes(&self, refuse: bool) {
        match BACKEND {
            Backend::Sqlite => {
                let limit = libc::rlimit {
                    rlim_cur: if refuse { 0 } else { libc::RLIM_INFINITY },
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: prlimit reads the struct we pass and writes nothing
                // (the old limit's pointer is null).
                let set = unsafe {
                    libc::prlimit(
                        self.pid() as libc::pid_t,
                        libc::RLIMIT_FSIZE,
                        &limit,
                        std::ptr::null_mut(),
                    )
                };
                assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
            }
            Backend::Postgres => {
                let name = cluster::psql(&self.db, "SELECT current_database()");
                let setting = if refuse { "= on" } else { "TO DEFAULT" };
                cluster::psql(
                    &self.db,
                    // READ WRITE: this session starts read-only too, once refused.
                    &format!(
                        "BEGIN READ WRITE;
                         ALTER DATABASE {name} SET default_transaction_read_only {setting};
                         COMMIT"
                    ),
                );
                cluster::psql(
                    &self.db,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE datname = current_database() AND pid <> pg_backend_pid()",
                );
            }
        }
    }

    /// Runs `sql` straight on the database, from outside the server; the
    /// database's refusal as the error.
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        match BACKEND {
            Backend::Sqlite => rusqlite::Connection::open(self.db_path())
                .and_then(|conn| conn.execute_batch(sql))
                .map_err(|e| e.to_string()),
            Backend::Postgres => cluster::try_psql(&self.db, sql).map(drop),
        }
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST a JSON text with `Content-Type: application/json`.
    pub fn post_json(&self, path: &str, body: &str) -> Reply {
        let response = self
            .agent
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .send(body)
            .expect("request failed at the transport level");
        read_reply(response)
    }

    /// POST /api/auth/signup with this email and password.
    pub fn signup(&self, email: &str, password: &str) -> Reply {
        let body = serde_json::json!({"email": email, "password": password}).to_string();
        self.post_json("/api/auth/signup", &body)
    }

    /// Signs up and returns the new key, asserting the 200.
    pub fn signup_key(&self, email: &str) -> String {
        let reply = self.signup(email, "securepassword123");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["api_key"].as_str().unwrap().to_owned()
    }

    /// GET with an optional `X-API-Key`.
    pub fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let mut request = self.agent.get(self.url(path));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        read_reply(
            request
                .call()
                .expect("request failed at the transport level"),
        )
    }

    /// Any method, path, headers and body, sent as given on a fresh
    /// connection (`Connection: close`; a `Content-Length` when there is a
    /// body): for what a client library would tidy or refuse, such as odd
    /// methods, repeated headers or odd path spellings.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        raw_request(self.addr, &request_bytes(method, path, headers, body))
    }

    /// Bytes as they are, for what is not even a well-formed request
    /// (invalid header bytes, chunked bodies): prefer `request`.
    pub fn raw(&self, request: &[u8]) -> Reply {
        raw_request(self.addr, request)
    }

    /// Sends `signal` and waits for the exit; returns the status and the full log.
    pub fn stop_with(mut self, signal: libc::c_int) -> (ExitStatus, String) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the pid is our child.
        unsafe { libc::kill(pid, signal) };
        let status = wait_or_kill(&mut self.child, EXIT_TIMEOUT);
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader thread");
        }
        let log = self.log.lock().unwrap().clone();
        let status = status.unwrap_or_else(|| {
            panic!(
                "the server was still running {EXIT_TIMEOUT:?} after signal {signal}; log:\n{log}"
            )
        });
        (status, log)
    }

    /// SIGTERM, wait, and the full log.
    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_with(libc::SIGTERM)
    }

    /// The log so far (lines may still be in flight; `stop` gives all).
    pub fn log_so_far(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// See `TestServer::block_writes`.
pub enum Blocker {
    Sqlite(rusqlite::Connection),
    Postgres(cluster::Session),
}

impl Blocker {
    /// Commits, letting the blocked writes through.
    pub fn release(self) {
        match self {
            Blocker::Sqlite(conn) => conn.execute_batch("COMMIT").unwrap(),
            Blocker::Postgres(session) => session.commit(),
        }
    }
}

/// The Prometheus page of a server started with `--metrics-bind addr`.
pub fn metrics_text(addr: SocketAddr) -> String {
    client()
        .get(format!("http://{addr}/metrics"))
        .call()
        .expect("the metrics listener answers")
        .body_mut()
        .read_to_string()
        .expect("the metrics page is text")
}

/// Runs `f(0)`, ..., `f(n - 1)` on `n` threads released together by a
/// barrier, so the calls really race; the results come back in order.
pub fn all_at_once<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (f, barrier) = (&f, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a racing thread panicked"))
            .collect()
    })
}

/// One value read straight from a database file, as an operator's `sqlite3`
/// would: `PRAGMA integrity_check`, a count, a stored hash.
pub fn db_value<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> T {
    rusqlite::Connection::open(db)
        .and_then(|conn| conn.query_row(sql, [], |r| r.get(0)))
        .unwrap_or_else(|e| panic!("{sql} on {}: {e}", db.display()))
}

/// Set (by `.ci/run`) to make a test whose program is missing fail instead
/// of skipping.
pub const REQUIRE_PROGRAMS: &str = "KAGGLEINGEST_TEST_REQUIRE_PROGRAMS";

/// Whether `program` (from Debian's `package`) is on this machine. Tests
/// never install anything: without it the test says so in one line and
/// skips, unless `REQUIRE_PROGRAMS` is set, as in CI, where it fails.
pub fn program_present(program: &str, package: &str) -> bool {
    // Only whether it runs at all: `-v` is harmless to nginx and Caddy.
    program_answers(program, "-v", package)
}

/// As `program_present`, probing with `arg`: chromedriver given anything
/// but `--version` starts serving and never exits.
pub fn program_answers(program: &str, arg: &str, package: &str) -> bool {
    if Command::new(program).arg(arg).output().is_ok() {
        return true;
    }
    // Only a hint for the person reading the skip line: tests install
    // nothing, `.ci/run` installs every package they use.
    let hint = format!("it comes in Debian's `{package}` package, which .ci/run installs");
    assert!(
        std::env::var_os(REQUIRE_PROGRAMS).is_none(),
        "{program} is missing and {REQUIRE_PROGRAMS} is set: {hint}"
    );
    // Straight to stderr: libtest would swallow an `eprintln!` of a passing test.
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: {program} not found; {hint}"
    );
    false
}

/// Asserts that `head` answered `path` as `get` did, without the body.
pub fn assert_head_like_get(path: &str, get: &Reply, head: &Reply) {
    assert_eq!((get.status, head.status), (200, 200), "{path}");
    assert_eq!(head.body, "", "{path}");
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str()),
        "{path}"
    );
    assert_eq!(
        head.header("content-type"),
        get.header("content-type"),
        "{path}"
    );
}

/// A command's standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails cleanly: non-zero exit, the problem on the first line, no panic.
pub fn assert_clean_failure(out: &Output, expect: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "should fail: {err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.contains(expect),
        "first line {first:?} should name {expect:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

/// How many of `statuses` are `status`.
pub fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

/// A loopback address with a port that was free a moment ago.
pub fn free_port_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free loopback port")
}

/// An HTTP client that returns 4xx/5xx as replies rather than errors.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// One client of a spend storm: verifies with `key` at `addr`, one request
/// at a time, until its connection fails (the server was killed) or `stop`
/// is set, sending `()` on `acked` for every 200; returns how many it got.
/// Any other answer fails the test: the storm's key never runs out.
pub fn spend_until_cut_off(
    addr: SocketAddr,
    key: &str,
    acked: &std::sync::mpsc::Sender<()>,
    stop: &std::sync::atomic::AtomicBool,
) -> i64 {
    let agent = client();
    let mut count = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let reply = agent
            .get(format!("http://{addr}/api/auth/verify"))
            .header("X-API-Key", key)
            .call();
        match reply {
            Ok(r) if r.status() == 200 => {
                count += 1;
                let _ = acked.send(());
            }
            Ok(r) => panic!("a spend was refused: {}", r.status()),
            Err(_) => break,
        }
    }
    count
}

/// A signup that may fail at the transport level (the server being killed).
pub fn try_signup(agent: &ureq::Agent, addr: SocketAddr, email: &str) -> Option<Reply> {
    let body = serde_json::json!({"email": email, "password": "securepassword123"}).to_string();
    agent
        .post(format!("http://{addr}/api/auth/signup"))
        .header("Content-Type", "application/json")
        .send(body)
        .ok()
        .map(read_reply)
}

/// The address in a server's `listening on http://ADDR` startup line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on http://").nth(1)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Waits for `child` to exit, killing it once `within` has passed: `None`
/// when it had to be killed, so that a process that missed a signal fails
/// its test instead of hanging the whole suite.
pub fn wait_or_kill(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let pid = child.id() as libc::pid_t;
    let (exited, exit) = channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = exit.recv_timeout(within) == Err(RecvTimeoutError::Timeout);
        if late {
            // SAFETY: kill has no memory-safety preconditions. The child is
            // not reaped until this thread is joined, so the pid is still its.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        late
    });
    // Waits for the exit but leaves the child a zombie (WNOWAIT), so that
    // the watchdog can never signal a pid the system has handed on.
    // SAFETY: siginfo_t is plain data, for which all zeroes are valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `info` is a valid siginfo_t for waitid to fill; waiting
        // with WNOWAIT changes nothing that `child` keeps track of.
        let waited = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        let error = std::io::Error::last_os_error();
        if waited == 0 {
            break;
        }
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "waitid: {error}"
        );
    }
    let _ = exited.send(());
    let late = watchdog.join().expect("the watchdog thread");
    let status = child.wait().expect("reaping the child");
    // Late and killed: a child that exited by itself just then was not.
    let killed = late && status.signal() == Some(libc::SIGKILL);
    (!killed).then_some(status)
}

fn wait_for_address(
    rx: &Receiver<SocketAddr>,
    child: &mut Child,
    log: &Mutex<String>,
) -> SocketAddr {
    match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            panic!("server did not start; log:\n{}", log.lock().unwrap());
        }
    }
}

fn read_reply(mut response: ureq::http::Response<ureq::Body>) -> Reply {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .read_to_string()
        .expect("reading the response body");
    Reply {
        status,
        headers,
        body,
    }
}

/// An HTTP/1.1 request as `TestServer::request` sends it.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

/// Writes `request` verbatim, reads until the server closes, parses status,
/// headers and (content-length) body. For requests a normal client refuses
/// to send: bad headers, chunked bodies, odd methods.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("setting a read timeout");
    // The server may answer (413) and close before taking the whole body.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}
