//! The accounts table on PostgreSQL: every statement on it and the rows it
//! reads into domain types. Each statement commits on its own unless it is
//! part of `import`'s transaction.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::Store;
use crate::account::{Account, AccountRecord, CreditChange, NewAccount, Tier};
use crate::db::{Credentials, DbError, Imported, Inserted, Spend, StoredAccount, import_outcome};
use crate::email::Email;
use crate::keys::KeyDigest;

/// A timestamp column as the API shows it: RFC 3339 UTC, milliseconds.
macro_rules! ts {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

/// The columns `account_from_row` reads, in order.
macro_rules! account_columns {
    () => {
        concat!("email, tier, credits, ", ts!("created_at"))
    };
}

/// The columns `record_from_row` reads, in order: the account's first.
macro_rules! record_columns {
    () => {
        concat!(
            account_columns!(),
            ", key_digest IS NOT NULL, ",
            ts!("key_created_at")
        )
    };
}

/// The columns `stored_from_row` reads, in order.
macro_rules! stored_columns {
    () => {
        concat!(
            "email, email_normalized, password_hash, key_digest, tier, credits, ",
            ts!("created_at"),
            ", ",
            ts!("key_created_at")
        )
    };
}

/// The new timestamp of a key issued now (a macro, so statements are
/// `concat!`-ed at compile time rather than formatted per request).
macro_rules! now {
    () => {
        "date_trunc('milliseconds', now())"
    };
}

fn tier(row: &Row, i: usize) -> Result<Tier, DbError> {
    // The CHECK constraint keeps other names out of the table.
    row.get::<_, &str>(i)
        .parse()
        .map_err(|e| DbError::caused("unreadable tier", e))
}

fn account_from_row(row: &Row) -> Result<Account, DbError> {
    Ok(Account {
        email: row.get(0),
        tier: tier(row, 1)?,
        credits: row.get(2),
        created_at: row.get(3),
    })
}

fn record_from_row(row: &Row) -> Result<AccountRecord, DbError> {
    Ok(AccountRecord {
        account: account_from_row(row)?,
        key_active: row.get(4),
        key_created_at: row.get(5),
    })
}

fn digest_of(bytes: Option<&[u8]>) -> Result<Option<KeyDigest>, DbError> {
    bytes
        .map(|b| {
            <[u8; 32]>::try_from(b)
                .map(KeyDigest)
                .map_err(|_| DbError::new("a stored key digest is not 32 bytes"))
        })
        .transpose()
}

fn stored_from_row(row: &Row, first: usize) -> Result<StoredAccount, DbError> {
    Ok(StoredAccount {
        email: row.get(first),
        email_normalized: row.get(first + 1),
        password_hash: row.get(first + 2),
        key_digest: digest_of(row.get(first + 3))?,
        tier: tier(row, first + 4)?,
        credits: row.get(first + 5),
        created_at: row.get(first + 6),
        key_created_at: row.get(first + 7),
    })
}

/// Whether `e` is the UNIQUE constraint on the normalized email refusing.
fn is_email_taken(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("accounts_email_normalized_key")
    })
}

