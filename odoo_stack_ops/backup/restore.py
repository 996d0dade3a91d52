"""Restore, the one path every job uses (restore flow, upgrade rollback, verification, drills).

The dump is read from Spaces (or tonight's local plaintext copy), its stored and plaintext SHA-256 checked
and decrypted when needed BEFORE pg_restore sees a complete file, so a tampered or truncated object never
half-restores. A restore never destroys first: it goes into a new database (`<target>__restoring_<stamp>`) and
a new filestore directory, and only a complete restore is swapped in under the target's name; the old copy
stays as `<target>__before_<stamp>` until the caller's health gate has passed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from pydantic import SecretStr

from odoo_stack_ops.backup import layout, pgdump, spools
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.backup.database import connect, create_database, drop_database
from odoo_stack_ops.backup.filestore import StoredFile, decode_manifest
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import DatabaseConfig
from odoo_stack_ops.errors import OpsError, VerificationFailed
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.executors.local import LocalExecutor
from odoo_stack_ops.pools import GIVE_UP_S, DaemonPool
from odoo_stack_ops.streams import checked, zstd_decompressed

log = logging.getLogger(__name__)


def list_manifests(bucket: Bucket, database: str | None = None) -> list[mf.ManifestRef]:
    """Published backups, oldest first."""
    refs = []
    for obj in bucket.iter_objects(layout.manifests_prefix(bucket.prefix, database)):
        try:
            refs.append(mf.ManifestRef.from_key(obj["Key"]))
        except ValueError:
            log.warning("ignoring unexpected key %s among manifests", obj["Key"])
    return sorted(refs, key=lambda r: (r.taken_at, r.database))


def pick_backup(refs: list[mf.ManifestRef], manifests: dict[str, mf.Manifest], *, database: str,
                on_date: date | None = None, tz: str = "Asia/Singapore", key: str | None = None) -> mf.ManifestRef:
    """The backup to restore (pure): an exact key, else the newest verified one (of a local date, if given)."""
    candidates = [r for r in refs if r.database == database]
    if key:
        for r in candidates:
            if key in (r.key, r.stamp):
                return r
        newest = ", ".join(r.stamp for r in candidates[-10:]) or "none"
        raise OpsError(f"no published backup {key!r} for {database}; the newest published stamps: {newest}")
    if on_date:
        candidates = [r for r in candidates if r.taken_at.astimezone(ZoneInfo(tz)).date() == on_date]
    verified = [r for r in candidates if r.key in manifests and manifests[r.key].verified]
    if not verified:
        when = f" on {on_date.isoformat()}" if on_date else ""
        raise OpsError(f"no verified backup of {database}{when}; pass a manifest key to restore an unverified one")
    return verified[-1]


def load_manifest(bucket: Bucket, key: str) -> mf.Manifest:
    return mf.decode(bucket.get_bytes(key))


Decrypt = Callable[[Iterable[bytes]], Iterator[bytes]]


def decryptor_for(manifest: mf.Manifest, identity: SecretStr | None) -> Decrypt | None:
    """The chunk decryptor a backup needs (None when it is not encrypted); raises naming the key it needs."""
    if not manifest.encryption.enabled:
        return None
    from odoo_stack_ops.backup.crypto import decryptor  # noqa: PLC0415 - pyrage only for encrypted backups

    return decryptor(identity, manifest.encryption.model_dump())


def _mismatch(key: str, what: str) -> Callable[[str], Exception]:
    return lambda actual: VerificationFailed(
        f"{key}: {what} SHA-256 {actual[:12]}… does not match the manifest: the object was altered or truncated; "
        "refusing to restore it")


def dump_chunks(bucket: Bucket, dump: mf.DumpRecord, decrypt: Decrypt | None = None) -> Iterator[bytes]:
    """The dump's plaintext custom-format bytes: stored SHA-256 checked, decrypted, decompressed, plaintext SHA-256
    checked. The last chunk raises on a mismatch, so a consumer must treat its work as void until exhausted."""
    chunks: Iterable[bytes] = checked(bucket.read_chunks(dump.key), dump.stored_sha256, _mismatch(dump.key, "stored"))
    if decrypt is not None:
        chunks = decrypt(chunks)
    return checked(zstd_decompressed(chunks), dump.raw_sha256, _mismatch(dump.key, "plaintext"))


def local_dump_chunks(path: Path, dump: mf.DumpRecord, size: int = 1 << 20) -> Iterator[bytes]:
    """The plaintext (zstd) copy of tonight's dump kept on the worker, checked like the stored one."""
    def read() -> Iterator[bytes]:
        with path.open("rb") as fh:
            while chunk := fh.read(size):
                yield chunk
    return checked(zstd_decompressed(read()), dump.raw_sha256, _mismatch(str(path), "plaintext"))


