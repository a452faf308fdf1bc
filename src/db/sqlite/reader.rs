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
//! short transaction of its own, as before), for `MAX_HOLD` at most; it ends
//! when a checkpoint moves on (see `HEADER_WORDS`), as soon as this thread
//! queues a write, and whenever the thread goes idle (`release`, which the
//! runtime calls before a worker parks) or needs the WAL folded back
//! (`Store::checkpoint`).

use std::cell::RefCell;
use std::ffi::c_void;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ffi};

use super::{DbError, READER_BUSY_TIMEOUT, configure};

/// Both copies of the WAL-index header that open the `-shm` file, 48 bytes
/// each (SQLite's "WAL-index format"): its change counter, the last valid
/// frame, the checksums and salts, which every commit rewrites; then the
/// checkpoint's `nBackfill`, how much of the WAL is folded back. That last
/// word changes no data a reader sees, but a snapshot taken before a
/// checkpoint finished holds a read slot that keeps the next writer from
/// restarting the WAL; one taken after it does not (SQLite reads it from the
/// database file, slot 0). So a change there also ends a held snapshot.
const HEADER_WORDS: usize = 25;

/// The longest a snapshot is held, however quiet the database: a
/// checkpoint another process runs in RESTART or TRUNCATE mode waits for
/// readers, and under load a thread may not go idle for long.
const MAX_HOLD: Duration = Duration::from_millis(5);

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
    // `try_with`: a no-op, not a panic, while the thread's locals are torn down.
    let _ = READER.try_with(|cell| {
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
    /// The header, when SQLite has it mapped; without it every read is a
    /// transaction of its own. Declared (so dropped) before `conn`, whose
    /// map it points into.
    header: Option<Header>,
    path: Arc<Path>,
    conn: Connection,
    /// The header as the previous read found it; while a snapshot is open,
    /// the header just before it was taken.
    last: Option<Stamp>,
    /// When the open snapshot was taken, while one is.
    held_since: Option<Instant>,
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
        let header = Header::of(&conn);
        Ok(Reader {
            header,
            path: Arc::clone(path),
            conn,
            last: None,
            held_since: None,
            broken: false,
        })
    }

    fn read<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let now = self.header.as_ref().map(Header::stamp);
        let quiet = now.is_some() && self.last == now;
        if quiet
            && self
                .held_since
                .is_some_and(|since| since.elapsed() < MAX_HOLD)
        {
            return f(&self.conn);
        }
        self.let_go();
        if self.broken {
            return Err(DbError::new("the reader could not end its snapshot"));
        }
        self.last = now;
        if !quiet {
            return f(&self.conn);
        }
        // The snapshot is taken by the first read inside the transaction,
        // after `now` was read: it holds every commit `now` reflects.
        self.conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        self.held_since = Some(Instant::now());
        f(&self.conn)
    }

    /// Ends the open snapshot, if any. Ending a read-only transaction only
    /// drops its lock; should even that fail, the reader is `broken` and
    /// its owner drops the connection, so no snapshot outlives this call.
    fn let_go(&mut self) {
        if self.held_since.take().is_some()
            && self
                .conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .is_err()
            && self.conn.execute_batch("ROLLBACK").is_err()
        {
            tracing::warn!("a read snapshot could not be ended; closing its connection");
            self.broken = true;
        }
    }
}

/// The WAL-index header, in SQLite's own map of the `-shm` file.
///
/// Not a map of our own: opening and closing another descriptor of that file
/// would drop every POSIX lock this process holds on it (closing any
/// descriptor of a file does), SQLite's included, and another process could
/// then take the file for its own and reset it under the server.
struct Header {
    /// The start of the first region, mapped by SQLite for as long as the
    /// connection it was asked through is open (`Reader` drops this first).
    words: *const u32,
}

/// The size of a WAL-index region, as SQLite maps them.
const REGION_BYTES: i32 = 32 * 1024;

