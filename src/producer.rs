//! `outbox-worker produce`: a load generator that writes like an application does. In
//! `business` mode each transaction upserts (or deletes) rows of a `demo_products` table and
//! inserts the matching outbox events, with the document version taken under the row lock;
//! in `outbox` mode it inserts outbox rows only (for benches). Open loop at a fixed rate, or
//! as fast as it can.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio_postgres::Client;

use crate::{
    config::Config,
    contract::{self, NewEvent},
    db,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum ProduceMode {
    /// Business row + outbox event in one transaction.
    Business,
    /// Outbox rows only.
    Outbox,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProduceOptions {
    /// Target index of the events.
    #[arg(long, default_value = "demo_products")]
    pub index: String,
    /// Events per second over all clients; 0 = as fast as possible.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many events (whichever comes first).
    #[arg(long)]
    pub events: Option<u64>,
    /// Concurrent producer connections.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Events per transaction.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Distinct documents (ids 0..docs); fewer documents, more versions of each.
    #[arg(long, default_value_t = 10_000)]
    pub docs: u64,
    /// Fraction of events that delete their document.
    #[arg(long, default_value_t = 0.0)]
    pub delete_ratio: f64,
    #[arg(long, value_enum, default_value_t = ProduceMode::Business)]
    pub mode: ProduceMode,
    /// Random seed (deterministic document choice).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ProduceReport {
    pub events: u64,
    pub transactions: u64,
    pub errors: u64,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
}

const SETUP: &str = "
CREATE SEQUENCE IF NOT EXISTS demo_product_version_seq;
CREATE TABLE IF NOT EXISTS demo_products (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    price_cents bigint NOT NULL,
    stock      integer NOT NULL,
    tags       text[] NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)";

/// Upsert one product; the version comes from a sequence taken while the row is locked,
/// so versions of one document grow in commit order.
const UPSERT_PRODUCT: &str = "
INSERT INTO demo_products AS p (id, name, price_cents, stock, tags, version)
VALUES ($1, $2, $3, $4, $5, nextval('demo_product_version_seq'))
ON CONFLICT (id) DO UPDATE
SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, stock = EXCLUDED.stock,
    tags = EXCLUDED.tags, version = nextval('demo_product_version_seq'), updated_at = now()
RETURNING version, jsonb_build_object(
    'id', id, 'name', name, 'price_cents', price_cents, 'stock', stock, 'tags', to_jsonb(tags),
    'version', version, 'updated_at', updated_at)";

const DELETE_PRODUCT: &str = "
WITH gone AS (DELETE FROM demo_products WHERE id = $1 RETURNING id)
SELECT nextval('demo_product_version_seq')";

/// Words of the generated product documents: ten materials, then ten things.
pub const WORDS: &[&str] = &[
    "steel", "oak", "linen", "carbon", "amber", "cobalt", "granite", "velvet", "maple", "nylon",
    "kettle", "lamp", "chair", "drill", "jacket", "bottle", "router", "sofa", "cable", "boots",
];

pub async fn setup(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SETUP).await
}

pub async fn produce(cfg: &Config, opts: &ProduceOptions) -> anyhow::Result<ProduceReport> {
    let setup_client = db::connect_simple(cfg, "producer").await?;
    setup(&setup_client).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.duration);
    let budget = Arc::new(AtomicU64::new(opts.events.unwrap_or(u64::MAX)));
    let events = Arc::new(AtomicU64::new(0));
    let txns = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for n in 0..opts.clients.max(1) {
        let client = db::connect_simple(cfg, "producer").await?;
        let opts = opts.clone();
        let (budget, events, txns, errors) =
            (budget.clone(), events.clone(), txns.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            let mut rng =
                StdRng::seed_from_u64(opts.seed.wrapping_mul(1000).wrapping_add(n as u64));
            let per_client_rate = opts.rate / opts.clients.max(1) as f64;
            let mut ticker = (per_client_rate > 0.0).then(|| {
                let every = Duration::from_secs_f64(opts.batch as f64 / per_client_rate);
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                if let Some(t) = ticker.as_mut() {
                    tokio::select! {
                        _ = t.tick() => {}
                        _ = tokio::time::sleep_until(deadline.into()) => break,
                    }
                }
                let take = take_budget(&budget, opts.batch as u64);
                if take == 0 {
                    break;
                }
                match one_transaction(&client, &opts, take as usize, &mut rng).await {
                    Ok(()) => {
                        events.fetch_add(take, Ordering::Relaxed);
                        txns.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %crate::db::error_text(&e), "producer transaction failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = events.load(Ordering::Relaxed);
    Ok(ProduceReport {
        events,
        transactions: txns.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed_seconds: elapsed,
        events_per_second: events as f64 / elapsed.max(1e-9),
    })
}

fn take_budget(budget: &AtomicU64, want: u64) -> u64 {
    let mut cur = budget.load(Ordering::Relaxed);
    loop {
        let take = cur.min(want);
        if take == 0 {
            return 0;
        }
        match budget.compare_exchange(cur, cur - take, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return take,
            Err(now) => cur = now,
        }
    }
}

async fn one_transaction(
    client: &Client,
    opts: &ProduceOptions,
    n: usize,
    rng: &mut StdRng,
) -> Result<(), tokio_postgres::Error> {
    let mut events = Vec::with_capacity(n);
    client.batch_execute("BEGIN").await?;
    let result: Result<(), tokio_postgres::Error> = async {
        let mut picks: Vec<(i64, bool)> = (0..n)
            .map(|_| {
                let id = rng.random_range(0..opts.docs.max(1)) as i64;
                (id, rng.random_bool(opts.delete_ratio.clamp(0.0, 1.0)))
            })
            .collect();
        // Rows are locked in id order, so concurrent producers never deadlock on each other.
        picks.sort_unstable_by_key(|p| p.0);
        for (id, delete) in picks {
            let doc_id = id.to_string();
            if opts.mode == ProduceMode::Outbox {
                events.push(if delete {
                    NewEvent::delete(&opts.index, doc_id)
                } else {
                    NewEvent::index(&opts.index, doc_id, random_doc(id, rng))
                });
                continue;
            }
            if delete {
                let row = client.query_one(DELETE_PRODUCT, &[&id]).await?;
                events.push(NewEvent::delete(&opts.index, doc_id).version(row.get(0)));
            } else {
                let name = format!(
                    "{} {}",
                    WORDS[rng.random_range(0..10)],
                    WORDS[rng.random_range(10..20)]
                );
                let price: i64 = rng.random_range(100..100_000);
                let stock: i32 = rng.random_range(0..500);
                let tags: Vec<&str> = (0..3)
                    .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                    .collect();
                let row = client
                    .query_one(UPSERT_PRODUCT, &[&id, &name, &price, &stock, &tags])
                    .await?;
                events.push(NewEvent::index(&opts.index, doc_id, row.get(1)).version(row.get(0)));
            }
        }
        contract::insert(client, &events).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

fn random_doc(id: i64, rng: &mut StdRng) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "name": format!("{} {}", WORDS[rng.random_range(0..10)], WORDS[rng.random_range(10..20)]),
        "price_cents": rng.random_range(100..100_000),
        "stock": rng.random_range(0..500),
        "tags": [WORDS[rng.random_range(0..WORDS.len())], WORDS[rng.random_range(0..WORDS.len())]],
    })
}
