//! Request compression (issue 13): the same backlog drained by the worker with
//! OUTBOX_BULK_COMPRESSION=gzip and with =none, in interleaved pairs. Bytes on the wire are
//! the worker's own count of the bodies it sent (`outbox_bulk_body_bytes_total`, by
//! encoding); the engine is the bench's, on loopback, so the figure is what gzip costs in CPU
//! where the network is free: a network that is not free only moves it in gzip's favour.

use std::time::Duration;

use anyhow::ensure;
use outbox_harness::prom;
use outbox_worker::{config::NotifyMode, metrics as m};

use crate::{
    ctx::Ctx,
    drain::{self, Run},
    stats::CpuSnapshot,
    worker::{Spec, Worker},
};

/// One drain, and the body bytes it sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drained {
    pub run: Run,
    pub body_bytes: f64,
}

/// The worker drains a backlog of `n` events with `compression` (`gzip` or `none`).
pub async fn drain(
    ctx: &Ctx,
    base: &Spec,
    compression: &'static str,
    n: usize,
) -> anyhow::Result<Drained> {
    let spec = Spec {
        compression: Some(compression),
        ..base.clone()
    };
    let schema = ctx.create_schema("gzip", NotifyMode::Adaptive).await?;
    let index = schema.name.clone();
    let result = async {
        ctx.create_index(&index).await?;
        let mut db = ctx.connect(&schema.url).await?;
        let mut w = Worker::start(ctx, &schema, &spec).await?;
        let outcome = async {
            w.wait_ready(&db, spec.notify_mode).await?;
            let t0 = drain::insert_backlog(&mut db, &index, n).await?;
            let cpu0 = CpuSnapshot::take(Some(w.pid));
            let t1 = w
                .wait_acked(n as f64, Duration::from_secs(60 + n as u64 / 500))
                .await?;
            let cpu1 = CpuSnapshot::take(Some(w.pid));
            let body_bytes = prom::sum(&w.scrape().await?, m::BULK_BODY_BYTES_TOTAL);
            let mut run = Run::new(&format!("worker_{compression}"), n, t0, t1);
            run.cores = cpu1.cores_since(&cpu0, run.seconds);
            anyhow::Ok(Drained { run, body_bytes })
        }
        .await;
        let usage = w.stop().await;
        let mut d = outcome?;
        d.run.worker = Some(usage);
        let docs = ctx.index_count(&index).await?;
        ensure!(
            docs == n as u64,
            "index holds {docs} documents, expected {n}"
        );
        ensure!(d.body_bytes > 0.0, "the worker counted no body bytes");
        anyhow::Ok(d)
    }
    .await;
    ctx.drop_schema(&schema).await;
    ctx.delete_index(&index).await;
    result
}
