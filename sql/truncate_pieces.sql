-- truncate_pieces: empty slot $1 of outbox_pieces and outbox_piece_ends if every piece in it
-- has ended, waiting at most $2 (a lock_timeout) for the locks
-- (functions/outbox_truncate_slot.sql, outbox_truncate_pieces).
SELECT outbox_truncate_pieces($1, $2)
