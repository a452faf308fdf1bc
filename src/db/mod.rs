//! The storage boundary: the connection pool, its pragmas, the migrations in
//! `schema.sql`, and every SQL statement of the product. Callers see async
//! functions and plain types; nothing outside this module knows it is SQLite.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, ToSql, params};

use crate::account::{Account, AccountRecord, CreditChange, NewAccount, Tier, UnknownTier};
use crate::email::Email;
use crate::keys::KeyDigest;

mod backup;
mod migrate;
mod writer;

pub use backup::{BackupReport, backup_to};
pub use migrate::latest_version;
use migrate::migrate;
use writer::Writer;

/// How long a writer waits for another writer before giving up. Far above any
/// real wait (one INSERT with an fsync), so clients never see "locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool; SQLite serializes writers anyway, readers scale.
const POOL_SIZE: u32 = 16;
/// How long a request thread's own reader waits for a lock before the read
/// moves to the blocking pool (see `Db::read`).
const READER_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

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

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::caused("sqlite", e)
    }
}

impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        DbError::caused("connection pool", e)
    }
}

impl ToSql for Tier {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Tier {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        // The CHECK constraint keeps other names out of the table.
        value
            .as_str()?
            .parse()
            .map_err(|e: UnknownTier| FromSqlError::Other(e.into()))
    }
}

/// The columns `account_from_row` reads, in order (a macro so statements
/// can be `concat!`-ed at compile time instead of formatted per request).
macro_rules! account_columns {
    () => {
        "email, tier, credits, created_at"
    };
}

fn account_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        email: row.get(0)?,
        tier: row.get(1)?,
        credits: row.get(2)?,
        created_at: row.get(3)?,
    })
}

/// The columns `record_from_row` reads, in order: the account's first.
macro_rules! record_columns {
    () => {
        concat!(
            account_columns!(),
            ", key_digest IS NOT NULL, key_created_at"
        )
    };
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        account: account_from_row(row)?,
        key_active: row.get(4)?,
        key_created_at: row.get(5)?,
    })
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
    /// The account is committed (and synced to disk).
    Created,
    /// Another account has this normalized email; nothing changed.
    EmailTaken,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool<SqliteConnectionManager>,
    /// Every write goes through here (group commit); reads never do.
    writer: Writer,
    path: Arc<Path>,
}

thread_local! {
    /// This thread's read-only connection for `read_now`, with the file it
    /// belongs to (tests open several databases in one process).
    static READER: RefCell<Option<(Arc<Path>, Connection)>> = const { RefCell::new(None) };
}

