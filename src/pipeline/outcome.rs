//! Each event's outcome, decided without I/O: from what the engine said about the event (its
//! bulk item, or its whole request) to what the database is told (ack, superseded, retry
//! after a delay, or fail with a reason), then grouped into one write per kind for the store.

use std::time::Duration;

use rand::Rng;

use crate::{
    backoff::EventBackoff,
    bulk::classify::{AckKind, ItemOutcome},
    contract::ErrorReason,
    deletes::DeleteRecord,
    event::ClaimedEvent,
    store::outcomes::{Fail, Outcomes, Retry},
};

/// What becomes of one claimed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The engine holds this version, or a newer one: delete the event.
    Ack(AckKind),
    /// A newer version of the same document was in the same claim and decides the document:
    /// delete the event unsent.
    Superseded,
    /// An index event at or below the version of a recorded delete of its document
    /// (`deleted_version`): acked unsent, so a deleted document never comes back
    /// (deletes.rs).
    SupersededByDelete { deleted_version: i64 },
    /// Back to pending after `delay`. `counted`: the event's own failure, which uses up its
    /// attempt; otherwise a deferral (not the event's fault), which refunds it.
    Retry {
        delay: Duration,
        reason: ErrorReason,
        error: String,
        counted: bool,
    },
    /// Terminal, with a short stable reason.
    Fail { reason: ErrorReason, error: String },
}

impl Decision {
    /// An event that cannot be sent at all (`event::validate` says why).
    pub fn invalid(why: String) -> Decision {
        Decision::Fail {
            reason: ErrorReason::InvalidEvent,
            error: why,
        }
    }
}

/// The engine's verdict on `event` becomes a decision. Retries and deferrals both back off
/// by the event's whole history (`EventBackoff::delay`, as the reclaimer does), so nothing
/// spins, whichever path retries it.
pub fn decide(
    item: ItemOutcome,
    event: &ClaimedEvent,
    backoff: &EventBackoff,
    rng: &mut impl Rng,
) -> Decision {
    let counted = matches!(item, ItemOutcome::Retry { .. });
    match item {
        ItemOutcome::Ack(kind) => Decision::Ack(kind),
        ItemOutcome::Retry { reason, error } | ItemOutcome::Defer { reason, error } => {
            Decision::Retry {
                delay: backoff.delay(event.attempts, event.deferrals, rng),
                reason,
                error,
                counted,
            }
        }
        ItemOutcome::Fail { reason, error } => Decision::Fail { reason, error },
    }
}

