-- truncate_slot: empty slot $1 of the log if nothing in it is needed any more, waiting at
-- most $2 (a lock_timeout) for its lock (functions/outbox_truncate_slot.sql).
SELECT outbox_truncate_slot($1, $2)
