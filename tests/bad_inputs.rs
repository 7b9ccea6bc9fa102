//! The bad-input catalogue (docs/bad-inputs.md): one test per row. Config rows run the
//! real binary; event rows go through a real worker into the real engine.

use outbox_harness as harness;

use std::time::Duration;

use outbox_worker::{config::NotifyMode, contract::NewEvent};
use serde_json::{Value, json};

use harness::{Engine, InProcessWorker, TestSchema};

// ---------- configuration: one clear line, non-zero exit ----------

fn start_with(env: &[(&str, &str)]) -> (bool, String) {
    let (code, err) = start_with_code(env);
    (code == Some(0), err)
}

fn start_with_code(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = harness::worker_command();
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("OUTBOX_METRICS_ADDR", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.code(), err)
}

/// Refused before anything starts: exit 2 and one line, the whole of `line`.
fn refused_exit_2(env: &[(&str, &str)], line: &str) {
    let (code, err) = start_with_code(env);
    assert_eq!(code, Some(2), "{env:?}: {err}");
    assert_eq!(err, format!("outbox-worker: {line}"));
}

fn refused(env: &[(&str, &str)], needle: &str) {
    let (ok, err) = start_with(env);
    assert!(!ok, "{env:?} must stop start-up");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("outbox-worker: "), "{err}");
    assert!(last.contains(needle), "{needle:?} not in {last:?}");
}

#[test]
fn c01_non_number() {
    refused(
        &[("OUTBOX_BULK_SIZE", "lots")],
        "OUTBOX_BULK_SIZE=\"lots\": expected an integer from 1 to 10000",
    );
}

#[test]
fn c02_zero() {
    refused(
        &[("OUTBOX_CONCURRENCY", "0")],
        "OUTBOX_CONCURRENCY=\"0\": expected an integer from 1 to 256",
    );
}

#[test]
fn c03_negative() {
    refused(
        &[("OUTBOX_POLL_INTERVAL_SECONDS", "-1")],
        "OUTBOX_POLL_INTERVAL_SECONDS=\"-1\"",
    );
}

#[test]
fn c04_huge() {
    refused(
        &[("OUTBOX_MAX_ATTEMPTS", "1000000000000")],
        "OUTBOX_MAX_ATTEMPTS=\"1000000000000\"",
    );
}

#[test]
fn c05_lease_shorter_than_timeout() {
    refused(
        &[
            ("OUTBOX_LEASE_SECONDS", "20"),
            ("OUTBOX_REQUEST_TIMEOUT_SECONDS", "30"),
        ],
        "OUTBOX_LEASE_SECONDS=\"20\": expected more than OUTBOX_REQUEST_TIMEOUT_SECONDS=\"30\"",
    );
}

#[test]
fn c06_engine_url_without_scheme() {
    refused(
        &[("OUTBOX_ELASTICSEARCH_URL", "localhost:9200")],
        "OUTBOX_ELASTICSEARCH_URL",
    );
}

#[test]
fn c07_database_url_malformed() {
    refused(
        &[("OUTBOX_DATABASE_URL", "postgres//nowhere")],
        "OUTBOX_DATABASE_URL",
    );
}

#[test]
fn c08_database_missing() {
    let base = url::Url::parse(&harness::pg_base_url()).unwrap();
    let mut missing = base.clone();
    missing.set_path("/no_such_database_here");
    refused(
        &[("OUTBOX_DATABASE_URL", missing.as_str())],
        "database \"no_such_database_here\" does not exist",
    );
}

#[test]
fn c09_database_unreachable() {
    refused(
        &[(
            "OUTBOX_DATABASE_URL",
            "postgres://postgres:x@127.0.0.1:9/outbox",
        )],
        "cannot connect to the database",
    );
}

