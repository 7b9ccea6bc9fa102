//! The in-flight ledger: events this worker claimed and has not yet resolved (acked,
//! retried, failed or released), by id, with the lease each was claimed under. It is what a
//! shutdown releases, and the `outbox_worker_inflight_events` gauge.
//!
//! It also counts down the pieces of the log (docs/design.md §6): a piece is complete when
//! its last event is resolved, and only if every write for its events went through. A piece
//! with a write that failed is never completed: its lease expires and the reclaimer returns
//! whatever was not written.

use std::{collections::HashMap, sync::Mutex};

use crate::{
    event::{ClaimedEvent, Held},
    metrics as m,
};

#[derive(Default)]
struct Ledger {
    events: HashMap<i64, Held>,
    /// piece id -> its events not yet resolved, and whether every write so far succeeded.
    pieces: HashMap<i64, Piece>,
}

struct Piece {
    open: usize,
    written: bool,
}

#[derive(Default)]
pub struct Inflight(Mutex<Ledger>);

impl Inflight {
    pub fn claimed(&self, events: &[ClaimedEvent]) {
        let mut ledger = self.0.lock().unwrap();
        for e in events {
            if let Some(piece) = e.piece {
                ledger
                    .pieces
                    .entry(piece)
                    .or_insert(Piece {
                        open: 0,
                        written: true,
                    })
                    .open += 1;
            }
            ledger.events.insert(e.id, e.held());
        }
        gauge(ledger.events.len());
    }

    /// Forget these events; `written`: their outcomes reached the database. Returns the
    /// pieces now complete, to be deleted (`store::outcomes::complete_pieces`).
    pub fn resolved(&self, ids: impl IntoIterator<Item = i64>, written: bool) -> Vec<i64> {
        let mut ledger = self.0.lock().unwrap();
        let mut complete = Vec::new();
        for id in ids {
            let Some(held) = ledger.events.remove(&id) else {
                continue;
            };
            let Some(piece_id) = held.piece else {
                continue;
            };
            let Some(piece) = ledger.pieces.get_mut(&piece_id) else {
                continue;
            };
            piece.written &= written;
            piece.open -= 1;
            if piece.open == 0 {
                let piece = ledger.pieces.remove(&piece_id).expect("present");
                if piece.written {
                    complete.push(piece_id);
                }
            }
        }
        gauge(ledger.events.len());
        complete.sort_unstable();
        complete
    }

    pub fn held(&self) -> Vec<Held> {
        let mut held: Vec<Held> = self.0.lock().unwrap().events.values().copied().collect();
        held.sort_unstable();
        held
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().events.len()
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

    fn in_piece(id: i64, piece: i64) -> ClaimedEvent {
        ClaimedEvent {
            piece: Some(piece),
            ..ev(id, &format!("d{id}"), 1)
        }
    }

    fn ids(held: Vec<Held>) -> Vec<(i64, i32)> {
        held.into_iter().map(|h| (h.id, h.attempts)).collect()
    }

    #[test]
    fn holds_what_is_claimed_until_resolved() {
        let ledger = Inflight::default();
        assert!(ledger.is_empty());
        ledger.claimed(&[claimed(3, 1), claimed(1, 2), claimed(2, 1)]);
        assert_eq!(ledger.len(), 3);
        assert_eq!(ids(ledger.held()), vec![(1, 2), (2, 1), (3, 1)]);
        ledger.resolved([2], true);
        assert_eq!(ids(ledger.held()), vec![(1, 2), (3, 1)]);
        ledger.resolved([1, 3], true);
        assert!(ledger.is_empty());
        assert!(ledger.held().is_empty());
    }

    #[test]
    fn resolving_an_unknown_id_changes_nothing() {
        let ledger = Inflight::default();
        ledger.claimed(&[claimed(7, 1)]);
        assert!(ledger.resolved([8], true).is_empty());
        assert_eq!(ids(ledger.held()), vec![(7, 1)]);
    }

    #[test]
    fn a_new_claim_of_the_same_event_holds_its_new_attempt() {
        let ledger = Inflight::default();
        ledger.claimed(&[claimed(5, 1)]);
        ledger.claimed(&[claimed(5, 2)]);
        assert_eq!(ids(ledger.held()), vec![(5, 2)]);
    }

    #[test]
    fn a_piece_completes_with_its_last_event_in_any_order() {
        let ledger = Inflight::default();
        ledger.claimed(&[in_piece(1, 10), in_piece(2, 10), in_piece(3, 11), claimed(4, 2)]);
        assert!(ledger.resolved([2, 4], true).is_empty());
        assert_eq!(ledger.resolved([3], true), vec![11]);
        assert_eq!(ledger.resolved([1], true), vec![10]);
        assert!(ledger.is_empty());
        // Resolving again completes nothing twice.
        assert!(ledger.resolved([1, 3], true).is_empty());
    }

    #[test]
    fn a_piece_with_a_failed_write_is_left_to_the_reclaimer() {
        let ledger = Inflight::default();
        ledger.claimed(&[in_piece(1, 10), in_piece(2, 10), in_piece(3, 12)]);
        assert!(ledger.resolved([1], false).is_empty());
        assert!(ledger.resolved([2], true).is_empty(), "piece 10 had a lost write");
        assert!(ledger.resolved([3], false).is_empty());
        assert!(ledger.is_empty());
    }
}
