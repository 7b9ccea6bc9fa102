-- log_release: on shutdown, log events claimed but not sent become pending exceptions with
-- the attempt refunded (attempts 0), claimable at once. Fenced by the piece ($2).
WITH held AS (
    SELECT p.piece_id FROM outbox_open_pieces AS p
    WHERE p.piece_id = ANY ($2::bigint[]) AND p.lease_owner = $3
)
INSERT INTO outbox_exceptions AS x
    (id, projection, index_name, doc_id, op, payload, doc_version, routing, created_at, status, attempts)
SELECT l.id, l.projection, l.index_name, l.doc_id, l.op, l.payload, l.doc_version, l.routing,
       l.created_at,
       'pending', 0
FROM unnest($1::bigint[], $2::bigint[]) AS t(id, piece_id)
JOIN held ON held.piece_id = t.piece_id
JOIN outbox_events AS l ON l.id = t.id
ON CONFLICT (id) DO NOTHING
RETURNING x.id
