//! Blocking work kept off the network runtime, on dedicated threads fed by a bounded crossbeam
//! channel (DESIGN.md's choice): decompressing produced batches to validate them, timestamp
//! lookups, topic changes, flushes, retention and the log cleaner. A slow disk then delays only
//! what waits for it, and the runtime's workers (and, with the quorum, its Raft timers) never
//! block.
//!
//! A caller waits asynchronously for one of the pool's slots (its threads plus its queue),
//! then hands the job over; the job's result, or its panic, comes back to the caller.
//!
//! Invariants: at most `threads` jobs run and at most `queue_limit` more wait in the channel;
//! a sender never blocks a runtime thread (a slot is held before anything is sent); every job
//! sent runs, even after the pool is dropped (the threads drain the channel, then end).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crossbeam_channel::{bounded, Sender};
use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

pub struct WorkPool {
    jobs: Sender<Job>,
    /// One permit per job running or queued: taken before a send, so the channel never fills.
    slots: Arc<Semaphore>,
}

/// Why a job gave no result.
#[derive(Debug)]
pub enum WorkError {
    /// The job panicked; the payload is handed back so the caller can resume the panic.
    Panicked(Box<dyn Any + Send>),
}

impl std::fmt::Display for WorkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a blocking job panicked")
    }
}

impl std::error::Error for WorkError {}

impl WorkPool {
    /// Starts `threads` threads named `<name>-<n>`, with room for `queue_limit` waiting jobs.
    pub fn new(name: &str, threads: usize, queue_limit: usize) -> std::io::Result<Self> {
        assert!(threads >= 1, "a pool has a thread");
        let capacity = threads + queue_limit;
        let (jobs, receiver) = bounded::<Job>(capacity);
        for n in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    for job in receiver {
                        job();
                    }
                })?;
        }
        Ok(Self {
            jobs,
            slots: Arc::new(Semaphore::new(capacity)),
        })
    }

    /// Runs `work` on one of the pool's threads and returns what it returned, waiting (without
    /// blocking the runtime) while every slot is taken.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, WorkError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slots are never closed");
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
            drop(slot);
            let _ = done.send(outcome);
        });
        // The slot held guarantees room: this never waits.
        self.jobs
            .try_send(job)
            .unwrap_or_else(|_| unreachable!("a held slot is room in the channel"));
        match result.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(panic)) => Err(WorkError::Panicked(panic)),
            Err(_) => unreachable!("a job sent always runs and answers"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_beyond_the_threads_and_queue_wait_for_a_slot() {
        let pool = Arc::new(WorkPool::new("test", 2, 1).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release, gate) = crossbeam_channel::unbounded::<()>();
        let mut callers = Vec::new();
        for _ in 0..6 {
            let (pool, running, most, gate) =
                (pool.clone(), running.clone(), most.clone(), gate.clone());
            callers.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    gate.recv().unwrap();
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .unwrap()
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Two run, one waits in the channel, three wait for a slot.
        assert_eq!(running.load(Ordering::SeqCst), 2);
        assert_eq!(pool.slots.available_permits(), 0);
        for _ in 0..6 {
            release.send(()).unwrap();
        }
        for c in callers {
            c.await.unwrap();
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "never more than the threads at once"
        );
        assert_eq!(pool.slots.available_permits(), 3);
    }

    #[tokio::test]
    async fn a_panic_comes_back_to_its_caller_and_the_pool_serves_on() {
        let pool = WorkPool::new("test", 1, 0).unwrap();
        let outcome = pool.run(|| -> u32 { panic!("job failed") }).await;
        assert!(matches!(outcome, Err(WorkError::Panicked(_))));
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
