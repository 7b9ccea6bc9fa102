//! The rotation of the insert-only tables (docs/design.md §6): every second, each slot of
//! the log that every projection has claimed and no open piece still holds is emptied with
//! TRUNCATE (sql/truncate_slot.sql), and so is each slot of the pieces whose pieces have
//! all ended (sql/truncate_pieces.sql). TRUNCATE leaves no dead tuple and needs no VACUUM,
//! so these tables stay small whatever snapshot is held elsewhere.
//!
//! The TRUNCATE waits at most `LOCK_TIMEOUT` for the slot's lock. A slot whose lock was not
//! granted (a session that read the log sits idle in its transaction) is tried again after
//! a growing pause, up to a minute, so a blocked slot does not queue a lock in front of the
//! claims every second.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    metrics as m,
    store::{
        db_error,
        slots::{Part, SlotResult, truncate_slot},
    },
};

/// The slots of each part (migrations/0003: `(id / 100000) % 4`; migrations/0004:
/// `(piece_id / 10000) % 4`).
pub const SLOTS: i32 = 4;
const SLOTS_IN_ALL: usize = SLOTS as usize * Part::ALL.len();
const INTERVAL: Duration = Duration::from_secs(1);
/// How long a TRUNCATE waits for its slot's lock.
const LOCK_TIMEOUT: &str = "50ms";
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// The pause before a slot is tried again, after `busy` answers in a row: none before the
/// first, then 2 s, 4 s, ... up to a minute. Pure.
pub fn pause_after(busy_in_a_row: u32) -> Duration {
    if busy_in_a_row == 0 {
        return Duration::ZERO;
    }
    let secs = 1u64 << busy_in_a_row.min(6);
    Duration::from_secs(secs).min(MAX_PAUSE)
}

pub async fn run(pool: Pool, shutdown: CancellationToken) {
    let mut busy = [0u32; SLOTS_IN_ALL];
    let mut next_try = [Instant::now(); SLOTS_IN_ALL];
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for (p, part) in Part::ALL.into_iter().enumerate() {
            for slot in 0..SLOTS {
                let i = p * SLOTS as usize + slot as usize;
                if Instant::now() < next_try[i] {
                    continue;
                }
                let Some(result) = attempt(&pool, part, slot).await else {
                    continue;
                };
                busy[i] = if result == SlotResult::Busy {
                    busy[i] + 1
                } else {
                    0
                };
                next_try[i] = Instant::now() + pause_after(busy[i]);
            }
        }
    }
}

/// One attempt at one slot, logged and counted.
async fn attempt(pool: &Pool, part: Part, slot: i32) -> Option<SlotResult> {
    let table = part.table();
    let result = match truncate_slot(pool, part, slot, LOCK_TIMEOUT).await {
        Ok(r) => r,
        Err(e) => {
            db_error("truncate_slot", &e);
            return None;
        }
    };
    match result {
        SlotResult::Truncated => {
            info!(table, slot, "slot truncated: nothing in it is needed any more");
        }
        SlotResult::Busy => {
            warn!(
                table,
                slot,
                lock_timeout = LOCK_TIMEOUT,
                "slot not truncated: its lock is held (a session that read the outbox is still in its transaction; runbook §7.6)"
            );
        }
        other => debug!(table, slot, result = other.as_str(), "slot kept"),
    }
    if matches!(result, SlotResult::Truncated | SlotResult::Busy) {
        metrics::counter!(m::LOG_TRUNCATIONS_TOTAL, "table" => table, "result" => result.as_str())
            .increment(1);
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_slots_back_off_up_to_a_minute() {
        let pauses: Vec<u64> = (0..9).map(|n| pause_after(n).as_secs()).collect();
        assert_eq!(pauses, vec![0, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

}
