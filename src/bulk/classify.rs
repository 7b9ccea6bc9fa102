//! The bulk outcome table (docs/design.md §4) as pure functions: an HTTP status and a `_bulk`
//! response body become one outcome per event. Outcomes are values, not errors.

use serde::Deserialize;

use crate::contract::{ErrorReason, Op};

/// Longest `error` text kept on an event.
pub const MAX_ERROR_LEN: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// 2xx: the engine holds this version.
    Indexed,
    /// 409 version conflict: a newer version is already indexed.
    VersionConflict,
    /// A delete of a document that is not there.
    NotFound,
}

/// What happens to one event after its bulk item came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Ack(AckKind),
    /// Transient, possibly the event's own doing (an item 5xx): back to pending with a
    /// backoff, using up an attempt.
    Retry {
        reason: ErrorReason,
        error: String,
    },
    /// Not the event's fault (the whole request failed, or the engine is overloaded: an item
    /// 429): back to pending with a backoff, without using up an attempt.
    Defer {
        reason: ErrorReason,
        error: String,
    },
    /// Deterministic: terminal `failed` with a short stable reason.
    Fail {
        reason: ErrorReason,
        error: String,
    },
}

/// What happens to a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The engine answered per item, in order.
    Items(Vec<ItemOutcome>),
    /// Nothing was applied: every event is retried.
    RetryAll {
        reason: ErrorReason,
        error: String,
        /// 401/403: the operator's problem, shouted about in logs and metrics.
        auth: bool,
    },
    /// 413, or another 4xx on the request as a whole: split the chunk to isolate the cause.
    /// A single event that still gets this fails with `reason`.
    Split { reason: ErrorReason, error: String },
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<ItemWrapper>,
}

/// One entry of `items[]`, keyed by its action name.
#[derive(Deserialize)]
struct ItemWrapper {
    index: Option<Item>,
    delete: Option<Item>,
    create: Option<Item>,
    update: Option<Item>,
}

#[derive(Deserialize)]
struct Item {
    status: u16,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct RequestError {
    error: Option<ErrorField>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Object(ErrorBody),
    Text(String),
}

/// Cut `s` to at most `MAX_ERROR_LEN` bytes on a character boundary.
pub fn bound(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn describe(kind: &ErrorReason, reason: Option<&str>) -> String {
    bound(match reason {
        Some(r) => format!("{kind}: {r}"),
        None => kind.to_string(),
    })
}

/// The engine's `error.type` when it gave one, else the worker's own code.
fn engine_or(kind: &str, own: ErrorReason) -> ErrorReason {
    if kind.is_empty() {
        own
    } else {
        ErrorReason::Engine(kind.to_string())
    }
}

/// One item: status and error type decide; the reason text never does.
pub fn classify_item(
    op: Op,
    status: u16,
    error_type: Option<&str>,
    error_reason: Option<&str>,
) -> ItemOutcome {
    let kind = error_type.unwrap_or("");
    match status {
        200..=299 => ItemOutcome::Ack(AckKind::Indexed),
        409 if kind == "version_conflict_engine_exception" || kind.is_empty() => {
            ItemOutcome::Ack(AckKind::VersionConflict)
        }
        404 if op == Op::Delete => ItemOutcome::Ack(AckKind::NotFound),
        429 => {
            let reason = engine_or(kind, ErrorReason::TooManyRequests);
            let error = describe(&reason, error_reason);
            ItemOutcome::Defer { reason, error }
        }
        500..=599 => {
            let reason = engine_or(kind, ErrorReason::ServerError);
            let error = describe(&reason, error_reason);
            ItemOutcome::Retry { reason, error }
        }
        _ => {
            let reason = engine_or(kind, ErrorReason::http(status));
            let error = describe(&reason, error_reason);
            ItemOutcome::Fail { reason, error }
        }
    }
}

/// A whole `_bulk` response. `ops` are those of the events sent, in order.
pub fn classify_response(status: u16, body: &[u8], ops: &[Op]) -> RequestOutcome {
    match status {
        200..=299 => classify_items(body, ops),
        401 | 403 => RequestOutcome::RetryAll {
            reason: if status == 401 {
                ErrorReason::Unauthorized
            } else {
                ErrorReason::Forbidden
            },
            error: request_error(status, body),
            auth: true,
        },
        413 => RequestOutcome::Split {
            reason: ErrorReason::DocumentTooLarge,
            error: request_error(status, body),
        },
        429 => RequestOutcome::RetryAll {
            reason: ErrorReason::TooManyRequests,
            error: request_error(status, body),
            auth: false,
        },
        400..=499 => {
            let (kind, text) = request_error_parts(status, body);
            RequestOutcome::Split {
                reason: kind,
                error: text,
            }
        }
        _ => RequestOutcome::RetryAll {
            reason: ErrorReason::ServerError,
            error: request_error(status, body),
            auth: false,
        },
    }
}

fn classify_items(body: &[u8], ops: &[Op]) -> RequestOutcome {
    let parsed: BulkResponse = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return RequestOutcome::RetryAll {
                reason: ErrorReason::MalformedResponse,
                error: bound(format!("bulk response is not JSON: {e}")),
                auth: false,
            };
        }
    };
    if parsed.items.len() != ops.len() {
        return RequestOutcome::RetryAll {
            reason: ErrorReason::MalformedResponse,
            error: format!(
                "bulk response has {} items for {} actions",
                parsed.items.len(),
                ops.len()
            ),
            auth: false,
        };
    }
    let mut out = Vec::with_capacity(ops.len());
    for (wrapper, &op) in parsed.items.into_iter().zip(ops) {
        let Some(item) = wrapper
            .index
            .or(wrapper.delete)
            .or(wrapper.create)
            .or(wrapper.update)
        else {
            return RequestOutcome::RetryAll {
                reason: ErrorReason::MalformedResponse,
                error: "bulk response item without an action key".to_string(),
                auth: false,
            };
        };
        let (kind, reason) = match &item.error {
            Some(e) => (e.kind.as_deref(), e.reason.as_deref()),
            None => (None, None),
        };
        out.push(classify_item(op, item.status, kind, reason));
    }
    RequestOutcome::Items(out)
}

