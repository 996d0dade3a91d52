"""Where rows go, exactly once: PostgreSQL directly (COPY; rows and cursor in one transaction) or Supabase's
REST API (PostgREST insert with ignore-duplicates on the deterministic id, then the cursor)."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
import requests
from psycopg import sql

from odoo_stack_ops.errors import ConnectError, OpsError

COLUMNS = ("id", "ts", "host", "container", "stream", "level", "logger", "message", "attributes")
TYPES = ("uuid", "timestamptz", "text", "text", "text", "text", "text", "text", "jsonb")
Cursor = tuple[str, int]  # (Docker stamp, rank among lines with that stamp)
CursorKey = tuple[str, str]  # (container, stream)


def migration_sql() -> str:
    return resources.files("odoo_stack_ops.sql").joinpath("ops_logs.sql").read_text()


class PgSink:
    """COPY into ops.logs and upsert ops.log_cursors in the same transaction: a crash loses or doubles nothing."""

    def __init__(self, conninfo: dict[str, Any] | str, schema: str = "ops", table: str = "logs") -> None:
        self.conninfo, self.schema, self.table = conninfo, schema, table
        try:
            self.conn = (psycopg.connect(conninfo) if isinstance(conninfo, str) else psycopg.connect(**conninfo))
        except psycopg.OperationalError as exc:
            raise ConnectError(f"cannot connect to the logs database: {str(exc).splitlines()[0]}") from exc
        self.copies = 0

    def migrate(self) -> None:
        with self.conn.transaction():
            self.conn.execute(migration_sql())  # type: ignore[arg-type]

    def cursors(self, host: str) -> dict[CursorKey, Cursor]:
        rows = self.conn.execute(
            sql.SQL("SELECT container, stream, stamp, seq FROM {}.log_cursors WHERE host = %s").format(
                sql.Identifier(self.schema)), (host,)).fetchall()
        self.conn.commit()
        return {(c, s): (st, q) for c, s, st, q in rows}

    def write(self, rows: list[tuple[Any, ...]], host: str, cursors: dict[CursorKey, tuple[Cursor, datetime]]) -> int:
        """Rows + cursor atomically. Re-reads start after the committed cursor, so duplicates cannot occur; if one
        ever does (a cursor lost by hand), that batch is merged ignoring duplicates instead."""
        target = sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        try:
            with self.conn.transaction():
                with self.conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, cols)) as cp:
                    cp.set_types(list(TYPES))
                    for row in rows:
                        cp.write_row(row)
                self._save_cursors(host, cursors)
        except psycopg.errors.UniqueViolation:
            with self.conn.transaction():
                self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS logs_stage (LIKE ops.logs) ON COMMIT DELETE ROWS")
                with self.conn.cursor().copy(sql.SQL("COPY logs_stage ({}) FROM STDIN (FORMAT BINARY)").format(cols)) as cp:
                    cp.set_types(list(TYPES))
                    for row in rows:
                        cp.write_row(row)
                self.conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM logs_stage ON CONFLICT (id) DO NOTHING")
                                  .format(target, cols, cols))
                self._save_cursors(host, cursors)
        self.copies += 1
        return len(rows)

    def _save_cursors(self, host: str, cursors: dict[CursorKey, tuple[Cursor, datetime]]) -> None:
        q = sql.SQL("INSERT INTO {}.log_cursors (host, container, stream, ts, stamp, seq, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (host, container, stream) DO UPDATE SET "
                    "ts = EXCLUDED.ts, stamp = EXCLUDED.stamp, seq = EXCLUDED.seq, updated_at = now()"
                    ).format(sql.Identifier(self.schema))
        for (container, stream), ((stamp, seq), ts) in cursors.items():
            self.conn.execute(q, (host, container, stream, ts, stamp, seq))

    def close(self) -> None:
        self.conn.close()


class RestSink:
    """Supabase/PostgREST: rows with `resolution=ignore-duplicates` on the deterministic id, then the cursor.
    A crash between the two re-sends rows the next run; PostgREST ignores them: still exactly once."""

    def __init__(self, url: str, key: str, schema: str = "ops", table: str = "logs", timeout: float = 30) -> None:
        self.base = url.rstrip("/") + "/rest/v1"
        self.schema, self.table, self.timeout = schema, table, timeout
        self.session = requests.Session()
        self.session.headers.update({"apikey": key, "Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                     "Content-Profile": schema, "Accept-Profile": schema})
        self.copies = 0

    def _check(self, resp: requests.Response, what: str) -> None:
        if resp.status_code >= 500:
            raise ConnectError(f"Supabase REST answered {resp.status_code} to {what}: transient, retried")
        if resp.status_code >= 300:
            raise OpsError(f"Supabase REST refused {what}: HTTP {resp.status_code} {resp.text[:300]} (check "
                           f"SUPABASE_SERVICE_ROLE_KEY and that schema {self.schema} is exposed)")

    def migrate(self) -> None:
        """PostgREST cannot run DDL: apply odoo_stack_ops/sql/ops_logs.sql once through the database."""

    def cursors(self, host: str) -> dict[CursorKey, Cursor]:
        try:
            resp = self.session.get(f"{self.base}/log_cursors", params={"host": f"eq.{host}",
                                                                         "select": "container,stream,stamp,seq"},
                                    timeout=self.timeout)
        except requests.RequestException as exc:
            raise ConnectError(f"Supabase REST unreachable: {type(exc).__name__}") from exc
        self._check(resp, "reading cursors")
        return {(r["container"], r["stream"]): (r["stamp"], r["seq"]) for r in resp.json()}

    def write(self, rows: list[tuple[Any, ...]], host: str, cursors: dict[CursorKey, tuple[Cursor, datetime]]) -> int:
        body = [dict(zip(COLUMNS, (str(r[0]), r[1].isoformat(), *r[2:]), strict=True))
                for r in rows]
        try:
            resp = self.session.post(f"{self.base}/{self.table}", params={"on_conflict": "id"}, data=json.dumps(body),
                                     headers={"Prefer": "return=minimal,resolution=ignore-duplicates"},
                                     timeout=self.timeout)
            self._check(resp, f"inserting {len(rows)} rows")
            cur = [{"host": host, "container": c, "stream": s, "ts": ts.isoformat(), "stamp": st, "seq": q}
                   for (c, s), ((st, q), ts) in cursors.items()]
            resp = self.session.post(f"{self.base}/log_cursors", params={"on_conflict": "host,container,stream"},
                                     data=json.dumps(cur), headers={"Prefer": "return=minimal,resolution=merge-duplicates"},
                                     timeout=self.timeout)
            self._check(resp, "saving cursors")
        except requests.RequestException as exc:
            raise ConnectError(f"Supabase REST unreachable: {type(exc).__name__}") from exc
        self.copies += 1
        return len(rows)

    def close(self) -> None:
        self.session.close()
