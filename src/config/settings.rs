//! Every setting, declared once: type, default, range, environment variable,
//! flag and documentation. The flags, the layering, `config show`, `config
//! example` (the shipped `kaggleingest.toml`) and the README's settings table
//! all come from here, and tests fail when either file drifts from it.
//! Adding a setting: one entry below, then `kaggleingest config example >
//! kaggleingest.toml` and the README table the failing test prints.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{LogFormat, SignupMode};
use crate::client_ip::Cidr;
use crate::db::Location;
use crate::password;

settings! {
    /// Address to listen on; port 0 picks a free port (the startup line shows it).
    bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8000)),
        env "KAGGLEINGEST_BIND", value "ADDR";

    /// SQLite file (created on first start) or postgres:// URL of a shared database.
    ///
    /// A path is a SQLite file, created with its schema on first start. A
    /// postgres://USER:PASSWORD@HOST:PORT/DBNAME?sslmode=... (or
    /// postgresql://) URL is a PostgreSQL database that several nodes can
    /// share; its tables are created on first start. sslmode is libpq's:
    /// disable, prefer (the default), require, verify-ca, verify-full, with
    /// sslrootcert=FILE for a CA other than the system's.
    db: Location = Location::Sqlite(PathBuf::from("kaggleingest.db")),
        env "KAGGLEINGEST_DB", value "PATH|URL";

    /// bcrypt cost for new password hashes; below 10 is for tests only.
    ///
    /// Each +1 doubles the work; 12 takes about a quarter of a second per
    /// signup. Accounts hashed at an older cost keep working.
    bcrypt_cost: u32 = password::DEFAULT_COST,
        env "KAGGLEINGEST_BCRYPT_COST", value "N", range 4..=31;

    /// Threads computing bcrypt hashes; 0 means one per CPU.
    hash_workers: usize = 0,
        env "KAGGLEINGEST_HASH_WORKERS", value "N", range 0..=1024;

    /// Signups that may wait for a hashing thread before new ones get 503.
    ///
    /// Beyond it, new signups get 503 "Server busy, retry shortly" at once
    /// instead of piling up.
    hash_queue: usize = 64,
        env "KAGGLEINGEST_HASH_QUEUE", value "N", range 0..=1_000_000;

    /// Signups per client IP per minute; 0 turns the limit off.
    ///
    /// Over it: 429 "Rate limit exceeded: N per 1 minute" with Retry-After.
    /// IPv6 clients count per /64.
    signup_rate_limit: u32 = 10,
        env "KAGGLEINGEST_SIGNUP_RATE_LIMIT", value "N", range 0..=1_000_000;

    /// Key rotations per client IP per minute; 0 turns the limit off.
    ///
    /// Each rotation is a password guess: this bounds guessing per client.
    /// Over it: 429 as for signups.
    rotate_rate_limit: u32 = 10,
        env "KAGGLEINGEST_ROTATE_RATE_LIMIT", value "N", range 0..=1_000_000;

    /// Proxies whose X-Forwarded-For is believed (CIDR ranges or addresses).
    ///
    /// Empty: the client is always the TCP peer, so a spoofed header changes
    /// nothing. Behind nginx/Caddy on the same host: ["127.0.0.1", "::1"].
    /// Comma-separated on the command line and in the environment.
    trusted_proxies: Vec<Cidr> = Vec::new(),
        env "KAGGLEINGEST_TRUSTED_PROXIES", value "CIDRS", delimiter ',';

    /// Open connections at most; beyond it new ones wait in the kernel's backlog.
    max_connections: usize = 4096,
        env "KAGGLEINGEST_MAX_CONNECTIONS", value "N", range 1..=1_000_000;

    /// Open connections at most from one client address; 0 turns the cap off.
    ///
    /// An IPv6 /64 counts as one address. One more connection gets 503 and
    /// is closed, so one client cannot take every connection. Addresses in
    /// trusted_proxies are exempt.
    max_connections_per_ip: usize = 256,
        env "KAGGLEINGEST_MAX_CONNECTIONS_PER_IP", value "N", range 0..=1_000_000;

    /// Seconds a client has to send request headers, and again its body.
    ///
    /// An idle keep-alive connection is closed after the same time.
    client_timeout_secs: u64 = 10,
        env "KAGGLEINGEST_CLIENT_TIMEOUT_SECS", value "SECS", range 1..=3600;

    /// Seconds in-flight requests may run after SIGINT/SIGTERM.
    shutdown_grace_secs: u64 = 10,
        env "KAGGLEINGEST_SHUTDOWN_GRACE_SECS", value "SECS", range 0..=3600;

    /// Status of /api/auth/verify when credits run out: 402, or 403 for nginx.
    ///
    /// 402 {"detail": "Insufficient credits"}, or 403 with the same body and
    /// header "X-KaggleIngest-Deny: credits". nginx auth_request turns every
    /// status but 401/403 into a 500, so set 403 behind nginx.
    verify_deny_status: u16 = 402,
        env "KAGGLEINGEST_VERIFY_DENY_STATUS", value "STATUS";

    /// Price each verify by the X-KaggleIngest-Cost header; off, each costs 1.
    ///
    /// 0 in the header only checks the key. Turn it on only when your proxy
    /// sets that header on every auth subrequest, replacing the client's
    /// (both files in contrib/ do): a proxy that passes the client's header
    /// on would let clients choose their own price.
    verify_cost_header: bool = false,
        env "KAGGLEINGEST_VERIFY_COST_HEADER", value "true|false";

    /// "open", or "closed" to refuse public signups.
    ///
    /// Closed: POST /api/auth/signup answers 403 "Signups are disabled on
    /// this server"; admins still create accounts with `kaggleingest user
    /// create EMAIL`.
    signups: SignupMode = SignupMode::Open,
        env "KAGGLEINGEST_SIGNUPS", value "open|closed";

    /// Only these email domains may sign up; empty allows every domain.
    ///
    /// Exact match, case-insensitive; a Unicode domain matches both its
    /// spellings. Comma-separated on the command line and in the environment.
    signup_email_domains: Vec<String> = Vec::new(),
        env "KAGGLEINGEST_SIGNUP_EMAIL_DOMAINS", value "DOMAINS", delimiter ',';

    /// Serve the signup page at GET /; false for API-only deployments.
    ///
    /// The page signs people up, checks and replaces keys through the API.
    /// Off, GET / answers the JSON 404 like any unknown path.
    web_page: bool = true,
        env "KAGGLEINGEST_WEB_PAGE", value "true|false";

    /// Serve Prometheus metrics on this address at /metrics; unset: off.
    metrics_bind: Option<SocketAddr> = None,
        env "KAGGLEINGEST_METRICS_BIND", value "ADDR", example "\"127.0.0.1:9090\"";

    /// Log line format: "text", or "json" for one object per line.
    log_format: LogFormat = LogFormat::Text,
        env "KAGGLEINGEST_LOG_FORMAT", value "text|json";

    /// Log filter in RUST_LOG syntax, e.g. "warn" or "info,kaggleingest=debug".
    log_level: String = "info".to_owned(),
        env "KAGGLEINGEST_LOG_LEVEL", value "FILTER";
}
