//! The insert-only log (docs/design.md §6): snapshot windows never skip an event that
//! commits out of id order, and emptying a slot neither blocks producers nor waits for ever
//! behind a session that read the log and sits idle in its transaction.

use outbox_harness as harness;

use std::time::Duration;

use outbox_worker::{
    config::NotifyMode,
    contract::{self, NewEvent},
    event::ClaimedEvent,
    store::{
        claim, outcomes as outcome,
        slots::{Part, SlotResult, truncate_slot},
    },
};
use serde_json::json;

use harness::TestSchema;

fn events(docs: &[&str]) -> Vec<NewEvent> {
    docs.iter()
        .map(|d| NewEvent::index("i", *d, json!({"d": d})))
        .collect()
}

async fn claim_all(pool: &deadpool_postgres::Pool, projection: &str) -> Vec<ClaimedEvent> {
    claim::claim(pool, projection, 1000, "w", Duration::from_secs(30))
        .await
        .unwrap()
}

/// Ack everything claimed: the log's events by completing their pieces.
async fn ack(pool: &deadpool_postgres::Pool, got: &[ClaimedEvent]) {
    let o = outcome::Outcomes {
        ack: got.iter().map(|e| e.held()).collect(),
        ..Default::default()
    };
    outcome::apply(pool, "w", 12, "search_index_to_elastic", &o)
        .await
        .unwrap();
    let mut pieces: Vec<i64> = got.iter().filter_map(|e| e.piece).collect();
    pieces.sort_unstable();
    pieces.dedup();
    let done = outcome::complete_pieces(pool, "w", &pieces).await.unwrap();
    assert_eq!(done, pieces);
}

fn docs(got: &[ClaimedEvent]) -> Vec<String> {
    let mut d: Vec<String> = got.iter().map(|e| e.doc_id.clone()).collect();
    d.sort();
    d
}

/// A transaction that took its id first and commits last is claimed in a later window:
/// "id > cursor" would have lost it. A transaction still open never holds up the others.
#[tokio::test]
async fn events_committed_out_of_id_order_are_all_claimed() {
    let s = TestSchema::new("windows", NotifyMode::Off).await;
    let cfg = s.config(&[]);
    let pool = outbox_worker::db::pool(&cfg, 2).unwrap();
    let mut slow = s.client().await;
    let fast = s.client().await;

    let tx = slow.transaction().await.unwrap();
    let slow_ids = contract::insert_returning_ids(&tx, &events(&["slow-1", "slow-2"]))
        .await
        .unwrap();
    let fast_ids = contract::insert_returning_ids(&fast, &events(&["fast-1"]))
        .await
        .unwrap();
    assert!(
        slow_ids[1] < fast_ids[0],
        "the open transaction has the lower ids"
    );

    let first = claim_all(&pool, &cfg.projection).await;
    assert_eq!(
        docs(&first),
        ["fast-1"],
        "the open transaction is not waited for"
    );
    ack(&pool, &first).await;
    assert!(claim_all(&pool, &cfg.projection).await.is_empty());

    tx.commit().await.unwrap();
    let second = claim_all(&pool, &cfg.projection).await;
    assert_eq!(
        docs(&second),
        ["slow-1", "slow-2"],
        "claimed once committed"
    );
    assert!(second.iter().all(|e| e.attempts == 1 && e.piece.is_some()));
    ack(&pool, &second).await;
    assert!(claim_all(&pool, &cfg.projection).await.is_empty());
    assert_eq!(s.total().await, 0);
}

