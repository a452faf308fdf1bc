//! Settings: one struct of optional overrides that is both the command-line
//! flags (with their `KAGGLEINGEST_*` environment variables) and the TOML file,
//! merged once into `Settings` with precedence flags > env > file > defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::client_ip::Cidr;
use crate::password;

/// The commented example config file, as `kaggleingest config example` prints it.
pub const EXAMPLE: &str = include_str!("../kaggleingest.toml");

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "kaggleingest.toml";

/// Every setting, each optional. clap fills it from flags and environment;
/// serde fills it from the config file, refusing unknown keys. Field names are
/// the file keys; flags are the same names in kebab-case.
#[derive(Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Address to listen on [default: 127.0.0.1:8000]
    #[arg(long, global = true, env = "KAGGLEINGEST_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,

    /// SQLite database file, created on first start [default: ./kaggleingest.db]
    #[arg(long, global = true, env = "KAGGLEINGEST_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// bcrypt cost for new passwords, 4-31; below 10 only for tests [default: 12]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_BCRYPT_COST",
        value_name = "N"
    )]
    pub bcrypt_cost: Option<u32>,

    /// Threads that compute bcrypt hashes [default: number of CPUs]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_HASH_WORKERS",
        value_name = "N"
    )]
    pub hash_workers: Option<usize>,

    /// Signups that may wait for a hashing thread before new ones get 503 [default: 64]
    #[arg(long, global = true, env = "KAGGLEINGEST_HASH_QUEUE", value_name = "N")]
    pub hash_queue: Option<usize>,

    /// Signups (and key rotations) per client IP per minute; 0 turns the limit off [default: 10]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_SIGNUP_RATE_LIMIT",
        value_name = "N"
    )]
    pub signup_rate_limit: Option<u32>,

    /// Proxies whose X-Forwarded-For is believed, comma-separated CIDRs or addresses [default: none]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_TRUSTED_PROXIES",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<Cidr>>,

    /// Open connections at most; beyond it new ones wait in the kernel's backlog [default: 4096]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_MAX_CONNECTIONS",
        value_name = "N"
    )]
    pub max_connections: Option<usize>,

    /// Open connections at most from one client address (an IPv6 /64 counts as one); 0 turns the cap off; trusted proxies are exempt [default: 256]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_MAX_CONNECTIONS_PER_IP",
        value_name = "N"
    )]
    pub max_connections_per_ip: Option<usize>,

    /// Seconds a client has to send request headers, and again its body; also the idle keep-alive time [default: 10]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_CLIENT_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub client_timeout_secs: Option<u64>,

    /// Seconds in-flight requests may run after SIGINT/SIGTERM [default: 10]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_SHUTDOWN_GRACE_SECS",
        value_name = "SECS"
    )]
    pub shutdown_grace_secs: Option<u64>,

    /// Status for /api/auth/verify when credits run out: 402, or 403 for nginx auth_request [default: 402]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_VERIFY_DENY_STATUS",
        value_name = "STATUS"
    )]
    pub verify_deny_status: Option<u16>,

    /// Read the price of a verify from X-KaggleIngest-Cost; only when your proxy sets that header on every auth subrequest [default: false]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_VERIFY_COST_HEADER",
        value_name = "true|false"
    )]
    pub verify_cost_header: Option<bool>,

    /// "open", or "closed" to refuse public signups (admins can still create accounts) [default: open]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_SIGNUPS",
        value_name = "open|closed"
    )]
    pub signups: Option<SignupMode>,

    /// Only these email domains may sign up, comma-separated; empty allows all [default: empty]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_SIGNUP_EMAIL_DOMAINS",
        value_name = "DOMAINS",
        value_delimiter = ','
    )]
    pub signup_email_domains: Option<Vec<String>>,

    /// Prometheus metrics listener, e.g. 127.0.0.1:9090; off when unset [default: off]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_METRICS_BIND",
        value_name = "ADDR"
    )]
    pub metrics_bind: Option<SocketAddr>,

    /// Log line format: "text" or "json" [default: text]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_LOG_FORMAT",
        value_name = "text|json"
    )]
    pub log_format: Option<LogFormat>,

    /// Log filter in RUST_LOG syntax, e.g. "info" or "kaggleingest=debug" [default: info]
    #[arg(
        long,
        global = true,
        env = "KAGGLEINGEST_LOG_LEVEL",
        value_name = "FILTER"
    )]
    pub log_level: Option<String>,
}

