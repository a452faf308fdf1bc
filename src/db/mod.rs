//! The storage boundary. `Db` is the handle everything else uses: async
//! functions and plain types, over one of two stores, chosen by `Location`:
//! a SQLite file (`sqlite`, the default) or a PostgreSQL database shared by
//! several nodes (`postgres`). Nothing outside this module knows which one
//! it talks to, or that there is SQL at all.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::account::{Account, AccountRecord, CreditChange, NewAccount, Tier};
use crate::email::Email;
use crate::keys::KeyDigest;

mod location;
mod postgres;
mod sqlite;

pub use location::Location;
pub use sqlite::{BackupReport, backup_to};

/// For the async runtime to call on a worker thread about to go idle: lets
/// go of the read snapshot the thread's SQLite reader may hold, so an idle
/// server pins nothing in the WAL. Cheap, and a no-op for PostgreSQL.
pub fn on_thread_idle() {
    sqlite::release_snapshot();
}

/// A storage failure: what was being done, and the error underneath (its
/// `source`). For the log and the admin's terminal, never for a client.
#[derive(Debug)]
pub struct DbError {
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DbError {
    /// A failure with no error underneath.
    pub(crate) fn new(context: impl Into<String>) -> DbError {
        DbError {
            context: context.into(),
            source: None,
        }
    }

    /// A failure caused by `source`.
    pub(crate) fn caused(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> DbError {
        DbError {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Outcome of spending credits.
#[derive(Debug, PartialEq, Eq)]
pub enum Spend {
    /// Spent; the account as it is now.
    Spent(Account),
    /// The key is valid but the balance is below the cost; nothing changed.
    Insufficient,
    /// No account has this key.
    UnknownKey,
}

/// Result of an insert that the UNIQUE constraints may refuse.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The account is committed (and durable).
    Created,
    /// Another account has this normalized email; nothing changed.
    EmailTaken,
}

/// An account as a rotation reads it: the password hash to check, and the
/// state the new key may replace.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: i64,
    pub password_hash: String,
    /// The current key; `None` when revoked.
    pub key_digest: Option<KeyDigest>,
}

/// An account row as stored, every column but the store's own id: what
/// `kaggleingest copy` moves from one store to another unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub email: String,
    pub email_normalized: String,
    pub password_hash: String,
    /// `None` once revoked.
    pub key_digest: Option<KeyDigest>,
    pub tier: Tier,
    pub credits: i64,
    /// RFC 3339 UTC with milliseconds, as the API shows it.
    pub created_at: String,
    pub key_created_at: String,
}

/// What importing one account did to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// There was no account with its email: now there is.
    New,
    /// There was one, different in some column: now it is the same
    /// (only when told to overwrite).
    Updated,
    /// There is one, different in some column, and it was left as it is.
    Differs,
    /// There was one, the same in every column: untouched.
    Unchanged,
}

/// What importing `account` does, given its namesake in the destination:
/// both stores' one rule. For `New` and `Updated` the store then inserts or
/// updates the row; the others leave it alone.
fn import_outcome(
    existing: Option<&StoredAccount>,
    account: &StoredAccount,
    overwrite: bool,
) -> Imported {
    match existing {
        None => Imported::New,
        Some(there) if there == account => Imported::Unchanged,
        Some(_) if overwrite => Imported::Updated,
        Some(_) => Imported::Differs,
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db(Store, Arc<tokio::sync::Mutex<Option<Probe>>>);

/// The outcome of the last readiness probe, and when it finished.
type Probe = (Instant, Result<(), String>);

/// How long a readiness probe's outcome answers later checks. The probe
/// writes and flushes; `/readyz` is never rate limited, and a client asking
/// in a loop must not turn it into a stream of commits.
const PROBE_REUSE: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// Runs the future `$call` on whichever store `$db` is, bound to `$store`;
/// on PostgreSQL for `postgres::QUERY_TIMEOUT` at most, so a stalled
/// database or network fails a request instead of hanging it.
macro_rules! dispatch {
    ($db:expr, $store:ident => $call:expr) => {
        match &$db.0 {
            Store::Sqlite($store) => $call.await,
            Store::Postgres($store) => postgres::bounded($call).await,
        }
    };
    // For `copy`'s batches: over a slow network one may take a while, and
    // the server's statement_timeout still bounds each statement.
    (unbounded $db:expr, $store:ident => $call:expr) => {
        match &$db.0 {
            Store::Sqlite($store) => $call.await,
            Store::Postgres($store) => $call.await,
        }
    };
}

impl Db {
    fn new(store: Store) -> Db {
        Db(store, Arc::default())
    }

    /// Opens the database, creating a SQLite file if needed, and brings its
    /// schema up to date. Fails with a message naming where it looked.
    pub async fn open(location: &Location) -> Result<Db, DbError> {
        match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::Store::open(&path).map(Store::Sqlite)).await
            }
            Location::Postgres(url) => postgres::Store::open(url, true)
                .await
                .map(|s| Db::new(Store::Postgres(s))),
        }
    }

