//! The sweep of OUTBOX_BULK_SIZE x OUTBOX_CONCURRENCY (issue 6, figure 6): for each pair, one
//! worker first serves a steady rate (p99 latency, exact, as in latency.rs), then drains a
//! backlog into the engine (throughput, as in drain.rs). Several passes go through the grid in
//! alternating order, so a drift of the machine's speed averages out instead of favouring one
//! end of the grid.

use std::time::Duration;

use anyhow::ensure;
use outbox_worker::config::NotifyMode;

use crate::{
    ctx::Ctx,
    drain, latency,
    stats::{self, CpuSnapshot},
    worker::{Spec, Worker},
};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Point {
    pub bulk_size: usize,
    pub concurrency: usize,
    pub pass: usize,
    pub events_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub peak_rss_mib: f64,
    pub worker_cores_drain: f64,
}

/// Median over the passes of one grid point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cell {
    pub bulk_size: usize,
    pub concurrency: usize,
    pub events_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub peak_rss_mib: f64,
}

pub struct Grid<'a> {
    pub bulk_sizes: &'a [usize],
    pub concurrencies: &'a [usize],
    pub events: usize,
    pub rate: f64,
    pub latency_seconds: f64,
    pub warmup: f64,
}

pub async fn point(
    ctx: &Ctx,
    base: &Spec,
    grid: &Grid<'_>,
    bulk_size: usize,
    concurrency: usize,
) -> anyhow::Result<Point> {
    let spec = Spec {
        bulk_size,
        concurrency,
        ..base.clone()
    };
    let schema = ctx.create_schema("sweep", NotifyMode::Adaptive).await?;
    let result = async {
        ctx.create_index(&schema.name).await?;
        let mut db = ctx.connect(&schema.url).await?;
        latency::install_ack_log(&db).await?;
        let mut w = Worker::start(ctx, &schema, &spec).await?;
        let r = async {
            w.wait_ready(&db, spec.notify_mode).await?;
            let lat = latency::measure(
                ctx,
                &schema,
                &w,
                grid.rate,
                grid.latency_seconds,
                grid.warmup,
            )
            .await?;
            // The throughput half runs without the ack log's trigger.
            latency::drop_ack_log(&db).await?;
            w.wait_ready(&db, spec.notify_mode).await?;
            let acked0 = w.acked().await?;
            let t0 = drain::insert_backlog(&mut db, &schema.name, grid.events).await?;
            let cpu0 = CpuSnapshot::take(Some(w.pid));
            let t1 = w
                .wait_acked(
                    acked0 + grid.events as f64,
                    Duration::from_secs(60 + grid.events as u64 / 500),
                )
                .await?;
            let secs = (t1 - t0).as_secs_f64();
            let cores = CpuSnapshot::take(Some(w.pid)).cores_since(&cpu0, secs);
            anyhow::Ok(Point {
                bulk_size,
                concurrency,
                pass: 0,
                events_per_s: grid.events as f64 / secs,
                p50_ms: lat.p50_ms,
                p99_ms: lat.p99_ms,
                peak_rss_mib: 0.0,
                worker_cores_drain: cores.get("worker").copied().unwrap_or(0.0),
            })
        }
        .await;
        let usage = w.stop().await;
        let mut p = r?;
        p.peak_rss_mib = stats::round3(usage.peak_rss_mib);
        let left = crate::drain::remaining(&db).await?;
        ensure!(left == 0, "{left} events left after the sweep drain");
        anyhow::Ok(p)
    }
    .await;
    ctx.drop_schema(&schema).await;
    ctx.delete_index(&schema.name).await;
    result
}

/// The grid points in the order of pass `pass`: forward on even passes, backward on odd.
pub fn order(grid: &Grid<'_>, pass: usize) -> Vec<(usize, usize)> {
    let mut points: Vec<(usize, usize)> = grid
        .bulk_sizes
        .iter()
        .flat_map(|&b| grid.concurrencies.iter().map(move |&c| (b, c)))
        .collect();
    if pass % 2 == 1 {
        points.reverse();
    }
    points
}

/// One cell per grid point: the median of its passes.
pub fn cells(grid: &Grid<'_>, points: &[Point]) -> Vec<Cell> {
    order(grid, 0)
        .into_iter()
        .filter_map(|(b, c)| {
            let mine: Vec<&Point> = points
                .iter()
                .filter(|p| p.bulk_size == b && p.concurrency == c)
                .collect();
            let med = |f: fn(&Point) -> f64| {
                stats::median(&mine.iter().map(|p| f(p)).collect::<Vec<_>>())
            };
            Some(Cell {
                bulk_size: b,
                concurrency: c,
                events_per_s: med(|p| p.events_per_s)?.round(),
                p50_ms: stats::round3(med(|p| p.p50_ms)?),
                p99_ms: stats::round3(med(|p| p.p99_ms)?),
                peak_rss_mib: stats::round3(med(|p| p.peak_rss_mib)?),
            })
        })
        .collect()
}
