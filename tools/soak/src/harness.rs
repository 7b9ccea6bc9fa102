//! The moving parts of a soak run and how to handle them: the run's names and clock, its
//! schema (migrated, plus the soak's ledger tables) and index, the fault proxy, the worker
//! slots (start, restart) and PostgreSQL backend kills. Processes, schemas and the proxy
//! themselves come from outbox_harness.
//!
//! Everything a run creates is named after its run id (`soak_<id>` schema and index, worker
//! ids `soak-<id>-w<slot>-g<generation>`), so a run never touches another run's data, nor
//! the connections of other people's workers on the same server.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use outbox_harness::{
    Schema, WorkerProcess, drop_schema,
    fault_proxy::{self, Proxy},
    schema_url, try_connect,
};
use outbox_worker::config::NotifyMode;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// Seconds since the start of the run: every recorded time uses this one clock.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
    pub fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Names, URLs and binaries of one run.
pub struct Ctx {
    pub run_id: String,
    /// The soak database, without options.
    pub db_url: String,
    /// The real engine (no trailing slash); checks read it directly, never via the proxy.
    pub es_url: String,
    pub http: reqwest::Client,
    pub worker_bin: PathBuf,
    /// Logs of the proxy and of every worker incarnation.
    pub log_dir: PathBuf,
}

impl Ctx {
    pub fn schema(&self) -> String {
        format!("soak_{}", self.run_id)
    }

    pub fn index(&self) -> String {
        format!("soak_{}", self.run_id)
    }

    /// A URL whose connections see only this run's schema.
    pub fn schema_url(&self) -> String {
        schema_url(&self.db_url, &self.schema())
    }

    /// A connection to this run's schema, named `outbox-soak <role>` in pg_stat_activity
    /// (never matching the worker pattern the PostgreSQL fault kills).
    pub async fn connect(&self, role: &str) -> anyhow::Result<Client> {
        connect_schema(&self.schema_url(), role).await
    }

    /// A connection that comes back by itself (see [`Db`]).
    pub fn db(&self, role: &str) -> Db {
        Db {
            url: self.schema_url(),
            role: role.to_string(),
            client: Mutex::new(None),
        }
    }

    /// Create the schema, migrate it with the adaptive trigger, add the soak's ledger.
    pub async fn create_schema(&self) -> anyhow::Result<()> {
        Schema::create(&self.db_url, &self.schema(), NotifyMode::Adaptive).await?;
        self.connect("setup")
            .await?
            .batch_execute(LEDGER)
            .await
            .context("ledger tables")
    }

    pub async fn drop_schema(&self) -> anyhow::Result<()> {
        drop_schema(&self.db_url, &self.schema()).await
    }

