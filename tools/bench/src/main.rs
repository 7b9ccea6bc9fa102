//! `outbox-bench`: the end-to-end bench of issue 6 (`make bench`, `make bench-quick`).
//!
//! Every figure is measured beside its ceiling in the same run, A and B interleaved over
//! several pairs (the machine's speed drifts by ±20 % between runs, far more than the
//! differences we look for), and reported as the median of the pair ratios with min and max:
//!
//! 1. drain into the engine: the worker vs a direct `_bulk` loader (drain.rs)
//! 2. database path: the worker with the null sink vs a claim+delete SQL loop (drain.rs)
//! 3. insert commit -> ack latency at steady rates, measured per event (latency.rs)
//! 4. what the insert trigger costs producers, per notify mode (trigger.rs)
//! 5. the worker's peak RSS under load (every worker run above)
//! 6. a sweep of bulk size x concurrency (sweep.rs)
//! 7. drain and latency under a held snapshot vs without it (held.rs)
//! 8. drain with gzip request bodies vs plain, and the bytes each sends (compression.rs)
//! 9. the price of the delete records' lookup: the null-sink drain with it vs without it
//!    (deletes.rs)
//!
//! It starts and stops worker processes of the real binary (worker.rs), each in a fresh
//! schema of the bench database, writes `target/bench/report.json` and `report.svg`, and
//! prints one summary line on stdout (progress goes to stderr).

mod compression;
mod ctx;
mod deletes;
mod drain;
mod held;
mod latency;
mod plot;
mod stats;
mod sweep;
mod sysinfo;
mod trigger;
mod worker;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::{Context, ensure};
use clap::{Parser, ValueEnum};
use outbox_worker::{config::NotifyMode, metrics::Stage};
use serde_json::{Map, Value, json};

use crate::{
    ctx::Ctx,
    drain::{Run, SqlLoop},
    stats::{Spread, round3},
    worker::Spec,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    Drain,
    NullSink,
    Latency,
    Trigger,
    Sweep,
    Held,
    Compression,
    Deletes,
}

#[derive(Parser, Debug)]
#[command(
    name = "outbox-bench",
    about = "End-to-end bench of outbox-worker: each figure beside its ceiling, interleaved pairs"
)]
struct Args {
    /// Sized for CI: a few minutes in all.
    #[arg(long)]
    quick: bool,
    /// The outbox-worker binary (default: next to this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// The bench database (must exist; each run creates and drops its own schema in it).
    #[arg(
        long,
        env = "OUTBOX_BENCH_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/outbox_bench"
    )]
    database_url: String,
    #[arg(
        long,
        env = "OUTBOX_BENCH_ELASTICSEARCH_URL",
        default_value = "http://127.0.0.1:9200"
    )]
    elasticsearch_url: String,
    /// Where report.json, report.svg and the worker logs go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// Only these scenarios (comma separated); default all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// A/B pairs per figure (default 2 quick, 5 full).
    #[arg(long)]
    pairs: Option<usize>,
    /// Bulk size under test (default: the worker's default).
    #[arg(long)]
    bulk_size: Option<usize>,
    /// Concurrency under test (default: the worker's default).
    #[arg(long)]
    concurrency: Option<usize>,
    /// OUTBOX_DEBOUNCE_MS for every worker run (default: the worker's default, 0).
    #[arg(long, default_value_t = 0)]
    debounce_ms: u64,
    /// Extra PostgreSQL settings for the worker's connections, e.g.
    /// "-c plan_cache_mode=force_custom_plan" (to measure a fix before making it).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    worker_pg_options: String,
    /// SQL run in every fresh schema after the migration, e.g.
    /// "ALTER TABLE outbox_waiting_workers SET UNLOGGED" (to measure a schema change).
    #[arg(long, default_value = "")]
    schema_sql: String,
}

/// Sizes of every scenario; written into the report.
#[derive(Debug, Clone, serde::Serialize)]
struct Params {
    mode: &'static str,
    bulk_size: usize,
    concurrency: usize,
    bulk_max_bytes: usize,
    pairs: usize,
    drain_events: usize,
    null_sink_events: usize,
    /// Events per arm of the delete records' lookup figure (null sink).
    deletes_events: usize,
    latency_rates: Vec<f64>,
    latency_seconds: f64,
    latency_warmup_seconds: f64,
    latency_rounds: usize,
    trigger_pairs: usize,
    trigger_producers: usize,
    trigger_seconds: f64,
    sweep_bulk_sizes: Vec<usize>,
    sweep_concurrencies: Vec<usize>,
    sweep_events: usize,
    sweep_rate: f64,
    sweep_latency_seconds: f64,
    sweep_passes: usize,
    /// Held snapshot: A/B pairs (held vs no hold), rounds per arm and events per round.
    held_pairs: usize,
    held_rounds: usize,
    held_round_events: usize,
    /// Wall seconds after which a drain arm stops short of its rounds (and misses the goal).
    held_arm_budget_seconds: u64,
    /// Held snapshot latency: events drained before the measurement, in each arm.
    held_latency_churn: usize,
    held_latency_rate: f64,
}

impl Params {
    fn new(quick: bool, bulk_size: usize, concurrency: usize, bulk_max_bytes: usize) -> Params {
        if quick {
            Params {
                mode: "quick",
                bulk_size,
                concurrency,
                bulk_max_bytes,
                pairs: 2,
                drain_events: 20_000,
                null_sink_events: 30_000,
                deletes_events: 100_000,
                latency_rates: vec![200.0, 1000.0, 5000.0],
                latency_seconds: 5.0,
                latency_warmup_seconds: 1.0,
                latency_rounds: 1,
                trigger_pairs: 2,
                trigger_producers: 8,
                trigger_seconds: 3.0,
                sweep_bulk_sizes: vec![250, 500, 1000],
                sweep_concurrencies: vec![1, 4],
                sweep_events: 15_000,
                sweep_rate: 1000.0,
                sweep_latency_seconds: 4.0,
                sweep_passes: 1,
                held_pairs: 2,
                held_rounds: 6,
                held_round_events: 50_000,
                held_arm_budget_seconds: 360,
                held_latency_churn: 50_000,
                held_latency_rate: 1000.0,
            }
        } else {
            Params {
                mode: "full",
                bulk_size,
                concurrency,
                bulk_max_bytes,
                pairs: 5,
                drain_events: 50_000,
                null_sink_events: 60_000,
                deletes_events: 300_000,
                latency_rates: vec![200.0, 1000.0, 5000.0],
                latency_seconds: 15.0,
                latency_warmup_seconds: 2.0,
                latency_rounds: 2,
                trigger_pairs: 3,
                trigger_producers: 8,
                trigger_seconds: 6.0,
                sweep_bulk_sizes: vec![100, 250, 500, 1000],
                sweep_concurrencies: vec![1, 2, 4, 8],
                sweep_events: 30_000,
                sweep_rate: 1000.0,
                sweep_latency_seconds: 4.0,
                sweep_passes: 2,
                held_pairs: 2,
                held_rounds: 20,
                held_round_events: 50_000,
                held_arm_budget_seconds: 900,
                held_latency_churn: 200_000,
                held_latency_rate: 1000.0,
            }
        }
    }
}

