"""A stand-in for Supabase's REST layer (PostgREST) on a real socket, writing into real PostgreSQL.

Implements the part of PostgREST's documented insert protocol the log shipper uses:
`POST /rest/v1/<table>?on_conflict=<cols>` with a JSON array body, `Content-Profile: <schema>` (406 for a
schema that is not exposed), `apikey` + `Authorization: Bearer` (401 otherwise), `Prefer: return=minimal`
(201, empty body), `resolution=ignore-duplicates` (ON CONFLICT DO NOTHING) or `merge-duplicates`
(ON CONFLICT DO UPDATE); without a resolution a duplicate key is 409 with PostgreSQL's error code 23505.
`GET /rest/v1/<table>?col=eq.value&select=a,b` with `Accept-Profile` reads rows.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
from psycopg import sql


class PostgrestStandIn:
    def __init__(self, conninfo: dict[str, Any], key: str, schemas: tuple[str, ...] = ("ops",)) -> None:
        self.conninfo, self.key, self.schemas = conninfo, key, schemas
        self.requests: list[tuple[str, str, int]] = []
        self.fail_next = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, code: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                outer.requests.append((self.command, self.path, code))
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _auth(self, profile_header: str) -> str | None:
                bearer = self.headers.get("Authorization", "")
                if self.headers.get("apikey") != outer.key or bearer != f"Bearer {outer.key}":
                    self._reply(401, {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or "
                                                                              "`service_role` API key."})
                    return None
                schema = self.headers.get(profile_header, "public")
                if schema not in outer.schemas:
                    self._reply(406, {"code": "PGRST106", "message": "The schema must be one of the following: "
                                      + ", ".join(outer.schemas)})
                    return None
                return schema

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                schema = self._auth("Content-Profile")
                if schema is None:
                    return
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    return self._reply(503, {"message": "upstream unavailable"})
                url = urlparse(self.path)
                table = url.path.removeprefix("/rest/v1/")
                try:
                    rows = json.loads(raw)
                except ValueError:
                    return self._reply(400, {"code": "PGRST102", "message": "Empty or invalid json"})
                rows = rows if isinstance(rows, list) else [rows]
                prefer = self.headers.get("Prefer", "")
                conflict = parse_qs(url.query).get("on_conflict", [""])[0]
                try:
                    outer.insert(schema, table, rows, conflict, prefer)
                except psycopg.errors.UniqueViolation as exc:
                    return self._reply(409, {"code": "23505", "message": str(exc).splitlines()[0]})
                except psycopg.Error as exc:
                    return self._reply(400, {"code": getattr(exc, "sqlstate", None), "message": str(exc)[:300]})
                self._reply(201)

            def do_GET(self) -> None:
                schema = self._auth("Accept-Profile")
                if schema is None:
                    return
                url = urlparse(self.path)
                table = url.path.removeprefix("/rest/v1/")
                q = parse_qs(url.query)
                cols = q.pop("select", ["*"])[0]
                filters = {k: v[0].removeprefix("eq.") for k, v in q.items()}
                self._reply(200, outer.select(schema, table, cols, filters))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def insert(self, schema: str, table: str, rows: list[dict[str, Any]], conflict: str, prefer: str) -> None:
        target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        # like PostgREST: only the payload's columns are inserted, so the others get their defaults
        payload_cols = sql.SQL(", ").join(map(sql.Identifier, sorted({k for r in rows for k in r})))
        q = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM json_populate_recordset(NULL::{}, %s)").format(
            target, payload_cols, payload_cols, target)
        cols = [c for c in conflict.split(",") if c]
        if "resolution=ignore-duplicates" in prefer:
            q += sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(sql.SQL(", ").join(map(sql.Identifier, cols))) \
                if cols else sql.SQL(" ON CONFLICT DO NOTHING")
        elif "resolution=merge-duplicates" in prefer and cols:
            keys = set(rows[0]) - set(cols) if rows else set()
            q += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(k), sql.Identifier(k))
                                   for k in sorted(keys)))
        with psycopg.connect(**self.conninfo) as conn:
            conn.execute(q, (json.dumps(rows),))

    def select(self, schema: str, table: str, cols: str, filters: dict[str, str]) -> list[dict[str, Any]]:
        fields = sql.SQL("*") if cols == "*" else sql.SQL(", ").join(map(sql.Identifier, cols.split(",")))
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in filters) \
            if filters else sql.SQL("true")
        q = sql.SQL("SELECT {} FROM {}.{} WHERE {}").format(fields, sql.Identifier(schema), sql.Identifier(table), where)
        with psycopg.connect(**self.conninfo) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                    for r in cur.execute(q, list(filters.values())).fetchall()]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
