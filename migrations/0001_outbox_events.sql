-- The outbox table. Producer-owned columns (docs/design.md §6, the producer's contract):
-- projection, index_name, doc_id, op, payload, doc_version. Everything else is the worker's.
CREATE TABLE IF NOT EXISTS outbox_events (
    id                    bigserial   PRIMARY KEY,
    projection            text        NOT NULL DEFAULT 'search_index_to_elastic',
    index_name            text        NOT NULL,
    doc_id                text        NOT NULL,
    op                    text        NOT NULL,
    payload               jsonb,
    doc_version           bigint,
    status                text        NOT NULL DEFAULT 'pending'
                                      CHECK (status IN ('pending', 'processing', 'failed')),
    attempts              integer     NOT NULL DEFAULT 0,
    next_retry_at         timestamptz,
    lease_owner           text,
    lease_expires_at      timestamptz,
    processing_started_at timestamptz,
    error_reason          text,
    error                 text,
    replay_count          integer     NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    failed_at             timestamptz
);

-- Partial indexes: each covers only the rows one operation looks at, so the claim, the
-- reclaim and the gauges stay cheap however large the failed pile grows.
-- Fresh events, claimed oldest first.
CREATE INDEX IF NOT EXISTS outbox_events_claim_idx
    ON outbox_events (projection, id)
    WHERE status = 'pending' AND next_retry_at IS NULL;
-- Retries, claimed once due.
CREATE INDEX IF NOT EXISTS outbox_events_retry_idx
    ON outbox_events (projection, next_retry_at)
    WHERE status = 'pending' AND next_retry_at IS NOT NULL;
-- Leases, for the reclaimer and the stuck / in-flight gauges.
CREATE INDEX IF NOT EXISTS outbox_events_lease_idx
    ON outbox_events (lease_expires_at)
    WHERE status = 'processing';
-- Not yet delivered (pending or processing), oldest first: lag and oldest-age gauges.
CREATE INDEX IF NOT EXISTS outbox_events_undelivered_idx
    ON outbox_events (created_at)
    WHERE status <> 'failed';
-- The failed pile, grouped by reason: stats and replay.
CREATE INDEX IF NOT EXISTS outbox_events_failed_idx
    ON outbox_events (error_reason, id)
    WHERE status = 'failed';

-- Every replay leaves a row here, written in the same transaction as the replay itself.
CREATE TABLE IF NOT EXISTS outbox_replay_audit (
    id          bigserial   PRIMARY KEY,
    replayed_at timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    reason      text        NOT NULL,
    filter      jsonb       NOT NULL,
    event_count integer     NOT NULL,
    event_ids   bigint[]    NOT NULL
);

-- Workers that are idle and waiting for a NOTIFY (adaptive trigger mode, docs/design.md §5).
-- A row expires by itself, so a worker that dies while waiting cannot leave producers
-- notifying forever; a waiting worker refreshes its row at every poll.
CREATE TABLE IF NOT EXISTS outbox_waiting_workers (
    worker_id  text        PRIMARY KEY,
    since      timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
