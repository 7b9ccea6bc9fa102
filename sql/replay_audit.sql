-- replay_audit: the most recent $1 replays, newest first.
SELECT id, replayed_at, actor, reason, filter::text, event_count, event_ids
FROM outbox_replay_audit
ORDER BY id DESC
LIMIT $1
