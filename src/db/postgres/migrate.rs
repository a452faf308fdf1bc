//! The migrations: `schema.postgres.sql`'s numbered steps, applied under an
//! advisory lock in one transaction, with the version in
//! `kaggleingest_schema`.

use tokio_postgres::Client;

use crate::db::{DbError, Schema};

pub(in crate::db) const SCHEMA: Schema = Schema(include_str!("../../../schema.postgres.sql"));

/// The advisory lock every node takes to migrate: nodes starting together
/// wait for each other rather than racing (any fixed number would do; this
/// one is "kaggleingest" in a hash).
const MIGRATION_LOCK: i64 = 0x6b69_5f6d_6967_7261;

/// Applies every step newer than the database's version, in one
/// transaction; a database newer than this release is refused. With
/// `create` false a database without the schema is refused too.
pub(super) async fn migrate(client: &mut Client, create: bool) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    // A migration may take long on a big table, and so may waiting for
    // another node's: not the session's statement timeout.
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
        .await?;
    // Held until the transaction ends, even if this node dies mid-way.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let present: bool = tx
        .query_one("SELECT to_regclass('kaggleingest_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !present && !create {
        return Err(DbError::new(
            "it has no kaggleingest tables yet (check --db; `kaggleingest serve` creates them)",
        ));
    }
    if !present {
        tx.batch_execute(
            "CREATE TABLE kaggleingest_schema (
                 only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                 version  integer NOT NULL
             )",
        )
        .await?;
    }
    let on_disk: i32 = tx
        .query_opt("SELECT version FROM kaggleingest_schema", &[])
        .await?
        .map_or(0, |row| row.get(0));
    let latest = SCHEMA.latest();
    if on_disk > latest as i32 {
        return Err(DbError::new(format!(
            "schema version {on_disk} is newer than this release knows ({latest}): refusing to run an older binary on it"
        )));
    }
    for (version, sql) in SCHEMA.steps() {
        if version as i32 > on_disk {
            tx.batch_execute(sql).await?;
        }
    }
    if latest as i32 > on_disk {
        tx.execute(
            "INSERT INTO kaggleingest_schema (version) VALUES ($1)
             ON CONFLICT (only_row) DO UPDATE SET version = excluded.version",
            &[&(latest as i32)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
