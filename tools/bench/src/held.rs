//! Drain and latency under a held snapshot (issue 12): what a report query, pg_dump or an
//! idle-in-transaction session does to the outbox.
//!
//! The hold: a second connection in the same database runs `BEGIN ISOLATION LEVEL
//! REPEATABLE READ; SELECT count(*) FROM bench_report_source;` on a table of its own (not the
//! outbox) and stays open for the whole arm. Its snapshot holds back the cleanup horizon of
//! the database, so VACUUM can remove no dead tuple newer than it, in any table.
//!
//! Both arms do the same thing in a fresh schema (no bloat carried over), the hold being the
//! only difference; the unrelated table exists in both. After each drain, outside the clock,
//! both VACUUM the outbox's tables, as autovacuum would given the time: without the hold
//! that removes the dead tuples of the round; under it, nothing. So the arms differ by what
//! the hold pins, not by when autovacuum happened to run (its one-minute naptime is longer
//! than a round).
//!
//! The worker is a black box: events go in through the producer's contract, progress comes
//! from its `/metrics` and from `stats` (the operator's view), never from the outbox's
//! columns, so the same code measures any storage model. A drain round is timed by
//! `outbox_acked_total` (polled every 5 ms over HTTP, costing the database nothing); `stats`
//! then confirms, outside the clock, that nothing is pending or processing. Polling `stats`
//! itself at that rate would scan the outbox (and its dead tuples) hundreds of times a second
//! in one arm only.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use outbox_harness::Schema;
use outbox_worker::{
    config::{Config, NotifyMode},
    contract::{self, Status},
};
use tokio_postgres::Client;

use crate::{
    ctx::Ctx,
    drain::{INSERT_BATCH, backlog_events},
    latency::{self, LatencyRun},
    stats::{self, CpuSnapshot},
    worker::{Spec, Usage, Worker},
};

/// The analytics query's table: unrelated to the outbox, created in every arm.
const REPORT_SOURCE: &str = "
CREATE TABLE bench_report_source AS
    SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 10000) AS g;
ANALYZE bench_report_source;";

/// An open REPEATABLE READ transaction that has read `bench_report_source`: its snapshot is
/// held until [`Hold::release`] (or until it is dropped, which closes the connection).
pub struct Hold {
    client: Client,
    /// `backend_xmin` of the holding session when it began: the horizon it pins.
    pub xmin: String,
    began: Instant,
}

impl Hold {
    pub async fn begin(ctx: &Ctx, schema: &Schema) -> anyhow::Result<Hold> {
        let client = ctx.connect(&schema.url).await?;
        client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ;
                 SELECT count(*) FROM bench_report_source;",
            )
            .await
            .context("the held snapshot")?;
        let xmin: Option<String> = client
            .query_one(
                "SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?
            .get(0);
        let xmin = xmin.context("the holding session has no backend_xmin: no snapshot held")?;
        Ok(Hold {
            client,
            xmin,
            began: Instant::now(),
        })
    }

    /// COMMIT; an error if the session did not survive the whole arm (then nothing was held).
    pub async fn release(self) -> anyhow::Result<f64> {
        self.client
            .batch_execute("COMMIT")
            .await
            .context("the held snapshot's session ended before the arm did")?;
        Ok(self.began.elapsed().as_secs_f64())
    }
}

/// Create the unrelated table in the schema `db` points at.
async fn create_report_source(db: &Client) -> anyhow::Result<()> {
    Ok(db.batch_execute(REPORT_SOURCE).await?)
}

/// The outbox's tables: every table of the schema whose name starts with `outbox_`,
/// partitions included, with their kind: `r` a table or partition, `p` a partitioned parent.
async fn outbox_tables(db: &Client) -> anyhow::Result<Vec<(String, char)>> {
    Ok(db
        .query(
            "SELECT c.relname::text, c.relkind::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
               AND c.relname LIKE 'outbox\\_%' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let kind: String = r.get(1);
            (r.get(0), kind.chars().next().unwrap_or('r'))
        })
        .collect())
}

