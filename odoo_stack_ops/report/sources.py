"""Where the weekly report's history comes from: manifests and event records in Spaces, health checks and log
lines summarised by PostgreSQL (GROUP BY in the database: a year of logs never reaches pandas row by row)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import psycopg

from odoo_stack_ops import history
from odoo_stack_ops.backup import restore
from odoo_stack_ops.backup.manifest import Manifest
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.logs.sink_pg import tls_params
from odoo_stack_ops.report.tables import TRAILING, Window, nights_frame

# a check's sweeps per hour, and how many failed
HOURLY_SQL = """
SELECT check_name, date_trunc('hour', ts) AS hour, count(*) AS samples, count(*) FILTER (WHERE status = 'fail') AS fails
FROM ops.health_checks WHERE stack = %(stack)s AND ts >= %(start)s AND ts < %(end)s GROUP BY 1, 2"""
# only the sweeps where a check started or stopped failing (and each check's first sweep)
CHANGES_SQL = """
SELECT check_name, ts, failing FROM (
    SELECT check_name, ts, status = 'fail' AS failing,
           lag(status = 'fail') OVER (PARTITION BY check_name ORDER BY ts) AS before
    FROM ops.health_checks WHERE stack = %(stack)s AND ts >= %(start)s AND ts < %(end)s) c
WHERE before IS DISTINCT FROM failing"""
# log lines per local day, container and level
LOGS_SQL = """
SELECT date_trunc('day', ts AT TIME ZONE %(tz)s) AS day, container, level, count(*) AS lines
FROM ops.logs WHERE host = %(stack)s AND ts >= %(start)s AND ts < %(end)s GROUP BY 1, 2, 3"""


def load_nights(bucket: Bucket, window: Window, threads: int = 8) -> pd.DataFrame:
    """Every manifest of the window and of the TRAILING (+ a few) nights before it, read in parallel."""
    since = window.start - pd.Timedelta(days=TRAILING + 3)
    refs = [r for r in restore.list_manifests(bucket) if since <= r.taken_at < window.end]
    with ThreadPoolExecutor(threads) as pool:
        manifests: list[Manifest] = list(pool.map(lambda r: restore.load_manifest(bucket, r.key), refs))
    return nights_frame(manifests)


def load_events(bucket: Bucket, kind: str, since: pd.Timestamp) -> list[dict[str, Any]]:
    return history.read(bucket, kind, since.to_pydatetime())


def _frame(conn: psycopg.Connection[Any], query: str, params: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(conn.execute(query, params).fetchall(), columns=columns)  # type: ignore[arg-type]


def empty_database_history() -> dict[str, pd.DataFrame]:
    """What load_database_history returns for a database holding no history (or none configured)."""
    return {"hourly": pd.DataFrame(columns=["check", "hour", "samples", "fails"]),
            "changes": pd.DataFrame(columns=["check", "ts", "failing"]),
            "logs": pd.DataFrame(columns=["day", "container", "level", "lines"])}


def load_database_history(conninfo: str | dict[str, Any], stack: str, window: Window) -> dict[str, pd.DataFrame]:
    """{"hourly", "changes", "logs"} summarised by the database; empty frames where a table does not exist yet."""
    params = {"stack": stack, "start": window.start.to_pydatetime(), "end": window.end.to_pydatetime(),
              "tz": window.tz}
    out = empty_database_history()
    with psycopg.connect(**tls_params(conninfo)) as conn:
        conn.execute("SET TIME ZONE 'UTC'")  # hours cut in UTC; days in the stack's zone (LOGS_SQL)
        health, logs = conn.execute("SELECT to_regclass('ops.health_checks'), to_regclass('ops.logs')").fetchone()
        if health is not None:
            out["hourly"] = _frame(conn, HOURLY_SQL, params, list(out["hourly"].columns))
            out["changes"] = _frame(conn, CHANGES_SQL, params, list(out["changes"].columns))
        if logs is not None:
            out["logs"] = _frame(conn, LOGS_SQL, params, list(out["logs"].columns))
    for name, cols in (("hourly", ["samples", "fails"]), ("logs", ["lines"])):
        out[name][cols] = out[name][cols].astype("int64")
    return out
