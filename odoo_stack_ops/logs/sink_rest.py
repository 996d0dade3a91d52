"""The REST sink: Supabase's Data API (PostgREST) when only SUPABASE_URL + the service role key are at hand.

PostgREST runs each request in its own transaction, so rows and cursor cannot commit together. Exactly
once still holds because both writes are idempotent and ordered: each batch is POSTed with
`Prefer: resolution=ignore-duplicates` on the deterministic id (`on_conflict=id`), and only after PostgREST
answered 201 is the cursor upserted (`resolution=merge-duplicates`). A crash between the two re-sends the
batch on the next run and PostgREST ignores every row it already has.

The cursor lives in ops.log_cursors, next to the rows, rather than in a state file on the worker: a
restored or replaced database then carries the cursor that matches its rows (a file could claim lines the
database no longer holds, and they would never be re-sent), and a new worker resumes where the old one
stopped. The cursor is only ever written after its rows, so it never runs ahead of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import requests

from odoo_stack_ops.errors import ConnectError, OpsError
from odoo_stack_ops.logs.parse import COLUMNS, Cursor, Row, ns_to_datetime
from odoo_stack_ops.logs.sink_pg import CursorKey, CursorsArg


def rows_body(rows: Sequence[Row]) -> str:
    """A PostgREST bulk insert: a JSON array of objects with uniform keys (attributes spliced in as JSON)."""
    parts = []
    for r in rows:
        head = json.dumps(dict(zip(COLUMNS[:-1], (str(uuid.UUID(bytes=r[0])), r[1].isoformat(), *r[2:8]), strict=True)),
                          ensure_ascii=False)
        parts.append(f'{head[:-1]},"attributes":{r[8]}}}')
    return "[" + ",".join(parts) + "]"


class RestSink:
    """ops.logs through PostgREST, `Content-Profile: ops` (the schema must be exposed in Supabase's API settings)."""

    def __init__(self, url: str, key: str, schema: str = "ops", table: str = "logs", timeout: float = 60) -> None:
        self.base = url.rstrip("/") + "/rest/v1"
        self.schema, self.table, self.timeout = schema, table, timeout
        self.session = requests.Session()
        self.session.headers.update({"apikey": key, "Authorization": f"Bearer {key}",
                                     "Content-Type": "application/json", "Accept": "application/json",
                                     "Content-Profile": schema, "Accept-Profile": schema})
        self.batches = 0

    def _call(self, method: str, path: str, what: str, **kw: Any) -> requests.Response:
        try:
            resp = self.session.request(method, f"{self.base}/{path}", timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise ConnectError(f"Supabase REST unreachable while {what}: {type(exc).__name__}") from exc
        if resp.status_code >= 500 or resp.status_code == 429:
            raise ConnectError(f"Supabase REST answered {resp.status_code} while {what} (transient; retried)")
        if resp.status_code >= 300:
            hint = {401: "check SUPABASE_SERVICE_ROLE_KEY", 406: f"expose schema {self.schema!r} in the API settings",
                    404: "apply odoo_stack_ops/sql/ops_logs.sql", 409: "a duplicate without ignore-duplicates"}
            raise OpsError(f"Supabase REST refused {what}: HTTP {resp.status_code} {resp.text[:300]} "
                           f"({hint.get(resp.status_code, 'see the message')})")
        return resp

    def migrate(self) -> None:
        """PostgREST cannot run DDL: apply odoo_stack_ops/sql/ops_logs.sql once through the database (SQL editor)."""

    def cursors(self, host: str) -> dict[CursorKey, Cursor]:
        resp = self._call("GET", "log_cursors", "reading cursors", params={
            "host": f"eq.{host}", "select": "container,stream,container_id,stamp_ns,seq,line_hash"})
        return {(r["container"], r["stream"]): Cursor(r["container_id"], int(r["stamp_ns"]), int(r["seq"]),
                                                      None if r["line_hash"] is None else int(r["line_hash"]))
                for r in resp.json()}

    def write(self, rows: Iterable[Row], host: str, cursors: CursorsArg) -> int:
        """Rows first (duplicates ignored), then the cursor: never a cursor ahead of its rows."""
        rows = list(rows)
        if not rows:
            return 0
        if callable(cursors):
            cursors = cursors()
        self._call("POST", self.table, f"inserting {len(rows)} rows", params={"on_conflict": "id"},
                   data=rows_body(rows).encode(),
                   headers={"Prefer": "return=minimal, resolution=ignore-duplicates"})
        body = [{"host": host, "container": c, "stream": s, "container_id": cur.container_id, "stamp_ns": cur.ns,
                 "seq": cur.seq, "line_hash": cur.line_hash, "ts": ns_to_datetime(cur.ns).isoformat()} for (c, s), cur in cursors.items()]
        self._call("POST", "log_cursors", "saving the cursor", params={"on_conflict": "host,container,stream"},
                   data=json.dumps(body).encode(), headers={"Prefer": "return=minimal, resolution=merge-duplicates"})
        self.batches += 1
        return len(rows)

    def close(self) -> None:
        self.session.close()