/// VACUUM the outbox's tables (partitions one by one; a partitioned parent holds no rows).
async fn vacuum_outbox(db: &Client) -> anyhow::Result<f64> {
    let t = Instant::now();
    let tables = outbox_tables(db).await?;
    let heap: Vec<&str> = tables
        .iter()
        .filter(|(_, kind)| *kind == 'r')
        .map(|(name, _)| name.as_str())
        .collect();
    if !heap.is_empty() {
        db.batch_execute(&format!("VACUUM {}", heap.join(", ")))
            .await
            .context("VACUUM of the outbox's tables")?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `n_dead_tup` of each of the outbox's tables.
pub async fn dead_tuples(db: &Client) -> anyhow::Result<BTreeMap<String, i64>> {
    Ok(db
        .query(
            "SELECT relname::text, n_dead_tup FROM pg_stat_user_tables
             WHERE schemaname = current_schema() AND relname LIKE 'outbox\\_%' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// [`dead_tuples`] once the counts have settled. A backend reports its table counters at most
/// once a second while busy and 10 s after it went idle, but at once when it exits: so this
/// is read after the worker has stopped, and again until two readings 200 ms apart agree.
async fn settled_dead_tuples(db: &Client) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut last = dead_tuples(db).await?;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = dead_tuples(db).await?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// The operator's view of the outbox: (pending + processing, failed), from `stats`.
pub async fn undelivered(db: &Client, cfg: &Config) -> anyhow::Result<(i64, i64)> {
    let s = outbox_worker::stats::collect(db, cfg).await?;
    let count = |wanted: &[Status]| -> i64 {
        s.by_status
            .iter()
            .filter(|r| wanted.iter().any(|w| w.as_str() == r.status))
            .map(|r| r.events)
            .sum()
    };
    Ok((
        count(&[Status::Pending, Status::Processing]),
        count(&[Status::Failed]),
    ))
}

/// `stats` says the outbox is empty (nothing pending or processing, nothing failed); the
/// last ack may still be committing when the counter says done, so it is asked for 1 s.
async fn confirm_drained(db: &Client, cfg: &Config) -> anyhow::Result<()> {
    let mut left = undelivered(db, cfg).await?;
    for _ in 0..50 {
        if left.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = undelivered(db, cfg).await?;
    }
    ensure!(
        left == (0, 0),
        "stats after the drain: {} pending or processing, {} failed",
        left.0,
        left.1
    );
    Ok(())
}

/// The `stats` configuration for a schema (stats needs only the database).
fn stats_config(ctx: &Ctx, schema: &Schema) -> anyhow::Result<Config> {
    Ok(Config::from_pairs([
        ("database_url", schema.url.as_str()),
        ("elasticsearch_url", ctx.es_url.as_str()),
    ])?)
}

/// Insert events `from..=to` for `index` in one transaction, through the producer's contract,
/// and commit; returns the commit time. The outbox's tables are ANALYZEd inside the
/// transaction (it counts its own inserts), so every round is planned from fresh statistics
/// in both arms instead of whenever autovacuum gets to it.
async fn insert_round(db: &mut Client, index: &str, from: i64, to: i64) -> anyhow::Result<Instant> {
    let tables: Vec<String> = outbox_tables(db).await?.into_iter().map(|t| t.0).collect();
    let tx = db.transaction().await?;
    for start in (from..=to).step_by(INSERT_BATCH as usize) {
        let end = (start + INSERT_BATCH - 1).min(to);
        contract::insert(&tx, &backlog_events(index, start, end)).await?;
    }
    if !tables.is_empty() {
        tx.batch_execute(&format!("ANALYZE {}", tables.join(", ")))
            .await?;
    }
    tx.commit().await?;
    Ok(Instant::now())
}

/// One round of a drain arm: its events, inserted in one transaction, drained to empty.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    pub events: usize,
    pub seconds: f64,
    pub events_per_s: f64,
    /// The VACUUM after the drain (untimed; none after the last round).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vacuum_seconds: Option<f64>,
}

/// The churn of a drain arm.
#[derive(Debug, Clone, Copy)]
pub struct Churn {
    pub rounds: usize,
    pub round_events: usize,
    /// Wall time after which an arm stops at the end of its round, short of `rounds`: a model
    /// that slows with every round would otherwise hold the bench for an hour. Such an arm
    /// misses the churn goal (`cut_short`).
    pub budget: Duration,
}

/// One drain arm: rounds of inserts and drains by one worker, with or without the hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainArm {
    pub held: bool,
    /// Stopped by the time budget before its last round.
    pub cut_short: bool,
    pub events: usize,
    /// Drain time summed over the rounds (the inserts are not timed).
    pub seconds: f64,
    pub events_per_s: f64,
    pub rounds: Vec<Round>,
    /// `n_dead_tup` of the outbox's tables at the end, after a last VACUUM, before the hold is
    /// released: the dead tuples cleanup cannot remove.
    pub dead_tuples: i64,
    pub dead_tuples_by_table: BTreeMap<String, i64>,
    /// The same before that VACUUM: the last round's, plus what earlier VACUUMs left.
    pub dead_tuples_before_vacuum: i64,
    /// `backend_xmin` of the holding session, and how long it held (s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_xmin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<f64>,
    /// Average cores busy over the timed drains, by process group.
    pub cores: BTreeMap<String, f64>,
    pub worker: Usage,
}

/// A drain arm: the rounds of `churn` in a fresh schema, drained by a worker of `spec`; with
/// `held`, under a snapshot held from before the first round until the dead tuples have been
/// read after the last.
pub async fn drain_arm(
    ctx: &Ctx,
    spec: &Spec,
    held: bool,
    churn: Churn,
) -> anyhow::Result<DrainArm> {
    let label = if held { "held" } else { "nohold" };
    let schema = ctx.create_schema(label, NotifyMode::Adaptive).await?;
    let result = drain_arm_in(ctx, &schema, spec, held, churn).await;
    ctx.drop_schema(&schema).await;
    if !spec.null_sink {
        ctx.delete_index(&schema.name).await;
    }
    result
}

async fn drain_arm_in(
    ctx: &Ctx,
    schema: &Schema,
    spec: &Spec,
    held: bool,
    churn: Churn,
) -> anyhow::Result<DrainArm> {
    let Churn {
        rounds,
        round_events,
        budget,
    } = churn;
    let index = schema.name.as_str();
    if !spec.null_sink {
        ctx.create_index(index).await?;
    }
    let cfg = stats_config(ctx, schema)?;
    let mut db = ctx.connect(&schema.url).await?;
    create_report_source(&db).await?;
    let mut w = Worker::start(ctx, schema, spec).await?;
    let mut hold = None;
    let outcome = async {
        w.wait_ready(&db, spec.notify_mode).await?;
        if held {
            hold = Some(Hold::begin(ctx, schema).await?);
        }
        let n = round_events as i64;
        let mut out = Vec::with_capacity(rounds);
        let mut cores: BTreeMap<String, f64> = BTreeMap::new();
        let began = Instant::now();
        let mut cut_short = false;
        for r in 0..rounds as i64 {
            let t0 = insert_round(&mut db, index, r * n + 1, (r + 1) * n).await?;
            let cpu0 = CpuSnapshot::take(Some(w.pid));
            // A slow round is a figure, not a failure (which would run the arm again).
            let timeout = Duration::from_secs(60 + n as u64 / 500).max(budget);
            let t1 = w.wait_acked(((r + 1) * n) as f64, timeout).await?;
            let cpu1 = CpuSnapshot::take(Some(w.pid));
            let seconds = (t1 - t0).as_secs_f64();
            // Core-seconds, averaged over the arm's drain time below.
            for (group, c) in cpu1.cores_since(&cpu0, seconds) {
                *cores.entry(group).or_default() += c * seconds;
            }
            confirm_drained(&db, &cfg).await?;
            let last = r + 1 == rounds as i64;
            cut_short = !last && began.elapsed() > budget;
            let vacuum_seconds = if last || cut_short {
                None
            } else {
                Some(vacuum_outbox(&db).await?)
            };
            out.push(Round {
                events: round_events,
                seconds,
                events_per_s: round_events as f64 / seconds.max(1e-9),
                vacuum_seconds,
            });
            if cut_short {
                break;
            }
        }
        anyhow::Ok((out, cores, cut_short))
    }
    .await;
    // Stopped before the dead tuples are read: an exiting backend reports its counters.
    let usage = w.stop().await;
    let (rounds, mut cores, cut_short) = outcome?;
    let before_vacuum = settled_dead_tuples(&db).await?.values().sum();
    vacuum_outbox(&db).await?;
    let by_table = dead_tuples(&db).await?;
    let (hold_xmin, hold_seconds) = match hold {
        Some(h) => {
            let xmin = h.xmin.clone();
            (Some(xmin), Some(h.release().await?))
        }
        None => (None, None),
    };
    let events: usize = rounds.iter().map(|r| r.events).sum();
    let seconds: f64 = rounds.iter().map(|r| r.seconds).sum();
    for c in cores.values_mut() {
        *c = stats::round3(*c / seconds.max(1e-9));
    }
    Ok(DrainArm {
        held,
        cut_short,
        events,
        seconds,
        events_per_s: events as f64 / seconds.max(1e-9),
        rounds,
        dead_tuples: by_table.values().sum(),
        dead_tuples_by_table: by_table,
        dead_tuples_before_vacuum: before_vacuum,
        hold_xmin,
        hold_seconds,
        cores,
        worker: usage,
    })
}

/// One latency arm: the latency scenario's measurement (latency.rs) after a churn, with or
/// without the hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyArm {
    pub held: bool,
    /// Events inserted in one transaction, drained and VACUUMed before the measurement (under
    /// the hold in the held arm), so the measurement meets the dead tuples a held snapshot
    /// pins, not a fresh table.
    pub churn_events: usize,
    pub churn_events_per_s: f64,
    /// `n_dead_tup` of the outbox's tables after the churn's VACUUM, when the measurement
    /// begins.
    pub dead_tuples: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_xmin: Option<String>,
    pub run: LatencyRun,
}

/// A fresh schema and index and a worker of `spec`; [with `held`: the hold begins;] a churn
/// of `churn` events is drained and VACUUMed; then the latency scenario's measurement at
/// `rate`.
pub async fn latency_arm(
    ctx: &Ctx,
    spec: &Spec,
    held: bool,
    churn: usize,
    rate: f64,
    seconds: f64,
    warmup: f64,
) -> anyhow::Result<LatencyArm> {
    let label = if held { "heldlat" } else { "noholdlat" };
    let schema = ctx.create_schema(label, NotifyMode::Adaptive).await?;
    let result = async {
        ctx.create_index(&schema.name).await?;
        let cfg = stats_config(ctx, &schema)?;
        let mut db = ctx.connect(&schema.url).await?;
        create_report_source(&db).await?;
        let mut w = Worker::start(ctx, &schema, spec).await?;
        let mut hold = None;
        let outcome = async {
            w.wait_ready(&db, spec.notify_mode).await?;
            if held {
                hold = Some(Hold::begin(ctx, &schema).await?);
            }
            let mut churn_events_per_s = 0.0;
            if churn > 0 {
                let t0 = insert_round(&mut db, &schema.name, 1, churn as i64).await?;
                let timeout = Duration::from_secs(60 + churn as u64 / 500);
                let t1 = w.wait_acked(churn as f64, timeout).await?;
                churn_events_per_s = churn as f64 / (t1 - t0).as_secs_f64().max(1e-9);
                confirm_drained(&db, &cfg).await?;
                vacuum_outbox(&db).await?;
                // The engine indexed the churn too: its merges after 50,000 documents made
                // bulks take 200+ ms for seconds, in both arms alike. Settled first, the
                // measurement is of the outbox under the hold.
                ctx.settle_index(&schema.name).await?;
            }
            // Counted from the VACUUM's own report (busy backends may not have reported theirs).
            let dead_tuples: i64 = dead_tuples(&db).await?.values().sum();
            // Installed after the churn: the ack log then holds the measured events only.
            latency::install_ack_log(&db).await?;
            let run = latency::measure(ctx, &schema, &w, rate, seconds, warmup).await?;
            anyhow::Ok((churn_events_per_s, dead_tuples, run))
        }
        .await;
        let usage = w.stop().await;
        let (churn_events_per_s, dead_tuples, mut run) = outcome?;
        run.worker = Some(usage);
        let hold_xmin = match hold {
            Some(h) => {
                let xmin = h.xmin.clone();
                h.release().await?;
                Some(xmin)
            }
            None => None,
        };
        anyhow::Ok(LatencyArm {
            held,
            churn_events: churn,
            churn_events_per_s,
            dead_tuples,
            hold_xmin,
            run,
        })
    }
    .await;
    ctx.drop_schema(&schema).await;
    ctx.delete_index(&schema.name).await;
    result
}
