-- replay_select: the failed events a replay filter matches (the dry run shows exactly these).
-- $1 ids (null: any), $2 error_reason, $3 failed at or after, $4 failed before,
-- $5 projection, $6 index_name, $7 limit. Only status = 'failed' is ever matched.
SELECT id, error_reason, index_name, doc_id, failed_at
FROM outbox_exceptions
WHERE status = 'failed'
  AND ($1::bigint[] IS NULL OR id = ANY($1))
  AND ($2::text IS NULL OR error_reason = $2)
  AND ($3::timestamptz IS NULL OR failed_at >= $3)
  AND ($4::timestamptz IS NULL OR failed_at < $4)
  AND ($5::text IS NULL OR projection = $5)
  AND ($6::text IS NULL OR index_name = $6)
ORDER BY id
LIMIT $7
