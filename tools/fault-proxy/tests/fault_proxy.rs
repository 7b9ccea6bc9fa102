//! The fault proxy seen from a client, in front of the real engine
//! (`OUTBOX_TEST_ELASTICSEARCH_URL`, default http://127.0.0.1:9200): each fault kind as the
//! worker would meet it, and what really reached the engine behind it.
//!
//! Every test starts its own proxy on free ports (in this process, but for the test of the
//! command line) and uses its own index. Set `FAULT_PROXY_TEST_LOG=1` to see the proxies'
//! logs.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, ChildStdout, Command, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

use fault_proxy::{ControlClient, Options};
use outbox_harness::{engine_url, unique};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

/// What the worker asks for (src/bulk/client.rs).
const FILTER_PATH: &str = "errors,items.*.status,items.*.error.type,items.*.error.reason";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A proxy in this process in front of the real engine, stopped on drop.
struct Proxy {
    // Held: the proxy stops when it is dropped.
    _running: fault_proxy::Proxy,
    addr: SocketAddr,
    /// http://ADDR of the proxied engine.
    url: String,
    control: ControlClient,
}

impl Proxy {
    fn start(seed: u64) -> Proxy {
        static LOG: Once = Once::new();
        LOG.call_once(|| {
            if std::env::var_os("FAULT_PROXY_TEST_LOG").is_some() {
                let _ = tracing_subscriber::fmt()
                    .with_writer(std::io::stderr)
                    .try_init();
            }
        });
        let mut opts = Options::new(engine_url().parse().unwrap());
        opts.seed = seed;
        let running = fault_proxy::Proxy::start(opts).expect("start the fault proxy");
        Proxy {
            addr: running.addr,
            url: running.url.clone(),
            control: running.control.clone(),
            _running: running,
        }
    }

    /// A control call that must succeed.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.control
            .call(method, path, body.as_ref())
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    async fn put_fault(&self, spec: Value) -> Value {
        self.control.set(&spec).await.unwrap()
    }

    async fn clear(&self) {
        self.control.clear().await.unwrap();
    }

    async fn stats(&self) -> Value {
        self.control.stats().await.unwrap()
    }

    fn health_url(&self) -> String {
        health_url(&self.url)
    }
}

fn health_url(base: &str) -> String {
    format!("{base}/_cluster/health")
}

/// The fault-proxy command, killed on drop: its first stdout line is a contract with
/// scripts, and `--script` runs a schedule from start-up.
struct ProxyProcess {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    url: String,
    control: ControlClient,
}

