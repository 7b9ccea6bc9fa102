//! The stream pipeline: wake -> coalesce -> claim -> chunk -> buffered concurrent `_bulk`
//! -> ack / retry / fail. Also the idle transition of the adaptive trigger (DESIGN.md §4):
//! once a drain finds nothing, mark waiting, claim once more, follow-up checks, then sleep
//! until a wake, the jittered poll, or the next scheduled retry.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use deadpool_postgres::Pool;
use futures::{StreamExt, stream};
use rand::Rng;
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    backoff,
    bulk::{
        classify::{AckKind, ItemOutcome, RequestOutcome},
        client::BulkClient,
        encode::{self, Chunk},
    },
    claim,
    config::{Config, NotifyMode, Sink},
    db::DbError,
    event::{self, Action, ClaimedEvent},
    metrics as m,
    outcome::{self, Outcomes},
    waiting,
};

/// Follow-up checks after going idle: they catch a producer that committed just after
/// the worker's mark (its insert saw nobody waiting, so it did not notify).
pub const IDLE_FOLLOW_UPS: &[Duration] = &[
    Duration::from_millis(5),
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1000),
];

/// Claims that may run ahead of the bulks: while the bulks of one claim are sent, the next
/// claims are already on their way, on their own pool connections.
pub const CLAIMS_AHEAD: usize = 2;

/// A wake: the listener, the reclaimer and start-up call it; wakes collapse into one permit.
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self, source: &'static str) {
        metrics::counter!(m::WAKES_TOTAL, "source" => source).increment(1);
        self.0.notify_one();
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

pub struct Pipeline {
    cfg: Arc<Config>,
    pool: Pool,
    client: BulkClient,
    waker: Waker,
    shutdown: CancellationToken,
    /// Claimed and not yet resolved: id -> attempt. What a shutdown releases.
    inflight: Mutex<HashMap<i64, i32>>,
    breaker: Mutex<Breaker>,
    /// Whether this worker's waiting mark is set (adaptive mode).
    marked: Mutex<bool>,
    /// The removal of the mark, running beside the first bulk of a drain; awaited before
    /// the next mark so it cannot remove that one.
    clearing: Mutex<Option<JoinHandle<()>>>,
}

/// Totals of one drain, for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct DrainReport {
    pub claimed: usize,
}

impl Pipeline {
    pub fn new(
        cfg: Arc<Config>,
        pool: Pool,
        client: BulkClient,
        waker: Waker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let breaker = Breaker::new(
            cfg.base_backoff.min(Duration::from_secs(1)),
            cfg.max_backoff.min(Duration::from_secs(30)),
        );
        Arc::new(Pipeline {
            cfg,
            pool,
            client,
            waker,
            shutdown,
            inflight: Mutex::new(HashMap::new()),
            breaker: Mutex::new(breaker),
            marked: Mutex::new(false),
            clearing: Mutex::new(None),
        })
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn adaptive(&self) -> bool {
        self.cfg.notify_mode == NotifyMode::Adaptive
    }

    /// The main loop; returns after a shutdown once claimed events are released.
    pub async fn run(self: Arc<Self>) {
        self.waker.wake("startup");
        let mut follow_ups: VecDeque<Instant> = VecDeque::new();
        let mut next_due: Option<Instant> = None;
        loop {
            let Some(source) = self.wait_for_work(&mut follow_ups, next_due).await else {
                break;
            };
            if source == "notify" {
                self.debounce().await;
            }
            loop {
                let report = self.drain().await;
                if self.shutdown.is_cancelled() {
                    break;
                }
                if self.adaptive() {
                    // Work came in while we were busy: look again before asking producers
                    // to notify. Under steady traffic the worker thus keeps claiming and
                    // never marks itself waiting, so producers' commits take no NOTIFY lock.
                    if report.claimed > 0 {
                        self.debounce().await;
                        continue;
                    }
                    // Going idle: mark waiting, then claim once more for rows committed
                    // before the mark was visible to producers.
                    self.set_waiting().await;
                    let again = self.drain().await;
                    if again.claimed > 0 && !self.shutdown.is_cancelled() {
                        continue;
                    }
                }
                debug!(claimed = report.claimed, "drained; idle");
                break;
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            follow_ups = IDLE_FOLLOW_UPS.iter().map(|d| now + *d).collect();
            next_due = match claim::next_retry_due(&self.pool, &self.cfg.projection).await {
                Ok(d) => d.map(|d| Instant::now() + d + Duration::from_millis(1)),
                Err(e) => {
                    db_error("next_retry_due", &e);
                    None
                }
            };
        }
        self.finish().await;
    }

    /// Sleep until there may be work. None on shutdown.
    async fn wait_for_work(
        &self,
        follow_ups: &mut VecDeque<Instant>,
        next_due: Option<Instant>,
    ) -> Option<&'static str> {
        let jitter = rand::rng().random_range(0.8..1.2);
        let poll_at = Instant::now() + self.cfg.poll_interval.mul_f64(jitter);
        loop {
            let follow = follow_ups.front().copied();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                _ = self.waker.0.notified() => return Some("notify"),
                _ = tokio::time::sleep_until(poll_at.into()) => {
                    metrics::counter!(m::WAKES_TOTAL, "source" => "poll").increment(1);
                    return Some("poll");
                }
                _ = sleep_until_opt(next_due) => {
                    metrics::counter!(m::WAKES_TOTAL, "source" => "retry_due").increment(1);
                    return Some("retry_due");
                }
                _ = sleep_until_opt(follow) => {
                    follow_ups.pop_front();
                    match claim::pending_exists(&self.pool, &self.cfg.projection).await {
                        Ok(true) => {
                            metrics::counter!(m::WAKES_TOTAL, "source" => "follow_up").increment(1);
                            return Some("follow_up");
                        }
                        Ok(false) => {}
                        Err(e) => db_error("pending_exists", &e),
                    }
                }
            }
        }
    }

