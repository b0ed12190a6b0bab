//! The flusher: every `log.flush.scheduler.interval.ms` it flushes the logs whose `flush.ms` has
//! come due, and every `log.flush.offset.checkpoint.interval.ms` it checkpoints the recovery
//! points, so that recovery after a crash re-reads only what was not yet on disk. The fsyncs run
//! on a blocking thread, off the async runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::clock::now_ms;

/// Runs until the process ends.
pub async fn run(broker: Arc<Broker>) {
    let period = Duration::from_millis(broker.config().log_flush_scheduler_interval_ms);
    let checkpoint_every =
        Duration::from_millis(broker.config().log_flush_offset_checkpoint_interval_ms);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    loop {
        ticker.tick().await;
        let checkpoint = last_checkpoint.elapsed() >= checkpoint_every;
        if checkpoint {
            last_checkpoint = Instant::now();
        }
        let b = broker.clone();
        match broker
            .background
            .run(move || flush_due(&b, checkpoint))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "flush failed"),
            Err(e) => tracing::error!(error = %e, "flush task panicked"),
        }
    }
}

/// Flushes every log whose `flush.ms` is due; then, if asked, checkpoints the recovery points.
pub fn flush_due(broker: &Broker, checkpoint: bool) -> std::io::Result<()> {
    for topic in broker.requests.metadata.topics() {
        for partition in broker.requests.replicas.partitions_of(&topic.name) {
            let now = now_ms();
            let mut log = partition.log();
            if log.flush_due_by_time(now) {
                log.flush(now)?;
            }
        }
    }
    if checkpoint {
        broker.logs.checkpoint_recovery_points()?;
    }
    Ok(())
}
