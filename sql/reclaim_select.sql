-- reclaim_select: up to $2 stuck events (processing with an expired lease, or processing for
-- longer than $1 s), with the history their retry delay is computed from (backoff.rs).
-- Read-only: reclaim.sql re-checks every row at write time.
SELECT id, attempts, deferrals, lease_owner
FROM outbox_exceptions
WHERE status = 'processing'
  AND (lease_expires_at < now() OR processing_started_at < now() - make_interval(secs => $1))
ORDER BY lease_expires_at
LIMIT $2
