-- fail: terminal. Keeps a short stable reason ($4: error_reason codes, src/contract.rs) and the
-- bounded error text. Guarded like ack.
UPDATE outbox_exceptions AS e
SET status = 'failed', error_reason = t.reason, error = t.error, failed_at = now(),
    next_retry_at = NULL, lease_owner = NULL, lease_expires_at = NULL, processing_started_at = NULL
FROM unnest($1::bigint[], $2::int[], $4::text[], $5::text[]) AS t(id, attempts, reason, error)
WHERE e.id = t.id AND e.attempts = t.attempts
  AND e.status = 'processing' AND e.lease_owner = $3
RETURNING e.id
