-- outbox_truncate_slot: empty one slot of the log once nothing in it is still needed
-- (docs/design.md §6). Called by sql/truncate_slot.sql; replaced at every migrate.
-- Returns what it did or why not: 'empty', 'active' (producers are writing into it now),
-- 'unclaimed' (some projection has not claimed all of its events yet), 'leased' (a piece
-- still holds some of them), 'busy' (the lock was not granted within p_lock_timeout), or
-- 'truncated'.
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
    lo pg_snapshot;
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
            SELECT k.window_lo INTO lo FROM outbox_cursors AS k WHERE k.projection = proj;
            IF NOT FOUND THEN
                RETURN 'unclaimed';
            END IF;
            EXECUTE format(
                'SELECT EXISTS (SELECT 1 FROM %I l
                                WHERE l.projection = $1 AND l.txid >= pg_snapshot_xmin($2)
                                  AND NOT pg_visible_in_snapshot(l.txid, $2))', part)
                INTO needed USING proj, lo;
            IF needed THEN
                RETURN 'unclaimed';
            END IF;
        END LOOP;
        -- And no piece may still hold any of them (the reclaim reads them back).
        IF EXISTS (SELECT 1 FROM outbox_pieces p, unnest(p.event_ids) AS i(id)
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
