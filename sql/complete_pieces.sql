-- complete_pieces: every event of these pieces ($1) is resolved (acked, superseded, or
-- copied into outbox_exceptions); the lease rows go. Guarded by the owner ($2): a piece the
-- reclaimer took meanwhile is gone already, and its acks were late.
DELETE FROM outbox_pieces
WHERE piece_id = ANY ($1::bigint[]) AND lease_owner = $2
RETURNING piece_id
