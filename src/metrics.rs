//! Metrics: every name the worker exports, the Prometheus recorder, and the HTTP endpoint
//! serving `/metrics`, `/healthz` (process alive) and `/readyz` (database, engine, LISTEN).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// Database-wide gauges, sampled periodically (sampler.rs).
pub const LAG_EVENTS: &str = "outbox_lag_events";
pub const OLDEST_AGE_SECONDS: &str = "outbox_oldest_age_seconds";
pub const INFLIGHT_EVENTS: &str = "outbox_inflight_events";
pub const STUCK_PROCESSING_EVENTS: &str = "outbox_stuck_processing_events";
pub const FAILED_EVENTS: &str = "outbox_failed_events";
// What holds back cleanup in the database (horizon.rs, sampled with the gauges above).
pub const DB_DEAD_TUPLES: &str = "outbox_db_dead_tuples";
pub const DB_OLDEST_XMIN_AGE_SECONDS: &str = "outbox_db_oldest_xmin_age_seconds";
pub const DB_OLDEST_XMIN_AGE_XIDS: &str = "outbox_db_oldest_xmin_age_xids";
// Counters of what this worker did.
pub const RETRY_SCHEDULED_TOTAL: &str = "outbox_retry_scheduled_total";
pub const TERMINAL_FAILED_TOTAL: &str = "outbox_terminal_failed_total";
pub const CLAIMED_TOTAL: &str = "outbox_claimed_total";
pub const ACKED_TOTAL: &str = "outbox_acked_total";
pub const SUPERSEDED_TOTAL: &str = "outbox_superseded_total";
pub const RECLAIMED_TOTAL: &str = "outbox_reclaimed_total";
pub const RELEASED_TOTAL: &str = "outbox_released_total";
pub const REPLAYED_TOTAL: &str = "outbox_replayed_total";
pub const LATE_ACKS_TOTAL: &str = "outbox_late_acks_total";
pub const BULK_REQUESTS_TOTAL: &str = "outbox_bulk_requests_total";
pub const ENGINE_AUTH_ERRORS_TOTAL: &str = "outbox_engine_auth_errors_total";
pub const DB_ERRORS_TOTAL: &str = "outbox_db_errors_total";
pub const WAKES_TOTAL: &str = "outbox_wakes_total";
pub const LOG_TRUNCATIONS_TOTAL: &str = "outbox_log_truncations_total";
pub const ENGINE_NODE_REQUESTS_TOTAL: &str = "outbox_engine_node_requests_total";
pub const BULK_BODY_BYTES_TOTAL: &str = "outbox_bulk_body_bytes_total";
pub const DELETE_RECORDS_PRUNED_TOTAL: &str = "outbox_delete_records_pruned_total";
// Histograms.
pub const BULK_DURATION_SECONDS: &str = "outbox_bulk_duration_seconds";
pub const END_TO_END_SECONDS: &str = "outbox_end_to_end_seconds";
pub const CLAIM_DURATION_SECONDS: &str = "outbox_claim_duration_seconds";
/// An event's latency split by stage (`Stage`), in `LATENCY_BUCKETS`.
pub const STAGE_SECONDS: &str = "outbox_stage_seconds";
// This worker's state.
pub const LISTEN_CONNECTED: &str = "outbox_listen_connected";
pub const WORKER_INFLIGHT_EVENTS: &str = "outbox_worker_inflight_events";
pub const ENGINE_NODE_UP: &str = "outbox_engine_node_up";
/// Delete records kept, counted after each prune (the same on every worker).
pub const DELETE_RECORDS: &str = "outbox_delete_records";

/// Bulk requests, end-to-end latency and its stages: fine from 0.25 ms to 50 ms, where a
/// worker that promises milliseconds spends its time, coarser up to 10 s; the tail to 300 s
/// tells a backlog apart from a slow request instead of lumping it into `+Inf`.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Where an event's time goes between its insert and its ack, one label of
/// `outbox_stage_seconds` each. Timed once per claim, chunk or request (one `Instant` each),
/// except `Wait`, which is per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Insert (`created_at`) -> the start of the claim that took the event; per event, for
    /// events claimed from the log only (a retry's wait is its backoff, by design).
    Wait,
    /// The claim statement (pool wait included) and the lookup of its recorded deletes;
    /// per claim that returned events.
    Claim,
    /// Coalescing, validation and encoding of one claim into its bulk bodies; per claim.
    Encode,
    /// A chunk's wait for a bulk slot: claim done -> its request starts, encoding excluded;
    /// per chunk.
    Queue,
    /// One `_bulk` round trip (as `outbox_bulk_duration_seconds`); per request.
    Bulk,
    /// Writing one chunk's outcomes and completing its pieces; per chunk (and per claim for
    /// its events decided without sending: superseded, invalid).
    Ack,
}

