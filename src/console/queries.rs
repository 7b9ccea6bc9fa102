//! What the pages read, each a named statement of `sql/` (the console's own are
//! `sql/console_*.sql`; the states, the failed pile and the horizon are the ones `stats` and
//! the sampler run).

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::{config::Config, sql, stats};

#[derive(Debug)]
pub struct ProjectionIndexRow {
    pub projection: String,
    pub index_name: String,
    pub status: String,
    pub events: i64,
}

#[derive(Debug)]
pub struct WorkerRow {
    pub worker_id: Option<String>,
    pub leases: i64,
    pub events: i64,
    pub first_lease_expires_at: Option<DateTime<Utc>>,
    pub waiting: bool,
    pub waiting_since: Option<DateTime<Utc>>,
    pub waiting_until: Option<DateTime<Utc>>,
    pub connections: i64,
    pub last_activity: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct HolderRow {
    pub kind: String,
    pub who: String,
    pub xid_age: Option<i32>,
    pub age_seconds: Option<f64>,
}

#[derive(Debug)]
pub struct Overview {
    pub stats: stats::Stats,
    pub by_projection_index: Vec<ProjectionIndexRow>,
    pub workers: Vec<WorkerRow>,
    pub dead_tuples: Vec<(String, i64)>,
    pub holders: Vec<HolderRow>,
}

pub async fn overview(c: &Client, cfg: &Config) -> Result<Overview, tokio_postgres::Error> {
    let stats = stats::collect(c, cfg).await?;
    let by_projection_index = c
        .query(sql::CONSOLE_BY_PROJECTION_INDEX, &[])
        .await?
        .iter()
        .map(|r| ProjectionIndexRow {
            projection: r.get("projection"),
            index_name: r.get("index_name"),
            status: r.get("status"),
            events: r.get("events"),
        })
        .collect();
    let workers = c
        .query(sql::CONSOLE_WORKERS, &[])
        .await?
        .iter()
        .map(|r| WorkerRow {
            worker_id: r.get("worker_id"),
            leases: r.get("leases"),
            events: r.get("events"),
            first_lease_expires_at: r.get("first_lease_expires_at"),
            waiting: r.get("waiting"),
            waiting_since: r.get("waiting_since"),
            waiting_until: r.get("waiting_until"),
            connections: r.get("connections"),
            last_activity: r.get("last_activity"),
        })
        .collect();
    let dead_tuples = c
        .query(sql::SAMPLE_DEAD_TUPLES, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let holders = c
        .query(sql::CONSOLE_XMIN_HOLDERS, &[])
        .await?
        .iter()
        .map(|r| HolderRow {
            kind: r.get("kind"),
            who: r.get("who"),
            xid_age: r.get("xid_age"),
            age_seconds: r.get("age_seconds"),
        })
        .collect();
    Ok(Overview {
        stats,
        by_projection_index,
        workers,
        dead_tuples,
        holders,
    })
}

/// How much of a payload the event page shows.
pub const PAYLOAD_CAP_CHARS: i32 = 16 * 1024;

#[derive(Debug)]
pub struct EventRow {
    pub id: i64,
    pub projection: String,
    pub index_name: String,
    pub doc_id: String,
    pub op: String,
    pub status: String,
    pub attempts: i32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub processing_started_at: Option<DateTime<Utc>>,
    pub error_reason: Option<String>,
    pub error: Option<String>,
    pub replay_count: i32,
    pub created_at: DateTime<Utc>,
    pub failed_at: Option<DateTime<Utc>>,
    pub doc_version: Option<i64>,
    pub payload_head: Option<String>,
    pub payload_cut: Option<bool>,
    pub payload_bytes: Option<i32>,
}

pub async fn event(c: &Client, id: i64) -> Result<Option<EventRow>, tokio_postgres::Error> {
    Ok(c.query_opt(sql::CONSOLE_EVENT, &[&id, &PAYLOAD_CAP_CHARS])
        .await?
        .map(|r| EventRow {
            id: r.get("id"),
            projection: r.get("projection"),
            index_name: r.get("index_name"),
            doc_id: r.get("doc_id"),
            op: r.get("op"),
            status: r.get("status"),
            attempts: r.get("attempts"),
            next_retry_at: r.get("next_retry_at"),
            lease_owner: r.get("lease_owner"),
            lease_expires_at: r.get("lease_expires_at"),
            processing_started_at: r.get("processing_started_at"),
            error_reason: r.get("error_reason"),
            error: r.get("error"),
            replay_count: r.get("replay_count"),
            created_at: r.get("created_at"),
            failed_at: r.get("failed_at"),
            doc_version: r.get("doc_version"),
            payload_head: r.get("payload_head"),
            payload_cut: r.get("payload_cut"),
            payload_bytes: r.get("payload_bytes"),
        }))
}

#[derive(Debug)]
pub struct EventAudit {
    pub id: i64,
    pub replayed_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    pub event_count: i32,
}

pub async fn event_audit(c: &Client, id: i64) -> Result<Vec<EventAudit>, tokio_postgres::Error> {
    Ok(c.query(sql::CONSOLE_EVENT_AUDIT, &[&id])
        .await?
        .iter()
        .map(|r| EventAudit {
            id: r.get("id"),
            replayed_at: r.get("replayed_at"),
            actor: r.get("actor"),
            reason: r.get("reason"),
            event_count: r.get("event_count"),
        })
        .collect())
}

/// A delete record, as the document page shows it.
#[derive(Debug, Clone)]
pub struct RecordRow {
    pub projection: String,
    pub routing: Option<String>,
    /// The highest version deleted.
    pub doc_version: i64,
    pub deleted_at: DateTime<Utc>,
    /// The delete event whose ack wrote (or last raised) the record.
    pub event_id: i64,
    /// Until the prune may remove it, on the database's clock; negative when due.
    pub prunes_in_seconds: f64,
}

/// An event of the document still in the outbox.
#[derive(Debug, Clone)]
pub struct DocEventRow {
    pub id: i64,
    pub projection: String,
    pub op: String,
    pub status: String,
    /// The external version: doc_version, else the id.
    pub version: i64,
    /// The producer set doc_version (else the version is the id).
    pub producer_version: bool,
    pub routing: Option<String>,
    pub attempts: i32,
    pub error_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// Events the document page lists at most (the oldest; the page says when cut).
pub const DOCUMENT_EVENTS_CAP: i64 = 200;

/// The document's delete records and its events still in the outbox.
pub async fn document(
    c: &Client,
    key: &super::document::DocKey,
    retention: std::time::Duration,
) -> Result<(Vec<RecordRow>, Vec<DocEventRow>), tokio_postgres::Error> {
    let projection = key.projection.as_deref();
    let records = c
        .query(
            sql::CONSOLE_DOCUMENT_RECORDS,
            &[
                &key.index,
                &key.doc_id,
                &projection,
                &retention.as_secs_f64(),
            ],
        )
        .await?
        .iter()
        .map(|r| RecordRow {
            projection: r.get("projection"),
            routing: r.get("routing"),
            doc_version: r.get("doc_version"),
            deleted_at: r.get("deleted_at"),
            event_id: r.get("event_id"),
            prunes_in_seconds: r.get("prunes_in_seconds"),
        })
        .collect();
    let events = c
        .query(
            sql::CONSOLE_DOCUMENT_EVENTS,
            &[
                &key.index,
                &key.doc_id,
                &projection,
                &(DOCUMENT_EVENTS_CAP + 1),
            ],
        )
        .await?
        .iter()
        .map(|r| DocEventRow {
            id: r.get("id"),
            projection: r.get("projection"),
            op: r.get("op"),
            status: r.get("status"),
            version: r.get("version"),
            producer_version: r.get("producer_version"),
            routing: r.get("routing"),
            attempts: r.get("attempts"),
            error_reason: r.get("error_reason"),
            created_at: r.get("created_at"),
            failed_at: r.get("failed_at"),
        })
        .collect();
    Ok((records, events))
}
