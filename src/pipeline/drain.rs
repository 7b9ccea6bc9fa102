//! The drain: claim and dispatch until a claim comes back short. Bulks run with at most
//! OUTBOX_CONCURRENCY in flight. Claims run ahead of the bulks (up to `CLAIMS_AHEAD`): the
//! next claim starts as soon as the previous one's chunks are handed out, so a bulk slot
//! that frees up finds its chunk ready instead of waiting a claim's round trip. On shutdown,
//! what was claimed and not yet sent is released.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{StreamExt, stream};
use tokio::task::JoinHandle;

use super::{Pipeline, dispatch, outcome};
use crate::{
    backoff,
    bulk::encode::Chunk,
    config::DeleteRecords,
    deletes::{self, Recorded},
    event::{ClaimedEvent, Held},
    metrics::{self as m, Stage},
    store::{self, db_error},
};

/// Claims that may run ahead of the bulks, each on its own pool connection.
pub const CLAIMS_AHEAD: usize = 2;

/// Totals of one drain, for the idle decision, logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct DrainReport {
    pub claimed: usize,
}

/// The claims and chunks of a drain that are not yet handed to a bulk slot.
struct Queue {
    chunks: VecDeque<Ready>,
    /// Claims running ahead, each with its delete records' lookup; always awaited, never
    /// dropped (their rows are leased).
    ahead: VecDeque<JoinHandle<Option<Claimed>>>,
    /// A claim came back short: nothing more to claim in this drain.
    done: bool,
}

/// A claim, the recorded deletes of its index events (None: the lookup failed), and when
/// both were done.
type Claimed = (Vec<ClaimedEvent>, Option<Vec<Recorded>>, Instant);

/// A chunk ready to send, with what its `queue` stage is measured from: when its claim was
/// done, and how long encoding it took (not queueing).
struct Ready {
    chunk: Chunk,
    claimed_at: Instant,
    encode: Duration,
}

/// Whether to start one more claim ahead, as a chunk is handed to a bulk slot: only once
/// the chunks queued are gone, while claims may still find something, up to
/// `CLAIMS_AHEAD`, and not while the engine is paused (its events would wait out the pause
/// under lease).
fn claim_ahead(queued_chunks: usize, claims_ahead: usize, done: bool, engine_paused: bool) -> bool {
    queued_chunks == 0 && !done && claims_ahead < CLAIMS_AHEAD && !engine_paused
}

impl Pipeline {
    pub async fn drain(self: &Arc<Self>) -> DrainReport {
        let claimed = Arc::new(Mutex::new(0usize));
        let counter = claimed.clone();
        let this = self.clone();
        let queue = Queue {
            chunks: VecDeque::new(),
            ahead: VecDeque::new(),
            done: false,
        };
        let chunks = stream::unfold(queue, move |q| {
            let this = this.clone();
            let counter = counter.clone();
            async move { this.next_chunk(q, &counter).await }
        });
        let this = self.clone();
        chunks
            .map(move |chunk| {
                let this = this.clone();
                async move { this.deliver(chunk).await }
            })
            .buffer_unordered(self.cfg.concurrency)
            .for_each(|_| async {})
            .await;
        let claimed = *claimed.lock().unwrap();
        DrainReport { claimed }
    }

    /// The next chunk to send, claiming as needed; None when the drain is over.
    async fn next_chunk(
        self: Arc<Self>,
        mut q: Queue,
        claimed: &Mutex<usize>,
    ) -> Option<(Ready, Queue)> {
        loop {
            if self.shutdown.is_cancelled() {
                self.release_unsent(q).await;
                return None;
            }
            if let Some(c) = q.chunks.pop_front() {
                while claim_ahead(
                    q.chunks.len(),
                    q.ahead.len(),
                    q.done,
                    self.dispatch.paused_until().is_some(),
                ) {
                    let next = self.clone();
                    q.ahead.push_back(tokio::spawn(async move {
                        next.claim_and_look_up(next.cfg.bulk_size).await
                    }));
                }
                return Some((c, q));
            }
            let limit = self.cfg.bulk_size;
            let (events, recorded, claimed_at) = match q.ahead.pop_front() {
                Some(ahead) => ahead.await.unwrap_or(None),
                None if q.done => return None,
                None => {
                    self.wait_for_engine().await;
                    self.claim_and_look_up(limit).await
                }
            }?;
            if events.len() < limit {
                q.done = true;
            }
            if events.is_empty() {
                continue;
            }
            *claimed.lock().unwrap() += events.len();
            self.mark.clear();
            let Some(recorded) = recorded else {
                // Sending without the lookup could bring a deleted document back: the
                // events wait for the reclaimer, under their lease.
                let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
                tracing::error!(
                    ?ids,
                    "could not look up delete records; the reclaimer will return these events after their lease"
                );
                // Not written: none of their pieces can complete.
                self.inflight.resolved(ids, false);
                continue;
            };
            let encoding = Instant::now();
            let prepared = dispatch::prepare(
                events,
                &recorded,
                self.cfg.bulk_size,
                self.cfg.bulk_max_bytes,
                self.cfg.bulk_pipeline.as_deref(),
            );
            let encode = encoding.elapsed();
            Stage::Encode.record(encode);
            self.resolve(prepared.early, "prepare").await;
            q.chunks.extend(prepared.chunks.into_iter().map(|chunk| Ready {
                chunk,
                claimed_at,
                encode,
            }));
        }
    }