impl ProxyProcess {
    fn start(extra: &[&str]) -> ProxyProcess {
        let upstream = engine_url();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fault-proxy"))
            .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
            .args(["--upstream", &upstream])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("FAULT_PROXY_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn fault-proxy");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("first line of fault-proxy");
        // fault-proxy listening on ADDR upstream URL control ADDR
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            let at = words.iter().position(|w| *w == key);
            at.and_then(|i| words.get(i + 1))
                .unwrap_or_else(|| panic!("no {key:?} in the first line {line:?}"))
                .to_string()
        };
        assert!(line.starts_with("fault-proxy listening on "), "{line:?}");
        assert_eq!(after("upstream"), upstream);
        let addr: SocketAddr = after("on").parse().unwrap();
        let control: SocketAddr = after("control").parse().unwrap();
        ProxyProcess {
            child,
            _stdout: stdout,
            addr,
            url: format!("http://{addr}"),
            control: ControlClient::new(&format!("http://{control}")),
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// `index` actions with an external version, like the worker's.
fn bulk_body(index: &str, ids: &[String], version: u64) -> String {
    let mut body = String::new();
    for (i, id) in ids.iter().enumerate() {
        let action = json!({"index": {"_index": index, "_id": id,
                                      "version": version, "version_type": "external"}});
        body.push_str(&format!("{action}\n{}\n", json!({"n": i})));
    }
    body
}

async fn bulk(
    client: &reqwest::Client,
    base: &str,
    body: String,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .post(format!("{base}/_bulk?filter_path={FILTER_PATH}"))
        .header(CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .send()
        .await
}

/// Send a bulk and read its whole answer (a reset may break either step).
async fn bulk_json(
    client: &reqwest::Client,
    base: &str,
    body: String,
) -> Result<Value, reqwest::Error> {
    let resp = bulk(client, base, body).await?;
    let status = resp.status();
    let text = resp.text().await?;
    assert_eq!(status, 200, "{text}");
    Ok(serde_json::from_str(&text).unwrap())
}

fn item(v: &Value, i: usize) -> &Value {
    let item = v["items"][i].as_object().expect("an item object");
    item.values().next().expect("one action per item")
}

fn statuses(v: &Value) -> Vec<u64> {
    (0..v["items"].as_array().unwrap().len())
        .map(|i| item(v, i)["status"].as_u64().unwrap())
        .collect()
}

/// Which of the ids exist in the engine, asked directly (not through the proxy).
async fn found(index: &str, ids: &[String]) -> Vec<bool> {
    let resp = client()
        .post(format!("{}/{index}/_mget", engine_url()))
        .json(&json!({"ids": ids}))
        .send()
        .await
        .unwrap();
    if resp.status() == 404 {
        return vec![false; ids.len()];
    }
    let v: Value = resp.json().await.unwrap();
    v["docs"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|d| d["found"] == json!(true))
        .collect()
}

async fn index_exists(index: &str) -> bool {
    let resp = client()
        .head(format!("{}/{index}", engine_url()))
        .send()
        .await
        .unwrap();
    resp.status() == 200
}

async fn delete_index(index: &str) {
    let _ = client()
        .delete(format!("{}/{index}", engine_url()))
        .send()
        .await;
}

/// Poll until `check` holds (a few seconds at most).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pass_through_reuses_connections_and_indexes() {
    let proxy = Proxy::start(0);
    let index = unique("fp_pass");
    let client = client();

    let health = client.get(proxy.health_url()).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ct = health.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    let v: Value = health.json().await.unwrap();
    assert!(v["status"].is_string(), "{v}");

    let docs = ids("d", 3);
    let v = bulk_json(&client, &proxy.url, bulk_body(&index, &docs, 1))
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"errors": false, "items": [
        {"index": {"status": 201}}, {"index": {"status": 201}}, {"index": {"status": 201}}]})
    );
    assert_eq!(found(&index, &docs).await, vec![true; 3]);

    // The same versions again: the engine's own 409s come back untouched.
    let v = bulk_json(&client, &proxy.url, bulk_body(&index, &docs, 1))
        .await
        .unwrap();
    assert_eq!(v["errors"], json!(true));
    assert_eq!(statuses(&v), vec![409; 3]);
    assert_eq!(
        item(&v, 0)["error"]["type"],
        "version_conflict_engine_exception"
    );

    let stats = proxy.stats().await;
    assert_eq!(stats["requests_seen"], 3, "{stats}");
    assert_eq!(stats["forwarded"], 3, "{stats}");
    assert_eq!(stats["upstream_errors"], 0, "{stats}");
    assert_eq!(stats["connections_accepted"], 1, "keep-alive: {stats}");
    assert!(
        stats["faults_injected"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n == 0),
        "{stats}"
    );
    delete_index(&index).await;
}

