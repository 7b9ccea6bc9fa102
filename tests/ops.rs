//! The operator surface: stats, audited replay, the metrics endpoint, health and readiness,
//! and secrets kept out of logs — against the real PostgreSQL and engine, through the binary.

use outbox_harness as harness;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use outbox_worker::{
    config::NotifyMode,
    contract::{self, NewEvent},
};
use serde_json::{Value, json};

use harness::{Engine, TestSchema};

fn cli(s: &TestSchema, args: &[&str]) -> (i32, String, String) {
    let out = harness::worker_command()
        .args(args)
        .env("OUTBOX_DATABASE_URL", &s.url)
        .env("OUTBOX_ELASTICSEARCH_URL", harness::engine_url())
        .env("USER", "ops-test")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A schema with failed events of two reasons and one pending event, made by the real
/// worker against the real engine (a mapping conflict and invalid events).
async fn schema_with_failures(engine: &Engine) -> (TestSchema, String, Vec<i64>) {
    let s = TestSchema::new("ops", NotifyMode::Adaptive).await;
    let index = harness::unique("ops");
    engine.put_index_with_long_n(&index).await;
    let i = index.as_str();
    let ids = s
        .insert(&[
            NewEvent::index(i, "c1", json!({"n": "x"})),
            NewEvent::index(i, "c2", json!({"n": "y"})),
            NewEvent::index(i, "inv", json!("a string")),
            NewEvent::index(i, "ok", json!({"n": 1})),
        ])
        .await;
    let w = harness::InProcessWorker::start(s.config(&[]));
    s.wait_drained(Duration::from_secs(30)).await;
    w.stop().await;
    assert_eq!(s.count("failed").await, 3);
    (s, index, ids)
}

#[tokio::test]
async fn stats_group_failures_and_replay_is_audited() {
    let engine = Engine::new();
    let (s, index, ids) = schema_with_failures(&engine).await;

    // stats: text and JSON.
    let (code, text, err) = cli(&s, &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("failed by error_reason: 3"), "{text}");
    assert!(text.contains("invalid_event"), "{text}");
    let (_, js, _) = cli(&s, &["stats", "--json"]);
    let v: Value = serde_json::from_str(&js).unwrap();
    let reasons = harness::failed_by_reason(&v);
    assert!(
        reasons.iter().any(|(r, n)| (r == "mapper_parsing_exception"
            || r == "document_parsing_exception")
            && *n == 2),
        "{reasons:?}"
    );
    assert_eq!(reasons.get("invalid_event"), Some(&1));
    assert_eq!(v["stuck_total"], 0);

    // A replay without a reason or without a filter is refused; nothing moves.
    let (code, _, err) = cli(&s, &["replay", "--error-reason", "invalid_event"]);
    assert_ne!(code, 0);
    assert!(err.contains("--reason"), "{err}");
    let (code, _, err) = cli(&s, &["replay", "--reason", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("--all"), "{err}");
    assert_eq!(s.count("failed").await, 3);
    // --index names a filter: every failure here is bound for `index`, none for another.
    for (idx, want) in [(index.as_str(), 3), ("no_such_index", 0)] {
        let (code, out, err) = cli(&s, &["replay", "--index", idx, "--dry-run", "--json"]);
        assert_eq!(code, 0, "{err}");
        let d: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(d["matched"], want, "--index {idx}: {out}");
    }

    // Dry run: exactly what would move, and nothing changes.
    let conflict_reason = reasons
        .iter()
        .find(|(r, _)| r.as_str() != "invalid_event")
        .unwrap()
        .0
        .clone();
    let (code, out, err) = cli(
        &s,
        &[
            "replay",
            "--error-reason",
            &conflict_reason,
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["matched"], 2);
    assert_eq!(d["sample_ids"], json!([ids[0], ids[1]]));
    assert_eq!(s.count("failed").await, 3, "dry run changed nothing");
    let audit_rows: i64 = s
        .client()
        .await
        .query_one("SELECT count(*) FROM outbox_replay_audit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(audit_rows, 0);

    // Fix the cause (a new index whose mapping accepts the data is the usual fix; here the
    // simplest real fix: move the events to an index without the conflicting mapping).
    let fixed = harness::unique("ops_fixed");
    s.client()
        .await
        .execute(
            "UPDATE outbox_exceptions SET index_name = $1 WHERE id = ANY($2)",
            &[&fixed, &vec![ids[0], ids[1]]],
        )
        .await
        .unwrap();
    let (code, out, err) = cli(
        &s,
        &[
            "replay",
            "--error-reason",
            &conflict_reason,
            "--reason",
            "mapping fixed (ticket 42)",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["count"], 2);
    assert_eq!(r["ids"], json!([ids[0], ids[1]]));
    let c = s.client().await;
    let rows = c
        .query("SELECT status, attempts, replay_count, error_reason FROM outbox_event_states WHERE id = ANY($1) ORDER BY id", &[&vec![ids[0], ids[1]]])
        .await
        .unwrap();
    for row in rows {
        assert_eq!(row.get::<_, &str>(0), "pending");
        assert_eq!(row.get::<_, i32>(1), 0, "attempts reset");
        assert_eq!(row.get::<_, i32>(2), 1, "replay_count + 1");
        assert_eq!(row.get::<_, Option<&str>>(3), None);
    }
    // The invalid event was not touched.
    assert_eq!(
        s.state(ids[2]).await,
        Some(("failed".into(), Some("invalid_event".into())))
    );

    // The same filter again replays nothing.
    let (code, out, _) = cli(
        &s,
        &[
            "replay",
            "--error-reason",
            &conflict_reason,
            "--reason",
            "again",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["count"], 0);

    // The audit trail names who, why, which filter, how many, which ids.
    let (code, out, _) = cli(&s, &["audit", "--json"]);
    assert_eq!(code, 0);
    let audit: Value = serde_json::from_str(&out).unwrap();
    let first = &audit.as_array().unwrap()[1];
    assert_eq!(first["actor"], "ops-test");
    assert_eq!(first["reason"], "mapping fixed (ticket 42)");
    assert_eq!(first["filter"]["error_reason"], conflict_reason.as_str());
    assert_eq!(first["event_count"], 2);
    assert_eq!(first["event_ids"], json!([ids[0], ids[1]]));

    // The replayed events index once a worker runs; the rest stays failed.
    let w = harness::InProcessWorker::start(s.config(&[]));
    s.wait_drained(Duration::from_secs(30)).await;
    w.stop().await;
    assert_eq!(engine.count(&fixed).await, 2);
    assert_eq!(s.count("failed").await, 1);
    let _ = index;

    // Replaying by id never touches a non-failed event.
    let pending = s.insert(&[NewEvent::index("i", "p", json!({}))]).await;
    let (code, out, _) = cli(
        &s,
        &[
            "replay",
            "--id",
            &pending[0].to_string(),
            "--reason",
            "try",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["count"], 0);
    assert_eq!(s.state(pending[0]).await.unwrap().0, "pending");
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// /metrics carries the runbook's six metrics (and the rest), /healthz and /readyz answer;
/// no secret reaches the logs or the metrics, even with credentials configured.
#[tokio::test]
async fn metrics_health_and_no_secrets_in_logs() {
    let engine = Engine::new();
    let (s, _index, _) = schema_with_failures(&engine).await;
    let port = harness::free_port();
    let addr = format!("127.0.0.1:{port}");
    // Credentials in the URL and for the engine: the engine ignores basic auth when security is off.
    let child = harness::worker_command()
        .arg("run")
        .env("OUTBOX_DATABASE_URL", &s.url)
        .env("OUTBOX_ELASTICSEARCH_URL", harness::engine_url())
        .env("OUTBOX_ELASTICSEARCH_USERNAME", "elastic")
        .env("OUTBOX_ELASTICSEARCH_PASSWORD", "es-pass-s3cret")
        .env("OUTBOX_METRICS_ADDR", &addr)
        .env("OUTBOX_LOG_LEVEL", "debug")
        .env("OUTBOX_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let ready = loop {
        let (code, body) = get(&format!("http://{addr}/readyz")).await;
        if code == 200 {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never ready: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.trim(), "ready");
    assert_eq!(get(&format!("http://{addr}/healthz")).await.0, 200);
    // Work through it so counters and histograms exist; wait for one gauge sample.
    s.insert(&[NewEvent::index("ops_metrics", "m1", json!({"n": 1}))])
        .await;
    s.wait_drained(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let (_, metrics) = get(&format!("http://{addr}/metrics")).await;
    for name in [
        "outbox_lag_events",
        "outbox_oldest_age_seconds",
        "outbox_inflight_events",
        "outbox_stuck_processing_events",
        "outbox_failed_events 3",
        "outbox_acked_total",
        "outbox_bulk_duration_seconds_bucket",
        "outbox_end_to_end_seconds_bucket",
        "outbox_wakes_total",
        "outbox_listen_connected 1",
        "outbox_claimed_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    // The event went through every stage of the latency breakdown, timed in fine buckets.
    for stage in ["wait", "claim", "encode", "queue", "bulk", "ack"] {
        let count = format!("outbox_stage_seconds_count{{stage=\"{stage}\"}}");
        assert!(
            harness::prom::sum(&metrics, &count) >= 1.0,
            "{count} missing or 0:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(r#"outbox_stage_seconds_bucket{stage="bulk",le="0.00075"}"#),
        "stage buckets missing:\n{metrics}"
    );
    assert!(!metrics.contains("s3cret"));
    // Graceful stop: SIGTERM, exit 0.
    let out = harness::terminate_and_collect(child).await;
    assert!(out.0.success(), "exit status {:?}", out.0);
    assert!(out.1.contains("worker stopped"), "{}", out.1);
    assert!(!out.1.contains("s3cret"), "a secret reached the logs");
    assert!(
        !out.1.contains(":postgres@"),
        "the database password reached the logs"
    );
    // Every log line is JSON.
    for line in out.1.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

/// The gauges stay cheap on a large table: exact below the limit, the planner's estimate
/// above it (no full count of a huge failed pile every few seconds).
#[tokio::test]
async fn gauges_are_exact_when_small_and_estimated_when_huge() {
    use outbox_worker::sampler::{EXACT_COUNT_LIMIT, sample};
    let s = TestSchema::new("gauges", NotifyMode::Off).await;
    let cfg = s.config(&[]);
    let pool = outbox_worker::db::pool(&cfg, 2).unwrap();
    let c = s.client().await;
    let events: Vec<NewEvent> = (1..=7)
        .map(|g| NewEvent::index("i", g.to_string(), json!({})))
        .collect();
    contract::insert(&c, &events).await.unwrap();
    let g = sample(&pool, &cfg).await.unwrap();
    assert_eq!((g.lag_events, g.failed_events, g.stuck_events), (7, 0, 0));
    assert!(g.oldest_age_seconds >= 0.0 && g.oldest_age_seconds < 60.0);

    let huge = EXACT_COUNT_LIMIT + EXACT_COUNT_LIMIT / 2;
    // A failed pile made directly: the columns it sets are the worker's, not the producer's,
    // and failed events live in outbox_exceptions (docs/design.md §6).
    c.execute(
        "INSERT INTO outbox_exceptions (id, projection, index_name, doc_id, op, payload, status, error_reason, failed_at, created_at)
         SELECT 1000000 + g, 'search_index_to_elastic', 'i', g::text, 'index', '{}', 'failed', 'mapper_parsing_exception', now(), now()
         FROM generate_series(1, $1::bigint) g",
        &[&huge],
    )
    .await
    .unwrap();
    c.batch_execute("ANALYZE outbox_exceptions").await.unwrap();
    let g = sample(&pool, &cfg).await.unwrap();
    assert_eq!(g.lag_events, 7, "small counts stay exact");
    let error = (g.failed_events - huge).abs() as f64 / huge as f64;
    assert!(
        g.failed_events > EXACT_COUNT_LIMIT && error < 0.1,
        "estimate {} for {huge}",
        g.failed_events
    );
}

/// The gauge's value on a page, polling the worker until `ok` holds (samples come every
/// 5 s); the last value seen if it never does within `timeout`.
async fn gauge_until(
    w: &harness::WorkerProcess,
    series: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let start = Instant::now();
    loop {
        let v = w.metric(series).await;
        if ok(v) || start.elapsed() > timeout {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What holds back cleanup shows on /metrics: a REPEATABLE READ transaction that read an
/// unrelated table, held while the worker drains, is the backend kind's oldest xmin, and its
/// age grows with it; the outbox's tables (and only those) have dead-tuple series; claims
/// are timed in their own buckets.
#[tokio::test]
async fn a_held_snapshot_shows_as_the_oldest_xmin_and_dead_tuples_are_sampled() {
    let engine = Engine::new();
    let s = TestSchema::new("horizon", NotifyMode::Adaptive).await;
    let setup = s.client().await;
    setup
        .batch_execute("CREATE TABLE report_data (n int); INSERT INTO report_data VALUES (1)")
        .await
        .unwrap();

    // The report: a snapshot taken by reading another table, then held. Its xact_start
    // lies between these two instants, which bound its age.
    let report = s.client().await;
    let before_begin = Instant::now();
    report
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM report_data")
        .await
        .unwrap();
    let held_since = Instant::now();

    let mut w = harness::WorkerProcess::spawn(&s.env(), &[]);
    w.wait_ready().await.unwrap();
    let index = harness::unique("ops_horizon");
    let events: Vec<NewEvent> = (0..200)
        .map(|i| NewEvent::index(&index, format!("d{i}"), json!({"n": i})))
        .collect();
    s.insert(&events).await;
    let start = Instant::now();
    while engine.count(&index).await < 200 {
        assert!(start.elapsed() < Duration::from_secs(30), "not drained");
        w.check_running().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A sample lags by up to its interval (5 s) plus the query; 6 s covers both. Other
    // sessions of the shared database may hold older snapshots, so the gauge is bounded
    // below by the report's age, not equal to it.
    const LAG: f64 = 6.0;
    let backend = r#"outbox_db_oldest_xmin_age_seconds{kind="backend"}"#;
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(held_since.elapsed())).await;
    let floor = held_since.elapsed().as_secs_f64() - LAG;
    let first = gauge_until(&w, backend, Duration::from_secs(10), |v| v >= floor).await;
    let report_at_most = before_begin.elapsed().as_secs_f64();
    assert!(
        first > 0.0 && first >= floor,
        "{backend} = {first}, held {floor} + {LAG} s"
    );
    // Held 8 s longer, it is older.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let floor = held_since.elapsed().as_secs_f64() - LAG;
    let second = gauge_until(&w, backend, Duration::from_secs(10), |v| v >= floor).await;
    assert!(
        second >= floor,
        "{backend} = {second}, held {floor} + {LAG} s"
    );
    // Unless something older than the report was the oldest at first (and has ended).
    assert!(
        second > first || first > report_at_most,
        "{backend} did not grow: {first} then {second}"
    );
    // The report's xmin predates the 200 inserts' xids.
    let xids = w
        .metric(r#"outbox_db_oldest_xmin_age_xids{kind="backend"}"#)
        .await;
    assert!(xids >= 1.0, "xid age {xids}");

    let page = w.scrape().await.unwrap();
    for kind in ["backend", "replication_slot", "prepared_transaction"] {
        let series = format!(r#"outbox_db_oldest_xmin_age_seconds{{kind="{kind}"}}"#);
        assert!(page.contains(&series), "{series} missing:\n{page}");
    }
    // Dead tuples: one series per outbox table of the worker's schema, nothing else.
    let tables: Vec<String> = harness::prom::samples(&page)
        .filter_map(|(series, _)| {
            let rest = series.strip_prefix("outbox_db_dead_tuples{table=\"")?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect();
    assert!(
        tables.iter().any(|t| t == "outbox_events"),
        "no dead-tuple series of outbox_events: {tables:?}"
    );
    assert!(
        tables.iter().all(|t| t.starts_with("outbox_")),
        "{tables:?}"
    );
    // Claims timed in the claim's own buckets (the first is 0.25 ms).
    assert!(
        page.contains(r#"outbox_claim_duration_seconds_bucket{le="0.00025"}"#),
        "claim buckets missing:\n{page}"
    );
    assert!(harness::prom::sum(&page, "outbox_claim_duration_seconds_count") >= 1.0);

    report.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        w.stop(Duration::from_secs(15))
            .await
            .unwrap()
            .map(|s| s.success()),
        Some(true)
    );
}
