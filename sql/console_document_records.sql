-- console_document_records: the delete records of document $2 in index $1, of projection $3
-- or of every projection when $3 is NULL (one row per projection at most: the key). With
-- the seconds until the prune may remove each (deleted_at + $4, the retention, on the
-- database's clock, which the prune uses too; negative: due, the next run removes it).
SELECT projection, index_name, doc_id, routing, doc_version, deleted_at, event_id,
       EXTRACT(epoch FROM deleted_at + make_interval(secs => $4) - now())::float8
           AS prunes_in_seconds
FROM outbox_delete_records
WHERE index_name = $1 AND doc_id = $2 AND ($3::text IS NULL OR projection = $3)
ORDER BY projection
