-- console_event_audit: the replays that moved event $1, newest first.
SELECT id, replayed_at, actor, reason, event_count
FROM outbox_replay_audit
WHERE $1 = ANY(event_ids)
ORDER BY id DESC
LIMIT 50
