"""A stand-in for Supabase's Data API (PostgREST) on a real socket, writing into real PostgreSQL.

It follows the part of PostgREST's documented behaviour (docs: Tables and Views → Insert, Bulk Insert,
Upsert, On Conflict; Errors → HTTP status codes, PGRST codes) that the log shipper relies on:
- `POST /rest/v1/<table>[?on_conflict=a,b]` with a JSON object or an array of objects with uniform keys,
  inserted by one INSERT statement (one transaction). Keys not sent get their column defaults.
- `Content-Profile: <schema>` picks the schema for writes, `Accept-Profile` for reads; a schema that is not
  exposed is 406 PGRST106. No header means `public`.
- Auth as Supabase's gateway does: `apikey` and `Authorization: Bearer` must carry the key, else 401.
- `Prefer: return=minimal` → 201 with an empty body (`return=representation` → 201 with the rows);
  `resolution=ignore-duplicates` → ON CONFLICT DO NOTHING, `resolution=merge-duplicates` → ON CONFLICT DO
  UPDATE; `Preference-Applied` echoes what was honoured. Without a resolution a duplicate key is
  409 with PostgreSQL's error code 23505.
- An empty or malformed body, or objects with different keys, is 400 PGRST102; a Content-Type other than
  JSON is 415 PGRST107; a missing table is 404 42P01; any other PostgreSQL error is 400 with its code.
- `GET /rest/v1/<table>?col=eq.value&select=a,b` reads rows.
`fail_next = n` makes the next n writes answer 503 (PGRST000-like), to exercise the client's retries.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

PREFIX = "/rest/v1/"


def _json_value(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def pg_error(exc: psycopg.Error) -> dict[str, Any]:
    diag = exc.diag
    return {"code": exc.sqlstate, "details": diag.message_detail, "hint": diag.message_hint,
            "message": diag.message_primary or str(exc).splitlines()[0]}


def parse_prefer(header: str) -> dict[str, str]:
    """`Prefer: return=minimal, resolution=ignore-duplicates` → {"return": "minimal", ...}."""
    prefs = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key:
            prefs[key] = value
    return prefs


class PostgrestStandIn:
    """`.url` (base, like SUPABASE_URL), `.requests` [(method, path, status, prefer)], `.fail_next`, `.stop()`."""

    def __init__(self, conninfo: dict[str, Any], key: str, schemas: tuple[str, ...] = ("public", "ops")) -> None:
        self.key, self.schemas = key, schemas
        self.requests: list[tuple[str, str, int, str]] = []
        self.fail_next = 0
        self.conn = psycopg.connect(**conninfo, autocommit=True)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="postgrest-standin").start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def reply(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body, default=_json_value).encode()
                outer.requests.append((self.command, self.path, code, self.headers.get("Prefer", "")))
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if body is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def target(self, profile_header: str) -> tuple[str, str] | None:
                """(schema, table) after auth and schema checks; None once an error was sent."""
                key = outer.key
                if self.headers.get("apikey") != key or self.headers.get("Authorization") != f"Bearer {key}":
                    self.reply(401, {"message": "Invalid API key",
                                     "hint": "Double check your Supabase `anon` or `service_role` API key."})
                    return None
                schema = self.headers.get(profile_header, "public")
                if schema not in outer.schemas:
                    self.reply(406, {"code": "PGRST106", "details": None, "hint": None,
                                     "message": f"The schema must be one of the following: {', '.join(outer.schemas)}"})
                    return None
                path = urlparse(self.path).path
                if not path.startswith(PREFIX) or "/" in path[len(PREFIX):] or path == PREFIX:
                    self.reply(404, {"code": "PGRST125", "details": None, "hint": None, "message": f"Invalid path {path}"})
                    return None
                table = path[len(PREFIX):]
                if not outer.table_exists(schema, table):
                    self.reply(404, {"code": "42P01", "details": None, "hint": None,
                                     "message": f'relation "{schema}.{table}" does not exist'})
                    return None
                return schema, table

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                where = self.target("Content-Profile")
                if where is None:
                    return
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    return self.reply(503, {"code": "PGRST000", "details": None, "hint": None,
                                            "message": "Database client error. Retrying the connection."})
                if not self.headers.get("Content-Type", "application/json").startswith("application/json"):
                    return self.reply(415, {"code": "PGRST107", "details": None, "hint": None,
                                            "message": "None of these media types are available"})
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
                rows = payload if isinstance(payload, list) else [payload] if isinstance(payload, dict) else None
                if rows is None or not all(isinstance(r, dict) for r in rows):
                    return self.reply(400, {"code": "PGRST102", "details": None, "hint": None,
                                            "message": "Empty or invalid json"})
                if rows and any(r.keys() != rows[0].keys() for r in rows):
                    return self.reply(400, {"code": "PGRST102", "details": None, "hint": None,
                                            "message": "All object keys must match"})
                prefer = parse_prefer(self.headers.get("Prefer", ""))
                conflict = [c for c in parse_qs(urlparse(self.path).query).get("on_conflict", [""])[0].split(",") if c]
                try:
                    inserted = outer.insert(*where, rows, conflict, prefer.get("resolution"),
                                            prefer.get("return") == "representation")
                except psycopg.errors.UniqueViolation as exc:
                    return self.reply(409, pg_error(exc))
                except psycopg.Error as exc:
                    return self.reply(400, pg_error(exc))
                applied = ", ".join(f"{k}={prefer[k]}" for k in ("return", "resolution") if k in prefer)
                self.reply(201, inserted, {"Preference-Applied": applied} if applied else None)

            def do_GET(self) -> None:
                where = self.target("Accept-Profile")
                if where is None:
                    return
                q = parse_qs(urlparse(self.path).query)
                cols = q.pop("select", ["*"])[0]
                filters = {}
                for k, v in q.items():
                    if not v[0].startswith("eq."):
                        return self.reply(400, {"code": "PGRST100", "details": None, "hint": None,
                                                "message": f"only eq. filters are supported here: {k}"})
                    filters[k] = v[0][3:]
                try:
                    self.reply(200, outer.select(*where, cols, filters))
                except psycopg.Error as exc:
                    self.reply(400, pg_error(exc))

        return Handler

    def table_exists(self, schema: str, table: str) -> bool:
        with self.lock:
            row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."{table}"',)).fetchone()
        return bool(row and row[0])

    def insert(self, schema: str, table: str, rows: list[dict[str, Any]], conflict: list[str],
               resolution: str | None, representation: bool) -> list[dict[str, Any]] | None:
        """One INSERT … SELECT FROM json_populate_recordset (PostgREST's own way), in one transaction."""
        if not rows:
            return []
        target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        cols = sql.SQL(", ").join(map(sql.Identifier, rows[0]))
        q = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM json_populate_recordset(NULL::{}, %s)").format(
            target, cols, cols, target)
        keys = sql.SQL(", ").join(map(sql.Identifier, conflict))
        if resolution == "ignore-duplicates":
            q += sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(keys) if conflict else sql.SQL(" ON CONFLICT DO NOTHING")
        elif resolution == "merge-duplicates":
            if not conflict:
                conflict = self.primary_key(schema, table)
                keys = sql.SQL(", ").join(map(sql.Identifier, conflict))
            updates = [k for k in rows[0] if k not in conflict]
            q += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(keys, sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(k), sql.Identifier(k)) for k in updates))
        q += sql.SQL(" RETURNING *") if representation else sql.SQL("")
        with self.lock, self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(q, (json.dumps(rows),))
            return [dict(r) for r in cur.fetchall()] if representation else None

    def primary_key(self, schema: str, table: str) -> list[str]:
        with self.lock:
            return [r[0] for r in self.conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (f'"{schema}"."{table}"',)).fetchall()]

    def select(self, schema: str, table: str, cols: str, filters: dict[str, str]) -> list[dict[str, Any]]:
        fields = sql.SQL("*") if cols == "*" else sql.SQL(", ").join(map(sql.Identifier, cols.split(",")))
        where = sql.SQL(" AND ").join(sql.SQL("{}::text = %s").format(sql.Identifier(k)) for k in filters) \
            if filters else sql.SQL("true")
        q = sql.SQL("SELECT {} FROM {}.{} WHERE {}").format(fields, sql.Identifier(schema), sql.Identifier(table), where)
        with self.lock, self.conn.cursor(row_factory=dict_row) as cur:
            return [dict(r) for r in cur.execute(q, list(filters.values())).fetchall()]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.conn.close()
