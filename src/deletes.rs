//! Deletes never resurrect (docs/design.md §4, runbook §7.8). The engine forgets a delete's
//! tombstone (`index.gc_deletes`, 60 s by default; node restarts), after which an older index
//! event that arrives late (a retry after its backoff, a reclaim, a replay days later)
//! would bring the deleted document back. So the worker records every acked delete
//! (document, version, routing) in `outbox_delete_records`, in the transaction of its ack,
//! and before sending a claim looks its index events up, in one query: an index event whose
//! version is at most a recorded delete's is acked as superseded and never sent.
//!
//! This file owns the pure decision (`split_superseded`), what a record holds, and the
//! prune loop that keeps records for OUTBOX_DELETE_RECORD_RETENTION_SECONDS.

use std::{collections::HashMap, sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{
    config::Config,
    contract::Op,
    event::ClaimedEvent,
    metrics as m,
    store::{db_error, deletes as store},
};

/// A recorded delete, as the lookup returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub index_name: String,
    pub doc_id: String,
    /// The highest version deleted.
    pub version: i64,
}

/// A delete to record beside its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRecord {
    pub index_name: String,
    pub doc_id: String,
    pub routing: Option<String>,
    pub version: i64,
    pub event_id: i64,
}

impl DeleteRecord {
    /// The record of an acked event, if it is a delete (whatever the engine answered:
    /// deleted, not_found or a version conflict, the document is gone at this version).
    pub fn of(event: &ClaimedEvent) -> Option<DeleteRecord> {
        (Op::parse(&event.op) == Some(Op::Delete)).then(|| DeleteRecord {
            index_name: event.index_name.clone(),
            doc_id: event.doc_id.clone(),
            routing: event.routing.clone(),
            version: event.version,
            event_id: event.id,
        })
    }
}

/// The documents to look up for a claim: each (index, id) of an index event, once.
pub fn lookup_keys(events: &[ClaimedEvent]) -> Vec<(&str, &str)> {
    let mut keys: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| Op::parse(&e.op) == Some(Op::Index))
        .map(|e| (e.index_name.as_str(), e.doc_id.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Split events into those to send and the index events a recorded delete supersedes
/// (version at most the delete's), each with the version deleted. Deletes are always
/// sent: the engine's external version settles an older one. Pure.
pub fn split_superseded<T>(
    events: Vec<T>,
    event: impl Fn(&T) -> &ClaimedEvent,
    recorded: &[Recorded],
) -> (Vec<T>, Vec<(T, i64)>) {
    if recorded.is_empty() {
        return (events, Vec::new());
    }
    let deleted: HashMap<(&str, &str), i64> = recorded
        .iter()
        .map(|r| ((r.index_name.as_str(), r.doc_id.as_str()), r.version))
        .collect();
    let mut send = Vec::with_capacity(events.len());
    let mut superseded = Vec::new();
    for t in events {
        let e = event(&t);
        let at = (Op::parse(&e.op) == Some(Op::Index))
            .then(|| deleted.get(&(e.index_name.as_str(), e.doc_id.as_str())))
            .flatten()
            .copied();
        match at {
            Some(v) if e.version <= v => superseded.push((t, v)),
            _ => send.push(t),
        }
    }
    (send, superseded)
}

/// Records pruned per statement: a batch is quick and holds few locks.
pub const PRUNE_BATCH: i64 = 5_000;
/// Batches per run at most, so one run never takes long; the next run continues.
const PRUNE_BATCHES_PER_RUN: usize = 100;

/// How often the prune runs: a tenth of the retention, between 10 s and 10 min.
pub fn prune_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(10), Duration::from_secs(600))
}

