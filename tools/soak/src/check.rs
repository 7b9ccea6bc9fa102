//! The invariants, checked once the outbox is drained and the workers stopped:
//! - every event is acked (its row gone) or `failed` for the reason it was built to cause;
//!   any other failed row, any bad event not failed, any row left pending or processing is
//!   a violation;
//! - every document in the engine equals its newest version (`_version` and `_source`),
//!   deleted documents are absent, and nothing else is there.
//!
//! The expectation comes from the soak's ledger (harness.rs), written in the producer's
//! transactions, and the engine is read directly, never through the proxy.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use outbox_harness::Engine;
use serde_json::Value;
use tokio_postgres::Client;

use crate::{
    harness::Ctx,
    produce::{EXPECT_INVALID, EXPECT_MAPPING},
};

/// What the run found wrong: violations of the invariants (the worker's fault, or the
/// soak's: investigate) and harness problems (the soak could not do what it meant to).
#[derive(Default)]
pub struct Findings {
    violations: Mutex<Vec<String>>,
    harness: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
}

impl Findings {
    pub fn violation(&self, what: String) {
        eprintln!("outbox-soak: VIOLATION: {what}");
        self.violations.lock().unwrap().push(what);
    }

    pub fn harness(&self, what: String) {
        eprintln!("outbox-soak: harness problem: {what}");
        self.harness.lock().unwrap().push(what);
    }

    /// Something outside the soak's control happened (e.g. the shared server restarted).
    pub fn note(&self, what: String) {
        eprintln!("outbox-soak: note: {what}");
        self.notes.lock().unwrap().push(what);
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    pub fn harness_problems(&self) -> Vec<String> {
        self.harness.lock().unwrap().clone()
    }
}

/// The figures of the final check.
#[derive(Debug, Default, serde::Serialize)]
pub struct Verdict {
    /// Events in the ledger (everything committed).
    pub events: i64,
    /// Events whose row is gone.
    pub acked: i64,
    pub failed_by_reason: BTreeMap<String, i64>,
    /// Failed rows whose reason was not the one injected (or not injected at all).
    pub failed_unexpected: i64,
    /// Bad events that did not end failed with their reason (e.g. acked).
    pub bad_not_failed: i64,
    /// Rows still processing after the drain and the stop.
    pub stuck: i64,
    pub pending: i64,
    /// Documents whose newest state is "present" but that are absent from the engine.
    pub lost: i64,
    /// Documents the engine holds in an older version than the newest (including ones
    /// whose newest event is a delete).
    pub stale: i64,
    /// Same version, different `_source`.
    pub mismatched: i64,
    /// Documents the engine holds that should not exist, or in a version never written.
    pub phantom: i64,
    /// Acked events whose effect is missing from the engine (nothing newer covers them).
    pub lost_events: i64,
    pub documents_expected_present: i64,
    pub documents_expected_deleted: i64,
    pub documents_in_engine: i64,
}

/// Examples per kind of violation kept in the messages.
const EXAMPLES: usize = 10;

pub async fn outbox(db: &Client, findings: &Findings, v: &mut Verdict) -> anyhow::Result<()> {
    v.events = db
        .query_one("SELECT count(*) FROM soak_events", &[])
        .await?
        .get(0);
    let rows = db
        .query(
            "SELECT status, count(*) FROM outbox_event_states GROUP BY status",
            &[],
        )
        .await?;
    let mut remaining = 0;
    for r in rows {
        let status: String = r.get(0);
        let n: i64 = r.get(1);
        remaining += n;
        match status.as_str() {
            "processing" => v.stuck = n,
            "pending" => v.pending = n,
            _ => {}
        }
    }
    v.acked = v.events - remaining;
    if v.stuck + v.pending > 0 {
        let ids = sample_ids(
            db,
            "SELECT id FROM outbox_event_states WHERE status <> 'failed' ORDER BY id",
        )
        .await?;
        findings.violation(format!(
            "{} events left undelivered ({} processing, {} pending), e.g. ids {ids:?}",
            v.stuck + v.pending,
            v.stuck,
            v.pending
        ));
    }

    for r in db
        .query(
            "SELECT coalesce(error_reason, '(none)'), count(*) FROM outbox_event_states
             WHERE status = 'failed' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?
    {
        v.failed_by_reason.insert(r.get(0), r.get(1));
    }

    // A failed row is expected only with the reason its event was built to cause.
    let unexpected = db
        .query(
            "SELECT o.id, o.doc_id, coalesce(o.error_reason, '(none)'), left(coalesce(o.error, ''), 300),
                    coalesce(s.expect_fail, '(a good event)'), o.attempts
             FROM outbox_event_states o LEFT JOIN soak_events s ON s.event_id = o.id
             WHERE o.status = 'failed'
               AND NOT ((s.expect_fail = $1 AND o.error_reason = 'invalid_event')
                     OR (s.expect_fail = $2 AND o.error_reason IN
                         ('mapper_parsing_exception', 'document_parsing_exception')))
             ORDER BY o.id",
            &[&EXPECT_INVALID, &EXPECT_MAPPING],
        )
        .await?;
    v.failed_unexpected = unexpected.len() as i64;
    if !unexpected.is_empty() {
        let examples: Vec<String> = unexpected
            .iter()
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "id {} doc {} failed {} after {} attempts ({}), expected: {}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, i32>(5),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4)
                )
            })
            .collect();
        findings.violation(format!(
            "{} events failed for a reason that was not injected:\n  {}",
            unexpected.len(),
            examples.join("\n  ")
        ));
    }

    let bad = db
        .query(
            "SELECT s.event_id, s.doc_id, s.expect_fail, coalesce(o.status, 'acked (row gone)')
             FROM soak_events s LEFT JOIN outbox_event_states o ON o.id = s.event_id
             WHERE s.expect_fail IS NOT NULL AND o.status IS DISTINCT FROM 'failed'
             ORDER BY s.event_id",
            &[],
        )
        .await?;
    v.bad_not_failed = bad.len() as i64;
    if !bad.is_empty() {
        let examples: Vec<String> = bad
            .iter()
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "id {} doc {} (built to fail: {}) is {}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3)
                )
            })
            .collect();
        findings.violation(format!(
            "{} bad events did not end failed:\n  {}",
            bad.len(),
            examples.join("\n  ")
        ));
    }

    let strangers: i64 = db
        .query_one(
            "SELECT count(*) FROM outbox_event_states o
             WHERE NOT EXISTS (SELECT 1 FROM soak_events s WHERE s.event_id = o.id)",
            &[],
        )
        .await?
        .get(0);
    if strangers > 0 {
        findings.violation(format!("{strangers} outbox rows the producer never wrote"));
    }
    Ok(())
}