impl Store {
    pub(in crate::db) async fn insert_account(
        &self,
        account: NewAccount,
    ) -> Result<Inserted, DbError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO accounts (email, email_normalized, password_hash, key_digest)
                 VALUES ($1, $2, $3, $4)",
            )
            .await?;
        let result = client
            .execute(
                &statement,
                &[
                    &account.email.display,
                    &account.email.normalized,
                    &account.password_hash,
                    &&account.key_digest.0[..],
                ],
            )
            .await;
        match result {
            Ok(_) => Ok(Inserted::Created),
            Err(e) if is_email_taken(&e) => Ok(Inserted::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub(in crate::db) async fn email_exists(&self, email: &Email) -> Result<bool, DbError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE email_normalized = $1)")
            .await?;
        Ok(client
            .query_one(&statement, &[&email.normalized])
            .await?
            .get(0))
    }

    pub(in crate::db) async fn account_by_key(
        &self,
        digest: KeyDigest,
    ) -> Result<Option<Account>, DbError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE key_digest = $1"
            ))
            .await?;
        client
            .query_opt(&statement, &[&&digest.0[..]])
            .await?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    pub(in crate::db) async fn spend(
        &self,
        digest: KeyDigest,
        cost: u32,
    ) -> Result<Spend, DbError> {
        let client = self.client().await?;
        let spend = client
            .prepare_cached(concat!(
                "UPDATE accounts SET credits = credits - $2
                  WHERE key_digest = $1 AND credits >= $2
              RETURNING ",
                account_columns!()
            ))
            .await?;
        let key = &digest.0[..];
        if let Some(row) = client.query_opt(&spend, &[&key, &i64::from(cost)]).await? {
            return Ok(Spend::Spent(account_from_row(&row)?));
        }
        // Nothing spent: tell a valid key without enough credits from a bad key.
        let exists = client
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE key_digest = $1)")
            .await?;
        Ok(if client.query_one(&exists, &[&key]).await?.get(0) {
            Spend::Insufficient
        } else {
            Spend::UnknownKey
        })
    }

    pub(in crate::db) async fn credentials(
        &self,
        email: &Email,
    ) -> Result<Option<Credentials>, DbError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, password_hash, key_digest FROM accounts WHERE email_normalized = $1",
            )
            .await?;
        client
            .query_opt(&statement, &[&email.normalized])
            .await?
            .map(|row| {
                Ok(Credentials {
                    id: row.get(0),
                    password_hash: row.get(1),
                    key_digest: digest_of(row.get(2))?,
                })
            })
            .transpose()
    }

    pub(in crate::db) async fn replace_key(
        &self,
        checked: Credentials,
        digest: KeyDigest,
    ) -> Result<bool, DbError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "UPDATE accounts SET key_digest = $4, key_created_at = ",
                now!(),
                " WHERE id = $1 AND password_hash = $2 AND key_digest IS NOT DISTINCT FROM $3"
            ))
            .await?;
        let old = checked.key_digest.map(|d| d.0.to_vec());
        let changed = client
            .execute(
                &statement,
                &[&checked.id, &checked.password_hash, &old, &&digest.0[..]],
            )
            .await?;
        Ok(changed == 1)
    }

    pub(in crate::db) async fn revoke_key(&self, digest: KeyDigest) -> Result<bool, DbError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("UPDATE accounts SET key_digest = NULL WHERE key_digest = $1")
            .await?;
        Ok(client.execute(&statement, &[&&digest.0[..]]).await? == 1)
    }

    pub(in crate::db) async fn list_accounts(&self) -> Result<Vec<AccountRecord>, DbError> {
        let client = self.client().await?;
        let rows = client
            .query(
                concat!("SELECT ", record_columns!(), " FROM accounts ORDER BY id"),
                &[],
            )
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    pub(in crate::db) async fn account_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<AccountRecord>, DbError> {
        let client = self.client().await?;
        client
            .query_opt(
                concat!(
                    "SELECT ",
                    record_columns!(),
                    " FROM accounts WHERE email_normalized = $1"
                ),
                &[&email.normalized],
            )
            .await?
            .as_ref()
            .map(record_from_row)
            .transpose()
    }

    pub(in crate::db) async fn change_credits(
        &self,
        email: &Email,
        change: CreditChange,
    ) -> Result<Option<AccountRecord>, DbError> {
        let (sql, amount) = match change {
            CreditChange::Add(n) => ("credits + $2", n),
            CreditChange::Subtract(n) => ("credits - $2", n),
            CreditChange::Set(n) => ("$2", n),
        };
        let statement = format!(
            "UPDATE accounts SET credits = {sql} WHERE email_normalized = $1 RETURNING {}",
            record_columns!()
        );
        self.update_returning(email, &statement, &amount).await
    }

    pub(in crate::db) async fn set_tier(
        &self,
        email: &Email,
        tier: Tier,
    ) -> Result<Option<AccountRecord>, DbError> {
        let statement = format!(
            "UPDATE accounts SET tier = $2 WHERE email_normalized = $1 RETURNING {}",
            record_columns!()
        );
        self.update_returning(email, &statement, &tier.as_str())
            .await
    }

    pub(in crate::db) async fn set_key_by_email(
        &self,
        email: &Email,
        digest: Option<KeyDigest>,
    ) -> Result<bool, DbError> {
        let client = self.client().await?;
        let digest = digest.map(|d| d.0.to_vec());
        let changed = client
            .execute(
                concat!(
                    "UPDATE accounts
                        SET key_digest = $2,
                            key_created_at = CASE WHEN $2::bytea IS NULL THEN key_created_at
                                                  ELSE ",
                    now!(),
                    " END
                      WHERE email_normalized = $1"
                ),
                &[&email.normalized, &digest],
            )
            .await?;
        Ok(changed == 1)
    }

    pub(in crate::db) async fn delete_account(&self, email: &Email) -> Result<bool, DbError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "DELETE FROM accounts WHERE email_normalized = $1",
                &[&email.normalized],
            )
            .await?;
        Ok(changed == 1)
    }

    pub(in crate::db) async fn export_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StoredAccount)>, DbError> {
        let client = self.client().await?;
        let rows = client
            .query(
                concat!(
                    "SELECT id, ",
                    stored_columns!(),
                    " FROM accounts WHERE id > $1 ORDER BY id LIMIT $2"
                ),
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.get(0), stored_from_row(row, 1)?)))
            .collect()
    }

    pub(in crate::db) async fn import(
        &self,
        accounts: Vec<StoredAccount>,
        overwrite: bool,
    ) -> Result<Vec<Imported>, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut outcomes = Vec::with_capacity(accounts.len());
        for account in &accounts {
            outcomes.push(import_one(&tx, account, overwrite).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn update_returning(
        &self,
        email: &Email,
        statement: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Option<AccountRecord>, DbError> {
        let client = self.client().await?;
        match client
            .query_opt(statement, &[&email.normalized, value])
            .await
        {
            Ok(row) => row.as_ref().map(record_from_row).transpose(),
            Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
                // The rule as schema.postgres.sql writes it, as on SQLite.
                let rule = match e.as_db_error().and_then(|db| db.constraint()) {
                    Some("accounts_credits_check") => "credits >= 0",
                    Some("accounts_tier_check") => "tier IN ('free', 'pro', 'enterprise')",
                    Some(other) => other,
                    None => "a CHECK constraint",
                };
                Err(DbError::new(format!("refused by the schema ({rule})")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Adds `account`, or with `overwrite` makes its namesake the same, inside `tx`.
async fn import_one(
    tx: &impl GenericClient,
    account: &StoredAccount,
    overwrite: bool,
) -> Result<Imported, DbError> {
    let existing = tx
        .query_opt(
            concat!(
                "SELECT ",
                stored_columns!(),
                " FROM accounts WHERE email_normalized = $1"
            ),
            &[&account.email_normalized],
        )
        .await?;
    let existing = existing
        .as_ref()
        .map(|r| stored_from_row(r, 0))
        .transpose()?;
    let outcome = import_outcome(existing.as_ref(), account, overwrite);
    let statement = match outcome {
        Imported::New => {
            "INSERT INTO accounts (email, email_normalized, password_hash, key_digest, tier,
                                   credits, created_at, key_created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::timestamptz, $8::text::timestamptz)"
        }
        Imported::Updated => {
            "UPDATE accounts SET email = $1, password_hash = $3, key_digest = $4, tier = $5,
                    credits = $6, created_at = $7::text::timestamptz,
                    key_created_at = $8::text::timestamptz
              WHERE email_normalized = $2"
        }
        Imported::Unchanged | Imported::Differs => return Ok(outcome),
    };
    let digest = account.key_digest.map(|d| d.0.to_vec());
    tx.execute(
        statement,
        &[
            &account.email,
            &account.email_normalized,
            &account.password_hash,
            &digest,
            &account.tier.as_str(),
            &account.credits,
            &account.created_at,
            &account.key_created_at,
        ],
    )
    .await?;
    Ok(outcome)
}
