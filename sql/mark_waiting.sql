-- mark_waiting: this worker ($1) is idle and wants a NOTIFY for the next insert, for $2 s.
INSERT INTO outbox_waiting_workers (worker_id, expires_at)
VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (worker_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
