-- claim: take up to $2 eligible events of projection $1 for worker $3 under a lease of $4 s.
-- Due retries and fresh events come from their own partial indexes; oldest first overall.
-- SKIP LOCKED lets several workers claim side by side without waiting on each other.
-- attempts + 1 here is the fencing token every later write is guarded by.
WITH due AS (
    SELECT id FROM outbox_events
    WHERE projection = $1 AND status = 'pending'
      AND next_retry_at IS NOT NULL AND next_retry_at <= now()
    ORDER BY next_retry_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), fresh AS (
    SELECT id FROM outbox_events
    WHERE projection = $1 AND status = 'pending' AND next_retry_at IS NULL
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT id FROM due UNION ALL SELECT id FROM fresh) AS candidates
    ORDER BY id
    LIMIT $2
)
UPDATE outbox_events AS e
SET status = 'processing',
    attempts = e.attempts + 1,
    lease_owner = $3,
    lease_expires_at = now() + make_interval(secs => $4),
    processing_started_at = now(),
    next_retry_at = NULL
FROM picked
WHERE e.id = picked.id AND e.status = 'pending'
-- The lease's bookkeeping, then the producer's columns the encoder reads (src/contract.rs);
-- ClaimedEvent::from_row reads them by name. jsonb goes out as text, to be sent as it is.
RETURNING e.id, e.attempts, e.deferrals, extract(epoch FROM e.created_at)::float8 AS created_epoch,
          e.index_name, e.doc_id, e.op, e.payload::text AS payload,
          COALESCE(e.doc_version, e.id) AS version
