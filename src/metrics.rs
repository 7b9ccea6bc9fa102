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
// Histograms.
pub const BULK_DURATION_SECONDS: &str = "outbox_bulk_duration_seconds";
pub const END_TO_END_SECONDS: &str = "outbox_end_to_end_seconds";
// This worker's state.
pub const LISTEN_CONNECTED: &str = "outbox_listen_connected";
pub const WORKER_INFLIGHT_EVENTS: &str = "outbox_worker_inflight_events";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Install the global recorder; the handle renders `/metrics`.
pub fn install() -> PrometheusHandle {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .expect("valid buckets")
        .install_recorder()
        .expect("metrics recorder installed once")
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
