//! The database-wide gauges (lag, oldest age, in flight, stuck, failed), sampled
//! periodically with one cheap query over the partial indexes (sql/sample_gauges.sql), and
//! with them what holds back cleanup (horizon.rs).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, db::DbError, horizon, metrics as m, sql};

pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Counts up to this are exact; larger ones come from the planner's estimate.
pub const EXACT_COUNT_LIMIT: i64 = 100_000;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Gauges {
    pub lag_events: i64,
    pub oldest_age_seconds: f64,
    pub inflight_events: i64,
    pub stuck_events: i64,
    pub failed_events: i64,
    /// Events replayed so far, from the audit trail (replays run from the CLI).
    pub replayed_events: i64,
}

pub async fn sample(pool: &Pool, cfg: &Config) -> Result<Gauges, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::SAMPLE_GAUGES).await?;
    let r = client
        .query_one(
            &stmt,
            &[&cfg.max_processing.as_secs_f64(), &EXACT_COUNT_LIMIT],
        )
        .await?;
    let mut lag_events: i64 = r.get(0);
    let mut failed_events: i64 = r.get(4);
    if lag_events > EXACT_COUNT_LIMIT {
        lag_events = estimate(&client, sql::ESTIMATE_LAG).await?.max(lag_events);
    }
    if failed_events > EXACT_COUNT_LIMIT {
        failed_events = estimate(&client, sql::ESTIMATE_FAILED)
            .await?
            .max(failed_events);
    }
    Ok(Gauges {
        lag_events,
        oldest_age_seconds: r.get::<_, Option<f64>>(1).unwrap_or(0.0).max(0.0),
        inflight_events: r.get(2),
        stuck_events: r.get(3),
        failed_events,
        replayed_events: r.get(5),
    })
}

/// The planner's row estimate of an `EXPLAIN (FORMAT JSON)` statement.
async fn estimate(client: &deadpool_postgres::Client, explain: &str) -> Result<i64, DbError> {
    let plan: serde_json::Value = client.query_one(explain, &[]).await?.get(0);
    Ok(plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as i64)
}

async fn sample_horizon(
    pool: &Pool,
    clock: &mut horizon::XidClock,
) -> Result<horizon::Horizon, DbError> {
    horizon::sample(&pool.get().await?, clock).await
}

pub async fn run(cfg: Arc<Config>, pool: Pool, shutdown: CancellationToken) {
    let mut clock = horizon::XidClock::default();
    let mut tables = BTreeSet::new();
    loop {
        match sample(&pool, &cfg).await {
            Ok(g) => {
                metrics::gauge!(m::LAG_EVENTS).set(g.lag_events as f64);
                metrics::gauge!(m::OLDEST_AGE_SECONDS).set(g.oldest_age_seconds);
                metrics::gauge!(m::INFLIGHT_EVENTS).set(g.inflight_events as f64);
                metrics::gauge!(m::STUCK_PROCESSING_EVENTS).set(g.stuck_events as f64);
                metrics::gauge!(m::FAILED_EVENTS).set(g.failed_events as f64);
                metrics::counter!(m::REPLAYED_TOTAL).absolute(g.replayed_events as u64);
            }
            Err(e) => crate::store::db_error("sample_gauges", &e),
        }
        match sample_horizon(&pool, &mut clock).await {
            Ok(h) => {
                // A table gone (a dropped partition) keeps a zero series until the process
                // ends: the recorder cannot remove one series.
                for gone in horizon::vanished(&tables, &h.dead_tuples) {
                    metrics::gauge!(m::DB_DEAD_TUPLES, "table" => gone.to_string()).set(0.0);
                }
                for (table, n) in &h.dead_tuples {
                    metrics::gauge!(m::DB_DEAD_TUPLES, "table" => table.clone()).set(*n as f64);
                }
                tables = h.dead_tuples.into_iter().map(|(t, _)| t).collect();
                for (kind, o) in h.oldest {
                    metrics::gauge!(m::DB_OLDEST_XMIN_AGE_SECONDS, "kind" => kind.label())
                        .set(o.seconds);
                    metrics::gauge!(m::DB_OLDEST_XMIN_AGE_XIDS, "kind" => kind.label())
                        .set(o.xids as f64);
                }
            }
            Err(e) => crate::store::db_error("sample_horizon", &e),
        }
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
