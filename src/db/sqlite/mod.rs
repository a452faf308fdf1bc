//! The SQLite store: the connection pool, its pragmas, and the store `Db`
//! dispatches to; the statements themselves are in `accounts`, the writer
//! in `writer`, each thread's own reader in `reader`, the migrations of
//! `schema.sql` in `migrate`, backups in `backup`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

mod accounts;
mod backup;
mod migrate;
mod reader;
mod writer;

#[cfg(test)]
pub(super) use migrate::SCHEMA;

pub use backup::{BackupReport, backup_to};
use migrate::migrate;
pub use reader::release as release_snapshot;
use writer::Writer;

use super::DbError;

/// How long a writer waits for another writer before giving up. Far above any
/// real wait (one INSERT with an fsync), so clients never see "locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool; SQLite serializes writers anyway, readers scale.
const POOL_SIZE: u32 = 16;
/// How long a request thread's own reader waits for a lock before the read
/// moves to the blocking pool (see `Store::read`).
const READER_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

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

/// One SQLite file; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<SqliteConnectionManager>,
    /// Every write goes through here (group commit); reads never do.
    writer: Writer,
    path: Arc<Path>,
}

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up
    /// to date. Fails with a message naming the path when it cannot.
    pub fn open(path: &Path) -> Result<Store, DbError> {
        create_private(path)
            .map_err(|e| DbError::caused(format!("cannot open database {}", path.display()), e))?;
        Self::connect(path)
    }

    /// As `open`, but refuses a file that does not exist or is empty: for
    /// the admin commands, where a mistyped path must not become a new,
    /// empty database.
    pub fn open_existing(path: &Path) -> Result<Store, DbError> {
        let shown = path.display();
        match std::fs::metadata(path) {
            Err(_) => {
                return Err(DbError::new(format!(
                    "no database at {shown} (check --db; `kaggleingest serve` creates one)"
                )));
            }
            // SQLite would make an empty file a database: not from here.
            Ok(meta) if meta.len() == 0 => {
                return Err(DbError::new(format!(
                    "{shown} is an empty file, not a database (check --db)"
                )));
            }
            Ok(_) => {}
        }
        Self::connect(path)
    }

    /// Opens the file at `path`, migrates it and starts the writer.
    fn connect(path: &Path) -> Result<Store, DbError> {
        let shown = path.display();
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
        Ok(Store {
            pool,
            writer,
            path: path.into(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a point read right here, on this thread's own reader (see
    /// `reader`), or, if that meets a lock, on the blocking pool.
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
        match reader::read(&self.path, &f) {
            Ok(value) => Ok(value),
            Err(_) => self.with_conn(move |conn| f(conn)).await,
        }
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

    /// Is the database usable? A small read on a pooled connection (it
    /// reads the schema, so it needs the file itself, unlike `SELECT 1`),
    /// then a write through the writer, which answers only once the writer
    /// is free, has the write lock and has flushed the write. An empty
    /// transaction writes nothing: with the WAL unwritable or the disk full
    /// it still passed while every spend failed. This one rewrites the file
    /// header's `application_id` with its own value, which touches no table
    /// and changes no byte, but appends a page to the WAL and flushes it,
    /// as a spend does.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.with_conn(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            Ok(())
        })
        .await?;
        self.writer
            .write(|conn| {
                let id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
                conn.pragma_update(None, "application_id", id)?;
                Ok(())
            })
            .await
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
        // A TRUNCATE checkpoint waits for every reader of the WAL, this
        // thread's own held snapshot too.
        reader::release();
        self.with_conn(|conn| {
            // It waits for readers and writers up to the busy timeout first.
            if checkpoint(conn, Fold::Truncate)?.busy {
                return Err(DbError::new("another connection kept the WAL in use"));
            }
            Ok(())
        })
        .await
    }
}

/// How far a checkpoint goes.
#[derive(Clone, Copy)]
enum Fold {
    /// Folds back what no reader still needs; waits for nobody.
    Passive,
    /// Waits (up to the busy timeout) for every reader and writer, folds
    /// back all of the WAL and truncates it to nothing.
    Truncate,
}

/// What a checkpoint reported (`PRAGMA wal_checkpoint`'s one row).
struct Checkpoint {
    /// Another checkpoint, a reader or a writer kept it from finishing.
    busy: bool,
    /// Frames in the WAL when it ran.
    frames: i64,
    /// Of those, the frames folded back into the main file.
    folded: i64,
}

impl Checkpoint {
    /// The whole WAL it found is folded back.
    fn complete(&self) -> bool {
        !self.busy && self.folded == self.frames
    }
}

/// Runs one checkpoint on `conn`, which must have no transaction open.
fn checkpoint(conn: &Connection, fold: Fold) -> rusqlite::Result<Checkpoint> {
    let sql = match fold {
        Fold::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Fold::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    conn.query_row(sql, [], |r| {
        Ok(Checkpoint {
            busy: r.get::<_, i64>(0)? != 0,
            frames: r.get(1)?,
            folded: r.get(2)?,
        })
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_twice_is_idempotent_and_records_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let db = Store::open(&path).unwrap();
        let conn = db.pool.get().unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, migrate::latest_version());
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
