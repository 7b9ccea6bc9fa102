//! Applying outcomes: one SQL statement per outcome kind per chunk, each guarded by the
//! lease it expects. An event claimed from outbox_exceptions is fenced by its status, lease
//! owner and claimed attempt (sql/ack.sql, retry.sql, fail.sql, release.sql); an event
//! claimed from the log by its piece's lease row (sql/log_retry.sql, log_fail.sql,
//! log_release.sql): its ack writes nothing, and its piece is completed once all of the
//! piece's events are resolved (`complete_pieces`). A write that matches no row is a late
//! ack from a lease that was reclaimed: counted and logged, not an error.

use deadpool_postgres::{Object, Pool};

use crate::{
    contract::{ErrorReason, Status},
    db::DbError,
    event::Held,
    sql,
};

/// One event going back to pending.
#[derive(Debug, Clone)]
pub struct Retry {
    pub event: Held,
    pub delay_seconds: f64,
    pub reason: ErrorReason,
    pub error: String,
    /// The event's own failure (uses up the attempt), or a deferral (refunds it).
    pub counted: bool,
}

/// One event ending terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct Fail {
    pub event: Held,
    pub reason: ErrorReason,
    pub error: String,
}

/// The decided outcomes of one chunk, by kind.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub ack: Vec<Held>,
    pub retry: Vec<Retry>,
    pub fail: Vec<Fail>,
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

/// Split by where the event was claimed from: (outbox_exceptions, the log).
fn by_source<T>(items: &[T], held: impl Fn(&T) -> Held) -> (Vec<&T>, Vec<&T>) {
    items.iter().partition(|t| held(t).piece.is_none())
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
        let (exceptions, log) = by_source(&o.ack, |h| *h);
        // A log event's ack is its piece's business: nothing to write per event.
        applied.acked.extend(log.iter().map(|h| h.id));
        if !exceptions.is_empty() {
            let ids: Vec<i64> = exceptions.iter().map(|h| h.id).collect();
            let attempts: Vec<i32> = exceptions.iter().map(|h| h.attempts).collect();
            let stmt = client.prepare_cached(sql::ACK).await?;
            let rows = client.query(&stmt, &[&ids, &attempts, &owner]).await?;
            let done: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            note_late(&ids, &done, &mut applied.late);
            applied.acked.extend(done);
        }
    }
    if !o.retry.is_empty() {
        let (exceptions, log) = by_source(&o.retry, |r| r.event);
        for (part, statement) in [(exceptions, sql::RETRY), (log, sql::LOG_RETRY)] {
            if part.is_empty() {
                continue;
            }
            retry(&client, owner, max_attempts, &part, statement, &mut applied).await?;
        }
    }
    if !o.fail.is_empty() {
        let (exceptions, log) = by_source(&o.fail, |f| f.event);
        for (part, statement) in [(exceptions, sql::FAIL), (log, sql::LOG_FAIL)] {
            if part.is_empty() {
                continue;
            }
            let ids: Vec<i64> = part.iter().map(|f| f.event.id).collect();
            let reasons: Vec<&str> = part.iter().map(|f| f.reason.as_str()).collect();
            let errors: Vec<&str> = part.iter().map(|f| f.error.as_str()).collect();
            let stmt = client.prepare_cached(statement).await?;
            let rows = if statement == sql::FAIL {
                let attempts: Vec<i32> = part.iter().map(|f| f.event.attempts).collect();
                client
                    .query(&stmt, &[&ids, &attempts, &owner, &reasons, &errors])
                    .await?
            } else {
                let pieces: Vec<i64> = part.iter().map(|f| f.event.piece.unwrap_or(0)).collect();
                client
                    .query(&stmt, &[&ids, &pieces, &owner, &reasons, &errors])
                    .await?
            };
            let done: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            for f in &part {
                if done.contains(&f.event.id) {
                    applied.failed.push((f.event.id, f.reason.clone()));
                }
            }
            note_late(&ids, &done, &mut applied.late);
        }
    }
    Ok(applied)
}

/// Retries of one source: sql/retry.sql (exceptions, by attempt) or sql/log_retry.sql (log
/// events, by piece); the same parameters but the second.
async fn retry(
    client: &Object,
    owner: &str,
    max_attempts: i32,
    part: &[&Retry],
    statement: &'static str,
    applied: &mut Applied,
) -> Result<(), DbError> {
    let ids: Vec<i64> = part.iter().map(|r| r.event.id).collect();
    let delays: Vec<f64> = part.iter().map(|r| r.delay_seconds).collect();
    let reasons: Vec<&str> = part.iter().map(|r| r.reason.as_str()).collect();
    let errors: Vec<&str> = part.iter().map(|r| r.error.as_str()).collect();
    let counted: Vec<bool> = part.iter().map(|r| r.counted).collect();
    let stmt = client.prepare_cached(statement).await?;
    let max_reason = ErrorReason::MaxAttemptsExceeded.as_str();
    let rows = if statement == sql::RETRY {
        let attempts: Vec<i32> = part.iter().map(|r| r.event.attempts).collect();
        client
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
                    &max_reason,
                ],
            )
            .await?
    } else {
        let pieces: Vec<i64> = part.iter().map(|r| r.event.piece.unwrap_or(0)).collect();
        client
            .query(
                &stmt,
                &[
                    &ids,
                    &pieces,
                    &owner,
                    &max_attempts,
                    &delays,
                    &reasons,
                    &errors,
                    &counted,
                    &max_reason,
                ],
            )
            .await?
    };
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
    Ok(())
}

/// Release claimed but unsent events (shutdown): back to pending, attempt refunded.
/// Returns the ids released.
pub async fn release(pool: &Pool, owner: &str, events: &[Held]) -> Result<Vec<i64>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let (exceptions, log) = by_source(events, |h| *h);
    let mut released = Vec::with_capacity(events.len());
    if !exceptions.is_empty() {
        let ids: Vec<i64> = exceptions.iter().map(|h| h.id).collect();
        let attempts: Vec<i32> = exceptions.iter().map(|h| h.attempts).collect();
        let stmt = client.prepare_cached(sql::RELEASE).await?;
        let rows = client.query(&stmt, &[&ids, &attempts, &owner]).await?;
        released.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    if !log.is_empty() {
        let ids: Vec<i64> = log.iter().map(|h| h.id).collect();
        let pieces: Vec<i64> = log.iter().map(|h| h.piece.unwrap_or(0)).collect();
        let stmt = client.prepare_cached(sql::LOG_RELEASE).await?;
        let rows = client.query(&stmt, &[&ids, &pieces, &owner]).await?;
        released.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    Ok(released)
}

/// Every event of these pieces is resolved: their lease rows go. Returns the pieces that
/// were still this worker's; the others were reclaimed meanwhile.
pub async fn complete_pieces(
    pool: &Pool,
    owner: &str,
    pieces: &[i64],
) -> Result<Vec<i64>, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::COMPLETE_PIECES).await?;
    let rows = client.query(&stmt, &[&pieces, &owner]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn note_late(sent: &[i64], done: &[i64], late: &mut Vec<i64>) {
    if done.len() == sent.len() {
        return;
    }
    let done: std::collections::HashSet<i64> = done.iter().copied().collect();
    late.extend(sent.iter().filter(|id| !done.contains(id)));
}
