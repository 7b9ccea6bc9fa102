//! Applying outcomes: one SQL statement per outcome kind per chunk, each guarded by the
//! lease it expects. An event claimed from outbox_exceptions is fenced by its status, lease
//! owner and claimed attempt (sql/ack.sql, retry.sql, fail.sql, release.sql); an event
//! claimed from the log by its piece's lease row (sql/log_retry.sql, log_fail.sql,
//! log_release.sql): its ack writes nothing, and its piece is completed once all of the
//! piece's events are resolved (`complete_pieces`). A write that matches no row is a late
//! ack from a lease that was reclaimed: counted and logged, not an error.

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::types::ToSql;

use crate::{
    contract::{ErrorReason, Status},
    db::DbError,
    deletes::DeleteRecord,
    event::Held,
    sql,
    store::deletes,
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
    /// Records of the acked deletes among `ack`: written in the acks' transaction.
    pub deletes: Vec<DeleteRecord>,
}

impl Outcomes {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ack.is_empty()
            && self.retry.is_empty()
            && self.fail.is_empty()
            && self.deletes.is_empty()
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

/// Where a claimed event came from, which decides what fences its writes: the attempt it
/// was claimed with (outbox_exceptions) or its piece's lease row (the log). Each kind of
/// write has one statement per source, and both take the fence as their second parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Exceptions,
    Log,
}

/// The fence parameter of a batch of one source.
enum Fence {
    Attempts(Vec<i32>),
    Pieces(Vec<i64>),
}

impl Fence {
    fn of<'a>(source: Source, held: impl Iterator<Item = &'a Held>) -> Fence {
        match source {
            Source::Exceptions => Fence::Attempts(held.map(|h| h.attempts).collect()),
            Source::Log => Fence::Pieces(held.map(|h| h.piece.unwrap_or(0)).collect()),
        }
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Fence::Attempts(a) => a,
            Fence::Pieces(p) => p,
        }
    }
}

/// `items` split by source, each with its statement (`statements`: exceptions, then log);
/// empty parts left out.
fn by_source<'a, T>(
    items: &'a [T],
    held: impl Fn(&T) -> &Held,
    statements: [&'static str; 2],
) -> Vec<(Source, &'static str, Vec<&'a T>)> {
    let (exceptions, log): (Vec<&T>, Vec<&T>) =
        items.iter().partition(|t| held(t).piece.is_none());
    [
        (Source::Exceptions, statements[0], exceptions),
        (Source::Log, statements[1], log),
    ]
    .into_iter()
    .filter(|(_, _, part)| !part.is_empty())
    .collect()
}

/// Write a chunk's outcomes. With delete records, in one transaction: the records first,
/// then the acks, so no delete leaves the outbox without its record (a log event's ack is
/// its piece's completion, which comes after this commits).
pub async fn apply(
    pool: &Pool,
    owner: &str,
    max_attempts: i32,
    projection: &str,
    o: &Outcomes,
) -> Result<Applied, DbError> {
    let mut client = pool.get().await?;
    if o.deletes.is_empty() {
        return apply_on(&client, owner, max_attempts, o).await;
    }
    let tx = client.transaction().await?;
    deletes::write(&tx, projection, &o.deletes).await?;
    let applied = apply_on(&tx, owner, max_attempts, o).await?;
    tx.commit().await?;
    Ok(applied)
}

async fn apply_on(
    client: &impl GenericClient,
    owner: &str,
    max_attempts: i32,
    o: &Outcomes,
) -> Result<Applied, DbError> {
    let mut applied = Applied::default();
    // No statement for the log's acks: they write nothing.
    for (source, statement, part) in by_source(&o.ack, |h| h, [sql::ACK, ""]) {
        let ids: Vec<i64> = part.iter().map(|h| h.id).collect();
        if source == Source::Log {
            // A log event's ack is its piece's business: nothing to write per event.
            applied.acked.extend(ids);
            continue;
        }
        let fence = Fence::of(source, part.iter().copied());
        let stmt = client.prepare_cached(statement).await?;
        let rows = client
            .query(&stmt, &[&ids, fence.param(), &owner])
            .await?;
        let done: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        note_late(&ids, &done, &mut applied.late);
        applied.acked.extend(done);
    }
    let max_reason = ErrorReason::MaxAttemptsExceeded.as_str();
    for (source, statement, part) in by_source(&o.retry, |r| &r.event, [sql::RETRY, sql::LOG_RETRY])
    {
        let ids: Vec<i64> = part.iter().map(|r| r.event.id).collect();
        let fence = Fence::of(source, part.iter().map(|r| &r.event));
        let delays: Vec<f64> = part.iter().map(|r| r.delay_seconds).collect();
        let reasons: Vec<&str> = part.iter().map(|r| r.reason.as_str()).collect();
        let errors: Vec<&str> = part.iter().map(|r| r.error.as_str()).collect();
        let counted: Vec<bool> = part.iter().map(|r| r.counted).collect();
        let stmt = client.prepare_cached(statement).await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &ids,
                    fence.param(),
                    &owner,
                    &max_attempts,
                    &delays,
                    &reasons,
                    &errors,
                    &counted,
                    &max_reason,
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
    for (source, statement, part) in by_source(&o.fail, |f| &f.event, [sql::FAIL, sql::LOG_FAIL]) {
        let ids: Vec<i64> = part.iter().map(|f| f.event.id).collect();
        let fence = Fence::of(source, part.iter().map(|f| &f.event));
        let reasons: Vec<&str> = part.iter().map(|f| f.reason.as_str()).collect();
        let errors: Vec<&str> = part.iter().map(|f| f.error.as_str()).collect();
        let stmt = client.prepare_cached(statement).await?;
        let rows = client
            .query(&stmt, &[&ids, fence.param(), &owner, &reasons, &errors])
            .await?;
        let done: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        for f in &part {
            if done.contains(&f.event.id) {
                applied.failed.push((f.event.id, f.reason.clone()));
            }
        }
        note_late(&ids, &done, &mut applied.late);
    }
    Ok(applied)
}

/// Release claimed but unsent events (shutdown): back to pending, attempt refunded.
/// Returns the ids released.
pub async fn release(pool: &Pool, owner: &str, events: &[Held]) -> Result<Vec<i64>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let mut released = Vec::with_capacity(events.len());
    for (source, statement, part) in by_source(events, |h| h, [sql::RELEASE, sql::LOG_RELEASE]) {
        let ids: Vec<i64> = part.iter().map(|h| h.id).collect();
        let fence = Fence::of(source, part.iter().copied());
        let stmt = client.prepare_cached(statement).await?;
        let rows = client.query(&stmt, &[&ids, fence.param(), &owner]).await?;
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
