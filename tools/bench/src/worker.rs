//! The bench's worker runs: a worker process of the real binary (outbox_harness) configured
//! from a [`Spec`], ready once it is idle, its acks counted from `/metrics`, its peak RSS and
//! CPU time read from /proc when it stops.

use std::time::{Duration, Instant};

use anyhow::bail;
use outbox_harness::{Schema, WorkerProcess, prom};
use outbox_worker::{config::NotifyMode, metrics as m};
use tokio_postgres::Client;

use crate::{ctx::Ctx, stats};

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
    /// OUTBOX_BULK_COMPRESSION (None: the worker's default).
    pub compression: Option<&'static str>,
    /// OUTBOX_DELETE_RECORDS: record acked deletes and look index events up (the default).
    pub delete_records: bool,
}

impl Spec {
    /// The worker's environment in `schema`.
    fn env(&self, ctx: &Ctx, schema: &Schema) -> Vec<(&'static str, String)> {
        let sink = if self.null_sink {
            "null"
        } else {
            "elasticsearch"
        };
        let mut env = vec![
            ("OUTBOX_DATABASE_URL", ctx.worker_url(&schema.name)),
            ("OUTBOX_ELASTICSEARCH_URL", ctx.es_url.to_string()),
            ("OUTBOX_BULK_SIZE", self.bulk_size.to_string()),
            ("OUTBOX_CONCURRENCY", self.concurrency.to_string()),
            ("OUTBOX_NOTIFY_MODE", self.notify_mode.as_str().to_string()),
            ("OUTBOX_SINK", sink.to_string()),
            // Warnings only: a log line per batch would cost the worker what we measure.
            ("OUTBOX_LOG_LEVEL", "warn".to_string()),
        ];
        if !self.delete_records {
            env.push(("OUTBOX_DELETE_RECORDS", "off".to_string()));
        }
        if self.debounce_ms > 0 {
            env.push(("OUTBOX_DEBOUNCE_MS", self.debounce_ms.to_string()));
        }
        if let Some(c) = self.compression {
            env.push(("OUTBOX_BULK_COMPRESSION", c.to_string()));
        }
        if let Some(p) = self.poll_interval_seconds {
            env.push(("OUTBOX_POLL_INTERVAL_SECONDS", p.to_string()));
        }
        env
    }
}

pub struct Worker {
    process: WorkerProcess,
    pub pid: u32,
}

/// What a stopped worker leaves behind.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

impl Worker {
    /// Start `outbox-worker run` in `schema`, named like it (also its lease owner).
    pub async fn start(ctx: &Ctx, schema: &Schema, spec: &Spec) -> anyhow::Result<Self> {
        let log = ctx.log_dir.join(format!("{}.log", schema.name));
        let process =
            WorkerProcess::start(&ctx.worker_bin, &schema.name, spec.env(ctx, schema), &log)?;
        Ok(Worker {
            pid: process.pid,
            process,
        })
    }

    /// Wait for `/readyz`, then (adaptive mode) for the waiting mark: the start-up catch-up
    /// drain is over and the next insert wakes the worker by NOTIFY.
    pub async fn wait_ready(&mut self, db: &Client, mode: NotifyMode) -> anyhow::Result<()> {
        self.process.wait_ready().await?;
        if mode != NotifyMode::Adaptive {
            // No mark to wait for: give the start-up drain of the empty table a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let waiting = db
                .query_opt(
                    "SELECT 1 FROM outbox_waiting_workers WHERE worker_id = $1 AND expires_at > now()",
                    &[&self.process.id],
                )
                .await?
                .is_some();
            if waiting {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("worker {} never marked itself waiting", self.process.id);
            }
            self.process.check_running()?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn scrape(&self) -> anyhow::Result<String> {
        self.process.scrape().await
    }

    pub async fn acked(&self) -> anyhow::Result<f64> {
        Ok(prom::sum(&self.scrape().await?, m::ACKED_TOTAL))
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
                    self.process.id,
                    self.acked().await.unwrap_or(-1.0),
                    self.process.log_tail(15)
                );
            }
            self.process.check_running()?;
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
        if let Ok(None) = self.process.stop(Duration::from_secs(25)).await {
            eprintln!(
                "outbox-bench: worker {} ignored SIGTERM; killed it",
                self.process.id
            );
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
