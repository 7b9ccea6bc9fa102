//! `outbox-soak`: the chaos soak of issue 5. Three real worker processes drain a steady
//! stream of events through a fault-proxy into the real engine, while a seeded schedule
//! SIGKILLs, SIGTERMs and SIGSTOPs workers, kills their PostgreSQL connections and makes the
//! proxy refuse, fail, stall and reset. Afterwards the invariants are checked: every event
//! acked or failed for the reason it was built to cause, every document at its newest
//! version, nothing stuck, nothing lost, nothing stale.
//!
//! ```text
//! scripts/soak.sh            # about 5 minutes
//! scripts/soak.sh --quick    # about 65-75 s, for CI
//! ```
//!
//! Figures go to `--out` (JSON) and stdout, ending with one summary line; progress goes to
//! stderr. The exit status is 1 if an invariant was violated, 2 if the soak could not run
//! (or could not inject all it meant to).
//! Each run works in its own schema `soak_<id>` of the soak database and its own index,
//! with the logs in `run-<id>/` beside the report: all removed after a clean run, kept after
//! a failed one (or with `--keep`), for investigation.
//!
//! Modules: harness.rs (schema, index, proxy and worker slots), produce.rs (the load and
//! the ledger of what was committed), faults.rs (the chaos schedule), monitor.rs (lag,
//! worker counters, supervision), check.rs (the invariants), report.rs (the figures).

mod check;
mod faults;
mod harness;
mod monitor;
mod produce;
mod report;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::{
    check::{Findings, Verdict},
    faults::{Chaos, Kind, Targets, Timing},
    harness::{Clock, Ctx, WorkerEnv, Workers},
    monitor::Monitor,
    report::Report,
};

#[derive(Parser, Debug)]
#[command(
    name = "outbox-soak",
    about = "Chaos soak: three workers, random kills and proxy faults, then the invariants"
)]
struct Args {
    /// Sized for CI: about 60-90 s in all.
    #[arg(long)]
    quick: bool,
    /// Events to produce (default 35000; quick 7200).
    #[arg(long)]
    events: Option<u64>,
    /// Seconds of production at a steady rate (default 280; quick 60).
    #[arg(long)]
    duration: Option<f64>,
    /// Seed of the document choice, the bad events and the fault schedule (default: from
    /// the clock; printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Distinct documents (default: events / 30, so each gets about 30 versions).
    #[arg(long)]
    docs: Option<u64>,
    /// Fraction of events that delete an existing document.
    #[arg(long, default_value_t = 0.05)]
    delete_ratio: f64,
    /// Events built to fail (invalid_event, mapping conflict) (default 30; quick 9).
    #[arg(long)]
    bad: Option<u64>,
    /// Fault kinds to inject, comma separated (default: all): sigkill, sigterm, sigstop,
    /// pg-terminate, proxy-refuse, proxy-status-429, proxy-status-503, proxy-delay,
    /// proxy-reset, proxy-items; `--faults none` for a fault-free baseline.
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<String>>,
    /// Mean seconds between two faults (default 3; quick 2).
    #[arg(long)]
    fault_gap: Option<f64>,
    /// Seconds without faults at the start, to measure the normal lag.
    #[arg(long, default_value_t = 4.0)]
    warmup: f64,
    /// Lag (events) under which the system counts as recovered (default: max(20, 2 x the
    /// p95 lag of the warm-up)).
    #[arg(long)]
    recovery_lag: Option<i64>,
    /// Seconds to wait for the outbox to drain after production (default 300; quick 120).
    #[arg(long)]
    drain_timeout: Option<f64>,
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// The JSON report; logs go to a directory beside it.
    #[arg(long, default_value = "target/soak/report.json")]
    out: PathBuf,
    /// Keep the schema, the index and the logs after a clean run too.
    #[arg(long)]
    keep: bool,
    /// The outbox-worker binary (default: next to this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    #[arg(
        long,
        env = "OUTBOX_SOAK_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/outbox_soak"
    )]
    database_url: String,
    #[arg(
        long,
        env = "OUTBOX_SOAK_ELASTICSEARCH_URL",
        default_value = "http://127.0.0.1:9200"
    )]
    elasticsearch_url: String,
    /// More nodes of the same cluster, comma-separated, that the workers reach directly
    /// beside the proxy (which stands in front of the node above): a run against a cluster,
    /// where only the proxied node meets the faults and the workers fail over to the others.
    #[arg(long, env = "OUTBOX_SOAK_MORE_NODES", value_delimiter = ',')]
    more_nodes: Vec<String>,
}

