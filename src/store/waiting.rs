//! The worker side of the adaptive trigger: a row in `outbox_waiting_workers` while this
//! worker is idle, read by the insert trigger to decide whether to NOTIFY.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::{db::DbError, sql};

/// Mark this worker waiting for `ttl` (renewed at every idle poll; expires if it dies).
pub async fn mark(pool: &Pool, worker_id: &str, ttl: Duration) -> Result<(), DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::MARK_WAITING).await?;
    client
        .execute(&stmt, &[&worker_id, &ttl.as_secs_f64()])
        .await?;
    Ok(())
}

/// This worker holds work again: producers need not notify for it.
pub async fn clear(pool: &Pool, worker_id: &str) -> Result<(), DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::CLEAR_WAITING).await?;
    client.execute(&stmt, &[&worker_id]).await?;
    Ok(())
}

/// Remove marks of workers that died while waiting.
pub async fn purge_expired(pool: &Pool) -> Result<u64, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::PURGE_WAITING).await?;
    Ok(client.execute(&stmt, &[]).await?)
}
