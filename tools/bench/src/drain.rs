//! Backlog drains and their ceilings (issue 6, figures 1 and 2).
//!
//! A worker run: a fresh schema, the worker started and idle (waiting, adaptive trigger), then
//! one transaction inserts N events (and ANALYZEs, so the planner sees the backlog the same way
//! in every run) and commits. The clock runs from that commit until the worker has acked all N.
//!
//! Ceilings, on the same documents:
//! - raw `_bulk`: the NDJSON bodies the worker sends for these events (encoded before the
//!   clock starts), the same bulk size and concurrency, straight to the engine, no database.
//! - SQL: the same backlog drained by `DELETE .. WHERE id IN (SELECT .. FOR UPDATE SKIP
//!   LOCKED LIMIT n) RETURNING` loops, from one and from two connections; and, for scale,
//!   by the lease protocol alone (the worker's sql/claim.sql then sql/ack.sql) from two.
//!   All of them with the worker's session settings ([`WORKER_SESSION`]).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::{StreamExt, stream};
use outbox_harness::{Schema, clean_command};
use outbox_worker::{
    bulk::encode,
    config::NotifyMode,
    contract::{self, DEFAULT_PROJECTION, NewEvent, Op},
    event::ClaimedEvent,
};
use tokio_postgres::Client;

use crate::{
    ctx::{Ctx, with_pg_options},
    stats::CpuSnapshot,
    worker::{Spec, Usage, Worker},
};

/// The worker's own claim and ack statements, for the lease loop.
const CLAIM: &str = include_str!("../../../sql/claim.sql");
const COMPLETE_PIECES: &str = include_str!("../../../sql/complete_pieces.sql");

/// The session settings the worker's pool connections run with (custom plans, asynchronous
/// commit); the SQL references run with the same, so they measure the same database work.
pub const WORKER_SESSION: &str = outbox_worker::db::POOL_SESSION_OPTIONS;

/// The document of event `g`: a product of about 300 bytes.
fn document(g: i64) -> serde_json::Value {
    const MATERIALS: [&str; 10] = [
        "steel", "oak", "linen", "carbon", "amber", "cobalt", "granite", "velvet", "maple", "nylon",
    ];
    const THINGS: [&str; 10] = [
        "kettle", "lamp", "chair", "drill", "jacket", "bottle", "router", "sofa", "cable", "boots",
    ];
    serde_json::json!({
        "id": g,
        "name": format!("{} {}", MATERIALS[(g % 10) as usize], THINGS[(g / 10 % 10) as usize]),
        "price_cents": (g * 7919) % 100_000,
        "stock": (g * 31) % 500,
        "tags": ["steel", "linen", "oak"],
        "description": format!(
            "a sturdy product number {g} with a description long enough to look like a real catalogue entry"
        ),
        "updated_at": "2026-01-01T12:00:00Z",
    })
}

/// Events per insert statement of a backlog: the client holds one batch at a time.
pub const INSERT_BATCH: i64 = 10_000;

/// Events `from..=to` of a backlog for `index`.
pub fn backlog_events(index: &str, from: i64, to: i64) -> Vec<NewEvent> {
    (from..=to)
        .map(|g| NewEvent::index(index, g.to_string(), document(g)))
        .collect()
}

/// One timed drain.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Run {
    pub what: String,
    pub events: usize,
    pub seconds: f64,
    pub events_per_s: f64,
    /// Average cores busy during the run, by process group (worker, postgres, engine, ...).
    pub cores: std::collections::BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<Usage>,
}

impl Run {
    pub fn new(what: &str, events: usize, started: Instant, ended: Instant) -> Run {
        let seconds = (ended - started).as_secs_f64();
        Run {
            what: what.to_string(),
            events,
            seconds,
            events_per_s: events as f64 / seconds.max(1e-9),
            ..Run::default()
        }
    }
}

/// The documents of events 1..=n as the worker will read them (`payload::text`): passed
/// through jsonb, so the raw loader gets the exact text PostgreSQL prints.
pub async fn documents(ctx: &Ctx, n: usize) -> anyhow::Result<Vec<String>> {
    let db = ctx.admin().await?;
    let mut texts = Vec::with_capacity(n);
    for from in (1..=n as i64).step_by(INSERT_BATCH as usize) {
        let to = (from + INSERT_BATCH - 1).min(n as i64);
        let docs: Vec<serde_json::Value> = (from..=to).map(document).collect();
        let rows = db
            .query(
                "SELECT d::text FROM unnest($1::jsonb[]) WITH ORDINALITY AS t(d, k) ORDER BY k",
                &[&docs],
            )
            .await?;
        texts.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    Ok(texts)
}

/// Insert events 1..=n for `index` in one transaction, through the producer's insert in
/// batches, and commit; returns the commit time.
pub async fn insert_backlog(db: &mut Client, index: &str, n: usize) -> anyhow::Result<Instant> {
    let tx = db.transaction().await?;
    for from in (1..=n as i64).step_by(INSERT_BATCH as usize) {
        let to = (from + INSERT_BATCH - 1).min(n as i64);
        contract::insert(&tx, &backlog_events(index, from, to)).await?;
    }
    // Inside the transaction (ANALYZE counts its own inserts): fresh statistics for the
    // claim's plan in every run, instead of whenever autovacuum gets to it.
    tx.batch_execute("ANALYZE outbox_events").await?;
    tx.commit().await?;
    Ok(Instant::now())
}

/// Events still in the outbox.
pub async fn remaining(db: &Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one("SELECT count(*) FROM outbox_event_states", &[])
        .await?
        .get(0))
}

