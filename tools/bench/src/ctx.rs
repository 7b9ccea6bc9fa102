//! What every scenario shares: the database and engine URLs, an HTTP client, the worker
//! binary, and the naming and cleanup of the per-run schemas and indexes. Every run works in
//! a fresh schema (and index), so no run inherits the dead tuples or segments of another.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context, bail};
use outbox_harness::{Schema, drop_schema, schema_url, try_connect};
use outbox_worker::config::NotifyMode;
use tokio_postgres::Client;

/// Everything a run creates starts with this, so leftovers of a crashed run can be found.
pub const PREFIX: &str = "obench";

pub struct Ctx {
    /// The bench database, without options.
    pub db_url: String,
    /// The engine's base URL, ending with `/`.
    pub es_url: reqwest::Url,
    pub http: reqwest::Client,
    pub worker_bin: PathBuf,
    pub log_dir: PathBuf,
    /// Extra server settings for the worker's connections only (`-c name=value ...`), to
    /// measure a candidate fix without rebuilding; empty by default.
    pub worker_pg_options: String,
    /// SQL run in every fresh schema after the migration (e.g. a candidate index or table
    /// change), to measure a schema fix without changing migrations/; empty by default.
    pub schema_sql: String,
    seq: AtomicUsize,
}

impl Ctx {
    pub fn new(
        db_url: String,
        es_url: &str,
        worker_bin: PathBuf,
        log_dir: PathBuf,
        worker_pg_options: String,
        schema_sql: String,
    ) -> anyhow::Result<Ctx> {
        let mut es_url = reqwest::Url::parse(es_url).context("engine URL")?;
        if !es_url.path().ends_with('/') {
            es_url.set_path(&format!("{}/", es_url.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .no_proxy()
            .build()?;
        Ok(Ctx {
            db_url,
            es_url,
            http,
            worker_bin,
            log_dir,
            worker_pg_options,
            schema_sql,
            seq: AtomicUsize::new(0),
        })
    }

    /// A new name for a run: `obench_<pid>_<n>_<label>` (valid as schema and index name).
    pub fn name(&self, label: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{PREFIX}_{}_{n}_{label}", std::process::id())
    }

    /// The URL a worker gets: the schema's, plus `worker_pg_options` in the same `options`.
    pub fn worker_url(&self, schema: &str) -> String {
        with_pg_options(&schema_url(&self.db_url, schema), &self.worker_pg_options)
    }

    /// A connection; its connection task runs in the background.
    pub async fn connect(&self, url: &str) -> anyhow::Result<Client> {
        try_connect(url, "outbox-bench").await
    }

    pub async fn admin(&self) -> anyhow::Result<Client> {
        self.connect(&self.db_url).await
    }

    /// Create and migrate a fresh schema with the trigger of `mode`.
    pub async fn create_schema(&self, label: &str, mode: NotifyMode) -> anyhow::Result<Schema> {
        let schema = Schema::create(&self.db_url, &self.name(label), mode).await?;
        if !self.schema_sql.trim().is_empty() {
            self.connect(&schema.url)
                .await?
                .batch_execute(&self.schema_sql)
                .await
                .context("--schema-sql")?;
        }
        Ok(schema)
    }

    pub async fn drop_schema(&self, schema: &Schema) {
        let _ = drop_schema(&self.db_url, &schema.name).await;
    }

    /// Remove what earlier (crashed) runs left behind: schemas and indexes named `obench_*`
    /// of bench processes that are gone. Those of a bench still running (another one on this
    /// shared machine) are its own: dropping them under it fails its runs (or deadlocks).
    pub async fn cleanup_leftovers(&self) -> anyhow::Result<()> {
        let admin = self.admin().await?;
        let rows = admin
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                &[&format!("{PREFIX}\\_%")],
            )
            .await?;
        for r in rows {
            let name: String = r.get(0);
            if left_behind(&name) {
                drop_schema(&self.db_url, &name).await?;
            }
        }
        let listed = self
            .http
            .get(self.es(&format!("_cat/indices/{PREFIX}_*?h=index"))?)
            .send()
            .await;
        if let Ok(resp) = listed
            && let Ok(text) = resp.text().await
        {
            for index in text.lines().map(str::trim).filter(|i| left_behind(i)) {
                let _ = self.http.delete(self.es(index)?).send().await;
            }
        }
        Ok(())
    }

    pub fn es(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        Ok(self.es_url.join(path)?)
    }

    /// One primary shard and no replica (green on a one-node cluster), and the mapping of
    /// every document the bench writes declared up front, as a production index would have
    /// it: no dynamic mapping update (a cluster-state change) lands inside a measurement.
    pub async fn create_index(&self, name: &str) -> anyhow::Result<()> {
        let text = serde_json::json!({
            "type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}
        });
        let body = serde_json::json!({
            "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": {
                "id": {"type": "long"},
                "name": text,
                "price_cents": {"type": "long"},
                "stock": {"type": "long"},
                "tags": text,
                "description": text,
                "updated_at": {"type": "date"},
            }},
        });
        let resp = self.http.put(self.es(name)?).json(&body).send().await?;
        if !resp.status().is_success() {
            bail!(
                "cannot create index {name}: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn delete_index(&self, name: &str) {
        if let Ok(url) = self.es(name) {
            let _ = self.http.delete(url).send().await;
        }
    }

    /// Let the engine finish the work a large churn left it (a refresh, and segment
    /// merges down to one), so a measurement after it times the outbox, not the merges.
    pub async fn settle_index(&self, name: &str) -> anyhow::Result<()> {
        for path in [
            format!("{name}/_refresh"),
            format!("{name}/_forcemerge?max_num_segments=1"),
        ] {
            let resp = self.http.post(self.es(&path)?).send().await?;
            if !resp.status().is_success() {
                bail!("{path}: {}", resp.status());
            }
        }
        Ok(())
    }

    /// Documents in an index after a refresh (a correctness check, never timed).
    pub async fn index_count(&self, name: &str) -> anyhow::Result<u64> {
        self.http
            .post(self.es(&format!("{name}/_refresh"))?)
            .send()
            .await?;
        let v: serde_json::Value = self
            .http
            .get(self.es(&format!("{name}/_count"))?)
            .send()
            .await?
            .json()
            .await?;
        v["count"]
            .as_u64()
            .with_context(|| format!("no count in {v}"))
    }
}

/// `url` (whose `options` parameter comes last, as `schema_url` makes it) with more
/// `-c name=value` settings appended to that parameter.
pub fn with_pg_options(url: &str, options: &str) -> String {
    let mut url = url.to_string();
    for word in options.split_whitespace() {
        url.push_str("%20");
        url.push_str(&word.replace('=', "%3D"));
    }
    url
}

/// Whether `obench_<pid>_...` names a bench process that is no longer running.
fn left_behind(name: &str) -> bool {
    let pid = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix('_'))
        .and_then(|rest| rest.split('_').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    match pid {
        Some(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}
