-- retry: back to pending with next_retry_at = now() + the delay computed per event
-- (exponential backoff, full jitter). A counted retry ($8 true: the event's own item failed)
-- uses up its attempt, and at the attempt limit ($4) the event becomes failed with reason $9
-- (max_attempts_exceeded), keeping the last error. A deferral ($8 false: the whole request
-- failed, or the engine was overloaded) refunds the attempt and counts a deferral instead.
-- Guarded like ack.
UPDATE outbox_exceptions AS e
SET status        = CASE WHEN t.counted AND e.attempts >= $4 THEN 'failed' ELSE 'pending' END,
    next_retry_at = CASE WHEN t.counted AND e.attempts >= $4 THEN NULL
                         ELSE now() + make_interval(secs => t.delay_seconds) END,
    error_reason  = CASE WHEN t.counted AND e.attempts >= $4 THEN $9::text ELSE t.reason END,
    error         = t.error,
    failed_at     = CASE WHEN t.counted AND e.attempts >= $4 THEN now() END,
    attempts      = CASE WHEN t.counted THEN e.attempts ELSE e.attempts - 1 END,
    deferrals     = CASE WHEN t.counted THEN e.deferrals ELSE e.deferrals + 1 END,
    lease_owner = NULL, lease_expires_at = NULL, processing_started_at = NULL
FROM unnest($1::bigint[], $2::int[], $5::float8[], $6::text[], $7::text[], $8::bool[])
     AS t(id, attempts, delay_seconds, reason, error, counted)
WHERE e.id = t.id AND e.attempts = t.attempts
  AND e.status = 'processing' AND e.lease_owner = $3
RETURNING e.id, e.status, e.error_reason
