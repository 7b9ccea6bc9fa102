-- pending_exists: is anything of projection $1 claimable now? Read-only probes for the
-- follow-up checks after going idle: a pending or due exception, or a log event after the
-- projection's cursor (any log event, before its first claim).
SELECT EXISTS (SELECT 1 FROM outbox_exceptions
               WHERE projection = $1 AND status = 'pending' AND next_retry_at IS NULL)
    OR EXISTS (SELECT 1 FROM outbox_exceptions
               WHERE projection = $1 AND status = 'pending'
                 AND next_retry_at IS NOT NULL AND next_retry_at <= now())
    OR EXISTS (SELECT 1 FROM outbox_log_pending WHERE projection = $1)