    /// As `open`, but refuses a database that is not there yet (a missing
    /// or empty SQLite file, a PostgreSQL database without our schema): for
    /// the admin commands, where a typo must not become a new, empty one.
    pub async fn open_existing(location: &Location) -> Result<Db, DbError> {
        match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::Store::open_existing(&path).map(Store::Sqlite)).await
            }
            Location::Postgres(url) => postgres::Store::open(url, false)
                .await
                .map(|s| Db::new(Store::Postgres(s))),
        }
    }

    /// The SQLite file behind this handle, if it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.0 {
            Store::Sqlite(s) => Some(s.path()),
            Store::Postgres(_) => None,
        }
    }

    /// Is the database usable, for writes too? Each store reads and makes
    /// a real, durable write that changes nothing. One probe at a time;
    /// checks within `PROBE_REUSE` of the last one get its outcome.
    pub async fn ping(&self) -> Result<(), DbError> {
        let mut last = self.1.lock().await;
        if let Some((at, outcome)) = &*last
            && at.elapsed() < PROBE_REUSE
        {
            return outcome.clone().map_err(DbError::new);
        }
        let outcome =
            dispatch!(self, s => s.ping()).map_err(|e| crate::report::Chain(&e).to_string());
        *last = Some((Instant::now(), outcome.clone()));
        outcome.map_err(DbError::new)
    }

    /// Number of accounts (for metrics and `copy`).
    pub async fn count_accounts(&self) -> Result<i64, DbError> {
        dispatch!(self, s => s.count_accounts())
    }

    /// Leaves the database tidy at a clean shutdown (SQLite: the WAL folded
    /// back into the one file).
    pub async fn checkpoint(&self) -> Result<(), DbError> {
        match &self.0 {
            Store::Sqlite(s) => s.checkpoint().await,
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Inserts a new account; the unique email decides races, so N
    /// concurrent signups of one address give one `Created`.
    pub async fn insert_account(&self, account: NewAccount) -> Result<Inserted, DbError> {
        dispatch!(self, s => s.insert_account(account))
    }

    /// Whether an account with this normalized email exists (a cheap
    /// pre-check that spares bcrypt for obvious duplicates).
    pub async fn email_exists(&self, email: &Email) -> Result<bool, DbError> {
        dispatch!(self, s => s.email_exists(email))
    }

    /// The account a key belongs to.
    pub async fn account_by_key(&self, digest: KeyDigest) -> Result<Option<Account>, DbError> {
        dispatch!(self, s => s.account_by_key(digest))
    }

    /// Spends `cost` credits of the key's account in one atomic statement:
    /// concurrent spends, from any number of nodes, never go below zero.
    pub async fn spend(&self, digest: KeyDigest, cost: u32) -> Result<Spend, DbError> {
        dispatch!(self, s => s.spend(digest, cost))
    }

    /// What a rotation checks the password against, by email.
    pub async fn credentials(&self, email: &Email) -> Result<Option<Credentials>, DbError> {
        dispatch!(self, s => s.credentials(email))
    }

    /// Replaces the key of the account `checked` was read from, provided
    /// nothing of it changed since: neither its password, nor its key (a
    /// concurrent rotation or revocation), nor the account (deleted, its id
    /// reused). The old key stops working with the commit. False when
    /// something changed: then nothing did.
    pub async fn replace_key(
        &self,
        checked: Credentials,
        digest: KeyDigest,
    ) -> Result<bool, DbError> {
        dispatch!(self, s => s.replace_key(checked, digest))
    }

    /// Revokes a key; false when it was not (or no longer) valid.
    pub async fn revoke_key(&self, digest: KeyDigest) -> Result<bool, DbError> {
        dispatch!(self, s => s.revoke_key(digest))
    }

    /// Every account, oldest first (admin CLI).
    pub async fn list_accounts(&self) -> Result<Vec<AccountRecord>, DbError> {
        dispatch!(self, s => s.list_accounts())
    }

    /// One account by email (admin CLI).
    pub async fn account_by_email(&self, email: &Email) -> Result<Option<AccountRecord>, DbError> {
        dispatch!(self, s => s.account_by_email(email))
    }

    /// Adds, subtracts or sets credits; `Ok(None)` when there is no such
    /// account. The schema refuses a negative balance.
    pub async fn change_credits(
        &self,
        email: &Email,
        change: CreditChange,
    ) -> Result<Option<AccountRecord>, DbError> {
        dispatch!(self, s => s.change_credits(email, change))
    }

    /// Sets the tier; `Ok(None)` when there is no such account.
    pub async fn set_tier(
        &self,
        email: &Email,
        tier: Tier,
    ) -> Result<Option<AccountRecord>, DbError> {
        dispatch!(self, s => s.set_tier(email, tier))
    }

    /// Sets (rotate) or clears (revoke) the key of an account by email;
    /// false when there is no such account.
    pub async fn set_key_by_email(
        &self,
        email: &Email,
        digest: Option<KeyDigest>,
    ) -> Result<bool, DbError> {
        dispatch!(self, s => s.set_key_by_email(email, digest))
    }

    /// Deletes an account; false when there is no such account.
    pub async fn delete_account(&self, email: &Email) -> Result<bool, DbError> {
        dispatch!(self, s => s.delete_account(email))
    }

    /// Up to `limit` accounts with a store id above `after`, in id order,
    /// each with its id (the cursor for the next call): for `copy`.
    pub async fn export_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StoredAccount)>, DbError> {
        dispatch!(unbounded self, s => s.export_after(after, limit))
    }

    /// Adds each account that has no namesake (by normalized email) here,
    /// and makes the namesakes that differ the same only if `overwrite`; in
    /// one transaction; says what it did with each. Running it again
    /// changes nothing.
    pub async fn import(
        &self,
        accounts: Vec<StoredAccount>,
        overwrite: bool,
    ) -> Result<Vec<Imported>, DbError> {
        dispatch!(unbounded self, s => s.import(accounts, overwrite))
    }
}