/// The run's sizes, with the quick/full defaults applied.
struct Sizes {
    events: u64,
    duration: f64,
    docs: u64,
    bad: u64,
    kinds: Vec<Kind>,
    timing: Timing,
    drain_timeout: f64,
}

impl Args {
    fn sizes(&self) -> anyhow::Result<Sizes> {
        let q = self.quick;
        let events = self.events.unwrap_or(if q { 7_200 } else { 35_000 });
        let kinds = match &self.faults {
            None => Kind::value_variants().to_vec(),
            Some(names) if names.iter().any(|n| n == "none") => Vec::new(),
            Some(names) => names
                .iter()
                .map(|n| {
                    Kind::from_str(&n.replace('_', "-"), true).map_err(|_| {
                        anyhow::anyhow!(
                            "--faults {n}: expected none or a list of {}",
                            Kind::value_variants()
                                .iter()
                                .map(|k| k.name().replace('_', "-"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        anyhow::ensure!(events > 0, "--events must be at least 1");
        anyhow::ensure!(self.workers >= 1, "--workers must be at least 1");
        Ok(Sizes {
            events,
            duration: self.duration.unwrap_or(if q { 60.0 } else { 280.0 }),
            docs: self.docs.unwrap_or((events / 30).max(10)),
            bad: self.bad.unwrap_or(if q { 9 } else { 30 }),
            kinds,
            timing: Timing {
                mean_gap: self.fault_gap.unwrap_or(if q { 2.0 } else { 3.0 }),
                max_refuse: if q { 4.0 } else { 8.0 },
                max_down: 3.0,
            },
            drain_timeout: self.drain_timeout.unwrap_or(if q { 120.0 } else { 300.0 }),
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(report) if !report.ok => ExitCode::from(1),
        // Invariants held, but the soak did not do all it meant to (e.g. a fault could not
        // be injected): not a pass to rely on.
        Ok(report) if !report.harness_problems.is_empty() => ExitCode::from(2),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outbox-soak: cannot run the soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let sizes = args.sizes()?;
    let clock = Clock::start();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 1_000_000)
            .unwrap_or(1)
    });
    // Short, lower case, no LIKE wildcard: it names the schema, the index and the workers.
    let run_id = format!(
        "{:x}",
        (std::process::id() as u64).wrapping_mul(0x9e37_79b9) ^ seed
    )
    .chars()
    .rev()
    .take(8)
    .collect::<String>();
    let out_dir = args
        .out
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let log_dir = out_dir.join(format!("run-{run_id}"));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    // The fault proxy runs in this process: its log lines (one per injected fault) go here.
    let proxy_log = std::fs::File::create(log_dir.join("fault-proxy.log"))?;
    tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(proxy_log))
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("fault_proxy=info"))
        .init();
    let ctx = Ctx {
        run_id: run_id.clone(),
        db_url: args.database_url.clone(),
        es_url: args.elasticsearch_url.trim_end_matches('/').to_string(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?,
        worker_bin: args
            .worker_bin
            .clone()
            .unwrap_or_else(outbox_harness::worker_binary),
        log_dir: log_dir.clone(),
    };
    anyhow::ensure!(
        ctx.worker_bin.is_file(),
        "{} not found: build it with `cargo build -p outbox-worker` (or pass --worker-bin)",
        ctx.worker_bin.display()
    );
    eprintln!(
        "outbox-soak: run {run_id}, seed {seed}: {} events over {:.0} s, {} documents, {} bad, {} workers, faults [{}]; logs in {}",
        sizes.events,
        sizes.duration,
        sizes.docs,
        sizes.bad,
        args.workers,
        sizes
            .kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" "),
        log_dir.display()
    );

    // --- setup: schema, index, proxy, workers
    ctx.create_schema().await?;
    ctx.create_index().await?;
    let proxy = Arc::new(harness::start_proxy(&ctx, seed)?);
    let nodes: Vec<&str> = std::iter::once(proxy.url.as_str())
        .chain(
            args.more_nodes
                .iter()
                .map(|n| n.trim())
                .filter(|n| !n.is_empty()),
        )
        .collect();
    let env = WorkerEnv::new(&ctx.schema_url(), &nodes.join(","));
    let worker_env = env.to_json();
    let workers = Arc::new(Workers::new(&ctx, env, args.workers));
    workers.start_all().await?;
    let findings = Arc::new(Findings::default());
    let monitor = Monitor::new(
        ctx.db("monitor"),
        workers.clone(),
        ctx.http.clone(),
        findings.clone(),
        clock,
    );
    let setup_s = clock.now();
    eprintln!("outbox-soak: set up in {setup_s:.1} s; producing");

    // --- production, with the chaos schedule after a fault-free warm-up
    let stop_monitor = CancellationToken::new();
    let monitor_task = tokio::spawn(monitor.clone().run(stop_monitor.clone()));
    let stop_faults = CancellationToken::new();
    let producer = tokio::spawn(produce::run(
        ctx.db("producer"),
        ctx.index(),
        produce::Plan {
            events: sizes.events,
            duration: Duration::from_secs_f64(sizes.duration),
            docs: sizes.docs,
            delete_ratio: args.delete_ratio.clamp(0.0, 1.0),
            bad: sizes.bad,
            seed,
        },
    ));
    let warmup_end = clock.now() + args.warmup;
    let chaos = Chaos::new(
        seed,
        sizes.kinds.clone(),
        sizes.timing.clone(),
        Targets {
            workers: workers.clone(),
            proxy: proxy.clone(),
            admin: Arc::new(ctx.db("chaos")),
            findings: findings.clone(),
            clock,
        },
    );
    let chaos_task = {
        let stop = stop_faults.clone();
        let warmup = args.warmup;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(warmup)) => chaos.run(stop).await,
                _ = stop.cancelled() => Vec::new(),
            }
        })
    };
    let produced = producer.await.context("producer task")??;
    let production_end = clock.now();
    eprintln!(
        "outbox-soak: [{production_end:6.1}s] produced {} events; stopping faults",
        produced.events
    );
    stop_faults.cancel();
    let mut records = chaos_task.await.context("chaos task")?;
    // The last fault may have ended after production: drain time counts from here.
    let faults_end = clock.now();

    // --- drain
    let drain_s = wait_drained(&monitor, faults_end, sizes.drain_timeout, &clock).await;
    match drain_s {
        Some(d) => eprintln!("outbox-soak: drained {d:.1} s after the last fault"),
        None => findings.violation(format!(
            "the outbox did not drain within {:.0} s after production and faults ended (lag {:?})",
            sizes.drain_timeout,
            monitor.last().map(|s| s.lag)
        )),
    }
    monitor.scrape().await;
    stop_monitor.cancel();
    let _ = monitor_task.await;

    // --- stop the workers gracefully: each must exit 0 and leave nothing processing
    stop_workers(&workers, &findings).await;
    let proxy_stats = proxy.control.stats().await.unwrap_or_default();
    drop(proxy);

    // --- the invariants
    let db = ctx.connect("check").await?;
    let mut verdict = Verdict::default();
    check::outbox(&db, &findings, &mut verdict).await?;
    check::documents(&ctx, &db, &findings, &mut verdict).await?;

    // --- figures
    let samples = monitor.samples();
    let baseline = report::baseline_lag(&samples, setup_s, warmup_end);
    let threshold = args.recovery_lag.unwrap_or((2 * baseline).max(20));
    report::measure_recovery(&mut records, &samples, threshold);
    let violations = findings.violations();
    let harness_problems = findings.harness_problems();
    let notes = findings.notes();
    let ok = violations.is_empty();
    let report = Report {
        ok,
        // A clean run leaves nothing behind but the report, unless asked to.
        artifacts_kept: !ok || args.keep,
        run_id: run_id.clone(),
        seed,
        quick: args.quick,
        schema: ctx.schema(),
        index: ctx.index(),
        log_dir: log_dir.display().to_string(),
        worker_env,
        workers: args.workers,
        worker_starts: workers.starts.load(std::sync::atomic::Ordering::Relaxed),
        produced,
        events: verdict.events,
        lost: verdict.lost,
        stale: verdict.stale,
        failed_by_reason: verdict.failed_by_reason.clone(),
        faults: report::Faults {
            total: records.len(),
            by_kind: report::by_kind(&records),
            proxy_stats,
            list: records,
        },
        lag: report::Lag {
            max_events: samples.iter().map(|s| s.lag).max().unwrap_or(0),
            max_oldest_age_s: report::round2(
                samples.iter().map(|s| s.oldest_age).fold(0.0, f64::max),
            ),
            baseline_p95_events: baseline,
            recovery_threshold_events: threshold,
            sample_period_s: monitor::PERIOD.as_secs_f64(),
            series: report::lag_series(&samples),
        },
        timings: report::Timings {
            setup_s: report::round2(setup_s),
            production_s: report::round2(production_end - setup_s),
            drain_s: drain_s.map(report::round2),
            total_s: report::round2(clock.now()),
        },
        worker_counters: monitor.counter_totals(),
        verdict,
        violations,
        harness_problems,
        notes,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{}", report.render());
    println!("report: {}", args.out.display());
    if !report.artifacts_kept {
        ctx.drop_schema().await?;
        ctx.delete_index().await;
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        println!(
            "kept for investigation: schema {} (database {}), index {}, logs {}",
            ctx.schema(),
            outbox_worker::config::redact_url(&ctx.db_url),
            ctx.index(),
            log_dir.display()
        );
    }
    println!("{}", report.summary());
    Ok(report)
}

/// Wait until nothing is pending or processing; the seconds it took from `from`, or None
/// after `timeout` seconds.
async fn wait_drained(monitor: &Monitor, from: f64, timeout: f64, clock: &Clock) -> Option<f64> {
    loop {
        // A sample taken after `from` with nothing undelivered: drained.
        if let Some(s) = monitor.last()
            && s.t > from
            && s.lag == 0
        {
            return Some(s.t - from);
        }
        if clock.now() - from > timeout {
            return None;
        }
        tokio::time::sleep(monitor::PERIOD).await;
    }
}

async fn stop_workers(workers: &Workers, findings: &Findings) {
    let grace = workers.env().shutdown_grace_seconds;
    for lock in &workers.slots {
        let mut guard = lock.lock().await;
        let Some(mut w) = guard.take() else { continue };
        if let Some(status) = w.exited() {
            findings.violation(format!(
                "worker {} had exited by itself ({status}) before the final stop",
                w.id
            ));
            continue;
        }
        match w.stop(Duration::from_secs_f64(grace + 10.0)).await {
            Err(e) => findings.harness(format!("SIGTERM to {}: {e:#}", w.id)),
            Ok(Some(s)) if s.code() == Some(0) => {}
            Ok(Some(s)) => findings.violation(format!(
                "worker {} exited with {s} on the final SIGTERM:\n{}",
                w.id,
                w.log_tail(15)
            )),
            Ok(None) => findings.violation(format!(
                "worker {} did not exit after the final SIGTERM (killed)",
                w.id
            )),
        }
    }
}
