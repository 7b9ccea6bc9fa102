-- count_delete_records: how many delete records are kept (the outbox_delete_records gauge,
-- after each prune; an index-only scan of the deleted_at index).
SELECT count(*) FROM outbox_delete_records
