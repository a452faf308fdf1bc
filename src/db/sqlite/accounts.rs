//! The accounts table: every statement on it, the rows it reads into domain
//! types, and what a write can come back with. Reads run on the calling
//! thread's reader (`Store::read`) or the pool; writes go through the writer.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{ErrorCode, OptionalExtension, ToSql, params};

use super::Store;
use crate::account::{Account, AccountRecord, CreditChange, NewAccount, Tier, UnknownTier};
use crate::db::{Credentials, DbError, Imported, Inserted, Spend, StoredAccount, import_outcome};
use crate::email::Email;
use crate::keys::KeyDigest;

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

/// The columns `stored_from_row` reads, in order.
macro_rules! stored_columns {
    () => {
        "email, email_normalized, password_hash, key_digest, tier, credits, created_at, key_created_at"
    };
}

fn stored_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<StoredAccount> {
    let digest: Option<[u8; 32]> = row.get(first + 3)?;
    Ok(StoredAccount {
        email: row.get(first)?,
        email_normalized: row.get(first + 1)?,
        password_hash: row.get(first + 2)?,
        key_digest: digest.map(KeyDigest),
        tier: row.get(first + 4)?,
        credits: row.get(first + 5)?,
        created_at: row.get(first + 6)?,
        key_created_at: row.get(first + 7)?,
    })
}

impl Store {
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

    /// See `Db::credentials`.
    pub async fn credentials(&self, email: &Email) -> Result<Option<Credentials>, DbError> {
        let normalized = email.normalized.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, password_hash, key_digest FROM accounts WHERE email_normalized = ?1",
            )?;
            Ok(stmt
                .query_row([&normalized], |r| {
                    Ok(Credentials {
                        id: r.get(0)?,
                        password_hash: r.get(1)?,
                        key_digest: r.get::<_, Option<[u8; 32]>>(2)?.map(KeyDigest),
                    })
                })
                .optional()?)
        })
        .await
    }

    /// See `Db::replace_key`.
    pub async fn replace_key(
        &self,
        checked: Credentials,
        digest: KeyDigest,
    ) -> Result<bool, DbError> {
        self.writer
            .write(move |conn| {
                // `IS`: equal, or both NULL (a revoked key).
                let changed = conn.execute(
                    "UPDATE accounts
                    SET key_digest = ?4, key_created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                  WHERE id = ?1 AND password_hash = ?2 AND key_digest IS ?3",
                    params![
                        checked.id,
                        checked.password_hash,
                        checked.key_digest.map(|d| d.0),
                        &digest.0[..]
                    ],
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

    /// Up to `limit` accounts after id `after`, in id order (for `copy`).
    pub async fn export_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StoredAccount)>, DbError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(concat!(
                "SELECT id, ",
                stored_columns!(),
                " FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after, limit], |row| {
                Ok((row.get(0)?, stored_from_row(row, 1)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// See `Db::import`; in one write of the writer: all of it or, on an
    /// error, nothing.
    pub async fn import(
        &self,
        accounts: Vec<StoredAccount>,
        overwrite: bool,
    ) -> Result<Vec<Imported>, DbError> {
        self.writer
            .write(move |conn| {
                accounts
                    .iter()
                    .map(|a| import_one(conn, a, overwrite))
                    .collect()
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
}

fn is_unique_violation(e: &rusqlite::Error, column: &str) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.code == ErrorCode::ConstraintViolation && msg.contains(column))
}

/// Adds `account`, or with `overwrite` makes its namesake the same.
fn import_one(
    conn: &rusqlite::Connection,
    account: &StoredAccount,
    overwrite: bool,
) -> Result<Imported, DbError> {
    let existing = conn
        .query_row(
            concat!(
                "SELECT ",
                stored_columns!(),
                " FROM accounts WHERE email_normalized = ?1"
            ),
            [&account.email_normalized],
            |row| stored_from_row(row, 0),
        )
        .optional()?;
    let outcome = import_outcome(existing.as_ref(), account, overwrite);
    let statement = match outcome {
        Imported::New => concat!(
            "INSERT INTO accounts (",
            stored_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        Imported::Updated => {
            "UPDATE accounts SET email = ?1, password_hash = ?3, key_digest = ?4, tier = ?5,
                    credits = ?6, created_at = ?7, key_created_at = ?8
              WHERE email_normalized = ?2"
        }
        Imported::Unchanged | Imported::Differs => return Ok(outcome),
    };
    conn.execute(
        statement,
        params![
            account.email,
            account.email_normalized,
            account.password_hash,
            account.key_digest.map(|d| d.0.to_vec()),
            account.tier,
            account.credits,
            account.created_at,
            account.key_created_at,
        ],
    )?;
    Ok(outcome)
}
