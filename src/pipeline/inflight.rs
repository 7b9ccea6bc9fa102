//! The in-flight ledger: events this worker claimed and has not yet resolved (acked,
//! retried, failed or released), by id, with the attempt each was claimed with. It is what a
//! shutdown releases, and the `outbox_worker_inflight_events` gauge.

use std::{collections::HashMap, sync::Mutex};

use crate::{event::ClaimedEvent, metrics as m};

#[derive(Default)]
pub struct Inflight(Mutex<HashMap<i64, i32>>);

impl Inflight {
    /// Claimed: held under this worker's lease until resolved.
    pub fn claimed(&self, events: &[ClaimedEvent]) {
        let mut held = self.0.lock().unwrap();
        for e in events {
            held.insert(e.id, e.attempts);
        }
        gauge(held.len());
    }

    /// Resolved, or left to the reclaimer: no longer this worker's to release.
    pub fn resolved(&self, ids: impl IntoIterator<Item = i64>) {
        let mut held = self.0.lock().unwrap();
        for id in ids {
            held.remove(&id);
        }
        gauge(held.len());
    }

    /// What is still held, as (id, attempt), oldest first: what a shutdown releases.
    pub fn held(&self) -> Vec<(i64, i32)> {
        let mut held: Vec<(i64, i32)> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(id, attempt)| (*id, *attempt))
            .collect();
        held.sort_unstable();
        held
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn gauge(len: usize) {
    metrics::gauge!(m::WORKER_INFLIGHT_EVENTS).set(len as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ev;

    fn claimed(id: i64, attempts: i32) -> ClaimedEvent {
        ClaimedEvent {
            attempts,
            ..ev(id, &format!("d{id}"), 1)
        }
    }

    #[test]
    fn holds_what_is_claimed_until_resolved() {
        let ledger = Inflight::default();
        assert!(ledger.is_empty());
        ledger.claimed(&[claimed(3, 1), claimed(1, 2), claimed(2, 1)]);
        assert_eq!(ledger.len(), 3);
        assert_eq!(ledger.held(), vec![(1, 2), (2, 1), (3, 1)]);
        ledger.resolved([2]);
        assert_eq!(ledger.held(), vec![(1, 2), (3, 1)]);
        ledger.resolved([1, 3]);
        assert!(ledger.is_empty());
        assert!(ledger.held().is_empty());
    }

    #[test]
    fn resolving_an_unknown_id_changes_nothing() {
        let ledger = Inflight::default();
        ledger.claimed(&[claimed(7, 1)]);
        ledger.resolved([8]);
        assert_eq!(ledger.held(), vec![(7, 1)]);
    }

    #[test]
    fn a_new_claim_of_the_same_event_holds_its_new_attempt() {
        // Reclaimed from under this worker and claimed by it again: the release must name
        // the attempt of the live lease, or its guard matches no row.
        let ledger = Inflight::default();
        ledger.claimed(&[claimed(5, 1)]);
        ledger.claimed(&[claimed(5, 2)]);
        assert_eq!(ledger.held(), vec![(5, 2)]);
    }
}
