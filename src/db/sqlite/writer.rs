//! The one writer: a thread that owns the write connection and commits, in
//! one transaction, every write that queued up while the last one was being
//! made durable (group commit).
//!
//! Why: with `synchronous=FULL` every commit is an fsync. One transaction per
//! request caps writes at the disk's fsync rate, and concurrent writers wait
//! for SQLite's lock by sleeping in growing steps (second-long tails). One
//! thread taking whatever is queued pays one fsync per batch instead, and no
//! request ever waits on a lock sleep inside this process.
//!
//! The rules each write keeps:
//! - a request is answered only after the COMMIT of its batch returned, so a
//!   200 is on disk;
//! - each write has its own outcome: every job runs inside a SAVEPOINT of
//!   its own, rolled back if the job fails or panics, so a refused write (a
//!   duplicate email, a spent-out key) leaves its neighbours alone and never
//!   commits half of itself;
//! - a lone write commits at once: the writer never waits for company;
//! - batches are bounded (`MAX_BATCH`), and so is the queue.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::DbError;

/// Most writes committed together: enough to amortize an fsync over a
/// burst, few enough that the first in a batch is not kept long.
const MAX_BATCH: usize = 512;
/// Writes waiting for the writer at most; beyond it, callers wait (async)
/// for room instead of growing memory.
const QUEUE: usize = 8192;
/// How often the WAL is folded back into the main file. At full speed the
/// WAL grows by a few MB in this time; SQLite's own default (every 1000
/// pages) would checkpoint about as often, but inside a commit.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The WAL file's size, in bytes, that a restart of the WAL cuts it back to
/// (SQLite's `journal_size_limit`): after a burst it does not keep its peak
/// size, and below it the file is rewritten in place.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Told the outcome of the batch's COMMIT; answers the caller.
type Done = Box<dyn FnOnce(&Result<(), DbError>) + Send>;
/// One write: runs on the writer's connection inside the open transaction,
/// or, given `None`, is refused without running. Says whether it succeeded
/// (its changes are kept) and how to answer the caller.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Done) + Send>;

/// Handle to the writer thread; cheap to clone. The thread ends when the
/// last handle is dropped, after committing what was queued.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer on `conn` and the checkpointer on `checkpoints`,
    /// two open, configured connections to the same file.
    pub(super) fn start(conn: Connection, checkpoints: Connection) -> Result<Writer, DbError> {
        // Checkpoints copy the WAL back into the main file and fsync it: done
        // inside a commit they would stall every write of that batch, so a
        // thread of their own does them, beside the writer, and the writer
        // only folds back, between batches, the little left after each (`run`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let (queue, jobs) = mpsc::channel(QUEUE);
        let (writer_alive, stopped) = std::sync::mpsc::channel::<()>();
        let checkpointed = Arc::new(AtomicBool::new(false));
        let cannot = |e: std::io::Error| DbError::caused("cannot start the database writer", e);
        let told = Arc::clone(&checkpointed);
        std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || checkpoint_until(&checkpoints, &stopped, &told))
            .map_err(cannot)?;
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || {
                run(&conn, jobs, &checkpointed);
                drop(writer_alive);
            })
            .map_err(cannot)?;
        Ok(Writer { queue })
    }

    /// Runs `write` in the next batch and returns its result once that batch
    /// is committed (or the error that kept it from committing).
    pub(super) async fn write<T, F>(&self, write: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        // A snapshot held across the write would keep its WAL frames from
        // being folded back (see `reader`); the next read takes a fresh one.
        super::reader::release();
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = match conn {
                Some(conn) => write(conn),
                None => Err(DbError::new("the write transaction could not be opened")),
            };
            let succeeded = outcome.is_ok();
            let done: Done = Box::new(move |committed| {
                let result = match committed {
                    Ok(()) => outcome,
                    // Every write of the batch shares the one failure.
                    Err(e) => Err(DbError::new(format!(
                        "commit failed: {}",
                        crate::report::Chain(e)
                    ))),
                };
                let _ = answer.send(result);
            });
            (succeeded, done)
        });
        self.queue
            .send(job)
            .await
            .map_err(|_| DbError::new("the database writer has stopped"))?;
        answered
            .await
            .map_err(|_| DbError::new("the database writer dropped a write"))?
    }
}

/// The checkpointer: a PASSIVE checkpoint every `CHECKPOINT_EVERY`, which
/// runs beside the writer (WAL lets it) and does the bulk of folding the WAL
/// back into the main file, until the writer is gone. After one that folded
/// back all it found, it tells the writer (`checkpointed`) to fold back the
/// rest (see `run`): only what was committed while it ran. After one that
/// a reader or another checkpoint held back, it does not, so the bulk of
/// the work never lands on the writer.
fn checkpoint_until(
    conn: &Connection,
    writer_gone: &std::sync::mpsc::Receiver<()>,
    checkpointed: &AtomicBool,
) {
    while let Err(RecvTimeoutError::Timeout) = writer_gone.recv_timeout(CHECKPOINT_EVERY) {
        if checkpoint(conn) {
            checkpointed.store(true, Ordering::Release);
        }
    }
}