/// The decisions of one chunk as the store writes them: one statement per kind; with
/// `record_deletes`, the record of each acked delete, written with the acks.
pub fn writes(decided: &[(ClaimedEvent, Decision)], record_deletes: bool) -> Outcomes {
    let mut o = Outcomes::default();
    for (e, d) in decided {
        match d {
            Decision::Ack(_) => {
                o.ack.push(e.held());
                if record_deletes && let Some(r) = DeleteRecord::of(e) {
                    o.deletes.push(r);
                }
            }
            Decision::Superseded | Decision::SupersededByDelete { .. } => o.ack.push(e.held()),
            Decision::Retry {
                delay,
                reason,
                error,
                counted,
            } => o.retry.push(Retry {
                event: e.held(),
                delay_seconds: delay.as_secs_f64(),
                reason: reason.clone(),
                error: error.clone(),
                counted: *counted,
            }),
            Decision::Fail { reason, error } => o.fail.push(Fail {
                event: e.held(),
                reason: reason.clone(),
                error: error.clone(),
            }),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bulk::classify::{RequestOutcome, classify_response},
        contract::Op,
        event::{Held, ev},
        reclaim,
        store::reclaim::Stuck,
    };
    use rand::{SeedableRng, rngs::StdRng};

    const BACKOFF: EventBackoff = EventBackoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(300),
    };

    /// Event `id` at its `attempts`-th claim after `deferrals` deferrals.
    fn event(id: i64, attempts: i32, deferrals: i32) -> ClaimedEvent {
        ClaimedEvent {
            attempts,
            deferrals,
            ..ev(id, &id.to_string(), 1)
        }
    }

    /// Classify a literal `_bulk` answer, then decide per event.
    fn decide_all(status: u16, body: &str, events: &[(ClaimedEvent, Op)]) -> Vec<Decision> {
        let actions: Vec<Op> = events.iter().map(|(_, a)| *a).collect();
        let RequestOutcome::Items(items) = classify_response(status, body.as_bytes(), &actions)
        else {
            panic!("expected items");
        };
        let mut rng = StdRng::seed_from_u64(11);
        items
            .into_iter()
            .zip(events)
            .map(|(item, (e, _))| decide(item, e, &BACKOFF, &mut rng))
            .collect()
    }

    #[test]
    fn a_mixed_elasticsearch_answer() {
        let body = r#"{"took":3,"errors":true,"items":[
          {"index":{"_index":"p","_id":"1","_version":5,"result":"created","status":201}},
          {"index":{"_index":"p","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict, current version [9] is higher or equal to the one provided [3]"}}},
          {"delete":{"_index":"p","_id":"3","_version":1,"result":"not_found","status":404}},
          {"index":{"_index":"p","_id":"4","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"}}},
          {"index":{"_index":"p","_id":"5","status":400,"error":{"type":"document_parsing_exception","reason":"[1:10] failed to parse field [n] of type [long]"}}},
          {"index":{"_index":"p","_id":"6","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}
        ]}"#;
        let events = [
            (event(1, 1, 0), Op::Index),
            (event(2, 1, 0), Op::Index),
            (event(3, 1, 0), Op::Delete),
            (event(4, 2, 3), Op::Index),
            (event(5, 1, 0), Op::Index),
            (event(6, 4, 1), Op::Index),
        ];
        let got = decide_all(200, body, &events);
        assert_eq!(got[0], Decision::Ack(AckKind::Indexed));
        assert_eq!(got[1], Decision::Ack(AckKind::VersionConflict));
        assert_eq!(got[2], Decision::Ack(AckKind::NotFound));
        match &got[3] {
            Decision::Retry {
                delay,
                reason,
                counted: false,
                ..
            } => {
                assert_eq!(reason, "es_rejected_execution_exception");
                // 2 attempts + 3 deferrals: the fifth try, ceiling 16 s.
                assert!(*delay <= Duration::from_secs(16), "{delay:?}");
            }
            other => panic!("a 429 item is a deferral: {other:?}"),
        }
        match &got[4] {
            Decision::Fail { reason, error } => {
                assert_eq!(reason, "document_parsing_exception");
                assert!(error.contains("failed to parse field [n]"));
            }
            other => panic!("{other:?}"),
        }
        match &got[5] {
            Decision::Retry {
                delay,
                reason,
                counted: true,
                ..
            } => {
                assert_eq!(reason, "unavailable_shards_exception");
                assert!(*delay <= Duration::from_secs(16), "{delay:?}");
            }
            other => panic!("a 5xx item uses up its attempt: {other:?}"),
        }
    }

    #[test]
    fn an_all_acked_answer_in_the_filter_path_shape() {
        let body =
            r#"{"errors":false,"items":[{"index":{"status":201}},{"delete":{"status":200}}]}"#;
        let events = [(event(1, 1, 0), Op::Index), (event(2, 1, 0), Op::Delete)];
        assert_eq!(
            decide_all(200, body, &events),
            vec![Decision::Ack(AckKind::Indexed); 2]
        );
    }

    #[test]
    fn an_index_404_fails_while_a_delete_404_is_done() {
        let body = r#"{"errors":true,"items":[
          {"index":{"status":404,"error":{"type":"index_not_found_exception","reason":"no such index [x]"}}},
          {"delete":{"status":404,"result":"not_found"}}
        ]}"#;
        let events = [(event(1, 1, 0), Op::Index), (event(2, 1, 0), Op::Delete)];
        let got = decide_all(200, body, &events);
        assert!(
            matches!(&got[0], Decision::Fail { reason, .. } if reason == "index_not_found_exception")
        );
        assert_eq!(got[1], Decision::Ack(AckKind::NotFound));
    }

    fn delay_of(d: Decision) -> Duration {
        match d {
            Decision::Retry { delay, .. } => delay,
            other => panic!("expected a retry: {other:?}"),
        }
    }

    /// The pin of "one backoff for every retry path": a stuck event the reclaimer returns,
    /// an item the engine answered 429, and a request the engine refused as a whole (each of
    /// its events deferred), all with the same history, get the same delay, draw for draw.
    #[test]
    fn reclaimed_429d_and_refused_events_with_one_history_get_one_delay() {
        for (attempts, deferrals) in [(1, 0), (1, 10), (3, 2), (11, 40)] {
            let e = event(9, attempts, deferrals);
            let stuck = Stuck {
                id: 9,
                attempts,
                deferrals,
                lease_owner: None,
            };
            let item_429 = classify_response(
                200,
                br#"{"errors":true,"items":[{"index":{"status":429,"error":{"type":"es_rejected_execution_exception"}}}]}"#,
                &[Op::Index],
            );
            let RequestOutcome::Items(items) = item_429 else {
                panic!("expected items");
            };
            // What dispatch.rs makes of each event of a request that failed as a whole.
            let refused = ItemOutcome::Defer {
                reason: "server_error".into(),
                error: "http 503".into(),
            };
            let (mut r1, mut r2, mut r3) = (
                StdRng::seed_from_u64(5),
                StdRng::seed_from_u64(5),
                StdRng::seed_from_u64(5),
            );
            for _ in 0..100 {
                let reclaimed = reclaim::plan(&stuck, 1000, &BACKOFF, &mut r1).unwrap();
                let by_429 = delay_of(decide(items[0].clone(), &e, &BACKOFF, &mut r2));
                let by_refusal = delay_of(decide(refused.clone(), &e, &BACKOFF, &mut r3));
                assert_eq!(reclaimed, by_429, "history {attempts}+{deferrals}");
                assert_eq!(reclaimed, by_refusal, "history {attempts}+{deferrals}");
                assert!(reclaimed <= BACKOFF.ceiling(attempts, deferrals));
            }
        }
    }

    #[test]
    fn writes_group_by_kind_with_the_claimed_attempt() {
        let decided = vec![
            (event(1, 1, 0), Decision::Ack(AckKind::Indexed)),
            (event(2, 3, 0), Decision::Superseded),
            (
                event(3, 2, 1),
                Decision::Retry {
                    delay: Duration::from_millis(1500),
                    reason: "too_many_requests".into(),
                    error: "429".into(),
                    counted: false,
                },
            ),
            (event(4, 1, 0), Decision::invalid("empty doc_id".into())),
            (
                event(5, 1, 0),
                Decision::SupersededByDelete { deleted_version: 9 },
            ),
            (
                ClaimedEvent {
                    op: "delete".into(),
                    payload: None,
                    routing: Some("r".into()),
                    ..event(6, 1, 0)
                },
                Decision::Ack(AckKind::NotFound),
            ),
            (
                ClaimedEvent {
                    op: "delete".into(),
                    payload: None,
                    ..event(7, 1, 0)
                },
                Decision::Superseded,
            ),
        ];
        let o = writes(&decided, true);
        let held = |id, attempts| Held {
            id,
            attempts,
            piece: None,
        };
        assert_eq!(
            o.ack,
            vec![held(1, 1), held(2, 3), held(5, 1), held(6, 1), held(7, 1)]
        );
        // The delete acked by the engine (here: not_found) is recorded with its routing;
        // a delete superseded in its claim is not (a newer event decides the document).
        assert_eq!(
            o.deletes,
            vec![DeleteRecord {
                index_name: "idx".into(),
                doc_id: "6".into(),
                routing: Some("r".into()),
                version: 1,
                event_id: 6,
            }]
        );
        assert!(writes(&decided, false).deletes.is_empty());
        assert_eq!(o.retry.len(), 1);
        let r = &o.retry[0];
        assert_eq!((r.event, r.counted), (held(3, 2), false));
        assert_eq!(r.delay_seconds, 1.5);
        assert_eq!(r.reason, "too_many_requests");
        assert_eq!(
            o.fail,
            vec![Fail {
                event: held(4, 1),
                reason: "invalid_event".into(),
                error: "empty doc_id".into()
            }]
        );
        assert!(writes(&[], true).is_empty());
    }
}
