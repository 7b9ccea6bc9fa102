-- complete_pieces: every event of these pieces ($1) is resolved (acked, superseded, or
-- copied into outbox_exceptions): each piece ends, 'completed'. Guarded by the owner ($2),
-- and written once: a piece the reclaim ended meanwhile ('expanded') stays so, and its
-- acks were late. Insert-only: a piece's slot is truncated once all of its pieces ended.
INSERT INTO outbox_piece_ends (piece_id, ended)
SELECT p.piece_id, 'completed'
FROM outbox_pieces AS p
WHERE p.piece_id = ANY ($1::bigint[]) AND p.lease_owner = $2
ON CONFLICT DO NOTHING
RETURNING piece_id