/// One PASSIVE checkpoint: folds back what no reader still needs, waits for
/// nobody. True if it folded back the whole WAL it found; false if another
/// checkpoint was running, a reader held frames back, or it failed (logged).
/// The next one retries.
fn checkpoint(conn: &Connection) -> bool {
    match super::checkpoint(conn, super::Fold::Passive) {
        Ok(done) => done.complete(),
        Err(e) => {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
            false
        }
    }
}

/// The writer thread: waits for a first job, takes what else is queued (up
/// to `MAX_BATCH`), commits them together, answers them, repeats.
///
/// After each checkpoint of the checkpointer's that folded back all it found,
/// it folds back, between two batches, the frames committed while that
/// checkpoint ran. SQLite starts the WAL over from its first byte only at a
/// write that begins with all of it folded back (and while no reader is
/// reading from it), which a checkpointer beside a writer that never pauses
/// never achieves: under a steady stream of writes the WAL grew
/// without end (68 MB in 7 s of spends at 8 connections), and every commit
/// extended the file, whose fsync (210 µs at the median on the benchmark
/// machine) costs half again as much as rewriting blocks in place (145 µs).
/// Starting over, the same load ran at 15-19k spends/s instead of 10-12k.
/// The price, at most once per `CHECKPOINT_EVERY`: the writer's checkpoint
/// fsyncs the WAL and the main file, and the commit that starts the WAL over
/// fsyncs its new header.
fn run(conn: &Connection, mut jobs: mpsc::Receiver<Job>, checkpointed: &AtomicBool) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(conn, &mut batch);
        if checkpointed.swap(false, Ordering::Acquire) {
            checkpoint(conn);
        }
    }
}

/// Runs one savepoint statement; false (logged) if SQLite refused it.
fn savepoint(conn: &Connection, statement: &str) -> bool {
    match conn
        .prepare_cached(statement)
        .and_then(|mut s| s.execute([]))
    {
        Ok(_) => true,
        Err(e) => {
            // WARN: the request it fails answers 500 and logs that at ERROR.
            tracing::warn!(error = %e, statement, "savepoint failed");
            false
        }
    }
}

/// One transaction for `batch`, which it empties; every job is answered
/// after the COMMIT, with its own result or the commit's error.
fn commit(conn: &Connection, batch: &mut Vec<Job>) {
    let began = conn.execute_batch("BEGIN IMMEDIATE");
    let mut done: Vec<Done> = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        // An I/O error or a full disk can roll the whole transaction back;
        // after that a statement would commit on its own, outside the batch,
        // so nothing more runs.
        let open = began.is_ok() && !conn.is_autocommit() && savepoint(conn, "SAVEPOINT job");
        // A panicking job drops its answer (the caller gets an error) but
        // must not take the only writer down with it.
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(open.then_some(conn))));
        let keep = matches!(ran, Ok((true, _)));
        if open && !conn.is_autocommit() {
            if !keep {
                savepoint(conn, "ROLLBACK TO job");
            }
            savepoint(conn, "RELEASE job");
        }
        if let Ok((_, d)) = ran {
            done.push(d);
        }
    }
    let committed = match began {
        Err(e) => Err(DbError::from(e)),
        Ok(()) if conn.is_autocommit() => {
            Err(DbError::new("the transaction was rolled back by an error"))
        }
        Ok(()) => conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            DbError::from(e)
        }),
    };
    if let Err(e) = &committed {
        // WARN: each request of the batch answers 500 with this cause and
        // logs it at ERROR in its own span.
        tracing::warn!(error = %crate::report::Chain(e), writes = done.len(), "a write batch failed");
    }
    for d in done {
        d(&committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .unwrap();
        conn
    }

    fn insert(conn: &Connection, x: i64) -> Result<(), DbError> {
        conn.execute("INSERT INTO t VALUES (?1)", [x])?;
        Ok(())
    }

    #[test]
    fn a_failed_or_panicking_write_keeps_none_of_its_changes_and_its_neighbours_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        open(&path).execute_batch("CREATE TABLE t(x)").unwrap();
        let writer = Writer::start(open(&path), open(&path)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();

        let (kept, failed, panicked, after) = runtime.block_on(async {
            tokio::join!(
                writer.write(|c| insert(c, 1)),
                writer.write(|c| {
                    insert(c, 2)?;
                    Err::<(), _>(DbError::new("refused after writing"))
                }),
                writer.write(|c| -> Result<(), DbError> {
                    insert(c, 3).unwrap();
                    panic!("a bug after writing")
                }),
                writer.write(|c| insert(c, 4)),
            )
        });

        assert!(kept.is_ok() && after.is_ok());
        assert!(failed.is_err() && panicked.is_err());
        let rows: Vec<i64> = open(&path)
            .prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [1, 4]);
    }
}
