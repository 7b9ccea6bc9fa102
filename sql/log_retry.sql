-- log_retry: log events whose first attempt did not ack become exceptions: pending with
-- next_retry_at = now() + the delay computed per event, or failed with reason $9
-- (max_attempts_exceeded) when a counted retry ($8 true) meets the attempt limit ($4)
-- already. A deferral ($8 false) refunds the attempt (attempts 0, deferrals 1).
-- Fenced by the piece ($2): only while this worker's piece is open (not ended). The
-- reclaim that ends a piece writes its events here too; ON CONFLICT keeps whichever row
-- came first, each a state the event is delivered from.
WITH held AS (
    SELECT p.piece_id FROM outbox_open_pieces AS p
    WHERE p.piece_id = ANY ($2::bigint[]) AND p.lease_owner = $3
)
INSERT INTO outbox_exceptions AS x
    (id, projection, index_name, doc_id, op, payload, doc_version, routing, created_at,
     status, attempts, deferrals, next_retry_at, error_reason, error, failed_at)
SELECT l.id, l.projection, l.index_name, l.doc_id, l.op, l.payload, l.doc_version, l.routing,
       l.created_at,
       CASE WHEN t.counted AND 1 >= $4 THEN 'failed' ELSE 'pending' END,
       CASE WHEN t.counted THEN 1 ELSE 0 END,
       CASE WHEN t.counted THEN 0 ELSE 1 END,
       CASE WHEN t.counted AND 1 >= $4 THEN NULL
            ELSE now() + make_interval(secs => t.delay_seconds) END,
       CASE WHEN t.counted AND 1 >= $4 THEN $9::text ELSE t.reason END,
       t.error,
       CASE WHEN t.counted AND 1 >= $4 THEN now() END
FROM unnest($1::bigint[], $2::bigint[], $5::float8[], $6::text[], $7::text[], $8::bool[])
     AS t(id, piece_id, delay_seconds, reason, error, counted)
JOIN held ON held.piece_id = t.piece_id
JOIN outbox_events AS l ON l.id = t.id
ON CONFLICT (id) DO NOTHING
RETURNING x.id, x.status, x.error_reason
