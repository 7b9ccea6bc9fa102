-- log_fail: log events that end terminal on their first attempt become failed exceptions,
-- with a short stable reason ($4) and the bounded error text ($5). Fenced by the piece
-- ($2) like log_retry.
WITH held AS (
    SELECT p.piece_id FROM outbox_open_pieces AS p
    WHERE p.piece_id = ANY ($2::bigint[]) AND p.lease_owner = $3
)
INSERT INTO outbox_exceptions AS x
    (id, projection, index_name, doc_id, op, payload, doc_version, routing, created_at,
     status, attempts, error_reason, error, failed_at)
SELECT l.id, l.projection, l.index_name, l.doc_id, l.op, l.payload, l.doc_version, l.routing,
       l.created_at,
       'failed', 1, t.reason, t.error, now()
FROM unnest($1::bigint[], $2::bigint[], $4::text[], $5::text[]) AS t(id, piece_id, reason, error)
JOIN held ON held.piece_id = t.piece_id
JOIN outbox_events AS l ON l.id = t.id
ON CONFLICT (id) DO NOTHING
RETURNING x.id
