//! The hashing pool: a few low-priority threads with a bounded queue, where
//! all bcrypt work runs. Keeping it off tokio's threads (and off tokio's
//! blocking pool, which database calls use) means a flood of signups can
//! never make `/api/auth/me` wait for a thread; the lower OS priority means it
//! does not wait for CPU either.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not run.
#[derive(Debug, PartialEq, Eq)]
pub enum HashError {
    /// The queue is full: shed the request instead of piling up latency.
    Busy,
    /// The pool is gone (a worker panicked).
    Unavailable,
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    queue: SyncSender<Job>,
}

/// Nice value of hashing threads: the lowest priority, so request threads win
/// the CPU at once, while idle cycles still go to hashing.
const NICE: libc::c_int = 19;

impl Hasher {
    /// Starts `workers` threads sharing a queue of at most `queue_len` waiting jobs.
    pub fn start(workers: usize, queue_len: usize) -> Hasher {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue_len);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            thread::Builder::new()
                .name(format!("hasher-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawning a thread at startup only fails when the OS is out of resources");
        }
        Hasher { queue: tx }
    }

    /// Runs `work` on the pool and waits for its result, or fails at once
    /// with `Busy` when the queue is full.
    pub async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The client gave up while queued: skip the CPU work.
            if !tx.is_closed() {
                let _ = tx.send(work());
            }
        });
        match self.queue.try_send(job) {
            Ok(()) => rx.await.map_err(|_| HashError::Unavailable),
            Err(TrySendError::Full(_)) => Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(HashError::Unavailable),
        }
    }
}

/// Linux keeps nice values per thread, so this lowers only the calling one.
fn lower_priority() {
    // SAFETY: setpriority has no memory-safety preconditions; `0` means the
    // calling thread. Failure (e.g. a seccomp filter) only costs priority.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if rc != 0 {
        tracing::warn!("could not lower the priority of a hashing thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[tokio::test]
    async fn runs_work_and_returns_its_result() {
        let hasher = Hasher::start(2, 4);
        assert_eq!(hasher.run(|| 6 * 7).await, Ok(42));
    }

    // Multi-threaded: the test thread blocks on std channels.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_queue_answers_busy_at_once() {
        let hasher = Hasher::start(1, 1);
        let (release_tx, release_rx) = channel::<()>();
        let (started_tx, started_rx) = channel::<()>();
        // Occupy the only worker until released.
        let blocker = {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                hasher
                    .run(move || {
                        started_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                    })
                    .await
            })
        };
        started_rx.recv().unwrap();
        // Fill the queue behind it with a job that reports when it runs.
        let (ran_tx, ran_rx) = channel::<()>();
        let queued: Job = Box::new(move || ran_tx.send(()).unwrap());
        hasher
            .queue
            .try_send(queued)
            .unwrap_or_else(|_| panic!("queue has one slot"));
        assert_eq!(hasher.run(|| 2).await, Err(HashError::Busy));
        // Once the worker is free, queued work still runs.
        release_tx.send(()).unwrap();
        assert_eq!(blocker.await.unwrap(), Ok(()));
        ran_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
    }
}
