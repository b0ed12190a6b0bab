//! Blocking work over many partitions (opening and recovering logs at start, closing them at
//! shutdown, making a new topic's partitions) spread over a few threads, as Kafka's
//! `num.recovery.threads.per.data.dir` pool does: the work waits on the disk far more than on
//! the CPU, so a few threads finish it several times sooner than one.
//!
//! Invariants: results come back in the order of the inputs; at most `threads` run at once; the
//! calling thread waits for all of them (scoped threads), so nothing outlives the call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `work` applied to every item, on at most `threads` threads; the results in input order.
pub fn map<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let count = items.len();
    let threads = threads.clamp(1, count.max(1));
    if threads == 1 {
        return items.into_iter().map(work).collect();
    }
    let inputs: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let outputs: Vec<Mutex<Option<R>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let item = inputs[i]
                    .lock()
                    .expect("input lock")
                    .take()
                    .expect("taken once");
                let result = work(item);
                *outputs[i].lock().expect("output lock") = Some(result);
            });
        }
    });
    outputs
        .into_iter()
        .map(|o| {
            o.into_inner()
                .expect("output lock")
                .expect("every item ran")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_input_order_whatever_the_threads() {
        for threads in [1, 2, 7, 100] {
            let out = map((0..50).collect(), threads, |i: u32| {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(50 - i)));
                i * 2
            });
            assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        }
        assert!(map(Vec::<u8>::new(), 4, |x| x).is_empty());
    }
}