/// The worker drains a backlog of `n` events, into the engine or into the null sink.
pub async fn worker_drain(ctx: &Ctx, spec: &Spec, n: usize) -> anyhow::Result<Run> {
    let schema = ctx.create_schema("drain", NotifyMode::Adaptive).await?;
    let result = worker_drain_in(ctx, &schema, spec, n).await;
    ctx.drop_schema(&schema).await;
    if !spec.null_sink {
        ctx.delete_index(&schema.name).await;
    }
    result
}

pub async fn worker_drain_in(
    ctx: &Ctx,
    schema: &Schema,
    spec: &Spec,
    n: usize,
) -> anyhow::Result<Run> {
    let index = &schema.name;
    if !spec.null_sink {
        ctx.create_index(index).await?;
    }
    let mut db = ctx.connect(&schema.url).await?;
    let mut w = Worker::start(ctx, schema, spec).await?;
    let outcome = async {
        w.wait_ready(&db, spec.notify_mode).await?;
        let t0 = insert_backlog(&mut db, index, n).await?;
        let cpu0 = CpuSnapshot::take(Some(w.pid));
        let timeout = Duration::from_secs(60 + n as u64 / 500);
        let t1 = w.wait_acked(n as f64, timeout).await?;
        let cpu1 = CpuSnapshot::take(Some(w.pid));
        let what = if spec.null_sink {
            "worker_null_sink"
        } else {
            "worker"
        };
        let mut run = Run::new(what, n, t0, t1);
        run.cores = cpu1.cores_since(&cpu0, run.seconds);
        anyhow::Ok(run)
    }
    .await;
    let usage = w.stop().await;
    let mut run = outcome?;
    run.worker = Some(usage);
    // The last ack may still be committing when the counter says done: give it a moment.
    let mut left = remaining(&db).await?;
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = remaining(&db).await?;
    }
    ensure!(
        left == 0,
        "{left} events still in the outbox after the drain"
    );
    if !spec.null_sink {
        let docs = ctx.index_count(index).await?;
        ensure!(
            docs == n as u64,
            "index holds {docs} documents, expected {n}"
        );
    }
    Ok(run)
}

/// The engine's ceiling: the same documents, bulk size and concurrency, no database.
pub async fn raw_bulk(
    ctx: &Ctx,
    docs: &[String],
    bulk_size: usize,
    concurrency: usize,
    max_bytes: usize,
) -> anyhow::Result<Run> {
    let index = ctx.name("raw");
    ctx.create_index(&index).await?;
    let result = raw_bulk_in(ctx, &index, docs, bulk_size, concurrency, max_bytes).await;
    ctx.delete_index(&index).await;
    result
}

