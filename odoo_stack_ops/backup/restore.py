"""Restore: pick a published backup, restore its database and filestore, optionally neutralize or zip it.

The dump is downloaded once to the worker and its SHA-256 checked BEFORE pg_restore sees a byte, so a
tampered or truncated object never half-restores; pg_restore then runs in parallel from that file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from odoo_stack_ops.backup import layout, pgdump
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.backup.database import connect
from odoo_stack_ops.backup.filestore import StoredFile, decode_manifest
from odoo_stack_ops.backup.spaces import get_bytes, iter_objects, read_chunks
from odoo_stack_ops.backup.verify import create_database, database_exists, drop_database
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import DatabaseConfig
from odoo_stack_ops.errors import OpsError, VerificationFailed
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.executors.local import LocalExecutor
from odoo_stack_ops.streams import checked, zstd_decompressed

log = logging.getLogger(__name__)


def list_manifests(s3: Any, bucket: str, prefix: str, database: str | None = None) -> list[mf.ManifestRef]:
    """Published backups, oldest first."""
    refs = []
    for obj in iter_objects(s3, bucket, layout.manifests_prefix(prefix, database)):
        try:
            refs.append(mf.ManifestRef.from_key(obj["Key"]))
        except ValueError:
            log.warning("ignoring unexpected key %s among manifests", obj["Key"])
    return sorted(refs, key=lambda r: (r.taken_at, r.database))


def pick_backup(refs: list[mf.ManifestRef], manifests: dict[str, dict[str, Any]], *, database: str,
                on_date: date | None = None, tz: str = "Asia/Singapore", key: str | None = None) -> mf.ManifestRef:
    """The backup to restore (pure): an exact key, else the newest verified one (of a local date, if given)."""
    candidates = [r for r in refs if r.database == database]
    if key:
        for r in candidates:
            if key in (r.key, r.stamp):
                return r
        raise OpsError(f"no published backup {key!r} for {database}; list them with the restore flow's list_only")
    if on_date:
        candidates = [r for r in candidates if r.taken_at.astimezone(ZoneInfo(tz)).date() == on_date]
    verified = [r for r in candidates if manifests.get(r.key, {}).get("verified")]
    if not verified:
        when = f" on {on_date.isoformat()}" if on_date else ""
        raise OpsError(f"no verified backup of {database}{when}; pass a manifest key to restore an unverified one")
    return verified[-1]


def load_manifest(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return mf.decode(get_bytes(s3, bucket, key))


def download_dump(s3: Any, bucket: str, dump: dict[str, Any], dest: Path, decrypt: Any = None) -> int:
    """Download, check the stored SHA-256 and the plaintext SHA-256, write the plain custom-format dump."""
    tmp = dest.with_suffix(".part")

    def bad(what: str) -> Any:
        return lambda actual: VerificationFailed(
            f"{dump['key']}: {what} SHA-256 {actual[:12]}… does not match the manifest; refusing to restore it")

    chunks: Iterable[bytes] = checked(read_chunks(s3, bucket, dump["key"]), dump["stored_sha256"], bad("stored"))
    if decrypt is not None:
        chunks = decrypt(chunks)
    size = 0
    try:
        with tmp.open("wb") as out:
            for chunk in checked(zstd_decompressed(chunks), dump["raw_sha256"], bad("plaintext")):
                out.write(chunk)
                size += len(chunk)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def restore_database(
    executor: Executor, server: DatabaseConfig, target: str, dump_file: Path, *, overwrite: bool = False,
    jobs: int = 2, timeout_s: float = 6 * 3600,
) -> float:
    """Create `target` and pg_restore the dump into it; refuses an existing database unless overwrite."""
    ensure_identifier(target, "target database")
    if database_exists(server, target):
        if not overwrite:
            raise OpsError(f"database {target} already exists; pass overwrite=True to replace it (its data is lost)")
        log.warning("dropping existing database %s before restoring (overwrite requested)", target)
        drop_database(server, target)
    create_database(server, target)
    start = time.monotonic()
    if isinstance(executor, LocalExecutor):
        argv = pgdump.pg_restore_argv(target, jobs=jobs, source=str(dump_file))
        executor.run(argv, env=server.libpq_env(target), timeout=timeout_s)
    else:  # remote pg_restore reads the checked file from stdin, all-or-nothing
        with dump_file.open("rb") as fh:
            executor.run([*pgdump.pg_restore_argv(target), "--single-transaction"], env=server.libpq_env(target),
                         stdin=fh, timeout=timeout_s)
    return round(time.monotonic() - start, 3)


def filestore_files(s3: Any, bucket: str, manifest: dict[str, Any]) -> list[StoredFile]:
    return decode_manifest(get_bytes(s3, bucket, manifest["filestore"]["manifest_key"]))


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


def object_members(s3: Any, bucket: str, prefix: str, files: list[StoredFile], decrypt_object: Any = None,
                   tag: str | None = None) -> Iterator[tuple[str, int, int, Iterable[bytes]]]:
    for f in files:
        key = layout.object_key(prefix, f.algo, f.digest, tag)
        chunks: Iterable[bytes] = read_chunks(s3, bucket, key)
        if decrypt_object is not None:
            chunks = decrypt_object(chunks)
        yield f.path, f.size, f.mtime, _hash_checked(chunks, f)


def _hash_checked(chunks: Iterable[bytes], f: StoredFile) -> Iterator[bytes]:
    import hashlib  # noqa: PLC0415

    h = hashlib.new(f.algo)
    for c in chunks:
        h.update(c)
        yield c
    if h.hexdigest() != f.digest:
        raise VerificationFailed(f"filestore object for {f.path} is corrupt (hash mismatch); refusing it")


RESTORE_FILESTORE_SH = 'set -e; [ -z "$(ls -A "$1" 2>/dev/null)" ] || [ "$2" = yes ] || ' \
    '{ echo "filestore $1 is not empty" >&2; exit 3; }; mkdir -p "$1"; exec tar -xf - -C "$1"'


def restore_filestore(executor: Executor, target_root: str, members: Iterator[Any], *, overwrite: bool = False,
                      owner: tuple[int, int] = (0, 0)) -> None:
    """Unpack the objects as a tar stream into target_root on the executor's side (refuses a non-empty one)."""
    executor.run(["sh", "-c", RESTORE_FILESTORE_SH, "sh", target_root, "yes" if overwrite else "no"],
                 stdin=tar_stream(members, *owner), timeout=6 * 3600,
                 hint="pass overwrite=True to restore into a non-empty filestore, or pick another target")


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


def odoo_manifest(manifest: dict[str, Any], db_name: str) -> dict[str, Any]:
    """Odoo's own manifest.json for a database zip (what its database manager expects)."""
    version = manifest.get("odoo_version") or "18.0"
    major, _, minor = version.partition(".")
    server = manifest.get("server_version") or "15.0"
    pg_major, _, pg_minor = server.split(" ")[0].partition(".")
    return {
        "odoo_dump": "1", "db_name": db_name, "version": version,
        "version_info": [int(major), int(minor or 0), 0, "final", 0, ""], "major_version": version,
        "pg_version": f"{pg_major}.{pg_minor.split('.')[0] or 0}", "modules": manifest.get("modules", {}),
    }


def write_odoo_zip(dest: Path, manifest: dict[str, Any], dump_file: Path, members: Iterator[Any]) -> Path:
    """dump.sql (plain SQL from the custom dump), filestore/, manifest.json: restorable by Odoo's manager."""
    tmp = dest.with_suffix(".zip.part")
    local = LocalExecutor()
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            zf.writestr("manifest.json", json.dumps(odoo_manifest(manifest, manifest["database"]), indent=4))
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
    return Path(tempfile.mkdtemp(prefix="odoo-restore-", dir=base))
