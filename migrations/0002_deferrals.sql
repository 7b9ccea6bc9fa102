-- Deferrals: whole-request failures (engine unreachable, a 429 or 5xx for the whole request,
-- 401/403) and item-level 429s are not the event's fault. They are counted here, not in
-- attempts, so an engine outage or overload of any length never makes an event terminal;
-- the retry backoff grows with attempts + deferrals, so they never spin either.
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS deferrals integer NOT NULL DEFAULT 0;
