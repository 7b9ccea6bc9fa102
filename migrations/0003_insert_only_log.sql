-- 0003: the insert-only log (issue #12, docs/design.md §6).
--
-- outbox_events becomes an insert-only log: producers insert exactly as before, the worker
-- never updates or deletes a row of it, and a slot is emptied with TRUNCATE once every
-- projection has passed it. Claims read it by transaction-snapshot windows. Per-event state
-- lives only for the exceptions, in outbox_exceptions: events that did not ack the first time
-- (retrying, processing again, failed), plus whatever pending work this migration carries
-- over. So a long transaction elsewhere in the database no longer slows the claim (no dead
-- tuples to walk) and no longer bloats the outbox.
--
-- Upgrade (runbook §5.5): this runs in migrate's transaction. It refuses while workers of
-- the old version hold live leases; with them stopped (SIGTERM releases their work), every
-- row of the old table moves into outbox_exceptions with its state, attempts, lease and
-- error unchanged, so nothing is lost or sent again. Old workers still running afterwards
-- fail every statement (their SQL names columns the log does not have) and change nothing.

LOCK TABLE outbox_events IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    live bigint;
    owners text;
BEGIN
    SELECT count(*), string_agg(DISTINCT lease_owner, ', ')
      INTO live, owners
      FROM outbox_events
     WHERE status = 'processing' AND lease_expires_at > now();
    IF live > 0 THEN
        RAISE EXCEPTION 'migrate refused: % events are processing under live leases of running workers (%); stop those workers (SIGTERM releases their events) or wait for their leases to expire, then run migrate again', live, owners
            USING ERRCODE = 'lock_not_available';
    END IF;
END
$$;

ALTER TABLE outbox_events RENAME TO outbox_events_0002;
ALTER SEQUENCE outbox_events_id_seq OWNED BY NONE;

-- The exceptions: the old table's shape, for events that need per-event state.
CREATE TABLE outbox_exceptions (
    id                    bigint      PRIMARY KEY,
    projection            text        NOT NULL,
    index_name            text        NOT NULL,
    doc_id                text        NOT NULL,
    op                    text        NOT NULL,
    payload               jsonb,
    doc_version           bigint,
    status                text        NOT NULL DEFAULT 'pending'
                                      CHECK (status IN ('pending', 'processing', 'failed')),
    attempts              integer     NOT NULL DEFAULT 0,
    deferrals             integer     NOT NULL DEFAULT 0,
    next_retry_at         timestamptz,
    lease_owner           text,
    lease_expires_at      timestamptz,
    processing_started_at timestamptz,
    error_reason          text,
    error                 text,
    replay_count          integer     NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL,
    failed_at             timestamptz
);
CREATE INDEX outbox_exceptions_claim_idx ON outbox_exceptions (projection, id)
    WHERE status = 'pending' AND next_retry_at IS NULL;
CREATE INDEX outbox_exceptions_retry_idx ON outbox_exceptions (projection, next_retry_at)
    WHERE status = 'pending' AND next_retry_at IS NOT NULL;
CREATE INDEX outbox_exceptions_lease_idx ON outbox_exceptions (lease_expires_at)
    WHERE status = 'processing';
CREATE INDEX outbox_exceptions_undelivered_idx ON outbox_exceptions (created_at)
    WHERE status <> 'failed';
CREATE INDEX outbox_exceptions_failed_idx ON outbox_exceptions (error_reason, id)
    WHERE status = 'failed';

INSERT INTO outbox_exceptions
    (id, projection, index_name, doc_id, op, payload, doc_version, status, attempts, deferrals,
     next_retry_at, lease_owner, lease_expires_at, processing_started_at, error_reason, error,
     replay_count, created_at, failed_at)
SELECT id, projection, index_name, doc_id, op, payload, doc_version, status, attempts, deferrals,
       next_retry_at, lease_owner, lease_expires_at, processing_started_at, error_reason, error,
       replay_count, created_at, failed_at
FROM outbox_events_0002;

DROP TABLE outbox_events_0002;

-- The log. Producer columns as before (src/contract.rs); id, created_at and txid are the
-- worker's, all set by defaults. txid is the inserting transaction, for snapshot windows.
-- Four slots, by blocks of 100,000 ids: a slot is truncated once consumed, and the ids come
-- back to it after 300,000 more. The key is an expression, so producers, the claim and the
-- rotation never run DDL; TRUNCATE of a slot locks that slot only.
CREATE TABLE outbox_events (
    id          bigint      NOT NULL DEFAULT nextval('outbox_events_id_seq'),
    projection  text        NOT NULL DEFAULT 'search_index_to_elastic',
    index_name  text        NOT NULL,
    doc_id      text        NOT NULL,
    op          text        NOT NULL,
    payload     jsonb,
    doc_version bigint,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid        xid8        NOT NULL DEFAULT pg_current_xact_id()
) PARTITION BY LIST (((id / 100000) % 4));
ALTER SEQUENCE outbox_events_id_seq OWNED BY outbox_events.id;
CREATE TABLE outbox_events_slot0 PARTITION OF outbox_events FOR VALUES IN (0);
CREATE TABLE outbox_events_slot1 PARTITION OF outbox_events FOR VALUES IN (1);
CREATE TABLE outbox_events_slot2 PARTITION OF outbox_events FOR VALUES IN (2);
CREATE TABLE outbox_events_slot3 PARTITION OF outbox_events FOR VALUES IN (3);
-- Windows are read in (txid, id) order per projection; copies into outbox_exceptions and
-- the reclaim read events by id.
CREATE INDEX outbox_events_window_idx ON outbox_events (projection, txid, id);
CREATE INDEX outbox_events_id_idx ON outbox_events (id);

-- One row per projection: where its claims are in the log. The current window holds the
-- events of transactions visible in window_hi and not in window_lo; claims take them in
-- (txid, id) order after (after_txid, after_id). Everything visible in window_lo is claimed.
CREATE TABLE outbox_cursors (
    projection text         PRIMARY KEY,
    window_lo  pg_snapshot  NOT NULL,
    window_hi  pg_snapshot  NOT NULL,
    after_txid xid8         NOT NULL DEFAULT '0',
    after_id   bigint       NOT NULL DEFAULT 0,
    -- The last read of the current window came back short: it holds nothing more, and
    -- the next claim starts the next window at once.
    exhausted  boolean      NOT NULL DEFAULT false
);

-- A piece: the log events one claim took, under one lease. Deleted when all its events are
-- resolved (acked, or copied into outbox_exceptions); an expired piece is reclaimed.
CREATE TABLE outbox_pieces (
    piece_id              bigserial   PRIMARY KEY,
    projection            text        NOT NULL,
    lease_owner           text        NOT NULL,
    lease_expires_at      timestamptz NOT NULL,
    processing_started_at timestamptz NOT NULL DEFAULT now(),
    event_ids             bigint[]    NOT NULL
);
CREATE INDEX outbox_pieces_lease_idx ON outbox_pieces (lease_expires_at);
