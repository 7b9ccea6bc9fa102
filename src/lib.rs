//! outbox-worker: projects a PostgreSQL transactional outbox into Elasticsearch / OpenSearch.
//!
//! Where things live (one file per stage, DESIGN.md §1):
//! - `listener`  the LISTEN connection (NOTIFY wakes)
//! - `pipeline`  wake -> coalesce -> claim -> chunk -> concurrent `_bulk` -> outcomes
//! - `contract`  the producer's contract: columns, ops, the insert; status and error_reason codes
//! - `claim`     the claim under a lease (sql/claim.sql)
//! - `bulk`      NDJSON encoding, the HTTP client, the outcome classification
//! - `outcome`   ack / retry / fail / release, guarded by lease and attempt
//! - `reclaim`   the reclaimer of stuck events
//! - `waiting`   the worker side of the adaptive trigger
//! - `sampler`, `metrics`  gauges, counters, `/metrics`, `/healthz`, `/readyz`
//! - `replay`, `stats`  the operator commands
//! - `migrate`, `config`, `db`, `sql`, `backoff`, `producer`, `worker`

pub mod backoff;
pub mod bulk;
pub mod claim;
pub mod config;
pub mod contract;
pub mod db;
pub mod error_chain;
pub mod event;
pub mod listener;
pub mod metrics;
pub mod migrate;
pub mod outcome;
pub mod pipeline;
pub mod producer;
pub mod reclaim;
pub mod replay;
pub mod sampler;
pub mod sql;
pub mod stats;
pub mod tls;
pub mod waiting;
pub mod worker;
