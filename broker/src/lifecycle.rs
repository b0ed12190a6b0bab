//! A broker's life: open its state from the data directory, start the background tasks
//! (retention, flusher, log cleaner, group timers), serve connections until the shutdown future
//! resolves, then stop the tasks and close the logs.
//!
//! Used by the `quipu` binary and by tests that run a broker inside their own process.

use std::future::Future;
use std::sync::Arc;

use crate::broker::Broker;
use crate::commit_log::MetadataLog;
use crate::request_context::RequestContext;

/// How long a broker of a cluster waits at shutdown for the quorum to fence it.
const CONTROLLED_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a broker on `listener` until `shutdown` resolves.
pub async fn run(
    config: quipu_config::BrokerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let bound = listener.local_addr()?;
    let data_dir = config.log_dirs.clone();
    let broker = Arc::new(tokio::task::block_in_place(|| {
        Broker::open(config, bound.port())
    })?);
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<String>(1);
    let mut tasks = cluster_tasks(&broker, stop_tx);
    tracing::info!(listen = %bound, data_dir = %data_dir.display(), cluster_id = %broker.requests.identity.cluster_id, topics = broker.requests.metadata.topics().len(), "quipu broker started");
    tasks.push(tokio::spawn(crate::retention::run(broker.clone())));
    tasks.push(tokio::spawn(crate::flusher::run(broker.clone())));
    tasks.push(tokio::spawn(crate::log_cleaner::run(broker.clone())));
    tasks.push(tokio::spawn(run_group_timers(broker.requests.clone())));
    let mut fatal = None;
    let until = async {
        tokio::select! {
            () = shutdown => {}
            Some(reason) = stop_rx.recv() => {
                tracing::error!(%reason, "stopping");
                fatal = Some(reason);
            }
        }
    };
    // A controller-only node serves no clients.
    if broker.config().is_broker() {
        crate::server::serve(broker.requests.clone(), listener, until).await;
    } else {
        drop(listener);
        until.await;
    }
    stop(&broker, tasks).await;
    match fatal {
        Some(reason) => Err(anyhow::anyhow!(reason)),
        None => Ok(()),
    }
}

/// A cluster node's own tasks: a broker's registration (which sends `stop` the reason the
/// node must stop, if it must), heartbeats, replication, and its stop when its log directory
/// fails; a controller's fencing and leader rebalance. A single node registered
/// as it opened and is never fenced: it is the whole cluster.
fn cluster_tasks(
    broker: &Arc<Broker>,
    stop: tokio::sync::mpsc::Sender<String>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if broker.quorum.is_single_node() {
        return tasks;
    }
    if broker.config().is_broker() {
        let (quorum, me) = (broker.quorum.clone(), registration_of(broker));
        let stop_on_failure = stop.clone();
        let ctx = broker.requests.clone();
        tasks.push(tokio::spawn(async move {
            match quorum.register(me).await {
                Ok(epoch) => catch_up(&ctx, epoch).await,
                Err(reason) => {
                    let _ = stop.send(reason).await;
                }
            }
        }));
        let node_id = broker.config().node_id;
        tasks.push(tokio::spawn(broker.quorum.clone().run_heartbeats(node_id)));
        tasks.extend(replication_tasks(broker));
        let failures = broker.requests.replicas.storage_failures();
        tasks.push(tokio::spawn(async move {
            failures.notified().await;
            let reason = "the log directory failed (a storage error): stopping, so that the partitions' leadership moves to replicas on working disks";
            let _ = stop_on_failure.send(reason.to_string()).await;
        }));
    }
    if broker.config().is_controller() {
        tasks.push(tokio::spawn(broker.quorum.clone().run_fencing()));
        if broker.config().auto_leader_rebalance_enable {
            tasks.push(tokio::spawn(rebalance_leaders(broker.requests.clone())));
        }
    }
    tasks
}

/// As the active controller, every `leader.imbalance.check.interval.seconds`, moves leadership
/// back to preferred replicas where a broker leads too few of its own (off the runtime).
async fn rebalance_leaders(ctx: Arc<RequestContext>) {
    let period = std::time::Duration::from_secs(ctx.config.leader_imbalance_check_interval_seconds);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if ctx.quorum.leader_id() != Some(ctx.config.node_id) {
            continue;
        }
        let percentage = ctx.config.leader_imbalance_per_broker_percentage;
        let moved = ctx
            .off_runtime({
                let ctx = ctx.clone();
                move || ctx.controller.rebalance_leaders(percentage)
            })
            .await;
        match moved {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(partitions = n, "preferred leaders elected"),
            other => {
                crate::warn_limited!(outcome = ?other.map(|r| r.map_err(|e| e.to_string())), "preferred leader rebalance failed")
            }
        }
    }
}

