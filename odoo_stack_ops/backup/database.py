"""Database leg: a consistent snapshot, pg_dump streamed through zstd into a multipart upload.

The dump is never held whole in memory or on disk: pg_dump's stdout is compressed and uploaded part by
part (memory bounded by the uploader's in-flight parts). pg_dump reads the snapshot exported by our own
REPEATABLE READ transaction, so the row counts recorded in the manifest are exactly those in the dump.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
import zstandard
from psycopg import sql

from odoo_stack_ops import pgtls
from odoo_stack_ops.backup import pgdump
from odoo_stack_ops.backup.spaces import HashingCounter, MultipartWriter
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import DatabaseConfig
from odoo_stack_ops.errors import AccessDenied, ConfigError, ConnectError, OpsError
from odoo_stack_ops.executors.base import Executor

log = logging.getLogger(__name__)


@dataclass
class DbFacts:
    """What the manifest records about the database at the snapshot."""

    server_version: str
    server_major: int
    tables: int
    schemas: int
    large_objects: int
    row_counts: dict[str, int] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    odoo_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)




def access_denied_hint(message: str, db: DatabaseConfig, dbname: str) -> str | None:
    """What to fix when `message` says the server refused the role or its rights (pure), else None."""
    if not pgtls.refused(message):
        return None
    text = message.lower()
    if any(s in text for s in pgtls.NO_CONNECT_RIGHT):
        return (f"role {db.user} may not connect to database {dbname}: grant it "
                f"(GRANT CONNECT ON DATABASE {dbname} TO {db.user}) or back up with a role that may (DB_USER)")
    if "pg_hba.conf" in text:
        return (f"the server accepts no connection from this worker as role {db.user} to {dbname} (pg_hba.conf): "
                f"add this worker as a trusted source of the managed database, or check DB_USER")
    return (f"check DB_PASSWORD (database.password) and DB_USER: role {db.user} must exist, may log in and "
            f"have that password (DigitalOcean: Databases → Users & Databases shows or resets it)")


def connect(db: DatabaseConfig, dbname: str | None = None, **kw: Any) -> psycopg.Connection[Any]:
    """psycopg connection; connection failures become ConnectError (transient) with a hint. Refused credentials
    or rights raise AccessDenied and a certificate that cannot be verified TLSVerificationError (neither is
    retried), each saying what to fix. sslmode=require is warned about once per flow run."""
    where = f"PostgreSQL {db.host}:{db.port}"
    howto = pgtls.DO_CA_HOWTO.format(cluster="<cluster>")
    problem = pgtls.ca_problem(db.sslmode, db.sslrootcert)
    if problem:
        raise pgtls.TLSVerificationError(f"cannot connect to {where}: {problem}; {howto}")
    pgtls.warn_unverified(where, db.sslmode, howto)
    try:
        return psycopg.connect(**db.connect_kwargs(dbname), **kw)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if db.sslmode in pgtls.VERIFYING and pgtls.is_certificate_failure(str(exc)):
            raise pgtls.TLSVerificationError(
                f"{where} presented a certificate that the CA in {db.sslrootcert} does not vouch for "
                f"(sslmode={db.sslmode}): {first}. Is it this cluster's CA? {howto}") from exc
        if pgtls.DATABASE_MISSING.search(first):
            raise ConfigError(
                f"{where} has no database {dbname or db.name}: {first}. Not retried, it will not appear by itself: "
                f"check database.name / database.databases (DB_NAME) for this stack, or create it") from exc
        hint = access_denied_hint(str(exc), db, dbname or db.name)
        if hint:
            raise AccessDenied(
                f"{where} refused role {db.user} for database {dbname or db.name} (sslmode={db.sslmode}): {first}. "
                f"Not retried, another attempt gets the same answer: {hint}") from exc
        timed_out = "timeout" in first.lower() or "timed out" in first.lower()
        raise ConnectError(
            f"cannot connect to PostgreSQL {db.host}:{db.port} database {dbname or db.name} as {db.user} "
            f"(sslmode={db.sslmode}): {first}. " + (
                "On DigitalOcean a connect timeout usually means this worker's address is not among the cluster's "
                "trusted sources (Databases → cluster → Network Access; `stack-ops check-config` checks it)"
                if timed_out else "Check DB_HOST/DB_PORT, DB_PASSWORD and that this worker is a trusted source of "
                "the managed database")
        ) from exc


def read_facts(cur: psycopg.Cursor[Any], server_version_num: int) -> DbFacts:
    """Counts, modules and versions as seen by the cursor's transaction."""
    stats = {}
    for name, query in pgdump.STATS_SQL.items():
        cur.execute(query.replace("%%", "%"))
        stats[name] = int(cur.fetchone()[0])
    cur.execute(pgdump.KEY_TABLES_SQL, (list(pgdump.KEY_TABLES),))
    present = sorted(r[0] for r in cur.fetchall())
    rows = {}
    for table in present:
        cur.execute(f'SELECT count(*) FROM public."{ensure_identifier(table, "table")}"')
        rows[table] = int(cur.fetchone()[0])
    modules: dict[str, str] = {}
    if "ir_module_module" in present:
        cur.execute(pgdump.MODULES_SQL)
        modules = {name: version for name, version in cur.fetchall()}
    cur.execute("SHOW server_version")
    base = modules.get("base", "")
    return DbFacts(
        server_version=str(cur.fetchone()[0]),
        server_major=pgdump.server_major(server_version_num),
        tables=stats["tables"], schemas=stats["schemas"], large_objects=stats["large_objects"],
        row_counts=rows, modules=modules,
        odoo_version=".".join(base.split(".")[:2]) if base else None,
    )


