-- stats_failed_by_reason: the failed pile by error_reason, with the oldest and newest
-- failure and one sample error text. (runbook appendix: failed by reason)
SELECT error_reason, count(*) AS events,
       min(failed_at) AS oldest_failed_at, max(failed_at) AS newest_failed_at,
       (array_agg(error ORDER BY id DESC))[1] AS sample_error,
       (array_agg(id ORDER BY id))[1:5] AS sample_ids
FROM outbox_exceptions
WHERE status = 'failed'
GROUP BY error_reason
ORDER BY events DESC
