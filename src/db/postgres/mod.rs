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

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::caused("postgres", e)
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::caused("postgres connection pool", e)
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
            // A 200 promises the write is durable, whatever the server's or
            // the role's default says.
            .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute("SET synchronous_commit = on")
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
    /// accounts table, and not be a read-only standby.
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