#[test]
fn c10_schema_not_migrated() {
    // A database without the outbox tables: say what to do.
    let (ok, err) = start_with(&[(
        "OUTBOX_DATABASE_URL",
        &harness::schema_url(&harness::pg_base_url(), "not_migrated_schema"),
    )]);
    assert!(!ok);
    assert!(err.contains("run `outbox-worker migrate` first"), "{err}");
}

#[test]
fn c11_api_key_and_username_together() {
    refused(
        &[
            ("OUTBOX_ELASTICSEARCH_API_KEY", "k"),
            ("OUTBOX_ELASTICSEARCH_USERNAME", "u"),
        ],
        "set either OUTBOX_ELASTICSEARCH_API_KEY or OUTBOX_ELASTICSEARCH_USERNAME/OUTBOX_ELASTICSEARCH_PASSWORD, not both",
    );
}

#[test]
fn c12_max_processing_below_request_timeout() {
    refused(
        &[("OUTBOX_MAX_PROCESSING_SECONDS", "10")],
        "OUTBOX_MAX_PROCESSING_SECONDS=\"10\": expected at least OUTBOX_REQUEST_TIMEOUT_SECONDS=\"30\"",
    );
}

#[test]
fn c28_engine_url_list_with_an_empty_entry() {
    refused_exit_2(
        &[(
            "OUTBOX_ELASTICSEARCH_URL",
            "http://127.0.0.1:9201,,http://127.0.0.1:9203",
        )],
        "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 3: empty (expected a URL with scheme http or https, or several separated by commas)",
    );
    refused_exit_2(
        &[("OUTBOX_ELASTICSEARCH_URL", "http://127.0.0.1:9201,")],
        "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 2: empty (expected a URL with scheme http or https, or several separated by commas)",
    );
}

#[test]
fn c32_delete_record_retention_below_the_backoff_cap() {
    refused(
        &[("OUTBOX_DELETE_RECORD_RETENTION_SECONDS", "120")],
        "OUTBOX_DELETE_RECORD_RETENTION_SECONDS=\"120\": expected at least OUTBOX_MAX_BACKOFF_SECONDS=\"300\"",
    );
}

#[test]
fn c29_engine_url_list_with_a_malformed_entry() {
    refused_exit_2(
        &[(
            "OUTBOX_ELASTICSEARCH_URL",
            "http://127.0.0.1:9201,127.0.0.1:9202",
        )],
        "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 2 \"127.0.0.1:9202\": expected a URL with scheme http or https",
    );
    // A password in a refused entry is never echoed.
    refused_exit_2(
        &[(
            "OUTBOX_ELASTICSEARCH_URL",
            "http://127.0.0.1:9201,ftp://user:s3cret@h",
        )],
        "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 2 \"ftp://user:<redacted>@h/\": expected a URL with scheme http or https",
    );
}

#[test]
fn c30_engine_url_list_with_a_node_twice() {
    refused_exit_2(
        &[(
            "OUTBOX_ELASTICSEARCH_URL",
            "http://127.0.0.1:9201,http://127.0.0.1:9201/",
        )],
        "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 2 \"http://127.0.0.1:9201/\": given twice",
    );
}

#[test]
fn c31_unknown_compression_or_discovery() {
    refused_exit_2(
        &[("OUTBOX_BULK_COMPRESSION", "zstd")],
        "invalid OUTBOX_BULK_COMPRESSION=\"zstd\": expected none or gzip",
    );
    refused_exit_2(
        &[("OUTBOX_ELASTICSEARCH_DISCOVERY", "sniff")],
        "invalid OUTBOX_ELASTICSEARCH_DISCOVERY=\"sniff\": expected off or nodes",
    );
}

#[test]
fn c33_delete_record_retention_not_a_duration() {
    refused(
        &[("OUTBOX_DELETE_RECORD_RETENTION_SECONDS", "7d")],
        "OUTBOX_DELETE_RECORD_RETENTION_SECONDS=\"7d\": expected a number of seconds from 60 to 31536000",
    );
}

