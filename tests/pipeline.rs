//! The pipeline end to end, against the real PostgreSQL and the real search engine.

use outbox_harness as harness;

use std::time::{Duration, Instant};

use outbox_worker::{
    config::NotifyMode,
    contract::{self, ErrorReason, NewEvent},
    event::ClaimedEvent,
    reclaim,
    store::{claim, outcomes as outcome},
};
use serde_json::json;

use harness::{Engine, InProcessWorker, TestSchema};

const DRAIN: Duration = Duration::from_secs(120);

/// 10,000 events over 1,000 documents (many versions each), inserted while three workers
/// with concurrency 8 drain: every document ends at its newest version, the outbox empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_converge_on_the_newest_version_of_every_document() {
    let s = TestSchema::new("many", NotifyMode::Adaptive).await;
    let index = harness::unique("many");
    let engine = Engine::new();
    let workers: Vec<InProcessWorker> = (0..3)
        .map(|_| InProcessWorker::start(s.config(&[("concurrency", "8"), ("bulk_size", "200")])))
        .collect();

    // Four producers write 100 blocks of 100 events while the workers run. Event g (1..=10000)
    // is version g of document g % 1000; blocks commit out of version order across producers.
    let mut producers = Vec::new();
    for p in 0..4i64 {
        let s_url = s.url.clone();
        let index = index.clone();
        producers.push(tokio::spawn(async move {
            let c = harness::connect(&s_url).await;
            for block in (p..100).step_by(4) {
                let events: Vec<NewEvent> = (block * 100 + 1..=block * 100 + 100)
                    .map(|g| {
                        NewEvent::index(
                            &index,
                            (g % 1000).to_string(),
                            json!({"doc": g % 1000, "v": g}),
                        )
                        .version(g)
                    })
                    .collect();
                contract::insert(&c, &events).await.unwrap();
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    s.wait_drained(DRAIN).await;
    for w in workers {
        w.stop().await;
    }
    assert_eq!(
        s.total().await,
        0,
        "outbox empty: nothing failed, nothing left"
    );
    let docs = engine.all(&index).await;
    assert_eq!(docs.len(), 1000);
    for d in 0..1000i64 {
        let newest = if d == 0 { 10_000 } else { 9_000 + d };
        let (source, version) = &docs[&d.to_string()];
        assert_eq!(
            *version, newest,
            "doc {d} holds version {version}, newest is {newest}"
        );
        assert_eq!(source, &json!({"doc": d, "v": newest}));
    }
}

/// Expire every lease in the schema: the log's pieces and the exceptions being processed.
const EXPIRE_LEASES: &str =
    "UPDATE outbox_pieces SET lease_expires_at = now() - interval '1 second';
     UPDATE outbox_exceptions SET lease_expires_at = now() - interval '1 second'
     WHERE status = 'processing'";

/// Deletes, a document deleted and re-created, a delete of a missing document, and
/// several versions of one document in one claim (the older ones acked as superseded).
#[tokio::test]
async fn deletes_recreates_and_superseded_versions() {
    let s = TestSchema::new("del", NotifyMode::Adaptive).await;
    let index = harness::unique("del");
    let engine = Engine::new();
    let i = index.as_str();
    // Inserted before the worker starts, so they arrive in one claim.
    s.insert(&[
        NewEvent::index(i, "a", json!({"name": "a1"})).version(1),
        NewEvent::index(i, "a", json!({"name": "a2"})).version(2),
        NewEvent::index(i, "a", json!({"name": "a3"})).version(3),
        NewEvent::index(i, "b", json!({"name": "b1"})).version(1),
        NewEvent::delete(i, "ghost").version(1),
    ])
    .await;
    let w = InProcessWorker::start(s.config(&[]));
    s.wait_drained(DRAIN).await;
    assert_eq!(engine.get(i, "a").await, Some((json!({"name": "a3"}), 3)));
    assert_eq!(engine.get(i, "b").await.map(|d| d.1), Some(1));
    assert_eq!(
        engine.get(i, "ghost").await,
        None,
        "delete of a missing document is acked"
    );

    // Delete b, then re-create it with a newer version.
    s.insert(&[NewEvent::delete(i, "b").version(2)]).await;
    s.wait_drained(DRAIN).await;
    assert_eq!(engine.get(i, "b").await, None, "b deleted");
    s.insert(&[NewEvent::index(i, "b", json!({"name": "b3"})).version(3)])
        .await;
    s.wait_drained(DRAIN).await;
    assert_eq!(
        engine.get(i, "b").await,
        Some((json!({"name": "b3"}), 3)),
        "b re-created"
    );

    // A stale event (older version than indexed) is acked without overwriting.
    s.insert(&[NewEvent::index(i, "a", json!({"name": "stale"})).version(2)])
        .await;
    s.wait_drained(DRAIN).await;
    assert_eq!(
        engine.get(i, "a").await,
        Some((json!({"name": "a3"}), 3)),
        "stale write refused"
    );
    w.stop().await;
    assert_eq!(s.total().await, 0);
}

/// Deterministic failures end `failed` with the right reason; the rest of their chunk indexes.
#[tokio::test]
async fn deterministic_failures_fail_with_reason_while_neighbours_index() {
    let s = TestSchema::new("det", NotifyMode::Adaptive).await;
    let index = harness::unique("det");
    let engine = Engine::new();
    engine.put_index_with_long_n(&index).await;
    let i = index.as_str();
    let mut ids = s
        .insert(&[
            NewEvent::index(i, "ok1", json!({"n": 1})),
            NewEvent::index(i, "conflict", json!({"n": "not a number"})),
            NewEvent::index(i, "ok2", json!({"n": 2})),
            NewEvent::index(i, "array", json!([1, 2])),
        ])
        .await;
    // An op the contract cannot spell, so written raw.
    ids.extend(
        s.insert_raw(&[(i, "op", "upsert", Some(json!({"n": 3})), None)])
            .await,
    );
    ids.extend(
        s.insert(&[
            NewEvent::index("Bad_Index_Name", "x", json!({"n": 4})),
            NewEvent::index(i, "x".repeat(513), json!({"n": 5})),
            NewEvent::index(i, "ok3", json!({"n": 3})),
        ])
        .await,
    );
    let w = InProcessWorker::start(s.config(&[("bulk_size", "100")]));
    s.wait_drained(DRAIN).await;
    w.stop().await;

    let reason = |n: usize| {
        let s = &s;
        let id = ids[n];
        async move { s.state(id).await }
    };
    assert_eq!(reason(0).await, None, "ok1 acked");
    let conflict = reason(1).await.expect("mapping conflict stays as failed");
    assert_eq!(conflict.0, "failed");
    assert!(
        matches!(
            conflict.1.as_deref(),
            Some("mapper_parsing_exception" | "document_parsing_exception")
        ),
        "{conflict:?}"
    );
    assert_eq!(reason(2).await, None, "ok2 acked");
    assert_eq!(
        reason(3).await,
        Some(("failed".into(), Some("invalid_event".into())))
    );
    assert_eq!(
        reason(4).await,
        Some(("failed".into(), Some("invalid_event".into())))
    );
    let bad_index = reason(5).await.expect("bad index name fails");
    assert_eq!(
        bad_index,
        ("failed".into(), Some("invalid_index_name_exception".into()))
    );
    let long_id = reason(6).await.expect("513-byte id fails");
    assert_eq!(long_id.0, "failed");
    assert!(
        matches!(
            long_id.1.as_deref(),
            Some("action_request_validation_exception" | "illegal_argument_exception")
        ),
        "{long_id:?}"
    );
    assert_eq!(reason(7).await, None, "ok3 acked");
    for doc in ["ok1", "ok2", "ok3"] {
        assert!(engine.get(i, doc).await.is_some(), "{doc} indexed");
    }
    // The error text is kept, bounded.
    let c = s.client().await;
    let err: String = c
        .query_one(
            "SELECT error FROM outbox_event_states WHERE id = $1",
            &[&ids[1]],
        )
        .await
        .unwrap()
        .get(0);
    assert!(err.contains("n") && err.len() <= 1000, "{err}");
}

/// No trigger at all: the poll alone delivers every event within about one poll interval.
#[tokio::test]
async fn poll_only_delivers_every_event() {
    let s = TestSchema::new("poll", NotifyMode::Off).await;
    let index = harness::unique("poll");
    let engine = Engine::new();
    let w =
        InProcessWorker::start(s.config(&[("notify_mode", "off"), ("poll_interval_seconds", "1")]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..3 {
        let rows: Vec<(String, serde_json::Value)> = (0..20)
            .map(|n| (format!("r{round}-{n}"), json!({"n": n})))
            .collect();
        for (doc, payload) in &rows {
            s.insert(&[NewEvent::index(
                index.as_str(),
                doc.as_str(),
                payload.clone(),
            )])
            .await;
        }
        // Poll interval 1 s with ±20 % jitter: all delivered well within a few intervals.
        s.wait_drained(Duration::from_secs(5)).await;
    }
    w.stop().await;
    assert_eq!(engine.count(&index).await, 60);
}

/// The LISTEN connection killed with pg_terminate_backend: the worker reconnects, catches up
/// on what was committed meanwhile, and loses nothing. The poll is 60 s, so only the
/// reconnect's catch-up drain (or a notification) can deliver within the test's bound.
#[tokio::test]
async fn listen_connection_killed_reconnects_and_catches_up() {
    let s = TestSchema::new("listen", NotifyMode::Adaptive).await;
    let index = harness::unique("listen");
    let engine = Engine::new();
    let cfg = s.config(&[("poll_interval_seconds", "60")]);
    let worker_id = cfg.worker_id.clone();
    let w = InProcessWorker::start(cfg);
    let admin = harness::connect(&harness::pg_base_url()).await;
    let app = format!("outbox-worker listen {worker_id}");
    let listen_pid = || async {
        admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, i32>(0))
    };
    let start = Instant::now();
    let first = loop {
        if let Some(pid) = listen_pid().await {
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // One event through the notification path first.
    s.insert(&[NewEvent::index(index.as_str(), "before", json!({"n": 0}))])
        .await;
    s.wait_drained(Duration::from_secs(10)).await;
    // Let the idle follow-up checks run out, so only the reconnect can find what follows.
    tokio::time::sleep(
        outbox_worker::pipeline::IDLE_FOLLOW_UPS
            .iter()
            .max()
            .copied()
            .unwrap()
            * 2,
    )
    .await;

    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .await
        .unwrap();
    // Committed while no one listens: these notifications are lost for good.
    for n in 0..10 {
        s.insert(&[NewEvent::index(
            index.as_str(),
            format!("during-{n}"),
            json!({"n": n}),
        )])
        .await;
    }
    s.wait_drained(Duration::from_secs(30)).await;
    let second = listen_pid().await.expect("listener reconnected");
    assert_ne!(first, second, "a new LISTEN connection");
    // And notifications work again on the new connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.insert(&[NewEvent::index(index.as_str(), "after", json!({"n": 11}))])
        .await;
    s.wait_drained(Duration::from_secs(10)).await;
    w.stop().await;
    assert_eq!(engine.count(&index).await, 12);
}

/// A late ack from a worker whose lease was reclaimed changes no row, even after another
/// worker claimed the same event again.
#[tokio::test]
async fn late_ack_after_reclaim_changes_nothing() {
    let s = TestSchema::new("late", NotifyMode::Off).await;
    let cfg = s.config(&[("max_attempts", "5")]);
    let pool = outbox_worker::db::pool(&cfg, 4).unwrap();
    s.insert(&[
        NewEvent::index("i", "a", json!({})),
        NewEvent::index("i", "b", json!({})),
    ])
    .await;
    let a = claim::claim(
        &pool,
        &cfg.projection,
        10,
        "worker-a",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|e| e.attempts == 1));

    // Worker A stalls; its lease expires and the reclaimer returns the events.
    let c = s.client().await;
    // Expire every lease: the pieces of the log and the exceptions.
    c.batch_execute(EXPIRE_LEASES).await.unwrap();
    let r = reclaim::reclaim_once(&pool, &cfg).await.unwrap();
    assert_eq!(r.to_pending.len(), 2);
    c.execute("UPDATE outbox_exceptions SET next_retry_at = now()", &[])
        .await
        .unwrap();

    // A's late ack: no row changes. A log event's ack writes nothing of its own; the
    // completion of its piece finds the piece gone (the reclaim took it).
    assert!(a.iter().all(|e| e.piece.is_some()), "claimed from the log");
    let o = outcome::Outcomes {
        ack: a.iter().map(|e| e.held()).collect(),
        ..Default::default()
    };
    outcome::apply(&pool, "worker-a", cfg.max_attempts, &cfg.projection, &o)
        .await
        .unwrap();
    let mut pieces: Vec<i64> = a.iter().filter_map(|e| e.piece).collect();
    pieces.dedup();
    let completed = outcome::complete_pieces(&pool, "worker-a", &pieces)
        .await
        .unwrap();
    assert!(completed.is_empty(), "the piece was reclaimed: late");
    assert_eq!(s.count("pending").await, 2);

    // Worker B claims them (attempt 2); A's late fail with attempt 1 changes nothing either,
    // nor does a write naming B with A's stale attempt.
    let b = claim::claim(
        &pool,
        &cfg.projection,
        10,
        "worker-b",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(b.iter().all(|e| e.attempts == 2));
    let late_fail = outcome::Outcomes {
        fail: a
            .iter()
            .map(|e| outcome::Fail {
                event: e.held(),
                reason: "x".into(),
                error: "x".into(),
            })
            .collect(),
        ..Default::default()
    };
    let applied = outcome::apply(
        &pool,
        "worker-a",
        cfg.max_attempts,
        &cfg.projection,
        &late_fail,
    )
    .await
    .unwrap();
    assert_eq!(applied.late.len(), 2);
    let applied = outcome::apply(
        &pool,
        "worker-b",
        cfg.max_attempts,
        &cfg.projection,
        &late_fail,
    )
    .await
    .unwrap();
    assert_eq!(applied.late.len(), 2, "right owner, stale piece: fenced");
    assert_eq!(s.count("processing").await, 2);
    // B's own ack works.
    assert!(b.iter().all(|e| e.piece.is_none()), "claimed as exceptions");
    let ok = outcome::Outcomes {
        ack: b.iter().map(|e| e.held()).collect(),
        ..Default::default()
    };
    let applied = outcome::apply(&pool, "worker-b", cfg.max_attempts, &cfg.projection, &ok)
        .await
        .unwrap();
    assert_eq!(applied.acked.len(), 2);
    assert_eq!(s.total().await, 0);
}

/// Pool connections plan each claim and outcome for its own arrays (a cached generic plan
/// made acks quadratic in the worker's leases), commit without waiting for the WAL flush,
/// and keep the URL's own `options`.
#[tokio::test]
async fn pool_connections_session_options_keep_url_options() {
    let s = TestSchema::new("plans", NotifyMode::Off).await;
    let cfg = s.config(&[]);
    let pool = outbox_worker::db::pool(&cfg, 1).unwrap();
    let c = pool.get().await.unwrap();
    let mode: String = c
        .query_one("SHOW plan_cache_mode", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "force_custom_plan");
    let sync: String = c
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sync, "off");
    let jit: String = c.query_one("SHOW jit", &[]).await.unwrap().get(0);
    assert_eq!(jit, "off");
    let path: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert!(
        path.contains(&s.name),
        "search_path {path} lost the schema {}",
        s.name
    );
}

/// A poison event whose claims keep expiring ends `failed` / `lease_expired` at the limit.
#[tokio::test]
async fn repeated_reclaims_end_in_lease_expired() {
    let s = TestSchema::new("poison", NotifyMode::Off).await;
    let cfg = s.config(&[("max_attempts", "3")]);
    let pool = outbox_worker::db::pool(&cfg, 2).unwrap();
    let ids = s.insert(&[NewEvent::index("i", "p", json!({}))]).await;
    let c = s.client().await;
    for attempt in 1..=3 {
        c.execute("UPDATE outbox_exceptions SET next_retry_at = now() WHERE status = 'pending' AND next_retry_at IS NOT NULL", &[])
            .await
            .unwrap();
        let got = claim::claim(
            &pool,
            &cfg.projection,
            10,
            "crashy",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt} claims it");
        assert_eq!(got[0].attempts, attempt);
        c.batch_execute(EXPIRE_LEASES).await.unwrap();
        let r = reclaim::reclaim_once(&pool, &cfg).await.unwrap();
        if attempt < 3 {
            assert_eq!(r.to_pending, ids);
        } else {
            assert_eq!(r.to_failed, ids);
        }
    }
    assert_eq!(
        s.state(ids[0]).await,
        Some(("failed".into(), Some("lease_expired".into())))
    );
}

/// An event whose own retryable failures use up OUTBOX_MAX_ATTEMPTS ends `failed` /
/// `max_attempts_exceeded`, keeping the last error; a deferral at the same attempt does not.
#[tokio::test]
async fn counted_retries_end_in_max_attempts_exceeded() {
    let s = TestSchema::new("exhaust", NotifyMode::Off).await;
    let cfg = s.config(&[("max_attempts", "1")]);
    let pool = outbox_worker::db::pool(&cfg, 2).unwrap();
    let c = s.client().await;
    let ids = contract::insert_returning_ids(
        &c,
        &[
            NewEvent::index("i", "a", json!({})),
            NewEvent::index("i", "b", json!({})),
        ],
    )
    .await
    .unwrap();
    let got = claim::claim(&pool, &cfg.projection, 10, "w", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    let retry = |e: &ClaimedEvent, counted: bool| outcome::Retry {
        event: e.held(),
        delay_seconds: 0.0,
        reason: ErrorReason::ServerError,
        error: "server_error: boom".into(),
        counted,
    };
    let o = outcome::Outcomes {
        retry: vec![retry(&got[0], true), retry(&got[1], false)],
        ..Default::default()
    };
    let applied = outcome::apply(&pool, "w", cfg.max_attempts, &cfg.projection, &o)
        .await
        .unwrap();
    assert_eq!(
        applied.failed,
        vec![(ids[0], ErrorReason::MaxAttemptsExceeded)]
    );
    assert_eq!(applied.retried, vec![(ids[1], ErrorReason::ServerError)]);
    let error: String = c
        .query_one(
            "SELECT error FROM outbox_event_states WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(error, "server_error: boom", "the last error is kept");
}

/// One backoff for every retry path: events at attempt 1 after 10 deferrals wait out the
/// same bound, base x 2^10, whether the reclaimer returns them (their lease expired) or the
/// engine answered 429 for them. A reclaim by attempts alone waited at most base.
#[tokio::test]
async fn reclaimed_and_429d_events_with_one_history_back_off_alike() {
    use outbox_worker::{
        backoff::EventBackoff,
        bulk::classify::ItemOutcome,
        pipeline::outcome::{decide, writes},
    };
    let s = TestSchema::new("backoff", NotifyMode::Off).await;
    let cfg = s.config(&[
        ("base_backoff_seconds", "1"),
        ("max_backoff_seconds", "86400"),
    ]);
    let pool = outbox_worker::db::pool(&cfg, 2).unwrap();
    let c = s.client().await;
    // Raw SQL: `deferrals` is the worker's column, which no producer sets; events with a
    // history of their own are exceptions (docs/design.md §6).
    c.execute(
        "INSERT INTO outbox_exceptions (id, projection, index_name, doc_id, op, payload, deferrals, created_at)
         SELECT g, 'search_index_to_elastic', 'i', g::text, 'index', '{}', 10, now()
         FROM generate_series(1, 100) g",
        &[],
    )
    .await
    .unwrap();
    let claimed = claim::claim(&pool, &cfg.projection, 100, "w", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 100);
    assert!(claimed.iter().all(|e| e.attempts == 1 && e.deferrals == 10));
    let (stuck, refused) = claimed.split_at(50);

    let stuck_ids: Vec<i64> = stuck.iter().map(|e| e.id).collect();
    c.execute(
        "UPDATE outbox_exceptions SET lease_expires_at = now() - interval '1 second'
         WHERE id = ANY($1)",
        &[&stuck_ids],
    )
    .await
    .unwrap();
    let r = reclaim::reclaim_once(&pool, &cfg).await.unwrap();
    assert_eq!(r.to_pending.len(), 50);

    let backoff = EventBackoff::new(&cfg);
    let decided: Vec<_> = refused
        .iter()
        .map(|e| {
            let item = ItemOutcome::Defer {
                reason: "too_many_requests".into(),
                error: "429".into(),
            };
            (e.clone(), decide(item, e, &backoff, &mut rand::rng()))
        })
        .collect();
    let applied = outcome::apply(
        &pool,
        "w",
        cfg.max_attempts,
        &cfg.projection,
        &writes(&decided, true),
    )
    .await
    .unwrap();
    assert_eq!(applied.retried.len(), 50);

    let ceiling = backoff.ceiling(1, 10).as_secs_f64();
    assert_eq!(ceiling, 1024.0);
    for (path, ids) in [
        ("reclaim", stuck_ids),
        ("429", refused.iter().map(|e| e.id).collect()),
    ] {
        // Seconds still to wait: the delay set, less the moments since.
        let left: Vec<f64> = c
            .query(
                "SELECT extract(epoch FROM next_retry_at - now())::float8 FROM outbox_event_states
                 WHERE id = ANY($1) AND status = 'pending'",
                &[&ids],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left.len(), 50, "{path}");
        let max = left.iter().copied().fold(0.0, f64::max);
        assert!(max <= ceiling, "{path}: {max} s is past the bound");
        // 50 uniform draws in (0, 1024] all below 10 s: odds of 1 in 10^100.
        assert!(max > 10.0, "{path}: the deferrals did not grow the delay");
    }
}

/// Wait until the worker has marked itself waiting (it went idle).
async fn wait_for_mark(s: &TestSchema) {
    let c = s.client().await;
    let start = Instant::now();
    loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM outbox_waiting_workers WHERE expires_at > now()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "worker never went idle"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The adaptive trigger's race: a producer inserted while nobody waited (so its commit does
/// not notify) and commits just after the worker went idle. The follow-up checks find it
/// well before the (long) poll.
#[tokio::test]
async fn adaptive_race_commit_just_after_idle_is_found_by_follow_ups() {
    let s = TestSchema::new("race_follow", NotifyMode::Adaptive).await;
    let index = harness::unique("race_follow");
    let mut producer = s.client().await;
    let tx = producer.transaction().await.unwrap();
    contract::insert(&tx, &[NewEvent::index(&index, "x", json!({}))])
        .await
        .unwrap();
    // Only now does a worker start (poll every 60 s) and go idle, marked waiting.
    let w = InProcessWorker::start(s.config(&[("poll_interval_seconds", "60")]));
    wait_for_mark(&s).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.commit().await.unwrap();
    // The follow-ups run up to 1 s after idle; the poll is 60 s away.
    s.wait_drained(Duration::from_secs(5)).await;
    w.stop().await;
    assert!(Engine::new().get(&index, "x").await.is_some());
}

/// The same race, committed after the follow-ups ran out: the poll delivers it within about
/// one interval; nothing notified it.
#[tokio::test]
async fn adaptive_race_commit_after_follow_ups_is_found_by_the_poll() {
    let s = TestSchema::new("race_poll", NotifyMode::Adaptive).await;
    let index = harness::unique("race_poll");
    let mut producer = s.client().await;
    let tx = producer.transaction().await.unwrap();
    contract::insert(&tx, &[NewEvent::index(&index, "y", json!({}))])
        .await
        .unwrap();
    // A poll far enough away that a loaded machine cannot blur "after the follow-ups" with
    // "at the poll" (the poll comes 8-12 s after idle; the commit ~2.5 s after it).
    let poll = 10.0;
    let cfg = s.config(&[("poll_interval_seconds", "10")]);
    let listen_app = format!("outbox-worker listen {}", cfg.worker_id);
    let w = InProcessWorker::start(cfg);
    wait_for_mark(&s).await;
    // The LISTEN connection's first connect wakes the worker for a catch-up, which ends in
    // another idle transition with its own follow-ups: wait for it, then past its last
    // follow-up (1 s).
    let admin = harness::connect(&harness::pg_base_url()).await;
    let start = Instant::now();
    while admin
        .query_opt(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1",
            &[&listen_app],
        )
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tx.commit().await.unwrap();
    let committed = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.count("pending").await,
        1,
        "no notification: the insert ran while nobody waited"
    );
    // Delivered by the poll: within one interval (+20 % jitter) of the commit, plus slack.
    s.wait_drained(Duration::from_secs_f64(poll * 1.2 + 2.0))
        .await;
    let waited = committed.elapsed();
    w.stop().await;
    assert!(
        Engine::new().get(&index, "y").await.is_some(),
        "delivered after {waited:?}"
    );
}

/// An outage is not the events' fault: with OUTBOX_MAX_ATTEMPTS=1 and the engine refusing
/// connections, nothing fails; the retries are deferrals that grow the backoff; once the
/// engine is back, everything is indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_defers_and_never_fails_events() {
    let s = TestSchema::new("defer", NotifyMode::Adaptive).await;
    let index = harness::unique("defer");
    let proxy = harness::FaultProxy::start();
    proxy.set(json!({"kind": "refuse"})).await;
    let w = InProcessWorker::start(s.config(&[
        ("elasticsearch_url", &proxy.url),
        ("max_attempts", "1"),
        ("request_timeout_seconds", "1"),
        ("lease_seconds", "5"),
    ]));
    let i = index.as_str();
    s.insert(&[
        NewEvent::index(i, "a", json!({"n": 1})),
        NewEvent::index(i, "b", json!({"n": 2})),
    ])
    .await;
    let c = s.client().await;
    let start = Instant::now();
    loop {
        let deferred: i32 = c
            .query_one(
                "SELECT coalesce(min(deferrals), 0) FROM outbox_event_states",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if deferred >= 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no deferrals recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.count("failed").await, 0, "an outage never fails an event");
    let attempts: i32 = c
        .query_one("SELECT max(attempts) FROM outbox_event_states", &[])
        .await
        .unwrap()
        .get(0);
    assert!(attempts <= 1, "deferrals refund the attempt ({attempts})");
    proxy.clear().await;
    s.wait_drained(Duration::from_secs(30)).await;
    w.stop().await;
    assert_eq!(s.total().await, 0);
    assert_eq!(Engine::new().count(i).await, 2);
}

/// The prepared forms of the contract's insert write what the plain ones write, ids in the
/// order of the events, and may be reused on their connection.
#[tokio::test]
async fn prepared_contract_inserts_write_what_the_plain_ones_write() {
    let s = TestSchema::new("prepared", NotifyMode::Off).await;
    let c = s.client().await;
    let with_ids = contract::prepare_insert_returning_ids(&c).await.unwrap();
    let plain = contract::prepare_insert(&c).await.unwrap();
    for round in 0..2 {
        let events = [
            NewEvent::index("i", format!("a{round}"), json!({"n": round})).version(7),
            NewEvent::delete("i", format!("b{round}")).projection("other"),
        ];
        let ids = contract::insert_returning_ids_prepared(&c, &with_ids, &events)
            .await
            .unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids[0] < ids[1], "ids follow the events' order: {ids:?}");
        let rows = c
            .query(
                "SELECT doc_id, op, payload, projection, doc_version FROM outbox_event_states
                 WHERE id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .unwrap();
        type Row = (
            String,
            String,
            Option<serde_json::Value>,
            String,
            Option<i64>,
        );
        let got: Vec<Row> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    format!("a{round}"),
                    "index".into(),
                    Some(json!({"n": round})),
                    contract::DEFAULT_PROJECTION.into(),
                    Some(7)
                ),
                (
                    format!("b{round}"),
                    "delete".into(),
                    None,
                    "other".into(),
                    None
                ),
            ]
        );
        let n = contract::insert_prepared(&c, &plain, &events)
            .await
            .unwrap();
        assert_eq!(n, 2);
    }
    assert_eq!(s.count("pending").await, 8);
}
