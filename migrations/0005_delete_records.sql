-- Schema 0005 (issue #13): deletes never resurrect, and producers may route documents.
--
-- routing: an optional producer column, sent as `routing` on index and delete actions (a
-- document indexed with custom routing can only be deleted with the same value). On the log
-- (the parent: its slots inherit it) and on outbox_exceptions, which copies log events.
-- Nullable without a default: adding it rewrites nothing.
ALTER TABLE outbox_events ADD COLUMN routing text;
ALTER TABLE outbox_exceptions ADD COLUMN routing text;

-- outbox_delete_records: the worker's own record of acked deletes, one row per document of
-- a projection, at the highest version deleted. Written in the same transaction as the
-- delete's ack (also when the engine answered not_found), read once per claim: an index
-- event whose version is at most the recorded one is acked as superseded and never sent,
-- so a late, older index event cannot bring back a document whose tombstone the engine has
-- already forgotten (index.gc_deletes, node restarts). Pruned after
-- OUTBOX_DELETE_RECORD_RETENTION_SECONDS by deleted_at.
-- The key compares bytes (COLLATE "C"): the lookup probes it once per document of every
-- claim, and equality means the same under any deterministic collation.
CREATE TABLE outbox_delete_records (
    projection  text        COLLATE "C" NOT NULL,
    index_name  text        COLLATE "C" NOT NULL,
    doc_id      text        COLLATE "C" NOT NULL,
    routing     text,
    doc_version bigint      NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    event_id    bigint      NOT NULL,
    PRIMARY KEY (projection, index_name, doc_id)
);
-- The prune takes the oldest records first, a bounded batch at a time.
CREATE INDEX outbox_delete_records_deleted_at_idx ON outbox_delete_records (deleted_at);
