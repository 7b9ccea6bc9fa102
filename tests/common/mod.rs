//! Shared test harness: a fresh schema per test in the real PostgreSQL (so tests run in
//! parallel against one server), helpers for the real search engine, and in-process or
//! separate-process workers. Started services come from scripts/services.sh.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use outbox_worker::config::{Config, NotifyMode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub fn pg_base_url() -> String {
    std::env::var("OUTBOX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/outbox_test".into())
}

/// `url` with one more query parameter.
pub fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

pub fn engine_url() -> String {
    std::env::var("OUTBOX_TEST_ELASTICSEARCH_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_outbox-worker"))
}

/// A unique lower-case name for schemas and indexes.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random::<u64>() % 1_000_000_000;
    format!("{prefix}_{n}").to_lowercase()
}

/// An event as a test inserts it: (index, doc_id, op, payload, doc_version).
pub type EventRow<'a> = (&'a str, &'a str, &'a str, Option<Value>, Option<i64>);

/// One isolated outbox: a schema of its own, migrated with the given trigger mode.
pub struct TestSchema {
    pub name: String,
    pub url: String,
}

impl TestSchema {
    pub async fn new(prefix: &str, mode: NotifyMode) -> TestSchema {
        let name = unique(&format!("t_{prefix}"));
        let base = pg_base_url();
        let admin = connect(&base).await;
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create schema");
        let url = with_param(&base, &format!("options=-c%20search_path%3D{name}"));
        let schema = TestSchema { name, url };
        let mut client = connect(&schema.url).await;
        outbox_worker::migrate::migrate(&mut client, mode)
            .await
            .expect("migrate");
        schema
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
                "SELECT count(*) FROM outbox_events WHERE status = $1",
                &[&status],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn total(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM outbox_events", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Wait until nothing is pending or processing (everything acked or failed).
    pub async fn wait_drained(&self, timeout: Duration) {
        let c = self.client().await;
        let start = Instant::now();
        loop {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM outbox_events WHERE status <> 'failed'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
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

    /// Insert events: (index, doc_id, op, payload, doc_version).
    pub async fn insert(&self, rows: &[EventRow<'_>]) -> Vec<i64> {
        let c = self.client().await;
        let mut ids = Vec::new();
        for (index, doc, op, payload, version) in rows {
            let r = c
                .query_one(
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
                "SELECT status, error_reason FROM outbox_events WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to PostgreSQL for tests ({e}); run scripts/services.sh start")
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The real search engine, over plain HTTP.
pub struct Engine {
    pub url: String,
    http: reqwest::Client,
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            url: engine_url(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn put_index(&self, index: &str, body: Value) {
        let r = self
            .http
            .put(format!("{}/{index}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "create index {index}: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn put_mapping(&self, index: &str, body: Value) -> reqwest::StatusCode {
        self.http
            .put(format!("{}/{index}/_mapping", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn refresh(&self, index: &str) {
        self.http
            .post(format!("{}/{index}/_refresh", self.url))
            .send()
            .await
            .unwrap();
    }

    /// `_source` and `_version` of a document, None if missing.
    pub async fn get(&self, index: &str, id: &str) -> Option<(Value, i64)> {
        let url = format!("{}/{index}/_doc/{}", self.url, urlencode(id));
        let r = self.http.get(url).send().await.unwrap();
        if r.status() == 404 {
            return None;
        }
        let v: Value = r.json().await.unwrap();
        if v["found"] != Value::Bool(true) {
            return None;
        }
        Some((v["_source"].clone(), v["_version"].as_i64().unwrap()))
    }

    pub async fn count(&self, index: &str) -> i64 {
        self.refresh(index).await;
        let v: Value = self
            .http
            .get(format!("{}/{index}/_count", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["count"].as_i64().unwrap_or(-1)
    }

    /// Every document: id -> (source, version).
    pub async fn all(&self, index: &str) -> std::collections::HashMap<String, (Value, i64)> {
        self.refresh(index).await;
        let body = serde_json::json!({"size": 10000, "version": true, "query": {"match_all": {}}});
        let v: Value = self
            .http
            .post(format!("{}/{index}/_search", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["hits"]["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .map(|h| {
                        (
                            h["_id"].as_str().unwrap().to_string(),
                            (h["_source"].clone(), h["_version"].as_i64().unwrap()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn raw(&self) -> &reqwest::Client {
        &self.http
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A worker running inside the test process.
pub struct InProcessWorker {
    pub token: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessWorker {
    pub fn start(cfg: Config) -> InProcessWorker {
        let token = CancellationToken::new();
        let handle = tokio::spawn(outbox_worker::worker::run(cfg, token.clone(), None));
        InProcessWorker { token, handle }
    }

    pub async fn stop(self) {
        self.token.cancel();
        self.handle
            .await
            .expect("worker task")
            .expect("worker ran cleanly");
    }
}

/// A worker as a separate process of the real binary (for signals).
pub fn spawn_worker_process(env: &[(String, String)], extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(binary());
    cmd.arg("run").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn worker")
}

/// The fault-injecting proxy (src/bin/fault-proxy) in front of the real engine.
pub struct FaultProxy {
    pub url: String,
    pub control: String,
    child: Child,
    http: reqwest::Client,
}

impl FaultProxy {
    pub fn start() -> FaultProxy {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_fault-proxy"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--control",
                "127.0.0.1:0",
                "--upstream",
            ])
            .arg(engine_url())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fault-proxy");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "fault-proxy listening on ADDR upstream URL control ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        let listen = words[3].to_string();
        let control = words[7].to_string();
        FaultProxy {
            url: format!("http://{listen}"),
            control: format!("http://{control}"),
            child,
            http: reqwest::Client::new(),
        }
    }

    pub async fn set(&self, fault: Value) {
        let r = self
            .http
            .put(format!("{}/fault", self.control))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "set fault {fault}: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn clear(&self) {
        self.http
            .delete(format!("{}/fault", self.control))
            .send()
            .await
            .unwrap();
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/stats", self.control))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A worker process of the real binary, with its metrics endpoint.
pub struct WorkerProcess {
    pub child: Child,
    pub id: String,
    pub metrics: String,
}

impl WorkerProcess {
    pub fn spawn(env: &[(String, String)], extra: &[(&str, &str)]) -> WorkerProcess {
        let id = unique("wp");
        let addr = format!("127.0.0.1:{}", free_port());
        // Logs kept for a look after a failure: $TMPDIR/<worker id>.log
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{id}.log"))).unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.env("OUTBOX_WORKER_ID", &id)
            .env("OUTBOX_METRICS_ADDR", &addr);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        WorkerProcess {
            child: cmd.spawn().expect("spawn worker"),
            id,
            metrics: format!("http://{addr}/metrics"),
        }
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Wait for the exit; returns the exit code (None if killed by a signal).
    pub async fn wait(mut self) -> Option<i32> {
        tokio::task::spawn_blocking(move || self.child.wait().unwrap().code())
            .await
            .unwrap()
    }

    /// The sum of a metric over all its label sets (0 if absent or unreachable).
    pub async fn metric(&self, name: &str) -> f64 {
        let Ok(r) = reqwest::get(&self.metrics).await else {
            return 0.0;
        };
        let text = r.text().await.unwrap_or_default();
        metric_sum(&text, name)
    }

    pub async fn wait_ready(&self) {
        let ready = self.metrics.replace("/metrics", "/readyz");
        let start = Instant::now();
        while reqwest::get(&ready).await.map(|r| r.status().as_u16()).ok() != Some(200) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "worker {} never ready",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of a Prometheus metric's samples in an exposition text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// nginx from Debian's package, in the foreground, from a directory of its own, with the
/// given `http` directives and `server` blocks ("{dir}" in them is that directory).
pub struct Nginx {
    child: Child,
    pub dir: std::path::PathBuf,
}

impl Nginx {
    pub fn start(http: &str, servers: &[String], wait_port: u16) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is installed by scripts/deps.sh (every make target runs it)");
        let dir = std::env::temp_dir().join(unique("nginx"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display().to_string();
        let conf = format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{}}
http {{
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  {http}
  {}
}}",
            servers.join("\n  ")
        )
        .replace("{dir}", &d);
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", wait_port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, dir }
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx as a plain HTTP reverse proxy in front of the engine with a request-body limit:
/// the real way a 413 reaches a worker in production.
pub struct BodyLimitProxy {
    pub url: String,
    _nginx: Nginx,
}

impl BodyLimitProxy {
    pub fn start(limit: &str) -> BodyLimitProxy {
        let port = free_port();
        let server = format!(
            "server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass {}; }} }}",
            engine_url()
        );
        let nginx = Nginx::start(
            &format!("access_log off; client_max_body_size {limit};"),
            &[server],
            port,
        );
        BodyLimitProxy {
            url: format!("http://127.0.0.1:{port}"),
            _nginx: nginx,
        }
    }
}