def fetch_dump(chunks: Iterable[bytes], dest: Path) -> int:
    """Write the checked plaintext dump to `dest` (only complete and checked files get that name)."""
    tmp = dest.with_suffix(".part")
    size = 0
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def pg_restore_into(executor: Executor, server: DatabaseConfig, name: str, dump_file: Path, *, jobs: int = 2,
                    timeout_s: float = 6 * 3600) -> float:
    """pg_restore a checked custom-format file into the existing database `name`; returns seconds."""
    start = time.monotonic()
    if isinstance(executor, LocalExecutor):
        argv = pgdump.pg_restore_argv(name, jobs=jobs, source=str(dump_file))
        executor.run(argv, env=server.libpq_env(name), timeout=timeout_s)
    else:  # remote pg_restore reads the checked file from stdin, all-or-nothing
        with dump_file.open("rb") as fh:
            executor.run([*pgdump.pg_restore_argv(name), "--single-transaction"], env=server.libpq_env(name),
                         stdin=fh, timeout=timeout_s)
    return round(time.monotonic() - start, 3)


def copy_name(target: str, kind: str, st: str) -> str:
    """`<target>__restoring_<stamp>` / `__before_` / `__failed_` (pure; at most 63 bytes, validated)."""
    suffix = f"__{kind}_{st.lower()}"
    return ensure_identifier(target[: 63 - len(suffix)] + suffix, "database")


CONFIRMED = "odoo-stack-ops: replaced by a restore that passed its health gate"


def stale_copies(names: list[str], in_use: set[str], target: str, now: datetime, keep_before_h: float,
                 confirmed: Collection[str] = ()) -> list[str]:
    """Leftovers of earlier restores of `target` to drop (pure): every `__restoring_` copy no session uses (a
    killed restore; the caller holds the stack's writer lock, so none is in progress), `__failed_` copies (a
    restored copy whose gate failed: the backup it came from is still in Spaces) older than `keep_before_h`, and
    `__before_` copies older than that which are `confirmed`: replaced by a restore whose gate passed. An
    unconfirmed one is what a restore killed before its gate ended (or between its renames) replaced: maybe the
    only copy of the live database, never dropped here."""
    doomed = []
    for name in sorted(names):
        for kind in ("restoring", "before", "failed"):
            prefix = copy_name(target, kind, "x")[:-1]
            if not name.startswith(prefix) or name in in_use:
                continue
            try:
                taken = layout.parse_stamp(name[len(prefix):].upper())
            except ValueError:
                continue
            old = now - taken >= timedelta(hours=keep_before_h)
            if kind == "restoring" or (old and (kind == "failed" or name in confirmed)):
                doomed.append(name)
    return doomed


def unconfirmed_copies(names: Iterable[str], target: str, confirmed: Collection[str]) -> list[str]:
    """The `__before_` copies of `target` no passed gate confirmed (pure): kept, and named to the operator."""
    prefix = copy_name(target, "before", "x")[:-1]
    return sorted(n for n in names if n.startswith(prefix) and n not in confirmed)


def copy_databases(conn: psycopg.Connection, target: str) -> dict[str, bool]:
    """The databases named like copies of `target` (`<target>__...`), each with whether it is confirmed."""
    return {r[0]: r[1] == CONFIRMED for r in conn.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE starts_with(datname, %s)",
        (target + "__",))}


def confirm_copy(server: DatabaseConfig, name: str) -> None:
    """Mark the copy a restore replaced as confirmed (its gate passed): from now on stale_copies may drop it.
    A database comment: it lives and dies with the copy, and its owner (who renamed it) may set it."""
    with connect(server, server.maintenance_db, autocommit=True) as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(CONFIRMED)))