/// One run: bounded batches until one comes back short (or the run's cap); how many went.
/// Then the count of records kept, for the gauge.
pub async fn prune_once(pool: &Pool, retention: Duration) -> u64 {
    let mut pruned = 0;
    for _ in 0..PRUNE_BATCHES_PER_RUN {
        match store::prune(pool, retention, PRUNE_BATCH).await {
            Ok(n) => {
                pruned += n;
                metrics::counter!(m::DELETE_RECORDS_PRUNED_TOTAL).increment(n);
                if (n as i64) < PRUNE_BATCH {
                    break;
                }
            }
            Err(e) => {
                db_error("prune_delete_records", &e);
                break;
            }
        }
    }
    match store::count(pool).await {
        Ok(n) => metrics::gauge!(m::DELETE_RECORDS).set(n as f64),
        Err(e) => db_error("count_delete_records", &e),
    }
    pruned
}

/// The prune loop: every `prune_interval`, records older than the retention go.
pub async fn run(cfg: Arc<Config>, pool: Pool, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(prune_interval(cfg.delete_record_retention));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let pruned = prune_once(&pool, cfg.delete_record_retention).await;
        if pruned > 0 {
            info!(
                pruned,
                retention_seconds = cfg.delete_record_retention.as_secs(),
                "delete records pruned"
            );
        } else {
            debug!("no delete record to prune");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ev;

    fn delete(id: i64, doc: &str, version: i64) -> ClaimedEvent {
        ClaimedEvent {
            op: "delete".into(),
            payload: None,
            ..ev(id, doc, version)
        }
    }

    fn rec(doc: &str, version: i64) -> Recorded {
        Recorded {
            index_name: "idx".into(),
            doc_id: doc.into(),
            version,
        }
    }

    fn ids(v: &[ClaimedEvent]) -> Vec<i64> {
        v.iter().map(|e| e.id).collect()
    }

    #[test]
    fn index_events_at_or_below_a_recorded_delete_are_superseded() {
        let events = vec![
            ev(1, "a", 2),     // older than the delete at 3: superseded
            ev(2, "a", 3),     // the delete's own version: superseded
            ev(3, "a", 4),     // newer: sent
            ev(4, "b", 1),     // no record: sent
            delete(5, "a", 1), // a delete is always sent
        ];
        let (send, superseded) = split_superseded(events, |e| e, &[rec("a", 3)]);
        assert_eq!(ids(&send), vec![3, 4, 5]);
        let sup: Vec<(i64, i64)> = superseded.iter().map(|(e, v)| (e.id, *v)).collect();
        assert_eq!(sup, vec![(1, 3), (2, 3)]);
    }

    #[test]
    fn a_record_of_another_index_does_not_match() {
        let mut other = ev(1, "a", 1);
        other.index_name = "other".into();
        let (send, superseded) = split_superseded(vec![other], |e| e, &[rec("a", 9)]);
        assert_eq!(ids(&send), vec![1]);
        assert!(superseded.is_empty());
    }

    #[test]
    fn no_records_sends_everything() {
        let (send, superseded) = split_superseded(vec![ev(1, "a", 1)], |e| e, &[]);
        assert_eq!(ids(&send), vec![1]);
        assert!(superseded.is_empty());
    }

    #[test]
    fn lookup_keys_are_the_index_events_documents_once() {
        let events = vec![ev(1, "b", 1), ev(2, "a", 1), ev(3, "b", 2), delete(4, "c", 1)];
        assert_eq!(lookup_keys(&events), vec![("idx", "a"), ("idx", "b")]);
    }

    #[test]
    fn only_deletes_make_records_with_their_routing() {
        let mut d = delete(7, "a", 3);
        d.routing = Some("r".into());
        assert_eq!(
            DeleteRecord::of(&d),
            Some(DeleteRecord {
                index_name: "idx".into(),
                doc_id: "a".into(),
                routing: Some("r".into()),
                version: 3,
                event_id: 7,
            })
        );
        assert_eq!(DeleteRecord::of(&ev(1, "a", 1)), None);
    }

    #[test]
    fn the_prune_runs_a_tenth_of_the_retention_within_bounds() {
        assert_eq!(
            prune_interval(Duration::from_secs(7 * 86_400)),
            Duration::from_secs(600)
        );
        assert_eq!(
            prune_interval(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert_eq!(
            prune_interval(Duration::from_secs(1200)),
            Duration::from_secs(120)
        );
    }
}