/// The report as it fills up, plus what the summary and the goals need.
struct Report {
    fields: Map<String, Value>,
    errors: Vec<String>,
    /// Peak RSS of every worker run at the configuration under test, by scenario.
    rss: Vec<(&'static str, f64)>,
}

impl Report {
    fn set(&mut self, key: &str, value: impl serde::Serialize) {
        self.fields.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }
    fn num(&self, key: &str) -> Option<f64> {
        self.fields.get(key).and_then(Value::as_f64)
    }
    /// A figure as three fields: `<key>` (median), `<key>_min`, `<key>_max`.
    fn spread(&mut self, key: &str, s: Option<Spread>) {
        if let Some(s) = s {
            self.set(key, round3(s.median));
            self.set(&format!("{key}_min"), round3(s.min));
            self.set(&format!("{key}_max"), round3(s.max));
        }
    }
}

fn progress(msg: &str) {
    eprintln!("outbox-bench: {msg}");
}

/// Runs that failed once and were run again (counted in the report).
static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Run `f`, and once more if it fails: on a shared machine another process's test may end
/// our connections; a second failure is real and fails the scenario.
async fn twice<T, Fut>(what: &str, mut f: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    match f().await {
        Ok(v) => Ok(v),
        Err(e) => {
            RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            progress(&format!("{what} failed ({e:#}); running it again"));
            f().await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("outbox-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false) when a scenario failed (the report is still written).
async fn run(args: Args) -> anyhow::Result<bool> {
    let worker_bin = match &args.worker_bin {
        Some(p) => p.clone(),
        None => outbox_harness::worker_binary(),
    };
    ensure!(
        worker_bin.is_file(),
        "no worker binary at {} (build it with `cargo build --release -p outbox-worker`, or pass --worker-bin)",
        worker_bin.display()
    );
    // One log per worker run, from this run only.
    let log_dir = args.out_dir.join("logs");
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let ctx = Ctx::new(
        args.database_url.clone(),
        &args.elasticsearch_url,
        worker_bin,
        log_dir,
        args.worker_pg_options.clone(),
        args.schema_sql.clone(),
    )?;
    ctx.cleanup_leftovers()
        .await
        .context("the bench database (scripts/bench.sh creates it)")?;

    let defaults = drain::worker_config(&ctx)?;
    let default_of = |k: &str| defaults[k].as_u64().map(|v| v as usize);
    let params = Params::new(
        args.quick,
        args.bulk_size
            .or(default_of("bulk_size"))
            .context("bulk_size")?,
        args.concurrency
            .or(default_of("concurrency"))
            .context("concurrency")?,
        default_of("bulk_max_bytes").context("bulk_max_bytes")?,
    );
    let params = Params {
        pairs: args.pairs.unwrap_or(params.pairs),
        held_pairs: args.pairs.unwrap_or(params.held_pairs),
        ..params
    };
    let base = Spec {
        bulk_size: params.bulk_size,
        concurrency: params.concurrency,
        notify_mode: NotifyMode::Adaptive,
        null_sink: false,
        poll_interval_seconds: None,
        debounce_ms: args.debounce_ms,
        compression: None,
        delete_records: true,
    };
    let wanted = |s: Scenario| args.only.is_empty() || args.only.contains(&s);

    let started = Instant::now();
    let mut report = Report {
        fields: Map::new(),
        errors: Vec::new(),
        rss: Vec::new(),
    };
    report.set("date", sysinfo::utc_now());
    report.set("git", sysinfo::git());
    report.set("machine", sysinfo::machine(&ctx).await);
    report.set("parameters", &params);
    report.set("worker_defaults", &defaults);
    report.set("worker_pg_options", &args.worker_pg_options);
    report.set("worker_debounce_ms", args.debounce_ms);
    report.set("schema_sql", &args.schema_sql);
    progress(&format!(
        "{} mode, bulk size {}, concurrency {}, {} pairs per figure",
        params.mode, params.bulk_size, params.concurrency, params.pairs
    ));

    // The engine's JIT and every cache warm up on an untimed load first.
    if wanted(Scenario::Drain)
        || wanted(Scenario::Sweep)
        || wanted(Scenario::Latency)
        || wanted(Scenario::Held)
    {
        let docs = drain::documents(&ctx, 10_000).await?;
        let _ = drain::raw_bulk(
            &ctx,
            &docs,
            params.bulk_size,
            params.concurrency,
            params.bulk_max_bytes,
        )
        .await;
    }

    // The scenarios one after the other; a failure is reported and the others still run.
    let rep = std::cell::RefCell::new(report);
    let record = |name: &str, t: Instant, result: anyhow::Result<()>| {
        if let Err(e) = result {
            progress(&format!("{name} FAILED: {e:#}"));
            rep.borrow_mut().errors.push(format!("{name}: {e:#}"));
        }
        progress(&format!(
            "{name} done in {:.0} s",
            t.elapsed().as_secs_f64()
        ));
    };
    if wanted(Scenario::Drain) {
        let t = Instant::now();
        record("drain", t, drain_figure(&ctx, &params, &base, &rep).await);
    }
    if wanted(Scenario::NullSink) {
        let t = Instant::now();
        record(
            "null sink",
            t,
            null_sink_figure(&ctx, &params, &base, &rep).await,
        );
    }
    if wanted(Scenario::Latency) {
        let t = Instant::now();
        record(
            "latency",
            t,
            latency_figure(&ctx, &params, &base, &rep).await,
        );
    }
    if wanted(Scenario::Trigger) {
        let t = Instant::now();
        record(
            "trigger",
            t,
            trigger_figure(&ctx, &params, &base, &rep).await,
        );
    }
    if wanted(Scenario::Sweep) {
        let t = Instant::now();
        record("sweep", t, sweep_figure(&ctx, &params, &base, &rep).await);
    }
    if wanted(Scenario::Held) {
        let t = Instant::now();
        record("held", t, held_figure(&ctx, &params, &base, &rep).await);
    }
    if wanted(Scenario::Compression) {
        let t = Instant::now();
        record(
            "compression",
            t,
            compression_figure(&ctx, &params, &base, &rep).await,
        );
    }
    if wanted(Scenario::Deletes) {
        let t = Instant::now();
        record(
            "deletes",
            t,
            deletes_figure(&ctx, &params, &base, &rep).await,
        );
    }
    let mut report = rep.into_inner();

    memory_figure(&mut report);
    let goals = goals(&report);
    report.set("goals", goals);
    let errors = report.errors.clone();
    report.set("errors", errors);
    report.set("loadavg_at_end", sysinfo::loadavg());
    report.set(
        "runs_retried",
        RETRIED.load(std::sync::atomic::Ordering::Relaxed),
    );
    report.set("total_seconds", started.elapsed().as_secs_f64().round());

    let json_path = args.out_dir.join("report.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&Value::Object(report.fields.clone()))? + "\n",
    )?;
    let svg_path = args.out_dir.join("report.svg");
    std::fs::write(&svg_path, plot_report(&report))?;
    println!("{}", summary(&report, &json_path));
    Ok(report.errors.is_empty())
}

type Shared<'a> = &'a std::cell::RefCell<Report>;

/// Figure 1: the worker's drain into the engine vs the raw `_bulk` loader.
async fn drain_figure(ctx: &Ctx, p: &Params, base: &Spec, rep: Shared<'_>) -> anyhow::Result<()> {
    let docs = drain::documents(ctx, p.drain_events).await?;
    let mut pairs = Vec::new();
    let (mut ratios, mut worker_eps, mut raw_eps) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..p.pairs {
        // A B, then B A: a steady drift of the machine's speed cancels out.
        let (w, r) = if i % 2 == 0 {
            let w = twice("worker drain", || {
                drain::worker_drain(ctx, base, p.drain_events)
            })
            .await?;
            let r = twice("raw bulk", || {
                drain::raw_bulk(ctx, &docs, p.bulk_size, p.concurrency, p.bulk_max_bytes)
            })
            .await?;
            (w, r)
        } else {
            let r = twice("raw bulk", || {
                drain::raw_bulk(ctx, &docs, p.bulk_size, p.concurrency, p.bulk_max_bytes)
            })
            .await?;
            let w = twice("worker drain", || {
                drain::worker_drain(ctx, base, p.drain_events)
            })
            .await?;
            (w, r)
        };
        let ratio = w.events_per_s / r.events_per_s;
        progress(&format!(
            "drain pair {}/{}: worker {:.0} ev/s, raw bulk {:.0} ev/s, ratio {ratio:.3}",
            i + 1,
            p.pairs,
            w.events_per_s,
            r.events_per_s
        ));
        ratios.push(ratio);
        worker_eps.push(w.events_per_s);
        raw_eps.push(r.events_per_s);
        if let Some(u) = &w.worker {
            rep.borrow_mut().rss.push(("drain", u.peak_rss_mib));
        }
        pairs.push(json!({ "pair": i, "worker_first": i % 2 == 0, "ratio": round3(ratio), "worker": w, "raw_bulk": r }));
    }
    let mut rep = rep.borrow_mut();
    rep.spread("drain_ratio_vs_raw_bulk", Spread::of(&ratios));
    rep.set(
        "drain_worker_events_per_s",
        stats::median(&worker_eps).map(f64::round),
    );
    rep.set(
        "drain_raw_bulk_events_per_s",
        stats::median(&raw_eps).map(f64::round),
    );
    rep.set(
        "drain",
        json!({ "events": p.drain_events, "bulk_size": p.bulk_size, "concurrency": p.concurrency, "pairs": pairs }),
    );
    Ok(())
}

/// Figure 8: the worker's drain with gzip request bodies vs plain ones, interleaved pairs;
/// the ratio of drain rates (gzip / none) and the body bytes per event of each.
async fn compression_figure(
    ctx: &Ctx,
    p: &Params,
    base: &Spec,
    rep: Shared<'_>,
) -> anyhow::Result<()> {
    let n = p.drain_events;
    let mut pairs = Vec::new();
    let (mut ratios, mut gzip_bytes, mut none_bytes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut gzip_cpu, mut none_cpu) = (Vec::new(), Vec::new());
    for i in 0..p.pairs {
        let order = if i % 2 == 0 {
            ["gzip", "none"]
        } else {
            ["none", "gzip"]
        };
        let mut got = Vec::new();
        for c in order {
            got.push(twice("compression drain", || compression::drain(ctx, base, c, n)).await?);
        }
        let (g, plain) = if i % 2 == 0 {
            (&got[0], &got[1])
        } else {
            (&got[1], &got[0])
        };
        let ratio = g.run.events_per_s / plain.run.events_per_s;
        ratios.push(ratio);
        gzip_bytes.push(g.body_bytes / n as f64);
        none_bytes.push(plain.body_bytes / n as f64);
        let cpu = |d: &compression::Drained| d.run.worker.map_or(0.0, |u| u.cpu_seconds);
        gzip_cpu.push(cpu(g));
        none_cpu.push(cpu(plain));
        pairs.push(json!({ "pair": i, "gzip_first": i % 2 == 0, "ratio": round3(ratio), "gzip": g, "none": plain }));
    }
    let mut rep = rep.borrow_mut();
    rep.spread("compression_drain_ratio", Spread::of(&ratios));
    let (g, plain) = (stats::median(&gzip_bytes), stats::median(&none_bytes));
    rep.set("bulk_bytes_per_event_gzip", g.map(round3));
    rep.set("bulk_bytes_per_event_none", plain.map(round3));
    rep.set(
        "compression_bytes_ratio",
        g.zip(plain).map(|(g, n)| round3(g / n)),
    );
    rep.set(
        "compression_worker_cpu_seconds_gzip",
        stats::median(&gzip_cpu).map(round3),
    );
    rep.set(
        "compression_worker_cpu_seconds_none",
        stats::median(&none_cpu).map(round3),
    );
    rep.set(
        "compression",
        json!({ "events": n, "bulk_size": p.bulk_size, "concurrency": p.concurrency, "pairs": pairs }),
    );
    Ok(())
}

/// Figure 8: the drain with the delete records' lookup vs without it, every document of the
/// backlog having a record (deletes.rs); into the null sink, then into the engine.
async fn deletes_figure(ctx: &Ctx, p: &Params, base: &Spec, rep: Shared<'_>) -> anyhow::Result<()> {
    let mut details = Map::new();
    for (null_sink, n, key) in [
        (true, p.deletes_events, "delete_record_drain_ratio"),
        (false, p.drain_events, "delete_record_drain_ratio_engine"),
    ] {
        let sink = if null_sink { "null" } else { "engine" };
        let mut pairs = Vec::new();
        let (mut ratios, mut on_eps, mut off_eps) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..p.pairs {
            // With the lookup first, then without; the next pair the other way round.
            let order = if i % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            let mut got: [Option<Run>; 2] = [None, None];
            for lookup in order {
                let what = format!(
                    "{sink} drain {} the delete lookup",
                    if lookup { "with" } else { "without" }
                );
                let run = twice(&what, || {
                    deletes::drain_arm(ctx, base, n, lookup, null_sink)
                })
                .await?;
                if let Some(u) = &run.worker {
                    rep.borrow_mut().rss.push(("deletes", u.peak_rss_mib));
                }
                got[usize::from(lookup)] = Some(run);
            }
            let [Some(off), Some(on)] = got else {
                unreachable!("both arms ran")
            };
            let ratio = on.events_per_s / off.events_per_s;
            progress(&format!(
                "deletes ({sink} sink) pair {}/{}: with the lookup {:.0} ev/s, without {:.0} ev/s, ratio {ratio:.3}",
                i + 1,
                p.pairs,
                on.events_per_s,
                off.events_per_s
            ));
            ratios.push(ratio);
            on_eps.push(on.events_per_s);
            off_eps.push(off.events_per_s);
            pairs.push(json!({ "pair": i, "lookup_first": i % 2 == 0, "ratio": round3(ratio), "with_lookup": on, "without_lookup": off }));
        }
        let mut rep = rep.borrow_mut();
        rep.spread(key, Spread::of(&ratios));
        rep.set(
            &format!("{key}_events_per_s_with_lookup"),
            stats::median(&on_eps).map(f64::round),
        );
        rep.set(
            &format!("{key}_events_per_s_without_lookup"),
            stats::median(&off_eps).map(f64::round),
        );
        details.insert(
            sink.to_string(),
            json!({ "events": n, "records": n, "pairs": pairs }),
        );
    }
    details.insert(
        "records_match".into(),
        json!("every document of the backlog has a record at version 0: each lookup finds all of them, supersedes none"),
    );
    details.insert("bulk_size".into(), json!(p.bulk_size));
    details.insert("concurrency".into(), json!(p.concurrency));
    rep.borrow_mut().set("deletes", Value::Object(details));
    Ok(())
}

/// Figure 2: the worker with the null sink vs the claim+delete loop, 1 and 2 clients.
async fn null_sink_figure(
    ctx: &Ctx,
    p: &Params,
    base: &Spec,
    rep: Shared<'_>,
) -> anyhow::Result<()> {
    let spec = Spec {
        null_sink: true,
        ..base.clone()
    };
    let n = p.null_sink_events;
    let mut pairs = Vec::new();
    let (mut ratios, mut w_eps, mut s1_eps, mut s2_eps) = (vec![], vec![], vec![], vec![]);
    let (mut lease_ratios, mut l2_eps) = (vec![], vec![]);
    let (cd, ca) = (SqlLoop::ClaimDelete, SqlLoop::ClaimAck);
    for i in 0..p.pairs {
        // Four runs per pair, in an order that rotates from pair to pair.
        let mut runs: [Option<Run>; 4] = [None, None, None, None];
        for k in 0..4 {
            let which = (k + i) % 4;
            let b = p.bulk_size;
            runs[which] = Some(match which {
                0 => twice("worker drain", || drain::worker_drain(ctx, &spec, n)).await?,
                1 => twice("SQL ceiling", || drain::sql_loop(ctx, cd, n, b, 1)).await?,
                2 => twice("SQL ceiling", || drain::sql_loop(ctx, cd, n, b, 2)).await?,
                _ => twice("SQL lease loop", || drain::sql_loop(ctx, ca, n, b, 2)).await?,
            });
        }
        let [Some(w), Some(s1), Some(s2), Some(l2)] = runs else {
            unreachable!("all four ran")
        };
        let ceiling = s1.events_per_s.max(s2.events_per_s);
        let ratio = w.events_per_s / ceiling;
        progress(&format!(
            "null sink pair {}/{}: worker {:.0} ev/s, SQL 1 client {:.0}, 2 clients {:.0}, ratio {ratio:.3}; lease loop 2 clients {:.0}",
            i + 1,
            p.pairs,
            w.events_per_s,
            s1.events_per_s,
            s2.events_per_s,
            l2.events_per_s
        ));
        lease_ratios.push(w.events_per_s / l2.events_per_s);
        l2_eps.push(l2.events_per_s);
        ratios.push(ratio);
        w_eps.push(w.events_per_s);
        s1_eps.push(s1.events_per_s);
        s2_eps.push(s2.events_per_s);
        if let Some(u) = &w.worker {
            rep.borrow_mut().rss.push(("null_sink", u.peak_rss_mib));
        }
        pairs.push(json!({
            "pair": i, "ratio": round3(ratio), "worker": w,
            "sql_1_client": s1, "sql_2_clients": s2, "sql_lease_loop_2_clients": l2,
        }));
    }
    let mut rep = rep.borrow_mut();
    rep.spread("null_sink_ratio_vs_sql_ceiling", Spread::of(&ratios));
    rep.set(
        "null_sink_events_per_s",
        stats::median(&w_eps).map(f64::round),
    );
    rep.set(
        "sql_ceiling_events_per_s_1_client",
        stats::median(&s1_eps).map(f64::round),
    );
    rep.set(
        "sql_ceiling_events_per_s_2_clients",
        stats::median(&s2_eps).map(f64::round),
    );
    rep.set(
        "sql_lease_loop_events_per_s_2_clients",
        stats::median(&l2_eps).map(f64::round),
    );
    rep.spread("null_sink_ratio_vs_lease_loop", Spread::of(&lease_ratios));
    rep.set(
        "null_sink",
        json!({
            "events": n, "batch": p.bulk_size, "concurrency": p.concurrency,
            "ceiling": "the better of 1 and 2 clients in the same pair",
            "session": drain::WORKER_SESSION,
            "lease_loop": "for scale, not a goal: the worker's claim.sql then ack.sql per batch from 2 clients, two writes per event",
            "pairs": pairs,
        }),
    );
    Ok(())
}

/// Figure 3: commit -> ack latency at each rate, exact per event, pooled over the rounds.
async fn latency_figure(ctx: &Ctx, p: &Params, base: &Spec, rep: Shared<'_>) -> anyhow::Result<()> {
    let mut runs: Vec<latency::LatencyRun> = Vec::new();
    for round in 0..p.latency_rounds {
        let mut rates = p.latency_rates.clone();
        if round % 2 == 1 {
            rates.reverse();
        }
        for rate in rates {
            let r = twice("latency run", || {
                latency::run_rate(ctx, base, rate, p.latency_seconds, p.latency_warmup_seconds)
            })
            .await?;
            progress(&format!(
                "latency at {rate}/s (round {}, achieved {:.0}/s): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms over {} events (worker histogram p99 ~{:.1} ms), {} lost",
                round + 1,
                r.achieved_rate,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                r.measured_events,
                r.histogram_p99_ms.unwrap_or(f64::NAN),
                r.lost
            ));
            progress(&format!(
                "  by stage, p50/p99 ms: {}",
                latency::stages_line(&r.stages)
            ));
            if let Some(u) = &r.worker {
                rep.borrow_mut().rss.push(("latency", u.peak_rss_mib));
            }
            runs.push(r);
        }
    }
    let mut rep = rep.borrow_mut();
    let mut by_rate = Vec::new();
    for &rate in &p.latency_rates {
        let mine: Vec<&latency::LatencyRun> = runs.iter().filter(|r| r.rate == rate).collect();
        let mut all: Vec<f64> = mine
            .iter()
            .flat_map(|r| r.samples.iter().copied())
            .collect();
        all.sort_by(f64::total_cmp);
        let pct = |q: f64| outbox_harness::percentile(&all, q).map(round3);
        let key = |q: &str| format!("latency_{q}_ms_at_{rate}");
        rep.set(&key("p50"), pct(0.50));
        rep.set(&key("p95"), pct(0.95));
        rep.set(&key("p99"), pct(0.99));
        let lost: usize = mine.iter().map(|r| r.lost).sum();
        // The stages pooled over the rounds: their buckets added up.
        let stages: Vec<latency::StageLatency> = Stage::ALL
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let pooled = mine.iter().fold(Vec::new(), |acc, r| {
                    outbox_harness::prom::histogram_add(&acc, &r.stage_buckets[i])
                });
                latency::StageLatency::of(*stage, &pooled)
            })
            .collect();
        for st in &stages {
            rep.set(
                &format!("latency_stage_{}_p50_ms_at_{rate}", st.stage),
                st.p50_ms,
            );
            rep.set(
                &format!("latency_stage_{}_p99_ms_at_{rate}", st.stage),
                st.p99_ms,
            );
        }
        by_rate.push(json!({
            "rate": rate, "events": all.len(), "lost": lost,
            "achieved_rate": stats::median(&mine.iter().map(|r| r.achieved_rate.round()).collect::<Vec<_>>()),
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": all.last().copied().map(round3),
            "histogram_p99_ms": stats::median(&mine.iter().filter_map(|r| r.histogram_p99_ms).collect::<Vec<_>>()),
            "stages": stages,
        }));
        ensure!(lost == 0, "{lost} events never acked at {rate}/s");
    }
    rep.set(
        "latency",
        json!({
            "method": "exact per event: producer wall clock after its autocommit INSERT returned -> clock_timestamp() in an AFTER DELETE statement trigger on the worker's ack (before the ack's own commit); the worker's end-to-end histogram (insert -> after ack commit, bucketed) beside it",
            "stages": "outbox_stage_seconds deltas over each run (warm-up included), pooled over the rounds, bucketed: wait (insert -> claim start, per event claimed from the log), claim (statement + delete-record lookup, per claim), encode (per claim), queue (claim done -> its chunk's request starts, per chunk), bulk (per request), ack (outcomes + pieces, per chunk)",
            "by_rate": by_rate,
            "runs": runs,
        }),
    );
    Ok(())
}

/// Figure 4: producer TPS with the adaptive / always trigger vs no trigger.
async fn trigger_figure(ctx: &Ctx, p: &Params, base: &Spec, rep: Shared<'_>) -> anyhow::Result<()> {
    let modes = [NotifyMode::Off, NotifyMode::Adaptive, NotifyMode::Always];
    let mut runs = Vec::new();
    let mut out = Map::new();
    let (mut adaptive_all, mut always_all) = (Vec::new(), Vec::new());
    for batch in [1usize, 10] {
        let (mut adaptive, mut always) = (Vec::new(), Vec::new());
        for i in 0..p.trigger_pairs {
            let mut tps = [0.0; 3];
            for k in 0..3 {
                let which = (k + i) % 3;
                let r = twice("trigger run", || {
                    trigger::run(
                        ctx,
                        base,
                        modes[which],
                        batch,
                        p.trigger_producers,
                        p.trigger_seconds,
                    )
                })
                .await?;
                ensure!(r.errors == 0, "producer errors with mode {}", r.mode);
                tps[which] = r.tps;
                rep.borrow_mut()
                    .rss
                    .push(("trigger", r.worker.peak_rss_mib));
                runs.push(r);
            }
            progress(&format!(
                "trigger, {batch}-row transactions, pair {}/{}: off {:.0} tps, adaptive {:.0} ({:.3}), always {:.0} ({:.3})",
                i + 1,
                p.trigger_pairs,
                tps[0],
                tps[1],
                tps[1] / tps[0],
                tps[2],
                tps[2] / tps[0]
            ));
            adaptive.push(tps[1] / tps[0]);
            always.push(tps[2] / tps[0]);
        }
        let name = if batch == 1 { "one_row" } else { "ten_row" };
        out.insert(
            format!("adaptive_ratio_{name}"),
            json!(Spread::of(&adaptive)),
        );
        out.insert(format!("always_ratio_{name}"), json!(Spread::of(&always)));
        for m in &modes {
            let tps: Vec<f64> = runs
                .iter()
                .filter(|r| r.batch == batch && r.mode == m.as_str())
                .map(|r| r.tps)
                .collect();
            out.insert(
                format!("tps_{}_{name}", m.as_str()),
                json!(stats::median(&tps).map(f64::round)),
            );
        }
        adaptive_all.push(Spread::of(&adaptive));
        always_all.push(Spread::of(&always));
    }
    // The headline is the worse of the two transaction sizes.
    let worst = |v: &[Option<Spread>]| {
        v.iter()
            .flatten()
            .copied()
            .min_by(|a, b| a.median.total_cmp(&b.median))
    };
    let mut rep = rep.borrow_mut();
    rep.spread("trigger_insert_tps_ratio", worst(&adaptive_all));
    rep.spread("trigger_always_insert_tps_ratio", worst(&always_all));
    out.insert(
        "definition".into(),
        json!("producer TPS with the trigger mode / TPS with no trigger, a worker (null sink, poll 100 ms) draining in every run; the headline ratios are the worse of one-row and ten-row transactions"),
    );
    out.insert("runs".into(), serde_json::to_value(&runs)?);
    rep.set("trigger", Value::Object(out));
    Ok(())
}

/// Figure 6: bulk size x concurrency.
async fn sweep_figure(ctx: &Ctx, p: &Params, base: &Spec, rep: Shared<'_>) -> anyhow::Result<()> {
    let grid = sweep::Grid {
        bulk_sizes: &p.sweep_bulk_sizes,
        concurrencies: &p.sweep_concurrencies,
        events: p.sweep_events,
        rate: p.sweep_rate,
        latency_seconds: p.sweep_latency_seconds,
        warmup: 1.5,
    };
    let mut points = Vec::new();
    for pass in 0..p.sweep_passes {
        for (b, c) in sweep::order(&grid, pass) {
            let mut pt = twice("sweep point", || sweep::point(ctx, base, &grid, b, c)).await?;
            pt.pass = pass;
            progress(&format!(
                "sweep bulk {b} x concurrency {c} (pass {}): {:.0} ev/s, p99 {:.2} ms at {}/s, peak RSS {:.1} MiB",
                pass + 1,
                pt.events_per_s,
                pt.p99_ms,
                p.sweep_rate,
                pt.peak_rss_mib
            ));
            points.push(pt);
        }
    }
    let cells = sweep::cells(&grid, &points);
    let best = cells
        .iter()
        .max_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s))
        .map(|c| json!({ "bulk_size": c.bulk_size, "concurrency": c.concurrency, "events_per_s": c.events_per_s, "p99_ms": c.p99_ms }));
    rep.borrow_mut().set(
        "sweep",
        json!({
            "events": p.sweep_events, "latency_rate": p.sweep_rate, "passes": p.sweep_passes,
            "best_throughput": best, "cells": cells, "points": points,
        }),
    );
    Ok(())
}

/// Figure 7: drain and latency under a held snapshot vs the same without it (issue 12).
async fn held_figure(ctx: &Ctx, p: &Params, base: &Spec, rep: Shared<'_>) -> anyhow::Result<()> {
    // The database path alone, as the issue measures it: what the hold slows is the claim.
    let null = Spec {
        null_sink: true,
        ..base.clone()
    };
    let (rounds, n) = (p.held_rounds, p.held_round_events);
    let churn = held::Churn {
        rounds,
        round_events: n,
        budget: std::time::Duration::from_secs(p.held_arm_budget_seconds),
    };
    let mut pairs = Vec::new();
    let mut ratios = Vec::new();
    let (mut free_arms, mut held_arms) = (Vec::new(), Vec::new());
    for i in 0..p.held_pairs {
        // No hold first, then held; the next pair the other way round.
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut got: [Option<held::DrainArm>; 2] = [None, None];
        for is_held in order {
            let what = if is_held {
                "held drain arm"
            } else {
                "no-hold drain arm"
            };
            let arm = twice(what, || held::drain_arm(ctx, &null, is_held, churn)).await?;
            let (first, last) = (&arm.rounds[0], &arm.rounds[arm.rounds.len() - 1]);
            progress(&format!(
                "held pair {}/{}, {}: {} events in {} rounds{}, {:.0} ev/s (round 1 {:.0}, round {} {:.0}), dead tuples {}",
                i + 1,
                p.held_pairs,
                if is_held { "held" } else { "no hold" },
                arm.events,
                arm.rounds.len(),
                if arm.cut_short {
                    " (cut short by the time budget)"
                } else {
                    ""
                },
                arm.events_per_s,
                first.events_per_s,
                arm.rounds.len(),
                last.events_per_s,
                arm.dead_tuples
            ));
            rep.borrow_mut().rss.push(("held", arm.worker.peak_rss_mib));
            got[usize::from(is_held)] = Some(arm);
        }
        let [Some(free), Some(held)] = got else {
            unreachable!("both arms ran")
        };
        // Over the rounds both arms ran (the held arm may have been cut short).
        let k = held.rounds.len().min(free.rounds.len());
        let rate = |a: &held::DrainArm| {
            let secs: f64 = a.rounds[..k].iter().map(|r| r.seconds).sum();
            (k * n) as f64 / secs.max(1e-9)
        };
        let ratio = rate(&held) / rate(&free);
        progress(&format!(
            "held pair {}/{}: held {:.0} ev/s, no hold {:.0} ev/s, ratio {ratio:.3}",
            i + 1,
            p.held_pairs,
            held.events_per_s,
            free.events_per_s
        ));
        ratios.push(ratio);
        pairs.push(json!({
            "pair": i, "held_first": i % 2 == 1, "ratio": round3(ratio),
            "no_hold": free.clone(), "held": held.clone(),
        }));
        free_arms.push(free);
        held_arms.push(held);
    }
    // Each round's rate, the median over the pairs: the trend over the churn.
    let per_round = |arms: &[held::DrainArm]| -> Vec<f64> {
        (0..rounds)
            .filter_map(|r| {
                let v: Vec<f64> = arms
                    .iter()
                    .filter_map(|a| a.rounds.get(r).map(|x| x.events_per_s))
                    .collect();
                stats::median(&v).map(f64::round)
            })
            .collect()
    };
    let (free_rounds, held_rounds) = (per_round(&free_arms), per_round(&held_arms));
    let eps = |arms: &[held::DrainArm]| {
        stats::median(&arms.iter().map(|a| a.events_per_s).collect::<Vec<_>>()).map(f64::round)
    };
    let worst_dead = |arms: &[held::DrainArm]| arms.iter().max_by_key(|a| a.dead_tuples).cloned();
    {
        let mut rep = rep.borrow_mut();
        rep.spread("held_snapshot_drain_ratio", Spread::of(&ratios));
        rep.set(
            "held_snapshot_churn_events",
            held_arms.iter().chain(&free_arms).map(|a| a.events).min(),
        );
        rep.set("held_snapshot_drain_events_per_s", eps(&held_arms));
        rep.set("held_snapshot_no_hold_drain_events_per_s", eps(&free_arms));
        rep.set(
            "held_snapshot_round_events_per_s_first",
            held_rounds.first(),
        );
        rep.set("held_snapshot_round_events_per_s_last", held_rounds.last());
        rep.set(
            "held_snapshot_no_hold_round_events_per_s_first",
            free_rounds.first(),
        );
        rep.set(
            "held_snapshot_no_hold_round_events_per_s_last",
            free_rounds.last(),
        );
        if let Some(a) = worst_dead(&held_arms) {
            rep.set("held_snapshot_dead_tuples", a.dead_tuples);
            rep.set(
                "held_snapshot_dead_tuples_by_table",
                &a.dead_tuples_by_table,
            );
            rep.set(
                "held_snapshot_dead_tuples_before_vacuum",
                a.dead_tuples_before_vacuum,
            );
        }
        if let Some(a) = worst_dead(&free_arms) {
            rep.set("held_snapshot_no_hold_dead_tuples", a.dead_tuples);
        }
    }

    // Latency: the latency scenario's measurement, after a churn, with and without the hold.
    let rate = p.held_latency_rate;
    let (mut free_lat, mut held_lat) = (Vec::new(), Vec::new());
    for i in 0..p.held_pairs {
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_held in order {
            let arm = twice("held latency arm", || {
                held::latency_arm(
                    ctx,
                    base,
                    is_held,
                    p.held_latency_churn,
                    rate,
                    p.latency_seconds,
                    p.latency_warmup_seconds,
                )
            })
            .await?;
            let r = &arm.run;
            progress(&format!(
                "held latency pair {}/{}, {}: churn {} events at {:.0} ev/s, then at {rate}/s: p50 {:.2} ms, p99 {:.2} ms over {} events, {} lost, dead tuples {}",
                i + 1,
                p.held_pairs,
                if is_held { "held" } else { "no hold" },
                arm.churn_events,
                arm.churn_events_per_s,
                r.p50_ms,
                r.p99_ms,
                r.measured_events,
                r.lost,
                arm.dead_tuples
            ));
            if let Some(u) = &r.worker {
                rep.borrow_mut().rss.push(("held", u.peak_rss_mib));
            }
            ensure!(r.lost == 0, "{} events never acked at {rate}/s", r.lost);
            if is_held {
                held_lat.push(arm);
            } else {
                free_lat.push(arm);
            }
        }
    }
    let mut rep = rep.borrow_mut();
    for (prefix, arms) in [
        ("held_snapshot", &held_lat),
        ("held_snapshot_no_hold", &free_lat),
    ] {
        let mut all: Vec<f64> = arms
            .iter()
            .flat_map(|a| a.run.samples.iter().copied())
            .collect();
        all.sort_by(f64::total_cmp);
        for (q, name) in [(0.50, "p50"), (0.95, "p95"), (0.99, "p99")] {
            rep.set(
                &format!("{prefix}_latency_{name}_ms_at_{rate}"),
                outbox_harness::percentile(&all, q).map(round3),
            );
        }
    }
    rep.set(
        "held",
        json!({
            "definition": "two arms in fresh schemas, the same worker (OUTBOX_SINK=null): rounds of events, each inserted in one transaction through the producer's contract, then drained to empty (timed by outbox_acked_total, confirmed by stats: nothing pending or processing), then the outbox's tables VACUUMed (untimed, as autovacuum would given the time); the held arm under a REPEATABLE READ transaction that read an unrelated table in the same database, open from before the first round until after the dead tuples are read; ratio = held ev/s / no-hold ev/s over the whole churn, per pair; dead tuples = n_dead_tup of the schema's outbox_* tables after the worker stopped and a last VACUUM (what cleanup cannot remove; before_vacuum: the same before it)",
            "rounds": rounds, "round_events": n, "churn_per_arm": rounds * n,
            "round_events_per_s": { "held": held_rounds, "no_hold": free_rounds },
            "pairs": pairs,
            "latency": {
                "definition": "per arm: a fresh schema, index and worker (engine sink); the hold begins (held arm); churn events inserted in one transaction, drained and VACUUMed; then the latency scenario's measurement (latency.rs) at the rate, the hold still open",
                "rate": rate, "seconds": p.latency_seconds, "churn_events": p.held_latency_churn,
                "held": held_lat, "no_hold": free_lat,
            },
        }),
    );
    Ok(())
}

/// Figure 5: the worst peak RSS of any worker at the configuration under test.
fn memory_figure(rep: &mut Report) {
    let peak = rep.rss.iter().map(|(_, m)| *m).fold(0.0, f64::max);
    if peak > 0.0 {
        rep.set("peak_rss_mib", round3(peak));
        let mut by = Map::new();
        for (scenario, mib) in &rep.rss {
            let e = by.entry(scenario.to_string()).or_insert(json!(0.0));
            *e = json!(round3(e.as_f64().unwrap_or(0.0).max(*mib)));
        }
        rep.set("peak_rss_mib_by_scenario", Value::Object(by));
    }
}

fn goals(rep: &Report) -> Vec<Value> {
    // Issue 12: the dead tuples a held snapshot leaves stay within one worker's batches in
    // flight (bulk size x concurrency), whatever the churn.
    let param = |k: &str| rep.fields["parameters"][k].as_f64().unwrap_or(0.0);
    let in_flight = param("bulk_size") * param("concurrency");
    let churn = param("held_rounds") * param("held_round_events");
    let checks = [
        ("drain_ratio_vs_raw_bulk", 0.90, true),
        ("null_sink_ratio_vs_sql_ceiling", 0.85, true),
        ("latency_p50_ms_at_1000", 3.0, false),
        ("latency_p99_ms_at_1000", 15.0, false),
        ("trigger_insert_tps_ratio", 0.90, true),
        ("peak_rss_mib", 64.0, false),
        ("held_snapshot_drain_ratio", 0.90, true),
        ("held_snapshot_churn_events", churn, true),
        ("held_snapshot_dead_tuples", in_flight, false),
        ("held_snapshot_latency_p50_ms_at_1000", 3.0, false),
        ("held_snapshot_latency_p99_ms_at_1000", 15.0, false),
    ];
    checks
        .iter()
        .map(|&(key, goal, at_least)| {
            let value = rep.num(key);
            let met = value.map(|v| if at_least { v >= goal } else { v <= goal });
            json!({
                "field": key,
                "goal": format!("{} {goal}", if at_least { ">=" } else { "<=" }),
                "value": value,
                "met": met,
            })
        })
        .collect()
}

fn plot_report(rep: &Report) -> String {
    let mut panels = Vec::new();
    if let Some(cells) = rep.fields.get("sweep").and_then(|s| s["cells"].as_array()) {
        let mut bulks: Vec<u64> = cells
            .iter()
            .filter_map(|c| c["bulk_size"].as_u64())
            .collect();
        let mut concs: Vec<u64> = cells
            .iter()
            .filter_map(|c| c["concurrency"].as_u64())
            .collect();
        bulks.dedup();
        concs.sort();
        concs.dedup();
        let series = |field: &str| -> Vec<plot::Series> {
            concs
                .iter()
                .map(|&c| plot::Series {
                    name: format!("concurrency {c}"),
                    values: bulks
                        .iter()
                        .map(|&b| {
                            cells
                                .iter()
                                .find(|x| x["bulk_size"] == b && x["concurrency"] == c)
                                .and_then(|x| x[field].as_f64())
                        })
                        .collect(),
                    dashed: false,
                })
                .collect()
        };
        let cats: Vec<String> = bulks.iter().map(u64::to_string).collect();
        panels.push(plot::Panel {
            title: "Sweep: drain into the engine".into(),
            x_label: "OUTBOX_BULK_SIZE".into(),
            y_label: "events/s".into(),
            categories: cats.clone(),
            series: series("events_per_s"),
            goals: vec![],
            log_y: false,
        });
        let rate = rep.fields["sweep"]["latency_rate"].as_f64().unwrap_or(0.0);
        panels.push(plot::Panel {
            title: format!("Sweep: p99 commit->ack at {rate}/s"),
            x_label: "OUTBOX_BULK_SIZE".into(),
            y_label: "ms".into(),
            categories: cats,
            series: series("p99_ms"),
            goals: vec![(15.0, "goal p99 15 ms".into())],
            log_y: false,
        });
    }
    if let Some(by_rate) = rep
        .fields
        .get("latency")
        .and_then(|l| l["by_rate"].as_array())
    {
        let cats = by_rate
            .iter()
            .map(|r| format!("{}", r["rate"].as_f64().unwrap_or(0.0)))
            .collect();
        let s = |field: &str, name: &str, dashed: bool| plot::Series {
            name: name.into(),
            values: by_rate.iter().map(|r| r[field].as_f64()).collect(),
            dashed,
        };
        panels.push(plot::Panel {
            title: "Latency vs rate (commit -> ack)".into(),
            x_label: "events/s (open loop)".into(),
            y_label: "ms (log scale)".into(),
            categories: cats,
            series: vec![
                s("p50_ms", "p50", false),
                s("p95_ms", "p95", false),
                s("p99_ms", "p99", false),
                s("histogram_p99_ms", "p99 (worker histogram)", true),
            ],
            goals: vec![(3.0, "p50 goal".into()), (15.0, "p99 goal".into())],
            log_y: true,
        });
    }
    if let Some(per_round) = rep.fields.get("held").map(|h| &h["round_events_per_s"]) {
        let values = |arm: &str| -> Vec<Option<f64>> {
            per_round[arm]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::as_f64)
                .collect()
        };
        let (held, free) = (values("held"), values("no_hold"));
        panels.push(plot::Panel {
            title: "Held snapshot: drain per round (null sink)".into(),
            x_label: format!(
                "round ({} events each)",
                rep.fields["held"]["round_events"].as_u64().unwrap_or(0)
            ),
            y_label: "events/s".into(),
            categories: (1..=held.len().max(free.len()))
                .map(|r| r.to_string())
                .collect(),
            series: vec![
                plot::Series {
                    name: "no hold".into(),
                    values: free,
                    dashed: false,
                },
                plot::Series {
                    name: "snapshot held".into(),
                    values: held,
                    dashed: false,
                },
            ],
            goals: vec![],
            log_y: false,
        });
    }
    let title = format!(
        "outbox-bench {} — {} — commit {}",
        rep.fields["parameters"]["mode"].as_str().unwrap_or("?"),
        rep.fields["date"].as_str().unwrap_or("?"),
        rep.fields["git"]["commit"]
            .as_str()
            .unwrap_or("?")
            .get(..10)
            .unwrap_or("?"),
    );
    plot::svg(&title, &panels)
}

