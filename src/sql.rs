//! Every SQL statement the worker runs, one named statement per operation, read from `sql/`.
//! Each state change is guarded by the status, lease owner and attempt it expects.

pub const CLAIM: &str = include_str!("../sql/claim.sql");
pub const ACK: &str = include_str!("../sql/ack.sql");
pub const RETRY: &str = include_str!("../sql/retry.sql");
pub const FAIL: &str = include_str!("../sql/fail.sql");
pub const RELEASE: &str = include_str!("../sql/release.sql");
pub const LOG_RETRY: &str = include_str!("../sql/log_retry.sql");
pub const LOG_FAIL: &str = include_str!("../sql/log_fail.sql");
pub const LOG_RELEASE: &str = include_str!("../sql/log_release.sql");
pub const COMPLETE_PIECES: &str = include_str!("../sql/complete_pieces.sql");
pub const EXPAND_PIECES: &str = include_str!("../sql/expand_pieces.sql");
pub const TRUNCATE_SLOT: &str = include_str!("../sql/truncate_slot.sql");
pub const RECLAIM_SELECT: &str = include_str!("../sql/reclaim_select.sql");
pub const RECLAIM: &str = include_str!("../sql/reclaim.sql");
pub const MARK_WAITING: &str = include_str!("../sql/mark_waiting.sql");
pub const CLEAR_WAITING: &str = include_str!("../sql/clear_waiting.sql");
pub const PURGE_WAITING: &str = include_str!("../sql/purge_waiting.sql");
pub const PENDING_EXISTS: &str = include_str!("../sql/pending_exists.sql");
pub const NEXT_RETRY_DUE: &str = include_str!("../sql/next_retry_due.sql");
pub const SAMPLE_GAUGES: &str = include_str!("../sql/sample_gauges.sql");
pub const SAMPLE_DEAD_TUPLES: &str = include_str!("../sql/sample_dead_tuples.sql");
pub const SAMPLE_XMIN_HOLDERS: &str = include_str!("../sql/sample_xmin_holders.sql");
pub const STATS_BY_STATUS: &str = include_str!("../sql/stats_by_status.sql");
pub const STATS_STUCK: &str = include_str!("../sql/stats_stuck.sql");
pub const STATS_FAILED_BY_REASON: &str = include_str!("../sql/stats_failed_by_reason.sql");
pub const STATS_OLDEST_PENDING: &str = include_str!("../sql/stats_oldest_pending.sql");
pub const REPLAY_SELECT: &str = include_str!("../sql/replay_select.sql");
pub const REPLAY: &str = include_str!("../sql/replay.sql");
pub const REPLAY_AUDIT: &str = include_str!("../sql/replay_audit.sql");
pub const DELETE_RECORDS_FIND: &str = include_str!("../sql/delete_records_find.sql");
pub const DELETE_RECORDS_WRITE: &str = include_str!("../sql/delete_records_write.sql");
pub const PRUNE_DELETE_RECORDS: &str = include_str!("../sql/prune_delete_records.sql");
pub const COUNT_DELETE_RECORDS: &str = include_str!("../sql/count_delete_records.sql");
pub const REPLAY_SUPERSEDED: &str = include_str!("../sql/replay_superseded.sql");
pub const ESTIMATE_LAG: &str = include_str!("../sql/estimate_lag.sql");
pub const ESTIMATE_FAILED: &str = include_str!("../sql/estimate_failed.sql");
