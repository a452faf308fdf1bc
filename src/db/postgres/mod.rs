//! The PostgreSQL store: one database shared by any number of nodes. Every
//! guarantee is the database's own: the UNIQUE constraints decide signup
//! races, CHECK keeps credits at zero or above, a spend is one conditional
//! `UPDATE … RETURNING`, and every statement commits on its own
//! (`synchronous_commit = on`) before its caller answers. No node keeps a
//! balance of its own, so several nodes on one database stay exact.
//! The statements are in `accounts`, the migrations of `schema.postgres.sql`
//! in `migrate`, the URL in `url` and TLS in `tls`.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};

mod accounts;
mod migrate;
#[cfg(test)]
pub(super) use migrate::SCHEMA;
mod tls;
mod url;

pub use url::Url;

use super::DbError;

/// Connections per node. PostgreSQL's default `max_connections` (100) then
/// leaves room for six nodes and the admin tools.
const POOL_SIZE: usize = 16;
/// How long a request waits for a connection (or for one to be made)
/// before it fails with a 500 instead of hanging.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);
/// The most one store call may take, connection wait included: past it the
/// request fails (500) instead of hanging on a stalled server or network,
/// which no server-side timeout can notice.
pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Set on every connection. `synchronous_commit`: a 200 promises the write
/// is durable, whatever the server's or the role's default says. The
/// timeouts bound what the server can bound: a statement stuck behind a lock
/// or running away fails rather than piling requests up.
const SESSION: &str =
    "SET synchronous_commit = on; SET statement_timeout = '10s'; SET lock_timeout = '5s'";

/// Runs one store call for `QUERY_TIMEOUT` at most.
pub(super) async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    tokio::time::timeout(QUERY_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(DbError::new(format!(
                "PostgreSQL did not answer within {} s",
                QUERY_TIMEOUT.as_secs()
            )))
        })
}

/// A server's refusal becomes its code, constraint and message only: its
/// DETAIL line can quote a whole row (a password hash among it) and would
/// break the log's one line per event.
impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => DbError::new(format!(
                "postgres: {} {}{}",
                db.code().code(),
                db.message(),
                db.constraint()
                    .map_or(String::new(), |c| format!(" (constraint {c})"))
            )),
            None => DbError::caused("postgres", e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            // Its Display repeats the error it also gives as its source.
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => DbError::caused("postgres connection pool", other),
        }
    }
}

/// A pool of connections to one PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Connects, and brings the schema up to date; with `create` false,
    /// refuses a database that has no kaggleingest schema yet.
    pub async fn open(url: &Url, create: bool) -> Result<Store, DbError> {
        let cannot = |e: DbError| DbError::caused(format!("cannot open database {url}"), e);
        let manager = Manager::from_config(
            url.config.clone(),
            tls::connector(url).map_err(cannot)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(POOL_TIMEOUT))
            .wait_timeout(Some(POOL_TIMEOUT))
            .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(SESSION)
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| cannot(DbError::caused("connection pool", e)))?;
        let store = Store { pool };
        let mut client = store.client().await.map_err(cannot)?;
        migrate::migrate(&mut client, create)
            .await
            .map_err(|e| DbError::caused(format!("cannot migrate database {url}"), e))?;
        Ok(store)
    }

    /// A pooled connection.
    async fn client(&self) -> Result<Object, DbError> {
        Ok(self.pool.get().await?)
    }

    /// Is the database usable for writes? It must answer a read of the
    /// accounts table, not be a read-only standby, and commit a write that
    /// changes nothing (the schema version set to itself): a database that
    /// refuses writes (`default_transaction_read_only`, no room for WAL)
    /// answers reads as ever.
    pub async fn ping(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), EXISTS (SELECT 1 FROM accounts)",
                &[],
            )
            .await?;
        if row.get::<_, bool>(0) {
            return Err(DbError::new(
                "the database is a read-only standby (in recovery)",
            ));
        }
        client
            .execute("UPDATE kaggleingest_schema SET version = version", &[])
            .await?;
        Ok(())
    }

    /// Number of accounts.
    pub async fn count_accounts(&self) -> Result<i64, DbError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM accounts", &[])
            .await?;
        Ok(row.get(0))
    }
}
