"""Restore-verify: a backup counts only once its dump restores and matches what the manifest recorded.

The dump is streamed from Spaces into pg_restore (no local copy) inside a scratch database that is always
dropped afterwards; a sample of filestore objects is re-hashed.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from odoo_stack_ops.backup import layout, pgdump
from odoo_stack_ops.backup.database import connect, read_facts
from odoo_stack_ops.backup.filestore import StoredFile, hash_object
from odoo_stack_ops.backup.spaces import read_chunks
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import DatabaseConfig
from odoo_stack_ops.errors import VerificationFailed
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.streams import checked, zstd_decompressed

log = logging.getLogger(__name__)


SCRATCH_TAG_LEN = 10  # hex digits of SHA-256(stack name): 40 bits, no two stacks of one cluster collide
_SCRATCH = re.compile(r"^verify_([0-9a-f]{10})_(\d{8}t\d{6}z)_([A-Za-z0-9_]+)$")
_LEGACY_SCRATCH = re.compile(r"^verify_([A-Za-z0-9_]+)_(\d{8}t\d{6}z)$")


def scratch_name(database: str, st: str, stack: str | None = None) -> str:
    """The scratch database verifying `database`'s backup `st`, for `stack` (pure).

    `verify_{tag}_{stamp}_{database}`: the tag (a hash of the stack name, which may be long or not an
    identifier) says whose it is on a shared cluster, the stamp how old it is. Within PostgreSQL's 63 bytes:
    a long database name is cut and suffixed with its own hash. Without `stack`: the old `verify_{db}_{stamp}`.
    """
    if stack is None:
        return ensure_identifier(f"verify_{database}_{st.lower()}"[:63], "scratch database")
    layout.parse_stamp(st)
    ensure_identifier(database, "database")
    head = f"verify_{scratch_tag(stack)}_{st.lower()}_"
    room = 63 - len(head)
    db = database
    if len(db) > room:
        db = f"{db[:room - 9]}_{hashlib.sha256(database.encode()).hexdigest()[:8]}"
    return ensure_identifier(head + db, "scratch database")


def scratch_tag(stack: str) -> str:
    return hashlib.sha256(stack.encode()).hexdigest()[:SCRATCH_TAG_LEN]


def stale_scratch(names: list[str], in_use: set[str], *, stack: str | None, now: datetime,
                  older_than: timedelta) -> list[str]:
    """Which scratch databases to drop (pure): this stack's only (with `stack` None: untagged legacy names),
    whose stamp is at least `older_than` old, and that no session uses.

    The stamp is the verified backup's, so a re-verification of an old backup looks old too: the in-use check
    is what spares a run that is restoring into it right now. Other stacks' names never match."""
    stale = []
    for name in sorted(names):
        tagged = _SCRATCH.match(name)
        if stack is not None:
            if not tagged or tagged.group(1) != scratch_tag(stack):
                continue
            stamp = tagged.group(2)
        else:
            legacy = None if tagged else _LEGACY_SCRATCH.match(name)
            if legacy is None:
                continue
            stamp = legacy.group(2)
        if layout.parse_stamp(stamp.upper()) <= now - older_than and name not in in_use:
            stale.append(name)
    return stale


def create_database(db: DatabaseConfig, name: str) -> None:
    with connect(db, db.maintenance_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(ensure_identifier(name, "database"))))


def drop_database(db: DatabaseConfig, name: str) -> None:
    with connect(db, db.maintenance_db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(ensure_identifier(name, "database"))))


