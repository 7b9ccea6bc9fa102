-- prune_delete_records: at most $2 delete records older than $1 seconds, oldest first (the
-- deleted_at index), so one run never holds many locks or writes much WAL; the prune loop
-- (deletes.rs) repeats while batches come back full. A record refreshed by a newer delete
-- meanwhile is a new row version: the ctid no longer matches, and it stays.
DELETE FROM outbox_delete_records AS r
WHERE r.ctid IN (
    SELECT o.ctid FROM outbox_delete_records AS o
    WHERE o.deleted_at < now() - make_interval(secs => $1)
    ORDER BY o.deleted_at
    LIMIT $2
)
  AND r.deleted_at < now() - make_interval(secs => $1)