#[tokio::test]
async fn c13_metrics_port_already_in_use() {
    let s = TestSchema::new("bad_port", NotifyMode::Adaptive).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = harness::worker_command()
        .arg("run")
        .env("OUTBOX_DATABASE_URL", &s.url)
        .env("OUTBOX_METRICS_ADDR", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("cannot listen on OUTBOX_METRICS_ADDR={addr}")),
        "{err}"
    );
}

// ---------- events: indexed, acked, or failed with a reason; never lost ----------

/// What became of one row, written raw (most of these break the producer's contract): None =
/// acked (gone from the outbox), else (status, reason).
async fn outcome_of(
    row: harness::RawRow<'_>,
    mapping: Option<Value>,
) -> (Option<(String, Option<String>)>, String) {
    let s = TestSchema::new("bad", NotifyMode::Adaptive).await;
    let index = harness::unique("bad");
    let engine = Engine::new();
    if let Some(m) = mapping {
        engine.put_index(&index, m).await;
    }
    let (ix, doc, op, payload, version) = row;
    let ix = if ix.is_empty() { index.as_str() } else { ix };
    let ids = s.insert_raw(&[(ix, doc, op, payload, version)]).await;
    let w = InProcessWorker::start(s.config(&[]));
    s.wait_drained(Duration::from_secs(60)).await;
    w.stop().await;
    (s.state(ids[0]).await, index)
}

fn failed(reason: &str) -> Option<(String, Option<String>)> {
    Some(("failed".into(), Some(reason.into())))
}

#[tokio::test]
async fn e01_payload_array() {
    assert_eq!(
        outcome_of(("", "d", "index", Some(json!([1, 2])), None), None)
            .await
            .0,
        failed("invalid_event")
    );
}

#[tokio::test]
async fn e02_payload_string_or_json_null() {
    assert_eq!(
        outcome_of(("", "d", "index", Some(json!("text")), None), None)
            .await
            .0,
        failed("invalid_event")
    );
    assert_eq!(
        outcome_of(("", "d", "index", Some(Value::Null), None), None)
            .await
            .0,
        failed("invalid_event")
    );
}

#[tokio::test]
async fn e03_index_without_payload() {
    assert_eq!(
        outcome_of(("", "d", "index", None, None), None).await.0,
        failed("invalid_event")
    );
}

#[tokio::test]
async fn e04_null_doc_id_is_refused_at_insert() {
    let s = TestSchema::new("bad_null", NotifyMode::Adaptive).await;
    let err = s
        .client()
        .await
        // Raw SQL: a null doc_id is what the contract (and the table) forbids.
        .execute(
            "INSERT INTO outbox_events (index_name, doc_id, op) VALUES ('i', NULL, 'index')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("doc_id"),
        "{err:?}"
    );
}

#[tokio::test]
async fn e05_empty_doc_id() {
    assert_eq!(
        outcome_of(("", "", "index", Some(json!({})), None), None)
            .await
            .0,
        failed("invalid_event")
    );
}

#[tokio::test]
async fn e06_doc_id_of_513_bytes() {
    let id = "é".repeat(256) + "x"; // 513 bytes in UTF-8
    assert_eq!(id.len(), 513);
    assert_eq!(
        outcome_of(("", &id, "index", Some(json!({})), None), None)
            .await
            .0,
        failed("action_request_validation_exception")
    );
}

#[tokio::test]
async fn e07_unicode_and_slash_doc_ids_are_indexed() {
    for id in ["ünïcødé-😀-日本", "a/b/c", "with space", "q\"uote"] {
        let (state, index) =
            outcome_of(("", id, "index", Some(json!({"id": id})), None), None).await;
        assert_eq!(state, None, "{id} acked");
        assert_eq!(
            Engine::new().get(&index, id).await.map(|d| d.0),
            Some(json!({"id": id})),
            "{id}"
        );
    }
}