/// Runs blocking store work (opening a SQLite file) off the async workers.
async fn blocking(
    open: impl FnOnce() -> Result<Store, DbError> + Send + 'static,
) -> Result<Db, DbError> {
    tokio::task::spawn_blocking(open)
        .await
        .map_err(|e| DbError::caused("opening the database failed", e))?
        .map(Db::new)
}

/// A schema file (`schema.sql`, `schema.postgres.sql`): numbered steps,
/// each introduced by a line `-- step N`.
struct Schema(&'static str);

impl Schema {
    /// Each step's number and SQL, in order.
    fn steps(&self) -> impl Iterator<Item = (u32, &'static str)> {
        self.0.split("\n-- step ").skip(1).map(|chunk| {
            let (number, sql) = chunk.split_once('\n').unwrap_or((chunk, ""));
            let version = number
                .trim()
                .parse()
                .expect("schema step headers are `-- step <number>`");
            (version, sql)
        })
    }

    /// The version a fresh database ends at.
    fn latest(&self) -> u32 {
        self.steps().last().map_or(0, |(v, _)| v)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_schemas_number_their_steps_from_one_without_gaps() {
        for schema in [super::sqlite::SCHEMA, super::postgres::SCHEMA] {
            let versions: Vec<u32> = schema.steps().map(|(v, _)| v).collect();
            assert_eq!(versions, (1..=versions.len() as u32).collect::<Vec<_>>());
        }
    }
}
