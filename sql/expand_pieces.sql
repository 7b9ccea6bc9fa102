-- expand_pieces: the first step of the reclaim. An open piece whose lease expired, or that
-- has been processing for longer than $1 s, ends 'expanded' and is replaced by one
-- outbox_exceptions row per event not written there yet: processing, attempt 1, with the
-- piece's (dead) lease. The reclaim of stuck exceptions (reclaim_select.sql, reclaim.sql)
-- then treats them as any other. Events the dead worker had acked are sent again: a
-- version conflict, acked. A completion racing with this one: the first end wins
-- (ON CONFLICT), and either way no event is left without a way to be delivered.
WITH gone AS (
    INSERT INTO outbox_piece_ends (piece_id, ended)
    SELECT p.piece_id, 'expanded'
    FROM outbox_open_pieces AS p
    WHERE p.lease_expires_at < now()
       OR p.processing_started_at < now() - make_interval(secs => $1)
    ON CONFLICT DO NOTHING
    RETURNING piece_id
)
INSERT INTO outbox_exceptions AS x
    (id, projection, index_name, doc_id, op, payload, doc_version, routing, created_at,
     status, attempts, lease_owner, lease_expires_at, processing_started_at)
SELECT l.id, l.projection, l.index_name, l.doc_id, l.op, l.payload, l.doc_version, l.routing,
       l.created_at,
       'processing', 1, p.lease_owner, p.lease_expires_at, p.processing_started_at
FROM gone AS g
JOIN outbox_pieces AS p ON p.piece_id = g.piece_id
CROSS JOIN unnest(p.event_ids) AS i(id)
JOIN outbox_events AS l ON l.id = i.id
ON CONFLICT (id) DO NOTHING
RETURNING x.id
