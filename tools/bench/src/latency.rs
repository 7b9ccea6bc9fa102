//! Insert commit -> ack latency at a steady rate (issue 6, figure 3).
//!
//! Measured exactly, per event, by the bench:
//! - commit: the producer (this process) inserts each event in its own autocommit statement
//!   (the producer's contract insert, prepared once per connection) and takes
//!   the wall clock when the commit has returned;
//! - ack: statement-level AFTER DELETE triggers, installed by the bench in the run's schema,
//!   write `clock_timestamp()` for every event whose piece the worker completes (or whose
//!   exception row its ack deletes) into an unlogged table.
//!   That time is taken when the ack statement has run, just before its own commit (a WAL
//!   flush, reported as `insert_ms_p50` on the producer side for scale).
//!
//! Both clocks are the same machine's wall clock. The open-loop producer sends event k at
//! start + k/rate whatever the latency, from several connections so a slow commit does not
//! hold up the schedule. Events committed during the warm-up are left out.
//!
//! For comparison the worker's own `outbox_end_to_end_seconds` histogram (insert time ->
//! after the ack commit, bucketed) is read from /metrics before and after each run, and so is
//! `outbox_stage_seconds`: where that time goes, p50 and p99 per stage (wait, claim, encode,
//! queue, bulk, ack; see `outbox_worker::metrics::Stage`).

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::ensure;
use outbox_harness::{
    Schema, percentile,
    prom::{self, histogram, histogram_delta, histogram_labelled, histogram_percentile},
};
use outbox_worker::{
    config::NotifyMode,
    contract::{self, NewEvent},
    metrics::{self as m, Stage},
};
use tokio_postgres::Client;

use crate::{
    ctx::Ctx,
    stats::{self, CpuSnapshot},
    worker::{Spec, Usage, Worker},
};

const ACK_LOG: &str = "
CREATE UNLOGGED TABLE bench_acks (id bigint NOT NULL, acked_at float8 NOT NULL);
CREATE FUNCTION bench_log_pieces() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_acks
    SELECT i, extract(epoch FROM clock_timestamp())
    FROM ended JOIN outbox_pieces AS p USING (piece_id), unnest(p.event_ids) AS i
    WHERE ended.ended = 'completed';
    RETURN NULL;
END $$;
CREATE FUNCTION bench_log_exceptions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_acks SELECT id, extract(epoch FROM clock_timestamp()) FROM gone;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_log_pieces AFTER INSERT ON outbox_piece_ends
    REFERENCING NEW TABLE AS ended FOR EACH STATEMENT EXECUTE FUNCTION bench_log_pieces();
CREATE TRIGGER bench_log_exceptions AFTER DELETE ON outbox_exceptions
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION bench_log_exceptions();";

/// Install the ack log in the schema `db` points at.
pub async fn install_ack_log(db: &Client) -> anyhow::Result<()> {
    Ok(db.batch_execute(ACK_LOG).await?)
}

/// Remove the ack log's trigger (before a throughput run in the same schema).
pub async fn drop_ack_log(db: &Client) -> anyhow::Result<()> {
    Ok(db
        .batch_execute(
            "DROP TRIGGER IF EXISTS bench_log_pieces ON outbox_piece_ends;
             DROP TRIGGER IF EXISTS bench_log_exceptions ON outbox_exceptions",
        )
        .await?)
}

/// The label of the wakes by NOTIFY in `outbox_wakes_total`.
pub const NOTIFICATION: &str = "source=\"notification\"";

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LatencyRun {
    pub rate: f64,
    pub producers: usize,
    pub seconds: f64,
    pub events: usize,
    /// Events after the warm-up, the ones the percentiles are over.
    pub measured_events: usize,
    /// Events never acked within 30 s after the last insert (should be 0).
    pub lost: usize,
    pub achieved_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// The producer's own insert+commit round trip.
    pub insert_ms_p50: f64,
    /// The worker's histogram over the whole run (warm-up included), for comparison.
    pub histogram_p50_ms: Option<f64>,
    pub histogram_p95_ms: Option<f64>,
    pub histogram_p99_ms: Option<f64>,
    /// The worker's `_bulk` request duration (bucketed), the engine's share of the latency.
    pub bulk_p50_ms: Option<f64>,
    pub bulk_p99_ms: Option<f64>,
    /// How the worker was woken: NOTIFY vs its own follow-up checks and polls.
    pub wakes_notification: f64,
    pub wakes_other: f64,
    /// The worker's latency by stage over the whole run (warm-up included), bucketed.
    pub stages: Vec<StageLatency>,
    /// Their buckets (cumulative, `Stage::ALL` order), to pool several runs of one rate.
    #[serde(skip)]
    pub stage_buckets: Vec<Vec<(f64, f64)>>,
    pub cores: std::collections::BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<Usage>,
    /// Every measured latency (ms), sorted, to pool several runs of one rate.
    #[serde(skip)]
    pub samples: Vec<f64>,
}

