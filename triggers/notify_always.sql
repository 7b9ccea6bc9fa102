-- Classic wake-up: every inserting statement notifies. The payload is constant (the table's
-- schema, which lets one database host several outboxes), so PostgreSQL
-- folds a transaction's notifications into one; commits still serialise (docs/design.md §5).
-- SECURITY DEFINER with the search_path of migrate time: producers need no grant on the
-- worker's tables, and nobody can redirect the lookup through their own search_path.
CREATE OR REPLACE FUNCTION outbox_events_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify('outbox_events', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS outbox_events_notify ON outbox_events;
CREATE TRIGGER outbox_events_notify
    AFTER INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify();