def drop_stale_copies(server: DatabaseConfig, target: str, keep_before_h: float) -> list[str]:
    """Drop what stale_copies names; returns the names. Unconfirmed `__before_` copies are kept, with a warning."""
    with connect(server, server.maintenance_db, autocommit=True) as conn:
        copies = copy_databases(conn, target)
        in_use = {r[0] for r in conn.execute("SELECT DISTINCT datname FROM pg_stat_activity WHERE pid <> "
                                             "pg_backend_pid() AND datname IS NOT NULL")}
    confirmed = {n for n, ok in copies.items() if ok}
    doomed = stale_copies(list(copies), in_use, target, datetime.now(UTC), keep_before_h, confirmed)
    for name in doomed:
        drop_database(server, name)
    kept = unconfirmed_copies(copies, target, confirmed)
    if kept:
        log.warning("kept %s: a restore of %s was stopped before its health gate passed (killed, or cut off between "
                    "its renames), and this is the database it replaced, maybe the only copy of the live one. Check "
                    "%s; drop the copy by hand once it is not needed (or rename it back)", kept, target, target)
    return doomed


def filestore_dirs(executor: Executor, data_dir: str, prefix: str) -> list[str]:
    """The names in Odoo's filestore directory that start with `prefix` (none if it cannot be listed)."""
    listing = executor.run(["ls", "-1", "--", f"{data_dir.rstrip('/')}/filestore"], check=False)
    return [n for n in listing.stdout_text.split() if n.startswith(prefix)] if listing.exit_code == 0 else []


def drop_stale_filestores(executor: Executor, data_dir: str, server: DatabaseConfig, target: str,
                          keep_before_h: float, dropped: Collection[str]) -> list[str]:
    """Drop the filestore directories of earlier restores of `target` that have no database and that
    stale_copies would drop: those of the confirmed copies drop_stale_copies just dropped (`dropped`), those of
    failed copies, and those of a restore killed before its copy database existed (the filestore unpacks from the
    start, beside the dump's download); and `<target>.failed`, where versions before 2026-12-02 set a failed
    restore's filestore aside. A `__before_` directory with no database otherwise is kept: a restore killed
    between its filestore swap and its database swap left the live filestore there. Returns the names."""
    names = filestore_dirs(executor, data_dir, ensure_identifier(target, "database"))
    legacy = f"{target}.failed" in names
    names = [n for n in names if n.startswith(target + "__")]
    doomed: list[str] = []
    if names:
        with connect(server, server.maintenance_db, autocommit=True) as conn:
            databases = copy_databases(conn, target)
        orphans = [n for n in names if n not in databases]
        doomed += stale_copies(orphans, set(), target, datetime.now(UTC), keep_before_h, dropped)
        kept = unconfirmed_copies(orphans, target, dropped)
        if kept:
            log.warning("kept the filestore director%s %s: a restore of %s was stopped between its filestore swap "
                        "and its database swap, so %s's filestore may be the restored one and its own files are "
                        "there. Check, then move them back or drop them by hand", "y" if len(kept) == 1 else "ies",
                        kept, target, target)
    for name in doomed:
        drop_filestore(executor, data_dir, name)
    if legacy:
        executor.run(["rm", "-rf", "--", filestore_root(data_dir, target) + ".failed"], timeout=3600)
        doomed.append(f"{target}.failed")
    return doomed


def restore_copy(executor: Executor, server: DatabaseConfig, target: str, st: str, dump_file: Path, *,
                 jobs: int = 2, timeout_s: float = 6 * 3600) -> tuple[str, float]:
    """Restore into a NEW database `<target>__restoring_<stamp>` (never the live one); dropped again on any
    failure. Returns (its name, seconds)."""
    ensure_identifier(target, "target database")
    name = copy_name(target, "restoring", st)
    drop_database(server, name)  # a killed earlier attempt with the same stamp
    create_database(server, name)
    try:
        return name, pg_restore_into(executor, server, name, dump_file, jobs=jobs, timeout_s=timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            drop_database(server, name)
        raise


_TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"


def _rename(conn: Any, old: str, new: str, attempts: int = 20) -> None:
    """Rename a database, ending its sessions first (a session that just reconnected is ended again)."""
    for attempt in range(attempts):
        conn.execute(_TERMINATE, (old,))
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)


def _allow_connections(conn: Any, name: str, allow: bool) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.SQL("true" if allow else "false")))