/// A claim limit smaller than a transaction: the window is taken in pieces, in (txid, id)
/// order, each event exactly once; a second projection has a cursor of its own.
#[tokio::test]
async fn a_large_transaction_is_claimed_in_pieces_and_projections_apart() {
    let s = TestSchema::new("pieces", NotifyMode::Off).await;
    let cfg = s.config(&[]);
    let pool = outbox_worker::db::pool(&cfg, 2).unwrap();
    let c = s.client().await;
    let names: Vec<String> = (0..25).map(|n| format!("d{n:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    contract::insert(&c, &events(&refs)).await.unwrap();
    let mut other = NewEvent::index("i", "other", json!({}));
    other.projection = "other_projection".into();
    contract::insert(&c, &[other]).await.unwrap();

    let mut seen = Vec::new();
    loop {
        let got = claim::claim(&pool, &cfg.projection, 10, "w", Duration::from_secs(30))
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 10);
        ack(&pool, &got).await;
        seen.extend(got.into_iter().map(|e| e.doc_id));
    }
    assert_eq!(seen, names, "each once, in order");
    let other = claim_all(&pool, "other_projection").await;
    assert_eq!(docs(&other), ["other"]);
}

/// Emptying a slot: never while a projection has not claimed it or a piece holds it; a
/// session that read the log and sits idle in its transaction holds the slot's lock, and
/// the TRUNCATE gives up after its lock timeout ('busy') instead of queueing for ever;
/// producers are not blocked meanwhile; once the reader ends, the slot is emptied.
#[tokio::test]
async fn truncate_gives_up_behind_an_idle_reader_and_never_blocks_producers() {
    let s = TestSchema::new("truncate", NotifyMode::Off).await;
    let cfg = s.config(&[]);
    let pool = outbox_worker::db::pool(&cfg, 3).unwrap();
    let c = s.client().await;
    contract::insert(&c, &events(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(
        truncate_slot(&pool, Part::Log, 0, "50ms").await.unwrap(),
        SlotResult::Active,
        "producers write into slot 0"
    );
    // The next ids go to slot 1 (ids 100,000 to 199,999).
    c.execute("SELECT setval('outbox_events_id_seq', 100000)", &[])
        .await
        .unwrap();
    assert_eq!(
        truncate_slot(&pool, Part::Log, 0, "50ms").await.unwrap(),
        SlotResult::Unclaimed
    );
    let got = claim_all(&pool, &cfg.projection).await;
    assert_eq!(got.len(), 3);
    assert_eq!(
        truncate_slot(&pool, Part::Log, 0, "50ms").await.unwrap(),
        SlotResult::Leased,
        "the reclaim may still need them"
    );
    ack(&pool, &got).await;
    // The next window starts: every event of slot 0 is now below the cursor.
    assert!(claim_all(&pool, &cfg.projection).await.is_empty());

    // A session reads the log and sits idle in its transaction.
    let mut reader = s.client().await;
    let rtx = reader.transaction().await.unwrap();
    let n: i64 = rtx
        .query_one("SELECT count(*) FROM outbox_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let attempt = {
        let pool = pool.clone();
        tokio::spawn(async move { truncate_slot(&pool, Part::Log, 0, "500ms").await.unwrap() })
    };
    // While the TRUNCATE waits for the lock, a producer inserts (into slot 1): it does not
    // wait behind it. Its statement_timeout turns a block into an error.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let producer = s.client().await;
    producer
        .batch_execute("SET statement_timeout = '400ms'")
        .await
        .unwrap();
    let ids = contract::insert_returning_ids(&producer, &events(&["during"]))
        .await
        .expect("a producer is not blocked by a waiting TRUNCATE");
    assert!(ids[0] > 100_000);
    assert_eq!(attempt.await.unwrap(), SlotResult::Busy);
    let still: i64 = c
        .query_one("SELECT count(*) FROM outbox_events_slot0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 3, "nothing removed while the reader holds the lock");

    rtx.commit().await.unwrap();
    assert_eq!(
        truncate_slot(&pool, Part::Log, 0, "50ms").await.unwrap(),
        SlotResult::Truncated
    );
    assert_eq!(
        truncate_slot(&pool, Part::Log, 0, "50ms").await.unwrap(),
        SlotResult::Empty
    );
    // The event inserted meanwhile is still there and claimable.
    let got = claim_all(&pool, &cfg.projection).await;
    assert_eq!(docs(&got), ["during"]);
}

/// Sums of the row counters of the outbox tables whose names start with `prefix`
/// (partitions included): (inserted, updated, deleted). Each session reports its counters
/// within about a second of going idle: wait until the inserts and updates expected are all
/// counted (more are a failure the caller sees).
async fn row_counters(
    c: &tokio_postgres::Client,
    prefix: &str,
    (inserted, updated): (i64, i64),
) -> (i64, i64, i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = c
            .query_one(
                "SELECT coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint,
                        coalesce(sum(n_tup_del), 0)::bigint
                 FROM pg_stat_user_tables
                 WHERE schemaname = current_schema() AND relname LIKE $1 || '%'",
                &[&prefix],
            )
            .await
            .unwrap();
        let counts = (r.get(0), r.get(1), r.get(2));
        if (counts.0 >= inserted && counts.1 >= updated) || tokio::time::Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The claims' own state is insert-only too: a claim adds a piece, its completion adds an
/// end, and neither updates nor deletes a row, so a held snapshot has no dead tuples of
/// theirs to keep. A slot of pieces is truncated once every piece in it has ended; a piece
/// still open keeps its slot; a projection whose newest piece goes keeps its cursor.
#[tokio::test]
async fn pieces_are_insert_only_and_rotate_once_ended() {
    let s = TestSchema::new("piecerot", NotifyMode::Off).await;
    let cfg = s.config(&[]);
    let pool = outbox_worker::db::pool(&cfg, 2).unwrap();
    let c = s.client().await;
    let setval = |n: i64| format!("SELECT setval('outbox_pieces_piece_id_seq', {n})");

    // Pieces 9,998 to 10,002: the end of slot 0 and the start of slot 1 (10,000 each).
    c.batch_execute(&setval(9997)).await.unwrap();
    for n in 0..5 {
        let name = format!("d{n}");
        contract::insert(&c, &events(&[name.as_str()]))
            .await
            .unwrap();
        let got = claim_all(&pool, &cfg.projection).await;
        assert_eq!(docs(&got), [name]);
        ack(&pool, &got).await;
    }
    assert_eq!(
        truncate_slot(&pool, Part::Pieces, 0, "50ms").await.unwrap(),
        SlotResult::Truncated,
        "every piece of slot 0 ended"
    );
    assert_eq!(
        truncate_slot(&pool, Part::Pieces, 0, "50ms").await.unwrap(),
        SlotResult::Empty
    );
    assert_eq!(
        truncate_slot(&pool, Part::Pieces, 1, "50ms").await.unwrap(),
        SlotResult::Active,
        "claims insert into slot 1"
    );

    // An open piece in slot 2, while claims have moved on to slot 3.
    c.batch_execute(&setval(20000)).await.unwrap();
    contract::insert(&c, &events(&["open"])).await.unwrap();
    let open = claim_all(&pool, &cfg.projection).await;
    assert_eq!(docs(&open), ["open"]);
    c.batch_execute(&setval(30000)).await.unwrap();
    assert_eq!(
        truncate_slot(&pool, Part::Pieces, 1, "50ms").await.unwrap(),
        SlotResult::Truncated
    );
    assert_eq!(
        truncate_slot(&pool, Part::Pieces, 2, "50ms").await.unwrap(),
        SlotResult::Open,
        "its events are in flight"
    );
    ack(&pool, &open).await;
    assert_eq!(
        truncate_slot(&pool, Part::Pieces, 2, "50ms").await.unwrap(),
        SlotResult::Truncated
    );
    let pieces_left: i64 = c
        .query_one("SELECT count(*) FROM outbox_pieces", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pieces_left, 0);

    // The projection's newest piece went with slot 2: its cursor was kept, so nothing is
    // claimed twice.
    contract::insert(&c, &events(&["after"])).await.unwrap();
    let got = claim_all(&pool, &cfg.projection).await;
    assert_eq!(docs(&got), ["after"]);
    ack(&pool, &got).await;
    assert_eq!(s.total().await, 0);

    // 7 pieces and 7 ends inserted; not one row updated or deleted. The cursor row: its
    // insert by the first claim, and one update, when the newest piece was truncated.
    assert_eq!(row_counters(&c, "outbox_pieces", (7, 0)).await, (7, 0, 0));
    assert_eq!(
        row_counters(&c, "outbox_piece_ends", (7, 0)).await,
        (7, 0, 0)
    );
    assert_eq!(row_counters(&c, "outbox_cursors", (1, 1)).await, (1, 1, 0));
}
