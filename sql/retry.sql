-- retry: back to pending with next_retry_at = now() + the delay computed per event
-- (exponential backoff, full jitter); at the attempt limit ($4) the event becomes failed
-- with reason max_attempts_exceeded, keeping the last error. Guarded like ack.
UPDATE outbox_events AS e
SET status        = CASE WHEN e.attempts >= $4 THEN 'failed' ELSE 'pending' END,
    next_retry_at = CASE WHEN e.attempts >= $4 THEN NULL
                         ELSE now() + make_interval(secs => t.delay_seconds) END,
    error_reason  = CASE WHEN e.attempts >= $4 THEN 'max_attempts_exceeded' ELSE t.reason END,
    error         = t.error,
    failed_at     = CASE WHEN e.attempts >= $4 THEN now() END,
    lease_owner = NULL, lease_expires_at = NULL, processing_started_at = NULL
FROM unnest($1::bigint[], $2::int[], $5::float8[], $6::text[], $7::text[])
     AS t(id, attempts, delay_seconds, reason, error)
WHERE e.id = t.id AND e.attempts = t.attempts
  AND e.status = 'processing' AND e.lease_owner = $3
RETURNING e.id, e.status, e.error_reason
