//! The hashing pool: a few low-priority threads with a bounded queue, where
//! all bcrypt work runs. Keeping it off tokio's threads (and off tokio's
//! blocking pool, which database calls use) means a flood of signups can
//! never make `/api/auth/me` wait for a thread; the lower OS priority means it
//! does not wait for CPU either.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::oneshot;

use crate::password;

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
    /// Jobs admitted and not yet finished (running + waiting).
    admitted: Arc<AtomicUsize>,
    /// Most jobs admitted at once: workers + waiting slots.
    capacity: usize,
}

/// Nice value of hashing threads: the lowest priority, so request threads win
/// the CPU at once, while idle cycles still go to hashing.
const NICE: libc::c_int = 19;

impl Hasher {
    /// Starts `workers` threads sharing a queue of at most `queue_len` waiting jobs.
    pub fn start(workers: usize, queue_len: usize) -> Hasher {
        let workers = workers.max(1);
        let capacity = workers + queue_len;
        // Admission is counted in `run`, so the channel never fills up first.
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
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
                            // A panicking job must not take the thread with
                            // it; its slot is freed as the job unwinds.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawning a thread at startup only fails when the OS is out of resources");
        }
        Hasher {
            queue: tx,
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Jobs waiting for a thread or running now.
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Runs `work` on the pool and waits for its result, or fails at once
    /// with `Busy` when the queue is full.
    pub async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let (tx, rx) = oneshot::channel();
        let slot = Slot(Arc::clone(&self.admitted));
        let job: Job = Box::new(move || {
            let started = std::time::Instant::now();
            // The client gave up while queued: skip the CPU work.
            let result = (!tx.is_closed()).then(work);
            if result.is_some() {
                crate::telemetry::bcrypt(started.elapsed());
            }
            // Free the slot before answering, so a caller that has its answer
            // can count on the slot (this low-priority thread may be
            // descheduled for a while right after sending).
            drop(slot);
            if let Some(result) = result {
                let _ = tx.send(result);
            }
        });
        // A job that is not sent is dropped here, freeing its slot.
        match self.queue.try_send(job) {
            Ok(()) => rx.await.map_err(|_| HashError::Unavailable),
            Err(TrySendError::Full(_)) => Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(HashError::Unavailable),
        }
    }
}

/// One admitted job's place in the pool, given back when dropped: after the
/// work, or if the job never runs (not sent, or its worker panicked).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

/// A bcrypt hash to verify against when an account does not exist, so that
/// answer takes as long as a wrong password. Computed in the background from
/// startup (a quarter second at cost 12) on a thread of its own at the
/// hashing threads' low priority, so the server answers at once and no
/// signup is shed for it; a rotation that needs it sooner waits for it.
#[derive(Clone)]
pub struct DummyHash {
    hash: Shared<BoxFuture<'static, Option<Arc<str>>>>,
}

impl DummyHash {
    /// Starts computing the hash at `cost`.
    pub fn prepare(cost: u32) -> DummyHash {
        let (done, hash) = oneshot::channel();
        let spawned = thread::Builder::new()
            .name("dummy-hash".into())
            .spawn(move || {
                lower_priority();
                let _ = done.send(password::dummy_hash(cost).ok().map(Arc::from));
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the dummy-hash thread");
        }
        DummyHash {
            hash: hash.map(|h| h.ok().flatten()).boxed().shared(),
        }
    }

    /// The hash, waiting for it if it is still being computed.
    pub async fn get(&self) -> Result<Arc<str>, HashError> {
        self.hash.clone().await.ok_or(HashError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[tokio::test]
    async fn the_dummy_hash_is_at_the_configured_cost() {
        // Else an unknown email would answer in another time than a wrong
        // password, and tell which emails exist.
        let hash = DummyHash::prepare(5).get().await.unwrap();
        assert!(hash.starts_with("$2b$05$"), "{hash}");
    }

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
        // One waiting slot: this job is admitted behind the blocker.
        let (ran_tx, ran_rx) = channel::<()>();
        let queued = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run(move || ran_tx.send(()).unwrap()).await })
        };
        while hasher.in_flight() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(hasher.run(|| 2).await, Err(HashError::Busy));
        // Once the worker is free, queued work runs and the pool serves again.
        release_tx.send(()).unwrap();
        assert_eq!(blocker.await.unwrap(), Ok(()));
        assert_eq!(queued.await.unwrap(), Ok(()));
        ran_rx.recv().unwrap();
        assert_eq!(hasher.run(|| 1).await, Ok(1));
    }
}
