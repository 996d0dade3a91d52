"""Restore-verify: a backup counts only once its dump restores and matches what the manifest recorded.

The dump goes through the restore path every job uses into a scratch database that is always dropped
afterwards; a sample of filestore objects is re-hashed.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from odoo_stack_ops.backup import layout, spools
from odoo_stack_ops.backup.database import connect, create_database, drop_database, read_facts
from odoo_stack_ops.backup.filestore import StoredFile, hash_object
from odoo_stack_ops.backup.manifest import DumpRecord, Manifest, Verification
from odoo_stack_ops.backup.restore import Decrypt, dump_chunks, fetch_dump, local_dump_chunks, pg_restore_into
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import DatabaseConfig
from odoo_stack_ops.executors.base import Executor

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


def compare_facts(expected: Manifest, actual: dict[str, Any]) -> list[str]:
    """Differences between what the manifest recorded and what the restored database holds (pure)."""
    problems = []
    facts = expected.database_facts
    for name in ("tables", "schemas", "large_objects"):
        if getattr(facts, name) != actual.get(name):
            problems.append(f"{name}: expected {getattr(facts, name)}, restored {actual.get(name)}")
    for table, count in facts.row_counts.items():
        got = (actual.get("row_counts") or {}).get(table)
        if got != count:
            problems.append(f"rows in {table}: expected {count}, restored {got}")
    if expected.modules != actual.get("modules", {}):
        exp, got = expected.modules, actual.get("modules", {})
        diff = sorted(set(exp.items()) ^ set(got.items()))[:10]
        problems.append(f"installed modules differ: {diff}")
    return problems


def sample_files(files: list[StoredFile], n: int, seed: str) -> list[StoredFile]:
    """A reproducible sample of up to n files (pure)."""
    if len(files) <= n:
        return list(files)
    return random.Random(seed).sample(files, n)  # noqa: S311 - sampling, not security


def check_objects(bucket: Bucket, files: list[StoredFile], decrypt_object: Decrypt | None = None,
                  tag: str | None = None) -> list[str]:
    """Re-hash sampled files' blobs (one ranged GET each); for an encrypted backup checked without its identity,
    only that each blob's bytes exist."""
    problems = []
    for f in files:
        key, offset, length = f.location(bucket.prefix, tag)
        try:
            if tag and decrypt_object is None:
                size = bucket.s3.head_object(Bucket=bucket.name, Key=key)["ContentLength"]
                if length >= 0 and size < offset + length:
                    problems.append(f"filestore blob for {f.path} lies beyond the end of {key} ({size} bytes)")
                continue
            chunks = bucket.read_chunks(key, offset=offset, length=length)
            if decrypt_object is not None:
                chunks = decrypt_object(chunks)
            digest = hash_object(chunks, f.algo)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding, reported together
            problems.append(f"filestore object for {f.path} unreadable: {type(exc).__name__}: {exc}")
            continue
        if digest != f.digest:
            problems.append(f"filestore object for {f.path} hashes to {digest[:12]}…, expected {f.digest[:12]}…")
    return problems


def check_stored(bucket: Bucket, dump: DumpRecord) -> list[str]:
    """What was uploaded is what was written: size and SHA-256 of the stored object read back from Spaces."""
    h, size = hashlib.sha256(), 0
    for chunk in bucket.read_chunks(dump.key):
        h.update(chunk)
        size += len(chunk)
    if (size, h.hexdigest()) != (dump.stored_bytes, dump.stored_sha256):
        return [f"{dump.key} read back as {size} bytes, SHA-256 {h.hexdigest()[:12]}…; the manifest says "
                f"{dump.stored_bytes} bytes, {dump.stored_sha256[:12]}…: the upload is damaged"]
    return []


def verify_backup(
    executor: Executor, server: DatabaseConfig, manifest: Manifest, *, bucket: Bucket, files: list[StoredFile],
    sample: int, timeout_s: float, decrypt: Decrypt | None = None, decrypt_object: Decrypt | None = None,
    plain_copy: Path | None = None, scratch: str | None = None,
) -> Verification:
    """Restore into a scratch database through the one restore path, compare, re-hash a filestore sample, drop
    the scratch database. With `plain_copy` (tonight's plaintext dump on the worker) the stored object is
    checked by its hash and the restore reads the plaintext copy: no private key needed on the worker.

    Never raises for a failed check (the verdict says so)."""
    start = time.monotonic()
    scratch = scratch or scratch_name(manifest.database, manifest.stamp, manifest.stack)
    mode = "stored object re-hashed + restore of tonight's plaintext copy" if plain_copy else "restore from Spaces"
    problems: list[str] = []
    restored_facts: dict[str, Any] | None = None
    sampled = None
    work = spools.owned_dir("odoo-verify-")
    try:
        if plain_copy is not None:
            problems += check_stored(bucket, manifest.dump)
            chunks = local_dump_chunks(plain_copy, manifest.dump)
        else:
            chunks = dump_chunks(bucket, manifest.dump, decrypt)
        dump_file = work / "dump.custom"
        fetch_dump(chunks, dump_file)
        create_database(server, scratch)
        pg_restore_into(executor, server, scratch, dump_file, jobs=1, timeout_s=timeout_s)
        with connect(server, scratch) as conn, conn.cursor() as cur:
            restored = read_facts(cur, conn.info.server_version).as_dict()
        problems += compare_facts(manifest, restored)
        restored_facts = {k: restored[k] for k in ("tables", "schemas", "large_objects", "row_counts")}
        picked = sample_files(files, sample, manifest.stamp)
        problems += check_objects(bucket, picked, decrypt_object, manifest.object_tag)
        sampled = len(picked)
    except Exception as exc:  # noqa: BLE001 - the verdict records the failure; the flow decides to fail
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            drop_database(server, scratch)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"could not drop scratch database {scratch}: {exc}")
    return Verification(
        ok=not problems, problems=problems, error="; ".join(problems)[:2000] if problems else None, mode=mode,
        scratch_database=scratch, server=f"{server.host}:{server.port}", restored=restored_facts,
        filestore_sampled=sampled, duration_s=round(time.monotonic() - start, 3),
    )