#[tokio::test]
async fn e08_unknown_op() {
    assert_eq!(
        outcome_of(("", "d", "upsert", Some(json!({})), None), None)
            .await
            .0,
        failed("invalid_event")
    );
}

#[tokio::test]
async fn e09_delete_of_a_missing_document_is_acked() {
    assert_eq!(
        outcome_of(("", "never-there", "delete", None, None), None)
            .await
            .0,
        None
    );
}

#[tokio::test]
async fn e10_enormous_payload_is_sent_alone_and_indexed() {
    // 8 MB: above the 5 MiB chunk byte cap (so it goes alone), below the engine's 100 MB.
    let big = json!({"blob": "x".repeat(8 * 1024 * 1024)});
    let (state, index) = outcome_of(("", "big", "index", Some(big), None), None).await;
    assert_eq!(state, None);
    assert!(Engine::new().get(&index, "big").await.is_some());
}

#[tokio::test]
async fn e11_deeply_nested_json_is_refused_by_the_engine() {
    let mut v = json!(1);
    for _ in 0..60 {
        v = json!({ "n": v });
    }
    let (state, _) = outcome_of(("", "deep", "index", Some(v), None), None).await;
    let (status, reason) = state.expect("kept as failed");
    assert_eq!(status, "failed");
    assert!(
        matches!(
            reason.as_deref(),
            Some(
                "mapper_parsing_exception"
                    | "document_parsing_exception"
                    | "illegal_argument_exception"
            )
        ),
        "{reason:?}"
    );
}

#[tokio::test]
async fn e12_field_type_conflicting_with_the_mapping() {
    let mapping = json!({"mappings": {"properties": {"price": {"type": "long"}}}});
    let (state, _) = outcome_of(
        ("", "d", "index", Some(json!({"price": "cheap"})), None),
        Some(mapping),
    )
    .await;
    let (status, reason) = state.unwrap();
    assert_eq!(status, "failed");
    assert!(
        matches!(
            reason.as_deref(),
            Some("mapper_parsing_exception" | "document_parsing_exception")
        ),
        "{reason:?}"
    );
}

#[tokio::test]
async fn e13_negative_doc_version() {
    assert_eq!(
        outcome_of(("", "d", "index", Some(json!({})), Some(-5)), None)
            .await
            .0,
        failed("invalid_event")
    );
}

#[tokio::test]
async fn e14_backwards_doc_version_is_acked_and_changes_nothing() {
    let s = TestSchema::new("bad_back", NotifyMode::Adaptive).await;
    let index = harness::unique("bad_back");
    let w = InProcessWorker::start(s.config(&[]));
    s.insert(&[NewEvent::index(index.as_str(), "d", json!({"v": 10})).version(10)])
        .await;
    s.wait_drained(Duration::from_secs(20)).await;
    s.insert(&[NewEvent::index(index.as_str(), "d", json!({"v": 3})).version(3)])
        .await;
    s.wait_drained(Duration::from_secs(20)).await;
    w.stop().await;
    assert_eq!(s.total().await, 0, "acked (version conflict), not failed");
    assert_eq!(
        Engine::new().get(&index, "d").await,
        Some((json!({"v": 10}), 10))
    );
}

#[tokio::test]
async fn e15_index_name_the_engine_refuses() {
    for name in ["Upper_Case", "_leading_underscore", "has#hash"] {
        assert_eq!(
            outcome_of((name, "d", "index", Some(json!({})), None), None)
                .await
                .0,
            failed("invalid_index_name_exception"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn e16_empty_index_name() {
    let s = TestSchema::new("bad_noindex", NotifyMode::Adaptive).await;
    let ids = s.insert(&[NewEvent::index("", "d", json!({}))]).await;
    let w = InProcessWorker::start(s.config(&[]));
    s.wait_drained(Duration::from_secs(20)).await;
    w.stop().await;
    assert_eq!(s.state(ids[0]).await, failed("invalid_event"));
}