/// `error.type` of a whole-request error body, and a bounded description.
fn request_error_parts(status: u16, body: &[u8]) -> (ErrorReason, String) {
    match serde_json::from_slice::<RequestError>(body) {
        Ok(RequestError {
            error: Some(ErrorField::Object(e)),
        }) => {
            let kind = match e.kind {
                Some(kind) => ErrorReason::Engine(kind),
                None => ErrorReason::http(status),
            };
            let text = describe(&kind, e.reason.as_deref());
            (kind, text)
        }
        Ok(RequestError {
            error: Some(ErrorField::Text(t)),
        }) => (
            ErrorReason::http(status),
            bound(format!("http {status}: {t}")),
        ),
        _ => (
            ErrorReason::http(status),
            bound(format!("http {status}: {}", String::from_utf8_lossy(body))),
        ),
    }
}

fn request_error(status: u16, body: &[u8]) -> String {
    request_error_parts(status, body).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use Op::*;

    fn items(outcome: RequestOutcome) -> Vec<ItemOutcome> {
        match outcome {
            RequestOutcome::Items(v) => v,
            other => panic!("expected items, got {other:?}"),
        }
    }

    // Shapes as Elasticsearch 8/9 answers them (errors: true, mixed items).
    const ES_MIXED: &str = r#"{"took":3,"errors":true,"items":[
      {"index":{"_index":"p","_id":"1","_version":5,"result":"created","status":201}},
      {"index":{"_index":"p","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict, current version [9] is higher or equal to the one provided [3]"}}},
      {"delete":{"_index":"p","_id":"3","_version":1,"result":"not_found","status":404}},
      {"index":{"_index":"p","_id":"4","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"}}},
      {"index":{"_index":"p","_id":"5","status":400,"error":{"type":"document_parsing_exception","reason":"[1:10] failed to parse field [n] of type [long]"}}},
      {"index":{"_index":"p","_id":"6","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}
    ]}"#;

    // OpenSearch 2.x: the same shape, its own type names (and 7.x-style mapper_parsing_exception).
    const OS_MIXED: &str = r#"{"took":2,"errors":true,"items":[
      {"index":{"_index":"p","_id":"1","_version":1,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},
      {"index":{"_index":"p","_id":"2","status":429,"error":{"type":"rejected_execution_exception","reason":"rejected execution of org.opensearch.transport.TransportService"}}},
      {"index":{"_index":"p","_id":"3","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n] of type [long] in document with id '3'"}}},
      {"delete":{"_index":"p","_id":"4","_version":2,"result":"not_found","status":404}},
      {"index":{"_index":"p","_id":"5","status":400,"error":{"type":"strict_dynamic_mapping_exception","reason":"mapping set to strict"}}}
    ]}"#;

    #[test]
    fn elasticsearch_mixed_response() {
        let got = items(classify_response(
            200,
            ES_MIXED.as_bytes(),
            &[Index, Index, Delete, Index, Index, Index],
        ));
        assert_eq!(got[0], ItemOutcome::Ack(AckKind::Indexed));
        assert_eq!(got[1], ItemOutcome::Ack(AckKind::VersionConflict));
        assert_eq!(got[2], ItemOutcome::Ack(AckKind::NotFound));
        assert!(
            matches!(&got[3], ItemOutcome::Defer { reason: ErrorReason::Engine(t), .. } if t == "es_rejected_execution_exception")
        );
        match &got[4] {
            ItemOutcome::Fail { reason, error } => {
                assert_eq!(
                    *reason,
                    ErrorReason::Engine("document_parsing_exception".into())
                );
                assert!(error.contains("failed to parse field [n]"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&got[5], ItemOutcome::Retry { reason: ErrorReason::Engine(t), .. } if t == "unavailable_shards_exception")
        );
    }

    #[test]
    fn all_success_with_filter_path_shape() {
        // What `filter_path=errors,items.*.status,items.*.error.type,...` leaves.
        let body =
            r#"{"errors":false,"items":[{"index":{"status":201}},{"delete":{"status":200}}]}"#;
        let got = items(classify_response(200, body.as_bytes(), &[Index, Delete]));
        assert_eq!(got, vec![ItemOutcome::Ack(AckKind::Indexed); 2]);
    }

    #[test]
    fn index_404_is_a_failure_not_an_ack() {
        // e.g. a missing index with auto-create off: only deletes treat 404 as done.
        let body = r#"{"errors":true,"items":[{"index":{"status":404,"error":{"type":"index_not_found_exception","reason":"no such index [x]"}}}]}"#;
        let got = items(classify_response(200, body.as_bytes(), &[Index]));
        assert!(
            matches!(&got[0], ItemOutcome::Fail { reason: ErrorReason::Engine(t), .. } if t == "index_not_found_exception")
        );
    }

    #[test]
    fn item_count_mismatch_retries_everything() {
        let body = r#"{"errors":false,"items":[{"index":{"status":201}}]}"#;
        assert!(matches!(
            classify_response(200, body.as_bytes(), &[Index, Index]),
            RequestOutcome::RetryAll {
                reason: ErrorReason::MalformedResponse,
                ..
            }
        ));
        assert!(matches!(
            classify_response(200, b"<html>proxy</html>", &[Index]),
            RequestOutcome::RetryAll {
                reason: ErrorReason::MalformedResponse,
                ..
            }
        ));
    }

    #[test]
    fn whole_request_statuses() {
        let retry = |status: u16, body: &str| classify_response(status, body.as_bytes(), &[Index]);
        assert!(matches!(
            retry(429, "{}"),
            RequestOutcome::RetryAll {
                reason: ErrorReason::TooManyRequests,
                auth: false,
                ..
            }
        ));
        assert!(matches!(
            retry(503, "{}"),
            RequestOutcome::RetryAll {
                reason: ErrorReason::ServerError,
                auth: false,
                ..
            }
        ));
        assert!(matches!(
            retry(502, "bad gateway"),
            RequestOutcome::RetryAll { .. }
        ));
        assert!(matches!(
            retry(401, "{}"),
            RequestOutcome::RetryAll {
                reason: ErrorReason::Unauthorized,
                auth: true,
                ..
            }
        ));
        assert!(matches!(
            retry(403, "{}"),
            RequestOutcome::RetryAll {
                reason: ErrorReason::Forbidden,
                auth: true,
                ..
            }
        ));
        assert!(matches!(
            retry(413, ""),
            RequestOutcome::Split {
                reason: ErrorReason::DocumentTooLarge,
                ..
            }
        ));
        let validation = r#"{"error":{"root_cause":[{"type":"action_request_validation_exception","reason":"Validation Failed: 1: id [aaa] is too long, must be no longer than 512 bytes but was: 513;"}],"type":"action_request_validation_exception","reason":"Validation Failed: 1: id [aaa] is too long, must be no longer than 512 bytes but was: 513;"},"status":400}"#;
        match retry(400, validation) {
            RequestOutcome::Split { reason, error } => {
                assert_eq!(
                    reason,
                    ErrorReason::Engine("action_request_validation_exception".into())
                );
                assert!(error.contains("too long"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(retry(400, "not json"), RequestOutcome::Split { reason: ErrorReason::Http(ref h), .. } if h.status() == 400)
        );
    }

    #[test]
    fn error_text_is_bounded_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let b = bound(long);
        assert!(b.len() <= MAX_ERROR_LEN);
        assert!(b.chars().all(|c| c == 'é'));
    }

    #[test]
    fn opensearch_mixed_response() {
        let got = items(classify_response(
            200,
            OS_MIXED.as_bytes(),
            &[Index, Index, Index, Delete, Index],
        ));
        assert_eq!(got[0], ItemOutcome::Ack(AckKind::Indexed));
        assert!(
            matches!(&got[1], ItemOutcome::Defer { reason: ErrorReason::Engine(t), .. } if t == "rejected_execution_exception")
        );
        assert!(
            matches!(&got[2], ItemOutcome::Fail { reason: ErrorReason::Engine(t), .. } if t == "mapper_parsing_exception")
        );
        assert_eq!(got[3], ItemOutcome::Ack(AckKind::NotFound));
        assert!(
            matches!(&got[4], ItemOutcome::Fail { reason: ErrorReason::Engine(t), .. } if t == "strict_dynamic_mapping_exception")
        );
    }

    #[test]
    fn an_item_error_without_a_type_gets_the_workers_own_code() {
        assert!(matches!(
            classify_item(Index, 429, None, None),
            ItemOutcome::Defer {
                reason: ErrorReason::TooManyRequests,
                ..
            }
        ));
        assert!(matches!(
            classify_item(Index, 502, None, Some("bad gateway")),
            ItemOutcome::Retry { reason: ErrorReason::ServerError, ref error } if error == "server_error: bad gateway"
        ));
        assert!(matches!(
            classify_item(Delete, 400, None, None),
            ItemOutcome::Fail { reason: ErrorReason::Http(ref h), .. } if h.status() == 400
        ));
    }
}