async fn raw_bulk_in(
    ctx: &Ctx,
    index: &str,
    docs: &[String],
    bulk_size: usize,
    concurrency: usize,
    max_bytes: usize,
) -> anyhow::Result<Run> {
    // Encoded before the clock starts: the ceiling pays nothing but HTTP and the engine.
    let bodies = bulk_bodies(index, docs, bulk_size, max_bytes);
    // The worker's URL: the same `filter_path`, so the engine does the same response work.
    let url =
        ctx.es("_bulk?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason")?;
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()?;
    let cpu0 = CpuSnapshot::take(None);
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(bodies)
        .map(|body| {
            let req = http
                .post(url.clone())
                .header("content-type", "application/x-ndjson")
                .body(body);
            async move {
                let resp = req.send().await?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                if !status.is_success() || memchr(b"\"errors\":true", &bytes) {
                    bail!(
                        "raw bulk: {status}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let t1 = Instant::now();
    let cpu1 = CpuSnapshot::take(None);
    for r in results {
        r?;
    }
    let mut run = Run::new("raw_bulk", docs.len(), t0, t1);
    run.cores = cpu1.cores_since(&cpu0, run.seconds);
    let count = ctx.index_count(index).await?;
    ensure!(
        count == docs.len() as u64,
        "raw index holds {count} documents, expected {}",
        docs.len()
    );
    Ok(run)
}

/// The `_bulk` bodies the worker sends for events 1..=n of `index` (document i+1 is
/// `docs[i]`, its version its id), made by the worker's own encoder and chunking.
fn bulk_bodies(index: &str, docs: &[String], bulk_size: usize, max_bytes: usize) -> Vec<Vec<u8>> {
    let events: Vec<(ClaimedEvent, Op)> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let id = i as i64 + 1;
            let event = ClaimedEvent {
                id,
                index_name: index.to_string(),
                doc_id: id.to_string(),
                op: Op::Index.as_str().into(),
                payload: Some(doc.clone()),
                version: id,
                routing: None,
                attempts: 1,
                deferrals: 0,
                created_epoch: 0.0,
                piece: None,
            };
            (event, Op::Index)
        })
        .collect();
    encode::chunk(events, bulk_size, max_bytes, None)
        .into_iter()
        .map(|c| c.body)
        .collect()
}

fn memchr(needle: &[u8], hay: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The SQL references of figure 2, run from `clients` connections on the same backlog, with
/// the worker's own session settings ([`WORKER_SESSION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlLoop {
    /// The claim alone: the worker's own claim.sql (a window of the log, one piece per
    /// read), the pieces never completed; the least database work per event.
    ClaimDelete,
    /// The lease protocol without the worker around it: the worker's own claim.sql, then
    /// its complete_pieces.sql for the claimed pieces, like the worker for acked events.
    ClaimAck,
}

impl SqlLoop {
    pub fn name(self) -> &'static str {
        match self {
            SqlLoop::ClaimDelete => "sql_ceiling",
            SqlLoop::ClaimAck => "sql_lease_loop",
        }
    }
}

pub async fn sql_loop(
    ctx: &Ctx,
    what: SqlLoop,
    n: usize,
    batch: usize,
    clients: usize,
) -> anyhow::Result<Run> {
    let schema = ctx.create_schema("sql", NotifyMode::Adaptive).await?;
    let result = sql_loop_in(ctx, &schema, what, n, batch, clients).await;
    ctx.drop_schema(&schema).await;
    result
}

async fn sql_loop_in(
    ctx: &Ctx,
    schema: &Schema,
    what: SqlLoop,
    n: usize,
    batch: usize,
    clients: usize,
) -> anyhow::Result<Run> {
    let mut db = ctx.connect(&schema.url).await?;
    let mut conns = Vec::new();
    // The worker's session settings, the way its pool gets them: in the URL's `options`.
    let url = with_pg_options(&schema.url, WORKER_SESSION);
    for k in 0..clients {
        let c = ctx.connect(&url).await?;
        let first = c.prepare(CLAIM).await?;
        let ack = c.prepare(COMPLETE_PIECES).await?;
        conns.push((c, first, ack, format!("sql-loop-{k}")));
    }
    insert_backlog(&mut db, &schema.name, n).await?;
    // The clients start right after this snapshot: the clock starts with them.
    let cpu0 = CpuSnapshot::take(None);
    let t0 = Instant::now();
    let counts =
        futures::future::try_join_all(conns.iter().map(|(c, first, ack, owner)| async move {
            let mut total = 0usize;
            loop {
                let rows = c
                    .query(
                        first,
                        &[&DEFAULT_PROJECTION, &(batch as i32), owner, &30.0f64],
                    )
                    .await?;
                if rows.is_empty() {
                    return anyhow::Ok(total);
                }
                // Read the rows as a consumer would (the worker decodes every column too).
                let mut pieces = Vec::with_capacity(2);
                for r in &rows {
                    let _event: (&str, &str, &str, Option<&str>, i64) = (
                        r.get("index_name"),
                        r.get("doc_id"),
                        r.get("op"),
                        r.get("payload"),
                        r.get("version"),
                    );
                    if let Some(p) = r.get::<_, Option<i64>>("piece_id")
                        && !pieces.contains(&p)
                    {
                        pieces.push(p);
                    }
                }
                if what == SqlLoop::ClaimAck {
                    let done = c.execute(ack, &[&pieces, owner]).await?;
                    ensure!(
                        done as usize == pieces.len(),
                        "lease loop completed {done} of {} pieces",
                        pieces.len()
                    );
                }
                total += rows.len();
            }
        }))
        .await?;
    let t1 = Instant::now();
    let cpu1 = CpuSnapshot::take(None);
    let total: usize = counts.iter().sum();
    ensure!(total == n, "{} drained {total} of {n} events", what.name());
    let mut run = Run::new(&format!("{}_{clients}_clients", what.name()), n, t0, t1);
    run.cores = cpu1.cores_since(&cpu0, run.seconds);
    Ok(run)
}

/// The worker's default configuration, as its own `config` command prints it.
pub fn worker_config(ctx: &Ctx) -> anyhow::Result<serde_json::Value> {
    let out = clean_command(&ctx.worker_bin)
        .arg("config")
        .env("OUTBOX_METRICS_ADDR", "off")
        .output()
        .with_context(|| format!("cannot run {} config", ctx.worker_bin.display()))?;
    ensure!(
        out.status.success(),
        "{} config: {}",
        ctx.worker_bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
