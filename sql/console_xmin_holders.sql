-- console_xmin_holders: who holds back cleanup, by name (sample_xmin_holders.sql counts
-- the same holders for the gauges): sessions of this database with a snapshot or an xid,
-- prepared transactions, replication slots, oldest first. No query text: it may hold
-- application data.
SELECT kind, who, xid_age, age_seconds
FROM (
    SELECT 'backend' AS kind,
           format('pid %s, %s, %s, %s', a.pid, coalesce(a.usename::text, '-'),
                  coalesce(nullif(a.application_name, ''), '-'), coalesce(a.state, '-')) AS who,
           greatest(age(a.backend_xmin), age(a.backend_xid)) AS xid_age,
           extract(epoch FROM now() - a.xact_start)::float8 AS age_seconds
    FROM pg_stat_activity AS a
    WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
      AND a.pid <> pg_backend_pid()
      AND a.backend_type <> 'autovacuum worker'
      AND (a.datname = current_database() OR a.datid IS NULL)
    UNION ALL
    SELECT 'replication_slot', format('slot %s (%s)', s.slot_name, s.slot_type), age(s.xmin), NULL
    FROM pg_replication_slots AS s
    WHERE s.xmin IS NOT NULL
    UNION ALL
    SELECT 'prepared_transaction', format('gid %s, owner %s', p.gid, p.owner), age(p.transaction),
           extract(epoch FROM now() - p.prepared)::float8
    FROM pg_prepared_xacts AS p
    WHERE p.database = current_database()
) AS h
ORDER BY xid_age DESC NULLS LAST
LIMIT 20
