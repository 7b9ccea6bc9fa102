-- delete_records_write: acked deletes of projection $1, written in the same transaction as
-- their ack (store/outcomes.rs): ($2 index_name, $3 doc_id, $4 routing, $5 doc_version,
-- $6 event_id). One row per document keeps the highest version deleted: an older delete
-- acked late changes nothing. Rows go in key order, so two workers writing overlapping
-- records lock them in the same order.
INSERT INTO outbox_delete_records AS r
    (projection, index_name, doc_id, routing, doc_version, event_id, deleted_at)
SELECT DISTINCT ON (t.index_name, t.doc_id)
       $1, t.index_name, t.doc_id, t.routing, t.doc_version, t.event_id, now()
FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
     AS t(index_name, doc_id, routing, doc_version, event_id)
ORDER BY t.index_name, t.doc_id, t.doc_version DESC
ON CONFLICT (projection, index_name, doc_id) DO UPDATE
SET doc_version = EXCLUDED.doc_version,
    routing = EXCLUDED.routing,
    event_id = EXCLUDED.event_id,
    deleted_at = EXCLUDED.deleted_at
WHERE r.doc_version <= EXCLUDED.doc_version
