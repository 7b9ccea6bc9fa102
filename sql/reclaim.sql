-- reclaim: stuck events (processing with an expired lease, or processing longer than $1 s)
-- go back to pending with a backoff, or to failed / lease_expired at the attempt limit ($2).
-- A compare-and-swap: the stuck condition is evaluated again at write time, so a late ack
-- and the reclaimer can never both win. At most $3 rows per statement.
WITH stuck AS (
    SELECT id, lease_owner AS previous_owner FROM outbox_events
    WHERE status = 'processing'
      AND (lease_expires_at < now() OR processing_started_at < now() - make_interval(secs => $1))
    ORDER BY lease_expires_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox_events AS e
SET status        = CASE WHEN e.attempts >= $2 THEN 'failed' ELSE 'pending' END,
    next_retry_at = CASE WHEN e.attempts >= $2 THEN NULL
                         ELSE now() + make_interval(secs =>
                              random() * least($5::float8, $4::float8 * power(2, greatest(e.attempts - 1, 0)))) END,
    error_reason  = 'lease_expired',
    error         = 'lease of ' || coalesce(stuck.previous_owner, '?') || ' expired at '
                    || coalesce(e.lease_expires_at::text, '?') || ' after attempt ' || e.attempts,
    failed_at     = CASE WHEN e.attempts >= $2 THEN now() END,
    lease_owner = NULL, lease_expires_at = NULL, processing_started_at = NULL
FROM stuck
WHERE e.id = stuck.id AND e.status = 'processing'
  AND (e.lease_expires_at < now() OR e.processing_started_at < now() - make_interval(secs => $1))
RETURNING e.id, e.status, stuck.previous_owner
