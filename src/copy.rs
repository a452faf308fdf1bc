//! `kaggleingest copy --from SRC --to DST`: every account, with its
//! password hash, key digest, credits, tier and timestamps, from one store
//! to the other (a SQLite file to PostgreSQL when one machine is outgrown,
//! or back). Matched by normalized email: an account the destination lacks
//! is added; one it holds differently (spent, revoked or rotated there since
//! an earlier copy) is left alone and named, unless `--overwrite` says the
//! source wins. So running it again changes nothing. Then checked: a second
//! pass must find every source account in the destination as in the source.

use anyhow::{Context, bail};

use crate::db::{Db, Imported, Location, StoredAccount};

/// Accounts read, written and checked together (one transaction each).
const BATCH: u32 = 1000;
/// Differing accounts named in the refusal at most.
const NAMED: usize = 5;

/// What one pass over the source did to the destination.
#[derive(Debug, Default)]
struct Pass {
    new: u64,
    updated: u64,
    unchanged: u64,
    /// Emails (as typed) of the accounts that differ and were left alone.
    differing: Vec<String>,
}

impl Pass {
    fn total(&self) -> u64 {
        self.new + self.updated + self.unchanged + self.differing.len() as u64
    }
}

/// Copies, checks, and prints what it did; or says in one line why not.
pub async fn run(from: &Location, to: &Location, overwrite: bool) -> anyhow::Result<()> {
    if same(from, to) {
        bail!("--from and --to are the same database ({from})");
    }
    let source = Db::open_existing(from)
        .await
        .with_context(|| format!("source {from}"))?;
    let destination = Db::open(to)
        .await
        .with_context(|| format!("destination {to}"))?;
    let copied = pass(&source, &destination, overwrite).await?;
    if !copied.differing.is_empty() {
        let named = copied
            .differing
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>();
        bail!(
            "{} account(s) in {to} differ from {from} ({}{}), perhaps spent, revoked or rotated \
             there since an earlier copy: they were left as they are ({} new account(s) were \
             copied); pass --overwrite to make them the source's",
            copied.differing.len(),
            named.join(", "),
            if copied.differing.len() > NAMED {
                ", …"
            } else {
                ""
            },
            copied.new,
        );
    }
    // The check: the same import again, overwriting nothing, must find
    // every account already there, column for column.
    let checked = pass(&source, &destination, false).await?;
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
async fn pass(source: &Db, destination: &Db, overwrite: bool) -> anyhow::Result<Pass> {
    let mut pass = Pass::default();
    let mut after = 0;
    loop {
        let batch = source
            .export_after(after, BATCH)
            .await
            .context("reading the source")?;
        let Some(&(last, _)) = batch.last() else {
            return Ok(pass);
        };
        after = last;
        let accounts: Vec<StoredAccount> = batch.into_iter().map(|(_, a)| a).collect();
        let emails: Vec<String> = accounts.iter().map(|a| a.email.clone()).collect();
        let outcomes = destination
            .import(accounts, overwrite)
            .await
            .context("writing the destination")?;
        for (outcome, email) in outcomes.into_iter().zip(emails) {
            match outcome {
                Imported::New => pass.new += 1,
                Imported::Updated => pass.updated += 1,
                Imported::Unchanged => pass.unchanged += 1,
                Imported::Differs => pass.differing.push(email),
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
