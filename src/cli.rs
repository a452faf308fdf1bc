//! The command line: subcommands and their flags (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::account::{CreditChange, Tier};
use crate::config::ConfigArgs;
use crate::db::Location;

/// Sign up with email and password, get an API key, authenticate with it.
#[derive(Parser, Debug)]
#[command(name = "kaggleingest", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ConfigArgs),
    /// Manage accounts in the database file; safe while `serve` runs.
    User {
        /// Where the database is (the same settings as `serve`).
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        /// What to do with accounts.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Copy the database to DEST: consistent even while `serve` writes,
    /// written atomically, and integrity-checked.
    Backup {
        /// Where the database is (the same settings as `serve`).
        #[command(flatten)]
        config: ConfigArgs,
        /// The backup file to write; it must not exist yet, unless
        /// `--overwrite` is given.
        dest: PathBuf,
        /// Replace DEST if it exists (atomically: DEST is either the old
        /// file or the complete new copy).
        #[arg(long)]
        overwrite: bool,
    },
    /// Copy every account from one database to another (a SQLite file to
    /// PostgreSQL, or back); running it again changes nothing.
    Copy {
        /// Logging settings (the same as `serve`; --db is not used here).
        #[command(flatten)]
        config: ConfigArgs,
        /// The database to copy from: a SQLite file or a postgres:// URL.
        /// The environment keeps a password out of `ps`.
        #[arg(
            long,
            value_name = "PATH|URL",
            env = "KAGGLEINGEST_COPY_FROM",
            hide_env_values = true
        )]
        from: Location,
        /// The database to copy into; a SQLite file is created if needed,
        /// a PostgreSQL database must exist (its tables are created).
        #[arg(
            long,
            value_name = "PATH|URL",
            env = "KAGGLEINGEST_COPY_TO",
            hide_env_values = true
        )]
        to: Location,
        /// Replace destination accounts that differ from the source's
        /// (without it they are left alone and named).
        #[arg(long)]
        overwrite: bool,
    },
    /// Exit 0 when the server answers /readyz with 200, else 1 (for
    /// container health checks on images without curl).
    Healthcheck {
        /// The same settings as `serve`: the URL defaults to its bind address.
        #[command(flatten)]
        config: ConfigArgs,
        /// Readiness URL [default: http://<bind>/readyz]
        #[arg(long)]
        url: Option<String>,
    },
    /// Inspect the configuration.
    Config {
        /// The settings to inspect.
        #[command(flatten)]
        config: ConfigArgs,
        /// What to show.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

impl Command {
    /// The settings arguments every subcommand carries.
    pub fn config_args(&self) -> &ConfigArgs {
        match self {
            Command::Serve(config)
            | Command::User { config, .. }
            | Command::Backup { config, .. }
            | Command::Copy { config, .. }
            | Command::Healthcheck { config, .. }
            | Command::Config { config, .. } => config,
        }
    }
}

/// `kaggleingest config ...`
#[derive(Subcommand, Debug, Clone, Copy)]
pub enum ConfigAction {
    /// Print the effective settings and where each comes from.
    Show,
    /// Print the commented example config file.
    Example,
}

/// `kaggleingest user ...`
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// List every account.
    List,
    /// Create an account and print its key once (works when signups are closed).
    Create {
        /// The new account's email.
        email: String,
        /// Read the password from the first line of stdin; without it the
        /// account gets a random password nobody knows (keys then come only
        /// from `rotate-key`).
        #[arg(long)]
        password_stdin: bool,
        /// Create the database file if it does not exist yet (every other
        /// admin command refuses a missing file, so a typo cannot make one).
        #[arg(long)]
        create_db: bool,
    },
    /// Show one account.
    Show {
        /// The account's email (any case).
        email: String,
    },
    /// Change credits: +N adds, -N subtracts, =N sets.
    Credits {
        /// The account's email (any case).
        email: String,
        /// +N, -N or =N
        #[arg(allow_hyphen_values = true, value_parser = parse_credit_change)]
        change: CreditChange,
    },
    /// Set the tier.
    Tier {
        /// The account's email (any case).
        email: String,
        /// The new tier: free, pro or enterprise.
        tier: Tier,
    },
    /// Revoke the account's key: it stops working at once.
    RevokeKey {
        /// The account's email (any case).
        email: String,
    },
    /// Issue a new key (printed once) and revoke the old one.
    RotateKey {
        /// The account's email (any case).
        email: String,
    },
    /// Delete the account.
    Delete {
        /// The account's email (any case).
        email: String,
    },
}

/// `--db`, `--from`, `--to`: parsed by `Location`'s rules, but a refusal
/// never repeats the value as clap's own message would (`invalid value
/// 'postgres://user:PASSWORD@…'`), wherever it came from: flag or environment.
impl clap::builder::ValueParserFactory for Location {
    type Parser = LocationParser;

    fn value_parser() -> LocationParser {
        LocationParser
    }
}

/// See `Location`'s `ValueParserFactory`.
#[derive(Clone, Copy, Debug)]
pub struct LocationParser;

impl clap::builder::TypedValueParser for LocationParser {
    type Value = Location;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Location, clap::Error> {
        let name = arg.map_or_else(|| "--db".to_owned(), |a| format!("--{}", a.get_id()));
        let refuse = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid {name}: {why}\n"),
            )
        };
        value
            .to_str()
            .ok_or_else(|| refuse("not valid UTF-8".into()))?
            .parse()
            .map_err(refuse)
    }
}

fn parse_credit_change(s: &str) -> Result<CreditChange, String> {
    let bad = || format!("{s:?}: expected +N, -N or =N with N a whole number");
    let (op, digits) = s.split_at_checked(1).ok_or_else(bad)?;
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n < 0 {
        return Err(bad());
    }
    match op {
        "+" => Ok(CreditChange::Add(n)),
        "-" => Ok(CreditChange::Subtract(n)),
        "=" => Ok(CreditChange::Set(n)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_changes_parse() {
        assert_eq!(parse_credit_change("+5"), Ok(CreditChange::Add(5)));
        assert_eq!(parse_credit_change("-3"), Ok(CreditChange::Subtract(3)));
        assert_eq!(parse_credit_change("=0"), Ok(CreditChange::Set(0)));
        for bad in ["5", "+", "", "+-5", "*2", "=x"] {
            assert!(parse_credit_change(bad).is_err(), "{bad}");
        }
    }
}
