-- outbox_claim: up to p_limit events of p_projection for worker p_owner, under a lease of
-- p_lease seconds (docs/design.md §6). Called by sql/claim.sql; replaced at every migrate.
--
-- 1. The exceptions first: due retries and pending events in outbox_exceptions, each row
--    leased as before (attempts + 1 is its fencing token). piece_id is null for them.
-- 2. Then the log, by snapshot windows. The projection's row of outbox_cursors is locked,
--    so claims of one projection take turns (each is a few index reads). Its cursor is its
--    newest piece (or that row, once its pieces are truncated); the current window's
--    events are taken in (txid, id) order after it. A window that runs short is replaced
--    by the next one: window_lo := window_hi, window_hi := pg_current_snapshot(). A
--    transaction still running at window_hi is not in the window: its events belong to a
--    later one, so ids committing out of order lose nothing. What the claim took becomes
--    one piece: one inserted row with the events' ids, their lease and the cursor after
--    them; the events carry attempt 1 and the piece_id.
-- Nothing here updates or deletes a row (a claim that finds nothing writes nothing), so a
-- long transaction elsewhere leaves nothing for the next claim to walk.
-- The returned columns changed (routing, schema 0005): CREATE OR REPLACE cannot change them.
DROP FUNCTION IF EXISTS outbox_claim(text, integer, text, float8);
CREATE OR REPLACE FUNCTION outbox_claim(p_projection text, p_limit integer, p_owner text,
                                        p_lease float8)
RETURNS TABLE (piece_id bigint, id bigint, attempts integer, deferrals integer,
               created_epoch float8, index_name text, doc_id text, op text, payload text,
               version bigint, routing text)
