//! The migrations: `schema.sql`'s numbered steps, applied under `PRAGMA
//! user_version`, plus the parts of a step that SQL cannot express.

use rusqlite::{Connection, params};

use crate::db::{DbError, Schema};
use crate::email;

pub(in crate::db) const SCHEMA: Schema = Schema(include_str!("../../../schema.sql"));

/// Applies every step of `schema.sql` newer than the file's `user_version`,
/// each in its own transaction together with the version bump.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let on_disk: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if on_disk > latest_version() {
        return Err(DbError::new(format!(
            "schema version {on_disk} is newer than this release knows ({}): refusing to run an older binary on it",
            latest_version()
        )));
    }
    for (version, sql) in SCHEMA.steps() {
        // IMMEDIATE: two processes starting at once must not both migrate.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current < version {
            tx.execute_batch(sql)?;
            run_rust_part(&tx, version)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
        }
    }
    Ok(())
}

/// The part of a schema step that SQL cannot express, run after the step's
/// SQL in the same transaction, so a failure leaves the file at the step before.
fn run_rust_part(conn: &Connection, version: u32) -> Result<(), DbError> {
    match version {
        3 => recompute_email_keys(conn),
        _ => Ok(()),
    }
}

/// Step 3: every row's `email_normalized` recomputed from its `email` by
/// today's rules (`email::key_of_stored`). Accounts that turn out to share a
/// key are one mailbox with several accounts: which one to keep is the
/// operator's call, so the step stops and names them instead of merging.
fn recompute_email_keys(conn: &Connection) -> Result<(), DbError> {
    let rows: Vec<(i64, String, String)> = conn
        .prepare("SELECT id, email, email_normalized FROM accounts ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut owners: std::collections::HashMap<String, Vec<(i64, String)>> =
        std::collections::HashMap::new();
    let mut changes = Vec::new();
    for (id, stored, old_key) in rows {
        let key = email::key_of_stored(&stored);
        if key != old_key {
            changes.push((id, key.clone()));
        }
        owners.entry(key).or_default().push((id, stored));
    }
    let mut collisions: Vec<Vec<(i64, String)>> =
        owners.into_values().filter(|ids| ids.len() > 1).collect();
    if !collisions.is_empty() {
        collisions.sort();
        return Err(DbError::new(collision_report(conn.path(), &collisions)));
    }
    // The new keys are distinct, but one row's new key may be another's old
    // key until that row has moved too: park every changing row on a value no
    // key can hold (keys always contain an `@`), then set the real keys.
    let mut update = conn.prepare("UPDATE accounts SET email_normalized = ?2 WHERE id = ?1")?;
    for (id, _) in &changes {
        update.execute(params![id, format!("moving account {id}")])?;
    }
    for (id, key) in &changes {
        update.execute(params![id, key])?;
    }
    Ok(())
}

/// One line naming every group of colliding accounts (ids and emails as
/// stored, escaped so invisible characters show) and how to resolve them.
fn collision_report(db: Option<&str>, groups: &[Vec<(i64, String)>]) -> String {
    let described: Vec<String> = groups
        .iter()
        .map(|group| {
            let accounts: Vec<String> = group
                .iter()
                .map(|(id, stored)| format!("{id} ({stored:?})"))
                .collect();
            format!("accounts {}", accounts.join(" and "))
        })
        .collect();
    // The last account of a group is the newest: the likelier lookalike.
    let example = groups
        .first()
        .and_then(|g| g.last())
        .map_or(0, |(id, _)| *id);
    format!(
        "{} share one mailbox under this release's email rules; keep one account of each and \
         delete the others, e.g. `sqlite3 {} \"DELETE FROM accounts WHERE id = {example}\"` or \
         the previous release's `kaggleingest user delete EMAIL`, then start again",
        described.join("; "),
        db.filter(|path| !path.is_empty()).unwrap_or("DATABASE"),
    )
}

/// The schema version a fresh database ends at.
pub(super) fn latest_version() -> u32 {
    SCHEMA.latest()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::db::sqlite::Store;

    /// A file at schema step 2 holding `(email, email_normalized)` rows.
    fn step_2_database(path: &Path, rows: &[(&str, &str)]) {
        let conn = Connection::open(path).unwrap();
        for (version, sql) in SCHEMA.steps().take(2) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
        }
        for (i, (stored, key)) in rows.iter().enumerate() {
            conn.execute(
                "INSERT INTO accounts (email, email_normalized, password_hash, key_digest)
                 VALUES (?1, ?2, 'hash', ?3)",
                params![stored, key, &[i as u8; 32][..]],
            )
            .unwrap();
        }
    }

    #[test]
    fn step_3_moves_keys_that_another_row_still_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // Row 1's new key is row 2's old one: a single pass would trip UNIQUE.
        step_2_database(&path, &[("A@X.io", "stale@x.io"), ("B@x.io", "a@x.io")]);

        drop(Store::open(&path).unwrap());

        let conn = Connection::open(&path).unwrap();
        let keys: Vec<String> = conn
            .prepare("SELECT email_normalized FROM accounts ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, ["a@x.io", "b@x.io"]);
    }

    #[test]
    fn step_3_stops_on_a_collision_and_leaves_the_file_at_step_2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        step_2_database(
            &path,
            &[
                ("ok@x.io", "ok@x.io"),
                ("Äbc@x.io", "äbc@x.io"),
                ("a\u{308}bc@x.io", "a\u{308}bc@x.io"),
            ],
        );

        let err = Store::open(&path)
            .err()
            .expect("the collision stops the migration");

        let message = crate::report::Chain(&err).to_string();
        assert!(
            message.contains(r#"accounts 2 ("Äbc@x.io") and 3 ("a\u{308}bc@x.io")"#),
            "{message}"
        );
        assert!(
            message.contains("DELETE FROM accounts WHERE id = 3"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        let conn = Connection::open(&path).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
    }
}
