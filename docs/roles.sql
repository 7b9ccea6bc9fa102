-- Least-privilege roles for outbox-worker (run as the schema owner, after `migrate`).
-- psql -v schema=public -v worker=outbox_worker -v operator=outbox_operator \
--      -v producer=app -v console=outbox_console -v console_writer=outbox_console_writer \
--      -f docs/roles.sql   (the roles must exist: CREATE ROLE ... LOGIN)
-- Migrations need the stronger owner role; the running worker needs only this:

-- The worker: read the log (it never changes a row of it; emptying a slot runs as the
-- owner, in outbox_truncate_slot and outbox_truncate_pieces, SECURITY DEFINER); claim,
-- ack, retry, fail, release and reclaim through its pieces (insert-only), piece ends and
-- exceptions; lock its projection's cursor row (UPDATE is what a row lock needs); its
-- waiting mark; read the audit trail for the replayed-events metric.
GRANT USAGE ON SCHEMA :"schema" TO :"worker";
GRANT SELECT ON outbox_events TO :"worker";
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_exceptions TO :"worker";
GRANT SELECT, INSERT ON outbox_pieces, outbox_piece_ends TO :"worker";
GRANT SELECT, INSERT, UPDATE ON outbox_cursors TO :"worker";
GRANT USAGE ON SEQUENCE outbox_pieces_piece_id_seq TO :"worker";
GRANT SELECT ON outbox_log_pending, outbox_event_states, outbox_open_pieces,
                outbox_cursor_positions TO :"worker";
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_waiting_workers TO :"worker";
GRANT SELECT ON outbox_replay_audit TO :"worker";
-- Delete records: written with a delete's ack, read before sending, pruned by age.
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_delete_records TO :"worker";
-- Other roles' snapshots in pg_stat_activity (backend_xmin, backend_xid, xact_start), for
-- outbox_db_oldest_xmin_age_*{kind="backend"}: without it the worker sees only its own
-- role's sessions, and a report run by another role holds cleanup back unseen.
GRANT pg_read_all_stats TO :"worker";

-- The operator (stats, replay, audit): read everything, move failed events, write audit rows.
GRANT USAGE ON SCHEMA :"schema" TO :"operator";
GRANT SELECT ON outbox_events, outbox_cursors, outbox_pieces, outbox_piece_ends TO :"operator";
GRANT SELECT, UPDATE ON outbox_exceptions TO :"operator";
GRANT SELECT ON outbox_log_pending, outbox_event_states, outbox_open_pieces,
                outbox_cursor_positions TO :"operator";
GRANT SELECT ON outbox_waiting_workers TO :"operator";
-- replay --dry-run says which events a recorded delete would supersede.
GRANT SELECT ON outbox_delete_records TO :"operator";
GRANT SELECT, INSERT ON outbox_replay_audit TO :"operator";
GRANT USAGE ON SEQUENCE outbox_replay_audit_id_seq TO :"operator";

-- The console (`outbox-worker console`), read-only: what its pages read, and the
-- statistics views for the workers seen and what holds back cleanup. Without a write token
-- the console's sessions are read-only besides (default_transaction_read_only).
GRANT USAGE ON SCHEMA :"schema" TO :"console";
GRANT SELECT ON outbox_events, outbox_cursors, outbox_pieces, outbox_piece_ends,
                outbox_exceptions TO :"console";
GRANT SELECT ON outbox_log_pending, outbox_event_states, outbox_open_pieces,
                outbox_cursor_positions TO :"console";
GRANT SELECT ON outbox_waiting_workers, outbox_replay_audit TO :"console";
-- The replay preview names the events a delete record would supersede.
GRANT SELECT ON outbox_delete_records TO :"console";
GRANT pg_read_all_stats TO :"console";
-- A console started with OUTBOX_CONSOLE_WRITE_TOKEN: the same reads, plus what a replay
-- writes (failed -> pending in outbox_exceptions, the audit row). Nothing else.
GRANT :"console" TO :"console_writer";
GRANT UPDATE ON outbox_exceptions TO :"console_writer";
GRANT INSERT ON outbox_replay_audit TO :"console_writer";
GRANT USAGE ON SEQUENCE outbox_replay_audit_id_seq TO :"console_writer";

-- A producer (the application): insert events, nothing else. The notify trigger runs as
-- its owner (SECURITY DEFINER), so producers need no grant on the waiting table.
GRANT USAGE ON SCHEMA :"schema" TO :"producer";
GRANT INSERT ON outbox_events TO :"producer";
GRANT USAGE ON SEQUENCE outbox_events_id_seq TO :"producer";