impl Stage {
    /// In the order an event goes through them.
    pub const ALL: [Stage; 6] = [
        Stage::Wait,
        Stage::Claim,
        Stage::Encode,
        Stage::Queue,
        Stage::Bulk,
        Stage::Ack,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Wait => "wait",
            Stage::Claim => "claim",
            Stage::Encode => "encode",
            Stage::Queue => "queue",
            Stage::Bulk => "bulk",
            Stage::Ack => "ack",
        }
    }

    /// The histogram of this stage (take it once to record many values).
    pub fn histogram(self) -> metrics::Histogram {
        metrics::histogram!(STAGE_SECONDS, "stage" => self.label())
    }

    pub fn record(self, took: std::time::Duration) {
        self.histogram().record(took);
    }
}

/// How long an event waited before its claim began, from two wall clocks in seconds since
/// the epoch (the database's `created_at`, this worker's claim start); 0 if the clocks
/// disagree the other way.
pub fn waited(created_epoch: f64, claim_started_epoch: f64) -> f64 {
    (claim_started_epoch - created_epoch).max(0.0)
}

/// A claim takes a fraction of a millisecond when its index is clean; seconds when it
/// wades through dead tuples or waits on locks.
const CLAIM_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Install the global recorder; the handle renders `/metrics`.
pub fn install() -> PrometheusHandle {
    let handle = builder()
        .install_recorder()
        .expect("metrics recorder installed once");
    describe();
    handle
}

/// The recorder's configuration: the buckets of each histogram.
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .expect("valid buckets")
        // A full match wins over the suffix.
        .set_buckets_for_metric(Matcher::Full(CLAIM_DURATION_SECONDS.into()), CLAIM_BUCKETS)
        .expect("valid buckets")
}

/// The `# HELP` line of each metric (runbook §6.1 says more).
fn describe() {
    use metrics::{
        describe_counter as counter, describe_gauge as gauge, describe_histogram as histogram,
    };
    gauge!(
        LAG_EVENTS,
        "Undelivered events (pending + processing), database-wide"
    );
    gauge!(
        OLDEST_AGE_SECONDS,
        "Age of the oldest undelivered event, from created_at"
    );
    gauge!(INFLIGHT_EVENTS, "Processing events, database-wide");
    gauge!(
        STUCK_PROCESSING_EVENTS,
        "Processing events whose lease expired or that exceeded max processing"
    );
    gauge!(FAILED_EVENTS, "Events in the terminal failed pile");
    gauge!(
        DB_DEAD_TUPLES,
        "n_dead_tup of each outbox table of the worker's schema, partitions included"
    );
    gauge!(
        DB_OLDEST_XMIN_AGE_SECONDS,
        "Age of the oldest xmin holding back cleanup in this database, by holder kind (0: none)"
    );
    gauge!(
        DB_OLDEST_XMIN_AGE_XIDS,
        "Transactions since the oldest xmin holding back cleanup in this database, by holder kind"
    );
    counter!(
        RETRY_SCHEDULED_TOTAL,
        "Retries this worker scheduled, by reason"
    );
    counter!(
        TERMINAL_FAILED_TOTAL,
        "Events this worker moved to failed, by reason"
    );
    counter!(CLAIMED_TOTAL, "Events this worker claimed");
    counter!(
        ACKED_TOTAL,
        "Events this worker acked, by kind (superseded_by_delete: an index event at or below a recorded delete's version, not sent)"
    );
    counter!(
        DELETE_RECORDS_PRUNED_TOTAL,
        "Delete records this worker pruned after OUTBOX_DELETE_RECORD_RETENTION_SECONDS"
    );
    gauge!(
        DELETE_RECORDS,
        "Delete records kept (counted after each prune)"
    );
    counter!(
        SUPERSEDED_TOTAL,
        "Events acked because a newer version of their document was in the same claim"
    );
    counter!(
        RECLAIMED_TOTAL,
        "Stuck events this worker's reclaimer returned, by destination"
    );
    counter!(RELEASED_TOTAL, "Claimed events released unsent at shutdown");
    counter!(REPLAYED_TOTAL, "Events replayed, from the audit trail");
    counter!(
        LATE_ACKS_TOTAL,
        "Outcome writes refused because the lease had moved on (fencing)"
    );
    counter!(BULK_REQUESTS_TOTAL, "_bulk requests, by result");
    counter!(
        ENGINE_AUTH_ERRORS_TOTAL,
        "401/403 answers from the engine, by reason"
    );
    counter!(DB_ERRORS_TOTAL, "Database errors, by operation");
    counter!(
        ENGINE_NODE_REQUESTS_TOTAL,
        "Tries of _bulk requests, by engine node (host:port) and outcome (ok: it answered)"
    );
    counter!(
        BULK_BODY_BYTES_TOTAL,
        "Bytes of _bulk request bodies sent, as sent (encoding gzip or identity), retries included"
    );
    counter!(WAKES_TOTAL, "Wakes of the drain, by source");
    histogram!(BULK_DURATION_SECONDS, "Duration of one _bulk request");
    histogram!(END_TO_END_SECONDS, "Insert to ack latency of acked events");
    histogram!(
        CLAIM_DURATION_SECONDS,
        "Duration of one claim, including its wait for a pool connection"
    );
    histogram!(
        STAGE_SECONDS,
        "Insert-to-ack latency by stage: wait (insert -> claim start, per event), claim, encode, queue (waiting for a bulk slot), bulk, ack"
    );
    gauge!(
        LISTEN_CONNECTED,
        "Whether the LISTEN connection is up (1) or not (0)"
    );
    gauge!(
        ENGINE_NODE_UP,
        "Whether this worker sends to an engine node (1) or holds it down and probes it (0)"
    );
    gauge!(
        WORKER_INFLIGHT_EVENTS,
        "Events this worker claimed and has not yet resolved"
    );
}

