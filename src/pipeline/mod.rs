//! The pipeline, stage by stage; data flows one way:
//!
//! wake (../wake.rs) -> idle (idle.rs: when to drain, when to sleep) -> drain (drain.rs:
//! store::claim, claims ahead) -> dispatch (dispatch.rs: coalesce, chunk, `_bulk` through a
//! `Sink`, split, breaker) -> outcome (outcome.rs: a decision per event) -> resolve
//! (resolve.rs: store ack / retry / fail, the in-flight ledger of inflight.rs).
//!
//! This file holds the shared state and the loop that carries out the idle decisions.

use std::{sync::Arc, time::Instant};

use deadpool_postgres::Pool;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{
    backoff::EventBackoff,
    config::{Config, NotifyMode},
    store::{self, db_error},
    wake::{WakeSource, Waker},
};

pub mod dispatch;
pub mod drain;
pub mod idle;
pub mod inflight;
pub mod mark;
pub mod outcome;
mod resolve;

pub use dispatch::{NullSink, Sink};
pub use drain::CLAIMS_AHEAD;
#[cfg(feature = "testing")]
pub use idle::IDLE_FOLLOW_UPS;

use dispatch::Dispatcher;
use idle::{Action, Event, State, Timer, Timers};
use inflight::Inflight;
use mark::WaitingMark;

pub struct Pipeline {
    cfg: Arc<Config>,
    pool: Pool,
    dispatch: Dispatcher,
    backoff: EventBackoff,
    waker: Waker,
    shutdown: CancellationToken,
    inflight: Inflight,
    mark: WaitingMark,
}

impl Pipeline {
    pub fn new(
        cfg: Arc<Config>,
        pool: Pool,
        sink: Box<dyn Sink>,
        waker: Waker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let mark = WaitingMark::new(
            pool.clone(),
            cfg.worker_id.clone(),
            idle::mark_ttl(cfg.poll_interval),
        );
        Arc::new(Pipeline {
            dispatch: Dispatcher::new(
                sink,
                cfg.base_backoff,
                cfg.max_backoff,
                cfg.bulk_pipeline.clone(),
            ),
            backoff: EventBackoff::new(&cfg),
            cfg,
            pool,
            waker,
            shutdown,
            inflight: Inflight::default(),
            mark,
        })
    }

    /// The main loop; returns after a shutdown once claimed events are released.
    pub async fn run(self: Arc<Self>) {
        let adaptive = self.cfg.notify_mode == NotifyMode::Adaptive;
        self.waker.wake(WakeSource::Startup);
        let mut state = State::Sleeping;
        // The start-up wake is already there: the first sleep ends at once.
        let mut timers = Timers::arm(Instant::now(), self.cfg.poll_interval, 1.0, None);
        'sleep: loop {
            let Some(source) = self.sleep(&mut timers).await else {
                break;
            };
            debug!(source = source.label(), "woken");
            let mut action;
            (state, action) = idle::step(state, Event::Woken(source), adaptive);
            loop {
                match action {
                    Action::Sleep => break,
                    Action::DebounceThenDrain => self.debounce().await,
                    Action::MarkWaitingThenDrain => self.mark.set().await,
                    Action::Drain => {}
                }
                let report = self.drain().await;
                if self.shutdown.is_cancelled() {
                    break 'sleep;
                }
                let drained = Event::Drained {
                    claimed: report.claimed,
                };
                (state, action) = idle::step(state, drained, adaptive);
            }
            debug!("drained; idle");
            timers = self.arm_timers().await;
        }
        self.finish().await;
    }

    /// The idle timers, armed now.
    async fn arm_timers(&self) -> Timers {
        let retry_due_in =
            match store::claim::next_retry_due(&self.pool, &self.cfg.projection).await {
                Ok(d) => d,
                Err(e) => {
                    db_error("next_retry_due", &e);
                    None
                }
            };
        let jitter = rand::rng().random_range(idle::POLL_JITTER);
        Timers::arm(Instant::now(), self.cfg.poll_interval, jitter, retry_due_in)
    }

    /// Sleep until there may be work: its source. None on shutdown.
    async fn sleep(&self, timers: &mut Timers) -> Option<WakeSource> {
        loop {
            let (at, timer) = timers.next();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                source = self.waker.woken() => return Some(source),
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            if timer == Timer::FollowUp {
                timers.follow_up_done();
                match store::claim::pending_exists(&self.pool, &self.cfg.projection).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        db_error("pending_exists", &e);
                        continue;
                    }
                }
            }
            let source = timer.source();
            source.count();
            return Some(source);
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

    /// After the loop: release whatever is still claimed, drop the waiting mark.
    pub async fn finish(&self) {
        let held = self.inflight.held();
        self.release(&held).await;
        self.mark.clear();
        self.mark.cleared().await;
    }

    /// Events claimed by this worker and not yet resolved (for tests and the shutdown).
    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }
}
