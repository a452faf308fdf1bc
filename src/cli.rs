//! The command line: subcommands and their flags (clap derive).

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ConfigArgs;
use crate::db::CreditChange;

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
}

/// `kaggleingest user ...`
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// List every account.
    List,
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
        /// The new tier.
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

/// Account tiers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The signup tier.
    Free,
    /// Paid.
    Pro,
    /// Paid, larger.
    Enterprise,
}

impl Tier {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
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
