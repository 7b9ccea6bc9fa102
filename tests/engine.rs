//! The real engine answers `_bulk` per item, and the client classifies what it says:
//! index then read back, external versions (stale -> 409 -> ack), delete of a missing
//! document, a field type conflict, and a whole-request refusal (a 513-byte id).

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
