//! Resolving claimed events: their decided outcomes written to the store (transient errors
//! retried a few times), or their release on shutdown; then the in-flight ledger forgets
//! them, and what the database accepted is counted and logged.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::{debug, error, info, warn};

use super::{
    Pipeline,
    outcome::{self, Decision},
};
use crate::{
    backoff,
    bulk::classify::AckKind,
    config::DeleteRecords,
    contract::ErrorReason,
    event::{ClaimedEvent, Held},
    metrics as m,
    store::{
        db_error,
        outcomes::{self, Applied},
    },
};

impl Pipeline {
    /// Write the decisions of one chunk (`stage`: where they were made, for the logs). A
    /// chunk that cannot be written is left to the reclaimer.
    pub(super) async fn resolve(
        &self,
        decided: Vec<(ClaimedEvent, Decision)>,
        stage: &'static str,
    ) {
        if decided.is_empty() {
            return;
        }
        let started = Instant::now();
        let writes = outcome::writes(
            &decided,
            self.cfg.delete_records == DeleteRecords::On,
        );
        let mut delays =
            backoff::in_process(Duration::from_millis(50), Duration::from_secs(2)).take(5);
        let applied = loop {
            match outcomes::apply(
                &self.pool,
                &self.cfg.worker_id,
                self.cfg.max_attempts,
                &self.cfg.projection,
                &writes,
            )
            .await
            {
                Ok(a) => break Some(a),
                Err(e) => {
                    db_error("apply_outcomes", &e);
                    match delays.next() {
                        Some(d) if e.is_transient() => tokio::time::sleep(d).await,
                        _ => break None,
                    }
                }
            }
        };
        let complete = self
            .inflight
            .resolved(decided.iter().map(|(e, _)| e.id), applied.is_some());
        self.complete(complete).await;
        m::Stage::Ack.record(started.elapsed());
        match applied {
            Some(a) => log_applied(&a, stage),
            None => {
                let ids: Vec<i64> = decided.iter().map(|(e, _)| e.id).collect();
                error!(
                    ?ids,
                    "could not write outcomes; the reclaimer will return these events after their lease"
                );
            }
        }
        count_decided(&decided);
    }

    /// Give claimed events back (shutdown): pending again, the attempt refunded.
    pub(super) async fn release(&self, events: &[Held]) {
        if events.is_empty() {
            return;
        }
        let released = match outcomes::release(&self.pool, &self.cfg.worker_id, events).await {
            Ok(ids) => {
                metrics::counter!(m::RELEASED_TOTAL).increment(ids.len() as u64);
                info!(count = ids.len(), ids = ?ids, "released claimed events to pending (attempt refunded)");
                true
            }
            Err(e) => {
                db_error("release", &e);
                warn!(
                    count = events.len(),
                    "could not release; the reclaimer will return these events after their lease"
                );
                false
            }
        };
        let complete = self
            .inflight
            .resolved(events.iter().map(|h| h.id), released);
        self.complete(complete).await;
    }

    /// Delete the lease rows of pieces whose events are all resolved. A piece already gone
    /// was reclaimed meanwhile: its acks were late (its events will be sent again, a
    /// version conflict each, acked). A piece that cannot be deleted expires, and the
    /// reclaimer returns what it held: sent again, never lost.
    async fn complete(&self, pieces: Vec<i64>) {
        if pieces.is_empty() {
            return;
        }
        match outcomes::complete_pieces(&self.pool, &self.cfg.worker_id, &pieces).await {
            Ok(done) if done.len() < pieces.len() => {
                let late: Vec<i64> = pieces.into_iter().filter(|p| !done.contains(p)).collect();
                metrics::counter!(m::LATE_ACKS_TOTAL).increment(late.len() as u64);
                warn!(pieces = ?late, "late completion ignored: the piece's lease was reclaimed meanwhile");
            }
            Ok(_) => {}
            Err(e) => db_error("complete_pieces", &e),
        }
    }
}

/// Acks by kind, superseded events, and the end-to-end latency of what was acked.
fn count_decided(decided: &[(ClaimedEvent, Decision)]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut superseded = 0u64;
    let mut by_delete: Vec<(i64, i64)> = Vec::new();
    for (e, d) in decided {
        match d {
            Decision::Ack(kind) => {
                let label = match kind {
                    AckKind::Indexed => "indexed",
                    AckKind::VersionConflict => "version_conflict",
                    AckKind::NotFound => "not_found",
                };
                metrics::counter!(m::ACKED_TOTAL, "kind" => label).increment(1);
                metrics::histogram!(m::END_TO_END_SECONDS).record((now - e.created_epoch).max(0.0));
            }
            Decision::Superseded => superseded += 1,
            Decision::SupersededByDelete { deleted_version } => {
                by_delete.push((e.id, *deleted_version));
            }
            Decision::Retry { .. } | Decision::Fail { .. } => {}
        }
    }
    if superseded > 0 {
        metrics::counter!(m::SUPERSEDED_TOTAL).increment(superseded);
    }
    if !by_delete.is_empty() {
        metrics::counter!(m::ACKED_TOTAL, "kind" => "superseded_by_delete")
            .increment(by_delete.len() as u64);
        // Each one is a late, older index event that would have brought a deleted
        // document back: worth a line (runbook §7.8).
        info!(
            count = by_delete.len(),
            ids_and_deleted_versions = ?by_delete,
            "index events older than a recorded delete acked unsent (superseded_by_delete)"
        );
    }
}

/// Event ids grouped by reason: one log line and one counter increment per reason.
fn by_reason(events: &[(i64, ErrorReason)]) -> HashMap<&ErrorReason, Vec<i64>> {
    let mut grouped: HashMap<&ErrorReason, Vec<i64>> = HashMap::new();
    for (id, reason) in events {
        grouped.entry(reason).or_default().push(*id);
    }
    grouped
}

fn log_applied(a: &Applied, stage: &'static str) {
    if !a.acked.is_empty() {
        debug!(stage, acked = a.acked.len(), first_id = a.acked[0], "acked");
    }
    if !a.retried.is_empty() {
        for (reason, ids) in by_reason(&a.retried) {
            metrics::counter!(m::RETRY_SCHEDULED_TOTAL, "reason" => reason.clone())
                .increment(ids.len() as u64);
            info!(stage, %reason, count = ids.len(), ids = ?ids, "retry scheduled");
        }
    }
    if !a.failed.is_empty() {
        for (reason, ids) in by_reason(&a.failed) {
            metrics::counter!(m::TERMINAL_FAILED_TOTAL, "reason" => reason.clone())
                .increment(ids.len() as u64);
            warn!(stage, %reason, count = ids.len(), ids = ?ids, "failed (terminal)");
        }
    }
    if !a.late.is_empty() {
        let unique: HashSet<i64> = a.late.iter().copied().collect();
        metrics::counter!(m::LATE_ACKS_TOTAL).increment(unique.len() as u64);
        warn!(stage, count = unique.len(), ids = ?a.late, "late write ignored: the lease was reclaimed meanwhile");
    }
}
