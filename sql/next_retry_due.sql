-- next_retry_due: seconds until the earliest scheduled retry of projection $1 (null if none),
-- so an idle worker wakes when it falls due instead of at the next poll.
SELECT extract(epoch FROM min(next_retry_at) - now())::float8
FROM outbox_exceptions
WHERE projection = $1 AND status = 'pending' AND next_retry_at IS NOT NULL
