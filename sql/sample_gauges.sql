-- sample_gauges: the database-wide gauges.
-- $1: max processing seconds (what counts as stuck besides an expired lease).
-- $2: the largest count taken exactly; past it (a count of $2 + 1), the sampler reads the
-- planner's estimate instead (sql/estimate_*.sql), so a million-row pile costs no full scan.
-- Pending log events come from outbox_log_pending (only rows after each cursor are read);
-- in-flight log events are the open pieces' events.
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM outbox_log_pending
        UNION ALL
        SELECT 1 FROM outbox_open_pieces, unnest(event_ids)
        UNION ALL
        SELECT 1 FROM outbox_exceptions WHERE status <> 'failed'
        LIMIT $2::bigint + 1) s)                                                  AS lag_events,
    (SELECT extract(epoch FROM now() - least(
        (SELECT min(created_at) FROM outbox_log_pending),
        (SELECT min(l.created_at) FROM outbox_open_pieces AS p
           CROSS JOIN unnest(p.event_ids) AS i(id) JOIN outbox_events AS l ON l.id = i.id),
        (SELECT min(created_at) FROM outbox_exceptions WHERE status <> 'failed')))::float8)
                                                                                  AS oldest_age_seconds,
    ((SELECT count(*) FROM outbox_exceptions WHERE status = 'processing')
     + (SELECT coalesce(sum(cardinality(event_ids)), 0) FROM outbox_open_pieces))::bigint
                                                                                  AS inflight_events,
    ((SELECT count(*) FROM outbox_exceptions WHERE status = 'processing'
       AND (lease_expires_at < now()
            OR processing_started_at < now() - make_interval(secs => $1)))
     + (SELECT coalesce(sum(cardinality(event_ids)), 0) FROM outbox_open_pieces
        WHERE lease_expires_at < now()
           OR processing_started_at < now() - make_interval(secs => $1)))::bigint AS stuck_events,
    (SELECT count(*) FROM (SELECT 1 FROM outbox_exceptions WHERE status = 'failed' LIMIT $2::bigint + 1) s)
                                                                                  AS failed_events,
    (SELECT coalesce(sum(event_count), 0)::bigint FROM outbox_replay_audit)       AS replayed_events
