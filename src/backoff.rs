//! Retry delays. Per event (persisted as `next_retry_at`): `EventBackoff::delay`, one
//! function for every path that sends an event back to pending (an item the engine retried
//! or deferred, a request the engine refused as a whole, a reclaim of a stuck lease), so an
//! event's history alone decides its delay, whichever path retries it. In process (the
//! engine breaker, database retries, the LISTEN reconnect): `in_process`, from `backon`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;

use crate::config::Config;

/// Exponential backoff with full jitter, capped (OUTBOX_BASE/MAX_BACKOFF_SECONDS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBackoff {
    pub base: Duration,
    pub cap: Duration,
}

impl EventBackoff {
    pub fn new(cfg: &Config) -> Self {
        EventBackoff {
            base: cfg.base_backoff,
            cap: cfg.max_backoff,
        }
    }

    /// The longest delay for an event with this history: `base * 2^(n-1)`, capped, where n
    /// counts every try so far, counted against OUTBOX_MAX_ATTEMPTS (`attempts`, this one
    /// included) or not (`deferrals`), so a deferred event backs off too and nothing spins.
    pub fn ceiling(&self, attempts: i32, deferrals: i32) -> Duration {
        let n = attempts.saturating_add(deferrals);
        let exp = n.saturating_sub(1).clamp(0, 62);
        let secs = (self.base.as_secs_f64() * 2f64.powi(exp)).min(self.cap.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    /// The delay before an event's next try. Full jitter: uniform in (0, ceiling], never
    /// below one millisecond.
    pub fn delay(&self, attempts: i32, deferrals: i32, rng: &mut impl Rng) -> Duration {
        let c = self.ceiling(attempts, deferrals).as_secs_f64();
        let secs = rng.random_range(0.0..=c).max(0.001);
        Duration::from_secs_f64(secs)
    }
}

/// An endless in-process backoff (jittered, capped) for loops that retry until they succeed.
pub fn in_process(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    const B: EventBackoff = EventBackoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };

    #[test]
    fn ceiling_doubles_then_caps() {
        let got: Vec<u64> = (1..=9).map(|a| B.ceiling(a, 0).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(B.ceiling(0, 0), B.base, "attempt 0 behaves like the first");
        assert_eq!(
            B.ceiling(i32::MAX, 0),
            B.cap,
            "no overflow far past the cap"
        );
        assert_eq!(B.ceiling(i32::MAX, i32::MAX), B.cap);
    }

    #[test]
    fn deferrals_grow_the_ceiling_like_attempts() {
        // attempts 1 + deferrals 3: the fourth try, whatever refunded the other three.
        assert_eq!(B.ceiling(1, 3), B.ceiling(4, 0));
        assert_eq!(B.ceiling(1, 3), Duration::from_secs(8));
        assert_eq!(B.ceiling(0, 1), B.ceiling(1, 0));
    }

    #[test]
    fn full_jitter_stays_in_range_and_spreads() {
        let mut rng = StdRng::seed_from_u64(7);
        let b = EventBackoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        };
        for attempt in 1..=12 {
            let c = b.ceiling(attempt, 0);
            let samples: Vec<Duration> = (0..2000).map(|_| b.delay(attempt, 0, &mut rng)).collect();
            assert!(
                samples
                    .iter()
                    .all(|d| *d >= Duration::from_millis(1) && *d <= c)
            );
            let mean =
                samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
            // Full jitter: the mean sits near half the ceiling, and the spread covers it.
            assert!(
                (mean / c.as_secs_f64() - 0.5).abs() < 0.05,
                "attempt {attempt}: mean {mean}"
            );
            let max = samples.iter().max().unwrap().as_secs_f64();
            let min = samples.iter().min().unwrap().as_secs_f64();
            assert!(max > 0.9 * c.as_secs_f64() && min < 0.1 * c.as_secs_f64());
        }
    }

    #[test]
    fn in_process_backoff_is_bounded_and_endless() {
        let delays: Vec<Duration> =
            in_process(Duration::from_millis(10), Duration::from_millis(200))
                .take(50)
                .collect();
        assert_eq!(delays.len(), 50);
        // backon's jitter adds up to one more delay on top of the capped value.
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_millis(10) && *d <= Duration::from_millis(400))
        );
    }
}
