-- ops.health_checks: every check result of every health sweep (idempotent: run before each sweep's write).
-- The weekly report reads uptime, incidents and time to recover from it; it lives beside ops.logs.
CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE IF NOT EXISTS ops.health_checks (
    ts          timestamptz NOT NULL,          -- when the sweep ran (one value for all its checks)
    stack       text NOT NULL,                 -- the stack's name (droplet)
    check_name  text NOT NULL,                 -- http.odoo-core, db.select, host.disk:/, …
    status      text NOT NULL CHECK (status IN ('ok', 'warn', 'fail')),
    value       text,                          -- what was seen, as the sweep's table shows it
    threshold   text,
    duration_s  real,
    evidence    text                           -- why it failed (first 300 characters)
);
-- the report's question: one stack's checks over a time range, in order
CREATE INDEX IF NOT EXISTS health_checks_stack_check_ts_idx ON ops.health_checks (stack, check_name, ts);

-- Supabase: service role only (RLS on, no policy), changed only when needed (no table lock every minute).
DO $$
BEGIN
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = 'ops.health_checks'::regclass) THEN
        ALTER TABLE ops.health_checks ENABLE ROW LEVEL SECURITY;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role')
       AND NOT has_table_privilege('service_role', 'ops.health_checks', 'INSERT') THEN
        GRANT USAGE ON SCHEMA ops TO service_role;
        GRANT SELECT, INSERT ON ops.health_checks TO service_role;
    END IF;
END $$;