def swap_in(server: DatabaseConfig, target: str, new: str, st: str) -> str | None:
    """Put the restored `new` in place of `target`: the old one is renamed `<target>__before_<stamp>` (kept, no
    connections allowed) and returned; None when there was no old one. On any error the old one is put back."""
    before = copy_name(target, "before", st)
    with connect(server, server.maintenance_db, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone() is not None
        if not exists:
            _rename(conn, new, target)
            return None
        try:
            _allow_connections(conn, target, False)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise OpsError(f"the database role {server.user} does not own {target}, so it cannot swap the restored "
                           f"copy in; {new} holds the restore. Make {server.user} the owner (ALTER DATABASE {target} "
                           f"OWNER TO {server.user}) or restore into another target") from exc
        try:
            _rename(conn, target, before)
        except Exception:
            _put_back(server, target, target)
            raise
        try:
            _rename(conn, new, target)
        except Exception:
            _put_back(server, before, target)
            raise
    log.info("swapped the restored copy in as %s; the previous database is kept as %s", target, before)
    return before


class NotPutBack(OpsError):
    """A swap failed and the live database could not be given its name back: the message says what to run."""


def _put_back(server: DatabaseConfig, name: str, target: str) -> None:
    """Rename `name` back to `target` (when not already) and allow connections again, on a NEW connection: the
    swap's own one may be what failed (cut, or its server restarted). If that fails too, says what to run."""
    try:
        with connect(server, server.maintenance_db, autocommit=True) as conn:
            if name != target:
                _rename(conn, name, target)
            _allow_connections(conn, target, True)
    except Exception as exc:
        fix = f'ALTER DATABASE "{name}" RENAME TO "{target}"; ' if name != target else ""
        raise NotPutBack(f"a restore's swap failed and the live database could not be put back ({exc}): it is "
                       f"{name} now, refusing connections. Run as {server.user}: {fix}ALTER DATABASE \"{target}\" "
                       "WITH ALLOW_CONNECTIONS true") from exc


def swap_back(server: DatabaseConfig, target: str, before: str, st: str) -> str:
    """Undo swap_in: the current `target` becomes `<target>__failed_<stamp>`, `before` is `target` again."""
    failed = copy_name(target, "failed", st)
    with connect(server, server.maintenance_db, autocommit=True) as conn:
        _rename(conn, target, failed)
        _rename(conn, before, target)
        _allow_connections(conn, target, True)
    return failed


def tar_stream(members: Iterable[tuple[str, int, int, Iterable[bytes]]], uid: int = 0, gid: int = 0) -> Iterator[bytes]:
    """A tar archive built on the fly from (name, size, mtime, chunks); directories are added as needed."""
    seen: set[str] = set()
    for name, size, mtime, chunks in members:
        parts = name.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in seen:
                seen.add(d)
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime, info.uid, info.gid = tarfile.DIRTYPE, 0o755, mtime, uid, gid
                yield info.tobuf(format=tarfile.PAX_FORMAT)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.uid, info.gid = size, 0o644, mtime, uid, gid
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        written = 0
        for chunk in chunks:
            written += len(chunk)
            yield chunk
        if written != size:
            raise VerificationFailed(f"object for {name} has {written} bytes, manifest says {size}")
        if size % 512:
            yield b"\0" * (512 - size % 512)
    yield b"\0" * 1024


def filestore_files(bucket: Bucket, manifest: mf.Manifest) -> list[StoredFile]:
    return decode_manifest(bucket.get_bytes(manifest.filestore.manifest_key))


PREFETCH = 8  # packs (or version-1 objects) fetched ahead on a thread pool, each into a spool (disk past 1 MiB)
SPOOL_MEMORY = 1 << 20


def object_members(bucket: Bucket, files: list[StoredFile], decrypt_object: Decrypt | None = None,
                   tag: str | None = None) -> Iterator[tuple[str, int, int, Iterable[bytes]]]:
    """(path, size, mtime, checked chunks) of each file, pack by pack: each pack is one GET, PREFETCH of them
    fetched ahead while the consumer unpacks; a blob is decrypted when a decryptor is given and hash-checked.
    A version-1 backup's object is a pack of one blob. The consumer reads a member's chunks before asking for
    the next member (a pack's spool is closed once its members are handed out)."""
    groups: dict[str, list[tuple[int, int, StoredFile]]] = {}
    for f in files:
        key, offset, length = f.location(bucket.prefix, tag)
        groups.setdefault(key, []).append((offset, length, f))

    def fetch(key: str) -> Any:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - closed by the consumer
        try:
            for chunk in bucket.read_chunks(key):
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        return spool

    pool = DaemonPool(PREFETCH, "s3get")
    ahead: collections.deque[tuple[str, Future[Any]]] = collections.deque()
    pending = iter(list(groups))
    try:
        while True:
            while len(ahead) < PREFETCH and (key := next(pending, None)) is not None:
                ahead.append((key, pool.submit(fetch, key)))
            if not ahead:
                return
            key, fut = ahead.popleft()
            with fut.result() as spool:
                for offset, length, f in sorted(groups.pop(key), key=lambda g: g[0]):
                    chunks: Iterable[bytes] = _slice(spool, offset, length)
                    if decrypt_object is not None:
                        chunks = decrypt_object(chunks)
                    yield f.path, f.size, f.mtime, _hash_checked(chunks, f)
    finally:
        for _key, fut in ahead:
            fut.cancel()
        pool.shutdown(GIVE_UP_S)  # a fetch hanging on a dead connection does not hold a failing restore
        for _key, fut in ahead:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().close()


def _slice(spool: Any, offset: int, length: int, size: int = 1 << 20) -> Iterator[bytes]:
    """`length` bytes of a fetched pack from `offset` (all of it for -1)."""
    spool.seek(offset)
    left = length if length >= 0 else None
    while left is None or left > 0:
        chunk = spool.read(size if left is None else min(size, left))
        if not chunk:
            break
        if left is not None:
            left -= len(chunk)
        yield chunk
    if left:
        raise VerificationFailed(f"a filestore pack ends {left} bytes before the blob the manifest places in it")


def _hash_checked(chunks: Iterable[bytes], f: StoredFile) -> Iterator[bytes]:
    import hashlib  # noqa: PLC0415

    h = hashlib.new(f.algo)
    for c in chunks:
        h.update(c)
        yield c
    if h.hexdigest() != f.digest:
        raise VerificationFailed(f"filestore object for {f.path} is corrupt (hash mismatch); refusing it")


RESTORE_FILESTORE_SH = 'set -e; rm -rf "$1"; mkdir -p "$1"; exec tar -xf - -C "$1"'
# Swap directories like databases: target -> before (if any), new -> target. `mv` of a directory is a rename.
SWAP_FILESTORE_SH = 'set -e; if [ -e "$2" ]; then mv "$2" "$3"; fi; mv "$1" "$2" || { [ ! -e "$3" ] || mv "$3" "$2"; exit 1; }'
# Undo it: the restored target is set aside under $3 (a name the next restore's sweep knows), before is target again.
SWAP_BACK_FILESTORE_SH = ('set -e; rm -rf "$3"; if [ -e "$1" ]; then mv "$1" "$3"; fi; '
                          'if [ -e "$2" ]; then mv "$2" "$1"; fi')


def filestore_root(data_dir: str, database: str) -> str:
    return f"{data_dir.rstrip('/')}/filestore/{ensure_identifier(database, 'database')}"


def space_problem(need: int, available: int, keep_free: int) -> str | None:
    """Why a filestore of `need` bytes must not be unpacked beside the live one with `available` bytes free (pure):
    it would leave less than `keep_free` for Odoo, which keeps writing attachments there meanwhile."""
    if available - need >= keep_free:
        return None
    mib = 1 << 20
    return (f"the filestore restore needs {need / mib:.0f} MiB and {keep_free / mib:.0f} MiB must stay free for "
            f"Odoo (restore.min_free_after_mb), but Odoo's data volume has {available / mib:.0f} MiB free")


def free_bytes(executor: Executor, path: str) -> int | None:
    """Bytes available to unprivileged writers on the file system of `path` (`df -Pk`); None if unknown."""
    out = executor.run(["df", "-Pk", "--", path], check=False)
    lines = out.stdout_text.splitlines() if out.exit_code == 0 else []
    try:
        return int(lines[-1].split()[3]) * 1024
    except (IndexError, ValueError):
        return None


def restore_filestore(executor: Executor, data_dir: str, new: str, members: Iterator[Any], *,
                      owner: tuple[int, int] = (0, 0)) -> str:
    """Unpack the objects as a tar stream into the filestore of the NEW database name (a fresh directory; the
    live filestore is untouched until swap_filestore). Returns its path."""
    root = filestore_root(data_dir, new)
    failed: list[BaseException] = []

    def feed() -> Iterator[bytes]:
        try:
            yield from tar_stream(members, *owner)
        except BaseException as exc:
            failed.append(exc)  # the cause; tar only sees its input end ("short read")
            raise

    try:
        executor.run(["sh", "-c", RESTORE_FILESTORE_SH, "sh", root], stdin=feed(), timeout=6 * 3600)
    except Exception as exc:
        if failed:
            raise failed[0] from exc
        raise
    if failed:
        raise failed[0]
    return root


def swap_filestore(executor: Executor, data_dir: str, new: str, target: str, before: str) -> None:
    """Give the restored filestore the target's name; the old one, if any, becomes the `before` copy's."""
    executor.run(["sh", "-c", SWAP_FILESTORE_SH, "sh", filestore_root(data_dir, new), filestore_root(data_dir, target),
                  filestore_root(data_dir, before)], timeout=600)


def swap_back_filestore(executor: Executor, data_dir: str, target: str, before: str, aside: str) -> None:
    """Undo swap_filestore: the `before` filestore is the target's again; the restored one is the `aside` copy's
    (its `__restoring_` name again, or its `__failed_` one), so that it goes with its database."""
    executor.run(["sh", "-c", SWAP_BACK_FILESTORE_SH, "sh", filestore_root(data_dir, target),
                  filestore_root(data_dir, before), filestore_root(data_dir, aside)], timeout=600)


def drop_filestore(executor: Executor, data_dir: str, name: str) -> None:
    executor.run(["rm", "-rf", filestore_root(data_dir, name)], timeout=3600)


def neutralize_statements(tables: set[str]) -> list[str]:
    """What Odoo's neutralize does for the modules present (pure): no mail out or in, no crons, a banner."""
    stmts = []
    if "ir_cron" in tables:
        stmts.append("UPDATE ir_cron SET active = false WHERE id NOT IN (SELECT res_id FROM ir_model_data "
                     "WHERE model = 'ir.cron' AND module = 'base' AND name = 'autovacuum_job')")
    if "ir_mail_server" in tables:
        stmts.append("UPDATE ir_mail_server SET active = false")
    if "fetchmail_server" in tables:
        stmts.append("UPDATE fetchmail_server SET active = false")
    if "ir_ui_view" in tables:
        stmts.append("UPDATE ir_ui_view SET active = true WHERE key = 'web.neutralize_banner'")
    if "ir_config_parameter" in tables:
        stmts.append("INSERT INTO ir_config_parameter (key, value) VALUES ('database.is_neutralized', 'True') "
                     "ON CONFLICT (key) DO UPDATE SET value = 'True'")
        stmts.append("UPDATE ir_config_parameter SET value = gen_random_uuid()::text WHERE key = 'database.uuid'")
    return stmts


def neutralize(server: DatabaseConfig, target: str) -> list[str]:
    """Apply neutralize_statements in one transaction; returns what was run."""
    with connect(server, target) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND relkind = 'r'").fetchall()}
        stmts = neutralize_statements(tables)
        for stmt in stmts:
            conn.execute(stmt)  # type: ignore[arg-type]
    return stmts


def odoo_manifest(manifest: mf.Manifest, db_name: str) -> dict[str, Any]:
    """Odoo's own manifest.json for a database zip (what its database manager expects)."""
    version = manifest.odoo_version or "18.0"
    major, _, minor = version.partition(".")
    server = manifest.server_version or "15.0"
    pg_major, _, pg_minor = server.split(" ")[0].partition(".")
    return {
        "odoo_dump": "1", "db_name": db_name, "version": version,
        "version_info": [int(major), int(minor or 0), 0, "final", 0, ""], "major_version": version,
        "pg_version": f"{pg_major}.{pg_minor.split('.')[0] or 0}", "modules": manifest.modules,
    }


def write_odoo_zip(dest: Path, manifest: mf.Manifest, dump_file: Path, members: Iterator[Any]) -> Path:
    """dump.sql (plain SQL from the custom dump), filestore/, manifest.json: restorable by Odoo's manager."""
    tmp = dest.with_suffix(".zip.part")
    local = LocalExecutor()
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            zf.writestr("manifest.json", json.dumps(odoo_manifest(manifest, manifest.database), indent=4))
            with zf.open("dump.sql", "w", force_zip64=True) as entry, local.stream(
                    pgdump.pg_restore_sql_argv(str(dump_file)), timeout=6 * 3600) as out:
                shutil.copyfileobj(out, entry, 1 << 20)
            for name, _size, mtime, chunks in members:
                stamp = datetime.fromtimestamp(max(mtime, 315532800)).timetuple()[:6]  # noqa: DTZ006 - zip has local time
                with zf.open(zipfile.ZipInfo(f"filestore/{name}", date_time=stamp), "w", force_zip64=True) as entry:
                    for chunk in chunks:
                        entry.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def scratch_dir(base: str | None = None) -> Path:
    return spools.owned_dir("odoo-restore-", base)
