-- stats_stuck: processing events whose lease expired or that run longer than $1 seconds
-- (OUTBOX_MAX_PROCESSING_SECONDS), by lease owner. (runbook appendix: stuck)
SELECT lease_owner, count(*) AS events, min(processing_started_at) AS since
FROM outbox_event_states
WHERE status = 'processing'
  AND (lease_expires_at < now() OR processing_started_at < now() - make_interval(secs => $1))
GROUP BY lease_owner
ORDER BY events DESC