/// What `/readyz` needs to know, shared with the listener.
#[derive(Default)]
pub struct Health {
    pub listen_up: AtomicBool,
    /// Whether this worker uses LISTEN at all (notify mode off: it does not).
    pub listen_required: AtomicBool,
}

impl Health {
    pub fn set_listen_up(&self, up: bool) {
        self.listen_up.store(up, Ordering::Relaxed);
        metrics::gauge!(LISTEN_CONNECTED).set(if up { 1.0 } else { 0.0 });
    }
}

#[derive(Clone)]
struct AppState {
    handle: PrometheusHandle,
    health: Arc<Health>,
    pool: deadpool_postgres::Pool,
    engine: crate::bulk::client::BulkClient,
}

async fn render(State(s): State<AppState>) -> String {
    s.handle.render()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    match s.pool.get().await {
        Ok(c) => {
            if let Err(e) = c.simple_query("SELECT 1").await {
                problems.push(format!("database: {e}"));
            }
        }
        Err(e) => problems.push(format!("database: {e}")),
    }
    if let Err(e) = s.engine.ping().await {
        problems.push(format!("engine: {e}"));
    }
    if s.health.listen_required.load(Ordering::Relaxed)
        && !s.health.listen_up.load(Ordering::Relaxed)
    {
        problems.push("listen: not connected".into());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

/// Serve the endpoints until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    health: Arc<Health>,
    pool: deadpool_postgres::Pool,
    engine: crate::bulk::client::BulkClient,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            handle,
            health,
            pool,
            engine,
        });
    tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_fine_in_the_millisecond_range() {
        let b = LATENCY_BUCKETS;
        assert!(b.windows(2).all(|w| w[0] < w[1]), "increasing: {b:?}");
        assert_eq!(b[0], 0.00025);
        assert!(b.contains(&10.0));
        // Up to 50 ms, no bucket is more than twice as wide as the one before: a p99 read
        // from them is off by less than the bucket, not by a factor of five.
        let fine: Vec<f64> = b.iter().copied().filter(|&x| x <= 0.05).collect();
        assert!(fine.len() >= 15, "{fine:?}");
        assert!(fine.windows(2).all(|w| w[1] / w[0] <= 2.0), "{fine:?}");
    }

    #[test]
    fn stages_have_distinct_labels_in_order() {
        let labels: Vec<&str> = Stage::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(labels, ["wait", "claim", "encode", "queue", "bulk", "ack"]);
    }

    #[test]
    fn waited_is_never_negative() {
        assert_eq!(waited(100.0, 100.25), 0.25);
        assert_eq!(waited(100.5, 100.0), 0.0, "clocks apart: 0, not negative");
    }

    #[test]
    fn stage_and_latency_histograms_get_the_fine_buckets() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            Stage::Bulk.record(std::time::Duration::from_micros(600));
            metrics::histogram!(END_TO_END_SECONDS).record(0.0012);
            metrics::histogram!(CLAIM_DURATION_SECONDS).record(0.0003);
        });
        let page = handle.render();
        for line in [
            r#"outbox_stage_seconds_bucket{stage="bulk",le="0.0005"} 0"#,
            r#"outbox_stage_seconds_bucket{stage="bulk",le="0.00075"} 1"#,
            r#"outbox_end_to_end_seconds_bucket{le="0.001"} 0"#,
            r#"outbox_end_to_end_seconds_bucket{le="0.0015"} 1"#,
            // The claim keeps its own buckets (no 0.75 ms bound).
            r#"outbox_claim_duration_seconds_bucket{le="0.0005"} 1"#,
        ] {
            assert!(page.contains(line), "{line} missing from:\n{page}");
        }
        assert!(!page.contains(r#"outbox_claim_duration_seconds_bucket{le="0.00075"}"#));
    }
}
