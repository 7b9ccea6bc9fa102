//! The soak's producer: application-style transactions at a steady rate over a set of
//! documents with many versions each, some deletes, and a few events built to fail for a
//! known reason. Every transaction also writes the soak's ledger (harness.rs), so what the
//! checks expect is exactly what was committed.
//!
//! Versions come from one counter, and a single connection commits in order, so a larger
//! `doc_version` is always the newer state of a document.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use outbox_worker::contract::{self, NewEvent, Op};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::index::sample};
use serde_json::{Value, json};

use crate::harness::Db;

/// What the producer is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub events: u64,
    pub duration: Duration,
    pub docs: u64,
    pub delete_ratio: f64,
    /// Events built to fail: half invalid (caught by the worker), half rejected by the
    /// engine's mapping.
    pub bad: u64,
    pub seed: u64,
}

/// What the producer did (the ledger is the authority for the checks).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Produced {
    pub events: u64,
    pub index_events: u64,
    pub delete_events: u64,
    pub bad_invalid_event: u64,
    pub bad_mapping_conflict: u64,
    pub transactions: u64,
    pub errors: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// The failure a bad event is built to cause, as recorded in `soak_events.expect_fail`.
pub const EXPECT_INVALID: &str = "invalid_event";
pub const EXPECT_MAPPING: &str = "mapping_conflict";

/// At most this many events per transaction; a late producer catches up with several.
const MAX_BATCH: usize = 4;

/// Words of the generated documents: ten materials, then ten things.
const WORDS: &[&str] = &[
    "steel", "oak", "linen", "carbon", "amber", "cobalt", "granite", "velvet", "maple", "nylon",
    "kettle", "lamp", "chair", "drill", "jacket", "bottle", "router", "sofa", "cable", "boots",
];

const UPSERT_DOCS: &str = "
INSERT INTO soak_docs AS d (doc_id, version, deleted, payload)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::jsonb[])
ON CONFLICT (doc_id) DO UPDATE
SET version = EXCLUDED.version, deleted = EXCLUDED.deleted, payload = EXCLUDED.payload";

/// An event whose op the contract cannot spell (the bad `upsert`), written raw on purpose:
/// the worker must fail it as `invalid_event`.
const INSERT_RAW_EVENT: &str = "
INSERT INTO outbox_events (index_name, doc_id, op, payload, doc_version)
VALUES ($1, $2, $3, $4, $5) RETURNING id";

/// The ledger rows of the events just inserted, in the same transaction.
const INSERT_LEDGER: &str = "
INSERT INTO soak_events (event_id, doc_id, op, version, expect_fail)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[])";

/// One event about to be written.
struct Event {
    doc_id: String,
    op: &'static str,
    payload: Option<Value>,
    version: i64,
    expect_fail: Option<&'static str>,
}

impl Event {
    /// The event as the producer's contract writes it; None for an op it cannot spell.
    fn new_event(&self, index: &str) -> Option<NewEvent> {
        let event = match (Op::parse(self.op)?, &self.payload) {
            (Op::Index, Some(payload)) => NewEvent::index(index, &self.doc_id, payload.clone()),
            (Op::Index, None) => return None,
            (Op::Delete, _) => NewEvent::delete(index, &self.doc_id),
        };
        Some(event.version(self.version))
    }
}

struct Producer {
    db: Db,
    index: String,
    plan: Plan,
    rng: StdRng,
    /// Slots (0..events) that get a bad event instead of a good one.
    bad_slots: HashSet<u64>,
    /// Documents that exist right now (deletes pick among these).
    live: HashSet<u64>,
    next_version: i64,
    out: Produced,
}

/// Produce through `db` (the run's schema) into `index`.
pub async fn run(db: Db, index: String, plan: Plan) -> anyhow::Result<Produced> {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x70726f64);
    let bad = plan.bad.min(plan.events) as usize;
    let bad_slots = sample(&mut rng, plan.events as usize, bad)
        .into_iter()
        .map(|i| i as u64)
        .collect();
    let mut p = Producer {
        db,
        index,
        plan,
        rng,
        bad_slots,
        live: HashSet::new(),
        next_version: 1,
        out: Produced::default(),
    };
    p.run().await?;
    Ok(p.out)
}

