//! Applying outcomes: one SQL statement per outcome kind per chunk (ack, retry, fail,
//! release), each guarded by status, lease owner and claimed attempt. A write that matches
//! no row is a late ack from a lease that was reclaimed: counted and logged, not an error.

use deadpool_postgres::Pool;

use crate::{
    contract::{ErrorReason, Status},
    db::DbError,
    sql,
};

/// One event going back to pending.
#[derive(Debug, Clone)]
pub struct Retry {
    pub id: i64,
    pub attempts: i32,
    pub delay_seconds: f64,
    pub reason: ErrorReason,
    pub error: String,
    /// The event's own failure (uses up the attempt), or a deferral (refunds it).
    pub counted: bool,
}

/// The decided outcomes of one chunk, by kind.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub ack: Vec<(i64, i32)>,
    pub retry: Vec<Retry>,
    /// (id, attempts, reason, error)
    pub fail: Vec<(i64, i32, ErrorReason, String)>,
}

impl Outcomes {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ack.is_empty() && self.retry.is_empty() && self.fail.is_empty()
    }
}

/// What the database accepted.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    pub acked: Vec<i64>,
    /// Back to pending with a backoff: (id, reason).
    pub retried: Vec<(i64, ErrorReason)>,
    /// Terminal: (id, reason), including `max_attempts_exceeded` from retries.
    pub failed: Vec<(i64, ErrorReason)>,
    /// Writes that matched no row: the lease was reclaimed meanwhile.
    pub late: Vec<i64>,
}

pub async fn apply(
    pool: &Pool,
    owner: &str,
    max_attempts: i32,
    o: &Outcomes,
) -> Result<Applied, DbError> {
    let client = pool.get().await?;
    let mut applied = Applied::default();
    if !o.ack.is_empty() {
        let (ids, attempts): (Vec<i64>, Vec<i32>) = o.ack.iter().copied().unzip();
        let stmt = client.prepare_cached(sql::ACK).await?;
        let rows = client.query(&stmt, &[&ids, &attempts, &owner]).await?;
        applied.acked = rows.iter().map(|r| r.get(0)).collect();
        note_late(&ids, &applied.acked, &mut applied.late);
    }
    if !o.retry.is_empty() {
        let ids: Vec<i64> = o.retry.iter().map(|r| r.id).collect();
        let attempts: Vec<i32> = o.retry.iter().map(|r| r.attempts).collect();
        let delays: Vec<f64> = o.retry.iter().map(|r| r.delay_seconds).collect();
        let reasons: Vec<&str> = o.retry.iter().map(|r| r.reason.as_str()).collect();
        let errors: Vec<&str> = o.retry.iter().map(|r| r.error.as_str()).collect();
        let counted: Vec<bool> = o.retry.iter().map(|r| r.counted).collect();
        let stmt = client.prepare_cached(sql::RETRY).await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &ids,
                    &attempts,
                    &owner,
                    &max_attempts,
                    &delays,
                    &reasons,
                    &errors,
                    &counted,
                    &ErrorReason::MaxAttemptsExceeded.as_str(),
                ],
            )
            .await?;
        let mut done = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get(0);
            let status: &str = r.get(1);
            let reason = ErrorReason::parse(r.get(2));
            done.push(id);
            if Status::parse(status) == Some(Status::Failed) {
                applied.failed.push((id, reason));
            } else {
                applied.retried.push((id, reason));
            }
        }
        note_late(&ids, &done, &mut applied.late);
    }
    if !o.fail.is_empty() {
        let ids: Vec<i64> = o.fail.iter().map(|r| r.0).collect();
        let attempts: Vec<i32> = o.fail.iter().map(|r| r.1).collect();
        let reasons: Vec<&str> = o.fail.iter().map(|r| r.2.as_str()).collect();
        let errors: Vec<&str> = o.fail.iter().map(|r| r.3.as_str()).collect();
        let stmt = client.prepare_cached(sql::FAIL).await?;
        let rows = client
            .query(&stmt, &[&ids, &attempts, &owner, &reasons, &errors])
            .await?;
        let done: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        for (id, _, reason, _) in &o.fail {
            if done.contains(id) {
                applied.failed.push((*id, reason.clone()));
            }
        }
        note_late(&ids, &done, &mut applied.late);
    }
    Ok(applied)
}

/// Release claimed but unsent events (shutdown): back to pending, attempt refunded.
pub async fn release(pool: &Pool, owner: &str, events: &[(i64, i32)]) -> Result<Vec<i64>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, attempts): (Vec<i64>, Vec<i32>) = events.iter().copied().unzip();
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::RELEASE).await?;
    let rows = client.query(&stmt, &[&ids, &attempts, &owner]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn note_late(sent: &[i64], done: &[i64], late: &mut Vec<i64>) {
    if done.len() == sent.len() {
        return;
    }
    let done: std::collections::HashSet<i64> = done.iter().copied().collect();
    late.extend(sent.iter().filter(|id| !done.contains(id)));
}
