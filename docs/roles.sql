-- Least-privilege roles for outbox-worker (run as the schema owner, after `migrate`).
-- psql -v schema=public -v worker=outbox_worker -v operator=outbox_operator \
--      -v producer=app -f docs/roles.sql   (the roles must exist: CREATE ROLE ... LOGIN)
-- Migrations need the stronger owner role; the running worker needs only this:

-- The worker: read the log (it never changes a row of it; emptying a slot runs as the
-- owner, in outbox_truncate_slot, SECURITY DEFINER); claim, ack, retry, fail, release and
-- reclaim through its cursors, pieces and exceptions; its waiting mark; read the audit
-- trail for the replayed-events metric.
GRANT USAGE ON SCHEMA :"schema" TO :"worker";
GRANT SELECT ON outbox_events TO :"worker";
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_exceptions, outbox_pieces, outbox_cursors TO :"worker";
GRANT USAGE ON SEQUENCE outbox_pieces_piece_id_seq TO :"worker";
GRANT SELECT ON outbox_log_pending, outbox_event_states TO :"worker";
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
GRANT SELECT ON outbox_events, outbox_cursors, outbox_pieces TO :"operator";
GRANT SELECT, UPDATE ON outbox_exceptions TO :"operator";
GRANT SELECT ON outbox_log_pending, outbox_event_states TO :"operator";
GRANT SELECT ON outbox_waiting_workers TO :"operator";
-- replay --dry-run says which events a recorded delete would supersede.
GRANT SELECT ON outbox_delete_records TO :"operator";
GRANT SELECT, INSERT ON outbox_replay_audit TO :"operator";
GRANT USAGE ON SEQUENCE outbox_replay_audit_id_seq TO :"operator";

-- A producer (the application): insert events, nothing else. The notify trigger runs as
-- its owner (SECURITY DEFINER), so producers need no grant on the waiting table.
GRANT USAGE ON SCHEMA :"schema" TO :"producer";
GRANT INSERT ON outbox_events TO :"producer";
GRANT USAGE ON SEQUENCE outbox_events_id_seq TO :"producer";
