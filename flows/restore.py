"""Flow `restore` (on demand): bring a published backup back into a database and a filestore.

Refuses to overwrite an existing database or a non-empty filestore unless told to. `staging=True` is the
staging refresh (production backup → odoo_dev, then neutralized: no outgoing mail, no crons). `odoo_zip`
also writes a zip Odoo's database manager can restore (dump.sql, filestore/, manifest.json).
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, task

from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.backup import spaces
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from tasks.backup import dump_executor
from tasks.common import NO_RETRIES, TRANSIENT_RETRIES, logger, publish_markdown


@task(name="pick-backup", **TRANSIENT_RETRIES)
def pick(cfg: StackConfig, database: str, on_date: date | None, manifest_key: str | None) -> dict[str, Any]:
    s3 = spaces.client(cfg.spaces)
    refs = rs.list_manifests(s3, cfg.spaces.bucket, cfg.spaces.prefix, database)
    if manifest_key:
        ref = rs.pick_backup(refs, {}, database=database, key=manifest_key)
        return rs.load_manifest(s3, cfg.spaces.bucket, ref.key)
    manifests = {r.key: rs.load_manifest(s3, cfg.spaces.bucket, r.key) for r in refs}
    ref = rs.pick_backup(refs, manifests, database=database, on_date=on_date, tz=cfg.backup.timezone)
    return manifests[ref.key]


def _tag(manifest: dict[str, Any]) -> str | None:
    return manifest.get("encryption", {}).get("object_tag")


def _decryptors(cfg: StackConfig, manifest: dict[str, Any]) -> tuple[Any, Any]:
    if not manifest.get("encryption", {}).get("enabled"):
        return None, None
    from odoo_stack_ops.backup.crypto import decryptor  # noqa: PLC0415

    d = decryptor(cfg.backup.age_identity, manifest["encryption"])
    return d, d


@task(name="restore-database", **NO_RETRIES)
def restore_db(cfg: StackConfig, manifest: dict[str, Any], target: str, overwrite: bool, jobs: int) -> dict[str, Any]:
    log = logger()
    work = rs.scratch_dir()
    try:
        dump_file = work / "dump.custom"
        decrypt, _ = _decryptors(cfg, manifest)
        size = rs.download_dump(spaces.client(cfg.spaces), cfg.spaces.bucket, manifest["dump"], dump_file, decrypt)
        log.info("downloaded and checked %s (%.1f MiB)", manifest["dump"]["key"], size / (1 << 20))
        with Connections(cfg) as conns:
            seconds = rs.restore_database(dump_executor(cfg, conns), cfg.database, target, dump_file,
                                          overwrite=overwrite, jobs=jobs)
        log.info("restored %s into database %s in %.1f s", manifest["stamp"], target, seconds)
        return {"database": target, "seconds": seconds, "bytes": size}
    finally:
        shutil.rmtree(work, ignore_errors=True)


@task(name="restore-filestore", **NO_RETRIES)
def restore_fs(cfg: StackConfig, manifest: dict[str, Any], target: str, overwrite: bool) -> dict[str, Any]:
    s3 = spaces.client(cfg.spaces)
    files = rs.filestore_files(s3, cfg.spaces.bucket, manifest)
    _, decrypt_object = _decryptors(cfg, manifest)
    root = f"{cfg.odoo.data_dir.rstrip('/')}/filestore/{target}"
    with Connections(cfg) as conns:
        container = conns.container("odoo-core")
        owner = container.run(["stat", "-c", "%u %g", cfg.odoo.data_dir]).stdout_text.split()
        rs.restore_filestore(container, root, rs.object_members(s3, cfg.spaces.bucket, cfg.spaces.prefix, files,
                                                               decrypt_object, _tag(manifest)),
                             overwrite=overwrite, owner=(int(owner[0]), int(owner[1])))
    logger().info("restored %d filestore files into %s", len(files), root)
    return {"filestore": root, "files": len(files)}


@task(name="neutralize", **NO_RETRIES)
def neutralize_db(cfg: StackConfig, target: str) -> list[str]:
    stmts = rs.neutralize(cfg.database, target)
    logger().info("neutralized %s: %d statements (mail servers and crons off)", target, len(stmts))
    return stmts


@task(name="odoo-zip", **NO_RETRIES)
def odoo_zip(cfg: StackConfig, manifest: dict[str, Any], dest: str) -> str:
    s3 = spaces.client(cfg.spaces)
    work = rs.scratch_dir()
    try:
        decrypt, decrypt_object = _decryptors(cfg, manifest)
        dump_file = work / "dump.custom"
        rs.download_dump(s3, cfg.spaces.bucket, manifest["dump"], dump_file, decrypt)
        files = rs.filestore_files(s3, cfg.spaces.bucket, manifest)
        out = rs.write_odoo_zip(Path(dest), manifest, dump_file,
                                rs.object_members(s3, cfg.spaces.bucket, cfg.spaces.prefix, files, decrypt_object,
                                                  _tag(manifest)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger().info("wrote Odoo database zip %s", out)
    return str(out)


@flow(name="restore", description="Restore a backup into a database and filestore; staging refresh; Odoo zip")
def restore(
    stack_file: str | None = None,
    database: str = "odoo_core",
    target_database: str | None = None,
    on_date: date | None = None,
    manifest_key: str | None = None,
    overwrite: bool = False,
    staging: bool = False,
    restore_filestore: bool = True,
    odoo_zip_path: str | None = None,
    jobs: int = 2,
) -> dict[str, Any]:
    """Restore `database`'s backup (newest verified, or of `on_date`, or `manifest_key`) into `target_database`."""
    cfg = load_config(stack_file)
    target = target_database or ("odoo_dev" if staging else None)
    if staging and target == cfg.database.name:
        raise OpsError(f"a staging refresh must not target the production database {cfg.database.name}")
    manifest = pick(cfg, database, on_date, manifest_key)
    outcome: dict[str, Any] = {"backup": manifest["stamp"], "source": database}
    if not manifest["verified"]:
        logger().warning("restoring an UNVERIFIED backup %s: %s", manifest["stamp"], manifest["verification"])
    if target:
        outcome |= restore_db(cfg, manifest, target, overwrite or staging, jobs)
        if restore_filestore:
            outcome |= restore_fs(cfg, manifest, target, overwrite or staging)
        if staging:
            outcome["neutralized"] = neutralize_db(cfg, target)
    if odoo_zip_path:
        outcome["odoo_zip"] = odoo_zip(cfg, manifest, odoo_zip_path)
    if not target and not odoo_zip_path:
        raise OpsError("nothing to do: give target_database, staging=True or odoo_zip_path")
    publish_markdown("restore", "# Restore\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in outcome.items()),
                     f"restore of {database} {manifest['stamp']}")
    return outcome
