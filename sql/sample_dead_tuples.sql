-- sample_dead_tuples: n_dead_tup of every outbox table in the worker's schema, partitions
-- included (any table named outbox_*; partitions come and go, so no name is fixed here).
-- The counts are the statistics system's, a few seconds behind at most.
-- (gauge outbox_db_dead_tuples{table}; runbook §7.5)
SELECT relname::text AS table_name, n_dead_tup
FROM pg_stat_user_tables
WHERE schemaname = current_schema()
  AND relname LIKE 'outbox\_%'
ORDER BY relname