@contextmanager
def exported_snapshot(db: DatabaseConfig, database: str) -> Iterator[tuple[str, DbFacts]]:
    """Hold a REPEATABLE READ transaction open, export its snapshot and read the facts in it."""
    with connect(db, database, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            facts = read_facts(cur, conn.info.server_version)
        try:
            yield snapshot, facts
        finally:
            conn.rollback()


def check_pg_dump(executor: Executor, server_major: int) -> str:
    """Return pg_dump's version line; raise when it is older than the server (it would refuse or lose data)."""
    line = executor.run(["pg_dump", "--version"], timeout=30,
                        hint="install PostgreSQL client tools where the dump runs").stdout_text.strip()
    tool = pgdump.tool_major(line)
    if not pgdump.dump_compatible(tool, server_major):
        raise OpsError(
            f"pg_dump on {executor.where} is version {tool} but the server is PostgreSQL {server_major}: install "
            f"postgresql-client-{server_major} there, or set backup.dump_on to where a matching pg_dump exists"
        )
    return line


@dataclass(frozen=True)
class DumpResult:
    key: str
    raw_bytes: int
    raw_sha256: str
    stored_bytes: int
    stored_sha256: str
    parts: int
    duration_s: float
    pg_dump_version: str
    compression: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Tee:
    """A writer that writes to two writers."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self.second.write(data)
        return self.first.write(data)

    def flush(self) -> None:
        self.second.flush()


def dump_to_spaces(
    executor: Executor, db: DatabaseConfig, database: str, snapshot: str, *, s3: Any, bucket: str, key: str,
    pg_dump_version: str, level: int = 3, threads: int = 2, timeout_s: float = 6 * 3600,
    wrap: Any = None, plain_copy: Any = None,
) -> DumpResult:
    """pg_dump → zstd → (optional `wrap`, e.g. encryption) → multipart upload; aborts the upload on any error.

    `plain_copy`, a writable file, receives the compressed plaintext too (before encryption): tonight's
    verification and an upgrade's rollback restore from it without the private key."""
    start = time.monotonic()
    raw = HashingCounter()
    cctx = zstandard.ZstdCompressor(level=level, threads=threads)
    with MultipartWriter(s3, bucket, key, metadata={"database": database}) as upload:
        sink = wrap(upload) if wrap else upload
        compressed = _Tee(sink, plain_copy) if plain_copy is not None else sink
        with cctx.stream_writer(compressed, closefd=False, write_return_read=True) as compressor, executor.stream(
            pgdump.pg_dump_argv(database, snapshot), env=db.libpq_env(database), timeout=timeout_s
        ) as out:
            for chunk in out:
                raw.update(chunk)
                compressor.write(chunk)
        if wrap:
            sink.close()
        stored = upload.close()
    if raw.size == 0:
        raise OpsError(f"pg_dump of {database} produced no output")
    return DumpResult(
        key=key, raw_bytes=raw.size, raw_sha256=raw.sha256.hexdigest(), stored_bytes=stored.size,
        stored_sha256=stored.sha256, parts=stored.parts, duration_s=round(time.monotonic() - start, 3),
        pg_dump_version=pg_dump_version, compression=f"zstd-{level}",
    )


def create_database(db: DatabaseConfig, name: str) -> None:
    with connect(db, db.maintenance_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(ensure_identifier(name, "database"))))


def drop_database(db: DatabaseConfig, name: str) -> None:
    with connect(db, db.maintenance_db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(ensure_identifier(name, "database"))))


def database_exists(db: DatabaseConfig, name: str) -> bool:
    with connect(db, db.maintenance_db, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
