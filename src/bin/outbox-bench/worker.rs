//! Worker processes of the real binary: start one with its environment, wait until it is
//! ready (and idle), read its metrics, its peak RSS and CPU time, and stop it with SIGTERM.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use outbox_worker::{config::NotifyMode, metrics as m};
use tokio::process::{Child, Command};
use tokio_postgres::Client;

use crate::{
    ctx::{Ctx, Schema},
    stats,
};

/// How one worker is configured; everything else is the worker's default.
#[derive(Debug, Clone)]
pub struct Spec {
    pub bulk_size: usize,
    pub concurrency: usize,
    pub notify_mode: NotifyMode,
    /// OUTBOX_SINK=null: acked without sending (the database path alone).
    pub null_sink: bool,
    pub poll_interval_seconds: Option<f64>,
    /// OUTBOX_DEBOUNCE_MS (0: the worker's default).
    pub debounce_ms: u64,
}

pub struct Worker {
    child: Child,
    pub pid: u32,
    pub id: String,
    metrics_url: String,
    http: reqwest::Client,
    log: std::path::PathBuf,
}

/// What a stopped worker leaves behind.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

/// Remove the caller's OUTBOX_* variables: only what the bench sets may configure a worker.
pub fn clean_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("OUTBOX_") {
            cmd.env_remove(k);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    // Bind port 0 and release it: the worker binds it a moment later.
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Worker {
    /// Start `outbox-worker run` in `schema`, named like it (also its lease owner).
    pub async fn start(ctx: &Ctx, schema: &Schema, spec: &Spec) -> anyhow::Result<Self> {
        let id = schema.name.as_str();
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = ctx.log_dir.join(format!("{id}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&ctx.worker_bin);
        cmd.arg("run");
        clean_env(cmd.as_std_mut());
        cmd.env("OUTBOX_DATABASE_URL", ctx.worker_url(&schema.name))
            .env("OUTBOX_ELASTICSEARCH_URL", ctx.es_url.as_str())
            .env("OUTBOX_METRICS_ADDR", &addr)
            .env("OUTBOX_WORKER_ID", id)
            .env("OUTBOX_BULK_SIZE", spec.bulk_size.to_string())
            .env("OUTBOX_CONCURRENCY", spec.concurrency.to_string())
            .env("OUTBOX_NOTIFY_MODE", spec.notify_mode.as_str())
            .env(
                "OUTBOX_SINK",
                if spec.null_sink {
                    "null"
                } else {
                    "elasticsearch"
                },
            )
            // Warnings only: a log line per batch would cost the worker what we measure.
            .env("OUTBOX_LOG_LEVEL", "warn");
        if spec.debounce_ms > 0 {
            cmd.env("OUTBOX_DEBOUNCE_MS", spec.debounce_ms.to_string());
        }
        if let Some(p) = spec.poll_interval_seconds {
            cmd.env("OUTBOX_POLL_INTERVAL_SECONDS", p.to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", ctx.worker_bin.display()))?;
        let pid = child.id().context("worker pid")?;
        Ok(Worker {
            child,
            pid,
            id: id.to_string(),
            metrics_url: format!("http://{addr}"),
            http: ctx.http.clone(),
            log,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "worker {} exited ({status}); log {}:\n{}",
                self.id,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Wait for `/readyz`, then (adaptive mode) for the waiting mark: the start-up catch-up
    /// drain is over and the next insert wakes the worker by NOTIFY.
    pub async fn wait_ready(&mut self, db: &Client, mode: NotifyMode) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.check_alive()?;
            let ok = self
                .http
                .get(format!("{}/readyz", self.metrics_url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "worker {} not ready after 30 s:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if mode != NotifyMode::Adaptive {
            // No mark to wait for: give the start-up drain of the empty table a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(());
        }
        loop {
            let waiting = db
                .query_opt(
                    "SELECT 1 FROM outbox_waiting_workers WHERE worker_id = $1 AND expires_at > now()",
                    &[&self.id],
                )
                .await?
                .is_some();
            if waiting {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("worker {} never marked itself waiting", self.id);
            }
            self.check_alive()?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn scrape(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.metrics_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .text()
            .await?)
    }

    pub async fn acked(&self) -> anyhow::Result<f64> {
        Ok(stats::metric_sum(&self.scrape().await?, m::ACKED_TOTAL))
    }

    /// Poll `outbox_acked_total` every 5 ms until it reaches `target`; returns when it did.
    /// The counter moves just before each ack statement commits, so the end is early by at
    /// most one ack round trip (about a millisecond, well under 1 % of any drain measured).
    pub async fn wait_acked(&mut self, target: f64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.acked().await? >= target {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "worker {} acked {} of {target} events within {timeout:?}:\n{}",
                    self.id,
                    self.acked().await.unwrap_or(-1.0),
                    self.log_tail()
                );
            }
            self.check_alive()?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn usage(&self) -> Usage {
        Usage {
            peak_rss_mib: peak_rss_mib(self.pid).unwrap_or(0.0),
            cpu_seconds: stats::process_cpu_seconds(self.pid).unwrap_or(0.0),
        }
    }

    /// SIGTERM (the graceful stop), then SIGKILL if it takes longer than 25 s.
    pub async fn stop(mut self) -> Usage {
        let usage = self.usage();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(25), self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "outbox-bench: worker {} ignored SIGTERM; killing it",
                self.id
            );
            let _ = self.child.kill().await;
        }
        usage
    }
}

/// VmHWM of /proc/<pid>/status: the peak resident set size, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
