-- 0004: pieces become insert-only too (issue #12, docs/design.md §6.2).
--
-- Schema 0003 left two small sources of dead tuples, about two per claim: each claim
-- updated its projection's row of outbox_cursors, and each piece was inserted and then
-- deleted. While a long transaction holds the cleanup horizon, those grow with every
-- claim (12,192 in the 60 s of the CI-sized long-transaction lab).
--
-- Now a claim writes one row and changes none:
-- - outbox_pieces: one row per claim that took log events: their ids and lease, and the
--   projection's cursor after them (window_lo, window_hi, after_txid, after_id,
--   exhausted). A projection's cursor is its newest piece; outbox_cursors keeps a row per
--   projection, locked by claims so they take turns, and holds the cursor only for a
--   projection whose pieces have all been truncated.
-- - outbox_piece_ends: one row per piece whose events are all resolved ('completed') or
--   that the reclaim took over ('expanded'). Unique per piece: only one of the two wins.
-- Both are partitioned into four slots by blocks of 10,000 piece ids, and a slot is
-- emptied with TRUNCATE once every piece in it has ended (functions/
-- outbox_truncate_pieces.sql), as the log's slots are.
--
-- Upgrade: runs in migrate's transaction. It refuses while 0003 workers hold live pieces
-- (stop them: SIGTERM releases their events). Expired pieces become processing exceptions
-- with their dead lease, as the reclaim would have made them, and are reclaimed as before.
-- Cursors carry over unchanged.

LOCK TABLE outbox_cursors, outbox_pieces IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    live bigint;
    owners text;
BEGIN
    SELECT count(*), string_agg(DISTINCT lease_owner, ', ')
      INTO live, owners
      FROM outbox_pieces
     WHERE lease_expires_at > now();
    IF live > 0 THEN
        RAISE EXCEPTION 'migrate refused: % pieces of the log are processing under live leases of running workers (%); stop those workers (SIGTERM releases their events) or wait for their leases to expire, then run migrate again', live, owners
            USING ERRCODE = 'lock_not_available';
    END IF;
END
$$;

INSERT INTO outbox_exceptions AS x
    (id, projection, index_name, doc_id, op, payload, doc_version, created_at,
     status, attempts, lease_owner, lease_expires_at, processing_started_at)
SELECT l.id, l.projection, l.index_name, l.doc_id, l.op, l.payload, l.doc_version, l.created_at,
       'processing', 1, p.lease_owner, p.lease_expires_at, p.processing_started_at
FROM outbox_pieces AS p
CROSS JOIN unnest(p.event_ids) AS i(id)
JOIN outbox_events AS l ON l.id = i.id
ON CONFLICT (id) DO NOTHING;

-- The views read the old table; migrate creates them again (functions/outbox_views.sql).
DROP VIEW IF EXISTS outbox_event_states;
DROP TABLE outbox_pieces;

CREATE TABLE outbox_pieces (
    piece_id              bigserial,
    projection            text        NOT NULL,
    lease_owner           text        NOT NULL,
    lease_expires_at      timestamptz NOT NULL,
    processing_started_at timestamptz NOT NULL DEFAULT now(),
    event_ids             bigint[]    NOT NULL,
    -- The projection's cursor once these events are taken (see outbox_cursors).
    window_lo             pg_snapshot NOT NULL,
    window_hi             pg_snapshot NOT NULL,
    after_txid            xid8        NOT NULL,
    after_id              bigint      NOT NULL,
    exhausted             boolean     NOT NULL
) PARTITION BY LIST (((piece_id / 10000) % 4));
CREATE TABLE outbox_pieces_slot0 PARTITION OF outbox_pieces FOR VALUES IN (0);
CREATE TABLE outbox_pieces_slot1 PARTITION OF outbox_pieces FOR VALUES IN (1);
CREATE TABLE outbox_pieces_slot2 PARTITION OF outbox_pieces FOR VALUES IN (2);
CREATE TABLE outbox_pieces_slot3 PARTITION OF outbox_pieces FOR VALUES IN (3);
-- A projection's newest piece (its cursor); a piece by id; pieces by lease (the reclaim).
CREATE INDEX outbox_pieces_cursor_idx ON outbox_pieces (projection, piece_id);
CREATE INDEX outbox_pieces_id_idx ON outbox_pieces (piece_id);
CREATE INDEX outbox_pieces_lease_idx ON outbox_pieces (lease_expires_at);

CREATE TABLE outbox_piece_ends (
    piece_id bigint      NOT NULL,
    ended    text        NOT NULL CHECK (ended IN ('completed', 'expanded')),
    ended_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY LIST (((piece_id / 10000) % 4));
CREATE TABLE outbox_piece_ends_slot0 PARTITION OF outbox_piece_ends FOR VALUES IN (0);
CREATE TABLE outbox_piece_ends_slot1 PARTITION OF outbox_piece_ends FOR VALUES IN (1);
CREATE TABLE outbox_piece_ends_slot2 PARTITION OF outbox_piece_ends FOR VALUES IN (2);
CREATE TABLE outbox_piece_ends_slot3 PARTITION OF outbox_piece_ends FOR VALUES IN (3);
-- One end per piece. A unique index cannot be declared on the parent (its key is an
-- expression), but a piece id always falls in the same slot of both tables, so one per
-- slot is unique for the whole table: ON CONFLICT DO NOTHING keeps the first end.
CREATE UNIQUE INDEX outbox_piece_ends_slot0_key ON outbox_piece_ends_slot0 (piece_id);
CREATE UNIQUE INDEX outbox_piece_ends_slot1_key ON outbox_piece_ends_slot1 (piece_id);
CREATE UNIQUE INDEX outbox_piece_ends_slot2_key ON outbox_piece_ends_slot2 (piece_id);
CREATE UNIQUE INDEX outbox_piece_ends_slot3_key ON outbox_piece_ends_slot3 (piece_id);

-- A worker older than this schema deletes pieces (its completion and reclaim did). Here a
-- deleted piece would take its projection's cursor back, so such a worker must fail
-- loudly, not half work: every DELETE is refused with a line that says why.
CREATE FUNCTION outbox_pieces_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'outbox_pieces is insert-only since schema 0004: a worker older than the schema is running; stop it and run the current version (runbook §5.5)'
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$$;
CREATE TRIGGER outbox_pieces_refuse_delete BEFORE DELETE ON outbox_pieces
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_pieces_refuse_delete();
