//! The cluster labs (issue 13): a worker against a real three-node cluster started by
//! `ENGINE_NODES=3 scripts/engine.sh start`, whose nodes are in OUTBOX_TEST_CLUSTER_URLS.
//! Each scenario asserts the end state of every event and every document and prints one line
//! with `lost=`, `stale=`, `resurrected=` and the longest stall of the drain in seconds.
//!   (a) one node SIGKILLed mid-drain (not the cluster manager; LABS_CLUSTER_VICTIM=manager
//!       kills the manager); (d) it comes back and takes requests again;
//!   (b) the whole cluster restarted (`scripts/engine.sh restart`, which drops the engine's
//!       tombstones) between acked deletes and late, older index events: the documents stay
//!       deleted on every copy, thanks to the worker's delete records;
//!   (c) one node answers 429, then 503, to everything (the fault proxy in front of it only).
//! `make labs-cluster` runs them (LABS_SCALE=full); scripts/test.sh runs them at CI size.
//! They are `#[ignore]`d in a plain `cargo test`: they need the cluster, which the scripts
//! start and stop around them.

use outbox_harness as harness;

use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};

use outbox_worker::{
    config::NotifyMode,
    contract::{self, NewEvent},
};
use serde_json::{Value, json};

use harness::{Engine, TestSchema, WorkerProcess, fault_proxy};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the worker may take to notice a node that does not answer: its request timeout.
/// A refused connection or a reset is noticed at once.
const DETECTION: Duration = Duration::from_secs(3);

use outbox_harness::labs::{full, report};

/// The cluster's node URLs, in node order.
fn cluster() -> Vec<String> {
    let urls = std::env::var("OUTBOX_TEST_CLUSTER_URLS").expect(
        "OUTBOX_TEST_CLUSTER_URLS: start the cluster with ENGINE_NODES=3 scripts/engine.sh start \
         and export its `url` (make labs-cluster does both)",
    );
    let urls: Vec<String> = urls
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .collect();
    assert!(
        urls.len() >= 3,
        "a cluster of three nodes or more: {urls:?}"
    );
    urls
}

