//! outbox-worker: projects a PostgreSQL transactional outbox into Elasticsearch / OpenSearch.
//!
//! The public API is what a producer or an embedding application needs:
//! - [`config`]: the settings (defaults < TOML file < `OUTBOX_*` environment), validated;
//! - [`worker::run`]: run a worker until a cancellation token fires (graceful shutdown);
//! - [`migrate`]: apply the schema and the insert trigger;
//! - [`contract`]: the producer's contract: the columns, `Op`, `Status`, `ErrorReason`, and
//!   the one insert helper to call inside the application's own transaction;
//! - [`stats`] and [`replay`]: the operator's questions and the audited replay;
//! - [`console`]: the operator's web console (`outbox-worker console`);
//! - [`metrics`]: the metric names and the Prometheus recorder;
//! - [`producer`]: an application-style load generator (the demo and the benches);
//! - [`connect`]: one database connection as the worker makes it (TLS per `sslmode`).
//!
//! Everything else is private. Where it lives (one file per stage; docs/design.md §1):
//! - `wake`      where a wake comes from, and the waker (coalescing)
//! - `listener`  the LISTEN connection (NOTIFY wakes)
//! - `pipeline`  idle -> drain -> dispatch -> outcome -> resolve, one file per stage
//! - `bulk`      NDJSON encoding, the HTTP client, the outcome classification
//! - `store`     claim, ack / retry / fail / release, reclaim, the waiting mark (sql/)
//! - `reclaim`   the reclaimer of stuck events
//! - `deletes`   delete records: which index events a recorded delete supersedes; the prune
//! - `backoff`   one retry delay for every path that retries an event
//! - `sampler`   the database-wide gauges
//! - `horizon`   what holds back cleanup: dead tuples, the oldest xmin by holder
//! - `event`, `db`, `tls`, `sql`, `error_chain`
//!
//! The `testing` feature makes those internal modules public, undocumented, for the
//! project's own tests, benches and tools (the harness crate turns it on); it is not an API.

pub mod config;
pub mod console;
pub mod contract;
pub mod metrics;
pub mod migrate;
pub mod producer;
pub mod replay;
pub mod stats;
pub mod worker;

pub use db::{ConnectSetupError, connect_simple as connect};

/// Declares internal modules: private, or public and hidden under the `testing` feature.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "testing")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "testing"))]
        mod $name;
    )*};
}

internal!(
    backoff,
    bulk,
    db,
    deletes,
    error_chain,
    event,
    horizon,
    listener,
    pipeline,
    reclaim,
    rotation,
    sampler,
    sql,
    store,
    tls,
    wake,
);
