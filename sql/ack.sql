-- ack: the engine holds these events; remove them. Guarded by status, lease owner ($3) and
-- the attempt each was claimed with, so an ack after a reclaim changes nothing.
DELETE FROM outbox_events AS e
USING unnest($1::bigint[], $2::int[]) AS t(id, attempts)
WHERE e.id = t.id AND e.attempts = t.attempts
  AND e.status = 'processing' AND e.lease_owner = $3
RETURNING e.id
