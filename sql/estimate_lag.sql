-- estimate_lag: the planner's estimate of undelivered events (the log not yet claimed,
-- plus pending and processing exceptions), used only when there are more than the sampler
-- counts exactly. The log's part counts its rows not yet truncated: an overestimate by at
-- most the slots already claimed.
EXPLAIN (FORMAT JSON)
SELECT 1 FROM outbox_events
UNION ALL
SELECT 1 FROM outbox_exceptions WHERE status <> 'failed'