/// Where settings come from besides the overrides: the config file location.
#[derive(Args, Debug, Default, Clone)]
pub struct ConfigArgs {
    /// TOML config file [default: ./kaggleingest.toml when it exists]
    #[arg(long, global = true, env = "KAGGLEINGEST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub overrides: Overrides,
}

/// Whether the public signup endpoint accepts new accounts.
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone may sign up.
    Open,
    /// Only admins create accounts (`kaggleingest user create`).
    Closed,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The effective settings after the merge. Field names are the config keys.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// SQLite database file.
    pub db: PathBuf,
    /// bcrypt cost for new hashes.
    pub bcrypt_cost: u32,
    /// Hashing threads.
    pub hash_workers: usize,
    /// Waiting signups before shedding load.
    pub hash_queue: usize,
    /// Signups per client per minute; 0 = off.
    pub signup_rate_limit: u32,
    /// Proxies allowed to name the client in X-Forwarded-For.
    pub trusted_proxies: Vec<Cidr>,
    /// Concurrent connections at most.
    pub max_connections: usize,
    /// Concurrent connections at most per client address; 0 = no cap.
    pub max_connections_per_ip: usize,
    /// Header/body/idle timeout per connection, seconds.
    pub client_timeout_secs: u64,
    /// Drain time at shutdown, seconds.
    pub shutdown_grace_secs: u64,
    /// 402 or 403 for verify without enough credits.
    pub verify_deny_status: u16,
    /// Price verifies by `X-KaggleIngest-Cost`; off, every verify costs 1.
    pub verify_cost_header: bool,
    /// Public signups open or closed.
    pub signups: SignupMode,
    /// Allowed email domains for public signups (IDNA ASCII, lowercase); empty = all.
    pub signup_email_domains: Vec<String>,
    /// Metrics listener, if enabled.
    pub metrics_bind: Option<SocketAddr>,
    /// Log line format.
    pub log_format: LogFormat,
    /// tracing filter directive.
    pub log_level: String,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag or a `KAGGLEINGEST_*` variable (clap tells which).
    FlagOrEnv,
    /// The config file.
    File,
    /// The built-in default.
    Default,
}

