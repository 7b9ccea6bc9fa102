-- console_document_events: the events of document $2 in index $1 (of projection $3, or of
-- every projection when $3 is NULL) still in the outbox: pending, processing or failed
-- (outbox_event_states), oldest first, at most $4. `version` is the external version the
-- worker sends and compares with a delete record: doc_version, else the outbox id.
-- No index leads with (index_name, doc_id): this reads the pending part of the log and the
-- exceptions, which is what the console's statement_timeout bounds.
SELECT id, projection, op, status, COALESCE(doc_version, id) AS version,
       doc_version IS NOT NULL AS producer_version, routing, attempts, error_reason,
       created_at, failed_at
FROM outbox_event_states
WHERE index_name = $1 AND doc_id = $2 AND ($3::text IS NULL OR projection = $3)
ORDER BY id
LIMIT $4
