-- console_by_projection_index: events not yet delivered, and failed ones, by projection,
-- index and state (the console's overview). Reads outbox_event_states, as stats does.
SELECT projection, index_name, status, count(*) AS events
FROM outbox_event_states
GROUP BY projection, index_name, status
ORDER BY projection, index_name, status
