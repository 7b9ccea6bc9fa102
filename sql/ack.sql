-- ack: the engine holds these events; remove them from outbox_exceptions. Guarded by status,
-- lease owner ($3) and the attempt each was claimed with, so an ack after a reclaim changes
-- nothing. (An event claimed from the log needs no write of its own: its piece is
-- completed once all of the piece's events are resolved, sql/complete_pieces.sql.)
DELETE FROM outbox_exceptions AS e
USING unnest($1::bigint[], $2::int[]) AS t(id, attempts)
WHERE e.id = t.id AND e.attempts = t.attempts
  AND e.status = 'processing' AND e.lease_owner = $3
RETURNING e.id
