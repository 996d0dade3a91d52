"""The direct sink: rows into ops.logs by binary COPY, the cursor upserted in the same transaction.

Exactly once: a batch's rows and the cursor that covers them commit together, so after a crash the
database holds either both or neither, and the next run starts after the committed cursor. The COPY goes
straight into ops.logs (the fastest path) because the cursor already excludes shipped lines; should a row
exist anyway (a cursor deleted by hand, a database restored, two shippers racing), the unique id makes the
COPY fail, the transaction rolls back, and the batch is merged again through a temporary stage with
INSERT … ON CONFLICT (id) DO NOTHING. The cursor never moves backwards within one container.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
from psycopg import adapt, pq, sql
from psycopg.conninfo import conninfo_to_dict

from odoo_stack_ops import pgtls
from odoo_stack_ops.errors import AccessDenied, ConnectError
from odoo_stack_ops.logs.parse import COLUMNS, Cursor, Row, ns_to_datetime

TYPES = ("uuid", "timestamptz", "text", "text", "text", "text", "text", "text", "jsonb")
CursorKey = tuple[str, str]  # (container name, stream)
CursorsArg = dict[CursorKey, Cursor] | Callable[[], dict[CursorKey, Cursor]]


def migration_sql() -> str:
    """odoo_stack_ops/sql/ops_logs.sql: idempotent, safe to run before every pass."""
    return resources.files("odoo_stack_ops.sql").joinpath("ops_logs.sql").read_text()


class _UuidFromBytes(adapt.Dumper):
    """Row ids are 16 raw digest bytes: sent as they are (uuid's binary form), no uuid.UUID per row."""

    format = pq.Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return obj  # type: ignore[no-any-return]


class _JsonbFromText(adapt.Dumper):
    """Attributes arrive as JSON text already; jsonb's binary form is a version byte and that text."""

    format = pq.Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + obj.encode()


def register_row_dumpers(conn: psycopg.Connection[Any]) -> None:
    """Teach this connection's COPY (after set_types) the row layout of odoo_stack_ops.logs.parse."""
    for name, dumper in (("uuid", _UuidFromBytes), ("jsonb", _JsonbFromText)):
        info = psycopg.postgres.types[name]
        cls = type(dumper.__name__, (dumper,), {"oid": info.oid})
        conn.adapters.register_dumper(None, cls)


_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY header: signature, flags, no extension
_TRAILER = b"\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_ROW_HEAD = struct.pack(">hi", len(COLUMNS), 16)  # field count, then the uuid's length
_TS_HEAD = struct.pack(">i", 8)
_NULL = struct.pack(">i", -1)
_I32 = struct.Struct(">i").pack
_I64 = struct.Struct(">q").pack
FLUSH_BYTES = 1 << 18


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return _I32(len(data)) + data


def encode_rows(rows: Iterable[Row], keep: list[Row] | None = None) -> Iterator[bytes]:
    """Rows in PostgreSQL's binary COPY format (header first, trailer last), in blocks of ~FLUSH_BYTES.

    The same bytes psycopg's write_row produces for these types, built with fewer Python calls per row:
    the shipper is bound by Python while the database works on the other core, so this is its hot path.
    What repeats from row to row is encoded once: host, container and stream (one stream's rows share
    them), the time (rows of one stamp share the object; podman stamps whole seconds), levels and loggers
    (a few hundred at most are kept). `keep` collects the rows (a batch is replayed through the merge on
    a duplicate id)."""
    block: list[bytes] = [_SIGNATURE]
    size = 0
    names: dict[str | None, bytes] = {None: _NULL}
    ident, last_h, last_c, last_s, last_ts, ts_bytes = b"", None, None, None, None, b""
    pg_epoch, us, i32, i64, row_head, ts_head = _PG_EPOCH, _US, _I32, _I64, _ROW_HEAD, _TS_HEAD
    kept = keep.append if keep is not None else None
    for row in rows:
        if kept is not None:
            kept(row)
        rid, ts, host, container, stream, level, logger, message, attrs = row
        if container is not last_c or stream is not last_s or host is not last_h:
            ident, last_h, last_c, last_s = _text(host) + _text(container) + _text(stream), host, container, stream
        if ts is not last_ts:
            last_ts, ts_bytes = ts, ts_head + i64((ts - pg_epoch) // us)
        lv = names.get(level)
        if lv is None:
            lv = _text(level)
            if len(names) < 512:
                names[level] = lv
        lg = names.get(logger)
        if lg is None:
            lg = _text(logger)
            if len(names) < 512:
                names[logger] = lg
        msg, att = message.encode(), attrs.encode()
        block.append(b"".join((row_head, rid, ts_bytes, ident, lv, lg, i32(len(msg)), msg, i32(len(att) + 1),
                               b"\x01", att)))
        size += len(msg) + len(att) + 120
        if size >= FLUSH_BYTES:
            yield b"".join(block)
            block, size = [], 0
    block.append(_TRAILER)
    yield b"".join(block)


def copy_encoded(conn: psycopg.Connection[Any], target: sql.Composable, rows: Iterable[Row],
                 keep: list[Row] | None = None) -> None:
    """Binary COPY of rows into `target` through encode_rows (inside the caller's transaction)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, cols)) as cp:
        for block in encode_rows(rows, keep):
            cp.write(block)


def copy_rows(conn: psycopg.Connection[Any], target: sql.Composable, rows: Iterable[Row]) -> None:
    """Binary COPY of rows into `target` (inside the caller's transaction)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, cols)) as cp:
        cp.set_types(list(TYPES))
        write = cp.write_row
        for row in rows:
            write(row)


def tls_params(conninfo: dict[str, Any] | str) -> dict[str, Any]:
    """Connection parameters with the TLS policy applied: sslmode verify-full unless the URL says otherwise; a
    verifying mode without its CA file raises TLSVerificationError saying what to fetch; weaker modes warn
    once per flow run."""
    params = conninfo_to_dict(conninfo) if isinstance(conninfo, str) else dict(conninfo)
    params.setdefault("sslmode", pgtls.DEFAULT_SSLMODE)
    where = f"logs database {params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    problem = pgtls.ca_problem(params["sslmode"], params.get("sslrootcert"))
    if problem:
        raise pgtls.TLSVerificationError(f"cannot connect to the {where}: {problem}; {pgtls.SUPABASE_CA_HOWTO}")
    pgtls.warn_unverified(where, params["sslmode"], pgtls.SUPABASE_CA_HOWTO)
    return params


class PgSink:
    """ops.logs through one PostgreSQL connection (Supabase's direct or pooled session connection)."""

    def __init__(self, conninfo: dict[str, Any] | str, schema: str = "ops", table: str = "logs") -> None:
        self.schema, self.table = schema, table
        params = tls_params(conninfo)
        try:
            self.conn = psycopg.connect(**params)
        except psycopg.OperationalError as exc:
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if params["sslmode"] in pgtls.VERIFYING and pgtls.is_certificate_failure(str(exc)):
                raise pgtls.TLSVerificationError(
                    f"the logs database presented a certificate that the CA in {params.get('sslrootcert')} does not "
                    f"vouch for (sslmode={params['sslmode']}): {last}. Is it this project's CA? "
                    f"{pgtls.SUPABASE_CA_HOWTO}") from exc
            if pgtls.refused(str(exc)):
                raise AccessDenied(f"the logs database refused the connection: {last}. Not retried: check the role "
                                   f"and password in SUPABASE_DB_URL (supabase.db_dsn)") from exc
            raise ConnectError(f"cannot connect to the logs database: {last}") from exc
        register_row_dumpers(self.conn)
        self.target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        self.batches = self.merged = 0

    def migrate(self) -> None:
        with self.conn.transaction():
            self.conn.execute(migration_sql())  # type: ignore[arg-type]

    def cursors(self, host: str) -> dict[CursorKey, Cursor]:
        rows = self.conn.execute(
            sql.SQL("SELECT container, stream, container_id, stamp_ns, seq, line_hash FROM {}.log_cursors "
                    "WHERE host = %s").format(sql.Identifier(self.schema)), (host,)).fetchall()
        self.conn.commit()
        return {(c, s): Cursor(cid, ns, q, h) for c, s, cid, ns, q, h in rows}

    def write(self, rows: Iterable[Row], host: str, cursors: CursorsArg) -> int:
        """Rows + their cursor in one transaction. `rows` may be a live iterator: the COPY streams while the
        parser produces them, so parsing overlaps the database's work; `cursors` may then be a callable
        asked once the rows are in. A duplicate id reroutes the batch through the merge."""
        kept: list[Row] = []
        try:
            with self.conn.transaction() as tx:
                copy_encoded(self.conn, self.target, rows, kept)
                if not kept:
                    raise psycopg.Rollback(tx)
                self._save_cursors(host, cursors() if callable(cursors) else cursors, len(kept))
        except psycopg.errors.UniqueViolation:
            self.merged += 1
            with self.conn.transaction():
                self.conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS logs_stage (LIKE {} INCLUDING DEFAULTS) "
                                          "ON COMMIT DELETE ROWS").format(self.target))
                copy_rows(self.conn, sql.Identifier("logs_stage"), kept)
                cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
                self.conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM logs_stage ON CONFLICT (id) DO NOTHING")
                                  .format(self.target, cols, cols))
                self._save_cursors(host, cursors() if callable(cursors) else cursors, len(kept))
        if kept:
            self.batches += 1
        return len(kept)

    def _save_cursors(self, host: str, cursors: dict[CursorKey, Cursor], shipped: int) -> None:
        q = sql.SQL(
            "INSERT INTO {s}.log_cursors AS c (host, container, stream, container_id, stamp_ns, seq, line_hash, ts, "
            "rows_shipped) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (host, container, stream) DO UPDATE "
            "SET container_id = EXCLUDED.container_id, stamp_ns = EXCLUDED.stamp_ns, seq = EXCLUDED.seq, "
            "line_hash = EXCLUDED.line_hash, ts = EXCLUDED.ts, "
            "rows_shipped = c.rows_shipped + EXCLUDED.rows_shipped, updated_at = now() "
            "WHERE c.container_id <> EXCLUDED.container_id OR (c.stamp_ns, c.seq) < (EXCLUDED.stamp_ns, EXCLUDED.seq)"
        ).format(s=sql.Identifier(self.schema))
        for (container, stream), cur in cursors.items():
            self.conn.execute(q, (host, container, stream, cur.container_id, cur.ns, cur.seq, cur.line_hash,
                                  ns_to_datetime(cur.ns), shipped))

    def close(self) -> None:
        self.conn.close()
