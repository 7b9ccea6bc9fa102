//! The database half of the worker: `claim::claim` then `outcome::apply` (ack) of one batch,
//! against the real PostgreSQL, with no search engine in between (a no-op sink). Throughput
//! is in events: compare with the end-to-end null-sink drain of `outbox-bench`.
//!
//!     OUTBOX_BENCH_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/outbox_bench \
//!         cargo bench --bench claim_cycle
//!
//! The database must exist (scripts/bench.sh creates it). Each run works in a fresh schema
//! `claimbench_<pid>`, dropped at the end.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use deadpool_postgres::Pool;
use outbox_harness::{Schema, drop_schema, try_connect};
use outbox_worker::{
    config::{Config, NotifyMode},
    contract::{self, DEFAULT_PROJECTION, NewEvent},
    db,
    store::{
        claim,
        outcomes::{self as outcome, Outcomes},
    },
};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio_postgres::Client;

const DEFAULT_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/outbox_bench";
const OWNER: &str = "claim-cycle-bench";
const BATCHES: &[usize] = &[100, 500];

/// Backlog rows shaped like the end-to-end bench's documents (about 300 bytes of jsonb).
fn fill_event(g: u64) -> NewEvent {
    NewEvent::index(
        "demo_products",
        g.to_string(),
        json!({
            "id": g, "name": format!("oak lamp {g}"), "price_cents": (g * 7919) % 100_000,
            "stock": g % 500, "tags": ["steel", "linen"],
            "description": format!("a sturdy product number {g} with a description long enough to look like a real catalogue entry"),
        }),
    )
}

struct Db {
    base_url: String,
    client: Client,
    pool: Pool,
    schema: String,
    /// Pending rows left: refilled between samples, outside the measured time.
    pending: usize,
}

async fn setup(label: &str) -> Db {
    let base_url =
        std::env::var("OUTBOX_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let name = format!("claimbench_{}_{label}", std::process::id());
    let created = async {
        drop_schema(&base_url, &name).await?;
        // Every connection of the worker side sees only this schema.
        let schema = Schema::create(&base_url, &name, NotifyMode::Off).await?;
        let client = try_connect(&schema.url, "claim-cycle-bench").await?;
        anyhow::Ok((schema, client))
    };
    let (schema, client) = created.await.unwrap_or_else(|e| {
        panic!("claim_cycle: {e:#} (run scripts/bench.sh, or set OUTBOX_BENCH_DATABASE_URL)")
    });
    let cfg = Config::from_pairs([
        ("database_url", schema.url.as_str()),
        ("metrics_addr", "off"),
    ])
    .expect("config");
    let pool = db::pool(&cfg, 4).expect("pool");
    Db {
        base_url,
        client,
        pool,
        schema: schema.name,
        pending: 0,
    }
}

impl Db {
    /// Make sure `need` rows are pending. Vacuums first, so every sample starts from a table
    /// without the dead tuples of earlier samples (as autovacuum would keep it).
    async fn refill(&mut self, need: usize) {
        if self.pending >= need {
            return;
        }
        self.client
            .batch_execute("VACUUM outbox_events")
            .await
            .expect("vacuum");
        let add = (need - self.pending).max(20_000);
        let ids: Vec<u64> = (1..=add as u64).collect();
        for part in ids.chunks(10_000) {
            let events: Vec<NewEvent> = part.iter().map(|&g| fill_event(g)).collect();
            contract::insert(&self.client, &events).await.expect("fill");
        }
        self.client
            .batch_execute("ANALYZE outbox_events")
            .await
            .expect("analyze");
        self.pending += add;
    }

    /// One cycle: claim `batch` events under a lease, ack them all.
    async fn cycle(&self, batch: usize) -> usize {
        let events = claim::claim(
            &self.pool,
            DEFAULT_PROJECTION,
            batch,
            OWNER,
            Duration::from_secs(60),
        )
        .await
        .expect("claim");
        let o = Outcomes {
            ack: events.iter().map(|e| e.held()).collect(),
            ..Outcomes::default()
        };
        let applied = outcome::apply(&self.pool, OWNER, 12, "search_index_to_elastic", &o)
            .await
            .expect("ack");
        assert_eq!(
            applied.acked.len(),
            events.len(),
            "every claimed event acked"
        );
        // The log's events are done when their pieces are.
        let mut pieces: Vec<i64> = events.iter().filter_map(|e| e.piece).collect();
        pieces.dedup();
        let completed = outcome::complete_pieces(&self.pool, OWNER, &pieces)
            .await
            .expect("complete");
        assert_eq!(completed.len(), pieces.len(), "every piece completed");
        events.len()
    }
}

/// The cycle as the worker runs it: its pool, so its session settings
/// (`db::POOL_SESSION_OPTIONS`: custom plans, asynchronous commit).
fn claim_ack(c: &mut Criterion) {
    cycles(c, "claim_ack");
}

fn cycles(c: &mut Criterion, group: &str) {
    let rt = Runtime::new().expect("tokio runtime");
    let mut db = rt.block_on(setup(group));
    let mut g = c.benchmark_group(group);
    for &batch in BATCHES {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new("batch", batch), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    db.refill(iters as usize * batch).await;
                    let started = Instant::now();
                    for _ in 0..iters {
                        let n = db.cycle(batch).await;
                        assert_eq!(n, batch, "the backlog never runs dry inside a sample");
                    }
                    let took = started.elapsed();
                    db.pending -= iters as usize * batch;
                    took
                })
            })
        });
    }
    g.finish();
    let _ = rt.block_on(drop_schema(&db.base_url, &db.schema));
}

criterion_group! {
    name = benches;
    // A database round trip per cycle: few, longer samples are enough and keep the run short.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = claim_ack
}
criterion_main!(benches);