/// `host:port` of a node URL, as the worker labels its metrics.
fn label(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// `scripts/engine.sh <args>` for the cluster; panics with its output on failure.
fn engine_sh(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/engine.sh");
    let out = std::process::Command::new(script)
        .args(args)
        .env("ENGINE_NODES", cluster().len().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "engine.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn worker_env(s: &TestSchema, urls: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = s.env();
    let timeout = DETECTION.as_secs().to_string();
    let mut set = vec![
        ("OUTBOX_ELASTICSEARCH_URL", urls),
        ("OUTBOX_REQUEST_TIMEOUT_SECONDS", timeout.as_str()),
        ("OUTBOX_LEASE_SECONDS", "15"),
        ("OUTBOX_MAX_PROCESSING_SECONDS", "60"),
        ("OUTBOX_BASE_BACKOFF_SECONDS", "0.2"),
        ("OUTBOX_MAX_BACKOFF_SECONDS", "2"),
        ("OUTBOX_MAX_ATTEMPTS", "100"),
    ];
    set.extend_from_slice(extra);
    for (k, v) in set {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// An index of three shards with one replica each: every node holds primaries, and every
/// acked write has a copy on a second node.
async fn put_index(engine: &Engine, index: &str) {
    put_index_with(
        engine,
        index,
        json!({"settings": {"number_of_shards": 3, "number_of_replicas": 1}}),
    )
    .await;
}

/// Documents `docs` at version 1, then a delete at version 2 of every tenth: the expected
/// end state is every doc but the tenths at v1.
fn events(index: &str, docs: std::ops::Range<i64>) -> Vec<NewEvent> {
    let mut out: Vec<NewEvent> = docs
        .clone()
        .map(|d| NewEvent::index(index, d.to_string(), json!({"doc": d, "v": 1})).version(1))
        .collect();
    out.extend(
        docs.filter(|d| d % 10 == 0)
            .map(|d| NewEvent::delete(index, d.to_string()).version(2)),
    );
    out
}

/// (lost, stale, resurrected) of `index` against the state `events` leave for `0..docs`.
async fn judge(engine: &Engine, index: &str, docs: i64) -> (usize, usize, usize) {
    let all = engine.documents(index).await.unwrap();
    let (mut lost, mut stale, mut resurrected) = (0, 0, 0);
    for d in 0..docs {
        let got = all.get(&d.to_string());
        match (d % 10 == 0, got) {
            (true, Some(_)) => resurrected += 1,
            (true, None) => {}
            (false, None) => lost += 1,
            (false, Some((source, v))) => {
                if *v != 1 || source != &json!({"doc": d, "v": 1}) {
                    stale += 1;
                }
            }
        }
    }
    (lost, stale, resurrected)
}

/// Samples of the worker's acked count over time, until nothing is undelivered.
struct Progress {
    samples: Vec<(Instant, f64)>,
}

impl Progress {
    async fn follow(w: &WorkerProcess, s: &TestSchema, timeout: Duration) -> Progress {
        let c = s.client().await;
        let start = Instant::now();
        let mut samples = Vec::new();
        loop {
            samples.push((Instant::now(), w.metric("outbox_acked_total").await));
            if harness::undelivered(&c).await == 0 {
                samples.push((Instant::now(), w.metric("outbox_acked_total").await));
                return Progress { samples };
            }
            assert!(
                start.elapsed() < timeout,
                "not drained after {timeout:?}; worker log:\n{}",
                w.log_tail(30)
            );
            // A worker that has gone cannot drain: say so now, not at the timeout.
            if let Some(status) = w.exited() {
                panic!(
                    "the worker exited ({status}) before the drain; its log:\n{}",
                    w.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The longest time without a new ack, from `from` on.
    fn stall(&self, from: Instant) -> Duration {
        let mut last_change = from;
        let mut last_value = None;
        let mut longest = Duration::ZERO;
        for &(t, v) in self.samples.iter().filter(|(t, _)| *t >= from) {
            if last_value.is_some_and(|p| v > p) {
                longest = longest.max(t - last_change);
                last_change = t;
            }
            last_value = Some(v);
        }
        longest
    }
}

/// The node to kill (1-based): by default the first that is not the elected cluster manager,
/// so that losing it costs the cluster no election and what is measured is the worker's
/// failover; with LABS_CLUSTER_VICTIM=manager, the elected manager itself (the cluster's
/// election then adds to the stall).
async fn victim_node(engine: &Engine) -> (usize, bool) {
    let manager: Value = engine
        .raw()
        .await
        .get(format!("{}/_cat/master?format=json", engine.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = manager[0]["node"].as_str().unwrap_or("").to_string();
    let kill_manager = std::env::var("LABS_CLUSTER_VICTIM").is_ok_and(|v| v == "manager");
    let victim = (1..=cluster().len())
        .find(|i| (name == format!("outbox-node-{i}")) == kill_manager)
        .unwrap();
    (victim, kill_manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: make labs-cluster"]
async fn cluster_a_d_a_node_killed_mid_drain_then_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let urls = cluster();
    let s = TestSchema::new("cl_a", NotifyMode::Adaptive).await;
    let index = harness::unique("cl_a");
    let engine = Engine::at(&urls[0]);
    put_index(&engine, &index).await;
    let docs: i64 = if full() { 40_000 } else { 6_000 };
    let env = worker_env(
        &s,
        &urls.join(","),
        &[("OUTBOX_BULK_SIZE", "50"), ("OUTBOX_CONCURRENCY", "2")],
    );
    let c = s.client().await;
    contract::insert(&c, &events(&index, 0..docs))
        .await
        .unwrap();
    let total = docs + docs / 10;

    // (a) the drain runs; a node that is not the cluster manager is SIGKILLed at a quarter.
    let (victim, was_manager) = victim_node(&engine).await;
    let victim_label = label(&urls[victim - 1]);
    let survivor = Engine::at(&urls[victim % urls.len()]);
    let w = WorkerProcess::spawn(&env, &[]);
    w.wait_ready().await.unwrap();
    let started = Instant::now();
    while w.metric("outbox_acked_total").await < (total / 4) as f64 {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    engine_sh(&["node-kill", &victim.to_string()]);
    let progress = Progress::follow(&w, &s, Duration::from_secs(300)).await;
    let drained = killed_at.elapsed();
    let stall = progress.stall(killed_at);
    let text = w.scrape().await.unwrap();
    let up = harness::prom::sum(
        &text,
        &format!("outbox_engine_node_up{{node=\"{victim_label}\"}}"),
    );
    let retry_all = harness::prom::sum(&text, "outbox_bulk_requests_total{result=\"retry_all\"}");
    let failed_tries = harness::prom::sum(&text, "outbox_engine_node_requests_total")
        - harness::prom::labelled(&text, "outbox_engine_node_requests_total", "outcome=\"ok\"");
    let (lost, stale, resurrected) = judge(&survivor, &index, docs).await;
    report(format!(
        "LAB cluster-a node-killed: events={total} killed=node-{victim} cluster_manager={was_manager} lost={lost} stale={stale} resurrected={resurrected} stall={:.1}s detection={}s drained_after_kill={:.1}s failed_tries={failed_tries} whole_request_failures={} victim_up={up}",
        stall.as_secs_f64(),
        DETECTION.as_secs(),
        drained.as_secs_f64(),
        retry_all as i64,
    ));
    assert_eq!(s.count("failed").await, 0, "nothing failed");
    assert_eq!((lost, stale, resurrected), (0, 0, 0));
    assert!(
        stall <= 2 * DETECTION,
        "the drain stalled {stall:?}, more than twice the detection time {DETECTION:?}"
    );
    assert_eq!(up, 0.0, "the killed node is held down");

    // (d) it comes back: the probe finds it and it takes requests again.
    let ok_before = harness::prom::sum(
        &text,
        &format!("outbox_engine_node_requests_total{{node=\"{victim_label}\",outcome=\"ok\"}}"),
    );
    let back_at = Instant::now();
    engine_sh(&["node-start", &victim.to_string()]);
    let restarted = back_at.elapsed();
    let node_up = format!("outbox_engine_node_up{{node=\"{victim_label}\"}}");
    while w.metric(&node_up).await < 1.0 {
        assert!(
            back_at.elapsed() < Duration::from_secs(120),
            "node-{victim} not marked up again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let marked_up = back_at.elapsed();
    let more: i64 = if full() { 10_000 } else { 3_000 };
    let second: Vec<NewEvent> = (docs..docs + more)
        .map(|d| NewEvent::index(&index, d.to_string(), json!({"doc": d, "v": 1})).version(1))
        .collect();
    contract::insert(&c, &second).await.unwrap();
    Progress::follow(&w, &s, Duration::from_secs(300)).await;
    let ok_after = w
        .metric(&format!(
            "outbox_engine_node_requests_total{{node=\"{victim_label}\",outcome=\"ok\"}}"
        ))
        .await;
    let (lost, stale, resurrected) = judge(&engine, &index, docs).await;
    let lost_second = {
        let all = engine.documents(&index).await.unwrap();
        (docs..docs + more)
            .filter(|d| !all.contains_key(&d.to_string()))
            .count()
    };
    report(format!(
        "LAB cluster-d node-back: events={more} node=node-{victim} restarted_in={:.1}s marked_up_after={:.1}s requests_ok_on_it={} lost={} stale={stale} resurrected={resurrected} stall=0.0s",
        restarted.as_secs_f64(),
        marked_up.as_secs_f64(),
        ok_after - ok_before,
        lost + lost_second,
    ));
    assert_eq!((lost, lost_second, stale, resurrected), (0, 0, 0, 0));
    assert!(
        ok_after > ok_before,
        "node-{victim} took no request after it came back"
    );
    w.signal("TERM").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: make labs-cluster"]
async fn cluster_c_one_node_throttles_or_refuses_everything() {
    let _one = ONE_AT_A_TIME.lock().await;
    let urls = cluster();
    let s = TestSchema::new("cl_c", NotifyMode::Adaptive).await;
    let engine = Engine::at(&urls[0]);
    // The fault proxy in front of the last node only.
    let proxy = fault_proxy::Proxy::start(fault_proxy::Options::new(
        urls[urls.len() - 1].parse().unwrap(),
    ))
    .expect("start the fault proxy");
    let mut nodes: Vec<String> = urls[..urls.len() - 1].to_vec();
    nodes.push(proxy.url.trim_end_matches('/').to_string());
    let faulty = label(&proxy.url);
    let env = worker_env(
        &s,
        &nodes.join(","),
        &[("OUTBOX_BULK_SIZE", "50"), ("OUTBOX_CONCURRENCY", "2")],
    );
    let w = WorkerProcess::spawn(&env, &[]);
    w.wait_ready().await.unwrap();
    let c = s.client().await;
    let docs: i64 = if full() { 20_000 } else { 3_000 };

    for (phase, status) in [("429", 429u16), ("503", 503u16)] {
        let index = harness::unique("cl_c");
        put_index(&engine, &index).await;
        let before = proxy.control.stats().await.unwrap();
        let seen_before = before["requests_seen"].as_u64().unwrap_or(0);
        let items_before = w
            .metric("outbox_bulk_requests_total{result=\"items\"}")
            .await;
        let retry_all_before = w
            .metric("outbox_bulk_requests_total{result=\"retry_all\"}")
            .await;
        proxy
            .control
            .set(&json!({"kind": "status", "status": status}))
            .await
            .unwrap();
        let started = Instant::now();
        contract::insert(&c, &events(&index, 0..docs))
            .await
            .unwrap();
        let progress = Progress::follow(&w, &s, Duration::from_secs(300)).await;
        let took = started.elapsed();
        let stall = progress.stall(started);
        let stats = proxy.control.stats().await.unwrap();
        let seen = stats["requests_seen"].as_u64().unwrap_or(0) - seen_before;
        let requests = w
            .metric("outbox_bulk_requests_total{result=\"items\"}")
            .await
            - items_before;
        let retry_all = w
            .metric("outbox_bulk_requests_total{result=\"retry_all\"}")
            .await
            - retry_all_before;
        let up = w
            .metric(&format!("outbox_engine_node_up{{node=\"{faulty}\"}}"))
            .await;
        proxy.control.clear().await.unwrap();
        let (lost, stale, resurrected) = judge(&engine, &index, docs).await;
        report(format!(
            "LAB cluster-c node-answers-{phase}: events={} lost={lost} stale={stale} resurrected={resurrected} stall={:.1}s drained_in={:.1}s bulk_requests={requests} requests_to_faulty_node={seen} whole_request_failures={} faulty_node_up={up}",
            docs + docs / 10,
            stall.as_secs_f64(),
            took.as_secs_f64(),
            retry_all as i64,
        ));
        assert_eq!((lost, stale, resurrected), (0, 0, 0), "{phase}");
        assert_eq!(s.count("failed").await, 0);
        assert_eq!(
            retry_all, 0.0,
            "{phase}: every request the faulty node refused went on to another node"
        );
        assert!(
            stall <= 2 * DETECTION,
            "{phase}: the drain stalled {stall:?}"
        );
        match status {
            // Busy, not down: tried in turn, each request at most once.
            429 => {
                assert!(
                    (seen as f64) <= requests + 2.0,
                    "429: {seen} requests to the throttling node for {requests} bulk requests"
                );
                assert_eq!(up, 1.0, "a throttling node is not marked down");
            }
            // Down: only the probes reach it, with a growing backoff (0.5 s to 10 s).
            _ => {
                let bound = 2 + 2 * (took.as_secs() / 10 + 5);
                assert!(
                    seen <= bound,
                    "503: {seen} requests to the refusing node in {took:?}: more than probes ({bound})"
                );
                assert_eq!(up, 0.0, "a node answering 503 is held down");
            }
        }
    }
    w.signal("TERM").unwrap();
}

/// (b) The whole cluster restarts between acked deletes and late, older index events.
/// `docs` documents are indexed at version 1 and deleted at version 3 through the worker
/// (acked, each with its delete record); the cluster is stopped and started again on its
/// data, which drops the deletes' tombstones; then index events at version 2 arrive for the
/// same documents, with as many new documents at version 1. The deleted ones stay deleted
/// on every copy (the late events are acked as superseded, never sent) and the new ones are
/// indexed.
///
/// The control: a sibling document with the same history, written straight to the engine at
/// version 2 — refused before the restart (the tombstone holds; `index.gc_deletes` is an
/// hour here, so only the restart can drop it) and created after it. Without that, the
/// scenario would prove nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: make labs-cluster"]
async fn cluster_b_the_whole_cluster_restarts_between_an_acked_delete_and_a_late_older_index() {
    let _one = ONE_AT_A_TIME.lock().await;
    let urls = cluster();
    let s = TestSchema::new("cl_b", NotifyMode::Adaptive).await;
    let index = harness::unique("cl_b");
    let i = index.as_str();
    let engine = Engine::at(&urls[0]);
    // One shard, a copy on every node: each node answers for its own copy below.
    put_index_with(
        &engine,
        i,
        json!({"settings": {
            "number_of_shards": 1,
            "number_of_replicas": urls.len() - 1,
            "index.gc_deletes": "1h",
        }}),
    )
    .await;
    let docs: i64 = if full() { 2_000 } else { 100 };
    let deleted: Vec<String> = (0..docs).map(|d| format!("d{d}")).collect();
    let fresh: Vec<String> = (0..docs).map(|d| format!("n{d}")).collect();
    let probe = "probe";
    let env = worker_env(&s, &urls.join(","), &[("OUTBOX_BULK_SIZE", "50")]);
    let w = WorkerProcess::spawn(&env, &[]);
    w.wait_ready().await.unwrap();
    let c = s.client().await;

    let all: Vec<&str> = deleted.iter().map(String::as_str).chain([probe]).collect();
    let indexed: Vec<NewEvent> = all
        .iter()
        .map(|d| NewEvent::index(i, *d, json!({"doc": d, "v": 1})).version(1))
        .collect();
    contract::insert(&c, &indexed).await.unwrap();
    s.wait_drained(Duration::from_secs(120)).await;
    assert_eq!(
        copies_found(&urls, i, &all).await,
        vec![all.len(); urls.len()],
        "indexed at 1 on every copy"
    );
    let deletes: Vec<NewEvent> = all
        .iter()
        .map(|d| NewEvent::delete(i, *d).version(3))
        .collect();
    contract::insert(&c, &deletes).await.unwrap();
    s.wait_drained(Duration::from_secs(120)).await;
    let records: i64 = c
        .query_one(
            "SELECT count(*) FROM outbox_delete_records WHERE index_name = $1 AND doc_version = 3",
            &[&i],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        records,
        all.len() as i64,
        "every delete acked with its record"
    );
    assert_eq!(copies_found(&urls, i, &all).await, vec![0; urls.len()]);
    assert_eq!(
        put_at(&engine, i, probe, 2).await,
        409,
        "before the restart the tombstone refuses version 2"
    );

    let restart = Instant::now();
    engine_sh(&["restart"]);
    let restarted_in = restart.elapsed();

    // The control: the tombstone is gone, the engine alone would bring the document back.
    let control = put_at(&engine, i, probe, 2).await;
    assert_eq!(
        control, 201,
        "after the restart the engine creates version 2 of a deleted document \
         (if it refuses, the restart kept the tombstone and this scenario tests nothing)"
    );
    let superseded_before = w
        .metric("outbox_acked_total{kind=\"superseded_by_delete\"}")
        .await;
    let late: Vec<NewEvent> = deleted
        .iter()
        .map(|d| NewEvent::index(i, d.as_str(), json!({"doc": d, "v": 2})).version(2))
        .chain(
            fresh
                .iter()
                .map(|d| NewEvent::index(i, d.as_str(), json!({"doc": d, "v": 1})).version(1)),
        )
        .collect();
    let inserted = Instant::now();
    contract::insert(&c, &late).await.unwrap();
    let progress = Progress::follow(&w, &s, Duration::from_secs(300)).await;
    let drained = inserted.elapsed();
    let stall = progress.stall(inserted);
    let superseded = w
        .metric("outbox_acked_total{kind=\"superseded_by_delete\"}")
        .await
        - superseded_before;

    // Documents, counted once however many copies: resurrected, a deleted one present on a
    // copy; lost, a new one missing from a copy; stale, a new one not at version 1 with its
    // body on a copy.
    let deleted_ids: Vec<&str> = deleted.iter().map(String::as_str).collect();
    let fresh_ids: Vec<&str> = fresh.iter().map(String::as_str).collect();
    let (mut resurrected, mut lost, mut stale) = (HashSet::new(), HashSet::new(), HashSet::new());
    for url in &urls {
        let got = local_mget(url, i, &deleted_ids).await;
        for (d, g) in deleted.iter().zip(got) {
            if g.is_some() {
                resurrected.insert(d);
            }
        }
        let got = local_mget(url, i, &fresh_ids).await;
        for (d, g) in fresh.iter().zip(got) {
            match g {
                None => {
                    lost.insert(d);
                }
                Some((source, v)) if v != 1 || source != json!({"doc": d, "v": 1}) => {
                    stale.insert(d);
                }
                Some(_) => {}
            }
        }
    }
    let (lost, stale, resurrected) = (lost.len(), stale.len(), resurrected.len());
    report(format!(
        "LAB cluster-b whole-cluster-restart: events={} deleted={docs} late_older={docs} new={docs} nodes={} restarted_in={:.1}s control_v2_after_restart={control} lost={lost} stale={stale} resurrected={resurrected} stall={:.1}s drained_in={:.1}s superseded_by_delete={superseded}",
        2 * all.len() + late.len(),
        urls.len(),
        restarted_in.as_secs_f64(),
        stall.as_secs_f64(),
        drained.as_secs_f64(),
    ));
    assert_eq!((lost, stale, resurrected), (0, 0, 0));
    assert_eq!(
        superseded, docs as f64,
        "every late index event acked as superseded"
    );
    assert_eq!(s.count("failed").await, 0, "nothing failed");
    w.signal("TERM").unwrap();
}

/// `put_index` with settings of the caller's.
async fn put_index_with(engine: &Engine, index: &str, body: Value) {
    engine.put_index(index, body).await;
    let r = engine
        .raw()
        .await
        .get(format!(
            "{}/_cluster/health/{index}?wait_for_status=green&timeout=60s",
            engine.url
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{index} green");
}

/// The HTTP status of a straight write of `id` at external `version`.
async fn put_at(engine: &Engine, index: &str, id: &str, version: i64) -> u16 {
    engine
        .raw()
        .await
        .put(format!(
            "{}/{index}/_doc/{id}?version={version}&version_type=external",
            engine.url
        ))
        .json(&json!({"doc": id, "v": version}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `ids` as the copy on the node at `url` has them (`preference=_only_local`, real time):
/// source and version, or None when not found. Any other answer fails the test: a node that
/// cannot answer does not count as "deleted".
async fn local_mget(url: &str, index: &str, ids: &[&str]) -> Vec<Option<(Value, i64)>> {
    let r = Engine::at(url)
        .raw()
        .await
        .post(format!("{url}/{index}/_mget?preference=_only_local"))
        .json(&json!({"ids": ids}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "_mget on {url}");
    let body: Value = r.json().await.unwrap();
    let got = body["docs"].as_array().expect("docs").clone();
    assert_eq!(got.len(), ids.len(), "_mget on {url}: {body}");
    got.into_iter()
        .map(|d| {
            assert!(d.get("error").is_none(), "_mget on {url}: {d}");
            (d["found"] == Value::Bool(true))
                .then(|| (d["_source"].clone(), d["_version"].as_i64().unwrap()))
        })
        .collect()
}

/// How many of `ids` each node's copy holds, in node order.
async fn copies_found(urls: &[String], index: &str, ids: &[&str]) -> Vec<usize> {
    let mut out = Vec::new();
    for url in urls {
        let got = local_mget(url, index, ids).await;
        out.push(got.iter().filter(|g| g.is_some()).count());
    }
    out
}

/// Discovery (OUTBOX_ELASTICSEARCH_DISCOVERY=nodes): given node 1 alone, `_nodes/http` names
/// the other two, which are added once.
#[tokio::test]
#[ignore = "needs the three-node cluster: make labs-cluster"]
async fn cluster_discovery_adds_the_nodes_it_is_not_given() {
    let urls = cluster();
    let cfg = outbox_worker::config::Config::from_pairs([
        ("elasticsearch_url", urls[0].as_str()),
        ("elasticsearch_discovery", "nodes"),
    ])
    .unwrap();
    let client = outbox_worker::bulk::client::BulkClient::new(&cfg).unwrap();
    let mut added = client.discover_once().await.unwrap();
    added.sort();
    let want: Vec<String> = urls[1..].iter().map(|u| label(u)).collect();
    assert_eq!(added, want);
    assert_eq!(client.nodes_up(), (urls.len(), urls.len()));
    assert!(
        client.discover_once().await.unwrap().is_empty(),
        "known nodes are not added twice"
    );
    report(format!(
        "LAB cluster-discovery: given=1 discovered={} nodes={:?}",
        added.len(),
        added
    ));
}
