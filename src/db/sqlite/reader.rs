//! Each request thread's own read-only connection, which keeps its read
//! transaction (its snapshot) open from one point read to the next while
//! nothing commits.
//!
//! Why: in WAL mode every read transaction takes and drops a shared lock in
//! the `-shm` file, two `fcntl` calls under a mutex that all the readers of
//! a process share, so two threads reading at once also sleep on it. For
//! `/api/auth/me` that was the dearest part of the request: the same request
//! with its read left out served 45 % more per second. A read on a held
//! snapshot skips the locking; the lookup itself is the same.
//!
//! Exactness: a held snapshot is read only while the WAL-index header at
//! the start of the `-shm` file is word for word what it was just before the
//! snapshot was taken. Every commit, from this process, another server or
//! the admin CLI, rewrites that header before it returns (it is how SQLite's
//! own readers learn of commits). So a read sees every commit that finished
//! before the read began, exactly as a fresh transaction would; the header
//! having changed, or not being readable, means a fresh transaction.
//!
//! A held snapshot must not keep the WAL from being folded back into the
//! database and restarted. So a snapshot is only held after two reads in a
//! row found the header unchanged (in a stream of writes every read stays a
//! short transaction of its own, as before), and it is let go as soon as
//! this thread queues a write, and whenever the thread goes idle (`release`,
//! which the runtime calls before a worker parks) or needs the WAL folded
//! back (`Store::checkpoint`).

use std::cell::RefCell;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{Mmap, MmapOptions};
use rusqlite::Connection;

use super::{DbError, READER_BUSY_TIMEOUT, configure};

/// Both copies of the WAL-index header that open the `-shm` file, 48 bytes
/// each (SQLite's "WAL-index format"): its change counter, the last valid
/// frame, the checksums and salts. A commit rewrites both; a checkpoint
/// neither (it changes what follows them, not the data a reader sees).
const HEADER_WORDS: usize = 24;

/// The header as read at one moment.
type Stamp = [u32; HEADER_WORDS];

thread_local! {
    /// This thread's reader, with the file it belongs to (tests open several
    /// databases in one process; a thread keeps one reader, for the file it
    /// read last).
    static READER: RefCell<Option<Reader>> = const { RefCell::new(None) };
}

/// Runs the point read `f` on this thread's reader of `path`, opening it on
/// first use. An error leaves no snapshot held.
pub(super) fn read<T>(
    path: &Arc<Path>,
    f: impl FnOnce(&Connection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    READER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if !matches!(&*slot, Some(reader) if reader.path == *path && !reader.broken) {
            *slot = None; // its snapshot ends with it
            *slot = Some(Reader::open(path)?);
        }
        let reader = slot.as_mut().expect("set just above");
        let result = reader.read(f);
        if result.is_err() {
            reader.let_go();
        }
        if reader.broken {
            *slot = None;
        }
        result
    })
}

/// Lets go of this thread's snapshot, if it holds one. Cheap when it holds
/// none; does nothing while the reader is in use on this thread (it is not
/// re-entered).
pub fn release() {
    READER.with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut()
            && let Some(reader) = slot.as_mut()
        {
            reader.let_go();
            if reader.broken {
                *slot = None;
            }
        }
    });
}

struct Reader {
    path: Arc<Path>,
    conn: Connection,
    /// The header, when the `-shm` file could be mapped; without it every
    /// read is a transaction of its own.
    header: Option<Header>,
    /// The header as the previous read found it.
    last: Option<Stamp>,
    /// The header just before the open snapshot was taken, while one is.
    held: Option<Stamp>,
    /// A snapshot could not be ended: the connection must go.
    broken: bool,
}

impl Reader {
    fn open(path: &Arc<Path>) -> Result<Reader, DbError> {
        let mut conn = Connection::open(path)?;
        configure(&mut conn)?;
        // A reader meets a lock only in rare moments (WAL recovery or
        // reset); then it gives up soon, and `Store::read` goes to the pool,
        // rather than stalling an async worker.
        conn.busy_timeout(READER_BUSY_TIMEOUT)?;
        // Belt and braces: this connection must never write.
        conn.pragma_update(None, "query_only", "ON")?;
        // The `-shm` file exists once WAL mode is on, which `configure` saw to.
        let header = Header::map(&conn);
        Ok(Reader {
            path: Arc::clone(path),
            conn,
            header,
            last: None,
            held: None,
            broken: false,
        })
    }

