-- console_workers: every worker the database shows, by worker id: the leases it holds (log
-- pieces still open, outbox_open_pieces, and exceptions it is processing) and the events
-- under them; whether it is waiting for a NOTIFY (outbox_waiting_workers; a waiting worker
-- refreshes its row at every poll, so `waiting_until` is its heartbeat); its sessions in
-- this database (application_name `outbox-worker <role> <worker id>`, src/db.rs) and their
-- last activity. The console's, the CLI's and migrate's own sessions are left out.
WITH leases AS (
    SELECT lease_owner AS worker_id, count(*) AS leases, sum(events)::bigint AS events,
           min(lease_expires_at) AS first_lease_expires_at
    FROM (
        SELECT lease_owner, cardinality(event_ids) AS events, lease_expires_at
        FROM outbox_open_pieces
        UNION ALL
        SELECT lease_owner, 1, lease_expires_at
        FROM outbox_exceptions
        WHERE status = 'processing' AND lease_owner IS NOT NULL
    ) AS held
    GROUP BY lease_owner
), waiting AS (
    SELECT worker_id, since AS waiting_since, expires_at AS waiting_until
    FROM outbox_waiting_workers
), sessions AS (
    SELECT substring(application_name FROM '^outbox-worker \S+ (.*)$') AS worker_id,
           count(*) AS connections, max(coalesce(state_change, backend_start)) AS last_activity
    FROM pg_stat_activity
    WHERE datname = current_database()
      AND application_name ~ '^outbox-worker (pool|listen) '
    GROUP BY 1
)
SELECT worker_id,
       coalesce(l.leases, 0) AS leases, coalesce(l.events, 0) AS events,
       l.first_lease_expires_at,
       coalesce(w.waiting_until > now(), false) AS waiting,
       w.waiting_since, w.waiting_until,
       coalesce(s.connections, 0) AS connections, s.last_activity
FROM leases AS l
FULL JOIN waiting AS w USING (worker_id)
FULL JOIN sessions AS s USING (worker_id)
ORDER BY worker_id
