//! A schema of its own per test or run, migrated: tests, benches and tools share one
//! PostgreSQL server (and run side by side) without seeing each other's outbox.

use std::time::{Duration, Instant};

use anyhow::Context;
use outbox_worker::config::{Config, NotifyMode};
use outbox_worker::contract::{self, NewEvent};
use serde_json::Value;

use crate::services::{connect, engine_url, pg_base_url, try_connect, unique};

/// `url` with one more query parameter.
pub fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// The URL whose connections see only `schema` (its `options` parameter comes last, so
/// more `-c` settings may be appended to it).
pub fn schema_url(base_url: &str, schema: &str) -> String {
    with_param(base_url, &format!("options=-c%20search_path%3D{schema}"))
}

/// One schema of a database, migrated.
pub struct Schema {
    pub name: String,
    /// The database URL whose connections see only this schema.
    pub url: String,
}

impl Schema {
    /// Create `name` in the database of `base_url` and migrate it with the trigger of `mode`.
    pub async fn create(base_url: &str, name: &str, mode: NotifyMode) -> anyhow::Result<Schema> {
        try_connect(base_url, "outbox-harness")
            .await?
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .with_context(|| format!("CREATE SCHEMA {name}"))?;
        let schema = Schema {
            name: name.to_string(),
            url: schema_url(base_url, name),
        };
        let mut client = try_connect(&schema.url, "outbox-harness").await?;
        outbox_worker::migrate::migrate(&mut client, mode)
            .await
            .with_context(|| format!("migrating schema {name}"))?;
        Ok(schema)
    }
}

/// Drop schema `name` and everything in it, if it exists.
pub async fn drop_schema(base_url: &str, name: &str) -> anyhow::Result<()> {
    try_connect(base_url, "outbox-harness")
        .await?
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .await
        .with_context(|| format!("DROP SCHEMA {name}"))
}

/// A row as [`TestSchema::insert_raw`] writes it, column by column: (index, doc_id, op,
/// payload, doc_version), with `op` free text.
pub type RawRow<'a> = (&'a str, &'a str, &'a str, Option<Value>, Option<i64>);

/// One isolated outbox for a test: a schema of its own in the tests' database.
pub struct TestSchema {
    pub name: String,
    pub url: String,
}

impl TestSchema {
    pub async fn new(prefix: &str, mode: NotifyMode) -> TestSchema {
        let name = unique(&format!("t_{prefix}"));
        let schema = Schema::create(&pg_base_url(), &name, mode)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        TestSchema {
            name: schema.name,
            url: schema.url,
        }
    }

    /// Config for a worker on this schema; `extra` are (key, value) pairs without the prefix.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        let engine = engine_url();
        let worker = unique("w");
        let mut pairs: Vec<(&str, &str)> = vec![
            ("database_url", &self.url),
            ("elasticsearch_url", &engine),
            ("metrics_addr", "off"),
            ("worker_id", &worker),
            ("poll_interval_seconds", "1"),
            ("reclaim_interval_seconds", "1"),
            ("base_backoff_seconds", "0.05"),
            ("max_backoff_seconds", "0.5"),
            ("request_timeout_seconds", "10"),
            ("lease_seconds", "30"),
            ("shutdown_grace_seconds", "10"),
        ];
        pairs.extend_from_slice(extra);
        Config::from_pairs(pairs).expect("test config is valid")
    }

    /// Environment for a worker process on this schema.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OUTBOX_DATABASE_URL".into(), self.url.clone()),
            ("OUTBOX_ELASTICSEARCH_URL".into(), engine_url()),
            ("OUTBOX_METRICS_ADDR".into(), "off".into()),
            ("OUTBOX_POLL_INTERVAL_SECONDS".into(), "1".into()),
            ("OUTBOX_RECLAIM_INTERVAL_SECONDS".into(), "1".into()),
            ("OUTBOX_BASE_BACKOFF_SECONDS".into(), "0.05".into()),
            ("OUTBOX_MAX_BACKOFF_SECONDS".into(), "0.5".into()),
            ("OUTBOX_REQUEST_TIMEOUT_SECONDS".into(), "10".into()),
            ("OUTBOX_LEASE_SECONDS".into(), "30".into()),
        ]
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Rows by status.
    pub async fn count(&self, status: &str) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT count(*) FROM outbox_event_states WHERE status = $1",
                &[&status],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn total(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM outbox_event_states", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Wait until nothing is pending or processing (everything acked or failed).
    pub async fn wait_drained(&self, timeout: Duration) {
        let c = self.client().await;
        let start = Instant::now();
        loop {
            let n = undelivered(&c).await;
            if n == 0 {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "outbox not drained after {timeout:?}: {n} events left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Insert `events` through the producer's contract (one statement); their ids, in order.
    pub async fn insert(&self, events: &[NewEvent]) -> Vec<i64> {
        contract::insert_returning_ids(&self.client().await, events)
            .await
            .unwrap()
    }

    /// Insert rows the contract forbids (an unknown op, an index without payload, ...), one
    /// statement each, bypassing [`contract::insert`]: only for tests of the worker's answer
    /// to such rows. Everything else goes through [`TestSchema::insert`].
    pub async fn insert_raw(&self, rows: &[RawRow<'_>]) -> Vec<i64> {
        let c = self.client().await;
        let mut ids = Vec::new();
        for (index, doc, op, payload, version) in rows {
            let r = c
                .query_one(
                    // Raw: these rows break the contract on purpose.
                    "INSERT INTO outbox_events (index_name, doc_id, op, payload, doc_version)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[index, doc, op, payload, version],
                )
                .await
                .unwrap();
            ids.push(r.get(0));
        }
        ids
    }

    /// (status, error_reason) of one event, None once acked (deleted).
    pub async fn state(&self, id: i64) -> Option<(String, Option<String>)> {
        self.client()
            .await
            .query_opt(
                "SELECT status, error_reason FROM outbox_event_states WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }
}

/// Events not yet delivered (pending or processing) in the schema `c` points at.
pub async fn undelivered(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM outbox_event_states WHERE status <> 'failed'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}
