-- replay_superseded: which of the failed events $1 (the replay's selection) a recorded
-- delete would supersede once replayed: index events at or below the version deleted.
-- The dry run lists them; the replay moves them like any other and the worker acks them
-- as superseded, unsent.
SELECT x.id, COALESCE(x.doc_version, x.id) AS version, r.doc_version AS deleted_version
FROM outbox_exceptions AS x
JOIN outbox_delete_records AS r
  ON r.projection = x.projection AND r.index_name = x.index_name AND r.doc_id = x.doc_id
WHERE x.id = ANY ($1::bigint[]) AND x.op = 'index'
  AND COALESCE(x.doc_version, x.id) <= r.doc_version
ORDER BY x.id
