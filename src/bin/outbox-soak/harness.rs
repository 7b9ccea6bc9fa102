//! The moving parts of a soak run and how to handle them: the run's names and clock, its
//! schema (migrated, plus the soak's ledger tables) and index, the fault-proxy process, the
//! worker processes (start, signal, wait, restart) and PostgreSQL backend kills.
//!
//! Everything a run creates is named after its run id (`soak_<id>` schema and index, worker
//! ids `soak-<id>-w<slot>-g<generation>`), so a run never touches another run's data, nor
//! the connections of other people's workers on the same server.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use outbox_worker::{
    config::{NotifyMode, redact_url},
    migrate,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdout, Command},
    sync::Mutex,
};
use tokio_postgres::{Client, NoTls};

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
    pub proxy_bin: PathBuf,
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
        let sep = if self.db_url.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.db_url,
            self.schema()
        )
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
        let (admin, conn) = tokio_postgres::connect(&self.db_url, NoTls)
            .await
            .with_context(|| format!("cannot connect to {}", redact_url(&self.db_url)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        admin
            .batch_execute(&format!("CREATE SCHEMA {}", self.schema()))
            .await?;
        let mut client = self.connect("setup").await?;
        migrate::migrate(&mut client, NotifyMode::Adaptive)
            .await
            .context("migrate")?;
        client
            .batch_execute(LEDGER)
            .await
            .context("ledger tables")?;
        Ok(())
    }

    pub async fn drop_schema(&self) -> anyhow::Result<()> {
        let (admin, conn) = tokio_postgres::connect(&self.db_url, NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema()))
            .await?;
        Ok(())
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
    let mut cfg: tokio_postgres::Config = url.parse()?;
    cfg.application_name(format!("outbox-soak {role}"))
        .connect_timeout(Duration::from_secs(10));
    let (client, conn) = cfg.connect(NoTls).await.with_context(|| {
        format!(
            "cannot connect to {} (is scripts/services.sh start done, and the database created?)",
            redact_url(url)
        )
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
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

/// The last lines of a log file, for messages about a process that misbehaved.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Send a signal by name (TERM, KILL, STOP, CONT) with kill(1): the crate has no libc.
pub async fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("running kill(1)")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed ({status})");
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    // Bind port 0 and release it: the child binds it a moment later.
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The fault-proxy between the workers and the engine, killed on drop.
pub struct Proxy {
    child: Child,
    // Held so the proxy never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    /// What the workers use as OUTBOX_ELASTICSEARCH_URL.
    pub url: String,
    control: String,
    http: reqwest::Client,
}

impl Proxy {
    pub async fn start(ctx: &Ctx, seed: u64) -> anyhow::Result<Proxy> {
        let log = std::fs::File::create(ctx.log_dir.join("fault-proxy.log"))?;
        let mut child = Command::new(&ctx.proxy_bin)
            .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
            .args(["--upstream", &ctx.es_url])
            .args(["--seed", &seed.to_string()])
            // The worker's own timeout decides; the proxy must not give up first.
            .args(["--upstream-timeout-ms", "60000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", ctx.proxy_bin.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("proxy stdout")?);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(15), stdout.read_line(&mut line))
            .await
            .context("fault-proxy printed nothing within 15 s")??;
        // "fault-proxy listening on ADDR upstream URL control ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| -> anyhow::Result<String> {
            let i = words
                .iter()
                .position(|w| *w == key)
                .with_context(|| format!("no {key:?} in fault-proxy's first line {line:?}"))?;
            Ok(words.get(i + 1).context("truncated line")?.to_string())
        };
        let listen = after("on")?;
        let control = after("control")?;
        Ok(Proxy {
            child,
            _stdout: stdout,
            url: format!("http://{listen}"),
            control: format!("http://{control}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.control));
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.context("fault-proxy control API")?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("fault-proxy {path}: {status} {v}");
        }
        Ok(v)
    }

    pub async fn set(&self, spec: &Value) -> anyhow::Result<()> {
        self.call(reqwest::Method::PUT, "/fault", Some(spec))
            .await
            .map(|_| ())
    }

    pub async fn clear(&self) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, "/fault", None)
            .await
            .map(|_| ())
    }

    /// Whether a fault is still in force (a `times` fault clears itself once used up).
    pub async fn active(&self) -> anyhow::Result<bool> {
        let v = self.call(reqwest::Method::GET, "/fault", None).await?;
        Ok(!v["fault"].is_null())
    }

    pub async fn stats(&self) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, "/stats", None).await
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
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

/// One incarnation of a worker process.
pub struct WorkerProc {
    pub id: String,
    pub pid: u32,
    child: Child,
    pub metrics_url: String,
    pub log: PathBuf,
}

impl WorkerProc {
    /// Exit status if it has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGKILL at once (no kill(1) process in between); reap with [`WorkerProc::wait_exit`].
    pub fn kill_now(&mut self) -> anyhow::Result<()> {
        self.child
            .start_kill()
            .with_context(|| format!("SIGKILL to {}", self.id))
    }
}

/// The worker slots. A slot's lock is held by whoever acts on its process (a fault, the
/// supervisor in the monitor, the final stop), so no two of them signal the same process.
pub struct Workers {
    pub slots: Vec<Mutex<Option<WorkerProc>>>,
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
    pub fn spawn(&self, slot: usize) -> anyhow::Result<WorkerProc> {
        let generation = self.generations[slot].fetch_add(1, Ordering::Relaxed);
        let id = format!("soak-{}-w{}-g{generation}", self.run_id, slot + 1);
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = self.log_dir.join(format!("{id}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&self.worker_bin);
        cmd.arg("run");
        // Only what the soak sets may configure a worker.
        for (k, _) in std::env::vars() {
            if k.starts_with("OUTBOX_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env.pairs {
            cmd.env(k, v);
        }
        cmd.env("OUTBOX_WORKER_ID", &id)
            .env("OUTBOX_METRICS_ADDR", &addr)
            // Plain log files: tracing colours its output unless told not to.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.worker_bin.display()))?;
        let pid = child.id().context("worker pid")?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        Ok(WorkerProc {
            id,
            pid,
            child,
            metrics_url: format!("http://{addr}"),
            log,
        })
    }

    /// Start every slot and wait until each answers `/readyz` (database, engine via the
    /// proxy, LISTEN connection).
    pub async fn start_all(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        for slot in 0..self.slots.len() {
            let w = self.spawn(slot)?;
            *self.slots[slot].lock().await = Some(w);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for slot in &self.slots {
            let mut guard = slot.lock().await;
            let w = guard.as_mut().expect("started above");
            loop {
                if let Some(status) = w.exited() {
                    bail!(
                        "worker {} exited at start-up ({status}):\n{}",
                        w.id,
                        log_tail(&w.log, 20)
                    );
                }
                let ready = http
                    .get(format!("{}/readyz", w.metrics_url))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "worker {} not ready after 60 s:\n{}",
                        w.id,
                        log_tail(&w.log, 20)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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