impl Header {
    /// The header of `conn`'s WAL index, or `None` when SQLite has no map
    /// of it to lend (another VFS, or no WAL yet).
    fn of(conn: &Connection) -> Option<Header> {
        // Only a WAL database has a WAL index; asked of another, `xShmMap`
        // would make one. A read maps its first region if nothing has yet.
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .ok()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return None;
        }
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .ok()?;
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        let mut region: *mut c_void = std::ptr::null_mut();
        // SAFETY: FILE_POINTER writes the main database's `sqlite3_file`
        // (owned by the connection, which outlives this call) into `file`.
        // Its methods' `xShmMap`, present from version 2 on, with `extend`
        // 0 hands out region 0 without growing the file; in WAL mode, after
        // a read, it is already mapped. The connection is idle on this
        // thread meanwhile.
        unsafe {
            let rc = ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&raw mut file).cast(),
            );
            if rc != ffi::SQLITE_OK || file.is_null() || (*file).pMethods.is_null() {
                return None;
            }
            let methods = &*(*file).pMethods;
            let map = methods.xShmMap.filter(|_| methods.iVersion >= 2)?;
            if map(file, 0, REGION_BYTES, 0, &raw mut region) != ffi::SQLITE_OK {
                return None;
            }
        }
        (!region.is_null()).then(|| Header {
            words: region.cast::<u32>(),
        })
    }

    fn stamp(&self) -> Stamp {
        std::array::from_fn(|i| {
            // SAFETY: in bounds (a region is 32 KiB), aligned (a map starts on
            // a page) and atomic, as memory other processes write must be
            // read; it stays mapped while the connection is open (see
            // `words`), and is only ever loaded from.
            unsafe { AtomicU32::from_ptr(self.words.add(i).cast_mut()) }.load(Ordering::Acquire)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sqlite::{Fold, Store, checkpoint};

    fn held() -> bool {
        READER.with(|cell| {
            cell.borrow()
                .as_ref()
                .is_some_and(|r| r.held_since.is_some())
        })
    }

    fn count(path: &Arc<Path>) -> i64 {
        read(path, |conn| {
            Ok(conn.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))?)
        })
        .unwrap()
    }

    /// A fresh store, and another connection to it: to the reader, as good
    /// as another process (the header it watches is the same shared memory).
    fn store_and_other() -> (tempfile::TempDir, Store, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let other = Connection::open(&*store.path).unwrap();
        (dir, store, other)
    }

    /// A commit on `other`: one more account.
    fn insert(other: &Connection, n: i64) {
        other
            .execute(
                "INSERT INTO accounts (email, email_normalized, password_hash)
                 VALUES (?1, ?1, 'x')",
                [format!("u{n}@example.com")],
            )
            .unwrap();
    }

    #[test]
    fn a_held_snapshot_still_sees_every_commit_made_elsewhere() {
        let (_dir, store, other) = store_and_other();
        let path = Arc::clone(&store.path);
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
            insert(&other, n);
        }
        assert_eq!(count(&path), 5, "the last commit, seen at once");
        release();
        assert!(!held(), "released");
    }

    /// The WAL restarts from its start at a write once a checkpoint has
    /// folded it all back, unless a reader still uses it: a snapshot held
    /// from before the checkpoint would make every WAL grow for good.
    #[test]
    fn a_held_snapshot_does_not_keep_the_wal_from_restarting() {
        let (_dir, store, other) = store_and_other();
        let path = Arc::clone(&store.path);
        let passive = || checkpoint(&other, Fold::Passive).unwrap();
        for n in 0..20 {
            insert(&other, n);
        }
        count(&path);
        count(&path);
        assert!(held(), "a snapshot taken before the checkpoint");
        let done = passive();
        assert_eq!(
            (done.busy, done.folded),
            (false, done.frames),
            "all folded back: the snapshot is the newest"
        );
        // Quiet reads again: the reader moves past the checkpoint.
        count(&path);
        count(&path);
        assert!(held());
        insert(&other, 20);
        let frames = passive().frames;
        assert!(
            frames <= 3,
            "the write restarted the WAL: {frames} frames in it"
        );
        assert_eq!(count(&path), 21);
    }
}
