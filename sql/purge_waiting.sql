-- purge_waiting: marks of workers that died while waiting (long expired) are removed.
DELETE FROM outbox_waiting_workers WHERE expires_at < now() - interval '1 minute'
