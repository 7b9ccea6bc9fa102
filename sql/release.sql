-- release: on shutdown, claimed but unsent events go back to pending with the attempt refunded.
UPDATE outbox_exceptions AS e
SET status = 'pending', attempts = e.attempts - 1,
    lease_owner = NULL, lease_expires_at = NULL, processing_started_at = NULL
FROM unnest($1::bigint[], $2::int[]) AS t(id, attempts)
WHERE e.id = t.id AND e.attempts = t.attempts
  AND e.status = 'processing' AND e.lease_owner = $3
RETURNING e.id