impl Db {
    /// Opens (creating if needed) the database file and brings its schema up
    /// to date. Fails with a message naming the path when it cannot.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        create_private(path)
            .map_err(|e| DbError::caused(format!("cannot open database {}", path.display()), e))?;
        Self::open_existing(path)
    }

    /// As `open`, but refuses a file that does not exist: for the admin
    /// commands, where a mistyped path must not become a new, empty database.
    pub fn open_existing(path: &Path) -> Result<Db, DbError> {
        let shown = path.display();
        if !path.exists() {
            return Err(DbError::new(format!(
                "no database at {shown} (check --db; `kaggleingest serve` creates one)"
            )));
        }
        // One direct connection first: it fails fast with SQLite's own reason,
        // where the pool would retry for its whole connection timeout.
        let mut conn = Connection::open(path)
            .and_then(|mut c| configure(&mut c).map(|()| c))
            .map_err(|e| DbError::caused(format!("cannot open database {shown}"), e))?;
        migrate(&mut conn)
            .map_err(|e| DbError::caused(format!("cannot migrate database {shown}"), e))?;
        // That connection becomes the writer's.
        let checkpoints = Connection::open(path)
            .and_then(|mut c| configure(&mut c).map(|()| c))
            .map_err(|e| DbError::caused(format!("cannot open database {shown}"), e))?;
        let writer = Writer::start(conn, checkpoints)?;
        let manager = SqliteConnectionManager::file(path).with_init(configure);
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            // Open the rest on demand: the admin CLI needs only one.
            .min_idle(Some(1))
            // Failures surface as errors from `get()`, which callers log with context.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(manager)
            .map_err(|e| DbError::caused(format!("cannot open database {shown}"), e))?;
        Ok(Db {
            pool,
            writer,
            path: path.into(),
        })
    }

    /// Runs a point read right here, on this thread's own connection, or,
    /// if that connection meets a lock, on the blocking pool.
    ///
    /// For the hot, read-only paths (`/me`): handing the query to the blocking
    /// pool would cost more than the query. A WAL-mode reader does not wait
    /// for writers; it can only meet a lock in rare moments (WAL recovery or
    /// reset), and then gives up after `READER_BUSY_TIMEOUT` rather than
    /// stalling an async worker, and the pool waits instead.
    async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        match self.read_now(&f) {
            Ok(value) => Ok(value),
            Err(_) => self.with_conn(move |conn| f(conn)).await,
        }
    }

    fn read_now<T>(&self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        READER.with(|cell| {
            let mut reader = cell.borrow_mut();
            if !matches!(&*reader, Some((path, _)) if *path == self.path) {
                let mut conn = Connection::open(&self.path)?;
                configure(&mut conn)?;
                conn.busy_timeout(READER_BUSY_TIMEOUT)?;
                // Belt and braces: this connection must never write.
                conn.pragma_update(None, "query_only", "ON")?;
                *reader = Some((Arc::clone(&self.path), conn));
            }
            let (_, conn) = reader.as_ref().expect("set just above");
            f(conn)
        })
    }

    /// Runs `f` with a pooled connection on tokio's blocking pool: SQLite
    /// calls block (fsync, busy waits) and must not stall the async workers.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || f(&mut *pool.get()?))
            .await
            .map_err(|e| DbError::caused("database task failed", e))?
    }

    /// Inserts a new account; the UNIQUE constraint on the normalized email
    /// decides races, so N concurrent signups of one address give one `Created`.
    pub async fn insert_account(&self, account: NewAccount) -> Result<Inserted, DbError> {
        self.writer
            .write(move |conn| {
                let result = conn.execute(
                    "INSERT INTO accounts (email, email_normalized, password_hash, key_digest)
                 VALUES (?1, ?2, ?3, ?4)",
                    params![
                        account.email.display,
                        account.email.normalized,
                        account.password_hash,
                        &account.key_digest.0[..],
                    ],
                );
                match result {
                    Ok(_) => Ok(Inserted::Created),
                    Err(e) if is_unique_violation(&e, "accounts.email_normalized") => {
                        Ok(Inserted::EmailTaken)
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// Whether an account with this normalized email exists (a cheap pre-check
    /// that spares bcrypt for obvious duplicates; the constraint still decides).
    pub async fn email_exists(&self, email: &Email) -> Result<bool, DbError> {
        let normalized = email.normalized.clone();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT 1 FROM accounts WHERE email_normalized = ?1")?;
            Ok(stmt.exists([&normalized])?)
        })
        .await
    }

    /// The account a key belongs to: one indexed lookup by digest.
    pub async fn account_by_key(&self, digest: KeyDigest) -> Result<Option<Account>, DbError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE key_digest = ?1"
            ))?;
            Ok(stmt
                .query_row([&digest.0[..]], account_from_row)
                .optional()?)
        })
        .await
    }

    /// Spends `cost` credits of the key's account in one atomic statement:
    /// concurrent spends can never take the balance below zero.
    pub async fn spend(&self, digest: KeyDigest, cost: u32) -> Result<Spend, DbError> {
        self.writer
            .write(move |conn| {
                let mut spend = conn.prepare_cached(concat!(
                    "UPDATE accounts SET credits = credits - ?2
                  WHERE key_digest = ?1 AND credits >= ?2
              RETURNING ",
                    account_columns!()
                ))?;
                if let Some(account) = spend
                    .query_row(params![&digest.0[..], cost], account_from_row)
                    .optional()?
                {
                    return Ok(Spend::Spent(account));
                }
                // Nothing spent: tell a valid key without enough credits from a bad key.
                let mut exists =
                    conn.prepare_cached("SELECT 1 FROM accounts WHERE key_digest = ?1")?;
                Ok(if exists.exists([&digest.0[..]])? {
                    Spend::Insufficient
                } else {
                    Spend::UnknownKey
                })
            })
            .await
    }

    /// The id and password hash behind an email, for checking a password.
    pub async fn credentials(&self, email: &Email) -> Result<Option<(i64, String)>, DbError> {
        let normalized = email.normalized.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, password_hash FROM accounts WHERE email_normalized = ?1",
            )?;
            Ok(stmt
                .query_row([&normalized], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })
        .await
    }

    /// Replaces the key of account `id`, provided its password hash is still
    /// `checked_hash` (the one the caller just verified: neither a password
    /// change nor a delete-and-reuse of the id may slip in between). The old
    /// key stops working with the commit. False when nothing matched.
    pub async fn replace_key(
        &self,
        id: i64,
        checked_hash: String,
        digest: KeyDigest,
    ) -> Result<bool, DbError> {
        self.writer
            .write(move |conn| {
                let changed = conn.execute(
                    "UPDATE accounts
                    SET key_digest = ?3, key_created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                  WHERE id = ?1 AND password_hash = ?2",
                    params![id, checked_hash, &digest.0[..]],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    /// Revokes a key: afterwards no key works for its account until a
    /// rotation. Returns false when the key was not (or no longer) valid.
    pub async fn revoke_key(&self, digest: KeyDigest) -> Result<bool, DbError> {
        self.writer
            .write(move |conn| {
                let changed = conn.execute(
                    "UPDATE accounts SET key_digest = NULL WHERE key_digest = ?1",
                    [&digest.0[..]],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    /// Every account, oldest first (admin CLI).
    pub async fn list_accounts(&self) -> Result<Vec<AccountRecord>, DbError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(concat!(
                "SELECT ",
                record_columns!(),
                " FROM accounts ORDER BY id"
            ))?;
            let rows = stmt.query_map([], record_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// One account by email (admin CLI).
    pub async fn account_by_email(&self, email: &Email) -> Result<Option<AccountRecord>, DbError> {
        let normalized = email.normalized.clone();
        self.with_conn(move |conn| {
            Ok(conn
                .query_row(
                    concat!(
                        "SELECT ",
                        record_columns!(),
                        " FROM accounts WHERE email_normalized = ?1"
                    ),
                    [normalized],
                    record_from_row,
                )
                .optional()?)
        })
        .await
    }

    /// Adds, subtracts or sets credits; `Ok(None)` when there is no such
    /// account. The CHECK constraint refuses a negative balance.
    pub async fn change_credits(
        &self,
        email: &Email,
        change: CreditChange,
    ) -> Result<Option<AccountRecord>, DbError> {
        let (sql, amount) = match change {
            CreditChange::Add(n) => ("credits + ?2", n),
            CreditChange::Subtract(n) => ("credits - ?2", n),
            CreditChange::Set(n) => ("?2", n),
        };
        let statement = format!(
            "UPDATE accounts SET credits = {sql} WHERE email_normalized = ?1 RETURNING {}",
            record_columns!()
        );
        self.update_returning(email, statement, Value::Integer(amount))
            .await
    }

    /// Sets the tier; `Ok(None)` when there is no such account.
    pub async fn set_tier(
        &self,
        email: &Email,
        tier: Tier,
    ) -> Result<Option<AccountRecord>, DbError> {
        let statement = format!(
            "UPDATE accounts SET tier = ?2 WHERE email_normalized = ?1 RETURNING {}",
            record_columns!()
        );
        self.update_returning(email, statement, Value::Text(tier.as_str().to_owned()))
            .await
    }

    /// Sets (rotate) or clears (revoke) the key of an account by email;
    /// false when there is no such account.
    pub async fn set_key_by_email(
        &self,
        email: &Email,
        digest: Option<KeyDigest>,
    ) -> Result<bool, DbError> {
        let normalized = email.normalized.clone();
        self.writer
            .write(move |conn| {
                let changed = conn.execute(
                    "UPDATE accounts
                    SET key_digest = ?2,
                        key_created_at = CASE WHEN ?2 IS NULL THEN key_created_at
                                              ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END
                  WHERE email_normalized = ?1",
                    params![normalized, digest.map(|d| d.0.to_vec())],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    /// Deletes an account; false when there is no such account.
    pub async fn delete_account(&self, email: &Email) -> Result<bool, DbError> {
        let normalized = email.normalized.clone();
        self.writer
            .write(move |conn| {
                let changed = conn.execute(
                    "DELETE FROM accounts WHERE email_normalized = ?1",
                    [normalized],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    async fn update_returning(
        &self,
        email: &Email,
        statement: String,
        value: Value,
    ) -> Result<Option<AccountRecord>, DbError> {
        let normalized = email.normalized.clone();
        self.writer
            .write(move |conn| {
                let result = conn
                    .query_row(&statement, params![normalized, value], record_from_row)
                    .optional();
                match result {
                    Err(rusqlite::Error::SqliteFailure(f, Some(msg)))
                        if f.code == ErrorCode::ConstraintViolation =>
                    {
                        Err(DbError::new(format!("refused by the schema ({msg})")))
                    }
                    other => Ok(other?),
                }
            })
            .await
    }

    /// Is the database usable? A small read on a pooled connection (it
    /// reads the schema, so it needs the file itself, unlike `SELECT 1`),
    /// then an empty write through the writer, which answers only once the
    /// writer is free and can take the write lock.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.with_conn(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            Ok(())
        })
        .await?;
        self.writer.write(|_| Ok(())).await
    }

    /// Number of accounts (for metrics).
    pub async fn count_accounts(&self) -> Result<i64, DbError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached("SELECT count(*) FROM accounts")?;
            Ok(stmt.query_row([], |r| r.get(0))?)
        })
        .await
    }

    /// Folds the WAL back into the main file; called at clean shutdown so the
    /// database is one self-contained file afterwards.
    pub async fn checkpoint(&self) -> Result<(), DbError> {
        self.with_conn(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

/// Creates `path` as an empty file only its owner can read, unless it
/// exists. SQLite then makes it a database, and gives the `-wal` and `-shm`
/// files beside it the same mode: they hold password hashes and emails too.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Pragmas for every pooled connection. The busy timeout comes first: the
/// switch to WAL itself may have to wait for another connection.
fn configure(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    // FULL: in WAL mode NORMAL may lose the last commits on power loss, and
    // a 200 promises the account is on disk.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn is_unique_violation(e: &rusqlite::Error, column: &str) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.code == ErrorCode::ConstraintViolation && msg.contains(column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_twice_is_idempotent_and_records_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Db::open(&path).unwrap());
        let db = Db::open(&path).unwrap();
        let conn = db.pool.get().unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        // The writer's connection is the one whose commits must be durable.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let writer_sync: i64 = runtime
            .block_on(
                db.writer
                    .write(|conn| Ok(conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?)),
            )
            .unwrap();
        assert_eq!(writer_sync, 2, "the writer commits with synchronous=FULL");
    }
}
