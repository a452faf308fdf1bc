//! Settings: one struct of optional overrides that is both the command-line
//! flags (with their `KAGGLEINGEST_*` environment variables) and the TOML file,
//! merged once into `Settings` with precedence flags > env > file > defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::client_ip::Cidr;
use crate::password;

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

/// The effective settings after the merge.
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
    /// Header/body/idle timeout per connection.
    pub client_timeout: Duration,
    /// Drain time at shutdown.
    pub shutdown_grace: Duration,
    /// 402 or 403 for verify without enough credits.
    pub verify_deny_status: u16,
    /// tracing filter directive.
    pub log_level: String,
}

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
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Overrides::default(),
        };
        let cli = &args.overrides;
        let settings = Settings {
            bind: cli.bind.or(file.bind).unwrap_or_else(|| {
                "127.0.0.1:8000"
                    .parse()
                    .expect("the default address is a valid literal")
            }),
            db: cli
                .db
                .clone()
                .or(file.db)
                .unwrap_or_else(|| "kaggleingest.db".into()),
            bcrypt_cost: cli
                .bcrypt_cost
                .or(file.bcrypt_cost)
                .unwrap_or(password::DEFAULT_COST),
            hash_workers: cli
                .hash_workers
                .or(file.hash_workers)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            hash_queue: cli.hash_queue.or(file.hash_queue).unwrap_or(64),
            signup_rate_limit: cli
                .signup_rate_limit
                .or(file.signup_rate_limit)
                .unwrap_or(10),
            trusted_proxies: cli
                .trusted_proxies
                .clone()
                .or(file.trusted_proxies)
                .unwrap_or_default(),
            max_connections: cli.max_connections.or(file.max_connections).unwrap_or(4096),
            client_timeout: Duration::from_secs(
                cli.client_timeout_secs
                    .or(file.client_timeout_secs)
                    .unwrap_or(10),
            ),
            shutdown_grace: Duration::from_secs(
                cli.shutdown_grace_secs
                    .or(file.shutdown_grace_secs)
                    .unwrap_or(10),
            ),
            verify_deny_status: cli
                .verify_deny_status
                .or(file.verify_deny_status)
                .unwrap_or(402),
            log_level: cli
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !(password::MIN_COST..=password::MAX_COST).contains(&self.bcrypt_cost) {
            problems.push(format!(
                "bcrypt_cost = {} is out of range ({}-{})",
                self.bcrypt_cost,
                password::MIN_COST,
                password::MAX_COST
            ));
        }
        if self.hash_workers == 0 {
            problems.push("hash_workers = 0: at least one hashing thread is needed".into());
        }
        if ![402, 403].contains(&self.verify_deny_status) {
            problems.push(format!(
                "verify_deny_status = {}: must be 402 or 403",
                self.verify_deny_status
            ));
        }
        if self.max_connections == 0 {
            problems.push("max_connections = 0: no client could connect".into());
        }
        if self.client_timeout.is_zero() {
            problems.push("client_timeout_secs = 0: every request would time out".into());
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
