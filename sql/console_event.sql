-- console_event: one event as operators see it (outbox_event_states), the payload indented
-- cut to $2 characters (payload_cut says whether it was), and its size as stored text; no
-- row once delivered (acked) or never inserted.
SELECT id, projection, index_name, doc_id, op, status, attempts, next_retry_at,
       lease_owner, lease_expires_at, processing_started_at, error_reason, error,
       replay_count, created_at, failed_at, doc_version,
       left(jsonb_pretty(payload), $2) AS payload_head, length(jsonb_pretty(payload)) > $2 AS payload_cut,
       octet_length(payload::text) AS payload_bytes
FROM outbox_event_states
WHERE id = $1
