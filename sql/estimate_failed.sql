-- estimate_failed: the planner's estimate of the failed pile, used only when it is larger
-- than the sampler counts exactly.
EXPLAIN (FORMAT JSON) SELECT 1 FROM outbox_exceptions WHERE status = 'failed'
