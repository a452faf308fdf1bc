//! `backup_to`: SQLite's online backup of a live database into a new file.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{DbError, configure, create_private};

/// What `backup_to` copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupReport {
    /// Accounts in the copy.
    pub accounts: i64,
    /// Database pages copied.
    pub pages: u64,
}

/// Copies the database at `src` into a new file `dest` with SQLite's online
/// backup, from one read snapshot: consistent while a server keeps writing,
/// which never waits for it (WAL readers block no one). Reports progress as
/// (pages copied, total pages), then checks the copy's integrity.
pub fn backup_to(
    src: &Path,
    dest: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<BackupReport, DbError> {
    let mut source = Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| DbError::caused(format!("cannot open database {}", src.display()), e))?;
    configure(&mut source)?;
    // Pin one snapshot for the whole copy, so writes that commit meanwhile
    // neither tear the copy nor restart it.
    source.execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")?;
    let cannot_create = |e: Box<dyn std::error::Error + Send + Sync>| {
        DbError::caused(format!("cannot create {}", dest.display()), e)
    };
    create_private(dest).map_err(|e| cannot_create(e.into()))?;
    let mut copy = Connection::open(dest).map_err(|e| cannot_create(e.into()))?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        loop {
            let step = backup.step(256)?;
            let p = backup.progress();
            let total = p.pagecount.max(0) as u64;
            progress(total - p.remaining.max(0) as u64, total);
            match step {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => {}
                // Another connection holds the destination: give it a moment.
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    source.execute_batch("COMMIT")?;
    // A backup is one self-contained file: no WAL beside it.
    copy.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0))?;
    let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(DbError::new(format!(
            "the copy failed its integrity check: {check}"
        )));
    }
    let accounts = copy.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))?;
    let pages: i64 = copy.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok(BackupReport {
        accounts,
        pages: pages.max(0) as u64,
    })
}