/// One stage of `outbox_stage_seconds` over a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageLatency {
    pub stage: &'static str,
    /// Observations: events for `wait`, claims, chunks or requests for the others.
    pub count: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl StageLatency {
    /// p50 and p99 of a stage's cumulative buckets (a delta over the run, or several added).
    pub fn of(stage: Stage, buckets: &[(f64, f64)]) -> StageLatency {
        let ms = |q| histogram_percentile(buckets, q).map(|s| stats::round3(s * 1000.0));
        StageLatency {
            stage: stage.label(),
            count: buckets.last().map_or(0.0, |b| b.1),
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
        }
    }
}

/// Each stage's buckets between two `/metrics` pages, in `Stage::ALL` order.
pub fn stage_deltas(before: &str, after: &str) -> Vec<Vec<(f64, f64)>> {
    Stage::ALL
        .iter()
        .map(|s| {
            let label = format!("stage=\"{}\"", s.label());
            histogram_delta(
                &histogram_labelled(before, m::STAGE_SECONDS, &label),
                &histogram_labelled(after, m::STAGE_SECONDS, &label),
            )
        })
        .collect()
}

/// `wait 1.2/3.4 claim ...`: p50/p99 in ms per stage, for progress lines.
pub fn stages_line(stages: &[StageLatency]) -> String {
    let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
    stages
        .iter()
        .map(|s| format!("{} {}/{}", s.stage, ms(s.p50_ms), ms(s.p99_ms)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Producer connections for a rate: each sends at most 150 events/s, well under what one
/// connection commits in a closed loop on a busy 2-core machine (~250/s at 4 ms a commit).
pub fn producers_for(rate: f64) -> usize {
    ((rate / 150.0).ceil() as usize).clamp(1, 40)
}

/// A fresh schema, index and worker; one steady-rate run.
pub async fn run_rate(
    ctx: &Ctx,
    spec: &Spec,
    rate: f64,
    seconds: f64,
    warmup: f64,
) -> anyhow::Result<LatencyRun> {
    let schema = ctx.create_schema("latency", NotifyMode::Adaptive).await?;
    let result = async {
        ctx.create_index(&schema.name).await?;
        let db = ctx.connect(&schema.url).await?;
        install_ack_log(&db).await?;
        let mut w = Worker::start(ctx, &schema, spec).await?;
        let r = async {
            w.wait_ready(&db, spec.notify_mode).await?;
            measure(ctx, &schema, &w, rate, seconds, warmup).await
        }
        .await;
        let usage = w.stop().await;
        let mut r = r?;
        r.worker = Some(usage);
        anyhow::Ok(r)
    }
    .await;
    ctx.drop_schema(&schema).await;
    ctx.delete_index(&schema.name).await;
    result
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Produce at `rate` for `seconds` into the schema (whose ack log is installed) while
/// `worker` drains it to the index named like the schema; then collect the latencies.
pub async fn measure(
    ctx: &Ctx,
    schema: &Schema,
    worker: &Worker,
    rate: f64,
    seconds: f64,
    warmup: f64,
) -> anyhow::Result<LatencyRun> {
    let producers = producers_for(rate);
    let mut conns = Vec::with_capacity(producers);
    for _ in 0..producers {
        let client = ctx.connect(&schema.url).await?;
        // Prepared once per connection, as an application that inserts often would: the
        // database then neither parses nor plans each probe.
        let insert = contract::prepare_insert_returning_ids(&client).await?;
        conns.push((client, insert));
    }
    let metrics_before = worker.scrape().await?;
    let hist_before = histogram(&metrics_before, m::END_TO_END_SECONDS);
    let cpu0 = CpuSnapshot::take(Some(worker.pid));
    let start = Instant::now() + Duration::from_millis(20);
    let total = (rate * seconds).round() as usize;
    let index = schema.name.as_str();
    // Each connection sends the events k = c, c + P, c + 2P, ... at start + k / rate.
    let per_conn = futures::future::try_join_all(conns.iter().enumerate().map(
        |(c, (client, insert))| async move {
            let mut out: Vec<(i64, f64, f64, f64)> = Vec::new();
            let mut k = c;
            while k < total {
                let offset = k as f64 / rate;
                tokio::time::sleep_until((start + Duration::from_secs_f64(offset)).into()).await;
                let doc = serde_json::json!({
                    "id": k,
                    "name": format!("latency probe {k}"),
                    "price_cents": (k * 7919) % 100_000,
                    "stock": k % 500,
                });
                // `p<k>`: never the id of a backlog document drained later in the same index.
                let event = NewEvent::index(index, format!("p{k}"), doc);
                let sent = Instant::now();
                let ids = contract::insert_returning_ids_prepared(client, insert, &[event]).await?;
                let committed = epoch_now();
                let insert_ms = sent.elapsed().as_secs_f64() * 1000.0;
                out.push((ids[0], committed, offset, insert_ms));
                k += producers;
            }
            anyhow::Ok(out)
        },
    ))
    .await?;
    let produced_at = Instant::now();
    let events: Vec<(i64, f64, f64, f64)> = per_conn.into_iter().flatten().collect();
    let db = &conns[0].0;
    // Wait for every ack (or 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let acked: i64 = db
            .query_one("SELECT count(*) FROM bench_acks", &[])
            .await?
            .get(0);
        if acked as usize >= events.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu1 = CpuSnapshot::take(Some(worker.pid));
    let metrics_after = worker.scrape().await?;
    let hist = histogram_delta(
        &hist_before,
        &histogram(&metrics_after, m::END_TO_END_SECONDS),
    );
    let bulk = histogram_delta(
        &histogram(&metrics_before, m::BULK_DURATION_SECONDS),
        &histogram(&metrics_after, m::BULK_DURATION_SECONDS),
    );
    let stage_buckets = stage_deltas(&metrics_before, &metrics_after);
    let stages = Stage::ALL
        .iter()
        .zip(&stage_buckets)
        .map(|(s, b)| StageLatency::of(*s, b))
        .collect();
    let acks: HashMap<i64, f64> = db
        .query("SELECT id, acked_at FROM bench_acks", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut lat = Vec::new();
    let mut lost = 0;
    for (id, committed, offset, _) in &events {
        match acks.get(id) {
            Some(acked) if *offset >= warmup => lat.push((acked - committed) * 1000.0),
            Some(_) => {}
            None => lost += 1,
        }
    }
    ensure!(!lat.is_empty(), "no event acked after the warm-up");
    lat.sort_by(f64::total_cmp);
    let mut inserts: Vec<f64> = events.iter().map(|e| e.3).collect();
    inserts.sort_by(f64::total_cmp);
    let first = events.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
    let last = events.iter().map(|e| e.1).fold(0.0, f64::max);
    let wall = (produced_at - start).as_secs_f64();
    let ms = |x: Option<f64>| x.map(|s| stats::round3(s * 1000.0));
    let notifications = |text: &str| prom::labelled(text, m::WAKES_TOTAL, NOTIFICATION);
    let wakes_total = |text: &str| prom::sum(text, m::WAKES_TOTAL);
    let notif = notifications(&metrics_after) - notifications(&metrics_before);
    Ok(LatencyRun {
        rate,
        producers,
        seconds,
        events: events.len(),
        measured_events: lat.len(),
        lost,
        achieved_rate: events.len() as f64 / (last - first).max(1e-9),
        p50_ms: stats::round3(percentile(&lat, 0.50).unwrap_or(0.0)),
        p95_ms: stats::round3(percentile(&lat, 0.95).unwrap_or(0.0)),
        p99_ms: stats::round3(percentile(&lat, 0.99).unwrap_or(0.0)),
        max_ms: stats::round3(*lat.last().unwrap_or(&0.0)),
        mean_ms: stats::round3(lat.iter().sum::<f64>() / lat.len() as f64),
        insert_ms_p50: stats::round3(percentile(&inserts, 0.5).unwrap_or(0.0)),
        histogram_p50_ms: ms(histogram_percentile(&hist, 0.50)),
        histogram_p95_ms: ms(histogram_percentile(&hist, 0.95)),
        histogram_p99_ms: ms(histogram_percentile(&hist, 0.99)),
        bulk_p50_ms: ms(histogram_percentile(&bulk, 0.50)),
        bulk_p99_ms: ms(histogram_percentile(&bulk, 0.99)),
        wakes_notification: notif,
        wakes_other: wakes_total(&metrics_after) - wakes_total(&metrics_before) - notif,
        stages,
        stage_buckets,
        cores: cpu1.cores_since(&cpu0, wall),
        worker: None,
        samples: lat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(stage: &str, under_1ms: u32, total: u32) -> String {
        format!(
            "outbox_stage_seconds_bucket{{stage=\"{stage}\",le=\"0.001\"}} {under_1ms}\n\
             outbox_stage_seconds_bucket{{stage=\"{stage}\",le=\"0.002\"}} {total}\n\
             outbox_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {total}\n"
        )
    }

    #[test]
    fn stage_percentiles_come_from_the_delta_of_their_own_series() {
        let before = page("bulk", 10, 10) + &page("ack", 0, 0);
        // In between: 10 bulks in (1, 2] ms; 4 acks under 1 ms.
        let after = page("bulk", 10, 20) + &page("ack", 4, 4);
        let deltas = stage_deltas(&before, &after);
        assert_eq!(deltas.len(), Stage::ALL.len());
        let of = |s: Stage| {
            let i = Stage::ALL.iter().position(|x| *x == s).unwrap();
            StageLatency::of(s, &deltas[i])
        };
        let bulk = of(Stage::Bulk);
        assert_eq!(bulk.count, 10.0);
        assert_eq!(bulk.p50_ms, Some(1.5));
        assert_eq!(bulk.p99_ms, Some(1.99));
        let ack = of(Stage::Ack);
        assert_eq!((ack.count, ack.p50_ms), (4.0, Some(0.5)));
        let wait = of(Stage::Wait);
        assert_eq!((wait.count, wait.p50_ms, wait.p99_ms), (0.0, None, None));
        assert_eq!(stages_line(&[bulk, wait]), "bulk 1.50/1.99, wait -/-");
    }
}
