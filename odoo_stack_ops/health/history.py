"""Health-check history: every result of a sweep into ops.health_checks (beside ops.logs), so the weekly report
can tell uptime, incidents and time to recover long after the alert states moved on."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from odoo_stack_ops.health.checks import CheckResult
from odoo_stack_ops.logs.sink_pg import tls_params

COLUMNS = ("ts", "stack", "check_name", "status", "value", "threshold", "duration_s", "evidence")


def migration_sql() -> str:
    """odoo_stack_ops/sql/ops_health.sql: idempotent, run before every write."""
    return resources.files("odoo_stack_ops.sql").joinpath("ops_health.sql").read_text()


def history_rows(results: Iterable[CheckResult], stack: str, ts: datetime) -> list[tuple[Any, ...]]:
    """One row per check result, all stamped with the sweep's time (pure)."""
    return [(ts, stack, r.name, r.status, r.value, r.threshold, round(r.duration, 3), r.evidence[:300] or None)
            for r in results]


def write_history(conninfo: str | dict[str, Any], rows: list[tuple[Any, ...]]) -> int:
    """Migration and COPY of the sweep's rows in one transaction: a sweep is recorded whole or not at all."""
    with psycopg.connect(**tls_params(conninfo)) as conn, conn.transaction():
        conn.execute(migration_sql())  # type: ignore[arg-type]
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        with conn.cursor().copy(sql.SQL("COPY ops.health_checks ({}) FROM STDIN").format(cols)) as cp:
            for row in rows:
                cp.write_row(row)
    return len(rows)
