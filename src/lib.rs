//! outbox-worker: projects a PostgreSQL transactional outbox into Elasticsearch / OpenSearch.
//!
//! Where things live (one file per stage; docs/design.md §1):
//! - `wake`      where a wake comes from, and the waker (coalescing)
//! - `listener`  the LISTEN connection (NOTIFY wakes)
//! - `pipeline`  idle -> drain -> dispatch -> outcome -> resolve, one file per stage
//! - `contract`  the producer's contract: columns, ops, the insert; status and error_reason codes
//! - `bulk`      NDJSON encoding, the HTTP client, the outcome classification
//! - `store`     claim, ack / retry / fail / release, reclaim, the waiting mark (sql/)
//! - `reclaim`   the reclaimer of stuck events
//! - `backoff`   one retry delay for every path that retries an event
//! - `sampler`, `metrics`  gauges, counters, `/metrics`, `/healthz`, `/readyz`
//! - `replay`, `stats`  the operator commands
//! - `migrate`, `config`, `db`, `sql`, `producer`, `worker`

pub mod backoff;
pub mod bulk;
pub mod config;
pub mod contract;
pub mod db;
pub mod error_chain;
pub mod event;
pub mod listener;
pub mod metrics;
pub mod migrate;
pub mod pipeline;
pub mod producer;
pub mod reclaim;
pub mod replay;
pub mod sampler;
pub mod sql;
pub mod stats;
pub mod store;
pub mod tls;
pub mod wake;
pub mod worker;
