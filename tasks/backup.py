"""Backup tasks, one verb each: prepare the bucket, dump the database, copy the filestore, verify, publish, prune."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from prefect import task

from odoo_stack_ops import pgtls
from odoo_stack_ops.backup import database as dbleg
from odoo_stack_ops.backup import filestore as fsleg
from odoo_stack_ops.backup import layout, lifecycle, restore, spaces, spools
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.backup.verify import drop_stale_scratch, verify_backup
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import ConnectError, OpsError
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.executors.local import LocalExecutor
from tasks.common import NO_RETRIES, TRANSIENT_RETRIES, logger


def dump_executor(cfg: StackConfig, conns: Connections) -> Executor:
    """Where pg_dump/pg_restore run: this worker, or inside odoo-core as the seed's runbook does (the database's
    CA file is copied in for them, so verify-full holds there too)."""
    if cfg.backup.dump_on == "container":
        return pgtls.CAInContainer(conns.container("odoo-core"))
    return LocalExecutor()


@task(name="prepare-bucket", **TRANSIENT_RETRIES)
def prepare_bucket(cfg: StackConfig) -> list[str]:
    """Check the bucket accepts our credentials (before any dump starts: a wrong key fails here, once), abort
    multipart uploads a crashed run left behind (older than the GC grace: a younger one may be a concurrent
    run's), keep the lifecycle safety net in place; returns warnings for the operator (the night goes on)."""
    s3 = spaces.client(cfg.spaces)
    bucket, prefix = cfg.spaces.bucket, cfg.spaces.prefix + "/"
    spaces.check_access(s3, bucket, prefix)
    spaces.abort_stale_uploads(s3, bucket, prefix, timedelta(hours=cfg.backup.gc_grace_h))
    try:
        return lifecycle.ensure(s3, bucket, prefix, cfg.backup.abort_incomplete_uploads_days).dangers
    except ClientError as exc:  # e.g. a key that may not manage the bucket: the safety net is optional
        err = spaces.explain(exc, bucket)
        if isinstance(err, ConnectError):
            raise err from exc
        return [f"could not read or set the bucket's lifecycle rules ({err}); set "
                "backup.abort_incomplete_uploads_days: 0 to stop trying"]


@task(name="dump-database", **TRANSIENT_RETRIES)
def dump_database(cfg: StackConfig, database: str, st: str) -> tuple[mf.DumpRecord, dict[str, Any], Path]:
    """pg_dump (in the snapshot whose facts we record) streamed through zstd to Spaces; (dump, facts, the
    compressed plaintext copy on this worker, which verification and rollback restore from: the caller deletes
    it)."""
    log = logger()
    plain = spools.owned_dir("odoo-dump-") / f"{database}-{st}.dump.zst"
    s3 = spaces.client(cfg.spaces)
    key = layout.dump_key(cfg.spaces.prefix, database, st, encrypted=bool(cfg.backup.age_recipients))
    wrap = None
    if cfg.backup.age_recipients:
        from odoo_stack_ops.backup.crypto import encrypting_writer  # noqa: PLC0415 - only when encrypting

        wrap = encrypting_writer(cfg.backup.age_recipients)
    try:
        with Connections(cfg) as conns, dbleg.exported_snapshot(cfg.database, database) as (snapshot, facts), \
                plain.open("wb") as plain_copy:
            executor = dump_executor(cfg, conns)
            version = dbleg.check_pg_dump(executor, facts.server_major)
            log.info("dumping %s (PostgreSQL %s, %d tables, Odoo %s) with %s on %s", database, facts.server_version,
                     facts.tables, facts.odoo_version or "?", version, executor.where)
            result = dbleg.dump_to_spaces(
                executor, cfg.database, database, snapshot, s3=s3, bucket=cfg.spaces.bucket, key=key,
                pg_dump_version=version, level=cfg.backup.zstd_level, threads=cfg.backup.zstd_threads, wrap=wrap,
                plain_copy=plain_copy,
            )
    except BaseException:
        shutil.rmtree(plain.parent, ignore_errors=True)
        raise
    mib = 1 << 20
    log.info("dump of %s uploaded: %.1f MiB raw → %.1f MiB stored in %.1f s (%.1f MiB/s), %s",
             database, result.raw_bytes / mib, result.stored_bytes / mib, result.duration_s,
             result.raw_bytes / mib / max(result.duration_s, 1e-6), key)
    return mf.DumpRecord(**result.as_dict()), facts.as_dict(), plain


def latest_filestore_manifest(s3: Any, cfg: StackConfig, database: str) -> str | None:
    keys = sorted(o["Key"] for o in spaces.iter_objects(s3, cfg.spaces.bucket, f"{cfg.spaces.prefix}/filestore/{database}/"))
    return keys[-1] if keys else None


@task(name="backup-filestore", **TRANSIENT_RETRIES)
def backup_filestore(cfg: StackConfig, database: str, st: str) -> tuple[mf.FilestoreRecord, list[fsleg.StoredFile]]:
    """Upload the objects the bucket lacks and the night's filestore manifest; (summary, files)."""
    log = logger()
    s3 = spaces.client(cfg.spaces)
    root = f"{cfg.odoo.data_dir.rstrip('/')}/filestore/{database}"
    last = [0.0]

    def progress(stats: fsleg.FilestoreStats) -> None:
        if time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            log.info("filestore %s: %d new files, %.1f MiB packed so far", database, stats.new_objects,
                     stats.new_bytes / (1 << 20))

    encrypt = tag = None
    if cfg.backup.age_recipients:
        from odoo_stack_ops.backup.crypto import file_encryptor, object_tag  # noqa: PLC0415

        encrypt, tag = file_encryptor(cfg.backup.age_recipients), object_tag(cfg.backup.age_recipients)
    previous = fsleg.read_previous(s3, cfg.spaces.bucket, latest_filestore_manifest(s3, cfg, database), tag)
    with Connections(cfg) as conns:
        files, stats = fsleg.backup_filestore(
            conns.container("odoo-core"), root, s3=s3, bucket=cfg.spaces.bucket, prefix=cfg.spaces.prefix,
            database=database, st=st, previous=previous, progress=progress, encrypt=encrypt,
        )
    key = layout.filestore_manifest_key(cfg.spaces.prefix, database, st)
    spaces.put_bytes(s3, cfg.spaces.bucket, key, fsleg.encode_manifest(database, st, root, files, tag))
    log.info("filestore %s: %d files (%.1f MiB), %d new (%.1f MiB; %d kept file(s) packed again) in %d pack(s), %.1f s",
             database, stats.files, stats.bytes / (1 << 20), stats.new_objects, stats.new_bytes / (1 << 20),
             stats.repacked_files, stats.packs, stats.duration_s)
    return mf.FilestoreRecord(manifest_key=key, **asdict(stats)), files


@task(name="verify-backup", **NO_RETRIES)
def verify(cfg: StackConfig, manifest: mf.Manifest, files: list[fsleg.StoredFile],
           plain_copy: Path | None = None) -> mf.Verification:
    """Restore into a scratch database and compare; the verdict goes into the manifest. With tonight's plaintext
    copy no private key is needed; without it (an older night) the identity decrypts what Spaces holds."""
    server = cfg.backup.verify_server or cfg.database
    decrypt = decrypt_object = None
    if manifest.encryption.enabled and (plain_copy is None or cfg.backup.age_identity is not None):
        decrypt = decrypt_object = restore.decryptor_for(manifest, cfg.backup.age_identity)
    stale = drop_stale_scratch(server, cfg.name, older_than=timedelta(hours=cfg.backup.gc_grace_h))
    if stale:
        logger().warning("dropped scratch database(s) left by an interrupted verification: %s", stale)
    with Connections(cfg) as conns:
        record = verify_backup(
            dump_executor(cfg, conns), server, manifest, bucket=spaces.Bucket.open(cfg.spaces), files=files,
            sample=cfg.backup.verify_sample, timeout_s=cfg.backup.verify_timeout_s, decrypt=decrypt,
            decrypt_object=decrypt_object, plain_copy=plain_copy,
        )
    (logger().info if record.ok else logger().error)(
        "restore-verify of %s/%s (%s): %s", manifest.database, manifest.stamp, record.mode,
        "OK" if record.ok else record.error)
    return record


@task(name="publish-manifest", **TRANSIENT_RETRIES)
def publish(cfg: StackConfig, manifest: mf.Manifest) -> str:
    """Write the manifest last: from now on the backup exists."""
    key = layout.manifest_key(cfg.spaces.prefix, manifest.database, manifest.stamp)
    spaces.put_bytes(spaces.client(cfg.spaces), cfg.spaces.bucket, key, mf.encode(manifest), "application/json")
    logger().info("published %s (verified: %s)", key, manifest.verified)
    return key


def assemble(cfg: StackConfig, database: str, st: str, *, started: datetime, finished: datetime, facts: dict[str, Any],
             dump: mf.DumpRecord, filestore: mf.FilestoreRecord, verification: mf.Verification) -> mf.Manifest:
    encryption = None
    if cfg.backup.age_recipients:
        from odoo_stack_ops.backup.crypto import encryption_record  # noqa: PLC0415

        encryption = mf.Encryption(**encryption_record(cfg.backup.age_recipients))
    return mf.build_manifest(stack=cfg.name, database=database, st=st, started_at=started, finished_at=finished,
                             facts=facts, dump=dump, filestore=filestore, verification=verification,
                             encryption=encryption)


def check_databases(cfg: StackConfig, databases: list[str]) -> list[str]:
    unknown = [d for d in databases if d not in cfg.database.databases]
    if unknown:
        raise OpsError(f"databases {unknown} are not in database.databases {cfg.database.databases}")
    return databases