def drop_stale_scratch(db: DatabaseConfig, stack: str | None = None, *, older_than: timedelta = timedelta(hours=48),
                       now: datetime | None = None) -> list[str]:
    """Drop the scratch databases an interrupted verification of `stack` left behind (see `stale_scratch`);
    another stack's, a fresh one and one in use are left alone. Returns the names dropped."""
    with connect(db, db.maintenance_db, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'verify\_%'")]
        in_use = {r[0] for r in conn.execute(
            r"SELECT DISTINCT datname FROM pg_stat_activity WHERE datname LIKE 'verify\_%' AND pid <> pg_backend_pid()")}
    stale = stale_scratch(names, in_use, stack=stack, now=now or datetime.now(UTC), older_than=older_than)
    for name in stale:
        drop_database(db, name)
    return stale


def database_exists(db: DatabaseConfig, name: str) -> bool:
    with connect(db, db.maintenance_db, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def stored_chunks(s3: Any, bucket: str, dump: dict[str, Any], decrypt: Any = None) -> Any:
    """The dump's plaintext custom-format bytes, checked against the stored SHA-256 as they stream."""
    def mismatch(actual: str) -> Exception:
        return VerificationFailed(f"{dump['key']} does not match its manifest (SHA-256 {actual[:12]}… expected "
                                  f"{dump['stored_sha256'][:12]}…): the object was altered or truncated")
    chunks = checked(read_chunks(s3, bucket, dump["key"]), dump["stored_sha256"], mismatch)
    if decrypt is not None:
        chunks = decrypt(chunks)
    return zstd_decompressed(chunks)


def compare_facts(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Differences between what the manifest recorded and what the restored database holds (pure)."""
    problems = []
    for name in ("tables", "schemas", "large_objects"):
        if expected["database_facts"].get(name) != actual.get(name):
            problems.append(f"{name}: expected {expected['database_facts'].get(name)}, restored {actual.get(name)}")
    for table, count in (expected["database_facts"].get("row_counts") or {}).items():
        got = (actual.get("row_counts") or {}).get(table)
        if got != count:
            problems.append(f"rows in {table}: expected {count}, restored {got}")
    if expected.get("modules", {}) != actual.get("modules", {}):
        exp, got = expected.get("modules", {}), actual.get("modules", {})
        diff = sorted(set(exp.items()) ^ set(got.items()))[:10]
        problems.append(f"installed modules differ: {diff}")
    return problems


def sample_files(files: list[StoredFile], n: int, seed: str) -> list[StoredFile]:
    """A reproducible sample of up to n files (pure)."""
    if len(files) <= n:
        return list(files)
    return random.Random(seed).sample(files, n)  # noqa: S311 - sampling, not security


def check_objects(s3: Any, bucket: str, prefix: str, files: list[StoredFile], decrypt_object: Any = None,
                  tag: str | None = None) -> list[str]:
    problems = []
    for f in files:
        key = layout.object_key(prefix, f.algo, f.digest, tag)
        try:
            chunks = read_chunks(s3, bucket, key)
            if decrypt_object is not None:
                chunks = decrypt_object(chunks)
            digest = hash_object(chunks, f.algo)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding, reported together
            problems.append(f"filestore object for {f.path} unreadable: {type(exc).__name__}: {exc}")
            continue
        if digest != f.digest:
            problems.append(f"filestore object for {f.path} hashes to {digest[:12]}…, expected {f.digest[:12]}…")
    return problems


def verify_backup(
    executor: Executor, server: DatabaseConfig, manifest: dict[str, Any], *, s3: Any, bucket: str, prefix: str,
    files: list[StoredFile], sample: int, timeout_s: float, decrypt: Any = None, decrypt_object: Any = None,
) -> dict[str, Any]:
    """Restore into a scratch database, compare, re-hash a filestore sample, drop the scratch database.

    Returns the verification record for the manifest; never raises for a failed check (the verdict says so)."""
    start = time.monotonic()
    scratch = scratch_name(manifest["database"], manifest["stamp"])
    record: dict[str, Any] = {"ok": False, "scratch_database": scratch, "server": f"{server.host}:{server.port}"}
    problems: list[str] = []
    try:
        stale = drop_stale_scratch(server)
        if stale:
            log.warning("dropped scratch database(s) left by an interrupted verification: %s", stale)
        create_database(server, scratch)
        executor.run(
            [*pgdump.pg_restore_argv(scratch), "--single-transaction"], env=server.libpq_env(scratch),
            stdin=stored_chunks(s3, bucket, manifest["dump"], decrypt), timeout=timeout_s,
            hint="the dump did not restore: keep the previous backups and investigate this one",
        )
        with connect(server, scratch) as conn, conn.cursor() as cur:
            restored = read_facts(cur, conn.info.server_version).as_dict()
        problems += compare_facts(manifest, restored)
        record["restored"] = {k: restored[k] for k in ("tables", "schemas", "large_objects", "row_counts")}
        picked = sample_files(files, sample, manifest["stamp"])
        problems += check_objects(s3, bucket, prefix, picked, decrypt_object,
                                  manifest.get("encryption", {}).get("object_tag"))
        record["filestore_sampled"] = len(picked)
    except Exception as exc:  # noqa: BLE001 - the verdict records the failure; the flow decides to fail
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        try:
            drop_database(server, scratch)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"could not drop scratch database {scratch}: {exc}")
    record["problems"] = problems
    record["ok"] = not problems
    record["error"] = "; ".join(problems)[:2000] if problems else None
    record["duration_s"] = round(time.monotonic() - start, 3)
    return record