#[tokio::test]
async fn refuse_closes_the_port_until_cleared() {
    let proxy = Proxy::start(0);
    let pooled = client();
    assert_eq!(
        pooled
            .get(proxy.health_url())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let v = proxy.put_fault(json!({"kind": "refuse"})).await;
    assert_eq!(v["fault"], json!({"kind": "refuse"}));
    let err = TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let err = client().get(proxy.health_url()).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // The established keep-alive connection went down with the listener.
    assert!(pooled.get(proxy.health_url()).send().await.is_err());
    eventually("the idle connection counted as refused", async || {
        proxy.stats().await["connections_refused"] == 1
    })
    .await;

    proxy.clear().await;
    // Same port again, and the same client recovers.
    assert_eq!(
        pooled
            .get(proxy.health_url())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let stats = proxy.stats().await;
    assert_eq!(stats["faults_injected"]["refuse"], 1, "{stats}");
    assert_eq!(stats["listening"], true, "{stats}");
    assert_eq!(stats["requests_seen"], 2, "{stats}");
}

#[tokio::test]
async fn whole_request_statuses_never_reach_the_engine() {
    let proxy = Proxy::start(0);
    let index = unique("fp_status");
    let client = client();
    for (status, error_type) in [
        (429, "es_rejected_execution_exception"),
        (503, "cluster_block_exception"),
        (413, "content_too_long_exception"),
        (400, "action_request_validation_exception"),
        (401, "security_exception"),
        (403, "security_exception"),
    ] {
        proxy
            .put_fault(json!({"kind": "status", "status": status}))
            .await;
        let resp = bulk(&client, &proxy.url, bulk_body(&index, &ids("s", 2), 1))
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["error"]["type"], error_type, "{v}");
        assert!(v["error"]["reason"].as_str().unwrap().contains("injected"));
    }
    proxy
        .put_fault(
            json!({"kind": "status", "status": 503, "body": "engine down",
                          "content_type": "text/plain"}),
        )
        .await;
    let resp = client.get(proxy.health_url()).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "engine down");

    assert!(!index_exists(&index).await, "nothing reached the engine");
    let stats = proxy.stats().await;
    assert_eq!(stats["faults_injected"]["status"], 7, "{stats}");
    assert_eq!(stats["forwarded"], 0, "{stats}");
    assert_eq!(
        stats["connections_accepted"], 1,
        "statuses keep the connection: {stats}"
    );
}

#[tokio::test]
async fn delays_outlast_the_client_timeout() {
    let proxy = Proxy::start(0);
    let index = unique("fp_delay");
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    // Held before the engine: the client gives up, the request is never applied.
    proxy.put_fault(json!({"kind": "delay", "ms": 3000})).await;
    let started = Instant::now();
    let err = bulk(&impatient, &proxy.url, bulk_body(&index, &ids("a", 1), 1))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(2500));

    // Applied by the engine first, answer held: the client times out all the same.
    proxy
        .put_fault(json!({"kind": "delay", "ms": 3000, "after_upstream": true}))
        .await;
    let err = bulk(&impatient, &proxy.url, bulk_body(&index, &ids("b", 1), 1))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    eventually("b0 indexed behind the timeout", async || {
        found(&index, &ids("b", 1)).await == [true]
    })
    .await;
    eventually(
        "the first request dropped once its client left",
        async || proxy.stats().await["client_gone"] == 1,
    )
    .await;
    assert_eq!(found(&index, &ids("a", 1)).await, [false]);

    // Within a client's patience: just slow.
    proxy.put_fault(json!({"kind": "delay", "ms": 150})).await;
    let started = Instant::now();
    let resp = client().get(proxy.health_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let stats = proxy.stats().await;
    assert_eq!(stats["faults_injected"]["delay"], 3, "{stats}");
    assert_eq!(stats["forwarded"], 2, "{stats}");
    delete_index(&index).await;
}

#[tokio::test]
async fn resets_break_the_answer() {
    let proxy = Proxy::start(0);
    let index = unique("fp_reset");
    let client = client();

    proxy.put_fault(json!({"kind": "reset", "times": 1})).await;
    let err = bulk_json(&client, &proxy.url, bulk_body(&index, &ids("a", 2), 1))
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(!index_exists(&index).await, "not forwarded");

    // The engine applies it, the answer is cut in the middle of its body.
    proxy
        .put_fault(json!({"kind": "reset", "after_upstream": true, "at": "body", "times": 1}))
        .await;
    let err = bulk_json(&client, &proxy.url, bulk_body(&index, &ids("b", 2), 1))
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(found(&index, &ids("b", 2)).await, [true, true]);

    // `times` used up: the same client works again.
    let v = bulk_json(&client, &proxy.url, bulk_body(&index, &ids("a", 2), 1))
        .await
        .unwrap();
    assert_eq!(statuses(&v), [201, 201]);

    let stats = proxy.stats().await;
    assert_eq!(stats["connections_reset"], 2, "{stats}");
    assert_eq!(stats["faults_injected"]["reset"], 2, "{stats}");
    assert_eq!(stats["forwarded"], 2, "{stats}");
    delete_index(&index).await;
}