/// Waits until this broker's image holds its registration at `broker_epoch` (and so every
/// record committed before it), then lets its partitions lead.
async fn catch_up(ctx: &RequestContext, broker_epoch: i64) {
    let node_id = ctx.config.node_id;
    loop {
        let registered = ctx.metadata.image().broker(node_id).map(|b| b.broker_epoch);
        if registered.is_some_and(|e| e >= broker_epoch) {
            ctx.replicas.set_caught_up();
            ctx.groups.take_up_after_catch_up(&ctx.metadata.image());
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A cluster broker's replication: its fetchers (as follower), its in-sync set proposals (as
/// leader), and the high-watermark checkpoint.
fn replication_tasks(broker: &Arc<Broker>) -> Vec<tokio::task::JoinHandle<()>> {
    let ctx = &broker.requests;
    let fetchers = crate::replica_fetcher::ReplicaFetchers::new(
        &ctx.config,
        ctx.replicas.clone(),
        ctx.metadata.clone(),
    );
    let isr = crate::alter_partition_manager::run(
        ctx.replicas.clone(),
        ctx.metadata.clone(),
        broker.quorum.clone(),
        ctx.config.replica_lag_time_max_ms,
    );
    vec![
        tokio::spawn(fetchers.run()),
        tokio::spawn(isr),
        tokio::spawn(checkpoint_high_watermarks(broker.clone())),
    ]
}

/// Every `replica.high.watermark.checkpoint.interval.ms`, the hosted partitions' high
/// watermarks to `replication-offset-checkpoint` (off the runtime: it fsyncs).
async fn checkpoint_high_watermarks(broker: Arc<Broker>) {
    let period = broker
        .config()
        .replica_high_watermark_checkpoint_interval_ms;
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(period));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let replicas = broker.requests.replicas.clone();
        let written = broker
            .background
            .run(move || replicas.checkpoint_high_watermarks())
            .await;
        if !matches!(written, Ok(Ok(()))) {
            crate::warn_limited!(outcome = ?written, "cannot checkpoint the high watermarks");
        }
    }
}

/// Controlled shutdown (a cluster's broker), then the tasks, the quorum and the logs stopped.
async fn stop(broker: &Broker, tasks: Vec<tokio::task::JoinHandle<()>>) {
    if !broker.quorum.is_single_node() && broker.config().is_broker() {
        broker
            .quorum
            .shut_down_broker(broker.config().node_id, CONTROLLED_SHUTDOWN_TIMEOUT)
            .await;
    }
    for task in tasks {
        task.abort();
    }
    if let Err(e) = broker.quorum.raft.shutdown().await {
        tracing::warn!(error = %e, "the quorum did not stop cleanly");
    }
    if let Err(e) = broker.requests.replicas.checkpoint_high_watermarks() {
        tracing::warn!(error = %e, "cannot checkpoint the high watermarks");
    }
    tracing::info!("shutting down: closing logs");
    if broker.logs.close(crate::clock::now_ms()) {
        tracing::info!("shut down cleanly");
    } else {
        tracing::error!("shut down with errors: the next start recovers the logs");
    }
}

/// What this broker registers with: its id, cluster, a new incarnation id, and the address
/// clients are told to use.
fn registration_of(broker: &Broker) -> crate::quorum::broker_api::Registration {
    let identity = &broker.requests.identity;
    crate::quorum::broker_api::Registration {
        node_id: broker.config().node_id,
        cluster_id: identity.cluster_id.clone(),
        incarnation: uuid::Uuid::new_v4(),
        host: identity.advertised_host.clone(),
        port: identity.advertised_port,
        rack: broker.config().broker_rack.clone(),
    }
}

/// The coordinator's timers: sessions and rebalances every 100 ms, offset expiry every
/// `offsets.retention.check.interval.ms`. Runs until the process ends.
async fn run_group_timers(ctx: Arc<RequestContext>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expiry_period =
        std::time::Duration::from_millis(ctx.config.offsets_retention_check_interval_ms);
    let mut last_expiry = std::time::Instant::now();
    loop {
        ticker.tick().await;
        ctx.groups.tick();
        if last_expiry.elapsed() >= expiry_period {
            last_expiry = std::time::Instant::now();
            ctx.groups.expire_offsets(crate::clock::now_ms());
        }
    }
}
