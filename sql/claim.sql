-- claim: up to $2 events of projection $1 for worker $3 under a lease of $4 s: due retries
-- and pending events of outbox_exceptions first, then the log by snapshot windows
-- (functions/outbox_claim.sql). piece_id is null for an exception (fenced by its attempt)
-- and names the piece for a log event (fenced by the piece's lease row).
-- ClaimedEvent::from_row reads the columns by name. jsonb goes out as text, sent as it is.
SELECT piece_id, id, attempts, deferrals, created_epoch, index_name, doc_id, op, payload, version,
       routing
FROM outbox_claim($1, $2, $3, $4)