#[tokio::test]
async fn rejected_items_were_really_indexed() {
    let proxy = Proxy::start(0);
    let index = unique("fp_items");
    let client = client();
    let docs = ids("d", 6);

    proxy
        .put_fault(
            json!({"kind": "items", "status": 429, "every": 2, "times": 1,
                          "path_prefix": "/_bulk"}),
        )
        .await;
    let v = bulk_json(&client, &proxy.url, bulk_body(&index, &docs, 1))
        .await
        .unwrap();
    assert_eq!(v["errors"], true);
    assert_eq!(statuses(&v), [201, 429, 201, 429, 201, 429]);
    assert_eq!(
        *item(&v, 3),
        json!({"status": 429, "error": {"type": "es_rejected_execution_exception",
                                        "reason": "injected"}})
    );
    // The engine did apply every write, the rejected ones included.
    assert_eq!(found(&index, &docs).await, vec![true; 6]);

    // The retry of the rejected items meets the engine's version conflict (= done).
    let retry: Vec<String> = [1, 3, 5].iter().map(|i| docs[*i].clone()).collect();
    let v = bulk_json(&client, &proxy.url, bulk_body(&index, &retry, 1))
        .await
        .unwrap();
    assert_eq!(statuses(&v), [409, 409, 409]);
    assert_eq!(
        item(&v, 0)["error"]["type"],
        "version_conflict_engine_exception"
    );

    let stats = proxy.stats().await;
    assert_eq!(stats["items_rewritten"], 3, "{stats}");
    assert_eq!(stats["faults_injected"]["items"], 1, "{stats}");
    assert_eq!(stats["forwarded"], 2, "{stats}");
    delete_index(&index).await;
}

/// Positions of the items a seeded `fraction` fault rejects in one 40-item bulk.
async fn rejected_positions(proxy: &Proxy, index: &str, version: u64) -> Vec<usize> {
    proxy
        .put_fault(json!({"kind": "items", "status": 503, "fraction": 0.5, "times": 1}))
        .await;
    let v = bulk_json(
        &client(),
        &proxy.url,
        bulk_body(index, &ids("d", 40), version),
    )
    .await
    .unwrap();
    let mut positions = Vec::new();
    for (i, status) in statuses(&v).into_iter().enumerate() {
        if status == 503 {
            assert_eq!(item(&v, i)["error"]["type"], "unavailable_shards_exception");
            positions.push(i);
        } else {
            assert!(status == 201 || status == 200, "{v}");
        }
    }
    positions
}

#[tokio::test]
async fn item_fractions_follow_the_seed() {
    let index = unique("fp_fraction");
    let a = Proxy::start(42);
    let first = rejected_positions(&a, &index, 1).await;
    assert!(!first.is_empty() && first.len() < 40, "{first:?}");
    // Setting the fault again starts its RNG afresh: the same items are chosen.
    assert_eq!(rejected_positions(&a, &index, 2).await, first);
    // Another proxy with the same seed agrees; another seed does not.
    let b = Proxy::start(42);
    assert_eq!(rejected_positions(&b, &index, 3).await, first);
    let c = Proxy::start(7);
    assert_ne!(rejected_positions(&c, &index, 4).await, first);
    assert_eq!(
        a.stats().await["items_rewritten"],
        2 * first.len(),
        "counted per item"
    );
    delete_index(&index).await;
}

