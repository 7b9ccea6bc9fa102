-- sample_xmin_holders: everything that holds back cleanup (VACUUM, HOT pruning) in this
-- database, one row per xid it pins, with the reference point to age them against.
-- (gauges outbox_db_oldest_xmin_age_{seconds,xids}{kind}; runbook §7.5 runs the same
-- catalogs by hand)
--
-- Columns: next_xid, the snapshot's xmax as a 64-bit xid (every xid below it was assigned
-- before this statement); kind, xid (32-bit) and age_seconds of one holder, null when
-- nothing holds anything (the one row then carries next_xid alone).
--   backend               a session of this database (or a walsender, database-less, as
--                         with hot_standby_feedback) with a snapshot (backend_xmin) or an
--                         xid of its own (backend_xid); aged from xact_start. Left out:
--                         this statement's own session, and autovacuum workers, whose xmin
--                         other vacuums ignore.
--   replication_slot      a slot's xmin, whatever its database: the horizon takes every
--                         slot's. A logical slot's catalog_xmin only keeps system catalog
--                         rows, not the outbox's, so it is not counted. No timestamp: the
--                         sampler ages it by when it saw the xid (src/horizon.rs).
--   prepared_transaction  a transaction of this database prepared (PREPARE TRANSACTION)
--                         and neither committed nor rolled back; aged from `prepared`.
-- Seeing other roles' sessions needs pg_read_all_stats (docs/roles.sql).
WITH holders (kind, xid, age_seconds) AS (
    SELECT 'backend', x.xid, extract(epoch FROM now() - a.xact_start)::float8
    FROM pg_stat_activity a
    CROSS JOIN LATERAL (VALUES (a.backend_xmin), (a.backend_xid)) x (xid)
    WHERE x.xid IS NOT NULL
      AND a.pid <> pg_backend_pid()
      AND a.backend_type <> 'autovacuum worker'
      AND (a.datname = current_database() OR a.datid IS NULL)
    UNION ALL
    SELECT 'replication_slot', s.xmin, NULL::float8
    FROM pg_replication_slots s
    WHERE s.xmin IS NOT NULL
    UNION ALL
    SELECT 'prepared_transaction', p.transaction, extract(epoch FROM now() - p.prepared)::float8
    FROM pg_prepared_xacts p
    WHERE p.database = current_database()
)
SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid,
       h.kind, h.xid::text::bigint AS xid, h.age_seconds
FROM (SELECT 1) one
LEFT JOIN holders h ON true
