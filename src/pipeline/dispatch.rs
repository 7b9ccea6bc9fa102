//! Dispatch: claimed events become bulk requests and each event gets the engine's verdict.
//! Coalescing by document, validation and the recorded deletes come first (`prepare`), then
//! chunks by count and bytes (OUTBOX_BULK_SIZE, OUTBOX_BULK_MAX_BYTES). A request refused as a whole with a 413
//! or another 4xx is split in halves until the event that causes it stands alone; one that
//! failed as a whole (5xx, 429, 401/403, transport) defers all its events and pauses the
//! engine breaker. Where requests go is a `Sink`, chosen once at start-up.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tracing::{error, info, warn};

use super::outcome::Decision;
use crate::{
    backoff,
    bulk::{
        classify::{AckKind, ItemOutcome, RequestOutcome},
        client::BulkClient,
        encode::{self, Chunk},
    },
    contract::Op,
    deletes::{self, Recorded},
    event::{self, ClaimedEvent},
    metrics as m,
};

/// Where bulk requests go.
pub trait Sink: Send + Sync {
    /// Send one `_bulk` body carrying `actions`, in order: the classified answer, and how
    /// long it took.
    fn send<'a>(
        &'a self,
        body: Vec<u8>,
        actions: &'a [Op],
    ) -> BoxFuture<'a, (RequestOutcome, Duration)>;
}

/// The search engine.
impl Sink for BulkClient {
    fn send<'a>(
        &'a self,
        body: Vec<u8>,
        actions: &'a [Op],
    ) -> BoxFuture<'a, (RequestOutcome, Duration)> {
        Box::pin(BulkClient::send(self, body, actions))
    }
}

/// Acks every event without sending it (OUTBOX_SINK=null): measures the database path alone,
/// for benches only.
pub struct NullSink;

impl Sink for NullSink {
    fn send<'a>(
        &'a self,
        _body: Vec<u8>,
        actions: &'a [Op],
    ) -> BoxFuture<'a, (RequestOutcome, Duration)> {
        let acked = vec![ItemOutcome::Ack(AckKind::Indexed); actions.len()];
        Box::pin(std::future::ready((
            RequestOutcome::Items(acked),
            Duration::ZERO,
        )))
    }
}

/// A claim made ready to send: its chunks, and the events decided without sending.
#[derive(Debug)]
pub struct Prepared {
    pub chunks: Vec<Chunk>,
    /// Superseded by a newer version in the same claim or by a recorded delete, or invalid.
    pub early: Vec<(ClaimedEvent, Decision)>,
}

/// Coalesce a claim by document, set aside what cannot be sent and the index events a
/// recorded delete supersedes (`recorded`: the claim's lookup), chunk the rest; index
/// actions carry `pipeline`.
pub fn prepare(
    events: Vec<ClaimedEvent>,
    recorded: &[Recorded],
    max_events: usize,
    max_bytes: usize,
    pipeline: Option<&str>,
) -> Prepared {
    let (kept, superseded) = event::coalesce_by_document(events);
    let mut early: Vec<(ClaimedEvent, Decision)> = superseded
        .into_iter()
        .map(|e| (e, Decision::Superseded))
        .collect();
    let mut valid = Vec::with_capacity(kept.len());
    for e in kept {
        match event::validate(&e) {
            Ok(action) => valid.push((e, action)),
            Err(why) => early.push((e, Decision::invalid(why))),
        }
    }
    let (send, superseded) = deletes::split_superseded(valid, |(e, _)| e, recorded);
    early.extend(
        superseded
            .into_iter()
            .map(|((e, _), deleted_version)| (e, Decision::SupersededByDelete { deleted_version })),
    );
    Prepared {
        chunks: encode::chunk(send, max_events, max_bytes, pipeline),
        early,
    }
}

/// After whole-request failures, the engine gets a pause before the next claim, so an
/// outage is met with growing gaps instead of a sweep through the whole backlog.
struct Breaker {
    paused_until: Option<Instant>,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    min: Duration,
    max: Duration,
}

impl Breaker {
    fn new(min: Duration, max: Duration) -> Self {
        Breaker {
            paused_until: None,
            delays: Box::new(backoff::in_process(min, max)),
            min,
            max,
        }
    }

    fn failure(&mut self) -> Duration {
        let d = self.delays.next().unwrap_or(self.max);
        self.paused_until = Some(Instant::now() + d);
        d
    }

    fn success(&mut self) {
        if self.paused_until.take().is_some() {
            self.delays = Box::new(backoff::in_process(self.min, self.max));
        }
    }
}

/// Sends chunks to the sink and turns its answers into one verdict per event.
pub struct Dispatcher {
    sink: Box<dyn Sink>,
    breaker: Mutex<Breaker>,
    /// The ingest pipeline of index actions, for the bodies a split re-encodes.
    pipeline: Option<String>,
}