/// The source of each setting, by key.
pub type Sources = Vec<(&'static str, Source)>;

/// Every problem found in the configuration, reported together.
#[derive(Debug)]
pub struct ConfigError(Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Merges flags/env (already in `args`) over the config file over defaults.
    pub fn load(args: &ConfigArgs) -> Result<Settings, ConfigError> {
        Self::load_with_sources(args).map(|(settings, _)| settings)
    }

    /// As `load`, also telling where each value came from.
    pub fn load_with_sources(args: &ConfigArgs) -> Result<(Settings, Sources), ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Overrides::default(),
        };
        let cli = args.overrides.clone();
        let mut sources = Sources::new();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let settings = Settings {
            bind: pick(&mut sources, "bind", cli.bind, file.bind)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000))),
            db: pick(&mut sources, "db", cli.db, file.db)
                .unwrap_or_else(|| "kaggleingest.db".into()),
            bcrypt_cost: pick(
                &mut sources,
                "bcrypt_cost",
                cli.bcrypt_cost,
                file.bcrypt_cost,
            )
            .unwrap_or(password::DEFAULT_COST),
            hash_workers: pick(
                &mut sources,
                "hash_workers",
                cli.hash_workers,
                file.hash_workers,
            )
            .unwrap_or(cpus),
            hash_queue: pick(&mut sources, "hash_queue", cli.hash_queue, file.hash_queue)
                .unwrap_or(64),
            signup_rate_limit: pick(
                &mut sources,
                "signup_rate_limit",
                cli.signup_rate_limit,
                file.signup_rate_limit,
            )
            .unwrap_or(10),
            trusted_proxies: pick(
                &mut sources,
                "trusted_proxies",
                cli.trusted_proxies,
                file.trusted_proxies,
            )
            .unwrap_or_default(),
            max_connections: pick(
                &mut sources,
                "max_connections",
                cli.max_connections,
                file.max_connections,
            )
            .unwrap_or(4096),
            max_connections_per_ip: pick(
                &mut sources,
                "max_connections_per_ip",
                cli.max_connections_per_ip,
                file.max_connections_per_ip,
            )
            .unwrap_or(256),
            client_timeout_secs: pick(
                &mut sources,
                "client_timeout_secs",
                cli.client_timeout_secs,
                file.client_timeout_secs,
            )
            .unwrap_or(10),
            shutdown_grace_secs: pick(
                &mut sources,
                "shutdown_grace_secs",
                cli.shutdown_grace_secs,
                file.shutdown_grace_secs,
            )
            .unwrap_or(10),
            verify_deny_status: pick(
                &mut sources,
                "verify_deny_status",
                cli.verify_deny_status,
                file.verify_deny_status,
            )
            .unwrap_or(402),
            verify_cost_header: pick(
                &mut sources,
                "verify_cost_header",
                cli.verify_cost_header,
                file.verify_cost_header,
            )
            .unwrap_or(false),
            signups: pick(&mut sources, "signups", cli.signups, file.signups)
                .unwrap_or(SignupMode::Open),
            signup_email_domains: pick(
                &mut sources,
                "signup_email_domains",
                cli.signup_email_domains,
                file.signup_email_domains,
            )
            .unwrap_or_default()
            .iter()
            .map(|d| {
                // Addresses compare by their IDNA ASCII domain, so the list
                // must hold that form too (`bücher.de` as `xn--bcher-kva.de`);
                // a name IDNA refuses cannot match any address anyway.
                let d = d.trim().trim_start_matches('@');
                crate::email::ascii_domain(d).unwrap_or_else(|| d.to_lowercase())
            })
            .filter(|d| !d.is_empty())
            .collect(),
            metrics_bind: pick(
                &mut sources,
                "metrics_bind",
                cli.metrics_bind,
                file.metrics_bind,
            ),
            log_format: pick(&mut sources, "log_format", cli.log_format, file.log_format)
                .unwrap_or(LogFormat::Text),
            log_level: pick(&mut sources, "log_level", cli.log_level, file.log_level)
                .unwrap_or_else(|| "info".into()),
        };
        settings.validate()?;
        Ok((settings, sources))
    }

    /// Every setting as `(key, TOML value)`, in the order of `Sources`;
    /// `None` for a setting that is off.
    pub fn entries(&self) -> Vec<(&'static str, Option<String>)> {
        let quoted = |s: &dyn fmt::Display| format!("{:?}", s.to_string());
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        let set = |key, value| (key, Some(value));
        vec![
            set("bind", quoted(&self.bind)),
            set("db", quoted(&self.db.display())),
            set("bcrypt_cost", self.bcrypt_cost.to_string()),
            set("hash_workers", self.hash_workers.to_string()),
            set("hash_queue", self.hash_queue.to_string()),
            set("signup_rate_limit", self.signup_rate_limit.to_string()),
            set(
                "trusted_proxies",
                list(self.trusted_proxies.iter().map(|c| quoted(c)).collect()),
            ),
            set("max_connections", self.max_connections.to_string()),
            set(
                "max_connections_per_ip",
                self.max_connections_per_ip.to_string(),
            ),
            set("client_timeout_secs", self.client_timeout_secs.to_string()),
            set("shutdown_grace_secs", self.shutdown_grace_secs.to_string()),
            set("verify_deny_status", self.verify_deny_status.to_string()),
            set("verify_cost_header", self.verify_cost_header.to_string()),
            set(
                "signups",
                quoted(&format!("{:?}", self.signups).to_lowercase()),
            ),
            set(
                "signup_email_domains",
                list(
                    self.signup_email_domains
                        .iter()
                        .map(|d| quoted(d))
                        .collect(),
                ),
            ),
            ("metrics_bind", self.metrics_bind.map(|a| quoted(&a))),
            set(
                "log_format",
                quoted(&format!("{:?}", self.log_format).to_lowercase()),
            ),
            set("log_level", quoted(&self.log_level)),
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        // Every number has a range: an absurd value (a timeout of 2^64
        // seconds overflows the clock) must stop the start, not a request.
        // The README's settings table states the same ranges.
        let n = |v: usize| v as u64;
        let numbers = [
            (
                "bcrypt_cost",
                u64::from(self.bcrypt_cost),
                u64::from(password::MIN_COST)..=u64::from(password::MAX_COST),
            ),
            ("hash_workers", n(self.hash_workers), 1..=1024),
            ("hash_queue", n(self.hash_queue), 0..=1_000_000),
            (
                "signup_rate_limit",
                self.signup_rate_limit.into(),
                0..=1_000_000,
            ),
            ("max_connections", n(self.max_connections), 1..=1_000_000),
            (
                "max_connections_per_ip",
                n(self.max_connections_per_ip),
                0..=1_000_000,
            ),
            ("client_timeout_secs", self.client_timeout_secs, 1..=3600),
            ("shutdown_grace_secs", self.shutdown_grace_secs, 0..=3600),
        ];
        for (key, value, range) in numbers {
            if !range.contains(&value) {
                problems.push(format!(
                    "{key} = {value} is out of range ({}-{})",
                    range.start(),
                    range.end()
                ));
            }
        }
        if ![402, 403].contains(&self.verify_deny_status) {
            problems.push(format!(
                "verify_deny_status = {}: must be 402 or 403",
                self.verify_deny_status
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            problems.push(format!(
                "log_level = {:?} is not a valid filter: {e}",
                self.log_level
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }
}

/// `kaggleingest config show`: every effective setting as TOML, each with
/// where it came from. `matches` tells a flag from an environment variable.
pub fn show(settings: &Settings, sources: &Sources, matches: &clap::ArgMatches) -> String {
    let mut leaf = matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    let mut out = String::from("# Effective settings; precedence: flag > env > file > default.\n");
    for ((key, value), (_, source)) in settings.entries().into_iter().zip(sources) {
        let origin = match (source, leaf.value_source(key)) {
            (Source::FlagOrEnv, Some(clap::parser::ValueSource::EnvVariable)) => {
                format!("env KAGGLEINGEST_{}", key.to_uppercase())
            }
            (Source::FlagOrEnv, _) => format!("flag --{}", key.replace('_', "-")),
            (Source::File, _) => "config file".into(),
            (Source::Default, _) => "default".into(),
        };
        let line = match value {
            Some(value) => format!("{key} = {value}"),
            None => format!("# {key} is off"),
        };
        out.push_str(&format!("{line:<44} # {origin}\n"));
    }
    out
}

/// The flag/env value if given, else the file's, recording which it was.
fn pick<T>(sources: &mut Sources, key: &'static str, cli: Option<T>, file: Option<T>) -> Option<T> {
    let source = match (&cli, &file) {
        (Some(_), _) => Source::FlagOrEnv,
        (None, Some(_)) => Source::File,
        (None, None) => Source::Default,
    };
    sources.push((key, source));
    cli.or(file)
}

/// Reads the TOML file, reporting every bad key at once rather than the first.
fn read_file(path: &Path) -> Result<Overrides, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(vec![format!("cannot read config file {shown}: {e}")]))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError(vec![format!("config file {shown} is not valid TOML: {e}")]))?;
    let mut problems = Vec::new();
    for (key, value) in &table {
        let mut single = toml::Table::new();
        single.insert(key.clone(), value.clone());
        if let Err(e) = Overrides::deserialize(toml::Value::Table(single)) {
            problems.push(format!("config file {shown}: key `{key}`: {}", e.message()));
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }
    Overrides::deserialize(toml::Value::Table(table))
        .map_err(|e| ConfigError(vec![format!("config file {shown}: {}", e.message())]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn args(config: PathBuf) -> ConfigArgs {
        ConfigArgs {
            config: Some(config),
            overrides: Overrides::default(),
        }
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let (_dir, path) = file_with("bcrypt_cost = 10\nhash_queue = 5\n");
        let mut a = args(path);
        a.overrides.bcrypt_cost = Some(11);
        let s = Settings::load(&a).unwrap();
        assert_eq!(s.bcrypt_cost, 11);
        assert_eq!(s.hash_queue, 5);
        assert_eq!(s.bind.to_string(), "127.0.0.1:8000");
    }

    #[test]
    fn every_bad_key_is_reported_together() {
        let (_dir, path) = file_with("colour = 1\nbcrypt_cost = \"high\"\nbind = \"x\"\n");
        let err = Settings::load(&args(path)).unwrap_err().to_string();
        for key in ["colour", "bcrypt_cost", "bind"] {
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn out_of_range_cost_is_refused() {
        let (_dir, path) = file_with("bcrypt_cost = 40\n");
        let err = Settings::load(&args(path)).unwrap_err().to_string();
        assert!(err.contains("bcrypt_cost = 40"), "{err}");
    }

    #[test]
    fn the_example_file_parses_and_sets_nothing() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kaggleingest.toml");
        let file = read_file(&path).unwrap();
        assert!(file.bind.is_none() && file.bcrypt_cost.is_none());
    }
}
