//! `kaggleingest copy --from SRC --to DST`: every account, with its
//! password hash, key digest, credits, tier and timestamps, from one store
//! to the other (a SQLite file to PostgreSQL when one machine is outgrown,
//! or back). Matched by normalized email, so running it again changes
//! nothing; then checked: a second pass must find every source account in
//! the destination exactly as in the source.

use anyhow::{Context, bail};

use crate::db::{Db, Imported, Location, StoredAccount};

/// Accounts read, written and checked together (one transaction each).
const BATCH: u32 = 1000;

/// What one pass over the source did to the destination.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    new: u64,
    updated: u64,
    unchanged: u64,
}

impl Tally {
    fn total(&self) -> u64 {
        self.new + self.updated + self.unchanged
    }
}

/// Copies, checks, and prints what it did; or says in one line why not.
pub async fn run(from: &Location, to: &Location) -> anyhow::Result<()> {
    if same(from, to) {
        bail!("--from and --to are the same database ({from})");
    }
    let source = Db::open_existing(from)
        .await
        .with_context(|| format!("source {from}"))?;
    let destination = Db::open(to)
        .await
        .with_context(|| format!("destination {to}"))?;
    let copied = pass(&source, &destination).await?;
    // The check: the same import again finds every account already there,
    // column for column (it reads each one and writes nothing).
    let checked = pass(&source, &destination).await?;
    if checked.unchanged != checked.total() || checked.total() != copied.total() {
        bail!(
            "the source changed during the copy ({} of {} accounts differ on a second pass): \
             stop the servers writing to {from} and run the same copy again",
            checked.total() - checked.unchanged,
            checked.total()
        );
    }
    let in_source = source.count_accounts().await?;
    let in_destination = destination.count_accounts().await?;
    if u64::try_from(in_source).ok() != Some(copied.total()) {
        bail!(
            "the source holds {in_source} accounts but {} were read: run the copy again",
            copied.total()
        );
    }
    println!(
        "copied {} account(s) from {from} to {to}: {} new, {} updated, {} already identical; \
         checked: every one is in the destination as in the source ({in_destination} account(s) there{})",
        copied.total(),
        copied.new,
        copied.updated,
        copied.unchanged,
        if in_destination > in_source {
            ", some not from this source"
        } else {
            ""
        },
    );
    Ok(())
}

/// Imports every source account into the destination, in id order.
async fn pass(source: &Db, destination: &Db) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut after = 0;
    loop {
        let batch = source
            .export_after(after, BATCH)
            .await
            .context("reading the source")?;
        let Some(&(last, _)) = batch.last() else {
            return Ok(tally);
        };
        after = last;
        let accounts: Vec<StoredAccount> = batch.into_iter().map(|(_, a)| a).collect();
        for outcome in destination
            .import(accounts)
            .await
            .context("writing the destination")?
        {
            match outcome {
                Imported::New => tally.new += 1,
                Imported::Updated => tally.updated += 1,
                Imported::Unchanged => tally.unchanged += 1,
            }
        }
    }
}

/// Whether both name one database: one file, or one URL.
fn same(a: &Location, b: &Location) -> bool {
    match (a, b) {
        (Location::Sqlite(a), Location::Sqlite(b)) => {
            a == b || same_file::is_same_file(a, b).unwrap_or(false)
        }
        (Location::Postgres(_), Location::Postgres(_)) => a.to_string() == b.to_string(),
        _ => false,
    }
}
