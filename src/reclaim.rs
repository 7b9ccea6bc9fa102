//! The reclaimer: every OUTBOX_RECLAIM_INTERVAL_SECONDS, stuck events (processing with an
//! expired lease, or for longer than OUTBOX_MAX_PROCESSING_SECONDS) go back to pending with
//! the same backoff as every other retry (`backoff::EventBackoff`), or to failed /
//! lease_expired at the attempt limit. Then the pipeline is woken.

use std::{collections::HashMap, sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    backoff::EventBackoff,
    config::Config,
    contract::{ErrorReason, Status},
    db::DbError,
    metrics as m,
    store::{self, db_error, reclaim::Stuck, waiting},
    wake::{WakeSource, Waker},
};

/// Stuck events per pass of the two statements; the reclaimer loops until fewer are found.
const BATCH: i64 = 1000;

#[derive(Debug, Default, Clone)]
pub struct ReclaimReport {
    pub to_pending: Vec<i64>,
    pub to_failed: Vec<i64>,
}

/// One stuck event's fate: back to pending after the returned delay, or None: its lease
/// used up the last attempt, it fails. The dead attempt counts (the event may be what
/// crashed its worker); its deferrals grow the delay as on every other retry path.
pub fn plan(
    stuck: &Stuck,
    max_attempts: i32,
    backoff: &EventBackoff,
    rng: &mut impl Rng,
) -> Option<Duration> {
    if stuck.attempts >= max_attempts {
        None
    } else {
        Some(backoff.delay(stuck.attempts, stuck.deferrals, rng))
    }
}

/// One pass: reclaim everything stuck right now.
pub async fn reclaim_once(pool: &Pool, cfg: &Config) -> Result<ReclaimReport, DbError> {
    let client = pool.get().await?;
    let backoff = EventBackoff::new(cfg);
    let mut report = ReclaimReport::default();
    let expanded = store::reclaim::expand_pieces(&client, cfg.max_processing).await?;
    if expanded > 0 {
        debug!(events = expanded, "expired pieces of the log expanded for the reclaim");
    }
    loop {
        let stuck = store::reclaim::select_stuck(&client, cfg.max_processing, BATCH).await?;
        if stuck.is_empty() {
            break;
        }
        let planned: Vec<(&Stuck, Option<Duration>)> = {
            let mut rng = rand::rng();
            stuck
                .iter()
                .map(|s| (s, plan(s, cfg.max_attempts, &backoff, &mut rng)))
                .collect()
        };
        let changed: HashMap<i64, Status> =
            store::reclaim::reclaim(&client, cfg.max_processing, &planned)
                .await?
                .into_iter()
                .collect();
        for s in &stuck {
            let Some(status) = changed.get(&s.id) else {
                continue; // acked, or reclaimed by another worker, since the select
            };
            if *status == Status::Failed {
                report.to_failed.push(s.id);
            } else {
                report.to_pending.push(s.id);
            }
            debug!(id = s.id, %status, previous_owner = ?s.lease_owner, "reclaimed");
        }
        if (stuck.len() as i64) < BATCH || changed.is_empty() {
            break;
        }
    }
    if !report.to_pending.is_empty() {
        metrics::counter!(m::RECLAIMED_TOTAL, "to" => Status::Pending.as_str())
            .increment(report.to_pending.len() as u64);
        info!(count = report.to_pending.len(), ids = ?report.to_pending, reason = %ErrorReason::LeaseExpired, "reclaimed stuck events to pending");
    }
    if !report.to_failed.is_empty() {
        metrics::counter!(m::RECLAIMED_TOTAL, "to" => Status::Failed.as_str())
            .increment(report.to_failed.len() as u64);
        metrics::counter!(m::TERMINAL_FAILED_TOTAL, "reason" => ErrorReason::LeaseExpired)
            .increment(report.to_failed.len() as u64);
        warn!(count = report.to_failed.len(), ids = ?report.to_failed, reason = %ErrorReason::LeaseExpired, "stuck events reached the attempt limit: failed");
    }
    Ok(report)
}

pub async fn run(cfg: Arc<Config>, pool: Pool, waker: Waker, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(cfg.reclaim_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match reclaim_once(&pool, &cfg).await {
            Ok(r) if !r.to_pending.is_empty() => waker.wake(WakeSource::Reclaim),
            Ok(_) => {}
            Err(e) => db_error("reclaim", &e),
        }
        if let Err(e) = waiting::purge_expired(&pool).await {
            db_error("purge_waiting", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    const BACKOFF: EventBackoff = EventBackoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(300),
    };

    fn stuck(attempts: i32, deferrals: i32) -> Stuck {
        Stuck {
            id: 1,
            attempts,
            deferrals,
            lease_owner: Some("dead-worker".into()),
        }
    }

    #[test]
    fn the_attempt_limit_fails_below_it_a_backoff() {
        let mut rng = StdRng::seed_from_u64(1);
        // (attempts, deferrals, max_attempts) -> fails?
        let cases = [
            (1, 0, 12, false),
            (11, 5, 12, false),
            (12, 0, 12, true),
            (13, 0, 12, true),
            (1, 0, 1, true),
        ];
        for (attempts, deferrals, max, fails) in cases {
            let got = plan(&stuck(attempts, deferrals), max, &BACKOFF, &mut rng);
            assert_eq!(got.is_none(), fails, "{attempts}+{deferrals} of {max}");
            if let Some(d) = got {
                assert!(d <= BACKOFF.ceiling(attempts, deferrals));
            }
        }
    }

    #[test]
    fn deferrals_grow_the_reclaim_delay() {
        // Reclaims used to ignore deferrals: after ten refused requests a reclaimed event
        // came back within the first attempt's second.
        let mut rng = StdRng::seed_from_u64(2);
        let backoff = EventBackoff {
            cap: Duration::from_secs(3600),
            ..BACKOFF
        };
        let delays: Vec<Duration> = (0..200)
            .map(|_| plan(&stuck(1, 10), 12, &backoff, &mut rng).unwrap())
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1024)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(512)));
    }
}
