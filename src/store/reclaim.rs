//! The reclaim's statements: expired pieces of the log become stuck exceptions
//! (sql/expand_pieces.sql); then select stuck events (sql/reclaim_select.sql), and return
//! them to pending or failed as decided per row (sql/reclaim.sql, a compare-and-swap).

use std::time::Duration;

use deadpool_postgres::Object;

use crate::{
    contract::{ErrorReason, Status},
    db::DbError,
    sql,
};

/// A stuck event as selected: processing with an expired lease, or for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub id: i64,
    /// The attempt its (dead) lease was claimed with; the compare-and-swap checks it.
    pub attempts: i32,
    pub deferrals: i32,
    pub lease_owner: Option<String>,
}

/// Pieces whose lease expired (or that process for longer than `max_processing`) become
/// processing exceptions under the same dead lease, to be reclaimed as any stuck event.
/// Returns the events expanded.
pub async fn expand_pieces(client: &Object, max_processing: Duration) -> Result<u64, DbError> {
    let stmt = client.prepare_cached(sql::EXPAND_PIECES).await?;
    Ok(client
        .execute(&stmt, &[&max_processing.as_secs_f64()])
        .await?)
}

/// Up to `limit` stuck events, earliest expired lease first.
pub async fn select_stuck(
    client: &Object,
    max_processing: Duration,
    limit: i64,
) -> Result<Vec<Stuck>, DbError> {
    let stmt = client.prepare_cached(sql::RECLAIM_SELECT).await?;
    let rows = client
        .query(&stmt, &[&max_processing.as_secs_f64(), &limit])
        .await?;
    Ok(rows
        .iter()
        .map(|r| Stuck {
            id: r.get(0),
            attempts: r.get(1),
            deferrals: r.get(2),
            lease_owner: r.get(3),
        })
        .collect())
}

/// Write the reclaim of each (event, delay): back to pending after `delay`, or failed /
/// `lease_expired` where it is None. Only rows still stuck at the same attempt change;
/// returns (id, new status) of those.
pub async fn reclaim(
    client: &Object,
    max_processing: Duration,
    plan: &[(&Stuck, Option<Duration>)],
) -> Result<Vec<(i64, Status)>, DbError> {
    let ids: Vec<i64> = plan.iter().map(|(s, _)| s.id).collect();
    let attempts: Vec<i32> = plan.iter().map(|(s, _)| s.attempts).collect();
    let delays: Vec<Option<f64>> = plan
        .iter()
        .map(|(_, d)| d.map(|d| d.as_secs_f64()))
        .collect();
    let stmt = client.prepare_cached(sql::RECLAIM).await?;
    let rows = client
        .query(
            &stmt,
            &[
                &ids,
                &attempts,
                &delays,
                &max_processing.as_secs_f64(),
                &ErrorReason::LeaseExpired.as_str(),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let status: &str = r.get(1);
            let status = Status::parse(status).expect("the status CHECK admits only Status codes");
            (r.get(0), status)
        })
        .collect())
}
