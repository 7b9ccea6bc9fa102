//! The reclaimer: every OUTBOX_RECLAIM_INTERVAL_SECONDS, stuck events (processing with an
//! expired lease, or for longer than OUTBOX_MAX_PROCESSING_SECONDS) go back to pending, or
//! to failed / lease_expired at the attempt limit. Then the pipeline is woken.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::Config,
    db::DbError,
    metrics as m, sql,
    store::{db_error, waiting},
    wake::{WakeSource, Waker},
};

/// Rows per reclaim statement; the reclaimer loops until a statement returns fewer.
const BATCH: i64 = 1000;

#[derive(Debug, Default, Clone)]
pub struct ReclaimReport {
    pub to_pending: Vec<i64>,
    pub to_failed: Vec<i64>,
}

/// One pass: reclaim everything stuck right now.
pub async fn reclaim_once(pool: &Pool, cfg: &Config) -> Result<ReclaimReport, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::RECLAIM).await?;
    let mut report = ReclaimReport::default();
    loop {
        let rows = client
            .query(
                &stmt,
                &[
                    &cfg.max_processing.as_secs_f64(),
                    &cfg.max_attempts,
                    &BATCH,
                    &cfg.base_backoff.as_secs_f64(),
                    &cfg.max_backoff.as_secs_f64(),
                ],
            )
            .await?;
        let n = rows.len();
        for r in rows {
            let id: i64 = r.get(0);
            let status: &str = r.get(1);
            let owner: Option<String> = r.get(2);
            if status == "failed" {
                report.to_failed.push(id);
            } else {
                report.to_pending.push(id);
            }
            tracing::debug!(id, status, previous_owner = ?owner, "reclaimed");
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    if !report.to_pending.is_empty() {
        metrics::counter!(m::RECLAIMED_TOTAL, "to" => "pending")
            .increment(report.to_pending.len() as u64);
        info!(count = report.to_pending.len(), ids = ?report.to_pending, reason = "lease_expired", "reclaimed stuck events to pending");
    }
    if !report.to_failed.is_empty() {
        metrics::counter!(m::RECLAIMED_TOTAL, "to" => "failed")
            .increment(report.to_failed.len() as u64);
        metrics::counter!(m::TERMINAL_FAILED_TOTAL, "reason" => "lease_expired")
            .increment(report.to_failed.len() as u64);
        warn!(count = report.to_failed.len(), ids = ?report.to_failed, reason = "lease_expired", "stuck events reached the attempt limit: failed");
    }
    Ok(report)
}

pub async fn run(cfg: Arc<Config>, pool: Pool, waker: Waker, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(cfg.reclaim_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match reclaim_once(&pool, &cfg).await {
            Ok(r) if !r.to_pending.is_empty() => waker.wake(WakeSource::Reclaim),
            Ok(_) => {}
            Err(e) => db_error("reclaim", &e),
        }
        if let Err(e) = waiting::purge_expired(&pool).await {
            db_error("purge_waiting", &e);
        }
    }
}
