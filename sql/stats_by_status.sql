-- stats_by_status: how many events in each state, and the oldest / newest insert time.
-- (runbook appendix: state distribution; outbox_event_states joins the log and the
-- exceptions, docs/design.md §6)
SELECT status, count(*) AS events,
       min(created_at) AS oldest_created_at, max(created_at) AS newest_created_at,
       count(*) FILTER (WHERE next_retry_at IS NOT NULL) AS retry_scheduled
FROM outbox_event_states
GROUP BY status
ORDER BY status
