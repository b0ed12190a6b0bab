//! The retention task: every `log.retention.check.interval.ms` it deletes the closed segments that
//! `retention.ms` or `retention.bytes` no longer keep, off the async runtime, checkpoints the
//! log start offsets that moved, and forgets idempotent producers whose batches are gone or that
//! were silent longer than `producer.id.expiration.ms` (which bounds each partition's producer
//! state).

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::clock::now_ms;

/// Runs until the process ends.
pub async fn run(broker: Arc<Broker>) {
    let period = Duration::from_millis(broker.config().log_retention_check_interval_ms);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let b = broker.clone();
        match broker.background.run(move || apply(&b)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
            Err(e) => tracing::error!(error = %e, "retention task panicked"),
        }
    }
}

/// One pass over every partition.
pub fn apply(broker: &Broker) -> std::io::Result<()> {
    let mut moved = false;
    for topic in broker.requests.metadata.topics() {
        for partition in broker.requests.replicas.partitions_of(&topic.name) {
            let mut log = partition.log();
            let deleted = log.apply_retention(now_ms())?;
            let expired = log.expire_producers(now_ms(), broker.config().producer_id_expiration_ms);
            drop(log);
            if expired > 0 {
                tracing::info!(topic = %topic.name, partition = partition.index(), producers = expired, "expired idempotent producers");
            }
            if !deleted.is_empty() {
                moved = true;
                tracing::info!(topic = %topic.name, partition = partition.index(), segments = ?deleted,
                    log_start_offset = partition.log().log_start_offset(), "retention deleted segments");
            }
        }
    }
    if moved {
        broker.logs.checkpoint_log_start_offsets()?;
    }
    Ok(())
}