/// The one summary line.
fn summary(rep: &Report, json_path: &std::path::Path) -> String {
    let f = |k: &str| rep.num(k);
    let mut parts = vec![format!(
        "outbox-bench {}",
        rep.fields["parameters"]["mode"].as_str().unwrap_or("?")
    )];
    if let Some(r) = f("drain_ratio_vs_raw_bulk") {
        parts.push(format!(
            "drain {r:.2}x raw bulk ({:.0} vs {:.0} ev/s)",
            f("drain_worker_events_per_s").unwrap_or(0.0),
            f("drain_raw_bulk_events_per_s").unwrap_or(0.0)
        ));
    }
    if let Some(r) = f("null_sink_ratio_vs_sql_ceiling") {
        parts.push(format!(
            "null sink {r:.2}x SQL ceiling ({:.0} vs {:.0}/{:.0} ev/s 1/2 clients)",
            f("null_sink_events_per_s").unwrap_or(0.0),
            f("sql_ceiling_events_per_s_1_client").unwrap_or(0.0),
            f("sql_ceiling_events_per_s_2_clients").unwrap_or(0.0)
        ));
    }
    if let (Some(p50), Some(p99)) = (f("latency_p50_ms_at_1000"), f("latency_p99_ms_at_1000")) {
        parts.push(format!("latency@1000/s p50 {p50:.1} ms p99 {p99:.1} ms"));
    }
    if let Some(r) = f("trigger_insert_tps_ratio") {
        parts.push(format!(
            "trigger adaptive {r:.2}x, always {:.2}x",
            f("trigger_always_insert_tps_ratio").unwrap_or(0.0)
        ));
    }
    if let Some(r) = f("compression_drain_ratio") {
        parts.push(format!(
            "gzip drain {r:.2}x plain, {:.0} vs {:.0} body bytes/event",
            f("bulk_bytes_per_event_gzip").unwrap_or(0.0),
            f("bulk_bytes_per_event_none").unwrap_or(0.0)
        ));
    }
    if let Some(r) = f("held_snapshot_drain_ratio") {
        parts.push(format!(
            "held snapshot: drain {r:.2}x no hold (held rounds {:.0} -> {:.0} ev/s), dead tuples {:.0}",
            f("held_snapshot_round_events_per_s_first").unwrap_or(0.0),
            f("held_snapshot_round_events_per_s_last").unwrap_or(0.0),
            f("held_snapshot_dead_tuples").unwrap_or(0.0)
        ));
    }
    if let (Some(p50), Some(p99)) = (
        f("held_snapshot_latency_p50_ms_at_1000"),
        f("held_snapshot_latency_p99_ms_at_1000"),
    ) {
        parts.push(format!(
            "latency@1000/s held p50 {p50:.1} ms p99 {p99:.1} ms"
        ));
    }
    if let Some(m) = f("peak_rss_mib") {
        parts.push(format!("peak RSS {m:.0} MiB"));
    }
    let missed: Vec<String> = rep.fields["goals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["met"] == json!(false))
        .filter_map(|g| g["field"].as_str().map(String::from))
        .collect();
    parts.push(if missed.is_empty() {
        "goals met".to_string()
    } else {
        format!("goals missed: {}", missed.join(", "))
    });
    if !rep.errors.is_empty() {
        parts.push(format!("{} scenario(s) FAILED", rep.errors.len()));
    }
    parts.push(format!("{}", json_path.display()));
    parts.join(" | ")
}
