-- sample_gauges: the database-wide gauges, each from its partial index.
-- $1: max processing seconds (what counts as stuck besides an expired lease).
SELECT
    (SELECT count(*) FROM outbox_events WHERE status <> 'failed')                 AS lag_events,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
       FROM outbox_events WHERE status <> 'failed')                               AS oldest_age_seconds,
    (SELECT count(*) FROM outbox_events WHERE status = 'processing')              AS inflight_events,
    (SELECT count(*) FROM outbox_events WHERE status = 'processing'
       AND (lease_expires_at < now()
            OR processing_started_at < now() - make_interval(secs => $1)))        AS stuck_events,
    (SELECT count(*) FROM outbox_events WHERE status = 'failed')                  AS failed_events,
    (SELECT coalesce(sum(event_count), 0)::bigint FROM outbox_replay_audit)       AS replayed_events
