//! A claimed outbox event, its validation before sending, and the coalescing of several
//! events for one document into the newest version.

use std::collections::HashMap;

use crate::contract::Op;

/// One row returned by the claim, as the worker holds it while the lease runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedEvent {
    pub id: i64,
    pub index_name: String,
    pub doc_id: String,
    pub op: String,
    /// The jsonb payload as PostgreSQL printed it: one line, sent as-is (never re-serialised).
    pub payload: Option<String>,
    /// External version: `doc_version` when the producer set one, else the outbox id.
    pub version: i64,
    /// The producer's routing value, sent on index and delete actions (None: the engine
    /// routes by `_id`).
    pub routing: Option<String>,
    /// The attempt number this claim made; the fencing token of every later write.
    pub attempts: i32,
    /// Retries that were not the event's fault (outages, overload); they grow the backoff
    /// but never count against OUTBOX_MAX_ATTEMPTS.
    pub deferrals: i32,
    /// Insert time, seconds since the epoch, for the end-to-end latency histogram.
    pub created_epoch: f64,
    /// The piece of the log this event was claimed in (its lease row; the fencing token of
    /// a log event), or None for an event claimed from outbox_exceptions.
    pub piece: Option<i64>,
}

impl ClaimedEvent {
    /// What the store needs to write this event's outcome under its lease.
    pub fn held(&self) -> Held {
        Held {
            id: self.id,
            attempts: self.attempts,
            piece: self.piece,
        }
    }
}

/// A claimed event's identity and fencing token: the attempt it was claimed with and, for a
/// log event, its piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Held {
    pub id: i64,
    pub attempts: i32,
    pub piece: Option<i64>,
}

impl ClaimedEvent {
    /// Reads the columns `sql/claim.sql` returns, by name.
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        ClaimedEvent {
            id: row.get("id"),
            index_name: row.get("index_name"),
            doc_id: row.get("doc_id"),
            op: row.get("op"),
            payload: row.get("payload"),
            version: row.get("version"),
            routing: row.get("routing"),
            attempts: row.get("attempts"),
            deferrals: row.get("deferrals"),
            created_epoch: row.get("created_epoch"),
            piece: row.get("piece_id"),
        }
    }
}

/// The op of a sendable event, or why it cannot be sent at all (it ends `failed` /
/// `invalid_event`).
pub fn validate(ev: &ClaimedEvent) -> Result<Op, String> {
    let Some(op) = Op::parse(&ev.op) else {
        return Err(format!(
            "unknown op {:?}: expected {} or {}",
            ev.op,
            Op::Index,
            Op::Delete
        ));
    };
    if ev.doc_id.is_empty() {
        return Err("empty doc_id".into());
    }
    if ev.index_name.is_empty() {
        return Err("empty index_name".into());
    }
    if ev.version < 0 {
        return Err(format!(
            "negative version {}: external versions start at 0",
            ev.version
        ));
    }
    if op == Op::Index {
        match ev.payload.as_deref() {
            None => return Err("payload is null for an index event".into()),
            // jsonb prints an object with a leading '{' and nothing before it.
            Some(p) if !p.starts_with('{') => {
                return Err("payload is not a JSON object".into());
            }
            Some(_) => {}
        }
    }
    Ok(op)
}

/// Within one claimed batch, keep only the newest version of each document; the others
/// are returned separately, to be acked as superseded (the newest one decides the document).
pub fn coalesce_by_document(events: Vec<ClaimedEvent>) -> (Vec<ClaimedEvent>, Vec<ClaimedEvent>) {
    let mut newest: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        let key = (ev.index_name.as_str(), ev.doc_id.as_str());
        match newest.get(&key) {
            Some(&j) if (events[j].version, events[j].id) >= (ev.version, ev.id) => {}
            _ => {
                newest.insert(key, i);
            }
        }
    }
    if newest.len() == events.len() {
        return (events, Vec::new());
    }
    let mut keep = vec![false; events.len()];
    for &i in newest.values() {
        keep[i] = true;
    }
    let mut kept = Vec::with_capacity(newest.len());
    let mut superseded = Vec::with_capacity(events.len() - newest.len());
    for (ev, k) in events.into_iter().zip(keep) {
        if k {
            kept.push(ev)
        } else {
            superseded.push(ev)
        }
    }
    (kept, superseded)
}

#[cfg(test)]
pub(crate) fn ev(id: i64, doc: &str, version: i64) -> ClaimedEvent {
    ClaimedEvent {
        id,
        index_name: "idx".into(),
        doc_id: doc.into(),
        op: Op::Index.to_string(),
        payload: Some(format!("{{\"v\":{version}}}")),
        version,
        routing: None,
        attempts: 1,
        deferrals: 0,
        created_epoch: 0.0,
        piece: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_keeps_newest_version_per_document() {
        let events = vec![ev(1, "a", 1), ev(2, "b", 2), ev(3, "a", 3), ev(4, "a", 2)];
        let (kept, superseded) = coalesce_by_document(events);
        let kept_ids: Vec<i64> = kept.iter().map(|e| e.id).collect();
        let sup_ids: Vec<i64> = superseded.iter().map(|e| e.id).collect();
        assert_eq!(kept_ids, vec![2, 3]);
        assert_eq!(sup_ids, vec![1, 4]);
    }

    #[test]
    fn coalesce_same_document_in_two_indexes_is_two_documents() {
        let mut a = ev(1, "x", 1);
        a.index_name = "one".into();
        let (kept, superseded) = coalesce_by_document(vec![a, ev(2, "x", 1)]);
        assert_eq!(kept.len(), 2);
        assert!(superseded.is_empty());
    }

    #[test]
    fn coalesce_equal_versions_keep_the_later_event() {
        let (kept, superseded) = coalesce_by_document(vec![ev(5, "a", 7), ev(6, "a", 7)]);
        assert_eq!(kept[0].id, 6);
        assert_eq!(superseded[0].id, 5);
    }

    #[test]
    fn validation_catches_each_invalid_shape() {
        let mut e = ev(1, "a", 1);
        assert_eq!(validate(&e), Ok(Op::Index));
        e.op = "upsert".into();
        assert!(validate(&e).unwrap_err().contains("unknown op"));
        e.op = "delete".into();
        e.payload = None;
        assert_eq!(validate(&e), Ok(Op::Delete));
        e.op = "index".into();
        assert!(validate(&e).is_err());
        e.payload = Some("[1,2]".into());
        assert!(validate(&e).unwrap_err().contains("not a JSON object"));
        e.payload = Some("{}".into());
        e.doc_id = String::new();
        assert!(validate(&e).unwrap_err().contains("doc_id"));
        e.doc_id = "a".into();
        e.version = -1;
        assert!(validate(&e).unwrap_err().contains("negative"));
    }
}
