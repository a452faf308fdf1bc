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
//! - each write has its own outcome: every job is ONE data-changing statement
//!   (plus reads), which SQLite applies or refuses as a whole, so a refused
//!   write (a duplicate email, a spent-out key) leaves its neighbours alone;
//! - a lone write commits at once: the writer never waits for company;
//! - batches are bounded (`MAX_BATCH`), and so is the queue.

use std::panic::AssertUnwindSafe;
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

/// Told the outcome of the batch's COMMIT; answers the caller.
type Done = Box<dyn FnOnce(&Result<(), DbError>) + Send>;
/// One write: runs on the writer's connection inside the open transaction,
/// or, given `None`, is refused without running.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Done + Send>;

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
        // inside a commit they would stall every write of that batch, so the
        // writer never checkpoints and a thread of their own does, beside it.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (queue, jobs) = mpsc::channel(QUEUE);
        let (writer_alive, stopped) = std::sync::mpsc::channel::<()>();
        let cannot = |e: std::io::Error| DbError(format!("cannot start the database writer: {e}"));
        std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || checkpoint_until(&checkpoints, &stopped))
            .map_err(cannot)?;
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || {
                run(&conn, jobs);
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
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = match conn {
                Some(conn) => write(conn),
                None => Err(DbError("the write transaction could not be opened".into())),
            };
            Box::new(move |committed| {
                let result = match committed {
                    Ok(()) => outcome,
                    Err(e) => Err(DbError(format!("commit failed: {e}"))),
                };
                let _ = answer.send(result);
            })
        });
        self.queue
            .send(job)
            .await
            .map_err(|_| DbError("the database writer has stopped".into()))?;
        answered
            .await
            .map_err(|_| DbError("the database writer dropped a write".into()))?
    }
}

/// The checkpointer: a PASSIVE checkpoint every `CHECKPOINT_EVERY`, which
/// runs beside the writer (WAL lets it) and keeps the WAL file small, until
/// the writer is gone.
fn checkpoint_until(conn: &Connection, writer_gone: &std::sync::mpsc::Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = writer_gone.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

/// The writer thread: waits for a first job, takes what else is queued (up
/// to `MAX_BATCH`), commits them together, answers them, repeats.
fn run(conn: &Connection, mut jobs: mpsc::Receiver<Job>) {
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
        let open = began.is_ok() && !conn.is_autocommit();
        // A panicking job drops its answer (the caller gets an error) but
        // must not take the only writer down with it.
        if let Ok(d) = std::panic::catch_unwind(AssertUnwindSafe(|| job(open.then_some(conn)))) {
            done.push(d);
        }
    }
    let committed = match began {
        Err(e) => Err(DbError::from(e)),
        Ok(()) if conn.is_autocommit() => Err(DbError(
            "the transaction was rolled back by an error".into(),
        )),
        Ok(()) => conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            DbError::from(e)
        }),
    };
    if let Err(e) = &committed {
        tracing::error!(error = %e, writes = done.len(), "a write batch failed");
    }
    for d in done {
        d(&committed);
    }
}