    /// One chunk: sent, each event's outcome decided, the outcomes written.
    async fn deliver(&self, ready: Ready) {
        Stage::Queue.record(ready.claimed_at.elapsed().saturating_sub(ready.encode));
        let chunk = ready.chunk;
        let answered = self.dispatch.send(chunk.events, chunk.body).await;
        let decided = {
            let mut rng = rand::rng();
            answered
                .into_iter()
                .map(|(e, item)| {
                    let d = outcome::decide(item, &e, &self.backoff, &mut rng);
                    (e, d)
                })
                .collect()
        };
        self.resolve(decided, "bulk").await;
    }

    /// A claim, then the lookup of its index events in the delete records, in the same task:
    /// a claim running ahead looks up while the bulks of the previous one are in flight.
    async fn claim_and_look_up(&self, limit: usize) -> Option<Claimed> {
        let started = Instant::now();
        let events = self.claim_with_retry(limit).await?;
        let recorded = if events.is_empty() {
            Some(Vec::new())
        } else {
            self.recorded_deletes(&events).await
        };
        let claimed_at = Instant::now();
        if !events.is_empty() {
            Stage::Claim.record(claimed_at - started);
        }
        Some((events, recorded, claimed_at))
    }

    /// The recorded deletes of a claim's index events: one query (none when the claim has
    /// no index event, or OUTBOX_DELETE_RECORDS=off); transient errors retried a few times.
    /// None: the lookup failed, and the claim must not be sent.
    async fn recorded_deletes(&self, events: &[ClaimedEvent]) -> Option<Vec<Recorded>> {
        if self.cfg.delete_records == DeleteRecords::Off {
            return Some(Vec::new());
        }
        let keys = deletes::lookup_keys(events);
        let mut delays =
            backoff::in_process(Duration::from_millis(50), Duration::from_secs(2)).take(5);
        loop {
            match store::deletes::find(&self.pool, &self.cfg.projection, &keys).await {
                Ok(found) => return Some(found),
                Err(e) => {
                    db_error("delete_records_find", &e);
                    match delays.next() {
                        Some(d) if e.is_transient() => tokio::time::sleep(d).await,
                        _ => return None,
                    }
                }
            }
        }
    }

    /// Claimed but unsent (shutdown): released with the attempt refunded.
    async fn release_unsent(&self, mut q: Queue) {
        let mut unsent: Vec<Held> = q
            .chunks
            .drain(..)
            .flat_map(|r| r.chunk.events.into_iter().map(|(e, _)| e.held()))
            .collect();
        for ahead in q.ahead.drain(..) {
            if let Ok(Some((events, _, _))) = ahead.await {
                unsent.extend(events.iter().map(ClaimedEvent::held));
            }
        }
        self.release(&unsent).await;
    }

    /// While the engine breaker is open: no new claim (unless shutting down).
    async fn wait_for_engine(&self) {
        if let Some(until) = self.dispatch.paused_until() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Claim, retrying transient database errors with backoff until shutdown.
    async fn claim_with_retry(&self, limit: usize) -> Option<Vec<ClaimedEvent>> {
        let mut delays = backoff::in_process(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            let started = Instant::now();
            let started_epoch = epoch_now();
            let claimed = store::claim::claim(
                &self.pool,
                &self.cfg.projection,
                limit,
                &self.cfg.worker_id,
                self.cfg.lease,
            )
            .await;
            metrics::histogram!(m::CLAIM_DURATION_SECONDS).record(started.elapsed());
            match claimed {
                Ok(events) => {
                    if !events.is_empty() {
                        metrics::counter!(m::CLAIMED_TOTAL).increment(events.len() as u64);
                        self.inflight.claimed(&events);
                        record_waits(&events, started_epoch);
                    }
                    return Some(events);
                }
                Err(e) => {
                    db_error("claim", &e);
                    if !e.is_transient() {
                        return None;
                    }
                    let d = delays.next().unwrap_or(Duration::from_secs(5));
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.shutdown.cancelled() => return None,
                    }
                }
            }
        }
    }
}

/// The `wait` stage of the events of a claim that started at `claim_started_epoch`: those
/// claimed from the log (a piece), on their first claim; a retry's wait is its backoff.
fn record_waits(events: &[ClaimedEvent], claim_started_epoch: f64) {
    let wait = Stage::Wait.histogram();
    for e in events.iter().filter(|e| e.piece.is_some()) {
        wait.record(m::waited(e.created_epoch, claim_started_epoch));
    }
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_run_ahead_only_when_they_can_help() {
        // (queued chunks, claims ahead, done, engine paused) -> claim ahead?
        #[rustfmt::skip]
        let table = [
            (0, 0, false, false, true),
            (0, 1, false, false, true),
            (0, CLAIMS_AHEAD, false, false, false),
            (1, 0, false, false, false),
            (0, 0, true, false, false),
            (0, 0, false, true, false),
        ];
        for (queued, ahead, done, paused, expected) in table {
            assert_eq!(
                claim_ahead(queued, ahead, done, paused),
                expected,
                "queued {queued}, ahead {ahead}, done {done}, paused {paused}"
            );
        }
    }
}