async fn sample_ids(db: &Client, sql: &str) -> anyhow::Result<Vec<i64>> {
    Ok(db
        .query(&format!("{sql} LIMIT {EXAMPLES}"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// One document as the ledger expects it.
struct Expected {
    version: i64,
    deleted: bool,
    payload: Option<Value>,
}

pub async fn documents(
    ctx: &Ctx,
    db: &Client,
    findings: &Findings,
    v: &mut Verdict,
) -> anyhow::Result<()> {
    let mut expected: HashMap<String, Expected> = HashMap::new();
    for r in db
        .query(
            "SELECT doc_id, version, deleted, payload FROM soak_docs",
            &[],
        )
        .await?
    {
        expected.insert(
            r.get(0),
            Expected {
                version: r.get(1),
                deleted: r.get(2),
                payload: r.get(3),
            },
        );
    }
    v.documents_expected_deleted = expected.values().filter(|e| e.deleted).count() as i64;
    v.documents_expected_present = expected.len() as i64 - v.documents_expected_deleted;
    // Read directly, never through the proxy.
    let engine = Engine::at(&ctx.es_url).documents(&ctx.index()).await?;
    v.documents_in_engine = engine.len() as i64;

    // (document, what is wrong, engine version or 0 when absent)
    let mut wrong: Vec<(String, String, i64)> = Vec::new();
    let mut ids: Vec<&String> = expected.keys().collect();
    ids.sort();
    for id in ids {
        let exp = &expected[id];
        match (engine.get(id), exp.deleted) {
            (None, true) => {}
            (None, false) => {
                v.lost += 1;
                wrong.push((
                    id.clone(),
                    format!("absent, newest is version {}", exp.version),
                    0,
                ));
            }
            (Some((_, got)), _) if *got < exp.version => {
                v.stale += 1;
                let newest = if exp.deleted { "a delete" } else { "an index" };
                wrong.push((
                    id.clone(),
                    format!(
                        "stale: engine has version {got}, newest is {newest} at version {}",
                        exp.version
                    ),
                    *got,
                ));
            }
            (Some((_, got)), true) => {
                v.phantom += 1;
                wrong.push((
                    id.clone(),
                    format!(
                        "present at version {got} although deleted at version {}",
                        exp.version
                    ),
                    *got,
                ));
            }
            (Some((_, got)), false) if *got > exp.version => {
                v.phantom += 1;
                wrong.push((
                    id.clone(),
                    format!(
                        "engine has version {got}, newer than any written ({})",
                        exp.version
                    ),
                    *got,
                ));
            }
            (Some((source, got)), false) => {
                if Some(source) != exp.payload.as_ref() {
                    v.mismatched += 1;
                    wrong.push((
                        id.clone(),
                        format!(
                            "version {got} but _source {source} differs from the payload written"
                        ),
                        *got,
                    ));
                }
            }
        }
    }
    let mut strangers: Vec<&String> = engine
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    strangers.sort();
    for id in strangers {
        v.phantom += 1;
        wrong.push((
            id.clone(),
            format!(
                "in the engine (version {}) but never written as a good event",
                engine[id].1
            ),
            engine[id].1,
        ));
    }

    // The events whose effect is missing: acked, newer than what the engine holds.
    for (id, _, got) in &wrong {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM soak_events s WHERE s.doc_id = $1 AND s.version > $2
                   AND NOT EXISTS (SELECT 1 FROM outbox_event_states o WHERE o.id = s.event_id)",
                &[id, got],
            )
            .await?
            .get(0);
        v.lost_events += n;
    }
    if !wrong.is_empty() {
        let mut examples = Vec::new();
        for (id, what, _) in wrong.iter().take(EXAMPLES) {
            let events: Vec<String> = db
                .query(
                    "SELECT event_id, op, version FROM soak_events WHERE doc_id = $1
                     ORDER BY version DESC LIMIT 3",
                    &[id],
                )
                .await?
                .iter()
                .map(|r| {
                    format!(
                        "#{} {} v{}",
                        r.get::<_, i64>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i64>(2)
                    )
                })
                .collect();
            examples.push(format!(
                "{id}: {what} (newest events: {})",
                events.join(", ")
            ));
        }
        findings.violation(format!(
            "{} documents differ from their newest version (lost {}, stale {}, mismatched {}, phantom {}):\n  {}",
            wrong.len(),
            v.lost,
            v.stale,
            v.mismatched,
            v.phantom,
            examples.join("\n  ")
        ));
    }
    Ok(())
}