impl Producer {
    async fn run(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let rate = self.plan.events as f64 / self.plan.duration.as_secs_f64().max(0.001);
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Batch sizes depend on timing; their own RNG keeps the events themselves (documents,
        // ops, payloads) a function of the seed alone.
        let mut batch_rng = StdRng::seed_from_u64(self.plan.seed ^ 0x6261746368);
        let mut slot = 0u64;
        while slot < self.plan.events {
            ticker.tick().await;
            // Steady rate: produce what is due by now, so a slow moment is caught up
            // rather than stretching the run.
            let due = ((rate * started.elapsed().as_secs_f64()) as u64).min(self.plan.events);
            while slot < due {
                let n = ((due - slot) as usize).min(MAX_BATCH);
                let n = batch_rng.random_range(1..=n);
                let events: Vec<Event> = (slot..slot + n as u64).map(|s| self.event(s)).collect();
                let committed = match self.write(&events).await {
                    Ok(()) => true,
                    Err(e) => {
                        self.out.errors += 1;
                        eprintln!("outbox-soak: producer transaction failed: {e:#}");
                        anyhow::ensure!(
                            self.out.errors <= 100,
                            "the producer keeps failing: {e:#}"
                        );
                        self.was_committed(&events).await?
                    }
                };
                if committed {
                    self.commit_bookkeeping(&events);
                    slot += n as u64;
                }
                // Else nothing of it was committed: the slots get new events next time.
            }
        }
        self.out.seconds = started.elapsed().as_secs_f64();
        self.out.events_per_second = self.out.events as f64 / self.out.seconds.max(1e-9);
        Ok(())
    }

    fn version(&mut self) -> i64 {
        let v = self.next_version;
        self.next_version += 1;
        v
    }

    /// The event of production slot `slot`.
    fn event(&mut self, slot: u64) -> Event {
        let version = self.version();
        if self.bad_slots.contains(&slot) {
            return self.bad_event(slot, version);
        }
        let doc = self.rng.random_range(0..self.plan.docs.max(1));
        let doc_id = format!("doc-{doc}");
        if self.live.contains(&doc) && self.rng.random_bool(self.plan.delete_ratio) {
            return Event {
                doc_id,
                op: "delete",
                payload: None,
                version,
                expect_fail: None,
            };
        }
        let rng = &mut self.rng;
        let payload = json!({
            "doc": doc_id,
            "v": version,
            "seq": slot,
            "name": format!("{} {}", WORDS[rng.random_range(0..10)], WORDS[rng.random_range(10..20)]),
            "tags": [WORDS[rng.random_range(0..WORDS.len())], WORDS[rng.random_range(0..WORDS.len())]],
            "price": rng.random_range(100..100_000),
        });
        Event {
            doc_id,
            op: "index",
            payload: Some(payload),
            version,
            expect_fail: None,
        }
    }

    /// A bad event on a document of its own (so no good event supersedes it): a payload
    /// that is not an object, an unknown op (both `invalid_event`), or a value the index
    /// mapping refuses (`mapper_parsing_exception` / `document_parsing_exception`).
    fn bad_event(&mut self, slot: u64, version: i64) -> Event {
        match slot % 3 {
            0 => Event {
                doc_id: format!("bad-array-{slot}"),
                op: "index",
                payload: Some(json!([slot, "not an object"])),
                version,
                expect_fail: Some(EXPECT_INVALID),
            },
            1 => Event {
                doc_id: format!("bad-op-{slot}"),
                op: "upsert",
                payload: Some(json!({"doc": slot})),
                version,
                expect_fail: Some(EXPECT_INVALID),
            },
            _ => Event {
                doc_id: format!("bad-mapping-{slot}"),
                op: "index",
                payload: Some(json!({"doc": format!("bad-mapping-{slot}"), "v": "not a number"})),
                version,
                expect_fail: Some(EXPECT_MAPPING),
            },
        }
    }

    /// After an error (typically the connection lost, e.g. a server restart by someone
    /// else), whether the transaction committed anyway: the ledger, written in the same
    /// transaction, says.
    async fn was_committed(&self, events: &[Event]) -> anyhow::Result<bool> {
        let db = self.db.get_patiently(Duration::from_secs(120)).await?;
        Ok(db
            .query_opt(
                "SELECT 1 FROM soak_events WHERE version = $1",
                &[&events[0].version],
            )
            .await?
            .is_some())
    }

    async fn write(&self, events: &[Event]) -> anyhow::Result<()> {
        let client = self.db.get().await?;
        // The newest state per document of this transaction (a document may appear twice).
        let mut newest: HashMap<&str, &Event> = HashMap::new();
        for e in events.iter().filter(|e| e.expect_fail.is_none()) {
            newest.insert(&e.doc_id, e);
        }
        let docs: Vec<&str> = newest.keys().copied().collect();
        let doc_versions: Vec<i64> = docs.iter().map(|d| newest[d].version).collect();
        let deleted: Vec<bool> = docs.iter().map(|d| newest[d].op == "delete").collect();
        let doc_payloads: Vec<Option<Value>> =
            docs.iter().map(|d| newest[d].payload.clone()).collect();

        // Events the contract can spell, and the rest (built to break it), written raw.
        let (mut contract_events, mut new_events, mut raw_events) = (vec![], vec![], vec![]);
        for e in events {
            match e.new_event(&self.index) {
                Some(new) => {
                    contract_events.push(e);
                    new_events.push(new);
                }
                None => raw_events.push(e),
            }
        }

        client.batch_execute("BEGIN").await?;
        let result = async {
            if !docs.is_empty() {
                client
                    .execute(
                        UPSERT_DOCS,
                        &[&docs, &doc_versions, &deleted, &doc_payloads],
                    )
                    .await?;
            }
            // The ids come back in the order of the events; pair each with its event.
            let ids = contract::insert_returning_ids(&*client, &new_events).await?;
            let mut written: Vec<(i64, &Event)> = ids
                .into_iter()
                .zip(contract_events.iter().copied())
                .collect();
            for e in &raw_events {
                let row = client
                    .query_one(
                        INSERT_RAW_EVENT,
                        &[&self.index, &e.doc_id, &e.op, &e.payload, &e.version],
                    )
                    .await?;
                written.push((row.get(0), e));
            }
            let event_ids: Vec<i64> = written.iter().map(|(id, _)| *id).collect();
            let doc_ids: Vec<&str> = written.iter().map(|(_, e)| e.doc_id.as_str()).collect();
            let ops: Vec<&str> = written.iter().map(|(_, e)| e.op).collect();
            let versions: Vec<i64> = written.iter().map(|(_, e)| e.version).collect();
            let expect: Vec<Option<&str>> = written.iter().map(|(_, e)| e.expect_fail).collect();
            client
                .execute(
                    INSERT_LEDGER,
                    &[&event_ids, &doc_ids, &ops, &versions, &expect],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>(())
        }
        .await;
        match result {
            Ok(()) => client.batch_execute("COMMIT").await?,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
        }
        Ok(())
    }

    fn commit_bookkeeping(&mut self, events: &[Event]) {
        self.out.transactions += 1;
        for e in events {
            self.out.events += 1;
            match (e.expect_fail, e.op) {
                (Some(EXPECT_MAPPING), _) => self.out.bad_mapping_conflict += 1,
                (Some(_), _) => self.out.bad_invalid_event += 1,
                (None, "delete") => {
                    self.out.delete_events += 1;
                    self.live.remove(&doc_number(&e.doc_id));
                }
                (None, _) => {
                    self.out.index_events += 1;
                    self.live.insert(doc_number(&e.doc_id));
                }
            }
        }
    }
}

fn doc_number(doc_id: &str) -> u64 {
    doc_id
        .strip_prefix("doc-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}
