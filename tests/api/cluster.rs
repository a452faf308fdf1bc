//! A throwaway PostgreSQL cluster for the PostgreSQL suite: one per test
//! process, in a temp dir, on a free loopback port, with TLS on (a CA and a
//! server certificate made for it here), and a fresh database for each
//! test server. `initdb` refuses to run as root, so as root the cluster
//! runs as the `postgres` system user.
//!
//! The cluster lives as long as the test process: a shell holds it, reading
//! a pipe whose other end only this process has; when the process ends, in
//! any way, the pipe closes and the shell stops the cluster and deletes it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::helpers::{REQUIRE_PROGRAMS, free_port_addr};

/// The running cluster.
pub struct Cluster {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The directory of PostgreSQL's programs (`psql`, `pg_dump`, ...).
    pub bin: PathBuf,
    /// The CA that signed the server certificate (PEM), for `sslrootcert`.
    pub ca: PathBuf,
    /// A CA that signed nothing here, to see verification fail.
    pub other_ca: PathBuf,
    /// Held open: closing it stops the cluster (see the module docs).
    _stop: Mutex<ChildStdin>,
    _supervisor: Mutex<Child>,
}

/// The superuser's password: the cluster checks it (SCRAM), so a test that
/// looks for it in logs and messages looks for something real. Its `?`, `@`
/// and `/` must be percent-encoded in a URL, as `PASSWORD_IN_URL` is.
pub const PASSWORD: &str = "s3cr?t@pg/pw";
const PASSWORD_IN_URL: &str = "s3cr%3Ft%40pg%2Fpw";

