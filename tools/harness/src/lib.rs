//! What the worker's tests, its benches, `outbox-bench`, `outbox-soak` and the labs share,
//! written once:
//! - `services`: where PostgreSQL and the engine are (scripts/services.sh starts them),
//!   connections, free ports, unique names;
//! - `schema`: a schema of its own per test or run, migrated (one search-path URL);
//! - `worker`: worker processes of the real binary (spawn, `/readyz`, signals, SIGTERM then
//!   SIGKILL) and in-process workers;
//! - `prom`: `/metrics` text (sums, labelled series, histograms); `percentile`;
//! - `engine`: the real engine for assertions, and the fault proxy in front of it;
//! - `nginx`: nginx from Debian's package as a body-limit or TLS proxy.
//!
//! Test helpers panic with a message (a test wants to stop there); what the tools call
//! returns `anyhow::Result`.

mod engine;
pub mod labs;
mod nginx;
pub mod prom;
mod schema;
mod services;
mod worker;

pub use engine::{Engine, FaultProxy, urlencode};
/// The fault proxy itself (in-process start, control client).
pub use fault_proxy;
pub use nginx::{BodyLimitProxy, Nginx};
pub use prom::percentile;
pub use schema::{RawRow, Schema, TestSchema, drop_schema, schema_url, undelivered, with_param};
pub use services::{connect, engine_url, free_port, pg_base_url, try_connect, unique};
pub use worker::{
    InProcessWorker, WorkerProcess, clean_command, signal, terminate_and_collect, worker_binary,
    worker_command,
};

/// `outbox-worker stats --json`'s failed pile: events by `error_reason`.
pub fn failed_by_reason(stats: &serde_json::Value) -> std::collections::HashMap<String, i64> {
    stats["failed_by_reason"]
        .as_array()
        .expect("stats --json has failed_by_reason")
        .iter()
        .map(|r| {
            (
                r["error_reason"].as_str().unwrap().to_string(),
                r["events"].as_i64().unwrap(),
            )
        })
        .collect()
}
