-- delete_records_find: the recorded deletes of projection $1 among the documents named by
-- the pairs ($2 index_name, $3 doc_id): one query per claim, each pair one probe of the
-- primary key. drain.rs acks the index events at or below a recorded version as
-- superseded (deletes.rs decides).
SELECT r.index_name, r.doc_id, r.doc_version
FROM unnest($2::text[], $3::text[]) AS k(index_name, doc_id)
JOIN outbox_delete_records AS r
  ON r.projection = $1 AND r.index_name = k.index_name AND r.doc_id = k.doc_id