/// The database every test may connect to as the superuser, e.g. to create
/// its own.
const ADMIN_DB: &str = "postgres";
/// A database only TLS connections may use (see `pg_hba.conf` below).
pub const TLS_ONLY_DB: &str = "tls_only";

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The cluster, started on first use. Without PostgreSQL on this machine
/// the whole PostgreSQL suite is skipped, said in one line (and the process
/// ends, successfully); under `REQUIRE_PROGRAMS`, as in CI, it fails.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        // The TLS certificates are made with openssl's command line.
        if !crate::helpers::program_present("openssl", "openssl") {
            std::process::exit(0);
        }
        let Some(bin) = postgres_bin() else {
            let hint = "it comes in Debian's `postgresql` package, which .ci/run installs";
            assert!(
                std::env::var_os(REQUIRE_PROGRAMS).is_none(),
                "PostgreSQL is missing and {REQUIRE_PROGRAMS} is set: {hint}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "skipped the PostgreSQL suite: no /usr/lib/postgresql/*/bin/initdb; {hint}"
            );
            std::process::exit(0);
        };
        start(bin)
    })
}

/// A URL of a new, empty database of its own, with `sslmode` as given.
pub fn fresh_database(sslmode: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let cluster = cluster();
    let name = format!(
        "k{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    cluster.psql(ADMIN_DB, &format!("CREATE DATABASE {name}"));
    cluster.url(&name, sslmode)
}

impl Cluster {
    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/DB?sslmode=...`
    pub fn url(&self, db: &str, sslmode: &str) -> String {
        self.url_to(
            &format!("127.0.0.1:{}", self.port),
            db,
            &format!("sslmode={sslmode}"),
        )
    }

    /// `postgres://postgres:PASSWORD@HOST/DB?QUERY`
    pub fn url_to(&self, host: &str, db: &str, query: &str) -> String {
        format!("postgres://postgres:{PASSWORD_IN_URL}@{host}/{db}?{query}")
    }

    /// Runs `sql` on database `db` with psql; see `psql`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let url = self.url(db, "disable");
        run_psql(&self.bin, &url, sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }
}

/// Runs `sql` with psql on the database at `url`, as an operator would;
/// its output, unaligned, tuples only.
pub fn psql(url: &str, sql: &str) -> String {
    try_psql(url, sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
}

/// As `psql`, with PostgreSQL's refusal as the error.
pub fn try_psql(url: &str, sql: &str) -> Result<String, String> {
    run_psql(&cluster().bin, url, sql)
}

fn run_psql(bin: &Path, url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(bin.join("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(url)
        .output()
        .expect("running psql");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout)
            .expect("psql prints UTF-8")
            .trim_end()
            .to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// PostgreSQL's program directory, the newest version installed.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (then the cluster runs as `postgres`).
fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// As root, `runuser -u postgres -- program`; else the program itself.
fn as_postgres(program: &Path) -> Command {
    if as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(bin: PathBuf) -> Cluster {
    let dir = tempfile::Builder::new()
        .prefix("kaggleingest-pg-")
        .tempdir()
        .expect("a temp dir for the cluster")
        .keep();
    if as_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&dir);
                c
            },
            "chown the cluster dir",
        );
    }
    let data = dir.join("data");
    let password_file = dir.join("password");
    std::fs::write(&password_file, PASSWORD).expect("writing the password file");
    let mut initdb = as_postgres(&bin.join("initdb"));
    initdb
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .args(["--no-sync", "-E", "UTF8", "--locale=C", "--pwfile"])
        .arg(&password_file)
        .arg("-D")
        .arg(&data);
    run(initdb, "initdb");
    let (ca, other_ca) = certificates(&dir);
    std::fs::write(
        data.join("pg_hba.conf"),
        format!(
            "hostssl {TLS_ONLY_DB} all 127.0.0.1/32 scram-sha-256\n\
             hostnossl {TLS_ONLY_DB} all 127.0.0.1/32 reject\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             local all all trust\n"
        ),
    )
    .expect("writing pg_hba.conf");
    let port = free_port_addr().port();
    let options = format!(
        "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c max_connections=300 \
         -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
        dir = dir.display()
    );
    // The supervisor: start (waiting until it accepts connections), say so,
    // wait for our end of the pipe to close, stop, delete.
    let script = r#"
        "$1/pg_ctl" -D "$2/data" -o "$3" -l "$2/log" -w -s start >/dev/null || { cat "$2/log"; exit 1; }
        echo started
        read -r _
        "$1/pg_ctl" -D "$2/data" -m immediate -s stop >/dev/null 2>&1
        rm -rf "$2"
    "#;
    let mut supervisor = as_postgres(Path::new("/bin/sh"))
        .args(["-c", script, "supervisor"])
        .arg(&bin)
        .arg(&dir)
        .arg(&options)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the cluster's supervisor");
    let stop = supervisor.stdin.take().expect("piped");
    let mut line = String::new();
    BufReader::new(supervisor.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("reading the supervisor");
    assert_eq!(line.trim(), "started", "the cluster did not start: {line}");
    let cluster = Cluster {
        port,
        bin,
        ca,
        other_ca,
        _stop: Mutex::new(stop),
        _supervisor: Mutex::new(supervisor),
    };
    cluster.psql(ADMIN_DB, &format!("CREATE DATABASE {TLS_ONLY_DB}"));
    cluster
}

/// A CA, a server certificate it signs for 127.0.0.1 and localhost, and a
/// second CA; returns the two CA files.
fn certificates(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir);
        run(cmd, &format!("openssl {}", args.join(" ")));
    };
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=kaggleingest test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("writing the extensions file");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    if as_root() {
        let mut chown = Command::new("chown");
        chown
            .args(["postgres:postgres", "server.key", "server.crt"])
            .current_dir(dir);
        run(chown, "chown the server key");
    }
    let mut chmod = Command::new("chmod");
    chmod.args(["600", "server.key"]).current_dir(dir);
    run(chmod, "chmod the server key");
    (dir.join("ca.crt"), dir.join("other-ca.crt"))
}

/// A psql session inside an open transaction, for holding locks.
pub struct Session(Child);

impl Session {
    /// Begins a transaction on `url`, runs `sql` in it, and returns once
    /// that statement has run.
    pub fn holding(url: &str, sql: &str) -> Session {
        let mut child = Command::new(cluster().bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting psql");
        let stdin = child.stdin.as_mut().expect("piped");
        writeln!(stdin, "BEGIN;\n{sql};\n\\echo holding").expect("writing to psql");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped"))
            .read_line(&mut line)
            .expect("reading psql");
        assert_eq!(line.trim(), "holding", "psql did not run {sql:?}");
        Session(child)
    }

    /// Commits and ends the session.
    pub fn commit(mut self) {
        let stdin = self.0.stdin.as_mut().expect("piped");
        writeln!(stdin, "COMMIT;\n\\q").expect("writing to psql");
        assert!(self.0.wait().expect("waiting for psql").success());
    }
}
