//! `kaggleingest user ...`: account administration straight on the database.
//! SQLite's WAL mode and busy timeout, or PostgreSQL's own concurrency, make
//! this safe while `serve` runs.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use crate::account::{AccountRecord, NewAccount};
use crate::cli::UserAction;
use crate::config::Settings;
use crate::db::{Db, Inserted};
use crate::email::Email;
use crate::keys::ApiKey;
use crate::password::Password;

/// Runs one admin action; the error, with its causes, is for the operator.
pub async fn run(settings: &Settings, action: UserAction, json: bool) -> anyhow::Result<()> {
    // Output piped into `head` should end us quietly, as for any CLI tool,
    // not panic on EPIPE. (The server keeps Rust's default: ignored.)
    // SAFETY: setting a signal disposition has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let db = match action {
        UserAction::Create {
            create_db: true, ..
        } => Db::open(&settings.db).await,
        _ => Db::open_existing(&settings.db).await,
    };
    let db = db?;
    match action {
        UserAction::List => {
            let accounts = db.list_accounts().await?;
            if json {
                print_json(&accounts.iter().map(RecordBody::from).collect::<Vec<_>>());
            } else {
                print_table(&accounts);
            }
        }
        UserAction::Create {
            email,
            password_stdin,
            ..
        } => {
            let email = parse_email(&email)?;
            let password = if password_stdin {
                read_password_line()?
            } else {
                // Nobody will ever know it: keys then come from rotate-key.
                ApiKey::generate()
                    .context("cannot draw a password")?
                    .expose()
                    .to_owned()
            };
            let password = Password::parse(password)?;
            let cost = settings.bcrypt_cost;
            let password_hash = tokio::task::spawn_blocking(move || password.hash(cost))
                .await
                .context("the hashing task failed")?
                .context("cannot hash the password")?;
            let (account, key) =
                NewAccount::issue(email.clone(), password_hash).context("cannot draw a key")?;
            if db.insert_account(account).await? == Inserted::EmailTaken {
                bail!("{} is already registered", email.display);
            }
            print_new_key(json, &email, &key);
        }
        UserAction::Show { email } => {
            let email = lookup(&email)?;
            let account = db.account_by_email(&email).await?;
            print_account(found(account, &email)?, json);
        }
        UserAction::Credits { email, change } => {
            let email = lookup(&email)?;
            let account = db.change_credits(&email, change).await?;
            print_account(found(account, &email)?, json);
        }
        UserAction::Tier { email, tier } => {
            let email = lookup(&email)?;
            let account = db.set_tier(&email, tier).await?;
            print_account(found(account, &email)?, json);
        }
        UserAction::RevokeKey { email } => {
            let email = lookup(&email)?;
            exists(db.set_key_by_email(&email, None).await?, &email)?;
            done(json, &email, "API key revoked");
        }
        UserAction::RotateKey { email } => {
            let email = lookup(&email)?;
            let key = ApiKey::generate().context("cannot draw a key")?;
            let set = db.set_key_by_email(&email, Some(key.digest())).await;
            exists(set?, &email)?;
            print_new_key(json, &email, &key);
        }
        UserAction::Delete { email } => {
            let email = lookup(&email)?;
            exists(db.delete_account(&email).await?, &email)?;
            done(json, &email, "account deleted");
        }
    }
    Ok(())
}

/// The first line of stdin, without its line ending.
fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    Ok(trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned())
}

/// Shows a new key once, on stdout only.
fn print_new_key(json: bool, email: &Email, key: &ApiKey) {
    #[derive(Serialize)]
    struct NewKey<'a> {
        email: &'a str,
        api_key: &'a str,
    }
    if json {
        print_json(&NewKey {
            email: &email.display,
            api_key: key.expose(),
        });
    } else {
        println!("API key for {} (shown once):", email.display);
        println!("{}", key.expose());
    }
}

fn parse_email(input: &str) -> anyhow::Result<Email> {
    Email::parse(input).ok_or_else(|| anyhow!("{input:?} is not a valid email address"))
}

/// The account to act on: also one an earlier release stored under an
/// address today's rules refuse, so it can still be shown, fixed or deleted.
fn lookup(input: &str) -> anyhow::Result<Email> {
    if input.trim().is_empty() {
        bail!("an email address is required");
    }
    Ok(Email::of_stored(input))
}

fn found(account: Option<AccountRecord>, email: &Email) -> anyhow::Result<AccountRecord> {
    account.ok_or_else(|| no_account(email))
}

fn exists(changed: bool, email: &Email) -> anyhow::Result<()> {
    if changed {
        Ok(())
    } else {
        Err(no_account(email))
    }
}

fn no_account(email: &Email) -> anyhow::Error {
    anyhow!("no account with email {}", email.display)
}

fn done(json: bool, email: &Email, what: &str) {
    if json {
        print_json(&serde_json::json!({"email": email.display, "result": what}));
    } else {
        println!("{}: {what}", email.display);
    }
}

/// An account in `--json` output.
#[derive(Serialize)]
struct RecordBody<'a> {
    email: &'a str,
    tier: &'a str,
    credits: i64,
    created_at: &'a str,
    key_active: bool,
    key_created_at: &'a str,
}

impl<'a> From<&'a AccountRecord> for RecordBody<'a> {
    fn from(r: &'a AccountRecord) -> Self {
        RecordBody {
            email: &r.account.email,
            tier: r.account.tier.as_str(),
            credits: r.account.credits,
            created_at: &r.account.created_at,
            key_active: r.key_active,
            key_created_at: &r.key_created_at,
        }
    }
}

fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("plain structs always serialize")
    );
}

fn print_account(account: AccountRecord, json: bool) {
    if json {
        print_json(&RecordBody::from(&account));
    } else {
        println!("email       {}", account.account.email);
        println!("tier        {}", account.account.tier);
        println!("credits     {}", account.account.credits);
        println!("created_at  {}", account.account.created_at);
        println!("key         {}", key_state(&account));
    }
}

fn key_state(account: &AccountRecord) -> String {
    if account.key_active {
        format!("active since {}", account.key_created_at)
    } else {
        "revoked".into()
    }
}

fn print_table(accounts: &[AccountRecord]) {
    let width = accounts
        .iter()
        .map(|a| a.account.email.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    println!(
        "{:<width$}  {:<10}  {:>8}  {:<7}  CREATED",
        "EMAIL", "TIER", "CREDITS", "KEY"
    );
    for a in accounts {
        let key = if a.key_active { "active" } else { "revoked" };
        println!(
            "{:<width$}  {:<10}  {:>8}  {:<7}  {}",
            a.account.email, a.account.tier, a.account.credits, key, a.account.created_at
        );
    }
    println!("{} account(s)", accounts.len());
}
