-- reclaim: stuck events go back to pending after the delay the worker computed for each
-- ($3, seconds), or to failed where that delay is null (the attempt limit), with reason $5
-- (lease_expired).
-- A compare-and-swap on what reclaim_select saw: the row must still be processing, still
-- stuck (expired lease, or processing for longer than $4 s) and at the same attempt ($2),
-- so a late ack and the reclaimer can never both win.
UPDATE outbox_exceptions AS e
SET status        = CASE WHEN t.delay_seconds IS NULL THEN 'failed' ELSE 'pending' END,
    next_retry_at = CASE WHEN t.delay_seconds IS NULL THEN NULL
                         ELSE now() + make_interval(secs => t.delay_seconds) END,
    error_reason  = $5,
    error         = 'lease of ' || coalesce(e.lease_owner, '?') || ' expired at '
                    || coalesce(e.lease_expires_at::text, '?') || ' after attempt ' || e.attempts,
    failed_at     = CASE WHEN t.delay_seconds IS NULL THEN now() END,
    lease_owner = NULL, lease_expires_at = NULL, processing_started_at = NULL
FROM unnest($1::bigint[], $2::int[], $3::float8[]) AS t(id, attempts, delay_seconds)
WHERE e.id = t.id AND e.attempts = t.attempts AND e.status = 'processing'
  AND (e.lease_expires_at < now() OR e.processing_started_at < now() - make_interval(secs => $4))
RETURNING e.id, e.status