LANGUAGE plpgsql
-- The log's reads must stop at the limit: an ordered scan of each slot's index, merged.
-- The planner underestimates a window (a snapshot test per row) and would rather read the
-- whole remainder and sort it; without sorts it merges, reading only what it takes.
SET enable_sort = off
-- A sort that cannot be avoided now costs 10^10 to the planner: past jit_above_cost, every
-- claim would JIT-compile its plans (measured: 200-700 ms per claim).
SET jit = off
-- Every statement keeps one plan for the session (planning them afresh at every claim, as
-- the pool's force_custom_plan would, cost about 2 ms per claim). The window's read has one
-- lower bound, the cursor, so its generic plan seeks straight to it.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    taken integer;
    c outbox_cursors%ROWTYPE;
    newest outbox_pieces%ROWTYPE;
    pass integer;
    passes integer;
    w_rows outbox_events[];
    w_xip xid8[];
    w_from_txid xid8;
    w_from_id bigint;
    w_last outbox_events;
    got outbox_events[] := '{}';
    w_piece bigint;
BEGIN
    RETURN QUERY
    WITH due AS (
        SELECT x.id FROM outbox_exceptions x
        WHERE x.projection = p_projection AND x.status = 'pending'
          AND x.next_retry_at IS NOT NULL AND x.next_retry_at <= now()
        ORDER BY x.next_retry_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), fresh AS (
        SELECT x.id FROM outbox_exceptions x
        WHERE x.projection = p_projection AND x.status = 'pending' AND x.next_retry_at IS NULL
        ORDER BY x.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT u.id FROM (SELECT due.id FROM due UNION ALL SELECT fresh.id FROM fresh) AS u
        ORDER BY u.id
        LIMIT p_limit
    )
    UPDATE outbox_exceptions AS e
    SET status = 'processing',
        attempts = e.attempts + 1,
        lease_owner = p_owner,
        lease_expires_at = now() + make_interval(secs => p_lease),
        processing_started_at = now(),
        next_retry_at = NULL
    FROM picked
    WHERE e.id = picked.id AND e.status = 'pending'
    RETURNING NULL::bigint, e.id, e.attempts, e.deferrals,
              extract(epoch FROM e.created_at)::float8, e.index_name, e.doc_id, e.op,
              e.payload::text, COALESCE(e.doc_version, e.id), e.routing;
    GET DIAGNOSTICS taken = ROW_COUNT;

    IF taken >= p_limit THEN
        RETURN;
    END IF;

    -- The turn: claims of one projection take this row's lock one after the other. A lock
    -- rewrites no row, so it leaves no dead tuple.
    SELECT * INTO c FROM outbox_cursors AS k WHERE k.projection = p_projection
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        -- A projection's first claim: its first window is the whole log ('1:1:' sees no
        -- transaction at all).
        INSERT INTO outbox_cursors AS k (projection, window_lo, window_hi)
        VALUES (p_projection, '1:1:', pg_current_snapshot())
        ON CONFLICT DO NOTHING;
        SELECT * INTO c FROM outbox_cursors AS k WHERE k.projection = p_projection
        FOR NO KEY UPDATE;
    END IF;
    -- The cursor is the newest piece's, when the projection has one.
    SELECT * INTO newest FROM outbox_pieces AS p WHERE p.projection = p_projection
    ORDER BY p.piece_id DESC LIMIT 1;
    IF FOUND THEN
        c.window_lo := newest.window_lo;
        c.window_hi := newest.window_hi;
        c.after_txid := newest.after_txid;
        c.after_id := newest.after_id;
        c.exhausted := newest.exhausted;
    END IF;

    passes := 2;
    IF c.exhausted THEN
        -- The last read of the current window came back short, and a window never gains
        -- events (its transactions had all committed at window_hi): start the next one.
        c.window_lo := c.window_hi;
        c.window_hi := pg_current_snapshot();
        c.after_txid := '0';
        c.after_id := 0;
        passes := 1;
    END IF;
    FOR pass IN 1..passes LOOP
        -- The current window after the cursor, in (txid, id) order: first the events of
        -- transactions running at window_lo (its xip list; all below its xmax), each one an
        -- ordered range of the index; then the range of transactions from window_lo's xmax
        -- on. Both visible at window_hi. Each read stops at the limit: a claim reads what it
        -- takes, never the rest of the window.
        w_rows := NULL;
        w_xip := ARRAY(SELECT pg_snapshot_xip(c.window_lo));
        IF cardinality(w_xip) > 0 AND c.after_txid < pg_snapshot_xmax(c.window_lo) THEN
            SELECT array_agg(ROW(w.*)::outbox_events ORDER BY w.txid, w.id)
              INTO w_rows
              FROM (
                SELECT l.* FROM unnest(w_xip) AS x(txid)
                CROSS JOIN LATERAL (
                    SELECT e.* FROM outbox_events e
                    WHERE e.projection = p_projection AND e.txid = x.txid
                      AND e.id > CASE WHEN x.txid = c.after_txid THEN c.after_id ELSE -1 END
                      AND pg_visible_in_snapshot(e.txid, c.window_hi)
                    ORDER BY e.id
                    LIMIT p_limit - taken
                ) AS l
                WHERE x.txid >= c.after_txid
                ORDER BY l.txid, l.id
                LIMIT p_limit - taken
              ) AS w;
        END IF;
        IF coalesce(cardinality(w_rows), 0) < p_limit - taken THEN
            -- One lower bound for the index, so the scan starts at the cursor (a row
            -- comparison beside a plain bound on txid was seen to start the scan at the
            -- projection's first entry): after the cursor, and from window_lo's xmax on.
            IF c.after_txid >= pg_snapshot_xmax(c.window_lo) THEN
                w_from_txid := c.after_txid;
                w_from_id := c.after_id;
            ELSE
                w_from_txid := pg_snapshot_xmax(c.window_lo);
                w_from_id := -1;
            END IF;
            SELECT coalesce(w_rows, '{}')
                   || coalesce(array_agg(ROW(w.*)::outbox_events ORDER BY w.txid, w.id), '{}')
              INTO w_rows
              FROM (
                SELECT e.* FROM outbox_events e
                WHERE e.projection = p_projection
                  AND (e.txid, e.id) > (w_from_txid, w_from_id)
                  AND e.txid < pg_snapshot_xmax(c.window_hi)
                  AND pg_visible_in_snapshot(e.txid, c.window_hi)
                ORDER BY e.txid, e.id
                LIMIT p_limit - taken - coalesce(cardinality(w_rows), 0)
              ) AS w;
            IF cardinality(w_rows) = 0 THEN
                w_rows := NULL;
            END IF;
        END IF;

        IF w_rows IS NOT NULL THEN
            got := got || w_rows;
            w_last := w_rows[cardinality(w_rows)];
            c.after_txid := w_last.txid;
            c.after_id := w_last.id;
            taken := taken + cardinality(w_rows);
        END IF;

        c.exhausted := taken < p_limit;
        EXIT WHEN taken >= p_limit OR pass = passes;
        -- The window ran short: the next one starts where it ended.
        c.window_lo := c.window_hi;
        c.window_hi := pg_current_snapshot();
        c.after_txid := '0';
        c.after_id := 0;
    END LOOP;

    -- One piece for what the log gave, with the cursor after it. Nothing taken, nothing
    -- written: the next claim computes the same windows again, or wider ones.
    IF cardinality(got) > 0 THEN
        INSERT INTO outbox_pieces AS p
            (projection, lease_owner, lease_expires_at, event_ids,
             window_lo, window_hi, after_txid, after_id, exhausted)
        VALUES (p_projection, p_owner, now() + make_interval(secs => p_lease),
                ARRAY(SELECT r.id FROM unnest(got) AS r),
                c.window_lo, c.window_hi, c.after_txid, c.after_id, c.exhausted)
        RETURNING p.piece_id INTO w_piece;
        RETURN QUERY
        SELECT w_piece, r.id, 1, 0, extract(epoch FROM r.created_at)::float8,
               r.index_name, r.doc_id, r.op, r.payload::text, COALESCE(r.doc_version, r.id),
               r.routing
        FROM unnest(got) AS r;
    END IF;
END
$$;
