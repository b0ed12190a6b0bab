//! The log cleaner task: compacts the logs of `cleanup.policy=compact` topics in the background.
//!
//! One pass visits every compacted partition and cleans those due (dirty ratio at least
//! `min.cleanable.dirty.ratio`, or a record older than `max.compaction.lag.ms`), dirtiest first,
//! on a blocking thread, with one key-to-offset map of `log.cleaner.dedupe.buffer.size` reused by
//! every clean. After a pass that cleaned, the cleaner checkpoint is written. When nothing was due
//! it sleeps `log.cleaner.backoff.ms`.
//!
//! A partition whose clean fails (an unreadable batch, a storage error) is logged and left alone
//! until the broker restarts, as Kafka marks such a partition uncleanable; produce and fetch on it
//! go on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::clock::now_ms;
use quipu_storage::log::cleaner::clean_log;
use quipu_storage::log::offset_map::OffsetMap;

/// Runs until the process ends.
pub async fn run(broker: Arc<Broker>) {
    if !broker.config().log_cleaner_enable {
        return;
    }
    let backoff = Duration::from_millis(broker.config().log_cleaner_backoff_ms);
    let mut state = Some(Cleaner {
        map: OffsetMap::with_memory_bytes(broker.config().log_cleaner_dedupe_buffer_size),
        uncleanable: HashSet::new(),
    });
    loop {
        let b = broker.clone();
        let mut cleaner = state.take().expect("the cleaner state is handed back");
        let pass = broker
            .cleaner
            .run(move || {
                let cleaned = cleaner.pass(&b);
                (cleaner, cleaned)
            })
            .await;
        match pass {
            Ok((cleaner, cleaned)) => {
                state = Some(cleaner);
                if cleaned {
                    continue;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "log cleaner panicked: compaction stops");
                return;
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

struct Cleaner {
    map: OffsetMap,
    /// Partitions whose clean failed, as (topic, partition).
    uncleanable: HashSet<(String, i32)>,
}

impl Cleaner {
    /// Cleans every compacted partition that is due, dirtiest first. Returns whether any was.
    fn pass(&mut self, broker: &Broker) -> bool {
        let now = now_ms();
        let mut due = Vec::new();
        for topic in broker.requests.metadata.topics() {
            for partition in broker.requests.replicas.partitions_of(&topic.name) {
                let id = (topic.name.to_string(), partition.index());
                if self.uncleanable.contains(&id) {
                    continue;
                }
                let plan = partition.log().clean_plan(now);
                if let Some(plan) = plan.filter(|p| p.is_due(now)) {
                    due.push((plan.dirty_ratio(), topic.clone(), partition.index()));
                }
            }
        }
        due.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut cleaned = false;
        for (ratio, topic, index) in due {
            let Some(partition) = broker.requests.replicas.partition(&topic.name, index) else {
                continue; // deleted since
            };
            let started = std::time::Instant::now();
            match clean_log(|| partition.log(), &mut self.map, now_ms()) {
                Ok(Some(stats)) => {
                    cleaned = true;
                    tracing::info!(topic = %topic.name, partition = index, dirty_ratio = ratio,
                        segments_before = stats.segments_before, segments_after = stats.segments_after,
                        bytes_before = stats.bytes_before, bytes_after = stats.bytes_after,
                        records_removed = stats.records_removed, cleaned_to = stats.cleaned_to,
                        interrupted = stats.interrupted, elapsed_ms = started.elapsed().as_millis() as u64,
                        "cleaned log");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = index, error = %e,
                        "log cleaning failed: the partition is not cleaned again until restart");
                    self.uncleanable.insert((topic.name.to_string(), index));
                }
            }
        }
        if cleaned {
            if let Err(e) = broker.logs.checkpoint_cleaner_offsets() {
                tracing::error!(error = %e, "cannot checkpoint cleaner offsets");
            }
        }
        cleaned
    }
}
