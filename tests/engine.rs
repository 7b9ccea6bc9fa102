//! The real engine answers `_bulk` per item, and the client classifies what it says:
//! index then read back, external versions (stale -> 409 -> ack), delete of a missing
//! document, a field type conflict, a whole-request refusal (a 513-byte id), gzip request
//! bodies, and a list of nodes whose first refuses connections.

use outbox_harness as harness;

use outbox_worker::{
    bulk::{
        classify::{AckKind, ItemOutcome, RequestOutcome},
        client::BulkClient,
        encode,
    },
    contract::{ErrorReason, Op},
    event::ClaimedEvent,
};
use serde_json::json;

fn event(
    id: i64,
    index: &str,
    doc: &str,
    op: Op,
    payload: Option<serde_json::Value>,
    version: i64,
) -> (ClaimedEvent, Op) {
    (
        ClaimedEvent {
            id,
            index_name: index.into(),
            doc_id: doc.into(),
            op: op.to_string(),
            payload: payload.map(|p| p.to_string()),
            version,
            routing: None,
            attempts: 1,
            deferrals: 0,
            created_epoch: 0.0,
            piece: None,
        },
        op,
    )
}

fn client() -> BulkClient {
    let cfg = outbox_worker::config::Config::from_pairs([(
        "elasticsearch_url",
        harness::engine_url().as_str(),
    )])
    .unwrap();
    BulkClient::new(&cfg).unwrap()
}

async fn send(c: &BulkClient, events: &[(ClaimedEvent, Op)]) -> RequestOutcome {
    let ops: Vec<Op> = events.iter().map(|(_, op)| *op).collect();
    c.send(encode::encode_all(events, None), &ops).await.0
}

