-- The outbox's states as operators ask for them (docs/design.md §6); replaced at every
-- migrate. stats, the sampler and the runbook's SQL read these.

-- outbox_cursor_positions: each projection's cursor: its newest piece's (migrations/0004),
-- or its outbox_cursors row when it has no piece left.
CREATE OR REPLACE VIEW outbox_cursor_positions AS
SELECT c.projection,
       coalesce(n.window_lo, c.window_lo) AS window_lo,
       coalesce(n.window_hi, c.window_hi) AS window_hi,
       coalesce(n.after_txid, c.after_txid) AS after_txid,
       coalesce(n.after_id, c.after_id) AS after_id,
       coalesce(n.exhausted, c.exhausted) AS exhausted
FROM outbox_cursors AS c
LEFT JOIN LATERAL (SELECT p.* FROM outbox_pieces AS p
                   WHERE p.projection = c.projection
                   ORDER BY p.piece_id DESC LIMIT 1) AS n ON true;

-- outbox_open_pieces: the pieces whose events are still in flight: not ended (completed
-- or expanded by the reclaim, outbox_piece_ends).
CREATE OR REPLACE VIEW outbox_open_pieces AS
SELECT p.*
FROM outbox_pieces AS p
WHERE NOT EXISTS (SELECT 1 FROM outbox_piece_ends AS e WHERE e.piece_id = p.piece_id);

-- outbox_log_pending: log events no claim has taken yet. For a projection with a cursor:
-- not visible in its window_lo, and not already taken from the current window (visible in
-- window_hi at or before the cursor, or the window is exhausted). Rows below window_lo's xmin are all claimed, so only
-- the log's tail is read. A projection that never claimed: all of its events. The sampler
-- reads this every few seconds: neither branch may read the whole log.
CREATE OR REPLACE VIEW outbox_log_pending AS
SELECT l.*
FROM outbox_cursor_positions AS c
-- LATERAL with OFFSET 0 (which keeps the planner from flattening it into a join): each
-- cursor bounds an index range of the log. A plain join with the cursor view was planned
-- as a hash join over the whole log: 200 ms per sample at 87,000 events.
CROSS JOIN LATERAL (
    SELECT e.*
    FROM outbox_events AS e
    WHERE e.projection = c.projection
      AND e.txid >= pg_snapshot_xmin(c.window_lo)
      AND NOT pg_visible_in_snapshot(e.txid, c.window_lo)
      AND NOT (pg_visible_in_snapshot(e.txid, c.window_hi)
               AND (c.exhausted OR (e.txid, e.id) <= (c.after_txid, c.after_id)))
    OFFSET 0
) AS l
UNION ALL
SELECT l.*
FROM (
    -- The projections present, by a skip scan of the window index (one probe each), so
    -- the log is not read row by row to find the few without a cursor.
    WITH RECURSIVE present(projection) AS (
        SELECT min(projection) FROM outbox_events
        UNION ALL
        SELECT (SELECT min(e.projection) FROM outbox_events AS e
                WHERE e.projection > present.projection)
        FROM present
        WHERE present.projection IS NOT NULL
    )
    SELECT projection FROM present
    WHERE projection IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM outbox_cursors AS c WHERE c.projection = present.projection)
) AS uncursored
JOIN outbox_events AS l USING (projection);

-- outbox_event_states: one row per event not yet delivered or failed, with the columns of
-- the old single table (schema 0002): pending log events, log events in a piece
-- that has not ended (processing under the piece's lease, attempt 1), and the exceptions
-- as they are.
CREATE OR REPLACE VIEW outbox_event_states AS
SELECT l.id, l.projection, l.index_name, l.doc_id, l.op, l.payload, l.doc_version,
       'pending'::text AS status, 0 AS attempts, 0 AS deferrals,
       NULL::timestamptz AS next_retry_at, NULL::text AS lease_owner,
       NULL::timestamptz AS lease_expires_at, NULL::timestamptz AS processing_started_at,
       NULL::text AS error_reason, NULL::text AS error, 0 AS replay_count,
       l.created_at, NULL::timestamptz AS failed_at, l.routing
FROM outbox_log_pending AS l
UNION ALL
SELECT l.id, l.projection, l.index_name, l.doc_id, l.op, l.payload, l.doc_version,
       'processing', 1, 0, NULL, p.lease_owner, p.lease_expires_at, p.processing_started_at,
       NULL, NULL, 0, l.created_at, NULL, l.routing
FROM outbox_open_pieces AS p
CROSS JOIN unnest(p.event_ids) AS i(id)
JOIN outbox_events AS l ON l.id = i.id
WHERE NOT EXISTS (SELECT 1 FROM outbox_exceptions AS x WHERE x.id = i.id)
UNION ALL
SELECT x.id, x.projection, x.index_name, x.doc_id, x.op, x.payload, x.doc_version,
       x.status, x.attempts, x.deferrals, x.next_retry_at, x.lease_owner,
       x.lease_expires_at, x.processing_started_at, x.error_reason, x.error, x.replay_count,
       x.created_at, x.failed_at, x.routing
FROM outbox_exceptions AS x;