    /// One shard, no replica (green on a one-node cluster), and `v` mapped as a number so
    /// the injected mapping-conflict events really fail in the engine.
    pub async fn create_index(&self) -> anyhow::Result<()> {
        let body = json!({
            "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": {
                "doc": {"type": "keyword"},
                "v": {"type": "long"},
                "seq": {"type": "long"},
                "name": {"type": "text"},
                "tags": {"type": "keyword"},
                "price": {"type": "long"}
            }}
        });
        let url = format!("{}/{}", self.es_url, self.index());
        let resp = self.http.put(url).json(&body).send().await?;
        if !resp.status().is_success() {
            bail!(
                "cannot create index {}: {} {}",
                self.index(),
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn delete_index(&self) {
        let _ = self
            .http
            .delete(format!("{}/{}", self.es_url, self.index()))
            .send()
            .await;
    }
}

async fn connect_schema(url: &str, role: &str) -> anyhow::Result<Client> {
    try_connect(url, &format!("outbox-soak {role}")).await
}

/// A connection of the soak's own that reconnects once lost: the PostgreSQL server is
/// shared, and other people's tests restart it. The workers are expected to ride that out;
/// the soak must too, or an outside restart would end it before its checks.
pub struct Db {
    url: String,
    role: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl Db {
    /// The current connection, or a new one if it was lost.
    pub async fn get(&self) -> anyhow::Result<Arc<Client>> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let c = Arc::new(connect_schema(&self.url, &self.role).await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Like [`Db::get`], trying again for up to `patience` while the server is away.
    pub async fn get_patiently(&self, patience: Duration) -> anyhow::Result<Arc<Client>> {
        let deadline = Instant::now() + patience;
        loop {
            match self.get().await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// The soak's own bookkeeping, written by the producer in the same transaction as the
/// outbox events, so it can never disagree with what was really committed:
/// - `soak_docs`: the newest state of every document (what the engine must end up holding);
/// - `soak_events`: every event produced, with the failure it was built to cause, if any.
const LEDGER: &str = "
CREATE TABLE soak_docs (
    doc_id  text PRIMARY KEY,
    version bigint NOT NULL,
    deleted boolean NOT NULL,
    payload jsonb
);
CREATE TABLE soak_events (
    event_id    bigint PRIMARY KEY,
    doc_id      text NOT NULL,
    op          text NOT NULL,
    version     bigint NOT NULL,
    expect_fail text
);
CREATE INDEX soak_events_doc_idx ON soak_events (doc_id, version);
";

/// The fault proxy between the workers and the engine, in this process (its log lines go
/// to the soak's log file of the proxy), stopped on drop.
pub fn start_proxy(ctx: &Ctx, seed: u64) -> anyhow::Result<Proxy> {
    let upstream = ctx.es_url.parse().context("the engine URL")?;
    Proxy::start(fault_proxy::Options {
        seed,
        // The worker's own timeout decides; the proxy must not give up first.
        upstream_timeout: Duration::from_secs(60),
        ..fault_proxy::Options::new(upstream)
    })
}

/// How every worker is configured: short lease and timeouts so faults resolve in seconds,
/// and an attempt limit no injected outage can exhaust (a `max_attempts_exceeded` would then
/// be a finding, not an expected outcome).
pub struct WorkerEnv {
    pub pairs: Vec<(&'static str, String)>,
    pub lease_seconds: f64,
    pub request_timeout_seconds: f64,
    pub shutdown_grace_seconds: f64,
}

impl WorkerEnv {
    pub fn new(db_url: &str, engine_url: &str) -> WorkerEnv {
        let (lease, timeout, grace) = (5.0, 2.0, 5.0);
        let pairs = vec![
            ("OUTBOX_DATABASE_URL", db_url.to_string()),
            ("OUTBOX_ELASTICSEARCH_URL", engine_url.to_string()),
            ("OUTBOX_LEASE_SECONDS", lease.to_string()),
            ("OUTBOX_REQUEST_TIMEOUT_SECONDS", timeout.to_string()),
            ("OUTBOX_RECLAIM_INTERVAL_SECONDS", "1".into()),
            ("OUTBOX_POLL_INTERVAL_SECONDS", "1".into()),
            ("OUTBOX_BASE_BACKOFF_SECONDS", "0.1".into()),
            ("OUTBOX_MAX_BACKOFF_SECONDS", "2".into()),
            ("OUTBOX_MAX_ATTEMPTS", "1000".into()),
            ("OUTBOX_SHUTDOWN_GRACE_SECONDS", grace.to_string()),
            // Small chunks: more bulk requests, so more of them meet a fault.
            ("OUTBOX_BULK_SIZE", "100".into()),
            ("OUTBOX_CONCURRENCY", "4".into()),
            ("OUTBOX_NOTIFY_MODE", "adaptive".into()),
            // Info: every retry, failure, reclaim, release and late ack is logged with ids.
            ("OUTBOX_LOG_LEVEL", "info".into()),
            ("OUTBOX_LOG_FORMAT", "text".into()),
        ];
        WorkerEnv {
            pairs,
            lease_seconds: lease,
            request_timeout_seconds: timeout,
            shutdown_grace_seconds: grace,
        }
    }

    /// For the report: the settings, without the database URL (it may hold a password).
    pub fn to_json(&self) -> Value {
        self.pairs
            .iter()
            .filter(|(k, _)| *k != "OUTBOX_DATABASE_URL")
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// The worker slots. A slot's lock is held by whoever acts on its process (a fault, the
/// supervisor in the monitor, the final stop), so no two of them signal the same process.
pub struct Workers {
    pub slots: Vec<Mutex<Option<WorkerProcess>>>,
    generations: Vec<AtomicU32>,
    pub starts: AtomicU64,
    env: WorkerEnv,
    worker_bin: PathBuf,
    log_dir: PathBuf,
    run_id: String,
}

impl Workers {
    pub fn new(ctx: &Ctx, env: WorkerEnv, count: usize) -> Workers {
        Workers {
            slots: (0..count).map(|_| Mutex::new(None)).collect(),
            generations: (0..count).map(|_| AtomicU32::new(0)).collect(),
            starts: AtomicU64::new(0),
            env,
            worker_bin: ctx.worker_bin.clone(),
            log_dir: ctx.log_dir.clone(),
            run_id: ctx.run_id.clone(),
        }
    }

    pub fn env(&self) -> &WorkerEnv {
        &self.env
    }

    /// The `pg_stat_activity.application_name` pattern of every connection of this run's
    /// workers (`outbox-worker <role> <worker id>`); ids hold no LIKE wildcards.
    pub fn app_name_pattern(&self, worker_id: Option<&str>) -> String {
        match worker_id {
            Some(id) => format!("outbox-worker % {id}"),
            None => format!("outbox-worker % soak-{}-w%", self.run_id),
        }
    }

    /// Start a new incarnation in `slot`: a fresh worker id (as a restarted pod gets a new
    /// hostname-pid) and a fresh metrics port.
    pub fn spawn(&self, slot: usize) -> anyhow::Result<WorkerProcess> {
        let generation = self.generations[slot].fetch_add(1, Ordering::Relaxed);
        let id = format!("soak-{}-w{}-g{generation}", self.run_id, slot + 1);
        let log = self.log_dir.join(format!("{id}.log"));
        let w = WorkerProcess::start(&self.worker_bin, &id, self.env.pairs.clone(), &log)?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        Ok(w)
    }

    /// Start every slot and wait until each answers `/readyz` (database, engine via the
    /// proxy, LISTEN connection).
    pub async fn start_all(&self) -> anyhow::Result<()> {
        for slot in 0..self.slots.len() {
            let w = self.spawn(slot)?;
            *self.slots[slot].lock().await = Some(w);
        }
        for slot in &self.slots {
            let guard = slot.lock().await;
            guard.as_ref().expect("started above").wait_ready().await?;
        }
        Ok(())
    }
}

/// Terminate the PostgreSQL backends whose application_name matches `pattern` (this run's
/// workers only); returns how many were terminated.
pub async fn terminate_backends(admin: &Client, pattern: &str) -> anyhow::Result<i64> {
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE $1
               AND pid <> pg_backend_pid()",
            &[&pattern],
        )
        .await?;
    Ok(row.get(0))
}
