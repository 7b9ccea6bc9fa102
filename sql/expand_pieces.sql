-- expand_pieces: the first step of the reclaim. A piece whose lease expired, or that has
-- been processing for longer than $1 s, is replaced by one outbox_exceptions row per event
-- not written there yet: processing, attempt 1, with the piece's (dead) lease. The reclaim
-- of stuck exceptions (reclaim_select.sql, reclaim.sql) then treats them as any other.
-- Events the dead worker had acked are sent again: a version conflict, acked.
WITH gone AS (
    DELETE FROM outbox_pieces AS p
    WHERE p.lease_expires_at < now()
       OR p.processing_started_at < now() - make_interval(secs => $1)
    RETURNING p.lease_owner, p.lease_expires_at, p.processing_started_at, p.event_ids
)
INSERT INTO outbox_exceptions AS x
    (id, projection, index_name, doc_id, op, payload, doc_version, routing, created_at,
     status, attempts, lease_owner, lease_expires_at, processing_started_at)
SELECT l.id, l.projection, l.index_name, l.doc_id, l.op, l.payload, l.doc_version, l.routing,
       l.created_at,
       'processing', 1, g.lease_owner, g.lease_expires_at, g.processing_started_at
FROM gone AS g
CROSS JOIN unnest(g.event_ids) AS i(id)
JOIN outbox_events AS l ON l.id = i.id
ON CONFLICT (id) DO NOTHING
RETURNING x.id
