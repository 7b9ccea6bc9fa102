//! What the running worker reads and writes in the outbox's tables: the claim and the idle
//! probes (claim.rs), the outcomes and the release (outcomes.rs), the delete records
//! (deletes.rs), the reclaim of stuck
//! events (reclaim.rs), the log's slots (slots.rs), and the waiting mark of the adaptive trigger (waiting.rs). One
//! statement per operation, each in `sql/`, each guarded by the state and lease it expects.

use tracing::warn;

use crate::{db::DbError, metrics as m};

pub mod claim;
pub mod deletes;
pub mod outcomes;
pub mod reclaim;
pub mod slots;
pub mod waiting;

/// Count and log a database error of operation `op` (the `op` label of
/// `outbox_db_errors_total`); the caller decides whether to retry.
pub fn db_error(op: &'static str, e: &DbError) {
    metrics::counter!(m::DB_ERRORS_TOTAL, "op" => op).increment(1);
    warn!(op, error = %e, transient = e.is_transient(), "database error");
}
