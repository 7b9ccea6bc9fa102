//! Graceful shutdown of a real worker process under load: SIGTERM stops claiming, in-flight
//! bulks finish, claimed but unsent events are released with the attempt refunded, exit 0;
//! nothing is lost and nothing is left `processing`.

use outbox_harness as harness;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use outbox_worker::{
    config::NotifyMode,
    contract::{self, NewEvent},
};
use serde_json::json;

use harness::{Engine, TestSchema};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_releases_unsent_and_loses_nothing() {
    let s = TestSchema::new("term", NotifyMode::Adaptive).await;
    let index = harness::unique("term");
    // Small byte cap: one claim of 500 becomes many chunks, one in flight at a time, so at
    // SIGTERM most of a claim is still unsent and must be released.
    let child = harness::worker_command()
        .arg("run")
        .envs(s.env())
        .env("OUTBOX_BULK_SIZE", "500")
        .env("OUTBOX_BULK_MAX_BYTES", "2048")
        .env("OUTBOX_CONCURRENCY", "1")
        .env("OUTBOX_SHUTDOWN_GRACE_SECONDS", "10")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A steady producer: 40 documents, many versions each.
    let producer = {
        let url = s.url.clone();
        let index = index.clone();
        tokio::spawn(async move {
            let c = harness::connect(&url).await;
            for round in 0..60i64 {
                let events: Vec<NewEvent> = (1..=100i64)
                    .map(|g| {
                        let v = round * 1000 + g;
                        NewEvent::index(&index, (g % 40).to_string(), json!({"v": v})).version(v)
                    })
                    .collect();
                contract::insert(&c, &events).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // SIGTERM once the worker is busy: events claimed and a backlog behind them.
    let c = s.client().await;
    let start = Instant::now();
    loop {
        let busy: i64 = c
            .query_one(
                "SELECT count(*) FROM outbox_event_states WHERE status = 'processing'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if busy >= 100 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the worker never got busy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let (status, logs) = harness::terminate_and_collect(child).await;
    assert!(status.success(), "exit {status:?}\n{logs}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "stopped within the grace period"
    );
    assert!(
        logs.contains("released claimed events to pending"),
        "{logs}"
    );
    assert_eq!(s.count("processing").await, 0, "nothing left processing");
    let charged: i64 = c
        .query_one(
            "SELECT count(*) FROM outbox_event_states WHERE status = 'pending' AND attempts > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(charged, 0, "released events got their attempt back");
    producer.await.unwrap();

    // A second worker drains the rest; every document ends at its newest version.
    let w = harness::InProcessWorker::start(s.config(&[]));
    s.wait_drained(Duration::from_secs(60)).await;
    w.stop().await;
    assert_eq!(s.total().await, 0);
    let docs = Engine::new().all(&index).await;
    assert_eq!(docs.len(), 40);
    for d in 0..40i64 {
        // Newest version of doc d: round 59, the largest g in 1..=100 with g % 40 == d.
        let g = (1..=100).filter(|g| g % 40 == d).max().unwrap();
        let newest = 59 * 1000 + g;
        assert_eq!(
            docs[&d.to_string()],
            (json!({"v": newest}), newest),
            "doc {d}"
        );
    }
}

/// A bulk the engine holds past the grace period: after OUTBOX_SHUTDOWN_GRACE_SECONDS the
/// worker abandons it, releases its events (attempt refunded) and still exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_over_releases_in_flight_events() {
    let s = TestSchema::new("grace", NotifyMode::Adaptive).await;
    let proxy = harness::FaultProxy::start();
    proxy
        .set(json!({"kind": "delay", "ms": 60000, "path_prefix": "/_bulk"}))
        .await;
    let mut env = s.env();
    env.retain(|(k, _)| k != "OUTBOX_ELASTICSEARCH_URL");
    env.push(("OUTBOX_ELASTICSEARCH_URL".into(), proxy.url.clone()));
    let w = harness::WorkerProcess::spawn(&env, &[("OUTBOX_SHUTDOWN_GRACE_SECONDS", "2")]);
    s.insert(&[
        NewEvent::index("grace", "a", json!({})),
        NewEvent::index("grace", "b", json!({})),
    ])
    .await;
    // Signalled once the bulk is held by the proxy: claimed alone ("processing") is too
    // early, since the claim's delete-record lookup comes before the send, and a worker
    // with nothing in flight rightly exits at once.
    let start = Instant::now();
    while s.count("processing").await < 2
        || proxy.stats().await["faults_injected"]["delay"].as_u64() < Some(1)
    {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.signal("TERM").unwrap();
    let signalled = Instant::now();
    assert_eq!(
        w.wait().await,
        Some(0),
        "a clean exit after the grace period"
    );
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let c = s.client().await;
    let rows = c
        .query(
            "SELECT status, attempts FROM outbox_event_states ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![("pending".to_string(), 0), ("pending".to_string(), 0)],
        "released, attempt refunded"
    );
}

/// A second signal exits at once, leaving the lease to expire; the reclaimer of another
/// worker then recovers the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once_and_the_reclaimer_recovers() {
    let s = TestSchema::new("twice", NotifyMode::Adaptive).await;
    let index = harness::unique("twice");
    let proxy = harness::FaultProxy::start();
    proxy
        .set(json!({"kind": "delay", "ms": 60000, "path_prefix": "/_bulk"}))
        .await;
    let mut env = s.env();
    env.retain(|(k, _)| {
        k != "OUTBOX_ELASTICSEARCH_URL"
            && k != "OUTBOX_LEASE_SECONDS"
            && k != "OUTBOX_REQUEST_TIMEOUT_SECONDS"
    });
    let lease = [
        ("OUTBOX_LEASE_SECONDS", "3"),
        ("OUTBOX_REQUEST_TIMEOUT_SECONDS", "2"),
        ("OUTBOX_SHUTDOWN_GRACE_SECONDS", "30"),
    ];
    let mut via_proxy = env.clone();
    via_proxy.push(("OUTBOX_ELASTICSEARCH_URL".into(), proxy.url.clone()));
    let w = harness::WorkerProcess::spawn(&via_proxy, &lease);
    s.insert(&[NewEvent::index(index.as_str(), "a", json!({"n": 1}))])
        .await;
    let start = Instant::now();
    while s.count("processing").await < 1 {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.signal("TERM").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.signal("TERM").unwrap();
    let signalled = Instant::now();
    assert_eq!(w.wait().await, Some(130), "the second signal exits at once");
    assert!(signalled.elapsed() < Duration::from_secs(2));
    assert_eq!(s.count("processing").await, 1, "left under its lease");
    let mut direct = env.clone();
    direct.push(("OUTBOX_ELASTICSEARCH_URL".into(), harness::engine_url()));
    let rescuer = harness::WorkerProcess::spawn(&direct, &lease);
    s.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(s.total().await, 0);
    assert!(Engine::new().get(&index, "a").await.is_some());
    rescuer.signal("TERM").unwrap();
    assert_eq!(rescuer.wait().await, Some(0));
}
