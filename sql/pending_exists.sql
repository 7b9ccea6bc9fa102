-- pending_exists: is anything of projection $1 claimable now? Read-only, index-only probes,
-- for the follow-up checks after going idle.
SELECT EXISTS (SELECT 1 FROM outbox_events
               WHERE projection = $1 AND status = 'pending' AND next_retry_at IS NULL)
    OR EXISTS (SELECT 1 FROM outbox_events
               WHERE projection = $1 AND status = 'pending'
                 AND next_retry_at IS NOT NULL AND next_retry_at <= now())
