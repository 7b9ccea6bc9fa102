-- Adaptive wake-up (default): NOTIFY only while some worker waits for work.
-- A notifying commit takes a cluster-wide lock held through its WAL flush (docs/design.md §5);
-- under load every worker is busy, nobody waits, and producers commit without that lock.
-- SECURITY DEFINER with the search_path of migrate time: producers need no grant on the
-- worker's tables, and nobody can redirect the lookup through their own search_path.
CREATE OR REPLACE FUNCTION outbox_events_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM outbox_waiting_workers WHERE expires_at > now()) THEN
        PERFORM pg_notify('outbox_events', TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS outbox_events_notify ON outbox_events;
CREATE TRIGGER outbox_events_notify
    AFTER INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify();