    fn read<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let now = self.header.as_ref().map(Header::stamp);
        if now.is_some() && self.held == now {
            return f(&self.conn);
        }
        self.let_go();
        if self.broken {
            return Err(DbError::new("the reader could not end its snapshot"));
        }
        let quiet = now.is_some() && self.last == now;
        self.last = now;
        if !quiet {
            return f(&self.conn);
        }
        // The snapshot is taken by the first read inside the transaction,
        // after `now` was read: it holds every commit `now` reflects.
        self.conn.execute_batch("BEGIN DEFERRED")?;
        self.held = now;
        f(&self.conn)
    }

    /// Ends the open snapshot, if any. Ending a read-only transaction only
    /// drops its lock; should even that fail, the reader is `broken` and
    /// its owner drops the connection, so no snapshot outlives this call.
    fn let_go(&mut self) {
        if self.held.take().is_some()
            && self.conn.execute_batch("COMMIT").is_err()
            && self.conn.execute_batch("ROLLBACK").is_err()
        {
            tracing::warn!("a read snapshot could not be ended; closing its connection");
            self.broken = true;
        }
    }
}

/// The start of the `-shm` file, mapped read-only.
struct Header {
    map: Mmap,
}

impl Header {
    /// Maps the header of the `-shm` file SQLite uses for `conn`'s database
    /// (named after the path SQLite resolved, symlinks followed), or `None`
    /// when it is not there to map.
    fn map(conn: &Connection) -> Option<Header> {
        let shm = format!("{}-shm", conn.path().filter(|p| !p.is_empty())?);
        let file = File::open(shm).ok()?;
        let len = HEADER_WORDS * 4;
        if file.metadata().ok()?.len() < len as u64 {
            return None;
        }
        // SAFETY: SQLite, in this process and others, rewrites these bytes
        // under the map: they are only ever read with atomic loads (`stamp`),
        // never as a slice. The file never shrinks below them while a
        // connection to the database is open, as this reader's is for as
        // long as the map lives.
        let map = unsafe { MmapOptions::new().len(len).map(&file) }.ok()?;
        Some(Header { map })
    }

    fn stamp(&self) -> Stamp {
        let words = self.map.as_ptr().cast::<u32>().cast_mut();
        std::array::from_fn(|i| {
            // SAFETY: in bounds (`HEADER_WORDS` words mapped), aligned (a map
            // starts on a page) and atomic, as memory other processes write
            // must be read; the map is read-only and is only ever loaded from.
            unsafe { AtomicU32::from_ptr(words.add(i)) }.load(Ordering::Acquire)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sqlite::Store;

    fn held() -> bool {
        READER.with(|cell| cell.borrow().as_ref().is_some_and(|r| r.held.is_some()))
    }

    fn count(path: &Arc<Path>) -> i64 {
        read(path, |conn| {
            Ok(conn.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))?)
        })
        .unwrap()
    }

    #[test]
    fn a_held_snapshot_still_sees_every_commit_made_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let path = Arc::clone(&store.path);
        // Another connection: to the reader, as good as another process (the
        // header it watches is the same shared memory).
        let other = Connection::open(&*path).unwrap();
        for n in 0..5 {
            assert_eq!(count(&path), n);
            assert!(
                !held(),
                "the first read after a commit is a transaction of its own"
            );
            assert_eq!(count(&path), n);
            assert!(
                held(),
                "a second read with nothing committed holds its snapshot"
            );
            assert_eq!(count(&path), n, "read on the held snapshot");
            other
                .execute(
                    "INSERT INTO accounts (email, email_normalized, password_hash, created_at)
                     VALUES (?1, ?1, 'x', '2026-01-01T00:00:00.000Z')",
                    [format!("u{n}@example.com")],
                )
                .unwrap();
        }
        assert_eq!(count(&path), 5, "the last commit, seen at once");
        release();
        assert!(!held(), "released");
    }
}
