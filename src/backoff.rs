//! Retry delays. Per event (persisted as `next_retry_at`): exponential backoff with full
//! jitter, capped. In process (the engine breaker, database retries): `backon`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;

/// The ceiling of the delay after attempt `attempt` (1-based): `base * 2^(attempt-1)`, capped.
pub fn ceiling(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).clamp(0, 62) as u32;
    let factor = 2f64.powi(exp as i32);
    let secs = (base.as_secs_f64() * factor).min(cap.as_secs_f64());
    Duration::from_secs_f64(secs)
}

/// Full jitter: uniform in (0, ceiling], never below one millisecond so nothing spins.
pub fn retry_delay(attempt: i32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let c = ceiling(attempt, base, cap).as_secs_f64();
    let secs = rng.random_range(0.0..=c).max(0.001);
    Duration::from_secs_f64(secs)
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

    #[test]
    fn ceiling_doubles_then_caps() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        let got: Vec<u64> = (1..=9).map(|a| ceiling(a, base, cap).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            ceiling(0, base, cap),
            base,
            "attempt 0 behaves like the first"
        );
        assert_eq!(
            ceiling(i32::MAX, base, cap),
            cap,
            "no overflow far past the cap"
        );
    }

    #[test]
    fn full_jitter_stays_in_range_and_spreads() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        for attempt in 1..=12 {
            let c = ceiling(attempt, base, cap);
            let samples: Vec<Duration> = (0..2000)
                .map(|_| retry_delay(attempt, base, cap, &mut rng))
                .collect();
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
