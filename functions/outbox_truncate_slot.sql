-- outbox_truncate_slot: empty one slot of the log once nothing in it is still needed
-- (docs/design.md §6). Called by sql/truncate_slot.sql; replaced at every migrate.
-- Returns what it did or why not: 'empty', 'active' (producers are writing into it now),
-- 'unclaimed' (some projection has not claimed all of its events yet), 'leased' (a piece
-- still holds some of them), 'busy' (the lock was not granted within p_lock_timeout), or
-- 'truncated'. The pieces' own slots rotate the same way (outbox_truncate_pieces below).
-- The slot of an id is (id / 100000) % 4, the log's partition key (migrations/0003).
-- TRUNCATE needs the slot's ACCESS EXCLUSIVE lock, and only that slot's: producers write
-- into the active slot, so they are never blocked. A session that has read the log and
-- sits idle in its transaction holds a lock on every slot; the wait for it ends after
-- p_lock_timeout, and the slot waits for a later pass (runbook §7.6).
-- SECURITY DEFINER: the worker's role needs no ownership of the log.
CREATE OR REPLACE FUNCTION outbox_truncate_slot(p_slot integer, p_lock_timeout text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    part text := format('outbox_events_slot%s', p_slot);
    has_rows boolean;
    needed boolean;
    proj text;
    c outbox_cursor_positions%ROWTYPE;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', part) INTO has_rows;
    IF NOT has_rows THEN
        RETURN 'empty';
    END IF;
    IF (SELECT (last_value / 100000) % 4 FROM outbox_events_id_seq) = p_slot THEN
        RETURN 'active';
    END IF;
    FOR pass IN 1..2 LOOP
        -- Every event here must be claimed: visible in its projection's window_lo. The
        -- projections present are found by a skip scan of the window index, and each one's
        -- unclaimed events by a range of it (rows below window_lo's xmin are all claimed).
        FOR proj IN EXECUTE format(
            'WITH RECURSIVE p(v) AS (
                 SELECT min(projection) FROM %1$I
                 UNION ALL
                 SELECT (SELECT min(projection) FROM %1$I WHERE projection > p.v)
                 FROM p WHERE p.v IS NOT NULL)
             SELECT v FROM p WHERE v IS NOT NULL', part)
        LOOP
            SELECT * INTO c FROM outbox_cursor_positions AS k WHERE k.projection = proj;
            IF NOT FOUND THEN
                RETURN 'unclaimed';
            END IF;
            -- Claimed: visible in window_lo, or taken from the current window (visible in
            -- window_hi, and at or before the cursor, or the window is exhausted).
            EXECUTE format(
                'SELECT EXISTS (SELECT 1 FROM %I l
                                WHERE l.projection = $1 AND l.txid >= pg_snapshot_xmin($2)
                                  AND NOT pg_visible_in_snapshot(l.txid, $2)
                                  AND NOT (pg_visible_in_snapshot(l.txid, $3)
                                           AND ($4 OR (l.txid, l.id) <= ($5, $6))))', part)
                INTO needed
                USING proj, c.window_lo, c.window_hi, c.exhausted, c.after_txid, c.after_id;
            IF needed THEN
                RETURN 'unclaimed';
            END IF;
        END LOOP;
        -- And no piece may still hold any of them (the reclaim reads them back).
        IF EXISTS (SELECT 1 FROM outbox_open_pieces p, unnest(p.event_ids) AS i(id)
                   WHERE (i.id / 100000) % 4 = p_slot) THEN
            RETURN 'leased';
        END IF;
        EXIT WHEN pass = 2;
        -- Checked without the lock first, so a slot still in use is never locked; checked
        -- again under it, when no insert into the slot can be in progress.
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
        BEGIN
            EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', part);
        EXCEPTION WHEN lock_not_available THEN
            RETURN 'busy';
        END;
    END LOOP;
    EXECUTE format('TRUNCATE %I', part);
    RETURN 'truncated';
END
$$;

-- outbox_truncate_pieces: empty one slot of outbox_pieces and outbox_piece_ends (both keyed
-- (piece_id / 10000) % 4, migrations/0004) once every piece in it has ended. Returns
-- 'empty', 'active' (claims are inserting into it now), 'open' (a piece in it has not
-- ended), 'busy' (a lock was not granted within p_lock_timeout) or 'truncated'.
-- A projection whose newest piece is in the slot (it has claimed nothing since) keeps its
-- cursor: it is copied into its outbox_cursors row first. The cursor rows are locked
-- before the slots, in the order claims take them, so the two never wait on each other in
-- a circle; claims of the projections wait for at most p_lock_timeout plus the TRUNCATE.
CREATE OR REPLACE FUNCTION outbox_truncate_pieces(p_slot integer, p_lock_timeout text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    part text := format('outbox_pieces_slot%s', p_slot);
    ends text := format('outbox_piece_ends_slot%s', p_slot);
    has_rows boolean;
    open_piece boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', part) INTO has_rows;
    IF NOT has_rows THEN
        RETURN 'empty';
    END IF;
    IF (SELECT (last_value / 10000) % 4 FROM outbox_pieces_piece_id_seq) = p_slot THEN
        RETURN 'active';
    END IF;
    FOR pass IN 1..2 LOOP
        EXECUTE format(
            'SELECT EXISTS (SELECT 1 FROM %I p
                            WHERE NOT EXISTS (SELECT 1 FROM %I e
                                              WHERE e.piece_id = p.piece_id))', part, ends)
            INTO open_piece;
        IF open_piece THEN
            RETURN 'open';
        END IF;
        EXIT WHEN pass = 2;
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
        BEGIN
            PERFORM 1 FROM outbox_cursors FOR NO KEY UPDATE;
            EXECUTE format('LOCK TABLE %I, %I IN ACCESS EXCLUSIVE MODE', part, ends);
        EXCEPTION WHEN lock_not_available THEN
            RETURN 'busy';
        END;
    END LOOP;
    UPDATE outbox_cursors AS k
    SET window_lo = n.window_lo, window_hi = n.window_hi, after_txid = n.after_txid,
        after_id = n.after_id, exhausted = n.exhausted
    FROM (SELECT newest.*
          FROM outbox_cursors AS c
          CROSS JOIN LATERAL (SELECT p.* FROM outbox_pieces AS p
                              WHERE p.projection = c.projection
                              ORDER BY p.piece_id DESC LIMIT 1) AS newest) AS n
    WHERE n.projection = k.projection AND (n.piece_id / 10000) % 4 = p_slot;
    EXECUTE format('TRUNCATE %I, %I', part, ends);
    RETURN 'truncated';
END
$$;
