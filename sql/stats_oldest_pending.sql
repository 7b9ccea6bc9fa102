-- stats_oldest_pending: age in seconds of the oldest event not yet delivered (pending or
-- processing); null when there is none. (runbook appendix: oldest pending)
SELECT extract(epoch FROM now() - min(created_at))::float8
FROM outbox_event_states
WHERE status <> 'failed'