#[tokio::test]
async fn times_and_path_prefix_bound_a_fault() {
    let proxy = Proxy::start(0);
    let index = unique("fp_times");
    let client = client();
    let v = proxy
        .put_fault(json!({"kind": "status", "status": 429, "times": 2, "path_prefix": "/_bulk"}))
        .await;
    assert_eq!(v["remaining"], 2);

    // Health checks are not targeted and do not spend the budget.
    let resp = client.get(proxy.health_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for _ in 0..2 {
        let resp = bulk(&client, &proxy.url, bulk_body(&index, &ids("t", 1), 1))
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        resp.bytes().await.unwrap();
    }
    let v = bulk_json(&client, &proxy.url, bulk_body(&index, &ids("t", 1), 1))
        .await
        .unwrap();
    assert_eq!(statuses(&v), [201]);

    let v = proxy.call(reqwest::Method::GET, "/fault", None).await;
    assert_eq!(v["fault"], Value::Null, "used up: {v}");
    let stats = proxy.stats().await;
    assert_eq!(stats["requests_seen"], 4, "{stats}");
    assert_eq!(stats["faults_injected"]["status"], 2, "{stats}");
    assert_eq!(stats["forwarded"], 2, "{stats}");
    delete_index(&index).await;
}

#[tokio::test]
async fn scripts_schedule_outages() {
    // Built first: loading the system roots can take a while on a loaded machine.
    let client = client();
    // From the command line (the binary), relative to start-up: down for 1.5 s, then back.
    let path = std::env::temp_dir().join(format!("{}.json", unique("fault-proxy-script")));
    std::fs::write(
        &path,
        json!([{"at_ms": 0, "fault": {"kind": "status", "status": 503}},
               {"at_ms": 1500, "fault": null}])
        .to_string(),
    )
    .unwrap();
    let spawned = Instant::now();
    let proxy = ProxyProcess::start(&["--script", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        client
            .get(health_url(&proxy.url))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    eventually("the scripted outage ends", async || {
        client
            .get(health_url(&proxy.url))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(spawned.elapsed() >= Duration::from_millis(1500));
    let script = proxy.control.script().await.unwrap();
    assert_eq!(script["applied"], 2, "{script}");
    assert_eq!(script["running"], false, "{script}");

    // At run time: refused, then back on the same port.
    proxy
        .control
        .run_script(&json!([{"at_ms": 0, "fault": {"kind": "refuse"}},
                            {"at_ms": 500, "fault": null}]))
        .await
        .unwrap();
    eventually("the port is refused", async || {
        TcpStream::connect(proxy.addr).is_err()
    })
    .await;
    eventually("the port is back", async || {
        TcpStream::connect(proxy.addr).is_ok()
    })
    .await;
    assert_eq!(
        client
            .get(health_url(&proxy.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        proxy.control.stats().await.unwrap()["faults_injected"]["refuse"],
        1
    );
}

#[tokio::test]
async fn unsupported_input_is_refused_plainly() {
    let proxy = Proxy::start(0);

    // Chunked request bodies: 501, then the connection is closed.
    let mut raw = TcpStream::connect(proxy.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(
        b"POST /_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 501 "), "{answer}");

    // Expect: 100-continue (curl's habit for large bodies) is honoured.
    let mut raw = TcpStream::connect(proxy.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(
        b"POST /_search?size=0 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut line = [0u8; 25];
    raw.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"HTTP/1.1 100 Continue\r\n\r\n");
    raw.write_all(b"{}").unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

    // Fault specs with a typo or a contradiction are refused, not ignored.
    let http = client();
    for bad in [
        json!({"kind": "items", "status": 429, "fracton": 0.3}),
        json!({"kind": "refuse", "times": 2}),
        json!({"kind": "status", "status": 200}),
    ] {
        let resp = http
            .put(format!("{}/fault", proxy.control.url))
            .body(bad.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].is_string(), "{v}");
    }
    let resp = http
        .put(format!("{}/script", proxy.control.url))
        .body(r#"[{"at_ms":0,"fault":{"kind":"nope"}}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v = proxy.call(reqwest::Method::GET, "/fault", None).await;
    assert_eq!(v["fault"], Value::Null);
    let stats = proxy.stats().await;
    assert_eq!(
        stats["requests_seen"], 1,
        "only the complete request: {stats}"
    );
}
