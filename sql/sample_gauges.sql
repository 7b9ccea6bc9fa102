-- sample_gauges: the database-wide gauges, each from its partial index.
-- $1: max processing seconds (what counts as stuck besides an expired lease).
-- $2: the largest count taken exactly; past it (a count of $2 + 1), the sampler reads the
-- planner's estimate instead (sql/estimate_*.sql), so a million-row pile costs no full scan.
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM outbox_events WHERE status <> 'failed' LIMIT $2::bigint + 1) s)
                                                                                  AS lag_events,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
       FROM outbox_events WHERE status <> 'failed')                               AS oldest_age_seconds,
    (SELECT count(*) FROM outbox_events WHERE status = 'processing')              AS inflight_events,
    (SELECT count(*) FROM outbox_events WHERE status = 'processing'
       AND (lease_expires_at < now()
            OR processing_started_at < now() - make_interval(secs => $1)))        AS stuck_events,
    (SELECT count(*) FROM (SELECT 1 FROM outbox_events WHERE status = 'failed' LIMIT $2::bigint + 1) s)
                                                                                  AS failed_events,
    (SELECT coalesce(sum(event_count), 0)::bigint FROM outbox_replay_audit)       AS replayed_events