impl Dispatcher {
    /// The breaker pauses from `min(base_backoff, 1 s)` up to `min(max_backoff, 30 s)`.
    pub fn new(
        sink: Box<dyn Sink>,
        base_backoff: Duration,
        max_backoff: Duration,
        pipeline: Option<String>,
    ) -> Self {
        Dispatcher {
            sink,
            pipeline,
            breaker: Mutex::new(Breaker::new(
                base_backoff.min(Duration::from_secs(1)),
                max_backoff.min(Duration::from_secs(30)),
            )),
        }
    }

    /// Until when the engine is left alone after a whole-request failure (None: it is not).
    pub fn paused_until(&self) -> Option<Instant> {
        self.breaker.lock().unwrap().paused_until
    }

    /// One bulk request, and as many more as splitting it takes: each event with its verdict.
    pub fn send(
        &self,
        events: Vec<(ClaimedEvent, Op)>,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Vec<(ClaimedEvent, ItemOutcome)>> {
        Box::pin(async move {
            let actions: Vec<Op> = events.iter().map(|(_, a)| *a).collect();
            let (outcome, took) = self.sink.send(body, &actions).await;
            metrics::histogram!(m::BULK_DURATION_SECONDS).record(took.as_secs_f64());
            m::Stage::Bulk.record(took);
            match outcome {
                RequestOutcome::Items(items) => {
                    metrics::counter!(m::BULK_REQUESTS_TOTAL, "result" => "items").increment(1);
                    self.breaker.lock().unwrap().success();
                    events.into_iter().map(|(e, _)| e).zip(items).collect()
                }
                RequestOutcome::RetryAll {
                    reason,
                    error,
                    auth,
                } => {
                    metrics::counter!(m::BULK_REQUESTS_TOTAL, "result" => "retry_all").increment(1);
                    let pause = self.breaker.lock().unwrap().failure();
                    if auth {
                        metrics::counter!(m::ENGINE_AUTH_ERRORS_TOTAL, "reason" => reason.clone())
                            .increment(1);
                        error!(%reason, %error, events = events.len(), "the search engine refused our credentials: check OUTBOX_ELASTICSEARCH_USERNAME/PASSWORD/API_KEY; events will be retried");
                    } else {
                        warn!(%reason, %error, events = events.len(), pause_ms = pause.as_millis() as u64, "bulk request failed as a whole; retrying its events");
                    }
                    // Not the events' fault: deferred, their attempts refunded.
                    let outcome = ItemOutcome::Defer { reason, error };
                    events
                        .into_iter()
                        .map(|(e, _)| (e, outcome.clone()))
                        .collect()
                }
                RequestOutcome::Split { reason, error } => {
                    metrics::counter!(m::BULK_REQUESTS_TOTAL, "result" => "split").increment(1);
                    self.breaker.lock().unwrap().success();
                    if events.len() == 1 {
                        let (e, _) = events.into_iter().next().expect("one event");
                        return vec![(e, ItemOutcome::Fail { reason, error })];
                    }
                    info!(%reason, events = events.len(), "bulk request refused as a whole; splitting it to isolate the cause");
                    let mut left = events;
                    let right = left.split_off(left.len() / 2);
                    let pipeline = self.pipeline.as_deref();
                    let left_body = encode::encode_all(&left, pipeline);
                    let right_body = encode::encode_all(&right, pipeline);
                    let mut out = self.send(left, left_body).await;
                    out.extend(self.send(right, right_body).await);
                    out
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ev;
    use std::sync::Arc;

    fn ids<T>(v: &[(ClaimedEvent, T)]) -> Vec<i64> {
        v.iter().map(|(e, _)| e.id).collect()
    }

    #[test]
    fn prepare_sets_aside_superseded_and_invalid_events_and_chunks_the_rest() {
        let mut no_payload = ev(4, "d", 1);
        no_payload.payload = None;
        let events = vec![
            ev(1, "a", 1),
            ev(2, "b", 1),
            ev(3, "a", 2),
            no_payload,
            ev(5, "c", 1),
            ev(6, "e", 1),
        ];
        let p = prepare(events, &[], 2, 1 << 20, None);
        assert_eq!(ids(&p.early), vec![1, 4]);
        assert_eq!(p.early[0].1, Decision::Superseded);
        assert!(
            matches!(&p.early[1].1, Decision::Fail { reason, .. } if reason == "invalid_event")
        );
        let chunked: Vec<Vec<i64>> = p.chunks.iter().map(|c| ids(&c.events)).collect();
        assert_eq!(chunked, vec![vec![2, 3], vec![5, 6]]);
    }

    #[test]
    fn prepare_acks_index_events_a_recorded_delete_supersedes_unsent() {
        let recorded = [Recorded {
            index_name: "idx".into(),
            doc_id: "a".into(),
            version: 3,
        }];
        let p = prepare(
            vec![ev(1, "a", 2), ev(2, "b", 1), ev(3, "c", 1)],
            &recorded,
            10,
            1 << 20,
            None,
        );
        assert_eq!(ids(&p.early), vec![1]);
        assert_eq!(
            p.early[0].1,
            Decision::SupersededByDelete { deleted_version: 3 }
        );
        let chunked: Vec<Vec<i64>> = p.chunks.iter().map(|c| ids(&c.events)).collect();
        assert_eq!(chunked, vec![vec![2, 3]]);
    }

    #[test]
    fn prepare_applies_the_byte_cap() {
        let mut big = ev(2, "big", 1);
        big.payload = Some(format!("{{\"x\":\"{}\"}}", "y".repeat(5000)));
        let p = prepare(vec![ev(1, "a", 1), big, ev(3, "b", 1)], &[], 100, 1000, None);
        assert!(p.early.is_empty());
        let chunked: Vec<Vec<i64>> = p.chunks.iter().map(|c| ids(&c.events)).collect();
        assert_eq!(chunked, vec![vec![1], vec![2], vec![3]]);
    }

    /// Answers with a fixed whole-request outcome when the body names `doc`, else acks all;
    /// notes the size of every request.
    struct Refuses {
        doc: &'static str,
        answer: RequestOutcome,
        requests: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for Refuses {
        fn send<'a>(
            &'a self,
            body: Vec<u8>,
            actions: &'a [Op],
        ) -> BoxFuture<'a, (RequestOutcome, Duration)> {
            self.requests.lock().unwrap().push(actions.len());
            let needle = format!("\"_id\":\"{}\"", self.doc);
            let hit = String::from_utf8(body).unwrap().contains(&needle);
            let outcome = if hit {
                self.answer.clone()
            } else {
                RequestOutcome::Items(vec![ItemOutcome::Ack(AckKind::Indexed); actions.len()])
            };
            Box::pin(std::future::ready((outcome, Duration::ZERO)))
        }
    }

    fn dispatcher(
        doc: &'static str,
        answer: RequestOutcome,
    ) -> (Dispatcher, Arc<Mutex<Vec<usize>>>) {
        let requests = Arc::default();
        let sink = Refuses {
            doc,
            answer,
            requests: Arc::clone(&requests),
        };
        let d = Dispatcher::new(
            Box::new(sink),
            Duration::from_millis(10),
            Duration::from_millis(100),
            None,
        );
        (d, requests)
    }

    fn chunk_of(docs: &[&str]) -> (Vec<(ClaimedEvent, Op)>, Vec<u8>) {
        let events: Vec<(ClaimedEvent, Op)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (ev(i as i64 + 1, d, 1), Op::Index))
            .collect();
        let body = encode::encode_all(&events, None);
        (events, body)
    }

    #[tokio::test]
    async fn a_413_splits_until_the_cause_stands_alone() {
        let (d, requests) = dispatcher(
            "huge",
            RequestOutcome::Split {
                reason: "document_too_large".into(),
                error: "http 413".into(),
            },
        );
        let (events, body) = chunk_of(&["a", "b", "huge", "c", "e"]);
        let got = d.send(events, body).await;
        assert_eq!(ids(&got), vec![1, 2, 3, 4, 5]);
        for (e, outcome) in &got {
            if e.doc_id == "huge" {
                assert!(
                    matches!(outcome, ItemOutcome::Fail { reason, .. } if reason == "document_too_large")
                );
            } else {
                assert_eq!(*outcome, ItemOutcome::Ack(AckKind::Indexed), "{}", e.doc_id);
            }
        }
        // 5 -> [a b] + [huge c e]; [huge c e] -> [huge] + [c e].
        assert_eq!(*requests.lock().unwrap(), vec![5, 2, 3, 1, 2]);
        assert_eq!(d.paused_until(), None, "a refusal is no outage");
    }

    #[tokio::test]
    async fn a_whole_request_failure_defers_every_event_and_pauses_the_engine() {
        let (d, _) = dispatcher(
            "a",
            RequestOutcome::RetryAll {
                reason: "server_error".into(),
                error: "http 503".into(),
                auth: false,
            },
        );
        let (events, body) = chunk_of(&["a", "b"]);
        let got = d.send(events, body).await;
        assert_eq!(ids(&got), vec![1, 2]);
        assert!(got.iter().all(
            |(_, o)| matches!(o, ItemOutcome::Defer { reason, .. } if reason == "server_error")
        ));
        assert!(d.paused_until().is_some());
        // The next answer per item closes the breaker again.
        let (events, body) = chunk_of(&["x"]);
        d.send(events, body).await;
        assert_eq!(d.paused_until(), None);
    }

    #[test]
    fn breaker_pauses_grow_within_bounds_and_reset_on_success() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(100));
        let mut b = Breaker::new(min, max);
        let before = Instant::now();
        let pauses: Vec<Duration> = (0..20).map(|_| b.failure()).collect();
        // backon's jitter adds up to one more delay on top of the capped value.
        assert!(pauses.iter().all(|p| *p >= min && *p <= max * 2));
        assert!(b.paused_until.unwrap() >= before + pauses[19]);
        b.success();
        assert_eq!(b.paused_until, None);
        assert!(b.failure() <= min * 2, "the pauses start over");
    }
}
