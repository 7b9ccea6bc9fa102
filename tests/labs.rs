//! The runbook's labs v1–v4, the PostgreSQL faults and the long analytics transactions
//! (issue 12), as automated scenarios with real worker processes, the real PostgreSQL, the
//! real engine, and the fault proxy (or nginx) in between. Each asserts the end state of every event and every document, and prints one
//! line of figures. `LABS_SCALE=full` (make labs) runs them larger than in CI.
//!
//! The scenarios run one at a time (a lock): the PostgreSQL restart would disturb the others.

use outbox_harness as harness;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use outbox_worker::{
    config::NotifyMode,
    contract::{self, NewEvent},
};
use serde_json::{Value, json};

use harness::{BodyLimitProxy, Engine, FaultProxy, TestSchema, WorkerProcess};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

use outbox_harness::labs::{full, report};

/// Worker environment on schema `s`, engine at `engine_url`, with extra settings.
fn worker_env(s: &TestSchema, engine_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = s.env();
    env.retain(|(k, _)| k != "OUTBOX_ELASTICSEARCH_URL");
    env.push(("OUTBOX_ELASTICSEARCH_URL".into(), engine_url.into()));
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Insert `docs` documents at `version` each (payload {"doc": d, "v": version}).
async fn insert_versions(
    c: &tokio_postgres::Client,
    index: &str,
    docs: std::ops::Range<i64>,
    version: i64,
) -> Result<u64, tokio_postgres::Error> {
    let events: Vec<NewEvent> = docs
        .map(|d| {
            NewEvent::index(index, d.to_string(), json!({"doc": d, "v": version})).version(version)
        })
        .collect();
    contract::insert(c, &events).await
}

/// Every document of `0..docs` holds exactly `version` (and its payload).
async fn assert_documents_at(index: &str, docs: i64, version: impl Fn(i64) -> i64) -> usize {
    let all = Engine::new().all(index).await;
    assert_eq!(all.len() as i64, docs, "document count in {index}");
    let mut stale = 0;
    for d in 0..docs {
        let want = version(d);
        let (source, got) = &all[&d.to_string()];
        if *got != want || source != &json!({"doc": d, "v": want}) {
            stale += 1;
        }
    }
    assert_eq!(stale, 0, "stale documents in {index}");
    stale
}

/// The greatest number of claims a single event can see in `outage` when every bulk fails:
/// the engine breaker pauses claims min(0.2 s * 2^n, 2 s) (at least) after each failure.
fn claims_bound(outage: Duration, concurrency: u32) -> i64 {
    let (mut t, mut n) = (0.0, 0);
    while t <= outage.as_secs_f64() {
        t += (0.2 * 2f64.powi(n)).min(2.0);
        n += 1;
    }
    // + the claims already in flight when the outage began, + the first claim.
    (n + concurrency as i32 + 1) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_engine_unavailable_retries_converge_and_the_backlog_drains() {
    let _one = lock().await;
    let s = TestSchema::new("v1", NotifyMode::Adaptive).await;
    let index = harness::unique("v1");
    let proxy = FaultProxy::start();
    let (events, outage, flaps) = if full() {
        (3000i64, Duration::from_secs(25), 6)
    } else {
        (600, Duration::from_secs(10), 3)
    };
    let env = worker_env(
        &s,
        &proxy.url,
        &[
            ("OUTBOX_BASE_BACKOFF_SECONDS", "0.2"),
            ("OUTBOX_MAX_BACKOFF_SECONDS", "2"),
            ("OUTBOX_MAX_ATTEMPTS", "100"),
            ("OUTBOX_REQUEST_TIMEOUT_SECONDS", "2"),
            ("OUTBOX_LEASE_SECONDS", "10"),
            ("OUTBOX_CONCURRENCY", "4"),
            ("OUTBOX_BULK_SIZE", "100"),
        ],
    );
    let w = WorkerProcess::spawn(&env, &[]);
    w.wait_ready().await.unwrap();
    let c = s.client().await;

    // The outage: the engine's port refuses connections while events keep coming.
    proxy.set(json!({"kind": "refuse"})).await;
    let started = Instant::now();
    let batches = 10;
    for b in 0..batches {
        let per = events / batches;
        insert_versions(&c, &index, b * per..(b + 1) * per, 1)
            .await
            .unwrap();
        tokio::time::sleep(outage / (batches as u32 + 1)).await;
    }
    tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
    let during: (i64, i64, i32, i32) = {
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE deferrals > 0),
                        coalesce(max(attempts + deferrals), 0), coalesce(max(attempts), 0)
                 FROM outbox_event_states",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    let retries = w.metric("outbox_retry_scheduled_total").await;
    let bulk_failures = w
        .metric("outbox_bulk_requests_total{result=\"retry_all\"}")
        .await;
    assert_eq!(during.0, 0, "no event failed because of the outage");
    assert!(
        during.1 > 0 && retries > 0.0,
        "retries were scheduled (as deferrals)"
    );
    assert!(
        during.3 <= 1,
        "the outage used up no attempt (max attempts {})",
        during.3
    );
    let bound = claims_bound(outage, 4);
    assert!(
        during.2 as i64 <= bound,
        "an event was tried {} times in {outage:?}; the backoff allows {bound}",
        during.2
    );
    assert!(
        bulk_failures <= (bound * 4) as f64,
        "{bulk_failures} bulk requests in the outage: a hot loop"
    );

    // Flapping: up one second, down one second.
    for _ in 0..flaps {
        proxy.clear().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.set(json!({"kind": "refuse"})).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    proxy.clear().await;
    let recovered = Instant::now();
    s.wait_drained(Duration::from_secs(120)).await;
    let drain = recovered.elapsed();
    assert_eq!(s.count("failed").await, 0, "no failed from the outage");
    assert_eq!(s.total().await, 0);
    assert_documents_at(&index, events, |_| 1).await;
    report(format!(
        "LAB v1 engine-unavailable: events={events} outage={}s flaps={flaps} bulk_failures={bulk_failures} retries_scheduled={retries} max_retries_per_event_in_outage={} (backoff bound {bound}) attempts_used_by_outage={} drained_after_recovery={:.1}s failed=0 lost=0",
        outage.as_secs(),
        during.2,
        during.3,
        drain.as_secs_f64()
    ));
    w.signal("TERM").unwrap();
    assert_eq!(w.wait().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_deterministic_errors_fail_with_reasons_then_replay_after_the_fix() {
    let _one = lock().await;
    let s = TestSchema::new("v2", NotifyMode::Adaptive).await;
    let index = harness::unique("v2");
    let engine = Engine::new();
    engine
        .put_index(
            &index,
            json!({"mappings": {"dynamic": "strict", "properties": {
            "n": {"type": "long"}, "blob": {"type": "text", "index": false}}}}),
        )
        .await;
    // nginx refuses request bodies over 64 KiB, as a reverse proxy in production would.
    let nginx = BodyLimitProxy::start("64k");
    let scale = if full() { 10 } else { 1 };
    let i = index.as_str();
    let c = s.client().await;
    let mut events: Vec<NewEvent> = Vec::new();
    for k in 0..20 * scale {
        events.push(NewEvent::index(i, format!("good-{k}"), json!({"n": k})));
    }
    for k in 0..5 * scale {
        events.push(NewEvent::index(
            i,
            format!("strict-{k}"),
            json!({"n": k, "color": "red"}),
        ));
    }
    for k in 0..3 * scale {
        events.push(NewEvent::index(
            i,
            format!("type-{k}"),
            json!({"n": "not a number"}),
        ));
    }
    for k in 0..2 {
        events.push(NewEvent::index(
            i,
            format!("huge-{k}"),
            json!({"n": 1, "blob": "x".repeat(100 * 1024)}),
        ));
    }
    contract::insert(&c, &events).await.unwrap();
    // Raw SQL: a payload that is not an object and an unknown op break the contract on purpose.
    c.execute(
        "INSERT INTO outbox_events (index_name, doc_id, op, payload) \
         VALUES ($1, 'array', 'index', '[1, 2]'), ($1, 'op', 'upsert', '{\"n\": 1}')",
        &[&i],
    )
    .await
    .unwrap();
    // Plain bodies: nginx's limit counts the bytes on the wire, and gzip shrinks the 100 KiB
    // blobs below it.
    let env = worker_env(
        &s,
        &nginx.url,
        &[
            ("OUTBOX_BULK_SIZE", "50"),
            ("OUTBOX_BULK_COMPRESSION", "none"),
        ],
    );
    let w = WorkerProcess::spawn(&env, &[]);
    s.wait_drained(Duration::from_secs(60)).await;

    // stats groups them by reason.
    let out = harness::worker_command()
        .args(["stats", "--json"])
        .envs(env.clone())
        .output()
        .unwrap();
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_reason = harness::failed_by_reason(&stats);
    assert_eq!(
        by_reason.get("strict_dynamic_mapping_exception"),
        Some(&(5 * scale))
    );
    let parsing = by_reason
        .get("mapper_parsing_exception")
        .or(by_reason.get("document_parsing_exception"));
    assert_eq!(parsing, Some(&(3 * scale)));
    assert_eq!(by_reason.get("document_too_large"), Some(&2));
    assert_eq!(by_reason.get("invalid_event"), Some(&2));
    assert_eq!(engine.count(i).await, 20 * scale, "the neighbours indexed");

    // Fix the cause: the mapping learns `color`. Dry run, then replay, audited.
    assert_eq!(
        engine
            .put_mapping(i, json!({"properties": {"color": {"type": "keyword"}}}))
            .await,
        200
    );
    let cli = |args: &[&str]| {
        let out = harness::worker_command()
            .args(args)
            .envs(env.clone())
            .env("USER", "lab-v2")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let dry = cli(&[
        "replay",
        "--error-reason",
        "strict_dynamic_mapping_exception",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["matched"], 5 * scale);
    assert_eq!(
        s.count("failed").await,
        12 + 5 * (scale - 1) + 3 * (scale - 1),
        "the dry run changed nothing"
    );
    let done = cli(&[
        "replay",
        "--error-reason",
        "strict_dynamic_mapping_exception",
        "--reason",
        "mapping gained color",
        "--json",
    ]);
    assert_eq!(done["count"], 5 * scale);
    s.wait_drained(Duration::from_secs(60)).await;
    assert_eq!(
        engine.count(i).await,
        25 * scale,
        "replayed events indexed after the fix"
    );
    let audit = cli(&["audit", "--json"]);
    assert_eq!(audit[0]["actor"], "lab-v2");
    assert_eq!(audit[0]["event_count"], 5 * scale);
    let still_failed = s.count("failed").await;
    assert_eq!(still_failed, 3 * scale + 2 + 2);
    report(format!(
        "LAB v2 deterministic-errors: events={} failed_by_reason={by_reason:?} replayed={} indexed_after_fix={} still_failed={still_failed}",
        events.len() + 2,
        done["count"],
        engine.count(i).await
    ));
    w.signal("TERM").unwrap();
    assert_eq!(w.wait().await, Some(0));
}

/// Wait until `n` events are processing (claimed).
async fn wait_processing(s: &TestSchema, n: i64) {
    let start = Instant::now();
    while s.count("processing").await < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "events were never claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_stuck_kill_and_freeze_are_reclaimed_and_late_acks_change_nothing() {
    let _one = lock().await;
    let docs = if full() { 200 } else { 50 };
    let lease = [
        ("OUTBOX_LEASE_SECONDS", "4"),
        ("OUTBOX_REQUEST_TIMEOUT_SECONDS", "3"),
        ("OUTBOX_RECLAIM_INTERVAL_SECONDS", "0.5"),
        ("OUTBOX_BASE_BACKOFF_SECONDS", "0.1"),
        ("OUTBOX_MAX_BACKOFF_SECONDS", "0.5"),
    ];

    // (a) SIGKILL mid-batch: the engine holds A's bulk; A dies holding the lease.
    let s = TestSchema::new("v3kill", NotifyMode::Adaptive).await;
    let index = harness::unique("v3kill");
    let proxy = FaultProxy::start();
    proxy
        .set(json!({"kind": "delay", "ms": 30000, "path_prefix": "/_bulk"}))
        .await;
    let a = WorkerProcess::spawn(&worker_env(&s, &proxy.url, &lease), &[]);
    insert_versions(&s.client().await, &index, 0..docs, 1)
        .await
        .unwrap();
    wait_processing(&s, docs).await;
    a.signal("KILL").unwrap();
    let killed = Instant::now();
    assert_eq!(a.wait().await, None, "killed by a signal");
    let b = WorkerProcess::spawn(&worker_env(&s, &harness::engine_url(), &lease), &[]);
    s.wait_drained(Duration::from_secs(30)).await;
    let recovery = killed.elapsed();
    assert_eq!(s.total().await, 0);
    assert_documents_at(&index, docs, |_| 1).await;
    let reclaimed = b.metric("outbox_reclaimed_total").await;
    assert!(
        reclaimed >= docs as f64,
        "B reclaimed A's events ({reclaimed})"
    );
    b.signal("TERM").unwrap();
    assert_eq!(b.wait().await, Some(0));

    // (b) SIGSTOP past the lease: B reclaims and indexes v1, then v2; A's bulk reaches the
    // engine late (409 against v2) and its acks, once resumed, are fenced.
    let s = TestSchema::new("v3stop", NotifyMode::Adaptive).await;
    let index = harness::unique("v3stop");
    let proxy = FaultProxy::start();
    proxy
        .set(json!({"kind": "delay", "ms": 12000, "path_prefix": "/_bulk"}))
        .await;
    let a = WorkerProcess::spawn(&worker_env(&s, &proxy.url, &lease), &[]);
    a.wait_ready().await.unwrap();
    let c = s.client().await;
    insert_versions(&c, &index, 0..docs, 1).await.unwrap();
    wait_processing(&s, docs).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the request is in the proxy
    a.signal("STOP").unwrap();
    let b = WorkerProcess::spawn(&worker_env(&s, &harness::engine_url(), &lease), &[]);
    s.wait_drained(Duration::from_secs(30)).await;
    insert_versions(&c, &index, 0..docs, 2).await.unwrap();
    s.wait_drained(Duration::from_secs(30)).await;
    // Past the proxy's delay: A's stale v1 write has reached the engine (and lost).
    tokio::time::sleep(Duration::from_secs(8)).await;
    a.signal("CONT").unwrap();
    let start = Instant::now();
    let late = loop {
        let late = a.metric("outbox_late_acks_total").await;
        if late >= docs as f64 || start.elapsed() > Duration::from_secs(20) {
            break late;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        late >= docs as f64,
        "A's writes after the reclaim were fenced ({late})"
    );
    assert_eq!(s.total().await, 0, "A changed no row");
    assert_documents_at(&index, docs, |_| 2).await;
    let proxy_stats = proxy.stats().await;
    for w in [a, b] {
        w.signal("TERM").unwrap();
        assert_eq!(w.wait().await, Some(0));
    }

    // (c) A poison event whose worker dies every time: lease_expired at the attempt limit.
    let s = TestSchema::new("v3poison", NotifyMode::Adaptive).await;
    let proxy = FaultProxy::start();
    proxy
        .set(json!({"kind": "delay", "ms": 60000, "path_prefix": "/_bulk"}))
        .await;
    let ids = s
        .insert(&[NewEvent::index("v3poison", "p", json!({"n": 1}))])
        .await;
    // Each worker claims it (attempt k; after the first, once the reclaimer of that same
    // worker returned it from the previous one's expired lease) and dies at once.
    let poison_env = worker_env(&s, &proxy.url, &lease);
    let c = s.client().await;
    let claimed_as = |attempt: i32| {
        let c = &c;
        async move {
            let start = Instant::now();
            loop {
                let n: i64 = c
                    .query_one("SELECT count(*) FROM outbox_event_states WHERE status = 'processing' AND attempts = $1", &[&attempt])
                    .await
                    .unwrap()
                    .get(0);
                if n == 1 {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "attempt {attempt} never claimed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut kills = 0;
    for attempt in 1..=3 {
        let w = WorkerProcess::spawn(&poison_env, &[("OUTBOX_MAX_ATTEMPTS", "3")]);
        claimed_as(attempt).await;
        w.signal("KILL").unwrap();
        w.wait().await;
        kills += 1;
    }
    // The last lease expires; a reclaimer finds the attempt limit reached.
    let w = WorkerProcess::spawn(&poison_env, &[("OUTBOX_MAX_ATTEMPTS", "3")]);
    let start = Instant::now();
    while s.count("failed").await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the poison event never failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.signal("TERM").unwrap();
    assert_eq!(w.wait().await, Some(0));
    assert_eq!(
        s.state(ids[0]).await,
        Some(("failed".into(), Some("lease_expired".into())))
    );
    report(format!(
        "LAB v3 stuck: sigkill_docs={docs} recovered_in={:.1}s reclaimed={reclaimed}; sigstop_docs={docs} late_acks_fenced={late} stale=0 proxy_requests={}; poison: failed lease_expired after {kills} kills",
        recovery.as_secs_f64(),
        proxy_stats["requests_seen"]
    ));
}

/// A producer of growing versions over `docs` documents until `stop`, tolerant of
/// database errors (it retries, as an application would); returns the last committed
/// version of each document.
fn spawn_producer(
    url: String,
    index: String,
    docs: i64,
    per_second: u64,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<HashMap<i64, i64>> {
    tokio::spawn(async move {
        let mut newest = HashMap::new();
        let mut version = 0i64;
        let mut client: Option<tokio_postgres::Client> = None;
        let tick = Duration::from_millis(50);
        let per_tick = (per_second / 20).max(1) as i64;
        while !stop.is_cancelled() {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()
                    .map(|(c, conn)| {
                        tokio::spawn(conn);
                        c
                    });
            }
            if let Some(c) = &client {
                version += 1;
                let from = (version * per_tick) % docs;
                let range = from..(from + per_tick).min(docs);
                if insert_versions(c, &index, range.clone(), version)
                    .await
                    .is_ok()
                {
                    for d in range {
                        newest.insert(d, version);
                    }
                }
            }
            tokio::time::sleep(tick).await;
        }
        newest
    })
}

async fn assert_newest(index: &str, newest: &HashMap<i64, i64>) {
    let all = Engine::new().all(index).await;
    assert_eq!(all.len(), newest.len(), "documents in {index}");
    for (d, v) in newest {
        assert_eq!(
            all[&d.to_string()],
            (json!({"doc": d, "v": v}), *v),
            "doc {d} is stale"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_rolling_restart_under_load_loses_nothing() {
    let _one = lock().await;
    let s = TestSchema::new("v4", NotifyMode::Adaptive).await;
    let index = harness::unique("v4");
    let (rate, rounds) = if full() { (1000, 6) } else { (300, 3) };
    let env = worker_env(
        &s,
        &harness::engine_url(),
        &[("OUTBOX_SHUTDOWN_GRACE_SECONDS", "10")],
    );
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::spawn(&env, &[])).collect();
    for w in &workers {
        w.wait_ready().await.unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let producer = spawn_producer(s.url.clone(), index.clone(), 500, rate, stop.clone());
    // Sample the age of the oldest undelivered event: an upper bound of the end-to-end
    // latency while workers restart.
    let sampler = {
        let url = s.url.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = harness::connect(&url).await;
            let mut max_age: f64 = 0.0;
            while !stop.is_cancelled() {
                let age: Option<f64> = c
                    .query_one("SELECT extract(epoch FROM now() - min(created_at))::float8 FROM outbox_event_states WHERE status <> 'failed'", &[])
                    .await
                    .unwrap()
                    .get(0);
                max_age = max_age.max(age.unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            max_age
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut exits = Vec::new();
    for round in 0..rounds {
        let old = workers.remove(0);
        old.signal("TERM").unwrap();
        exits.push(old.wait().await);
        let new = WorkerProcess::spawn(&env, &[]);
        new.wait_ready().await.unwrap();
        workers.push(new);
        let _ = round;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.cancel();
    let newest = producer.await.unwrap();
    let max_age = sampler.await.unwrap();
    s.wait_drained(Duration::from_secs(60)).await;
    assert!(
        exits.iter().all(|e| *e == Some(0)),
        "every SIGTERM exit was clean: {exits:?}"
    );
    assert_eq!(s.count("processing").await, 0);
    assert_eq!(s.total().await, 0, "nothing failed, nothing left");
    assert_newest(&index, &newest).await;
    // The stated bound: a restart must not hold events back longer than this.
    let bound = 5.0;
    assert!(
        max_age < bound,
        "oldest undelivered event reached {max_age:.2}s during the restarts (bound {bound}s)"
    );
    report(format!(
        "LAB v4 rolling-restart: workers=3 restarts={rounds} rate={rate}/s documents={} exits={exits:?} max_undelivered_age={max_age:.2}s (bound {bound}s) lost=0 stale=0",
        newest.len()
    ));
    for w in workers {
        w.signal("TERM").unwrap();
        assert_eq!(w.wait().await, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_faults_connection_kills_and_a_restart_are_survived() {
    let _one = lock().await;
    let s = TestSchema::new("pgf", NotifyMode::Adaptive).await;
    let index = harness::unique("pgf");
    let env = worker_env(&s, &harness::engine_url(), &[]);
    let workers: Vec<WorkerProcess> = (0..2).map(|_| WorkerProcess::spawn(&env, &[])).collect();
    for w in &workers {
        w.wait_ready().await.unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let producer = spawn_producer(s.url.clone(), index.clone(), 300, 300, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Kill every connection of our workers, twice.
    let admin = harness::connect(&harness::pg_base_url()).await;
    let mut killed = 0i64;
    for _ in 0..2 {
        for w in &workers {
            let n: i64 = admin
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE '% ' || $1",
                    &[&w.id],
                )
                .await
                .unwrap()
                .get(0);
            killed += n;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        killed >= 4,
        "connections of both workers were killed ({killed})"
    );

    // A full PostgreSQL restart (skippable where the server is shared with other work).
    let restarted = if std::env::var("LABS_SKIP_PG_RESTART").is_ok() {
        false
    } else {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max()
            .unwrap();
        let out = std::process::Command::new("pg_ctlcluster")
            .args([version.as_str(), "main", "restart"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        true
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.cancel();
    let newest = producer.await.unwrap();
    s.wait_drained(Duration::from_secs(90)).await;
    assert_eq!(s.total().await, 0, "nothing failed, nothing left");
    assert_newest(&index, &newest).await;
    let mut reconnects = 0.0;
    for w in &workers {
        reconnects += w
            .metric("outbox_wakes_total{source=\"listen_reconnected\"}")
            .await;
    }
    assert!(
        reconnects >= 2.0,
        "the LISTEN connections came back ({reconnects})"
    );
    report(format!(
        "LAB pg-faults: connections_killed={killed} postgres_restarted={restarted} listen_reconnects={reconnects} documents={} lost=0 stale=0",
        newest.len()
    ));
    for w in workers {
        w.signal("TERM").unwrap();
        assert_eq!(w.wait().await, Some(0));
    }
}

/// The long-transaction lab's shape: a steady producer, and the analytics transactions that
/// hold the database's cleanup horizon, each (start, length) from the producer's start.
struct LongTxPlan {
    rate: f64,
    seconds: u64,
    holds: [(u64, u64); 3],
    /// Documents the events cycle over (each event a newer version of one of them).
    docs: i64,
}

/// One second of the long-transaction lab.
struct Sample {
    /// Seconds since the producer's start.
    t: f64,
    /// Pending + processing, from `stats`.
    backlog: i64,
    failed: i64,
    /// `n_dead_tup` of the outbox's tables.
    dead_tuples: i64,
    /// The worker's `outbox_end_to_end_seconds`, cumulative.
    hist: Vec<(f64, f64)>,
}

/// p99 (seconds) of the commit -> ack times recorded between two samples.
fn p99_between(a: &Sample, b: &Sample) -> Option<f64> {
    harness::prom::histogram_percentile(&harness::prom::histogram_delta(&a.hist, &b.hist), 0.99)
}

/// An open-loop producer: event k (one autocommit insert through the contract) at
/// `start + k / rate`, from connections of at most 150 events/s each, so one slow commit does
/// not hold up the schedule. Event k is version k + 1 of document k % docs. Returns the newest
/// committed version of each document, the events committed, and the most the schedule
/// slipped (s).
async fn steady_producer(
    url: &str,
    index: &str,
    plan: &LongTxPlan,
    start: tokio::time::Instant,
) -> (HashMap<i64, i64>, usize, f64) {
    let conns = ((plan.rate / 150.0).ceil() as usize).max(1);
    let total = (plan.rate * plan.seconds as f64) as usize;
    let per_conn = futures::future::join_all((0..conns).map(|c| async move {
        let client = harness::connect(url).await;
        let insert = contract::prepare_insert(&client).await.unwrap();
        let (mut done, mut slip) = (Vec::new(), 0.0f64);
        let mut k = c;
        while k < total {
            let at = start + Duration::from_secs_f64(k as f64 / plan.rate);
            tokio::time::sleep_until(at).await;
            slip = slip.max(at.elapsed().as_secs_f64());
            let (doc, version) = (k as i64 % plan.docs, k as i64 + 1);
            let event = NewEvent::index(index, doc.to_string(), json!({"doc": doc, "v": version}))
                .version(version);
            contract::insert_prepared(&client, &insert, &[event])
                .await
                .expect("the producer's insert");
            done.push((doc, version));
            k += conns;
        }
        (done, slip)
    }))
    .await;
    let mut newest = HashMap::new();
    let (mut committed, mut slip) = (0, 0.0f64);
    for (done, s) in per_conn {
        committed += done.len();
        slip = slip.max(s);
        for (doc, version) in done {
            let v = newest.entry(doc).or_insert(version);
            *v = (*v).max(version);
        }
    }
    (newest, committed, slip)
}

/// An analytics transaction: REPEATABLE READ, a read of a table that is not the outbox, then
/// idle for `length` with its snapshot held. Returns when it began and ended (s since
/// `start`); panics if it held no snapshot or its session did not last.
async fn analytics_transaction(
    url: String,
    start: tokio::time::Instant,
    at: u64,
    length: u64,
) -> (f64, f64) {
    tokio::time::sleep_until(start + Duration::from_secs(at)).await;
    let c = harness::connect(&url).await;
    c.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM lab_report_source",
    )
    .await
    .unwrap();
    let began = start.elapsed().as_secs_f64();
    let xmin: Option<String> = c
        .query_one(
            "SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(xmin.is_some(), "the analytics transaction holds a snapshot");
    tokio::time::sleep(Duration::from_secs(length)).await;
    c.batch_execute("COMMIT")
        .await
        .expect("the analytics transaction lasted");
    (began, start.elapsed().as_secs_f64())
}

/// Pending + processing and failed, as `stats` counts them.
async fn backlog_and_failed(
    c: &tokio_postgres::Client,
    cfg: &outbox_worker::config::Config,
) -> (i64, i64) {
    let s = outbox_worker::stats::collect(c, cfg).await.unwrap();
    let count = |wanted: &[&str]| -> i64 {
        s.by_status
            .iter()
            .filter(|r| wanted.contains(&r.status.as_str()))
            .map(|r| r.events)
            .sum()
    };
    (count(&["pending", "processing"]), count(&["failed"]))
}

/// Issue 12's production case, the PlanetScale scenario compressed: a steady 800 ev/s
/// producer for 10 minutes while three overlapping 120 s analytics transactions (from 60, 120
/// and 180 s) hold the database's cleanup horizon; in CI, 60 s with three 20 s transactions
/// from 10, 17 and 24 s. The worker sends to the real engine.
///
/// Sampled every second: the backlog (pending + processing, from `stats`), the worker's
/// commit -> ack histogram (`outbox_end_to_end_seconds`, from /metrics) and `n_dead_tup` of
/// the outbox's tables (every `outbox_*` table of the schema). The bounds: the
/// backlog never exceeds one second of production; the p99 of every 10 s window stays
/// <= 50 ms; within 60 s after the last transaction ends, everything is back to normal: from
/// some second on, every backlog sample is within max(2 x the largest before the first
/// transaction, 0.1 s of production) and every 10 s window's p99 within max(2 x, + 5 ms)
/// the p99 before the first transaction. CI asserts the invariants (nothing failed, lost or
/// stale) and the backlog bound (counts); `make labs` asserts the p99 and recovery bounds too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transactions_keep_the_backlog_under_a_second_of_production() {
    let _one = lock().await;
    let plan = if full() {
        LongTxPlan {
            rate: 800.0,
            seconds: 600,
            holds: [(60, 120), (120, 120), (180, 120)],
            docs: 5000,
        }
    } else {
        LongTxPlan {
            rate: 800.0,
            seconds: 60,
            holds: [(10, 20), (17, 20), (24, 20)],
            docs: 2000,
        }
    };
    const WINDOW: usize = 10;
    let s = TestSchema::new("ltx", NotifyMode::Adaptive).await;
    let index = harness::unique("ltx");
    Engine::new()
        .put_index(
            &index,
            json!({"settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
                   "mappings": {"properties": {"doc": {"type": "long"}, "v": {"type": "long"}}}}),
        )
        .await;
    let c = s.client().await;
    c.batch_execute(
        "CREATE TABLE lab_report_source AS
             SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 10000) AS g",
    )
    .await
    .unwrap();
    let cfg = s.config(&[]);
    let w = WorkerProcess::spawn(&worker_env(&s, &harness::engine_url(), &[]), &[]);
    w.wait_ready().await.unwrap();

    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let holds: Vec<_> = plan
        .holds
        .iter()
        .map(|&(at, length)| tokio::spawn(analytics_transaction(s.url.clone(), start, at, length)))
        .collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (stop, url, w_url) = (stop.clone(), s.url.clone(), w.metrics_url.clone());
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let c = harness::connect(&url).await;
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut samples = Vec::new();
            while !stop.is_cancelled() {
                tick.tick().await;
                let t = start.elapsed().as_secs_f64();
                let (backlog, failed) = backlog_and_failed(&c, &cfg).await;
                let page = http
                    .get(format!("{w_url}/metrics"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let dead_tuples: i64 = c
                    .query_one(
                        "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables
                         WHERE schemaname = current_schema() AND relname LIKE 'outbox\\_%'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                samples.push(Sample {
                    t,
                    backlog,
                    failed,
                    dead_tuples,
                    hist: harness::prom::histogram(&page, "outbox_end_to_end_seconds"),
                });
            }
            samples
        })
    };
    let (newest, committed, slip) = steady_producer(&s.url, &index, &plan, start).await;
    let produced_for = start.elapsed().as_secs_f64();
    // One more window of samples after the last insert, then the sampler stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let samples = sampler.await.unwrap();
    let mut spans = Vec::new();
    for h in holds {
        spans.push(h.await.unwrap());
    }
    let drained = Instant::now();
    loop {
        let (left, _) = backlog_and_failed(&c, &cfg).await;
        if left == 0 {
            break;
        }
        assert!(
            drained.elapsed() < Duration::from_secs(120),
            "{left} events still pending or processing 120 s after the producer stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, failed) = backlog_and_failed(&c, &cfg).await;

    // The invariants: every document holds its newest committed version.
    let all = Engine::new().all(&index).await;
    let (mut lost, mut stale) = (0, 0);
    for (doc, version) in &newest {
        match all.get(&doc.to_string()) {
            None => lost += 1,
            Some((source, v)) if *v != *version || *source != json!({"doc": doc, "v": version}) => {
                stale += 1
            }
            Some(_) => {}
        }
    }

    // The figures, from the samples taken while the producer ran.
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.t <= produced_for + 0.5)
        .collect();
    let bound = plan.rate as i64;
    let peak = during.iter().max_by_key(|x| x.backlog).expect("samples");
    let dead_max = during.iter().map(|x| x.dead_tuples).max().unwrap_or(0);
    let first_start = spans.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let last_end = spans.iter().map(|x| x.1).fold(0.0, f64::max);
    // p99 of each 10 s window from the start.
    let windows: Vec<(f64, f64)> = (0..during.len().saturating_sub(WINDOW))
        .step_by(WINDOW)
        .filter_map(|i| Some((during[i].t, p99_between(during[i], during[i + WINDOW])?)))
        .collect();
    let worst = windows
        .iter()
        .copied()
        .fold((0.0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    // Normal: the level before the first transaction (after a 2 s warm-up).
    let before: Vec<&Sample> = during
        .iter()
        .copied()
        .filter(|x| x.t >= 2.0 && x.t <= first_start)
        .collect();
    let baseline_p99 = p99_between(before[0], before[before.len() - 1]).unwrap_or(0.0);
    let baseline_backlog = before.iter().map(|x| x.backlog).max().unwrap_or(0);
    let normal_p99 = (2.0 * baseline_p99).max(baseline_p99 + 0.005);
    let normal_backlog = (2 * baseline_backlog).max(bound / 10);
    // The first second after the last transaction from which every sample is normal (and
    // at least one full window is left to judge it by).
    let recovered = (0..during.len().saturating_sub(WINDOW))
        .filter(|&i| during[i].t >= last_end)
        .find(|&i| {
            during[i..].iter().all(|x| x.backlog <= normal_backlog)
                && (i..during.len() - WINDOW).all(|j| {
                    p99_between(during[j], during[j + WINDOW]).is_none_or(|p| p <= normal_p99)
                })
        })
        .map(|i| (during[i].t - last_end).max(0.0));
    let ms = |s: f64| s * 1000.0;
    report(format!(
        "LAB long-transactions: rate={}/s for {}s events={committed} (achieved {:.0}/s, schedule slip max {:.0} ms) analytics={}x{}s at {} backlog_max={} at {:.0}s (bound {bound}) p99_10s_max={:.1}ms at {:.0}s (bound 50 ms) baseline_p99={:.1}ms recovered_after_last={} (bound 60 s) dead_tuples_max={dead_max} failed={failed} lost={lost} stale={stale}",
        plan.rate,
        plan.seconds,
        committed as f64 / produced_for,
        ms(slip),
        spans.len(),
        plan.holds[0].1,
        spans
            .iter()
            .map(|x| format!("{:.0}", x.0))
            .collect::<Vec<_>>()
            .join("/")
            + "s",
        peak.backlog,
        peak.t,
        ms(worst.1),
        worst.0,
        ms(baseline_p99),
        recovered.map_or_else(
            || format!("not within {:.0}s", produced_for - last_end),
            |r| format!("{r:.0}s")
        ),
    ));
    w.signal("TERM").unwrap();
    assert_eq!(w.wait().await, Some(0));
    assert_eq!(committed as f64, plan.rate * plan.seconds as f64);
    assert_eq!((failed, lost, stale), (0, 0, 0), "failed, lost, stale");
    assert!(
        samples.iter().all(|x| x.failed == 0),
        "no event failed at any time"
    );
    assert!(
        peak.backlog <= bound,
        "the backlog reached {} at {:.0}s: more than one second of production ({bound})",
        peak.backlog,
        peak.t
    );
    if full() {
        assert!(
            worst.1 <= 0.050,
            "p99 of the 10 s window at {:.0}s was {:.1} ms (bound 50 ms)",
            worst.0,
            ms(worst.1)
        );
        assert!(
            recovered.is_some_and(|r| r <= 60.0),
            "not back to normal within 60 s after the last analytics transaction ({recovered:?})"
        );
    }
}