    /// OUTBOX_DEBOUNCE_MS before claiming what trickles in: larger claims, fewer statements
    /// competing with the producers, for that much more latency per event.
    async fn debounce(&self) {
        if self.cfg.debounce.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.cfg.debounce) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    async fn set_waiting(&self) {
        // The mark lives a little longer than one poll interval: a waiting worker renews
        // it at every poll; a dead one stops producers notifying soon after.
        let ttl = self.cfg.poll_interval.mul_f64(1.5) + Duration::from_secs(2);
        self.cleared().await;
        match waiting::mark(&self.pool, &self.cfg.worker_id, ttl).await {
            Ok(()) => *self.marked.lock().unwrap() = true,
            Err(e) => db_error("mark_waiting", &e),
        }
    }

    /// Drop the waiting mark, off the critical path: the claimed events go to the engine
    /// without waiting for this round trip.
    fn clear_waiting(&self) {
        if !std::mem::take(&mut *self.marked.lock().unwrap()) {
            return;
        }
        let pool = self.pool.clone();
        let worker_id = self.cfg.worker_id.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = waiting::clear(&pool, &worker_id).await {
                // The mark expires by itself; producers just notify a little longer.
                db_error("clear_waiting", &e);
            }
        });
        *self.clearing.lock().unwrap() = Some(task);
    }

    /// Wait for a removal of the mark still on its way.
    async fn cleared(&self) {
        let task = self.clearing.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Claim and process until a claim comes back short. Bulks run with at most
    /// `concurrency` in flight. The next claim starts as soon as the previous claim's chunks
    /// are handed out (one claim ahead), so a bulk slot that frees up finds its chunk ready
    /// instead of waiting a claim's round trip.
    pub async fn drain(self: &Arc<Self>) -> DrainReport {
        struct State {
            queue: VecDeque<Chunk>,
            /// Claims running ahead; always awaited, never dropped (their rows are leased).
            ahead: VecDeque<JoinHandle<Option<Vec<ClaimedEvent>>>>,
            done: bool,
        }
        let claimed = Arc::new(Mutex::new(0usize));
        let counter = claimed.clone();
        let this = self.clone();
        let chunks = stream::unfold(
            State {
                queue: VecDeque::new(),
                ahead: VecDeque::new(),
                done: false,
            },
            move |mut st| {
                let this = this.clone();
                let counter = counter.clone();
                async move {
                    loop {
                        if this.shutdown.is_cancelled() {
                            // Claimed but unsent: released with the attempt refunded.
                            let mut unsent: Vec<(i64, i32)> = st
                                .queue
                                .drain(..)
                                .flat_map(|c| c.events.into_iter().map(|(e, _)| (e.id, e.attempts)))
                                .collect();
                            for ahead in st.ahead.drain(..) {
                                if let Ok(Some(events)) = ahead.await {
                                    unsent.extend(events.iter().map(|e| (e.id, e.attempts)));
                                }
                            }
                            this.release(&unsent).await;
                            return None;
                        }
                        if let Some(c) = st.queue.pop_front() {
                            while st.queue.is_empty()
                                && !st.done
                                && st.ahead.len() < CLAIMS_AHEAD
                                && this.breaker_closed()
                            {
                                let next = this.clone();
                                st.ahead.push_back(tokio::spawn(async move {
                                    next.claim_with_retry(next.cfg.bulk_size).await
                                }));
                            }
                            return Some((c, st));
                        }
                        let limit = this.cfg.bulk_size;
                        let claimed = match st.ahead.pop_front() {
                            Some(ahead) => ahead.await.unwrap_or(None),
                            None if st.done => return None,
                            None => {
                                this.wait_for_breaker().await;
                                this.claim_with_retry(limit).await
                            }
                        };
                        let events = claimed?;
                        if events.len() < limit {
                            st.done = true;
                        }
                        if events.is_empty() {
                            continue;
                        }
                        *counter.lock().unwrap() += events.len();
                        this.clear_waiting();
                        st.queue.extend(this.prepare(events).await);
                    }
                }
            },
        );
        let this = self.clone();
        chunks
            .map(move |chunk| {
                let this = this.clone();
                async move { this.process_chunk(chunk).await }
            })
            .buffer_unordered(self.cfg.concurrency)
            .for_each(|_| async {})
            .await;
        let claimed = *claimed.lock().unwrap();
        DrainReport { claimed }
    }

    fn breaker_closed(&self) -> bool {
        self.breaker.lock().unwrap().paused_until.is_none()
    }

    async fn wait_for_breaker(&self) {
        let until = self.breaker.lock().unwrap().paused_until;
        if let Some(until) = until {
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
            match claim::claim(
                &self.pool,
                &self.cfg.projection,
                limit,
                &self.cfg.worker_id,
                self.cfg.lease,
            )
            .await
            {
                Ok(events) => {
                    if !events.is_empty() {
                        metrics::counter!(m::CLAIMED_TOTAL).increment(events.len() as u64);
                        let mut inflight = self.inflight.lock().unwrap();
                        for e in &events {
                            inflight.insert(e.id, e.attempts);
                        }
                        metrics::gauge!(m::WORKER_INFLIGHT_EVENTS).set(inflight.len() as f64);
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

    /// Coalesce by document, reject invalid events, chunk the rest.
    async fn prepare(&self, events: Vec<ClaimedEvent>) -> Vec<Chunk> {
        let (kept, superseded) = event::coalesce_by_document(events);
        let mut early = Outcomes::default();
        for e in &superseded {
            early.ack.push((e.id, e.attempts));
        }
        let mut valid = Vec::with_capacity(kept.len());
        let mut invalid = Vec::new();
        for e in kept {
            match event::validate(&e) {
                Ok(action) => valid.push((e, action)),
                Err(why) => {
                    early
                        .fail
                        .push((e.id, e.attempts, "invalid_event".into(), why));
                    invalid.push(e);
                }
            }
        }
        if !early.is_empty() {
            let mut resolved: Vec<&ClaimedEvent> = superseded.iter().collect();
            resolved.extend(invalid.iter());
            self.apply(&early, &resolved, "prepare").await;
            if !superseded.is_empty() {
                metrics::counter!(m::SUPERSEDED_TOTAL).increment(superseded.len() as u64);
            }
        }
        encode::chunk(valid, self.cfg.bulk_size, self.cfg.bulk_max_bytes)
    }

    /// Send one chunk, decide each event's outcome, write the outcomes.
    async fn process_chunk(self: Arc<Self>, chunk: Chunk) {
        let results = self.send(chunk.events, chunk.body).await;
        let mut o = Outcomes::default();
        for (e, outcome) in &results {
            match outcome {
                ItemOutcome::Ack(kind) => {
                    o.ack.push((e.id, e.attempts));
                    let label = match kind {
                        AckKind::Indexed => "indexed",
                        AckKind::VersionConflict => "version_conflict",
                        AckKind::NotFound => "not_found",
                    };
                    metrics::counter!(m::ACKED_TOTAL, "kind" => label).increment(1);
                }
                ItemOutcome::Retry { reason, error } | ItemOutcome::Defer { reason, error } => {
                    // The backoff grows with every retry, counted or not, so nothing spins.
                    let delay = backoff::retry_delay(
                        e.attempts + e.deferrals,
                        self.cfg.base_backoff,
                        self.cfg.max_backoff,
                        &mut rand::rng(),
                    );
                    o.retry.push(outcome::Retry {
                        id: e.id,
                        attempts: e.attempts,
                        delay_seconds: delay.as_secs_f64(),
                        reason: reason.clone(),
                        error: error.clone(),
                        counted: matches!(outcome, ItemOutcome::Retry { .. }),
                    });
                }
                ItemOutcome::Fail { reason, error } => {
                    o.fail
                        .push((e.id, e.attempts, reason.clone(), error.clone()));
                }
            }
        }
        let events: Vec<&ClaimedEvent> = results.iter().map(|(e, _)| e).collect();
        self.apply(&o, &events, "bulk").await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        for (e, outcome) in &results {
            if matches!(outcome, ItemOutcome::Ack(_)) {
                metrics::histogram!(m::END_TO_END_SECONDS).record((now - e.created_epoch).max(0.0));
            }
        }
    }

    /// One bulk request; a 413 or a whole-request 4xx splits the events to isolate the cause.
    fn send(
        self: &Arc<Self>,
        events: Vec<(ClaimedEvent, Action)>,
        body: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Vec<(ClaimedEvent, ItemOutcome)>> {
        let this = self.clone();
        Box::pin(async move {
            let actions: Vec<Action> = events.iter().map(|(_, a)| *a).collect();
            let (outcome, took) = match this.cfg.sink {
                Sink::Elasticsearch => this.client.send(body, &actions).await,
                Sink::Null => (
                    RequestOutcome::Items(vec![ItemOutcome::Ack(AckKind::Indexed); actions.len()]),
                    Duration::ZERO,
                ),
            };
            metrics::histogram!(m::BULK_DURATION_SECONDS).record(took.as_secs_f64());
            match outcome {
                RequestOutcome::Items(items) => {
                    metrics::counter!(m::BULK_REQUESTS_TOTAL, "result" => "items").increment(1);
                    this.breaker.lock().unwrap().success();
                    events.into_iter().map(|(e, _)| e).zip(items).collect()
                }
                RequestOutcome::RetryAll {
                    reason,
                    error,
                    auth,
                } => {
                    metrics::counter!(m::BULK_REQUESTS_TOTAL, "result" => "retry_all").increment(1);
                    let pause = this.breaker.lock().unwrap().failure();
                    if auth {
                        metrics::counter!(m::ENGINE_AUTH_ERRORS_TOTAL, "reason" => reason.clone())
                            .increment(1);
                        error!(%reason, %error, events = events.len(), "the search engine refused our credentials: check OUTBOX_ELASTICSEARCH_USERNAME/PASSWORD/API_KEY; events will be retried");
                    } else {
                        warn!(%reason, %error, events = events.len(), pause_ms = pause.as_millis() as u64, "bulk request failed as a whole; retrying its events");
                    }
                    let outcome = ItemOutcome::Defer { reason, error };
                    events
                        .into_iter()
                        .map(|(e, _)| (e, outcome.clone()))
                        .collect()
                }
                RequestOutcome::Split { reason, error } => {
                    metrics::counter!(m::BULK_REQUESTS_TOTAL, "result" => "split").increment(1);
                    this.breaker.lock().unwrap().success();
                    if events.len() == 1 {
                        let (e, _) = events.into_iter().next().expect("one event");
                        return vec![(e, ItemOutcome::Fail { reason, error })];
                    }
                    info!(%reason, events = events.len(), "bulk request refused as a whole; splitting it to isolate the cause");
                    let mut events = events;
                    let right = events.split_off(events.len() / 2);
                    let left = events;
                    let left_body = encode::encode_all(&left);
                    let right_body = encode::encode_all(&right);
                    let mut out = this.send(left, left_body).await;
                    out.extend(this.send(right, right_body).await);
                    out
                }
            }
        })
    }

    /// Write outcomes (retrying transient errors a few times), log and count them, and
    /// forget the events. A chunk that cannot be written is left to the reclaimer.
    async fn apply(&self, o: &Outcomes, events: &[&ClaimedEvent], stage: &'static str) {
        let mut delays =
            backoff::in_process(Duration::from_millis(50), Duration::from_secs(2)).take(5);
        let applied = loop {
            match outcome::apply(&self.pool, &self.cfg.worker_id, self.cfg.max_attempts, o).await {
                Ok(a) => break Some(a),
                Err(e) => {
                    db_error("apply_outcomes", &e);
                    match delays.next() {
                        Some(d) if e.is_transient() => tokio::time::sleep(d).await,
                        _ => break None,
                    }
                }
            }
        };
        {
            let mut inflight = self.inflight.lock().unwrap();
            for e in events {
                inflight.remove(&e.id);
            }
            metrics::gauge!(m::WORKER_INFLIGHT_EVENTS).set(inflight.len() as f64);
        }
        let Some(a) = applied else {
            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            error!(
                ?ids,
                "could not write outcomes; the reclaimer will return these events after their lease"
            );
            return;
        };
        log_applied(&a, stage);
    }

    async fn release(&self, events: &[(i64, i32)]) {
        if events.is_empty() {
            return;
        }
        match outcome::release(&self.pool, &self.cfg.worker_id, events).await {
            Ok(ids) => {
                metrics::counter!(m::RELEASED_TOTAL).increment(ids.len() as u64);
                info!(count = ids.len(), ids = ?ids, "released claimed events to pending (attempt refunded)");
            }
            Err(e) => {
                db_error("release", &e);
                warn!(
                    count = events.len(),
                    "could not release; the reclaimer will return these events after their lease"
                );
            }
        }
        let mut inflight = self.inflight.lock().unwrap();
        for (id, _) in events {
            inflight.remove(id);
        }
    }

    /// After the loop: release whatever is still claimed, drop the waiting mark.
    pub async fn finish(&self) {
        let left: Vec<(i64, i32)> = self
            .inflight
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        self.release(&left).await;
        self.clear_waiting();
        self.cleared().await;
    }

    /// Events claimed by this worker and not yet resolved (for tests and the shutdown).
    pub fn inflight_count(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }
}

fn log_applied(a: &outcome::Applied, stage: &'static str) {
    if !a.acked.is_empty() {
        debug!(stage, acked = a.acked.len(), first_id = a.acked[0], "acked");
    }
    if !a.retried.is_empty() {
        let mut by_reason: HashMap<&str, Vec<i64>> = HashMap::new();
        for (id, reason) in &a.retried {
            by_reason.entry(reason).or_default().push(*id);
        }
        for (reason, ids) in by_reason {
            metrics::counter!(m::RETRY_SCHEDULED_TOTAL, "reason" => reason.to_string())
                .increment(ids.len() as u64);
            info!(stage, %reason, count = ids.len(), ids = ?ids, "retry scheduled");
        }
    }
    if !a.failed.is_empty() {
        let mut by_reason: HashMap<&str, Vec<i64>> = HashMap::new();
        for (id, reason) in &a.failed {
            by_reason.entry(reason).or_default().push(*id);
        }
        for (reason, ids) in by_reason {
            metrics::counter!(m::TERMINAL_FAILED_TOTAL, "reason" => reason.to_string())
                .increment(ids.len() as u64);
            warn!(stage, %reason, count = ids.len(), ids = ?ids, "failed (terminal)");
        }
    }
    if !a.late.is_empty() {
        let unique: HashSet<i64> = a.late.iter().copied().collect();
        metrics::counter!(m::LATE_ACKS_TOTAL).increment(unique.len() as u64);
        warn!(stage, count = unique.len(), ids = ?a.late, "late write ignored: the lease was reclaimed meanwhile");
    }
}

pub(crate) fn db_error(op: &'static str, e: &DbError) {
    metrics::counter!(m::DB_ERRORS_TOTAL, "op" => op).increment(1);
    warn!(op, error = %e, transient = e.is_transient(), "database error");
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
