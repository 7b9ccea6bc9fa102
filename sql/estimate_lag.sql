-- estimate_lag: the planner's estimate of undelivered events (pending + processing),
-- used only when there are more than the sampler counts exactly.
EXPLAIN (FORMAT JSON) SELECT 1 FROM outbox_events WHERE status <> 'failed'
