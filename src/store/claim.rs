//! The claim: up to `limit` eligible events under a lease for this worker (sql/claim.sql:
//! exceptions first, then the log by snapshot windows), and the two read-only probes of an
//! idle worker: is anything claimable, when is the next retry due.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::{db::DbError, event::ClaimedEvent, sql};

pub async fn claim(
    pool: &Pool,
    projection: &str,
    limit: usize,
    owner: &str,
    lease: Duration,
) -> Result<Vec<ClaimedEvent>, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::CLAIM).await?;
    let rows = client
        .query(
            &stmt,
            &[
                &projection,
                &(limit.min(i32::MAX as usize) as i32),
                &owner,
                &lease.as_secs_f64(),
            ],
        )
        .await?;
    let mut events: Vec<ClaimedEvent> = rows.iter().map(ClaimedEvent::from_row).collect();
    // RETURNING order is not guaranteed; keep oldest first for chunking and coalescing.
    events.sort_unstable_by_key(|e| e.id);
    Ok(events)
}

/// Is anything claimable now? (read-only; the follow-up checks after going idle)
pub async fn pending_exists(pool: &Pool, projection: &str) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::PENDING_EXISTS).await?;
    Ok(client.query_one(&stmt, &[&projection]).await?.get(0))
}

/// How long until the earliest scheduled retry falls due (None: no retry scheduled).
pub async fn next_retry_due(pool: &Pool, projection: &str) -> Result<Option<Duration>, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::NEXT_RETRY_DUE).await?;
    let secs: Option<f64> = client.query_one(&stmt, &[&projection]).await?.get(0);
    Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
}
