//! `outbox-worker run`: wires the pipeline, the listener, the reclaimer, the sampler and
//! the metrics endpoint together, and owns the shutdown: on SIGTERM/SIGINT stop claiming,
//! let in-flight bulks finish within OUTBOX_SHUTDOWN_GRACE_SECONDS, release what is still
//! claimed (attempt refunded) and return. A second signal exits at once.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    bulk::client::BulkClient,
    config::{Config, DeleteRecords, Discovery, NotifyMode, Sink as SinkKind},
    db, deletes, listener,
    metrics::{self, Health},
    pipeline::{NullSink, Pipeline, Sink},
    reclaim, rotation, sampler,
    wake::Waker,
};

/// Run until `shutdown` is cancelled; then drain gracefully and return.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    // One connection per bulk in flight (its outcomes), the claims running ahead, and the
    // reclaimer, the sampler, the rotation, the idle checks and the delete records' prune.
    let pool_size = cfg.concurrency + crate::pipeline::CLAIMS_AHEAD + 5;
    let pool = db::pool(&cfg, pool_size).context("database pool")?;
    // Fail fast on an unreachable database or a missing schema: one clear line.
    {
        let c = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => {
                anyhow::anyhow!("cannot connect to the database: {}", db::error_text(&e))
            }
            other => anyhow::anyhow!("cannot connect to the database: {other}"),
        })?;
        // outbox_piece_ends exists from schema 0004 (insert-only pieces) on: an older schema
        // gets the same line as a missing one.
        c.query_one(
            "SELECT count(*) FROM outbox_events, outbox_cursors, outbox_piece_ends WHERE false",
            &[],
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the outbox's tables are missing or older than this worker ({}): run `outbox-worker migrate` first",
                db::error_text(&e)
            )
        })?;
    }
    let client = BulkClient::new(&cfg)?;
    let health = Arc::new(Health::default());
    health
        .listen_required
        .store(cfg.notify_mode != NotifyMode::Off, Ordering::Relaxed);
    let waker = Waker::default();
    let tasks = CancellationToken::new();

    if let (Some(addr), Some(handle)) = (cfg.metrics_addr, prometheus) {
        let (h, p, c) = (health.clone(), pool.clone(), client.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on OUTBOX_METRICS_ADDR={addr}"))?;
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, handle, h, p, c).await {
                warn!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    if cfg.notify_mode != NotifyMode::Off {
        tokio::spawn(listener::run(
            cfg.clone(),
            waker.clone(),
            health.clone(),
            tasks.clone(),
        ));
    }
    tokio::spawn(reclaim::run(
        cfg.clone(),
        pool.clone(),
        waker.clone(),
        tasks.clone(),
    ));
    tokio::spawn(sampler::run(cfg.clone(), pool.clone(), tasks.clone()));
    if cfg.sink == SinkKind::Elasticsearch {
        tokio::spawn(client.clone().probe_down_nodes(tasks.clone()));
        if cfg.elasticsearch_discovery == Discovery::Nodes {
            tokio::spawn(client.clone().discover_nodes(tasks.clone()));
        }
    }
    tokio::spawn(rotation::run(pool.clone(), tasks.clone()));
    if cfg.delete_records == DeleteRecords::On {
        tokio::spawn(deletes::run(cfg.clone(), pool.clone(), tasks.clone()));
    }

    let sink: Box<dyn Sink> = match cfg.sink {
        SinkKind::Elasticsearch => Box::new(client),
        SinkKind::Null => Box::new(NullSink),
    };
    let pipeline = Pipeline::new(cfg.clone(), pool.clone(), sink, waker, tasks.clone());
    info!(
        worker_id = %cfg.worker_id,
        projection = %cfg.projection,
        concurrency = cfg.concurrency,
        bulk_size = cfg.bulk_size,
        notify_mode = cfg.notify_mode.as_str(),
        "worker started"
    );
    let mut run = tokio::spawn(pipeline.clone().run());

    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut run => {
            r.context("pipeline task")?;
            return Ok(());
        }
    }
    info!(
        grace_seconds = cfg.shutdown_grace.as_secs_f64(),
        inflight = pipeline.inflight_count(),
        "shutting down: no new claims; waiting for in-flight bulks"
    );
    tasks.cancel();
    match tokio::time::timeout(cfg.shutdown_grace, &mut run).await {
        Ok(r) => r.context("pipeline task")?,
        Err(_) => {
            warn!(
                inflight = pipeline.inflight_count(),
                "grace period over: abandoning in-flight bulks and releasing their events"
            );
            run.abort();
            let _ = run.await;
            pipeline.finish().await;
        }
    }
    info!("worker stopped");
    Ok(())
}

/// A token cancelled by the first SIGTERM/SIGINT; a second one exits the process at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        info!("signal received: graceful shutdown (send it again to exit at once)");
        t.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        warn!(
            "second signal: exiting now; leases will expire and the reclaimer will recover claimed events"
        );
        std::process::exit(130);
    });
    token
}

/// How long a clean stop may take at most (for scripts that wait on it).
pub fn max_stop_time(cfg: &Config) -> Duration {
    cfg.shutdown_grace + Duration::from_secs(5)
}
