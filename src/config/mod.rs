//! Settings, declared once in `settings.rs`, layered by figment with
//! precedence flags > env > file > defaults; figment remembers where each
//! value came from, which `config show` prints beside it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

#[macro_use]
pub mod declare;
mod settings;

pub use settings::{DECLARED, Overrides, Settings};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "kaggleingest.toml";

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
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone may sign up.
    Open,
    /// Only admins create accounts (`kaggleingest user create`).
    Closed,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
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
pub type Sources = BTreeMap<&'static str, Source>;

/// Every problem found in the configuration, reported together.
#[derive(Debug)]
pub struct ConfigError(Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// The names figment records for each layer; `Source` reads them back.
const FROM_DEFAULTS: &str = "default";
const FROM_FILE: &str = "config file";
const FROM_COMMAND_LINE: &str = "flag or env";

impl Settings {
    /// Layers flags/env (already in `args`) over the config file over defaults.
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
            None => toml::Table::new(),
        };
        let figment = Figment::from(Layer(FROM_DEFAULTS, Settings::default()))
            .merge(Layer(FROM_FILE, file))
            .merge(Layer(FROM_COMMAND_LINE, args.overrides.clone()));
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError(e.into_iter().map(|e| e.to_string()).collect()))?;
        // Addresses compare by their IDNA ASCII domain, so the list must
        // hold that form too (`bücher.de` as `xn--bcher-kva.de`). An entry no
        // address could have (`*.example.com`, `example.com.`) would admit
        // nobody without a word: refuse it at start instead.
        let mut domain_problems = Vec::new();
        settings.signup_email_domains = settings
            .signup_email_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@'))
            .filter(|d| !d.is_empty())
            .filter_map(|d| match crate::email::Email::parse(&format!("a@{d}")) {
                Some(email) => Some(email.domain().to_owned()),
                None => {
                    domain_problems.push(format!(
                        "signup_email_domains: {d:?} is not a domain an email address can have \
                         (exact names only, no wildcards or trailing dot)"
                    ));
                    None
                }
            })
            .collect();
        settings.validate_with(domain_problems)?;
        let sources = DECLARED
            .iter()
            .map(|d| {
                let source = match figment.find_metadata(d.key).map(|m| &*m.name) {
                    Some(FROM_COMMAND_LINE) => Source::FlagOrEnv,
                    Some(FROM_FILE) => Source::File,
                    _ => Source::Default,
                };
                (d.key, source)
            })
            .collect();
        Ok((settings, sources))
    }

    /// Hashing threads: `hash_workers`, or one per CPU when it is 0.
    pub fn hash_threads(&self) -> usize {
        match self.hash_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    fn validate_with(&self, mut problems: Vec<String>) -> Result<(), ConfigError> {
        // Every number has a declared range: an absurd value (a timeout of
        // 2^64 seconds overflows the clock) must stop the start, not a
        // request.
        problems.extend(self.range_problems());
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

/// One layer of settings under a name figment records as its source.
struct Layer<T>(&'static str, T);

impl<T: Serialize> Provider for Layer<T> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.0)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.1).data()
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
    for (key, mut value) in settings.entries() {
        if key == "db" {
            // The one setting that can hold a secret (a PostgreSQL
            // password): shown as `Display` shows it, without.
            value = declare::toml_text(&settings.db.to_string());
        }
        let source = sources.get(key).copied().unwrap_or(Source::Default);
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

/// The top of the example file.
const EXAMPLE_HEADER: &str = "\
# KaggleIngest accounts: example configuration.
#
# `kaggleingest serve` reads ./kaggleingest.toml when it exists, or the file
# named by --config / KAGGLEINGEST_CONFIG. Every key is optional; each line
# below shows the built-in default. Precedence: command-line flag >
# KAGGLEINGEST_* environment variable > this file > default.
# Unknown keys are refused at startup, so a typo cannot go unnoticed.
";

/// `kaggleingest config example`: every setting with its documentation,
/// flag, variable and default, commented out (the shipped
/// `kaggleingest.toml` is this text).
pub fn example() -> String {
    let defaults: BTreeMap<_, _> = Settings::default().entries().into_iter().collect();
    let mut out = String::from(EXAMPLE_HEADER);
    for d in DECLARED {
        out.push('\n');
        for line in d.doc.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
            out.push_str(&format!("# {line}\n"));
        }
        let comma = if d.list { " (comma-separated)" } else { "" };
        out.push_str(&format!("# flag --{}{comma}, env {}\n", flag(d.key), d.env));
        let value = defaults[d.key].as_deref().or(d.example).unwrap_or("");
        out.push_str(&format!("# {} = {value}\n", d.key));
    }
    out
}

/// The README's settings table, one row per setting.
pub fn readme_table() -> String {
    let defaults: BTreeMap<_, _> = Settings::default().entries().into_iter().collect();
    let mut out = String::from(
        "| file key | flag | environment | default | allowed | what it sets |\n\
         |---|---|---|---|---|---|\n",
    );
    for d in DECLARED {
        let default = match &defaults[d.key] {
            Some(value) => format!("`{value}`"),
            None => "off".into(),
        };
        let allowed = d.range.map_or(String::new(), |(lo, hi)| {
            format!("{}-{}", grouped(lo), grouped(hi))
        });
        // A `|` ends a table cell even inside backticks (GitHub's tables).
        out.push_str(&format!(
            "| `{}` | `--{} {}` | `{}` | {default} | {allowed} | {} |\n",
            d.key,
            flag(d.key),
            d.value_name.replace('|', "\\|"),
            d.env,
            d.doc[0].trim().replace('|', "\\|"),
        ));
    }
    out
}

/// A key's command-line flag, without the dashes.
fn flag(key: &str) -> String {
    key.replace('_', "-")
}

/// `1000000` as `1,000,000`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reads the TOML file, reporting every bad key at once rather than the first.
fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(vec![format!("cannot read config file {shown}: {e}")]))?;
    // Not `{e}`: it quotes the offending line, which may hold a password.
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
        ConfigError(vec![format!(
            "config file {shown} is not valid TOML (line {line}): {}",
            e.message()
        )])
    })?;
    let problems: Vec<String> = table
        .iter()
        .filter_map(|(key, value)| {
            settings::check_key(key, value.clone())
                .err()
                .map(|e| format!("config file {shown}: key `{key}`: {e}"))
        })
        .collect();
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(ConfigError(problems))
    }
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
    fn the_shipped_example_file_is_the_generated_one() {
        let shipped = include_str!("../../kaggleingest.toml");
        assert!(
            shipped == example(),
            "kaggleingest.toml differs from the declarations in src/config/settings.rs; \
             regenerate it: cargo run -- config example > kaggleingest.toml"
        );
    }

    #[test]
    fn every_example_line_uncommented_is_a_valid_file_of_the_defaults() {
        let uncommented: String = example()
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                DECLARED
                    .iter()
                    .any(|d| l.starts_with(&format!("{} = ", d.key)))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let (_dir, path) = file_with(&uncommented);

        let loaded = Settings::load(&args(path)).unwrap();

        assert_eq!(uncommented.lines().count(), DECLARED.len());
        let mut expected = Settings::default().entries();
        expected.retain(|(key, _)| *key != "metrics_bind");
        let mut got = loaded.entries();
        got.retain(|(key, _)| *key != "metrics_bind");
        assert_eq!(got, expected);
    }

    #[test]
    fn the_readme_settings_table_is_the_generated_one() {
        let readme = include_str!("../../README.md");
        let table = readme_table();
        assert!(
            readme.contains(&table),
            "the README's settings table differs from the declarations; replace it with:\n{table}"
        );
    }

    #[test]
    fn every_environment_variable_is_the_prefixed_key() {
        for d in DECLARED {
            assert_eq!(d.env, format!("KAGGLEINGEST_{}", d.key.to_uppercase()));
        }
    }

    #[test]
    fn sources_are_joined_by_key() {
        let (_dir, path) = file_with("hash_queue = 5\n");
        let mut a = args(path);
        a.overrides.bcrypt_cost = Some(11);

        let (_, sources) = Settings::load_with_sources(&a).unwrap();

        assert_eq!(sources["bcrypt_cost"], Source::FlagOrEnv);
        assert_eq!(sources["hash_queue"], Source::File);
        assert_eq!(sources["bind"], Source::Default);
        assert_eq!(sources.len(), DECLARED.len());
    }
}
