-- ops.logs: container log lines shipped by the log-shipping flow (idempotent: run before every pass).
-- On Supabase, also add `ops` to the Data API's exposed schemas (Settings → API) if the REST sink is used.
CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE IF NOT EXISTS ops.logs (
    -- BLAKE2b-128 of (host, container id, stream, Docker timestamp, rank among lines with that timestamp,
    -- text): the same line shipped twice is the same id, so re-shipping is a no-op (ON CONFLICT DO NOTHING)
    id          uuid PRIMARY KEY,
    ts          timestamptz NOT NULL,          -- Docker's timestamp of the entry's first line
    host        text NOT NULL,                 -- the stack's name (droplet)
    container   text NOT NULL,                 -- container name, e.g. odoo-core
    stream      text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    level       text,                          -- DEBUG/INFO/WARNING/ERROR/CRITICAL when the format tells
    logger      text,                          -- Odoo logger (odoo.http), nginx.access, nginx.error, …
    message     text NOT NULL,                 -- Odoo: the message with its traceback lines; else the line
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,  -- parsed fields: pid, db, status, path, lines, …
    shipped_at  timestamptz NOT NULL DEFAULT now()
);
-- the usual questions: latest lines; one container's latest lines; recent problems
CREATE INDEX IF NOT EXISTS logs_ts_idx ON ops.logs (ts DESC);
CREATE INDEX IF NOT EXISTS logs_container_ts_idx ON ops.logs (container, ts DESC);
CREATE INDEX IF NOT EXISTS logs_problems_idx ON ops.logs (ts DESC) WHERE level IN ('WARNING', 'ERROR', 'CRITICAL');

-- Where shipping stopped, per container name and stream: the container instance and the place of the last
-- shipped line (its Docker timestamp in nanoseconds, its rank among lines with that same timestamp, its text hash).
-- The direct sink updates it in the same transaction as the rows; it never moves backwards within one
-- container instance (see odoo_stack_ops/logs/parse.py for restarts, recreation and rotation).
CREATE TABLE IF NOT EXISTS ops.log_cursors (
    host          text NOT NULL,
    container     text NOT NULL,
    stream        text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    container_id  text NOT NULL,
    stamp_ns      bigint NOT NULL,
    seq           integer NOT NULL,
    line_hash     bigint,                      -- hash of its text: finds it again if rotation shifted the ranks
    ts            timestamptz NOT NULL,        -- stamp_ns for people
    rows_shipped  bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, container, stream)
);

-- Supabase: logs are for the service role only (RLS on, no policy: anon/authenticated keys see nothing).
-- Only changed when needed, so running this before every pass takes no table lock.
DO $$
BEGIN
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = 'ops.logs'::regclass) THEN
        ALTER TABLE ops.logs ENABLE ROW LEVEL SECURITY;
    END IF;
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = 'ops.log_cursors'::regclass) THEN
        ALTER TABLE ops.log_cursors ENABLE ROW LEVEL SECURITY;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role')
       AND NOT has_table_privilege('service_role', 'ops.log_cursors', 'UPDATE') THEN
        GRANT USAGE ON SCHEMA ops TO service_role;
        GRANT SELECT, INSERT ON ops.logs TO service_role;
        GRANT SELECT, INSERT, UPDATE ON ops.log_cursors TO service_role;
    END IF;
END $$;
