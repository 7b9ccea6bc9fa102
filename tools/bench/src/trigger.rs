//! What the insert trigger costs producers (issue 6, figure 4).
//!
//! Eight producers (`outbox-worker produce --mode outbox --rate 0`: BEGIN, one INSERT of 1 or
//! 10 rows, COMMIT, as fast as they can, synchronous_commit on) insert for a fixed time into a
//! schema migrated with trigger mode off, adaptive or always, while a worker of the same mode
//! drains. The worker uses the null sink: it keeps up with the producers and goes idle often,
//! which is when the adaptive trigger notifies, so this is the hard case for `adaptive` (with
//! the engine as sink the worker would stay busy and never ask for a NOTIFY). All three modes
//! poll every 100 ms, so the `off` worker drains continuously as the others do.

use std::time::Instant;

use anyhow::{Context, ensure};
use outbox_harness::{clean_command, prom};
use outbox_worker::{config::NotifyMode, metrics as m};

use crate::{
    ctx::Ctx,
    latency::NOTIFICATION,
    stats::CpuSnapshot,
    worker::{Spec, Usage, Worker},
};

#[derive(Debug, Clone, serde::Serialize)]
pub struct TriggerRun {
    pub mode: &'static str,
    pub batch: usize,
    pub producers: usize,
    pub transactions: u64,
    pub events: u64,
    pub errors: u64,
    pub seconds: f64,
    pub tps: f64,
    pub events_per_s: f64,
    /// Wakes of the worker by NOTIFY during the run (how often the trigger notified).
    pub notifications: f64,
    pub cores: std::collections::BTreeMap<String, f64>,
    pub worker: Usage,
}

pub async fn run(
    ctx: &Ctx,
    base: &Spec,
    mode: NotifyMode,
    batch: usize,
    producers: usize,
    seconds: f64,
) -> anyhow::Result<TriggerRun> {
    let schema = ctx
        .create_schema(&format!("trig_{}", mode.as_str()), mode)
        .await?;
    let spec = Spec {
        notify_mode: mode,
        null_sink: true,
        poll_interval_seconds: Some(0.1),
        ..base.clone()
    };
    let result = async {
        let db = ctx.connect(&schema.url).await?;
        let mut w = Worker::start(ctx, &schema, &spec).await?;
        let r = async {
            w.wait_ready(&db, mode).await?;
            let before = w.scrape().await?;
            let cpu0 = CpuSnapshot::take(Some(w.pid));
            let t0 = Instant::now();
            let out = tokio::process::Command::from(clean_command(&ctx.worker_bin))
                .args(["produce", "--mode", "outbox", "--rate", "0", "--json"])
                .args(["--clients", &producers.to_string()])
                .args(["--batch", &batch.to_string()])
                .args(["--duration", &seconds.to_string()])
                .args(["--index", &schema.name])
                .env("OUTBOX_DATABASE_URL", &schema.url)
                .env("OUTBOX_METRICS_ADDR", "off")
                .env("OUTBOX_LOG_LEVEL", "warn")
                .output()
                .await
                .context("outbox-worker produce")?;
            let wall = t0.elapsed().as_secs_f64();
            let cpu1 = CpuSnapshot::take(Some(w.pid));
            let after = w.scrape().await?;
            ensure!(
                out.status.success(),
                "produce failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).with_context(|| {
                    format!("produce output: {}", String::from_utf8_lossy(&out.stdout))
                })?;
            let num = |k: &str| report[k].as_f64().unwrap_or(0.0);
            let elapsed = num("elapsed_seconds").max(1e-9);
            anyhow::Ok(TriggerRun {
                mode: mode.as_str(),
                batch,
                producers,
                transactions: num("transactions") as u64,
                events: num("events") as u64,
                errors: num("errors") as u64,
                seconds: elapsed,
                tps: num("transactions") / elapsed,
                events_per_s: num("events") / elapsed,
                notifications: prom::labelled(&after, m::WAKES_TOTAL, NOTIFICATION)
                    - prom::labelled(&before, m::WAKES_TOTAL, NOTIFICATION),
                cores: cpu1.cores_since(&cpu0, wall),
                worker: Usage::default(),
            })
        }
        .await;
        let usage = w.stop().await;
        let mut r = r?;
        r.worker = usage;
        anyhow::Ok(r)
    }
    .await;
    ctx.drop_schema(&schema).await;
    result
}