#[tokio::test]
async fn bulk_items_are_classified_and_documents_read_back() {
    let engine = harness::Engine::new();
    let index = harness::unique("engine");
    engine.put_index_with_long_n(&index).await;
    let c = client();
    let i = index.as_str();
    let first = send(
        &c,
        &[
            event(
                1,
                i,
                "a",
                Op::Index,
                Some(json!({"n": 1, "t": "é \"q\"\nline"})),
                5,
            ),
            event(2, i, "b", Op::Index, Some(json!({"n": 2})), 1),
            event(3, i, "missing", Op::Delete, None, 1),
            event(
                4,
                i,
                "bad",
                Op::Index,
                Some(json!({"n": "not a number"})),
                1,
            ),
        ],
    )
    .await;
    let RequestOutcome::Items(items) = first else {
        panic!("expected per-item results, got {first:?}")
    };
    assert_eq!(items[0], ItemOutcome::Ack(AckKind::Indexed));
    assert_eq!(items[1], ItemOutcome::Ack(AckKind::Indexed));
    assert_eq!(items[2], ItemOutcome::Ack(AckKind::NotFound));
    match &items[3] {
        ItemOutcome::Fail {
            reason: ErrorReason::Engine(t),
            ..
        } => {
            assert!(
                t == "mapper_parsing_exception" || t == "document_parsing_exception",
                "{t}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        engine.get(i, "a").await,
        Some((json!({"n": 1, "t": "é \"q\"\nline"}), 5))
    );

    // A stale version is refused (409) and counts as done; a newer one wins; delete works.
    let second = send(
        &c,
        &[
            event(5, i, "a", Op::Index, Some(json!({"n": 0})), 4),
            event(6, i, "b", Op::Index, Some(json!({"n": 22})), 2),
            event(7, i, "a", Op::Delete, None, 6),
        ],
    )
    .await;
    let RequestOutcome::Items(items) = second else {
        panic!("{second:?}")
    };
    assert_eq!(
        items,
        vec![
            ItemOutcome::Ack(AckKind::VersionConflict),
            ItemOutcome::Ack(AckKind::Indexed),
            ItemOutcome::Ack(AckKind::Indexed)
        ]
    );
    assert_eq!(engine.get(i, "b").await, Some((json!({"n": 22}), 2)));
    assert_eq!(engine.get(i, "a").await, None);
}

#[tokio::test]
async fn a_513_byte_id_is_refused_for_the_whole_request() {
    let c = client();
    let index = harness::unique("engine_long");
    let outcome = send(
        &c,
        &[
            event(1, &index, "fine", Op::Index, Some(json!({})), 1),
            event(2, &index, &"€".repeat(171), Op::Index, Some(json!({})), 1),
        ],
    )
    .await;
    match outcome {
        RequestOutcome::Split { reason, error } => {
            assert_eq!(
                reason,
                ErrorReason::Engine("action_request_validation_exception".into())
            );
            assert!(error.contains("too long"), "{error}");
        }
        other => panic!("expected a whole-request refusal, got {other:?}"),
    }
    // 512 bytes is fine.
    let ok = send(
        &c,
        &[event(
            3,
            &index,
            &"x".repeat(512),
            Op::Index,
            Some(json!({})),
            1,
        )],
    )
    .await;
    assert_eq!(
        ok,
        RequestOutcome::Items(vec![ItemOutcome::Ack(AckKind::Indexed)])
    );
}

#[tokio::test]
async fn an_unreachable_engine_retries_every_item() {
    let cfg = outbox_worker::config::Config::from_pairs([
        ("elasticsearch_url", "http://127.0.0.1:9"),
        ("request_timeout_seconds", "2"),
    ])
    .unwrap();
    let c = BulkClient::new(&cfg).unwrap();
    let outcome = send(&c, &[event(1, "x", "a", Op::Index, Some(json!({})), 1)]).await;
    assert!(
        matches!(
            &outcome,
            RequestOutcome::RetryAll {
                reason: ErrorReason::EngineUnreachable,
                auth: false,
                ..
            }
        ),
        "{outcome:?}"
    );
}

fn client_with(pairs: &[(&str, &str)]) -> BulkClient {
    let cfg = outbox_worker::config::Config::from_pairs(pairs.iter().copied()).unwrap();
    BulkClient::new(&cfg).unwrap()
}

/// `Content-Encoding: gzip` bodies are accepted (OpenSearch and Elasticsearch both run this).
#[tokio::test]
async fn gzip_request_bodies_are_indexed() {
    let engine = harness::Engine::new();
    let index = harness::unique("gzip");
    let url = harness::engine_url();
    let c = client_with(&[
        ("elasticsearch_url", url.as_str()),
        ("bulk_compression", "gzip"),
    ]);
    let events: Vec<(ClaimedEvent, Op)> = (1..=50)
        .map(|k| {
            let doc = format!("d{k}");
            event(k, &index, &doc, Op::Index, Some(json!({"k": k})), 1)
        })
        .collect();
    let outcome = send(&c, &events).await;
    assert_eq!(
        outcome,
        RequestOutcome::Items(vec![ItemOutcome::Ack(AckKind::Indexed); 50])
    );
    assert_eq!(engine.get(&index, "d7").await.unwrap().0, json!({"k": 7}));
}

/// A node that refuses connections is passed over: the request goes on to the next node in
/// the same send, and /readyz's ping is answered by the live one.
#[tokio::test]
async fn a_refusing_node_in_the_list_hands_the_request_to_the_next() {
    let engine = harness::Engine::new();
    let index = harness::unique("nodes");
    let urls = format!("http://127.0.0.1:9,{}", harness::engine_url());
    let c = client_with(&[
        ("elasticsearch_url", urls.as_str()),
        ("request_timeout_seconds", "5"),
    ]);
    for k in 1..=3 {
        let doc = format!("d{k}");
        let outcome = send(
            &c,
            &[event(k, &index, &doc, Op::Index, Some(json!({"k": k})), 1)],
        )
        .await;
        assert_eq!(
            outcome,
            RequestOutcome::Items(vec![ItemOutcome::Ack(AckKind::Indexed)]),
            "send {k}"
        );
    }
    assert_eq!(c.nodes_up(), (1, 2), "the refusing node is held down");
    assert_eq!(engine.get(&index, "d3").await.unwrap().0, json!({"k": 3}));
    c.ping().await.expect("ready: one node answers");

    // Every node refusing: the request fails as a whole, once per node.
    let dead = client_with(&[
        (
            "elasticsearch_url",
            "http://127.0.0.1:9,http://127.0.0.1:10",
        ),
        ("request_timeout_seconds", "2"),
    ]);
    let outcome = send(&dead, &[event(1, "x", "a", Op::Index, Some(json!({})), 1)]).await;
    assert!(
        matches!(
            &outcome,
            RequestOutcome::RetryAll {
                reason: ErrorReason::EngineUnreachable,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(dead.nodes_up(), (0, 2));
    assert!(dead.ping().await.is_err(), "not ready: no node answers");
}
