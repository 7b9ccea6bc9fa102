-- replay: failed -> pending for the events the filter matches (same parameters as
-- replay_select), attempts and deferrals reset, replay_count + 1, and the audit row, all in one statement
-- (so in one transaction). $8 actor, $9 reason text, $10 the filter as JSON.
WITH picked AS (
    SELECT id FROM outbox_exceptions
    WHERE status = 'failed'
      AND ($1::bigint[] IS NULL OR id = ANY($1))
      AND ($2::text IS NULL OR error_reason = $2)
      AND ($3::timestamptz IS NULL OR failed_at >= $3)
      AND ($4::timestamptz IS NULL OR failed_at < $4)
      AND ($5::text IS NULL OR projection = $5)
      AND ($6::text IS NULL OR index_name = $6)
    ORDER BY id
    LIMIT $7
    FOR UPDATE
), moved AS (
    UPDATE outbox_exceptions AS e
    SET status = 'pending', attempts = 0, deferrals = 0, next_retry_at = NULL, replay_count = e.replay_count + 1,
        error_reason = NULL, error = NULL, failed_at = NULL,
        lease_owner = NULL, lease_expires_at = NULL, processing_started_at = NULL
    FROM picked
    WHERE e.id = picked.id AND e.status = 'failed'
    RETURNING e.id
)
INSERT INTO outbox_replay_audit (actor, reason, filter, event_count, event_ids)
SELECT $8, $9, $10::jsonb, count(*), coalesce(array_agg(id ORDER BY id), '{}')
FROM moved
RETURNING id, replayed_at, event_count, event_ids
