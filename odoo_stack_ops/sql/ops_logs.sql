-- ops.logs: container log lines shipped by the log-shipping flow (idempotent migration).
CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE IF NOT EXISTS ops.logs (
    id          uuid PRIMARY KEY,              -- deterministic (host, container, stream, time, seq, line): re-shipping is a no-op
    ts          timestamptz NOT NULL,          -- Docker's timestamp of the entry's first line
    host        text NOT NULL,
    container   text NOT NULL,
    stream      text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    level       text,
    logger      text,
    message     text NOT NULL,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    shipped_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS logs_ts_idx ON ops.logs (ts DESC);
CREATE INDEX IF NOT EXISTS logs_container_ts_idx ON ops.logs (container, ts DESC);
CREATE INDEX IF NOT EXISTS logs_problems_idx ON ops.logs (ts DESC) WHERE level IN ('WARNING', 'ERROR', 'CRITICAL');

-- Where shipping stopped, per container and stream: the last shipped line's time and its rank among lines
-- with that same time. Updated in the same transaction as the rows (direct sink).
CREATE TABLE IF NOT EXISTS ops.log_cursors (
    host        text NOT NULL,
    container   text NOT NULL,
    stream      text NOT NULL,
    ts          timestamptz NOT NULL,
    stamp       text NOT NULL,                 -- Docker's RFC 3339 nano timestamp, exactly as sent
    seq         integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, container, stream)
);
